// Signaling resume in real headless Chromium (call.mjs `resume`): both pages reach the relay
// through a TCP proxy on 127.0.0.1 that the test cuts for 5 s (every connection destroyed, no
// WebSocket close frame: the page sees code 1006, as on a network change; new connections refused).
// Media keeps decoding during the cut over the untouched UDP path; the pages say "Reconnecting…",
// then take their sessions over on new sockets (`resume`): same peer connection, same participant,
// no second join, and nobody left for the other.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect } from 'node:net';
import {
  startRelay, freePort, launchBrowser, newPerson, createLink, joinCall, hasSignaling, inbound, waitDecoding, inCall, sleep,
} from './harness.mjs';

let browser;
let media = false;

before(async () => {
  const probe = await startRelay();
  media = await hasSignaling(probe.base);
  await probe.stop();
  if (media) browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A TCP proxy from `port` to `target` that can be cut (every connection destroyed) and restored. */
async function proxy(port, target) {
  const live = new Set();
  let up = true;
  const server = createServer((client) => {
    if (!up) {
      client.destroy();
      return;
    }
    const upstream = connect(target, '127.0.0.1');
    live.add(client);
    live.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      live.delete(client);
      live.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    cut() {
      up = false;
      for (const s of live) s.destroy();
      live.clear();
    },
    restore() {
      up = true;
    },
    close() {
      this.cut();
      return new Promise((r) => server.close(r));
    },
  };
}

function state(page) {
  return page.evaluate(() => {
    const s = document.querySelector('[data-testid=call-status]');
    return { state: s?.dataset.state, reason: s?.dataset.reason };
  });
}

const decoded = async (page) => (await inbound(page)).video.reduce((n, s) => n + s.framesDecoded, 0);

test('a 5 s signaling cut: media goes on, both pages resume their sessions, nobody left', { timeout: 120000 }, async (t) => {
  if (!media) {
    t.skip('the relay does not serve /v1/signal yet (media plane missing)');
    return;
  }
  const front = await freePort();
  const relayPort = await freePort();
  const base = `http://127.0.0.1:${front}`;
  const relay = await startRelay({ port: relayPort, publicUrl: base });
  const net = await proxy(front, relayPort);
  try {
    const alice = await newPerson(browser, base);
    const bob = await newPerson(browser, base);
    const joins = [];
    for (const p of [alice, bob]) p.on('request', (r) => r.method() === 'POST' && r.url().endsWith('/join') && joins.push(r.url()));
    const link = await createLink(alice, { name: 'Alice' });
    await joinCall(alice, link.url, 'Alice');
    await inCall(alice);
    await joinCall(bob, link.url, 'Bob');
    await inCall(bob);
    await Promise.all([waitDecoding(alice, 1), waitDecoding(bob, 1)]);
    const before = {};
    for (const [name, p] of [['alice', alice], ['bob', bob]]) {
      before[name] = await p.evaluate(() => {
        window.pcBefore = window.callrelay.pc;
        return document.querySelector('[data-testid=tile]')?.dataset.participant;
      });
      assert.ok(before[name], `${name} sees the other's tile`);
    }

    net.cut();
    const cutAt = Date.now();
    await Promise.all([alice, bob].map((p) => p.waitForFunction(() => {
      const s = document.querySelector('[data-testid=call-status]');
      return s?.dataset.state === 'reconnecting' && s.dataset.reason === 'signaling';
    }, null, { timeout: 5000 })));
    const framesAtCut = await Promise.all([alice, bob].map(decoded));
    await sleep(5000 - (Date.now() - cutAt));
    const framesAfter = await Promise.all([alice, bob].map(decoded));
    for (const i of [0, 1]) {
      // 30 fps for ~4 s, with room for a slow machine.
      assert.ok(framesAfter[i] - framesAtCut[i] > 30, `video kept decoding during the cut: ${framesAtCut[i]} -> ${framesAfter[i]}`);
    }

    net.restore();
    const restoredAt = Date.now();
    await Promise.all([alice, bob].map((p) => p.waitForFunction(
      () => document.querySelector('[data-testid=call-status]')?.dataset.state !== 'reconnecting', null, { timeout: 5000 })));
    const took = Date.now() - restoredAt;
    for (const [name, p] of [['alice', alice], ['bob', bob]]) {
      assert.deepEqual(await state(p), { state: 'joined', reason: undefined }, `${name} is back in the call`);
      assert.ok(await p.evaluate(() => window.pcBefore === window.callrelay.pc), `${name} kept its peer connection`);
      assert.equal(await p.getByTestId('tile').count(), 1, `${name} still sees one other`);
      assert.equal(await p.evaluate(() => document.querySelector('[data-testid=tile]')?.dataset.participant), before[name],
        `${name} sees the same participant (nobody left and joined again)`);
      assert.equal(await p.getByTestId('removed-reason').count(), 0);
    }
    assert.equal(joins.length, 2, 'no second join: the sessions were resumed');
    // Signaling works on the new sockets: a mute crosses it.
    await bob.getByTestId('mic').click();
    await alice.waitForFunction(() => document.querySelector('[data-testid=tile]')?.dataset.audioMuted === 'true', null, { timeout: 5000 });
    const metrics = await (await fetch(`http://127.0.0.1:${relayPort}/metrics`)).text();
    assert.match(metrics, /^callrelay_signaling_resumed_total 2$/m);
    console.log(`signaling cut for ${restoredAt - cutAt} ms; both pages back ${took} ms after the restore`);
    for (const p of [alice, bob]) await p.context().close();
  } finally {
    await net.close();
    await relay.stop();
  }
});

/** The local port of the page's selected ICE candidate pair (the media path in use). */
const localPort = (page) => page.evaluate(async () => {
  const stats = await window.callrelay.pc.getStats();
  let pair;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  return pair ? stats.get(pair.localCandidateId)?.port ?? null : null;
});

test('a network change restarts ICE: new local port, same participant, media back within 2 s', { timeout: 90000 }, async (t) => {
  if (!media) {
    t.skip('the relay does not serve /v1/signal yet (media plane missing)');
    return;
  }
  const relay = await startRelay();
  try {
    const alice = await newPerson(browser, relay.base);
    const bob = await newPerson(browser, relay.base);
    const joins = [];
    for (const p of [alice, bob]) p.on('request', (r) => r.method() === 'POST' && r.url().endsWith('/join') && joins.push(r.url()));
    const link = await createLink(alice, { name: 'Alice' });
    await joinCall(alice, link.url, 'Alice');
    await inCall(alice);
    await joinCall(bob, link.url, 'Bob');
    await inCall(bob);
    await Promise.all([waitDecoding(alice, 1), waitDecoding(bob, 1)]);
    const bobId = await alice.evaluate(() => document.querySelector('[data-testid=tile]')?.dataset.participant);
    const portBefore = await localPort(bob);
    assert.ok(portBefore, 'bob has a selected candidate pair');
    await bob.evaluate(() => { window.pcBefore = window.callrelay.pc; });

    // The browser reports the network is back (what it does after a Wi-Fi hand-over or waking).
    const changedAt = Date.now();
    await bob.evaluate(() => window.dispatchEvent(new Event('online')));
    // Bob's media takes a new path (new local port), and flows both ways again.
    let port = portBefore;
    while (port === portBefore || port === null) {
      assert.ok(Date.now() - changedAt < 10000, `bob's media path moved (port ${portBefore} → ${port})`);
      await sleep(100);
      port = await localPort(bob);
    }
    const frames = await Promise.all([alice, bob].map(decoded));
    let after = frames;
    while (!(after[0] > frames[0] + 5 && after[1] > frames[1] + 5)) {
      assert.ok(Date.now() - changedAt < 10000, `video decoding again on both sides: ${frames} → ${after}`);
      await sleep(100);
      after = await Promise.all([alice, bob].map(decoded));
    }
    const took = Date.now() - changedAt;
    assert.ok(took < 2000 + 1000, `media back within 2 s (+1 s of polling slack): ${took} ms`);
    assert.equal(await bob.evaluate(() => window.callrelay.iceRestarts), 1);
    assert.ok(await bob.evaluate(() => window.pcBefore === window.callrelay.pc), 'same peer connection');
    assert.equal(await alice.evaluate(() => document.querySelector('[data-testid=tile]')?.dataset.participant), bobId,
      'alice sees the same participant (nobody left and joined again)');
    assert.equal(joins.length, 2, 'no second join');
    const metrics = await (await fetch(`${relay.base}/metrics`)).text();
    assert.match(metrics, /^callrelay_ice_restarts_total 1$/m);
    console.log(`ICE restart: bob's port ${portBefore} → ${port}; media back on both sides ${took} ms after the change`);
    for (const p of [alice, bob]) await p.context().close();
  } finally {
    await relay.stop();
  }
});

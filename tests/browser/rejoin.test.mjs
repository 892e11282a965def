// The in-call page rejoins by itself (call.mjs `reconnect`), in real headless Chromium:
//   - the relay is killed (SIGKILL: the signaling socket closes without any `removed`) and a relay
//     starts again on the same port and data dir: both pages show "Reconnecting…", then are back in
//     the call with media decoding, the same camera/microphone tracks (no second getUserMedia) and
//     E2EE on the new senders and receivers;
//   - `removed{moved}` (a cluster moving the call to another node), injected into one page's
//     signaling socket: that page joins again and media flows; `removed{expired}`: the call ends
//     with its reason and no rejoin;
//   - nothing comes back: after 30 s of retries the page says the connection was lost.
// The drain case (`removed{drain}`) and a revocation (no rejoin) are in call.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startRelay, launchBrowser, newPerson, createLink, joinCall, hasSignaling, inbound, waitDecoding, inCall, sleep,
} from './harness.mjs';

// Every node of a cluster signs with the same secret; so do the relay and its restart here.
const SECRET = 'rejoin-test-secret-0123456789abcdefghijklmnop';

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

const needsMedia = (t) => {
  if (!media) {
    t.skip('the relay does not serve /v1/signal yet (media plane missing)');
    return true;
  }
  return false;
};

/** A person whose page counts its getUserMedia calls (window.gumCalls). */
async function person(base) {
  const page = await newPerson(browser, base);
  await page.addInitScript(() => {
    window.gumCalls = 0;
    const md = navigator.mediaDevices;
    const gum = md.getUserMedia.bind(md);
    md.getUserMedia = (c) => {
      window.gumCalls++;
      return gum(c);
    };
  });
  return page;
}

async function status(page) {
  const el = page.getByTestId('call-status');
  return { state: await el.getAttribute('data-state'), text: await el.textContent() };
}

function waitReconnecting(page, reason, timeout = 5000) {
  return page.waitForFunction((reason) => {
    const s = document.querySelector('[data-testid=call-status]');
    return s?.dataset.state === 'reconnecting' && (!reason || s.dataset.reason === reason);
  }, reason, { timeout });
}

/** The ids of the local tracks the page's current peer connection sends. */
function sentTracks(page) {
  return page.evaluate(() => window.callrelay.pc.getTransceivers()
    .filter((t) => t.direction === 'sendonly').map((t) => t.sender.track?.id).sort());
}

/** What must hold for a page after a rejoin: same local tracks, E2EE on the new connection. */
async function assertRejoined(page, { tracks, other, epoch }) {
  assert.equal(await page.evaluate(() => window.gumCalls), 1, 'no second getUserMedia');
  const now = await sentTracks(page);
  assert.deepEqual(now, tracks, 'the same local tracks, published again');
  assert.equal(await page.getByTestId('tile').count(), 1);
  assert.match(await page.getByTestId('tile').textContent(), new RegExp(other));
  assert.equal(await page.getByTestId('e2ee-status').getAttribute('data-state'), 'on');
  const transforms = await page.evaluate(() => {
    const pc = window.callrelay.pc;
    if (typeof RTCRtpScriptTransform === 'undefined') return null;
    return {
      senders: pc.getTransceivers().filter((t) => t.direction === 'sendonly').map((t) => !!t.sender.transform),
      receivers: pc.getTransceivers().filter((t) => t.currentDirection === 'recvonly').map((t) => !!t.receiver.transform),
    };
  });
  if (transforms) {
    assert.ok(transforms.senders.length >= 2 && transforms.senders.every(Boolean), `sender transforms ${JSON.stringify(transforms)}`);
    assert.ok(transforms.receivers.length >= 2 && transforms.receivers.every(Boolean), `receiver transforms ${JSON.stringify(transforms)}`);
  }
  // The worker encrypts for the new connection and decrypts what arrives on it.
  await page.waitForFunction((epoch) => {
    const w = window.callrelay.call.workerStats;
    return w && w.epoch === epoch && w.epochEncrypted > 0 && w.decrypted > 0;
  }, epoch, { timeout: 5000 });
  const w = await page.evaluate(() => window.callrelay.call.workerStats);
  assert.equal(w.decryptFailed, 0, JSON.stringify(w));
}

test('the relay is killed and restarts on the same port and data dir: both pages rejoin, media flows again', { timeout: 120000 }, async (t) => {
  if (needsMedia(t)) return;
  const dataDir = mkdtempSync(join(tmpdir(), 'callrelay-rejoin-'));
  const env = { CALLRELAY_AUTH_SECRET: SECRET };
  let relay = await startRelay({ dataDir, env });
  try {
    const alice = await person(relay.base);
    const bob = await person(relay.base);
    const link = await createLink(alice, { name: 'Alice' });
    await joinCall(alice, link.url, 'Alice');
    await inCall(alice);
    await joinCall(bob, link.url, 'Bob');
    await inCall(bob);
    await Promise.all([waitDecoding(alice, 1), waitDecoding(bob, 1)]);
    const tracks = {};
    for (const [name, p] of [['alice', alice], ['bob', bob]]) {
      tracks[name] = await sentTracks(p);
      assert.equal(tracks[name].filter(Boolean).length, 2, 'audio and video sent');
    }

    await relay.kill();
    await Promise.all([alice, bob].map((p) => waitReconnecting(p, 'node_lost')));
    for (const p of [alice, bob]) assert.deepEqual(await status(p), { state: 'reconnecting', text: 'Reconnecting…' });
    await sleep(1000); // a few refused attempts while nothing listens

    relay = await startRelay({ dataDir, port: relay.port, env });
    const restarted = Date.now();
    await Promise.all([alice, bob].map(async (p) => {
      await inCall(p);
      await waitDecoding(p, 1, { within: 20000 });
    }));
    const took = Date.now() - restarted;
    assert.ok(took < 20000, `back in the call with media in ${took} ms`);
    await assertRejoined(alice, { tracks: tracks.alice, other: 'Bob', epoch: 2 });
    await assertRejoined(bob, { tracks: tracks.bob, other: 'Alice', epoch: 2 });
    for (const p of [alice, bob]) {
      assert.equal(await p.getByTestId('removed-reason').count(), 0);
      assert.deepEqual(p.errors.filter((e) => !/WebSocket|Failed to load resource|ERR_CONNECTION_REFUSED/.test(e)), []);
    }
    for (const p of [alice, bob]) await p.context().close();
  } finally {
    await relay.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

/**
 * Routes the page's signaling sockets through the test (forwarded unchanged), so that the test can
 * play the relay's part: `inject(msg)` sends `msg` to the page's current socket, then closes it on
 * both sides, as the relay does after `removed`.
 */
async function routeSignaling(page) {
  const sockets = [];
  await page.routeWebSocket(/\/v1\/signal$/, (ws) => {
    const server = ws.connectToServer();
    sockets.push({ ws, server });
  });
  return {
    get count() {
      return sockets.length;
    },
    async inject(msg) {
      const { ws, server } = sockets.at(-1);
      ws.send(JSON.stringify(msg));
      await sleep(50);
      await server.close();
      await ws.close();
    },
  };
}

test('removed{moved}: the page joins again and media flows; removed{expired}: the call ends, no rejoin', { timeout: 120000 }, async (t) => {
  if (needsMedia(t)) return;
  const relay = await startRelay();
  try {
    const alice = await person(relay.base);
    const bob = await person(relay.base);
    const signaling = await routeSignaling(alice);
    const joins = [];
    alice.on('request', (r) => r.method() === 'POST' && r.url().endsWith('/join') && joins.push(Date.now()));
    const link = await createLink(alice, { name: 'Alice' });
    await joinCall(alice, link.url, 'Alice');
    await inCall(alice);
    await joinCall(bob, link.url, 'Bob');
    await inCall(bob);
    await Promise.all([waitDecoding(alice, 1), waitDecoding(bob, 1)]);
    const tracks = await sentTracks(alice);
    assert.equal(joins.length, 1);
    assert.equal(signaling.count, 1);

    await signaling.inject({ removed: { reason: 'moved' } });
    await waitReconnecting(alice, 'moved', 2000).catch(() => {}); // may be over before we look
    await inCall(alice);
    await Promise.all([waitDecoding(alice, 1), waitDecoding(bob, 1)]);
    assert.equal(joins.length, 2, 'one new join on the page origin');
    assert.equal(signaling.count, 2, 'one new signaling socket');
    await assertRejoined(alice, { tracks, other: 'Bob', epoch: 2 });
    // Bob saw Alice leave and come back under a new participant id: still one tile.
    await bob.waitForFunction(() => document.querySelectorAll('[data-testid=tile]').length === 1, null, { timeout: 5000 });

    await signaling.inject({ removed: { reason: 'expired' } });
    const reason = alice.getByTestId('removed-reason');
    await reason.waitFor({ timeout: 2000 });
    assert.equal(await reason.textContent(), 'This call link has expired');
    await sleep(2500);
    assert.equal((await status(alice)).state, 'ended');
    assert.equal(joins.length, 2, 'no rejoin after expired');
    assert.equal(signaling.count, 2);
    assert.equal(await alice.getByTestId('rejoin').count(), 0);
    for (const p of [alice, bob]) await p.context().close();
  } finally {
    await relay.stop();
  }
});

test('nothing comes back: after 30 s of retries the page says the connection was lost', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const relay = await startRelay();
  try {
    const alice = await person(relay.base);
    const joins = [];
    alice.on('request', (r) => r.method() === 'POST' && r.url().endsWith('/join') && joins.push(Date.now()));
    const link = await createLink(alice, { name: 'Alice', kind: 'voice' });
    await joinCall(alice, link.url, 'Alice');
    await inCall(alice);
    const lost = Date.now();
    await relay.kill();
    await waitReconnecting(alice, 'node_lost');
    const reason = alice.getByTestId('removed-reason');
    await reason.waitFor({ timeout: 40000 });
    const after = Date.now() - lost;
    assert.equal(await reason.textContent(), 'The connection to the call was lost');
    assert.ok(after >= 28000 && after < 36000, `gave up after ${after} ms`);
    assert.equal((await status(alice)).state, 'ended');
    assert.equal(await alice.getByTestId('rejoin').count(), 1, 'a Rejoin button');
    // Backoff: 200 ms doubling to 2 s, so about 17 attempts in 30 s, not hundreds.
    const attempts = joins.length - 1;
    assert.ok(attempts >= 10 && attempts <= 25, `${attempts} rejoin attempts`);
    const tracks = await alice.evaluate(() => window.callrelay.call.stream.getTracks().map((tr) => tr.readyState));
    assert.ok(tracks.every((s) => s === 'ended'), 'the microphone is released at the end');
    await alice.context().close();
  } finally {
    await relay.stop();
  }
});

// Firefox: Debian's Firefox ESR (/usr/bin/firefox-esr, headless, driven by puppeteer-core over
// WebDriver BiDi) in a call with headless Chromium through the relay: both decode each other's
// audio and video with E2EE on, and participants without the key (one Chromium, one Firefox)
// decode nothing, while what reached them is ciphertext of known senders. Skipped (with a note)
// when the relay binary does not serve signaling yet.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startRelay, launchBrowser, launchFirefox, newPerson, newFirefoxPerson, createLink, joinCall, hasSignaling, sleep,
  inbound, waitDecoding, inCall, until,
} from './harness.mjs';
import { clearBytes, parseHeader } from '../../crates/server/web/e2ee.mjs';

let relay;
let chromium;
let firefox;
let media = false;

before(async () => {
  relay = await startRelay();
  media = await hasSignaling(relay.base);
  if (media) [chromium, firefox] = await Promise.all([launchBrowser(), launchFirefox()]);
});
after(async () => {
  await firefox?.close();
  await chromium?.close();
  await relay?.stop();
});

const needsMedia = (t) => {
  if (!media) {
    t.skip('the relay does not serve /v1/signal yet (media plane missing)');
    return true;
  }
  return false;
};

// The Chromium helpers of harness.mjs, for a Firefox page (see newFirefoxPerson).

/** Creates a link on the `/` page in Firefox as `name`; returns {url, id, key}. */
async function ffCreateLink(page, name) {
  await page.goto('/');
  await page.fillTestId('name', name);
  await page.clickTestId('create');
  const url = await (await page.waitForTestId('share-url')).evaluate((e) => e.textContent.trim());
  const m = url.match(/\/video\/([0-9A-Za-z]{22})#k=([A-Za-z0-9_-]{22})$/);
  if (!m) throw new Error(`unexpected share URL ${url}`);
  return { url, id: m[1], key: m[2] };
}

async function ffJoinCall(page, url, name) {
  await page.goto(url);
  // The camera's preview and device picker come in asynchronously and move the Join button:
  // let them arrive before a real click (puppeteer, unlike playwright, does not wait for a
  // stable layout).
  await page.waitForTestId('device-picker').catch(async (err) => {
    throw new Error(`${err.message}; the page says: ${await page.evaluate(() => document.body.innerText.slice(0, 500))}`);
  });
  await page.fillTestId('name', name);
  await page.clickTestId('join');
}

async function ffInCall(page) {
  try {
    await until(page, () => ['joined', 'connected'].includes(document.querySelector('[data-testid=call-status]')?.dataset.state), null, { timeout: 15000, what: 'in the call' });
  } catch (err) {
    const text = await page.evaluate(() => document.body.innerText.slice(0, 500));
    throw new Error(`${err.message}; the page says: ${text}`);
  }
}

const e2eeState = (page) => page.evaluate(() => document.querySelector('[data-testid=e2ee-status]')?.dataset.state);
const workerStats = (page) => page.evaluate(() => window.callrelay.call.workerStats);

test('Firefox and Chromium in one video link hear and see each other (E2EE on)', { timeout: 60000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newFirefoxPerson(firefox, relay.base);
  const bob = await newPerson(chromium, relay.base);
  // Firefox creates the link (and its key) and joins first.
  const link = await ffCreateLink(alice, 'Alice');
  await ffJoinCall(alice, link.url, 'Alice');
  await ffInCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  const started = Date.now();
  await Promise.all([waitDecoding(alice, 1), waitDecoding(bob, 1)]);
  assert.ok(Date.now() - started < 15000);
  for (const [page, other] of [[alice, 'Bob'], [bob, 'Alice']]) {
    const [tile] = await until(page, () => {
      const t = [...document.querySelectorAll('[data-testid=tile]')].map((e) => e.textContent);
      return t.length === 1 && t;
    }, null, { what: 'one remote tile' });
    assert.match(tile, new RegExp(other));
    assert.equal(await e2eeState(page), 'on');
    // The worker's counters arrive twice a second: wait for a report after the first decode.
    const ws = await until(page, () => {
      const w = window.callrelay.call.workerStats;
      return w?.decrypted > 0 && w.encrypted > 0 && w;
    }, null, { timeout: 5000, what: 'worker stats' });
    assert.equal(ws.decryptFailed, 0, JSON.stringify(ws));
    // The remote tile's <video> plays: its size is known and its time moves.
    await until(page, () => {
      const v = document.querySelector('[data-testid=tile] video');
      return v && v.videoWidth > 0 && v.currentTime > 0.5;
    }, null, { what: 'the remote video plays' });
  }
  // Firefox sends simulcast too: three encodings, of which the quarter and half sizes send at
  // once (Firefox's bandwidth estimate reaches the full size only ~10 s into the call, so that
  // one is not waited for).
  const rids = await alice.evaluate(() => window.callrelay.call.conn.senders.video.getParameters().encodings.map((e) => e.rid));
  assert.deepEqual(rids, ['l', 'm', 'h']);
  await until(alice, async () => {
    const out = {};
    (await window.callrelay.pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video' && s.bytesSent > 0) out[s.rid] = s.frameHeight;
    });
    return out.l === 135 && out.m === 270;
  }, null, { what: 'the l and m simulcast layers send' });
  // Each one's video_preference (its tile's height) gets it a layer of the other's simulcast above
  // the relay's default lowest one (135 lines of the fake cameras' 540).
  for (const page of [alice, bob]) {
    await until(page, async () => {
      let h = 0;
      (await window.callrelay.pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') h = s.frameHeight || 0;
      });
      return h > 135;
    }, null, { what: 'a layer above the lowest' });
  }
  // Audio both ways: packets keep coming.
  const audio = async (p) => (await inbound(p)).audio.reduce((n, s) => n + s.packetsReceived, 0);
  const [a0, b0] = [await audio(alice), await audio(bob)];
  await sleep(1000);
  assert.ok((await audio(alice)) > a0 + 20, 'Firefox receives Chromium\'s audio');
  assert.ok((await audio(bob)) > b0 + 20, 'Chromium receives Firefox\'s audio');
  for (const p of [alice, bob]) assert.deepEqual(p.errors, []);
  await alice.closeContext();
  await bob.context().close();
});

test('E2EE across browsers: without the key neither Chromium nor Firefox decodes anything, and only ciphertext crosses the relay', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newFirefoxPerson(firefox, relay.base);
  const bob = await newPerson(chromium, relay.base);
  const eve = await newPerson(chromium, relay.base);
  const mallory = await newFirefoxPerson(firefox, relay.base);
  const link = await createLink(bob, { name: 'Bob' });
  const keyless = link.url.split('#')[0];
  // Eve (Chromium) and Mallory (Firefox) have the link without its fragment and no key stored in
  // their browser; they join first, so they receive the others' frames from their very first one.
  await joinCall(eve, keyless, 'Eve');
  await inCall(eve);
  await ffJoinCall(mallory, keyless, 'Mallory');
  await ffInCall(mallory);
  await ffJoinCall(alice, link.url, 'Alice');
  await ffInCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  // Alice and Bob decode each other (and the keyless ones' audio packets arrive, undecryptable).
  await Promise.all([waitDecoding(alice, 3, { videos: 1 }), waitDecoding(bob, 3, { videos: 1 })]);
  for (const p of [alice, bob]) {
    const s = await inbound(p);
    assert.equal(s.video.filter((v) => v.framesDecoded > 0).length, 1, JSON.stringify(s));
    assert.equal(await e2eeState(p), 'on');
  }
  await sleep(3000);
  for (const [who, p] of [['Eve', eve], ['Mallory', mallory]]) {
    const s = await inbound(p);
    assert.ok(s.video.some((v) => v.packetsReceived > 20), `${who} receives video packets: ${JSON.stringify(s)}`);
    assert.ok(s.video.every((v) => v.framesDecoded === 0), `${who} decodes no video: ${JSON.stringify(s)}`);
    assert.equal(await e2eeState(p), 'missing-key', who);
    const ws = await workerStats(p);
    assert.equal(ws.decrypted, 0, who);
    assert.ok(ws.missingKey > 20, `${who}: ${JSON.stringify(ws)}`);
  }

  // Relay-side check, as in call.test.mjs: what reached Eve and Mallory through the relay is what
  // the senders' workers produced. No plaintext sample of anyone's video frames (32 bytes beyond
  // the clear VP8 header of the first 16 and every 50th after) appears in the raw frames that Eve's
  // and Mallory's workers recorded, and every one of those frames carries an SFrame header with
  // the key id of a sender in the call: Alice (Firefox) and Bob (Chromium) under the link key,
  // the keyless ones under their throwaway keys. Frames of both browsers are among them.
  const sent = [];
  const kids = new Map();
  for (const [who, p] of [['Alice', alice], ['Bob', bob], ['Eve', eve], ['Mallory', mallory]]) {
    const e = await p.evaluate(() => ({ samples: window.callrelay.call.e2ee.sentSamples, kid: window.callrelay.call.workerStats.kid }));
    assert.ok(e.samples.length >= 16, `${who}: ${e.samples.length} samples`);
    sent.push(...e.samples.map((x) => x.plain));
    kids.set(BigInt(`0x${e.kid}`), who);
  }
  const from = new Set();
  for (const [who, p] of [['Eve', eve], ['Mallory', mallory]]) {
    const seen = await p.evaluate(() => window.callrelay.call.e2ee.seenFrames);
    assert.ok(seen.length >= 16, `${who} saw ${seen.length} frames`);
    for (const frame of seen) {
      for (const plain of sent) assert.ok(!frame.includes(plain), `a plaintext sample reached ${who}`);
      const bytes = Uint8Array.from(frame.match(/../g).map((b) => parseInt(b, 16)));
      const h = parseHeader(bytes, clearBytes('video', bytes));
      assert.ok(kids.has(h.kid), `${who}: a frame with KID ${h.kid.toString(16)} from a known sender`);
      assert.notEqual(kids.get(h.kid), who, `${who} got her own frame back`);
      from.add(kids.get(h.kid));
    }
  }
  assert.ok(from.has('Alice') && from.has('Bob'), `frames checked from ${[...from]}`);
  for (const p of [alice, bob, eve, mallory]) assert.deepEqual(p.errors, []);
  await alice.closeContext();
  await mallory.closeContext();
  for (const p of [bob, eve]) await p.context().close();
});

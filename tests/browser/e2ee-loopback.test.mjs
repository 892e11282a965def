// The E2EE worker in real Chromium, without the relay's media plane: two peer connections in one
// page, the sender's frames encrypted by one worker, the receiver's decrypted by another.
//   - with the link key: video and audio decode, every frame went through the worker;
//   - without the key: packets arrive but nothing decodes (frames dropped in the worker), the worker
//     reports missing-key, and the plaintext bytes the sender's encoder produced (beyond the clear
//     VP8 header) appear nowhere in what the receiver got: the wire carried ciphertext.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, launchBrowser, newPerson } from './harness.mjs';

let relay;
let browser;
before(async () => {
  relay = await startRelay();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await relay?.stop();
});

async function loopback(page, { receiverHasKey }) {
  await page.goto('/calls');
  return page.evaluate(async (receiverHasKey) => {
    const { generateLinkKey } = await import('/assets/e2ee.mjs');
    const key = generateLinkKey();
    const worker = (k) => new Promise((resolve) => {
      const w = new Worker('/assets/e2ee-worker.mjs', { type: 'module' });
      w.log = { stats: null, states: [], samples: [], seen: [] };
      w.onmessage = (e) => {
        const m = e.data;
        if (m.type === 'ready') resolve(w);
        if (m.type === 'stats') w.log.stats = m;
        if (m.type === 'state') w.log.states.push(m.state);
        if (m.type === 'sent-sample') w.log.samples.push(m);
        if (m.type === 'seen-frame') w.log.seen.push(m.hex);
      };
      w.postMessage({ type: 'key', key: k });
    });
    const wa = await worker(key);
    const wb = await worker(receiverHasKey ? key : null);
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
    const pc1 = new RTCPeerConnection();
    const pc2 = new RTCPeerConnection();
    pc1.onicecandidate = (e) => e.candidate && pc2.addIceCandidate(e.candidate);
    pc2.onicecandidate = (e) => e.candidate && pc1.addIceCandidate(e.candidate);
    for (const track of stream.getTracks()) {
      const t = pc1.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      t.sender.transform = new RTCRtpScriptTransform(wa, { op: 'encrypt', kind: track.kind });
    }
    const els = [];
    pc2.ontrack = (e) => {
      e.receiver.transform = new RTCRtpScriptTransform(wb, { op: 'decrypt', kind: e.track.kind });
      const el = document.createElement(e.track.kind);
      el.autoplay = true;
      el.muted = true;
      el.srcObject = new MediaStream([e.track]);
      document.body.append(el);
      els.push(el);
    };
    await pc1.setLocalDescription();
    await pc2.setRemoteDescription(pc1.localDescription);
    await pc2.setLocalDescription();
    await pc1.setRemoteDescription(pc2.localDescription);
    await new Promise((r) => setTimeout(r, 4000));
    const inbound = {};
    (await pc2.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp') inbound[s.kind] = { packetsReceived: s.packetsReceived, bytesReceived: s.bytesReceived, framesDecoded: s.framesDecoded };
    });
    let framesEncoded = 0;
    (await pc1.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') framesEncoded += s.framesEncoded;
    });
    const out = { inbound, framesEncoded, sender: wa.log, receiver: wb.log };
    pc1.close();
    pc2.close();
    stream.getTracks().forEach((t) => t.stop());
    wa.terminate();
    wb.terminate();
    return out;
  }, receiverHasKey);
}

test('E2EE loopback with the key: every frame encrypted by the worker, and it decodes', { timeout: 60000 }, async () => {
  const page = await newPerson(browser, relay.base);
  const r = await loopback(page, { receiverHasKey: true });
  assert.ok(r.framesEncoded > 10, `frames encoded: ${r.framesEncoded}`);
  assert.ok(r.sender.stats.encrypted >= r.framesEncoded, `worker encrypted ${r.sender.stats.encrypted} ≥ ${r.framesEncoded} video frames (+ audio)`);
  assert.ok(r.inbound.video.framesDecoded > 10, `decoded ${r.inbound.video.framesDecoded}`);
  assert.ok(r.inbound.audio.bytesReceived > 0);
  assert.ok(r.receiver.stats.decrypted > 10);
  assert.equal(r.receiver.stats.decryptFailed, 0);
  assert.equal(r.receiver.stats.missingKey, 0);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('E2EE loopback without the key: frames dropped in the worker, nothing decodes, no plaintext on the wire', { timeout: 60000 }, async () => {
  const page = await newPerson(browser, relay.base);
  const r = await loopback(page, { receiverHasKey: false });
  assert.ok(r.inbound.video.packetsReceived > 10, 'video packets arrive');
  assert.equal(r.inbound.video.framesDecoded, 0, 'no video frame reaches the decoder');
  assert.ok(r.receiver.stats.missingKey > 10);
  assert.equal(r.receiver.stats.decrypted, 0);
  assert.ok(r.receiver.states.includes('missing-key'));
  // What the sender's encoder produced vs what reached the receiver.
  assert.ok(r.sender.samples.length >= 16 && r.sender.samples.every((x) => x.plain.length === 64), 'the sender recorded plaintext samples');
  assert.ok(r.receiver.seen.length >= 16);
  assert.ok(r.receiver.seen.some((f) => f.startsWith(r.sender.samples[0].clear)), 'the receiver saw the same first frame (same clear VP8 header)');
  for (const f of r.receiver.seen) {
    for (const x of r.sender.samples) assert.ok(!f.includes(x.plain), 'plaintext bytes do not appear in a received frame');
  }
  await page.context().close();
});

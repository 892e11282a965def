// The E2EE worker: every audio and video frame this page sends is encrypted here before it leaves
// the browser, and every frame it receives is decrypted here before the decoder sees it (format:
// e2ee.mjs). Frames that cannot be decrypted (no key, wrong key, altered) are DROPPED, never passed
// on: a decoder fed ciphertext shows garbage keyframes and plays noise.
//
// Frames reach the worker two ways:
//   - RTCRtpScriptTransform: the `rtctransform` event, options {op: 'encrypt'|'decrypt'|'clear', kind}
//     ('clear': a participant the relay flags `clear_media`, a WHIP publisher; passed as is);
//   - the legacy createEncodedStreams(): a {type: 'stream', readable, writable, op, kind} message.
// Page → worker: {type: 'key', key: Uint8Array|null} before any transform (frames wait for it).
// Encrypt transforms may carry `epoch` (the page's connection number, rising on each rejoin): the
// stats then count the frames encrypted for the newest epoch apart (`epoch`, `epochEncrypted`), so
// the page's bypass guard can check each new peer connection on its own.
// Worker → page: {type: 'state', state: 'ok'|'missing-key'|'decrypt-failed', kid?} on a change,
// {type: 'stats', ...counters} twice a second, and test hooks (sent-sample, seen-frames).
import { FrameCrypto, clearBytes, hex } from './e2ee.mjs';

let setKey;
const keyReady = new Promise((resolve) => (setKey = resolve));
let fc = null; // FrameCrypto, null without a key
let hasKey = false;

const stats = {
  encrypted: 0,
  decrypted: 0,
  dropped: 0,
  missingKey: 0,
  decryptFailed: 0,
  // Frames of participants that send in clear (`clear_media`), passed as they came.
  clear: 0,
  epoch: 0, // the newest epoch an encrypt transform was created for
  epochEncrypted: 0, // frames encrypted by that epoch's transforms
  senders: {}, // kid hex -> 'ok' | 'decrypt-failed'
};
let state = null;
let sentSamples = 0;
let videoSent = 0;
let seenFrames = 0;
let videoSeen = 0;

function post(msg) {
  self.postMessage(msg);
}

function setState(s, extra = {}) {
  if (s !== state) {
    state = s;
    post({ type: 'state', state: s, ...extra });
  }
}

setInterval(() => post({ type: 'stats', ...stats, kid: fc ? fc.kid.toString(16) : null, hasKey }), 500);

self.onmessage = (e) => {
  const m = e.data;
  if (m.type === 'key') {
    hasKey = !!m.key;
    // Without the link key the page still sends, under a throwaway key nobody holds: nothing ever
    // leaves in clear, and the others drop these frames.
    const key = m.key || crypto.getRandomValues(new Uint8Array(16));
    fc = new FrameCrypto(key);
    setKey();
    post({ type: 'ready', kid: fc.kid.toString(16), hasKey });
  } else if (m.type === 'stream') {
    pump(m.readable, m.writable, { op: m.op, kind: m.kind, epoch: m.epoch });
  }
};

if ('RTCTransformEvent' in self || 'onrtctransform' in self) {
  self.onrtctransform = (e) => {
    const t = e.transformer;
    pump(t.readable, t.writable, t.options);
  };
}

function pump(readable, writable, { op, kind, epoch = 0 }) {
  if (op === 'encrypt' && epoch > stats.epoch) {
    stats.epoch = epoch;
    stats.epochEncrypted = 0;
  }
  const transform = new TransformStream({
    async transform(frame, controller) {
      await keyReady;
      if (op === 'encrypt') await encryptFrame(frame, kind, controller, epoch);
      else if (op === 'clear') {
        // A participant the relay says sends in clear (a WHIP publisher): as it comes.
        stats.clear++;
        controller.enqueue(frame);
      } else await decryptFrame(frame, kind, controller);
    },
  });
  readable.pipeThrough(transform).pipeTo(writable).catch((err) => post({ type: 'error', message: String(err) }));
}

async function encryptFrame(frame, kind, controller, epoch) {
  const data = new Uint8Array(frame.data);
  if (data.byteLength === 0) {
    controller.enqueue(frame);
    return;
  }
  // Test hook: 32 plaintext bytes (beyond the clear header) of the first 16 video frames and of
  // every 50th after, up to 48 samples, so a test can check none of them crosses the relay.
  if (kind === 'video' && data.byteLength > 48 && sentSamples < 48 && (videoSent < 16 || videoSent % 50 === 0)) {
    const n = clearBytes(kind, data);
    sentSamples++;
    post({ type: 'sent-sample', clear: hex(data.subarray(0, n)), plain: hex(data.subarray(n, n + 32)) });
  }
  if (kind === 'video') videoSent++;
  const out = await fc.encrypt(kind, data);
  frame.data = out.buffer;
  stats.encrypted++;
  if (epoch === stats.epoch) stats.epochEncrypted++;
  controller.enqueue(frame);
}

function senderState(kid, s) {
  const k = kid.toString(16);
  if (stats.senders[k] !== s) {
    stats.senders[k] = s;
    post({ type: 'sender', kid: k, state: s });
  }
}

async function decryptFrame(frame, kind, controller) {
  const data = new Uint8Array(frame.data);
  if (data.byteLength === 0) return;
  // Test hook: the first 1500 bytes of the first 16 received video frames and of every 25th
  // after, up to 48, as they came off the wire (before any decryption).
  if (kind === 'video' && seenFrames < 48 && (videoSeen < 16 || videoSeen % 25 === 0)) {
    seenFrames++;
    post({ type: 'seen-frame', hex: hex(data.subarray(0, 1500)) });
  }
  if (kind === 'video') videoSeen++;
  if (!hasKey) {
    stats.dropped++;
    stats.missingKey++;
    setState('missing-key');
    return;
  }
  try {
    const { data: plain, kid } = await fc.decrypt(kind, data);
    frame.data = plain.buffer;
    stats.decrypted++;
    senderState(kid, 'ok');
    setState('ok');
    controller.enqueue(frame);
  } catch (err) {
    stats.dropped++;
    stats.decryptFailed++;
    if (err.kid !== undefined) senderState(err.kid, 'decrypt-failed');
    // The page-level state turns to decrypt-failed only while no sender decrypts at all.
    if (state !== 'ok') setState('decrypt-failed', { code: err.code || 'error' });
  }
}

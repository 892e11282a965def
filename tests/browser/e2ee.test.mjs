// Unit tests of the E2EE frame format (crates/server/web/e2ee.mjs) in node's WebCrypto.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FrameCrypto, E2eeError, encodeHeader, parseHeader, clearBytes, generateLinkKey, encodeKey,
  decodeKey, keyFromFragment, deriveSenderKey, hex,
} from '../../crates/server/web/e2ee.mjs';

const vp8Key = () => {
  const f = new Uint8Array(200);
  crypto.getRandomValues(f);
  f[0] = 0x10; // P bit 0: keyframe
  f.set([0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01], 3);
  return f;
};
const vp8Delta = () => {
  const f = crypto.getRandomValues(new Uint8Array(120));
  f[0] = 0x31; // P bit 1
  return f;
};

test('SFrame header: short and long KID/CTR forms round-trip (RFC 9605 §4.3)', () => {
  assert.deepEqual([...encodeHeader(0, 0)], [0x00]);
  assert.deepEqual([...encodeHeader(7, 7)], [0x77]);
  assert.deepEqual([...encodeHeader(8, 0)], [0x80, 0x08]);
  assert.deepEqual([...encodeHeader(0, 8)], [0x08, 0x08]);
  assert.deepEqual([...encodeHeader(0x1234, 0x010203)], [0x90 | 0x08 | 0x02, 0x12, 0x34, 0x01, 0x02, 0x03]);
  for (const [kid, ctr] of [[0n, 0n], [5n, 300n], [0xffffffffffffffffn, 0xffffffffffffffffn], [1n << 40n, 9n]]) {
    const h = encodeHeader(kid, ctr);
    const p = parseHeader(h);
    assert.equal(p.kid, kid);
    assert.equal(p.ctr, ctr);
    assert.equal(p.length, h.length);
  }
  assert.throws(() => encodeHeader(1n << 64n, 0), RangeError);
  assert.throws(() => parseHeader(Uint8Array.of(0x80)), E2eeError);
});

test('clear bytes: 10 of a VP8 keyframe, 3 of a delta frame, 1 of Opus', () => {
  assert.equal(clearBytes('video', vp8Key()), 10);
  assert.equal(clearBytes('video', vp8Delta()), 3);
  assert.equal(clearBytes('audio', new Uint8Array(60)), 1);
  assert.equal(clearBytes('video', new Uint8Array(0)), 0);
  assert.equal(clearBytes('video', Uint8Array.of(0x10, 1)), 2);
});

test('encrypt/decrypt round-trips video and audio; clear header kept; ciphertext differs', async () => {
  const key = generateLinkKey();
  const alice = new FrameCrypto(key);
  const bob = new FrameCrypto(key);
  for (const [kind, frame] of [['video', vp8Key()], ['video', vp8Delta()], ['audio', crypto.getRandomValues(new Uint8Array(80))]]) {
    const n = clearBytes(kind, frame);
    const sealed = await alice.encrypt(kind, frame);
    assert.deepEqual(sealed.subarray(0, n), frame.subarray(0, n), 'clear codec header unchanged');
    assert.equal(clearBytes(kind, sealed), n, 'the receiver finds the same clear length');
    const body = hex(frame.subarray(n, n + 16));
    assert.ok(!hex(sealed).includes(body), 'plaintext does not appear in the protected frame');
    const h = parseHeader(sealed, n);
    assert.equal(h.kid, alice.kid);
    assert.equal(sealed.length, frame.length + h.length + 16);
    const opened = await bob.decrypt(kind, sealed);
    assert.deepEqual(opened.data, frame);
    assert.equal(opened.kid, alice.kid);
  }
  assert.equal(alice.ctr, 3n, 'audio and video share one counter');
});

test('a counter never repeats a nonce: same frame twice gives different ciphertexts', async () => {
  const fc = new FrameCrypto(generateLinkKey(), 42n);
  const f = vp8Delta();
  const a = await fc.encrypt('video', f);
  const b = await fc.encrypt('video', f);
  assert.notDeepEqual(a, b);
  assert.equal(parseHeader(a, 3).ctr + 1n, parseHeader(b, 3).ctr);
});

test('per-sender keys: two KIDs under one link key derive different keys and salts', async () => {
  const key = generateLinkKey();
  const a = await deriveSenderKey(key, 1n);
  const b = await deriveSenderKey(key, 2n);
  assert.notDeepEqual(a.salt, b.salt);
  const fa = new FrameCrypto(key, 1n);
  const fb = new FrameCrypto(key, 2n);
  const f = vp8Delta();
  assert.notDeepEqual(await fa.encrypt('video', f), await fb.encrypt('video', f));
});

test('wrong key, altered clear header, altered ciphertext and truncation are refused', async () => {
  const alice = new FrameCrypto(generateLinkKey());
  const eve = new FrameCrypto(generateLinkKey());
  const sealed = await alice.encrypt('video', vp8Key());
  await assert.rejects(eve.decrypt('video', sealed), (e) => e.code === 'auth');
  const header = Uint8Array.from(sealed);
  header[6] ^= 1; // inside the clear VP8 header: authenticated as associated data
  await assert.rejects(alice.decrypt('video', header), (e) => e.code === 'auth');
  const body = Uint8Array.from(sealed);
  body[body.length - 20] ^= 1;
  await assert.rejects(alice.decrypt('video', body), (e) => e.code === 'auth');
  await assert.rejects(alice.decrypt('video', sealed.subarray(0, 20)), (e) => e.code === 'short' || e.code === 'header');
});

test('RFC 9605 key schedule: HKDF labels as in §4.4.2 (checked against a direct HMAC computation)', async () => {
  const { createHmac, createDecipheriv } = await import('node:crypto');
  const key = Uint8Array.from({ length: 16 }, (_, i) => i);
  const kid = 0x0102n;
  const prk = createHmac('sha256', Buffer.alloc(0)).update(key).digest();
  const kidBytes = Buffer.from('0000000000000102', 'hex');
  const suite = Buffer.from([0x00, 0x04]);
  const expand = (label, len) =>
    createHmac('sha256', prk).update(Buffer.concat([Buffer.from(label), kidBytes, suite, Buffer.from([1])])).digest().subarray(0, len);
  const k = expand('SFrame 1.0 Secret key ', 16);
  const salt = expand('SFrame 1.0 Secret salt ', 12);
  const { salt: got } = await deriveSenderKey(key, kid);
  assert.equal(hex(got), salt.toString('hex'));
  // Decrypt a frame with node's own AES-GCM and the independently derived key and nonce.
  const fc = new FrameCrypto(key, kid);
  fc.ctr = 0x0a0bn;
  const frame = crypto.getRandomValues(new Uint8Array(50));
  const sealed = await fc.encrypt('audio', frame);
  const h = parseHeader(sealed, 1);
  const nonce = Buffer.from(salt);
  const ctr = Buffer.alloc(8);
  ctr.writeBigUInt64BE(0x0a0bn);
  for (let i = 0; i < 8; i++) nonce[4 + i] ^= ctr[i];
  const d = createDecipheriv('aes-128-gcm', k, nonce);
  d.setAAD(Buffer.concat([sealed.subarray(1, 1 + h.length), sealed.subarray(0, 1)]));
  const ct = sealed.subarray(1 + h.length);
  d.setAuthTag(ct.subarray(ct.length - 16));
  const pt = Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]);
  assert.equal(pt.toString('hex'), hex(frame.subarray(1)));
});

test('link keys travel as 22 base64url characters in the fragment', () => {
  const key = generateLinkKey();
  const text = encodeKey(key);
  assert.match(text, /^[A-Za-z0-9_-]{22}$/);
  assert.deepEqual(decodeKey(text), key);
  assert.deepEqual(keyFromFragment(`#k=${text}`), key);
  assert.deepEqual(keyFromFragment(`#x=1&k=${text}`), key);
  assert.equal(keyFromFragment(''), null);
  assert.equal(keyFromFragment('#k=short'), null);
  assert.equal(decodeKey('!'.repeat(22)), null);
});

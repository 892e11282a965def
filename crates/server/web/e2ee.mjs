// End-to-end encryption of media frames: an SFrame-style (RFC 9605) format over AES-128-GCM,
// for the Encoded Transform API (see e2ee-worker.mjs). Pure functions over WebCrypto, shared by the
// worker and the unit tests (node --test runs them in node's WebCrypto).
//
// The link key: 16 random bytes made in the creator's browser, carried only in the URL fragment
// `#k=<base64url>` (browsers never send a fragment to a server). Every participant of the link
// holds the same key; each sender picks a random 64-bit key id (KID) per session, and the AEAD key
// and salt of a sender are derived from the link key and its KID exactly as RFC 9605 §4.4.2 does
// for the cipher suite AES_128_GCM_SHA256_128 (0x0004):
//
//   secret = HKDF-Extract("", link_key)
//   key    = HKDF-Expand(secret, "SFrame 1.0 Secret key "  || KID (u64 BE) || 0x0004, 16)
//   salt   = HKDF-Expand(secret, "SFrame 1.0 Secret salt " || KID (u64 BE) || 0x0004, 12)
//   nonce  = salt XOR (CTR as 96-bit big-endian)
//
// So two senders sharing the link key never share a (key, nonce) pair; one sender's audio and video
// share its counter, which only goes up.
//
// A protected frame, as it leaves the encoder transform:
//
//   +----------------------+---------------------+----------------------------------+
//   | clear codec header   | SFrame header       | AES-GCM ciphertext || 16-byte tag |
//   | (0, 1, 3 or 10 B)    | 1 B + KID + CTR     |                                  |
//   +----------------------+---------------------+----------------------------------+
//
// The clear codec header is what the relay needs to route without the key:
//   - VP8 keyframe (frame tag P bit = 0): 10 bytes = 3-byte frame tag + start code 9d 01 2a +
//     14-bit width and height with scaling (the relay finds keyframes and sizes for simulcast
//     switching and keyframe requests);
//   - VP8 delta frame (P bit = 1): 3 bytes (the frame tag);
//   - Opus: 1 byte (the TOC byte: mode, bandwidth, frame count).
// The clear bytes are not secret but they are authenticated: they are the AEAD's associated data
// together with the SFrame header (RFC 9605 "metadata"), so a change in transit fails decryption.
//
// SFrame header (RFC 9605 §4.3): first byte |X|K K K|Y|C C C|. X = 0: KID = K (0..7), else K+1
// bytes of KID follow. Y = 0: CTR = C (0..7), else C+1 bytes of CTR follow. Big-endian, minimal.

export const CIPHER_SUITE = 0x0004; // AES_128_GCM_SHA256_128
export const TAG_BYTES = 16;
const enc = new TextEncoder();

/** Thrown by decryptFrame; `code` is `short`, `header` or `auth` (wrong key or altered frame). */
export class E2eeError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** 16 random bytes: a new link key. */
export function generateLinkKey() {
  return crypto.getRandomValues(new Uint8Array(16));
}

/** A random 64-bit sender key id (BigInt). */
export function randomKid() {
  const b = crypto.getRandomValues(new Uint8Array(8));
  return bytesToBig(b);
}

export function encodeKey(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Decodes a base64url link key; null unless it is exactly 16 bytes. */
export function decodeKey(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]{22}$/.test(text)) return null;
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/') + '==';
  let bin;
  try {
    bin = atob(b64);
  } catch {
    return null;
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.length === 16 ? out : null;
}

/** The link key in a URL fragment such as `#k=…` (other parameters allowed), or null. */
export function keyFromFragment(hash) {
  const params = new URLSearchParams(String(hash || '').replace(/^#/, ''));
  return decodeKey(params.get('k'));
}

/** How many leading bytes of a frame stay in clear (see the header comment). */
export function clearBytes(kind, data) {
  const n = data.byteLength;
  if (n === 0) return 0;
  if (kind === 'audio') return 1;
  const keyframe = (data[0] & 0x01) === 0;
  return Math.min(n, keyframe ? 10 : 3);
}

function bigToBytes(v) {
  const out = [];
  let x = BigInt(v);
  do {
    out.unshift(Number(x & 0xffn));
    x >>= 8n;
  } while (x > 0n);
  return out;
}

function bytesToBig(bytes) {
  let x = 0n;
  for (const b of bytes) x = (x << 8n) | BigInt(b);
  return x;
}

function u64be(v) {
  const out = new Uint8Array(8);
  let x = BigInt(v);
  for (let i = 7; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

/** The SFrame header of (kid, ctr), both BigInt-able, at most 64 bits. */
export function encodeHeader(kid, ctr) {
  kid = BigInt(kid);
  ctr = BigInt(ctr);
  if (kid < 0n || kid >= 1n << 64n || ctr < 0n || ctr >= 1n << 64n) {
    throw new RangeError('KID and CTR are 64-bit unsigned');
  }
  const bytes = [0];
  if (kid < 8n) {
    bytes[0] |= Number(kid) << 4;
  } else {
    const k = bigToBytes(kid);
    bytes[0] |= 0x80 | ((k.length - 1) << 4);
    bytes.push(...k);
  }
  if (ctr < 8n) {
    bytes[0] |= Number(ctr);
  } else {
    const c = bigToBytes(ctr);
    bytes[0] |= 0x08 | (c.length - 1);
    bytes.push(...c);
  }
  return Uint8Array.from(bytes);
}

/** Parses the SFrame header at `offset`: {kid, ctr, length} (BigInt kid and ctr). */
export function parseHeader(data, offset = 0) {
  if (offset >= data.byteLength) throw new E2eeError('header', 'no SFrame header');
  const b = data[offset];
  let p = offset + 1;
  let kid;
  if (b & 0x80) {
    const k = ((b >> 4) & 0x07) + 1;
    if (p + k > data.byteLength) throw new E2eeError('header', 'truncated KID');
    kid = bytesToBig(data.subarray(p, p + k));
    p += k;
  } else {
    kid = BigInt((b >> 4) & 0x07);
  }
  let ctr;
  if (b & 0x08) {
    const c = (b & 0x07) + 1;
    if (p + c > data.byteLength) throw new E2eeError('header', 'truncated CTR');
    ctr = bytesToBig(data.subarray(p, p + c));
    p += c;
  } else {
    ctr = BigInt(b & 0x07);
  }
  return { kid, ctr, length: p - offset };
}

function nonce(salt, ctr) {
  const n = new Uint8Array(salt);
  const c = u64be(ctr);
  for (let i = 0; i < 8; i++) n[4 + i] ^= c[i];
  return n;
}

function concat(...parts) {
  const len = parts.reduce((a, p) => a + p.byteLength, 0);
  const out = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

/** Derives the AEAD key and salt of sender `kid` from the link key (RFC 9605 §4.4.2). */
export async function deriveSenderKey(linkKey, kid) {
  const base = await crypto.subtle.importKey('raw', linkKey, 'HKDF', false, ['deriveBits']);
  const suffix = concat(u64be(kid), Uint8Array.of(CIPHER_SUITE >> 8, CIPHER_SUITE & 0xff));
  const expand = (label, bits) =>
    crypto.subtle.deriveBits(
      { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: concat(enc.encode(label), suffix) },
      base,
      bits,
    );
  const [keyBits, saltBits] = await Promise.all([
    expand('SFrame 1.0 Secret key ', 128),
    expand('SFrame 1.0 Secret salt ', 96),
  ]);
  const key = await crypto.subtle.importKey('raw', keyBits, 'AES-GCM', false, ['encrypt', 'decrypt']);
  return { key, salt: new Uint8Array(saltBits) };
}

/**
 * One participant's frame crypto: encrypts with its own KID and counter, decrypts any sender's
 * frame whose KID it derives from the same link key (sender keys cached).
 */
export class FrameCrypto {
  constructor(linkKey, kid = randomKid()) {
    this.linkKey = linkKey;
    this.kid = BigInt(kid);
    this.ctr = 0n;
    this.keys = new Map();
  }

  senderKey(kid) {
    let k = this.keys.get(kid);
    if (!k) {
      if (this.keys.size > 256) this.keys.clear();
      k = deriveSenderKey(this.linkKey, kid);
      this.keys.set(kid, k);
    }
    return k;
  }

  /** Protects one frame (Uint8Array or ArrayBuffer) of `kind` ('audio' | 'video'). */
  async encrypt(kind, frame) {
    const data = frame instanceof Uint8Array ? frame : new Uint8Array(frame);
    const n = clearBytes(kind, data);
    const ctr = this.ctr++;
    const header = encodeHeader(this.kid, ctr);
    const clear = data.subarray(0, n);
    const { key, salt } = await this.senderKey(this.kid);
    const ct = await crypto.subtle.encrypt(
      { name: 'AES-GCM', iv: nonce(salt, ctr), additionalData: concat(header, clear), tagLength: 128 },
      key,
      data.subarray(n),
    );
    return concat(clear, header, new Uint8Array(ct));
  }

  /** Opens one protected frame; throws E2eeError. Returns {data, kid, ctr}. */
  async decrypt(kind, frame) {
    const data = frame instanceof Uint8Array ? frame : new Uint8Array(frame);
    const n = clearBytes(kind, data);
    if (data.byteLength < n + 1 + TAG_BYTES) throw new E2eeError('short', 'frame too short');
    const { kid, ctr, length } = parseHeader(data, n);
    const header = data.subarray(n, n + length);
    if (data.byteLength < n + length + TAG_BYTES) throw new E2eeError('short', 'frame too short');
    const { key, salt } = await this.senderKey(kid);
    let pt;
    try {
      pt = await crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: nonce(salt, ctr), additionalData: concat(header, data.subarray(0, n)), tagLength: 128 },
        key,
        data.subarray(n + length),
      );
    } catch {
      const err = new E2eeError('auth', 'authentication failed (wrong key or altered frame)');
      err.kid = kid;
      throw err;
    }
    return { data: concat(data.subarray(0, n), new Uint8Array(pt)), kid, ctr };
  }
}

/** Lowercase hex of bytes (for test hooks). */
export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

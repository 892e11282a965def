// The browser-side QR encoder (crates/server/web/qr.mjs over the vendored qrcode-generator) makes
// codes that a decoder (jsQR) reads back as the full URL, key fragment included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import jsQR from 'jsqr';
import { qrMatrix, qrSvg } from '../../crates/server/web/qr.mjs';

/** Rasterises a module matrix (4-module quiet zone, `scale` pixels a module) to RGBA. */
export function rasterise(m, scale = 4) {
  const n = m.length + 8;
  const w = n * scale;
  const data = new Uint8ClampedArray(w * w * 4).fill(255);
  for (let r = 0; r < m.length; r++) {
    for (let c = 0; c < m.length; c++) {
      if (!m[r][c]) continue;
      for (let y = 0; y < scale; y++) {
        for (let x = 0; x < scale; x++) {
          const i = (((r + 4) * scale + y) * w + (c + 4) * scale + x) * 4;
          data[i] = data[i + 1] = data[i + 2] = 0;
        }
      }
    }
  }
  return { data, width: w, height: w };
}

test('QR codes of call links decode back to the full URL with its key fragment', () => {
  for (const url of [
    'http://127.0.0.1:7700/video/4bT9xQ2mZr7LpK0aW3cV1e#k=AAECAwQFBgcICQoLDA0ODw',
    'https://calls.example.org/voice/zzzzzzzzzzzzzzzzzzzzzz#k=_-_-_-_-_-_-_-_-_-_-_-',
  ]) {
    const m = qrMatrix(url);
    assert.ok(m.length >= 21 && (m.length - 17) % 4 === 0, 'a valid QR size');
    const img = rasterise(m);
    const got = jsQR(img.data, img.width, img.height);
    assert.ok(got, 'decodes');
    assert.equal(got.data, url);
  }
});

test('the SVG draws exactly the dark modules', () => {
  const url = 'http://127.0.0.1:7700/video/4bT9xQ2mZr7LpK0aW3cV1e#k=AAECAwQFBgcICQoLDA0ODw';
  const m = qrMatrix(url);
  const svg = qrSvg(url);
  const dark = m.flat().filter(Boolean).length;
  assert.equal((svg.match(/h1v1h-1z/g) || []).length, dark);
  assert.match(svg, new RegExp(`viewBox="0 0 ${m.length + 8} ${m.length + 8}"`));
});

// QR codes of call links, made in the browser (the server cannot: it never sees the key fragment).
// Encoder: vendor/qrcode.mjs (qrcode-generator, MIT). Error correction M, byte mode, smallest version.
import qrcode from './vendor/qrcode.mjs';

/** The module matrix of `text`: an array of rows of booleans (true = dark). */
export function qrMatrix(text, ecLevel = 'M') {
  const qr = qrcode(0, ecLevel);
  qr.addData(text, 'Byte');
  qr.make();
  const n = qr.getModuleCount();
  const rows = [];
  for (let r = 0; r < n; r++) {
    const row = [];
    for (let c = 0; c < n; c++) row.push(qr.isDark(r, c));
    rows.push(row);
  }
  return rows;
}

/** An SVG document (string) of `text` as a QR code with a 4-module quiet zone. */
export function qrSvg(text, ecLevel = 'M') {
  const m = qrMatrix(text, ecLevel);
  const n = m.length;
  const size = n + 8;
  let d = '';
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      if (m[r][c]) d += `M${c + 4} ${r + 4}h1v1h-1z`;
    }
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${size} ${size}" shape-rendering="crispEdges" role="img" aria-label="QR code of the call link">` +
    `<rect width="${size}" height="${size}" fill="#fff"/><path d="${d}" fill="#000"/></svg>`;
}

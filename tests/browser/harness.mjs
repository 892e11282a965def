// Test harness: the real relay binary on 127.0.0.1 and real headless Chromium (Debian's
// /usr/bin/chromium) driven by playwright-core; for firefox.test.mjs also Debian's Firefox ESR
// (/usr/bin/firefox-esr) driven by puppeteer-core over WebDriver BiDi. Everything started here is
// stopped by `stop()` / `close()`.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import jsQR from 'jsqr';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BINARY = process.env.CALLRELAY_BIN || join(ROOT, 'target', 'release', 'callrelay');
export const ARTIFACTS = join(ROOT, 'artifacts');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream', '--allow-loopback-in-peer-connection',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
];

export const FIREFOX = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr';

// Firefox prefs for a headless call on loopback (on top of puppeteer's automation prefs, which
// already turn off updates, telemetry and the OpenH264/Widevine downloads):
export const FIREFOX_PREFS = {
  // Fake camera and microphone (a changing colour and a tone), no permission prompt.
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  // …and let the fake devices count as a real capture: Firefox gathers ICE candidates on every
  // interface (loopback included, with the pref below) only for a page that captures or has the
  // camera/microphone permission; otherwise just on the default route's address.
  'media.navigator.permission.fake': true,
  // enumerateDevices() answers in a window without focus too (one person per window, one focus).
  'media.devices.unfocused.enabled': true,
  // ICE: gather on 127.0.0.1 (the relay's media address) and use it as it is, not as mDNS names.
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  // Remote audio may play without a user gesture (the <audio> of each tile).
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  // Never fetch OpenH264 (VP8 is what the page sends).
  'media.gmp-gmpopenh264.enabled': false,
  'media.gmp-manager.updateEnabled': false,
};

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `callrelay serve --dev` (or, with `dev: false`, without it) on 127.0.0.1. By default on a free port with a fresh data dir
 * (removed by `stop()`); `port` and `dataDir` restart a relay in place of one that was stopped or
 * killed (the caller then owns the data dir: `stop()` leaves it).
 */
export async function startRelay({ env = {}, port: fixedPort, dataDir: fixedDataDir, publicUrl, dev = true } = {}) {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run cargo build -p callrelay-server first`);
  const port = fixedPort || (await freePort());
  const dataDir = fixedDataDir || mkdtempSync(join(tmpdir(), 'callrelay-browser-'));
  const base = `http://127.0.0.1:${port}`;
  // Outside dev mode the caller's env must carry CALLRELAY_AUTH_SECRET.
  const child = spawn(BINARY, ['serve', ...(dev ? ['--dev'] : []), '--http-addr', `127.0.0.1:${port}`, '--public-url', publicUrl || base, '--data-dir', dataDir], {
    env: { ...process.env, CALLRELAY_MEDIA_PORTS: '0', CALLRELAY_MEDIA_BIND_IP: '127.0.0.1', RUST_LOG: process.env.RUST_LOG || 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const exited = new Promise((r) => child.once('exit', r));
  const deadline = Date.now() + 20000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the relay exited (${child.exitCode}):\n${log}`);
    try {
      const r = await fetch(`${base}/healthz`);
      if (r.ok) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the relay did not answer /healthz in 20 s:\n${log}`);
    }
    await sleep(100);
  }
  return {
    base,
    port,
    dataDir,
    get log() {
      return log;
    },
    /** Sends `sig` to the relay without waiting (e.g. SIGTERM to start a drain). */
    signal(sig) {
      child.kill(sig);
    },
    exited,
    /** SIGKILL (a lost node: no drain, no `removed`), once it is gone. */
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      if (!fixedDataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (apt-get install chromium)`);
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, timeout: 30000 });
}

/**
 * Debian's Firefox ESR, headless, over WebDriver BiDi (puppeteer-core: no browser download), with a
 * fresh profile that puppeteer removes on `close()`.
 */
export async function launchFirefox(options = {}) {
  if (!existsSync(FIREFOX)) throw new Error(`${FIREFOX} is missing (apt-get install firefox-esr)`);
  return puppeteer.launch({
    browser: 'firefox', executablePath: FIREFOX, headless: true, timeout: 30000, protocolTimeout: 30000,
    // The window's size (Firefox 140 has no BiDi command for puppeteer's viewport emulation).
    defaultViewport: null, args: ['--width=1100', '--height=760'],
    extraPrefsFirefox: FIREFOX_PREFS,
    ...options,
  });
}

/**
 * A Firefox page in its own browser context (own storage: another person): `errors`, `goto(path)`
 * relative to `base`, `waitForTestId(id)` (its element handle), `fillTestId(id, text)` (real key
 * presses), `clickTestId(id)` (a real click). Puppeteer's `waitForFunction`, `waitForSelector`
 * (once it has to wait) and locators never finish on our pages in Firefox: they poll with code
 * the page's CSP (`script-src 'self'`, no 'unsafe-eval') refuses. Use `until()` instead.
 */
export async function newFirefoxPerson(browser, base) {
  const context = await browser.createBrowserContext();
  // A window of its own, not a tab: a background tab is hidden (throttled timers, no painting),
  // and with a call running in another tab Firefox 140's BiDi failed to open the next tab here
  // ("TabManager.getTabBrowser(...) is undefined": its most recent window was no browser window).
  const page = await context.newPage({ type: 'window' });
  page.setDefaultTimeout(15000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.errors = errors;
  page.base = base;
  const goto = page.goto.bind(page);
  page.goto = (url, opts) => goto(new URL(url, base).href, opts);
  page.waitForTestId = async (testid, { timeout = 15000 } = {}) => {
    await until(page, (sel) => !!document.querySelector(sel), `[data-testid=${testid}]`, { timeout, what: `[data-testid=${testid}]` });
    return page.$(`[data-testid=${testid}]`);
  };
  page.fillTestId = async (testid, text) => {
    const el = await page.waitForTestId(testid);
    await el.evaluate((e) => {
      e.value = '';
    });
    await el.type(text);
  };
  page.clickTestId = async (testid) => (await page.waitForTestId(testid)).click();
  page.closeContext = () => context.close();
  return page;
}

/** A page in its own browser context (own sessionStorage, localStorage: another person). */
export async function newPerson(browser, base, { viewport = { width: 1100, height: 760 } } = {}) {
  const context = await browser.newContext({ viewport, baseURL: base, permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.errors = errors;
  return page;
}

/** Creates a link on the `/` page as `name`; returns {url, id, kind, key}. */
export async function createLink(page, { name = 'Alice', kind = 'video', title, when } = {}) {
  await page.goto('/');
  await page.getByTestId('name').fill(name);
  if (kind === 'voice') await page.check('input[name=kind][value=voice]');
  if (title) await page.fill('#title', title);
  if (when) await page.fill('#when', when);
  await page.getByTestId('create').click();
  const url = (await page.getByTestId('share-url').textContent()).trim();
  const m = url.match(/\/(video|voice)\/([0-9A-Za-z]{22})#k=([A-Za-z0-9_-]{22})$/);
  if (!m) throw new Error(`unexpected share URL ${url}`);
  return { url, kind: m[1], id: m[2], key: m[3] };
}

/** Opens `url`, types `name`, clicks Join. */
export async function joinCall(page, url, name) {
  await page.goto(url);
  await page.getByTestId('name').fill(name);
  await page.getByTestId('join').click();
}

export async function devToken(base, body) {
  const r = await fetch(`${base}/v1/dev/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`dev token: ${r.status}`);
  return (await r.json()).token;
}

/** Whether the relay serves signaling yet (the media plane). */
export async function hasSignaling(base) {
  try {
    const r = await fetch(`${base}/v1/signal`);
    return r.status !== 404;
  } catch {
    return false;
  }
}

/** Inbound RTP stats of the page's peer connection, per kind. */
export async function inbound(page) {
  return page.evaluate(async () => {
    const pc = window.callrelay.pc;
    const out = { audio: [], video: [] };
    if (!pc || pc.connectionState === 'closed') return out;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp') {
        out[s.kind]?.push({ bytesReceived: s.bytesReceived || 0, packetsReceived: s.packetsReceived || 0, framesDecoded: s.framesDecoded || 0 });
      }
    });
    return out;
  });
}

/** Waits until the page decodes `others` remote audio streams (and video ones unless voice). */
export async function waitDecoding(page, others, { video = true, videos = others, within = 15000 } = {}) {
  const deadline = Date.now() + within;
  let last;
  while (Date.now() < deadline) {
    last = await inbound(page);
    const a = last.audio.filter((s) => s.bytesReceived > 0 && s.packetsReceived > 0).length;
    const v = last.video.filter((s) => s.bytesReceived > 0 && s.framesDecoded > 0).length;
    if (a >= others && (!video || v >= videos)) return last;
    await sleep(250);
  }
  throw new Error(`not decoding ${others} participant(s) within ${within} ms: ${JSON.stringify(last)}`);
}

/**
 * Polls `fn(arg)` in `page` (Chromium or Firefox: only `page.evaluate`) until it returns something
 * truthy, which it returns; throws after `timeout` ms with `what` and the last value.
 */
export async function until(page, fn, arg, { timeout = 10000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await page.evaluate(fn, arg);
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeout} ms (last: ${JSON.stringify(last)})`);
    await sleep(200);
  }
}

export async function inCall(page) {
  await page.getByTestId('call-status').waitFor();
  await page.waitForFunction(() => ['joined', 'connected'].includes(document.querySelector('[data-testid=call-status]')?.dataset.state), null, { timeout: 15000 });
}

/**
 * The text of the QR code drawn as SVG in `selector` of `page`: rasterised by the browser,
 * decoded by jsQR in node (null if it does not decode).
 */
export async function qrText(page, selector) {
  const img = await page.evaluate(async (sel) => {
    const svg = document.querySelector(`${sel} svg`).outerHTML;
    const im = new Image();
    im.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
    await im.decode();
    const c = document.createElement('canvas');
    c.width = c.height = 400;
    const g = c.getContext('2d');
    g.imageSmoothingEnabled = false;
    g.drawImage(im, 0, 0, 400, 400);
    return Array.from(g.getImageData(0, 0, 400, 400).data);
  }, selector);
  return jsQR(Uint8ClampedArray.from(img), 400, 400)?.data ?? null;
}

export function artifactsDir() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return ARTIFACTS;
}

export { sleep };

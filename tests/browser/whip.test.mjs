// WHIP and WHEP with a third-party client: the npm `whip-whep` package (the WHIP and WHEP
// clients of Sergio Garcia Murillo, an author of RFC 9725), run as they are in real headless
// Chromium. Alice is in the call on the web page (E2EE on); a studio page publishes its camera
// and microphone into her link with WHIPClient, and Alice sees it, flagged as not end-to-end
// encrypted; a third page watches the studio with WHEPClient and decodes the video. Stopping
// each ends its session (the preview's count of people in the call goes back down).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import {
  startRelay, launchBrowser, newPerson, devToken, until, createLink, joinCall, inCall as inCallPage, waitDecoding,
} from './harness.mjs';

const require = createRequire(import.meta.url);
const pkg = dirname(require.resolve('whip-whep/package.json'));
const WHIP_JS = readFileSync(join(pkg, 'whip.js'), 'utf8');
const WHEP_JS = readFileSync(join(pkg, 'whep.js'), 'utf8');

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

async function inCall(id) {
  const r = await fetch(`${relay.base}/v1/links/${id}`);
  return (await r.json()).participants;
}

/**
 * Loads a client module into `page` as `window[name]`. The page is the relay's own `/` (the
 * clients' requests are then same-origin); its Content-Security-Policy allows scripts from the
 * relay's origin only, so the module is served from there by the test (a routed URL).
 */
async function load(page, source, name) {
  page.failed = [];
  page.on('response', (r) => {
    if (r.status() >= 400) page.failed.push(`${r.request().method()} ${new URL(r.url()).pathname.replace(/[0-9a-f]{32}$/, '{session}')} ${r.status()}`);
  });
  await page.route(`**/__test__/${name}.mjs`, (r) => r.fulfill({ contentType: 'text/javascript', body: source }));
  await page.goto('/');
  await page.evaluate(async (name) => {
    window[name] = await import(`/__test__/${name}.mjs`);
  }, name);
}

test('a WHIP client publishes into a call link and a WHEP player watches it', { timeout: 90000 }, async () => {
  const alice = await newPerson(browser, relay.base);
  const link = await createLink(alice, { name: 'Alice' });
  const { id } = link;
  await joinCall(alice, link.url, 'Alice');
  await inCallPage(alice);
  const obsToken = await devToken(relay.base, { user: 'studio', name: 'Studio' });
  const viewerToken = await devToken(relay.base, { user: 'viewer' });

  const studio = await newPerson(browser, relay.base);
  await load(studio, WHIP_JS, 'whip');
  await studio.evaluate(async ({ url, token }) => {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
    const pc = new RTCPeerConnection();
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly' });
    const client = new window.whip.WHIPClient();
    await client.publish(pc, url, token);
    window.published = { pc, client };
  }, { url: `${relay.base}/v1/links/${id}/whip`, token: obsToken });
  await until(studio, () => window.published.pc.connectionState === 'connected', null, { timeout: 15000, what: 'the WHIP client connected' });
  assert.equal(await inCall(id), 2);

  // Alice sees the studio: its tile says it is not end-to-end encrypted, and its video decodes
  // (its frames pass her E2EE transform as they came; nothing failed to decrypt).
  await alice.getByTestId('clear-media').waitFor({ timeout: 10000 });
  const tile = alice.locator('[data-testid=tile]', { has: alice.getByTestId('clear-media') });
  assert.match(await tile.textContent(), /Studio/);
  const studioId = await tile.getAttribute('data-participant');
  await waitDecoding(alice, 1);
  // The worker's counters arrive twice a second.
  await alice.waitForFunction(() => window.callrelay.call.workerStats?.clear > 0, null, { timeout: 3000 });
  const ws = await alice.evaluate(() => window.callrelay.call.workerStats);
  assert.ok(ws.decryptFailed === 0 && ws.encrypted > 0, JSON.stringify(ws));
  assert.equal(await alice.getByTestId('e2ee-status').getAttribute('data-state'), 'on', 'her own media stays encrypted');

  const viewer = await newPerson(browser, relay.base);
  await load(viewer, WHEP_JS, 'whep');
  await viewer.evaluate(async ({ url, token }) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    document.body.append(video);
    pc.ontrack = (e) => {
      if (e.track.kind === 'video') video.srcObject = new MediaStream([e.track]);
    };
    const client = new window.whep.WHEPClient();
    await client.view(pc, url, token);
    window.watching = { pc, client, video };
  }, { url: `${relay.base}/v1/links/${id}/whep?participant=${studioId}`, token: viewerToken });

  // The player decodes the studio's video, and audio arrives.
  const stats = () => viewer.evaluate(async () => {
    const out = { frames: 0, width: 0, audio: 0 };
    for (const s of (await window.watching.pc.getStats()).values()) {
      if (s.type !== 'inbound-rtp') continue;
      if (s.kind === 'video') {
        out.frames += s.framesDecoded || 0;
        out.width = Math.max(out.width, s.frameWidth || 0);
      } else out.audio += s.packetsReceived || 0;
    }
    return out;
  });
  const deadline = Date.now() + 20000;
  let s = await stats();
  while (!(s.frames >= 30 && s.audio >= 25)) {
    assert.ok(Date.now() < deadline, `the player decodes: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 250));
    s = await stats();
  }
  assert.ok(s.width > 0, JSON.stringify(s));
  assert.ok(await viewer.evaluate(() => window.watching.video.videoWidth > 0), 'the video element shows it');
  assert.equal(await inCall(id), 3);

  // Stopping sends DELETE on each session URL: both leave the call.
  await studio.evaluate(() => window.published.client.stop());
  await viewer.evaluate(() => window.watching.client.stop());
  const gone = Date.now() + 10000;
  while ((await inCall(id)) !== 1) {
    assert.ok(Date.now() < gone, 'both sessions ended: only Alice is left');
    await new Promise((r) => setTimeout(r, 100));
  }
  // The only refusals: trickle PATCHes, which an ICE-lite relay does not take (405, as RFC 9725
  // lets it; the clients go on), and the browser's favicon request.
  const allowed = /^(PATCH \/v1\/wh[ie]p\/\{session\} 405|GET \/favicon\.ico 404)$/;
  for (const page of [studio, viewer]) {
    assert.deepEqual(page.failed.filter((f) => !allowed.test(f)), []);
    assert.deepEqual(page.errors.filter((e) => !/status of (405|404)/.test(e)), []);
    await page.context().close();
  }
  await alice.context().close();
});

// Calls through the relay's media plane, in real headless Chromium: two and three people in a video
// link, a voice link, E2EE with and without the key, revocation and blocking during a call (no
// rejoin), and a drain (the pages rejoin the relay that replaces it). Skipped (with a note) when
// the relay binary does not serve signaling yet. More rejoin cases: rejoin.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import {
  startRelay, launchBrowser, newPerson, createLink as create, joinCall, devToken, hasSignaling, artifactsDir, sleep,
  inbound, waitDecoding, inCall, BINARY, qrText,
} from './harness.mjs';
import { clearBytes, parseHeader } from '../../crates/server/web/e2ee.mjs';

let relay;
let browser;
let media = false;
const made = [];
const createLink = async (...args) => {
  const link = await create(...args);
  made.push(link);
  return link;
};

before(async () => {
  relay = await startRelay();
  media = await hasSignaling(relay.base);
  if (media) browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await relay?.stop();
});

const needsMedia = (t) => {
  if (!media) {
    t.skip('the relay does not serve /v1/signal yet (media plane missing)');
    return true;
  }
  return false;
};

test('two people in a video link hear and see each other (E2EE on)', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  const link = await createLink(alice, { name: 'Alice', title: 'Two of us' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  // Bob's preview counts Alice in the call.
  await bob.goto(link.url);
  assert.equal(await bob.getByTestId('in-call').textContent(), '1 person is in the call');
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  const started = Date.now();
  await Promise.all([waitDecoding(alice, 1), waitDecoding(bob, 1)]);
  assert.ok(Date.now() - started < 15000);
  for (const [page, other] of [[alice, 'Bob'], [bob, 'Alice']]) {
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=tile]').length === 1);
    assert.match(await page.getByTestId('tile').textContent(), new RegExp(other));
    assert.equal(await page.getByTestId('e2ee-status').getAttribute('data-state'), 'on');
    // The worker's counters arrive twice a second: wait for a report after the first decode.
    await page.waitForFunction(() => window.callrelay.call.workerStats?.decrypted > 0, null, { timeout: 3000 });
    const ws = await page.evaluate(() => window.callrelay.call.workerStats);
    assert.ok(ws.encrypted > 0 && ws.decryptFailed === 0, JSON.stringify(ws));
  }
  // Simulcast: Alice sends three layers; Bob's video_preference (his tile's height) gets him the
  // middle one (480x270 of the fake camera's 960x540) rather than the relay's default lowest one.
  const layers = await alice.evaluate(async () => {
    const out = [];
    (await window.callrelay.pc.getStats()).forEach((s) => s.type === 'outbound-rtp' && s.kind === 'video' && out.push(s.rid));
    return out.sort();
  });
  assert.deepEqual(layers, ['h', 'l', 'm']);
  await bob.waitForFunction(async () => {
    let h = 0;
    (await window.callrelay.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') h = s.frameHeight || 0;
    });
    return h > 135;
  }, null, { timeout: 10000 });
  // The active speaker (from the fake microphone's beeps) gets highlighted somewhere.
  await alice.waitForFunction(() => document.querySelectorAll('.tile.speaking').length === 1, null, { timeout: 10000 });
  assert.match(await alice.locator('.tile.speaking').getAttribute('data-participant'), /^p-[0-9a-f]{16}$/);
  // Mute: Bob sees Alice muted.
  await alice.getByTestId('mic').click();
  await bob.waitForFunction(() => document.querySelector('[data-testid=tile]')?.dataset.audioMuted === 'true', null, { timeout: 5000 });
  await alice.getByTestId('mic').click();
  await sleep(1500); // let the video settle for the picture
  await alice.screenshot({ path: join(artifactsDir(), 'two-party-call.png') });
  // Leave: the other tile goes away.
  await bob.getByTestId('leave').click();
  assert.equal(await bob.getByTestId('removed-reason').textContent(), 'You left the call');
  await alice.waitForFunction(() => document.querySelectorAll('[data-testid=tile]').length === 0, null, { timeout: 10000 });
  // Rejoin from the overlay: back on the preview of the same link, key kept.
  await bob.getByTestId('rejoin').click();
  await bob.getByTestId('preview').waitFor();
  assert.equal(bob.url(), link.url);
  await alice.context().close();
  await bob.context().close();
});

test('a link from `callrelay link create` gives an E2EE call in two browsers', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  // The command line makes the link and its key; the relay never sees the key.
  const token = await devToken(relay.base, { user: 'cli-alice' });
  const url = execFileSync(BINARY, ['link', 'create', '--title', 'From the CLI', '--url', relay.base], {
    env: { PATH: process.env.PATH, CALLRELAY_TOKEN: token },
  }).toString().trim();
  assert.match(url, /\/video\/[0-9A-Za-z]{22}#k=[A-Za-z0-9_-]{22}$/);
  const pages = [await newPerson(browser, relay.base), await newPerson(browser, relay.base)];
  const names = ['Ann', 'Ben'];
  for (let i = 0; i < 2; i++) {
    await pages[i].goto(url);
    assert.equal(await pages[i].getByTestId('title').textContent(), 'From the CLI');
    await joinCall(pages[i], url, names[i]);
    await inCall(pages[i]);
  }
  await Promise.all(pages.map((p) => waitDecoding(p, 1)));
  for (const page of pages) {
    assert.equal(await page.getByTestId('e2ee-status').getAttribute('data-state'), 'on');
    await page.waitForFunction(() => window.callrelay.call.workerStats?.decrypted > 0, null, { timeout: 3000 });
    const ws = await page.evaluate(() => window.callrelay.call.workerStats);
    assert.ok(ws.encrypted > 0 && ws.decryptFailed === 0, JSON.stringify(ws));
  }
  for (const p of pages) await p.context().close();
});

test('three people in a video link each decode the two others', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const pages = await Promise.all(['A', 'B', 'C'].map(() => newPerson(browser, relay.base, { viewport: { width: 900, height: 600 } })));
  const link = await createLink(pages[0], { name: 'Ann' });
  const names = ['Ann', 'Ben', 'Cat'];
  for (let i = 0; i < 3; i++) {
    await joinCall(pages[i], link.url, names[i]);
    await inCall(pages[i]);
  }
  await Promise.all(pages.map((p) => waitDecoding(p, 2)));
  for (const p of pages) assert.equal(await p.getByTestId('tile').count(), 2);
  for (const p of pages) await p.context().close();
});

test('a voice link carries audio and negotiates no video', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  const link = await createLink(alice, { name: 'Alice', kind: 'voice' });
  assert.equal(link.kind, 'voice');
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  for (const p of [alice, bob]) {
    const s = await waitDecoding(p, 1, { video: false });
    assert.equal(s.video.length, 0);
    const negotiated = await p.evaluate(() => ({
      sdp: window.callrelay.pc.localDescription.sdp + window.callrelay.pc.remoteDescription.sdp,
      kinds: window.callrelay.pc.getTransceivers().map((tr) => tr.receiver.track.kind),
    }));
    assert.doesNotMatch(negotiated.sdp, /^m=video/m);
    assert.ok(negotiated.kinds.every((k) => k === 'audio'), negotiated.kinds.join());
    assert.equal(await p.getByTestId('camera').count(), 0);
    await p.waitForFunction(() => document.querySelector('[data-testid=tile]')?.classList.contains('no-video'));
  }
  await alice.context().close();
  await bob.context().close();
});

test('E2EE: without the key nothing decodes (missing-key) and the relay forwards only ciphertext', { timeout: 120000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  const eve = await newPerson(browser, relay.base);
  const link = await createLink(alice, { name: 'Alice' });
  // Eve has the link without its fragment (and no key stored in her browser); she joins first, so
  // she receives the others' frames from their very first one.
  await joinCall(eve, link.url.split('#')[0], 'Eve');
  await inCall(eve);
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  await Promise.all([waitDecoding(alice, 2, { videos: 1 }), waitDecoding(bob, 2, { videos: 1 })]);
  // Alice and Bob decode each other's video; Eve's own frames are under a throwaway key: dropped.
  for (const p of [alice, bob]) {
    const s = await inbound(p);
    assert.equal(s.video.filter((v) => v.framesDecoded > 0).length, 1, JSON.stringify(s));
    assert.equal(await p.getByTestId('e2ee-status').getAttribute('data-state'), 'on');
  }
  await sleep(3000);
  const s = await inbound(eve);
  assert.ok(s.video.some((v) => v.packetsReceived > 20), `Eve receives video packets: ${JSON.stringify(s)}`);
  assert.ok(s.video.every((v) => v.framesDecoded === 0), `Eve decodes no video: ${JSON.stringify(s)}`);
  await eve.waitForFunction(() => document.querySelector('[data-testid=e2ee-status]').dataset.state === 'missing-key');
  const eveWorker = await eve.evaluate(() => window.callrelay.call.workerStats);
  assert.equal(eveWorker.decrypted, 0);
  assert.ok(eveWorker.missingKey > 20);

  // Relay-side check: what reached Eve through the relay is what the senders' workers produced,
  // not what their encoders produced. Each sender's worker recorded 32 plaintext bytes (beyond the
  // clear VP8 header) of its first 16 video frames and every 50th after; Eve's worker recorded the
  // raw bytes of her first 16 received video frames and every 25th after. No plaintext sample
  // appears in anything Eve got, and every frame Eve got carries an SFrame header whose key id is
  // Alice's or Bob's.
  const sent = [];
  const kids = new Set();
  for (const p of [alice, bob]) {
    const e = await p.evaluate(() => ({ samples: window.callrelay.call.e2ee.sentSamples, kid: window.callrelay.call.workerStats.kid }));
    assert.ok(e.samples.length >= 16);
    sent.push(...e.samples.map((x) => x.plain));
    kids.add(BigInt(`0x${e.kid}`));
  }
  const seen = await eve.evaluate(() => window.callrelay.call.e2ee.seenFrames);
  assert.ok(seen.length >= 16, `Eve saw ${seen.length} frames`);
  for (const frame of seen) {
    for (const plain of sent) assert.ok(!frame.includes(plain), 'a plaintext sample crossed the relay');
    const bytes = Uint8Array.from(frame.match(/../g).map((b) => parseInt(b, 16)));
    const h = parseHeader(bytes, clearBytes('video', bytes));
    assert.ok(kids.has(h.kid), `frame with KID ${h.kid.toString(16)} from a known sender`);
  }
  for (const p of [alice, bob, eve]) await p.context().close();
});

test('revoking the link during a call removes both people within 2 s, with the reason, and nobody rejoins', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  const link = await createLink(alice, { name: 'Alice' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  await Promise.all([waitDecoding(alice, 1), waitDecoding(bob, 1)]);
  // Any join attempt after the revocation would be a rejoin: there must be none.
  const joins = [];
  for (const p of [alice, bob]) p.on('request', (r) => r.method() === 'POST' && r.url().endsWith('/join') && joins.push(r.url()));
  const ops = await devToken(relay.base, { user: 'ops', admin: true });
  const revokedAt = Date.now();
  const r = await fetch(`${relay.base}/v1/admin/links/${link.id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ops}` } });
  assert.equal(r.status, 200);
  await Promise.all([alice, bob].map(async (p) => {
    const reason = p.getByTestId('removed-reason');
    await reason.waitFor({ timeout: 2000 });
    assert.equal(await reason.textContent(), 'This link was revoked');
  }));
  assert.ok(Date.now() - revokedAt <= 2500);
  await sleep(3000); // longer than the first rejoin delays (200, 400, 800 ms…)
  for (const p of [alice, bob]) {
    assert.equal(await p.getByTestId('call-status').getAttribute('data-state'), 'ended');
    assert.equal(await p.getByTestId('removed-reason').textContent(), 'This link was revoked');
    assert.equal(await p.getByTestId('rejoin').count(), 0, 'no Rejoin button after a revocation');
  }
  assert.deepEqual(joins, [], 'no join after the revocation');
  for (const p of [alice, bob]) await p.context().close();
});

test('a user the creator blocks during the call is removed, without being told why', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const mallory = await newPerson(browser, relay.base);
  const link = await createLink(alice, { name: 'Alice' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await mallory.goto(link.url);
  await mallory.evaluate(() => sessionStorage.setItem('callrelay.user', 'mallory-call'));
  await mallory.getByTestId('name').fill('Mallory');
  await mallory.getByTestId('join').click();
  await inCall(mallory);
  await alice.waitForFunction(() => document.querySelectorAll('[data-testid=tile]').length === 1);
  const token = await alice.evaluate(() => sessionStorage.getItem('callrelay.token'));
  const r = await fetch(`${relay.base}/v1/me/blocks/mallory-call`, { method: 'PUT', headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 204);
  const reason = mallory.getByTestId('removed-reason');
  await reason.waitFor({ timeout: 5000 });
  assert.equal(await reason.textContent(), 'You were removed');
  await alice.waitForFunction(() => document.querySelectorAll('[data-testid=tile]').length === 0, null, { timeout: 5000 });
  for (const p of [alice, mallory]) await p.context().close();
});

test('the creator mutes, removes and blocks from the tile menu; others see no menu', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  const mallory = await newPerson(browser, relay.base);
  const link = await createLink(alice, { name: 'Alice' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  await mallory.goto(link.url);
  await mallory.evaluate(() => sessionStorage.setItem('callrelay.user', 'mallory-menu'));
  await mallory.getByTestId('name').fill('Mallory');
  await mallory.getByTestId('join').click();
  await inCall(mallory);
  await alice.waitForFunction(() => document.querySelectorAll('[data-testid=tile]').length === 2);
  await bob.waitForFunction(() => document.querySelectorAll('[data-testid=tile]').length === 2);
  // Only the creator has the menu.
  assert.equal(await alice.getByTestId('tile-menu').count(), 2);
  assert.equal(await bob.getByTestId('tile-menu').count(), 0);
  assert.equal(await mallory.getByTestId('tile-menu').count(), 0);
  const tileOf = async (name) => alice.locator('[data-testid=tile]', { hasText: name });
  // Mute Bob: his page mutes its microphone and says why; everyone sees him muted; he can unmute.
  await (await tileOf('Bob')).getByTestId('tile-menu').click();
  await (await tileOf('Bob')).getByTestId('menu-mute').click();
  await bob.getByTestId('notice').waitFor();
  assert.match(await bob.getByTestId('notice').textContent(), /host muted your microphone/);
  assert.equal(await bob.getByTestId('mic').getAttribute('aria-pressed'), 'true');
  await alice.waitForFunction(() => [...document.querySelectorAll('[data-testid=tile]')].some((t) => t.textContent.includes('Bob') && t.dataset.audioMuted === 'true'), null, { timeout: 5000 });
  // A mute icon on his tile, not only in the list.
  assert.ok(await (await tileOf('Bob')).getByTestId('tile-muted').isVisible());
  await bob.getByTestId('mic').click();
  assert.equal(await bob.getByTestId('mic').getAttribute('aria-pressed'), 'false');
  await (await tileOf('Bob')).getByTestId('tile-muted').waitFor({ state: 'hidden', timeout: 5000 });
  // Block Mallory: removed now, refused when she tries again.
  await (await tileOf('Mallory')).getByTestId('tile-menu').click();
  await (await tileOf('Mallory')).getByTestId('menu-block').click();
  const reason = mallory.getByTestId('removed-reason');
  await reason.waitFor({ timeout: 5000 });
  assert.equal(await reason.textContent(), 'You were removed');
  const token = await mallory.evaluate(() => sessionStorage.getItem('callrelay.token'));
  const again = await fetch(`${relay.base}/v1/links/${link.id}/join`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
  assert.equal(again.status, 403);
  // Remove Bob: he is removed and may come back.
  await (await tileOf('Bob')).getByTestId('tile-menu').click();
  await (await tileOf('Bob')).getByTestId('menu-remove').click();
  await bob.getByTestId('removed-reason').waitFor({ timeout: 5000 });
  await alice.waitForFunction(() => document.querySelectorAll('[data-testid=tile]').length === 0, null, { timeout: 5000 });
  assert.match(await alice.getByTestId('notice').textContent(), /Removed/);
  for (const p of [alice, bob, mallory]) await p.context().close();
});

test('a lobby: the host admits one person and declines another from the prompt; media only after admission', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  const carol = await newPerson(browser, relay.base);
  await alice.goto('/');
  await alice.getByTestId('name').fill('Alice');
  await alice.getByTestId('require-approval').check();
  await alice.getByTestId('create').click();
  const url = (await alice.getByTestId('share-url').textContent()).trim();
  await joinCall(alice, url, 'Alice');
  await inCall(alice);

  // Bob is told he will wait, then waits with no media.
  await bob.goto(url);
  await bob.getByTestId('lobby-note').waitFor();
  await bob.getByTestId('name').fill('Bob');
  await bob.getByTestId('join').click();
  await bob.waitForFunction(() => document.querySelector('[data-testid=call-status]')?.dataset.state === 'lobby', null, { timeout: 10000 });
  assert.equal(await bob.getByTestId('call-status').textContent(), 'Waiting for the host to let you in');
  const entry = alice.getByTestId('lobby-entry');
  await entry.waitFor({ timeout: 5000 });
  assert.match(await entry.textContent(), /Bob/);
  assert.equal((await inbound(bob)).audio.filter((s) => s.packetsReceived > 0).length, 0, 'no media while waiting');
  await entry.getByTestId('lobby-admit').click();
  await inCall(bob);
  await waitDecoding(bob, 1);
  await waitDecoding(alice, 1);
  await alice.getByTestId('lobby-prompt').waitFor({ state: 'hidden', timeout: 5000 });

  // Carol is declined: her page says so, and she never enters the call.
  await joinCall(carol, url, 'Carol');
  await carol.waitForFunction(() => document.querySelector('[data-testid=call-status]')?.dataset.state === 'lobby', null, { timeout: 10000 });
  await alice.getByTestId('lobby-entry').filter({ hasText: 'Carol' }).getByTestId('lobby-decline').click();
  const reason = carol.getByTestId('removed-reason');
  await reason.waitFor({ timeout: 5000 });
  assert.equal(await reason.textContent(), 'The host did not let you in');
  assert.equal(await alice.locator('[data-testid=tile]').count(), 1, 'only Bob joined Alice');
  for (const p of [alice, bob, carol]) {
    assert.deepEqual(p.errors, []);
    await p.context().close();
  }
});

test('invite from the call (the URL with its key, as text and a QR code), and switching camera and microphone mid-call keeps media flowing', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  const link = await createLink(alice, { name: 'Alice' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  await waitDecoding(bob, 1);

  // Invite: the full share URL, key included, and a QR code of it.
  await alice.getByTestId('invite').click();
  assert.equal((await alice.getByTestId('invite-url').textContent()).trim(), link.url);
  assert.equal(await qrText(alice, '[data-testid=invite-qr]'), link.url, 'the QR code decodes to the URL');

  // Devices: pick the camera and the microphone again (Chromium's fake devices); each is a new
  // track on the same sender, and Bob keeps decoding Alice.
  // Our two senders (audio, video); the others are the receive-only lines of Bob's tracks.
  const senderTracks = () => alice.evaluate(() => window.callrelay.pc.getSenders().map((s) => s.track?.id).filter(Boolean));
  const before = await senderTracks();
  assert.equal(before.length, 2);
  await alice.getByTestId('devices').click();
  const camera = alice.getByTestId('device-camera');
  await camera.waitFor();
  await camera.selectOption({ index: 0 });
  const mics = await alice.getByTestId('device-mic').locator('option').count();
  await alice.getByTestId('device-mic').selectOption({ index: mics - 1 });
  await alice.waitForFunction((old) => {
    const now = window.callrelay.pc.getSenders().map((s) => s.track?.id).filter(Boolean);
    return now.length === old.length && now.every((id) => !old.includes(id));
  }, before, { timeout: 10000 });
  const frames = async () => (await inbound(bob)).video.reduce((n, s) => n + s.framesDecoded, 0);
  const audio = async () => (await inbound(bob)).audio.reduce((n, s) => n + s.packetsReceived, 0);
  const [f0, a0] = [await frames(), await audio()];
  // The new camera starts with a keyframe that Bob's layer may have to ask for: allow a few
  // seconds on a loaded machine (a CI run once saw fewer than 10 frames in the first 2 s).
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline && !((await frames()) > f0 + 10 && (await audio()) > a0 + 20)) await sleep(250);
  assert.ok((await frames()) > f0 + 10, 'Bob still decodes Alice\'s video after the switch');
  assert.ok((await audio()) > a0 + 20, 'and receives her audio');
  assert.equal(await alice.getByTestId('e2ee-status').getAttribute('data-state'), 'on', 'E2EE stays on');
  for (const p of [alice, bob]) {
    assert.deepEqual(p.errors, []);
    await p.context().close();
  }
});

test('a listener without camera or microphone publishes nothing, and joins again with a microphone picked later', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const lena = await newPerson(browser, relay.base);
  // Lena's page finds no device until the test plugs one in (window.noDevices = false).
  await lena.addInitScript(() => {
    window.noDevices = true;
    const md = navigator.mediaDevices;
    const gum = md.getUserMedia.bind(md);
    md.getUserMedia = (c) => (window.noDevices
      ? Promise.reject(new DOMException('Requested device not found', 'NotFoundError'))
      : gum(c));
  });
  const link = await createLink(alice, { name: 'Alice' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await lena.goto(link.url);
  await lena.getByText('you can still join to listen').waitFor();
  await lena.getByTestId('name').fill('Lena');
  await lena.getByTestId('join').click();
  await inCall(lena);
  // Lena hears and sees Alice (E2EE on); her one line is receive-only and she sends nothing.
  await waitDecoding(lena, 1);
  assert.equal(await lena.getByTestId('e2ee-status').getAttribute('data-state'), 'on');
  const directions = (page) => page.evaluate(() => window.callrelay.pc.getTransceivers()
    .filter((x) => !x.stopped).map((x) => `${x.receiver.track.kind}:${x.direction}`));
  assert.ok(!(await directions(lena)).some((d) => d.endsWith('sendonly')), JSON.stringify(await directions(lena)));
  // Alice sees Lena in the call, but the relay gave her nothing to receive from Lena: no line
  // besides her own two, no inbound stream.
  await alice.waitForFunction(() => document.querySelectorAll('[data-testid=tile]').length === 1);
  await sleep(1500);
  assert.deepEqual((await directions(alice)).sort(), ['audio:sendonly', 'video:sendonly']);
  assert.deepEqual(await inbound(alice), { audio: [], video: [] });

  // A microphone appears; Lena picks it: her page joins again with it, and Alice hears her.
  await lena.evaluate(() => { window.noDevices = false; });
  await lena.getByTestId('devices').click();
  const mic = lena.getByTestId('device-mic');
  await mic.waitFor();
  await mic.selectOption({ index: 0 });
  await lena.waitForFunction(() => window.callrelay.pc.getTransceivers()
    .some((x) => x.direction === 'sendonly' && x.sender.track?.kind === 'audio'), null, { timeout: 15000 });
  await inCall(lena);
  await waitDecoding(alice, 1, { video: false });
  await waitDecoding(lena, 1);
  assert.equal(await lena.getByTestId('e2ee-status').getAttribute('data-state'), 'on');
  assert.ok((await directions(alice)).includes('audio:recvonly'), JSON.stringify(await directions(alice)));
  for (const p of [alice, lena]) {
    assert.deepEqual(p.errors, []);
    await p.context().close();
  }
});

test('a muted microphone sends next to nothing: the relay asks for Opus DTX', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  const link = await createLink(alice, { name: 'Alice' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  await waitDecoding(bob, 1);
  // The relay's answer asks Alice's browser for DTX.
  const opus = await alice.evaluate(() => window.callrelay.pc.remoteDescription.sdp
    .split('\r\n').filter((l) => /^a=fmtp:111 /.test(l)));
  assert.ok(opus.length > 0 && opus.every((l) => l.includes('usedtx=1')), JSON.stringify(opus));
  const sent = () => alice.evaluate(async () => {
    let n = 0;
    (await window.callrelay.pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'audio') n += s.packetsSent || 0;
    });
    return n;
  });
  const rate = async () => {
    const a = await sent();
    await sleep(2000);
    return ((await sent()) - a) / 2;
  };
  // The fake microphone beeps: Alice sends audio at the full rate.
  const talking = await rate();
  assert.ok(talking > 30, `unmuted: ${talking} packets/s`);
  // Muted (the track encodes silence): a packet every 400 ms or so.
  await alice.getByTestId('mic').click();
  await sleep(500);
  const muted = await rate();
  assert.ok(muted < 10, `muted: ${muted} packets/s (unmuted ${talking})`);
  t.diagnostic(`Alice's audio packets/s: ${talking} unmuted, ${muted} muted`);
  // Unmuted again: Bob hears her at the full rate, E2EE on, nothing failed to decrypt.
  await alice.getByTestId('mic').click();
  await sleep(500);
  assert.ok((await rate()) > 30);
  const heard = async () => (await inbound(bob)).audio.reduce((n, s) => n + s.packetsReceived, 0);
  const h0 = await heard();
  await sleep(1000);
  assert.ok((await heard()) > h0 + 30, 'Bob receives her audio again');
  await bob.waitForFunction(() => window.callrelay.call.workerStats?.decrypted > 0, null, { timeout: 3000 });
  const ws = await bob.evaluate(() => window.callrelay.call.workerStats);
  assert.equal(ws.decryptFailed, 0, JSON.stringify(ws));
  for (const p of [alice, bob]) {
    assert.deepEqual(p.errors, []);
    await p.context().close();
  }
});

test('screen sharing: the other side sees a screen tile (E2EE on), a second sharer is told who shares, stopping removes the tile', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  const link = await createLink(alice, { name: 'Alice' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  await waitDecoding(bob, 1);
  // Headless Chromium has no screen to pick: the page's getDisplayMedia gets a moving canvas
  // instead (only the OS picker is replaced; capture, E2EE and the relay are real).
  await alice.evaluate(() => {
    navigator.mediaDevices.getDisplayMedia = async () => {
      const c = document.createElement('canvas');
      c.width = 640;
      c.height = 360;
      const g = c.getContext('2d');
      let n = 0;
      setInterval(() => {
        g.fillStyle = `hsl(${(n += 7) % 360} 80% 50%)`;
        g.fillRect(0, 0, 640, 360);
        g.fillStyle = '#000';
        g.fillText(`slide ${n}`, 20, 40);
      }, 50);
      return c.captureStream(15);
    };
  });
  await alice.getByTestId('share-screen').click();
  const tile = bob.getByTestId('screen-tile');
  await tile.waitFor({ timeout: 10000 });
  assert.match(await tile.textContent(), /Alice's screen/);
  await bob.waitForFunction(() => {
    const v = document.querySelector('[data-testid=screen-tile] video');
    return v && v.videoWidth === 640 && v.currentTime > 1;
  }, null, { timeout: 15000 });
  assert.equal(await tile.getAttribute('data-announced'), 'true', 'the relay said it is a screen');
  assert.equal(await bob.locator('[data-testid=tile]').count(), 1, 'Alice\'s camera keeps its own tile');
  for (const p of [alice, bob]) assert.equal(await p.getByTestId('e2ee-status').getAttribute('data-state'), 'on');
  // Bob may not share while Alice does.
  await bob.getByTestId('share-screen').click();
  await bob.waitForFunction(() => /Alice is sharing their screen/.test(document.querySelector('[data-testid=notice]')?.textContent || ''), null, { timeout: 5000 });
  assert.equal(await bob.getByTestId('share-screen').getAttribute('aria-pressed'), 'false');
  // Alice stops: the tile goes.
  await alice.getByTestId('share-screen').click();
  await tile.waitFor({ state: 'detached', timeout: 10000 });
  for (const p of [alice, bob]) {
    assert.deepEqual(p.errors, []);
    await p.context().close();
  }
});

test('a draining relay past its deadline: both pages reconnect by themselves to its replacement, media flows again', { timeout: 120000 }, async (t) => {
  if (needsMedia(t)) return;
  // A dev relay; its replacement (same port, same data dir) signs with a new generated secret, so
  // the pages' first rejoin is refused 401 and they fetch a new dev token (app.mjs joinAgain).
  const dataDir = mkdtempSync(join(tmpdir(), 'callrelay-drain-'));
  let node = await startRelay({ dataDir, env: { CALLRELAY_DRAIN_DEADLINE: '1s' } });
  try {
    const alice = await newPerson(browser, node.base);
    const bob = await newPerson(browser, node.base);
    const link = await createLink(alice, { name: 'Alice' });
    await joinCall(alice, link.url, 'Alice');
    await inCall(alice);
    await joinCall(bob, link.url, 'Bob');
    await inCall(bob);
    await Promise.all([waitDecoding(alice, 1), waitDecoding(bob, 1)]);
    node.signal('SIGTERM');
    // removed{drain} at the deadline: "Reconnecting…", not the end of the call.
    for (const p of [alice, bob]) {
      await p.waitForFunction(() => {
        const s = document.querySelector('[data-testid=call-status]');
        return s?.dataset.state === 'reconnecting' && s.dataset.reason === 'drain';
      }, null, { timeout: 10000 });
      assert.equal(await p.getByTestId('call-status').textContent(), 'Reconnecting…');
      assert.equal(await p.getByTestId('removed-reason').count(), 0);
    }
    await node.exited; // the drained node exits once empty
    node = await startRelay({ dataDir, port: node.port, env: { CALLRELAY_DRAIN_DEADLINE: '1s' } });
    const restarted = Date.now();
    await Promise.all([alice, bob].map(async (p) => {
      await inCall(p);
      await waitDecoding(p, 1, { within: 20000 });
    }));
    assert.ok(Date.now() - restarted < 20000, `back in ${Date.now() - restarted} ms`);
    for (const p of [alice, bob]) {
      assert.equal(await p.getByTestId('tile').count(), 1);
      assert.equal(await p.getByTestId('e2ee-status').getAttribute('data-state'), 'on');
    }
    for (const p of [alice, bob]) await p.context().close();
  } finally {
    await node.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('the relay log holds no link id and no key of the calls above', (t) => {
  if (needsMedia(t)) return;
  assert.ok(made.length >= 5);
  for (const link of made) {
    assert.ok(!relay.log.includes(link.id), 'a link id in the relay log');
    assert.ok(!relay.log.includes(link.key), 'a key in the relay log');
  }
});

test('the bypass guard: a sender transform the browser ignores turns E2EE to failed and stops sending', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  // Simulate the Chromium pitfall (a transform assigned too late is accepted and never called):
  // in Bob's page, assigning a sender's transform silently does nothing.
  await bob.addInitScript(() => {
    const d = Object.getOwnPropertyDescriptor(RTCRtpSender.prototype, 'transform');
    Object.defineProperty(RTCRtpSender.prototype, 'transform', { configurable: true, get: d.get, set() {} });
  });
  const link = await createLink(alice, { name: 'Alice' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  await bob.waitForFunction(() => document.querySelector('[data-testid=e2ee-status]').dataset.state === 'failed', null, { timeout: 10000 });
  assert.equal(await bob.evaluate(() => window.callrelay.call.workerStats.encrypted), 0);
  const tracks = await bob.evaluate(() => window.callrelay.pc.getSenders().map((s) => s.track));
  assert.ok(tracks.every((tr) => tr === null), 'Bob stopped sending');
  // Alice never decodes Bob's clear frames: her worker drops them as undecryptable.
  const s = await inbound(alice);
  assert.ok(s.video.every((v) => v.framesDecoded === 0), JSON.stringify(s));
  for (const p of [alice, bob]) await p.context().close();
});

test('the createEncodedStreams fallback interoperates with RTCRtpScriptTransform', { timeout: 90000 }, async (t) => {
  if (needsMedia(t)) return;
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  await bob.addInitScript(() => {
    delete window.RTCRtpScriptTransform;
  });
  const link = await createLink(alice, { name: 'Alice' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  assert.equal(await bob.evaluate(() => typeof window.RTCRtpScriptTransform), 'undefined');
  await Promise.all([waitDecoding(alice, 1), waitDecoding(bob, 1)]);
  for (const p of [alice, bob]) {
    await p.waitForFunction(() => window.callrelay.call.workerStats?.decrypted > 0 && window.callrelay.call.workerStats?.encrypted > 0, null, { timeout: 3000 });
    assert.equal(await p.getByTestId('e2ee-status').getAttribute('data-state'), 'on');
  }
  for (const p of [alice, bob]) await p.context().close();
});

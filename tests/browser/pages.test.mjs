// The web pages without media: create → share URL + QR → preview → call log; unknown, malformed,
// expired, revoked and refused links. Real relay binary, real headless Chromium.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, launchBrowser, newPerson, createLink, devToken, sleep, qrText } from './harness.mjs';

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

test('create a video link: share URL with key fragment, copy, QR decodes to the full URL', { timeout: 60000 }, async () => {
  const page = await newPerson(browser, relay.base);
  const link = await createLink(page, { name: 'Alice', title: 'Standup', when: '2030-01-02T09:30' });
  assert.equal(link.kind, 'video');
  assert.ok(link.url.startsWith(`${relay.base}/video/`));
  await assert.doesNotReject(page.getByTestId('copy-link').waitFor());
  // The QR code drawn in the page, rasterised by the browser, decoded by jsQR in node.
  assert.equal(await qrText(page, '[data-testid=qr]'), link.url, 'the QR code in the page decodes to the URL');
  // The key never reached the server: not in its log, and the link id is not logged either.
  assert.ok(!relay.log.includes(link.key), 'the key is not in the relay log');
  assert.ok(!relay.log.includes(link.id), 'the link id is not in the relay log');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('preview shows kind, title, schedule, people in the call, name field and Join; call log lists the link', { timeout: 60000 }, async () => {
  const page = await newPerson(browser, relay.base);
  const link = await createLink(page, { name: 'Alice', title: 'Planning', when: '2030-05-06T14:00' });
  await page.goto(link.url);
  await assert.doesNotReject(page.getByTestId('preview').waitFor());
  assert.equal(await page.getByTestId('kind').textContent(), 'Video call');
  assert.equal(await page.getByTestId('title').textContent(), 'Planning');
  assert.match(await page.getByTestId('scheduled').textContent(), /2030/);
  assert.equal(await page.getByTestId('in-call').textContent(), 'Nobody is in the call yet');
  assert.equal(await page.getByTestId('name').inputValue(), 'Alice', 'the name is kept for the session');
  assert.ok(await page.getByTestId('join').isEnabled());
  // Camera preview for a video link.
  await page.waitForFunction(() => document.querySelector('.preview-video')?.srcObject?.getVideoTracks().length === 1);
  // Microphone and camera can be picked before joining (Chromium's fake devices).
  await page.getByTestId('device-picker').waitFor();
  assert.ok((await page.getByTestId('device-mic').locator('option').count()) >= 1);
  assert.equal(await page.getByTestId('device-camera').locator('option').count(), 1);

  // A voice link previews the microphone only.
  const voice = await createLink(page, { name: 'Alice', kind: 'voice', title: 'Catch-up' });
  await page.goto(voice.url);
  assert.equal(await page.getByTestId('kind').textContent(), 'Voice call');
  assert.equal(await page.locator('.preview-video').count(), 0);

  // The call log: newest first, kind, the Join button carries the remembered key.
  await page.goto('/calls');
  const items = page.getByTestId('call-log-item');
  await items.first().waitFor();
  assert.ok((await items.count()) >= 2);
  assert.equal(await items.nth(0).getAttribute('data-kind'), 'voice');
  assert.match(await items.nth(0).textContent(), /Catch-up/);
  assert.match(await items.nth(0).textContent(), /expires/);
  assert.equal(await items.nth(0).getByTestId('join').getAttribute('href'), voice.url);
  assert.equal(await items.nth(1).getByTestId('join').getAttribute('href'), link.url);
  // Join from the call log reuses the link with its key.
  await items.nth(1).getByTestId('join').click();
  await page.getByTestId('preview').waitFor();
  assert.equal(page.url(), link.url);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a scheduled call: its length and calendar file on the share view and preview, and the creator reschedules it from the call log', { timeout: 60000 }, async () => {
  const page = await newPerson(browser, relay.base);
  await page.goto('/');
  await page.getByTestId('name').fill('Alice');
  await page.fill('#title', 'Retro');
  await page.fill('#when', '2031-02-03T10:00');
  await page.fill('#length', '45');
  await page.getByTestId('create').click();
  const url = (await page.getByTestId('share-url').textContent()).trim();
  const id = url.match(/\/video\/([0-9A-Za-z]{22})#/)[1];
  assert.match(await page.getByTestId('scheduled').textContent(), /2031.*\(45 min\)/);
  const cal = page.getByTestId('calendar');
  assert.equal(await cal.getAttribute('href'), `/v1/links/${id}/calendar.ics`);
  const ics = await (await fetch(`${relay.base}/v1/links/${id}/calendar.ics`)).text();
  assert.match(ics, /DTSTART:20310203T\d{4}00Z/);
  assert.ok(!ics.includes('#k='), 'the calendar file has no key');

  await page.goto(url);
  await page.getByTestId('preview').waitFor();
  assert.match(await page.getByTestId('scheduled').textContent(), /\(45 min\)/);
  assert.equal(await page.getByTestId('preview').getByTestId('calendar').count(), 1);

  // The call log: the creator edits the time; the log shows the new one.
  await page.goto('/calls');
  const item = page.getByTestId('call-log-item').filter({ hasText: 'Retro' });
  await item.waitFor();
  assert.match(await item.getByTestId('scheduled').textContent(), /2031/);
  await item.getByTestId('edit').click();
  await item.getByTestId('edit-when').fill('2032-07-08T16:30');
  await item.getByTestId('edit-save').click();
  await page.waitForFunction(() => /2032/.test(document.querySelector('[data-testid=call-log-item] [data-testid=scheduled]')?.textContent || ''));
  const preview = await (await fetch(`${relay.base}/v1/links/${id}`)).json();
  assert.equal(new Date(preview.scheduled_at).getFullYear(), 2032);
  assert.equal(preview.duration, 45 * 60, 'the length is kept');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a link opened without its fragment still finds the key remembered in this browser', { timeout: 30000 }, async () => {
  const page = await newPerson(browser, relay.base);
  const link = await createLink(page, { name: 'Alice' });
  await page.goto(link.url.split('#')[0]);
  await page.getByTestId('preview').waitFor();
  assert.equal(page.url(), link.url);
  await page.context().close();
});

test('unknown, malformed, revoked and expired links get a clear page', { timeout: 60000 }, async () => {
  const page = await newPerson(browser, relay.base);
  await page.goto('/video/AAAAAAAAAAAAAAAAAAAAAA');
  assert.equal(await page.getByTestId('call-status').textContent(), "This call link doesn't exist");

  const res = await page.goto('/video/not-a-link');
  assert.equal(res.status(), 400);
  assert.match(await page.getByTestId('bad-link').textContent(), /isn't a call link/);
  assert.equal((await page.request.get('/voice/abc')).status(), 400);
  assert.equal((await page.request.get('/video/AAAAAAAAAAAAAAAAAAAAAA')).status(), 200);

  const link = await createLink(page, { name: 'Alice' });
  const ops = await devToken(relay.base, { user: 'ops', admin: true });
  const r = await fetch(`${relay.base}/v1/admin/links/${link.id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ops}` } });
  assert.equal(r.status, 200);
  await page.goto(link.url);
  assert.equal(await page.getByTestId('call-status').textContent(), 'This link was revoked');

  // Expiry: a relay whose links live one second.
  const short = await startRelay({ env: { CALLRELAY_LINKS_TTL: '1s' } });
  try {
    const p2 = await newPerson(browser, short.base);
    const l2 = await createLink(p2, { name: 'Bob' });
    await sleep(1500);
    await p2.goto(l2.url);
    assert.equal(await p2.getByTestId('call-status').textContent(), 'This call link has expired');
    // The page says this relay's links.ttl, not a fixed 90 days.
    assert.match(await p2.getByTestId('gone').textContent(), /expire 1 second after their last use/);
    await p2.context().close();
  } finally {
    await short.stop();
  }
  await page.context().close();
});

test('a refused join says only "You can\'t join this call"', { timeout: 60000 }, async () => {
  const alice = await newPerson(browser, relay.base);
  const link = await createLink(alice, { name: 'Alice' });
  const aliceToken = await alice.evaluate(() => sessionStorage.getItem('callrelay.token'));
  const r = await fetch(`${relay.base}/v1/me/blocks/mallory-test`, { method: 'PUT', headers: { authorization: `Bearer ${aliceToken}` } });
  assert.equal(r.status, 204);
  const mallory = await newPerson(browser, relay.base);
  await mallory.goto(link.url);
  await mallory.evaluate(() => sessionStorage.setItem('callrelay.user', 'mallory-test'));
  await mallory.getByTestId('name').fill('Mallory');
  await mallory.getByTestId('join').click();
  const status = mallory.getByTestId('call-status');
  await status.waitFor();
  assert.equal(await status.textContent(), "You can't join this call");
  assert.doesNotMatch(await mallory.locator('main').textContent(), /block/i);
  await alice.context().close();
  await mallory.context().close();
});

test('dev config and the page assets are served; the page works on a phone-sized screen', { timeout: 30000 }, async () => {
  const cfg = await (await fetch(`${relay.base}/v1/dev/config`)).json();
  assert.deepEqual(cfg, { dev: true, link_ttl_seconds: 90 * 24 * 3600, sign_in: false });
  const css = await fetch(`${relay.base}/assets/style.css`);
  assert.match(css.headers.get('content-type'), /text\/css/);
  assert.equal((await fetch(`${relay.base}/assets/nope.js`)).status, 404);
  const page = await newPerson(browser, relay.base, { viewport: { width: 375, height: 740 } });
  const link = await createLink(page, { name: 'Phone' });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling on a phone (overflow ${overflow}px)`);
  await page.goto(link.url);
  await page.getByTestId('join').waitFor();
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
  await page.context().close();
});

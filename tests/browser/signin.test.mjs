// Web sign-in through a real OpenID Connect provider (npm `oidc-provider`, oidc-provider.mjs):
// the relay runs outside --dev with [oidc] pointing at it, and real Chromium goes through the whole
// authorization-code flow. Covers: login, the call log in a second tab, sign-out (which revokes the
// session on the server, not only in the browser), an expired session, a tampered cookie, CSRF on
// cookie-authenticated state changes, and a refusal at the provider.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startRelay, launchBrowser, newPerson, freePort } from './harness.mjs';
import { startProvider, NAMES } from './oidc-provider.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const SHORT_TTL_S = 3;

let provider;
let relay; // sessions of 12 h (the default)
let shortRelay; // sessions of SHORT_TTL_S seconds
let browser;

before(async () => {
  const [idpPort, port, shortPort] = [await freePort(), await freePort(), await freePort()];
  provider = await startProvider({
    port: idpPort,
    redirectUris: [`http://127.0.0.1:${port}/auth/callback`, `http://127.0.0.1:${shortPort}/auth/callback`],
  });
  const env = (ttl) => ({
    CALLRELAY_AUTH_SECRET: randomBytes(32).toString('hex'),
    CALLRELAY_OIDC_ISSUER: provider.issuer,
    CALLRELAY_OIDC_CLIENT_ID: provider.clientId,
    CALLRELAY_OIDC_CLIENT_SECRET: provider.clientSecret,
    ...(ttl ? { CALLRELAY_OIDC_SESSION_TTL: ttl } : {}),
  });
  relay = await startRelay({ dev: false, port, env: env() });
  shortRelay = await startRelay({ dev: false, port: shortPort, env: env(`${SHORT_TTL_S}s`) });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await relay?.stop();
  await shortRelay?.stop();
  await provider?.stop();
});

/** Clicks "Sign in" on `page` (at `path` of `base`) and signs in at the provider as `login`. */
async function signIn(page, base, path, login) {
  await page.goto(`${base}${path}`);
  await page.getByTestId('sign-in').click();
  await page.waitForURL((u) => u.origin === provider.issuer);
  await page.getByTestId('idp-login').fill(login);
  await page.getByTestId('idp-submit').click();
  await page.waitForURL((u) => u.origin === base && u.pathname === path);
  await page.getByTestId('whoami').waitFor();
}

/** The session cookie of `page`'s context. */
async function sessionCookie(page) {
  const c = (await page.context().cookies()).find((x) => x.name === 'callrelay_session');
  assert.ok(c, 'the relay set its session cookie');
  return c;
}

/** `path` on `base` from outside any browser, with only `cookie` (name=value) as credentials. */
async function withCookie(base, path, cookie, init = {}) {
  return fetch(`${base}${path}`, { ...init, headers: { ...(init.headers || {}), cookie } });
}

test('sign in with the provider, create a link, see it in a second tab, join the call, sign out everywhere', async () => {
  const page = await newPerson(browser, relay.base);
  await page.goto('/calls');
  await page.getByTestId('sign-in-needed').waitFor();
  assert.equal(await page.getByTestId('name').count(), 0, 'outside --dev there is no typed-name flow');

  await signIn(page, relay.base, '/calls', 'alice');
  assert.equal(await page.getByTestId('whoami').textContent(), NAMES.alice, 'the name comes from the claims');
  assert.match(await page.getByTestId('whoami').getAttribute('title'), /^alice@127\.0\.0\.1-\d+$/, 'user id = sub@issuer host');
  await page.getByTestId('call-log-empty').waitFor();

  const cookie = await sessionCookie(page);
  assert.equal(cookie.httpOnly, true, 'HttpOnly');
  assert.equal(cookie.sameSite, 'Lax', 'SameSite=Lax');
  assert.equal(cookie.secure, true, 'Secure outside --dev');
  assert.equal(await page.evaluate(() => document.cookie.includes('callrelay_session')), false, 'scripts cannot read it');

  // Create a link with the cookie (the page sends the session's CSRF token).
  await page.goto('/');
  await page.fill('#title', 'Signed-in standup');
  await page.getByTestId('create').click();
  const url = (await page.getByTestId('share-url').textContent()).trim();
  assert.match(url, /\/video\/[0-9A-Za-z]{22}#k=/);

  // CSRF: the same cookie without the token changes nothing.
  const csrf = await page.evaluate(async () => {
    const r = await fetch('/v1/links', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"kind":"voice"}' });
    return { status: r.status, code: (await r.json()).code };
  });
  assert.deepEqual(csrf, { status: 403, code: 'csrf_failed' });

  // A second tab of the same browser knows who you are and shows the call log.
  const tab2 = await page.context().newPage();
  await tab2.goto('/calls');
  await tab2.getByTestId('whoami').waitFor();
  const items = tab2.getByTestId('call-log-item');
  await items.first().waitFor();
  assert.equal(await items.count(), 1, 'exactly the link created in the first tab (the CSRF-less POST made none)');
  assert.match(await items.first().textContent(), /Signed-in standup/);

  // Join the call from the log: the join goes through the cookie too.
  await tab2.getByTestId('join').click();
  await tab2.getByTestId('preview').waitFor();
  await tab2.getByTestId('join').click();
  await tab2.waitForFunction(() => document.querySelector('[data-testid=call-status]')?.dataset.state === 'connected', null, { timeout: 10000 });
  await tab2.getByTestId('leave').click();

  // Sign out in the second tab: the first tab is signed out too, and the old cookie value is dead
  // on the server (not only forgotten by the browser).
  const old = `callrelay_session=${cookie.value}`;
  assert.equal((await withCookie(relay.base, '/v1/me/links', old)).status, 200);
  await tab2.goto('/calls');
  await tab2.getByTestId('sign-out').click();
  await tab2.waitForURL((u) => u.pathname === '/');
  await tab2.getByTestId('sign-in').waitFor();
  await page.goto('/calls');
  await page.getByTestId('sign-in-needed').waitFor();
  assert.equal((await withCookie(relay.base, '/v1/me/links', old)).status, 401);
  assert.equal((await withCookie(relay.base, '/auth/session', old)).status, 401);
  assert.deepEqual(page.errors.filter((e) => !/401|403|Failed to load resource/.test(e)), []);
  await page.context().close();
});

test('a tampered session cookie signs no one in', async () => {
  const page = await newPerson(browser, relay.base);
  await signIn(page, relay.base, '/calls', 'bob');
  const cookie = await sessionCookie(page);
  const v = cookie.value;
  const tampered = v.slice(0, -1) + (v.endsWith('A') ? 'B' : 'A');
  for (const value of [tampered, v.slice(0, -1), `${v}x`, '']) {
    const r = await withCookie(relay.base, '/v1/me/links', `callrelay_session=${value}`);
    assert.equal(r.status, 401, `cookie ${JSON.stringify(value)}`);
    assert.equal((await r.json()).code, 'unauthorized');
  }
  await page.context().addCookies([{ ...cookie, value: tampered }]);
  await page.goto('/calls');
  await page.getByTestId('sign-in-needed').waitFor();
  await page.getByTestId('sign-in').waitFor();
  // The real one still works: tampering with a copy does not end the session.
  assert.equal((await withCookie(relay.base, '/v1/me/links', `callrelay_session=${v}`)).status, 200);
  await page.context().close();
});

test('a session ends at oidc.session_ttl on the server, whatever the browser keeps', async () => {
  const page = await newPerson(browser, shortRelay.base);
  await signIn(page, shortRelay.base, '/calls', 'carol');
  const cookie = `callrelay_session=${(await sessionCookie(page)).value}`;
  assert.equal((await withCookie(shortRelay.base, '/v1/me/links', cookie)).status, 200);
  assert.equal(await page.getByTestId('whoami').textContent(), 'carol@example.test', 'no name claim: the email');
  await sleep(SHORT_TTL_S * 1000 + 500);
  assert.equal((await withCookie(shortRelay.base, '/v1/me/links', cookie)).status, 401, 'refused by the server after the TTL');
  await page.goto('/calls');
  await page.getByTestId('sign-in-needed').waitFor();
  await page.context().close();
});

test('cancelling at the provider brings you back with a clear message', async () => {
  const page = await newPerson(browser, relay.base);
  await page.goto('/');
  await page.getByTestId('sign-in').click();
  await page.waitForURL((u) => u.origin === provider.issuer);
  await page.getByTestId('idp-cancel').click();
  const err = page.getByTestId('sign-in-error');
  await err.waitFor();
  assert.equal(await err.getAttribute('data-code'), 'denied');
  assert.match(await err.textContent(), /cancelled or refused/);
  assert.equal(new URL(page.url()).search, '', 'the error code is not left in the address bar');
  // A replayed callback (its state was used) is refused as expired.
  const r = await fetch(`${relay.base}/auth/callback?code=x&state=never-issued`, { redirect: 'manual' });
  assert.equal(r.status, 303);
  assert.equal(r.headers.get('location'), '/?sign_in_error=expired');
  const metrics = await (await fetch(`${relay.base}/metrics`)).text();
  assert.match(metrics, /callrelay_sign_ins_total\{result="denied"\} [1-9]/);
  assert.match(metrics, /callrelay_sign_ins_total\{result="ok"\} [1-9]/);
  await page.context().close();
});

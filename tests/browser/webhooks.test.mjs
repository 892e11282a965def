// Webhooks and calendar entries, checked by independent implementations from the npm registry:
// every delivery is verified with `standardwebhooks` (the Standard Webhooks reference library),
// and calendar.ics is parsed with `ical.js` (Mozilla's iCalendar parser). No browser needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import ICAL from 'ical.js';
import { startRelay, devToken, sleep } from './harness.mjs';

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;

/** An endpoint on 127.0.0.1 that records every request; `answer(req)` picks the status. */
async function endpoint(answer = () => 200) {
  const requests = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const r = { headers: req.headers, body, at: Date.now() };
      r.status = answer(r);
      requests.push(r);
      res.writeHead(r.status).end();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}/hook`,
    requests,
    close: () => new Promise((r) => server.close(r)),
  };
}

/** Verifies a recorded request with the Standard Webhooks library; returns the event. */
function verified(r) {
  const wh = new Webhook(SECRET);
  return wh.verify(r.body, {
    'webhook-id': r.headers['webhook-id'],
    'webhook-timestamp': r.headers['webhook-timestamp'],
    'webhook-signature': r.headers['webhook-signature'],
  });
}

async function until(what, ok, ms = 15000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (ok()) return;
    await sleep(50);
  }
  assert.fail(`timed out waiting for ${what}`);
}

async function createLink(base, token, body) {
  const r = await fetch(`${base}/v1/links`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 201, await r.clone().text());
  return r.json();
}

async function metric(base, line) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = text.split('\n').find((l) => l.startsWith(line));
  return m ? Number(m.split(' ').pop()) : NaN;
}

test('events are signed (verified by standardwebhooks) and an endpoint that fails twice gets them on the third try', async () => {
  const tries = new Map();
  const hook = await endpoint((r) => {
    const id = r.headers['webhook-id'];
    tries.set(id, (tries.get(id) || 0) + 1);
    return tries.get(id) <= 2 ? 500 : 204;
  });
  const relay = await startRelay({
    env: { CALLRELAY_WEBHOOKS_URLS: hook.url, CALLRELAY_WEBHOOKS_SECRET: SECRET, CALLRELAY_WEBHOOKS_RETRY_MIN: '200ms' },
  });
  try {
    const token = await devToken(relay.base, { user: 'alice' });
    const link = await createLink(relay.base, token, { title: 'Standup' });
    await until('three attempts of link.created', () => hook.requests.length >= 3);
    await sleep(300);
    assert.equal(hook.requests.length, 3, 'failed twice, delivered on the third try, then no more');
    const ids = new Set(hook.requests.map((r) => r.headers['webhook-id']));
    assert.equal(ids.size, 1, 'every attempt carries the same webhook-id');
    for (const r of hook.requests) {
      const ev = verified(r);
      assert.equal(ev.type, 'link.created');
      assert.equal(ev.data.title, 'Standup');
      assert.equal(ev.data.creator, 'alice');
      assert.match(ev.data.link, /^[0-9a-f]{8}$/, 'the link by its digest');
      assert.equal(ev.data.link_id, undefined, 'not the id itself unless the operator opts in');
      assert.ok(!r.body.includes(link.id), 'the bearer id is nowhere in the body');
    }
    // Back-off: the second retry waited longer than the first.
    const [a, b, c] = hook.requests.map((r) => r.at);
    assert.ok(b - a >= 150 && c - b >= 350, `retries at +${b - a} and +${c - b} ms`);
    // The library rejects a body that was changed (so the checks above mean something).
    const forged = { ...hook.requests[2], body: hook.requests[2].body.replace('Standup', 'Standdown') };
    assert.throws(() => verified(forged));
    assert.equal(await metric(relay.base, 'callrelay_webhook_deliveries_total{result="retry"}'), 2);
    assert.equal(await metric(relay.base, 'callrelay_webhook_deliveries_total{result="delivered"}'), 1);
  } finally {
    await relay.stop();
    await hook.close();
  }
});

test('no delivery is lost across a kill -9 and restart, and reminders fire once across it', async () => {
  let up = false;
  const hook = await endpoint(() => (up ? 200 : 503));
  const dataDir = mkdtempSync(join(tmpdir(), 'callrelay-webhooks-'));
  const env = {
    CALLRELAY_WEBHOOKS_URLS: hook.url,
    CALLRELAY_WEBHOOKS_SECRET: SECRET,
    CALLRELAY_WEBHOOKS_RETRY_MIN: '200ms',
    CALLRELAY_LINKS_REMINDERS: '4s, 0s',
  };
  let relay = await startRelay({ env, dataDir });
  try {
    const token = await devToken(relay.base, { user: 'alice' });
    const t0 = Date.now();
    const start = new Date(t0 + 6000).toISOString();
    const scheduled = await createLink(relay.base, token, { title: 'Planning', scheduled_at: start, duration: 1800 });
    for (let i = 0; i < 3; i++) await createLink(relay.base, token, { title: `plain ${i}` });
    // The first reminder falls due at t0 + 2 s while the endpoint is down; then the relay dies.
    await until('the 4 s reminder to be attempted', () =>
      hook.requests.some((r) => JSON.parse(r.body).type === 'link.reminder'), 8000);
    await relay.kill();
    const attemptedBefore = hook.requests.length;
    assert.ok(attemptedBefore >= 5, `the endpoint was tried (${attemptedBefore} attempts) and refused them`);
    relay = await startRelay({ env, dataDir });
    up = true;
    // The second reminder (at the start) fires from the restarted relay.
    await until('every event delivered', () => {
      const delivered = new Map();
      for (const r of hook.requests.filter((q) => q.status === 200)) {
        delivered.set(r.headers['webhook-id'], JSON.parse(r.body));
      }
      const evs = [...delivered.values()];
      return evs.filter((e) => e.type === 'link.created').length === 4
        && evs.filter((e) => e.type === 'link.reminder').length === 2;
    }, 20000);
    await sleep(1500);
    const byId = new Map();
    for (const r of hook.requests) byId.set(r.headers['webhook-id'], verified(r));
    const events = [...byId.values()];
    const created = events.filter((e) => e.type === 'link.created').map((e) => e.data.title).sort();
    assert.deepEqual(created, ['Planning', 'plain 0', 'plain 1', 'plain 2'], 'every link.created arrived');
    const reminders = events.filter((e) => e.type === 'link.reminder');
    assert.deepEqual(reminders.map((e) => e.data.starts_in_s).sort(), [0, 4], 'each reminder once: no duplicate, none lost');
    for (const e of reminders) {
      assert.equal(e.data.scheduled_at, new Date(start).toISOString());
      assert.equal(e.data.duration, 1800);
      assert.equal(e.data.link, reminders[0].data.link);
    }
    assert.ok(!hook.requests.some((r) => r.body.includes(scheduled.id)));
  } finally {
    await relay.stop();
    await hook.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('calendar.ics parses with ical.js: the time, length, title, URL without key and alarms', async () => {
  const relay = await startRelay({ env: { CALLRELAY_LINKS_REMINDERS: '15m, 0s' } });
  try {
    const token = await devToken(relay.base, { user: 'alice' });
    const title = 'Q2 planning; budgets, hiring — «all hands» and a title long enough to be folded';
    const start = '2026-12-24T17:30:00.000Z';
    const link = await createLink(relay.base, token, { kind: 'voice', title, scheduled_at: start, duration: 5400 });
    const r = await fetch(`${relay.base}/v1/links/${link.id}/calendar.ics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/calendar/);
    const cal = new ICAL.Component(ICAL.parse(await r.text()));
    const vevent = cal.getFirstSubcomponent('vevent');
    const event = new ICAL.Event(vevent);
    assert.equal(event.summary, title);
    assert.equal(event.startDate.toJSDate().toISOString(), start);
    assert.equal(event.endDate.toJSDate().getTime() - new Date(start).getTime(), 5400 * 1000);
    assert.equal(vevent.getFirstPropertyValue('url'), link.url);
    assert.ok(!link.url.includes('#'));
    assert.match(event.uid, /^[0-9a-f]{32}@127\.0\.0\.1$/);
    const alarms = vevent.getAllSubcomponents('valarm').map((a) => a.getFirstPropertyValue('trigger').toSeconds());
    assert.deepEqual(alarms.sort((x, y) => x - y), [-900, 0]);
  } finally {
    await relay.stop();
  }
});

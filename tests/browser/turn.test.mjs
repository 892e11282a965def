// TURN: a browser that may only use relayed candidates (iceTransportPolicy 'relay', as behind a
// firewall that lets nothing but the TURN server through) reaches the relay through a real coturn
// (Debian's `coturn`, started here on 127.0.0.1 with the TURN REST secret the relay signs
// credentials with). Alice reaches coturn over UDP, Bob over TCP only; both hear and see each other.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startRelay, launchBrowser, newPerson, createLink, joinCall, inCall, waitDecoding, freePort, sleep,
} from './harness.mjs';

const SECRET = 'turn-secret-for-the-browser-test-0123';
let coturn;
let coturnLog;
let coturnDir;
let relay;
let browser;
let turnPort;

async function startCoturn() {
  turnPort = await freePort();
  coturnDir = mkdtempSync(join(tmpdir(), 'callrelay-coturn-'));
  coturnLog = join(coturnDir, 'turn.log');
  const relayPorts = 49152 + Math.floor(Math.random() * 10000);
  coturn = spawn('/usr/bin/turnserver', [
    '-n', '--no-cli', '--no-tls', '--no-dtls', '--fingerprint', '--verbose',
    '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1', `--listening-port=${turnPort}`,
    `--min-port=${relayPorts}`, `--max-port=${relayPorts + 200}`,
    '--use-auth-secret', `--static-auth-secret=${SECRET}`, '--realm=callrelay.test',
    // The relay is on 127.0.0.1 here: coturn refuses loopback peers unless told.
    '--allow-loopback-peers', '--simple-log', `--log-file=${coturnLog}`,
    `--pidfile=${join(coturnDir, 'turn.pid')}`, '--no-software-attribute',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  coturn.stdout.on('data', (d) => (out += d));
  coturn.stderr.on('data', (d) => (out += d));
  // Up when it accepts a TCP connection on its port.
  const deadline = Date.now() + 10000;
  const net = await import('node:net');
  for (;;) {
    if (coturn.exitCode !== null) throw new Error(`turnserver exited (${coturn.exitCode}): ${out}`);
    const ok = await new Promise((r) => {
      const s = net.connect(turnPort, '127.0.0.1', () => { s.destroy(); r(true); });
      s.on('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`turnserver did not listen in 10 s: ${out}`);
    await sleep(100);
  }
}

/** Only relayed candidates, and only the TURN URLs that `keep` accepts. */
async function relayOnly(page, keep) {
  await page.addInitScript((keepSource) => {
    const keepUrl = new Function('u', `return (${keepSource})(u)`);
    const Native = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends Native {
      constructor(config = {}, ...rest) {
        const iceServers = (config.iceServers || [])
          .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => keepUrl(u)) }))
          .filter((s) => s.urls.length);
        super({ ...config, iceServers, iceTransportPolicy: 'relay' }, ...rest);
      }
    };
  }, keep.toString());
}

/** The local candidate of the selected pair. */
function selectedLocal(page) {
  return page.evaluate(async () => {
    const stats = await window.callrelay.pc.getStats();
    let pair;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    const local = pair && stats.get(pair.localCandidateId);
    return local ? { type: local.candidateType, relayProtocol: local.relayProtocol, protocol: local.protocol } : null;
  });
}

before(async () => {
  await startCoturn();
  relay = await startRelay({
    env: {
      CALLRELAY_ICE_TURN_URLS: `turn:127.0.0.1:${turnPort}?transport=udp,turn:127.0.0.1:${turnPort}?transport=tcp`,
      CALLRELAY_ICE_TURN_SECRET: SECRET,
    },
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await relay?.stop();
  if (coturn && coturn.exitCode === null) {
    const exited = new Promise((r) => coturn.once('exit', r));
    coturn.kill('SIGTERM');
    const t = setTimeout(() => coturn.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  }
  if (coturnDir) rmSync(coturnDir, { recursive: true, force: true });
});

test('the join answer carries TURN credentials that expire with the grant', { timeout: 20000 }, async () => {
  const token = await (await fetch(`${relay.base}/v1/dev/token`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'carol', name: 'Carol' }),
  })).json();
  const auth = { authorization: `Bearer ${token.token}`, 'content-type': 'application/json' };
  const link = await (await fetch(`${relay.base}/v1/links`, { method: 'POST', headers: auth, body: '{}' })).json();
  const join = await (await fetch(`${relay.base}/v1/links/${link.id}/join`, { method: 'POST', headers: auth, body: '{}' })).json();
  const turn = join.ice_servers.find((s) => s.username);
  assert.ok(turn, JSON.stringify(join.ice_servers));
  assert.deepEqual(turn.urls, [`turn:127.0.0.1:${turnPort}?transport=udp`, `turn:127.0.0.1:${turnPort}?transport=tcp`]);
  const [expiry, user] = turn.username.split(':');
  assert.equal(user, join.participant_id);
  // They expire with the grant (60 s).
  const left = Number(expiry) - Date.now() / 1000;
  assert.ok(left > 30 && left <= 61, `expires in ${left} s`);
  assert.match(turn.credential, /^[A-Za-z0-9+/]{27}=$/);
});

test('two browsers that may only use TURN (UDP and TCP to coturn) talk through it', { timeout: 90000 }, async () => {
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  await relayOnly(alice, (u) => u.endsWith('transport=udp'));
  await relayOnly(bob, (u) => u.endsWith('transport=tcp'));
  const link = await createLink(alice, { name: 'Alice', title: 'Behind a firewall' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  await Promise.all([waitDecoding(alice, 1, { within: 20000 }), waitDecoding(bob, 1, { within: 20000 })]);
  assert.deepEqual(await selectedLocal(alice), { type: 'relay', relayProtocol: 'udp', protocol: 'udp' });
  assert.equal((await selectedLocal(bob)).type, 'relay');
  assert.equal((await selectedLocal(bob)).relayProtocol, 'tcp');
  // coturn authenticated both with the relay's credentials (its log names the REST usernames).
  const log = readFileSync(coturnLog, 'utf8');
  const users = [...log.matchAll(/user <(\d+:p-[0-9a-f]{16})>/g)].map((m) => m[1]);
  assert.ok(new Set(users).size >= 2, `coturn log users: ${[...new Set(users)]}`);
  for (const page of [alice, bob]) assert.deepEqual(page.errors.filter((e) => !/favicon/.test(e)), []);
});

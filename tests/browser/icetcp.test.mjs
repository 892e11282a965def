// ICE-TCP: the relay's UDP candidate is unusable for Bob (his page never learns it: every UDP
// candidate is stripped from the relay's SDP before Chromium sees it, as if a firewall dropped UDP
// to the relay), so Chromium can only pair its active TCP candidate with the relay's passive TCP
// candidate on the media port (RFC 6544, RFC 4571 framing). Alice uses UDP as usual; both hear
// and see each other, and Bob's selected candidate pair is TCP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startRelay, launchBrowser, newPerson, createLink, joinCall, inCall, waitDecoding,
} from './harness.mjs';

let relay;
let browser;

/** Removes every UDP candidate from the SDP the page's RTCPeerConnection is given. */
async function withoutRelayUdp(page) {
  await page.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    const strip = (sdp) => sdp.split('\r\n')
      .filter((l) => !(l.startsWith('a=candidate:') && l.split(' ')[2].toLowerCase() === 'udp'))
      .join('\r\n');
    window.__tcpCandidatesSeen = 0;
    window.RTCPeerConnection = class extends Native {
      setRemoteDescription(desc, ...rest) {
        if (desc && desc.sdp) {
          window.__tcpCandidatesSeen += desc.sdp.split('\r\n')
            .filter((l) => l.startsWith('a=candidate:') && / tcptype passive/.test(l)).length;
          desc = { type: desc.type, sdp: strip(desc.sdp) };
        }
        return super.setRemoteDescription(desc, ...rest);
      }
    };
  });
}

/** The selected pair's local and remote candidates. */
function selectedPair(page) {
  return page.evaluate(async () => {
    const stats = await window.callrelay.pc.getStats();
    let pair;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return {
      local: { protocol: local.protocol, tcpType: local.tcpType },
      remote: { protocol: remote.protocol, port: remote.port },
    };
  });
}

before(async () => {
  relay = await startRelay();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await relay?.stop();
});

test('a browser that cannot reach the relay over UDP calls over ICE-TCP', { timeout: 90000 }, async () => {
  const alice = await newPerson(browser, relay.base);
  const bob = await newPerson(browser, relay.base);
  await withoutRelayUdp(bob);
  const link = await createLink(alice, { name: 'Alice', title: 'UDP blocked' });
  await joinCall(alice, link.url, 'Alice');
  await inCall(alice);
  await joinCall(bob, link.url, 'Bob');
  await inCall(bob);
  await Promise.all([waitDecoding(alice, 1, { within: 20000 }), waitDecoding(bob, 1, { within: 20000 })]);
  assert.ok(await bob.evaluate(() => window.__tcpCandidatesSeen) >= 1, 'the relay offered a passive TCP candidate');
  const pair = await selectedPair(bob);
  assert.equal(pair?.local.protocol, 'tcp', JSON.stringify(pair));
  assert.equal(pair.local.tcpType, 'active', JSON.stringify(pair));
  assert.equal(pair.remote.protocol, 'tcp', JSON.stringify(pair));
  assert.equal((await selectedPair(alice))?.local.protocol, 'udp', 'Alice keeps UDP');
  for (const page of [alice, bob]) assert.deepEqual(page.errors.filter((e) => !/favicon/.test(e)), []);
});

// In the call: signaling over the WebSocket of the join answer (proto/signal.proto), one
// RTCPeerConnection to the relay, E2EE on every sender and receiver (e2ee-worker.mjs), the tiles,
// the participant list, mute/camera toggles, leaving, and removal with its reason in words.
//
// Rejoin (the relay is a cluster): when the relay says the call moved (`removed{moved}`) or its
// node is draining (`removed{drain}`), or the signaling socket closes without any `removed` (the
// node was lost), the page joins again by itself: a new `POST /v1/links/{id}/join` on its own
// origin, then the new answer's `signal_url`, with a new peer connection. It retries with backoff
// (200 ms doubling to 2 s) for 30 s, then says the connection was lost. Meanwhile it shows
// "Reconnecting…" and keeps the local camera and microphone tracks (no new prompt), the E2EE worker
// and its key; the new senders and receivers get their transforms as the first ones did.
//
// E2EE pitfall (Chromium): a transform assigned later than the task that creates the sender or the
// receiver is silently ignored, and media then flows in clear. So: the worker is created and keyed
// before any transceiver; a sender's transform is set right after addTransceiver, with no await in
// between; a receiver's transform is set synchronously inside `ontrack`. A guard compares the
// encoder's framesEncoded with the worker's encrypt count and stops sending if they disagree.

import { qrSvg } from './qr.mjs';

/** The audio/video input and audio output devices, once the page may see their labels. */
export async function listDevices() {
  try {
    const all = await navigator.mediaDevices.enumerateDevices();
    return {
      audioinput: all.filter((d) => d.kind === 'audioinput' && d.deviceId),
      videoinput: all.filter((d) => d.kind === 'videoinput' && d.deviceId),
      audiooutput: all.filter((d) => d.kind === 'audiooutput' && d.deviceId),
    };
  } catch {
    return { audioinput: [], videoinput: [], audiooutput: [] };
  }
}

/** Whether this browser lets a page pick the speaker (HTMLMediaElement.setSinkId). */
export const canPickSpeaker = typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;

/**
 * A picker for microphone, camera (when `video`) and speaker: one <select> per kind, each
 * preselected with `current[kind]`; `onPick(kind, deviceId)` runs on a change.
 */
export async function devicePicker(h, { video, current = {}, onPick }) {
  const devices = await listDevices();
  const row = (kind, label, testid) => {
    const list = devices[kind];
    if (!list.length) return null;
    const select = h('select', { 'data-testid': testid, 'aria-label': label },
      ...list.map((d, i) => h('option', { value: d.deviceId, selected: d.deviceId === current[kind] }, d.label || `${label} ${i + 1}`)));
    select.addEventListener('change', () => onPick(kind, select.value));
    return h('label', { class: 'device' }, h('span', {}, label), select);
  };
  return h('div', { class: 'devices', 'data-testid': 'device-picker' },
    row('audioinput', 'Microphone', 'device-mic'),
    video ? row('videoinput', 'Camera', 'device-camera') : null,
    canPickSpeaker ? row('audiooutput', 'Speaker', 'device-speaker') : null);
}

export const REMOVAL_TEXT = {
  revoked: 'This link was revoked',
  blocked: 'You were removed',
  room_full: 'The call is full',
  idle: 'You were disconnected after a period of inactivity',
  drain: 'The server is restarting (drain)',
  kicked: 'You were removed',
  error: 'The call ended because of an error',
  left: 'You left the call',
  expired: 'This call link has expired',
  moved: 'The call moved to another server',
  lost: 'The connection to the call was lost',
};

export const ERROR_TEXT = {
  invalid_grant: 'The join could not be completed: try again',
  grant_expired: 'The join took too long: try again',
  link_revoked: 'This link was revoked',
  link_expired: 'This call link has expired',
  join_refused: 'You can\'t join this call',
  room_full: 'The call is full',
  already_joined: 'You are already in this call in another window',
  sdp_rejected: 'Your browser\'s media setup was refused by the relay',
  video_not_allowed: 'This is a voice call: video is not allowed',
  rate_limited: 'Too many attempts: try again in a moment',
  internal: 'The relay had a problem: try again',
  link_not_found: 'This call link doesn\'t exist',
  unauthorized: 'Your session expired: open the link again',
  lobby_declined: 'The host did not let you in',
  lobby_timeout: 'Nobody let you in: the host may not be in the call. Try again later.',
};

// `removed{reason}` that mean "join again through any node" (the call goes on elsewhere).
const REJOIN_REASONS = ['moved', 'drain'];
// Signaling errors before `joined` that another join may get past (anything else ends the call).
const RETRY_ERRORS = ['grant_expired', 'internal', 'rate_limited'];
// Join API refusals that end the call instead of retrying (network errors, 429 and 5xx retry).
const FINAL_JOIN_CODES = ['link_not_found', 'link_expired', 'link_revoked', 'join_refused', 'room_full', 'unauthorized'];
const REJOIN_FIRST_DELAY_MS = 200;
const REJOIN_MAX_DELAY_MS = 2000;
const REJOIN_GIVE_UP_MS = 30000;
// A signaling socket that broke (no Close frame) is resumed on a new one for this long, while the
// peer connection carries on; then, or if the relay refuses, the page joins again.
const RESUME_FOR_MS = 30000;
// One resume attempt (socket open to `resumed`).
const RESUME_ATTEMPT_MS = 3000;
// A media connection that stays `disconnected` this long restarts ICE (a `failed` one at once).
const ICE_RESTART_AFTER_MS = 2000;
// Attempts after which a relay that sent nothing meanwhile counts as gone.
const RESUME_SILENT_ATTEMPTS = 2;

/** Packets received so far on `pc` (every inbound RTP stream), 0 if it cannot tell. */
async function receivedPackets(pc) {
  let n = 0;
  try {
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp') n += s.packetsReceived || 0;
    });
  } catch {
    /* closed */
  }
  return n;
}
// One attempt (signaling socket open to `joined`) that takes longer than this is abandoned.
const ATTEMPT_TIMEOUT_MS = 10000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const SIMULCAST = [
  { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'h', maxBitrate: 1500000 },
];

const hasScriptTransform = typeof RTCRtpScriptTransform !== 'undefined';
const hasLegacyStreams = typeof RTCRtpSender !== 'undefined' && 'createEncodedStreams' in RTCRtpSender.prototype;

export class Call {
  /**
   * `join`: the answer of the first `POST /v1/links/{id}/join`; `rejoin()`: makes another join on
   * the page's origin and resolves to {ok, status, data} (the page's `api()` result).
   */
  constructor({ root, h, join, rejoin, link, key, stream, name, moderate, shareUrl, sinkId }) {
    Object.assign(this, { root, h, join, rejoin, link, key, stream, name, moderate, shareUrl, sinkId });
    // The link's creator gets a menu on each tile: mute, remove, block (the server checks).
    this.moderator = !!join.moderator && typeof moderate === 'function';
    this.video = link.kind === 'video';
    this.participants = new Map(); // pid -> {info, tile, listItem, video, audio}
    this.conn = null; // the current connection: {epoch, pc, ws, queue, joined, ...} (connect())
    this.epoch = 0; // connections made so far; the worker tags each one's encrypted frames
    this.reconnecting = false;
    this.ended = false;
    this.audioMuted = false;
    this.videoMuted = false;
    this.workerStats = null;
    this.e2ee = { state: key ? 'on' : 'missing-key', sentSamples: [], seenFrames: [], senders: {} };
    this.receivers = new WeakSet();
    this.self = join.participant_id;
  }

  // -------------------------------------------------------------------------------------------
  // UI

  render() {
    const { h } = this;
    this.statusEl = h('span', { class: 'meta', 'data-testid': 'call-status', 'data-state': 'connecting' }, 'Connecting…');
    this.e2eeEl = h('span', { class: 'badge', 'data-testid': 'e2ee-status' });
    this.tilesEl = h('div', { class: 'tiles', 'data-testid': 'tiles' });
    this.listEl = h('ul', { 'data-testid': 'participants' });
    this.micBtn = h('button', { type: 'button', 'data-testid': 'mic', 'aria-pressed': 'false', onclick: () => this.toggleMic() }, 'Mute');
    this.camBtn = this.video
      ? h('button', { type: 'button', 'data-testid': 'camera', 'aria-pressed': 'false', onclick: () => this.toggleCamera() }, 'Camera off')
      : null;
    const leave = h('button', { type: 'button', class: 'danger', 'data-testid': 'leave', onclick: () => this.leave() }, 'Leave');
    // Invite from the call: the share URL with its key, to copy or scan.
    this.inviteEl = h('div', { class: 'invite', 'data-testid': 'invite-panel', hidden: true });
    const invite = h('button', { type: 'button', 'data-testid': 'invite', onclick: () => this.toggleInvite() }, 'Invite');
    // Microphone, camera and speaker, switchable during the call.
    this.devicesEl = h('div', { class: 'devices-panel', hidden: true });
    const devices = h('button', { type: 'button', 'data-testid': 'devices', onclick: () => this.toggleDevices() }, 'Devices');
    // Screen sharing: one person at a time per call (the relay holds the claim).
    this.screenBtn = this.video && navigator.mediaDevices?.getDisplayMedia
      ? h('button', { type: 'button', 'data-testid': 'share-screen', 'aria-pressed': 'false', onclick: () => this.toggleScreen() }, 'Share screen')
      : null;
    this.removedEl = h('div', { class: 'removed', hidden: true });
    this.noticeEl = h('p', { class: 'notice', role: 'status', 'data-testid': 'notice', hidden: true });
    // The creator's prompt: people waiting in the lobby (links created with require_approval).
    this.lobbyList = h('ul', {});
    this.lobbyEl = h('div', { class: 'lobby-prompt', role: 'region', 'aria-label': 'Waiting to join', 'data-testid': 'lobby-prompt', hidden: true },
      h('strong', {}, 'Waiting to join'),
      this.lobbyList,
      h('button', { type: 'button', 'data-testid': 'lobby-admit-all', onclick: () => this.decideLobby([], true, true) }, 'Admit everyone'));
    this.selfTile = this.makeTile(this.self, this.name ? `${this.name} (you)` : 'You', true);
    if (this.stream && this.video) this.selfTile.video.srcObject = this.stream;
    this.tilesEl.append(this.selfTile.el);
    this.selfItem = h('li', {}, h('span', {}, `${this.name || 'You'} (you)`), h('span', { class: 'meta' }));
    this.listEl.append(this.selfItem);
    this.root.replaceChildren(h('section', { class: 'call', 'data-testid': 'call' },
      h('div', { class: 'call-head' },
        h('h1', {}, this.link.title || (this.video ? 'Video call' : 'Voice call')),
        this.statusEl, this.e2eeEl),
      this.noticeEl,
      this.lobbyEl,
      this.tilesEl,
      h('aside', { class: 'side' }, h('h2', {}, 'In this call'), this.listEl),
      h('div', { class: 'controls' }, this.micBtn, this.camBtn, this.screenBtn, invite, devices, leave),
      this.inviteEl,
      this.devicesEl,
      this.removedEl));
    this.setE2ee(this.e2ee.state);
    document.title = `${this.link.title || 'Call'} · callrelay`;
  }

  makeTile(pid, name, self = false) {
    const { h } = this;
    const video = h('video', { autoplay: true, playsinline: true, muted: true });
    video.muted = true;
    const audio = self ? null : h('audio', { autoplay: true });
    const nameEl = h('span', { class: 'name' }, name);
    const flag = h('span', { class: 'flag', hidden: true });
    const micOff = h('span', { class: 'mic-off', 'data-testid': 'tile-muted', title: 'Microphone off', 'aria-label': 'Microphone off', hidden: true }, '🔇');
    const initial = (name || '?').trim().charAt(0).toUpperCase() || '?';
    const el = h('div', {
      class: `tile no-video${self ? ' self' : ''}`,
      'data-testid': self ? 'self-tile' : 'tile',
      'data-participant': pid,
    }, video, h('div', { class: 'avatar' }, h('span', {}, initial)), nameEl, micOff, flag, audio);
    if (self && this.video && this.stream?.getVideoTracks().length) el.classList.remove('no-video');
    if (!self && this.moderator) el.append(this.moderationMenu(pid));
    return { el, video, audio, nameEl, flag, micOff, hasVideo: false };
  }

  /** The creator's menu on another person's tile. */
  moderationMenu(pid) {
    const { h } = this;
    const menu = h('div', { class: 'menu', role: 'menu', hidden: true });
    const item = (action, label, done) => h('button', {
      type: 'button', role: 'menuitem', 'data-testid': `menu-${action}`,
      onclick: async () => {
        menu.hidden = true;
        const r = await this.moderate(action, pid);
        this.notify(r.ok ? done : `Could not ${action}: ${r.data?.detail || r.data?.title || r.status}`);
      },
    }, label);
    menu.append(
      item('mute', 'Mute microphone', 'Muted: they can unmute themselves'),
      item('remove', 'Remove from call', 'Removed: they can join again'),
      item('block', 'Block', 'Blocked: they cannot join your links any more'));
    const toggle = h('button', {
      type: 'button', class: 'menu-toggle', 'data-testid': 'tile-menu', 'aria-haspopup': 'menu', 'aria-label': 'Moderate',
      onclick: () => { menu.hidden = !menu.hidden; },
    }, '⋮');
    return h('div', { class: 'moderation' }, toggle, menu);
  }

  /** A short message above the tiles. */
  notify(text) {
    this.noticeEl.textContent = text;
    this.noticeEl.hidden = false;
  }

  toggleScreen() {
    if (this.screen) this.stopScreen();
    else this.startScreen();
  }

  /**
   * Claims the call's screen share, then publishes the screen as a second video track (its own
   * sender, with its E2EE transform set in the same task, as for the camera) and offers it.
   */
  async startScreen() {
    if (this.screen || this.sharePending) return;
    this.sharePending = true;
    try {
      this.send({ screen_share: { active: true } });
      const granted = await new Promise((resolve) => {
        this.shareWaiter = resolve;
        setTimeout(() => resolve(false), 5000);
      });
      this.shareWaiter = null;
      if (!granted) return;
      let display;
      try {
        display = await navigator.mediaDevices.getDisplayMedia({ video: true });
      } catch (err) {
        this.send({ screen_share: { active: false } });
        this.notify(`Screen sharing did not start (${err.name}).`);
        return;
      }
      const [track] = display.getVideoTracks();
      const conn = this.conn;
      const transceiver = conn.pc.addTransceiver(track, { direction: 'sendonly', streams: this.stream ? [this.stream] : [] });
      this.attachSender(transceiver.sender, 'video');
      // VP8 and its RTX only: the E2EE transform knows VP8's clear header, and Chromium numbers
      // a line added later afresh: with FEC it gave a payload type of the call (121, RTX of
      // H.264 in the receiving lines) a second meaning, which the relay refuses.
      this.preferVp8(transceiver, { vp8Only: true });
      this.screen = { track, transceiver, conn };
      track.addEventListener('ended', () => this.stopScreen());
      this.screenBtn.textContent = 'Stop sharing';
      this.screenBtn.setAttribute('aria-pressed', 'true');
      this.notify('You are sharing your screen.');
      await this.renegotiate(conn);
    } finally {
      this.sharePending = false;
    }
  }

  async stopScreen() {
    const screen = this.screen;
    if (!screen) return;
    this.screen = null;
    screen.track.stop();
    this.screenBtn.textContent = 'Share screen';
    this.screenBtn.setAttribute('aria-pressed', 'false');
    if (screen.conn === this.conn && this.conn) {
      try {
        this.conn.pc.removeTrack(screen.transceiver.sender);
        await this.renegotiate(this.conn);
      } catch (err) {
        console.warn('stop sharing', err);
      }
    }
    this.send({ screen_share: { active: false } });
  }

  /** Offers our current senders again (the relay answers with `answer`). */
  async renegotiate(conn) {
    const offer = await conn.pc.createOffer();
    await conn.pc.setLocalDescription(offer);
    if (conn === this.conn) this.send({ offer: { sdp: conn.pc.localDescription.sdp } });
  }

  /** Another participant's screen: a tile of its own. */
  showScreenTile(p, pid, track) {
    const { h } = this;
    this.removeScreenTile(p);
    const video = h('video', { autoplay: true, playsinline: true, muted: true });
    video.muted = true;
    video.srcObject = new MediaStream([track]);
    const label = `${p.info.name || p.info.user_id || 'Guest'}'s screen`;
    const el = h('div', { class: 'tile screen', 'data-testid': 'screen-tile', 'data-participant': pid, 'data-announced': String(!!p.screenAnnounced) },
      video, h('span', { class: 'name' }, label));
    p.screenTile = { el, video, track };
    this.tilesEl.prepend(el);
    track.addEventListener('ended', () => {
      if (p.screenTile?.track === track) this.removeScreenTile(p);
    });
  }

  removeScreenTile(p) {
    p.screenTile?.el.remove();
    p.screenTile = null;
  }

  toggleInvite() {
    const { h } = this;
    if (!this.inviteEl.hidden) {
      this.inviteEl.hidden = true;
      return;
    }
    const url = this.shareUrl || this.link.url;
    const status = h('span', { class: 'note', role: 'status' });
    const code = h('code', { class: 'share-url', 'data-testid': 'invite-url' }, url);
    const copy = h('button', { type: 'button', 'data-testid': 'invite-copy', onclick: async () => {
      try {
        await navigator.clipboard.writeText(url);
        status.textContent = 'Copied.';
      } catch {
        getSelection().selectAllChildren(code);
        status.textContent = 'Press Ctrl+C to copy.';
      }
    } }, 'Copy');
    const qr = h('div', { class: 'qr', 'data-testid': 'invite-qr' });
    qr.innerHTML = qrSvg(url); // our own SVG markup: no user text inside
    this.inviteEl.replaceChildren(
      h('p', { class: 'note' }, 'Anyone with this link can join. The part after # is the encryption key.'),
      code, h('div', { class: 'row' }, copy, status), qr);
    this.inviteEl.hidden = false;
  }

  async toggleDevices() {
    if (!this.devicesEl.hidden) {
      this.devicesEl.hidden = true;
      return;
    }
    const current = {
      audioinput: this.audioTrack?.getSettings().deviceId,
      videoinput: this.videoTrack?.getSettings().deviceId,
      audiooutput: this.sinkId,
    };
    const picker = await devicePicker(this.h, { video: this.video, current, onPick: (kind, id) => this.switchDevice(kind, id) });
    this.devicesEl.replaceChildren(picker);
    this.devicesEl.hidden = false;
  }

  /**
   * Switches the microphone, camera or speaker during the call. A new input track replaces the
   * old one on the same sender (`replaceTrack`), so the sender's E2EE transform and the relay's
   * view of the call stay as they were: no renegotiation.
   */
  async switchDevice(kind, deviceId) {
    if (kind === 'audiooutput') {
      this.sinkId = deviceId;
      for (const p of this.participants.values()) p.tile.audio?.setSinkId?.(deviceId).catch(() => {});
      return;
    }
    const audio = kind === 'audioinput';
    let track;
    try {
      const s = await navigator.mediaDevices.getUserMedia(audio
        ? { audio: { deviceId: { exact: deviceId } } }
        : { video: { deviceId: { exact: deviceId }, width: { ideal: 960 }, height: { ideal: 540 } } });
      [track] = audio ? s.getAudioTracks() : s.getVideoTracks();
    } catch (err) {
      this.notify(`Could not switch the ${audio ? 'microphone' : 'camera'} (${err.name}).`);
      return;
    }
    const old = audio ? this.audioTrack : this.videoTrack;
    track.enabled = !(audio ? this.audioMuted : this.videoMuted);
    const conn = this.conn;
    const sender = conn?.senders?.[audio ? 'audio' : 'video'];
    if (sender && this.e2ee.state !== 'failed') await sender.replaceTrack(track);
    if (audio) this.audioTrack = track;
    else this.videoTrack = track;
    if (this.stream) {
      if (old) this.stream.removeTrack(old);
      this.stream.addTrack(track);
    } else {
      this.stream = new MediaStream([track]);
    }
    old?.stop();
    if (!audio) {
      this.selfTile.video.srcObject = new MediaStream([track]);
      this.selfTile.el.classList.toggle('no-video', this.videoMuted);
    }
    // Joined without this kind of device (a listener, or no camera): the session has no line to
    // send it on, and the relay adds none to a running session. Join again: the new connection
    // offers it, as a rejoin after a move does (same tracks, same E2EE worker and key).
    if (conn && !sender && !this.ended) {
      this.notify(`Joining again with your ${audio ? 'microphone' : 'camera'}…`);
      this.reconnect('devices');
    }
  }

  /** The creator lets people in (`admit`) or turns them away; `all`: everyone waiting. */
  decideLobby(pids, all, admit) {
    this.send({ lobby_decision: { participant_ids: pids, all, admit } });
  }

  /** Someone waits in the lobby: a line with Admit and Decline in the creator's prompt. */
  showLobbyRequest(r) {
    const { h } = this;
    if (this.lobbyList.querySelector(`[data-participant="${CSS.escape(r.participant_id)}"]`)) return;
    this.lobbyList.append(h('li', { 'data-testid': 'lobby-entry', 'data-participant': r.participant_id },
      h('span', {}, r.name || r.user_id),
      h('button', { type: 'button', class: 'primary', 'data-testid': 'lobby-admit', onclick: () => this.decideLobby([r.participant_id], false, true) }, 'Admit'),
      h('button', { type: 'button', 'data-testid': 'lobby-decline', onclick: () => this.decideLobby([r.participant_id], false, false) }, 'Decline')));
    this.lobbyEl.hidden = false;
  }

  hideLobbyRequest(pid) {
    this.lobbyList.querySelector(`[data-participant="${CSS.escape(pid)}"]`)?.remove();
    this.lobbyEl.hidden = this.lobbyList.children.length === 0;
  }

  setStatus(state, text) {
    this.statusEl.dataset.state = state;
    this.statusEl.textContent = text;
  }

  setE2ee(state, detail) {
    this.e2ee.state = state;
    this.e2eeEl.dataset.state = state;
    this.e2eeEl.textContent = {
      on: 'End-to-end encrypted',
      'missing-key': 'No key: others can\'t be decrypted',
      failed: 'Encryption failed',
    }[state];
    if (detail) this.e2eeEl.title = detail;
  }

  addParticipant(info) {
    if (info.participant_id === this.self) return;
    const label = info.name || info.user_id || 'Guest';
    const known = this.participants.get(info.participant_id);
    if (known) {
      // A track can arrive before its participant_joined: fill in the name then.
      if (info.name || info.user_id) {
        known.info = { ...known.info, ...info };
        known.tile.nameEl.textContent = label;
        known.tile.el.querySelector('.avatar span').textContent = label.trim().charAt(0).toUpperCase() || '?';
        known.item.firstChild.textContent = label;
      }
      this.updateMute(known, info.audio_muted, info.video_muted);
      return;
    }
    const tile = this.makeTile(info.participant_id, label);
    const item = this.h('li', { 'data-participant': info.participant_id }, this.h('span', {}, label), this.h('span', { class: 'meta' }));
    if (info.clear_media) {
      // A WHIP publisher (OBS, a camera): the relay says its media is not end-to-end encrypted.
      tile.el.append(this.h('span', {
        class: 'flag clear-media', 'data-testid': 'clear-media',
        title: 'This participant publishes without end-to-end encryption (a streaming tool): the relay can see its media.',
      }, 'Not end-to-end encrypted'));
    }
    const p = { info, tile, item, videoTrack: null };
    this.participants.set(info.participant_id, p);
    this.tilesEl.append(tile.el);
    this.listEl.append(item);
    this.updateMute(p, info.audio_muted, info.video_muted);
  }

  removeParticipant(pid) {
    const p = this.participants.get(pid);
    if (!p) return;
    this.removeScreenTile(p);
    p.tile.el.remove();
    p.item.remove();
    this.participants.delete(pid);
  }

  updateMute(p, audioMuted, videoMuted) {
    p.info.audio_muted = !!audioMuted;
    p.info.video_muted = !!videoMuted;
    const showVideo = this.video && p.videoTrack && !p.info.video_muted;
    p.tile.el.classList.toggle('no-video', !showVideo);
    p.tile.el.dataset.audioMuted = String(!!audioMuted);
    p.tile.el.dataset.videoMuted = String(!!videoMuted);
    p.tile.micOff.hidden = !audioMuted;
    p.item.lastChild.textContent = [audioMuted ? 'muted' : '', this.video && videoMuted ? 'camera off' : ''].filter(Boolean).join(', ');
  }

  showRemoved(text, reason, detail) {
    const { h } = this;
    // Rejoining makes sense after leaving or a transient end, not after a revocation or a refusal.
    const rejoin = ['left', 'idle', 'drain', 'error', 'lost'].includes(reason)
      ? h('button', { type: 'button', class: 'primary', 'data-testid': 'rejoin', onclick: () => location.reload() }, 'Rejoin')
      : null;
    this.removedEl.replaceChildren(h('div', { class: 'card' },
      h('h1', { 'data-testid': 'removed-reason' }, text),
      detail ? h('p', {}, detail) : null,
      h('div', { class: 'row' }, rejoin, h('a', { class: 'button', href: '/' }, 'New call link'), h('a', { class: 'button', href: '/calls' }, 'Call log'))));
    this.removedEl.hidden = false;
  }

  // -------------------------------------------------------------------------------------------
  // Media and signaling

  async start() {
    if (!hasScriptTransform && !hasLegacyStreams) {
      throw new Error('This browser cannot encrypt calls end to end (no Encoded Transform API).');
    }
    this.render();
    window.callrelay.call = this;

    // The worker, keyed, before any transceiver exists. It lives as long as the call: every
    // connection's senders and receivers use it (same key, same key id, one frame counter).
    this.worker = new Worker('/assets/e2ee-worker.mjs', { type: 'module', name: 'e2ee' });
    const ready = new Promise((resolve, reject) => {
      this.worker.addEventListener('error', (e) => reject(new Error(`E2EE worker failed: ${e.message || 'error'}`)), { once: true });
      this.worker.addEventListener('message', (e) => e.data.type === 'ready' && resolve(), { once: false });
    });
    this.worker.onmessage = (e) => this.onWorker(e.data);
    this.worker.postMessage({ type: 'key', key: this.key || null });
    await ready;

    this.audioTrack = this.stream?.getAudioTracks()[0] || null;
    this.videoTrack = this.video ? this.stream?.getVideoTracks()[0] || null : null;
    this.onResize = () => {
      clearTimeout(this.resizeTimer);
      this.resizeTimer = setTimeout(() => this.participants.forEach((p, pid) => p.videoTrack && this.preferVideo(pid)), 300);
    };
    window.addEventListener('resize', this.onResize);
    // The network changed (Wi-Fi to mobile data, a VPN, a laptop waking up): new local
    // addresses, so restart ICE over signaling. Same participant, same tracks.
    this.onOnline = () => this.restartIce('online');
    window.addEventListener('online', this.onOnline);
    this.guard = setInterval(() => this.checkBypass(), 1000);

    const outcome = await this.connect(this.join);
    if (outcome === 'retry') this.reconnect('unreachable');
  }

  /**
   * One connection: a new peer connection with our tracks, the signaling socket of `join`, the
   * join. Resolves 'joined', 'retry' (closed or refused in a way another join may get past) or
   * 'ended' (the call ended). After 'joined', losing this connection starts `reconnect()`.
   */
  connect(join) {
    // A new connection (a rejoin) starts without the screen: the claim went with the old one.
    if (this.screen) {
      this.screen.track.stop();
      this.screen = null;
      this.screenBtn.textContent = 'Share screen';
      this.screenBtn.setAttribute('aria-pressed', 'false');
    }
    this.disconnect(this.conn);
    this.join = join;
    const conn = { epoch: ++this.epoch, queue: Promise.resolve(), joined: false, prevEncoded: 0 };
    this.conn = conn;
    let settle;
    const settled = new Promise((resolve) => (settle = resolve));
    conn.settle = (outcome) => {
      if (!conn.settled) {
        conn.settled = outcome;
        clearTimeout(conn.timer);
        settle(outcome);
      }
    };
    // A failed attempt: closed before `joined`, refused for now, or too slow.
    conn.fail = () => {
      this.disconnect(conn);
      conn.settle('retry');
    };
    conn.timer = setTimeout(conn.fail, ATTEMPT_TIMEOUT_MS);

    // The peer connection and our senders, each with its transform in the same task.
    const legacy = !hasScriptTransform;
    const pc = new RTCPeerConnection({
      // STUN as is; TURN with the credentials this join got (they expire with its grant).
      iceServers: (join.ice_servers || []).map((s) => (
        s.username ? { urls: s.urls, username: s.username, credential: s.credential } : { urls: s.urls })),
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
      ...(legacy ? { encodedInsertableStreams: true } : {}),
    });
    conn.pc = pc;
    window.callrelay.pc = pc;
    pc.ontrack = (e) => this.onTrack(e);
    pc.onconnectionstatechange = () => conn === this.conn && this.onConnectionState();
    // After the bypass guard fired, we send nothing (transceivers without a track).
    const sending = this.e2ee.state !== 'failed';
    const streams = this.stream ? [this.stream] : [];
    conn.senders = {};
    if (this.audioTrack) {
      const ta = pc.addTransceiver((sending && this.audioTrack) || 'audio', { direction: 'sendonly', streams });
      this.attachSender(ta.sender, 'audio');
      conn.senders.audio = ta.sender;
    } else {
      // A listener (no microphone) offers one receive-only line and publishes nothing: the relay
      // then subscribes nobody to it (a send-only line without a track was published as a
      // microphone, and every other session carried a subscription to it that never sent).
      // Picking a microphone later joins again with it (`switchDevice`).
      pc.addTransceiver('audio', { direction: 'recvonly' });
    }
    // No camera: no video line either (picking one later joins again with it).
    if (this.video && this.videoTrack) {
      // Simulcast l/m/h (quarter, half, full size): the relay forwards to each subscriber the layer
      // its `video_preference` asks for. One sender transform sees the frames of every layer.
      const tv = pc.addTransceiver((sending && this.videoTrack) || 'video', { direction: 'sendonly', streams, sendEncodings: SIMULCAST });
      this.attachSender(tv.sender, 'video');
      conn.senders.video = tv.sender;
      this.preferVp8(tv);
    }

    // Offer, socket, join.
    (async () => {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      if (conn !== this.conn) return;
      const ws = new WebSocket(join.signal_url);
      this.wireSocket(conn, ws);
      ws.onopen = () => this.send({ join: { grant: join.grant, sdp: pc.localDescription.sdp } });
      conn.ping = setInterval(() => this.send({ ping: { nonce: Date.now() } }), 20000);
    })().catch((err) => {
      console.warn('connect', err);
      if (conn === this.conn) conn.fail();
    });
    return settled;
  }

  /** Makes `ws` the signaling socket of `conn`: its messages go to onSignal, in order. */
  wireSocket(conn, ws) {
    conn.ws = ws;
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      conn.queue = conn.queue.then(() => conn === this.conn && this.onSignal(msg)).catch((err) => console.warn('signal', err));
    };
    ws.onclose = (e) => {
      // After the messages still queued (a `removed{reason}` comes just before the close).
      conn.queue = conn.queue.then(() => {
        if (conn !== this.conn || this.ended || conn.ws !== ws) return;
        // 1006: the connection broke without a Close frame. The session waits on the relay for
        // a new socket (`resume`); media goes on meanwhile.
        if (conn.joined && conn.resumeToken && e.code === 1006) this.resume(conn);
        else if (conn.joined) this.reconnect('node_lost');
        else conn.fail();
      });
    };
  }

  /**
   * Takes the session of `conn` over on a new signaling socket (`resume{resume_token}`), keeping
   * the peer connection, the participant and its tiles. Retries for RESUME_FOR_MS; joins again
   * (`reconnect`) if the relay refuses or cannot be reached.
   */
  async resume(conn) {
    if (this.ended || this.resuming) return;
    this.resuming = true;
    this.setStatus('reconnecting', 'Reconnecting…');
    this.statusEl.dataset.reason = 'signaling';
    const since = Date.now();
    // While packets keep arriving the relay is up and worth waiting for; when none came since
    // the last attempt, it is likely gone (killed, partitioned): join again, through any node.
    let heard = await receivedPackets(conn.pc);
    try {
      for (let attempt = 1, delay = 200; ; attempt++, delay = Math.min(delay * 2, 2000)) {
        const outcome = await this.resumeOnce(conn);
        if (conn !== this.conn || this.ended) return;
        if (outcome === 'resumed') {
          delete this.statusEl.dataset.reason;
          this.setStatus('joined', 'In the call');
          // What we said while away was lost: say it again.
          this.sendMute();
          for (const [pid, p] of this.participants) if (p.videoTrack) this.preferVideo(pid);
          return;
        }
        // Refused (the session ended), the grace is over, or the media path is gone too.
        const pcGone = ['failed', 'closed'].includes(conn.pc?.connectionState);
        const now = await receivedPackets(conn.pc);
        const silent = now <= heard;
        heard = now;
        if (outcome === 'refused' || pcGone || (silent && attempt >= RESUME_SILENT_ATTEMPTS)) break;
        if (Date.now() - since + delay > RESUME_FOR_MS) break;
        await sleep(delay);
        if (conn !== this.conn || this.ended) return;
      }
    } finally {
      this.resuming = false;
    }
    this.reconnect('node_lost');
  }

  /** One resume attempt: resolves 'resumed', 'refused' (resume_failed) or 'failed' (try again). */
  resumeOnce(conn) {
    return new Promise((resolve) => {
      let ws;
      let done = false;
      const finish = (outcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (outcome !== 'resumed') {
          try {
            ws.onclose = null;
            ws.close();
          } catch {
            /* closed already */
          }
        }
        resolve(outcome);
      };
      const timer = setTimeout(() => finish('failed'), RESUME_ATTEMPT_MS);
      try {
        ws = new WebSocket(this.join.signal_url);
      } catch {
        finish('failed');
        return;
      }
      ws.onopen = () => ws.send(JSON.stringify({ resume: { resume_token: conn.resumeToken } }));
      ws.onmessage = (e) => {
        let msg;
        try {
          msg = JSON.parse(e.data);
        } catch {
          return;
        }
        if (msg.resumed) {
          // From here on this is the call's socket: what follows goes to onSignal.
          this.wireSocket(conn, ws);
          finish('resumed');
        } else if (msg.error) {
          finish(msg.error.code === 'resume_failed' ? 'refused' : 'failed');
        }
      };
      ws.onclose = () => finish('failed');
    });
  }

  /** Ends a connection without ending the call: its socket and peer connection are closed. */
  disconnect(conn) {
    if (!conn) return;
    clearTimeout(conn.timer);
    clearInterval(conn.ping);
    if (conn.ws) {
      conn.ws.onclose = null;
      conn.ws.onmessage = null;
      try {
        conn.ws.close();
      } catch {
        /* closed already */
      }
    }
    conn.pc?.close();
    if (this.conn === conn) this.conn = null;
  }

  /**
   * Joins again through the page's origin until a connection is back, the call ends (a final
   * refusal, Leave), or REJOIN_GIVE_UP_MS pass. `why`: moved, drain, node_lost, unreachable.
   */
  async reconnect(why) {
    if (this.ended || this.reconnecting) return;
    this.reconnecting = true;
    const since = Date.now();
    this.disconnect(this.conn);
    this.setStatus('reconnecting', 'Reconnecting…');
    this.statusEl.dataset.reason = why;
    try {
      for (let delay = REJOIN_FIRST_DELAY_MS; ; delay = Math.min(delay * 2, REJOIN_MAX_DELAY_MS)) {
        const r = await this.rejoin();
        if (this.ended) return;
        if (r.ok) {
          const outcome = await this.connect(r.data);
          if (outcome !== 'retry' || this.ended) return;
        } else if (FINAL_JOIN_CODES.includes(r.data.code) || r.status === 401) {
          this.end(ERROR_TEXT[r.data.code] || ERROR_TEXT.unauthorized, r.data.code || 'unauthorized');
          return;
        }
        if (Date.now() - since + delay > REJOIN_GIVE_UP_MS) {
          this.end(REMOVAL_TEXT.lost, 'lost', 'Reconnecting failed for 30 seconds. Check your network, then rejoin.');
          return;
        }
        await sleep(delay);
        if (this.ended) return;
      }
    } finally {
      this.reconnecting = false;
    }
  }

  preferVp8(transceiver, { vp8Only = false } = {}) {
    // The relay reads the clear VP8 header; keep VP8 first (and RTX, RED, FEC as they are, or
    // only RTX with `vp8Only`).
    try {
      const caps = RTCRtpSender.getCapabilities('video');
      if (!caps || !transceiver.setCodecPreferences) return;
      const vp8 = caps.codecs.filter((c) => /vp8/i.test(c.mimeType));
      const rest = caps.codecs.filter((c) => (vp8Only ? /rtx/i : /rtx|red|ulpfec|flexfec/i).test(c.mimeType));
      if (vp8.length) transceiver.setCodecPreferences([...vp8, ...rest]);
    } catch {
      /* keep the browser's order */
    }
  }

  attachSender(sender, kind) {
    // `epoch` lets the worker count this connection's encrypted frames apart (checkBypass).
    const options = { op: 'encrypt', kind, epoch: this.epoch };
    if (hasScriptTransform) {
      sender.transform = new RTCRtpScriptTransform(this.worker, options);
    } else {
      const { readable, writable } = sender.createEncodedStreams();
      this.worker.postMessage({ type: 'stream', readable, writable, ...options }, [readable, writable]);
    }
  }

  /** `clear`: the track of a participant whose media is not end-to-end encrypted (a WHIP
   * publisher, as the relay says): its frames pass as they come. */
  attachReceiver(receiver, kind, clear = false) {
    if (this.receivers.has(receiver)) return;
    this.receivers.add(receiver);
    const op = clear ? 'clear' : 'decrypt';
    if (hasScriptTransform) {
      receiver.transform = new RTCRtpScriptTransform(this.worker, { op, kind });
    } else {
      const { readable, writable } = receiver.createEncodedStreams();
      this.worker.postMessage({ type: 'stream', readable, writable, op, kind }, [readable, writable]);
    }
  }

  onTrack(e) {
    // Synchronously, first thing: the receiver's transform (see the pitfall above).
    const pid = e.streams[0]?.id;
    this.attachReceiver(e.receiver, e.track.kind, !!this.participants.get(pid)?.info.clear_media);
    if (!pid) return;
    if (!this.participants.has(pid)) this.addParticipant({ participant_id: pid, name: '', user_id: '' });
    const p = this.participants.get(pid);
    if (e.track.kind === 'video' && p.videoTrack && p.videoTrack !== e.track && p.videoTrack.readyState === 'live') {
      // A second live video of one person: their screen.
      this.showScreenTile(p, pid, e.track);
    } else if (e.track.kind === 'video') {
      p.videoTrack = e.track;
      p.tile.video.srcObject = new MediaStream([e.track]);
      p.tile.hasVideo = true;
      this.preferVideo(pid);
      e.track.addEventListener('ended', () => {
        if (p.videoTrack === e.track) p.videoTrack = null;
        this.updateMute(p, p.info.audio_muted, p.info.video_muted);
      });
    } else {
      p.tile.audio.srcObject = new MediaStream([e.track]);
      if (this.sinkId) p.tile.audio.setSinkId?.(this.sinkId).catch(() => {});
      p.tile.audio.play?.().catch(() => {});
    }
    this.updateMute(p, p.info.audio_muted, p.info.video_muted);
  }

  /** Asks the relay for the simulcast layer of `pid` that fits its tile (by height in pixels). */
  preferVideo(pid) {
    const p = this.participants.get(pid);
    if (!p) return;
    const height = Math.round((p.tile.el.clientHeight || 360) * (window.devicePixelRatio || 1));
    if (p.preferred === height) return;
    p.preferred = height;
    this.send({ video_preference: { participant_id: pid, max_height: height } });
  }

  onWorker(m) {
    switch (m.type) {
      case 'stats':
        this.workerStats = m;
        break;
      case 'state':
        if (m.state === 'missing-key' && this.e2ee.state !== 'failed') this.setE2ee('missing-key');
        break;
      case 'sender':
        this.e2ee.senders[m.kid] = m.state;
        break;
      case 'sent-sample':
        this.e2ee.sentSamples.push({ clear: m.clear, plain: m.plain });
        break;
      case 'seen-frame':
        this.e2ee.seenFrames.push(m.hex);
        break;
      case 'error':
        console.warn('e2ee worker:', m.message);
        break;
      default:
    }
  }

  async checkBypass() {
    const conn = this.conn;
    if (!conn?.pc || this.ended || !this.workerStats) return;
    let encoded = 0;
    let audioPackets = 0;
    const stats = await conn.pc.getStats();
    stats.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      if (s.kind === 'video') encoded += s.framesEncoded || 0;
      if (s.kind === 'audio') audioPackets += s.packetsSent || 0;
    });
    // A transform that never ran while the encoder produced frames means media left in clear.
    // Compared: what this connection's encoder had produced one check ago (the worker reports
    // twice a second, so its count covers those frames) with what the worker encrypted for it.
    const ws = this.workerStats;
    const encrypted = ws.epoch === conn.epoch ? ws.epochEncrypted : 0;
    const before = conn.prevEncoded;
    conn.prevEncoded = Math.max(encoded, audioPackets / 5);
    if (before > 10 && encrypted === 0) {
      this.setE2ee('failed', 'The browser bypassed the encryption transform; sending stopped.');
      for (const s of conn.pc.getSenders()) s.replaceTrack(null).catch(() => {});
      clearInterval(this.guard);
    }
  }

  get pc() {
    return this.conn?.pc || null;
  }

  get ws() {
    return this.conn?.ws || null;
  }

  send(msg) {
    const ws = this.conn?.ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  async onSignal(msg) {
    const [type, body] = Object.entries(msg)[0] || [];
    switch (type) {
      case 'joined': {
        const conn = this.conn;
        this.self = body.participant_id || this.self;
        this.selfTile.el.dataset.participant = this.self;
        // After a rejoin everyone has a new participant id: the old tiles go.
        for (const pid of [...this.participants.keys()]) this.removeParticipant(pid);
        for (const p of body.participants || []) this.addParticipant(p);
        await conn.pc.setRemoteDescription({ type: 'answer', sdp: body.sdp });
        conn.joined = true;
        conn.resumeToken = body.resume_token || '';
        delete this.statusEl.dataset.reason;
        this.setStatus('joined', 'In the call');
        if (this.lobbyNotice) this.noticeEl.hidden = true;
        this.lobbyNotice = false;
        if (this.audioMuted || this.videoMuted) this.sendMute();
        for (const [pid, p] of this.participants) if (p.videoTrack) this.preferVideo(pid);
        conn.settle('joined');
        break;
      }
      case 'offer': {
        // Glare: the relay yields to our outstanding offer (a screen share, an ICE restart) and
        // offers again after answering it (proto/CLIENTS.md), so its crossed offer is dropped.
        if (this.pc.signalingState === 'have-local-offer') break;
        await this.pc.setRemoteDescription({ type: 'offer', sdp: body.sdp });
        const answer = await this.pc.createAnswer();
        await this.pc.setLocalDescription(answer);
        this.send({ answer: { sdp: this.pc.localDescription.sdp } });
        break;
      }
      case 'answer':
        await this.pc.setRemoteDescription({ type: 'answer', sdp: body.sdp });
        break;
      case 'screen_share':
        if (body.participant_id === this.self) {
          this.shareWaiter?.(body.active);
        } else {
          const p = this.participants.get(body.participant_id);
          if (p) {
            p.sharing = body.active;
            if (!body.active) this.removeScreenTile(p);
          }
        }
        break;
      case 'track_published':
        if (body.source === 'screen') {
          const p = this.participants.get(body.participant_id);
          if (p) p.screenAnnounced = true;
          if (p?.screenTile) p.screenTile.el.dataset.announced = 'true';
        }
        break;
      case 'participant_joined':
        this.addParticipant(body.participant);
        break;
      case 'participant_left':
        this.removeParticipant(body.participant_id);
        break;
      case 'active_speaker':
        for (const [pid, p] of this.participants) p.tile.el.classList.toggle('speaking', pid === body.participant_id);
        this.selfTile.el.classList.toggle('speaking', body.participant_id === this.self);
        break;
      case 'lobby':
        // The wait is the creator's to end (or lobby.timeout): not a slow attempt.
        clearTimeout(this.conn.timer);
        this.setStatus('lobby', 'Waiting for the host to let you in');
        if (!body.host_present) {
          this.notify('The host is not in the call yet: you will join when they let you in.');
          this.lobbyNotice = true;
        }
        break;
      case 'lobby_request':
        this.showLobbyRequest(body);
        break;
      case 'lobby_left':
        this.hideLobbyRequest(body.participant_id);
        break;
      case 'mute_requested':
        if (!this.audioMuted) this.toggleMic();
        this.notify('The host muted your microphone: unmute when you want to speak');
        break;
      case 'mute_changed': {
        const p = this.participants.get(body.participant_id);
        if (p) this.updateMute(p, body.audio_muted, body.video_muted);
        break;
      }
      case 'removed':
        if (REJOIN_REASONS.includes(body.reason)) {
          // Not awaited: the rejoin runs on its own connections, this one's queue ends here.
          this.reconnect(body.reason);
        } else {
          this.end(REMOVAL_TEXT[body.reason] || 'You were removed', body.reason);
        }
        break;
      case 'error':
        if (body.code === 'screen_share_busy') {
          this.shareWaiter?.(false);
          this.notify(body.message ? `${body.message[0].toUpperCase()}${body.message.slice(1)}.` : 'Someone else is sharing their screen.');
          break;
        }
        if (!this.conn.joined && RETRY_ERRORS.includes(body.code)) {
          this.conn.fail();
        } else if (!this.conn.joined || ['link_revoked', 'link_expired', 'join_refused', 'room_full'].includes(body.code)) {
          this.end(ERROR_TEXT[body.code] || 'The call could not be joined', body.code);
        } else {
          console.warn('signal error', body.code, body.message);
        }
        break;
      default:
    }
  }

  onConnectionState() {
    const s = this.pc.connectionState;
    if (s === 'connected') {
      clearTimeout(this.iceTimer);
      this.iceTimer = null;
      this.setStatus('connected', 'In the call');
    } else if (s === 'disconnected') {
      if (!this.iceTimer) {
        this.iceTimer = setTimeout(() => {
          this.iceTimer = null;
          if (this.pc?.connectionState === 'disconnected') this.restartIce('disconnected');
        }, ICE_RESTART_AFTER_MS);
      }
    } else if (s === 'failed') {
      this.setStatus('failed', 'Media connection failed');
      this.restartIce('failed');
    }
  }

  /**
   * Restarts ICE: new credentials and new local candidates (new ports, the new network's
   * addresses), offered over signaling; the relay answers with credentials of its own and
   * follows the new path. Same participant, seat and tracks: the others see nobody leave.
   */
  async restartIce(why) {
    const conn = this.conn;
    if (!conn?.joined || !conn.pc || this.ended || conn.restartingIce) return;
    conn.restartingIce = true;
    try {
      window.callrelay.iceRestarts = (window.callrelay.iceRestarts || 0) + 1;
      window.callrelay.lastIceRestart = why;
      conn.pc.restartIce();
      await this.renegotiate(conn);
    } catch (err) {
      console.warn('ice restart', err);
    } finally {
      conn.restartingIce = false;
    }
  }

  sendMute() {
    this.send({ mute: { audio_muted: this.audioMuted, video_muted: this.videoMuted } });
  }

  toggleMic() {
    this.audioMuted = !this.audioMuted;
    if (this.audioTrack) this.audioTrack.enabled = !this.audioMuted;
    this.micBtn.setAttribute('aria-pressed', String(this.audioMuted));
    this.micBtn.dataset.state = this.audioMuted ? 'off' : 'on';
    this.micBtn.textContent = this.audioMuted ? 'Unmute' : 'Mute';
    this.selfItem.lastChild.textContent = this.audioMuted ? 'muted' : '';
    this.selfTile.micOff.hidden = !this.audioMuted;
    this.sendMute();
  }

  toggleCamera() {
    this.videoMuted = !this.videoMuted;
    if (this.videoTrack) this.videoTrack.enabled = !this.videoMuted;
    this.camBtn.setAttribute('aria-pressed', String(this.videoMuted));
    this.camBtn.dataset.state = this.videoMuted ? 'off' : 'on';
    this.camBtn.textContent = this.videoMuted ? 'Camera on' : 'Camera off';
    this.selfTile.el.classList.toggle('no-video', this.videoMuted || !this.videoTrack);
    this.sendMute();
  }

  leave() {
    this.send({ leave: {} });
    this.end('You left the call', 'left');
  }

  end(text, reason, detail) {
    if (this.ended) return;
    this.ended = true;
    const conn = this.conn;
    clearInterval(this.guard);
    window.removeEventListener('resize', this.onResize);
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.iceTimer);
    this.disconnect(conn);
    conn?.settle('ended');
    this.worker?.terminate();
    this.stream?.getTracks().forEach((t) => t.stop());
    this.setStatus('ended', text);
    this.showRemoved(text, reason, detail);
    if (reason) this.removedEl.dataset.reason = reason;
  }
}

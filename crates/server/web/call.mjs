// In the call: signaling over the WebSocket of the join answer (proto/signal.proto), one
// RTCPeerConnection to the relay, E2EE on every sender and receiver (e2ee-worker.mjs), the tiles,
// the participant list, mute/camera toggles, leaving, and removal with its reason in words.
//
// E2EE pitfall (Chromium): a transform assigned later than the task that creates the sender or the
// receiver is silently ignored, and media then flows in clear. So: the worker is created and keyed
// before any transceiver; a sender's transform is set right after addTransceiver, with no await in
// between; a receiver's transform is set synchronously inside `ontrack`. A guard compares the
// encoder's framesEncoded with the worker's encrypt count and stops sending if they disagree.

export const REMOVAL_TEXT = {
  revoked: 'This link was revoked',
  blocked: 'You were removed',
  room_full: 'The call is full',
  idle: 'You were disconnected after a period of inactivity',
  drain: 'The server is restarting (drain)',
  kicked: 'You were removed',
  error: 'The call ended because of an error',
  left: 'You left the call',
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
};

const SIMULCAST = [
  { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'h', maxBitrate: 1500000 },
];

const hasScriptTransform = typeof RTCRtpScriptTransform !== 'undefined';
const hasLegacyStreams = typeof RTCRtpSender !== 'undefined' && 'createEncodedStreams' in RTCRtpSender.prototype;

export class Call {
  constructor({ root, h, join, link, key, stream, name }) {
    Object.assign(this, { root, h, join, link, key, stream, name });
    this.video = link.kind === 'video';
    this.participants = new Map(); // pid -> {info, tile, listItem, video, audio}
    this.queue = Promise.resolve();
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
    this.removedEl = h('div', { class: 'removed', hidden: true });
    this.selfTile = this.makeTile(this.self, this.name ? `${this.name} (you)` : 'You', true);
    if (this.stream && this.video) this.selfTile.video.srcObject = this.stream;
    this.tilesEl.append(this.selfTile.el);
    this.selfItem = h('li', {}, h('span', {}, `${this.name || 'You'} (you)`), h('span', { class: 'meta' }));
    this.listEl.append(this.selfItem);
    this.root.replaceChildren(h('section', { class: 'call', 'data-testid': 'call' },
      h('div', { class: 'call-head' },
        h('h1', {}, this.link.title || (this.video ? 'Video call' : 'Voice call')),
        this.statusEl, this.e2eeEl),
      this.tilesEl,
      h('aside', { class: 'side' }, h('h2', {}, 'In this call'), this.listEl),
      h('div', { class: 'controls' }, this.micBtn, this.camBtn, leave),
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
    const initial = (name || '?').trim().charAt(0).toUpperCase() || '?';
    const el = h('div', {
      class: `tile no-video${self ? ' self' : ''}`,
      'data-testid': self ? 'self-tile' : 'tile',
      'data-participant': pid,
    }, video, h('div', { class: 'avatar' }, h('span', {}, initial)), nameEl, flag, audio);
    if (self && this.video && this.stream?.getVideoTracks().length) el.classList.remove('no-video');
    return { el, video, audio, nameEl, flag, hasVideo: false };
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
    const p = { info, tile, item, videoTrack: null };
    this.participants.set(info.participant_id, p);
    this.tilesEl.append(tile.el);
    this.listEl.append(item);
    this.updateMute(p, info.audio_muted, info.video_muted);
  }

  removeParticipant(pid) {
    const p = this.participants.get(pid);
    if (!p) return;
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
    p.item.lastChild.textContent = [audioMuted ? 'muted' : '', this.video && videoMuted ? 'camera off' : ''].filter(Boolean).join(', ');
  }

  showRemoved(text, reason) {
    const { h } = this;
    // Rejoining makes sense after leaving or a transient end, not after a revocation or a refusal.
    const rejoin = ['left', 'idle', 'drain', 'error', 'disconnected'].includes(reason)
      ? h('button', { type: 'button', class: 'primary', 'data-testid': 'rejoin', onclick: () => location.reload() }, 'Rejoin')
      : null;
    this.removedEl.replaceChildren(h('div', { class: 'card' },
      h('h1', { 'data-testid': 'removed-reason' }, text),
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

    // 1. The worker, keyed, before any transceiver exists.
    this.worker = new Worker('/assets/e2ee-worker.mjs', { type: 'module', name: 'e2ee' });
    const ready = new Promise((resolve, reject) => {
      this.worker.addEventListener('error', (e) => reject(new Error(`E2EE worker failed: ${e.message || 'error'}`)), { once: true });
      this.worker.addEventListener('message', (e) => e.data.type === 'ready' && resolve(), { once: false });
    });
    this.worker.onmessage = (e) => this.onWorker(e.data);
    this.worker.postMessage({ type: 'key', key: this.key || null });
    await ready;

    // 2. The peer connection and our senders, each with its transform in the same task.
    const legacy = !hasScriptTransform;
    this.pc = new RTCPeerConnection({
      iceServers: (this.join.ice_servers || []).map((s) => ({ urls: s.urls })),
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
      ...(legacy ? { encodedInsertableStreams: true } : {}),
    });
    window.callrelay.pc = this.pc;
    this.pc.ontrack = (e) => this.onTrack(e);
    this.pc.onconnectionstatechange = () => this.onConnectionState();
    const audioTrack = this.stream?.getAudioTracks()[0] || null;
    const videoTrack = this.video ? this.stream?.getVideoTracks()[0] || null : null;
    this.audioTrack = audioTrack;
    this.videoTrack = videoTrack;
    const streams = this.stream ? [this.stream] : [];
    const ta = this.pc.addTransceiver(audioTrack || 'audio', { direction: 'sendonly', streams });
    this.attachSender(ta.sender, 'audio');
    if (this.video) {
      // Simulcast l/m/h (quarter, half, full size): the relay forwards to each subscriber the layer
      // its `video_preference` asks for. One sender transform sees the frames of every layer.
      const tv = this.pc.addTransceiver(videoTrack || 'video', { direction: 'sendonly', streams, sendEncodings: SIMULCAST });
      this.attachSender(tv.sender, 'video');
      this.preferVp8(tv);
    }
    this.senders = this.pc.getSenders();

    // 3. Offer, socket, join.
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    this.ws = new WebSocket(this.join.signal_url);
    this.ws.onopen = () => this.send({ join: { grant: this.join.grant, sdp: this.pc.localDescription.sdp } });
    this.ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      this.queue = this.queue.then(() => this.onSignal(msg)).catch((err) => console.warn('signal', err));
    };
    this.ws.onclose = () => {
      // After the messages still queued (a `removed{reason}` comes just before the close).
      this.queue = this.queue.then(() => {
        if (!this.ended) this.end(this.joined ? 'Disconnected from the call' : 'Could not reach the call', 'disconnected');
      });
    };
    this.ping = setInterval(() => this.send({ ping: { nonce: Date.now() } }), 20000);
    this.onResize = () => {
      clearTimeout(this.resizeTimer);
      this.resizeTimer = setTimeout(() => this.participants.forEach((p, pid) => p.videoTrack && this.preferVideo(pid)), 300);
    };
    window.addEventListener('resize', this.onResize);
    this.guard = setInterval(() => this.checkBypass(), 1000);
  }

  preferVp8(transceiver) {
    // The relay reads the clear VP8 header; keep VP8 first (and RTX, RED, FEC as they are).
    try {
      const caps = RTCRtpSender.getCapabilities('video');
      if (!caps || !transceiver.setCodecPreferences) return;
      const vp8 = caps.codecs.filter((c) => /vp8/i.test(c.mimeType));
      const rest = caps.codecs.filter((c) => /rtx|red|ulpfec|flexfec/i.test(c.mimeType));
      if (vp8.length) transceiver.setCodecPreferences([...vp8, ...rest]);
    } catch {
      /* keep the browser's order */
    }
  }

  attachSender(sender, kind) {
    if (hasScriptTransform) {
      sender.transform = new RTCRtpScriptTransform(this.worker, { op: 'encrypt', kind });
    } else {
      const { readable, writable } = sender.createEncodedStreams();
      this.worker.postMessage({ type: 'stream', readable, writable, op: 'encrypt', kind }, [readable, writable]);
    }
  }

  attachReceiver(receiver, kind) {
    if (this.receivers.has(receiver)) return;
    this.receivers.add(receiver);
    if (hasScriptTransform) {
      receiver.transform = new RTCRtpScriptTransform(this.worker, { op: 'decrypt', kind });
    } else {
      const { readable, writable } = receiver.createEncodedStreams();
      this.worker.postMessage({ type: 'stream', readable, writable, op: 'decrypt', kind }, [readable, writable]);
    }
  }

  onTrack(e) {
    // Synchronously, first thing: the receiver's transform (see the pitfall above).
    this.attachReceiver(e.receiver, e.track.kind);
    const pid = e.streams[0]?.id;
    if (!pid) return;
    if (!this.participants.has(pid)) this.addParticipant({ participant_id: pid, name: '', user_id: '' });
    const p = this.participants.get(pid);
    if (e.track.kind === 'video') {
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
    if (!this.pc || this.ended || !this.workerStats) return;
    let encoded = 0;
    let audioPackets = 0;
    const stats = await this.pc.getStats();
    stats.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      if (s.kind === 'video') encoded += s.framesEncoded || 0;
      if (s.kind === 'audio') audioPackets += s.packetsSent || 0;
    });
    // A transform that never ran while the encoder produced frames means media left in clear.
    if ((encoded > 10 || audioPackets > 50) && this.workerStats.encrypted === 0) {
      this.setE2ee('failed', 'The browser bypassed the encryption transform; sending stopped.');
      for (const s of this.senders || []) s.replaceTrack(null).catch(() => {});
      clearInterval(this.guard);
    }
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  async onSignal(msg) {
    const [type, body] = Object.entries(msg)[0] || [];
    switch (type) {
      case 'joined': {
        this.joined = true;
        this.self = body.participant_id || this.self;
        this.selfTile.el.dataset.participant = this.self;
        for (const p of body.participants || []) this.addParticipant(p);
        await this.pc.setRemoteDescription({ type: 'answer', sdp: body.sdp });
        this.setStatus('joined', 'In the call');
        if (this.audioMuted || this.videoMuted) this.sendMute();
        break;
      }
      case 'offer': {
        await this.pc.setRemoteDescription({ type: 'offer', sdp: body.sdp });
        const answer = await this.pc.createAnswer();
        await this.pc.setLocalDescription(answer);
        this.send({ answer: { sdp: this.pc.localDescription.sdp } });
        break;
      }
      case 'answer':
        await this.pc.setRemoteDescription({ type: 'answer', sdp: body.sdp });
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
      case 'mute_changed': {
        const p = this.participants.get(body.participant_id);
        if (p) this.updateMute(p, body.audio_muted, body.video_muted);
        break;
      }
      case 'removed':
        this.end(REMOVAL_TEXT[body.reason] || 'You were removed', body.reason);
        break;
      case 'error':
        if (!this.joined || ['link_revoked', 'link_expired', 'join_refused', 'room_full'].includes(body.code)) {
          this.end(ERROR_TEXT[body.code] || 'The call could not be joined', body.code);
        } else {
          console.warn('signal error', body.code);
        }
        break;
      default:
    }
  }

  onConnectionState() {
    const s = this.pc.connectionState;
    if (s === 'connected') this.setStatus('connected', 'In the call');
    else if (s === 'failed') this.setStatus('failed', 'Media connection failed');
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

  end(text, reason) {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.ping);
    clearInterval(this.guard);
    window.removeEventListener('resize', this.onResize);
    try {
      this.ws?.close();
    } catch {
      /* closed already */
    }
    this.pc?.close();
    this.worker?.terminate();
    this.stream?.getTracks().forEach((t) => t.stop());
    this.setStatus('ended', text);
    this.showRemoved(text, reason);
    if (reason) this.removedEl.dataset.reason = reason;
  }
}

// The callrelay page: create a link (/), preview and join it (/video/{id}, /voice/{id}), the call
// log (/calls). Plain modules, no build step. The call itself is call.mjs.
//
// Who you are: signed in with the relay's OpenID provider (an HttpOnly session cookie, shared by
// every tab; state changes send the session's CSRF token), or in --dev a typed name, or a token an
// app put in sessionStorage (this tab only).
//
// Secrets: a user token lives in sessionStorage (this tab only); a link's E2EE key lives in the
// URL fragment and, so the call log can rejoin, in localStorage under `callrelay.key.<id>`. Neither
// the key nor the fragment is ever sent to the server.
import { qrSvg } from './qr.mjs';
import { generateLinkKey, encodeKey, decodeKey, keyFromFragment } from './e2ee.mjs';
import { Call, REMOVAL_TEXT, ERROR_TEXT, devicePicker } from './call.mjs';

const app = document.getElementById('app');

// ---------------------------------------------------------------------------------------------
// Small helpers

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(...nodes) {
  app.replaceChildren(...nodes);
}

async function api(method, path, { body, token, timeoutMs } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  // Signed in by cookie: every state change carries the session's CSRF token.
  else if (cookieSession && method !== 'GET') headers['x-csrf-token'] = cookieSession.csrf_token;
  let res;
  try {
    const signal = timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined;
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch {
    return { ok: false, status: 0, data: { code: 'network' } };
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = {};
  }
  return { ok: res.ok, status: res.status, data: data || {} };
}

const fmt = (t) =>
  t ? new Date(t).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : '';

// "Scheduled for 2 Mar 2026, 09:30 (45 min)".
const scheduleText = (l) =>
  `Scheduled for ${fmt(l.scheduled_at)}${l.duration ? ` (${Math.round(l.duration / 60)} min)` : ''}`;

// A time as a datetime-local input's value, in the browser's zone.
function localInput(t) {
  const d = new Date(t);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

// The scheduled call as an iCalendar file (the URL in it has no key).
const calendarLink = (l) => h('a', { class: 'button', href: `/v1/links/${l.id}/calendar.ics`, download: 'call.ics', 'data-testid': 'calendar' }, 'Add to calendar');

const KEY_PREFIX = 'callrelay.key.';
function rememberKey(id, keyText) {
  try {
    localStorage.setItem(KEY_PREFIX + id, keyText);
  } catch {
    /* storage may be off: the fragment still works */
  }
}
function rememberedKey(id) {
  try {
    return localStorage.getItem(KEY_PREFIX + id);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Who the user is: a token in sessionStorage; in dev mode the relay issues one for a typed name.

let pageConfigPromise = null;
function pageConfig() {
  pageConfigPromise ??= api('GET', '/v1/dev/config').then((r) => (r.ok ? r.data : {}));
  return pageConfigPromise;
}
function devMode() {
  return pageConfig().then((c) => c.dev === true);
}

// "90 days", "36 hours", "10 minutes": a link's lifetime after its last use, in words.
export function lifetime(seconds) {
  const units = [['day', 86400], ['hour', 3600], ['minute', 60], ['second', 1]];
  for (const [name, size] of units) {
    if (seconds >= size && seconds % size === 0) {
      const n = seconds / size;
      return `${n} ${name}${n === 1 ? '' : 's'}`;
    }
  }
  return `${seconds} seconds`;
}

// The cookie session (GET /auth/session), when this relay has sign-in and the browser is signed in.
let cookieSession = null;
let signedInPromise = null;
function signedIn() {
  signedInPromise ??= pageConfig().then(async (c) => {
    if (!c.sign_in) return null;
    const r = await api('GET', '/auth/session');
    cookieSession = r.ok ? r.data : null;
    return cookieSession;
  });
  return signedInPromise;
}
function signInHref() {
  return `/auth/login?return_to=${encodeURIComponent(location.pathname)}`;
}
async function signOut() {
  await api('POST', '/auth/logout');
  cookieSession = null;
  location.assign('/');
}
/** The header's corner: who is signed in and "Sign out", or "Sign in". */
async function renderWho() {
  const who = document.getElementById('who');
  if (!who || !(await pageConfig()).sign_in) return;
  const s = await signedIn();
  who.replaceChildren(...(s
    ? [h('span', { class: 'who', 'data-testid': 'whoami', title: s.user }, s.name || s.user),
      h('button', { type: 'button', class: 'link', 'data-testid': 'sign-out', onclick: signOut }, 'Sign out')]
    : [h('a', { href: signInHref(), 'data-testid': 'sign-in' }, 'Sign in')]));
}
const SIGN_IN_ERRORS = {
  denied: 'Sign-in was cancelled or refused by the provider.',
  expired: 'That sign-in took too long or was already used. Sign in again.',
  failed: 'Sign-in failed. Try again; if it keeps failing, tell the operator of this relay.',
  unavailable: 'The sign-in provider could not be reached. Try again in a moment.',
};

const session = {
  get token() {
    return sessionStorage.getItem('callrelay.token');
  },
  get name() {
    return sessionStorage.getItem('callrelay.name') || '';
  },
};

function userIdFor(name) {
  let user = sessionStorage.getItem('callrelay.user');
  if (!user) {
    const slug = name.toLowerCase().normalize('NFKD').replace(/[^a-z0-9._@+-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'guest';
    const rnd = Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, '0')).join('');
    user = `${slug}-${rnd}`;
    sessionStorage.setItem('callrelay.user', user);
  }
  return user;
}

/** A token for `name` (dev mode) or the stored one; throws Error with a message to show. */
async function ensureToken(name) {
  name = (name || '').trim();
  if (await devMode()) {
    if (!name) throw new Error('Type your name first.');
    if (session.token && session.name === name) return session.token;
    const r = await api('POST', '/v1/dev/token', { body: { user: userIdFor(name), name } });
    if (!r.ok) throw new Error(r.data.detail || 'Could not get a token from the relay.');
    sessionStorage.setItem('callrelay.token', r.data.token);
    sessionStorage.setItem('callrelay.name', name);
    return r.data.token;
  }
  if (session.token) return session.token;
  if (await signedIn()) return null; // the session cookie
  if ((await pageConfig()).sign_in) throw new Error('Sign in first (top right).');
  throw new Error('Sign in first: this relay needs a user token (set sessionStorage "callrelay.token").');
}

async function nameField() {
  if (!(await devMode())) return null;
  return h('div', {},
    h('label', { for: 'name' }, 'Your name'),
    h('input', { id: 'name', type: 'text', 'data-testid': 'name', maxlength: 64, autocomplete: 'name', value: session.name, placeholder: 'Shown to the others in the call' }));
}

// ---------------------------------------------------------------------------------------------
// Pages

async function createPage() {
  document.title = 'New call link · callrelay';
  const error = h('p', { class: 'error', role: 'alert' });
  const result = h('div', { hidden: true });
  const name = await nameField();
  const form = h('form', { class: 'create-form' },
    h('fieldset', {},
      h('legend', { class: 'meta' }, 'Kind of call'),
      h('div', { class: 'kinds' },
        h('label', {}, h('input', { type: 'radio', name: 'kind', value: 'video', checked: true }), 'Video'),
        h('label', {}, h('input', { type: 'radio', name: 'kind', value: 'voice' }), 'Voice'))),
    h('label', { for: 'title' }, 'Title (optional)'),
    h('input', { id: 'title', name: 'title', type: 'text', maxlength: 100, placeholder: 'Standup' }),
    h('label', { for: 'when' }, 'Scheduled for (optional)'),
    h('input', { id: 'when', name: 'when', type: 'datetime-local' }),
    h('label', { for: 'length' }, 'Length in minutes (optional, with a time)'),
    h('input', { id: 'length', name: 'length', type: 'number', min: 1, max: 1440, placeholder: '30' }),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'approval', 'data-testid': 'require-approval' }),
      'Ask me before people join (a lobby: I let each one in from the call)'),
    name,
    h('div', { class: 'row' }, h('button', { class: 'primary', type: 'submit', 'data-testid': 'create' }, 'Create link')),
    error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const btn = form.querySelector('[data-testid=create]');
    btn.disabled = true;
    try {
      const token = await ensureToken(name?.querySelector('input').value);
      const body = { kind: form.kind.value };
      const title = form.title.value.trim();
      if (title) body.title = title;
      if (form.when.value) body.scheduled_at = new Date(form.when.value).toISOString();
      if (form.approval.checked) body.require_approval = true;
      if (form.when.value && form.length.value) body.duration = Math.round(Number(form.length.value) * 60);
      const r = await api('POST', '/v1/links', { body, token });
      if (!r.ok) throw new Error(r.data.detail || r.data.title || `The relay refused (${r.status}).`);
      showCreated(result, r.data);
    } catch (err) {
      error.textContent = err.message;
    } finally {
      btn.disabled = false;
    }
  });
  show(h('section', { class: 'card' }, h('h1', {}, 'New call link'), form, result));
}

function showCreated(box, link) {
  const keyText = encodeKey(generateLinkKey());
  rememberKey(link.id, keyText);
  const url = `${link.url}#k=${keyText}`;
  const status = h('span', { class: 'note', role: 'status' });
  const copy = h('button', { type: 'button', 'data-testid': 'copy-link', onclick: async () => {
    try {
      await navigator.clipboard.writeText(url);
      status.textContent = 'Copied.';
    } catch {
      const sel = getSelection();
      sel.selectAllChildren(box.querySelector('.share-url'));
      status.textContent = 'Press Ctrl+C to copy.';
    }
  } }, 'Copy');
  const share = navigator.share
    ? h('button', { type: 'button', 'data-testid': 'share', onclick: () => navigator.share({ title: link.title || 'Call link', url }).catch(() => {}) }, 'Share')
    : null;
  const qr = h('div', { class: 'qr', 'data-testid': 'qr' });
  qr.innerHTML = qrSvg(url); // our own SVG markup: no user text inside
  box.replaceChildren(
    h('h2', {}, `${link.kind === 'voice' ? 'Voice' : 'Video'} call link created`),
    link.title ? h('p', { class: 'meta' }, link.title) : null,
    link.scheduled_at ? h('p', { class: 'meta', 'data-testid': 'scheduled' }, scheduleText(link)) : null,
    h('code', { class: 'share-url', 'data-testid': 'share-url' }, url),
    h('p', { class: 'note' }, 'Anyone with this link can join. The part after # is the end-to-end encryption key: it never reaches the server.'),
    h('div', { class: 'row' }, copy, share, h('a', { class: 'button primary', href: url, 'data-testid': 'open-link' }, 'Join now'), status),
    qr,
    link.scheduled_at ? h('div', { class: 'row' }, calendarLink(link),
      h('span', { class: 'note' }, 'The calendar entry has the link without its key: send the link too.')) : null);
  box.hidden = false;
}

async function gonePage(code) {
  const ttl = code === 'link_expired' ? (await pageConfig()).link_ttl_seconds : undefined;
  const text = {
    link_not_found: ['This call link doesn\'t exist', 'Check that the whole link was copied.'],
    link_expired: ['This call link has expired', ttl > 0
      ? `Links on this relay expire ${lifetime(ttl)} after their last use. Ask for a new one.`
      : 'Links expire some time after their last use. Ask for a new one.'],
    link_revoked: ['This link was revoked', 'The operator of this relay revoked it. Ask for a new one.'],
    join_refused: ['You can\'t join this call', ''],
    room_full: ['The call is full', 'Try again later.'],
    invalid_link_id: ['This isn\'t a call link', 'A call link ends with 22 letters and digits.'],
  }[code] || ['Something went wrong', 'Try again in a moment.'];
  document.title = `${text[0]} · callrelay`;
  show(h('section', { class: 'card gone', 'data-testid': 'gone', 'data-code': code },
    h('h1', { 'data-testid': 'call-status' }, text[0]),
    text[1] ? h('p', {}, text[1]) : null,
    h('p', {}, h('a', { class: 'button', href: '/' }, 'Create a new call link'))));
}

async function previewPage(kindInPath, id) {
  // The key: from the fragment (remembered for the call log), else remembered from before.
  let key = keyFromFragment(location.hash);
  if (key) {
    rememberKey(id, encodeKey(key));
  } else {
    const kept = rememberedKey(id);
    key = decodeKey(kept);
    if (key) history.replaceState(null, '', `${location.pathname}#k=${kept}`);
  }
  const r = await api('GET', `/v1/links/${id}`);
  if (!r.ok) return gonePage(r.data.code || (r.status === 404 ? 'link_not_found' : 'error'));
  const link = r.data;
  if (link.kind !== kindInPath) history.replaceState(null, '', `/${link.kind}/${id}${location.hash}`);
  document.title = `${link.title || (link.kind === 'voice' ? 'Voice call' : 'Video call')} · callrelay`;
  const video = link.kind === 'video';

  const error = h('p', { class: 'error', role: 'alert' });
  const preview = video ? h('video', { class: 'preview-video', autoplay: true, muted: true, playsinline: true }) : null;
  const micState = h('p', { class: 'note' });
  const devices = h('div', { class: 'devices-before' });
  const name = await nameField();
  const join = h('button', { class: 'primary', type: 'button', 'data-testid': 'join' }, 'Join');
  const n = link.participants;
  const card = h('section', { class: 'card', 'data-testid': 'preview' },
    h('p', { class: 'meta', 'data-testid': 'kind' }, video ? 'Video call' : 'Voice call'),
    h('h1', { 'data-testid': 'title' }, link.title || (video ? 'Video call' : 'Voice call')),
    link.scheduled_at ? h('p', { class: 'meta', 'data-testid': 'scheduled' }, scheduleText(link), ' ', calendarLink(link)) : null,
    link.require_approval ? h('p', { class: 'note', 'data-testid': 'lobby-note' }, 'The host lets each person in: you will wait until they do.') : null,
    h('p', { class: 'meta', 'data-testid': 'in-call' }, n === 0 ? 'Nobody is in the call yet' : n === 1 ? '1 person is in the call' : `${n} people are in the call`),
    h('p', { class: 'meta' }, `Link valid until ${fmt(link.expires_at)} (renewed by each join)`),
    key
      ? h('p', { class: 'note' }, h('span', { class: 'badge', 'data-state': 'on' }, 'End-to-end encrypted'), ' The key is in the link; the relay never sees it.')
      : h('p', { class: 'note' }, h('span', { class: 'badge', 'data-state': 'missing-key' }, 'No key'), ' This link has no encryption key (#k=…): you will not see or hear the others.'),
    preview, micState, devices, name,
    h('div', { class: 'row' }, join),
    error);
  show(card);

  let stream = null;
  let sinkId;
  // Before joining: pick the microphone, camera and speaker (the call starts with them).
  const pick = async (kind, deviceId) => {
    if (kind === 'audiooutput') {
      sinkId = deviceId;
      return;
    }
    const audio = kind === 'audioinput';
    try {
      const s = await navigator.mediaDevices.getUserMedia(audio
        ? { audio: { deviceId: { exact: deviceId } } }
        : { video: { deviceId: { exact: deviceId }, width: { ideal: 960 }, height: { ideal: 540 } } });
      const [track] = audio ? s.getAudioTracks() : s.getVideoTracks();
      for (const old of audio ? stream.getAudioTracks() : stream.getVideoTracks()) {
        stream.removeTrack(old);
        old.stop();
      }
      stream.addTrack(track);
      if (preview && !audio) preview.srcObject = new MediaStream(stream.getVideoTracks());
    } catch (e) {
      micState.textContent = `Could not switch the ${audio ? 'microphone' : 'camera'} (${e.name}).`;
    }
  };
  const media = navigator.mediaDevices
    ? navigator.mediaDevices.getUserMedia({ audio: true, video: video ? { width: { ideal: 960 }, height: { ideal: 540 } } : false })
      .then(async (s) => {
        stream = s;
        if (preview) preview.srcObject = s;
        micState.textContent = video ? 'Camera and microphone ready.' : 'Microphone ready.';
        const current = {
          audioinput: s.getAudioTracks()[0]?.getSettings().deviceId,
          videoinput: s.getVideoTracks()[0]?.getSettings().deviceId,
        };
        devices.replaceChildren(await devicePicker(h, { video, current, onPick: pick }));
      })
      .catch((e) => {
        micState.textContent = `No ${video ? 'camera or ' : ''}microphone (${e.name}): you can still join to listen.`;
      })
    : Promise.resolve();

  join.addEventListener('click', async () => {
    error.textContent = '';
    join.disabled = true;
    try {
      const token = await ensureToken(name?.querySelector('input').value);
      await media;
      const r = await api('POST', `/v1/links/${id}/join`, { token });
      if (!r.ok) {
        if (['link_not_found', 'link_expired', 'link_revoked', 'join_refused', 'room_full'].includes(r.data.code)) {
          stream?.getTracks().forEach((t) => t.stop());
          return gonePage(r.data.code);
        }
        throw new Error(r.data.detail || r.data.title || `The relay refused (${r.status}).`);
      }
      const rejoin = () => joinAgain(id);
      const moderate = (action, pid) => api('POST', `/v1/links/${id}/participants/${pid}/${action}`, { token: session.token });
      const shareUrl = key ? `${link.url}#k=${encodeKey(key)}` : link.url;
      const call = new Call({ root: app, h, join: r.data, rejoin, link, key, stream, name: session.name || cookieSession?.name || '', moderate, shareUrl, sinkId });
      await call.start();
    } catch (err) {
      error.textContent = err.message;
      join.disabled = false;
    }
  });
}

/**
 * Another join of link `id` for the call's rejoin (call.mjs), on this page's origin whichever node
 * served it. A dev relay that restarted signs with a new secret: there the page asks it for a new
 * token once.
 */
async function joinAgain(id) {
  const timeoutMs = 5000; // a node that hangs counts as a failed attempt
  const r = await api('POST', `/v1/links/${id}/join`, { token: session.token, timeoutMs });
  if (r.status !== 401 || !(await devMode()) || !session.name) return r;
  sessionStorage.removeItem('callrelay.token');
  try {
    const token = await ensureToken(session.name);
    return await api('POST', `/v1/links/${id}/join`, { token, timeoutMs });
  } catch {
    return r;
  }
}

async function callLogPage() {
  document.title = 'Call log · callrelay';
  const list = h('ul', { class: 'log', 'data-testid': 'call-log' });
  const error = h('p', { class: 'error', role: 'alert' });
  const section = h('section', { class: 'card' }, h('h1', {}, 'Call log'), list, error);
  show(section);
  const token = session.token;
  if (!token && !(await signedIn())) {
    const name = await nameField();
    if (!name) {
      if ((await pageConfig()).sign_in) {
        section.insertBefore(h('p', { 'data-testid': 'sign-in-needed' }, 'Sign in to see the calls you created and joined. ',
          h('a', { class: 'button primary', href: signInHref() }, 'Sign in')), error);
      } else {
        error.textContent = 'Sign in first: this relay needs a user token.';
      }
      return;
    }
    const go = h('button', { class: 'primary', type: 'button', onclick: async () => {
      try {
        await ensureToken(name.querySelector('input').value);
        callLogPage();
      } catch (err) {
        error.textContent = err.message;
      }
    } }, 'Show my calls');
    section.insertBefore(h('div', {}, name, h('div', { class: 'row' }, go)), error);
    return;
  }
  const r = await api('GET', '/v1/me/links', { token });
  if (!r.ok) {
    error.textContent = r.status === 401
      ? (cookieSession ? 'Your sign-in expired: sign in again.' : 'Your session expired: open a call link or create one again.')
      : 'Could not load the call log.';
    return;
  }
  if (r.data.links.length === 0) {
    list.replaceWith(h('p', { class: 'meta', 'data-testid': 'call-log-empty' }, 'No calls yet.'));
    return;
  }
  for (const item of r.data.links) {
    const l = item.link;
    const kept = rememberedKey(l.id);
    const href = kept ? `${l.url}#k=${kept}` : l.url;
    const gone = l.revoked_at ? 'Revoked' : new Date(l.expires_at) < new Date() ? 'Expired' : null;
    const editable = item.role === 'creator' && !gone;
    list.append(h('li', { 'data-testid': 'call-log-item', 'data-kind': l.kind },
      h('div', { class: 'what' },
        h('div', { class: 'title' }, l.title || (l.kind === 'voice' ? 'Voice call' : 'Video call')),
        l.scheduled_at ? h('div', { class: 'meta', 'data-testid': 'scheduled' }, scheduleText(l)) : null,
        h('div', { class: 'meta' }, `${l.kind === 'voice' ? 'Voice' : 'Video'} · ${item.role === 'creator' ? 'created by you' : 'joined'} · last used ${fmt(item.last_joined_at || l.last_used_at)}`),
        h('div', { class: 'meta' }, gone || `expires ${fmt(l.expires_at)}`),
        kept ? null : h('div', { class: 'note' }, 'The key of this link is not stored in this browser.'),
        editable ? editForm(l, token) : null),
      gone ? null : h('a', { class: 'button primary', href, 'data-testid': 'join' }, 'Join')));
  }
}

// The creator's "Edit" of a link in the call log: title, time and length (PATCH /v1/links/{id}).
function editForm(l, token) {
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'edit-form', hidden: true },
    h('label', {}, 'Title', h('input', { name: 'title', type: 'text', maxlength: 100, value: l.title || '' })),
    h('label', {}, 'Scheduled for', h('input', { name: 'when', type: 'datetime-local', value: l.scheduled_at ? localInput(l.scheduled_at) : '', 'data-testid': 'edit-when' })),
    h('label', {}, 'Length in minutes', h('input', { name: 'length', type: 'number', min: 1, max: 1440, value: l.duration ? Math.round(l.duration / 60) : '' })),
    h('div', { class: 'row' }, h('button', { class: 'primary', type: 'submit', 'data-testid': 'edit-save' }, 'Save')),
    error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const when = form.when.value ? new Date(form.when.value).toISOString() : null;
    const body = {
      title: form.title.value.trim() || null,
      scheduled_at: when,
      duration: when && form.length.value ? Math.round(Number(form.length.value) * 60) : null,
    };
    const r = await api('PATCH', `/v1/links/${l.id}`, { body, token });
    if (!r.ok) {
      error.textContent = r.data.detail || r.data.title || `The relay refused (${r.status}).`;
      return;
    }
    callLogPage();
  });
  const toggle = h('button', { type: 'button', class: 'link', 'data-testid': 'edit', onclick: () => { form.hidden = !form.hidden; } }, 'Edit');
  return h('div', {}, toggle, form);
}

// ---------------------------------------------------------------------------------------------

async function route() {
  renderWho();
  const path = location.pathname;
  const failed = new URLSearchParams(location.search).get('sign_in_error');
  if (failed) {
    history.replaceState(null, '', `${path}${location.hash}`);
    await createPage();
    app.prepend(h('p', { class: 'error card', role: 'alert', 'data-testid': 'sign-in-error', 'data-code': failed },
      SIGN_IN_ERRORS[failed] || SIGN_IN_ERRORS.failed));
    return;
  }
  const m = path.match(/^\/(video|voice)\/([^/]+)$/);
  if (m) {
    if (!/^[0-9A-Za-z]{22}$/.test(m[2])) return gonePage('invalid_link_id');
    return previewPage(m[1], m[2]);
  }
  if (path === '/calls') return callLogPage();
  return createPage();
}

window.callrelay = { pc: null, call: null };
route().catch((err) => show(h('section', { class: 'card gone' }, h('h1', {}, 'Something went wrong'), h('p', {}, String(err.message || err)))));
export { REMOVAL_TEXT, ERROR_TEXT };

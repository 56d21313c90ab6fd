// Entry point of the browser client: signs in (token in localStorage), then wires the REST
// client, the resuming socket, the store and the views together, and routes #/r/<room id>
// to the open room. On narrow screens the room list and the open room are separate panes.
// A hidden tab tells the server this connection is away (and online again when it is shown).
//
// A session ends when the user logs out (here, or everywhere from any device), or when the
// server refuses the token: a 401 from REST, or the socket closed with 4003 (signed out
// elsewhere, or the token expired). Either way the token and every bit of state go, and the
// sign-in screen says why. Anything else (a 503, the network gone) keeps the session.

import { $ } from './dom.js';
import { createApi } from './api.js';
import { Socket } from './socket.js';
import { Store } from './store.js';
import { mountAuth } from './views/auth.js';
import { Sidebar } from './views/sidebar.js';
import { TimelineView } from './views/timeline.js';
import { RoomView } from './views/room.js';
import { createActions } from './views/actions.js';
import { confirmDialog } from './views/dialogs.js';
import { membersDialog } from './views/members.js';
import { reportsDialog } from './views/moderation.js';
import { hueClass, initial, errorText, isolate } from './format.js';

const TOKEN_KEY = 'switchboard.token';
const USER_KEY = 'switchboard.user';
const LAST_ROOM_KEY = 'switchboard.lastRoom';
const SESSION_ENDED = 'Your session ended. Sign in again.';
const SESSION_EXPIRED = 'Your session expired. Sign in again.';
const LOGGED_OUT_EVERYWHERE = 'You are logged out on all your devices.';
/** How long a room that went may take to come back before we say it went (see `removed`). */
const REMOVED_GRACE_MS = 1500;
/** How often "last seen 5 min ago" is brought up to date. */
const CLOCK_MS = 30000;
const wide = window.matchMedia('(min-width: 760px)');

let token = localStorage.getItem(TOKEN_KEY);
let session = null;
/** Set while we log out ourselves: the 401s and the 4003 that causes are not news. */
let leaving = false;

const api = createApi({ getToken: () => token, onUnauthorized: () => sessionEnded(SESSION_ENDED) });
const auth = mountAuth({ api, onAuthed: ({ user, token: t }) => signIn(user, t) });

function showScreen(name) {
  $('#auth').hidden = name !== 'auth';
  $('#chat').hidden = name !== 'chat';
  document.documentElement.dataset.screen = name;
}

function signIn(user, t) {
  token = t;
  localStorage.setItem(TOKEN_KEY, t);
  localStorage.setItem(USER_KEY, JSON.stringify(user));
  startChat(user);
}

/** The server refused our token: the session is over (unless we are ending it ourselves). */
function sessionEnded(message) {
  if (leaving) return;
  signOut(message);
}

function signOut(message) {
  // Another tab of this browser may have signed in again since, with a new token (after "Log
  // out everywhere", say): that one is not ours to forget.
  if (localStorage.getItem(TOKEN_KEY) === token) {
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(USER_KEY);
    localStorage.removeItem(LAST_ROOM_KEY);
  }
  token = null;
  if (session) {
    // Start from a clean page: no state of the old account survives.
    session.socket.stop();
    session = null;
    if (message) sessionStorage.setItem('switchboard.notice', message);
    location.replace('/');
    return;
  }
  showScreen('auth');
  auth.notice(message);
}

/**
 * Logs out: ends this session on the server (or, `everywhere`, all of the account's sessions,
 * whose sockets the server closes), then forgets it here. The socket stops first, so the
 * 4003 our own request causes is not taken for a session ended from elsewhere.
 */
async function logOut(everywhere) {
  if (!session || leaving) return;
  leaving = true;
  const { socket } = session;
  socket.stop();
  try {
    await (everywhere ? api.logoutEverywhere() : api.logout());
  } catch (err) {
    // Ended already (401): done. "Log out" forgets the token here even when the server could
    // not be told (it then lapses at its expiry); "Log out everywhere" that did not reach the
    // server did nothing, and must say so.
    if (everywhere && err.status !== 401) {
      leaving = false;
      socket.start();
      notify(`Could not log out everywhere. ${errorText(err)}`);
      return;
    }
  }
  signOut(everywhere ? LOGGED_OUT_EVERYWHERE : null);
}

function notify(text) {
  const el = $('#toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => (el.hidden = true), 5000);
}

function wsUrl() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/v1/ws`;
}

function startChat(me) {
  showScreen('chat');
  const socket = new Socket(wsUrl(), token);
  const store = new Store(api, socket, me);
  session = { socket, store };

  const timeline = new TimelineView(
    store,
    { scroller: $('#timeline'), list: $('#messages'), pending: $('#pending'), status: $('#history-status'), jump: $('#jump'), announcer: $('#announcer') },
    { confirm: (text, ok) => confirmDialog(text, ok, true), notify },
  );
  const navigate = (id) => {
    const target = id ? `#/r/${encodeURIComponent(id)}` : '#/';
    if (location.hash !== target) location.hash = target;
    else route();
  };
  const actions = createActions({ store, api, navigate, notify });
  const roomView = new RoomView(store, timeline, {
    onInvite: actions.invite,
    onLeave: actions.leave,
    onBlock: actions.setBlocked,
    onMembers: (r) => membersDialog(store, r, notify),
    onReports: (r) => reportsDialog(store, r, notify),
  });
  const sidebar = new Sidebar(
    store,
    {
      rooms: $('#room-list'),
      dms: $('#dm-list'),
      roomsEmpty: $('#rooms-empty'),
      dmsEmpty: $('#dms-empty'),
      invites: $('#invite-list'),
      invitesSection: $('#invites-section'),
    },
    { accept: actions.acceptInvite, decline: actions.declineInvite },
  );
  store.addEventListener('invited', (e) => {
    const { room, inviter } = e.detail.invite;
    notify(`${inviter.username} invited you to ${isolate(room.name || 'a room')}.`);
  });

  // Who am I.
  $('#me-name').textContent = me.username;
  const avatar = $('#me-avatar');
  avatar.textContent = initial(me.username);
  avatar.classList.add(hueClass(me.id));
  $('#logout-button').addEventListener('click', () => logOut(false));
  $('#logout-all-button').addEventListener('click', () => logOut(true));
  $('#settings-button').addEventListener('click', () => actions.settings());
  for (const [sel, fn] of [
    ['#new-room-button', actions.newRoom],
    ['#new-dm-button', actions.newDirect],
    ['#browse-button', actions.browse],
    ['#empty-new-room', actions.newRoom],
    ['#empty-browse', actions.browse],
  ]) {
    $(sel).addEventListener('click', () => fn());
  }
  $('#back-button').addEventListener('click', () => navigate(null));

  // Connection state: a banner while the socket is away.
  const banner = $('#conn-banner');
  const bannerText = $('#conn-text');
  let bannerTimer = 0;
  const paintConnection = (state) => {
    document.documentElement.dataset.connection = state;
    clearTimeout(bannerTimer);
    if (state === 'online') {
      banner.hidden = true;
      return;
    }
    const showIt = () => {
      if (state === 'connecting') bannerText.textContent = 'Connecting…';
      else if (state === 'limited') bannerText.textContent = 'Your account has too many open connections. Close a tab or another device; trying again in about 30 s…';
      else if (navigator.onLine) bannerText.textContent = 'Reconnecting…';
      else bannerText.textContent = 'You are offline. Reconnecting when the network is back…';
      banner.hidden = false;
    };
    // Don't flash "connecting" for a connection that is about to succeed.
    if (state === 'connecting') bannerTimer = setTimeout(showIt, 800);
    else showIt();
  };
  store.addEventListener('connection', (e) => paintConnection(e.detail.state));
  $('#conn-retry').addEventListener('click', () => socket.reconnectNow());
  paintConnection(socket.state);

  // Presence: this connection is away while the tab is hidden, online when it is shown again.
  // A new connection starts online, so one made while hidden says away at once.
  const hidden = () => document.visibilityState === 'hidden';
  document.addEventListener('visibilitychange', () => {
    if (session && session.store === store) store.setOwnStatus(hidden() ? 'away' : 'online');
  });
  store.addEventListener('ready', () => hidden() && store.setOwnStatus('away'));
  // "last seen 5 min ago" grows older by itself.
  setInterval(() => {
    if (session?.store !== store) return;
    sidebar.paintPresence();
    if (roomView.room) roomView.renderHeader();
  }, CLOCK_MS);

  // Unread total in the tab title.
  const paintTitle = () => {
    const n = store.totalUnread();
    document.title = n > 0 ? `(${n}) Switchboard` : 'Switchboard';
  };
  store.addEventListener('room', paintTitle);
  store.addEventListener('rooms', paintTitle);

  // Routing: #/r/<room id> opens a room; anything else shows the list (and, when wide, a hint).
  let wanted = null;
  const route = () => {
    const m = /^#\/r\/(.+)$/.exec(location.hash);
    wanted = m ? decodeHash(m[1]) : null;
    const r = wanted ? store.rooms.get(wanted) : null;
    if (wanted && !r) {
      // Not known (yet): wait for `ready`, or say so if we have it and it is not ours.
      if (store.ready) {
        notify('That room is not in your list.');
        navigate(null);
      }
      return;
    }
    openRoom(r);
  };
  const openRoom = (r) => {
    if (roomView.room === r) return;
    sidebar.setActive(r ? r.id : null);
    // Show the pane first, so the list is laid out (and scrolled) at its real size.
    $('#chat').classList.toggle('room-open', !!r);
    $('#room-pane').hidden = !r;
    $('#empty-pane').hidden = !!r;
    roomView.open(r);
    if (r) {
      localStorage.setItem(LAST_ROOM_KEY, r.id);
      if (wide.matches) roomView.focusComposer();
    }
  };
  window.addEventListener('hashchange', route);
  store.addEventListener('ready', () => {
    const first = !store.ready;
    store.ready = true;
    if (first && !location.hash.startsWith('#/r/') && wide.matches) {
      const last = localStorage.getItem(LAST_ROOM_KEY);
      if (last && store.rooms.has(last)) {
        history.replaceState(null, '', `#/r/${encodeURIComponent(last)}`);
      }
    }
    route();
  });
  store.addEventListener('removed', (e) => {
    const { room, title, why } = e.detail;
    const isOpen = () => roomView.room && roomView.room.id === room;
    if (why === 'left') {
      if (isOpen()) navigate(null);
      return;
    }
    // A resume that spans a removal and a re-add replays both: say nothing if it comes back.
    setTimeout(() => {
      if (store.rooms.has(room)) {
        if (isOpen()) route();
        return;
      }
      if (why === 'removed') notify(`You were removed from ${isolate(title)}.`);
      else if (isOpen()) notify(`You are no longer in ${isolate(title)}.`);
      if (isOpen()) navigate(null);
    }, REMOVED_GRACE_MS);
  });
  socket.addEventListener('auth', (e) => sessionEnded(e.detail.reason === 'token expired' ? SESSION_EXPIRED : SESSION_ENDED));

  $('#room-pane').hidden = true;
  $('#empty-pane').hidden = false;
  sidebar.render();
  socket.start();
}

async function boot() {
  const notice = sessionStorage.getItem('switchboard.notice');
  sessionStorage.removeItem('switchboard.notice');
  if (!token) {
    showScreen('auth');
    auth.notice(notice);
    return;
  }
  let cached = null;
  try {
    cached = JSON.parse(localStorage.getItem(USER_KEY) || 'null');
  } catch {
    cached = null;
  }
  try {
    startChat(await api.me());
  } catch (err) {
    // Only a refused token ends the session (onUnauthorized has signed out already; this is in
    // case it could not, the token having changed meanwhile). Offline, or a server restarting
    // or busy (503): carry on with the account we know, and the socket keeps trying; without
    // one, offer to try again.
    if (err.status === 401) {
      if (token) sessionEnded(SESSION_ENDED);
    } else if (cached) startChat(cached);
    else {
      showScreen('auth');
      auth.show(errorText(err), boot);
    }
  }
}

/** A hash part as text; a malformed escape is no room at all rather than an exception. */
function decodeHash(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

boot();

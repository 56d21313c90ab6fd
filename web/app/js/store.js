// The client's state: the signed-in user's rooms, the part of each room's timeline loaded so
// far, pending sends, typing and read state, and a cache of usernames. It is the only place
// that applies server frames and REST answers, so the views just render what it reports.
//
// Each room's `msgs` holds a contiguous run of its timeline, newest included: the newest page
// fetched when the room is first opened, older pages prepended as the user scrolls back, and
// every live event after that (the socket resumes with `since`, so none are missed). A `gap`
// breaks the run; the room is then reloaded from its newest page.
//
// Events (CustomEvent.detail):
//   rooms      {}                       rooms added or removed (or renamed)
//   room       {room}                   one room's unread count, read marker or name changed
//   timeline   {room, type, msgs?, replaced?}  type: loaded | reset | older | insert | update
//   pending    {room, item, type}       an optimistic send: add | update | remove
//   typing     {room}                   who is typing changed
//   members    {room}                   the member list changed
//   user       {id}                     a username became known
//   connection {state}                  the socket's state
//   removed    {room}                   the user left or was removed from a room
//   ready      {}                       (re)connected and resynchronised

const PAGE_FIRST = 50;
const PAGE_OLDER = 100;
const TYPING_SHOWN_MS = 6000;
const TYPING_SEND_EVERY_MS = 3000;

/** A v4 UUID, also where crypto.randomUUID is missing (pages not served over https). */
function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function newRoomState(wire) {
  return {
    id: wire.id,
    name: wire.name,
    kind: wire.kind,
    role: wire.role ?? null,
    lastSeq: wire.last_seq,
    readSeq: wire.read_seq ?? 0,
    unread: wire.unread ?? 0,
    /** Messages up to here are already in `unread` (as the server counted them). */
    countedThrough: wire.last_seq,
    msgs: new Map(),
    seqById: new Map(),
    /** Edits and deletes of messages not loaded yet, applied when they are. */
    late: new Map(),
    loaded: false,
    /** Bumped by a gap: pages requested before it are dropped. */
    gen: 0,
    loading: null,
    older: null,
    hasMore: true,
    pending: new Map(),
    typing: new Map(),
    typingSentAt: 0,
    members: null,
    membersLoading: null,
  };
}

export class Store extends EventTarget {
  constructor(api, socket, me) {
    super();
    this.api = api;
    this.socket = socket;
    this.me = me;
    this.rooms = new Map();
    this.users = new Map([[me.id, me.username]]);
    this.userFetches = new Map();
    this.pendingRoom = new Map();
    this.connection = socket.state;
    socket.addEventListener('frame', (e) => this.onFrame(e.detail.frame));
    socket.addEventListener('failed', (e) => this.onSendFailed(e.detail));
    socket.addEventListener('state', (e) => {
      this.connection = e.detail.state;
      this.emit('connection', { state: e.detail.state });
    });
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // ---- names -------------------------------------------------------------------------------

  /** The username of `id`, fetching it in the background when unknown (then a `user` event). */
  username(id) {
    const name = this.users.get(id);
    if (name !== undefined) return name;
    if (!this.userFetches.has(id)) {
      const p = this.api
        .user(id)
        .then((u) => this.learnUser(u))
        .catch(() => this.userFetches.delete(id));
      this.userFetches.set(id, p);
    }
    return null;
  }

  learnUser(u) {
    if (this.users.get(u.id) === u.username) return;
    this.users.set(u.id, u.username);
    this.emit('user', { id: u.id });
  }

  /** What to call a room: its name, or for a dm the other person's username. */
  title(r) {
    if (r.name) return r.name;
    if (r.kind === 'dm') {
      const other = r.members && [...r.members.keys()].find((id) => id !== this.me.id);
      const name = other && this.users.get(other);
      return name || 'Direct message';
    }
    return 'Unnamed room';
  }

  /** Rooms (not dms) and dms, each sorted by title. */
  sortedRooms() {
    const all = [...this.rooms.values()];
    const byTitle = (a, b) => this.title(a).localeCompare(this.title(b)) || a.id.localeCompare(b.id);
    return {
      rooms: all.filter((r) => r.kind !== 'dm').sort(byTitle),
      dms: all.filter((r) => r.kind === 'dm').sort(byTitle),
    };
  }

  totalUnread() {
    let n = 0;
    for (const r of this.rooms.values()) n += r.unread;
    return n;
  }

  // ---- rooms -------------------------------------------------------------------------------

  /** Adds or refreshes a room from a wire `room` object; returns its state. */
  upsertRoom(wire, { fromServerCount = true } = {}) {
    let r = this.rooms.get(wire.id);
    const isNew = !r;
    if (isNew) {
      r = newRoomState(wire);
      this.rooms.set(r.id, r);
    } else {
      r.name = wire.name;
      r.kind = wire.kind;
      if (wire.role) r.role = wire.role;
      if (fromServerCount && wire.unread !== undefined) {
        r.unread = wire.unread;
        r.readSeq = wire.read_seq ?? r.readSeq;
        r.countedThrough = Math.max(r.countedThrough, wire.last_seq);
      }
      r.lastSeq = Math.max(r.lastSeq, wire.last_seq);
    }
    if (r.kind === 'dm' && !r.name) this.loadMembers(r);
    if (isNew) this.emit('rooms');
    else this.emit('room', { room: r.id });
    return r;
  }

  /** Forgets a room; `why` is 'left' (the user's choice) or 'removed' (someone else's). */
  dropRoom(id, why = 'removed') {
    const r = this.rooms.get(id);
    if (!r) return;
    for (const t of r.typing.values()) clearTimeout(t);
    for (const cmid of r.pending.keys()) this.pendingRoom.delete(cmid);
    this.rooms.delete(id);
    this.socket.untrack(id);
    this.emit('rooms');
    this.emit('removed', { room: id, title: this.title(r), why });
  }

  async createRoom(name, kind) {
    return this.upsertRoom(await this.api.createRoom(name, kind, []), { fromServerCount: false });
  }

  /** Opens (creating if needed) the dm with `user`. */
  async directMessage(user) {
    this.learnUser(user);
    const wire = await this.api.createRoom('', 'dm', [user.id]);
    const r = this.upsertRoom(wire, { fromServerCount: false });
    if (!r.members) {
      r.members = new Map([
        [this.me.id, 'member'],
        [user.id, 'member'],
      ]);
      this.emit('rooms');
    }
    return r;
  }

  async joinRoom(id) {
    return this.upsertRoom(await this.api.joinRoom(id), { fromServerCount: false });
  }

  async leaveRoom(id) {
    await this.api.removeMember(id, this.me.id);
    this.dropRoom(id, 'left');
  }

  async invite(roomId, user) {
    this.learnUser(user);
    await this.api.addMember(roomId, user.id);
  }

  loadMembers(r, { force = false } = {}) {
    if ((r.members && !force) || r.membersLoading) return r.membersLoading;
    r.membersLoading = this.api
      .members(r.id)
      .then((list) => {
        r.members = new Map();
        for (const m of list) {
          r.members.set(m.user.id, m.role);
          this.learnUser(m.user);
        }
        this.emit('members', { room: r.id });
        if (r.kind === 'dm') this.emit('rooms');
      })
      .catch(() => {})
      .finally(() => (r.membersLoading = null));
    return r.membersLoading;
  }

  // ---- timeline ------------------------------------------------------------------------------

  /** Loads the newest page of a room once (and again after a gap). */
  loadInitial(r) {
    if (r.loaded) return Promise.resolve();
    if (r.loading) return r.loading;
    const gen = r.gen;
    const p = this.api
      .history(r.id, { limit: PAGE_FIRST })
      .then((page) => {
        if (gen !== r.gen) return;
        this.insert(r, page);
        r.hasMore = page.length === PAGE_FIRST;
        r.loaded = true;
        this.emit('timeline', { room: r.id, type: 'loaded' });
      })
      .finally(() => {
        if (r.loading === p) r.loading = null;
      });
    r.loading = p;
    return p;
  }

  /** Loads the page before the oldest loaded message; resolves to the messages added. */
  loadOlder(r) {
    if (!r.loaded || !r.hasMore) return Promise.resolve([]);
    if (r.older) return r.older;
    const gen = r.gen;
    let oldest = Infinity;
    for (const seq of r.msgs.keys()) if (seq < oldest) oldest = seq;
    const before = oldest === Infinity ? undefined : oldest;
    const p = this.api
      .history(r.id, { before, limit: PAGE_OLDER })
      .then((page) => {
        if (gen !== r.gen) return [];
        r.hasMore = page.length === PAGE_OLDER;
        const added = this.insert(r, page);
        this.emit('timeline', { room: r.id, type: 'older', msgs: added });
        return added;
      })
      .finally(() => {
        if (r.older === p) r.older = null;
      });
    r.older = p;
    return p;
  }

  /** Messages in seq order, oldest first. */
  messages(r) {
    return [...r.msgs.values()].sort((a, b) => a.seq - b.seq);
  }

  /** Puts messages into the room (deduplicated by seq); returns those that were new. */
  insert(r, list) {
    const added = [];
    for (const wire of list) {
      if (r.msgs.has(wire.seq)) continue;
      const m = { ...wire };
      const late = r.late.get(m.id);
      if (late) {
        if (late.deleted) Object.assign(m, { deleted: true, body: '' });
        else if (late.edited_at && (!m.edited_at || late.edited_at > m.edited_at)) {
          Object.assign(m, { body: late.body, edited_at: late.edited_at });
        }
        r.late.delete(m.id);
      }
      r.msgs.set(m.seq, m);
      r.seqById.set(m.id, m.seq);
      added.push(m);
    }
    return added;
  }

  onLiveMessage(r, m) {
    r.lastSeq = Math.max(r.lastSeq, m.seq);
    if (m.seq > r.countedThrough) {
      if (m.author !== this.me.id && m.seq > r.readSeq && !m.deleted) r.unread += 1;
      r.countedThrough = m.seq;
    }
    this.stopTyping(r, m.author);
    const replaced = this.settlePending(r, m);
    const added = this.insert(r, [m]);
    if (added.length || replaced) this.emit('timeline', { room: r.id, type: 'insert', msgs: added, replaced });
    this.emit('room', { room: r.id });
  }

  /** A confirmed message of ours replaces its optimistic copy; returns that copy's key. */
  settlePending(r, m) {
    if (m.author !== this.me.id || !r.pending.has(m.client_msg_id)) return null;
    r.pending.delete(m.client_msg_id);
    this.pendingRoom.delete(m.client_msg_id);
    return m.client_msg_id;
  }

  onEdit(r, ev) {
    r.lastSeq = Math.max(r.lastSeq, ev.seq);
    const seq = r.seqById.get(ev.id);
    const m = seq === undefined ? null : r.msgs.get(seq);
    if (!m) {
      const prev = r.late.get(ev.id);
      if (!prev || (!prev.deleted && ev.edited_at > prev.edited_at)) r.late.set(ev.id, { body: ev.body, edited_at: ev.edited_at });
      return;
    }
    if (m.deleted || (m.edited_at && m.edited_at > ev.edited_at)) return;
    m.body = ev.body;
    m.edited_at = ev.edited_at;
    this.emit('timeline', { room: r.id, type: 'update', msgs: [m] });
  }

  onDelete(r, ev) {
    r.lastSeq = Math.max(r.lastSeq, ev.seq);
    const seq = r.seqById.get(ev.id);
    const m = seq === undefined ? null : r.msgs.get(seq);
    if (!m) {
      r.late.set(ev.id, { deleted: true });
      return;
    }
    if (m.deleted) return;
    m.deleted = true;
    m.body = '';
    if (m.author !== this.me.id && m.seq > r.readSeq && m.seq <= r.countedThrough && r.unread > 0) {
      r.unread -= 1;
      this.emit('room', { room: r.id });
    }
    this.emit('timeline', { room: r.id, type: 'update', msgs: [m] });
  }

  onGap(r) {
    // What we hold ends before the gap, and the replay goes on after it: start again from the
    // newest page (the replayed events join it, deduplicated by seq).
    r.gen += 1;
    r.loading = null;
    r.older = null;
    r.msgs.clear();
    r.seqById.clear();
    r.loaded = false;
    r.hasMore = true;
    this.emit('timeline', { room: r.id, type: 'reset' });
  }

  /** Applies an edit or delete answered by REST at once (the live event is then a no-op). */
  async editMessage(r, m, body) {
    this.onEdit(r, await this.api.editMessage(r.id, m.id, body));
  }

  async deleteMessage(r, m) {
    this.onDelete(r, await this.api.deleteMessage(r.id, m.id));
  }

  // ---- sending -------------------------------------------------------------------------------

  /** Shows `body` at once and sends it; the ack or the live message confirms it. */
  send(r, body) {
    const cmid = uuid();
    const item = { client_msg_id: cmid, room: r.id, body, state: 'sending', error: null, ts: new Date().toISOString() };
    r.pending.set(cmid, item);
    this.pendingRoom.set(cmid, r.id);
    // Others stop showing us as typing when this arrives; typing again must say so at once.
    r.typingSentAt = 0;
    this.emit('pending', { room: r.id, item, type: 'add' });
    this.socket.sendMessage(r.id, cmid, body);
  }

  retry(r, cmid) {
    const item = r.pending.get(cmid);
    if (!item) return;
    item.state = 'sending';
    item.error = null;
    this.emit('pending', { room: r.id, item, type: 'update' });
    this.socket.sendMessage(r.id, cmid, item.body);
  }

  discard(r, cmid) {
    const item = r.pending.get(cmid);
    if (!item) return;
    r.pending.delete(cmid);
    this.pendingRoom.delete(cmid);
    this.socket.outbox.delete(cmid);
    this.emit('pending', { room: r.id, item, type: 'remove' });
  }

  onAck(ack) {
    const r = this.rooms.get(this.pendingRoom.get(ack.client_msg_id));
    const item = r && r.pending.get(ack.client_msg_id);
    if (!item) return;
    const m = {
      id: ack.id,
      room: r.id,
      seq: ack.seq,
      author: this.me.id,
      body: item.body,
      ts: ack.ts,
      client_msg_id: ack.client_msg_id,
    };
    const replaced = this.settlePending(r, m);
    const added = this.insert(r, [m]);
    if (added.length || replaced) this.emit('timeline', { room: r.id, type: 'insert', msgs: added, replaced });
  }

  onSendFailed({ client_msg_id: cmid, code, message }) {
    const r = this.rooms.get(this.pendingRoom.get(cmid));
    const item = r && r.pending.get(cmid);
    if (!item) return;
    item.state = 'failed';
    item.error = sendErrorText(code, message);
    this.emit('pending', { room: r.id, item, type: 'update' });
  }

  // ---- typing and read markers -------------------------------------------------------------

  /** Tells the room we are typing, at most every few seconds. */
  typing(r) {
    const now = Date.now();
    if (now - r.typingSentAt < TYPING_SEND_EVERY_MS) return;
    if (this.socket.sendEphemeral({ op: 'typing', room: r.id })) r.typingSentAt = now;
  }

  onTyping(r, user) {
    if (user === this.me.id) return;
    clearTimeout(r.typing.get(user));
    r.typing.set(user, setTimeout(() => this.stopTyping(r, user), TYPING_SHOWN_MS));
    this.username(user);
    this.emit('typing', { room: r.id });
  }

  stopTyping(r, user) {
    if (!r.typing.has(user)) return;
    clearTimeout(r.typing.get(user));
    r.typing.delete(user);
    this.emit('typing', { room: r.id });
  }

  /** Moves our read marker to the newest event (the view calls this when it is visible). */
  markRead(r) {
    const seq = r.lastSeq;
    if (seq <= r.readSeq && r.unread === 0) return;
    if (seq > r.readSeq && !this.socket.sendEphemeral({ op: 'read', room: r.id, seq })) return;
    r.readSeq = Math.max(r.readSeq, seq);
    r.countedThrough = Math.max(r.countedThrough, seq);
    r.unread = 0;
    this.emit('room', { room: r.id });
  }

  onOwnRead(r, seq) {
    if (seq <= r.readSeq) return;
    r.readSeq = seq;
    if (seq >= r.countedThrough) {
      r.unread = 0;
      this.emit('room', { room: r.id });
      return;
    }
    // Read up to somewhere in the middle on another device: ask the server for the count.
    this.api
      .room(r.id)
      .then((wire) => this.upsertRoom(wire))
      .catch(() => {});
  }

  // ---- frames --------------------------------------------------------------------------------

  onFrame(f) {
    const r = f.room && typeof f.room === 'string' ? this.rooms.get(f.room) : null;
    switch (f.op) {
      case 'ready': {
        this.me = f.user;
        this.learnUser(f.user);
        const ids = new Set(f.rooms.map((w) => w.id));
        for (const id of [...this.rooms.keys()]) if (!ids.has(id)) this.dropRoom(id, 'removed');
        for (const w of f.rooms) this.upsertRoom(w);
        this.emit('rooms');
        this.emit('ready');
        break;
      }
      case 'message':
        if (r) this.onLiveMessage(r, f);
        break;
      case 'edit':
        if (r) this.onEdit(r, f);
        break;
      case 'delete':
        if (r) this.onDelete(r, f);
        break;
      case 'member':
        if (!r) break;
        r.lastSeq = Math.max(r.lastSeq, f.seq);
        if (r.members) {
          if (f.change === 'joined') {
            r.members.set(f.user, r.members.get(f.user) || 'member');
            this.username(f.user);
          } else r.members.delete(f.user);
          this.emit('members', { room: r.id });
        }
        break;
      case 'typing':
        if (r) this.onTyping(r, f.user);
        break;
      case 'read':
        if (r && f.user === this.me.id) this.onOwnRead(r, f.seq);
        break;
      case 'room':
        if (f.change === 'joined') this.upsertRoom(f.room, { fromServerCount: !this.rooms.has(f.room.id) });
        else this.dropRoom(f.room.id, f.change);
        break;
      case 'gap': {
        const g = this.rooms.get(f.room);
        if (g) this.onGap(g);
        break;
      }
      case 'ack':
        this.onAck(f);
        break;
      default:
        break;
    }
  }
}

function sendErrorText(code, message) {
  switch (code) {
    case 'body_too_long':
      return 'Too long to send.';
    case 'empty_body':
      return 'Empty messages are not sent.';
    case 'not_member':
    case 'not_found':
      return 'You are not in this room any more.';
    default:
      return message || 'Not sent.';
  }
}

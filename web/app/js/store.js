// The client's state: the signed-in user's rooms, the part of each room's timeline loaded so
// far, pending sends, typing and read state, presence, and a cache of usernames. It is the only
// place that applies server frames and REST answers, so the views just render what it reports.
//
// Presence (docs/protocol.md, "Presence") is best effort: `presence` holds what we know of the
// people we share rooms with, rebuilt from `ready` at every (re)connection, kept live by
// `presence` frames, and filled in over REST (GET /v1/presence, 200 ids a call) for members we
// show that `ready` left out (it lists up to 1,000 people, and only those sharing a small room).
// Large rooms get an online count instead (`online` on the room, then `online` frames). Other
// people's read markers (`read` frames, and `read_seq` in member lists) give a dm its "Seen".
//
// Each room's `msgs` holds a contiguous run of its timeline, newest included: the newest page
// fetched when the room is first opened, older pages prepended as the user scrolls back, and
// every live event after that (the socket resumes with `since`, so none are missed). A `gap`
// breaks the run; the room is then reloaded from its newest page. So does a room the server will
// not replay from where we are (see Socket `stale`). A room that is not on screen is trimmed
// back to its newest page, so a long-lived tab does not keep everything it ever showed.
//
// Events (CustomEvent.detail):
//   rooms      {}                       rooms added or removed (or renamed)
//   room       {room}                   one room's unread count, read marker or name changed
//   timeline   {room, type, msgs?, replaced?}  type: loaded | reset | older | insert | update;
//                                       replaced: client_msg_ids of pending sends now confirmed
//   pending    {room, item, type}       an optimistic send: add | update | remove; its
//                                       item.state is 'sending', 'throttled' (refused for now,
//                                       going again by itself) or 'failed' (refused for good)
//   invites    {}                       the invitations waiting for us changed
//   invited    {invite}                 a new invitation arrived live
//   blocks     {}                       the users we blocked changed
//   typing     {room}                   who is typing changed
//   members    {room}                   the member list changed
//   presence   {user}                   someone's presence changed (user null: many at once)
//   reads      {room}                   someone else's read marker moved in a room
//   user       {id}                     a username became known
//   connection {state}                  the socket's state
//   removed    {room, title, why}       a room went: why is 'left' (by the user, here or on
//                                       another device), 'removed' (by someone else) or 'gone'
//                                       (found missing at `ready`: either)
//   ready      {}                       (re)connected and resynchronised
//   reports    {room, report?}          a room's open reports changed (moderators)

const PAGE_FIRST = 50;
const PAGE_OLDER = 100;
const TYPING_SHOWN_MS = 6000;
const TYPING_SEND_EVERY_MS = 3000;
const REFRESH_COUNT_MS = 300;
const READ_EVERY_MS = 1000;
/** The most ids GET /v1/presence takes at once. */
export const PRESENCE_BATCH = 200;
const STATUSES = new Set(['online', 'away', 'offline']);

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
    /** Who is in it (id -> role), once loaded. */
    members: null,
    membersLoading: null,
    /** The member count (`members` of the wire room), and the online count of a large room
     * (`online`: null for rooms whose members' presence comes one by one). */
    memberCount: wire.members ?? null,
    onlineCount: wire.online ?? null,
    /** Other people's read markers: user id -> seq. */
    readers: new Map(),
    countTimer: 0,
    readTimer: 0,
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
    /** Invitations waiting for us, by room id (wire `invite` objects), newest first. */
    this.invites = new Map();
    /** Changes to `invites` while a reload of the list is on its way: {added, gone}. */
    this.inviteChanges = null;
    /** Users we blocked: id -> username. */
    this.blocked = new Map();
    /** The room on screen (never trimmed). */
    this.focused = null;
    /** What we know of people's presence: id -> {status, lastSeen, text}. */
    this.presence = new Map();
    /** Whether the server has presence (null until the first `ready` says). */
    this.presenceOn = null;
    /** Bumped by every live change; `presenceStamp` holds each user's at their last one, so a
     * REST answer that crossed a live frame does not undo it. */
    this.presenceClock = 0;
    this.presenceStamp = new Map();
    /** Ids asked for over REST since the last `ready` (those left out of the answer are not
     * ours to see: not asked again), and those waiting to be asked. */
    this.presenceAsked = new Set();
    this.presenceQueue = new Set();
    this.presenceTimer = 0;
    this.connection = socket.state;
    // If a hello must be cut down, the rooms whose timelines we hold keep their place.
    socket.keepSince = (id) => !!this.rooms.get(id)?.loaded;
    socket.addEventListener('frame', (e) => this.onFrame(e.detail.frame, e.detail.stale));
    socket.addEventListener('failed', (e) => this.onSendFailed(e.detail));
    socket.addEventListener('retrying', (e) => this.onSendRetrying(e.detail));
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

  /**
   * Adds or refreshes a room from a wire `room` object; returns its state. `quiet` leaves the
   * `rooms`/`room` event to the caller.
   */
  upsertRoom(wire, { fromServerCount = true, quiet = false } = {}) {
    let r = this.rooms.get(wire.id);
    const isNew = !r;
    if (isNew) {
      r = newRoomState(wire);
      this.rooms.set(r.id, r);
    } else {
      r.name = wire.name;
      r.kind = wire.kind;
      if (wire.role) r.role = wire.role;
      if (wire.members !== undefined) {
        r.memberCount = r.members ? r.members.size : wire.members;
        r.onlineCount = wire.online ?? null;
      }
      // A count from before our own latest `read` (an answer that crossed it) would bring back
      // messages already read.
      if (fromServerCount && wire.unread !== undefined && (wire.read_seq ?? 0) >= r.readSeq) {
        r.unread = wire.unread;
        r.readSeq = wire.read_seq ?? r.readSeq;
        r.countedThrough = Math.max(r.countedThrough, wire.last_seq);
      }
      // `lastSeq` is left alone: it is the newest event we have, and the read marker must not
      // move past events still on their way (the replay after `ready`).
    }
    if (r.kind === 'dm' && !r.name) this.loadMembers(r);
    if (quiet) return r;
    if (isNew) this.emit('rooms');
    else this.emit('room', { room: r.id });
    return r;
  }

  /** Forgets a room; `why` as in the `removed` event. */
  dropRoom(id, why, { quiet = false } = {}) {
    const r = this.rooms.get(id);
    if (!r) return;
    for (const t of r.typing.values()) clearTimeout(t);
    clearTimeout(r.countTimer);
    clearTimeout(r.readTimer);
    for (const cmid of r.pending.keys()) this.pendingRoom.delete(cmid);
    this.rooms.delete(id);
    this.socket.untrack(id);
    if (!quiet) this.emit('rooms');
    this.emit('removed', { room: id, title: this.title(r), why });
  }

  /** A room we joined (or made) over REST. */
  adopt(wire) {
    // Resume it from here even if the socket is down now: what happens between this answer
    // and the next `ready` is replayed then.
    this.socket.follow(wire.id, wire.last_seq);
    return this.upsertRoom(wire, { fromServerCount: false });
  }

  async createRoom(name, kind) {
    return this.adopt(await this.api.createRoom(name, kind, []));
  }

  /** Opens (creating if needed) the dm with `user`. */
  async directMessage(user) {
    this.learnUser(user);
    const r = this.adopt(await this.api.createRoom('', 'dm', [user.id]));
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
    return this.adopt(await this.api.joinRoom(id));
  }

  async leaveRoom(id) {
    await this.api.removeMember(id, this.me.id);
    this.dropRoom(id, 'left');
  }

  /** Adds `user` to a room; resolves to 'invited' (they join when they accept) or 'added'. */
  async invite(roomId, user) {
    this.learnUser(user);
    const res = await this.api.addMember(roomId, user.id);
    return res && res.invite ? 'invited' : 'added';
  }

  // ---- invitations -------------------------------------------------------------------------

  /** Invitations, newest first. */
  sortedInvites() {
    return [...this.invites.values()].sort((a, b) => (b.created_at || '').localeCompare(a.created_at || ''));
  }

  /**
   * Reloads the invitations (at every `ready`: some may have come, gone or been answered on
   * another device while we were away). Live ones that arrive, and ones answered here, while
   * the answer is on its way are applied on top of it, whichever the answer already has.
   */
  async loadInvites() {
    const changes = { added: new Map(), gone: new Set() };
    this.inviteChanges = changes;
    let list;
    try {
      list = await this.api.invites();
    } catch {
      // Kept as they were; the next `ready` tries again.
      if (this.inviteChanges === changes) this.inviteChanges = null;
      return;
    }
    if (this.inviteChanges !== changes) return;
    this.inviteChanges = null;
    this.invites = new Map();
    for (const inv of list) this.invites.set(inv.room.id, inv);
    for (const [id, inv] of changes.added) this.invites.set(id, inv);
    for (const id of changes.gone) this.invites.delete(id);
    // One for a room we are in is stale (accepted elsewhere just now).
    for (const id of this.rooms.keys()) this.invites.delete(id);
    for (const inv of this.invites.values()) this.learnUser(inv.inviter);
    this.emit('invites');
  }

  onInvite(inv) {
    if (!inv || !inv.room || this.rooms.has(inv.room.id)) return;
    const isNew = !this.invites.has(inv.room.id);
    this.invites.set(inv.room.id, inv);
    if (this.inviteChanges) {
      this.inviteChanges.added.set(inv.room.id, inv);
      this.inviteChanges.gone.delete(inv.room.id);
    }
    this.learnUser(inv.inviter);
    this.emit('invites');
    if (isNew) this.emit('invited', { invite: inv });
  }

  dropInvite(roomId) {
    if (this.inviteChanges) {
      this.inviteChanges.gone.add(roomId);
      this.inviteChanges.added.delete(roomId);
    }
    if (this.invites.delete(roomId)) this.emit('invites');
  }

  /** Accepts an invitation: we join the room (resolves to it). One that is no longer there
   * (withdrawn, or we were removed meanwhile) goes from the list, and the error is thrown. */
  async acceptInvite(roomId) {
    try {
      const r = await this.joinRoom(roomId);
      this.dropInvite(roomId);
      return r;
    } catch (err) {
      if (err.status === 403 || err.status === 404) this.dropInvite(roomId);
      throw err;
    }
  }

  async declineInvite(roomId) {
    await this.api.declineInvite(roomId);
    this.dropInvite(roomId);
  }

  // ---- blocks --------------------------------------------------------------------------------

  async loadBlocks() {
    let users;
    try {
      users = await this.api.blocks();
    } catch {
      return;
    }
    this.blocked = new Map(users.map((u) => [u.id, u.username]));
    for (const u of users) this.learnUser(u);
    this.emit('blocks');
  }

  /** The other person of a dm (null until its members are known, or for other rooms). */
  dmPeer(r) {
    if (r.kind !== 'dm' || !r.members) return null;
    return [...r.members.keys()].find((id) => id !== this.me.id) || null;
  }

  async block(userId) {
    await this.api.block(userId);
    this.blocked.set(userId, this.users.get(userId) || '');
    // Their invitations to us are dropped by the server.
    for (const inv of [...this.invites.values()]) if (inv.inviter.id === userId) this.dropInvite(inv.room.id);
    this.emit('blocks');
  }

  async unblock(userId) {
    await this.api.unblock(userId);
    this.blocked.delete(userId);
    this.emit('blocks');
  }

  loadMembers(r, { force = false } = {}) {
    if ((r.members && !force) || r.membersLoading) return r.membersLoading;
    r.membersLoading = this.api
      .members(r.id)
      .then((list) => {
        r.members = new Map();
        let moved = false;
        for (const m of list) {
          r.members.set(m.user.id, m.role);
          this.learnUser(m.user);
          if (m.user.id !== this.me.id && Number.isFinite(m.read_seq) && m.read_seq > (r.readers.get(m.user.id) ?? 0)) {
            r.readers.set(m.user.id, m.read_seq);
            moved = true;
          }
        }
        r.memberCount = r.members.size;
        this.emit('members', { room: r.id });
        if (moved) this.emit('reads', { room: r.id });
        if (r.kind === 'dm') this.emit('rooms');
        // The presence of people `ready` did not tell us about (the header counts who is online).
        if (r.onlineCount === null) this.ensurePresence(list.slice(0, PRESENCE_BATCH).map((m) => m.user.id));
      })
      .catch(() => {})
      .finally(() => (r.membersLoading = null));
    return r.membersLoading;
  }

  // ---- presence ------------------------------------------------------------------------------

  /** What we know of `id`'s presence ({status, lastSeen, text}), or null. */
  presenceOf(id) {
    return this.presence.get(id) || null;
  }

  /** Stores one wire `presence` object; false if it is not one. */
  setPresence(p) {
    if (!p || typeof p.user !== 'string' || !STATUSES.has(p.status)) return false;
    this.presence.set(p.user, {
      status: p.status,
      lastSeen: p.status === 'offline' && typeof p.last_seen === 'string' ? p.last_seen : null,
      text: typeof p.text === 'string' && p.text.trim() ? p.text : null,
    });
    return true;
  }

  onPresence(f) {
    this.presenceClock += 1;
    if (!this.setPresence(f)) return;
    this.presenceStamp.set(f.user, this.presenceClock);
    this.emit('presence', { user: f.user });
  }

  /** Asks the server (soon, in batches) for the presence of those of `ids` we know nothing of
   * and have not asked for since the last `ready`. */
  ensurePresence(ids) {
    for (const id of ids) {
      if (!this.presence.has(id) && !this.presenceAsked.has(id)) this.presenceQueue.add(id);
    }
    if (!this.presenceQueue.size || this.presenceTimer) return;
    this.presenceTimer = setTimeout(() => {
      this.presenceTimer = 0;
      const ids = [...this.presenceQueue];
      this.presenceQueue.clear();
      // Before the first `ready` we do not know whether the server has presence: it asks again.
      if (!this.presenceOn) return;
      for (let i = 0; i < ids.length; i += PRESENCE_BATCH) this.fetchPresence(ids.slice(i, i + PRESENCE_BATCH));
    }, 0);
  }

  /**
   * Asks the server for the presence of `ids` (at most PRESENCE_BATCH), whatever we know of
   * them: people in large rooms get no frames, so what we hold of them may be old. Those left
   * out of the answer are not ours to see (any more): forgotten. Resolves when applied.
   */
  async fetchPresence(ids) {
    ids = ids.slice(0, PRESENCE_BATCH);
    if (!ids.length || !this.presenceOn) return;
    for (const id of ids) this.presenceAsked.add(id);
    const asked = this.presenceClock;
    let list;
    try {
      list = await this.api.presence(ids);
    } catch {
      // Best effort: the presence backend may be down (503). The next `ready` tries again.
      return;
    }
    const seen = new Set();
    for (const p of list) {
      if (!p || typeof p.user !== 'string') continue;
      seen.add(p.user);
      // A live change (or a `ready`) since we asked is newer than this answer.
      if ((this.presenceStamp.get(p.user) ?? 0) > asked) continue;
      this.setPresence(p);
    }
    for (const id of ids) {
      if (!seen.has(id) && (this.presenceStamp.get(id) ?? 0) <= asked) this.presence.delete(id);
    }
    this.emit('presence', { user: null });
  }

  /** Our status on this connection: 'away' while the tab is hidden, else 'online'. */
  setOwnStatus(status) {
    if (!this.presenceOn) return false;
    return this.socket.sendEphemeral({ op: 'status', status });
  }

  /** How many members of `r` are online or away: the server's count for a large room, else
   * what we know of its members (we count as online); null when we can't tell. */
  onlineIn(r) {
    if (!this.presenceOn) return null;
    if (r.onlineCount !== null) return r.onlineCount;
    if (!r.members) return null;
    let n = 0;
    for (const id of r.members.keys()) {
      const st = id === this.me.id ? 'online' : this.presence.get(id)?.status;
      if (st === 'online' || st === 'away') n += 1;
    }
    return n;
  }

  // ---- read receipts ---------------------------------------------------------------------------

  onPeerRead(r, user, seq) {
    if (!Number.isFinite(seq) || seq <= (r.readers.get(user) ?? 0)) return;
    r.readers.set(user, seq);
    this.emit('reads', { room: r.id });
  }

  /**
   * In a dm: the seq of our newest message if the other person has read it (their read marker
   * is at or past it, or they wrote after it), else 0. Not while a send of ours is on its way:
   * that one is our newest.
   */
  seenSeq(r) {
    if (r.kind !== 'dm' || r.pending.size) return 0;
    const peer = this.dmPeer(r);
    if (!peer) return 0;
    let own = 0;
    let theirs = 0;
    for (const m of r.msgs.values()) {
      if (m.author === this.me.id) {
        if (!m.deleted && m.seq > own) own = m.seq;
      } else if (m.author === peer && m.seq > theirs) theirs = m.seq;
    }
    if (!own) return 0;
    return Math.max(r.readers.get(peer) ?? 0, theirs) >= own ? own : 0;
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
        // Pending sends it confirms just vanish: `loaded` renders the room afresh.
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
        const { added, replaced } = this.insert(r, page);
        this.emit('timeline', { room: r.id, type: 'older', msgs: added, replaced });
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

  /**
   * Puts messages into the room (deduplicated by seq). Our own among them confirm their pending
   * copies, whatever brought them (ack, live event or a REST page: the ack may have been lost
   * with the connection). Returns {added, replaced}: the new messages, the confirmed copies.
   */
  insert(r, list) {
    const added = [];
    const replaced = [];
    for (const wire of list) {
      const cmid = this.settlePending(r, wire);
      if (cmid) replaced.push(cmid);
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
    return { added, replaced };
  }

  /** Keeps only the newest page of a room that is not on screen (opened or not: live events
   * are kept either way). */
  trim(r) {
    // A first page on its way might not reach what is left.
    if (r.loading || r.msgs.size <= PAGE_FIRST) return;
    const seqs = [...r.msgs.keys()].sort((a, b) => a - b);
    for (const seq of seqs.slice(0, -PAGE_FIRST)) {
      r.seqById.delete(r.msgs.get(seq).id);
      r.msgs.delete(seq);
    }
    if (!r.loaded) return;
    r.hasMore = true;
    // An older page on its way would land below what is left, leaving a hole.
    r.gen += 1;
    r.older = null;
  }

  /** The room now on screen; the one before it is trimmed. */
  focus(r) {
    const prev = this.focused;
    this.focused = r;
    if (prev && prev !== r) this.trim(prev);
  }

  onLiveMessage(r, m) {
    r.lastSeq = Math.max(r.lastSeq, m.seq);
    if (m.seq > r.countedThrough) {
      if (m.author !== this.me.id && m.seq > r.readSeq && !m.deleted) r.unread += 1;
      r.countedThrough = m.seq;
    }
    this.stopTyping(r, m.author);
    const { added, replaced } = this.insert(r, [m]);
    if (added.length || replaced.length) this.emit('timeline', { room: r.id, type: 'insert', msgs: added, replaced });
    if (r !== this.focused && r.msgs.size > 2 * PAGE_FIRST) this.trim(r);
    this.emit('room', { room: r.id });
  }

  /** A confirmed message of ours replaces its optimistic copy; returns that copy's key. */
  settlePending(r, m) {
    if (m.author !== this.me.id || !r.pending.has(m.client_msg_id)) return null;
    r.pending.delete(m.client_msg_id);
    this.pendingRoom.delete(m.client_msg_id);
    // Stored already: a resend would only be answered with this same message.
    this.socket.forget(m.client_msg_id);
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
    // A delete up to countedThrough is in the server's count already.
    const uncounted = ev.seq > r.countedThrough;
    if (!m) {
      r.late.set(ev.id, { deleted: true });
      // It may have been one of the unread ones: only the server knows.
      if (uncounted && r.unread > 0) this.refreshCount(r);
      return;
    }
    if (m.deleted) return;
    m.deleted = true;
    m.body = '';
    if (uncounted && m.author !== this.me.id && m.seq > r.readSeq && m.seq <= r.countedThrough && r.unread > 0) {
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
    this.socket.forget(cmid);
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
    const { added, replaced } = this.insert(r, [m]);
    if (added.length || replaced.length) this.emit('timeline', { room: r.id, type: 'insert', msgs: added, replaced });
  }

  // ---- moderation ---------------------------------------------------------------------------

  /** Whether we moderate the room (owner, admin or moderator; nobody moderates a dm). */
  moderates(r) {
    return !!r && r.kind !== 'dm' && ['owner', 'admin', 'moderator'].includes(r.role);
  }

  /** The room's open reports, loaded over REST (moderators); live after that. */
  async loadReports(r) {
    const list = await this.api.reports(r.id, 'open');
    r.reports = new Map(list.map((x) => [x.id, x]));
    this.emit('reports', { room: r.id });
    return list;
  }

  /** A report was filed or resolved in a room we moderate. */
  onReport(report) {
    const r = report && this.rooms.get(report.room);
    if (!r) return;
    if (!r.reports) r.reports = new Map();
    if (report.status === 'open') r.reports.set(report.id, report);
    else r.reports.delete(report.id);
    this.username(report.reporter);
    this.username(report.user_id);
    this.emit('reports', { room: r.id, report });
  }

  onSendFailed({ client_msg_id: cmid, code, message, retry_after_ms: wait }) {
    const r = this.rooms.get(this.pendingRoom.get(cmid));
    const item = r && r.pending.get(cmid);
    if (!item) return;
    item.state = 'failed';
    item.error = sendErrorText(code, message, wait);
    this.emit('pending', { room: r.id, item, type: 'update' });
  }

  /** Refused for now (sending too fast, or the server busy): the socket sends it again. */
  onSendRetrying({ client_msg_id: cmid, code, retryAt }) {
    const r = this.rooms.get(this.pendingRoom.get(cmid));
    const item = r && r.pending.get(cmid);
    if (!item || (item.state === 'throttled' && item.code === code)) return;
    item.state = 'throttled';
    item.code = code;
    const left = Number.isFinite(retryAt) ? ` in ${waitText(retryAt - Date.now())}` : '';
    item.error = {
      rate_limited: 'Sending too fast — retrying…',
      slow_mode: `Slow mode — sends by itself${left}`,
      room_rate_limited: `This room is busy — sends by itself${left}`,
    }[code] || 'The server is busy — retrying…';
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
    r.readSeq = Math.max(r.readSeq, seq);
    r.countedThrough = Math.max(r.countedThrough, seq);
    r.unread = 0;
    this.emit('room', { room: r.id });
    this.sendRead(r);
  }

  /**
   * Tells the server our read marker, at most every READ_EVERY_MS per room: every message shown
   * moves it, and a busy room (or an outbox draining) must not use up the connection's frame
   * budget. One that can't go now goes at the next `ready` (see onReady).
   */
  sendRead(r) {
    if (r.readTimer || !this.socket.sendEphemeral({ op: 'read', room: r.id, seq: r.readSeq })) return;
    const sent = r.readSeq;
    r.readTimer = setTimeout(() => {
      r.readTimer = 0;
      if (r.readSeq > sent) this.sendRead(r);
    }, READ_EVERY_MS);
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
    this.refreshCount(r);
  }

  /** Asks the server for a room's unread count, once for a burst of calls. */
  refreshCount(r) {
    clearTimeout(r.countTimer);
    r.countTimer = setTimeout(() => {
      this.api
        .room(r.id)
        .then((wire) => this.rooms.get(r.id) === r && this.upsertRoom(wire))
        .catch(() => {});
    }, REFRESH_COUNT_MS);
  }

  // ---- frames --------------------------------------------------------------------------------

  onReady(f, stale) {
    this.me = f.user;
    this.learnUser(f.user);
    // Presence starts over from the server's picture (everything we held may have changed
    // while we were away), before the rooms ask for what it leaves out.
    this.presenceOn = Array.isArray(f.presence);
    this.presence = new Map();
    this.presenceStamp = new Map();
    this.presenceAsked.clear();
    this.presenceClock += 1;
    for (const p of f.presence || []) if (this.setPresence(p)) this.presenceStamp.set(p.user, this.presenceClock);
    const ids = new Set(f.rooms.map((w) => w.id));
    // Removed, or left on another device: the list can't tell which.
    for (const id of [...this.rooms.keys()]) if (!ids.has(id)) this.dropRoom(id, 'gone', { quiet: true });
    for (const w of f.rooms) {
      const r = this.upsertRoom(w, { quiet: true });
      if (stale && stale.has(r.id)) {
        // Not replayed from what we hold: start again from where the room is now.
        Object.assign(r, { lastSeq: w.last_seq, countedThrough: w.last_seq, readSeq: w.read_seq ?? 0, unread: w.unread ?? 0 });
        this.onGap(r);
      } else if ((w.read_seq ?? 0) < r.readSeq) {
        // Read while offline, or our last `read` was lost with the connection.
        this.socket.sendEphemeral({ op: 'read', room: r.id, seq: r.readSeq });
      }
    }
    this.emit('rooms');
    this.emit('presence', { user: null });
    this.emit('ready');
    this.loadInvites();
    this.loadBlocks();
    // The members of the room on screen that `ready` says nothing of.
    const open = this.focused;
    if (open && open.members && open.onlineCount === null) this.ensurePresence([...open.members.keys()].slice(0, PRESENCE_BATCH));
  }

  onFrame(f, stale) {
    const r = f.room && typeof f.room === 'string' ? this.rooms.get(f.room) : null;
    switch (f.op) {
      case 'ready':
        this.onReady(f, stale);
        break;
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
          r.memberCount = r.members.size;
          this.emit('members', { room: r.id });
          if (f.change === 'joined' && r.onlineCount === null) this.ensurePresence([f.user]);
        }
        break;
      case 'typing':
        if (r) this.onTyping(r, f.user);
        break;
      case 'read':
        if (r && f.user === this.me.id) this.onOwnRead(r, f.seq);
        else if (r && typeof f.user === 'string') this.onPeerRead(r, f.user, f.seq);
        break;
      case 'presence':
        this.onPresence(f);
        break;
      case 'online':
        if (r && Number.isFinite(f.count)) {
          r.onlineCount = f.count;
          this.emit('room', { room: r.id });
        }
        break;
      case 'room':
        if (f.change === 'joined') {
          this.upsertRoom(f.room, { fromServerCount: !this.rooms.has(f.room.id) });
          // Accepted (here or on another device), or added by someone at once.
          this.dropInvite(f.room.id);
        } else this.dropRoom(f.room.id, f.change);
        break;
      case 'invite':
        this.onInvite(f.invite);
        break;
      case 'report':
        this.onReport(f.report);
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

/** A wait as people say it: "12 s", "4 min", "2 h", "3 days". */
export function waitText(ms) {
  const s = Math.max(1, Math.ceil(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.ceil(s / 60)} min`;
  if (s < 86400) return `${Math.ceil(s / 3600)} h`;
  return `${Math.ceil(s / 86400)} days`;
}

function sendErrorText(code, message, wait) {
  const left = Number.isFinite(wait) ? waitText(wait) : null;
  switch (code) {
    case 'muted':
      return left ? `You are muted in this room for ${left} more.` : 'You are muted in this room.';
    case 'banned':
      return 'You are banned from this room.';
    case 'duplicate':
      return left ? `You sent this too often lately. Try again in ${left}.` : 'You sent this too often lately.';
    case 'filtered':
      return `Blocked by this room's filters: ${message || 'not allowed here'}.`;
    case 'rejected':
      return 'Blocked by moderation.';
    case 'too_many_mentions':
      return message ? `${message}.` : 'Too many mentions.';
    case 'body_too_long':
      return 'Too long to send.';
    case 'too_large':
      return 'Too large to send. Shorten it.';
    case 'empty_body':
      return 'Empty messages are not sent.';
    case 'not_member':
    case 'not_found':
      return 'You are not in this room any more.';
    case 'blocked':
      return "You can't message this person.";
    case 'forbidden':
      return 'You are not allowed to write here.';
    default:
      return message || 'Not sent.';
  }
}

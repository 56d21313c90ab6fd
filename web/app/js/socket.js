// The WebSocket half of the protocol: one resuming session per signed-in tab. It says `hello`
// with the last seq seen per room, reconnects with exponential backoff and jitter, resends
// unacknowledged sends with their original client_msg_id (the server answers a repeat with the
// first message), and reports its state so the UI can show "reconnecting".
//
// Events (CustomEvent.detail):
//   state  {state: 'connecting'|'online'|'reconnecting'|'limited'}
//                                                           connection changes; 'limited': the
//                                                           account has too many connections
//                                                           open (close 4012), retried slowly
//   frame  {frame, stale?}                                  every server frame, after bookkeeping;
//                                                           with `ready`, the rooms the server
//                                                           will not replay from what we hold
//   failed {client_msg_id, code, message}                  a send refused for good
//   retrying {client_msg_id, code, retryAt}                a send refused for now (throttled or
//                                                           overloaded): it goes again at retryAt
//   auth   {reason}                                         the token was refused, the session
//                                                           ended or the token expired (close
//                                                           4003; `reason` is the close reason)

// Refusals for now: the send goes again by itself after the wait the server gives (slow mode and
// a busy room included: the message is sent as soon as the room takes it).
const RETRYABLE = new Set(['rate_limited', 'unavailable', 'draining', 'slow_mode', 'room_rate_limited']);
const TIMELINE_OPS = new Set(['message', 'edit', 'delete', 'member']);

/** The server's default max_frame_bytes: a larger frame gets the connection closed (1009). */
const MAX_FRAME_BYTES = 64 * 1024;
/** A connection that has not said `ready` by then is dropped and retried. */
const HANDSHAKE_MS = 10000;
/** A connection that sends nothing at all, not even the pong, this long after a ping is dead. */
const PONG_MS = 10000;
/** Backoff starts over only after a connection stayed up this long: a server that says `ready`
 * and then closes (a store error or a slow consumer during the replay) must not be hammered. */
const STABLE_MS = 30000;
// The server reads 50 frames/s per connection with a burst of 100 and closes with 4008 after 20
// refusals in a row; and it takes 20 messages/s per user (all their connections and REST) with
// a burst of 60, refusing more with `rate_limited` and a `retry_after_ms`. Sends go out under
// both by default (15/s, burst 40), leaving room for typing, read and ping frames and for
// another tab, and at most MAX_IN_FLIGHT at once, so a long outbox drains at `ready` without
// being refused. A server with lower limits refuses some: they wait as long as it asks and go
// again, and our own rate halves (creeping back up with each ack), so a long outbox does not
// turn into rounds of frames refused by the hundred (which would get us closed with 4008).
const MAX_IN_FLIGHT = 40;
const SEND_BURST = 40;
const SEND_PER_SEC = 15;
/** After a close with 4012 (too many connections for the account): wait this long and more. */
const TOO_MANY_MS = 30000;
/** Our close code for a connection we gave up on (no `ready`, no pong). */
const GAVE_UP = 4000;

const byteLength = (s) => new TextEncoder().encode(s).length;

export class Socket extends EventTarget {
  /** `url`: ws(s)://host/v1/ws; `token`: bearer token for `hello`. */
  constructor(url, token) {
    super();
    this.url = url;
    this.token = token;
    /** Last seq seen per room id: the `since` of the next hello. */
    this.positions = new Map();
    /** What the last hello said, to tell at `ready` which rooms will be replayed. */
    this.sentSince = new Map();
    /** After a 1009 on hello: 1 sends only the positions `keepSince` picks, 2 sends none. */
    this.helloLevel = 0;
    /** The rooms whose positions matter most (the store's loaded ones). */
    this.keepSince = () => true;
    /** Unacknowledged sends by client_msg_id, in send order: {text, bytes, tries, retryAt}. */
    this.outbox = new Map();
    /** Sends written on this connection and not answered yet. */
    this.inFlight = new Set();
    this.tokens = SEND_BURST;
    this.tokensAt = 0;
    /** Sends per second, lowered by `rate_limited` refusals (see above). */
    this.sendRate = SEND_PER_SEC;
    /** No send goes out before this (a `rate_limited` refusal: the user's budget is shared by
     * all their sends, so the next ones would be refused too, and order would be lost). */
    this.sendsPausedUntil = 0;
    this.state = 'connecting';
    this.ws = null;
    this.ready = false;
    this.stopped = true;
    this.attempt = 0;
    this.everReady = false;
    this.timers = { reconnect: 0, handshake: 0, stable: 0, ping: 0, pong: 0, pump: 0 };
    this.lastRecv = 0;
    this.heartbeatMs = 30000;
    this.onOnline = () => this.reconnectNow();
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.connect();
  }

  /** Closes for good (log out). */
  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    this.detach();
    clearTimeout(this.timers.reconnect);
  }

  /** Skips the rest of a backoff wait, or gives up on a connection that is not ready yet (the
   * user pressed "Retry now", or the network came back). */
  reconnectNow() {
    if (this.stopped || this.ready) return;
    this.detach(GAVE_UP);
    clearTimeout(this.timers.reconnect);
    this.connect();
  }

  /**
   * Queues a message; it is (re)sent on every (re)connect until acknowledged or refused. One
   * whose frame is over the server's limit is refused here (a `failed` event): sending it would
   * only get the connection closed.
   */
  sendMessage(room, clientMsgId, body) {
    const text = JSON.stringify({ op: 'send', room, client_msg_id: clientMsgId, body });
    const bytes = byteLength(text);
    if (bytes > MAX_FRAME_BYTES) {
      this.emit('failed', { client_msg_id: clientMsgId, code: 'too_large', message: 'Message too large.' });
      return;
    }
    this.outbox.set(clientMsgId, { text, bytes, tries: 0, retryAt: 0 });
    this.pump();
  }

  /** Drops a send (discarded, or known to be stored already). */
  forget(clientMsgId) {
    this.outbox.delete(clientMsgId);
    if (this.inFlight.delete(clientMsgId)) this.pump();
  }

  /** Sends an ephemeral frame (`typing`, `read`) if connected; dropped otherwise. */
  sendEphemeral(frame) {
    if (this.ready) this.raw(frame);
    return this.ready;
  }

  /** Resume from at least `seq` in `room` (a room the server says we joined). */
  track(room, seq) {
    const cur = this.positions.get(room);
    if (cur === undefined || seq > cur) this.positions.set(room, seq);
  }

  /** A room joined over REST: resume it from `seq` (its last_seq in the answer, which the REST
   * pages cover) unless we follow it already, maybe from an earlier seq still being delivered. */
  follow(room, seq) {
    if (!this.positions.has(room)) this.positions.set(room, seq);
  }

  /** Forget a room we left. */
  untrack(room) {
    this.positions.delete(room);
  }

  raw(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state } }));
  }

  connect() {
    if (this.stopped) return;
    // 'limited' stays up while the next try is on its way: it says why we are not online.
    if (this.state !== 'limited') this.setState(this.everReady || this.attempt > 0 ? 'reconnecting' : 'connecting');
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.timers.handshake = setTimeout(() => this.onClose(GAVE_UP), HANDSHAKE_MS);
    ws.addEventListener('open', () => {
      if (ws === this.ws) ws.send(this.hello());
    });
    ws.addEventListener('message', (e) => {
      if (ws !== this.ws) return;
      this.lastRecv = Date.now();
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        return;
      }
      this.onFrame(frame);
    });
    ws.addEventListener('close', (e) => {
      if (ws === this.ws) this.onClose(e.code, e.reason);
    });
  }

  /** The hello frame, cut down after a 1009 (or when it would be over the limit anyway): rooms
   * left out start live from now, and the store reloads those it holds (see `stale`). */
  hello() {
    const all = [...this.positions];
    const choices = [all, all.filter(([id]) => this.keepSince(id)), []].slice(this.helloLevel);
    const frame = (since) => JSON.stringify({ op: 'hello', token: this.token, since: Object.fromEntries(since) });
    const since = choices.find((s) => s.length === 0 || byteLength(frame(s)) <= MAX_FRAME_BYTES);
    this.sentSince = new Map(since);
    return frame(since);
  }

  onFrame(frame) {
    let stale;
    switch (frame.op) {
      case 'ready':
        stale = this.onReady(frame);
        break;
      case 'ack':
        this.sendRate = Math.min(SEND_PER_SEC, this.sendRate + 0.1);
        this.outbox.delete(frame.client_msg_id);
        this.inFlight.delete(frame.client_msg_id);
        this.pump();
        break;
      case 'error': {
        const cmid = frame.client_msg_id;
        const item = cmid && this.outbox.get(cmid);
        if (!item) break;
        this.inFlight.delete(cmid);
        if (RETRYABLE.has(frame.code)) {
          // It waits and goes again with the same client_msg_id: as long as the server asks
          // (retry_after_ms), else with a growing backoff.
          item.tries += 1;
          const base = Math.min(10000, 500 * 2 ** (item.tries - 1));
          const asked = Number.isFinite(frame.retry_after_ms) && frame.retry_after_ms >= 0 ? frame.retry_after_ms : null;
          const wait = asked !== null ? Math.min(60000, asked) + Math.random() * 100 : base / 2 + (Math.random() * base) / 2;
          item.retryAt = Date.now() + wait;
          // Over the user's send budget: every send waits, so they still go out in order, and
          // slower afterwards (once for the sends refused together: they are one burst).
          if (frame.code === 'rate_limited') {
            if (this.sendsPausedUntil <= Date.now()) {
              this.sendRate = Math.max(1, this.sendRate / 2);
              this.tokens = Math.min(this.tokens, 0);
              this.tokensAt = Date.now();
            }
            this.sendsPausedUntil = Math.max(this.sendsPausedUntil, item.retryAt);
          }
          this.emit('retrying', { client_msg_id: cmid, code: frame.code, retryAt: item.retryAt });
        } else {
          this.outbox.delete(cmid);
          this.emit('failed', {
            client_msg_id: cmid,
            code: frame.code,
            message: frame.message,
            retry_after_ms: frame.retry_after_ms,
          });
        }
        this.pump();
        break;
      }
      case 'room':
        if (frame.change === 'joined') {
          this.track(frame.room.id, Math.max(0, (frame.seq ?? frame.room.last_seq) - 1));
        } else {
          this.untrack(frame.room.id);
        }
        break;
      default:
        if (TIMELINE_OPS.has(frame.op) && this.positions.has(frame.room)) this.track(frame.room, frame.seq);
    }
    this.emit('frame', { frame, stale });
    // The rooms are known now: send what waited for the connection, in order.
    if (frame.op === 'ready') this.pump();
  }

  /** Returns the rooms the server will not replay from what we hold. */
  onReady(frame) {
    this.ready = true;
    this.everReady = true;
    clearTimeout(this.timers.handshake);
    this.timers.stable = setTimeout(() => (this.attempt = 0), STABLE_MS);
    this.heartbeatMs = Math.max(1000, frame.heartbeat_ms || 30000);
    this.tokens = SEND_BURST - 1;
    this.tokensAt = Date.now();
    const stale = new Set();
    for (const r of frame.rooms) {
      const pos = this.positions.get(r.id);
      const sent = this.sentSince.get(r.id);
      if (sent === undefined) {
        // Left out of the hello (new to us, joined over REST after it was sent, or cut from
        // it): live from here. Anything we hold of it stops before what was missed.
        if (pos !== undefined && pos < r.last_seq) stale.add(r.id);
        this.positions.set(r.id, r.last_seq);
      } else if (sent > r.last_seq) {
        // Past the end: the server lost its newest events (a restore). What we hold is wrong.
        stale.add(r.id);
        this.positions.set(r.id, r.last_seq);
      }
      // Otherwise it is being replayed from `sent`: raising it now would skip the replay if we
      // dropped in the middle of it.
    }
    const ours = new Set(frame.rooms.map((r) => r.id));
    for (const id of [...this.positions.keys()]) if (!ours.has(id)) this.positions.delete(id);
    this.setState('online');
    this.schedulePing();
    return stale;
  }

  /** Writes queued sends while the send budget and the in-flight limit allow, in order. */
  pump() {
    clearTimeout(this.timers.pump);
    this.timers.pump = 0;
    if (!this.ready) return;
    const now = Date.now();
    this.tokens = Math.min(SEND_BURST, this.tokens + ((now - this.tokensAt) * this.sendRate) / 1000);
    this.tokensAt = now;
    if (this.sendsPausedUntil > now) {
      if (this.outbox.size) this.timers.pump = setTimeout(() => this.pump(), this.sendsPausedUntil - now);
      return;
    }
    let wake = Infinity;
    for (const [cmid, item] of this.outbox) {
      // More goes out as acks come in.
      if (this.inFlight.size >= MAX_IN_FLIGHT) return;
      if (this.inFlight.has(cmid)) continue;
      if (item.retryAt > now) {
        wake = Math.min(wake, item.retryAt);
        continue;
      }
      if (this.tokens < 1) {
        wake = Math.min(wake, now + ((1 - this.tokens) * 1000) / this.sendRate);
        break;
      }
      this.tokens -= 1;
      this.inFlight.add(cmid);
      this.ws.send(item.text);
    }
    if (wake < Infinity) this.timers.pump = setTimeout(() => this.pump(), wake - now);
  }

  /** Forgets the current connection (closing it if it is still up) and its timers. */
  detach(code = 1000) {
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    this.inFlight.clear();
    for (const k of ['handshake', 'stable', 'ping', 'pong', 'pump']) {
      clearTimeout(this.timers[k]);
      this.timers[k] = 0;
    }
    const reason = code === GAVE_UP ? 'no answer' : 'bye';
    if (ws && ws.readyState === WebSocket.CONNECTING) {
      // Closing a socket that is still connecting makes the browser log a warning (and the
      // server never hears a close): let it open, then close it.
      ws.addEventListener('open', () => ws.close(code, reason), { once: true });
    } else if (ws && ws.readyState === WebSocket.OPEN) {
      ws.close(code, reason);
    }
  }

  onClose(code, reason = '') {
    const wasReady = this.ready;
    const inFlight = [...this.inFlight];
    this.detach(GAVE_UP);
    if (this.stopped) return;
    if (code === 4003) {
      // The token is no good any more (signed out, here or on another device, or expired):
      // reconnecting with it would only be refused again.
      this.stop();
      this.emit('auth', { reason });
      return;
    }
    if (code === 1009) this.tooLarge(wasReady, inFlight);
    this.attempt += 1;
    const base = Math.min(10000, 300 * 2 ** (this.attempt - 1));
    let wait = base / 2 + (Math.random() * base) / 2;
    if (code === 4008) wait = 5000 + Math.random() * 5000;
    // Too many connections for the account: one more a second later would be refused too.
    // Wait long (another tab or device may close meanwhile); "Retry now" can cut it short.
    if (code === 4012) wait = TOO_MANY_MS + Math.random() * 5000;
    this.setState(code === 4012 ? 'limited' : 'reconnecting');
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => this.connect(), wait);
  }

  /**
   * After a 1009, makes sure the frame that was too large is not sent again. Before `ready` it
   * was the hello (positions of very many rooms): cut it down. After, it was a send; sends over
   * MAX_FRAME_BYTES never go out, so this server's limit is lower, and the largest send in
   * flight is the one: it fails, and nothing else does.
   */
  tooLarge(wasReady, inFlight) {
    if (!wasReady) {
      this.helloLevel = Math.min(2, this.helloLevel + 1);
      return;
    }
    let largest = null;
    for (const cmid of inFlight) {
      const item = this.outbox.get(cmid);
      if (item && (!largest || item.bytes > this.outbox.get(largest).bytes)) largest = cmid;
    }
    if (!largest) return;
    this.outbox.delete(largest);
    this.emit('failed', { client_msg_id: largest, code: 'too_large', message: 'Message too large.' });
  }

  /** Pings at the server's heartbeat interval (at most every 25 s); a connection that sends
   * nothing, not even the pong, within PONG_MS died without a close: drop it and resume. */
  schedulePing() {
    clearTimeout(this.timers.ping);
    this.timers.ping = setTimeout(() => {
      if (!this.ready) return;
      const sentAt = Date.now();
      this.raw({ op: 'ping' });
      if (!this.timers.pong) {
        this.timers.pong = setTimeout(() => {
          this.timers.pong = 0;
          if (this.lastRecv < sentAt) this.onClose(GAVE_UP);
        }, PONG_MS);
      }
      this.schedulePing();
    }, Math.min(this.heartbeatMs, 25000));
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

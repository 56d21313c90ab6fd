// The WebSocket half of the protocol: one resuming session per signed-in tab. It says `hello`
// with the last seq seen per room, reconnects with exponential backoff and jitter, resends
// unacknowledged sends with their original client_msg_id (the server answers a repeat with the
// first message), and reports its state so the UI can show "reconnecting".
//
// Events (CustomEvent.detail):
//   state  {state: 'connecting'|'online'|'reconnecting'}   connection changes
//   frame  {frame}                                          every server frame, after bookkeeping
//   failed {client_msg_id, code, message}                  a send the server refused for good
//   auth   {}                                               the token was refused (close 4003)

const RETRYABLE = new Set(['rate_limited', 'unavailable', 'draining']);
const TIMELINE_OPS = new Set(['message', 'edit', 'delete', 'member']);

export class Socket extends EventTarget {
  /** `url`: ws(s)://host/v1/ws; `token`: bearer token for `hello`. */
  constructor(url, token) {
    super();
    this.url = url;
    this.token = token;
    /** Last seq seen per room id: the `since` of the next hello. */
    this.positions = new Map();
    /** Unacknowledged sends by client_msg_id, in send order. */
    this.outbox = new Map();
    this.state = 'connecting';
    this.ws = null;
    this.ready = false;
    this.stopped = true;
    this.attempt = 0;
    this.everReady = false;
    this.timers = { reconnect: 0, ping: 0, retry: 0 };
    this.lastRecv = 0;
    this.pingSentAt = 0;
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
    for (const t of Object.values(this.timers)) clearTimeout(t);
    if (this.ws) this.ws.close(1000, 'bye');
    this.ws = null;
  }

  /** Skips the rest of a backoff wait (the user pressed "retry", or the network came back). */
  reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timers.reconnect);
    this.connect();
  }

  /** Queues a message; it is (re)sent on every (re)connect until acknowledged or refused. */
  sendMessage(room, clientMsgId, body) {
    const frame = { op: 'send', room, client_msg_id: clientMsgId, body };
    this.outbox.set(clientMsgId, frame);
    if (this.ready) this.raw(frame);
  }

  /** Sends an ephemeral frame (`typing`, `read`) if connected; dropped otherwise. */
  sendEphemeral(frame) {
    if (this.ready) this.raw(frame);
    return this.ready;
  }

  /** Resume from at least `seq` in `room` (a room just joined, or first seen in `ready`). */
  track(room, seq) {
    const cur = this.positions.get(room);
    if (cur === undefined || seq > cur) this.positions.set(room, seq);
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
    this.setState(this.everReady || this.attempt > 0 ? 'reconnecting' : 'connecting');
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener('open', () => {
      if (ws !== this.ws) return;
      const since = Object.fromEntries(this.positions);
      ws.send(JSON.stringify({ op: 'hello', token: this.token, since }));
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
      if (ws !== this.ws) return;
      this.onClose(e.code);
    });
  }

  onFrame(frame) {
    switch (frame.op) {
      case 'ready':
        this.ready = true;
        this.everReady = true;
        this.attempt = 0;
        this.heartbeatMs = Math.max(1000, frame.heartbeat_ms || 30000);
        this.pingSentAt = 0;
        // Rooms we had no position for start live from here; the others are being replayed
        // from their position (raising it now would skip them if we dropped mid-replay).
        for (const r of frame.rooms) if (!this.positions.has(r.id)) this.positions.set(r.id, r.last_seq);
        for (const id of [...this.positions.keys()]) {
          if (!frame.rooms.some((r) => r.id === id)) this.positions.delete(id);
        }
        this.setState('online');
        this.schedulePing();
        break;
      case 'ack':
        this.outbox.delete(frame.client_msg_id);
        break;
      case 'error':
        if (frame.client_msg_id && this.outbox.has(frame.client_msg_id)) {
          if (RETRYABLE.has(frame.code)) this.scheduleRetry();
          else {
            this.outbox.delete(frame.client_msg_id);
            this.emit('failed', { client_msg_id: frame.client_msg_id, code: frame.code, message: frame.message });
          }
        }
        break;
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
    this.emit('frame', { frame });
    // The rooms are known now: flush what waited for the connection, in order.
    if (frame.op === 'ready') for (const f of this.outbox.values()) this.raw(f);
  }

  onClose(code) {
    this.ws = null;
    this.ready = false;
    clearTimeout(this.timers.ping);
    clearTimeout(this.timers.retry);
    this.timers.retry = 0;
    if (this.stopped) return;
    if (code === 4003) {
      this.stopped = true;
      this.emit('auth', {});
      return;
    }
    if (code === 1009) {
      // One of the sends was over the frame limit: resending would loop.
      for (const id of [...this.outbox.keys()]) {
        this.outbox.delete(id);
        this.emit('failed', { client_msg_id: id, code: 'too_large', message: 'Message too large.' });
      }
    }
    this.attempt += 1;
    const base = Math.min(10000, 300 * 2 ** (this.attempt - 1));
    const wait = code === 4008 ? 5000 + Math.random() * 5000 : base / 2 + (Math.random() * base) / 2;
    this.setState('reconnecting');
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => this.connect(), wait);
  }

  /** Pings at the server's heartbeat interval; a silent connection is dropped and resumed. */
  schedulePing() {
    clearTimeout(this.timers.ping);
    const every = Math.min(this.heartbeatMs, 25000);
    this.timers.ping = setTimeout(() => {
      if (!this.ws || !this.ready) return;
      if (this.pingSentAt && this.lastRecv < this.pingSentAt) {
        // Nothing, not even the pong, since the last ping: the connection died without a close.
        const ws = this.ws;
        this.ws = null;
        ws.close(4000, 'no pong');
        this.onClose(1006);
        return;
      }
      this.pingSentAt = Date.now();
      this.raw({ op: 'ping' });
      this.schedulePing();
    }, every);
  }

  /** Resends everything unacknowledged after a retryable refusal. */
  scheduleRetry() {
    if (this.timers.retry) return;
    this.timers.retry = setTimeout(() => {
      this.timers.retry = 0;
      if (this.ready) for (const f of this.outbox.values()) this.raw(f);
    }, 500 + Math.random() * 500);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

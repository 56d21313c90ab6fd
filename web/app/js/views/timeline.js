// The message list of the open room: renders the store's timeline incrementally (a page or one
// message at a time, never the whole list per message), loads older pages when scrolled to the
// top while keeping the scroll position, sticks to the bottom for new messages, shows optimistic
// sends until they are confirmed, edits and deletes messages in place, moves the read marker
// when the newest message is on screen, and in a dm says "Seen" under our newest message once
// the other person has read it.

import { h } from '../dom.js';
import { renderBody, scalarLength } from '../text.js';
import { shortTime, fullTime, hueClass, initial, errorText, isolate } from '../format.js';
import { outranks, reportMessageDialog } from './moderation.js';

const GROUP_MS = 5 * 60 * 1000;
const NEAR_TOP_PX = 400;
const NEAR_BOTTOM_PX = 48;

export class TimelineView {
  /**
   * `els`: {scroller, list, pending, status, jump}; `actions`: {confirm(text), notify(text)}.
   */
  constructor(store, els, actions) {
    this.store = store;
    this.els = els;
    this.actions = actions;
    this.room = null;
    this.nodes = new Map();
    this.seqs = [];
    this.pendingNodes = new Map();
    /** Rooms whose older pages are being loaded (per room: another room's load must not hold
     * up this one's). */
    this.filling = new Set();
    this.loadError = false;
    this.olderError = false;
    /** The "Seen" line, and the message it is under (null: none). */
    this.receipt = h('p', { class: 'msg-receipt' }, 'Seen');
    this.receiptSeq = 0;

    els.scroller.addEventListener('scroll', () => this.onScroll(), { passive: true });
    // Stay at the newest message when the view changes size (composer grows, keyboard opens).
    this.stuck = true;
    new ResizeObserver(() => {
      if (this.stuck) els.scroller.scrollTop = els.scroller.scrollHeight;
    }).observe(els.scroller);
    els.jump.addEventListener('click', () => this.scrollToBottom());
    els.list.addEventListener('click', (e) => this.onAction(e));
    els.pending.addEventListener('click', (e) => this.onAction(e));
    els.scroller.addEventListener('keydown', (e) => this.onKey(e));
    els.scroller.addEventListener('focusin', (e) => this.onFocus(e));
    els.scroller.addEventListener('focusout', (e) => {
      if (!els.scroller.contains(e.relatedTarget)) this.onFocus({ target: els.scroller });
    });
    document.addEventListener('visibilitychange', () => this.maybeMarkRead());

    store.addEventListener('timeline', (e) => this.onTimeline(e.detail));
    store.addEventListener('pending', (e) => this.onPending(e.detail));
    store.addEventListener('user', (e) => this.onUser(e.detail.id));
    // The unread count can rise with no message to show: its live event brought one the newest
    // page had already.
    store.addEventListener('room', (e) => {
      if (this.room && e.detail.room === this.room.id) this.maybeMarkRead();
    });
    store.addEventListener('ready', () => this.maybeMarkRead());
    // The other person's read marker moved, or we learned who they are (a dm's name, too).
    for (const type of ['reads', 'members']) {
      store.addEventListener(type, (e) => {
        if (!this.room || e.detail.room !== this.room.id) return;
        this.updateSeen();
        if (type === 'members' && this.els.status.dataset.state === 'start') this.updateStatus();
      });
    }
  }

  /** Shows room `r` (or nothing for null). */
  open(r) {
    this.room = r;
    this.store.focus(r);
    this.clear();
    if (!r) return;
    if (r.loaded) this.renderAll();
    else this.load();
  }

  clear() {
    this.activeItem = null;
    this.receipt.remove();
    this.receiptSeq = 0;
    this.loadError = false;
    this.olderError = false;
    this.nodes.clear();
    this.seqs = [];
    this.pendingNodes.clear();
    this.els.list.replaceChildren();
    this.els.pending.replaceChildren();
    this.els.jump.hidden = true;
    this.updateStatus();
  }

  load() {
    const r = this.room;
    this.loadError = false;
    this.updateStatus();
    this.store.loadInitial(r).catch(() => {
      if (this.room !== r) return;
      this.loadError = true;
      this.updateStatus();
    });
  }

  // ---- rendering -------------------------------------------------------------------------------

  renderAll() {
    const r = this.room;
    const frag = document.createDocumentFragment();
    this.nodes.clear();
    this.seqs = [];
    let prev = null;
    for (const m of this.store.messages(r)) {
      const li = this.messageNode(m);
      this.group(li, prev);
      frag.append(li);
      this.nodes.set(m.seq, li);
      this.seqs.push(m.seq);
      prev = li;
    }
    this.els.list.replaceChildren(frag);
    const pfrag = document.createDocumentFragment();
    this.pendingNodes.clear();
    for (const item of r.pending.values()) {
      const li = this.pendingNode(item);
      this.pendingNodes.set(item.client_msg_id, li);
      pfrag.append(li);
    }
    this.els.pending.replaceChildren(pfrag);
    this.regroupPending();
    this.updateSeen();
    this.updateStatus();
    this.scrollToBottom();
    this.fillScreen();
  }

  /** Puts "Seen" under our newest message in a dm if the other person has read it. */
  updateSeen() {
    const r = this.room;
    const seq = r && r.loaded ? this.store.seenSeq(r) : 0;
    const li = seq ? this.nodes.get(seq) : null;
    const main = li && li.querySelector(':scope > .msg-main');
    if (!main) {
      this.receipt.remove();
      this.receiptSeq = 0;
      return;
    }
    if (this.receiptSeq === seq && this.receipt.parentNode === main) return;
    const stick = this.atBottom();
    const peer = this.store.dmPeer(r);
    const name = peer && this.store.users.get(peer);
    this.receipt.title = name ? `Seen by ${name}` : 'Seen';
    main.append(this.receipt);
    this.receiptSeq = seq;
    if (stick) this.scrollToBottom();
  }

  /** The status line above the oldest message. */
  updateStatus() {
    const r = this.room;
    const s = this.els.status;
    let text = '';
    let state = 'idle';
    if (!r) text = '';
    else if (this.loadError) {
      text = 'Could not load messages.';
      state = 'error';
    } else if (!r.loaded) {
      text = 'Loading messages…';
      state = 'loading';
    } else if (r.hasMore && this.olderError) {
      text = 'Could not load earlier messages.';
      state = 'error';
    } else if (r.hasMore) {
      text = 'Loading earlier messages…';
      state = 'more';
    } else {
      text = `This is the beginning of ${isolate(this.store.title(r))}.`;
      state = 'start';
    }
    s.textContent = text;
    s.dataset.state = state;
    if (state === 'error') {
      const retry = () => (r.loaded ? this.fillScreen() : this.load());
      s.append(' ', h('button', { type: 'button', class: 'link-button', on: { click: retry } }, 'Retry'));
    }
  }

  messageNode(m) {
    const me = this.store.me.id;
    const own = m.author === me;
    const li = h('li', {
      class: `msg${own ? ' own' : ''}${m.deleted ? ' deleted' : ''}`,
      tabindex: '-1',
      dataset: { seq: String(m.seq), id: m.id, author: m.author, ts: m.ts },
    });
    this.fillMessage(li, m);
    return li;
  }

  /** (Re)builds the inside of a message's <li> from the message. */
  fillMessage(li, m) {
    const name = this.store.username(m.author);
    const own = m.author === this.store.me.id;
    const avatar = h(
      'span',
      { class: `avatar ${hueClass(m.author)}`, 'aria-hidden': 'true', dataset: { user: m.author, part: 'initial' } },
      initial(name || ''),
      h('span', { class: 'presence', dataset: { user: m.author } }),
    );
    const head = h(
      'div',
      { class: 'msg-head' },
      h('bdi', { class: 'author', dataset: { user: m.author } }, name || '…'),
      h('time', { class: 'msg-time', datetime: m.ts, title: fullTime(m.ts) }, shortTime(m.ts)),
      m.edited_at && !m.deleted ? h('span', { class: 'msg-edited', title: `Edited ${fullTime(m.edited_at)}` }, '(edited)') : null,
    );
    const body = m.deleted
      ? h('div', { class: 'msg-body msg-deleted' }, 'Message deleted')
      : h('div', { class: 'msg-body', dir: 'auto' }, renderBody(m.body));
    const main = h('div', { class: 'msg-main' }, head, body, this.actionsFor(m, own));
    li.classList.toggle('deleted', !!m.deleted);
    li.replaceChildren(avatar, main);
    if (li === this.activeItem) for (const b of li.querySelectorAll('.msg-actions button')) b.tabIndex = 0;
  }

  actionsFor(m, own) {
    if (m.deleted) return null;
    const r = this.room;
    // A dm has no owner: neither person may delete the other's messages (whatever role an
    // older server gave its creator). A moderator deletes only the messages of those they
    // outrank (while the member list is loaded; else the server decides).
    const authorRole = r.members ? r.members.get(m.author) : undefined;
    const moderates = !own && this.store.moderates(r) && (!r.members || outranks(r.role, authorRole));
    // Anyone may report someone else's message in a room that has moderators.
    const reportable = !own && r.kind !== 'dm';
    if (!own && !moderates && !reportable) return null;
    const button = (action, label, danger) =>
      h('button', { type: 'button', class: `icon-button${danger ? ' danger' : ''}`, tabindex: '-1', dataset: { action }, 'aria-label': `${label} message`, title: label }, label);
    return h(
      'div',
      { class: 'msg-actions' },
      own ? button('edit', 'Edit') : null,
      reportable ? button('report', 'Report') : null,
      own || moderates ? button('delete', 'Delete', true) : null,
    );
  }

  pendingNode(item) {
    const li = h('li', {
      class: 'msg own pending',
      dataset: { cmid: item.client_msg_id, author: this.store.me.id, ts: item.ts },
    });
    this.fillPending(li, item);
    return li;
  }

  fillPending(li, item) {
    const me = this.store.me;
    const failed = item.state === 'failed';
    const throttled = item.state === 'throttled';
    li.classList.toggle('failed', failed);
    li.classList.toggle('throttled', throttled);
    let status;
    if (failed) {
      status = h(
        'div',
        { class: 'msg-status', role: 'alert' },
        h('span', {}, `Not sent: ${item.error || 'error'}`),
        h('button', { type: 'button', class: 'link-button', dataset: { action: 'retry' } }, 'Retry'),
        h('button', { type: 'button', class: 'link-button', dataset: { action: 'discard' } }, 'Discard'),
      );
    } else if (throttled) {
      // Nothing for the user to do: it goes by itself once the server takes it.
      status = h('div', { class: 'msg-status' }, item.error || 'Retrying…');
    } else {
      status = h('div', { class: 'msg-status' }, 'Sending…');
    }
    li.replaceChildren(
      h('span', { class: `avatar ${hueClass(me.id)}`, 'aria-hidden': 'true' }, initial(me.username)),
      h(
        'div',
        { class: 'msg-main' },
        h('div', { class: 'msg-head' }, h('bdi', { class: 'author' }, me.username), h('time', { class: 'msg-time', datetime: item.ts }, shortTime(item.ts))),
        h('div', { class: 'msg-body', dir: 'auto' }, renderBody(item.body)),
        status,
      ),
    );
  }

  /** Marks `li` as a continuation of `prev` (same author within a few minutes). */
  group(li, prev) {
    let cont = false;
    if (prev && prev.dataset.author === li.dataset.author && !prev.classList.contains('deleted')) {
      const dt = Date.parse(li.dataset.ts) - Date.parse(prev.dataset.ts);
      cont = dt >= 0 && dt < GROUP_MS;
    }
    li.classList.toggle('continued', cont);
  }

  regroupPending() {
    let prev = this.els.list.lastElementChild;
    for (const li of this.els.pending.children) {
      this.group(li, prev);
      prev = li;
    }
  }

  // ---- store events ----------------------------------------------------------------------------

  onTimeline(d) {
    const r = this.room;
    if (!r || d.room !== r.id) return;
    switch (d.type) {
      case 'loaded':
        this.loadError = false;
        this.renderAll();
        this.maybeMarkRead();
        break;
      case 'reset':
        this.clear();
        this.load();
        break;
      case 'older':
        this.prepend(d.msgs);
        this.dropPending(d.replaced);
        break;
      case 'insert':
        if (r.loaded) this.insert(d.msgs, d.replaced);
        break;
      case 'update':
        for (const m of d.msgs) {
          const li = this.nodes.get(m.seq);
          if (li && !li.classList.contains('editing')) this.fillMessage(li, m);
        }
        this.updateSeen();
        break;
      default:
        break;
    }
  }

  onPending(d) {
    if (!this.room || d.room !== this.room.id) return;
    const cmid = d.item.client_msg_id;
    if (d.type === 'add') {
      const li = this.pendingNode(d.item);
      this.pendingNodes.set(cmid, li);
      this.els.pending.append(li);
      this.regroupPending();
      this.updateSeen();
      this.scrollToBottom();
    } else if (d.type === 'update') {
      const li = this.pendingNodes.get(cmid);
      if (li) this.fillPending(li, d.item);
    } else if (d.type === 'remove') {
      this.pendingNodes.get(cmid)?.remove();
      this.pendingNodes.delete(cmid);
      this.regroupPending();
      this.updateSeen();
    }
  }

  onUser(id) {
    const name = this.store.users.get(id);
    if (!name) return;
    const sel = `[data-user="${CSS.escape(id)}"]`;
    for (const el of this.els.list.querySelectorAll(`bdi.author${sel}`)) el.textContent = name;
    for (const el of this.els.list.querySelectorAll(`.avatar${sel}`)) el.firstChild.textContent = initial(name);
  }

  /** Removes the optimistic copies of sends that are confirmed now. */
  dropPending(cmids) {
    for (const cmid of cmids) {
      this.pendingNodes.get(cmid)?.remove();
      this.pendingNodes.delete(cmid);
    }
    if (cmids.length) this.regroupPending();
  }

  /** Inserts new messages at their seq positions; own confirmed messages replace their copies. */
  insert(msgs, replaced = []) {
    const stick = this.atBottom() || replaced.length > 0;
    this.dropPending(replaced);
    let fromOthers = false;
    for (const m of [...msgs].sort((a, b) => a.seq - b.seq)) {
      if (this.nodes.has(m.seq)) continue;
      const li = this.messageNode(m);
      const i = upperBound(this.seqs, m.seq);
      const next = i < this.seqs.length ? this.nodes.get(this.seqs[i]) : null;
      this.els.list.insertBefore(li, next);
      this.seqs.splice(i, 0, m.seq);
      this.nodes.set(m.seq, li);
      this.group(li, li.previousElementSibling);
      if (next) this.group(next, li);
      if (m.author !== this.store.me.id) fromOthers = true;
    }
    this.regroupPending();
    this.updateSeen();
    if (stick) this.scrollToBottom();
    else if (fromOthers) this.els.jump.hidden = false;
    this.maybeMarkRead();
    // New messages from others are read out by screen readers (older pages are not).
    const last = msgs.filter((m) => m.author !== this.store.me.id && !m.deleted).at(-1);
    if (last && this.els.announcer) {
      this.els.announcer.textContent = `${this.store.users.get(last.author) || 'Someone'}: ${last.body.slice(0, 300)}`;
    }
  }

  /** Adds an older page above, keeping what the user looks at in place. */
  prepend(msgs) {
    const sc = this.els.scroller;
    const fromBottom = sc.scrollHeight - sc.scrollTop;
    const first = this.seqs.length ? this.seqs[0] : Infinity;
    const older = msgs.filter((m) => m.seq < first && !this.nodes.has(m.seq)).sort((a, b) => a.seq - b.seq);
    const frag = document.createDocumentFragment();
    let prev = null;
    for (const m of older) {
      const li = this.messageNode(m);
      this.group(li, prev);
      this.nodes.set(m.seq, li);
      frag.append(li);
      prev = li;
    }
    const oldFirst = this.els.list.firstElementChild;
    this.els.list.prepend(frag);
    this.seqs = older.map((m) => m.seq).concat(this.seqs);
    if (oldFirst) this.group(oldFirst, oldFirst.previousElementSibling);
    // Anything that was not older than what we had (rare) goes in at its place.
    const rest = msgs.filter((m) => !this.nodes.has(m.seq));
    if (rest.length) this.insert(rest);
    this.updateStatus();
    sc.scrollTop = sc.scrollHeight - fromBottom;
  }

  // ---- scrolling and reading -------------------------------------------------------------------

  atBottom() {
    const sc = this.els.scroller;
    return sc.scrollHeight - sc.scrollTop - sc.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    const sc = this.els.scroller;
    sc.scrollTop = sc.scrollHeight;
    this.stuck = true;
    this.els.jump.hidden = true;
    this.maybeMarkRead();
  }

  onScroll() {
    this.stuck = this.atBottom();
    if (this.stuck) {
      this.els.jump.hidden = true;
      this.maybeMarkRead();
    }
    if (this.els.scroller.scrollTop < NEAR_TOP_PX) this.fillScreen();
  }

  /** Loads older pages while the top of the list is near (or the list does not fill the view). */
  async fillScreen() {
    const r = this.room;
    if (!r || !r.loaded || !r.hasMore || this.filling.has(r)) return;
    this.filling.add(r);
    this.olderError = false;
    const gen = r.gen;
    try {
      while (this.room === r && r.loaded && r.hasMore && this.els.scroller.scrollTop < NEAR_TOP_PX) {
        const added = await this.store.loadOlder(r);
        if (!added.length && r.hasMore) break;
      }
    } catch {
      if (this.room === r) this.olderError = true;
    } finally {
      this.filling.delete(r);
      if (this.room === r) this.updateStatus();
      // A trim or a gap cut this load short while the guard kept the room, shown afresh, from
      // starting its own: go on with it.
      if (r.gen !== gen) this.fillScreen();
    }
  }

  /** Moves the read marker when the newest message is visible to the user. */
  maybeMarkRead() {
    const r = this.room;
    if (!r || !r.loaded || document.visibilityState !== 'visible' || !this.atBottom()) return;
    this.store.markRead(r);
  }

  // ---- keyboard ------------------------------------------------------------------------------
  // The list is one tab stop: arrow keys move between messages, and Tab from a message reaches
  // its buttons (which are otherwise out of the tab order, so a long history is not a long
  // walk to the composer).

  onKey(e) {
    if (e.target.closest('.edit-form')) return;
    const items = () => [...this.els.list.children, ...this.els.pending.children];
    const cur = e.target.closest('li.msg');
    let next = null;
    if (e.key === 'ArrowUp' || e.key === 'ArrowDown') {
      const list = items();
      if (!list.length) return;
      const i = cur ? list.indexOf(cur) : list.length;
      next = list[Math.max(0, Math.min(list.length - 1, i + (e.key === 'ArrowUp' ? -1 : 1)))];
    } else if ((e.key === 'Home' || e.key === 'End') && (cur || e.target === this.els.scroller)) {
      const list = items();
      next = e.key === 'Home' ? list[0] : list[list.length - 1];
      if (e.key === 'Home') this.fillScreen();
    } else if (e.key === 'Escape' && cur) {
      next = null;
      this.els.scroller.focus();
      e.preventDefault();
      return;
    }
    if (!next) return;
    e.preventDefault();
    next.setAttribute('tabindex', '-1');
    next.focus({ preventScroll: true });
    next.scrollIntoView({ block: 'nearest' });
  }

  onFocus(e) {
    const li = e.target.closest('li.msg');
    if (li === this.activeItem) return;
    if (this.activeItem) for (const b of this.activeItem.querySelectorAll('.msg-actions button')) b.tabIndex = -1;
    this.activeItem = li;
    if (li) for (const b of li.querySelectorAll('.msg-actions button')) b.tabIndex = 0;
  }

  // ---- actions on messages ---------------------------------------------------------------------

  onAction(e) {
    const btn = e.target.closest('button[data-action]');
    if (!btn) return;
    const li = btn.closest('li.msg');
    const r = this.room;
    if (!li || !r) return;
    const action = btn.dataset.action;
    if (action === 'retry') this.store.retry(r, li.dataset.cmid);
    else if (action === 'discard') this.store.discard(r, li.dataset.cmid);
    else {
      const m = r.msgs.get(Number(li.dataset.seq));
      if (!m) return;
      if (action === 'edit') this.startEdit(li, m, li);
      else if (action === 'delete') this.confirmDelete(m);
      else if (action === 'report') reportMessageDialog(this.store, r, m, this.actions.notify);
    }
  }

  /** Edits the newest own message (Up arrow in an empty composer). */
  editLast() {
    for (let i = this.seqs.length - 1; i >= 0; i -= 1) {
      const m = this.room.msgs.get(this.seqs[i]);
      if (m && m.author === this.store.me.id && !m.deleted) {
        this.startEdit(this.nodes.get(m.seq), m, document.activeElement);
        return true;
      }
    }
    return false;
  }

  /** Edits `m` in place; afterwards focus goes back to `returnTo` (the composer or the message). */
  startEdit(li, m, returnTo) {
    if (li.classList.contains('editing')) return;
    const r = this.room;
    li.classList.add('editing');
    const body = li.querySelector('.msg-body');
    const input = h('textarea', { class: 'edit-input', rows: '1', 'aria-label': 'Edit message', dir: 'auto' });
    input.value = m.body;
    const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const done = () => {
      const hadFocus = li.contains(document.activeElement);
      li.classList.remove('editing');
      const cur = r.msgs.get(m.seq);
      if (cur) this.fillMessage(li, cur);
      if (this.room === r) this.updateSeen();
      if (hadFocus && returnTo && returnTo.isConnected) returnTo.focus({ preventScroll: true });
    };
    const save = async () => {
      const text = input.value;
      if (!text.trim()) {
        error.textContent = 'A message cannot be empty. Delete it instead.';
        error.hidden = false;
        return;
      }
      if (text === m.body) return done();
      if (scalarLength(text) > 4000) {
        error.textContent = 'That is longer than 4,000 characters.';
        error.hidden = false;
        return;
      }
      form.inert = true;
      try {
        await this.store.editMessage(r, m, text);
        done();
      } catch (err) {
        form.inert = false;
        error.textContent = errorText(err);
        error.hidden = false;
      }
    };
    const form = h(
      'form',
      {
        class: 'edit-form',
        on: {
          submit: (e) => {
            e.preventDefault();
            save();
          },
        },
      },
      input,
      error,
      h(
        'div',
        { class: 'edit-buttons' },
        h('span', { class: 'hint' }, 'Enter to save · Esc to cancel'),
        h('button', { type: 'button', class: 'button subtle', on: { click: done } }, 'Cancel'),
        h('button', { type: 'submit', class: 'button primary' }, 'Save'),
      ),
    );
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        e.preventDefault();
        e.stopPropagation();
        done();
      } else if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        save();
      }
    });
    input.addEventListener('input', () => autosize(input));
    body.replaceWith(form);
    li.querySelector('.msg-actions')?.remove();
    autosize(input);
    input.focus({ preventScroll: true });
    input.setSelectionRange(input.value.length, input.value.length);
    form.scrollIntoView({ block: 'nearest' });
  }

  async confirmDelete(m) {
    // The message's room, whichever is open once the user has answered.
    const r = this.room;
    if (!(await this.actions.confirm('Delete this message?', 'Delete'))) return;
    try {
      await this.store.deleteMessage(r, m);
    } catch (err) {
      this.actions.notify(errorText(err));
    }
  }
}

/** First index in sorted `arr` whose value is greater than `x`. */
function upperBound(arr, x) {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (arr[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Grows a textarea with its content (up to the CSS max-height). */
export function autosize(el) {
  el.style.height = 'auto';
  el.style.height = `${el.scrollHeight}px`;
}

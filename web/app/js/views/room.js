// The open room around the message list: its header (name; in a dm the other person's presence
// ("Online", "Away", "last seen 5 min ago") and custom status, in other rooms "N members · M
// online"; the member list, invite and leave; block or unblock the other person of a dm),
// the composer (Enter sends, Shift+Enter is a newline, drafts kept per room, typing
// notifications) and the "alice is typing…" line.

import { $, h } from '../dom.js';
import { icon } from '../icons.js';
import { scalarLength } from '../text.js';
import { isolate, presenceText } from '../format.js';
import { autosize } from './timeline.js';

const MAX_BODY = 4000;

export class RoomView {
  constructor(store, timeline, { onInvite, onLeave, onBlock, onMembers, onReports }) {
    this.store = store;
    this.timeline = timeline;
    this.room = null;
    this.drafts = new Map();
    this.title = $('#room-title');
    this.meta = $('#room-meta');
    this.kindIcon = $('#room-kind');
    this.invite = $('#invite-button');
    this.membersButton = $('#members-button');
    this.reportsButton = $('#reports-button');
    this.reportsCount = $('#reports-count');
    this.leave = $('#leave-button');
    this.block = $('#block-button');
    this.form = $('#composer');
    this.input = $('#composer-input');
    this.error = $('#composer-error');
    this.typingEl = $('#typing');

    this.invite.addEventListener('click', () => this.room && onInvite(this.room));
    this.membersButton.addEventListener('click', () => this.room && onMembers(this.room));
    this.reportsButton.addEventListener('click', () => this.room && onReports(this.room));
    store.addEventListener('reports', (e) => {
      if (this.room && e.detail.room === this.room.id) this.renderHeader();
    });
    this.leave.addEventListener('click', () => this.room && onLeave(this.room));
    this.block.addEventListener('click', () => {
      const peer = this.room && this.store.dmPeer(this.room);
      if (peer) onBlock(peer, !this.store.blocked.has(peer));
    });
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    this.input.addEventListener('keydown', (e) => this.onKey(e));
    this.input.addEventListener('input', () => {
      autosize(this.input);
      this.error.hidden = true;
      if (this.room && this.input.value.trim()) this.store.typing(this.room);
    });

    store.addEventListener('room', (e) => {
      if (this.room && e.detail.room === this.room.id) this.renderHeader();
    });
    store.addEventListener('rooms', () => this.room && this.renderHeader());
    store.addEventListener('members', (e) => {
      if (this.room && e.detail.room === this.room.id) this.renderHeader();
    });
    store.addEventListener('typing', (e) => {
      if (this.room && e.detail.room === this.room.id) this.renderTyping();
    });
    store.addEventListener('user', () => this.room && this.renderTyping());
    store.addEventListener('blocks', () => this.room && this.renderHeader());
    store.addEventListener('presence', () => this.room && this.renderHeader());
    // Read markers that moved while we were away come with the member list (`read_seq`).
    store.addEventListener('ready', () => this.room && this.room.kind === 'dm' && this.store.loadMembers(this.room, { force: true }));
  }

  open(r) {
    if (this.room) this.drafts.set(this.room.id, this.input.value);
    this.room = r;
    this.timeline.open(r);
    if (!r) return;
    this.input.value = this.drafts.get(r.id) || '';
    autosize(this.input);
    this.error.hidden = true;
    // A dm's member list carries the other person's read marker: fresh for its "Seen".
    this.store.loadMembers(r, { force: r.kind === 'dm' });
    // Moderators see how many reports are open (live after this).
    if (this.store.moderates(r) && !r.reports) this.store.loadReports(r).catch(() => {});
    this.renderHeader();
    this.renderTyping();
  }

  renderHeader() {
    const r = this.room;
    const title = this.store.title(r);
    this.title.textContent = title;
    this.kindIcon.replaceChildren(icon(r.kind === 'dm' ? 'chat' : r.kind === 'private' ? 'lock' : 'hash'));
    const kind = { public: 'Public room', private: 'Private room', dm: 'Direct message' }[r.kind] || '';
    const n = r.members ? r.members.size : r.memberCount;
    const peer = this.store.dmPeer(r);
    const blocked = !!peer && this.store.blocked.has(peer);
    const parts = [];
    if (r.kind === 'dm') {
      // The other person's presence (none across a block), and their custom status as text.
      const p = peer && !blocked ? this.store.presenceOf(peer) : null;
      if (p) {
        parts.push(h('span', { class: 'status-dot', dataset: { status: p.status }, 'aria-hidden': 'true' }), presenceText(p, { capital: true }));
        if (p.text) parts.push(' · ', h('bdi', { class: 'status-text', dir: 'auto' }, p.text));
      } else parts.push(kind);
    } else {
      parts.push(kind);
      if (n !== null) parts.push(` · ${n} member${n === 1 ? '' : 's'}`);
      const online = this.store.onlineIn(r);
      if (online !== null) parts.push(` · ${online} online`);
    }
    if (blocked) parts.push(' · Blocked');
    const moderates = this.store.moderates(r);
    this.reportsButton.hidden = !moderates;
    const open = moderates && r.reports ? r.reports.size : 0;
    this.reportsCount.hidden = open === 0;
    this.reportsCount.textContent = String(open);
    this.reportsButton.setAttribute('aria-label', open ? `Reports, ${open} open` : 'Reports');
    this.meta.replaceChildren(...parts.map((p) => (typeof p === 'string' ? document.createTextNode(p) : p)));
    this.meta.removeAttribute('title');
    if (r.members && r.kind !== 'dm') {
      const names = [...r.members.keys()].map((id) => this.store.users.get(id) || '…');
      this.meta.title = names.join(', ');
    }
    this.invite.hidden = r.kind === 'dm';
    // Only in a dm, once we know who the other person is.
    this.block.hidden = !peer;
    this.block.textContent = blocked ? 'Unblock' : 'Block';
    this.input.placeholder = r.kind === 'dm' ? `Message ${isolate(title)}` : `Message #${isolate(title)}`;
  }

  renderTyping() {
    const r = this.room;
    const names = [...r.typing.keys()].map((id) => this.store.users.get(id)).filter(Boolean);
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = 'Several people are typing…';
    if (this.typingEl.textContent !== text) this.typingEl.textContent = text;
  }

  onKey(e) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
      e.preventDefault();
      this.submit();
    } else if (e.key === 'ArrowUp' && this.input.value === '' && this.room) {
      if (this.timeline.editLast()) e.preventDefault();
    }
  }

  submit() {
    const r = this.room;
    if (!r) return;
    const body = this.input.value.replace(/\s+$/u, '');
    if (!body.trim()) return;
    if (scalarLength(body) > MAX_BODY) {
      this.error.textContent = `Messages are at most ${MAX_BODY.toLocaleString()} characters (this one has ${scalarLength(body).toLocaleString()}).`;
      this.error.hidden = false;
      return;
    }
    this.store.send(r, body);
    this.input.value = '';
    this.drafts.delete(r.id);
    autosize(this.input);
    this.input.focus();
  }

  focusComposer() {
    this.input.focus();
  }
}

// The open room around the message list: its header (name, kind, members, invite and leave;
// block or unblock the other person of a dm),
// the composer (Enter sends, Shift+Enter is a newline, drafts kept per room, typing
// notifications) and the "alice is typing…" line.

import { $ } from '../dom.js';
import { icon } from '../icons.js';
import { scalarLength } from '../text.js';
import { isolate } from '../format.js';
import { autosize } from './timeline.js';

const MAX_BODY = 4000;

export class RoomView {
  constructor(store, timeline, { onInvite, onLeave, onBlock }) {
    this.store = store;
    this.timeline = timeline;
    this.room = null;
    this.drafts = new Map();
    this.title = $('#room-title');
    this.meta = $('#room-meta');
    this.kindIcon = $('#room-kind');
    this.invite = $('#invite-button');
    this.leave = $('#leave-button');
    this.block = $('#block-button');
    this.form = $('#composer');
    this.input = $('#composer-input');
    this.error = $('#composer-error');
    this.typingEl = $('#typing');

    this.invite.addEventListener('click', () => this.room && onInvite(this.room));
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
  }

  open(r) {
    if (this.room) this.drafts.set(this.room.id, this.input.value);
    this.room = r;
    this.timeline.open(r);
    if (!r) return;
    this.input.value = this.drafts.get(r.id) || '';
    autosize(this.input);
    this.error.hidden = true;
    this.store.loadMembers(r);
    this.renderHeader();
    this.renderTyping();
  }

  renderHeader() {
    const r = this.room;
    const title = this.store.title(r);
    this.title.textContent = title;
    this.kindIcon.replaceChildren(icon(r.kind === 'dm' ? 'chat' : r.kind === 'private' ? 'lock' : 'hash'));
    const kind = { public: 'Public room', private: 'Private room', dm: 'Direct message' }[r.kind] || '';
    const n = r.members ? r.members.size : null;
    const peer = this.store.dmPeer(r);
    const blocked = !!peer && this.store.blocked.has(peer);
    this.meta.textContent = (n === null ? kind : `${kind} · ${n} member${n === 1 ? '' : 's'}`) + (blocked ? ' · Blocked' : '');
    if (r.members) {
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

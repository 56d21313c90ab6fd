// The room list: invitations waiting for an answer (Accept / Decline), then rooms and direct
// messages, each a real link to the room (#/r/<id>) with its unread count; a dm shows the other
// person's presence as a dot on their avatar (and says it in the link's label). The list is
// rebuilt only when rooms come or go; a new message, a read marker or a presence change updates
// just that room's entry.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { hueClass, initial, presenceText } from '../format.js';

export class Sidebar {
  /** `actions`: {accept(invite), decline(invite)}, each resolving when done (or failed). */
  constructor(store, els, actions) {
    this.store = store;
    this.els = els; // {rooms, dms, roomsEmpty, dmsEmpty, invites, invitesSection}
    this.actions = actions;
    this.items = new Map();
    this.active = null;
    /** Invitations being answered (their buttons stay disabled across re-renders). */
    this.answering = new Set();
    store.addEventListener('invites', () => this.renderInvites());
    store.addEventListener('rooms', () => this.render());
    store.addEventListener('room', (e) => this.update(e.detail.room));
    store.addEventListener('presence', (e) => this.paintPresence(e.detail.user));
    // A username matters here only as the name of a dm.
    store.addEventListener('user', (e) => {
      for (const r of store.rooms.values()) {
        if (r.kind === 'dm' && !r.name && r.members && r.members.has(e.detail.id)) return this.renderSoon();
      }
    });
  }

  /** Re-renders once per frame at most (usernames arrive in bursts). */
  renderSoon() {
    if (this.pendingRender) return;
    this.pendingRender = requestAnimationFrame(() => {
      this.pendingRender = 0;
      this.render();
    });
  }

  render() {
    const { rooms, dms } = this.store.sortedRooms();
    // Keep keyboard focus on the same room across the rebuild.
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest('.room-link');
    const focusedId = focused ? focused.dataset.room : null;
    this.items.clear();
    this.els.rooms.replaceChildren(...rooms.map((r) => this.item(r)));
    this.els.dms.replaceChildren(...dms.map((r) => this.item(r)));
    this.els.roomsEmpty.hidden = rooms.length > 0;
    this.els.dmsEmpty.hidden = dms.length > 0;
    if (focusedId && this.items.has(focusedId)) this.items.get(focusedId).link.focus();
  }

  renderInvites() {
    const list = this.store.sortedInvites();
    const el = this.els.invites;
    // Keep keyboard focus in the list when the item that had it goes (answered): on the next
    // one, or, with none left, on the first room.
    const focusedLi = document.activeElement && el.contains(document.activeElement) ? document.activeElement.closest('li') : null;
    const focusedRoom = focusedLi ? focusedLi.dataset.room : null;
    const index = focusedLi ? [...el.children].indexOf(focusedLi) : -1;
    const focusedAction = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.action : null;
    el.replaceChildren(...list.map((inv) => this.inviteItem(inv)));
    this.els.invitesSection.hidden = list.length === 0;
    if (!focusedLi) return;
    const same = [...el.children].find((li) => li.dataset.room === focusedRoom);
    const next = same || el.children[Math.min(index, el.children.length - 1)];
    const target = next
      ? next.querySelector(`button[data-action="${same ? focusedAction : 'accept'}"]`) || next.querySelector('button')
      : document.querySelector('#room-list .room-link, #dm-list .room-link, #new-room-button');
    if (target) target.focus();
  }

  inviteItem(inv) {
    const id = `invite-${inv.room.id}`;
    const busy = this.answering.has(inv.room.id);
    const answer = (action) => async () => {
      this.answering.add(inv.room.id);
      for (const b of li.querySelectorAll('button')) b.disabled = true;
      try {
        await this.actions[action](inv);
      } finally {
        this.answering.delete(inv.room.id);
        for (const b of li.querySelectorAll('button')) b.disabled = false;
      }
    };
    // The buttons are named just "Accept" and "Decline"; the item's text says what for (and
    // is their description, so a screen reader on the button hears it too).
    const li = h(
      'li',
      { class: 'invite-item', dataset: { room: inv.room.id } },
      h(
        'div',
        { class: 'invite-text', id },
        icon(inv.room.kind === 'private' ? 'lock' : 'hash', 'room-icon'),
        h('span', { class: 'invite-words' }, h('bdi', { class: 'room-name' }, inv.room.name || 'Unnamed room'), h('span', { class: 'hint invite-from' }, 'from ', h('bdi', {}, inv.inviter.username))),
      ),
      h(
        'div',
        { class: 'invite-buttons' },
        h('button', { type: 'button', class: 'button primary small', dataset: { action: 'accept' }, 'aria-describedby': id, disabled: busy, on: { click: answer('accept') } }, 'Accept'),
        h('button', { type: 'button', class: 'button subtle small', dataset: { action: 'decline' }, 'aria-describedby': id, disabled: busy, on: { click: answer('decline') } }, 'Decline'),
      ),
    );
    return li;
  }

  item(r) {
    const title = this.store.title(r);
    let lead;
    if (r.kind === 'dm') {
      const other = r.members && [...r.members.keys()].find((id) => id !== this.store.me.id);
      lead = h('span', { class: `avatar small ${other ? hueClass(other) : ''}`, 'aria-hidden': 'true' }, initial(title), h('span', { class: 'presence', dataset: { user: other || '' } }));
    } else {
      lead = icon(r.kind === 'private' ? 'lock' : 'hash', 'room-icon');
    }
    const badge = h('span', { class: 'badge' });
    const link = h(
      'a',
      { class: 'room-link', href: `#/r/${encodeURIComponent(r.id)}`, dataset: { room: r.id, kind: r.kind } },
      lead,
      h('bdi', { class: 'room-name' }, title),
      badge,
    );
    const li = h('li', {}, link);
    this.items.set(r.id, { link, badge, dot: r.kind === 'dm' ? lead.querySelector('.presence') : null });
    this.paint(r);
    return li;
  }

  paint(r) {
    const it = this.items.get(r.id);
    if (!it) return;
    const n = r.unread;
    it.badge.textContent = n > 0 ? (n > 99 ? '99+' : String(n)) : '';
    it.badge.hidden = n === 0;
    it.link.classList.toggle('unread', n > 0);
    // A dm's dot: the other person's presence (none when we know nothing, as across a block).
    let status = '';
    if (it.dot) {
      const peer = this.store.dmPeer(r);
      const p = peer ? this.store.presenceOf(peer) : null;
      status = p ? presenceText(p) : '';
      if (p) {
        it.dot.dataset.status = p.status;
        it.dot.title = status;
      } else {
        delete it.dot.dataset.status;
        it.dot.removeAttribute('title');
      }
    }
    it.link.setAttribute('aria-label', `${this.store.title(r)}${status ? `, ${status}` : ''}${n > 0 ? `, ${n} unread` : ''}`);
    const active = r.id === this.active;
    it.link.classList.toggle('active', active);
    if (active) it.link.setAttribute('aria-current', 'page');
    else it.link.removeAttribute('aria-current');
  }

  update(id) {
    const r = this.store.rooms.get(id);
    if (!r) return;
    const it = this.items.get(id);
    if (it && it.link.querySelector('.room-name').textContent !== this.store.title(r)) this.renderSoon();
    else this.paint(r);
  }

  /** Repaints the dms with `user` (null: all of them; also as time passes, for "last seen"). */
  paintPresence(user = null) {
    for (const r of this.store.rooms.values()) {
      if (r.kind !== 'dm') continue;
      if (user === null || this.store.dmPeer(r) === user) this.paint(r);
    }
  }

  setActive(id) {
    const prev = this.active;
    this.active = id;
    for (const rid of [prev, id]) {
      const r = rid && this.store.rooms.get(rid);
      if (r) this.paint(r);
    }
  }
}

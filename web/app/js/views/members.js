// The member list of a room (the header's "Members" button): everyone in it with their presence
// (a dot, and "Online", "Away" or "last seen 5 min ago" in words), their custom status (as text,
// bidi-isolated) and their role. It loads the list afresh and asks for the presence of its first
// 200 members (GET /v1/presence: people in large rooms get no presence frames), then stays live
// with presence frames and member events while it is open.

import { h } from '../dom.js';
import { hueClass, initial, isolate, presenceText } from '../format.js';
import { PRESENCE_BATCH } from '../store.js';
import { formDialog } from './dialogs.js';
import { memberActions } from './moderation.js';

/** How often "last seen 5 min ago" is brought up to date while the list is open. */
const CLOCK_MS = 30000;
const RANK = { online: 0, away: 1, offline: 2 };
const ROLES = { owner: 'Owner', admin: 'Admin', moderator: 'Moderator' };

export function membersDialog(store, r, notify = () => {}) {
  const summary = h('p', { class: 'hint members-summary' }, 'Loading members…');
  const list = h('ul', { class: 'member-list', 'aria-label': 'Members' });
  let failed = false;

  /** What we know of someone's presence; we are online ourselves (this tab is in use). */
  const presenceOf = (id) => (id === store.me.id ? { status: 'online', lastSeen: null, text: store.presenceOf(id)?.text ?? null } : store.presenceOf(id));

  const item = (id, role) => {
    const name = store.users.get(id) || store.username(id) || '…';
    const p = presenceOf(id);
    const words = p ? presenceText(p, { capital: true }) : '';
    const dot = h('span', { class: 'presence', title: words || null });
    if (p) dot.dataset.status = p.status;
    return h(
      'li',
      { class: 'member-item', dataset: { user: id, status: p ? p.status : 'unknown' } },
      h('span', { class: `avatar small ${hueClass(id)}`, 'aria-hidden': 'true' }, initial(name), dot),
      h(
        'div',
        { class: 'member-text' },
        h(
          'div',
          { class: 'member-line' },
          h('bdi', { class: 'member-name' }, name),
          id === store.me.id ? h('span', { class: 'hint member-you' }, '(you)') : null,
          ROLES[role] ? h('span', { class: 'member-role' }, ROLES[role]) : null,
        ),
        h(
          'div',
          { class: 'member-status' },
          words ? h('span', { class: 'member-presence' }, words) : null,
          words && p.text ? ' · ' : null,
          p && p.text ? h('bdi', { class: 'status-text', dir: 'auto' }, p.text) : null,
        ),
        memberActions(store, r, id, role, notify),
      ),
    );
  };

  const render = () => {
    if (!r.members) {
      summary.textContent = failed ? 'Could not load the members.' : 'Loading members…';
      return;
    }
    const rank = (id) => {
      const p = presenceOf(id);
      return p ? RANK[p.status] : 3;
    };
    const name = (id) => store.users.get(id) || '';
    const ids = [...r.members.keys()].sort((a, b) => rank(a) - rank(b) || name(a).localeCompare(name(b)) || a.localeCompare(b));
    const n = ids.length;
    const online = store.onlineIn(r);
    summary.textContent = `${n} member${n === 1 ? '' : 's'}${online !== null ? ` · ${online} online` : ''}`;
    list.replaceChildren(...ids.map((id) => item(id, r.members.get(id))));
  };

  // Re-rendered at most once a frame (presence and usernames arrive in bursts).
  let frame = 0;
  const soon = () => {
    if (!frame) frame = requestAnimationFrame(() => ((frame = 0), render()));
  };
  const fetchPresence = () => {
    if (r.members) store.fetchPresence([...r.members.keys()].slice(0, PRESENCE_BATCH));
  };
  const load = () =>
    store.loadMembers(r, { force: true }).then(() => {
      failed = !r.members;
      render();
      fetchPresence();
    });
  const onMembers = (e) => e.detail.room === r.id && soon();
  store.addEventListener('members', onMembers);
  store.addEventListener('presence', soon);
  store.addEventListener('user', soon);
  store.addEventListener('room', onMembers);
  // Presence starts over at each `ready`: ask again for those it leaves out.
  store.addEventListener('ready', fetchPresence);
  const clock = setInterval(render, CLOCK_MS);

  render();
  load();
  return formDialog({
    title: r.kind === 'dm' ? 'Members' : `Members of ${isolate(store.title(r))}`,
    fields: [summary, list],
    submitLabel: null,
    cancelLabel: 'Close',
    onSubmit: async () => false,
  }).finally(() => {
    clearInterval(clock);
    cancelAnimationFrame(frame);
    store.removeEventListener('members', onMembers);
    store.removeEventListener('presence', soon);
    store.removeEventListener('user', soon);
    store.removeEventListener('room', onMembers);
    store.removeEventListener('ready', fetchPresence);
  });
}

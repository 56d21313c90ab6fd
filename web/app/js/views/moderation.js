// Moderation in the browser: a member reports a message; a moderator mutes, bans or removes
// someone from the member list, and works through the room's reports (the header's "Reports"
// button, with the number still open, live) by dismissing them or acting on them. Every action
// goes through the same REST calls as any client's, so the server's policy decides: a refusal
// is shown as what it is.

import { h } from '../dom.js';
import { errorText, isolate } from '../format.js';
import { formDialog, textField, selectField } from './dialogs.js';

const ROLE_RANK = { member: 1, moderator: 2, admin: 3, owner: 4 };

/** Whether someone of role `mine` may act on someone of role `theirs` (they must rank above). */
export function outranks(mine, theirs) {
  return (ROLE_RANK[mine] || 0) >= 2 && (ROLE_RANK[mine] || 0) > (ROLE_RANK[theirs] || 0);
}

/** What a moderation refusal says, in words. */
function refusal(err) {
  if (err && err.code === 'forbidden') return err.message && err.message !== 'not allowed' ? err.message : 'You are not allowed to do that here.';
  return errorText(err);
}

/** The durations offered for a mute or ban: [seconds or '' for good, label]. */
const DURATIONS = [
  ['600', '10 minutes'],
  ['3600', '1 hour'],
  ['86400', '1 day'],
  ['604800', '1 week'],
  ['', 'For good'],
];

/** Reports a message to the room's moderators, with a reason. */
export function reportMessageDialog(store, r, m, notify) {
  const reason = textField('Why?', { maxlength: '500', autofocus: true, placeholder: 'e.g. spam, harassment' });
  const author = store.users.get(m.author) || 'this person';
  return formDialog({
    title: 'Report message',
    description: `The moderators of this room will see the message from ${isolate(author)} and your reason. They are not told who else reported it.`,
    fields: [reason.wrap],
    submitLabel: 'Report',
    onSubmit: async (_form, fail) => {
      const why = reason.input.value.trim();
      if (!why) {
        fail('Say why you report it.');
        return false;
      }
      try {
        await store.api.report(r.id, { message_id: m.id }, why);
      } catch (err) {
        fail(refusal(err));
        return false;
      }
      notify('Reported. Thank you.');
      return true;
    },
  });
}

/** Mutes or bans `userId` for a chosen time, with a reason. `kind`: 'mutes' or 'bans'. */
export function sanctionDialog(store, r, userId, kind, notify) {
  const name = store.users.get(userId) || 'them';
  const duration = selectField('For how long', DURATIONS);
  duration.select.value = '3600';
  const reason = textField('Reason (optional, for the audit log)', { maxlength: '500' });
  const ban = kind === 'bans';
  return formDialog({
    title: `${ban ? 'Ban' : 'Mute'} ${isolate(name)}`,
    description: ban
      ? 'They are removed from the room at once and cannot come back until the ban ends.'
      : 'They stay in the room and read it, but cannot send until the mute ends.',
    fields: [duration.wrap, reason.wrap],
    submitLabel: ban ? 'Ban' : 'Mute',
    submitClass: 'danger',
    onSubmit: async (_form, fail) => {
      const secs = duration.select.value ? Number(duration.select.value) : null;
      try {
        await store.api.sanction(r.id, kind, userId, secs, reason.input.value.trim());
      } catch (err) {
        fail(refusal(err));
        return false;
      }
      notify(`${isolate(name)} is ${ban ? 'banned' : 'muted'}.`);
      return true;
    },
  });
}

/** The moderator's buttons for one member of the member list (empty for those we don't outrank). */
export function memberActions(store, r, userId, role, notify) {
  if (userId === store.me.id || !store.moderates(r) || !outranks(r.role, role)) return null;
  const button = (label, fn) =>
    h('button', { type: 'button', class: 'link-button member-action', dataset: { action: label.toLowerCase() }, on: { click: fn } }, label);
  const name = store.users.get(userId) || 'them';
  return h(
    'div',
    { class: 'member-actions' },
    button('Mute', () => sanctionDialog(store, r, userId, 'mutes', notify)),
    button('Ban', () => sanctionDialog(store, r, userId, 'bans', notify)),
    button('Remove', async () => {
      try {
        await store.api.removeMember(r.id, userId);
        notify(`${isolate(name)} was removed.`);
      } catch (err) {
        notify(refusal(err));
      }
    }),
  );
}

/** The room's open reports, live, each with what can be done about it. */
export function reportsDialog(store, r, notify) {
  const summary = h('p', { class: 'hint reports-summary' }, 'Loading reports…');
  const list = h('ul', { class: 'report-list', 'aria-label': 'Open reports' });
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });

  const resolve = async (report, action, secs) => {
    error.hidden = true;
    try {
      await store.api.resolveReport(r.id, report.id, action, secs);
      store.onReport({ ...report, status: 'resolved', resolution: action });
    } catch (err) {
      error.textContent = refusal(err);
      error.hidden = false;
    }
  };

  const item = (report) => {
    const who = store.users.get(report.user_id) || '…';
    const by = store.users.get(report.reporter) || '…';
    const msg = report.message_id ? [...r.msgs.values()].find((m) => m.id === report.message_id) : null;
    const button = (label, action, secs, danger) =>
      h('button', { type: 'button', class: `button small ${danger ? 'danger' : 'subtle'}`, dataset: { action }, on: { click: () => resolve(report, action, secs) } }, label);
    return h(
      'li',
      { class: 'report-item', dataset: { report: String(report.id) } },
      h(
        'p',
        { class: 'report-what' },
        report.message_id ? 'A message from ' : '',
        h('bdi', { class: 'report-user' }, who),
        report.message_id ? '' : ' (the member)',
        ', reported by ',
        h('bdi', {}, by),
      ),
      msg && !msg.deleted ? h('blockquote', { class: 'report-message', dir: 'auto' }, msg.body) : null,
      h('p', { class: 'report-reason', dir: 'auto' }, `“${report.reason}”`),
      h(
        'div',
        { class: 'report-actions' },
        button('Dismiss', 'dismiss'),
        report.message_id ? button('Delete message', 'delete_message', undefined, true) : null,
        button('Mute 1 h', 'mute', 3600, true),
        button('Ban', 'ban', undefined, true),
      ),
    );
  };

  const render = () => {
    if (!r.reports) return;
    const open = [...r.reports.values()].sort((a, b) => b.id - a.id);
    summary.textContent = open.length ? `${open.length} open report${open.length === 1 ? '' : 's'}` : 'No open reports.';
    list.replaceChildren(...open.map(item));
  };
  const onReports = (e) => e.detail.room === r.id && render();
  store.addEventListener('reports', onReports);
  store.addEventListener('user', render);
  store.loadReports(r).then(render, (err) => {
    summary.textContent = `Could not load the reports: ${refusal(err)}`;
  });
  return formDialog({
    title: `Reports in ${isolate(store.title(r))}`,
    fields: [summary, list, error],
    submitLabel: null,
    cancelLabel: 'Close',
    onSubmit: async () => false,
  }).finally(() => {
    store.removeEventListener('reports', onReports);
    store.removeEventListener('user', render);
  });
}

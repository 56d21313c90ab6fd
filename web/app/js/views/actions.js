// The dialogs behind the sidebar's and the room header's buttons: create a room, start a
// direct message, browse and join public rooms, invite someone, leave a room, answer an
// invitation, block or unblock someone, and the account's settings.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { errorText, isolate } from '../format.js';
import { formDialog, textField, selectField, confirmDialog } from './dialogs.js';

/** What to say when adding `name` to a room was refused (the codes of POST .../members). */
function addErrorText(err, name) {
  switch (err && err.code) {
    case 'forbidden':
      return `You can't add ${name}: only moderators can add people to a private room, or bring back someone a moderator removed.`;
    case 'blocked':
      return `You can't add ${name}: one of you has blocked the other.`;
    case 'not_accepting':
      return `${name} does not accept being added to rooms.`;
    case 'conflict':
      return `You can't invite ${name} now: too many invitations are waiting for them.`;
    default:
      return errorText(err, 'user');
  }
}

export function createActions({ store, api, navigate, notify }) {
  async function findUser(name, fail) {
    const wanted = name.trim().replace(/^@/, '');
    if (!wanted) {
      fail('Enter a username.');
      return null;
    }
    const user = await api.findUser(wanted);
    if (!user) fail(`There is no user called “${isolate(wanted)}”.`);
    return user;
  }

  function newRoom() {
    const name = textField('Name', { maxlength: '100', required: true, placeholder: 'e.g. general', autofocus: true });
    const radio = (value, label, hint, checked) =>
      h(
        'label',
        { class: 'choice' },
        h('input', { type: 'radio', name: 'kind', value, checked }),
        h('span', { class: 'choice-text' }, h('strong', {}, label), h('span', { class: 'hint' }, hint)),
      );
    const kinds = h(
      'fieldset',
      { class: 'choices' },
      h('legend', {}, 'Who can join'),
      radio('public', 'Public', 'Anyone can find and join it.', true),
      radio('private', 'Private', 'Only people who are invited.', false),
    );
    return formDialog({
      title: 'Create a room',
      fields: [name.wrap, kinds],
      submitLabel: 'Create room',
      onSubmit: async (form, fail) => {
        const value = name.input.value.trim();
        if (!value) {
          fail('Give the room a name.');
          name.input.focus();
          return false;
        }
        const kind = new FormData(form).get('kind') === 'private' ? 'private' : 'public';
        const r = await store.createRoom(value, kind);
        navigate(r.id);
        return true;
      },
    });
  }

  function newDirect() {
    const user = textField('Username', { autofocus: true, placeholder: 'e.g. alice', autocapitalize: 'none' });
    return formDialog({
      title: 'New direct message',
      fields: [user.wrap],
      submitLabel: 'Start conversation',
      onSubmit: async (_form, fail) => {
        const u = await findUser(user.input.value, fail);
        if (!u) return false;
        if (u.id === store.me.id) {
          fail('That is you. Pick someone else.');
          return false;
        }
        const r = await store.directMessage(u);
        navigate(r.id);
        return true;
      },
    });
  }

  function invite(r) {
    const user = textField('Username', { autofocus: true, placeholder: 'e.g. bob', autocapitalize: 'none' });
    return formDialog({
      title: `Invite someone to ${isolate(store.title(r))}`,
      fields: [user.wrap],
      submitLabel: 'Invite',
      onSubmit: async (_form, fail) => {
        const u = await findUser(user.input.value, fail);
        if (!u) return false;
        if (r.members && r.members.has(u.id)) {
          fail(`${u.username} is in this room already.`);
          return false;
        }
        let outcome;
        try {
          outcome = await store.invite(r.id, u);
        } catch (err) {
          fail(addErrorText(err, u.username));
          return false;
        }
        // Most people are invited (they join when they accept); some let others add them.
        if (outcome === 'invited') notify(`Invitation sent to ${u.username}.`);
        else notify(`${u.username} was added to ${isolate(store.title(r))}.`);
        return true;
      },
    });
  }

  async function leave(r) {
    const ok = await confirmDialog(`Leave ${isolate(store.title(r))}?`, 'Leave', true);
    if (!ok) return;
    try {
      await store.leaveRoom(r.id);
      navigate(null);
    } catch (err) {
      notify(errorText(err));
    }
  }

  function browse() {
    const filter = textField('Search', { type: 'search', placeholder: 'Filter by name', autofocus: true });
    const list = h('ul', { class: 'browse-list', 'aria-live': 'polite' });
    const status = h('p', { class: 'hint browse-status' }, 'Loading public rooms…');
    let rooms = [];
    const render = () => {
      const q = filter.input.value.trim().toLowerCase();
      const shown = rooms.filter((r) => r.name.toLowerCase().includes(q));
      list.replaceChildren(
        ...shown.map((r) => {
          const member = store.rooms.has(r.id);
          const button = h(
            'button',
            { type: 'button', class: `button ${member ? 'subtle' : 'primary'} small`, 'aria-label': `${member ? 'Open' : 'Join'} ${r.name}` },
            member ? 'Open' : 'Join',
          );
          button.addEventListener('click', async () => {
            try {
              button.disabled = true;
              if (!member) await store.joinRoom(r.id);
              dialog.closest('dialog')?.close();
              navigate(r.id);
            } catch (err) {
              button.disabled = false;
              status.textContent = errorText(err);
            }
          });
          return h('li', { class: 'browse-item' }, icon('hash', 'room-icon'), h('bdi', { class: 'room-name' }, r.name), button);
        }),
      );
      if (rooms.length === 0) status.textContent = 'There are no public rooms yet. Create one!';
      else if (shown.length === 0) status.textContent = 'No public room matches.';
      else status.textContent = '';
    };
    filter.input.addEventListener('input', render);
    filter.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') e.preventDefault();
    });
    const dialog = h('div', { class: 'browse' }, status, list);
    api
      .publicRooms()
      .then((r) => {
        rooms = r.sort((a, b) => a.name.localeCompare(b.name));
        render();
      })
      .catch((err) => {
        status.textContent = errorText(err);
      });
    return formDialog({ title: 'Public rooms', fields: [filter.wrap, dialog], submitLabel: null, cancelLabel: 'Close', onSubmit: async () => false });
  }

  async function acceptInvite(inv) {
    try {
      const r = await store.acceptInvite(inv.room.id);
      navigate(r.id);
    } catch (err) {
      const name = isolate(inv.room.name || 'that room');
      if (err.code === 'not_found') notify(`The invitation to ${name} is no longer there.`);
      else if (err.code === 'forbidden') notify(`You can't join ${name}: a moderator removed you.`);
      else notify(errorText(err));
    }
  }

  async function declineInvite(inv) {
    try {
      await store.declineInvite(inv.room.id);
    } catch (err) {
      notify(errorText(err));
    }
  }

  /** Blocks (`block` true) or unblocks the user `id`. */
  async function setBlocked(id, block) {
    const name = store.users.get(id) || store.blocked.get(id) || 'this person';
    if (block) {
      let ok = false;
      await formDialog({
        title: `Block ${name}?`,
        description: 'Neither of you will be able to message the other, and they will not be able to add you to rooms.',
        fields: [],
        submitLabel: 'Block',
        submitClass: 'danger',
        onSubmit: async () => {
          await store.block(id);
          ok = true;
          return true;
        },
      });
      if (ok) notify(`You blocked ${name}.`);
      return;
    }
    try {
      await store.unblock(id);
      notify(`You unblocked ${name}.`);
    } catch (err) {
      notify(errorText(err));
    }
  }

  function settings() {
    const policy = selectField('Who can add me to rooms', [
      ['invite', 'Anyone (invite first)'],
      ['anyone', 'Anyone, directly'],
      ['nobody', 'Nobody'],
    ]);
    const hint = h('p', { class: 'hint field-hint' }, 'With “invite first”, you join a room only when you accept the invitation.');
    policy.wrap.append(hint);
    policy.select.disabled = true;
    const status = h('p', { class: 'hint', role: 'status' }, 'Loading…');
    let loaded = false;
    api
      .settings()
      .then((s) => {
        policy.select.value = s.add_policy;
        policy.select.disabled = false;
        loaded = true;
        status.textContent = '';
        status.hidden = true;
      })
      .catch((err) => {
        status.textContent = `Could not load your settings. ${errorText(err)}`;
      });

    // The people we blocked, each with an "Unblock" button.
    const blockedList = h('ul', { class: 'blocked-list', 'aria-labelledby': 'blocked-heading' });
    const blockedEmpty = h('p', { class: 'hint' }, 'You have not blocked anyone.');
    const renderBlocked = () => {
      const users = [...store.blocked].map(([id, name]) => ({ id, name: store.users.get(id) || name || id }));
      users.sort((a, b) => a.name.localeCompare(b.name));
      blockedList.replaceChildren(
        ...users.map((u) => {
          const button = h('button', { type: 'button', class: 'button subtle small', 'aria-label': `Unblock ${u.name}` }, 'Unblock');
          button.addEventListener('click', async () => {
            button.disabled = true;
            await setBlocked(u.id, false);
            button.disabled = false;
          });
          return h('li', { class: 'blocked-item' }, h('bdi', { class: 'room-name' }, u.name), button);
        }),
      );
      blockedEmpty.hidden = users.length > 0;
    };
    renderBlocked();
    store.addEventListener('blocks', renderBlocked);
    const blocked = h('section', { class: 'blocked' }, h('h3', { id: 'blocked-heading', class: 'field-title' }, 'Blocked people'), blockedEmpty, blockedList);

    return formDialog({
      title: 'Settings',
      fields: [policy.wrap, status, blocked],
      submitLabel: 'Save',
      onSubmit: async (_form, fail) => {
        if (!loaded) {
          fail('Your settings are not loaded yet.');
          return false;
        }
        await api.setSettings({ add_policy: policy.select.value });
        notify('Settings saved.');
        return true;
      },
    }).finally(() => store.removeEventListener('blocks', renderBlocked));
  }

  return { newRoom, newDirect, invite, leave, browse, acceptInvite, declineInvite, setBlocked, settings };
}

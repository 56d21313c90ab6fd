// The dialogs behind the sidebar's and the room header's buttons: create a room, start a
// direct message, browse and join public rooms, invite someone, leave a room.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { errorText, isolate } from '../format.js';
import { formDialog, textField, confirmDialog } from './dialogs.js';

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
        try {
          await store.invite(r.id, u);
        } catch (err) {
          fail(errorText(err, 'user'));
          return false;
        }
        notify(`${u.username} was added to ${isolate(store.title(r))}.`);
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

  return { newRoom, newDirect, invite, leave, browse };
}

// Modal dialogs built on <dialog>: the browser gives them a focus trap, Escape to close and an
// inert page behind. Each dialog is created when opened and removed when closed, and focus
// goes back to where it was.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { errorText } from '../format.js';

let seq = 0;

/**
 * Opens a form dialog. `fields` are nodes placed in the form; `onSubmit(form, fail)` does the
 * work and resolves to true to close (call `fail(text)` to show an error and stay open).
 * Resolves when the dialog closes.
 */
export function formDialog({ title, description, fields, submitLabel, submitClass = 'primary', cancelLabel = 'Cancel', onSubmit, extra }) {
  const id = `dlg-${(seq += 1)}`;
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: `button ${submitClass}` }, submitLabel);
  const cancel = h('button', { type: 'button', class: 'button subtle' }, cancelLabel);
  const form = h(
    'form',
    { class: 'dialog-form', novalidate: true },
    description ? h('p', { class: 'dialog-desc', id: `${id}-desc` }, description) : null,
    fields,
    error,
    extra || null,
    h('div', { class: 'dialog-buttons' }, cancel, submitLabel ? submit : null),
  );
  const dlg = h(
    'dialog',
    { class: 'dialog', 'aria-labelledby': `${id}-title`, 'aria-describedby': description ? `${id}-desc` : null },
    h(
      'header',
      { class: 'dialog-head' },
      h('h2', { id: `${id}-title` }, title),
      h('button', { type: 'button', class: 'icon-button close', 'aria-label': 'Close', on: { click: () => dlg.close() } }, icon('close')),
    ),
    form,
  );
  if (!submitLabel) submit.remove();
  const fail = (text) => {
    error.textContent = text;
    error.hidden = false;
  };
  cancel.addEventListener('click', () => dlg.close());
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    form.inert = true;
    submit.classList.add('busy');
    try {
      if (await onSubmit(form, fail)) dlg.close();
    } catch (err) {
      fail(errorText(err));
    } finally {
      form.inert = false;
      submit.classList.remove('busy');
    }
    // A failure leaves the dialog open: put focus back in it (inert dropped it).
    if (dlg.open && !dlg.contains(document.activeElement)) {
      const first = dlg.querySelector('input:not([type="radio"]), textarea') || submit;
      first.focus();
    }
  });
  return show(dlg);
}

function show(dlg) {
  const before = document.activeElement;
  document.body.append(dlg);
  dlg.showModal();
  const first = dlg.querySelector('[autofocus]') || dlg.querySelector('input, textarea, select, button:not(.close)');
  if (first) first.focus();
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => {
      dlg.remove();
      if (before && before.isConnected && typeof before.focus === 'function') before.focus();
      resolve(dlg.returnValue);
    });
  });
}

/** A labelled text input; returns {wrap, input}. */
export function textField(label, attrs = {}) {
  const id = `fld-${(seq += 1)}`;
  const input = h('input', { id, type: 'text', autocomplete: 'off', spellcheck: 'false', ...attrs });
  const wrap = h('div', { class: 'field' }, h('label', { for: id }, label), input);
  return { wrap, input };
}

/** A labelled <select> of `options` ([value, label] pairs); returns {wrap, select}. */
export function selectField(label, options) {
  const id = `fld-${(seq += 1)}`;
  const select = h('select', { id }, ...options.map(([value, text]) => h('option', { value }, text)));
  const wrap = h('div', { class: 'field' }, h('label', { for: id }, label), select);
  return { wrap, select };
}

/** Asks a yes/no question; resolves true for yes. */
export function confirmDialog(text, okLabel = 'OK', danger = false) {
  let ok = false;
  return formDialog({
    title: text,
    fields: [],
    submitLabel: okLabel,
    submitClass: danger ? 'danger' : 'primary',
    onSubmit: async () => {
      ok = true;
      return true;
    },
  }).then(() => ok);
}

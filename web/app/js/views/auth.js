// The sign-in screen: one form, two submit buttons ("Log in" and "Create account"), so the
// same fields serve both and Enter in the password field logs in.

import { $, h } from '../dom.js';
import { errorText } from '../format.js';

export function mountAuth({ api, onAuthed }) {
  const form = $('#auth-form');
  const username = $('#auth-username');
  const password = $('#auth-password');
  const error = $('#auth-error');

  const fail = (text, field) => {
    error.textContent = text;
    error.hidden = false;
    if (field) field.focus();
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const signup = e.submitter && e.submitter.value === 'signup';
    const name = username.value.trim();
    const pass = password.value;
    error.hidden = true;
    if (!name) return fail('Enter a username.', username);
    if (!pass) return fail('Enter a password.', password);
    if (signup && [...pass].length < 8) return fail('Choose a password of at least 8 characters.', password);
    form.inert = true;
    form.classList.add('busy');
    let failedField = null;
    try {
      const res = signup ? await api.register(name, pass) : await api.login(name, pass);
      password.value = '';
      onAuthed(res);
    } catch (err) {
      failedField = err.code === 'invalid_password' ? password : username;
      fail(errorText(err));
    } finally {
      form.inert = false;
      form.classList.remove('busy');
    }
    // Focus can only move once the form is no longer inert.
    if (failedField) failedField.focus();
  });

  return {
    /** Shows the form with `message`, and a "Try again" button calling `retry` if given. */
    show(message, retry) {
      if (message) fail(message);
      if (retry) {
        const again = () => {
          error.hidden = true;
          retry();
        };
        error.append(' ', h('button', { type: 'button', class: 'link-button', on: { click: again } }, 'Try again'));
      }
      username.focus();
    },
  };
}

// The sign-in screen: one form, two submit buttons ("Log in" and "Create account"), so the
// same fields serve both and Enter in the password field logs in. A throttled attempt (429) or
// a busy server (503) says how long to wait and keeps the button disabled until then: pressing
// it sooner would only be refused again (and, for a login, lengthen the wait).

import { $, h } from '../dom.js';
import { errorText, waitText } from '../format.js';

export function mountAuth({ api, onAuthed }) {
  const form = $('#auth-form');
  const username = $('#auth-username');
  const password = $('#auth-password');
  const error = $('#auth-error');
  const notice = $('#auth-notice');
  const buttons = [...form.querySelectorAll('button[type="submit"]')];
  /** The wait under way: {timer, buttons}. */
  let wait = null;

  const fail = (text, field) => {
    error.textContent = text;
    error.hidden = false;
    if (field) field.focus();
  };

  const endWait = () => {
    if (!wait) return;
    clearTimeout(wait.timer);
    for (const b of wait.buttons) b.disabled = false;
    wait = null;
  };

  /**
   * Shows "… Try again in N s." counting down, with `held` disabled until the wait is over.
   * Only the number changes each second, and it is outside the alert's announcements
   * (aria-live off), so a screen reader reads the sentence once rather than every second.
   */
  const holdOff = (lead, ms, held) => {
    endWait();
    const until = Date.now() + ms;
    const count = h('span', { 'aria-live': 'off' });
    error.replaceChildren(`${lead} Try again in `, count, '.');
    error.hidden = false;
    for (const b of held) b.disabled = true;
    wait = { timer: 0, buttons: held };
    const tick = () => {
      const left = until - Date.now();
      if (left <= 0) {
        endWait();
        error.hidden = true;
        return;
      }
      count.textContent = waitText(left);
      // Wake when the rounded-up number changes.
      wait.timer = setTimeout(tick, left % 1000 || 1000);
    };
    tick();
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const submitter = e.submitter && buttons.includes(e.submitter) ? e.submitter : buttons[0];
    if (submitter.disabled) return;
    const signup = submitter.value === 'signup';
    const name = username.value.trim();
    const pass = password.value;
    error.hidden = true;
    notice.hidden = true;
    if (!name) return fail('Enter a username.', username);
    if (!pass) return fail('Enter a password.', password);
    if (signup && [...pass].length < 8) return fail('Choose a password of at least 8 characters.', password);
    form.inert = true;
    form.classList.add('busy');
    let failedField = null;
    try {
      const res = signup ? await api.register(name, pass) : await api.login(name, pass);
      password.value = '';
      endWait();
      onAuthed(res);
    } catch (err) {
      failedField = err.code === 'invalid_password' ? password : username;
      if (err.code === 'rate_limited' && err.retryAfterMs !== null) {
        // This kind of attempt (sign-in or sign-up) is throttled; the other may still go.
        holdOff('Too many attempts.', err.retryAfterMs, [submitter]);
        failedField = password;
      } else if (err.code === 'unavailable' && err.retryAfterMs !== null) {
        holdOff('The server is busy.', err.retryAfterMs, buttons);
        failedField = password;
      } else {
        fail(errorText(err));
      }
    } finally {
      form.inert = false;
      form.classList.remove('busy');
    }
    // Focus can only move once the form is no longer inert.
    if (failedField) failedField.focus();
  });

  return {
    /** Shows the form with the error `message`, and a "Try again" button calling `retry` if
     * given. */
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
    /** Shows the form with a notice that is not an error (the session ended, logged out). */
    notice(message) {
      notice.textContent = message || '';
      notice.hidden = !message;
      username.focus();
    },
  };
}

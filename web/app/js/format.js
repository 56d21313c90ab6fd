// Presentation helpers shared by the views: times, avatars' initials and colours, and the
// human wording of REST error codes (the protocol's codes are stable; messages are not).

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const dayTimeFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

/** "14:05" today, "Nov 28, 14:05" before. */
export function shortTime(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '';
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return (sameDay ? timeFmt : dayTimeFmt).format(d);
}

export function fullTime(ts) {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? '' : fullFmt.format(d);
}

/** A stable colour class (one of 12 hues) for a user id. */
export function hueClass(id) {
  let h = 0;
  for (let i = 0; i < id.length; i += 1) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return `hue-${h % 12}`;
}

/** The first letter of a name, for avatars. */
export function initial(name) {
  const first = [...(name || '?')][0] || '?';
  return first.toUpperCase();
}

/** What to tell the user about a failed REST call. */
export function errorText(err, context = '') {
  switch (err && err.code) {
    case 'network':
      return 'Cannot reach the server. Check your connection and try again.';
    case 'invalid_credentials':
      return 'Wrong username or password.';
    case 'username_taken':
      return 'That username is taken.';
    case 'invalid_username':
      return 'Usernames are 1–32 characters: letters a–z, digits, “_”, “.” or “-”.';
    case 'invalid_password':
      return 'Passwords are 8–256 characters.';
    case 'not_found':
      return context === 'user' ? 'There is no user with that name.' : 'Not found.';
    case 'conflict':
      return 'Direct messages are between two people only.';
    case 'forbidden':
      return 'You are not allowed to do that.';
    case 'not_member':
      return 'Join the room first.';
    case 'blocked':
      return "You can't message this person.";
    case 'not_accepting':
      return 'They do not accept being added to rooms.';
    case 'invalid_request':
      return err.message || 'That request was not valid.';
    case 'rate_limited':
      return err.retryAfterMs ? `Slow down a little. Try again in ${waitText(err.retryAfterMs)}.` : 'Slow down a little and try again.';
    case 'unavailable':
    case 'draining':
      return err.retryAfterMs ? `The server is busy. Try again in ${waitText(err.retryAfterMs)}.` : 'The server is busy. Try again in a moment.';
    default:
      return (err && err.message) || 'Something went wrong.';
  }
}

/** A wait as people say it, rounded up: "3 s", or "5 min" once it is two minutes or more
 * (a sign-up throttle can ask for most of an hour). */
export function waitText(ms) {
  const secs = Math.max(1, Math.ceil(ms / 1000));
  return secs < 120 ? `${secs} s` : `${Math.ceil(secs / 60)} min`;
}

/**
 * `s` as an isolate (FSI…PDI), for user text inside a sentence that is plain text (toasts,
 * dialog titles, placeholders): an override or a right-to-left name in it can't reorder the
 * words around it.
 */
export function isolate(s) {
  return `\u2068${s}\u2069`;
}

const dateFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const yearFmt = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });

/** "last seen just now", "… 5 min ago", "… 3 h ago", "… yesterday", "… 4 days ago", "… on
 * Nov 28" (a clock running behind the server's says "just now", not a time to come). */
export function lastSeenText(ts, now = Date.now()) {
  const t = Date.parse(ts);
  if (Number.isNaN(t)) return 'offline';
  const mins = Math.floor(Math.max(0, now - t) / 60000);
  if (mins < 1) return 'last seen just now';
  if (mins < 60) return `last seen ${mins} min ago`;
  const hours = Math.floor(mins / 60);
  if (hours < 24) return `last seen ${hours} h ago`;
  const days = Math.floor(hours / 24);
  if (days === 1) return 'last seen yesterday';
  if (days < 7) return `last seen ${days} days ago`;
  const d = new Date(t);
  return `last seen on ${(d.getFullYear() === new Date(now).getFullYear() ? dateFmt : yearFmt).format(d)}`;
}

/**
 * A presence ({status, lastSeen}) in words: "online", "away", "last seen 5 min ago" or
 * "offline" (no time known). `capital`, for a line of its own: "Online", "Away", "Offline"
 * ("last seen …" stays as it is, as messengers write it).
 */
export function presenceText(p, { capital = false } = {}) {
  if (p.status === 'offline' && p.lastSeen) return lastSeenText(p.lastSeen);
  const text = p.status === 'online' || p.status === 'away' ? p.status : 'offline';
  return capital ? text[0].toUpperCase() + text.slice(1) : text;
}

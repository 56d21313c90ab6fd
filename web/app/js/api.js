// The REST half of the protocol (docs/protocol.md): one function per call, JSON in and out,
// errors turned into ApiError with the server's stable `code` so callers branch on codes.

export class ApiError extends Error {
  constructor(status, code, message, retryAfterMs = null) {
    super(message || code);
    this.status = status;
    this.code = code;
    /** For a throttle (429 rate_limited) or an overload (503 unavailable): how long to wait. */
    this.retryAfterMs = retryAfterMs;
  }
}

/** The wait a refusal asks for: the body's `retry_after_ms`, else the `Retry-After` header
 * (seconds, or an HTTP date); null when it names none. */
function retryAfter(res, err) {
  if (Number.isFinite(err.retry_after_ms) && err.retry_after_ms >= 0) return err.retry_after_ms;
  const header = res.headers.get('Retry-After');
  if (!header) return null;
  const secs = Number(header);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}

/**
 * Creates the REST client. `getToken()` supplies the bearer token; `onUnauthorized()` runs when
 * the server refuses it (401), so the app can send the user back to the login screen.
 */
export function createApi({ getToken, onUnauthorized }) {
  /** `auth: false` for the calls that make a token (sign-in, sign-up): their 401 is a wrong
   * password, not an ended session. */
  async function call(method, path, body, { auth = true } = {}) {
    const headers = { Accept: 'application/json' };
    const token = auth ? getToken() : null;
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach the server.');
    }
    if (res.status === 204) return null;
    let data = null;
    try {
      data = await res.json();
    } catch {
      // A proxy's HTML error page, say: keep `data` null and report the status below.
    }
    if (!res.ok) {
      const err = data && data.error ? data.error : { code: 'http_' + res.status, message: res.statusText };
      // Any 401 to a call that carried our token means the token is refused (expired, signed
      // out here or elsewhere): the session is over. Not when the token has changed since
      // (signed out and in again while this call was on its way): that is another session.
      if (res.status === 401 && token && token === getToken()) onUnauthorized();
      throw new ApiError(res.status, err.code, err.message, res.status === 429 || res.status === 503 ? retryAfter(res, err) : null);
    }
    return data;
  }

  const enc = encodeURIComponent;
  const room = (id) => `/v1/rooms/${enc(id)}`;
  return {
    register: (username, password) => call('POST', '/v1/users', { username, password }, { auth: false }),
    login: (username, password) => call('POST', '/v1/sessions', { username, password }, { auth: false }),
    /** Ends this token's session (204); its sockets are closed with 4003. */
    logout: () => call('DELETE', '/v1/sessions/current'),
    /** Ends every session of the account, on every device. */
    logoutEverywhere: () => call('DELETE', '/v1/sessions'),
    me: () => call('GET', '/v1/users/me'),
    user: (id) => call('GET', `/v1/users/${enc(id)}`),
    /** The user called `username`, or null if there is none. */
    async findUser(username) {
      try {
        return await call('GET', `/v1/users/lookup?username=${enc(username)}`);
      } catch (e) {
        if (e.code === 'not_found') return null;
        throw e;
      }
    },
    /** {add_policy: 'invite' | 'anyone' | 'nobody'} */
    settings: () => call('GET', '/v1/me/settings'),
    setSettings: (settings) => call('PUT', '/v1/me/settings', settings),
    blocks: async () => (await call('GET', '/v1/me/blocks')).users,
    block: (userId) => call('PUT', `/v1/me/blocks/${enc(userId)}`),
    unblock: (userId) => call('DELETE', `/v1/me/blocks/${enc(userId)}`),
    /** Invitations waiting for us, newest first; accept one with joinRoom. */
    invites: async () => (await call('GET', '/v1/invites')).invites,
    declineInvite: (roomId) => call('DELETE', `/v1/invites/${enc(roomId)}`),
    rooms: async () => (await call('GET', '/v1/rooms')).rooms,
    publicRooms: async () => (await call('GET', '/v1/rooms/public')).rooms,
    room: (id) => call('GET', room(id)),
    createRoom: (name, kind, members = []) => call('POST', '/v1/rooms', { name, kind, members }),
    /** Joins a public room, or accepts an invite to any room. */
    joinRoom: (id) => call('POST', `${room(id)}/join`),
    /** [{user, role, read_seq?}]: read_seq where read markers are shown (dms, small rooms). */
    members: async (id) => (await call('GET', `${room(id)}/members`)).members,
    /** The presence of those of `ids` (at most 200) we may see, in the order asked:
     * [{user, status, last_seen?, text?}]. */
    presence: async (ids) => (await call('GET', `/v1/presence?users=${ids.map(enc).join(',')}`)).presence,
    /** null (204) when the user was added at once, {invite} (202) when they were invited. */
    addMember: (id, userId) => call('POST', `${room(id)}/members`, { user_id: userId }),
    removeMember: (id, userId) => call('DELETE', `${room(id)}/members/${enc(userId)}`),
    /** A page of messages in seq order: `{before, after, limit}` as in the protocol. */
    async history(id, { before, after, limit = 50 } = {}) {
      const q = new URLSearchParams({ limit: String(limit) });
      if (before !== undefined) q.set('before_seq', String(before));
      if (after !== undefined) q.set('after_seq', String(after));
      return (await call('GET', `${room(id)}/messages?${q}`)).messages;
    },
    editMessage: (id, msgId, body) => call('PATCH', `${room(id)}/messages/${enc(msgId)}`, { body }),
    deleteMessage: (id, msgId) => call('DELETE', `${room(id)}/messages/${enc(msgId)}`),
    /** Bans, mutes or shadow-bans (`kind`: bans | mutes | shadow-bans) a user, for `durationSecs`
     * or for good (null). Moderators. */
    sanction: (id, kind, userId, durationSecs, reason) =>
      call('POST', `${room(id)}/${kind}`, { user_id: userId, duration_secs: durationSecs ?? undefined, reason: reason || undefined }),
    /** Reports a message ({message_id}) or a member ({user_id}) with a reason. */
    report: (id, target, reason) => call('POST', `${room(id)}/reports`, { ...target, reason }),
    /** The room's open (or resolved) reports, newest first. Moderators. */
    reports: async (id, status = 'open') => (await call('GET', `${room(id)}/reports?status=${enc(status)}`)).reports,
    /** Resolves a report with an action (dismiss, delete_message, kick, mute, ban, shadow_ban). */
    resolveReport: (id, reportId, action, durationSecs) =>
      call('POST', `${room(id)}/reports/${enc(String(reportId))}/resolve`, { action, duration_secs: durationSecs ?? undefined }),
  };
}

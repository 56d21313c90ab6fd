// The REST half of the protocol (docs/protocol.md): one function per call, JSON in and out,
// errors turned into ApiError with the server's stable `code` so callers branch on codes.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

/**
 * Creates the REST client. `getToken()` supplies the bearer token; `onUnauthorized()` runs when
 * the server refuses it (401), so the app can send the user back to the login screen.
 */
export function createApi({ getToken, onUnauthorized }) {
  async function call(method, path, body) {
    const headers = { Accept: 'application/json' };
    const token = getToken();
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
      if (res.status === 401 && token && err.code === 'unauthorized') onUnauthorized();
      throw new ApiError(res.status, err.code, err.message);
    }
    return data;
  }

  const enc = encodeURIComponent;
  const room = (id) => `/v1/rooms/${enc(id)}`;
  return {
    register: (username, password) => call('POST', '/v1/users', { username, password }),
    login: (username, password) => call('POST', '/v1/sessions', { username, password }),
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
    rooms: async () => (await call('GET', '/v1/rooms')).rooms,
    publicRooms: async () => (await call('GET', '/v1/rooms/public')).rooms,
    room: (id) => call('GET', room(id)),
    createRoom: (name, kind, members = []) => call('POST', '/v1/rooms', { name, kind, members }),
    joinRoom: (id) => call('POST', `${room(id)}/join`),
    members: async (id) => (await call('GET', `${room(id)}/members`)).members,
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
  };
}

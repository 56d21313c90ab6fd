//! Stable codes that clients branch on. Error codes are `snake_case` strings shared by REST
//! (`{"error":{"code",...}}`) and WebSocket `error` frames; close codes tell a client whether and
//! how to reconnect.

/// WebSocket close codes used by the gateway. Each one says what the client should do next.
pub mod close {
    /// Normal closure requested by either side.
    pub const NORMAL: u16 = 1000;
    /// Server is draining (shutdown or restart): reconnect, to another node if there is one.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame exceeded the size limit: do not resend it.
    pub const TOO_LARGE: u16 = 1009;
    /// Internal error: reconnect with backoff.
    pub const INTERNAL: u16 = 1011;
    /// No `hello` arrived in time: send `hello` first.
    pub const NO_HELLO: u16 = 4001;
    /// The token in `hello` was invalid, expired or its user is gone, or the session it belongs
    /// to has ended (signed out) or its token expired while connected: get a new token.
    pub const BAD_TOKEN: u16 = 4003;
    /// Rate limit exceeded repeatedly: back off before reconnecting.
    pub const RATE_LIMITED: u16 = 4008;
    /// No frame from the client within the heartbeat window: reconnect and resume.
    pub const HEARTBEAT_TIMEOUT: u16 = 4009;
    /// The client read too slowly and its queue overflowed: reconnect and resume with `since`.
    pub const SLOW_CONSUMER: u16 = 4010;
    /// The user already holds as many gateway connections as allowed: close one, or wait.
    pub const TOO_MANY_SESSIONS: u16 = 4012;
    /// The peer broke the WebSocket protocol (RSV bits, unmasked frames, bad opcodes).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
}

/// Error codes. Kept as constants (not an enum) so clients built against an older list still
/// parse codes added later.
pub mod error {
    /// The body or frame is not valid JSON (or not a JSON object).
    pub const INVALID_JSON: &str = "invalid_json";
    /// JSON that parses but misses a field, has a wrong type or an out-of-range value.
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// A frame whose `op` the server does not know.
    pub const UNKNOWN_OP: &str = "unknown_op";
    /// Binary WebSocket frames are not part of v1.
    pub const BINARY_NOT_SUPPORTED: &str = "binary_not_supported";
    /// `hello` sent on a session that is already authenticated.
    pub const ALREADY_AUTHENTICATED: &str = "already_authenticated";
    /// An op other than `hello` before `hello`.
    pub const NOT_AUTHENTICATED: &str = "not_authenticated";
    /// Username outside 1–32 chars of `[a-z0-9_.-]` after NFKC and lowercasing.
    pub const INVALID_USERNAME: &str = "invalid_username";
    /// Password outside the allowed length.
    pub const INVALID_PASSWORD: &str = "invalid_password";
    /// The username is already registered.
    pub const USERNAME_TAKEN: &str = "username_taken";
    /// Wrong username or password.
    pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
    /// Missing, malformed, expired or revoked token.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// Authenticated, but not allowed to do this.
    pub const FORBIDDEN: &str = "forbidden";
    /// Not a member of this (public) room.
    pub const NOT_MEMBER: &str = "not_member";
    /// No such resource, or one the caller may not know exists.
    pub const NOT_FOUND: &str = "not_found";
    /// Message body empty or only whitespace.
    pub const EMPTY_BODY: &str = "empty_body";
    /// Message body longer than the limit (counted in Unicode scalar values).
    pub const BODY_TOO_LONG: &str = "body_too_long";
    /// A `client_msg_id` reused for a different room.
    pub const IDEMPOTENCY_CONFLICT: &str = "idempotency_conflict";
    /// Too many requests or frames; slow down.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// Request body over the size limit.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// Request body not declared as JSON.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// The HTTP method is not allowed on this path.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// A conflicting state, such as adding a second member to a direct room.
    pub const CONFLICT: &str = "conflict";
    /// A backend is unavailable; retry later (nothing was acknowledged).
    pub const UNAVAILABLE: &str = "unavailable";
    /// The server is shutting down; retry on another node or later.
    pub const DRAINING: &str = "draining";
    /// Sign-ups are switched off on this server (accounts come from the operator's backend).
    pub const REGISTRATION_CLOSED: &str = "registration_closed";
    /// Sign-ups need an invite token, and this one is missing, invalid or expired.
    pub const INVALID_INVITE: &str = "invalid_invite";
    /// One of the two users has blocked the other.
    pub const BLOCKED: &str = "blocked";
    /// A moderator banned the user from the room (with `retry_after_ms` when the ban ends).
    pub const BANNED: &str = "banned";
    /// A moderator muted the user in the room (with `retry_after_ms` when the mute ends).
    pub const MUTED: &str = "muted";
    /// The room's slow mode: wait `retry_after_ms` before sending there again.
    pub const SLOW_MODE: &str = "slow_mode";
    /// The message matched a filter of the room or the server (the message says which kind of
    /// rule: a word, a pattern, a link, an invite, profanity).
    pub const FILTERED: &str = "filtered";
    /// The message mentions more people than the server allows.
    pub const TOO_MANY_MENTIONS: &str = "too_many_mentions";
    /// The same text was sent too often lately (across rooms or in a burst): wait
    /// `retry_after_ms`.
    pub const DUPLICATE: &str = "duplicate";
    /// The operator's classifier (the moderation hook) refused the message.
    pub const REJECTED: &str = "rejected";
    /// The room takes no more messages for now (all members together): wait `retry_after_ms`.
    pub const ROOM_RATE_LIMITED: &str = "room_rate_limited";
    /// Too many people joined the public room lately: wait `retry_after_ms`.
    pub const JOIN_RATE_LIMITED: &str = "join_rate_limited";
    /// The user does not accept being added to rooms (their `add_policy` is `nobody`).
    pub const NOT_ACCEPTING: &str = "not_accepting";
    /// The request body did not arrive in time.
    pub const REQUEST_TIMEOUT: &str = "request_timeout";
    /// An unexpected server error; details are in the server's logs.
    pub const INTERNAL: &str = "internal";
}

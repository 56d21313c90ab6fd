-- Switchboard on PostgreSQL, version 1: the same model as the embedded store's version 4.
-- Timestamps are milliseconds since the Unix epoch, as in SQLite, so both stores share their
-- conversions.

CREATE TABLE users (
    id                TEXT PRIMARY KEY,
    username          TEXT NOT NULL UNIQUE,
    password_hash     TEXT,
    external          BOOLEAN NOT NULL DEFAULT false,
    created_at        BIGINT NOT NULL,
    sessions_ended_at BIGINT,
    add_policy        TEXT NOT NULL DEFAULT 'invite'
);

CREATE TABLE rooms (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    last_seq   BIGINT NOT NULL DEFAULT 0,
    msg_count  BIGINT NOT NULL DEFAULT 0,
    dm_key     TEXT UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE members (
    room_id  TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    role     TEXT NOT NULL,
    read_seq BIGINT NOT NULL DEFAULT 0,
    read_ord BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, room_id);

-- One row per message, keyed (and read) in its room's timeline order.
CREATE TABLE messages (
    room_id       TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    id            TEXT NOT NULL,
    author        TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    body          TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    edited_at     BIGINT,
    deleted       BOOLEAN NOT NULL DEFAULT false,
    ord           BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
);
CREATE UNIQUE INDEX messages_by_id ON messages (id);
CREATE UNIQUE INDEX messages_idempotency ON messages (author, client_msg_id);
CREATE INDEX messages_deleted ON messages (room_id, seq) WHERE deleted;

-- Every other timeline event: edits, deletes, membership changes.
CREATE TABLE events (
    room_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    message_id TEXT,
    user_id    TEXT,
    change     TEXT,
    body       TEXT,
    ts         BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
);
CREATE INDEX events_edits ON events (room_id, message_id) WHERE kind = 'edit';

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);

CREATE TABLE blocks (
    user_id    TEXT NOT NULL,
    blocked    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, blocked)
);
CREATE INDEX blocks_by_blocked ON blocks (blocked, user_id);

CREATE TABLE invites (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    inviter    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX invites_by_user ON invites (user_id, created_at);

CREATE TABLE removals (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    by_user TEXT NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- The store-wide event log. Positions come from `log_head`, whose one row every transaction
-- that logs events updates last, just before committing: commits that log are serialized on
-- it, so positions are handed out in commit order and a reader can never see a position
-- before every lower one is visible (a sequence would leave holes that fill in later, behind
-- a consumer's cursor).
CREATE TABLE event_log (
    pos     BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    seq     BIGINT NOT NULL
);
CREATE TABLE log_head (
    id  INT PRIMARY KEY CHECK (id = 1),
    pos BIGINT NOT NULL
);
INSERT INTO log_head (id, pos) VALUES (1, 0);

CREATE TABLE log_cursors (
    consumer   TEXT PRIMARY KEY,
    pos        BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO log_cursors (consumer, pos, updated_at) VALUES ('relay', 0, 0);

CREATE TABLE leases (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  BIGINT NOT NULL
);

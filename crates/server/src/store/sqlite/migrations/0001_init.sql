-- Switchboard embedded schema, version 1.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    external      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE rooms (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    dm_key     TEXT UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE members (
    room_id  TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    role     TEXT NOT NULL,
    read_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id, room_id);

CREATE TABLE messages (
    id            TEXT PRIMARY KEY,
    room_id       TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    author        TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    body          TEXT NOT NULL,
    ts            INTEGER NOT NULL,
    edited_at     INTEGER,
    deleted       INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX messages_by_room_seq ON messages (room_id, seq);
CREATE UNIQUE INDEX messages_idempotency ON messages (author, client_msg_id);

-- The room timeline: one row per seq. Message rows point at `messages` for their current state;
-- edit rows keep the body they set (erased when the message is deleted).
CREATE TABLE events (
    room_id    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    message_id TEXT,
    user_id    TEXT,
    change     TEXT,
    body       TEXT,
    ts         INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;

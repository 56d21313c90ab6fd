-- Version 2: one row per message, stored in its room's timeline order.
--
-- A durable send used to write five B-trees (the message table, its id index, its room+seq
-- index, its idempotency index and a `message` row in `events`), each in a different random
-- page. Every commit writes each page it touched to the WAL, so that was the cost of a send.
-- Now the message table is clustered by (room_id, seq), which is also the order history and
-- replay read it in, and `events` keeps only edits, deletes and membership changes; the
-- timeline is the union of both.
CREATE TABLE messages_by_room (
    room_id       TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    id            TEXT NOT NULL,
    author        TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    body          TEXT NOT NULL,
    ts            INTEGER NOT NULL,
    edited_at     INTEGER,
    deleted       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;
INSERT INTO messages_by_room (room_id, seq, id, author, client_msg_id, body, ts, edited_at, deleted)
    SELECT room_id, seq, id, author, client_msg_id, body, ts, edited_at, deleted FROM messages;
DROP TABLE messages;
ALTER TABLE messages_by_room RENAME TO messages;
CREATE UNIQUE INDEX messages_by_id ON messages (id);
CREATE UNIQUE INDEX messages_idempotency ON messages (author, client_msg_id);
DELETE FROM events WHERE kind = 'message';

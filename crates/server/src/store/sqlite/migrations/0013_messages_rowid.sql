-- Version 13: messages in arrival order, found by room and seq through an index.
--
-- Clustered by (room_id, seq) (version 2), each send wrote its room's last page of the table,
-- a different page per room, and whole rows split those pages as they filled: 2.8 of the ~7.7
-- pages a dm send wrote to the WAL (docs/benchmarks.md, issue 12). In a rowid table new rows
-- land together at the table's end, and the (room_id, seq) index entries are small. Reading a
-- room's history now touches a page per row instead of a few; sends outnumber those reads.
CREATE TABLE messages_by_arrival (
    room_id       TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    id            TEXT NOT NULL,
    author        TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    body          TEXT NOT NULL,
    ts            INTEGER NOT NULL,
    edited_at     INTEGER,
    deleted       INTEGER NOT NULL DEFAULT 0,
    ord           INTEGER NOT NULL DEFAULT 0,
    shadow        INTEGER NOT NULL DEFAULT 0
);
INSERT INTO messages_by_arrival
       (room_id, seq, id, author, client_msg_id, body, ts, edited_at, deleted, ord, shadow)
SELECT room_id, seq, id, author, client_msg_id, body, ts, edited_at, deleted, ord, shadow
  FROM messages ORDER BY id;
DROP TABLE messages;
ALTER TABLE messages_by_arrival RENAME TO messages;
CREATE UNIQUE INDEX messages_by_room_seq ON messages (room_id, seq);
CREATE UNIQUE INDEX messages_by_id ON messages (id);
CREATE UNIQUE INDEX messages_idempotency ON messages (author, client_msg_id);
CREATE INDEX messages_deleted ON messages (room_id, seq) WHERE deleted = 1;

-- Version 4: the store-wide event log, consumer cursors and leases.

-- Every committed timeline event, in commit order, written in the event's own transaction. An
-- entry names its event; readers join it to the timeline (so a deleted body is gone here too).
CREATE TABLE event_log (
    pos     INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    seq     INTEGER NOT NULL
);

-- Where each consumer of the log (the relay, later the indexer and notifier) has got to.
CREATE TABLE log_cursors (
    consumer   TEXT PRIMARY KEY,
    pos        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- The relay starts at the log's beginning: nothing committed from here on can miss it.
INSERT INTO log_cursors (consumer, pos, updated_at) VALUES ('relay', 0, 0);

-- Work that one node at a time does (a log consumer), held while renewed.
CREATE TABLE leases (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  INTEGER NOT NULL
) WITHOUT ROWID;

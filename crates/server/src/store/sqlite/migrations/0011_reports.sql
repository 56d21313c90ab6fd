-- Version 11: members' reports of messages and members, the moderators' queue. A report is filed
-- open and resolved once, with what was done; reports are never deleted.
CREATE TABLE reports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id     TEXT NOT NULL,
    reporter    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    message_id  TEXT,
    reason      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'open',
    created_at  INTEGER NOT NULL,
    resolved_by TEXT,
    resolution  TEXT,
    resolved_at INTEGER
);
CREATE INDEX reports_by_room ON reports (room_id, status, id);
CREATE INDEX reports_by_reporter ON reports (room_id, reporter, status);

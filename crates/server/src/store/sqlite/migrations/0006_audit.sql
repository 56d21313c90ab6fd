-- Version 6: the audit log, append only: every moderation action, written in the transaction of
-- the action itself.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    reason  TEXT,
    detail  TEXT,
    ts      INTEGER NOT NULL
);
CREATE INDEX audit_by_room ON audit_log (room_id, id);

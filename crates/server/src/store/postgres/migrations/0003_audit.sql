-- The audit log, append only: every moderation action, written in the transaction of the action
-- itself, which holds its room's row, so a room's entries take ids in commit order.
CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    room_id TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    reason  TEXT,
    detail  TEXT,
    ts      BIGINT NOT NULL
);
CREATE INDEX audit_by_room ON audit_log (room_id, id);

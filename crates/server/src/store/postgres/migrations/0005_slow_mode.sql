-- Slow mode. A room may require this many seconds between one member's messages; when each
-- member last sent in a slow-mode room is kept apart from the membership, so leaving and joining
-- again does not reset it.
ALTER TABLE rooms ADD COLUMN slow_mode_secs BIGINT NOT NULL DEFAULT 0;
CREATE TABLE last_sends (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

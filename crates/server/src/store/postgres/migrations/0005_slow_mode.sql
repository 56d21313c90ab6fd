-- Slow mode. A room may require this many seconds between one member's messages; each member
-- keeps when they last sent there, moved by the send itself.
ALTER TABLE rooms ADD COLUMN slow_mode_secs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN last_sent_at BIGINT NOT NULL DEFAULT 0;

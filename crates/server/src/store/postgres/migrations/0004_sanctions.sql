-- Bans and mutes, per room and user, with an optional end. A send checks for a mute, a join or
-- an add for a ban, in its own transaction.
CREATE TABLE sanctions (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    until   BIGINT,
    reason  TEXT,
    by_user TEXT NOT NULL,
    -- The rank of whoever imposed it: only that rank or above may lift or replace it (the
    -- target is no member after a ban, so their own rank no longer protects the sanction).
    by_rank INTEGER NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, kind)
);

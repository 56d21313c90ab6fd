-- Version 3: revocable sessions, membership by consent, and unread counts kept by the writes.

-- A signed-in session: tokens carry its id (`sid`), so ending it ends them on every node.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at   INTEGER
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
-- "Sign out everywhere": tokens without a session id (external ones) issued before this are
-- refused.
ALTER TABLE users ADD COLUMN sessions_ended_at INTEGER;
-- Who may put the user into a room: `invite` (an invite they accept), `anyone` (added at once
-- by whoever may add), `nobody`.
ALTER TABLE users ADD COLUMN add_policy TEXT NOT NULL DEFAULT 'invite';

CREATE TABLE blocks (
    user_id    TEXT NOT NULL,
    blocked    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, blocked)
) WITHOUT ROWID;
CREATE INDEX blocks_by_blocked ON blocks (blocked, user_id);

CREATE TABLE invites (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    inviter    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX invites_by_user ON invites (user_id, created_at);

-- Members removed by a moderator: they come back only when a moderator adds them again.
CREATE TABLE removals (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    by_user TEXT NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;

-- dms have no owner.
UPDATE members SET role = 'member' WHERE room_id IN (SELECT id FROM rooms WHERE kind = 'dm');

-- Unread counts: every message takes its room's next ordinal (`ord`, the count of messages up to
-- and including it); a member keeps the ordinal at their read marker (`read_ord`), so unread is
-- `msg_count - read_ord` less the few deleted messages after the marker. Sending moves the
-- author's marker to their message, so the author's own messages are never unread.
ALTER TABLE rooms ADD COLUMN msg_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN ord INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN read_ord INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET ord = o.n
  FROM (SELECT room_id, seq, ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY seq) AS n FROM messages) AS o
  WHERE messages.room_id = o.room_id AND messages.seq = o.seq;
UPDATE rooms SET msg_count = (SELECT COUNT(*) FROM messages m WHERE m.room_id = rooms.id);
-- One pass over the messages, then one indexed lookup per member (never members x messages).
UPDATE members SET read_seq = MAX(members.read_seq, own.last)
  FROM (SELECT room_id, author, MAX(seq) AS last FROM messages GROUP BY room_id, author) AS own
  WHERE members.room_id = own.room_id AND members.user_id = own.author;
UPDATE members SET read_ord = COALESCE(
    (SELECT m.ord FROM messages m WHERE m.room_id = members.room_id AND m.seq <= members.read_seq
     ORDER BY m.seq DESC LIMIT 1), 0);
CREATE INDEX messages_deleted ON messages (room_id, seq) WHERE deleted = 1;

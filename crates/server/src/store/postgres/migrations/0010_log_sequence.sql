-- Version 10: log positions from a sequence instead of the one `log_head` row.
--
-- Every transaction that logged updated `log_head` last and held its lock through the commit,
-- so the nodes' commits queued behind each other's WAL flushes. Now positions come from
-- `event_log_pos`, taken without a lock held to the commit; they may become readable out of
-- order, and readers stop at a missing position until it commits or its transaction is known
-- to have ended (`horizon.rs`).
CREATE SEQUENCE event_log_pos;
SELECT setval('event_log_pos', (SELECT pos FROM log_head WHERE id = 1) + 1, false);
DROP TABLE log_head;

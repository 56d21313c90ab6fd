-- Version 5: each room's member count, kept by triggers on every membership write, so that
-- presence can tell small rooms (per-member presence) from large ones (an online count) and room
-- lists can show the size, without counting members on every read.
ALTER TABLE rooms ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
UPDATE rooms SET member_count = (SELECT COUNT(*) FROM members m WHERE m.room_id = rooms.id);
CREATE TRIGGER members_count_insert AFTER INSERT ON members BEGIN
    UPDATE rooms SET member_count = member_count + 1 WHERE id = NEW.room_id;
END;
CREATE TRIGGER members_count_delete AFTER DELETE ON members BEGIN
    UPDATE rooms SET member_count = member_count - 1 WHERE id = OLD.room_id;
END;

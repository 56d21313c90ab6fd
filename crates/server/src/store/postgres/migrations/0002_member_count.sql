-- Each room's member count, kept by a trigger on every membership write, so that presence can
-- tell small rooms (per-member presence) from large ones (an online count) and room lists can
-- show the size, without counting members on every read. A membership write already locks its
-- room's row (it takes the room's next seq), so the trigger adds no new lock order.
ALTER TABLE rooms ADD COLUMN member_count BIGINT NOT NULL DEFAULT 0;
UPDATE rooms r SET member_count = (SELECT COUNT(*) FROM members m WHERE m.room_id = r.id);
CREATE FUNCTION members_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE rooms SET member_count = member_count + 1 WHERE id = NEW.room_id;
    ELSE
        UPDATE rooms SET member_count = member_count - 1 WHERE id = OLD.room_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER members_count AFTER INSERT OR DELETE ON members
    FOR EACH ROW EXECUTE FUNCTION members_count();

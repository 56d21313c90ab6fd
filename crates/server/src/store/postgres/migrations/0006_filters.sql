-- A room's own content filters (the protocol's `Filters`, as JSON), read by each node into a
-- compiled, cached form; NULL when the room has none.
ALTER TABLE rooms ADD COLUMN filters TEXT;

-- Version 12: server-wide admins, from the configuration (each node's start writes the list).
-- They moderate every room with an owner's rights, without being members.
CREATE TABLE server_admins (
    user_id TEXT PRIMARY KEY
) WITHOUT ROWID;

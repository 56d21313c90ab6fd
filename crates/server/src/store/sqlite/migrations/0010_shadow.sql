-- Version 10: messages of shadow-banned authors. They take the room's next seq (so the author's
-- own timeline has no hole) but not a place in the unread count, and only their author is shown
-- them: live, on resume and in history.
ALTER TABLE messages ADD COLUMN shadow INTEGER NOT NULL DEFAULT 0;

//! The session's position in each room's timeline: which `seq` it has gone past, whether the
//! user is a member at that point, and how a hole is filled from the store. This is where "each
//! room exactly once, in order, and nothing from outside a membership" is kept.

use switchboard_protocol::{MemberChange, Room, RoomKind, ServerFrame, TimelineEvent};
use tungstenite::Utf8Bytes;

use super::{FETCH_PAGE, Session, Stop};
use switchboard_protocol::codes::close;

use crate::app::AppState;
use crate::metrics::Backend;

/// Where the session stands in one room.
pub(super) struct Position {
    /// Last `seq` of the room's timeline the session has gone past (written, or skipped while
    /// the user was not a member).
    pub(super) seq: u64,
    /// Whether the user is a member at `seq`: events are written only while this holds.
    pub(super) member: bool,
    /// The room's kind, for a `room` frame when the room cannot be read any more (after a
    /// removal). Nothing else of the room is kept: a session's memory grows by this small
    /// position per room, however many rooms the user is in.
    pub(super) kind: RoomKind,
    /// Above the presence limit: read markers go only to the user's own devices, and the room
    /// gets an online count instead of presence frames.
    pub(super) big: bool,
}

/// The user's own membership change carried by a timeline event, if any.
pub(super) fn own_change(member: Option<(&str, MemberChange)>, user: &str) -> Option<MemberChange> {
    member.filter(|(u, _)| *u == user).map(|(_, c)| c)
}

impl Session {
    /// Advances one room by one timeline event, writing it if the user may see it. The user's
    /// own membership events switch the room on and off in timeline order, so nothing committed
    /// after a removal (or before a re-join) reaches the client, even before the hub has
    /// updated its subscriptions. An event shown only to someone else (`text` is `None`: a
    /// shadow-banned author's) is gone past in silence.
    pub(super) async fn step(
        &mut self,
        room: &str,
        seq: u64,
        own: Option<MemberChange>,
        text: Option<Utf8Bytes>,
    ) -> Result<(), Stop> {
        let Some(p) = self.rooms.get_mut(room) else {
            return Ok(());
        };
        if seq <= p.seq {
            return Ok(());
        }
        p.seq = seq;
        let Some(text) = text else { return Ok(()) };
        let was_member = p.member;
        let notice = match own {
            Some(MemberChange::Joined) if !was_member => {
                p.member = true;
                Some(MemberChange::Joined)
            }
            Some(change @ (MemberChange::Left | MemberChange::Removed)) if was_member => {
                p.member = false;
                Some(change)
            }
            _ => None,
        };
        let kind = p.kind;
        match notice {
            Some(MemberChange::Joined) => {
                let f =
                    room_frame(&self.state, &self.token.user.id, room, kind, seq, MemberChange::Joined).await;
                self.conn.feed_frame(&f).await?;
                self.conn.feed(text).await?;
            }
            Some(change) => {
                let f = room_frame(&self.state, &self.token.user.id, room, kind, seq, change).await;
                self.conn.feed(text).await?;
                self.conn.feed_frame(&f).await?;
            }
            None if was_member => self.conn.feed(text).await?,
            None => {}
        }
        Ok(())
    }

    /// Brings the room's timeline from the session's position up to `upto` from the store.
    /// What the store does not have is announced with `gap`, never skipped silently; a store
    /// that cannot be read closes the session (1011) so that the client resumes later.
    pub(super) async fn fill(&mut self, room: &str, upto: u64) -> Result<(), Stop> {
        loop {
            let Some(pos) = self.rooms.get(room).map(|p| p.seq) else {
                return Ok(());
            };
            if pos >= upto {
                return Ok(());
            }
            let want = u32::try_from(upto - pos).unwrap_or(u32::MAX).min(FETCH_PAGE);
            let events = match self.state.store.timeline(room, pos, want).await {
                Ok(ev) => ev,
                Err(e) => {
                    // Never skip ahead on a failed read: that could hide the user's own join
                    // or removal. Close instead; the client resumes from where it is.
                    self.state.metrics.backend_error(Backend::Store);
                    tracing::warn!(error = %e, room, session = %self.handle.id, "cannot fill a gap from the store");
                    return Err(Stop::Close(close::INTERNAL, "backend unavailable"));
                }
            };
            let mut expected = pos + 1;
            for ev in events.into_iter().take_while(|e| e.seq() <= upto) {
                let seq = ev.seq();
                if seq > expected {
                    self.announce_gap(room, expected - 1, seq - 1).await?;
                }
                let own = match &ev {
                    TimelineEvent::Member(m) => {
                        own_change(Some((m.user.as_str(), m.change)), &self.token.user.id)
                    }
                    _ => None,
                };
                let shown = ev.only_to().is_none_or(|u| u == self.token.user.id);
                let text = serde_json::to_string(&ev).map_err(|e| {
                    tracing::error!(error = %e, session = %self.handle.id, "cannot encode a timeline event");
                    Stop::Gone
                })?;
                self.state.metrics.replayed_events.inc();
                self.step(room, seq, own, shown.then(|| Utf8Bytes::from(text))).await?;
                expected = seq + 1;
            }
            if expected == pos + 1 {
                // Nothing usable came back: say so, and move on rather than loop.
                return self.announce_gap(room, pos, upto).await;
            }
        }
    }

    async fn announce_gap(&mut self, room: &str, after_seq: u64, until_seq: u64) -> Result<(), Stop> {
        let Some(p) = self.rooms.get_mut(room) else {
            return Ok(());
        };
        p.seq = p.seq.max(until_seq);
        if p.member {
            self.state.metrics.gaps.inc();
            let frame = ServerFrame::Gap { room: room.to_owned(), after_seq, until_seq };
            self.conn.feed_frame(&frame).await?;
        }
        Ok(())
    }
}

/// The `room` frame for the user's own membership change at `seq`: the room as the store has
/// it now, or (when it can no longer be read, after a removal) its id and kind.
async fn room_frame(
    state: &AppState,
    user: &str,
    room: &str,
    kind: RoomKind,
    seq: u64,
    change: MemberChange,
) -> ServerFrame {
    let mut info = state.store.room_for(room, user).await.unwrap_or_else(|_| Room {
        id: room.to_owned(),
        name: String::new(),
        kind,
        last_seq: seq,
        role: None,
        read_seq: None,
        unread: None,
        members: None,
        online: None,
    });
    info.last_seq = seq;
    if change != MemberChange::Joined {
        (info.role, info.read_seq, info.unread) = (None, None, None);
    }
    ServerFrame::Room { room: info, change, seq: Some(seq) }
}

//! Group commit on PostgreSQL: one task per node takes every append waiting (up to a cap) and
//! commits them in one transaction of a few multi-row statements, so a node's concurrent sends
//! share a round trip per statement and one WAL flush.
//!
//! The batch locks its rooms in id order (two nodes' batches over the same rooms queue instead
//! of deadlocking), then checks every job against what is committed (idempotency keys,
//! membership, blocks; the three lookups in one round trip) so that a refused job writes nothing
//! and its neighbours go on. It takes the rooms' `seq`s, then sends the messages, the authors'
//! read markers and the log entries together. Two nodes that get the same `client_msg_id` at once
//! both try to insert it; the second insert waits for the first transaction and then conflicts,
//! so the second batch gives up (its `seq`s with it) and runs again at once, answering that job
//! from the committed row: an idempotent retry, never `Unavailable`. Serialization and deadlock
//! failures are retried with backoff; a batch that fails for another reason is split, so one bad
//! job fails alone.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchboard_protocol::{Message, Role, RoomKind, TimelineEvent};
use tokio::sync::{mpsc, oneshot};

use super::queries::{self, MESSAGE_COLUMNS, dm_peer, exec, message_of, rows, seq_of, to_i64};
use super::{Fail, Inner, Pg, backoff, is_contention};
use crate::moderation::policy::{self, Action};
use crate::store::{Appended, NewMessage, SanctionKind, StoreError, StoreResult, now_ms, rfc3339_ms};

/// One queued append and where its answer goes.
pub(super) struct AppendJob {
    pub(super) msg: NewMessage,
    pub(super) reply: oneshot::Sender<StoreResult<Appended>>,
}

/// Attempts for a batch that keeps meeting serialization or deadlock failures.
const MAX_ATTEMPTS: u32 = 6;

/// Runs until every sender is dropped and the queue is empty.
pub(super) async fn run(inner: Arc<Inner>, mut jobs: mpsc::Receiver<AppendJob>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        commit(&inner, std::mem::take(&mut batch)).await;
    }
}

/// Commits a batch and answers each job.
fn commit(inner: &Arc<Inner>, jobs: Vec<AppendJob>) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        let msgs: Vec<&NewMessage> = jobs.iter().map(|j| &j.msg).collect();
        let mut attempt = 0;
        let outcome = loop {
            match try_batch(inner, &msgs).await {
                Err(Fail::Pg(e)) if is_contention(&e) && attempt + 1 < MAX_ATTEMPTS => {
                    attempt += 1;
                    backoff(attempt).await;
                }
                // The racing transaction has committed: at once.
                Err(Fail::Race) if attempt + 1 < MAX_ATTEMPTS => attempt += 1,
                other => break other,
            }
        };
        match outcome {
            Ok((results, last)) => {
                inner.advance(last);
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(f) => {
                let err = f.into_store();
                if jobs.len() > 1 && matches!(err, StoreError::Fatal(_)) {
                    // Something in the batch the checks did not foresee: commit the jobs one
                    // by one, so that only the one that causes it fails.
                    tracing::warn!(error = %err, jobs = jobs.len(), "postgres: batch failed; committing its jobs one by one");
                    for job in jobs {
                        commit(inner, vec![job]).await;
                    }
                    return;
                }
                for job in jobs {
                    let _ = job.reply.send(Err(err.clone()));
                }
            }
        }
    })
}

/// What the checks decided for one job.
// One per job of a batch, short-lived: not worth a box per settled answer.
#[allow(clippy::large_enum_variant)]
enum Plan {
    /// Settled: the answer is known.
    Done(StoreResult<Appended>),
    /// To insert (its `seq` and ordinal are taken next); `shadow` for a shadow-banned author.
    Insert {
        /// Only the author is shown it.
        shadow: bool,
    },
    /// The same key as an earlier job of this batch: answered from that one.
    SameAs(usize),
}

type Outcome = (Vec<StoreResult<Appended>>, Option<u64>);

async fn try_batch(inner: &Inner, msgs: &[&NewMessage]) -> Pg<Outcome> {
    let mut client = inner.client().await?;
    let tx = client.transaction().await?;
    let mut room_ids: Vec<&str> = msgs.iter().map(|m| m.room.as_str()).collect();
    room_ids.sort_unstable();
    room_ids.dedup();
    // Locked in id order: another node's batch over the same rooms waits, never deadlocks.
    let mut rooms: HashMap<String, (RoomKind, Option<String>)> = HashMap::new();
    for r in rows(
        &tx,
        "SELECT id, kind, dm_key FROM rooms WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&room_ids],
    )
    .await?
    {
        let kind: String = r.try_get(1)?;
        rooms.insert(r.try_get(0)?, (RoomKind::parse(&kind).unwrap_or(RoomKind::Private), r.try_get(2)?));
    }
    let (plans, slow_sends) = check(&tx, msgs, &rooms).await?;
    let to_insert: Vec<(usize, bool)> = plans
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Plan::Insert { shadow } => Some((i, *shadow)),
            _ => None,
        })
        .collect();
    let mut inserted: Vec<Option<(Message, i64)>> = vec![None; msgs.len()];
    // One timestamp for the batch: what is stored is what the acks say.
    let ts = now_ms();
    let planned = assign(&tx, msgs, &to_insert, ts).await?;
    let events: Vec<TimelineEvent> = planned.iter().map(|(m, _)| TimelineEvent::Message(m.clone())).collect();
    let to_insert: Vec<usize> = to_insert.into_iter().map(|(i, _)| i).collect();
    let markers = read_markers(msgs, &to_insert, &planned);
    // Three independent statements sent together (tokio-postgres pipelines them on the one
    // connection): the messages, the authors' read markers, the log entries (positions from
    // the log's sequence: no log lock is held to the commit).
    let (written, (), (), last) = tokio::try_join!(
        write(&tx, &planned, ts),
        move_markers(&tx, markers),
        record_sends(&tx, slow_sends, ts),
        queries::log_events(&tx, &events),
    )?;
    if written != planned.len() {
        // Another node committed one of these keys first (the insert waited for it): give
        // the whole batch up, its `seq`s with it, and run it again, which finds that row.
        return Err(Fail::Race);
    }
    for (i, m) in to_insert.iter().zip(planned) {
        inserted[*i] = Some(m);
    }
    tx.commit().await?;
    let mut results: Vec<StoreResult<Appended>> = Vec::with_capacity(msgs.len());
    for (i, plan) in plans.into_iter().enumerate() {
        let result = match plan {
            Plan::Done(r) => r,
            Plan::Insert { .. } => match inserted[i].take() {
                Some((message, _)) => Ok(Appended { message, created: true }),
                None => Err(StoreError::Unavailable("append lost in its batch".into())),
            },
            Plan::SameAs(j) => match results.get(j) {
                Some(Ok(first)) if first.message.room == msgs[i].room => {
                    Ok(Appended { message: first.message.clone(), created: false })
                }
                Some(Ok(_)) => Err(StoreError::IdempotencyConflict),
                Some(Err(e)) => Err(e.clone()),
                None => Err(StoreError::Unavailable("append lost in its batch".into())),
            },
        };
        results.push(result);
    }
    Ok((results, last))
}

/// Decides each job from what is committed: an existing key, membership, blocks.
async fn check(
    c: &deadpool_postgres::Transaction<'_>,
    msgs: &[&NewMessage],
    rooms: &HashMap<String, (RoomKind, Option<String>)>,
) -> Pg<(Vec<Plan>, SlowSends)> {
    let authors: Vec<&str> = msgs.iter().map(|m| m.author.as_str()).collect();
    let keys: Vec<&str> = msgs.iter().map(|m| m.client_msg_id.as_str()).collect();
    let room_of: Vec<&str> = msgs.iter().map(|m| m.room.as_str()).collect();
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
          WHERE (author, client_msg_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))"
    );
    // Blocks only matter in dms: the author and the other person, either way round.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for m in msgs {
        if let Some((RoomKind::Dm, Some(key))) = rooms.get(&m.room)
            && let Some(peer) = dm_peer(key, &m.author)
        {
            a.push(m.author.clone());
            b.push(peer);
        }
    }
    // The three lookups go together, in one round trip.
    let key_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&authors, &keys];
    let member_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&room_of, &authors];
    let (key_rows, member_rows, block_rows) = tokio::try_join!(
        rows(c, &sql, &key_params),
        rows(
            c,
            "SELECT m.room_id, m.user_id, s.kind IS NOT NULL, s.until, m.role, COALESCE(l.at, 0), r.slow_mode_secs,
                    sh.kind IS NOT NULL, sh.until
               FROM members m JOIN rooms r ON r.id = m.room_id
               LEFT JOIN sanctions s ON s.room_id = m.room_id AND s.user_id = m.user_id AND s.kind = 'muted'
               LEFT JOIN sanctions sh ON sh.room_id = m.room_id AND sh.user_id = m.user_id
                                     AND sh.kind = 'shadow_banned'
               LEFT JOIN last_sends l ON l.room_id = m.room_id AND l.user_id = m.user_id
              WHERE (m.room_id, m.user_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
            &member_params,
        ),
        async {
            if a.is_empty() {
                return Ok(Vec::new());
            }
            rows(
                c,
                "SELECT user_id, blocked FROM blocks
                  WHERE (user_id, blocked) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
                     OR (blocked, user_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
                &[&a, &b],
            )
            .await
        },
    )?;
    let mut existing: HashMap<(String, String), Message> = HashMap::new();
    for r in &key_rows {
        let m = message_of(r)?;
        existing.insert((m.author.clone(), m.client_msg_id.clone()), m);
    }
    // Members, each with the mute that stands against them (`Some(until)`), if one does, and
    // when slow mode lets them send again (`Some(ms)`), if it holds them back.
    let now = now_ms();
    let mut member: HashMap<(String, String), Standing> = HashMap::new();
    for r in &member_rows {
        let muted: bool = r.try_get(2)?;
        let mute = if muted { SanctionKind::standing(r.try_get(3)?) } else { None };
        let role: String = r.try_get(4)?;
        let (last, secs): (i64, i64) = (r.try_get(5)?, r.try_get(6)?);
        let exempt = policy::may(Action::BypassSlowMode, Role::parse(&role), None);
        let slow = (secs > 0 && !exempt).then_some((last + secs * 1000, secs * 1000));
        let shadowed: bool = r.try_get(7)?;
        let shadow = shadowed && SanctionKind::standing(r.try_get(8)?).is_some();
        member.insert((r.try_get(0)?, r.try_get(1)?), Standing { mute, slow, recorded: secs > 0, shadow });
    }
    // Slow mode counts the messages of this batch too: one per author and room goes in.
    let mut sent_now: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    let mut slow_sends: SlowSends = (Vec::new(), Vec::new());
    let mut blocked: HashMap<(String, String), ()> = HashMap::new();
    for r in &block_rows {
        let (x, y): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        blocked.insert((y.clone(), x.clone()), ());
        blocked.insert((x, y), ());
    }
    let mut first_of_key: HashMap<(&str, &str), usize> = HashMap::new();
    let mut plans = Vec::with_capacity(msgs.len());
    for (i, &m) in msgs.iter().enumerate() {
        let is_member = member.contains_key(&(m.room.clone(), m.author.clone()));
        let not_member = || match rooms.get(&m.room) {
            Some((RoomKind::Public, _)) => StoreError::NotMember,
            _ => StoreError::NotFound,
        };
        let plan = if let Some(first) = existing.get(&(m.author.clone(), m.client_msg_id.clone())) {
            if first.room != m.room {
                Plan::Done(Err(StoreError::IdempotencyConflict))
            } else if !is_member {
                // A retry answers only to a member.
                Plan::Done(Err(not_member()))
            } else {
                Plan::Done(Ok(Appended { message: first.clone(), created: false }))
            }
        } else if let Some(&j) = first_of_key.get(&(m.author.as_str(), m.client_msg_id.as_str())) {
            Plan::SameAs(j)
        } else if !rooms.contains_key(&m.room) || !is_member {
            Plan::Done(Err(not_member()))
        } else if let Some((RoomKind::Dm, Some(key))) = rooms.get(&m.room)
            && dm_peer(key, &m.author).is_some_and(|peer| blocked.contains_key(&(m.author.clone(), peer)))
        {
            Plan::Done(Err(StoreError::Blocked))
        } else if let Some(Standing { mute: Some(until), .. }) =
            member.get(&(m.room.clone(), m.author.clone()))
        {
            Plan::Done(Err(StoreError::Sanctioned { kind: SanctionKind::Mute.as_str(), until_ms: *until }))
        } else if let Some(Standing { slow: Some((next, gap)), .. }) =
            member.get(&(m.room.clone(), m.author.clone()))
            && (now < *next || sent_now.contains(&(m.room.as_str(), m.author.as_str())))
        {
            let until = if now < *next { *next } else { now + gap };
            Plan::Done(Err(StoreError::Sanctioned { kind: "slow_mode", until_ms: Some(until) }))
        } else {
            first_of_key.insert((m.author.as_str(), m.client_msg_id.as_str()), i);
            sent_now.insert((m.room.as_str(), m.author.as_str()));
            let standing = member.get(&(m.room.clone(), m.author.clone()));
            if standing.is_some_and(|s| s.recorded) {
                slow_sends.0.push(m.room.clone());
                slow_sends.1.push(m.author.clone());
            }
            Plan::Insert { shadow: standing.is_some_and(|s| s.shadow) }
        };
        plans.push(plan);
    }
    Ok((plans, slow_sends))
}

/// `(rooms, authors)` of the messages going into slow-mode rooms: their send times are recorded.
type SlowSends = (Vec<String>, Vec<String>);

/// Records when each author last sent in a slow-mode room (the batch's one timestamp).
async fn record_sends(c: &deadpool_postgres::Transaction<'_>, sends: SlowSends, ts: i64) -> Pg<()> {
    if sends.0.is_empty() {
        return Ok(());
    }
    exec(
        c,
        "INSERT INTO last_sends (room_id, user_id, at)
         SELECT DISTINCT v.room_id, v.user_id, $3::bigint FROM UNNEST($1::text[], $2::text[]) AS v(room_id, user_id)
         ON CONFLICT (room_id, user_id) DO UPDATE SET at = excluded.at",
        &[&sends.0, &sends.1, &ts],
    )
    .await?;
    Ok(())
}

/// What a send must know of its author's standing in the room.
struct Standing {
    /// The mute that stands, with its end, if one does.
    mute: Option<Option<i64>>,
    /// Under slow mode (and not exempt): when the author may send again, and the gap.
    slow: Option<(i64, i64)>,
    /// The room is in slow mode: the send records its time.
    recorded: bool,
    /// The author is shadow-banned: only they are shown the message.
    shadow: bool,
}

/// Takes `seq`s for the jobs (in job order per room, the rooms being locked) and returns their
/// messages with their ordinals, not yet written.
async fn assign(
    c: &deadpool_postgres::Transaction<'_>,
    msgs: &[&NewMessage],
    which: &[(usize, bool)],
    ts_ms: i64,
) -> Pg<Vec<(Message, i64)>> {
    if which.is_empty() {
        return Ok(Vec::new());
    }
    // Per room: how many seqs, and how many of them count as messages (a shadow-banned
    // author's take a seq but no place in others' unread counts).
    let mut per_room: Vec<(&str, i64, i64)> = Vec::new();
    for &(i, shadow) in which {
        let seen = i64::from(!shadow);
        match per_room.iter_mut().find(|(r, _, _)| *r == msgs[i].room) {
            Some((_, n, k)) => (*n, *k) = (*n + 1, *k + seen),
            None => per_room.push((msgs[i].room.as_str(), 1, seen)),
        }
    }
    let ids: Vec<&str> = per_room.iter().map(|(r, _, _)| *r).collect();
    let counts: Vec<i64> = per_room.iter().map(|(_, n, _)| *n).collect();
    let seen: Vec<i64> = per_room.iter().map(|(_, _, k)| *k).collect();
    let mut next: HashMap<String, (i64, i64)> = HashMap::new();
    for r in rows(
        c,
        "UPDATE rooms SET last_seq = last_seq + v.n, msg_count = msg_count + v.k
           FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS v(id, n, k) WHERE rooms.id = v.id
         RETURNING rooms.id, rooms.last_seq - v.n, rooms.msg_count - v.k",
        &[&ids, &counts, &seen],
    )
    .await?
    {
        next.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
    }
    let ts = rfc3339_ms(ts_ms);
    let mut planned = Vec::with_capacity(which.len());
    for &(i, shadow) in which {
        let m = msgs[i];
        let Some((seq, ord)) = next.get_mut(&m.room) else {
            return Err(StoreError::NotFound.into());
        };
        *seq += 1;
        if !shadow {
            *ord += 1;
        }
        let message = Message {
            id: queries::new_id(),
            room: m.room.clone(),
            seq: seq_of(*seq),
            only_to: shadow.then(|| m.author.clone()),
            author: m.author.clone(),
            body: m.body.clone(),
            ts: ts.clone(),
            client_msg_id: m.client_msg_id.clone(),
            edited_at: None,
            deleted: None,
        };
        planned.push((message, *ord));
    }
    Ok(planned)
}

/// Inserts the planned messages; returns how many were written (fewer when another node
/// committed one of the keys meanwhile).
async fn write(c: &deadpool_postgres::Transaction<'_>, planned: &[(Message, i64)], ts: i64) -> Pg<usize> {
    if planned.is_empty() {
        return Ok(0);
    }
    let room: Vec<&str> = planned.iter().map(|(m, _)| m.room.as_str()).collect();
    let seq: Vec<i64> = planned.iter().map(|(m, _)| to_i64(m.seq)).collect();
    let id: Vec<&str> = planned.iter().map(|(m, _)| m.id.as_str()).collect();
    let author: Vec<&str> = planned.iter().map(|(m, _)| m.author.as_str()).collect();
    let key: Vec<&str> = planned.iter().map(|(m, _)| m.client_msg_id.as_str()).collect();
    let body: Vec<&str> = planned.iter().map(|(m, _)| m.body.as_str()).collect();
    let ord: Vec<i64> = planned.iter().map(|(_, o)| *o).collect();
    let shadow: Vec<bool> = planned.iter().map(|(m, _)| m.only_to.is_some()).collect();
    let n = exec(
        c,
        "INSERT INTO messages (room_id, seq, id, author, client_msg_id, body, ts, ord, shadow)
         SELECT v.room_id, v.seq, v.id, v.author, v.key, v.body, $8, v.ord, v.shadow
           FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                       $9::boolean[])
             AS v(room_id, seq, id, author, key, body, ord, shadow)
         ON CONFLICT (author, client_msg_id) DO NOTHING",
        &[&room, &seq, &id, &author, &key, &body, &ord, &ts, &shadow],
    )
    .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Writing in a room reads it: each author's marker moves to their last message there.
async fn move_markers(c: &deadpool_postgres::Transaction<'_>, markers: Vec<Marker<'_>>) -> Pg<()> {
    if markers.is_empty() {
        return Ok(());
    }
    let mut r = Vec::with_capacity(markers.len());
    let (mut u, mut s, mut o) = (Vec::new(), Vec::new(), Vec::new());
    for ((room, user), (seq, ord)) in markers {
        r.push(room);
        u.push(user);
        s.push(seq);
        o.push(ord);
    }
    exec(
        c,
        "UPDATE members mb SET read_seq = v.seq, read_ord = v.ord
           FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS v(room_id, user_id, seq, ord)
          WHERE mb.room_id = v.room_id AND mb.user_id = v.user_id",
        &[&r, &u, &s, &o],
    )
    .await?;
    Ok(())
}

/// `(room, author)` and where the author's marker moves: `(seq, ordinal)`.
type Marker<'a> = ((&'a str, &'a str), (i64, i64));

fn read_markers<'a>(msgs: &[&'a NewMessage], which: &[usize], planned: &[(Message, i64)]) -> Vec<Marker<'a>> {
    let mut out: Vec<Marker<'a>> = Vec::new();
    for (&i, (w, ord)) in which.iter().zip(planned) {
        let m = msgs[i];
        let at = (to_i64(w.seq), *ord);
        let key = (m.room.as_str(), m.author.as_str());
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) if v.0 < at.0 => *v = at,
            Some(_) => {}
            None => out.push((key, at)),
        }
    }
    out
}

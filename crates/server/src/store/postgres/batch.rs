//! Group commit on PostgreSQL: one task per node takes every append waiting (up to a cap) and
//! commits them in one transaction of a few multi-row statements, so a node's concurrent sends
//! share a round trip per statement and one WAL flush.
//!
//! The batch locks its rooms in id order (two nodes' batches over the same rooms queue instead
//! of deadlocking), then checks every job against what is committed (idempotency keys,
//! membership, blocks) so that a refused job writes nothing and its neighbours go on. Two nodes
//! that get the same `client_msg_id` at once both try to insert it; the second insert waits for
//! the first transaction and then conflicts, so the second batch rolls back to a savepoint and
//! answers that job from the committed row (an idempotent retry, never `Unavailable`), its
//! `seq` not spent. Serialization and deadlock failures are retried with backoff; a batch that
//! fails for another reason is split, so one bad job fails alone.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchboard_protocol::{Message, RoomKind, TimelineEvent};
use tokio::sync::{mpsc, oneshot};

use super::queries::{self, MESSAGE_COLUMNS, dm_peer, exec, message_of, rows, seq_of, to_i64};
use super::{Fail, Inner, Pg, backoff, is_contention};
use crate::store::{Appended, NewMessage, StoreError, StoreResult, now_ms, rfc3339_ms};

/// One queued append and where its answer goes.
pub(super) struct AppendJob {
    pub(super) msg: NewMessage,
    pub(super) reply: oneshot::Sender<StoreResult<Appended>>,
}

/// Attempts for a batch that keeps meeting serialization or deadlock failures.
const MAX_ATTEMPTS: u32 = 6;
/// Rounds of "a concurrent node committed one of our keys first" within one batch.
const MAX_ROUNDS: usize = 4;

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
#[derive(Clone)]
enum Plan {
    /// Settled: the answer is known.
    Done(StoreResult<Appended>),
    /// To insert with this `seq` and ordinal.
    Insert,
    /// The same key as an earlier job of this batch: answered from that one.
    SameAs(usize),
}

type Outcome = (Vec<StoreResult<Appended>>, Option<u64>);

async fn try_batch(inner: &Inner, msgs: &[&NewMessage]) -> Pg<Outcome> {
    let mut client = inner.client().await?;
    let mut tx = client.transaction().await?;
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
    let mut plans: Vec<Option<Plan>> = vec![None; msgs.len()];
    let mut inserted: Vec<Option<(Message, i64)>> = vec![None; msgs.len()];
    let mut events = Vec::new();
    for round in 0.. {
        if round == MAX_ROUNDS {
            return Err(StoreError::Unavailable("idempotency keys kept colliding across nodes".into()).into());
        }
        let sp = tx.savepoint("batch").await?;
        let open: Vec<usize> = (0..msgs.len()).filter(|i| plans[*i].is_none()).collect();
        let decided = check(&sp, msgs, &open, &rooms).await?;
        let mut to_insert = Vec::new();
        for (i, plan) in open.iter().zip(decided) {
            if matches!(plan, Plan::Insert) {
                to_insert.push(*i);
            }
            plans[*i] = Some(plan);
        }
        let written = insert(&sp, msgs, &to_insert).await?;
        if written.len() == to_insert.len() {
            sp.commit().await?;
            for (i, (m, ord)) in to_insert.iter().zip(written) {
                events.push(TimelineEvent::Message(m.clone()));
                inserted[*i] = Some((m, ord));
            }
            break;
        }
        // Another node committed some of these keys first: undo this round's writes (its
        // `seq`s with them) and look those jobs up again, now that their rows are visible.
        sp.rollback().await?;
        for i in to_insert {
            plans[i] = None;
        }
    }
    let markers = read_markers(msgs, &inserted);
    if !markers.is_empty() {
        let (r, u, s, o): (Vec<&str>, Vec<&str>, Vec<i64>, Vec<i64>) = markers.into_iter().fold(
            (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
            |mut acc, ((room, user), (seq, ord))| {
                acc.0.push(room);
                acc.1.push(user);
                acc.2.push(seq);
                acc.3.push(ord);
                acc
            },
        );
        // Writing in a room reads it: each author's marker moves to their last message here.
        exec(
            &tx,
            "UPDATE members mb SET read_seq = v.seq, read_ord = v.ord
               FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS v(room_id, user_id, seq, ord)
              WHERE mb.room_id = v.room_id AND mb.user_id = v.user_id",
            &[&r, &u, &s, &o],
        )
        .await?;
    }
    let last = queries::log_events(&tx, &events).await?;
    tx.commit().await?;
    let mut results: Vec<StoreResult<Appended>> = Vec::with_capacity(msgs.len());
    for (i, plan) in plans.into_iter().enumerate() {
        let result = match plan {
            Some(Plan::Done(r)) => r,
            Some(Plan::Insert) => match inserted[i].take() {
                Some((message, _)) => Ok(Appended { message, created: true }),
                None => Err(StoreError::Unavailable("append lost in its batch".into())),
            },
            Some(Plan::SameAs(j)) => match results.get(j) {
                Some(Ok(first)) if first.message.room == msgs[i].room => {
                    Ok(Appended { message: first.message.clone(), created: false })
                }
                Some(Ok(_)) => Err(StoreError::IdempotencyConflict),
                Some(Err(e)) => Err(e.clone()),
                None => Err(StoreError::Unavailable("append lost in its batch".into())),
            },
            None => Err(StoreError::Unavailable("append left undecided".into())),
        };
        results.push(result);
    }
    Ok((results, last))
}

/// Decides each open job from what is committed: an existing key, membership, blocks.
async fn check(
    c: &deadpool_postgres::Transaction<'_>,
    msgs: &[&NewMessage],
    open: &[usize],
    rooms: &HashMap<String, (RoomKind, Option<String>)>,
) -> Pg<Vec<Plan>> {
    let authors: Vec<&str> = open.iter().map(|i| msgs[*i].author.as_str()).collect();
    let keys: Vec<&str> = open.iter().map(|i| msgs[*i].client_msg_id.as_str()).collect();
    let room_of: Vec<&str> = open.iter().map(|i| msgs[*i].room.as_str()).collect();
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
          WHERE (author, client_msg_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))"
    );
    let mut existing: HashMap<(String, String), Message> = HashMap::new();
    for r in rows(c, &sql, &[&authors, &keys]).await? {
        let m = message_of(&r)?;
        existing.insert((m.author.clone(), m.client_msg_id.clone()), m);
    }
    let mut member: HashMap<(String, String), ()> = HashMap::new();
    for r in rows(
        c,
        "SELECT room_id, user_id FROM members
          WHERE (room_id, user_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
        &[&room_of, &authors],
    )
    .await?
    {
        member.insert((r.try_get(0)?, r.try_get(1)?), ());
    }
    // Blocks only matter in dms: the author and the other person, either way round.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in open {
        if let Some((RoomKind::Dm, Some(key))) = rooms.get(&msgs[*i].room)
            && let Some(peer) = dm_peer(key, &msgs[*i].author)
        {
            a.push(msgs[*i].author.clone());
            b.push(peer);
        }
    }
    let mut blocked: HashMap<(String, String), ()> = HashMap::new();
    if !a.is_empty() {
        for r in rows(
            c,
            "SELECT user_id, blocked FROM blocks
              WHERE (user_id, blocked) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
                 OR (blocked, user_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
            &[&a, &b],
        )
        .await?
        {
            let (x, y): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            blocked.insert((y.clone(), x.clone()), ());
            blocked.insert((x, y), ());
        }
    }
    let mut first_of_key: HashMap<(&str, &str), usize> = HashMap::new();
    let mut plans = Vec::with_capacity(open.len());
    for &i in open {
        let m = msgs[i];
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
        } else {
            first_of_key.insert((m.author.as_str(), m.client_msg_id.as_str()), i);
            Plan::Insert
        };
        plans.push(plan);
    }
    Ok(plans)
}

/// Takes `seq`s for the jobs (in job order per room) and inserts their messages; returns the
/// messages written with their ordinals, or nothing when another node committed one of the keys
/// meanwhile (the caller then rolls the round back).
async fn insert(
    c: &deadpool_postgres::Transaction<'_>,
    msgs: &[&NewMessage],
    which: &[usize],
) -> Pg<Vec<(Message, i64)>> {
    if which.is_empty() {
        return Ok(Vec::new());
    }
    let mut per_room: Vec<(&str, i64)> = Vec::new();
    for &i in which {
        match per_room.iter_mut().find(|(r, _)| *r == msgs[i].room) {
            Some((_, n)) => *n += 1,
            None => per_room.push((msgs[i].room.as_str(), 1)),
        }
    }
    let (ids, counts): (Vec<&str>, Vec<i64>) = per_room.iter().copied().unzip();
    let mut next: HashMap<String, (i64, i64)> = HashMap::new();
    for r in rows(
        c,
        "UPDATE rooms SET last_seq = last_seq + v.n, msg_count = msg_count + v.n
           FROM UNNEST($1::text[], $2::bigint[]) AS v(id, n) WHERE rooms.id = v.id
         RETURNING rooms.id, rooms.last_seq - v.n, rooms.msg_count - v.n",
        &[&ids, &counts],
    )
    .await?
    {
        next.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
    }
    let ts = now_ms();
    let mut planned = Vec::with_capacity(which.len());
    let (mut c_room, mut c_seq, mut c_id, mut c_author, mut c_key, mut c_body, mut c_ord) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &i in which {
        let m = msgs[i];
        let Some((seq, ord)) = next.get_mut(&m.room) else {
            return Err(StoreError::NotFound.into());
        };
        *seq += 1;
        *ord += 1;
        let id = queries::new_id();
        c_room.push(m.room.as_str());
        c_seq.push(*seq);
        c_id.push(id.clone());
        c_author.push(m.author.as_str());
        c_key.push(m.client_msg_id.as_str());
        c_body.push(m.body.as_str());
        c_ord.push(*ord);
        planned.push((
            Message {
                id,
                room: m.room.clone(),
                seq: seq_of(*seq),
                author: m.author.clone(),
                body: m.body.clone(),
                ts: rfc3339_ms(ts),
                client_msg_id: m.client_msg_id.clone(),
                edited_at: None,
                deleted: None,
            },
            *ord,
        ));
    }
    let written: Vec<String> = rows(
        c,
        "INSERT INTO messages (room_id, seq, id, author, client_msg_id, body, ts, ord)
         SELECT v.room_id, v.seq, v.id, v.author, v.key, v.body, $8, v.ord
           FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
             AS v(room_id, seq, id, author, key, body, ord)
         ON CONFLICT (author, client_msg_id) DO NOTHING RETURNING id",
        &[&c_room, &c_seq, &c_id, &c_author, &c_key, &c_body, &c_ord, &ts],
    )
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    if written.len() != planned.len() {
        return Ok(Vec::new());
    }
    Ok(planned)
}

/// Each author's last message per room in this batch: where their read marker moves.
/// `(room, author)` and where the author's marker moves: `(seq, ordinal)`.
type Marker<'a> = ((&'a str, &'a str), (i64, i64));

fn read_markers<'a>(msgs: &[&'a NewMessage], inserted: &[Option<(Message, i64)>]) -> Vec<Marker<'a>> {
    let mut out: Vec<Marker<'a>> = Vec::new();
    for (m, written) in msgs.iter().zip(inserted) {
        let Some((w, ord)) = written else { continue };
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

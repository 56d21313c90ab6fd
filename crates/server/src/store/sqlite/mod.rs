//! The embedded store: SQLite in WAL mode with `synchronous=FULL` (fsync before every ack, so a
//! power cut loses nothing acked), one writer thread with group commit ([`writer`]) whose WAL
//! writes reach the file together at each commit's sync ([`wal_vfs`]), the newest log entries
//! kept in memory for the log's consumers ([`tail`]), and a small pool of read-only
//! connections that read concurrently with the writer.

mod audience;
mod audit;
mod checkpoint;
mod queries;
mod readers;
mod reports;
mod sanctions;
mod tail;
mod wal_vfs;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rusqlite::Connection;
use switchboard_protocol::rest::UserSettings;
use switchboard_protocol::{Invite, Message, Role, Room, TimelineEvent, User};
use tokio::sync::{mpsc, watch};

use super::{
    AddOutcome, Appended, Committing, CreatedRoom, Credentials, ExternalUser, HistoryPage, LoggedEvent,
    NewMessage, NewRoom, NewSession, Store, StoreError, StoreResult,
};

/// Schema migrations, applied in order at start; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_messages_by_room.sql"),
    include_str!("migrations/0003_sessions_consent_unread.sql"),
    include_str!("migrations/0004_event_log.sql"),
    include_str!("migrations/0005_member_count.sql"),
    include_str!("migrations/0006_audit.sql"),
    include_str!("migrations/0007_sanctions.sql"),
    include_str!("migrations/0008_slow_mode.sql"),
    include_str!("migrations/0009_filters.sql"),
    include_str!("migrations/0010_shadow.sql"),
    include_str!("migrations/0011_reports.sql"),
    include_str!("migrations/0012_server_admins.sql"),
    include_str!("migrations/0013_messages_rowid.sql"),
];

/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Bytes of WAL file kept when the WAL restarts (see `open_writer`): what the heaviest load
/// writes between two restarts (2 s, ~400 MiB at 10,000 sends/s), so the file stops growing
/// and shrinking under it.
const WAL_KEEP: u64 = 512 * 1024 * 1024;

/// Page size of a new database file (see `open_writer`).
const PAGE_SIZE: u32 = 2048;

/// Most read-only connections ([`readers`]), each three files and up to a 2 MiB page cache.
/// A cap of 8 starved sends while 2,000 sessions said `hello` at once (the presence test of a
/// typing flood lost its deliveries' deadline; why 8 readers stall that long is not yet
/// understood), 64 does not.
const READERS: usize = 64;

/// How the embedded store is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Database file.
    pub path: PathBuf,
    /// Most writes committed together in one transaction (1 = one fsync per write).
    pub max_batch: usize,
}

/// The embedded store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    jobs: Mutex<Option<mpsc::Sender<writer::Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<checkpoint::Checkpointer>>,
    readers: Arc<readers::ReadPool>,
    head: watch::Receiver<u64>,
    tail: Arc<tail::LogTail>,
}

fn poisoned() -> StoreError {
    StoreError::Unavailable("sqlite pool lock poisoned".into())
}

/// Plans that do not depend on bound values. Without this, SQLite marks a parameter compared
/// while planning (against the partial index `messages_deleted`, say) so that binding a new
/// value expires the statement, and every send re-parsed and re-planned its cached statements
/// (measured: 13% of the server's CPU at 500 msg/s, in `sqlite3Reprepare`).
fn stable_plans(conn: &Connection) -> StoreResult<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

fn open_writer(path: &Path) -> StoreResult<Connection> {
    // The writer's WAL writes go out together at each commit's sync (see `wal_vfs`); should the
    // layer fail to register, as SQLite writes them.
    let mut conn = if wal_vfs::register() {
        Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), wal_vfs::NAME)?
    } else {
        Connection::open(path)?
    };
    stable_plans(&conn)?;
    // The writer waits out a TRUNCATE checkpoint (the only other writer of the file) rather
    // than failing the batch it holds.
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // Takes effect only on a new, empty file (an existing database keeps its page size).
    // Every commit writes each page it touched whole into the WAL, and a send touches several
    // pages far apart (its room's messages, the author's keys, the room and member rows), so
    // a smaller page means fewer bytes written and synced per send; 2 KiB keeps the trees
    // shallow and a long message on one page (docs/benchmarks.md, issue 12).
    conn.execute_batch(&format!("PRAGMA page_size={PAGE_SIZE}"))?;
    // WAL lets readers run beside the writer; FULL fsyncs the WAL at every commit, which is
    // what "acked means durable" needs (NORMAL would survive a crash but not a power cut).
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!("sqlite refused WAL mode ({mode})")));
    }
    // A page cache for the hot index pages, and no bigger: after any commit that split a
    // b-tree page SQLite walks its whole cache (the split parks a page under a far page number,
    // and the commit then drops every page past the end of the file), which with 64 MiB cost
    // 17% of the writer's CPU. Checkpoints run on their own thread (see `checkpoint`), never
    // inside a commit. The WAL keeps its size when it restarts, up to `WAL_KEEP`, so commits
    // overwrite blocks it already has: a commit that makes the file longer makes its fsync a
    // filesystem journal commit too, and with a 64 MiB limit (the WAL holds ~80 MiB a second at
    // 5,000 sends/s) every restart cut the file and the rest of each second's commits grew it
    // again (dm p99 at 10,000/s: 52-75 ms against 20-21 ms; docs/benchmarks.md).
    conn.execute_batch(&format!(
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;
         PRAGMA cache_size=-8192; PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit={WAL_KEEP};"
    ))?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let done: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let done = usize::try_from(done).unwrap_or(0);
    if done > MIGRATIONS.len() {
        return Err(StoreError::Fatal(format!(
            "database schema version {done} is newer than this binary ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(i64::MAX))?;
        tx.commit()?;
        tracing::info!(version = i + 1, "sqlite: migration applied");
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database, runs pending migrations and starts the writer.
    pub fn open(opts: &SqliteOptions) -> StoreResult<Self> {
        if let Some(dir) = opts.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = open_writer(&opts.path)?;
        let head = queries::log_head(&conn)?;
        let (job_tx, job_rx) = mpsc::channel(65_536);
        let (head_tx, head_rx) = watch::channel(head);
        let passes = checkpoint::Passes::new();
        let tail = Arc::new(tail::LogTail::default());
        let handle =
            writer::spawn(conn, job_rx, head_tx, tail.clone(), opts.max_batch.max(1), passes.clone())
                .map_err(|e| StoreError::Unavailable(format!("starting the writer thread: {e}")))?;
        let checkpointer = checkpoint::spawn(opts.path.clone(), CHECKPOINT_EVERY, passes)
            .map_err(|e| StoreError::Unavailable(format!("starting the checkpoint thread: {e}")))?;
        Ok(SqliteStore {
            jobs: Mutex::new(Some(job_tx)),
            writer: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some(checkpointer)),
            readers: readers::ReadPool::new(opts.path.clone(), READERS),
            head: head_rx,
            tail,
        })
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<(T, Vec<TimelineEvent>)> + Send + 'static,
    {
        self.queue_write(f).await?.await
    }

    /// Queues a write on the writer thread (jobs run in queue order) and returns the wait for
    /// its commit.
    async fn queue_write<T, F>(&self, f: F) -> StoreResult<Committing<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<(T, Vec<TimelineEvent>)> + Send + 'static,
    {
        let sender = self.jobs.lock().map_err(|_| poisoned())?.clone().ok_or(StoreError::Closed)?;
        let (job, rx) = writer::job(f);
        sender.send(job).await.map_err(|_| StoreError::Closed)?;
        Ok(Box::pin(async move {
            rx.await.unwrap_or_else(|_| Err(StoreError::Unavailable("write aborted".into())))
        }))
    }

    /// A read on the pool; `f` may run twice (see `ReadPool::run`).
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.readers.run(f).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        // Reads alone would pass with a dead writer; without it nothing can be acked.
        let writer_alive =
            self.writer.lock().map_err(|_| poisoned())?.as_ref().is_some_and(|h| !h.is_finished());
        if !writer_alive {
            return Err(StoreError::Unavailable("the sqlite writer has stopped".into()));
        }
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn create_user(&self, username: &str, password_hash: &str) -> StoreResult<User> {
        let (u, h) = (username.to_owned(), password_hash.to_owned());
        self.write(move |c| queries::create_user(c, &u, &h)).await
    }

    async fn ensure_external_user(&self, id: &str, candidates: &[String]) -> StoreResult<ExternalUser> {
        let id = id.to_owned();
        let known = {
            let id = id.clone();
            self.read(move |c| queries::external_user(c, &id)).await?
        };
        if let Some(u) = known {
            return Ok(u);
        }
        let candidates = candidates.to_vec();
        self.write(move |c| queries::ensure_external_user(c, &id, &candidates)).await
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        let id = id.to_owned();
        self.read(move |c| queries::user(c, &id)).await
    }

    async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>> {
        let u = username.to_owned();
        self.read(move |c| queries::credentials(c, &u)).await
    }

    async fn create_room(&self, new: NewRoom) -> StoreResult<CreatedRoom> {
        self.write(move |c| queries::create_room(c, new)).await
    }

    async fn rooms_for(&self, user: &str) -> StoreResult<Vec<Room>> {
        let u = user.to_owned();
        self.read(move |c| queries::rooms_for(c, &u)).await
    }

    async fn public_rooms(&self, user: &str, limit: u32) -> StoreResult<Vec<Room>> {
        let u = user.to_owned();
        self.read(move |c| queries::public_rooms(c, &u, limit)).await
    }

    async fn room_for(&self, room: &str, user: &str) -> StoreResult<Room> {
        let (r, u) = (room.to_owned(), user.to_owned());
        self.read(move |c| queries::room_for(c, &r, &u)).await
    }

    async fn role(&self, room: &str, user: &str) -> StoreResult<Option<Role>> {
        let (r, u) = (room.to_owned(), user.to_owned());
        self.read(move |c| queries::role(c, &r, &u)).await
    }

    async fn members(&self, room: &str) -> StoreResult<Vec<crate::store::RoomMember>> {
        let r = room.to_owned();
        self.read(move |c| queries::members(c, &r)).await
    }

    async fn join(&self, room: &str, user: &str) -> StoreResult<Option<TimelineEvent>> {
        let (r, u) = (room.to_owned(), user.to_owned());
        self.write(move |c| queries::join(c, &r, &u)).await
    }

    async fn add_member(&self, room: &str, actor: &str, user: &str) -> StoreResult<AddOutcome> {
        let (r, a, u) = (room.to_owned(), actor.to_owned(), user.to_owned());
        self.write(move |c| queries::add_member(c, &r, &a, &u)).await
    }

    async fn invites(&self, user: &str) -> StoreResult<Vec<Invite>> {
        let u = user.to_owned();
        self.read(move |c| queries::invites(c, &u)).await
    }

    async fn decline_invite(&self, room: &str, user: &str) -> StoreResult<()> {
        let (r, u) = (room.to_owned(), user.to_owned());
        self.write(move |c| queries::decline_invite(c, &r, &u)).await
    }

    async fn withdraw_invite(&self, room: &str, actor: &str, user: &str) -> StoreResult<()> {
        let (r, a, u) = (room.to_owned(), actor.to_owned(), user.to_owned());
        self.write(move |c| queries::withdraw_invite(c, &r, &a, &u)).await
    }

    async fn settings(&self, user: &str) -> StoreResult<UserSettings> {
        let u = user.to_owned();
        self.read(move |c| queries::settings(c, &u)).await
    }

    async fn set_settings(&self, user: &str, settings: UserSettings) -> StoreResult<()> {
        let u = user.to_owned();
        self.write(move |c| queries::set_settings(c, &u, settings)).await
    }

    async fn block(&self, user: &str, target: &str) -> StoreResult<()> {
        let (u, t) = (user.to_owned(), target.to_owned());
        self.write(move |c| queries::block(c, &u, &t)).await
    }

    async fn unblock(&self, user: &str, target: &str) -> StoreResult<()> {
        let (u, t) = (user.to_owned(), target.to_owned());
        self.write(move |c| queries::unblock(c, &u, &t)).await
    }

    async fn blocks(&self, user: &str) -> StoreResult<Vec<User>> {
        let u = user.to_owned();
        self.read(move |c| queries::blocks(c, &u)).await
    }

    async fn dm_blocked(&self, room: &str, user: &str) -> StoreResult<bool> {
        let (r, u) = (room.to_owned(), user.to_owned());
        self.read(move |c| queries::dm_blocked(c, &r, &u)).await
    }

    async fn create_session(&self, user: &str, expires_at_ms: i64, keep: u32) -> StoreResult<NewSession> {
        let u = user.to_owned();
        self.write(move |c| queries::create_session(c, &u, expires_at_ms, keep)).await
    }

    async fn session_user(&self, session: &str) -> StoreResult<Option<User>> {
        let s = session.to_owned();
        self.read(move |c| queries::session_user(c, &s)).await
    }

    async fn end_session(&self, user: &str, session: &str) -> StoreResult<()> {
        let (u, s) = (user.to_owned(), session.to_owned());
        self.write(move |c| queries::end_session(c, &u, &s)).await
    }

    async fn end_all_sessions(&self, user: &str) -> StoreResult<()> {
        let u = user.to_owned();
        self.write(move |c| queries::end_all_sessions(c, &u)).await
    }

    async fn sessions_ended_at(&self, user: &str) -> StoreResult<Option<i64>> {
        let u = user.to_owned();
        self.read(move |c| queries::sessions_ended_at(c, &u)).await
    }

    async fn remove_member(&self, room: &str, actor: &str, user: &str) -> StoreResult<TimelineEvent> {
        let (r, a, u) = (room.to_owned(), actor.to_owned(), user.to_owned());
        self.write(move |c| queries::remove_member(c, &r, &a, &u)).await
    }

    async fn queue_append(&self, msg: NewMessage) -> StoreResult<Committing<Appended>> {
        self.queue_write(move |c| queries::append(c, msg)).await
    }

    async fn edit(&self, room: &str, actor: &str, id: &str, body: &str) -> StoreResult<TimelineEvent> {
        let (r, a, i, b) = (room.to_owned(), actor.to_owned(), id.to_owned(), body.to_owned());
        self.write(move |c| queries::edit(c, &r, &a, &i, &b)).await
    }

    async fn delete(&self, room: &str, actor: &str, id: &str) -> StoreResult<TimelineEvent> {
        let (r, a, i) = (room.to_owned(), actor.to_owned(), id.to_owned());
        self.write(move |c| queries::delete(c, &r, &a, &i)).await
    }

    async fn history(&self, room: &str, viewer: &str, page: HistoryPage) -> StoreResult<Vec<Message>> {
        let (r, v) = (room.to_owned(), viewer.to_owned());
        self.read(move |c| queries::history(c, &r, &v, page)).await
    }

    async fn timeline(&self, room: &str, after_seq: u64, limit: u32) -> StoreResult<Vec<TimelineEvent>> {
        let r = room.to_owned();
        self.read(move |c| queries::timeline(c, &r, after_seq, limit)).await
    }

    async fn last_seqs(&self, rooms: &[String]) -> StoreResult<Vec<(String, u64)>> {
        let rooms = rooms.to_vec();
        self.read(move |c| queries::last_seqs(c, &rooms)).await
    }

    async fn set_role(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        role: Role,
        reason: Option<&str>,
    ) -> StoreResult<Option<switchboard_protocol::AuditEntry>> {
        let (r, a, t, why) =
            (room.to_owned(), actor.to_owned(), target.to_owned(), reason.map(str::to_owned));
        self.write(move |c| audit::set_role(c, &r, &a, &t, role, why.as_deref())).await
    }

    async fn audit_search(
        &self,
        room: &str,
        actor: &str,
        filter: &crate::store::AuditFilter,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<switchboard_protocol::AuditEntry>> {
        let (r, a, f) = (room.to_owned(), actor.to_owned(), filter.clone());
        self.read(move |c| audit::entries(c, &r, &a, &f, before, limit)).await
    }

    async fn sanction(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        kind: crate::store::SanctionKind,
        until_ms: Option<i64>,
        reason: Option<&str>,
    ) -> StoreResult<Option<TimelineEvent>> {
        let (r, a, t, why) =
            (room.to_owned(), actor.to_owned(), target.to_owned(), reason.map(str::to_owned));
        self.write(move |c| sanctions::impose(c, &r, &a, &t, kind, until_ms, why.as_deref())).await
    }

    async fn set_slow_mode(&self, room: &str, actor: &str, secs: u32) -> StoreResult<()> {
        let (r, a) = (room.to_owned(), actor.to_owned());
        self.write(move |c| sanctions::set_slow_mode(c, &r, &a, secs)).await
    }

    async fn purge(&self, room: &str, actor: &str, target: &str, since_ms: i64) -> StoreResult<u32> {
        let (r, a, t) = (room.to_owned(), actor.to_owned(), target.to_owned());
        self.write(move |c| queries::purge(c, &r, &a, &t, since_ms)).await
    }

    async fn report(
        &self,
        room: &str,
        reporter: &str,
        target: crate::store::ReportTarget,
        reason: &str,
    ) -> StoreResult<(switchboard_protocol::Report, bool)> {
        let (r, u, why) = (room.to_owned(), reporter.to_owned(), reason.to_owned());
        self.write(move |c| reports::file(c, &r, &u, &target, &why)).await
    }

    async fn reports(
        &self,
        room: &str,
        actor: &str,
        open: bool,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<switchboard_protocol::Report>> {
        let (r, a) = (room.to_owned(), actor.to_owned());
        self.read(move |c| reports::list(c, &r, &a, open, before, limit)).await
    }

    async fn report_by_id(
        &self,
        room: &str,
        actor: &str,
        id: u64,
    ) -> StoreResult<switchboard_protocol::Report> {
        let (r, a) = (room.to_owned(), actor.to_owned());
        self.read(move |c| reports::one(c, &r, &a, id)).await
    }

    async fn resolve_report(
        &self,
        room: &str,
        actor: &str,
        id: u64,
        resolution: &str,
        reason: Option<&str>,
    ) -> StoreResult<switchboard_protocol::Report> {
        let (r, a, what) = (room.to_owned(), actor.to_owned(), resolution.to_owned());
        let why = reason.map(str::to_owned);
        self.write(move |c| reports::resolve(c, &r, &a, id, &what, why.as_deref())).await
    }

    async fn moderator_ids(&self, room: &str) -> StoreResult<Vec<String>> {
        let r = room.to_owned();
        self.read(move |c| reports::moderator_ids(c, &r)).await
    }

    async fn set_server_admins(&self, admins: &[String]) -> StoreResult<()> {
        let list = admins.to_vec();
        self.write(move |c| queries::set_server_admins(c, &list)).await
    }

    async fn acting_role(&self, room: &str, user: &str) -> StoreResult<Option<Role>> {
        let (r, u) = (room.to_owned(), user.to_owned());
        self.read(move |c| queries::acting_role_if_any(c, &r, &u)).await
    }

    async fn sanctioned(
        &self,
        room: &str,
        user: &str,
        kind: crate::store::SanctionKind,
    ) -> StoreResult<bool> {
        let (r, u) = (room.to_owned(), user.to_owned());
        self.read(move |c| Ok(sanctions::standing(c, &r, &u, kind)?.is_some())).await
    }

    async fn sent_in(&self, author: &str, client_msg_id: &str) -> StoreResult<Option<String>> {
        let (a, k) = (author.to_owned(), client_msg_id.to_owned());
        self.read(move |c| {
            use rusqlite::OptionalExtension;
            Ok(c.prepare_cached("SELECT room_id FROM messages WHERE author = ?1 AND client_msg_id = ?2")?
                .query_row([&a, &k], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn set_filters(&self, room: &str, actor: &str, filters: Option<String>) -> StoreResult<bool> {
        let (r, a) = (room.to_owned(), actor.to_owned());
        self.write(move |c| sanctions::set_filters(c, &r, &a, filters.as_deref())).await
    }

    async fn room_filters(&self, room: &str) -> StoreResult<Option<String>> {
        let r = room.to_owned();
        self.read(move |c| sanctions::filters(c, &r)).await
    }

    async fn record_automatic(
        &self,
        room: &str,
        target: &str,
        action: &str,
        detail: &str,
    ) -> StoreResult<()> {
        let (r, t, a, d) = (room.to_owned(), target.to_owned(), action.to_owned(), detail.to_owned());
        self.write(move |c| {
            audit::record(c, &r, "", &a, Some(&t), Some(&d), None)?;
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn lift_sanction(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        kind: crate::store::SanctionKind,
    ) -> StoreResult<()> {
        let (r, a, t) = (room.to_owned(), actor.to_owned(), target.to_owned());
        self.write(move |c| sanctions::lift(c, &r, &a, &t, kind)).await
    }

    async fn sanctions_page(
        &self,
        room: &str,
        actor: &str,
        kind: crate::store::SanctionKind,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> StoreResult<Vec<crate::store::Sanction>> {
        let (r, a) = (room.to_owned(), actor.to_owned());
        self.read(move |c| sanctions::list(c, &r, &a, kind, before.clone(), limit)).await
    }

    async fn presence_rooms(&self, user: &str) -> StoreResult<Vec<(String, u64)>> {
        let u = user.to_owned();
        self.read(move |c| audience::presence_rooms(c, &u)).await
    }

    async fn contacts(&self, user: &str, room_limit: u64, limit: u32) -> StoreResult<Vec<String>> {
        let u = user.to_owned();
        self.read(move |c| audience::contacts(c, &u, room_limit, limit)).await
    }

    async fn visible_users(&self, viewer: &str, users: &[String]) -> StoreResult<Vec<String>> {
        let (v, users) = (viewer.to_owned(), users.to_vec());
        self.read(move |c| audience::visible_users(c, &v, &users)).await
    }

    async fn member_ids(&self, room: &str) -> StoreResult<Vec<String>> {
        let r = room.to_owned();
        self.read(move |c| audience::member_ids(c, &r)).await
    }

    async fn mark_read(&self, room: &str, user: &str, seq: u64) -> StoreResult<u64> {
        let (r, u) = (room.to_owned(), user.to_owned());
        self.write(move |c| queries::mark_read(c, &r, &u, seq)).await
    }

    async fn events_after(&self, after: u64, limit: u32) -> StoreResult<Vec<LoggedEvent>> {
        if let Some(recent) = self.tail.after(after, limit) {
            return Ok(recent);
        }
        self.read(move |c| queries::events_after(c, after, limit)).await
    }

    async fn log_head(&self) -> StoreResult<u64> {
        self.read(queries::log_head).await
    }

    async fn cursor(&self, consumer: &str) -> StoreResult<Option<u64>> {
        let name = consumer.to_owned();
        self.read(move |c| queries::cursor(c, &name)).await
    }

    async fn save_cursor(&self, consumer: &str, pos: u64) -> StoreResult<()> {
        let name = consumer.to_owned();
        self.write(move |c| queries::save_cursor(c, &name, pos)).await
    }

    async fn prune_log(&self) -> StoreResult<u64> {
        let (n, through) = self.write(queries::prune_log).await?;
        if let Some(through) = through {
            self.tail.forget_through(through);
        }
        Ok(n)
    }

    async fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> StoreResult<bool> {
        let (n, h) = (name.to_owned(), holder.to_owned());
        self.write(move |c| queries::lease(c, &n, &h, ttl_ms)).await
    }

    fn log_watch(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    async fn close(&self) {
        // Dropping the last sender lets the writer finish the queue and end.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let joined = tokio::task::spawn_blocking(move || h.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("sqlite: writer thread ended abnormally");
            }
        }
        let checkpointer = self.checkpointer.lock().ok().and_then(|mut c| c.take());
        if let Some(c) = checkpointer {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
    }
}

/// A store in a fresh directory (kept while the guard lives), one user and a private room of
/// theirs: the setup of tests elsewhere that need a real store under them.
#[cfg(test)]
pub(crate) async fn scratch_room() -> (tempfile::TempDir, Arc<dyn Store>, String, Room) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&SqliteOptions { path: dir.path().join("t.db"), max_batch: 8 }).expect("open"),
    );
    let author = store.create_user("a", "h").await.expect("user").id;
    let new = NewRoom {
        creator: author.clone(),
        name: "r".into(),
        kind: switchboard_protocol::RoomKind::Private,
        members: vec![],
    };
    let room = store.create_room(new).await.expect("room").room;
    (dir, store, author, room)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_temp() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&SqliteOptions { path: dir.path().join("t.db"), max_batch: 256 })
            .expect("open");
        (dir, Arc::new(store))
    }

    crate::store_conformance!(open_temp);

    /// Two handles on one database file, each with its own writer: SQLite serializes their
    /// transactions on its file lock.
    async fn open_two() -> (tempfile::TempDir, Arc<dyn Store>, Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SqliteOptions { path: dir.path().join("t.db"), max_batch: 256 };
        let a = SqliteStore::open(&opts).expect("open");
        let b = SqliteStore::open(&opts).expect("open again");
        (dir, Arc::new(a), Arc::new(b))
    }

    crate::store_concurrency!(open_two);

    /// The log's tail in memory answers as the table does, from every position it holds, after
    /// every kind of event and the edits, deletes and purges that change earlier ones.
    #[tokio::test]
    async fn the_logs_tail_answers_as_the_table_does() {
        use crate::store::SanctionKind;
        use crate::store::conformance::{plain_user, room, send};
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(
            SqliteStore::open(&SqliteOptions { path: dir.path().join("t.db"), max_batch: 8 }).unwrap(),
        );
        let store: Arc<dyn Store> = sqlite.clone();
        let (a, b, c) =
            (plain_user(&store, "a").await, plain_user(&store, "b").await, plain_user(&store, "c").await);
        let start = store.log_head().await.unwrap();
        let r = room(&store, &a, switchboard_protocol::RoomKind::Public, &[]).await;
        store.join(&r, &b).await.unwrap();
        store.join(&r, &c).await.unwrap();
        let dm = store
            .create_room(NewRoom {
                creator: a.clone(),
                name: String::new(),
                kind: switchboard_protocol::RoomKind::Dm,
                members: vec![c.clone()],
            })
            .await
            .unwrap()
            .room
            .id;
        let m1 = send(&store, &r, &a, "1").await.unwrap().message;
        send(&store, &dm, &c, "2").await.unwrap();
        let m3 = send(&store, &r, &b, "3").await.unwrap().message;
        send(&store, &r, &b, "4").await.unwrap();
        store.edit(&r, &a, &m1.id, "edited").await.unwrap();
        store.edit(&r, &b, &m3.id, "edited too").await.unwrap();
        store.sanction(&r, &a, &c, SanctionKind::Shadow, None, None).await.unwrap();
        let hidden = send(&store, &r, &c, "5").await.unwrap().message;
        store.edit(&r, &c, &hidden.id, "hidden edit").await.unwrap();
        store.delete(&r, &c, &hidden.id).await.unwrap();
        assert_eq!(store.purge(&r, &a, &b, 0).await.unwrap(), 2);
        store.remove_member(&r, &a, &b).await.unwrap();
        let head = store.log_head().await.unwrap();
        assert!(head > start + 15, "{start}..{head}");
        for after in start..head {
            let table = sqlite.read(move |conn| queries::events_after(conn, after, 1000)).await.unwrap();
            let tail =
                sqlite.tail.after(after, 1000).expect("the tail holds every position this store wrote");
            assert_eq!(tail, table, "after {after}");
            assert_eq!(store.events_after(after, 3).await.unwrap()[..], table[..table.len().min(3)]);
        }
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_does_not_rerun_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteOptions { path: dir.path().join("t.db"), max_batch: 8 };
        let store = SqliteStore::open(&opts).unwrap();
        let u = store.create_user("alice", "h").await.unwrap();
        store.close().await;
        let again = SqliteStore::open(&opts).unwrap();
        assert_eq!(again.user(&u.id).await.unwrap(), Some(u));
        assert!(again.create_user("bob", "h").await.is_ok());
        assert!(again.ping().await.is_ok());
        again.close().await;
        assert!(matches!(again.create_user("carol", "h").await, Err(StoreError::Closed)));
        assert!(again.ping().await.is_err(), "not ready once the writer is gone");
    }

    #[tokio::test]
    async fn the_log_goes_on_past_its_pruned_head_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteOptions { path: dir.path().join("t.db"), max_batch: 8 };
        let store = SqliteStore::open(&opts).unwrap();
        let u = store.create_user("alice", "h").await.unwrap();
        let new = NewRoom {
            creator: u.id.clone(),
            name: "r".into(),
            kind: switchboard_protocol::RoomKind::Private,
            members: vec![],
        };
        let room = store.create_room(new).await.unwrap().room.id;
        let head = store.log_head().await.unwrap();
        store.save_cursor("relay", head).await.unwrap();
        while store.prune_log().await.unwrap() > 0 {}
        store.close().await;
        let again = SqliteStore::open(&opts).unwrap();
        assert_eq!(again.log_head().await.unwrap(), head);
        let msg = NewMessage { room, author: u.id, client_msg_id: "k".into(), body: "hi".into() };
        again.append(msg).await.unwrap();
        let next = again.events_after(head, 10).await.unwrap();
        assert_eq!(next.iter().map(|e| e.pos).collect::<Vec<_>>(), vec![head + 1]);
        again.close().await;
    }

    #[tokio::test]
    async fn a_version_1_database_keeps_its_timeline_after_migrating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            // What version 1 wrote: a message row plus its `message` event, then an edit.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute_batch(
                "PRAGMA user_version = 1;
                 INSERT INTO users VALUES ('u1', 'alice', NULL, 0, 0);
                 INSERT INTO rooms VALUES ('r1', 'room', 'private', 'u1', 3, NULL, 0);
                 INSERT INTO members VALUES ('r1', 'u1', 'owner', 0);
                 INSERT INTO events (room_id, seq, kind, user_id, change, ts) VALUES ('r1', 1, 'member', 'u1', 'joined', 0);
                 INSERT INTO messages VALUES ('m1', 'r1', 2, 'u1', 'k1', 'edited', 5, 7, 0);
                 INSERT INTO events (room_id, seq, kind, message_id, ts) VALUES ('r1', 2, 'message', 'm1', 5);
                 INSERT INTO events (room_id, seq, kind, message_id, body, ts) VALUES ('r1', 3, 'edit', 'm1', 'edited', 7);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&SqliteOptions { path, max_batch: 8 }).unwrap();
        let kinds: Vec<(u64, &str)> = store
            .timeline("r1", 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| match e {
                TimelineEvent::Member(m) => (m.seq, "member"),
                TimelineEvent::Message(m) => (m.seq, if m.body == "edited" { "message" } else { "?" }),
                TimelineEvent::Edit(e) => (e.seq, "edit"),
                TimelineEvent::Delete(d) => (d.seq, "delete"),
            })
            .collect();
        assert_eq!(kinds, vec![(1, "member"), (2, "message"), (3, "edit")]);
        let next = NewMessage {
            room: "r1".into(),
            author: "u1".into(),
            client_msg_id: "k2".into(),
            body: "hi".into(),
        };
        assert_eq!(store.append(next).await.unwrap().message.seq, 4);
        store.close().await;
    }
}

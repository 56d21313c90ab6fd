//! The networked store: PostgreSQL through tokio-postgres with a deadpool pool, for a cluster of
//! stateless nodes sharing one database.
//!
//! tokio-postgres rather than sqlx: the embedded store is rusqlite already (sqlx would be a
//! second SQL stack beside it), tokio-postgres pipelines statements on one connection and
//! caches prepared statements per connection through deadpool, and it builds in a fraction of
//! sqlx's time. Durability is PostgreSQL's own: `synchronous_commit` is left on, so a commit
//! (and so an ack) is on disk.
//!
//! Appends are group-committed by one task per node ([`batch`]); every other write is its own
//! transaction, retried on serialization or deadlock failures. Writes that touch a timeline lock
//! the room's row first, so `seq` is gap-free per room; log positions come from a sequence at the
//! end of the transaction, with no lock held to the commit, and readers stop at a position still
//! being committed ([`horizon`]). Migrations run at start
//! under an advisory lock, so nodes starting together migrate once. Other nodes' commits reach
//! this node's log watch by `LISTEN`/`NOTIFY`.

mod audience;
mod audit;
mod batch;
mod horizon;
mod queries;
mod reports;
mod sanctions;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use switchboard_protocol::rest::UserSettings;
use switchboard_protocol::{Invite, Message, Role, Room, TimelineEvent, User};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;

use super::{
    AddOutcome, Appended, Committing, CreatedRoom, Credentials, ExternalUser, HistoryPage, LoggedEvent,
    NewMessage, NewRoom, NewSession, Store, StoreError, StoreResult,
};

/// Schema migrations, applied in order; `schema_migrations` records which ran.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_member_count.sql"),
    include_str!("migrations/0003_audit.sql"),
    include_str!("migrations/0004_sanctions.sql"),
    include_str!("migrations/0005_slow_mode.sql"),
    include_str!("migrations/0006_filters.sql"),
    include_str!("migrations/0007_shadow.sql"),
    include_str!("migrations/0008_reports.sql"),
    include_str!("migrations/0009_server_admins.sql"),
    include_str!("migrations/0010_log_sequence.sql"),
];

/// The channel commits are announced on.
const LOG_CHANNEL: &str = "switchboard_log";

/// Key of the advisory lock migrations run under (any constant shared by every node).
const MIGRATION_LOCK: i64 = 0x5357_4254_4d49_4752; // "SWBTMIGR"

/// How the networked store is opened.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/db` (any libpq-style URL tokio-postgres accepts).
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Most appends committed together.
    pub max_batch: usize,
    /// A schema to use instead of the default (`search_path`): tests give each store its own.
    pub schema: Option<String>,
    /// Longest wait for a connection, and for connecting: how fast calls fail while the
    /// database is unreachable.
    pub connect_timeout: Duration,
}

/// Why a call inside a transaction failed: a refusal, or the database.
pub(super) enum Fail {
    Store(StoreError),
    Pg(tokio_postgres::Error),
    /// A concurrent transaction on another node committed an idempotency key this batch was
    /// inserting: the batch runs again, and finds that row.
    Race,
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl Fail {
    /// What the caller is told: refusals as they are, database failures as retryable or not.
    fn into_store(self) -> StoreError {
        match self {
            Fail::Store(e) => e,
            Fail::Pg(e) => pg_error(&e),
            Fail::Race => StoreError::Unavailable("idempotency keys kept colliding across nodes".into()),
        }
    }
}

pub(super) type Pg<T> = Result<T, Fail>;

/// Serialization and deadlock failures: the transaction lost a race and may simply run again.
pub(super) fn is_contention(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// Passing failures (the connection, the server restarting or overloaded, timeouts, lost races)
/// are retryable; anything else is a bug or a broken schema.
fn pg_error(e: &tokio_postgres::Error) -> StoreError {
    // tokio-postgres says only "db error" for what the server reported; its detail is here.
    let text = match e.as_db_error() {
        Some(db) => format!("postgres: {db}"),
        None => format!("postgres: {e}"),
    };
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection itself failed.
        return StoreError::Unavailable(text);
    };
    let class = &code.code()[..2];
    let passing = is_contention(e)
        || matches!(class, "08" | "53" | "57" | "58")
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION;
    if passing { StoreError::Unavailable(text) } else { StoreError::Fatal(text) }
}

/// Waits a little longer after each lost race, with jitter so racing nodes spread out.
pub(super) async fn backoff(attempt: u32) {
    let base = 2u64.saturating_pow(attempt.min(8));
    let jitter = rand::random::<u64>() % (base + 1);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// What the store's tasks share.
pub(super) struct Inner {
    pool: Pool,
    head: watch::Sender<u64>,
    /// Gaps readers of the log have met, shared by every consumer on this node.
    holes: std::sync::Mutex<horizon::Holes>,
}

impl Inner {
    async fn client(&self) -> Pg<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => Fail::Pg(e),
            other => Fail::Store(StoreError::Unavailable(format!("postgres pool: {other}"))),
        })
    }

    fn holes(&self) -> StoreResult<std::sync::MutexGuard<'_, horizon::Holes>> {
        self.holes.lock().map_err(|_| StoreError::Unavailable("log gap lock poisoned".into()))
    }

    /// Moves the log watch to `last` once a commit that logged events is durable.
    fn advance(&self, last: Option<u64>) {
        if let Some(pos) = last {
            self.head.send_if_modified(|h| {
                let moved = pos > *h;
                *h = (*h).max(pos);
                moved
            });
        }
    }
}

/// Runs one write transaction, retried on serialization or deadlock failures; the body
/// evaluates to `(value, timeline events)` and may use `?`.
macro_rules! write_tx {
    ($self:ident, |$tx:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            let outcome: Pg<_> = async {
                let mut client = $self.inner.client().await?;
                #[allow(unused_mut)]
                let mut $tx = client.transaction().await?;
                let (value, events) = $body;
                let last = queries::log_events(&$tx, &events).await?;
                $tx.commit().await?;
                Ok((value, last))
            }
            .await;
            match outcome {
                Ok((value, last)) => {
                    $self.inner.advance(last);
                    break Ok(value);
                }
                Err(Fail::Pg(e)) if is_contention(&e) && attempt < 5 => {
                    attempt += 1;
                    backoff(attempt).await;
                }
                Err(f) => break Err(f.into_store()),
            }
        }
    }};
}

/// Runs one read on a pooled connection.
macro_rules! read {
    ($self:ident, |$c:ident| $body:expr) => {{
        let outcome: Pg<_> = async {
            let conn = $self.inner.client().await?;
            let $c = &conn;
            Ok($body)
        }
        .await;
        outcome.map_err(Fail::into_store)
    }};
}

/// The networked store. Cheap to share behind an `Arc`.
pub struct PgStore {
    inner: Arc<Inner>,
    appends: Mutex<Option<mpsc::Sender<batch::AppendJob>>>,
    batcher: Mutex<Option<JoinHandle<()>>>,
    listener: JoinHandle<()>,
    head: watch::Receiver<u64>,
}

fn config_of(opts: &PgOptions) -> StoreResult<tokio_postgres::Config> {
    let mut cfg = tokio_postgres::Config::from_str(&opts.url)
        .map_err(|e| StoreError::Fatal(format!("bad postgres URL: {e}")))?;
    cfg.connect_timeout(opts.connect_timeout);
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(10));
    cfg.application_name("switchboard");
    if let Some(schema) = &opts.schema {
        if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Fatal("schema names are letters, digits and '_'".into()));
        }
        cfg.options(format!("-c search_path={schema}"));
    }
    Ok(cfg)
}

impl PgStore {
    /// Connects, migrates (once across nodes), and starts the batcher and the log listener.
    pub async fn open(opts: &PgOptions) -> StoreResult<Self> {
        let cfg = config_of(opts)?;
        if let Some(schema) = &opts.schema {
            let mut plain = cfg.clone();
            plain.options("");
            let (mut client, conn) = plain.connect(tokio_postgres::NoTls).await.map_err(|e| pg_error(&e))?;
            let driver = tokio::spawn(conn);
            // Under the migrations' lock: two `CREATE SCHEMA IF NOT EXISTS` at once can both
            // try to create it.
            let tx = client.transaction().await.map_err(|e| pg_error(&e))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(|e| pg_error(&e))?;
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await
                .map_err(|e| pg_error(&e))?;
            tx.commit().await.map_err(|e| pg_error(&e))?;
            drop(client);
            let _ = driver.await;
        }
        let manager = Manager::from_config(
            cfg.clone(),
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.connect_timeout))
            .create_timeout(Some(opts.connect_timeout))
            .recycle_timeout(Some(opts.connect_timeout))
            .build()
            .map_err(|e| StoreError::Fatal(format!("postgres pool: {e}")))?;
        {
            let mut client =
                pool.get().await.map_err(|e| StoreError::Unavailable(format!("postgres: {e}")))?;
            migrate(&mut client).await?;
        }
        let (head_tx, head_rx) = watch::channel(0);
        let inner = Arc::new(Inner { pool, head: head_tx, holes: Default::default() });
        let start = read_head(&inner).await?;
        inner.advance(Some(start));
        let (tx, rx) = mpsc::channel(65_536);
        let batcher = tokio::spawn(batch::run(inner.clone(), rx, opts.max_batch.max(1)));
        let listener = tokio::spawn(listen(cfg, inner.clone()));
        Ok(PgStore {
            inner,
            appends: Mutex::new(Some(tx)),
            batcher: Mutex::new(Some(batcher)),
            listener,
            head: head_rx,
        })
    }
}

async fn read_head(inner: &Inner) -> StoreResult<u64> {
    let conn = inner.client().await.map_err(Fail::into_store)?;
    queries::log_head(&conn).await.map_err(Fail::into_store)
}

async fn migrate(client: &mut deadpool_postgres::Object) -> StoreResult<()> {
    let tx = client.transaction().await.map_err(|e| pg_error(&e))?;
    // Held until this transaction ends: a node starting at the same moment waits here, then
    // finds the migrations applied.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(|e| pg_error(&e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await
    .map_err(|e| pg_error(&e))?;
    let done: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| pg_error(&e))?;
    let done = usize::try_from(done).unwrap_or(0);
    if done > MIGRATIONS.len() {
        return Err(StoreError::Fatal(format!(
            "database schema version {done} is newer than this binary ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.batch_execute(sql).await.map_err(|e| pg_error(&e))?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&version, &super::now_ms()],
        )
        .await
        .map_err(|e| pg_error(&e))?;
        tracing::info!(version, "postgres: migration applied");
    }
    tx.commit().await.map_err(|e| pg_error(&e))
}

/// Listens for other nodes' commits and moves the log watch; reconnects with backoff.
async fn listen(cfg: tokio_postgres::Config, inner: Arc<Inner>) {
    let mut wait = Duration::from_millis(100);
    loop {
        match cfg.connect(tokio_postgres::NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(Ok(m)) = messages.next().await {
                        if let tokio_postgres::AsyncMessage::Notification(n) = m
                            && tx.send(n.payload().parse::<u64>().unwrap_or(0)).is_err()
                        {
                            break;
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {LOG_CHANNEL}")).await {
                    tracing::warn!(error = %e, "postgres: LISTEN failed");
                } else {
                    wait = Duration::from_millis(100);
                    // Anything committed while not listening: the consumers poll too, but
                    // there is no reason to wait for them.
                    if let Ok(head) = read_head(&inner).await {
                        inner.advance(Some(head));
                    }
                    while let Some(pos) = rx.recv().await {
                        inner.advance(Some(pos));
                    }
                }
                driver.abort();
                tracing::warn!("postgres: the log listener lost its connection; reconnecting");
            }
            Err(e) => tracing::debug!(error = %e, "postgres: log listener cannot connect"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        let alive = self.batcher.lock().ok().and_then(|b| b.as_ref().map(|h| !h.is_finished()));
        if alive != Some(true) {
            return Err(StoreError::Unavailable("the postgres batcher has stopped".into()));
        }
        read!(self, |c| {
            c.query_one("SELECT 1", &[]).await?;
        })
    }

    async fn create_user(&self, username: &str, password_hash: &str) -> StoreResult<User> {
        write_tx!(self, |tx| queries::create_user(&tx, username, password_hash).await?)
    }

    async fn ensure_external_user(&self, id: &str, candidates: &[String]) -> StoreResult<ExternalUser> {
        if let Some(u) = read!(self, |c| queries::external_user(c, id).await?)? {
            return Ok(u);
        }
        write_tx!(self, |tx| queries::ensure_external_user(&mut tx, id, candidates).await?)
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        read!(self, |c| queries::user(c, id).await?)
    }

    async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>> {
        read!(self, |c| queries::credentials(c, username).await?)
    }

    async fn create_room(&self, new: NewRoom) -> StoreResult<CreatedRoom> {
        write_tx!(self, |tx| queries::create_room(&tx, new.clone()).await?)
    }

    async fn rooms_for(&self, user: &str) -> StoreResult<Vec<Room>> {
        read!(self, |c| queries::rooms_for(c, user).await?)
    }

    async fn public_rooms(&self, user: &str, limit: u32) -> StoreResult<Vec<Room>> {
        read!(self, |c| queries::public_rooms(c, user, limit).await?)
    }

    async fn room_for(&self, room: &str, user: &str) -> StoreResult<Room> {
        read!(self, |c| queries::room_for(c, room, user).await?)
    }

    async fn role(&self, room: &str, user: &str) -> StoreResult<Option<Role>> {
        read!(self, |c| queries::role(c, room, user).await?)
    }

    async fn members(&self, room: &str) -> StoreResult<Vec<crate::store::RoomMember>> {
        read!(self, |c| queries::members(c, room).await?)
    }

    async fn join(&self, room: &str, user: &str) -> StoreResult<Option<TimelineEvent>> {
        write_tx!(self, |tx| queries::join(&tx, room, user).await?)
    }

    async fn add_member(&self, room: &str, actor: &str, user: &str) -> StoreResult<AddOutcome> {
        write_tx!(self, |tx| queries::add_member(&tx, room, actor, user).await?)
    }

    async fn invites(&self, user: &str) -> StoreResult<Vec<Invite>> {
        read!(self, |c| queries::invites(c, user).await?)
    }

    async fn decline_invite(&self, room: &str, user: &str) -> StoreResult<()> {
        write_tx!(self, |tx| queries::decline_invite(&tx, room, user).await?)
    }

    async fn withdraw_invite(&self, room: &str, actor: &str, user: &str) -> StoreResult<()> {
        write_tx!(self, |tx| queries::withdraw_invite(&tx, room, actor, user).await?)
    }

    async fn settings(&self, user: &str) -> StoreResult<UserSettings> {
        read!(self, |c| queries::settings(c, user).await?)
    }

    async fn set_settings(&self, user: &str, settings: UserSettings) -> StoreResult<()> {
        write_tx!(self, |tx| queries::set_settings(&tx, user, settings).await?)
    }

    async fn block(&self, user: &str, target: &str) -> StoreResult<()> {
        write_tx!(self, |tx| queries::block(&tx, user, target).await?)
    }

    async fn unblock(&self, user: &str, target: &str) -> StoreResult<()> {
        write_tx!(self, |tx| queries::unblock(&tx, user, target).await?)
    }

    async fn blocks(&self, user: &str) -> StoreResult<Vec<User>> {
        read!(self, |c| queries::blocks(c, user).await?)
    }

    async fn dm_blocked(&self, room: &str, user: &str) -> StoreResult<bool> {
        read!(self, |c| queries::dm_blocked(c, room, user).await?)
    }

    async fn create_session(&self, user: &str, expires_at_ms: i64, keep: u32) -> StoreResult<NewSession> {
        write_tx!(self, |tx| queries::create_session(&tx, user, expires_at_ms, keep).await?)
    }

    async fn session_user(&self, session: &str) -> StoreResult<Option<User>> {
        read!(self, |c| queries::session_user(c, session).await?)
    }

    async fn end_session(&self, user: &str, session: &str) -> StoreResult<()> {
        write_tx!(self, |tx| queries::end_session(&tx, user, session).await?)
    }

    async fn end_all_sessions(&self, user: &str) -> StoreResult<()> {
        write_tx!(self, |tx| queries::end_all_sessions(&tx, user).await?)
    }

    async fn sessions_ended_at(&self, user: &str) -> StoreResult<Option<i64>> {
        read!(self, |c| queries::sessions_ended_at(c, user).await?)
    }

    async fn remove_member(&self, room: &str, actor: &str, user: &str) -> StoreResult<TimelineEvent> {
        write_tx!(self, |tx| queries::remove_member(&tx, room, actor, user).await?)
    }

    async fn queue_append(&self, msg: NewMessage) -> StoreResult<Committing<Appended>> {
        let sender = self
            .appends
            .lock()
            .map_err(|_| StoreError::Unavailable("postgres batcher lock poisoned".into()))?
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, rx) = oneshot::channel();
        sender.send(batch::AppendJob { msg, reply }).await.map_err(|_| StoreError::Closed)?;
        Ok(Box::pin(async move {
            rx.await.unwrap_or_else(|_| Err(StoreError::Unavailable("append aborted".into())))
        }))
    }

    async fn edit(&self, room: &str, actor: &str, id: &str, body: &str) -> StoreResult<TimelineEvent> {
        write_tx!(self, |tx| queries::edit(&tx, room, actor, id, body).await?)
    }

    async fn delete(&self, room: &str, actor: &str, id: &str) -> StoreResult<TimelineEvent> {
        write_tx!(self, |tx| queries::delete(&tx, room, actor, id).await?)
    }

    async fn history(&self, room: &str, viewer: &str, page: HistoryPage) -> StoreResult<Vec<Message>> {
        read!(self, |c| queries::history(c, room, viewer, page).await?)
    }

    async fn timeline(&self, room: &str, after_seq: u64, limit: u32) -> StoreResult<Vec<TimelineEvent>> {
        read!(self, |c| queries::timeline(c, room, after_seq, limit).await?)
    }

    async fn last_seqs(&self, rooms: &[String]) -> StoreResult<Vec<(String, u64)>> {
        read!(self, |c| queries::last_seqs(c, rooms).await?)
    }

    async fn set_role(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        role: Role,
        reason: Option<&str>,
    ) -> StoreResult<Option<switchboard_protocol::AuditEntry>> {
        write_tx!(self, |tx| audit::set_role(&tx, room, actor, target, role, reason).await?)
    }

    async fn audit_search(
        &self,
        room: &str,
        actor: &str,
        filter: &crate::store::AuditFilter,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<switchboard_protocol::AuditEntry>> {
        read!(self, |c| audit::entries(c, room, actor, filter, before, limit).await?)
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
        write_tx!(self, |tx| sanctions::impose(&tx, room, actor, target, kind, until_ms, reason).await?)
    }

    async fn set_slow_mode(&self, room: &str, actor: &str, secs: u32) -> StoreResult<()> {
        write_tx!(self, |tx| sanctions::set_slow_mode(&tx, room, actor, secs).await?)
    }

    async fn purge(&self, room: &str, actor: &str, target: &str, since_ms: i64) -> StoreResult<u32> {
        write_tx!(self, |tx| queries::purge(&tx, room, actor, target, since_ms).await?)
    }

    async fn report(
        &self,
        room: &str,
        reporter: &str,
        target: crate::store::ReportTarget,
        reason: &str,
    ) -> StoreResult<(switchboard_protocol::Report, bool)> {
        write_tx!(self, |tx| reports::file(&tx, room, reporter, &target, reason).await?)
    }

    async fn reports(
        &self,
        room: &str,
        actor: &str,
        open: bool,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<switchboard_protocol::Report>> {
        read!(self, |c| reports::list(c, room, actor, open, before, limit).await?)
    }

    async fn report_by_id(
        &self,
        room: &str,
        actor: &str,
        id: u64,
    ) -> StoreResult<switchboard_protocol::Report> {
        read!(self, |c| reports::one(c, room, actor, id).await?)
    }

    async fn resolve_report(
        &self,
        room: &str,
        actor: &str,
        id: u64,
        resolution: &str,
        reason: Option<&str>,
    ) -> StoreResult<switchboard_protocol::Report> {
        write_tx!(self, |tx| reports::resolve(&tx, room, actor, id, resolution, reason).await?)
    }

    async fn moderator_ids(&self, room: &str) -> StoreResult<Vec<String>> {
        read!(self, |c| reports::moderator_ids(c, room).await?)
    }

    async fn set_server_admins(&self, admins: &[String]) -> StoreResult<()> {
        write_tx!(self, |tx| queries::set_server_admins(&tx, admins).await?)
    }

    async fn acting_role(&self, room: &str, user: &str) -> StoreResult<Option<Role>> {
        read!(self, |c| queries::acting_role_if_any(c, room, user).await?)
    }

    async fn sanctioned(
        &self,
        room: &str,
        user: &str,
        kind: crate::store::SanctionKind,
    ) -> StoreResult<bool> {
        read!(self, |c| sanctions::standing(c, room, user, kind).await?.is_some())
    }

    async fn sent_in(&self, author: &str, client_msg_id: &str) -> StoreResult<Option<String>> {
        read!(self, |c| {
            let sql = "SELECT room_id FROM messages WHERE author = $1 AND client_msg_id = $2";
            queries::row(c, sql, &[&author, &client_msg_id]).await?.map(|r| r.try_get(0)).transpose()?
        })
    }

    async fn set_filters(&self, room: &str, actor: &str, filters: Option<String>) -> StoreResult<bool> {
        write_tx!(self, |tx| sanctions::set_filters(&tx, room, actor, filters.as_deref()).await?)
    }

    async fn room_filters(&self, room: &str) -> StoreResult<Option<String>> {
        read!(self, |c| sanctions::filters(c, room).await?)
    }

    async fn record_automatic(
        &self,
        room: &str,
        target: &str,
        action: &str,
        detail: &str,
    ) -> StoreResult<()> {
        write_tx!(self, |tx| {
            audit::record(&tx, room, "", action, Some(target), Some(detail), None).await?;
            ((), Vec::new())
        })
    }

    async fn lift_sanction(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        kind: crate::store::SanctionKind,
    ) -> StoreResult<()> {
        write_tx!(self, |tx| sanctions::lift(&tx, room, actor, target, kind).await?)
    }

    async fn sanctions_page(
        &self,
        room: &str,
        actor: &str,
        kind: crate::store::SanctionKind,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> StoreResult<Vec<crate::store::Sanction>> {
        read!(self, |c| sanctions::list(c, room, actor, kind, before, limit).await?)
    }

    async fn presence_rooms(&self, user: &str) -> StoreResult<Vec<(String, u64)>> {
        read!(self, |c| audience::presence_rooms(c, user).await?)
    }

    async fn contacts(&self, user: &str, room_limit: u64, limit: u32) -> StoreResult<Vec<String>> {
        read!(self, |c| audience::contacts(c, user, room_limit, limit).await?)
    }

    async fn visible_users(&self, viewer: &str, users: &[String]) -> StoreResult<Vec<String>> {
        read!(self, |c| audience::visible_users(c, viewer, users).await?)
    }

    async fn member_ids(&self, room: &str) -> StoreResult<Vec<String>> {
        read!(self, |c| audience::member_ids(c, room).await?)
    }

    async fn mark_read(&self, room: &str, user: &str, seq: u64) -> StoreResult<u64> {
        write_tx!(self, |tx| queries::mark_read(&tx, room, user, seq).await?)
    }

    async fn events_after(&self, after: u64, limit: u32) -> StoreResult<Vec<LoggedEvent>> {
        let read = read!(self, |c| queries::events_after(c, after, limit).await?)?;
        let positions: Vec<u64> = read.entries.iter().map(|(pos, _)| *pos).collect();
        let verdict = self.inner.holes()?.readable(after, &positions, read.xmin);
        let readable = match verdict {
            horizon::Readable::Upto(n) => n,
            horizon::Readable::NewGap { taken, start, end } => {
                let bound = read!(self, |c| queries::begun_below(c, read.xmax).await?)?;
                self.inner.holes()?.remember(start, end, bound);
                taken
            }
        };
        let mut out = Vec::with_capacity(readable);
        for (pos, event) in read.entries.into_iter().take(readable) {
            match event {
                Some(e) => out.push(e),
                None => tracing::error!(pos, "event log entry without its timeline event; skipped"),
            }
        }
        Ok(out)
    }

    async fn log_head(&self) -> StoreResult<u64> {
        read!(self, |c| queries::log_head(c).await?)
    }

    async fn cursor(&self, consumer: &str) -> StoreResult<Option<u64>> {
        read!(self, |c| queries::cursor(c, consumer).await?)
    }

    async fn save_cursor(&self, consumer: &str, pos: u64) -> StoreResult<()> {
        write_tx!(self, |tx| queries::save_cursor(&tx, consumer, pos).await?)
    }

    async fn prune_log(&self) -> StoreResult<u64> {
        write_tx!(self, |tx| queries::prune_log(&tx).await?)
    }

    async fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> StoreResult<bool> {
        write_tx!(self, |tx| queries::lease(&tx, name, holder, ttl_ms).await?)
    }

    fn log_watch(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    async fn close(&self) {
        if let Ok(mut appends) = self.appends.lock() {
            appends.take();
        }
        let batcher = self.batcher.lock().ok().and_then(|mut b| b.take());
        if let Some(b) = batcher
            && b.await.is_err()
        {
            tracing::error!("postgres: batcher ended abnormally");
        }
        self.listener.abort();
        self.inner.pool.close();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::conformance::{plain_user, room, send};
    use switchboard_protocol::RoomKind;

    /// The database the networked tests use (scripts/test creates a fresh one per run); each
    /// store gets a schema of its own in it.
    pub(crate) fn test_url() -> String {
        std::env::var("SWITCHBOARD_TEST_POSTGRES").unwrap_or_else(|_| {
            panic!(
                "SWITCHBOARD_TEST_POSTGRES is not set: these tests need PostgreSQL (scripts/test sets it up)"
            )
        })
    }

    /// Drops the test's schema when the test ends.
    pub(crate) struct Schema(String);

    impl Drop for Schema {
        fn drop(&mut self) {
            let (url, schema) = (test_url(), self.0.clone());
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                rt.block_on(async {
                    if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                        tokio::spawn(conn);
                        let _ =
                            client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                    }
                });
            })
            .join();
        }
    }

    pub(crate) fn options(schema: &str) -> PgOptions {
        PgOptions {
            url: test_url(),
            pool_size: 8,
            max_batch: 256,
            schema: Some(schema.to_owned()),
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub(crate) fn fresh_schema() -> Schema {
        Schema(format!("t_{}", uuid::Uuid::now_v7().simple()))
    }

    async fn open_temp() -> (Schema, Arc<dyn Store>) {
        let schema = fresh_schema();
        let store = PgStore::open(&options(&schema.0)).await.expect("open postgres store");
        (schema, Arc::new(store))
    }

    async fn open_two() -> (Schema, Arc<dyn Store>, Arc<dyn Store>) {
        let schema = fresh_schema();
        let opts = options(&schema.0);
        let (a, b) = tokio::join!(PgStore::open(&opts), PgStore::open(&opts));
        (schema, Arc::new(a.expect("first node")), Arc::new(b.expect("second node")))
    }

    crate::store_conformance!(open_temp, #[ignore = "needs PostgreSQL: scripts/test runs it"]);
    crate::store_concurrency!(open_two, #[ignore = "needs PostgreSQL: scripts/test runs it"]);

    /// A raw connection to the test's schema, beside the store.
    async fn raw(schema: &Schema) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&test_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.batch_execute(&format!("SET search_path TO {}", schema.0)).await.unwrap();
        client
    }

    /// Takes a log position in a transaction left open, as a node in the middle of its commit
    /// would, for an event of `room` (a seq no event has: nothing reads it back).
    async fn hold_a_position<'c>(
        client: &'c mut tokio_postgres::Client,
        room: &str,
    ) -> tokio_postgres::Transaction<'c> {
        let tx = client.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO event_log (pos, room_id, seq)
             SELECT nextval('event_log_pos'), $1, 1000000 WHERE pg_current_xact_id() IS NOT NULL",
            &[&room],
        )
        .await
        .unwrap();
        tx
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: scripts/test runs it"]
    async fn a_reader_waits_at_a_position_still_committing_and_passes_one_rolled_back() {
        let schema = fresh_schema();
        let store: Arc<dyn Store> = Arc::new(PgStore::open(&options(&schema.0)).await.unwrap());
        let alice = plain_user(&store, "alice").await;
        let r = room(&store, &alice, RoomKind::Private, &[]).await;
        let after = store.log_head().await.unwrap();
        let mut client = raw(&schema).await;

        // Rolled back: the reader waits while it is open, then passes over its position.
        let tx = hold_a_position(&mut client, &r).await;
        let m = send(&store, &r, &alice, "one").await.unwrap().message;
        assert!(store.events_after(after, 10).await.unwrap().is_empty(), "a lower position is still open");
        tx.rollback().await.unwrap();
        // Passed once every transaction that was running when the gap was seen has ended
        // (other tests' transactions on this server count too: a short wait).
        let mut next = Vec::new();
        for _ in 0..100 {
            next = store.events_after(after, 10).await.unwrap();
            if !next.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(next.len(), 1, "its transaction ended without it: the gap is passed");
        assert!(matches!(&next[0].event, TimelineEvent::Message(x) if x.id == m.id));

        // Committed late: the reader gets it, in its place, before what came after.
        let after = next[0].pos;
        let tx = hold_a_position(&mut client, &r).await;
        send(&store, &r, &alice, "two").await.unwrap();
        assert!(store.events_after(after, 10).await.unwrap().is_empty());
        tx.commit().await.unwrap();
        // The held entry names no event (seq 1000000), so only the message is returned, but
        // only now that nothing below it can still appear.
        let next = store.events_after(after, 10).await.unwrap();
        assert_eq!(next.len(), 1);
        assert!(next[0].pos > after + 1, "the held position came first");
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: scripts/test runs it"]
    async fn another_nodes_commits_move_this_nodes_log_watch() {
        let (_schema, a, b) = open_two().await;
        let alice = plain_user(&a, "alice").await;
        let r = room(&a, &alice, RoomKind::Private, &[]).await;
        let mut watch = b.log_watch();
        for i in 0..20 {
            send(&a, &r, &alice, &format!("m{i}")).await.unwrap();
        }
        let head = a.log_head().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|seen| *seen >= head))
            .await
            .expect("the other node is told of the last commit")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: scripts/test runs it"]
    async fn three_nodes_starting_at_once_migrate_once() {
        let schema = fresh_schema();
        let opts = options(&schema.0);
        let (a, b, c) = tokio::join!(PgStore::open(&opts), PgStore::open(&opts), PgStore::open(&opts));
        for s in [a, b, c] {
            let s = s.expect("every node starts");
            s.ping().await.expect("ready");
            s.close().await;
        }
        let (client, conn) = tokio_postgres::connect(&test_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let sql = format!("SELECT COUNT(*) FROM {}.schema_migrations", schema.0);
        let n: i64 = client.query_one(&sql, &[]).await.unwrap().get(0);
        assert_eq!(n, MIGRATIONS.len() as i64, "each migration recorded once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: scripts/test runs it"]
    async fn one_bad_job_fails_alone_and_its_batch_commits() {
        let (_schema, store) = open_temp().await;
        let author = store.create_user("a", "h").await.unwrap().id;
        let new = NewRoom {
            creator: author.clone(),
            name: "r".into(),
            kind: switchboard_protocol::RoomKind::Private,
            members: vec![],
        };
        let room = store.create_room(new).await.unwrap().room.id;
        // PostgreSQL refuses NUL in text, which no check before the insert foresees (the API
        // refuses it earlier; the store is held to this anyway).
        let mut pending = Vec::new();
        for i in 0..6 {
            let body = if i == 3 { "bad \0 body".to_owned() } else { format!("good {i}") };
            let msg = NewMessage {
                room: room.clone(),
                author: author.clone(),
                client_msg_id: format!("k{i}"),
                body,
            };
            pending.push(store.queue_append(msg).await.unwrap());
        }
        let mut results = Vec::new();
        for p in pending {
            results.push(p.await);
        }
        assert!(matches!(results[3], Err(StoreError::Fatal(_))), "{:?}", results[3]);
        let seqs: Vec<u64> = results.iter().filter_map(|r| r.as_ref().ok()).map(|a| a.message.seq).collect();
        assert_eq!(
            seqs,
            vec![2, 3, 4, 5, 6],
            "the others committed, in order, with no seq spent on the bad one"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: scripts/test runs it"]
    async fn an_unreachable_database_fails_fast_and_retryably() {
        let mut opts = options("unused");
        opts.url = "postgres://postgres@127.0.0.1:1/test".into();
        opts.connect_timeout = Duration::from_millis(500);
        let started = std::time::Instant::now();
        let err = PgStore::open(&opts).await.err().expect("cannot open");
        assert!(err.is_retryable(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

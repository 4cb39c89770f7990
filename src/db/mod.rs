//! Database access: the pool of either backend, chosen at run time by the URL, the one
//! dispatch macro that runs a query body against either, and embedded migrations.
//!
//! Layout: [`dialect`] owns every difference between the backends (SQL fragments, index
//! hints, driver operations behind the [`Conn`] trait); [`query`] is the statement
//! builder with the one filter -> WHERE writer and the one keyset helper; one module per
//! resource (`customers`, `communications`, `transactions`, `tickets`), `timeline` for
//! the timeline's reads and `reports` for the aggregate statements. Storage returns rows
//! and plain structs; it imports neither `service` nor `grpc`, and runs no analytics.
//!
//! Queries are written once, with diesel's DSL or a [`query::Sql`], inside
//! [`with_conn!`](crate::with_conn!); each match arm expands the same body against its
//! own connection type, so both copies type-check. [`Db::reader`] is the pool for reads
//! that may be a few seconds stale (the read replica when one serves; [`replica`]).

pub mod attention;
pub mod audit;
pub mod business_hours;
pub mod communications;
pub mod content_feed;
pub mod customers;
pub mod dialect;
pub mod feed;
pub mod instrument;
pub mod merges;
pub mod migrate;
pub mod query;
pub mod replica;
pub mod reports;
pub mod rollups;
pub mod schema;
pub mod secrets;
pub mod service_levels;
pub mod tickets;
pub mod timeline;
pub mod transactions;
pub mod tx;

pub use dialect::{Backend, Conn};

use std::{sync::Arc, time::Duration};

use anyhow::bail;
use diesel::{QueryResult, SqliteConnection};
use diesel_async::{
    pooled_connection::{bb8::Pool, AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod},
    sync_connection_wrapper::SyncConnectionWrapper,
    AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection,
};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use futures_util::FutureExt;

/// SQLite connection usable from async code (queries run on the blocking pool).
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection, instrument::SpanCarrying>;

const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The check-out ping of a pooled MySQL connection (`SELECT 1`), safe to cancel.
///
/// bb8 pings a connection when `get()` hands it out; if the caller's future is dropped
/// during that ping, bb8 puts the connection back as healthy with the answer unread
/// (the next caller then reads it: "can't parse: buf doesn't have enough data"). The
/// connection is marked failed for the duration of the ping, so a cut-off ping leaves it
/// failed and the pool discards it.
async fn cancel_safe_ping(conn: &mut AsyncMysqlConnection) -> QueryResult<()> {
    use diesel::IntoSql;
    use diesel_async::TransactionManager;
    type Tm = <AsyncMysqlConnection as AsyncConnection>::TransactionManager;
    Tm::transaction_manager_status_mut(conn).set_in_error();
    diesel::select(1_i32.into_sql::<diesel::sql_types::Integer>())
        .get_result::<i32>(conn)
        .await?;
    *Tm::transaction_manager_status_mut(conn) = Default::default();
    Ok(())
}

/// The most connections a SQLite pool opens, whatever `--db-max-connections` says: one
/// file, one writer at a time, and readers need few.
const SQLITE_MAX_CONNECTIONS: u32 = 8;

/// Settings of a SQLite connection: a busy timeout for other connections and processes
/// writing the same file (first: switching a new file to WAL needs its lock), WAL so
/// readers never block the writer.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

/// Which database a URL names. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `mysql://user:pass@host:port/db` (MySQL, MariaDB, TiDB).
    Mysql(String),
    /// `sqlite://PATH` or `sqlite::memory:`; holds the file path.
    Sqlite(String),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Mysql(url) => f.debug_tuple("Mysql").field(&redact(url)).finish(),
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

impl DatabaseUrl {
    /// Parses a `DATABASE_URL`, rejecting unknown schemes and empty paths. Errors show
    /// the URL only through [`redact`].
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if let Some(rest) = url.strip_prefix("mysql://") {
            let (_, after_host) = rest
                .rsplit_once('@')
                .map_or(("", rest), |(creds, host)| (creds, host));
            let Some((host, db)) = after_host.split_once('/') else {
                bail!(
                    "malformed DATABASE_URL {:?}: expected mysql://user[:password]@host[:port]/database",
                    redact(url)
                );
            };
            if host.is_empty() || db.is_empty() {
                bail!(
                    "malformed DATABASE_URL {:?}: host and database are required",
                    redact(url)
                );
            }
            Ok(DatabaseUrl::Mysql(url.to_owned()))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                bail!(
                    "malformed DATABASE_URL {:?}: expected sqlite://PATH",
                    redact(url)
                );
            }
            Ok(DatabaseUrl::Sqlite(path.to_owned()))
        } else {
            bail!(
                "unsupported DATABASE_URL {:?}: use mysql://... or sqlite://PATH",
                redact(url)
            )
        }
    }
}

/// Connection-pool settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections kept open.
    pub max_connections: u32,
    /// How long a request waits for a connection before UNAVAILABLE.
    pub acquire_timeout: Duration,
}

impl PoolOptions {
    /// The most connections a pool of `backend` opens: `max_connections`, capped at
    /// [`SQLITE_MAX_CONNECTIONS`] for SQLite.
    pub fn max_for(&self, backend: Backend) -> u32 {
        match backend {
            Backend::Sqlite => self.max_connections.min(SQLITE_MAX_CONNECTIONS),
            Backend::Mysql => self.max_connections,
        }
    }
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A pool of connections to one of the supported databases.
#[derive(Clone)]
pub enum Db {
    /// MySQL / MariaDB through the pure-Rust `mysql_async` driver.
    Mysql(MysqlPool),
    /// Embedded SQLite. Writers take `write_lock` first: SQLite allows one writer at a
    /// time, and queueing in-process beats spinning on SQLITE_BUSY.
    Sqlite {
        /// The connections.
        pool: Pool<SqliteConn>,
        /// Serializes this process's write transactions.
        write_lock: Arc<tokio::sync::Mutex<()>>,
    },
}

/// The MySQL pool with what it knows of the database's health: while readiness finds
/// no host answering, calls answer UNAVAILABLE at once instead of waiting for a
/// connection that cannot come.
///
/// On the primary, `replica` is the read replica when one is configured; a pool that
/// [`Db::reader`] made over the replica also holds the primary's pool as `fallback`.
#[derive(Clone)]
pub struct MysqlPool {
    pool: Pool<AsyncMysqlConnection>,
    health: Arc<DbHealth>,
    replica: Option<Arc<replica::Replica>>,
    fallback: Option<Pool<AsyncMysqlConnection>>,
}

impl std::ops::Deref for MysqlPool {
    type Target = Pool<AsyncMysqlConnection>;
    fn deref(&self) -> &Self::Target {
        &self.pool
    }
}

impl MysqlPool {
    /// A connection, or UNAVAILABLE at once while the database is known to be away.
    ///
    /// A reader over the replica takes a replica connection while the replica is usable
    /// and otherwise, or when none can be had, one of the primary's (the replica then
    /// counts as unreachable until its next check).
    pub async fn get(
        &self,
    ) -> crate::error::Result<
        bb8::PooledConnection<'_, AsyncDieselConnectionManager<AsyncMysqlConnection>>,
    > {
        if let (Some(replica), Some(_)) = (&self.replica, &self.fallback) {
            if replica.usable() {
                match self.pool.get().await {
                    Ok(conn) => return Ok(conn),
                    Err(e) => replica.unreachable(&e.to_string()),
                }
            }
        }
        let pool = self.fallback.as_ref().unwrap_or(&self.pool);
        if self.health.is_down() {
            return Err(crate::error::Error::Unavailable {
                reason: crate::error::Reason::DatabaseUnavailable,
                message: "the database is unreachable (no host answers the readiness check); \
                          retry later"
                    .to_owned(),
            });
        }
        Ok(pool.get().await?)
    }

    /// Looks at the outcome of work on a connection of this pool: on a reader over the
    /// replica, a lost connection sends the next reads to the primary at once, not
    /// only after the next check. (The read itself answers UNAVAILABLE, as on the
    /// primary. A reader that had fallen back to the primary marks the replica too; the
    /// next check corrects that within a second.)
    pub fn observe<T>(&self, outcome: &crate::error::Result<T>) {
        if let (Some(replica), Some(_), Err(crate::error::Error::Database(e))) =
            (&self.replica, &self.fallback, outcome)
        {
            if crate::error::is_connection_error(e) {
                replica.unreachable(&e.to_string());
            }
        }
    }
}

/// Whether the database answered the last readiness check; shared by the pool and the
/// readiness watcher.
#[derive(Debug, Default)]
pub struct DbHealth {
    down: std::sync::atomic::AtomicBool,
}

impl DbHealth {
    /// Whether the last check found no host answering.
    pub fn is_down(&self) -> bool {
        std::sync::atomic::AtomicBool::load(&self.down, std::sync::atomic::Ordering::Relaxed)
    }

    /// Records the outcome of a readiness check.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How long one host gets to accept a connection before the next is tried.
const HOST_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The single-host URLs of a MySQL URL that lists several hosts
/// (`mysql://user:pass@h1:3306,h2:3306,h3:3306/crm?...`), in order; one for one host.
pub fn mysql_hosts(url: &str) -> Vec<String> {
    let Some(rest) = url.strip_prefix("mysql://") else {
        return vec![url.to_owned()];
    };
    let (creds, after) = match rest.rsplit_once('@') {
        Some((creds, after)) => (format!("{creds}@"), after),
        None => (String::new(), rest),
    };
    let (hosts, path) = after.split_once('/').unwrap_or((after, ""));
    hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| format!("mysql://{creds}{host}/{path}"))
        .collect()
}

/// A connection to the first of `url`'s hosts that accepts one and, on a Galera
/// cluster, is synced with it (`wsrep_ready`): a node that lost its quorum or is still
/// catching up is passed over.
pub async fn connect_mysql_any(url: &str) -> diesel::ConnectionResult<AsyncMysqlConnection> {
    let mut last = None;
    for host in mysql_hosts(url) {
        let attempt = tokio::time::timeout(HOST_CONNECT_TIMEOUT, async {
            let mut conn = AsyncMysqlConnection::establish(&host).await?;
            if !galera_ready(&mut conn).await {
                return Err(diesel::ConnectionError::BadConnection(
                    "the Galera node is not synced with its cluster (wsrep_ready is OFF)".into(),
                ));
            }
            Ok(conn)
        })
        .await;
        match attempt {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => {
                tracing::debug!(host = %redact(&host), error = %e, "database host refused; trying the next");
                last = Some(e);
            }
            Err(_) => {
                tracing::debug!(host = %redact(&host), "database host did not answer in time; trying the next");
                last = Some(diesel::ConnectionError::BadConnection(format!(
                    "{} did not accept a connection within {} s",
                    redact(&host),
                    HOST_CONNECT_TIMEOUT.as_secs()
                )));
            }
        }
    }
    Err(last.unwrap_or_else(|| diesel::ConnectionError::BadConnection("no database host".into())))
}

/// Whether a connection may be used: not Galera, or a Galera node ready for clients.
async fn galera_ready(conn: &mut AsyncMysqlConnection) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Ready {
        #[diesel(sql_type = diesel::sql_types::Text)]
        ready: String,
    }
    // `@@wsrep_on` is unknown on MySQL and TiDB: not a Galera node.
    let on: Vec<Ready> = match diesel::sql_query("SELECT CAST(@@wsrep_on AS CHAR) AS ready")
        .load(conn)
        .await
    {
        Ok(rows) => rows,
        Err(_) => return true,
    };
    if !<[Ready]>::first(&on).is_some_and(|r| r.ready == "1" || r.ready.eq_ignore_ascii_case("ON"))
    {
        return true;
    }
    #[derive(diesel::QueryableByName)]
    struct Status {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "Value")]
        value: String,
    }
    diesel::sql_query("SHOW GLOBAL STATUS LIKE 'wsrep_ready'")
        .load::<Status>(conn)
        .await
        .is_ok_and(|rows| {
            <[Status]>::first(&rows).is_some_and(|r| r.value.eq_ignore_ascii_case("ON"))
        })
}

/// A connection of its own for readiness checks, outside the pool: the checks neither
/// wait for a busy pool nor count as its work, and a failed check drops the connection
/// (a check cut off by its timeout may leave it mid-answer) to open a new one next time.
pub struct Probe {
    url: String,
    conn: Option<ProbeConn>,
}

enum ProbeConn {
    Mysql(Box<AsyncMysqlConnection>),
    Sqlite(Box<SqliteConn>),
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("url", &redact(&self.url))
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Probe {
    /// A probe of the database at `url` (connected at the first check).
    pub fn new(url: &str) -> Probe {
        Probe {
            url: url.to_owned(),
            conn: None,
        }
    }

    /// Whether the database answers `SELECT 1` now.
    pub async fn check(&mut self) -> crate::error::Result<()> {
        use diesel::IntoSql;
        let unavailable = |e: String| crate::error::Error::Unavailable {
            reason: crate::error::Reason::DatabaseUnavailable,
            message: e,
        };
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => match DatabaseUrl::parse(&self.url).map_err(|e| unavailable(e.to_string()))? {
                DatabaseUrl::Mysql(url) => ProbeConn::Mysql(Box::new(
                    connect_mysql_any(&url)
                        .await
                        .map_err(|e| unavailable(e.to_string()))?,
                )),
                DatabaseUrl::Sqlite(path) => ProbeConn::Sqlite(Box::new(
                    SqliteConn::establish(&path)
                        .await
                        .map_err(|e| unavailable(e.to_string()))?,
                )),
            },
        };
        let one = diesel::select(1_i32.into_sql::<diesel::sql_types::Integer>());
        match &mut conn {
            ProbeConn::Mysql(c) => one.get_result::<i32>(c.as_mut()).await?,
            ProbeConn::Sqlite(c) => one.get_result::<i32>(c.as_mut()).await?,
        };
        self.conn = Some(conn);
        Ok(())
    }
}

/// A snapshot of the pool (see [`Db::pool_stats`]); defined where it is exported.
pub use crate::metrics::PoolStats;

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Db::Mysql(_) => "Db::Mysql",
            Db::Sqlite { .. } => "Db::Sqlite",
        })
    }
}

/// Runs `$body` with `$conn: &mut C` bound to a pooled connection of the active
/// backend. The body is expanded once per backend, so it must compile for both.
/// Evaluates to the body's value; pool errors return early with `Error`.
///
/// The connection comes from `$db`'s own pool: the primary for the server's `Db`, the
/// read replica (or the primary, see [`Db::reader`]) for `db.reader()`. Reads that may
/// be stale say so once, where they pick the pool: `with_conn!(&db.reader(), |conn| ..)`
/// or a storage function called with `&db.reader()`.
///
/// `with_conn!(db, write, |conn| ..)` is for statements that write: on SQLite it first
/// takes the process-wide write lock (SQLite allows one writer; queueing in-process
/// beats spinning on SQLITE_BUSY). MySQL needs no lock.
///
/// A MySQL connection goes back to the pool only when the body ran to its end without a
/// database error: if the caller's future is dropped mid-query (a cancelled call) or a
/// statement failed, the connection is discarded, since its protocol state is unknown.
/// The body must evaluate to `crate::error::Result<_>`.
#[macro_export]
macro_rules! with_conn {
    ($db:expr, |$conn:ident| $body:expr) => {
        $crate::with_conn!(@dispatch $db, false, |$conn| $body)
    };
    ($db:expr, write, |$conn:ident| $body:expr) => {
        $crate::with_conn!(@dispatch $db, true, |$conn| $body)
    };
    (@dispatch $db:expr, $write:expr, |$conn:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Mysql(pool) => {
                let mut checkout = $crate::db::MysqlCheckout::new(
                    pool.get().await.map_err($crate::error::Error::from)?,
                );
                let $conn = checkout.conn();
                // The body runs in its own block, so an early `?` return still reaches
                // `finish`, which keeps the connection unless the work was cut off or
                // failed in the database (a failed statement may leave rows unread).
                let out = async { $body }.await;
                checkout.finish(&out);
                pool.observe(&out);
                out
            }
            $crate::db::Db::Sqlite { pool, write_lock } => {
                let _write = if $write {
                    Some(write_lock.lock().await)
                } else {
                    None
                };
                let mut pooled = pool.get().await.map_err($crate::error::Error::from)?;
                let $conn = &mut *pooled;
                $body
            }
        }
    };
}

/// How long [`retry_conflicts`] keeps running a refused transaction again.
pub const RETRY_BUDGET: Duration = Duration::from_secs(3);
/// The first pause before a retry; each later one doubles, up to [`RETRY_MAX_PAUSE`].
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(2);
/// The longest pause between two attempts.
const RETRY_MAX_PAUSE: Duration = Duration::from_millis(200);

/// Runs a write transaction again while the database refuses it because of a concurrent
/// one (a deadlock, a lock wait timeout, a Galera certification conflict or a
/// transaction the cluster aborted midway, SQLite's busy file), for up to
/// [`RETRY_BUDGET`], with a growing pause of random length between attempts (so two
/// writers that collided do not collide again in step). The refused attempt rolled back
/// whole, so the retry writes exactly once. Other outcomes return at once. A caller whose
/// own deadline is shorter ends the call earlier: the attempt in flight is then dropped,
/// and with it its connection (see [`MysqlCheckout`]).
pub async fn retry_conflicts<T, Fut>(attempt: impl FnMut() -> Fut) -> crate::error::Result<T>
where
    Fut: std::future::Future<Output = crate::error::Result<T>>,
{
    retry_conflicts_for(RETRY_BUDGET, attempt).await
}

/// [`retry_conflicts`] with its time budget given.
pub async fn retry_conflicts_for<T, Fut>(
    budget: Duration,
    mut attempt: impl FnMut() -> Fut,
) -> crate::error::Result<T>
where
    Fut: std::future::Future<Output = crate::error::Result<T>>,
{
    let give_up = tokio::time::Instant::now() + budget;
    let mut pause = RETRY_FIRST_PAUSE;
    let mut retries = 0u32;
    loop {
        match attempt().await {
            Err(e) if e.is_transaction_conflict() => {
                // A random pause in [pause / 2, pause]: full jitter would retry at once too often.
                let jittered = pause / 2 + pause.mul_f64(f64::from(random_u16()) / 131_072.0);
                if tokio::time::Instant::now() + jittered >= give_up {
                    crate::metrics::transaction_conflict(false);
                    return Err(e);
                }
                retries += 1;
                crate::metrics::transaction_conflict(true);
                tracing::debug!(retries, error = %e, "transaction conflict, retrying");
                tokio::time::sleep(jittered).await;
                pause = (pause * 2).min(RETRY_MAX_PAUSE);
            }
            outcome => return outcome,
        }
    }
}

/// A random number for retry jitter (not for secrets).
fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    // Without randomness the pause is simply not jittered.
    let _ = getrandom::fill(&mut b);
    u16::from_le_bytes(b)
}

/// A pooled MySQL connection that returns to the pool only after [`MysqlCheckout::finish`].
///
/// Dropping a `mysql_async` query future mid-flight (a client cancel or deadline lands
/// while the statement runs) leaves unread result packets on the connection; handed
/// out again, the next call would read them as its own answer (wrong rows, false
/// NOT_FOUND). A checkout dropped without `finish` marks the connection's transaction
/// state as failed, which makes the pool's `has_broken` check discard it.
pub struct MysqlCheckout<'a> {
    conn: bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncMysqlConnection>>,
    finished: bool,
}

impl<'a> MysqlCheckout<'a> {
    /// Wraps a connection just taken from the pool.
    pub fn new(
        conn: bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncMysqlConnection>>,
    ) -> Self {
        Self {
            conn,
            finished: false,
        }
    }

    /// The connection, for the duration of the work.
    pub fn conn(&mut self) -> &mut AsyncMysqlConnection {
        &mut self.conn
    }

    /// The work ran to its end with `outcome`: the connection may be reused unless a
    /// statement failed in the database (its result may be partly unread). Domain
    /// outcomes such as NOT_FOUND keep the connection.
    pub fn finish<T>(&mut self, outcome: &crate::error::Result<T>) {
        self.finished = !matches!(
            outcome,
            Err(crate::error::Error::Database(_) | crate::error::Error::Internal(_))
        );
    }
}

impl Drop for MysqlCheckout<'_> {
    fn drop(&mut self) {
        if !self.finished {
            use diesel_async::TransactionManager;
            <AsyncMysqlConnection as AsyncConnection>::TransactionManager::transaction_manager_status_mut(
                &mut *self.conn,
            )
            .set_in_error();
        }
    }
}

/// An insert form that knows the row it stores (every value is stored as given: times
/// are already whole microseconds), so a create needs no SELECT back.
pub trait Stored<R> {
    /// The row this form stored under `id`.
    fn stored(&self, id: i64) -> R;
    /// Whether `row`, stored under this form's `request_id`, is what this form asks to
    /// store (its defining fields agree): a replay, not a reuse of the key.
    fn replays(&self, row: &R) -> bool;
}

/// The answer to a request whose `request_id` found `row`: the row for a replay of the
/// same request, [`crate::error::Error::RequestIdReused`] for a different one.
pub fn replay<F: Stored<R>, R>(
    form: &F,
    row: R,
    request_id: &str,
    resource: &'static str,
) -> crate::error::Result<R> {
    if form.replays(&row) {
        Ok(row)
    } else {
        Err(crate::error::Error::RequestIdReused {
            resource,
            request_id: request_id.to_owned(),
        })
    }
}

/// Creates a row of the per-customer `$table` (a [`query::Table`] const `$desc`, rows
/// `$row`) from `$form` (an `Insertable` with `customer_id` and `request_id`) and
/// evaluates to `Result<$row>`. The customer must exist; a `request_id` already used for
/// that customer returns the first row and writes nothing, also when a concurrent
/// duplicate wins the unique-key race; used for a different request (see
/// [`Stored::replays`]), it is refused. A new row is audited as `$method` by `$caller`
/// (see `db::audit`) in the same transaction. With `after_insert = |conn, row| ..`, that
/// `Result<()>` body runs in the same transaction right after a new row is stored. A
/// macro because the INSERT is diesel's DSL, which type-checks per connection inside
/// `with_conn!`.
macro_rules! create_for_customer {
    ($db:expr, $table:ident, $desc:expr, $row:ty, $form:expr, audit = ($caller:expr, $method:expr)) => {
        $crate::db::create_for_customer!(
            $db,
            $table,
            $desc,
            $row,
            $form,
            audit = ($caller, $method),
            after_insert = |_conn, _row| Ok::<(), $crate::error::Error>(())
        )
    };
    ($db:expr, $table:ident, $desc:expr, $row:ty, $form:expr, audit = ($caller:expr, $method:expr),
     after_insert = |$c:ident, $r:ident| $after:expr) => {{
        use $crate::db::{query, schema::$table, Conn as _};
        let form = $form;
        let desc: &query::Table = &$desc;
        let result = $crate::db::retry_conflicts(|| async {
            $crate::with_conn!($db, write, |conn| {
                $crate::db::tx::transaction(conn, async |conn| {
                    // Stamped in the attempt, so a retried one stamps anew (see `feed`).
                    let stamp = $crate::db::feed::stamp();
                    let stamped = {
                        let mut f = form.clone();
                        f.create_time = stamp;
                        f
                    };
                    let form = &stamped;
                    query::lock_customer(conn, form.customer_id).await?;
                    if let Some(rid) = &form.request_id {
                        let first: Option<$row> =
                            query::by_request_id(conn, desc, form.customer_id, rid).await?;
                        if let Some(row) = first {
                            return $crate::db::replay(form, row, rid, desc.resource);
                        }
                    }
                    diesel::insert_into($table::table)
                        .values(form)
                        .execute(conn)
                        .await?;
                    let id = conn.last_insert_id().await?;
                    // The row as stored, without reading it back.
                    let row: $row = $crate::db::Stored::stored(form, id);
                    {
                        let ($c, $r) = (&mut *conn, &row);
                        $after?;
                    }
                    let change = $crate::db::audit::Change::new($method, form.customer_id, id);
                    $crate::db::audit::record(conn, $caller, row.create_time, &[change]).await?;
                    $crate::db::feed::check_commit_bound(stamp)?;
                    Ok(row)
                })
                .await
            })
        })
        .await;
        match (result, &form.request_id) {
            (Err(e), Some(rid)) if e.is_unique_violation() => {
                $crate::with_conn!($db, |conn| {
                    let first: Option<$row> =
                        query::by_request_id(conn, desc, form.customer_id, rid).await?;
                    $crate::db::replay(form, first.ok_or(e)?, rid, desc.resource)
                })
            }
            (result, _) => result,
        }
    }};
}
pub(crate) use create_for_customer;

impl Db {
    /// Connects to `url`, checks that the database answers, and applies pending
    /// migrations. Fails with a clear message when the URL is malformed or the
    /// database is unreachable.
    pub async fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<Db> {
        Self::connect_with(url, options, migrate::MigrationsMode::Auto).await
    }

    /// [`Db::connect`], treating migrations as `migrations` says.
    pub async fn connect_with(
        url: &str,
        options: &PoolOptions,
        migrations: migrate::MigrationsMode,
    ) -> anyhow::Result<Db> {
        let db = match DatabaseUrl::parse(url)? {
            DatabaseUrl::Mysql(url) => Db::Mysql(MysqlPool {
                pool: mysql_pool(
                    url,
                    options.max_for(Backend::Mysql),
                    options.acquire_timeout,
                ),
                health: Arc::default(),
                replica: None,
                fallback: None,
            }),
            DatabaseUrl::Sqlite(path) => {
                let mut config = ManagerConfig::<SqliteConn>::default();
                config.custom_setup = Box::new(|url| {
                    let url = url.to_owned();
                    async move {
                        let mut conn = SqliteConn::establish(&url).await?;
                        instrument::trace_statements(&mut conn, "sqlite");
                        conn.batch_execute(SQLITE_PRAGMAS)
                            .await
                            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    }
                    .boxed()
                });
                let manager =
                    AsyncDieselConnectionManager::<SqliteConn>::new_with_config(path, config);
                let pool = Pool::builder()
                    .max_size(options.max_for(Backend::Sqlite))
                    .connection_timeout(options.acquire_timeout)
                    .build_unchecked(manager);
                Db::Sqlite {
                    pool,
                    write_lock: Arc::new(tokio::sync::Mutex::new(())),
                }
            }
        };
        let outcome = migrate::run(url, migrations).await?;
        for version in &outcome.applied {
            tracing::info!(%version, "applied migration");
        }
        rollups::ensure_built(&db, crate::model::time::now())
            .await
            .map_err(|e| anyhow::anyhow!("cannot build the rollups: {e}"))?;
        Ok(db)
    }

    /// This pool (over `primary_url`) with `url` (MySQL, one host or several) as its
    /// read replica, allowed to trail the primary by at most `max_lag` (see
    /// [`replica`]); its lag is checked in the background from now on. The replica need not answer yet: until it does,
    /// reads go to the primary. Fails for a SQLite pool or a URL that is not MySQL.
    pub fn with_replica(
        self,
        primary_url: &str,
        url: &str,
        options: &PoolOptions,
        max_lag: Duration,
    ) -> anyhow::Result<Db> {
        let Db::Mysql(mut primary) = self else {
            bail!("--read-database-url needs a MySQL --database-url (SQLite has no replicas)");
        };
        let DatabaseUrl::Mysql(url) = DatabaseUrl::parse(url)? else {
            bail!("--read-database-url must be a mysql:// URL");
        };
        // A replica that does not hand out a connection soon sends the read to the
        // primary rather than holding it for the whole acquire timeout.
        let wait = options.acquire_timeout.min(REPLICA_ACQUIRE_TIMEOUT);
        let pool = mysql_pool(url.clone(), options.max_for(Backend::Mysql), wait);
        let replica = Arc::new(replica::Replica::new(pool, max_lag));
        tokio::spawn(replica::watch(
            Arc::downgrade(&replica),
            primary_url.to_owned(),
            url,
        ));
        primary.replica = Some(replica);
        Ok(Db::Mysql(primary))
    }

    /// Where a read that may be stale should go: the replica when one is configured,
    /// within its lag bound and has applied the current caller's own last write (see
    /// [`replica`]), otherwise the primary. For reads only, never inside a write: the
    /// result may be a pool of the replica. A plain `Db` (SQLite, no replica) returns
    /// itself.
    pub fn reader(&self) -> Db {
        let Db::Mysql(primary) = self else {
            return self.clone();
        };
        let (Some(replica), None) = (&primary.replica, &primary.fallback) else {
            return self.clone();
        };
        let caller = replica::current_caller();
        if !replica.serves(caller.as_deref()) {
            crate::metrics::replica_read("primary");
            return self.clone();
        }
        crate::metrics::replica_read("replica");
        Db::Mysql(MysqlPool {
            pool: replica.pool.clone(),
            health: Arc::clone(&primary.health),
            replica: Some(Arc::clone(replica)),
            fallback: Some(primary.pool.clone()),
        })
    }

    /// Notes that `caller`'s write was acknowledged: its reads stay on the primary until
    /// the replica has applied it. Nothing without a replica.
    pub fn note_write(&self, caller: &str) {
        if let Db::Mysql(MysqlPool {
            replica: Some(replica),
            fallback: None,
            ..
        }) = self
        {
            replica.wrote(caller);
        }
    }

    /// Whether a read replica is configured.
    pub fn has_replica(&self) -> bool {
        matches!(
            self,
            Db::Mysql(MysqlPool {
                replica: Some(_),
                ..
            })
        )
    }

    /// The pool's connections and its historical waits, for metrics.
    pub fn pool_stats(&self) -> PoolStats {
        let state = match self {
            Db::Mysql(pool) => pool.state(),
            Db::Sqlite { pool, .. } => pool.state(),
        };
        PoolStats {
            connections: state.connections,
            idle: state.idle_connections,
            waited: state.statistics.get_waited,
            timed_out: state.statistics.get_timed_out,
        }
    }

    /// Records whether the database answered readiness's last check: while it does not
    /// (MySQL), calls answer UNAVAILABLE at once.
    pub fn set_reachable(&self, reachable: bool) {
        if let Db::Mysql(pool) = self {
            pool.health.set_down(!reachable);
        }
    }

    /// Which backend this pool talks to.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Mysql(_) => Backend::Mysql,
            Db::Sqlite { .. } => Backend::Sqlite,
        }
    }
}

/// How long a read waits for a replica connection before it goes to the primary.
const REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// A MySQL pool over `url` (several hosts: each new connection goes to the first that
/// answers) whose check-out ping is cancel-safe.
fn mysql_pool(url: String, max_size: u32, wait: Duration) -> Pool<AsyncMysqlConnection> {
    let mut config = ManagerConfig::<AsyncMysqlConnection>::default();
    config.recycling_method =
        RecyclingMethod::CustomFunction(Box::new(|conn| cancel_safe_ping(conn).boxed()));
    config.custom_setup = Box::new(|url| {
        connect_mysql_any(url)
            .map(|c| instrument::traced(c, "mysql"))
            .boxed()
    });
    let manager =
        AsyncDieselConnectionManager::<AsyncMysqlConnection>::new_with_config(url, config);
    Pool::builder()
        .max_size(max_size)
        .connection_timeout(wait)
        .build_unchecked(manager)
}

/// A database URL fit for logs and errors: the password (`user:***@`) and the values
/// of query parameters that look secret (`password=***`) are hidden. Text that does not
/// start with a plausible `scheme://` is not shown at all (it may be a bare secret).
/// Not the `url` crate or `mysql_async::Opts`: both refuse the very URLs this must still
/// show safely (a multi-host `h1:3306,h2:3306`, a password with a bare `/` or `@`).
pub fn redact(url: &str) -> String {
    const HIDDEN: &str = "***";
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("<{HIDDEN}: not a scheme://... URL>");
    };
    let plausible_scheme = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !plausible_scheme {
        return format!("<{HIDDEN}: not a scheme://... URL>");
    }
    // The password may hold '@', ':', '/' or '?' unescaped: everything up to the last
    // '@' counts as credentials, and everything after the user name is hidden.
    let (user, rest) = match rest.rsplit_once('@') {
        Some((creds, host)) => match creds.split_once(':') {
            Some((user, _)) => (format!("{user}:{HIDDEN}@"), host),
            None => (format!("{creds}@"), host),
        },
        None => (String::new(), rest),
    };
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://{user}{location}");
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if secret_param(key) => format!("{key}={HIDDEN}"),
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

/// Whether a URL query parameter's value may be a secret.
fn secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "key", "auth", "cred"]
        .iter()
        .any(|word| key.contains(word))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2";

    fn conflict() -> crate::error::Error {
        crate::error::Error::Database(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::Unknown,
            Box::new(
                "Deadlock found when trying to get lock; try restarting transaction".to_owned(),
            ),
        ))
    }

    #[tokio::test]
    async fn retry_conflicts_runs_a_refused_transaction_again_within_its_budget() {
        let attempts = std::cell::Cell::new(0);
        let out = retry_conflicts(|| async {
            attempts.set(attempts.get() + 1);
            if attempts.get() < 6 {
                Err(conflict())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!((out.unwrap(), attempts.get()), (7, 6));

        attempts.set(0);
        let started = tokio::time::Instant::now();
        let out: crate::error::Result<()> =
            retry_conflicts_for(Duration::from_millis(300), || async {
                attempts.set(attempts.get() + 1);
                Err(conflict())
            })
            .await;
        assert!(out.unwrap_err().is_transaction_conflict());
        let spent = started.elapsed();
        assert!(
            spent <= Duration::from_millis(300),
            "gave up within the budget: {spent:?}"
        );
        assert!(
            attempts.get() >= 4,
            "kept trying while the budget lasted: {}",
            attempts.get()
        );

        attempts.set(0);
        let out: crate::error::Result<()> = retry_conflicts(|| async {
            attempts.set(attempts.get() + 1);
            Err(crate::error::Error::NotFound {
                resource: "customer",
                id: 1,
            })
        })
        .await;
        assert!(out.is_err());
        assert_eq!(attempts.get(), 1, "other errors are not retried");
    }

    #[test]
    fn redact_hides_passwords_and_keeps_the_rest() {
        for (url, want) in [
            (
                "mysql://app:hunter2@db.example:3306/crm",
                "mysql://app:***@db.example:3306/crm",
            ),
            // A password with '@', ':', '/' and '?' in it, unescaped.
            (
                "mysql://app:hu@n:t/e?r2hunter2@db:3306/crm",
                "mysql://app:***@db:3306/crm",
            ),
            ("mysql://app@db/crm", "mysql://app@db/crm"),
            ("mysql://db/crm", "mysql://db/crm"),
            (
                "mysql://app:hunter2@db/crm?ssl-mode=required&password=hunter2",
                "mysql://app:***@db/crm?ssl-mode=required&password=***",
            ),
            ("postgres://app:hunter2@db/crm", "postgres://app:***@db/crm"),
            ("sqlite:///var/lib/crm.db", "sqlite:///var/lib/crm.db"),
        ] {
            assert_eq!(redact(url), want, "{url}");
        }
    }

    #[test]
    fn redact_hides_text_that_is_not_a_url() {
        for text in [
            "hunter2",
            "app:hunter2@db/crm",
            "mysql:app:hunter2@db/crm",
            "app:hunter2@db://crm",
        ] {
            let shown = redact(text);
            assert!(!shown.contains(SECRET), "{text} -> {shown}");
        }
    }

    #[test]
    fn url_parse_errors_never_print_the_password() {
        for url in [
            // No database.
            "mysql://app:hunter2@db.example:3306",
            "mysql://app:hunter2@db.example:3306/",
            // No host.
            "mysql://app:hunter2@/crm",
            // Unsupported schemes, or none.
            "postgres://app:hunter2@db/crm",
            "mariadb://app:hunter2@db/crm",
            "app:hunter2@db/crm",
            "hunter2",
        ] {
            let err = DatabaseUrl::parse(url).unwrap_err();
            let text = format!("{err:#} {err:?}");
            assert!(!text.contains(SECRET), "{url}: {text}");
            assert!(
                text.contains("DATABASE_URL"),
                "{url}: the error still says what is wrong: {text}"
            );
        }
        let err = DatabaseUrl::parse("mysql://app:hunter2@db:3306").unwrap_err();
        assert!(
            format!("{err}").contains("mysql://app:***@db:3306"),
            "{err}"
        );
    }

    #[test]
    fn database_url_debug_hides_the_password() {
        let url = DatabaseUrl::parse("mysql://app:hunter2@db/crm").unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("app:***@db/crm"), "{shown}");
    }
}

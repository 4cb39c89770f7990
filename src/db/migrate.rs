//! Schema migrations under a lock that any number of servers starting together respect,
//! on one database or a Galera cluster.
//!
//! `GET_LOCK` is local to one MySQL server (a Galera node does not see another node's
//! locks), and SQLite has none. The lock is therefore a row: whoever inserts row 1 of
//! `crm_migration_lock` holds it (the primary key, certified cluster-wide, lets one
//! insert win), refreshes its expiry while it works, and deletes it when done. A holder
//! that died leaves a row that expires after [`LOCK_TTL`], and the next server takes it
//! over. A server that finds nothing pending takes no lock at all.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use super::dialect::Conn;
use super::query::{Bind, Sql};
use super::{redact, DatabaseUrl, SqliteConn, MYSQL_MIGRATIONS, SQLITE_MIGRATIONS, SQLITE_PRAGMAS};

/// How a server treats migrations at start (`serve --migrations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MigrationsMode {
    /// Apply pending migrations (under the migration lock), then serve.
    #[default]
    Auto,
    /// Refuse to start while migrations are pending; apply nothing.
    Check,
    /// Neither check nor apply: for an account with only SELECT, INSERT, UPDATE and
    /// DELETE rights, once `crm-comms migrate` has run with a DDL account.
    Skip,
}

/// How long a lock row stays valid without being refreshed.
pub const LOCK_TTL: Duration = Duration::from_secs(30);
/// How often the holder refreshes it.
const LOCK_REFRESH: Duration = Duration::from_secs(5);
/// How long a server waits for another's migrations before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(600);
/// The pause between two tries to take the lock.
const LOCK_POLL: Duration = Duration::from_millis(250);

const CREATE_LOCK_TABLE: &str = "CREATE TABLE IF NOT EXISTS crm_migration_lock (\
     id INTEGER NOT NULL PRIMARY KEY, holder VARCHAR(80) NOT NULL, expires_ms BIGINT NOT NULL)";

/// What [`run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Versions applied now, oldest first.
    pub applied: Vec<String>,
    /// Versions the database still lacks (only in `check` mode, which refuses them).
    pub pending: Vec<String>,
}

/// Applies (`Auto`), checks (`Check`) or ignores (`Skip`) the embedded migrations of
/// the database at `url`.
pub async fn run(url: &str, mode: MigrationsMode) -> anyhow::Result<Outcome> {
    match mode {
        MigrationsMode::Skip => Ok(Outcome::default()),
        MigrationsMode::Check => {
            let pending = pending(url).await?;
            if !pending.is_empty() {
                bail!(
                    "{} migration(s) pending ({}): run `crm-comms migrate` with an account \
                     that may change the schema, or serve with --migrations auto",
                    pending.len(),
                    pending.join(", ")
                );
            }
            Ok(Outcome::default())
        }
        MigrationsMode::Auto => {
            if pending(url).await?.is_empty() {
                return Ok(Outcome::default());
            }
            let applied = locked(url, Task::Apply).await?;
            Ok(Outcome {
                applied,
                pending: Vec::new(),
            })
        }
    }
}

/// Reverts the last applied migration under the lock; its version.
pub async fn revert_last(url: &str) -> anyhow::Result<String> {
    locked(url, Task::RevertLast)
        .await?
        .pop()
        .context("no migration was reverted")
}

/// The embedded migrations the database at `url` has not applied, oldest first. Reads
/// diesel's bookkeeping table only (no DDL); all are pending on a new database.
pub async fn pending(url: &str) -> anyhow::Result<Vec<String>> {
    let (applied, all) = match DatabaseUrl::parse(url)? {
        DatabaseUrl::Mysql(url) => (
            applied_versions(&mut connect_mysql(&url).await?).await?,
            embedded::<diesel::mysql::Mysql>(&MYSQL_MIGRATIONS)?,
        ),
        DatabaseUrl::Sqlite(path) => (
            applied_versions(&mut connect_sqlite(&path).await?).await?,
            embedded::<diesel::sqlite::Sqlite>(&SQLITE_MIGRATIONS)?,
        ),
    };
    Ok(all.into_iter().filter(|v| !applied.contains(v)).collect())
}

/// The versions of the embedded migrations, oldest first.
fn embedded<DB: diesel::backend::Backend>(
    migrations: &EmbeddedMigrations,
) -> anyhow::Result<Vec<String>>
where
    EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
{
    use diesel::migration::MigrationSource;
    let list = MigrationSource::<DB>::migrations(migrations)
        .map_err(|e| anyhow::anyhow!("cannot read the embedded migrations: {e}"))?;
    Ok(list
        .iter()
        .map(|m| m.name().version().to_string())
        .collect())
}

/// One row of diesel's bookkeeping table.
#[derive(diesel::QueryableByName)]
struct Version {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

/// The versions in diesel's bookkeeping table; none when it does not exist yet.
async fn applied_versions<C: Conn>(conn: &mut C) -> anyhow::Result<Vec<String>>
where
    Version: diesel::QueryableByName<C::Backend>,
{
    match conn
        // raw SQL: diesel's own migration table (not in schema.rs)
        .load_sql::<Version>(&Sql::from("SELECT version FROM __diesel_schema_migrations"))
        .await
    {
        Ok(rows) => Ok(rows.into_iter().map(|r| r.version).collect()),
        Err(e) if is_missing_table(&e) => Ok(Vec::new()),
        Err(e) => Err(e).context("cannot read the applied migrations"),
    }
}

/// Whether `e` says a table does not exist (MySQL 1146, SQLite "no such table").
fn is_missing_table(e: &diesel::result::Error) -> bool {
    let text = e.to_string();
    text.contains("doesn't exist") || text.contains("no such table")
}

/// What to do while holding the lock.
#[derive(Debug, Clone, Copy)]
enum Task {
    Apply,
    RevertLast,
}

/// Takes the migration lock, does `task` on a connection of its own, releases the lock.
async fn locked(url: &str, task: Task) -> anyhow::Result<Vec<String>> {
    match DatabaseUrl::parse(url)? {
        DatabaseUrl::Mysql(url) => {
            let lock = connect_mysql(&url).await?;
            let work = connect_mysql(&url).await?;
            with_lock(lock, work, task, MYSQL_MIGRATIONS).await
        }
        DatabaseUrl::Sqlite(path) => {
            let lock = connect_sqlite(&path).await?;
            let work = connect_sqlite(&path).await?;
            with_lock(lock, work, task, SQLITE_MIGRATIONS).await
        }
    }
}

async fn with_lock<C>(
    mut lock: C,
    work: C,
    task: Task,
    migrations: EmbeddedMigrations,
) -> anyhow::Result<Vec<String>>
where
    C: Conn + 'static,
    diesel_async::AsyncMigrationHarness<C>: MigrationHarness<C::Backend>,
{
    let holder = holder_name();
    acquire(&mut lock, &holder).await?;
    let job = tokio::task::spawn_blocking(move || {
        let mut harness = diesel_async::AsyncMigrationHarness::new(work);
        let done: Result<Vec<String>, _> = match task {
            Task::Apply => harness
                .run_pending_migrations(migrations)
                .map(|versions| versions.iter().map(ToString::to_string).collect()),
            Task::RevertLast => harness
                .revert_last_migration(migrations)
                .map(|version| vec![version.to_string()]),
        };
        done.map_err(|e| anyhow::anyhow!("migration failed: {e}"))
    });
    tokio::pin!(job);
    // Keep the lock fresh while the migrations run (an index on a large table may take
    // minutes); a holder that dies stops refreshing and its lock expires.
    let outcome = loop {
        tokio::select! {
            done = &mut job => break done.context("migration task panicked").and_then(|r| r),
            () = tokio::time::sleep(LOCK_REFRESH) => {
                if let Err(e) = refresh(&mut lock, &holder).await {
                    tracing::warn!(error = %e, "cannot refresh the migration lock");
                }
            }
        }
    };
    if let Err(e) = release(&mut lock, &holder).await {
        tracing::warn!(error = %e, "cannot release the migration lock; it expires by itself");
    }
    outcome
}

/// A name for this holder in the lock row: host, process and a random part.
fn holder_name() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    let host: String = host.chars().take(40).collect();
    format!(
        "{host}:{}:{}",
        std::process::id(),
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ttl_ms() -> i64 {
    i64::try_from(LOCK_TTL.as_millis()).unwrap_or(i64::MAX)
}

/// Waits for the lock and takes it.
async fn acquire<C: Conn>(conn: &mut C, holder: &str) -> anyhow::Result<()> {
    // raw SQL: migration lock table: created by DDL text, outside schema.rs; its rows written the same way
    conn.batch_execute(CREATE_LOCK_TABLE)
        .await
        .context("cannot create the migration lock table")?;
    let give_up = Instant::now() + LOCK_WAIT;
    let mut waited = false;
    loop {
        let mut insert =
            Sql::from("INSERT INTO crm_migration_lock (id, holder, expires_ms) VALUES (1, ");
        insert
            .bind(Bind::Text(holder.to_owned()))
            .push(", ")
            .bind(Bind::I64(now_ms() + ttl_ms()))
            .push(")");
        match conn.execute_sql(&insert).await {
            Ok(_) => {
                if waited {
                    tracing::info!("took the migration lock");
                }
                return Ok(());
            }
            // Held (a duplicate key), or a concurrent taker won certification.
            Err(e) => tracing::debug!(error = %e, "the migration lock is held"),
        }
        // A holder that stopped refreshing is gone: take its row away.
        let mut stale = Sql::from("DELETE FROM crm_migration_lock WHERE id = 1 AND expires_ms < ");
        stale.bind(Bind::I64(now_ms()));
        if let Ok(n) = conn.execute_sql(&stale).await {
            if n > 0 {
                tracing::warn!("removed an expired migration lock (its holder died)");
                continue;
            }
        }
        if !waited {
            tracing::info!("another server is migrating the database; waiting for it");
            waited = true;
        }
        if Instant::now() >= give_up {
            bail!(
                "gave up after {} s waiting for the migration lock (table crm_migration_lock)",
                LOCK_WAIT.as_secs()
            );
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

async fn refresh<C: Conn>(conn: &mut C, holder: &str) -> anyhow::Result<()> {
    // raw SQL: migration lock table, outside schema.rs
    let mut sql = Sql::from("UPDATE crm_migration_lock SET expires_ms = ");
    sql.bind(Bind::I64(now_ms() + ttl_ms()))
        .push(" WHERE id = 1 AND holder = ")
        .bind(Bind::Text(holder.to_owned()));
    conn.execute_sql(&sql).await?;
    Ok(())
}

async fn release<C: Conn>(conn: &mut C, holder: &str) -> anyhow::Result<()> {
    // raw SQL: migration lock table, outside schema.rs
    let mut sql = Sql::from("DELETE FROM crm_migration_lock WHERE id = 1 AND holder = ");
    sql.bind(Bind::Text(holder.to_owned()));
    conn.execute_sql(&sql).await?;
    Ok(())
}

async fn connect_mysql(url: &str) -> anyhow::Result<AsyncMysqlConnection> {
    tokio::time::timeout(Duration::from_secs(10), super::connect_mysql_any(url))
        .await
        .context("timed out connecting to MySQL")?
        .with_context(|| format!("cannot connect to MySQL at {}", redact(url)))
}

async fn connect_sqlite(path: &str) -> anyhow::Result<SqliteConn> {
    let mut conn = SqliteConn::establish(path)
        .await
        .with_context(|| format!("cannot open SQLite database {path:?}"))?;
    let mut tries = 0;
    loop {
        // raw SQL: SQLite PRAGMAs
        match conn.batch_execute(SQLITE_PRAGMAS).await {
            // SQLite answers "locked" at once, without waiting out busy_timeout, while
            // another process turns a new file to WAL: try again shortly.
            Err(e) if super::sqlite_locked(&e) && tries < super::SQLITE_SETUP_TRIES => {
                tries += 1;
                tokio::time::sleep(super::SQLITE_SETUP_PAUSE).await;
            }
            done => {
                done.with_context(|| format!("cannot configure SQLite database {path:?}"))?;
                return Ok(conn);
            }
        }
    }
}

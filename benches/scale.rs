//! Scale benchmark (issue 9, item 4): the service's figures on a `seed-demo` dataset beside
//! baselines measured in the same run with the same driver the service uses (mysql_async
//! for MariaDB, diesel's sync `SqliteConnection` for SQLite), as ratios against targets.
//!
//! Run: `cargo bench --bench scale -- [--communications N] [--customers N]
//! [--db sqlite|mysql|both] [--json] [--runs N]` (see `Args` for the other settings and
//! their `CRM_BENCH_*` environment variables). MariaDB is `CRM_BENCH_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`).
//!
//! - The dataset is seeded once by the real binary (`crm-comms seed-demo`) into
//!   `crm_bench_scale_<N>_<C>` (MariaDB) or `<target>/bench-data/scale-<N>-<C>.db`
//!   (SQLite, or under `CRM_BENCH_DATA_DIR`) and reused when it holds the expected rows.
//! - Write paths run on a scratch database (a fresh `seed-demo` with 100 customers and no
//!   communications), dropped at the end; the dataset is only read, except by the
//!   `import` part, which imports into it and deletes those rows again (rollups rebuilt).
//! - StreamTimeline runs on a second reused database with one customer owning the first
//!   `--timeline-events` communications of the dataset, copied with `INSERT ... SELECT`.
//! - The server is the release `crm-comms serve` process; clients are the tonic clients.
//!   `CRM_BENCH_SERVER` names another build of it for the report, timeline, key-account
//!   and write figures (two builds compared in one sitting). The write figures also give
//!   the CPU time per row of each side (server, MariaDB when it runs on this machine, this
//!   process as the clients), read from `/proc`, and MariaDB's statements per call and
//!   calls per COMMIT.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike};
use common::{NewComm, Rng, Server};
use crm_comms::db::communications::CommunicationRow;
use crm_comms::db::schema::communications;
use crm_comms::pb::{
    self, analytics_service_client::AnalyticsServiceClient, communication::Details,
    communication_service_client::CommunicationServiceClient,
    customer_service_client::CustomerServiceClient,
};
use crm_comms::service::import::IMPORT_BATCH_ROWS;
use diesel::connection::DefaultLoadingMode;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};
use serde::Serialize;
use tonic::transport::Channel;

/// The release server binary under test.
const SERVER: &str = env!("CARGO_BIN_EXE_crm-comms");
/// Keywords of the content figure (one Chinese).
const KEYWORDS: [&str; 3] = ["refund", "退款", "invoice"];
/// 2025-01-01T00:00:00Z: start of the seeded year in UTC.
const YEAR_START: i64 = 1_735_689_600;
/// 2026-01-01T00:00:00Z: its end (exclusive).
const YEAR_END: i64 = 1_767_225_600;
/// UTC offset of Asia/Shanghai (+8:00), in seconds.
const SHANGHAI: i64 = 8 * 3600;
/// UTC offset of Asia/Kathmandu (+5:45), in seconds.
const KATHMANDU: i64 = 5 * 3600 + 45 * 60;
/// Rows per multi-row INSERT of the driver's import baseline.
const INSERT_BATCH: usize = 1000;
/// Requests per timed ListCommunications page (median taken).
const PAGE_REPEATS: usize = 20;
/// Page size of the ListCommunications walk.
const PAGE_SIZE: i32 = 100;
/// The deep page timed against page 1.
const DEEP_PAGE: usize = 1000;
/// Customers of the write-path scratch database.
const SCRATCH_CUSTOMERS: u32 = 100;
/// Every column of `communications`, in `CommunicationRow`'s order.
const COLUMNS: &str = "id, customer_id, channel, direction, occur_time, content, outcome, \
     phone_number, call_duration_us, email_address, email_subject, chat_platform, \
     chat_conversation_id, create_time, sentiment";
/// The columns a write sets (all but the id and the request id).
const INSERT_COLUMNS: &str = "customer_id, channel, direction, occur_time, content, outcome, \
     phone_number, call_duration_us, email_address, email_subject, chat_platform, \
     chat_conversation_id, create_time, sentiment";

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

/// Which databases to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Which {
    /// SQLite only.
    Sqlite,
    /// MariaDB only.
    Mysql,
    /// SQLite, then MariaDB.
    Both,
}

/// The settings: flags after `--`, else `CRM_BENCH_<NAME>` variables, else defaults.
#[derive(Debug, Clone, Serialize)]
struct Args {
    /// `--communications` / `CRM_BENCH_COMMUNICATIONS` (1,000,000).
    communications: u64,
    /// `--customers` / `CRM_BENCH_CUSTOMERS` (10,000).
    customers: u64,
    /// `--db` / `CRM_BENCH_DB` (both).
    db: Which,
    /// `--json` / `CRM_BENCH_JSON=1`: one JSON object on stdout, progress on stderr.
    json: bool,
    /// `--runs` / `CRM_BENCH_RUNS` (3): timed runs per figure, the median is shown.
    runs: usize,
    /// `--timeline-events` / `CRM_BENCH_TIMELINE_EVENTS` (1,000,000).
    timeline_events: u64,
    /// `--log-rows` / `CRM_BENCH_LOG_ROWS` (200): LogCommunication calls per client.
    log_rows: usize,
    /// `--log-clients` / `CRM_BENCH_LOG_CLIENTS` (32).
    log_clients: usize,
    /// `--import-rows` / `CRM_BENCH_IMPORT_ROWS` (100,000): items of one import stream.
    import_rows: usize,
    /// `--p99-calls` / `CRM_BENCH_P99_CALLS` (2,000): calls of each kind for the p99s.
    p99_calls: usize,
    /// `--p99-clients` / `CRM_BENCH_P99_CLIENTS` (16): concurrent clients for the p99s.
    p99_clients: usize,
    /// `--only` / `CRM_BENCH_ONLY`: a comma list of `reports`, `timeline`, `import`,
    /// `writes`, `service_levels`, `whale`, `watch` (every part when empty).
    only: String,
    /// `--whale-rows` / `CRM_BENCH_WHALE_ROWS` (5% of `communications`): about how many
    /// communications the key account of `--only whale` holds (every `k`-th row moves to
    /// it, `k` = communications / whale rows).
    whale_rows: u64,
    /// `--watchers` / `CRM_BENCH_WATCHERS` (500): open watches of `--only watch`.
    watchers: usize,
}

/// `--db`'s value.
fn parse_which(s: &str) -> Result<Which> {
    Ok(match s {
        "sqlite" => Which::Sqlite,
        "mysql" | "mariadb" => Which::Mysql,
        "both" | "" => Which::Both,
        other => bail!("--db must be sqlite, mysql or both (got {other})"),
    })
}

impl Args {
    /// Reads the environment, then the flags (`--bench`, passed by cargo, is skipped).
    fn parse() -> Result<Args> {
        let env = |n: &str, d: usize| common::env_usize(&format!("CRM_BENCH_{n}"), d);
        let mut a = Args {
            communications: env("COMMUNICATIONS", 1_000_000) as u64,
            customers: env("CUSTOMERS", 10_000) as u64,
            db: parse_which(&std::env::var("CRM_BENCH_DB").unwrap_or_default())?,
            json: std::env::var("CRM_BENCH_JSON").is_ok_and(|v| v == "1" || v == "true"),
            runs: env("RUNS", 3),
            timeline_events: env("TIMELINE_EVENTS", 1_000_000) as u64,
            log_rows: env("LOG_ROWS", 200),
            log_clients: env("LOG_CLIENTS", 32),
            import_rows: env("IMPORT_ROWS", 100_000),
            p99_calls: env("P99_CALLS", 2000),
            p99_clients: env("P99_CLIENTS", 16),
            only: std::env::var("CRM_BENCH_ONLY").unwrap_or_default(),
            whale_rows: env("WHALE_ROWS", 0) as u64,
            watchers: env("WATCHERS", 500),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--bench" {
                continue; // passed by `cargo bench`
            }
            if flag == "--json" {
                a.json = true;
                continue;
            }
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            let num = || -> Result<usize> {
                value
                    .replace(['_', ','], "")
                    .parse()
                    .with_context(|| format!("{flag}: not a number: {value}"))
            };
            match flag.as_str() {
                "--communications" => a.communications = num()? as u64,
                "--customers" => a.customers = num()? as u64,
                "--db" => a.db = parse_which(&value)?,
                "--runs" => a.runs = num()?,
                "--timeline-events" => a.timeline_events = num()? as u64,
                "--log-rows" => a.log_rows = num()?,
                "--log-clients" => a.log_clients = num()?,
                "--import-rows" => a.import_rows = num()?,
                "--p99-calls" => a.p99_calls = num()?,
                "--p99-clients" => a.p99_clients = num()?,
                "--only" => a.only = value.clone(),
                "--whale-rows" => a.whale_rows = num()? as u64,
                "--watchers" => a.watchers = num()?,
                other => bail!("unknown flag {other}"),
            }
        }
        a.runs = a.runs.max(1);
        a.log_clients = a.log_clients.max(1);
        a.p99_clients = a.p99_clients.max(1);
        if let Some(bad) = a.only.split(',').find(|p| {
            ![
                "",
                "reports",
                "timeline",
                "import",
                "writes",
                "service_levels",
                "whale",
                "watch",
            ]
            .contains(&p.trim())
        }) {
            bail!("--only: unknown part {bad} (reports, timeline, import, writes, service_levels, whale, watch)");
        }
        if a.communications == 0 || a.customers == 0 {
            bail!("--communications and --customers must be positive");
        }
        if a.whale_rows == 0 {
            a.whale_rows = (a.communications / 20).max(1);
        }
        Ok(a)
    }
}

// ---------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------

/// How a figure's ratio is read.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum RatioKind {
    /// Service speed / baseline speed (times: baseline time / service time); higher is
    /// better.
    Speed,
    /// Service value / baseline value (a time or a size); lower is better.
    Cost,
}

/// One measured figure with its baseline.
#[derive(Debug, Clone, Serialize)]
struct Figure {
    /// `SQLite` or `MariaDB`.
    db: &'static str,
    /// What the service did.
    figure: String,
    /// What the baseline did.
    baseline_is: String,
    /// Unit of `service` and `baseline`: `ms`, `rows/s`, `events/s` or `MB`.
    unit: &'static str,
    /// The service's value.
    service: f64,
    /// The baseline's value.
    baseline: f64,
    /// See `ratio_kind`.
    ratio: f64,
    /// How `ratio` is read.
    ratio_kind: RatioKind,
    /// At least this `Speed` or at most this `Cost` ratio; none when the brief sets none.
    target: Option<f64>,
    /// Whether the target is met.
    met: Option<bool>,
    /// Whether the service's figures equal the baseline's, where compared.
    same: Option<bool>,
    /// Anything else worth knowing about the figure.
    note: String,
}

impl Figure {
    #[allow(clippy::too_many_arguments)]
    fn new(
        db: &'static str,
        figure: impl Into<String>,
        baseline_is: impl Into<String>,
        unit: &'static str,
        service: f64,
        baseline: f64,
        kind: RatioKind,
        target: Option<f64>,
    ) -> Figure {
        let time_like = unit == "ms" || unit == "s";
        let ratio = match kind {
            RatioKind::Speed if time_like => baseline / service,
            RatioKind::Speed => service / baseline,
            RatioKind::Cost => service / baseline,
        };
        let met = target.map(|t| match kind {
            RatioKind::Speed => ratio >= t,
            RatioKind::Cost => ratio <= t,
        });
        Figure {
            db,
            figure: figure.into(),
            baseline_is: baseline_is.into(),
            unit,
            service,
            baseline,
            ratio,
            ratio_kind: kind,
            target,
            met,
            same: None,
            note: String::new(),
        }
    }

    /// Records whether the service's numbers equal the baseline's.
    fn same(mut self, same: bool) -> Figure {
        self.same = Some(same);
        self
    }

    /// Adds a note printed under the table.
    fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = note.into();
        self
    }
}

/// Milliseconds of `d`.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Progress on stderr (stdout is the table or the JSON object).
macro_rules! say {
    ($($t:tt)*) => { eprintln!($($t)*) };
}

#[path = "scale_parts/service_levels.rs"]
mod service_levels;
#[path = "scale_parts/watch.rs"]
mod watch;
#[path = "scale_parts/whale.rs"]
mod whale;

/// The median duration of `runs` runs of `f`, and the last run's value.
async fn timed<T, F: std::future::Future<Output = Result<T>>>(
    runs: usize,
    mut f: impl FnMut() -> F,
) -> Result<(Duration, T)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t0 = Instant::now();
        last = Some(f().await?);
        times.push(t0.elapsed());
    }
    Ok((
        common::median_by_key(times, |t| *t),
        last.context("no run")?,
    ))
}

/// The median of `v` (the upper middle one for an even count).
fn median_f64(v: Vec<f64>) -> f64 {
    common::median_by_key(v, |x| (x * 1e6) as i64)
}

/// The `p` quantile (0..1, nearest rank) of `v`.
fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let idx = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx]
}

// ---------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------

/// How long a server may take to start (migrations and any rollup build run first).
const STARTUP: Duration = Duration::from_secs(60);

/// `crm-comms seed-demo` into `url` (output to stderr).
fn seed_demo(url: &str, customers: u64, communications: u64) -> Result<()> {
    say!("seeding {url}: {customers} customers, {communications} communications");
    let status = Command::new(SERVER)
        .args([
            "seed-demo",
            "--customers",
            &customers.to_string(),
            "--communications",
            &communications.to_string(),
            "--seed",
            "42",
            "--end",
            "2026-01-01T00:00:00Z",
            "--days",
            "365",
            "--database-url",
            url,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .context("spawn seed-demo")?;
    if !status.success() {
        bail!("seed-demo failed: {status}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The driver (baselines)
// ---------------------------------------------------------------------------------------

/// A `(text key, count)` row.
#[derive(QueryableByName)]
struct KeyCount {
    #[diesel(sql_type = Text)]
    k: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// An `(id, count)` row.
#[derive(QueryableByName)]
struct IdCount {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Three nullable counts.
#[derive(QueryableByName)]
struct Three {
    #[diesel(sql_type = Nullable<BigInt>)]
    a: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    b: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    c: Option<i64>,
}

/// One count.
#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// One text value.
#[derive(QueryableByName)]
struct OneText {
    #[diesel(sql_type = Text)]
    t: String,
}

/// A database reached by the driver the service uses on it.
#[derive(Clone)]
enum Driver {
    /// mysql_async, with the database's URL.
    Mysql(String),
    /// diesel's sync `SqliteConnection`, with the file's path.
    Sqlite(String),
}

/// A SQLite connection that waits for the write lock instead of failing `BUSY`.
fn sqlite_conn(path: &str) -> Result<SqliteConnection> {
    let mut c = SqliteConnection::establish(path)?;
    diesel::sql_query("PRAGMA busy_timeout = 30000").execute(&mut c)?;
    Ok(c)
}

/// A MySQL `DATETIME(6)` parameter.
fn my_time(t: NaiveDateTime) -> Value {
    Value::Date(
        t.year() as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.and_utc().timestamp_subsec_micros(),
    )
}

/// A time in the text form both databases return (`%F %T%.f`).
fn parse_time(s: &str) -> Result<NaiveDateTime> {
    Ok(NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")?)
}

/// The parameters of one row of [`insert_sql`], in `INSERT_COLUMNS` order.
fn my_params(r: &NewComm) -> Vec<Value> {
    vec![
        r.customer_id.into(),
        r.channel.into(),
        r.direction.into(),
        my_time(r.occur_time),
        r.content.clone().into(),
        r.outcome.clone().into(),
        r.phone_number.clone().into(),
        r.call_duration_us.into(),
        r.email_address.clone().into(),
        r.email_subject.clone().into(),
        r.chat_platform.clone().into(),
        r.chat_conversation_id.clone().into(),
        my_time(r.create_time),
        r.sentiment.into(),
    ]
}

/// A MySQL `INSERT` of `rows` rows, every value a placeholder.
fn insert_sql(rows: usize) -> String {
    let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    format!(
        "INSERT INTO communications ({INSERT_COLUMNS}) VALUES {}",
        vec![one; rows].join(", ")
    )
}

/// A `DATETIME` from the text protocol.
fn from_my_time(v: Value) -> Result<NaiveDateTime> {
    match v {
        Value::Bytes(b) => parse_time(std::str::from_utf8(&b)?),
        Value::Date(y, mo, d, h, mi, s, us) => {
            NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into())
                .and_then(|d| d.and_hms_micro_opt(h.into(), mi.into(), s.into(), us))
                .context("bad DATETIME")
        }
        other => bail!("unexpected DATETIME value {other:?}"),
    }
}

/// Decodes a row of `COLUMNS` into the server's row type.
fn my_row(mut r: mysql_async::Row) -> Result<CommunicationRow> {
    Ok(CommunicationRow {
        id: r.take(0).context("id")?,
        customer_id: r.take(1).context("customer_id")?,
        channel: r.take(2).context("channel")?,
        direction: r.take(3).context("direction")?,
        occur_time: from_my_time(r.take(4).context("occur_time")?)?,
        content: r.take(5).context("content")?,
        outcome: r.take(6).context("outcome")?,
        phone_number: r.take(7).context("phone_number")?,
        call_duration_us: r.take(8).context("call_duration_us")?,
        email_address: r.take(9).context("email_address")?,
        email_subject: r.take(10).context("email_subject")?,
        chat_platform: r.take(11).context("chat_platform")?,
        chat_conversation_id: r.take(12).context("chat_conversation_id")?,
        create_time: from_my_time(r.take(13).context("create_time")?)?,
        sentiment: r.take(14).context("sentiment")?,
    })
}

impl Driver {
    /// `(text key, count)` rows of a GROUP BY.
    async fn key_counts(&self, mysql: &str, sqlite: &str) -> Result<Vec<(String, i64)>> {
        match self {
            Driver::Mysql(url) => {
                let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
                let rows: Vec<(String, i64)> = c.query(mysql).await?;
                c.disconnect().await?;
                Ok(rows)
            }
            Driver::Sqlite(path) => {
                let (path, sql) = (path.clone(), sqlite.to_owned());
                tokio::task::spawn_blocking(move || {
                    let rows: Vec<KeyCount> =
                        diesel::sql_query(sql).load(&mut sqlite_conn(&path)?)?;
                    Ok(rows.into_iter().map(|r| (r.k, r.n)).collect())
                })
                .await?
            }
        }
    }

    /// `(id, count)` rows of a GROUP BY.
    async fn id_counts(&self, sql: &str) -> Result<Vec<(i64, i64)>> {
        match self {
            Driver::Mysql(url) => {
                let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
                let rows: Vec<(i64, i64)> = c.query(sql).await?;
                c.disconnect().await?;
                Ok(rows)
            }
            Driver::Sqlite(path) => {
                let (path, sql) = (path.clone(), sql.to_owned());
                tokio::task::spawn_blocking(move || {
                    let rows: Vec<IdCount> =
                        diesel::sql_query(sql).load(&mut sqlite_conn(&path)?)?;
                    Ok(rows.into_iter().map(|r| (r.id, r.n)).collect())
                })
                .await?
            }
        }
    }

    /// One integer.
    async fn count(&self, sql: &str) -> Result<i64> {
        match self {
            Driver::Mysql(url) => {
                let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
                let n: Option<i64> = c.query_first(sql).await?;
                c.disconnect().await?;
                n.context("no row")
            }
            Driver::Sqlite(path) => {
                let (path, sql) = (path.clone(), sql.to_owned());
                tokio::task::spawn_blocking(move || {
                    let r: One = diesel::sql_query(sql).get_result(&mut sqlite_conn(&path)?)?;
                    Ok(r.n)
                })
                .await?
            }
        }
    }

    /// Runs one statement that returns no rows.
    async fn execute(&self, sql: &str) -> Result<()> {
        match self {
            Driver::Mysql(url) => {
                let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
                c.query_drop(sql).await?;
                c.disconnect().await?;
                Ok(())
            }
            Driver::Sqlite(path) => {
                let (path, sql) = (path.clone(), sql.to_owned());
                tokio::task::spawn_blocking(move || {
                    diesel::sql_query(sql).execute(&mut sqlite_conn(&path)?)?;
                    Ok(())
                })
                .await?
            }
        }
    }

    /// The three keywords' LIKE counts over the UTC year.
    async fn keyword_counts(&self) -> Result<Vec<i64>> {
        let range = "occur_time >= '2025-01-01 00:00:00' AND occur_time < '2026-01-01 00:00:00'";
        match self {
            Driver::Mysql(url) => {
                let sums: Vec<String> = KEYWORDS
                    .iter()
                    .map(|k| format!("CAST(SUM(content LIKE '%{k}%') AS SIGNED)"))
                    .collect();
                let sql = format!(
                    "SELECT {} FROM communications WHERE {range}",
                    sums.join(", ")
                );
                let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
                let r: Option<(Option<i64>, Option<i64>, Option<i64>)> = c.query_first(sql).await?;
                c.disconnect().await?;
                let (a, b, cc) = r.context("no row")?;
                Ok(vec![a.unwrap_or(0), b.unwrap_or(0), cc.unwrap_or(0)])
            }
            Driver::Sqlite(path) => {
                let sql = format!(
                    "SELECT SUM(content LIKE '%{}%') AS a, SUM(content LIKE '%{}%') AS b, \
                     SUM(content LIKE '%{}%') AS c FROM communications WHERE {range}",
                    KEYWORDS[0], KEYWORDS[1], KEYWORDS[2]
                );
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let r: Three = diesel::sql_query(sql).get_result(&mut sqlite_conn(&path)?)?;
                    Ok(vec![r.a.unwrap_or(0), r.b.unwrap_or(0), r.c.unwrap_or(0)])
                })
                .await?
            }
        }
    }

    /// Every customer id.
    async fn customer_ids(&self) -> Result<Vec<i64>> {
        let sql = "SELECT id, 0 AS n FROM customers ORDER BY id";
        Ok(self
            .id_counts(sql)
            .await?
            .into_iter()
            .map(|r| r.0)
            .collect())
    }

    /// The `occur_time` of `customer_id`'s entry at position `offset` (0-based) in
    /// timeline order.
    async fn time_at(&self, customer_id: i64, offset: u64) -> Result<NaiveDateTime> {
        match self {
            Driver::Mysql(url) => {
                let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
                let t: Option<String> = c
                    .query_first(format!(
                        "SELECT CAST(occur_time AS CHAR) FROM communications WHERE \
                         customer_id = {customer_id} ORDER BY occur_time, id LIMIT 1 OFFSET {offset}"
                    ))
                    .await?;
                c.disconnect().await?;
                parse_time(&t.context("no row at offset")?)
            }
            Driver::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let r: OneText = diesel::sql_query(format!(
                        "SELECT occur_time AS t FROM communications WHERE customer_id = \
                         {customer_id} ORDER BY occur_time, id LIMIT 1 OFFSET {offset}"
                    ))
                    .get_result(&mut sqlite_conn(&path)?)?;
                    parse_time(&r.t)
                })
                .await?
            }
        }
    }

    /// Reads every row of `customer_id` in timeline order with one streamed query
    /// (mysql_async `query_iter`, diesel `load_iter`), decoded into the server's row type.
    async fn read_timeline(&self, customer_id: i64) -> Result<u64> {
        let sql = format!(
            "SELECT {COLUMNS} FROM communications WHERE customer_id = {customer_id} \
             ORDER BY occur_time, id"
        );
        match self {
            Driver::Mysql(url) => {
                let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
                let mut n = 0u64;
                let mut error = None;
                let mut result = c.query_iter(sql).await?;
                result
                    .for_each(|row| match my_row(row) {
                        Ok(_) => n += 1,
                        Err(e) => error = Some(e),
                    })
                    .await?;
                drop(result);
                c.disconnect().await?;
                match error {
                    Some(e) => Err(e),
                    None => Ok(n),
                }
            }
            Driver::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    use communications::dsl as c;
                    let mut conn = sqlite_conn(&path)?;
                    let mut n = 0u64;
                    for row in c::communications
                        .select(CommunicationRow::as_select())
                        .filter(c::customer_id.eq(customer_id))
                        .order((c::occur_time.asc(), c::id.asc()))
                        .load_iter::<CommunicationRow, DefaultLoadingMode>(&mut conn)?
                    {
                        row?;
                        n += 1;
                    }
                    Ok(n)
                })
                .await?
            }
        }
    }

    /// `clients` concurrent writers, each inserting its rows one statement at a time
    /// (autocommit). Returns the elapsed time.
    async fn single_inserts(&self, per_client: Vec<Vec<NewComm>>) -> Result<Duration> {
        let started = Instant::now();
        match self {
            Driver::Mysql(url) => {
                let mut conns = Vec::new();
                for _ in &per_client {
                    conns.push(mysql_async::Conn::from_url(url.as_str()).await?);
                }
                let started = Instant::now();
                let mut tasks = Vec::new();
                for (mut c, rows) in conns.into_iter().zip(per_client) {
                    tasks.push(tokio::spawn(async move {
                        let stmt = c.prep(insert_sql(1)).await?;
                        for r in &rows {
                            c.exec_drop(&stmt, Params::Positional(my_params(r))).await?;
                        }
                        c.disconnect().await?;
                        anyhow::Ok(())
                    }));
                }
                for t in tasks {
                    t.await??;
                }
                Ok(started.elapsed())
            }
            Driver::Sqlite(path) => {
                let mut tasks = Vec::new();
                for rows in per_client {
                    let path = path.clone();
                    tasks.push(tokio::task::spawn_blocking(move || {
                        let mut conn = sqlite_conn(&path)?;
                        for r in &rows {
                            diesel::insert_into(communications::table)
                                .values(r)
                                .execute(&mut conn)?;
                        }
                        anyhow::Ok(())
                    }));
                }
                for t in tasks {
                    t.await??;
                }
                Ok(started.elapsed())
            }
        }
    }

    /// Multi-row INSERTs of `INSERT_BATCH` rows each (autocommit). Returns the elapsed
    /// time.
    async fn batch_inserts(&self, rows: Vec<NewComm>) -> Result<Duration> {
        match self {
            Driver::Mysql(url) => {
                let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
                let full = c.prep(insert_sql(INSERT_BATCH)).await?;
                let started = Instant::now();
                for chunk in rows.chunks(INSERT_BATCH) {
                    let params: Vec<Value> = chunk.iter().flat_map(my_params).collect();
                    if chunk.len() == INSERT_BATCH {
                        c.exec_drop(&full, Params::Positional(params)).await?;
                    } else {
                        c.exec_drop(insert_sql(chunk.len()), Params::Positional(params))
                            .await?;
                    }
                }
                let elapsed = started.elapsed();
                c.disconnect().await?;
                Ok(elapsed)
            }
            Driver::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let mut conn = sqlite_conn(&path)?;
                    let started = Instant::now();
                    for chunk in rows.chunks(INSERT_BATCH) {
                        diesel::insert_into(communications::table)
                            .values(chunk)
                            .execute(&mut conn)?;
                    }
                    Ok(started.elapsed())
                })
                .await?
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Generated rows for the write paths
// ---------------------------------------------------------------------------------------

/// Content templates of the written rows (`{n}`: an order number).
const CONTENTS: [&str; 4] = [
    "客户来电询问订单 {n} 的退款进度, asked whether the refund was sent; 已答复三天内到账。",
    "Sent the invoice for order {n} again; 客户表示下周确认采购数量。",
    "微信沟通: customer reports the app crashes on login, 已转技术支持 ticket {n}.",
    "Outbound call about overdue invoice {n}, customer promised payment by Friday 周五前付款.",
];

/// A random communication of one of `customers` in 2025, every channel with its details.
fn gen_comm(rng: &mut Rng, customers: &[i64]) -> NewComm {
    let i = rng.next();
    let channel = (i % 5) as i32 + 1;
    let secs = YEAR_START + (rng.next() % (YEAR_END - YEAR_START) as u64) as i64;
    let micros = (rng.next() % 1_000_000) as u32;
    let occur_time = DateTime::from_timestamp(secs, micros * 1000)
        .expect("time in range")
        .naive_utc();
    let mut r = NewComm {
        customer_id: rng.pick(customers),
        channel,
        direction: ((i / 5) % 2) as i32 + 1,
        occur_time,
        content: CONTENTS[(i / 10 % 4) as usize].replace("{n}", &format!("SO-{}", i % 1_000_000)),
        outcome: if i % 3 == 0 {
            "resolved 已解决".into()
        } else {
            String::new()
        },
        phone_number: None,
        call_duration_us: None,
        email_address: None,
        email_subject: None,
        chat_platform: None,
        chat_conversation_id: None,
        create_time: occur_time,
        sentiment: None,
    };
    r.sentiment = Some(crm_comms::analytics::sentiment::score(&r.content));
    match channel {
        1 => {
            r.phone_number = Some(format!("+86138{:08}", i % 100_000_000));
            r.call_duration_us = Some((30 + (i % 600) as i64) * 1_000_000);
        }
        2 => {
            r.email_address = Some("zhang.wei@example.com".into());
            r.email_subject = Some(format!("Re: 订单 {} invoice 发票", i % 100_000));
        }
        3 => {
            r.chat_platform = Some("wechat".into());
            r.chat_conversation_id = Some(format!("conv-{}", i % 1000));
        }
        _ => {}
    }
    r
}

/// The API form of `r`, as a client sends it.
fn to_pb(r: &NewComm) -> pb::Communication {
    let t = r.occur_time.and_utc();
    let details = match r.channel {
        1 => Some(Details::PhoneCall(pb::PhoneCall {
            phone_number: r.phone_number.clone().unwrap_or_default(),
            duration: r.call_duration_us.map(|us| prost_types::Duration {
                seconds: us / 1_000_000,
                nanos: 0,
            }),
        })),
        2 => Some(Details::Email(pb::Email {
            address: r.email_address.clone().unwrap_or_default(),
            subject: r.email_subject.clone().unwrap_or_default(),
        })),
        3 => Some(Details::Chat(pb::Chat {
            platform: r.chat_platform.clone().unwrap_or_default(),
            conversation_id: r.chat_conversation_id.clone().unwrap_or_default(),
        })),
        _ => None,
    };
    pb::Communication {
        customer_id: r.customer_id,
        channel: r.channel,
        direction: r.direction,
        occur_time: Some(common::timestamp(
            t.timestamp(),
            t.timestamp_subsec_nanos() as i32,
        )),
        content: r.content.clone(),
        outcome: r.outcome.clone(),
        details,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------

/// Where one backend's measurements run.
struct Target {
    /// `SQLite` or `MariaDB`.
    db: &'static str,
    /// The dataset, its URL and its driver.
    url: String,
    driver: Driver,
    /// The reused timeline database, its driver and the customer owning the events.
    timeline_url: String,
    timeline_driver: Driver,
    timeline_customer: i64,
    /// The scratch database for the write paths, and its driver.
    scratch_url: String,
    scratch_driver: Driver,
}

/// A frequency report request over `start..end` (Unix seconds), every customer.
fn freq_request(
    start: i64,
    end: i64,
    gran: pb::Granularity,
    zone: &str,
) -> pb::GetFrequencyReportRequest {
    pb::GetFrequencyReportRequest {
        start_time: Some(common::timestamp(start, 0)),
        end_time: Some(common::timestamp(end, 0)),
        granularity: gran as i32,
        time_zone: zone.into(),
        ..Default::default()
    }
}

/// The non-empty buckets of a report as `(local key, count)`, keyed as the baseline
/// SQL formats its groups (`fmt` of the bucket start shifted by `offset` seconds).
fn bucket_keys(r: &pb::GetFrequencyReportResponse, offset: i64, fmt: &str) -> Vec<(String, i64)> {
    r.buckets
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| {
            let s = b.start_time.map_or(0, |t| t.seconds) + offset;
            let key = DateTime::from_timestamp(s, 0)
                .map_or_else(String::new, |t| t.format(fmt).to_string());
            (key, b.count)
        })
        .collect()
}

/// The report figures, ListCommunications and the p99s, on a server over the dataset.
async fn measure_reports(t: &Target, args: &Args, out: &mut Vec<Figure>) -> Result<()> {
    let runs = args.runs;
    let server = Server::start(&server_under_test(), &t.url, STARTUP).await?;
    let channel = server.channel().await?;
    let analytics = AnalyticsServiceClient::new(channel.clone())
        .max_decoding_message_size(common::MAX_MESSAGE_BYTES);
    // `Server::start` waited for the index unless it is off (CRM_CONTENT_INDEX=false:
    // every report then reads the rollups and the base table).
    let index_ready = server
        .log_lines("content index ready")
        .into_iter()
        .next()
        .unwrap_or_else(|| "content index off".to_owned());
    say!("  {}", index_ready.trim());

    // Frequency, daily in Shanghai and hourly in Kathmandu, over the zone's year 2025.
    // Reports on every customer, timed again under load below.
    let mut under_load: Vec<(String, Report, f64)> = Vec::new();
    for (zone, offset, gran, fmt, mysql_key, sqlite_key, label) in [
        (
            "Asia/Shanghai",
            SHANGHAI,
            pb::Granularity::Day,
            "%Y-%m-%d",
            "CAST(DATE(occur_time + INTERVAL 8 HOUR) AS CHAR)",
            "date(occur_time, '+8 hours')",
            "GetFrequencyReport all customers, 1 year, daily, Asia/Shanghai",
        ),
        (
            "Asia/Kathmandu",
            KATHMANDU,
            pb::Granularity::Hour,
            "%Y-%m-%d %H",
            "DATE_FORMAT(occur_time + INTERVAL 345 MINUTE, '%Y-%m-%d %H')",
            "strftime('%Y-%m-%d %H', occur_time, '+345 minutes')",
            "GetFrequencyReport all customers, 1 year, hourly, Asia/Kathmandu",
        ),
    ] {
        let (start, end) = (YEAR_START - offset, YEAR_END - offset);
        let fmt_utc = |s: i64| {
            DateTime::from_timestamp(s, 0)
                .expect("time")
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        };
        let range = format!(
            "occur_time >= '{}' AND occur_time < '{}'",
            fmt_utc(start),
            fmt_utc(end)
        );
        let req = freq_request(start, end, gran, zone);
        let (service, report) = timed(runs, || {
            let mut c = analytics.clone();
            let req = req.clone();
            async move { Ok(c.get_frequency_report(req).await?.into_inner()) }
        })
        .await?;
        let group = |key: &str| {
            format!(
                "SELECT {key} AS k, COUNT(*) AS n FROM communications WHERE {range} \
                 GROUP BY k ORDER BY k"
            )
        };
        let (mq, sq) = (group(mysql_key), group(sqlite_key));
        let (baseline, rows) = timed(runs, || t.driver.key_counts(&mq, &sq)).await?;
        let got = bucket_keys(&report, offset, fmt);
        let same = got == rows;
        under_load.push((
            label.to_owned(),
            Report::Frequency(req.clone()),
            ms(service),
        ));
        say!(
            "  {}: service {:.1} ms ({} buckets, total {}), GROUP BY {:.1} ms ({} groups), same: {same}",
            label,
            ms(service),
            got.len(),
            report.total_count,
            ms(baseline),
            rows.len()
        );
        out.push(
            Figure::new(
                t.db,
                label,
                "GROUP BY local day/hour on the base table",
                "ms",
                ms(service),
                ms(baseline),
                RatioKind::Speed,
                Some(50.0),
            )
            .same(same),
        );
    }

    // Top 10 customers over the UTC year.
    let mut req = freq_request(YEAR_START, YEAR_END, pb::Granularity::Month, "UTC");
    req.top_n = 10;
    let (service, report) = timed(runs, || {
        let mut c = analytics.clone();
        let req = req.clone();
        async move { Ok(c.get_frequency_report(req).await?.into_inner()) }
    })
    .await?;
    let sql = "SELECT customer_id AS id, COUNT(*) AS n FROM communications \
               WHERE occur_time >= '2025-01-01 00:00:00' AND occur_time < '2026-01-01 00:00:00' \
               GROUP BY customer_id ORDER BY n DESC, customer_id LIMIT 10";
    let (baseline, rows) = timed(runs, || t.driver.id_counts(sql)).await?;
    let got: Vec<(i64, i64)> = report
        .top_customers
        .iter()
        .map(|c| (c.customer_id, c.count))
        .collect();
    // The report's distinct customers too (not timed).
    let customers = t
        .driver
        .count(
            "SELECT COUNT(DISTINCT customer_id) AS n FROM communications \
             WHERE occur_time >= '2025-01-01 00:00:00' AND occur_time < '2026-01-01 00:00:00'",
        )
        .await?;
    let same = got == rows && report.customer_count == customers;
    say!(
        "  top-10: service {:.1} ms {got:?} of {} customers, GROUP BY {:.1} ms {rows:?} of \
         {customers} (COUNT DISTINCT), same: {same}",
        ms(service),
        report.customer_count,
        ms(baseline)
    );
    out.push(
        Figure::new(
            t.db,
            "GetFrequencyReport top_n=10, all customers, 1 year (monthly, UTC)",
            "GROUP BY customer_id ORDER BY n DESC LIMIT 10",
            "ms",
            ms(service),
            ms(baseline),
            RatioKind::Speed,
            Some(5.0),
        )
        .same(same),
    );

    // Keyword counts over the UTC year.
    let req = pb::GetContentReportRequest {
        start_time: Some(common::timestamp(YEAR_START, 0)),
        end_time: Some(common::timestamp(YEAR_END, 0)),
        keywords: KEYWORDS.iter().map(|k| (*k).to_owned()).collect(),
        ..Default::default()
    };
    let (service, report) = timed(runs, || {
        let mut c = analytics.clone();
        let req = req.clone();
        async move { Ok(c.get_content_report(req).await?.into_inner()) }
    })
    .await?;
    under_load.push((
        "GetContentReport 3 keyword counts".to_owned(),
        Report::Content(req.clone()),
        ms(service),
    ));
    let (baseline, counts) = timed(runs, || t.driver.keyword_counts()).await?;
    let got: Vec<i64> = report.keywords.iter().map(|m| m.message_count).collect();
    let same = got == counts;
    say!(
        "  content: service {:.1} ms {got:?} (scanned {}), LIKE {:.1} ms {counts:?}, same: {same}",
        ms(service),
        report.scanned_count,
        ms(baseline)
    );
    out.push(
        Figure::new(
            t.db,
            "GetContentReport 3 keyword counts (refund, 退款, invoice), 1 year",
            "SUM(content LIKE '%kw%') x3 on the base table",
            "ms",
            ms(service),
            ms(baseline),
            RatioKind::Speed,
            Some(5.0),
        )
        .same(same)
        .note("top_terms 0, sample_limit 0; from the content index"),
    );

    // Top terms: the index against the scan it replaces (the same service with
    // CRM_CONTENT_INDEX=false, one run: it tokenizes every row of the year).
    let req = pb::GetContentReportRequest {
        start_time: Some(common::timestamp(YEAR_START, 0)),
        end_time: Some(common::timestamp(YEAR_END, 0)),
        top_terms: 20,
        ..Default::default()
    };
    let (service, indexed) = timed(runs, || {
        let mut c = analytics.clone();
        let req = req.clone();
        async move { Ok(c.get_content_report(req).await?.into_inner()) }
    })
    .await?;
    under_load.push((
        "GetContentReport top 20 terms".to_owned(),
        Report::Content(req.clone()),
        ms(service),
    ));
    let index_mb = server.peak_mb()?;
    let scanner = Server::start_with(
        &server_under_test(),
        &t.url,
        STARTUP,
        &[("CRM_CONTENT_INDEX", "false")],
    )
    .await?;
    let scanning = AnalyticsServiceClient::new(scanner.channel().await?)
        .max_decoding_message_size(common::MAX_MESSAGE_BYTES);
    let (baseline, scanned) = timed(1, || {
        let mut c = scanning.clone();
        let req = req.clone();
        async move { Ok(c.get_content_report(req).await?.into_inner()) }
    })
    .await?;
    let scan_mb = scanner.peak_mb()?;
    drop(scanner);
    let same =
        indexed.top_terms == scanned.top_terms && indexed.scanned_count == scanned.scanned_count;
    say!(
        "  top terms: index {:.1} ms, scan {:.1} ms, same: {same}; peak RSS {index_mb:.0} MB with the index, {scan_mb:.0} MB without",
        ms(service),
        ms(baseline)
    );
    out.push(
        Figure::new(
            t.db,
            "GetContentReport top 20 terms, 1 year",
            "the same report scanning the rows (CRM_CONTENT_INDEX=false), 1 run",
            "ms",
            ms(service),
            ms(baseline),
            RatioKind::Speed,
            None,
        )
        .same(same),
    );
    out.push(
        Figure::new(
            t.db,
            "server peak RSS with the content index loaded",
            "server peak RSS without it, after the scanned top-terms report",
            "MB",
            index_mb,
            scan_mb,
            RatioKind::Cost,
            None,
        )
        .note(index_ready.trim().to_owned()),
    );

    // p99 of a one-customer report vs GetCustomer at the same concurrency.
    let ids = t.driver.customer_ids().await?;
    let customers = CustomerServiceClient::new(channel.clone());
    let mut freq_p99 = Vec::new();
    let mut get_p99 = Vec::new();
    let mut freq_p50 = Vec::new();
    let mut get_p50 = Vec::new();
    for run in 0..runs {
        for kind in [false, true] {
            let (a0, c0) = (analytics.clone(), customers.clone());
            let lat = load(args, args.p99_calls, &ids, run as u64, move |id| {
                let mut a = a0.clone();
                let mut c = c0.clone();
                async move {
                    if kind {
                        let mut r = freq_request(
                            YEAR_START - SHANGHAI,
                            YEAR_END - SHANGHAI,
                            pb::Granularity::Day,
                            "Asia/Shanghai",
                        );
                        r.customer_ids = vec![id];
                        a.get_frequency_report(r).await?;
                    } else {
                        c.get_customer(pb::GetCustomerRequest { id }).await?;
                    }
                    Ok(())
                }
            })
            .await?;
            let (p99, p50) = (percentile(lat.clone(), 0.99), percentile(lat, 0.5));
            if kind {
                freq_p99.push(ms(p99));
                freq_p50.push(ms(p50));
            } else {
                get_p99.push(ms(p99));
                get_p50.push(ms(p50));
            }
        }
    }
    let (fp, gp) = (median_f64(freq_p99), median_f64(get_p99));
    let (f50, g50) = (median_f64(freq_p50), median_f64(get_p50));
    say!("  p99: one-customer report {fp:.2} ms (p50 {f50:.2}), GetCustomer {gp:.2} ms (p50 {g50:.2})");
    out.push(
        Figure::new(
            t.db,
            format!(
                "GetFrequencyReport one customer, 1 year, daily: p99 at {} clients",
                args.p99_clients
            ),
            "GetCustomer p99 at the same load",
            "ms",
            fp,
            gp,
            RatioKind::Cost,
            Some(3.0),
        )
        .note(format!(
            "{} calls of each kind, random customers; p50 {f50:.2} vs {g50:.2} ms",
            args.p99_calls
        )),
    );

    // The reports on every customer above (frequency and content) under the same load:
    // a quarter of the calls (each reads every customer), against the same report one
    // call at a time.
    let calls = (args.p99_calls / 4).max(args.p99_clients);
    for (label, report, alone) in under_load {
        let (mut p99, mut p50) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let (a0, report) = (analytics.clone(), report.clone());
            let lat = load(args, calls, &ids, run as u64, move |_| {
                let (a, report) = (a0.clone(), report.clone());
                async move { report.call(a).await }
            })
            .await?;
            p99.push(ms(percentile(lat.clone(), 0.99)));
            p50.push(ms(percentile(lat, 0.5)));
        }
        let (p99, p50) = (median_f64(p99), median_f64(p50));
        say!(
            "  p99 at {} clients: {label} {p99:.2} ms (p50 {p50:.2})",
            args.p99_clients
        );
        out.push(
            Figure::new(
                t.db,
                format!("{label}: p99 at {} clients", args.p99_clients),
                "the same report's median, one call at a time",
                "ms",
                p99,
                alone,
                RatioKind::Cost,
                None,
            )
            .note(format!("{calls} calls; p50 {p50:.2} ms")),
        );
    }

    // ListCommunications page 1,000 vs page 1.
    let comms = CommunicationServiceClient::new(channel.clone())
        .max_decoding_message_size(common::MAX_MESSAGE_BYTES);
    let page = |token: String| {
        let mut c = comms.clone();
        async move {
            let t0 = Instant::now();
            let r = c
                .list_communications(pb::ListCommunicationsRequest {
                    page_size: PAGE_SIZE,
                    page_token: token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            anyhow::Ok((t0.elapsed(), r))
        }
    };
    let mut first = Vec::new();
    for _ in 0..PAGE_REPEATS {
        first.push(page(String::new()).await?.0);
    }
    let mut token = String::new();
    let mut reached = 1;
    for p in 1..DEEP_PAGE {
        let (_, r) = page(token.clone()).await?;
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
        reached = p + 1;
    }
    let mut deep = Vec::new();
    for _ in 0..PAGE_REPEATS {
        deep.push(page(token.clone()).await?.0);
    }
    let (p1, pd) = (
        ms(common::median_by_key(first, |d| *d)),
        ms(common::median_by_key(deep, |d| *d)),
    );
    say!("  ListCommunications: page 1 {p1:.2} ms, page {reached} {pd:.2} ms");
    out.push(
        Figure::new(
            t.db,
            format!("ListCommunications page {reached} (page_size {PAGE_SIZE}, all customers)"),
            "page 1",
            "ms",
            pd,
            p1,
            RatioKind::Cost,
            Some(1.5),
        )
        .note(format!("median of {PAGE_REPEATS} requests of each page")),
    );
    drop(server);
    Ok(())
}

/// A report request timed under load.
#[derive(Clone)]
enum Report {
    Frequency(pb::GetFrequencyReportRequest),
    Content(pb::GetContentReportRequest),
}

impl Report {
    async fn call(self, mut a: AnalyticsServiceClient<Channel>) -> Result<()> {
        match self {
            Report::Frequency(req) => drop(a.get_frequency_report(req).await?),
            Report::Content(req) => drop(a.get_content_report(req).await?),
        }
        Ok(())
    }
}

/// `calls` calls of `call` (random customers) from `args.p99_clients` concurrent
/// clients, after a warm-up; the latency of each call.
async fn load<F, Fut>(
    args: &Args,
    calls: usize,
    ids: &[i64],
    seed: u64,
    call: F,
) -> Result<Vec<Duration>>
where
    F: Fn(i64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let per = calls.div_ceil(args.p99_clients);
    let mut tasks = Vec::new();
    for k in 0..args.p99_clients {
        let call = call.clone();
        let ids = ids.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((seed * 64 + k as u64 + 1) * 0x2545_F491));
            for _ in 0..5 {
                call(rng.pick(&ids)).await?;
            }
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let id = rng.pick(&ids);
                let t0 = Instant::now();
                call(id).await?;
                lat.push(t0.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// StreamTimeline against the driver's read, and the server's peak memory, on the
/// timeline database.
async fn measure_timeline(t: &Target, args: &Args, out: &mut Vec<Figure>) -> Result<()> {
    let n = args.timeline_events;
    let cid = t.timeline_customer;
    let stream = |client: CommunicationServiceClient<Channel>, end: Option<NaiveDateTime>| {
        let mut client = client;
        async move {
            let req = pb::StreamTimelineRequest {
                customer_id: cid,
                order: pb::TimelineOrder::OldestFirst as i32,
                end_time: end.map(|e| {
                    let e = e.and_utc();
                    common::timestamp(e.timestamp(), e.timestamp_subsec_nanos() as i32)
                }),
                ..Default::default()
            };
            let mut s = client.stream_timeline(req).await?.into_inner();
            let mut events = 0u64;
            while s.message().await?.is_some() {
                events += 1;
            }
            anyhow::Ok(events)
        }
    };
    let client = |ch: Channel| {
        CommunicationServiceClient::new(ch).max_decoding_message_size(common::MAX_MESSAGE_BYTES)
    };

    // Peak memory: fresh servers for ~100k and for all events.
    let cut = (n / 10).max(1);
    let cut_end = t.timeline_driver.time_at(cid, cut).await?;
    // Without the content index: it would hold the timeline dataset in memory, and this
    // figure is the memory of streaming.
    let no_index = [("CRM_CONTENT_INDEX", "false")];
    let binary = server_under_test();
    // Anonymous memory: SQLite maps its database file, whose pages count in VmHWM too.
    let server = Server::start_with(&binary, &t.timeline_url, STARTUP, &no_index).await?;
    let sampler = server.anon_peak();
    let cut_events = stream(client(server.channel().await?), Some(cut_end)).await?;
    let cut_peak = sampler.stop();
    let cut_hwm = server.peak_mb()?;
    drop(server);

    let server = Server::start_with(&binary, &t.timeline_url, STARTUP, &no_index).await?;
    let c = client(server.channel().await?);
    let mut full_peak = 0.0;
    let mut full_hwm = 0.0;
    let mut times = Vec::new();
    for i in 0..args.runs {
        let sampler = (i == 0).then(|| server.anon_peak());
        let t0 = Instant::now();
        let events = stream(c.clone(), None).await?;
        times.push(t0.elapsed());
        if events != n {
            bail!("stream returned {events} events, expected {n}");
        }
        if let Some(sampler) = sampler {
            full_peak = sampler.stop();
            full_hwm = server.peak_mb()?;
        }
    }
    drop(server);
    let service = common::median_by_key(times, |d| *d);
    let (baseline, read) = timed(args.runs, || t.timeline_driver.read_timeline(cid)).await?;
    if read != n {
        bail!("driver read {read} rows, expected {n}");
    }
    let (sr, br) = (
        n as f64 / service.as_secs_f64(),
        n as f64 / baseline.as_secs_f64(),
    );
    say!(
        "  StreamTimeline {n}: {:.2} s ({sr:.0}/s), driver {:.2} s ({br:.0}/s); peak anonymous memory {cut_events} events {cut_peak:.1} MB, {n} events {full_peak:.1} MB (VmHWM {cut_hwm:.1} and {full_hwm:.1} MB)",
        service.as_secs_f64(),
        baseline.as_secs_f64()
    );
    out.push(Figure::new(
        t.db,
        format!("StreamTimeline of {n} events (one customer)"),
        "driver: one streamed SELECT ... ORDER BY occur_time, id, rows decoded",
        "events/s",
        sr,
        br,
        RatioKind::Speed,
        Some(0.8),
    ));
    out.push(
        Figure::new(
            t.db,
            format!("server peak anonymous memory streaming {n} events"),
            format!("the same streaming {cut_events} events"),
            "MB",
            full_peak,
            cut_peak,
            RatioKind::Cost,
            None,
        )
        .note(format!(
            "RssAnon sampled every 10 ms, a fresh server process per figure; VmHWM, which \
             also counts the database pages SQLite maps, {cut_hwm:.1} and {full_hwm:.1} MB"
        )),
    );
    Ok(())
}

/// The server binary of the report and write figures: `CRM_BENCH_SERVER` (another
/// build of `crm-comms`, to compare two builds in one sitting), else the one cargo built.
fn server_under_test() -> String {
    std::env::var("CRM_BENCH_SERVER").unwrap_or_else(|_| SERVER.to_owned())
}

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) process `pid` has used so far (`self` for this one), or
/// none where `/proc` cannot say (not Linux, a database on another machine).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok());
    Some((ticks(14)? + ticks(15)?) / USER_HZ)
}

/// The CPU seconds of the three sides of a write figure so far: the server under test,
/// the database server (when it runs here) and this process (the clients).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    server: f64,
    database: Option<f64>,
    clients: f64,
}

/// Samples [`Cpu`] for the server `server_pid` and the database server `db_pid`.
fn cpu_now(server_pid: Option<u32>, db_pid: Option<u32>) -> Cpu {
    let of = |pid: Option<u32>| pid.and_then(|p| cpu_seconds(&p.to_string()));
    Cpu {
        server: of(server_pid).unwrap_or(0.0),
        database: of(db_pid),
        clients: cpu_seconds("self").unwrap_or(0.0),
    }
}

/// CPU milliseconds per call of each side between `before` and `after` over `calls`.
fn cpu_per_call(before: Cpu, after: Cpu, calls: f64) -> (f64, Option<f64>, f64) {
    let ms = |a: f64, b: f64| (b - a) * 1000.0 / calls;
    (
        ms(before.server, after.server),
        before.database.zip(after.database).map(|(a, b)| ms(a, b)),
        ms(before.clients, after.clients),
    )
}

/// `cpu_per_call`'s figures as text: `server 0.21 + database 0.30 + clients 0.15 ms`.
fn cpu_text((server, database, clients): (f64, Option<f64>, f64)) -> String {
    let db = database.map_or_else(|| "?".to_owned(), |d| format!("{d:.3}"));
    format!("server {server:.3} + database {db} + clients {clients:.3} CPU ms per row")
}

/// The median of each side of `cpu_per_call` figures.
fn median_cpu(v: Vec<(f64, Option<f64>, f64)>) -> (f64, Option<f64>, f64) {
    let db: Vec<f64> = v.iter().filter_map(|c| c.1).collect();
    (
        median_f64(v.iter().map(|c| c.0).collect()),
        (!db.is_empty()).then(|| median_f64(db)),
        median_f64(v.iter().map(|c| c.2).collect()),
    )
}

/// The MariaDB server's counters of the whole server (any client's statements count):
/// `Questions` (statements) and `Com_commit` (explicit COMMITs: one per service batch).
async fn db_counters(driver: &Driver) -> Option<(f64, f64)> {
    let Driver::Mysql(url) = driver else {
        return None;
    };
    let mut c = mysql_async::Conn::from_url(url.as_str()).await.ok()?;
    let rows: Vec<(String, String)> = c
        .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_commit')")
        .await
        .ok()?;
    let _ = c.disconnect().await;
    let get = |n: &str| {
        rows.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .and_then(|(_, v)| v.parse::<f64>().ok())
    };
    Some((get("Questions")?, get("Com_commit")?))
}

/// The process id of the MariaDB server behind `driver`, when it runs on this machine
/// (its pid file is readable and names a live `mariadbd`/`mysqld`).
async fn db_pid(driver: &Driver) -> Option<u32> {
    let Driver::Mysql(url) = driver else {
        return None;
    };
    let mut c = mysql_async::Conn::from_url(url.as_str()).await.ok()?;
    let file: Option<String> = c.query_first("SELECT @@pid_file").await.ok()?;
    let _ = c.disconnect().await;
    let pid: u32 = std::fs::read_to_string(file?).ok()?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.contains("mariadbd") || comm.contains("mysqld")).then_some(pid)
}

/// LogCommunication and ImportCommunications against the driver's inserts, on the
/// scratch database.
/// Contents scored to measure what sentiment scoring costs per communication.
const SCORED_TEXTS: usize = 20_000;

async fn measure_writes(t: &Target, args: &Args, out: &mut Vec<Figure>) -> Result<()> {
    let ids = t.scratch_driver.customer_ids().await?;
    // With each import batch's statement times (DEBUG lines, read below, not echoed).
    let server = Server::start_with(
        &server_under_test(),
        &t.scratch_url,
        STARTUP,
        &[(
            "RUST_LOG",
            "warn,crm_comms::service::content_index=info,crm_comms::db::communications=debug",
        )],
    )
    .await?;
    let (server_pid, db_pid) = (Some(server.pid()), db_pid(&t.scratch_driver).await);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let clients = args.log_clients;
    let total_log = (clients * args.log_rows) as f64;
    let mut svc_cpu = Vec::new();
    let mut drv_cpu = Vec::new();

    let mut svc_rates = Vec::new();
    let mut drv_rates = Vec::new();
    let mut imp_rates = Vec::new();
    let mut batch_rates = Vec::new();
    for _ in 0..args.runs {
        // LogCommunication from `clients` concurrent clients, one connection each.
        let mut tasks = Vec::new();
        let mut chans = Vec::new();
        for _ in 0..clients {
            chans.push(server.channel().await?);
        }
        let per_client: Vec<Vec<pb::Communication>> = (0..clients)
            .map(|_| {
                (0..args.log_rows)
                    .map(|_| to_pb(&gen_comm(&mut rng, &ids)))
                    .collect()
            })
            .collect();
        let counters = db_counters(&t.scratch_driver).await;
        let cpu = cpu_now(server_pid, db_pid);
        let started = Instant::now();
        for (ch, rows) in chans.into_iter().zip(per_client) {
            tasks.push(tokio::spawn(async move {
                let mut c = CommunicationServiceClient::new(ch);
                for r in rows {
                    c.log_communication(pb::LogCommunicationRequest {
                        communication: Some(r),
                        ..Default::default()
                    })
                    .await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        svc_rates.push(total_log / started.elapsed().as_secs_f64());
        svc_cpu.push(cpu_per_call(cpu, cpu_now(server_pid, db_pid), total_log));
        if let (Some((q0, c0)), Some((q1, c1))) = (counters, db_counters(&t.scratch_driver).await) {
            // Server-wide counters: other clients of the database count too.
            say!(
                "  LogCommunication: {:.2} statements per call, {:.1} calls per COMMIT",
                (q1 - q0) / total_log,
                total_log / (c1 - c0).max(1.0)
            );
        }

        let per_client: Vec<Vec<NewComm>> = (0..clients)
            .map(|_| {
                (0..args.log_rows)
                    .map(|_| gen_comm(&mut rng, &ids))
                    .collect()
            })
            .collect();
        let cpu = cpu_now(server_pid, db_pid);
        let d = t.scratch_driver.single_inserts(per_client).await?;
        drv_rates.push(total_log / d.as_secs_f64());
        drv_cpu.push(cpu_per_call(cpu, cpu_now(server_pid, db_pid), total_log));
        say!(
            "  LogCommunication {}; driver single {}",
            cpu_text(*svc_cpu.last().unwrap_or(&(0.0, None, 0.0))),
            cpu_text(*drv_cpu.last().unwrap_or(&(0.0, None, 0.0)))
        );
        // What sentiment scoring takes of that: the same kind of content, scored here.
        let texts: Vec<String> = (0..SCORED_TEXTS)
            .map(|_| gen_comm(&mut rng, &ids).content)
            .collect();
        let started = Instant::now();
        for text in &texts {
            std::hint::black_box(crm_comms::analytics::sentiment::score(text));
        }
        let score_ms = started.elapsed().as_secs_f64() * 1000.0 / SCORED_TEXTS as f64;
        let server_ms = svc_cpu.last().map_or(0.0, |c| c.0);
        say!(
            "  sentiment scoring: {score_ms:.4} CPU ms per communication, {:.1}% of the server's \
             CPU per LogCommunication",
            100.0 * score_ms / server_ms.max(f64::MIN_POSITIVE)
        );

        // One import stream vs multi-row INSERTs.
        let items: Vec<pb::ImportCommunicationsRequest> = (0..args.import_rows)
            .map(|_| pb::ImportCommunicationsRequest {
                communication: Some(to_pb(&gen_comm(&mut rng, &ids))),
                ..Default::default()
            })
            .collect();
        let mut c = CommunicationServiceClient::new(server.channel().await?);
        let started = Instant::now();
        let r = c
            .import_communications(tokio_stream::iter(items))
            .await?
            .into_inner();
        let e = started.elapsed();
        if r.accepted_count != args.import_rows as i64 {
            bail!(
                "import accepted {} of {}: {:?}",
                r.accepted_count,
                args.import_rows,
                r.rejected.first()
            );
        }
        imp_rates.push(args.import_rows as f64 / e.as_secs_f64());
        let rows: Vec<NewComm> = (0..args.import_rows)
            .map(|_| gen_comm(&mut rng, &ids))
            .collect();
        let d = t.scratch_driver.batch_inserts(rows).await?;
        batch_rates.push(args.import_rows as f64 / d.as_secs_f64());
        say!(
            "  writes: LogCommunication {:.0}/s, driver single {:.0}/s, import {:.0}/s, driver batches {:.0}/s",
            svc_rates.last().unwrap_or(&0.0),
            drv_rates.last().unwrap_or(&0.0),
            imp_rates.last().unwrap_or(&0.0),
            batch_rates.last().unwrap_or(&0.0)
        );
    }
    let stages = batch_stages(&server.log_lines("import batch stored"));
    drop(server);
    let (log, single, import, batch) = (
        median_f64(svc_rates),
        median_f64(drv_rates),
        median_f64(imp_rates),
        median_f64(batch_rates),
    );
    out.push(
        Figure::new(
            t.db,
            format!("LogCommunication, {clients} concurrent clients"),
            format!("driver single-row INSERTs (autocommit), {clients} connections"),
            "rows/s",
            log,
            single,
            RatioKind::Speed,
            Some(0.8),
        )
        .note(format!(
            "{} rows each side per run, scratch database; service {}; driver {}",
            clients * args.log_rows,
            cpu_text(median_cpu(svc_cpu)),
            cpu_text(median_cpu(drv_cpu))
        )),
    );
    out.push(
        Figure::new(
            t.db,
            format!("ImportCommunications, one stream of {}", args.import_rows),
            format!("driver multi-row INSERTs of {INSERT_BATCH} rows (autocommit)"),
            "rows/s",
            import,
            batch,
            RatioKind::Speed,
            Some(0.7),
        )
        .note(format!(
            "scratch database; median ms per {} rows: {stages}; the driver's INSERT of \
             {INSERT_BATCH} rows {:.1}",
            IMPORT_BATCH_ROWS,
            INSERT_BATCH as f64 * 1000.0 / batch
        )),
    );
    out.push(
        Figure::new(
            t.db,
            format!("ImportCommunications, one stream of {}", args.import_rows),
            format!("LogCommunication, {clients} concurrent clients"),
            "rows/s",
            import,
            log,
            RatioKind::Speed,
            Some(10.0),
        )
        .note("unary rate is the 32-client figure above"),
    );
    Ok(())
}

/// The median time of each statement of the service's import transactions per
/// [`IMPORT_BATCH_ROWS`] rows, from their DEBUG lines (a transaction holds one batch, or
/// the batches queued while the one before it was written), and the median rows per
/// transaction. The last, partial batch of a stream is left out.
fn batch_stages(lines: &[String]) -> String {
    const STAGES: [&str; 5] = ["look", "insert", "rollups", "audit", "rest"];
    let field = |line: &str, key: &str| -> Option<f64> {
        let key = format!("{key}=");
        let at = line.find(&key)? + key.len();
        line[at..].split_whitespace().next()?.parse().ok()
    };
    let full: Vec<(f64, &String)> = lines
        .iter()
        .filter_map(|l| Some((field(l, "rows")?, l)))
        .filter(|(rows, _)| *rows >= IMPORT_BATCH_ROWS as f64)
        .collect();
    if full.is_empty() {
        return "no batch timings logged".to_owned();
    }
    let per_batch = |(rows, line): &(f64, &String), stage: &str| {
        Some(field(line, &format!("{stage}_ms"))? * IMPORT_BATCH_ROWS as f64 / rows)
    };
    let stages = STAGES
        .iter()
        .map(|stage| {
            let values = full.iter().filter_map(|l| per_batch(l, stage)).collect();
            format!("{stage} {:.1}", median_f64(values))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let rows = median_f64(full.iter().map(|(rows, _)| *rows).collect());
    format!("{stages} ({rows:.0} rows per transaction)")
}

/// Customers the keyed import streams spread over (as in production imports).
const IMPORT_CUSTOMERS: usize = 500;

/// `runs` ImportCommunications streams of `--import-rows` items with request ids over
/// up to [`IMPORT_CUSTOMERS`] customers, into `url`; each stream's rate, then the rows
/// are removed again (`DELETE` past the id before, rollups rebuilt), so the database
/// keeps its row count. With `driver`, also the driver's multi-row INSERTs of the same
/// number of rows (removed the same way).
async fn keyed_imports(
    url: &str,
    driver: &Driver,
    args: &Args,
    tag: &str,
    with_driver: bool,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let ids = driver.customer_ids().await?;
    let step = (ids.len() / IMPORT_CUSTOMERS).max(1);
    let ids: Vec<i64> = ids
        .into_iter()
        .step_by(step)
        .take(IMPORT_CUSTOMERS)
        .collect();
    let before = driver
        .count("SELECT COALESCE(MAX(id), 0) AS n FROM communications")
        .await?;
    let server = Server::start(SERVER, url, STARTUP).await?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut imports, mut batches) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        let items: Vec<pb::ImportCommunicationsRequest> = (0..args.import_rows)
            .map(|i| pb::ImportCommunicationsRequest {
                communication: Some(to_pb(&gen_comm(&mut rng, &ids))),
                request_id: format!("bench-import-{tag}-{run}-{i}"),
            })
            .collect();
        let mut c = CommunicationServiceClient::new(server.channel().await?);
        let started = Instant::now();
        let r = c
            .import_communications(tokio_stream::iter(items))
            .await?
            .into_inner();
        let e = started.elapsed();
        if r.accepted_count != args.import_rows as i64 {
            bail!(
                "import accepted {} of {}: {:?}",
                r.accepted_count,
                args.import_rows,
                r.rejected.first()
            );
        }
        imports.push(args.import_rows as f64 / e.as_secs_f64());
        if with_driver {
            let rows: Vec<NewComm> = (0..args.import_rows)
                .map(|_| gen_comm(&mut rng, &ids))
                .collect();
            let d = driver.batch_inserts(rows).await?;
            batches.push(args.import_rows as f64 / d.as_secs_f64());
        }
        say!(
            "  keyed import into {tag}: {:.0} rows/s{}",
            imports.last().unwrap_or(&0.0),
            batches
                .last()
                .map(|b| format!(", driver batches {b:.0} rows/s"))
                .unwrap_or_default()
        );
    }
    drop(server);
    driver
        .execute(&format!("DELETE FROM communications WHERE id > {before}"))
        .await?;
    rebuild_rollups(url)?;
    Ok((imports, batches))
}

/// `crm-comms rebuild-rollups` on `url` (after rows were removed behind the service).
fn rebuild_rollups(url: &str) -> Result<()> {
    let started = Instant::now();
    let status = Command::new(SERVER)
        .args(["rebuild-rollups", "--database-url", url])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .context("spawn rebuild-rollups")?;
    if !status.success() {
        bail!("rebuild-rollups failed: {status}");
    }
    say!(
        "  rollups rebuilt in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// ImportCommunications with request ids (so each batch looks its keys up) into the
/// dataset against the same into the empty scratch database, and against the driver's
/// multi-row INSERTs into the dataset: the import rate must not fall as the table grows.
/// Runs before the other write paths, while the scratch database is still empty; both
/// databases get their row counts back afterwards.
async fn measure_import_scale(t: &Target, args: &Args, out: &mut Vec<Figure>) -> Result<()> {
    let (empty, _) = keyed_imports(&t.scratch_url, &t.scratch_driver, args, "empty", false).await?;
    let (full, batches) = keyed_imports(&t.url, &t.driver, args, "dataset", true).await?;
    let (empty, full, batch) = (median_f64(empty), median_f64(full), median_f64(batches));
    let n = args.communications;
    let what = format!(
        "ImportCommunications with request ids, one stream of {} over {IMPORT_CUSTOMERS} customers, into the {n}-row dataset",
        args.import_rows
    );
    out.push(
        Figure::new(
            t.db,
            what.clone(),
            "the same into the empty scratch database",
            "rows/s",
            full,
            empty,
            RatioKind::Speed,
            Some(0.8),
        )
        .note(format!(
            "import at {n} rows vs empty; the scratch database has {SCRATCH_CUSTOMERS} customers"
        )),
    );
    out.push(
        Figure::new(
            t.db,
            what,
            format!(
                "driver multi-row INSERTs of {INSERT_BATCH} rows (autocommit) into the dataset"
            ),
            "rows/s",
            full,
            batch,
            RatioKind::Speed,
            Some(0.7),
        )
        .note("the imported and inserted rows are deleted afterwards and the rollups rebuilt"),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------------------

/// Where reused SQLite files go: `CRM_BENCH_DATA_DIR`, else `<target dir>/bench-data`.
fn data_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CRM_BENCH_DATA_DIR") {
        return PathBuf::from(d);
    }
    let exe = PathBuf::from(SERVER);
    exe.parent()
        .and_then(|p| p.parent())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("bench-data")
}

/// Rows of `table` on `driver`, or none when the database or table is missing.
async fn rows_of(driver: &Driver, table: &str) -> Option<i64> {
    driver
        .count(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .await
        .ok()
}

/// Whether database `name` exists.
async fn mysql_exists(admin: &mut mysql_async::Conn, name: &str) -> Result<bool> {
    let n: Option<i64> = admin
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (name,),
        )
        .await?;
    Ok(n == Some(1))
}

/// The INSERT ... SELECT that gives customer `cid` the first `n` rows of `source`
/// (repeated when it has fewer).
fn copy_sql(source: &str, cid: i64, limit: u64) -> String {
    format!(
        "INSERT INTO communications ({INSERT_COLUMNS}) SELECT {cid}, channel, direction, \
         occur_time, content, outcome, phone_number, call_duration_us, email_address, \
         email_subject, chat_platform, chat_conversation_id, create_time, sentiment \
         FROM {source} ORDER BY id LIMIT {limit}"
    )
}

/// Seeds or reuses the MariaDB dataset and timeline database and creates the scratch
/// database; returns the target and the scratch database's name (for dropping it).
async fn prepare_mysql(
    args: &Args,
    admin: &mut mysql_async::Conn,
    base: &str,
) -> Result<(Target, String)> {
    let (n, c) = (args.communications, args.customers);
    let name = format!("crm_bench_scale_{n}_{c}");
    let url = format!("{base}/{name}");
    let driver = Driver::Mysql(url.clone());
    let ok = mysql_exists(admin, &name).await?
        && rows_of(&driver, "communications").await == Some(n as i64)
        && rows_of(&driver, "customers").await == Some(c as i64);
    if ok {
        say!("reusing MariaDB database {name}");
    } else {
        common::drop_database(admin, &name).await?;
        common::create_database(admin, base, &name).await?;
        let u = url.clone();
        tokio::task::spawn_blocking(move || seed_demo(&u, c, n)).await??;
        admin
            .query_drop(format!("ANALYZE TABLE `{name}`.communications"))
            .await?;
    }

    // The timeline database: one customer owning `timeline_events` rows of the dataset.
    let e = args.timeline_events;
    let tl_name = format!("crm_bench_scale_tl_{e}");
    let tl_url = format!("{base}/{tl_name}");
    let tl_driver = Driver::Mysql(tl_url.clone());
    let ok = mysql_exists(admin, &tl_name).await?
        && rows_of(&tl_driver, "communications WHERE customer_id = 1").await == Some(e as i64);
    if ok {
        say!("reusing MariaDB database {tl_name}");
    } else {
        common::drop_database(admin, &tl_name).await?;
        common::create_database(admin, base, &tl_name).await?;
        let u = tl_url.clone();
        tokio::task::spawn_blocking(move || seed_demo(&u, 1, 0)).await??;
        say!("copying {e} rows of {name} to customer 1 of {tl_name}");
        let mut conn = mysql_async::Conn::from_url(tl_url.as_str()).await?;
        let mut done = 0;
        while done < e {
            let step = (e - done).min(n);
            conn.query_drop(copy_sql(&format!("`{name}`.communications"), 1, step))
                .await?;
            done += step;
        }
        conn.query_drop("ANALYZE TABLE communications").await?;
        conn.disconnect().await?;
    }

    // The scratch database for the write paths, dropped by the caller.
    let scratch = common::run_database_name("crm_bench_scale_scratch");
    common::drop_database(admin, &scratch).await?;
    let scratch_url = common::create_database(admin, base, &scratch).await?;
    let u = scratch_url.clone();
    tokio::task::spawn_blocking(move || seed_demo(&u, SCRATCH_CUSTOMERS.into(), 0)).await??;
    Ok((
        Target {
            db: "MariaDB",
            url,
            driver,
            timeline_url: tl_url,
            timeline_driver: tl_driver,
            timeline_customer: 1,
            scratch_url: scratch_url.clone(),
            scratch_driver: Driver::Mysql(scratch_url),
        },
        scratch,
    ))
}

/// Seeds or reuses the SQLite dataset and timeline files and seeds the scratch file.
async fn prepare_sqlite(args: &Args, scratch: &common::TempSqlite) -> Result<Target> {
    let (n, c) = (args.communications, args.customers);
    let dir = data_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("scale-{n}-{c}.db")).display().to_string();
    let driver = Driver::Sqlite(path.clone());
    let ok = std::path::Path::new(&path).exists()
        && rows_of(&driver, "communications").await == Some(n as i64)
        && rows_of(&driver, "customers").await == Some(c as i64);
    if ok {
        say!("reusing SQLite file {path}");
    } else {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
        let u = format!("sqlite://{path}");
        tokio::task::spawn_blocking(move || seed_demo(&u, c, n)).await??;
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            diesel::sql_query("ANALYZE").execute(&mut sqlite_conn(&p)?)?;
            anyhow::Ok(())
        })
        .await??;
    }

    let e = args.timeline_events;
    let tl_path = dir.join(format!("scale-tl-{e}.db")).display().to_string();
    let tl_driver = Driver::Sqlite(tl_path.clone());
    let ok = std::path::Path::new(&tl_path).exists()
        && rows_of(&tl_driver, "communications WHERE customer_id = 1").await == Some(e as i64);
    if ok {
        say!("reusing SQLite file {tl_path}");
    } else {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{tl_path}{suffix}"));
        }
        let u = format!("sqlite://{tl_path}");
        tokio::task::spawn_blocking(move || seed_demo(&u, 1, 0)).await??;
        say!("copying {e} rows of {path} to customer 1 of {tl_path}");
        let (p, src) = (tl_path.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = sqlite_conn(&p)?;
            diesel::sql_query(format!("ATTACH DATABASE '{src}' AS src")).execute(&mut conn)?;
            conn.transaction::<_, anyhow::Error, _>(|conn| {
                let mut done = 0;
                while done < e {
                    let step = (e - done).min(n);
                    diesel::sql_query(copy_sql("src.communications", 1, step)).execute(conn)?;
                    done += step;
                }
                Ok(())
            })?;
            diesel::sql_query("DETACH DATABASE src").execute(&mut conn)?;
            diesel::sql_query("ANALYZE").execute(&mut conn)?;
            anyhow::Ok(())
        })
        .await??;
    }

    let u = scratch.url.clone();
    tokio::task::spawn_blocking(move || seed_demo(&u, SCRATCH_CUSTOMERS.into(), 0)).await??;
    Ok(Target {
        db: "SQLite",
        url: format!("sqlite://{path}"),
        driver,
        timeline_url: format!("sqlite://{tl_path}"),
        timeline_driver: tl_driver,
        timeline_customer: 1,
        scratch_url: scratch.url.clone(),
        scratch_driver: Driver::Sqlite(scratch.path.clone()),
    })
}

/// Every figure of one backend.
async fn measure_all(t: &Target, args: &Args, out: &mut Vec<Figure>) -> Result<()> {
    let part = |name: &str| args.only.is_empty() || args.only.split(',').any(|p| p.trim() == name);
    if part("reports") {
        say!("== {}: reports ==", t.db);
        measure_reports(t, args, out).await?;
    }
    if part("timeline") {
        say!("== {}: timeline ==", t.db);
        measure_timeline(t, args, out).await?;
    }
    if part("import") {
        say!(
            "== {}: import at {} rows vs empty ==",
            t.db,
            args.communications
        );
        measure_import_scale(t, args, out).await?;
    }
    if part("writes") {
        say!("== {}: writes (scratch database) ==", t.db);
        measure_writes(t, args, out).await?;
    }
    if part("service_levels") {
        say!("== {}: service levels and attention ==", t.db);
        service_levels::measure(t, args, out).await?;
    }
    if part("whale") {
        say!("== {}: key account ==", t.db);
        whale::measure(t, args, out).await?;
    }
    if part("watch") {
        say!("== {}: watched reports (scratch database) ==", t.db);
        watch::measure(t, args, out).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

/// The machine the run is on.
#[derive(Debug, Default, Serialize)]
struct Machine {
    /// CPUs available to the process.
    cpus: usize,
    /// `model name` of /proc/cpuinfo.
    cpu_model: String,
    /// Total memory.
    memory_gb: f64,
    /// `uname -r`.
    kernel: String,
    /// `SELECT VERSION()`, when MariaDB was measured.
    mariadb: Option<String>,
    /// `sqlite_version()` of the bundled SQLite.
    sqlite: String,
}

/// CPU, memory, kernel and SQLite version of this machine (MariaDB's is added later).
fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let sqlite = SqliteConnection::establish(":memory:")
        .ok()
        .and_then(|mut c| {
            diesel::sql_query("SELECT sqlite_version() AS t")
                .get_result::<OneText>(&mut c)
                .ok()
        })
        .map_or_else(String::new, |r| r.t);
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |p| p.get()),
        cpu_model: cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(String::new, |s| s.trim().to_owned()),
        memory_gb: mem_kb / 1024.0 / 1024.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        mariadb: None,
        sqlite,
    }
}

/// The table (markdown) of every figure, with the machine and the notes.
fn table(args: &Args, m: &Machine, figures: &[Figure], elapsed: Duration) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nScale benchmark: {} communications, {} customers (seed-demo --seed 42, 2025), \
         median of {} runs; {} CPUs ({}), {:.1} GB, kernel {}, MariaDB {}, SQLite {}\n",
        args.communications,
        args.customers,
        args.runs,
        m.cpus,
        m.cpu_model,
        m.memory_gb,
        m.kernel,
        m.mariadb.as_deref().unwrap_or("-"),
        m.sqlite
    );
    let _ = writeln!(o,"ratio: speed = service speed / baseline speed (higher is better); cost = service / baseline (lower is better)\n");
    let _ = writeln!(
        o,
        "| db | figure | service | baseline | baseline is | ratio | target | met | same |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---|---:|---|---|---|");
    for f in figures {
        let (kind, cmp) = match f.ratio_kind {
            RatioKind::Speed => ("speed", ">="),
            RatioKind::Cost => ("cost", "<="),
        };
        let yn = |b: Option<bool>| match b {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        let prec = |v: f64| {
            if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} {} | {} {} | {} | {kind} {:.2}x | {} | {} | {} |",
            f.db,
            f.figure,
            prec(f.service),
            f.unit,
            prec(f.baseline),
            f.unit,
            f.baseline_is,
            f.ratio,
            f.target
                .map_or_else(|| "-".to_owned(), |t| format!("{cmp} {t}x")),
            yn(f.met),
            yn(f.same)
        );
    }
    for f in figures.iter().filter(|f| !f.note.is_empty()) {
        let _ = writeln!(o, "- {} / {}: {}", f.db, f.figure, f.note);
    }
    let _ = writeln!(o, "\n(total run {:.0} s)", elapsed.as_secs_f64());
    o
}

/// Both backends (as asked), in order; MariaDB is skipped when unreachable.
async fn run(args: &Args) -> Result<(Machine, Vec<Figure>)> {
    let mut m = machine();
    let mut figures = Vec::new();
    if args.db != Which::Mysql {
        let scratch = common::TempSqlite::new()?;
        let t = prepare_sqlite(args, &scratch).await?;
        measure_all(&t, args, &mut figures).await?;
    }
    if args.db != Which::Sqlite {
        let base = common::mysql_base_url("CRM_BENCH_MYSQL_URL");
        let base = base.trim_end_matches('/').to_owned();
        match mysql_async::Conn::from_url(common::admin_url(&base)).await {
            Err(e) => say!("MariaDB skipped: unreachable at {base}: {e}"),
            Ok(mut admin) => {
                m.mariadb = admin.query_first("SELECT VERSION()").await?;
                let (t, scratch) = prepare_mysql(args, &mut admin, &base).await?;
                let result = measure_all(&t, args, &mut figures).await;
                common::drop_database(&mut admin, &scratch).await?;
                say!("dropped scratch database {scratch}");
                admin.disconnect().await?;
                result?;
            }
        }
    }
    Ok((m, figures))
}

/// Parses the settings, measures, prints the table or the JSON object.
fn main() -> Result<()> {
    let args = Args::parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let (m, figures) = rt.block_on(run(&args))?;
    if args.json {
        let out = serde_json::json!({
            "command": "cargo bench --bench scale",
            "settings": args,
            "machine": m,
            "figures": figures,
            "seconds": started.elapsed().as_secs_f64(),
        });
        // The table still goes to stderr, so one run gives both.
        eprint!("{}", table(&args, &m, &figures, started.elapsed()));
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", table(&args, &m, &figures, started.elapsed()));
    }
    Ok(())
}

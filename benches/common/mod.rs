//! Helpers shared by the benchmarks (`analytics`, `timeline`): settings from the
//! environment, the median of timed runs, a temporary SQLite database file, a database of
//! its own for one run on a MariaDB server, the gRPC channel to the server under test and
//! the protobuf timestamp of a time, the server process under test, a deterministic
//! random number generator and the communication row both write through the driver.

// Each bench compiles this module into its own crate and uses only part of it; what the
// other bench alone uses would warn as dead code.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::NaiveDateTime;
use crm_comms::db::schema::communications;
use diesel::Insertable;
use mysql_async::prelude::Queryable;
use tonic::transport::Channel;

/// One communication as the benches write it straight through the driver (the same
/// columns the service writes); `Insertable` so diesel writes SQLite times exactly as the
/// server does (`%F %T%.f`), NULLs written as NULL so one statement holds every row.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = communications, treat_none_as_default_value = false)]
pub struct NewComm {
    pub customer_id: i64,
    pub channel: i32,
    pub direction: i32,
    pub occur_time: NaiveDateTime,
    pub content: String,
    pub outcome: String,
    pub phone_number: Option<String>,
    pub call_duration_us: Option<i64>,
    pub email_address: Option<String>,
    pub email_subject: Option<String>,
    pub chat_platform: Option<String>,
    pub chat_conversation_id: Option<String>,
    pub create_time: NaiveDateTime,
    /// Scored as the service scores what it records.
    pub sentiment: Option<i16>,
}

/// The MariaDB server used when the bench's URL variable is not set.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306";

/// Largest response a bench client accepts (the reports and pages can be large).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The whole number in the environment variable `name` (`_` separators allowed, as in
/// `1_000_000`), or `default` when it is unset or not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The element with the median key: the upper of the two middle ones for an even count.
/// Panics on an empty `v`.
pub fn median_by_key<T, K: Ord>(mut v: Vec<T>, key: impl FnMut(&T) -> K) -> T {
    v.sort_by_key(key);
    let mid = v.len() / 2;
    v.swap_remove(mid)
}

/// A protobuf timestamp of `seconds` and `nanos` since the Unix epoch.
pub fn timestamp(seconds: i64, nanos: i32) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos }
}

/// An empty SQLite database file `bench.db` in a temporary directory, removed on drop.
pub struct TempSqlite {
    /// Holds the directory (and the file in it) until this is dropped.
    _dir: tempfile::TempDir,
    /// The file's path.
    pub path: String,
    /// The file's database URL (`sqlite://<path>`), as the server takes it.
    pub url: String,
}

impl TempSqlite {
    /// Creates the temporary directory (not yet the file).
    pub fn new() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bench.db").display().to_string();
        let url = format!("sqlite://{path}");
        Ok(TempSqlite {
            _dir: dir,
            path,
            url,
        })
    }
}

/// The MariaDB server URL (without a database) in the environment variable `var`, or
/// [`DEFAULT_MYSQL_URL`].
pub fn mysql_base_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| DEFAULT_MYSQL_URL.into())
}

/// The URL of the `test` database on the server at `base`, to connect to before the
/// run's own database exists.
pub fn admin_url(base: &str) -> String {
    format!("{base}/test")
}

/// The name of this run's database: `<prefix>_<process id>`.
pub fn run_database_name(prefix: &str) -> String {
    format!("{prefix}_{}", std::process::id())
}

/// Creates the empty database `name` (utf8mb4, the server's collation) through `admin`
/// and returns its URL on the server at `base`.
pub async fn create_database(
    admin: &mut mysql_async::Conn,
    base: &str,
    name: &str,
) -> mysql_async::Result<String> {
    admin
        .query_drop(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .await?;
    Ok(format!("{base}/{name}"))
}

/// Drops the database `name` (if it still exists) through `admin`.
pub async fn drop_database(admin: &mut mysql_async::Conn, name: &str) -> mysql_async::Result<()> {
    admin
        .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
        .await
}

/// A gRPC channel to the server at `addr` (`host:port`), retried every 50 ms for up to
/// 10 s while the server is still starting.
pub async fn connect(addr: &str) -> Result<Channel> {
    let started = Instant::now();
    loop {
        match Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            Ok(channel) => return Ok(channel),
            Err(e) if started.elapsed() > Duration::from_secs(10) => {
                bail!("cannot connect to the server: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Deterministic xorshift, so every run generates the same data.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A random element of `v` (not empty).
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next() % v.len() as u64) as usize]
    }
}

/// A `crm-comms serve` process (the binary `bin`) on a free port, killed on drop.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its log lines so far (stderr, the content index's at INFO, the rest at WARN).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `bin serve` on `database_url` and waits until its port answers, at most
    /// `startup` (migrations and any rollup build run first), then until its content
    /// index is loaded.
    pub async fn start(bin: &str, database_url: &str, startup: Duration) -> Result<Server> {
        Self::start_with(bin, database_url, startup, &[]).await
    }

    /// [`Server::start`] with extra environment variables (settings such as
    /// `CRM_CONTENT_INDEX=false`).
    pub async fn start_with(
        bin: &str,
        database_url: &str,
        startup: Duration,
        env: &[(&str, &str)],
    ) -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(bin)
            .args(["serve", "--listen", &addr, "--database-url", database_url])
            .env("RUST_LOG", "warn,crm_comms::service::content_index=info")
            .env("NO_COLOR", "1")
            // The benchmark measures capacity: every client shares one address, so the
            // per-caller rate limit would measure itself.
            .env("CRM_RATE_LIMIT", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn server")?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    // DEBUG lines are figures a benchmark asked for and reads itself.
                    if !line.contains(" DEBUG ") {
                        eprintln!("    server: {line}");
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("server exited during startup: {status}");
            }
            if std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_millis(200))
                .is_ok()
            {
                break;
            }
            if started.elapsed() > startup {
                let _ = child.kill();
                bail!("server did not answer on {addr} within {startup:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let server = Server { child, addr, log };
        // Measure the steady state: the content index loads in the background at start
        // (about 20 s per million rows on two cores), competing for the CPU until then.
        let index_off = env.contains(&("CRM_CONTENT_INDEX", "false"))
            || std::env::var("CRM_CONTENT_INDEX").is_ok_and(|v| v == "false");
        if !index_off {
            server
                .wait_log("content index ready", Duration::from_secs(3600))
                .await?;
            // After a start from the snapshot the per-customer activity comes later.
            server
                .wait_log("activity index ready", Duration::from_secs(3600))
                .await?;
        }
        Ok(server)
    }

    /// The log lines so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// The server process's id (for its CPU time in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a log line contains `needle`, at most `limit`; the line.
    pub async fn wait_log(&self, needle: &str, limit: Duration) -> Result<String> {
        let started = Instant::now();
        loop {
            let found = self.log_lines(needle).into_iter().next();
            if let Some(line) = found {
                return Ok(line);
            }
            if started.elapsed() > limit {
                bail!("the server logged no {needle:?} within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new gRPC connection to the server.
    pub async fn channel(&self) -> Result<Channel> {
        connect(&self.addr).await
    }

    /// Peak resident set (`VmHWM`) of the server process, in MB.
    pub fn peak_mb(&self) -> Result<f64> {
        status_mb(self.child.id(), "VmHWM")
    }

    /// Samples the server's anonymous resident memory (`RssAnon`: its heap and stacks,
    /// not the pages of files it maps, such as SQLite's database file) every 10 ms until
    /// the sampler is [`stop`](AnonPeak::stop)ped.
    pub fn anon_peak(&self) -> AnonPeak {
        let pid = self.child.id();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(mb) = status_mb(pid, "RssAnon") {
                    peak = peak.max(mb);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        AnonPeak { stop, sampler }
    }
}

/// A running sample of a server's anonymous memory ([`Server::anon_peak`]).
pub struct AnonPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<f64>,
}

impl AnonPeak {
    /// The peak seen, in MB.
    pub fn stop(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().unwrap_or(0.0)
    }
}

/// Field `field` (in kB) of `/proc/PID/status`, in MB.
fn status_mb(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .with_context(|| format!("no {field}"))?
        .parse()?;
    Ok(kb / 1024.0)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Helpers shared by the benchmarks (`analytics`, `timeline`): settings from the
//! environment, the median of timed runs, a temporary SQLite database file, a database of
//! its own for one run on a MariaDB server, the gRPC channel to the server under test and
//! the protobuf timestamp of a time.

// Each bench compiles this module into its own crate and uses only part of it; what the
// other bench alone uses would warn as dead code.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mysql_async::prelude::Queryable;
use tonic::transport::Channel;

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

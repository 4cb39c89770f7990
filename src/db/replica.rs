//! The read replica: its pool, the check that bounds how far it may trail the primary,
//! and the per-caller write marks that give every caller its own writes back.
//!
//! Staleness is measured by replication position, not by the replica's own estimate:
//! every [`CHECK_INTERVAL`] the watcher reads the primary's `@@gtid_binlog_pos` (noting
//! the time just before) and the replica's `@@gtid_slave_pos`. The newest primary
//! sample the replica has applied gives `applied_through`: every transaction the primary
//! committed before that instant is on the replica. Its lag is `now - applied_through`
//! (a replica with replication stopped but nothing new to apply is not behind). A
//! caller's write acknowledged at `t` is on the replica once `applied_through >= t`;
//! until then that caller's reads go to the primary.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use diesel_async::{pooled_connection::bb8::Pool, AsyncMysqlConnection};

use super::{connect_mysql_any, redact};

/// How often the watcher compares the replica's position with the primary's.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long one position query may take before its host counts as unreachable.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Primary samples kept while the replica has not applied them (older ones are dropped:
/// the watermark then only advances once a newer sample is applied).
const MAX_SAMPLES: usize = 256;
/// Callers whose recent writes are remembered at most; past it, every caller reads from
/// the primary until the replica has applied the newest write (see [`State::floor`]).
const MAX_WRITERS: usize = 65_536;

tokio::task_local! {
    /// The name of the caller whose request this task serves (set around every guarded
    /// call by the server): its own recent writes keep its reads on the primary.
    static CALLER: Arc<str>;
}

/// Runs `work` as a request of `caller` (see [`current_caller`]).
pub async fn scope_caller<F: std::future::Future>(caller: Arc<str>, work: F) -> F::Output {
    CALLER.scope(caller, work).await
}

/// The caller whose request the current task serves, if any.
pub fn current_caller() -> Option<Arc<str>> {
    CALLER.try_with(Arc::clone).ok()
}

/// A MariaDB position: the highest sequence number per replication domain
/// (`@@gtid_binlog_pos` / `@@gtid_slave_pos`, `domain-server-seq,...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position(Vec<(u32, u64)>);

impl Position {
    /// Parses a GTID list; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Position> {
        let mut domains = Vec::new();
        for gtid in text.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            let mut parts = gtid.split('-');
            let (Some(domain), Some(_server), Some(seq), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return None;
            };
            domains.push((domain.parse().ok()?, seq.parse().ok()?));
        }
        Some(Position(domains))
    }

    /// Whether a server at this position has applied everything up to `other`: in every
    /// domain of `other`, at least its sequence number.
    pub fn covers(&self, other: &Position) -> bool {
        other
            .0
            .iter()
            .all(|&(domain, seq)| self.0.iter().any(|&(d, s)| d == domain && s >= seq))
    }
}

/// The replica and what is known of how far it trails the primary.
pub struct Replica {
    /// Connections to the replica.
    pub(super) pool: Pool<AsyncMysqlConnection>,
    /// Whether reads may go to the replica now (reachable, within the lag bound).
    usable: AtomicBool,
    max_lag: Duration,
    state: Mutex<State>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("usable", &self.usable())
            .field("max_lag", &self.max_lag)
            .finish()
    }
}

#[derive(Default)]
struct State {
    /// Everything the primary committed before this instant is on the replica.
    applied_through: Option<Instant>,
    /// Primary positions not yet applied by the replica, with the instant just before
    /// each was read, oldest first.
    samples: VecDeque<(Instant, Position)>,
    /// Per caller, when its last write was acknowledged, while the replica lacks it.
    writes: HashMap<Arc<str>, Instant>,
    /// Set when `writes` overflowed: every caller reads from the primary until the
    /// replica has applied everything acknowledged before this instant.
    floor: Option<Instant>,
}

impl State {
    fn applied(&self, at: Instant) -> bool {
        self.applied_through.is_some_and(|a| a >= at)
    }
}

/// Why the replica is not used, for the switch's log line.
enum Verdict {
    Usable,
    Unreachable(String),
    Behind(Option<Duration>),
}

impl Replica {
    /// A replica over `pool` whose reads are allowed while it trails by at most
    /// `max_lag`; unused until the first check has measured it.
    pub fn new(pool: Pool<AsyncMysqlConnection>, max_lag: Duration) -> Replica {
        Replica {
            pool,
            usable: AtomicBool::new(false),
            max_lag,
            state: Mutex::default(),
        }
    }

    /// Whether reads may go to the replica now.
    pub fn usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a read of `caller` may go to the replica: it is usable and has applied
    /// the caller's own last write.
    pub fn serves(&self, caller: Option<&str>) -> bool {
        if !self.usable() {
            return false;
        }
        let state = self.state();
        if state.floor.is_some_and(|f| !state.applied(f)) {
            return false;
        }
        caller
            .and_then(|c| state.writes.get(c))
            .is_none_or(|&at| state.applied(at))
    }

    /// Notes that a write of `caller` was acknowledged now.
    pub fn wrote(&self, caller: &str) {
        let at = Instant::now();
        let mut state = self.state();
        if state.writes.len() >= MAX_WRITERS && !state.writes.contains_key(caller) {
            // Bounded: forget the callers, hold everyone to the newest write instead.
            state.writes.clear();
            state.floor = Some(at);
        }
        state.writes.insert(Arc::from(caller), at);
    }

    /// A read on the replica could not get a connection: reads go to the primary until
    /// the next check finds it back.
    pub fn unreachable(&self, error: &str) {
        self.switch(Verdict::Unreachable(error.to_owned()));
    }

    fn switch(&self, verdict: Verdict) {
        let usable = matches!(verdict, Verdict::Usable);
        crate::metrics::replica_in_use(usable);
        if self.usable.swap(usable, Ordering::Relaxed) == usable {
            return;
        }
        match verdict {
            Verdict::Usable => tracing::info!("read replica caught up: reads go to it again"),
            Verdict::Unreachable(error) => {
                tracing::warn!(%error, "read replica unreachable: reads go to the primary")
            }
            Verdict::Behind(lag) => tracing::warn!(
                lag_ms = lag.map(|l| l.as_millis() as u64),
                max_lag_ms = self.max_lag.as_millis() as u64,
                "read replica too far behind: reads go to the primary"
            ),
        }
    }

    /// One check: the primary's position now, the replica's, the new watermark, the
    /// verdict. `primary`/`replica` are the positions read (errors as text).
    fn record(
        &self,
        sampled_at: Instant,
        primary: Result<Position, String>,
        replica: Result<Position, String>,
    ) {
        let verdict = {
            let mut state = self.state();
            match primary {
                Ok(position) => {
                    state.samples.push_back((sampled_at, position));
                    if state.samples.len() > MAX_SAMPLES {
                        state.samples.pop_front();
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "read replica check: primary position unknown")
                }
            }
            match replica {
                Ok(applied) => {
                    if let Some(newest) = state
                        .samples
                        .iter()
                        .rposition(|(_, position)| applied.covers(position))
                    {
                        let through = state.samples[newest].0;
                        state.applied_through = Some(through);
                        state.samples.drain(..=newest);
                        state.writes.retain(|_, &mut at| at > through);
                        if state.floor.is_some_and(|f| f <= through) {
                            state.floor = None;
                        }
                    }
                    let lag = state.applied_through.map(|a| a.elapsed());
                    crate::metrics::replica_lag(lag);
                    if lag.is_some_and(|l| l <= self.max_lag) {
                        Verdict::Usable
                    } else {
                        Verdict::Behind(lag)
                    }
                }
                Err(e) => Verdict::Unreachable(e),
            }
        };
        self.switch(verdict);
    }
}

/// Compares the replica with the primary every [`CHECK_INTERVAL`] until `replica` is
/// dropped. Both connections are its own, outside the pools.
pub async fn watch(replica: Weak<Replica>, primary_url: String, replica_url: String) {
    let mut primary = Positions::new(
        primary_url,
        "SELECT @@gtid_binlog_pos AS pos, CAST(@@log_bin AS CHAR) AS log_bin",
    );
    let mut copy = Positions::new(
        replica_url,
        "SELECT @@gtid_slave_pos AS pos, '1' AS log_bin",
    );
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(replica) = replica.upgrade() else {
            return;
        };
        let sampled_at = Instant::now();
        let on_primary = primary.read().await;
        let on_replica = copy.read().await;
        replica.record(sampled_at, on_primary, on_replica);
    }
}

/// A position query on a connection of its own (reopened after a failure).
struct Positions {
    url: String,
    sql: &'static str,
    conn: Option<AsyncMysqlConnection>,
}

impl Positions {
    fn new(url: String, sql: &'static str) -> Positions {
        Positions {
            url,
            sql,
            conn: None,
        }
    }

    async fn read(&mut self) -> Result<Position, String> {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            pos: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            log_bin: String,
        }
        let conn = self.conn.take();
        let url = &self.url;
        let sql = self.sql;
        let attempt = tokio::time::timeout(QUERY_TIMEOUT, async move {
            let mut conn = match conn {
                Some(conn) => conn,
                None => connect_mysql_any(url).await.map_err(|e| e.to_string())?,
            };
            // raw SQL: GTID position server variables (@@gtid_binlog_pos, @@gtid_slave_pos)
            let rows: Vec<Row> = diesel::sql_query(sql)
                .load(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((conn, rows))
        })
        .await;
        let (conn, rows) = match attempt {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(format!("{}: {e}", redact(url))),
            Err(_) => {
                return Err(format!(
                    "{} did not answer within {} ms",
                    redact(url),
                    QUERY_TIMEOUT.as_millis()
                ))
            }
        };
        self.conn = Some(conn);
        let row = <[Row]>::first(&rows).ok_or_else(|| format!("{}: no position", redact(url)))?;
        if !(row.log_bin == "1" || row.log_bin.eq_ignore_ascii_case("ON")) {
            return Err(format!(
                "{} writes no binary log (log_bin is off), so no replica can follow it",
                redact(url)
            ));
        }
        Position::parse(&row.pos)
            .ok_or_else(|| format!("{}: unreadable GTID position {:?}", redact(url), row.pos))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn positions_compare_per_domain() {
        let p = |s| Position::parse(s).unwrap();
        assert!(p("0-1-42").covers(&p("0-1-42")));
        assert!(
            p("0-2-43").covers(&p("0-1-42")),
            "the server id does not matter"
        );
        assert!(!p("0-1-41").covers(&p("0-1-42")));
        assert!(p("0-1-5").covers(&p("")), "an empty primary is covered");
        assert!(!p("").covers(&p("0-1-1")));
        assert!(p("0-1-9, 1-3-7").covers(&p("1-3-7,0-1-9")));
        assert!(
            !p("0-1-9").covers(&p("0-1-9,1-3-7")),
            "a domain the replica lacks"
        );
        assert_eq!(Position::parse("0-1"), None);
        assert_eq!(Position::parse("x-1-2"), None);
    }

    fn replica() -> Replica {
        let manager = diesel_async::pooled_connection::AsyncDieselConnectionManager::<
            AsyncMysqlConnection,
        >::new("mysql://nobody@127.0.0.1:1/none");
        Replica::new(
            Pool::builder().build_unchecked(manager),
            Duration::from_secs(5),
        )
    }

    #[tokio::test]
    async fn a_caller_reads_the_primary_until_the_replica_applied_its_write() {
        let r = replica();
        let p = |s| Ok(Position::parse(s).unwrap());
        assert!(!r.serves(None), "unused until measured");
        r.record(Instant::now(), p("0-1-10"), p("0-1-10"));
        assert!(r.serves(None) && r.serves(Some("a")));

        r.wrote("a");
        assert!(
            !r.serves(Some("a")),
            "its own write is not on the replica yet"
        );
        assert!(r.serves(Some("b")), "others still read the replica");
        // The primary moved on; the replica has not applied it.
        r.record(Instant::now(), p("0-1-11"), p("0-1-10"));
        assert!(!r.serves(Some("a")));
        r.record(Instant::now(), p("0-1-11"), p("0-1-11"));
        assert!(r.serves(Some("a")), "applied past the write");
        assert!(r.state().writes.is_empty(), "the mark is forgotten");

        r.record(Instant::now(), p("0-1-12"), Err("refused".into()));
        assert!(!r.serves(Some("b")), "unreachable: the primary");
    }

    #[tokio::test]
    async fn a_replica_that_falls_behind_the_bound_is_not_used() {
        let r = replica();
        let p = |s| Ok(Position::parse(s).unwrap());
        r.record(Instant::now(), p("0-1-10"), p("0-1-10"));
        assert!(r.usable());
        // Replication stopped, nothing new written: not behind.
        r.record(Instant::now(), p("0-1-10"), p("0-1-10"));
        assert!(r.usable());
        let stuck = Instant::now();
        r.record(stuck, p("0-1-11"), p("0-1-10"));
        assert!(r.usable(), "within the bound");
        r.state().applied_through = Some(stuck - Duration::from_secs(6));
        r.record(Instant::now(), p("0-1-12"), p("0-1-10"));
        assert!(!r.usable(), "past the bound");
        r.record(Instant::now(), p("0-1-12"), p("0-1-12"));
        assert!(r.usable(), "caught up");
    }
}

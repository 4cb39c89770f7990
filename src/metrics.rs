//! Prometheus metrics (the `metrics` facade and `metrics-exporter-prometheus`): names,
//! labels and the one place each is recorded from. Off unless `--metrics-listen` is given;
//! without an installed recorder every call here is a no-op.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `crm_rpc_requests_total` | counter | `method`, `code` |
//! | `crm_rpc_duration_seconds` | histogram | `method` |
//! | `crm_rpc_in_flight` | gauge | |
//! | `crm_open_streams` | gauge | `kind` (`follow`, `history`) |
//! | `crm_import_rows_total` | counter | `outcome` (`accepted`, `duplicate`, `rejected`) |
//! | `crm_db_pool_connections` | gauge | `state` (`idle`, `in_use`) |
//! | `crm_db_pool_max_connections` | gauge | |
//! | `crm_db_pool_waits_total`, `crm_db_pool_timeouts_total` | counter | |
//! | `crm_db_errors_total` | counter | `kind` (`unavailable`, `conflict`, `other`) |
//! | `crm_build_info` | gauge (1) | `version`, `backend` |

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context as _;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use prost::Message;

/// `crm_rpc_requests_total`: RPCs ended, by `method` and `code`.
const RPC_REQUESTS: &str = "crm_rpc_requests_total";
/// `crm_rpc_duration_seconds`: RPC latency, by `method`.
const RPC_DURATION: &str = "crm_rpc_duration_seconds";
/// `crm_rpc_in_flight`: RPCs running now.
const RPC_IN_FLIGHT: &str = "crm_rpc_in_flight";
/// `crm_open_streams`: open timeline streams, by `kind`.
const OPEN_STREAMS: &str = "crm_open_streams";
/// `crm_import_rows_total`: import items, by `outcome`.
const IMPORT_ROWS: &str = "crm_import_rows_total";
/// `crm_db_pool_connections`: pooled connections, by `state`.
const POOL_CONNECTIONS: &str = "crm_db_pool_connections";
/// `crm_db_pool_max_connections`: the pool's size.
const POOL_MAX: &str = "crm_db_pool_max_connections";
/// `crm_db_pool_waits_total`: connection checkouts that waited.
const POOL_WAITS: &str = "crm_db_pool_waits_total";
/// `crm_db_pool_timeouts_total`: connection checkouts that timed out.
const POOL_TIMEOUTS: &str = "crm_db_pool_timeouts_total";
/// `crm_db_errors_total`: failed statements, by `kind`.
const DB_ERRORS: &str = "crm_db_errors_total";
/// `crm_db_transaction_conflicts_total`: write transactions refused by a concurrent one,
/// by `outcome` (`retried`, `gave_up`).
const TX_CONFLICTS: &str = "crm_db_transaction_conflicts_total";
/// `crm_db_replica_in_use`: 1 while reads go to the read replica.
const REPLICA_IN_USE: &str = "crm_db_replica_in_use";
/// `crm_db_replica_lag_seconds`: how far the read replica is behind the primary.
const REPLICA_LAG: &str = "crm_db_replica_lag_seconds";
/// `crm_db_reads_total`: reads that may be stale, by `target` (`replica`, `primary`).
const READS: &str = "crm_db_reads_total";
/// `crm_build_info`: 1, with `version` and `backend`.
const BUILD_INFO: &str = "crm_build_info";

/// What a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// The label values a series starts with at zero.
#[derive(Debug, Clone, Copy)]
enum Labels {
    /// No labels.
    None,
    /// One label and every value it takes.
    Fixed(&'static str, &'static [&'static str]),
    /// `method`: every known method.
    Method,
    /// `method` and `code`: every known method with every gRPC code.
    MethodAndCode,
    /// Set once at start with their values (`crm_build_info`).
    AtStart,
}

/// One metric: its name, type, help text and the labels it starts with.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// The metric name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    labels: Labels,
}

/// Every metric the server emits: each is described and present (at zero, with every
/// label value known up front) from the start, so alerts and dashboards see a series
/// before its first event. A metric recorded in this file and missing here fails a
/// unit test.
pub const SERIES: &[Series] = &[
    Series {
        name: RPC_REQUESTS,
        kind: Kind::Counter,
        help: "RPCs ended, by method and gRPC code",
        labels: Labels::MethodAndCode,
    },
    Series {
        name: RPC_DURATION,
        kind: Kind::Histogram,
        help: "RPC latency in seconds, from the request to the end of the response",
        labels: Labels::Method,
    },
    Series {
        name: RPC_IN_FLIGHT,
        kind: Kind::Gauge,
        help: "RPCs running now (health and reflection included)",
        labels: Labels::None,
    },
    Series {
        name: OPEN_STREAMS,
        kind: Kind::Gauge,
        help: "open StreamTimeline streams",
        labels: Labels::Fixed("kind", &["follow", "history"]),
    },
    Series {
        name: IMPORT_ROWS,
        kind: Kind::Counter,
        help: "ImportCommunications items, by outcome",
        labels: Labels::Fixed("outcome", &["accepted", "duplicate", "rejected"]),
    },
    Series {
        name: POOL_CONNECTIONS,
        kind: Kind::Gauge,
        help: "pooled database connections, by state",
        labels: Labels::Fixed("state", &["idle", "in_use"]),
    },
    Series {
        name: REPLICA_IN_USE,
        kind: Kind::Gauge,
        help: "1 while reads that may be stale go to the read replica, 0 otherwise",
        labels: Labels::None,
    },
    Series {
        name: REPLICA_LAG,
        kind: Kind::Gauge,
        help: "seconds the read replica is behind the primary, as last measured",
        labels: Labels::None,
    },
    Series {
        name: READS,
        kind: Kind::Counter,
        help: "reads that may be stale, by the pool that served them",
        labels: Labels::Fixed("target", &["replica", "primary"]),
    },
    Series {
        name: TX_CONFLICTS,
        kind: Kind::Counter,
        help: "write transactions refused by a concurrent one (deadlock, lock wait, cluster certification), by outcome",
        labels: Labels::Fixed("outcome", &["retried", "gave_up"]),
    },
    Series {
        name: POOL_MAX,
        kind: Kind::Gauge,
        help: "the most connections the pool opens",
        labels: Labels::None,
    },
    Series {
        name: POOL_WAITS,
        kind: Kind::Counter,
        help: "connection checkouts that had to wait",
        labels: Labels::None,
    },
    Series {
        name: POOL_TIMEOUTS,
        kind: Kind::Counter,
        help: "connection checkouts that timed out",
        labels: Labels::None,
    },
    Series {
        name: DB_ERRORS,
        kind: Kind::Counter,
        help: "failed database statements, by kind",
        labels: Labels::Fixed("kind", &["unavailable", "conflict", "other"]),
    },
    Series {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        help: "1, labelled with the version and the database backend",
        labels: Labels::AtStart,
    },
];

/// Every gRPC code, for the `code` label.
const CODES: [tonic::Code; 17] = [
    tonic::Code::Ok,
    tonic::Code::Cancelled,
    tonic::Code::Unknown,
    tonic::Code::InvalidArgument,
    tonic::Code::DeadlineExceeded,
    tonic::Code::NotFound,
    tonic::Code::AlreadyExists,
    tonic::Code::PermissionDenied,
    tonic::Code::ResourceExhausted,
    tonic::Code::FailedPrecondition,
    tonic::Code::Aborted,
    tonic::Code::OutOfRange,
    tonic::Code::Unimplemented,
    tonic::Code::Internal,
    tonic::Code::Unavailable,
    tonic::Code::DataLoss,
    tonic::Code::Unauthenticated,
];

/// Latency buckets of `crm_rpc_duration_seconds`, 0.5 ms to 30 s.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// Whether a recorder is installed: without one the per-call functions return at once
/// instead of building labels for nobody.
static ENABLED: AtomicBool = AtomicBool::new(false);

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Installs the process-wide recorder and serves the Prometheus text format over HTTP on
/// `addr` (at `/metrics`, or any path but `/health`), every series described and at
/// zero. One per process.
pub fn install(addr: SocketAddr, backend: &str) -> anyhow::Result<()> {
    let (recorder, exporter) = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(RPC_DURATION.to_owned()),
            &BUCKETS,
        )
        .context("histogram buckets")?
        .build()
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    ENABLED.store(true, Ordering::Relaxed);
    // Every series exists before the first scrape can see the listener.
    for series in SERIES {
        start_at_zero(series);
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "backend" => backend.to_owned())
        .set(1.0);
    tokio::spawn(async move {
        if let Err(e) = exporter.await {
            tracing::error!("the metrics listener stopped: {e:?}");
        }
    });
    tracing::info!(listen = %addr, "serving Prometheus metrics at /metrics");
    Ok(())
}

/// Describes `series` and registers it at zero with every label value known up front.
fn start_at_zero(series: &Series) {
    let name = series.name;
    match series.kind {
        Kind::Counter => describe_counter!(name, series.help),
        Kind::Gauge => describe_gauge!(name, series.help),
        Kind::Histogram => describe_histogram!(name, series.help),
    }
    let mut label_sets: Vec<Vec<(&'static str, String)>> = Vec::new();
    match series.labels {
        Labels::None => label_sets.push(Vec::new()),
        Labels::Fixed(label, values) => {
            label_sets.extend(values.iter().map(|v| vec![(label, (*v).to_owned())]));
        }
        Labels::Method => {
            label_sets.extend(known_methods().map(|m| vec![("method", m)]));
        }
        Labels::MethodAndCode => {
            for method in known_methods() {
                for code in CODES {
                    label_sets.push(vec![
                        ("method", method.clone()),
                        ("code", format!("{code:?}")),
                    ]);
                }
            }
        }
        Labels::AtStart => {}
    }
    for labels in label_sets {
        let labels: Vec<metrics::Label> = labels
            .into_iter()
            .map(|(k, v)| metrics::Label::new(k, v))
            .collect();
        match series.kind {
            Kind::Counter => counter!(name, labels).increment(0),
            // `increment(0)` registers the gauge without overwriting a value set already.
            Kind::Gauge => gauge!(name, labels).increment(0.0),
            Kind::Histogram => drop(histogram!(name, labels)),
        }
    }
}

/// The `method` label values, sorted, `other` included.
fn known_methods() -> impl Iterator<Item = String> {
    let mut methods: Vec<String> = KNOWN_METHODS.iter().cloned().collect();
    methods.push("other".to_owned());
    methods.sort();
    methods.into_iter()
}

/// The request paths of the API, health and reflection: the only `method` label values
/// besides `other`, so a client cannot grow the label set with made-up paths.
static KNOWN_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut known = HashSet::new();
    for set in [
        crate::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        if let Ok(set) = prost_types::FileDescriptorSet::decode(set) {
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
    }
    for version in ["v1", "v1alpha"] {
        known.insert(format!(
            "/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
        ));
    }
    known
});

/// The `method` label of a request path.
pub fn method_label(path: &str) -> String {
    if KNOWN_METHODS.contains(path) {
        path.to_owned()
    } else {
        "other".to_owned()
    }
}

/// An RPC started.
pub fn rpc_started() {
    if !enabled() {
        return;
    }
    gauge!(RPC_IN_FLIGHT).increment(1.0);
}

/// An RPC ended with `code` after `elapsed`.
pub fn rpc_finished(method: &str, code: tonic::Code, elapsed: Duration) {
    if !enabled() {
        return;
    }
    let method = method_label(method);
    gauge!(RPC_IN_FLIGHT).decrement(1.0);
    counter!(RPC_REQUESTS, "method" => method.clone(), "code" => format!("{code:?}")).increment(1);
    histogram!(RPC_DURATION, "method" => method).record(elapsed.as_secs_f64());
}

/// An open timeline stream; counted in `crm_open_streams` until dropped.
#[derive(Debug)]
pub struct OpenStream {
    kind: &'static str,
}

impl OpenStream {
    /// A stream opened now: a follow stream or one reading history only.
    pub fn new(follow: bool) -> OpenStream {
        let kind = if follow { "follow" } else { "history" };
        gauge!(OPEN_STREAMS, "kind" => kind).increment(1.0);
        OpenStream { kind }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        gauge!(OPEN_STREAMS, "kind" => self.kind).decrement(1.0);
    }
}

/// Items of an import: stored, duplicates, rejected.
pub fn import_rows(accepted: i64, duplicate: i64, rejected: i64) {
    for (outcome, n) in [
        ("accepted", accepted),
        ("duplicate", duplicate),
        ("rejected", rejected),
    ] {
        counter!(IMPORT_ROWS, "outcome" => outcome).increment(n.max(0) as u64);
    }
}

/// A statement failed in the database (`unavailable`: the connection or the server,
/// `conflict`: a deadlock or lock timeout that outlived the retries, `other`).
pub fn db_error(kind: &'static str) {
    counter!(DB_ERRORS, "kind" => kind).increment(1);
}

/// A write transaction was refused by a concurrent one: `retried` when it runs again,
/// otherwise it gave up (the retry budget ran out).
pub fn transaction_conflict(retried: bool) {
    let outcome = if retried { "retried" } else { "gave_up" };
    counter!(TX_CONFLICTS, "outcome" => outcome).increment(1);
}

/// The most connections the pool opens.
pub fn pool_max(max: u32) {
    gauge!(POOL_MAX).set(f64::from(max));
}

/// A snapshot of the pool (`crate::db::Db::pool_stats`), exported by [`pool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open.
    pub connections: u32,
    /// Of those, idle.
    pub idle: u32,
    /// Check-outs that had to wait, since start.
    pub waited: u64,
    /// Check-outs that gave up waiting, since start.
    pub timed_out: u64,
}

/// The pool's state, as read now.
pub fn pool(stats: &PoolStats) {
    gauge!(POOL_CONNECTIONS, "state" => "idle").set(f64::from(stats.idle));
    gauge!(POOL_CONNECTIONS, "state" => "in_use")
        .set(f64::from(stats.connections.saturating_sub(stats.idle)));
    counter!(POOL_WAITS).absolute(stats.waited);
    counter!(POOL_TIMEOUTS).absolute(stats.timed_out);
}

/// Whether reads go to the read replica now (1) or to the primary (0).
pub fn replica_in_use(in_use: bool) {
    gauge!(REPLICA_IN_USE).set(if in_use { 1.0 } else { 0.0 });
}

/// How far the read replica trails the primary, as last measured (unknown: not set).
pub fn replica_lag(lag: Option<Duration>) {
    if let Some(lag) = lag {
        gauge!(REPLICA_LAG).set(lag.as_secs_f64());
    }
}

/// A read was routed to `target` (`replica` or `primary`) by `Db::reader`.
pub fn replica_read(target: &'static str) {
    counter!(READS, "target" => target).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_recorded_is_listed_in_series() {
        // Every name this file records is a `const` here, and each is in SERIES.
        let source = include_str!("metrics.rs");
        let names: Vec<&str> = source
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|lit| lit.starts_with("crm_") && !lit.contains(' '))
            .collect();
        assert!(names.len() >= SERIES.len(), "{names:?}");
        for name in names {
            assert!(
                SERIES.iter().any(|s| s.name == name),
                "{name} is recorded but not in SERIES"
            );
        }
        // Nothing records metrics outside this file.
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("src/metrics.rs")
                {
                    let text = std::fs::read_to_string(&path).expect("read");
                    for mac in ["counter!(", "gauge!(", "histogram!("] {
                        assert!(
                            !text.contains(mac),
                            "{} records {mac}; record it in metrics.rs",
                            path.display()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn only_known_paths_become_method_labels() {
        assert_eq!(
            method_label("/crm.v1.CustomerService/GetCustomer"),
            "/crm.v1.CustomerService/GetCustomer"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/crm.v1.CustomerService/Nope"), "other");
        assert_eq!(method_label("/../../etc/passwd"), "other");
    }
}

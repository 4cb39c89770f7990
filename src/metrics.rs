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
use metrics::{counter, gauge, histogram};
use prost::Message;

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
/// `addr` (at `/metrics`, or any path but `/health`). One per process.
pub fn install(addr: SocketAddr, backend: &str) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("crm_rpc_duration_seconds".to_owned()),
            &BUCKETS,
        )
        .context("histogram buckets")?
        .install()
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    ENABLED.store(true, Ordering::Relaxed);
    gauge!("crm_build_info", "version" => env!("CARGO_PKG_VERSION"), "backend" => backend.to_owned())
        .set(1.0);
    tracing::info!(listen = %addr, "serving Prometheus metrics at /metrics");
    Ok(())
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
    gauge!("crm_rpc_in_flight").increment(1.0);
}

/// An RPC ended with `code` after `elapsed`.
pub fn rpc_finished(method: &str, code: tonic::Code, elapsed: Duration) {
    if !enabled() {
        return;
    }
    let method = method_label(method);
    gauge!("crm_rpc_in_flight").decrement(1.0);
    counter!("crm_rpc_requests_total", "method" => method.clone(), "code" => format!("{code:?}"))
        .increment(1);
    histogram!("crm_rpc_duration_seconds", "method" => method).record(elapsed.as_secs_f64());
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
        gauge!("crm_open_streams", "kind" => kind).increment(1.0);
        OpenStream { kind }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        gauge!("crm_open_streams", "kind" => self.kind).decrement(1.0);
    }
}

/// Items of an import: stored, duplicates, rejected.
pub fn import_rows(accepted: i64, duplicate: i64, rejected: i64) {
    for (outcome, n) in [
        ("accepted", accepted),
        ("duplicate", duplicate),
        ("rejected", rejected),
    ] {
        counter!("crm_import_rows_total", "outcome" => outcome).increment(n.max(0) as u64);
    }
}

/// A statement failed in the database (`unavailable`: the connection or the server,
/// `conflict`: a deadlock or lock timeout that outlived the retries, `other`).
pub fn db_error(kind: &'static str) {
    counter!("crm_db_errors_total", "kind" => kind).increment(1);
}

/// A write transaction was refused by a concurrent one: `retried` when it runs again,
/// otherwise it gave up (the retry budget ran out).
pub fn transaction_conflict(retried: bool) {
    let outcome = if retried { "retried" } else { "gave_up" };
    counter!("crm_db_transaction_conflicts_total", "outcome" => outcome).increment(1);
}

/// The most connections the pool opens.
pub fn pool_max(max: u32) {
    gauge!("crm_db_pool_max_connections").set(f64::from(max));
}

/// The pool's state, as read now.
pub fn pool(stats: &crate::db::PoolStats) {
    gauge!("crm_db_pool_connections", "state" => "idle").set(f64::from(stats.idle));
    gauge!("crm_db_pool_connections", "state" => "in_use")
        .set(f64::from(stats.connections.saturating_sub(stats.idle)));
    counter!("crm_db_pool_waits_total").absolute(stats.waited);
    counter!("crm_db_pool_timeouts_total").absolute(stats.timed_out);
}

/// Whether reads go to the read replica now (1) or to the primary (0).
pub fn replica_in_use(in_use: bool) {
    gauge!("crm_db_replica_in_use").set(if in_use { 1.0 } else { 0.0 });
}

/// How far the read replica trails the primary, as last measured (unknown: not set).
pub fn replica_lag(lag: Option<Duration>) {
    if let Some(lag) = lag {
        gauge!("crm_db_replica_lag_seconds").set(lag.as_secs_f64());
    }
}

/// A read was routed to `target` (`replica` or `primary`) by `Db::reader`.
pub fn replica_read(target: &'static str) {
    counter!("crm_db_reads_total", "target" => target).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

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

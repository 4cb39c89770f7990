//! Write transactions under concurrent mixed load: no call answers ABORTED for a conflict
//! between writers that touch different customers, and every acknowledged write is stored.
//!
//! `mixed_write_load` is also the conflict probe of BENCHMARKS.md: by default a short run
//! (16 clients, 3 s) that is part of `cargo test`; `CRM_CONFLICT_PROBE_CLIENTS` and
//! `CRM_CONFLICT_PROBE_SECS` make it the full probe (32 clients, 20 s), which prints per-RPC
//! counts and, on MariaDB, the InnoDB deadlocks of the run (`Innodb_deadlocks` delta, and
//! the distinct `LATEST DETECTED DEADLOCK` sections seen in this run's database, of which
//! there must be none).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crm_comms::pb;
use mysql_async::prelude::Queryable;
use prost_types::FieldMask;
use tonic::Code;

use crate::backend_tests;
use crate::harness::{log, note, ts, Backend, TestApp};

/// The RPCs of the mix, in report order.
const RPCS: [&str; 7] = [
    "CreateCustomer",
    "LogCommunication",
    "CreateTransaction",
    "CreateServiceTicket",
    "UpdateCustomer",
    "MergeCustomers",
    "DeleteCommunication",
];

/// Calls and outcomes of one RPC.
#[derive(Debug, Default, Clone)]
struct Tally {
    calls: u64,
    aborted: u64,
    /// Other failures by code.
    failed: BTreeMap<String, u64>,
}

/// What the clients did, shared by them.
#[derive(Debug, Default)]
struct Run {
    tallies: BTreeMap<&'static str, Tally>,
    /// Acknowledged communications (stored ids) not acknowledged as deleted.
    communications: BTreeSet<i64>,
    transactions: u64,
    tickets: u64,
    /// Acknowledged merges: (survivor, merged).
    merges: Vec<(i64, i64)>,
    /// Unexpected answers (first few), for the failure message.
    odd: Vec<String>,
}

impl Run {
    /// Counts a call of `rpc` that answered `outcome`; the value when it succeeded.
    fn count<T>(&mut self, rpc: &'static str, outcome: Result<T, tonic::Status>) -> Option<T> {
        let tally = self.tallies.entry(rpc).or_default();
        tally.calls += 1;
        match outcome {
            Ok(v) => Some(v),
            Err(e) => {
                if e.code() == Code::Aborted {
                    tally.aborted += 1;
                } else {
                    *tally.failed.entry(format!("{:?}", e.code())).or_default() += 1;
                }
                if self.odd.len() < 10 {
                    self.odd
                        .push(format!("{rpc}: {:?} {}", e.code(), e.message()));
                }
                None
            }
        }
    }
}

/// A small deterministic generator per client (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn customer_request(name: String, tags: &[&str]) -> pb::CreateCustomerRequest {
    pb::CreateCustomerRequest {
        customer: Some(pb::Customer {
            name,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

fn transaction_request(customer_id: i64, order: String) -> pb::CreateTransactionRequest {
    pb::CreateTransactionRequest {
        transaction: Some(pb::Transaction {
            customer_id,
            order_number: order,
            product: "widget".into(),
            amount: Some(pb::Money {
                currency_code: "CNY".into(),
                units: 12,
                nanos: 500_000_000,
            }),
            occur_time: Some(ts("2026-03-01T10:00:00Z")),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

fn ticket_request(customer_id: i64) -> pb::CreateServiceTicketRequest {
    pb::CreateServiceTicketRequest {
        service_ticket: Some(pb::ServiceTicket {
            customer_id,
            issue: "broken".into(),
            status: pb::TicketStatus::Open as i32,
            open_time: Some(ts("2026-03-01T10:00:00Z")),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

/// One client: mixed writes until `until`. Customers of `shared` take the writes of every
/// client; a merge works on a fresh pair of its own, each with a few rows.
async fn client(app: &TestApp, k: u64, shared: Vec<i64>, until: Instant, run: Arc<Mutex<Run>>) {
    let channel = app.new_channel().await;
    let mut customers = pb::customer_service_client::CustomerServiceClient::new(channel.clone());
    let mut comms = pb::communication_service_client::CommunicationServiceClient::new(channel);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (k + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut mine: Vec<i64> = Vec::new();
    let mut n = 0u64;
    let day = |i: u64| format!("2026-0{}-{:02}T{:02}:00:00Z", 1 + i % 6, 1 + i % 28, i % 24);
    while Instant::now() < until {
        n += 1;
        let target = shared[rng.below(shared.len() as u64) as usize];
        match rng.below(20) {
            0..=1 => {
                let out = customers
                    .create_customer(customer_request(
                        format!("c{k}-{n}"),
                        &["vip", "newsletter"][..(n % 3) as usize],
                    ))
                    .await;
                run.lock().unwrap().count("CreateCustomer", out);
            }
            2..=7 => {
                let c = note(target, &format!("note {k}-{n}"), &day(n + k));
                let out = comms.log_communication(log(c, "")).await;
                let id = run.lock().unwrap().count("LogCommunication", out);
                if let Some(r) = id {
                    let id = r.into_inner().id;
                    mine.push(id);
                    run.lock().unwrap().communications.insert(id);
                }
            }
            8..=10 => {
                let out = customers
                    .create_transaction(transaction_request(target, format!("SO-{k}-{n}")))
                    .await;
                let mut run = run.lock().unwrap();
                if run.count("CreateTransaction", out).is_some() {
                    run.transactions += 1;
                }
            }
            11..=12 => {
                let out = customers
                    .create_service_ticket(ticket_request(target))
                    .await;
                let mut run = run.lock().unwrap();
                if run.count("CreateServiceTicket", out).is_some() {
                    run.tickets += 1;
                }
            }
            13..=14 => {
                // No etag: the server applies the change to whatever version is current.
                let out = customers
                    .update_customer(pb::UpdateCustomerRequest {
                        customer: Some(pb::Customer {
                            id: target,
                            address: format!("street {k}-{n}"),
                            ..Default::default()
                        }),
                        update_mask: Some(FieldMask {
                            paths: vec!["address".into()],
                        }),
                    })
                    .await;
                run.lock().unwrap().count("UpdateCustomer", out);
            }
            15..=17 => merge_fresh_pair(&mut customers, &mut comms, k, n, &run).await,
            _ => {
                if let Some(id) = mine.pop() {
                    let out = comms
                        .delete_communication(pb::DeleteCommunicationRequest { id })
                        .await;
                    let mut run = run.lock().unwrap();
                    if run.count("DeleteCommunication", out).is_some() {
                        run.communications.remove(&id);
                    }
                }
            }
        }
    }
}

/// Two fresh customers, each with two communications and a transaction; the second is
/// merged into the first.
async fn merge_fresh_pair(
    customers: &mut pb::customer_service_client::CustomerServiceClient<tonic::transport::Channel>,
    comms: &mut pb::communication_service_client::CommunicationServiceClient<
        tonic::transport::Channel,
    >,
    k: u64,
    n: u64,
    run: &Arc<Mutex<Run>>,
) {
    let mut pair = Vec::new();
    for (side, tag) in [("survivor", "vip"), ("source", "wholesale")] {
        let out = customers
            .create_customer(customer_request(format!("{side} {k}-{n}"), &[tag]))
            .await;
        let Some(r) = run.lock().unwrap().count("CreateCustomer", out) else {
            return;
        };
        let id = r.into_inner().id;
        pair.push(id);
        for i in 0..2u64 {
            let at = format!("2026-0{}-1{i}T08:00:00Z", 1 + (n + i) % 6);
            let out = comms
                .log_communication(log(note(id, &format!("{side} {k}-{n}-{i}"), &at), ""))
                .await;
            let mut run = run.lock().unwrap();
            if let Some(r) = run.count("LogCommunication", out) {
                run.communications.insert(r.into_inner().id);
            }
        }
        let out = customers
            .create_transaction(transaction_request(id, format!("M-{side}-{k}-{n}")))
            .await;
        let mut run = run.lock().unwrap();
        if run.count("CreateTransaction", out).is_some() {
            run.transactions += 1;
        }
    }
    let out = customers
        .merge_customers(pb::MergeCustomersRequest {
            surviving_customer_id: pair[0],
            merged_customer_ids: vec![pair[1]],
            request_id: format!("merge-{k}-{n}"),
        })
        .await;
    let mut run = run.lock().unwrap();
    if run.count("MergeCustomers", out).is_some() {
        run.merges.push((pair[0], pair[1]));
    }
}

/// InnoDB's deadlock count and the deadlocks of one database seen while a run lasts.
struct DeadlockWatch {
    url: String,
    database: String,
    before: u64,
    stop: tokio::sync::watch::Sender<bool>,
    sampler: tokio::task::JoinHandle<BTreeMap<String, String>>,
}

async fn innodb_deadlocks(conn: &mut mysql_async::Conn) -> u64 {
    let row: Option<(String, u64)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")
        .await
        .expect("Innodb_deadlocks");
    row.map_or(0, |(_, n)| n)
}

/// The `LATEST DETECTED DEADLOCK` section of `SHOW ENGINE INNODB STATUS`, if any.
async fn latest_deadlock(conn: &mut mysql_async::Conn) -> Option<String> {
    let row: Option<(String, String, String)> =
        conn.query_first("SHOW ENGINE INNODB STATUS").await.ok()?;
    let status = row?.2;
    let start = status.find("LATEST DETECTED DEADLOCK")?;
    let rest = &status[start..];
    let end = rest.find("\nTRANSACTIONS\n").unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

impl DeadlockWatch {
    async fn start(app: &TestApp) -> DeadlockWatch {
        let url = app.database_url.clone();
        let database = url.rsplit('/').next().unwrap_or_default().to_owned();
        let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
        let before = innodb_deadlocks(&mut conn).await;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let needle = format!("`{database}`");
        let sampler = tokio::spawn(async move {
            // The status shows only the latest deadlock: polled often, keyed by its time.
            let mut seen = BTreeMap::new();
            loop {
                if let Some(text) = latest_deadlock(&mut conn).await {
                    if text.contains(&needle) {
                        let key = text.lines().nth(2).unwrap_or_default().to_owned();
                        seen.entry(key).or_insert(text);
                    }
                }
                if *stopped.borrow() {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), stopped.changed()).await;
            }
            let _ = conn.disconnect().await;
            seen
        });
        DeadlockWatch {
            url,
            database,
            before,
            stop,
            sampler,
        }
    }

    /// The server-wide deadlock delta and this database's distinct deadlocks seen.
    async fn finish(self) -> (u64, Vec<String>) {
        let _ = self.stop.send(true);
        let seen = self.sampler.await.unwrap();
        let mut conn = mysql_async::Conn::from_url(self.url.as_str())
            .await
            .unwrap();
        let after = innodb_deadlocks(&mut conn).await;
        conn.disconnect().await.unwrap();
        let _ = &self.database;
        (after - self.before, seen.into_values().collect())
    }
}

/// The lines of a deadlock report that name its statements and locks.
fn deadlock_summary(text: &str) -> String {
    text.lines()
        .filter(|l| {
            l.starts_with("*** (")
                || l.starts_with("RECORD LOCKS")
                || l.starts_with("TABLE LOCK")
                || l.starts_with("INSERT")
                || l.starts_with("UPDATE")
                || l.starts_with("DELETE")
                || l.starts_with("SELECT")
                || l.contains("WE ROLL BACK")
        })
        .map(|l| l.chars().take(220).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

backend_tests! {
    async fn mixed_write_load_answers_no_aborted_and_loses_no_write(app: &TestApp) {
        let clients = env_or("CRM_CONFLICT_PROBE_CLIENTS", 16);
        let secs = env_or("CRM_CONFLICT_PROBE_SECS", 3);
        let probe = std::env::var_os("CRM_CONFLICT_PROBE_SECS").is_some();
        let mut shared = Vec::new();
        for i in 0..48 {
            let mut customers = app.customers();
            let r = customers.create_customer(customer_request(format!("shared {i}"), &[])).await;
            shared.push(r.unwrap().into_inner().id);
        }
        let watch = match app.backend {
            Backend::Mysql => Some(DeadlockWatch::start(app).await),
            Backend::Sqlite => None,
        };
        let run = Arc::new(Mutex::new(Run::default()));
        let started = Instant::now();
        let until = started + Duration::from_secs(secs);
        let tasks = (0..clients).map(|k| client(app, k, shared.clone(), until, run.clone()));
        futures_util::future::join_all(tasks).await;
        let elapsed = started.elapsed().as_secs_f64();
        let deadlocks = match watch {
            Some(w) => Some(w.finish().await),
            None => None,
        };
        let run = std::mem::take(&mut *run.lock().unwrap());

        let (mut calls, mut aborted) = (0, 0);
        let mut report = format!(
            "conflict probe, {:?}: {clients} clients, {elapsed:.1} s\n{:<20} {:>7} {:>8} {:>8}  other\n",
            app.backend, "rpc", "calls", "aborted", "%"
        );
        for rpc in RPCS {
            let t = run.tallies.get(rpc).cloned().unwrap_or_default();
            calls += t.calls;
            aborted += t.aborted;
            report += &format!(
                "{rpc:<20} {:>7} {:>8} {:>7.2}%  {:?}\n",
                t.calls,
                t.aborted,
                100.0 * t.aborted as f64 / t.calls.max(1) as f64,
                t.failed
            );
        }
        report += &format!(
            "{:<20} {calls:>7} {aborted:>8} {:>7.3}%\n",
            "all",
            100.0 * aborted as f64 / calls.max(1) as f64
        );
        if let Some((delta, seen)) = &deadlocks {
            report += &format!(
                "Innodb_deadlocks delta (server-wide): {delta}; distinct deadlocks seen in this database: {}\n",
                seen.len()
            );
            let shown = if probe { seen.len() } else { 2 };
            for text in seen.iter().take(shown) {
                report += &format!("---\n{}\n", deadlock_summary(text));
            }
        }
        eprintln!("{report}");

        // Every acknowledged write is stored: nothing lost, nothing extra.
        let stored = app.scalar("SELECT COUNT(*) FROM communications").await;
        assert_eq!(stored, run.communications.len() as i64, "communications\n{report}");
        let stored = app.scalar("SELECT COUNT(*) FROM transactions").await;
        assert_eq!(stored, run.transactions as i64, "transactions\n{report}");
        let stored = app.scalar("SELECT COUNT(*) FROM service_tickets").await;
        assert_eq!(stored, run.tickets as i64, "service tickets\n{report}");
        let stored = app.scalar("SELECT COUNT(*) FROM customers WHERE merged_into IS NOT NULL").await;
        assert_eq!(stored, run.merges.len() as i64, "merged customers\n{report}");
        for (survivor, merged) in run.merges.iter().take(50) {
            assert_eq!(app.count_where("communications", "customer_id", *merged).await, 0);
            assert_eq!(app.count_where("transactions", "customer_id", *merged).await, 0);
            assert_eq!(app.count_where("communications", "customer_id", *survivor).await, 4);
            assert_eq!(app.count_where("transactions", "customer_id", *survivor).await, 2);
            assert_eq!(app.count_where("customer_tags", "customer_id", *survivor).await, 2);
        }
        let months = app.scalar("SELECT COALESCE(SUM(n), 0) FROM customer_months").await;
        assert_eq!(months, run.communications.len() as i64, "customer_months\n{report}");

        assert!(run.merges.len() >= 5 && calls >= 100, "too few calls to judge\n{report}");
        assert_eq!(aborted, 0, "no call answers ABORTED\n{report}\n{:?}", run.odd);
        let failed: u64 = run.tallies.values().flat_map(|t| t.failed.values()).sum();
        assert_eq!(failed, 0, "no call fails\n{report}\n{:?}", run.odd);
        // Retries hide a deadlock from the client; the database still names it.
        if let Some((_, seen)) = &deadlocks {
            assert!(seen.is_empty(), "no deadlock in this run's database\n{report}");
        }
    }
}

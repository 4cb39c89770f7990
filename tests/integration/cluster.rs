//! Several servers writing through different nodes of a 3-node MariaDB Galera cluster
//! (`tools/galera/cluster.sh`): conflicts, a concurrent first start, a node killed under
//! load, and follow streams fed by another node. Run when `CRM_GALERA_URLS` names it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crm_comms::pb::{self, timeline_event::Entry};
use mysql_async::prelude::Queryable;
use tonic::Code;

use crate::cluster_tests;
use crate::harness::{self, log, note, TestApp};

static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The nodes' server URLs (`mysql://root@127.0.0.1:3311`), from `CRM_GALERA_URLS`.
fn nodes() -> Vec<String> {
    let urls = std::env::var(harness::GALERA_URLS_VAR).expect("the runner checked it is set");
    let nodes: Vec<String> = urls
        .split(',')
        .map(|url| {
            let (scheme, rest) = url.trim().split_once("://").expect("a mysql:// URL");
            let authority = rest.split('/').next().unwrap_or(rest);
            format!("{scheme}://{authority}")
        })
        .collect();
    assert_eq!(
        nodes.len(),
        3,
        "{} names three nodes: {urls}",
        harness::GALERA_URLS_VAR
    );
    nodes
}

/// A fresh database on the cluster (`crm_cluster_*`), dropped at the end.
struct ClusterDb {
    name: String,
    nodes: Vec<String>,
}

impl ClusterDb {
    /// Creates the database through node 1 and waits until every node has it.
    async fn create() -> ClusterDb {
        let nodes = nodes();
        let name = format!(
            "crm_cluster_{}_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed),
            chrono::Utc::now().timestamp_subsec_micros()
        );
        harness::create_mysql_database(&format!("{}/test", nodes[0]), &name)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on the cluster: {e}"));
        let db = ClusterDb { name, nodes };
        // DDL replicates in total order, but a node applies it on its own time: wait
        // (`wsrep_sync_wait`) until each node has the database.
        for node in &db.nodes {
            let mut conn = mysql_async::Conn::from_url(format!("{node}/test").as_str())
                .await
                .unwrap_or_else(|e| panic!("connect to {node}: {e}"));
            conn.query_drop("SET SESSION wsrep_sync_wait = 1")
                .await
                .unwrap();
            let found: Option<String> = conn
                .exec_first(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                    (&db.name,),
                )
                .await
                .unwrap();
            assert!(found.is_some(), "{node} has {}", db.name);
            conn.disconnect().await.unwrap();
        }
        db
    }

    /// URL of this database through node `i` (0-based).
    fn url(&self, i: usize) -> String {
        format!("{}/{}", self.nodes[i], self.name)
    }

    /// A plain SQL connection through node `i` whose reads wait for every write the
    /// cluster committed before them (`wsrep_sync_wait`).
    async fn sql(&self, i: usize) -> mysql_async::Conn {
        let mut conn = mysql_async::Conn::from_url(self.url(i).as_str())
            .await
            .unwrap_or_else(|e| panic!("connect to node {}: {e}", i + 1));
        conn.query_drop("SET SESSION wsrep_sync_wait = 1")
            .await
            .unwrap();
        conn
    }
}

impl Drop for ClusterDb {
    fn drop(&mut self) {
        harness::drop_mysql_database(format!("{}/test", self.nodes[0]), self.name.clone());
    }
}

/// A server on the cluster database through node `i`, once it serves. Servers started
/// one after another each see what the previous ones wrote at start (the node catches
/// up first): starting together is `cluster_two_servers_start_together_on_a_new_database`.
async fn server_on(db: &ClusterDb, i: usize) -> TestApp {
    let mut conn = db.sql(i).await;
    // Empty until a first server ran its migrations; the read waits for the node to apply
    // everything committed before it.
    let _: Vec<String> = conn
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    let app = TestApp::start_on(&db.url(i), |_| {})
        .await
        .unwrap_or_else(|e| panic!("server on node {}: {e:#}", i + 1));
    assert_serves(&app, i).await;
    app
}

/// Panics unless the server on node `i` answers a call (its start-up work done).
async fn assert_serves(app: &TestApp, i: usize) {
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        app.customers().list_customers(pb::ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        }),
    )
    .await;
    match answer {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("the server on node {} does not serve: {e:?}", i + 1),
        Err(_) => panic!("the server on node {} does not answer within 30 s", i + 1),
    }
}

/// Creates a customer, retrying a conflict with the same idempotency key; its id.
async fn customer(app: &TestApp, name: &str) -> i64 {
    let mut client = app.customers();
    let request = pb::CreateCustomerRequest {
        customer: Some(pb::Customer {
            name: name.into(),
            ..Default::default()
        }),
        request_id: format!("c-{name}"),
    };
    for _ in 0..20 {
        match client.create_customer(request.clone()).await {
            Ok(r) => return r.into_inner().id,
            Err(e) if retryable(e.code()) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("create customer {name}: {e:?}"),
        }
    }
    panic!("create customer {name}: still failing after 20 tries")
}

/// Waits until customer `id` reads through `app` (written through another node).
async fn visible(app: &TestApp, id: i64) {
    let mut client = app.customers();
    for _ in 0..50 {
        if client
            .get_customer(pb::GetCustomerRequest { id })
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("customer {id} not visible through the other server within 5 s");
}

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Aborted | Code::Unavailable | Code::DeadlineExceeded
    )
}

/// One LogCommunication call and its answer.
#[derive(Debug, Clone)]
struct LogCall {
    request_id: String,
    customer_id: i64,
    content: String,
    /// 0: server A (node 1), 1: server B (node 2).
    server: usize,
    /// What the test was doing when the call started (test-specific phases).
    phase: u8,
    outcome: Result<i64, Code>,
}

/// A stored communication as node 3 reads it: `(customer_id, content, request_id)`.
type Stored = (i64, String, Option<String>);

/// Every communication of the database, by id, read through node 3.
async fn stored(db: &ClusterDb) -> HashMap<i64, Stored> {
    let mut conn = db.sql(2).await;
    let rows: Vec<(i64, i64, String, Option<String>)> = conn
        .query("SELECT id, customer_id, content, request_id FROM communications")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    rows.into_iter()
        .map(|(id, c, content, key)| (id, (c, content, key)))
        .collect()
}

/// The verdict on a set of LogCommunication calls after replaying the failed ones.
#[derive(Debug, Default)]
struct Verdict {
    /// Acknowledged calls whose row is missing or differs (customer, content).
    lost: Vec<String>,
    /// Failed calls whose row existed anyway (committed, answer lost).
    ghosts: usize,
    /// Failed calls whose replay answered another id than the row that existed.
    replay_mismatches: Vec<String>,
    /// Failed calls whose replay kept failing.
    unreplayed: Vec<String>,
    /// Request ids stored more than once, and contents stored more than once.
    duplicates: Vec<String>,
    /// Calls (after replay) with no row at all.
    missing: usize,
}

/// Checks every call against node 3, replays the failed ones through `app` (same key,
/// same content), and checks again that each call's request id is stored exactly once.
async fn verify_calls(db: &ClusterDb, app: &TestApp, calls: &[LogCall]) -> Verdict {
    let mut verdict = Verdict::default();
    let before = stored(db).await;
    let by_key: HashMap<&str, i64> = before
        .iter()
        .filter_map(|(id, (_, _, key))| key.as_deref().map(|k| (k, *id)))
        .collect();
    let mut client = app.communications();
    for call in calls {
        match call.outcome {
            Ok(id) => match before.get(&id) {
                Some((c, content, _)) if *c == call.customer_id && *content == call.content => {}
                other => verdict.lost.push(format!(
                    "{} acknowledged as {id}, stored {other:?}",
                    call.request_id
                )),
            },
            Err(_) => {
                let existing = by_key.get(call.request_id.as_str()).copied();
                verdict.ghosts += usize::from(existing.is_some());
                let c = note(call.customer_id, &call.content, "2026-01-01T00:00:00Z");
                let mut replayed = None;
                for _ in 0..40 {
                    match client
                        .log_communication(log(c.clone(), &call.request_id))
                        .await
                    {
                        Ok(r) => {
                            replayed = Some(r.into_inner().id);
                            break;
                        }
                        Err(e) if retryable(e.code()) => {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        Err(e) => {
                            verdict
                                .unreplayed
                                .push(format!("{}: {e:?}", call.request_id));
                            break;
                        }
                    }
                }
                match (existing, replayed) {
                    (Some(was), Some(now)) if was != now => {
                        verdict.replay_mismatches.push(format!(
                            "{}: stored as {was}, replay answered {now}",
                            call.request_id
                        ))
                    }
                    (_, None)
                        if !verdict
                            .unreplayed
                            .iter()
                            .any(|u| u.starts_with(&call.request_id)) =>
                    {
                        verdict
                            .unreplayed
                            .push(format!("{}: still failing", call.request_id));
                    }
                    _ => {}
                }
            }
        }
    }
    let after = stored(db).await;
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    let mut per_content: HashMap<&str, usize> = HashMap::new();
    for (_, content, key) in after.values() {
        if let Some(k) = key {
            *per_key.entry(k.as_str()).or_default() += 1;
        }
        *per_content.entry(content.as_str()).or_default() += 1;
    }
    for call in calls {
        match per_key.get(call.request_id.as_str()).copied().unwrap_or(0) {
            0 => verdict.missing += 1,
            1 => {}
            n => verdict
                .duplicates
                .push(format!("request id {} stored {n} times", call.request_id)),
        }
        if let Some(n @ 2..) = per_content.get(call.content.as_str()).copied() {
            verdict
                .duplicates
                .push(format!("content {:?} stored {n} times", call.content));
        }
    }
    verdict
}

/// Failed calls per code, e.g. `{"Aborted": 3}`.
fn codes(calls: impl IntoIterator<Item = Result<i64, Code>>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for outcome in calls {
        if let Err(code) = outcome {
            *out.entry(format!("{code:?}")).or_default() += 1;
        }
    }
    out
}

/// One MergeCustomers call on a pair made for it, and its answer.
#[derive(Debug)]
struct MergeCall {
    survivor: i64,
    source: i64,
    /// The source's communications before the merge.
    moved: Vec<i64>,
    ok: Result<(), Code>,
}

/// Makes a fresh pair through `app` (the source with two communications) and merges
/// the source into the survivor; `None` when the preparation itself kept failing.
async fn merge_fresh_pair(app: &TestApp, tag: &str) -> Option<MergeCall> {
    let survivor = customer(app, &format!("{tag} survivor")).await;
    let source = customer(app, &format!("{tag} source")).await;
    let mut client = app.communications();
    let mut moved = Vec::new();
    for i in 0..2 {
        let c = note(
            source,
            &format!("{tag} source note {i}"),
            "2026-01-01T00:00:00Z",
        );
        let key = format!("{tag}-n{i}");
        let mut id = None;
        for _ in 0..20 {
            match client.log_communication(log(c.clone(), &key)).await {
                Ok(r) => {
                    id = Some(r.into_inner().id);
                    break;
                }
                Err(e) if retryable(e.code()) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("log for merge {tag}: {e:?}"),
            }
        }
        moved.push(id?);
    }
    let ok = app
        .customers()
        .merge_customers(pb::MergeCustomersRequest {
            surviving_customer_id: survivor,
            merged_customer_ids: vec![source],
            request_id: format!("{tag}-merge"),
        })
        .await
        .map(|_| ())
        .map_err(|e| e.code());
    Some(MergeCall {
        survivor,
        source,
        moved,
        ok,
    })
}

/// Whether a merge is applied whole (answered OK) or not at all (answered an error),
/// read through node 3 and through `app`; a description of what is wrong otherwise.
async fn merge_partial(db: &ClusterDb, app: &TestApp, m: &MergeCall) -> Option<String> {
    let mut conn = db.sql(2).await;
    let merged_into: Option<Option<i64>> = conn
        .exec_first(
            "SELECT merged_into FROM customers WHERE id = ?",
            (m.source,),
        )
        .await
        .unwrap();
    let owners: Vec<i64> = conn
        .exec(
            format!(
                "SELECT customer_id FROM communications WHERE id IN ({}, {})",
                m.moved[0], m.moved[1]
            ),
            (),
        )
        .await
        .unwrap();
    let records: Option<i64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM customer_merges WHERE customer_id = ?",
            (m.survivor,),
        )
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    let source_read = app
        .customers()
        .get_customer(pb::GetCustomerRequest { id: m.source })
        .await
        .map(|_| ())
        .map_err(|e| e.code());
    let (want_owner, want_into, want_records, want_read) = match m.ok {
        Ok(()) => (m.survivor, Some(m.survivor), 1, Err(Code::NotFound)),
        Err(_) => (m.source, None, 0, Ok(())),
    };
    let whole = merged_into == Some(want_into)
        && owners == vec![want_owner, want_owner]
        && records == Some(want_records)
        && source_read == want_read;
    (!whole).then(|| {
        format!(
            "merge {} <- {} answered {:?}: merged_into {merged_into:?}, communications owned by \
             {owners:?}, {records:?} merge records, source reads {source_read:?}",
            m.survivor, m.source, m.ok
        )
    })
}

/// The probe's duration: `CRM_GALERA_PROBE_SECS`, 8 s by default.
fn probe_duration() -> Duration {
    let secs = std::env::var("CRM_GALERA_PROBE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(8.0);
    Duration::from_secs_f64(secs)
}

/// Runs `tools/galera/cluster.sh` with `args`; panics unless it succeeds. Its time.
fn cluster_sh(args: &[&str]) -> Duration {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/galera/cluster.sh");
    let started = Instant::now();
    let out = std::process::Command::new(script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tools/galera/cluster.sh");
    let (ok, text) = harness::outcome(&out);
    assert!(ok, "cluster.sh {args:?} failed: {text}");
    started.elapsed()
}

/// Brings every node back (`cluster.sh start` rejoins the stopped ones and waits for a
/// cluster of 3) when the test ends, however it ends.
struct WholeClusterAtEnd;

impl Drop for WholeClusterAtEnd {
    fn drop(&mut self) {
        // Reported, not asserted: a panic here while the test unwinds would abort the run.
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/galera/cluster.sh");
        match std::process::Command::new(script)
            .arg("start")
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: the cluster is not whole again: {}",
                harness::outcome(&out).1
            ),
            Err(e) => eprintln!("warning: cannot run {script}: {e}"),
        }
    }
}

cluster_tests! {
    async fn cluster_conflict_probe() {
        let db = ClusterDb::create().await;
        let a = server_on(&db, 0).await;
        let b = server_on(&db, 1).await;
        let servers = Arc::new([a, b]);
        let mut shared = Vec::new();
        for i in 0..4 {
            shared.push(customer(&servers[0], &format!("shared {i}")).await);
        }
        for &id in &shared {
            visible(&servers[1], id).await;
        }

        let run_for = probe_duration();
        let started = Instant::now();
        let mut writers = Vec::new();
        for task in 0..16usize {
            let servers = servers.clone();
            let shared = shared.clone();
            writers.push(tokio::spawn(async move {
                let server = task % 2;
                let mut client = servers[server].communications();
                let mut calls = Vec::new();
                let mut seq = 0usize;
                while started.elapsed() < run_for {
                    let customer_id = shared[(task + seq) % shared.len()];
                    let request_id = format!("p{task}-{seq}");
                    let content = format!("probe {request_id} for {customer_id}");
                    let c = note(customer_id, &content, "2026-01-01T00:00:00Z");
                    let outcome = client
                        .log_communication(log(c, &request_id))
                        .await
                        .map(|r| r.into_inner().id)
                        .map_err(|e| e.code());
                    calls.push(LogCall { request_id, customer_id, content, server, phase: 0, outcome });
                    seq += 1;
                }
                calls
            }));
        }
        let mut mergers = Vec::new();
        for task in 0..2usize {
            let servers = servers.clone();
            mergers.push(tokio::spawn(async move {
                let mut merges = Vec::new();
                let mut round = 0usize;
                while started.elapsed() < run_for {
                    let server = (task + round) % 2;
                    if let Some(m) = merge_fresh_pair(&servers[server], &format!("m{task}-{round}")).await {
                        merges.push(m);
                    }
                    round += 1;
                }
                merges
            }));
        }
        let mut calls = Vec::new();
        for w in writers {
            calls.extend(w.await.unwrap());
        }
        let mut merges = Vec::new();
        for m in mergers {
            merges.extend(m.await.unwrap());
        }
        let elapsed = started.elapsed();

        let verdict = verify_calls(&db, &servers[0], &calls).await;
        // Through the API too: every customer's listing (server B, node 2) holds
        // exactly what node 3 stores for it.
        let rows = stored(&db).await;
        let mut listing_mismatches = Vec::new();
        for &customer_id in &shared {
            let mut listed = HashSet::new();
            let mut page_token = String::new();
            loop {
                let page = servers[1]
                    .communications()
                    .list_communications(pb::ListCommunicationsRequest {
                        customer_id,
                        page_size: 1000,
                        page_token: page_token.clone(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                listed.extend(page.communications.iter().map(|c| c.id));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let want: HashSet<i64> =
                rows.iter().filter(|(_, (c, _, _))| *c == customer_id).map(|(id, _)| *id).collect();
            if listed != want {
                listing_mismatches.push(format!(
                    "customer {customer_id}: listed {} rows, node 3 stores {}",
                    listed.len(),
                    want.len()
                ));
            }
        }
        let mut partial = Vec::new();
        for m in &merges {
            if let Some(why) = merge_partial(&db, &servers[0], m).await {
                partial.push(why);
            }
        }

        let acked = calls.iter().filter(|c| c.outcome.is_ok()).count();
        let merges_ok = merges.iter().filter(|m| m.ok.is_ok()).count();
        let total = calls.len() + merges.len();
        let aborted = calls.iter().filter(|c| c.outcome == Err(Code::Aborted)).count()
            + merges.iter().filter(|m| m.ok == Err(Code::Aborted)).count();
        let aborted_pct = 100.0 * aborted as f64 / total.max(1) as f64;
        let per_server: Vec<usize> =
            (0..2).map(|s| calls.iter().filter(|c| c.server == s && c.outcome.is_ok()).count()).collect();
        eprintln!(
            "cluster_conflict_probe: {:.1} s, {total} calls ({} LogCommunication, {} MergeCustomers), \
             {acked} logs acknowledged (A/node1 {}, B/node2 {}), {:.0} calls/s; failed logs by code {:?}; \
             merges {merges_ok} ok, failed by code {:?}; ABORTED {aborted} ({aborted_pct:.2} %); \
             lost {}; rows of failed calls {}; replay mismatches {}; unreplayed {}; duplicates {}; \
             missing after replay {}; listing mismatches {}; partial merges {}",
            elapsed.as_secs_f64(),
            calls.len(),
            merges.len(),
            per_server[0],
            per_server[1],
            total as f64 / elapsed.as_secs_f64(),
            codes(calls.iter().map(|c| c.outcome)),
            codes(merges.iter().map(|m| m.ok.map(|()| 0))),
            verdict.lost.len(),
            verdict.ghosts,
            verdict.replay_mismatches.len(),
            verdict.unreplayed.len(),
            verdict.duplicates.len(),
            verdict.missing,
            listing_mismatches.len(),
            partial.len(),
        );
        assert!(calls.len() >= 100 && !merges.is_empty(), "the probe made too few calls to judge");
        assert!(verdict.lost.is_empty(), "acknowledged writes lost: {:?}", &verdict.lost[..verdict.lost.len().min(10)]);
        assert!(partial.is_empty(), "partial merges: {:?}", &partial[..partial.len().min(10)]);
        assert!(verdict.replay_mismatches.is_empty(), "{:?}", verdict.replay_mismatches);
        assert!(verdict.duplicates.is_empty(), "{:?}", &verdict.duplicates[..verdict.duplicates.len().min(10)]);
        assert!(verdict.unreplayed.is_empty() && verdict.missing == 0, "{:?}", verdict.unreplayed);
        assert!(listing_mismatches.is_empty(), "{listing_mismatches:?}");
        assert!(aborted_pct < 1.0, "ABORTED {aborted} of {total} calls ({aborted_pct:.2} %)");
    }

    async fn cluster_two_servers_start_together_on_a_new_database() {
        let db = ClusterDb::create().await;
        let urls = [db.url(0), db.url(1), db.url(2)];
        let (a, b, c) = tokio::join!(
            TestApp::start_on(&urls[0], |_| {}),
            TestApp::start_on(&urls[1], |_| {}),
            TestApp::start_on(&urls[2], |_| {}),
        );
        let failed: Vec<String> = [&a, &b, &c]
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("server on node {}: {e:#}", i + 1)))
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
        let servers = [a.unwrap(), b.unwrap(), c.unwrap()];
        for (i, app) in servers.iter().enumerate() {
            assert_serves(app, i).await;
        }

        // Every migration applied once, and the servers serve one database.
        let mut conn = db.sql(2).await;
        let applied: Vec<String> = conn
            .query("SELECT version FROM __diesel_schema_migrations ORDER BY version")
            .await
            .unwrap();
        let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/mysql"))
            .unwrap()
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
            .count();
        assert_eq!(applied.len(), shipped, "{applied:?}");
        conn.disconnect().await.unwrap();
        let id = customer(&servers[0], "started together").await;
        visible(&servers[1], id).await;
        visible(&servers[2], id).await;
    }

    async fn cluster_follow_across_nodes() {
        follow_across_nodes("cluster_follow_across_nodes", None).await;
    }
}

/// A follow stream on server A (node 1) while four writers log through server B (node 2),
/// a third of it back-dated a day; with `lag`, node 1 pauses applying replicated writes
/// that long meanwhile. Every communication must arrive exactly once within 10 s of the
/// last write (and of the lag's end).
async fn follow_across_nodes(test: &str, lag: Option<Duration>) {
    let db = ClusterDb::create().await;
    let a = server_on(&db, 0).await;
    let b = Arc::new(server_on(&db, 1).await);
    let customer_id = customer(&b, "followed").await;
    visible(&a, customer_id).await;

    let mut stream = a
        .communications()
        .stream_timeline(pb::StreamTimelineRequest {
            customer_id,
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let received = Arc::new(std::sync::Mutex::new(HashMap::<i64, usize>::new()));
    let ended = Arc::new(std::sync::Mutex::new(None::<String>));
    let reader = {
        let (received, ended) = (received.clone(), ended.clone());
        tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(event)) => {
                        if let Some(Entry::Communication(c)) = event.entry {
                            *received.lock().unwrap().entry(c.id).or_default() += 1;
                        }
                    }
                    Ok(None) => break *ended.lock().unwrap() = Some("the stream ended".into()),
                    Err(e) => break *ended.lock().unwrap() = Some(format!("{e:?}")),
                }
            }
        })
    };
    let lagging = lag.map(|lag| {
        let node1 = format!("{}/test", db.nodes[0]);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut conn = mysql_async::Conn::from_url(node1.as_str()).await.unwrap();
            conn.query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .unwrap();
            tokio::time::sleep(lag).await;
            conn.query_drop("UNLOCK TABLES").await.unwrap();
            conn.disconnect().await.unwrap();
        })
    });

    // Four writers through B, a third of their communications back-dated a day; with a
    // lag they write for a second longer than it lasts.
    let (per_writer, pause) = match lag {
        None => (40, Duration::from_millis(50)),
        Some(lag) => (40, (lag + Duration::from_secs(1)) / 40),
    };
    let started = Instant::now();
    let mut writers = Vec::new();
    for task in 0..4 {
        let b = b.clone();
        writers.push(tokio::spawn(async move {
            let mut client = b.communications();
            let mut ids = Vec::new();
            for i in 0..per_writer {
                let when = chrono::Utc::now()
                    - if i % 3 == 0 {
                        chrono::Duration::days(1)
                    } else {
                        chrono::Duration::zero()
                    };
                let c = note(
                    customer_id,
                    &format!("follow {task}-{i}"),
                    &when.to_rfc3339(),
                );
                let key = format!("f{task}-{i}");
                let mut id = None;
                for _ in 0..20 {
                    match client.log_communication(log(c.clone(), &key)).await {
                        Ok(r) => {
                            id = Some(r.into_inner().id);
                            break;
                        }
                        Err(e) if retryable(e.code()) => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        Err(e) => panic!("log {key}: {e:?}"),
                    }
                }
                ids.push(id.unwrap_or_else(|| panic!("log {key}: still failing")));
                tokio::time::sleep(pause).await;
            }
            ids
        }));
    }
    let mut logged = HashSet::new();
    for w in writers {
        logged.extend(w.await.unwrap());
    }
    if let Some(lagging) = lagging {
        lagging.await.unwrap();
    }
    let written = started.elapsed();

    // Everything within 10 s of the last write, then a second more for duplicates.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !logged
            .iter()
            .all(|id| received.lock().unwrap().contains_key(id))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    reader.abort();
    let received = received.lock().unwrap().clone();
    let ended = ended.lock().unwrap().clone();
    let missing: Vec<i64> = logged
        .iter()
        .filter(|id| !received.contains_key(id))
        .copied()
        .collect();
    let repeated: Vec<(i64, usize)> = received
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    let unknown: Vec<i64> = received
        .keys()
        .filter(|id| !logged.contains(id))
        .copied()
        .collect();
    eprintln!(
        "{test}: {} logged through node 2 in {:.1} s ({} back-dated), {} delivered through \
         node 1 ({:.1} s of the 10 s wait left), missing {}, delivered more than once {}, \
         unknown {}; stream {}",
        logged.len(),
        written.as_secs_f64(),
        4 * (0..per_writer).filter(|i| i % 3 == 0).count(),
        received.len(),
        waited.as_secs_f64(),
        missing.len(),
        repeated.len(),
        unknown.len(),
        ended.as_deref().unwrap_or("open"),
    );
    assert!(ended.is_none(), "the follow stream ended: {ended:?}");
    assert!(missing.is_empty(), "not delivered within 10 s: {missing:?}");
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );
    assert!(
        unknown.is_empty(),
        "delivered but never logged: {unknown:?}"
    );
}

// These disturb a node for every database on it: they run last, one at a time.
cluster_tests! {
    exclusive: true;

    async fn cluster_follow_across_nodes_while_the_followed_node_lags() {
        // Node 1 stops applying for 5 s (FLUSH TABLES WITH READ LOCK desyncs it) while
        // node 2 keeps committing: rows reach the follower's node late, with old stamps.
        follow_across_nodes(
            "cluster_follow_across_nodes_while_the_followed_node_lags",
            Some(Duration::from_secs(5)),
        )
        .await;
    }

    async fn cluster_node_killed_under_write_load() {
        let _whole = WholeClusterAtEnd;
        let db = ClusterDb::create().await;
        let a = server_on(&db, 0).await;
        let b = server_on(&db, 1).await;
        let mut owners = Vec::new();
        for task in 0..8 {
            owners.push(customer(&a, &format!("writer {task}")).await);
        }
        for &id in &owners {
            visible(&b, id).await;
        }

        // Phases: 0 all up, 1 node 2 killed (until `restart 2` returns), 2 node 2 rejoined.
        let phase = Arc::new(AtomicU8::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for (task, &customer_id) in owners.iter().enumerate() {
            let server = task % 2;
            // No client-side deadline: the server alone answers DEADLINE_EXCEEDED.
            let channel = [&a, &b][server].untimed_channel().await;
            let (phase, stop) = (phase.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut client = pb::communication_service_client::CommunicationServiceClient::new(channel);
                let mut calls = Vec::new();
                let mut seq = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let request_id = format!("k{task}-{seq}");
                    let content = format!("load {request_id}");
                    let mut request = tonic::Request::new(log(
                        note(customer_id, &content, "2026-01-01T00:00:00Z"),
                        &request_id,
                    ));
                    request.set_timeout(Duration::from_secs(5));
                    let at = phase.load(Ordering::Relaxed);
                    let answer = tokio::time::timeout(
                        Duration::from_secs(20),
                        client.log_communication(request),
                    )
                    .await
                    // No answer 15 s past the deadline: a hang, recorded as UNKNOWN.
                    .unwrap_or_else(|_| Err(tonic::Status::unknown("no answer within 20 s")));
                    let outcome = answer.as_ref().map(|r| r.get_ref().id).map_err(|e| e.code());
                    if let Err(e) = &answer {
                        if !matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded) {
                            eprintln!(
                                "cluster_node_killed_under_write_load: {request_id} (server {}) \
                                 answered {:?}: {}",
                                ["A", "B"][server],
                                e.code(),
                                e.message()
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    calls.push(LogCall { request_id, customer_id, content, server, phase: at, outcome });
                    seq += 1;
                }
                calls
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        phase.store(1, Ordering::Relaxed);
        let kill = tokio::task::spawn_blocking(|| cluster_sh(&["kill", "2"])).await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let restart = tokio::task::spawn_blocking(|| cluster_sh(&["restart", "2"])).await.unwrap();
        phase.store(2, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        let mut calls = Vec::new();
        for w in writers {
            calls.extend(w.await.unwrap());
        }

        let verdict = verify_calls(&db, &a, &calls).await;
        let count = |server: usize, at: u8, ok: bool| {
            calls.iter().filter(|c| c.server == server && c.phase == at && c.outcome.is_ok() == ok).count()
        };
        let failed = codes(calls.iter().map(|c| c.outcome));
        let wrong: usize = failed
            .iter()
            .filter(|(code, _)| *code != "Unavailable" && *code != "DeadlineExceeded")
            .map(|(_, n)| n)
            .sum();
        eprintln!(
            "cluster_node_killed_under_write_load: kill {:.1} s, restart (recover + IST + size 3) {:.1} s; \
             {} calls; ok/failed per phase (up, node 2 down, rejoined): A {}/{} {}/{} {}/{}, B {}/{} {}/{} {}/{}; \
             failed by code {failed:?}; lost {}; rows of failed calls {}; replay mismatches {}; \
             unreplayed {}; duplicates {}; missing after replay {}",
            kill.as_secs_f64(),
            restart.as_secs_f64(),
            calls.len(),
            count(0, 0, true), count(0, 0, false), count(0, 1, true), count(0, 1, false), count(0, 2, true), count(0, 2, false),
            count(1, 0, true), count(1, 0, false), count(1, 1, true), count(1, 1, false), count(1, 2, true), count(1, 2, false),
            verdict.lost.len(),
            verdict.ghosts,
            verdict.replay_mismatches.len(),
            verdict.unreplayed.len(),
            verdict.duplicates.len(),
            verdict.missing,
        );
        assert!(verdict.lost.is_empty(), "acknowledged writes lost: {:?}", &verdict.lost[..verdict.lost.len().min(10)]);
        assert!(verdict.duplicates.is_empty(), "{:?}", &verdict.duplicates[..verdict.duplicates.len().min(10)]);
        assert!(verdict.replay_mismatches.is_empty(), "{:?}", verdict.replay_mismatches);
        assert!(verdict.unreplayed.is_empty() && verdict.missing == 0, "{:?}", verdict.unreplayed);
        assert_eq!(wrong, 0, "failed calls must answer UNAVAILABLE or DEADLINE_EXCEEDED: {failed:?}");
        assert!(count(0, 1, true) > 0, "server A (node 1) kept writing while node 2 was down");
        assert!(count(1, 2, true) > 0, "server B (node 2) writes again once node 2 rejoined");
    }
}

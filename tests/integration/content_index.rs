//! Content reports answered from the in-memory content index equal the same reports
//! scanned from the database, on generated data, after every write path (log, import,
//! delete, purge) made through another server (a second replica), under concurrent
//! writers, and for a row committed late below ids already seen.
//!
//! Each test compares a server whose index is loaded with a server on the same
//! database that has no index, whole responses.

use crm_comms::pb::{self, analytics_service_client::AnalyticsServiceClient};
use crm_comms::service::content_index::{ContentIndexHandle, SnapshotFile};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::backend_tests;
use crate::harness::{
    assert_status, delete_then_purge, import, log, log_each, new_customers, ts, TestApp,
};

/// Words the generated texts are made of: cases, Chinese, LIKE's special characters.
const WORDS: &[&str] = &[
    "Refund",
    "refund",
    "REFUND",
    "退款",
    "退款申请",
    "invoice",
    "Invoice",
    "发票",
    "delivery",
    "late",
    "请尽快处理",
    "配送",
    "100%",
    "a_b",
    "back\\slash",
    "Ünïcode",
    "STRASSE",
    "straße",
    "订单",
    "order",
    "thanks",
    "谢谢",
    "客服",
    "the",
    "and",
];

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A communication in 2024 with a generated text.
fn generated(rng: &mut Rng, customers: &[i64]) -> pb::Communication {
    let words = 1 + rng.below(10);
    let content = (0..words)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(if rng.below(3) == 0 { "" } else { " " });
    pb::Communication {
        customer_id: customers[rng.below(customers.len() as u64) as usize],
        channel: 1 + rng.below(4) as i32,
        direction: 1 + rng.below(2) as i32,
        occur_time: Some(prost_types::Timestamp {
            seconds: 1_704_067_200 + rng.below(366 * 86_400) as i64,
            nanos: 0,
        }),
        content,
        ..Default::default()
    }
}

/// A server whose content index is loaded, and a server without one.
async fn pair(
    app: &TestApp,
) -> (
    AnalyticsServiceClient<Channel>,
    AnalyticsServiceClient<Channel>,
    Vec<watch::Sender<bool>>,
) {
    let (stop_index, rx) = watch::channel(false);
    let index = ContentIndexHandle::start(app.db.clone(), rx);
    tokio::time::timeout(std::time::Duration::from_secs(60), index.wait_ready())
        .await
        .expect("the content index loads");
    let (indexed, stop_a) = app.another_server(|_| {}, Some(index)).await;
    let (scanned, stop_b) = app.another_server(|_| {}, None).await;
    (
        AnalyticsServiceClient::new(indexed),
        AnalyticsServiceClient::new(scanned),
        vec![stop_index, stop_a, stop_b],
    )
}

fn requests(customers: &[i64]) -> Vec<pb::GetContentReportRequest> {
    let keywords: Vec<String> = [
        "refund",
        "退款",
        "INVOICE",
        "%",
        "_",
        "\\",
        "a_b",
        "strasse",
        "ß",
        "ünï",
        "k 退",
        "no such words",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let year = |keywords: Vec<String>| pb::GetContentReportRequest {
        start_time: Some(ts("2024-01-01T00:00:00Z")),
        end_time: Some(ts("2025-01-01T00:00:00Z")),
        keywords,
        top_terms: 20,
        sample_limit: 5,
        ..Default::default()
    };
    let mut out = vec![year(keywords.clone()), year(Vec::new())];
    let mut march = year(keywords.clone());
    march.start_time = Some(ts("2024-03-01T12:34:56Z"));
    march.end_time = Some(ts("2024-04-02T00:00:00Z"));
    march.sample_limit = 100;
    out.push(march);
    let mut chats = year(keywords.clone());
    chats.channels = vec![pb::Channel::Chat as i32, pb::Channel::Email as i32];
    out.push(chats);
    let mut some = year(keywords);
    some.customer_ids = customers[1..4].to_vec();
    some.top_terms = 200;
    out.push(some);
    out
}

/// Every request answered alike by both servers.
async fn assert_same(
    indexed: &mut AnalyticsServiceClient<Channel>,
    scanned: &mut AnalyticsServiceClient<Channel>,
    customers: &[i64],
) {
    for req in requests(customers) {
        let fast = indexed
            .get_content_report(req.clone())
            .await
            .unwrap()
            .into_inner();
        let slow = scanned
            .get_content_report(req.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(slow.scanned_count > 0, "{req:?}");
        assert_eq!(fast, slow, "{req:?}");
    }
}

async fn customers(app: &TestApp, n: usize) -> Vec<i64> {
    new_customers(app, "content customer", n).await
}

/// `"YYYY-MM-DD HH:MM:SS.ffffff"`: a time literal both backends store as written.
fn literal(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

backend_tests! {
    async fn content_reports_from_the_index_equal_the_scan_after_every_write_path(app: &TestApp) {
        let customers = customers(app, 10).await;
        let mut rng = Rng(0x00c0_77e7_5eed_0001);
        import(app, (0..2500).map(|_| generated(&mut rng, &customers)).collect()).await;
        let (mut indexed, mut scanned, _stop) = pair(app).await;
        assert_same(&mut indexed, &mut scanned, &customers).await;

        // Writes through another server (`app`, a second replica), each followed at once
        // by a report: the index follows before answering.
        let logged = log_each(app, (0..30).map(|_| generated(&mut rng, &customers)).collect::<Vec<_>>()).await;
        import(app, (0..300).map(|_| generated(&mut rng, &customers)).collect()).await;
        assert_same(&mut indexed, &mut scanned, &customers).await;
        delete_then_purge(app, &logged[..20], customers[0]).await;
        assert!(app.scalar("SELECT COUNT(*) FROM deleted_communications").await > 20);
        assert_same(&mut indexed, &mut scanned, &customers).await;

        // The index does answer: a row changed behind every server's back (no write path
        // tells the index) shows in the scan and not in the index's answer.
        app.execute("UPDATE communications SET content = 'refund refund' WHERE content NOT LIKE '%refund%'")
            .await;
        let req = requests(&customers)[0].clone();
        let fast = indexed.get_content_report(req.clone()).await.unwrap().into_inner();
        let slow = scanned.get_content_report(req).await.unwrap().into_inner();
        assert_eq!(slow.keywords[0].message_count, slow.scanned_count);
        assert!(fast.keywords[0].message_count < slow.keywords[0].message_count);
    }

    async fn content_reports_scoped_to_a_survivor_count_the_communications_merged_into_it(app: &TestApp) {
        let customers = customers(app, 6).await;
        let mut rng = Rng(0x3e76_e000_0000_0006);
        import(app, (0..800).map(|_| generated(&mut rng, &customers)).collect()).await;
        let (mut indexed, mut scanned, _stop) = pair(app).await;
        // Every request shape, scoped to `scope`, answered alike with and without index.
        async fn same_for(
            indexed: &mut AnalyticsServiceClient<Channel>,
            scanned: &mut AnalyticsServiceClient<Channel>,
            all: &[i64],
            scope: &[i64],
        ) -> i64 {
            let mut scanned_total = 0;
            for mut req in requests(all) {
                req.customer_ids = scope.to_vec();
                let fast = indexed.get_content_report(req.clone()).await.unwrap().into_inner();
                let slow = scanned.get_content_report(req.clone()).await.unwrap().into_inner();
                assert_eq!(fast, slow, "{req:?}");
                scanned_total += fast.scanned_count;
            }
            scanned_total
        }
        let survivor = customers[0];
        let before = same_for(&mut indexed, &mut scanned, &customers, &[survivor]).await;
        // Merged through another server (`app`): the indexed server learns of it by
        // following `customer_merges`.
        app.customers()
            .merge_customers(pb::MergeCustomersRequest {
                surviving_customer_id: survivor,
                merged_customer_ids: vec![customers[1], customers[2]],
                request_id: String::new(),
            })
            .await
            .unwrap();
        let after = same_for(&mut indexed, &mut scanned, &customers, &[survivor]).await;
        assert!(after > before, "{after} {before}");
        same_for(&mut indexed, &mut scanned, &customers, &[survivor, customers[4], customers[5]]).await;
        // A chain: the survivor merged in turn.
        app.customers()
            .merge_customers(pb::MergeCustomersRequest {
                surviving_customer_id: customers[3],
                merged_customer_ids: vec![survivor],
                request_id: String::new(),
            })
            .await
            .unwrap();
        let last = same_for(&mut indexed, &mut scanned, &customers, &[customers[3]]).await;
        assert!(last > after, "{last} {after}");
        // The merged survivor is no scope of its own any more: NOT_FOUND naming its survivor.
        let mut req = requests(&customers)[0].clone();
        req.customer_ids = vec![survivor];
        for client in [&mut indexed, &mut scanned] {
            let err = client.get_content_report(req.clone()).await.unwrap_err();
            assert_status(&err, tonic::Code::NotFound, "CUSTOMER_MERGED");
        }
    }

    async fn content_reports_racing_writers_stay_exact(app: &TestApp) {
        let customers = customers(app, 8).await;
        let mut rng = Rng(0x0ace_0000_0000_0007);
        import(app, (0..500).map(|_| generated(&mut rng, &customers)).collect()).await;
        let (mut indexed, mut scanned, _stop) = pair(app).await;
        let mut writers = Vec::new();
        for w in 0..8u64 {
            let mut client = app.communications();
            let customers = customers.clone();
            writers.push(tokio::spawn(async move {
                let mut rng = Rng(0x1234_5678 + w);
                for _ in 0..25 {
                    let c = generated(&mut rng, &customers);
                    client.log_communication(log(c, "")).await.unwrap();
                }
            }));
        }
        let req = requests(&customers)[0].clone();
        for _ in 0..5 {
            indexed.get_content_report(req.clone()).await.unwrap();
        }
        for w in writers {
            w.await.unwrap();
        }
        assert_same(&mut indexed, &mut scanned, &customers).await;
    }

    async fn a_row_committed_late_below_seen_ids_is_counted(app: &TestApp) {
        let customers = customers(app, 5).await;
        let mut rng = Rng(0x1a7e_c0de_0000_0003);
        import(app, (0..50).map(|_| generated(&mut rng, &customers)).collect()).await;
        let (mut indexed, mut scanned, _stop) = pair(app).await;
        let max = app.scalar("SELECT MAX(id) FROM communications").await;
        let now = literal(crm_comms::model::time::now());
        let insert = |id: i64, content: &str| {
            format!(
                "INSERT INTO communications (id, customer_id, channel, direction, occur_time, \
                 content, outcome, create_time) VALUES ({id}, {}, 1, 1, \
                 '2024-06-01 10:00:00.000000', '{content}', '', '{now}')",
                customers[1]
            )
        };
        // A writer that took id max+5 commits first; the index sees it.
        app.execute(&insert(max + 5, "refund first")).await;
        assert_same(&mut indexed, &mut scanned, &customers).await;
        // The writer holding id max+2 commits afterwards.
        app.execute(&insert(max + 2, "refund late 退款")).await;
        assert_same(&mut indexed, &mut scanned, &customers).await;
        let req = requests(&customers)[0].clone();
        let fast = indexed.get_content_report(req).await.unwrap().into_inner();
        assert_eq!(fast.scanned_count, 52);
    }

    async fn a_restarted_index_reads_its_snapshot_and_catches_up_exactly(app: &TestApp) {
        let customers = customers(app, 10).await;
        let mut rng = Rng(0x00c0_77e7_5eed_0005);
        import(app, (0..2500).map(|_| generated(&mut rng, &customers)).collect()).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let place = Some(SnapshotFile::InDirectory(dir.path().to_owned()));
        let start = |place: Option<SnapshotFile>| async move {
            let (stop, rx) = watch::channel(false);
            let index = ContentIndexHandle::start_with_snapshot(app.db.clone(), rx, place);
            tokio::time::timeout(std::time::Duration::from_secs(60), index.wait_ready())
                .await
                .expect("the content index loads");
            (index, stop)
        };
        let stop = |index: ContentIndexHandle, stop: watch::Sender<bool>| async move {
            stop.send(true).expect("index running");
            tokio::time::timeout(std::time::Duration::from_secs(60), index.stopped())
                .await
                .expect("the content index stops after its last snapshot");
        };
        let snapshots = || -> Vec<std::path::PathBuf> {
            std::fs::read_dir(dir.path())
                .expect("snapshot dir")
                .map(|e| e.expect("entry").path())
                .collect()
        };

        // First life: every row read; the snapshot written after the load and at stop.
        let (index, stopper) = start(place.clone()).await;
        assert!(!index.loaded_from_snapshot());
        stop(index, stopper).await;
        let files = snapshots();
        assert_eq!(files.len(), 1, "one snapshot, no temporary file left: {files:?}");
        assert!(files[0].file_name().unwrap().to_string_lossy().starts_with("content-index-"));

        // While no index runs: rows written, deleted and merged.
        let logged = log_each(app, (0..40).map(|_| generated(&mut rng, &customers)).collect::<Vec<_>>()).await;
        import(app, (0..300).map(|_| generated(&mut rng, &customers)).collect()).await;
        delete_then_purge(app, &logged[..20], customers[0]).await;
        app.customers()
            .merge_customers(pb::MergeCustomersRequest {
                surviving_customer_id: customers[9],
                merged_customer_ids: vec![customers[8]],
                request_id: String::new(),
            })
            .await
            .unwrap();

        // Second life: from the snapshot, caught up, equal to a scanning server.
        let (index, stopper) = start(place.clone()).await;
        assert!(index.loaded_from_snapshot());
        let (indexed, _stop_a) = app.another_server(|_| {}, Some(index.clone())).await;
        let (scanned, _stop_b) = app.another_server(|_| {}, None).await;
        let (mut indexed, mut scanned) = (
            AnalyticsServiceClient::new(indexed),
            AnalyticsServiceClient::new(scanned),
        );
        assert_same(&mut indexed, &mut scanned, &customers).await;
        let req = requests(&customers)[0].clone();
        let fast = indexed.get_content_report(req).await.unwrap().into_inner();
        assert_eq!(
            fast.scanned_count,
            app.scalar("SELECT COUNT(*) FROM communications WHERE occur_time >= '2024-01-01' AND occur_time < '2025-01-01'").await
        );
        stop(index, stopper).await;

        // A damaged snapshot (one byte changed) is ignored: every row read, still exact.
        let file = &snapshots()[0];
        let mut bytes = std::fs::read(file).expect("snapshot");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5A;
        std::fs::write(file, &bytes).expect("damage the snapshot");
        let (index, _stopper) = start(place.clone()).await;
        assert!(!index.loaded_from_snapshot());
        let (indexed, _stop_c) = app.another_server(|_| {}, Some(index.clone())).await;
        assert_same(&mut AnalyticsServiceClient::new(indexed), &mut scanned, &customers).await;

        // A snapshot of another database is ignored too.
        let other_url = app.empty_database_url("other").await;
        let other = crm_comms::db::Db::connect(&other_url, &Default::default()).await.expect("other database");
        let (stop_other, rx) = watch::channel(false);
        let foreign = ContentIndexHandle::start_with_snapshot(
            other,
            rx,
            Some(SnapshotFile::At(file.clone())),
        );
        tokio::time::timeout(std::time::Duration::from_secs(60), foreign.wait_ready())
            .await
            .expect("the other index loads");
        assert!(!foreign.loaded_from_snapshot());
        assert_eq!(foreign.size().0, 0);
        stop_other.send(true).unwrap();
        foreign.stopped().await;
        app.drop_database(&other_url).await;
    }
}

//! One-customer reports (a frequency report scoped to one customer, customer insights)
//! answered from the activity index equal the same reports read from the database, on
//! generated data with calls, shared instants and sub-second times, in several zones
//! and granularities, after every write path (log, import, delete, purge, merge) made
//! through another server, and under concurrent callers.
//!
//! Each test compares a server whose index is loaded with a server on the same
//! database that has none, whole responses; one customer holds enough rows for the
//! index's big-customer structures (per-kind times, sorted gaps, channel totals).

use crm_comms::pb::{
    self, analytics_service_client::AnalyticsServiceClient, communication::Details,
};
use crm_comms::service::content_index::{ContentIndexHandle, SnapshotFile};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::backend_tests;
use crate::harness::{
    assert_status, delete_then_purge, import, log_each, new_customers, ts, TestApp,
};

const WORDS: &[&str] = &[
    "refund",
    "Refund",
    "退款",
    "退款申请",
    "invoice",
    "发票",
    "delivery",
    "late",
    "请尽快处理",
    "配送",
    "order",
    "thanks",
    "谢谢",
    "客服",
    "the",
    "don't",
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

/// A communication in 2024: customer 0 holds about half; calls carry a duration; one in
/// ten at a shared instant, one in five with microseconds.
fn generated(rng: &mut Rng, customers: &[i64]) -> pb::Communication {
    let words = rng.below(8);
    let content = (0..words)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ");
    let customer_id = if rng.below(2) == 0 {
        customers[0]
    } else {
        customers[rng.below(customers.len() as u64) as usize]
    };
    let channel = 1 + rng.below(4) as i32;
    let (seconds, nanos) = match rng.below(10) {
        0 => (1_709_251_200, 0),
        1 | 2 => (
            1_704_067_200 + rng.below(366 * 86_400) as i64,
            rng.below(1_000_000) as i32 * 1000,
        ),
        _ => (1_704_067_200 + rng.below(366 * 86_400) as i64, 0),
    };
    pb::Communication {
        customer_id,
        channel,
        direction: 1 + rng.below(2) as i32,
        occur_time: Some(prost_types::Timestamp { seconds, nanos }),
        content,
        details: (channel == pb::Channel::Phone as i32).then(|| {
            Details::PhoneCall(pb::PhoneCall {
                phone_number: "+8613800000000".into(),
                duration: Some(prost_types::Duration {
                    seconds: rng.below(7200) as i64,
                    nanos: rng.below(1000) as i32 * 1000,
                }),
            })
        }),
        ..Default::default()
    }
}

/// A server whose index is loaded, and a server without one.
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
        .expect("the index loads");
    let (indexed, stop_a) = app.another_server(|_| {}, Some(index)).await;
    let (read, stop_b) = app.another_server(|_| {}, None).await;
    (
        AnalyticsServiceClient::new(indexed),
        AnalyticsServiceClient::new(read),
        vec![stop_index, stop_a, stop_b],
    )
}

/// A frequency report over `[start, end)` in `zone`; `customer_ids` empty for every
/// customer.
fn frequency_request(
    customer_ids: &[i64],
    (start, end): (&str, &str),
    g: pb::Granularity,
    zone: &str,
) -> pb::GetFrequencyReportRequest {
    pb::GetFrequencyReportRequest {
        customer_ids: customer_ids.to_vec(),
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
        granularity: g as i32,
        time_zone: zone.to_owned(),
        ..Default::default()
    }
}

/// One-customer frequency reports of every shape.
fn frequency_requests(customer: i64) -> Vec<pb::GetFrequencyReportRequest> {
    let base = |start: &str, end: &str, g: pb::Granularity, zone: &str| {
        frequency_request(&[customer], (start, end), g, zone)
    };
    let mut out = vec![
        base(
            "2024-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
            pb::Granularity::Day,
            "UTC",
        ),
        base(
            "2024-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
            pb::Granularity::Day,
            "Asia/Kathmandu",
        ),
        base(
            "2024-02-15T00:00:00.5Z",
            "2024-11-20T07:00:00Z",
            pb::Granularity::Week,
            "America/New_York",
        ),
        base(
            "2023-06-01T00:00:00Z",
            "2025-06-01T00:00:00Z",
            pb::Granularity::Month,
            "Australia/Lord_Howe",
        ),
        base(
            "2024-03-01T00:00:00Z",
            "2024-04-15T00:00:00Z",
            pb::Granularity::Hour,
            "America/New_York",
        ),
    ];
    let mut filtered = base(
        "2024-01-01T00:00:00Z",
        "2025-01-01T00:00:00Z",
        pb::Granularity::Day,
        "Asia/Shanghai",
    );
    filtered.channels = vec![pb::Channel::Phone as i32, pb::Channel::Chat as i32];
    filtered.direction = pb::Direction::Outbound as i32;
    filtered.top_n = 5;
    out.push(filtered);
    let mut previous = base(
        "2024-07-01T00:00:00Z",
        "2025-01-01T00:00:00Z",
        pb::Granularity::Day,
        "Europe/Berlin",
    );
    previous.compare_previous_period = true;
    previous.top_n = 3;
    out.push(previous);
    // A range without rows.
    out.push(base(
        "2030-01-01T00:00:00Z",
        "2030-02-01T00:00:00Z",
        pb::Granularity::Day,
        "UTC",
    ));
    out
}

/// Frequency reports on every customer, of the same shapes with their top customers, and
/// one shorter than a month: the ones that hold whole UTC months take their customer
/// count, first and last contact and top customers from the activity index.
fn all_customer_requests() -> Vec<pb::GetFrequencyReportRequest> {
    let mut out: Vec<_> = frequency_requests(0)
        .into_iter()
        .map(|req| pb::GetFrequencyReportRequest {
            customer_ids: Vec::new(),
            top_n: req.top_n.max(3),
            ..req
        })
        .collect();
    let mut short = frequency_request(
        &[],
        ("2024-03-03T00:00:00Z", "2024-03-20T00:00:00Z"),
        pb::Granularity::Hour,
        "Asia/Kathmandu",
    );
    short.top_n = 2;
    out.push(short);
    out
}

fn insights_requests(customer: i64) -> Vec<pb::GetCustomerInsightsRequest> {
    vec![
        pb::GetCustomerInsightsRequest {
            customer_id: customer,
            ..Default::default()
        },
        pb::GetCustomerInsightsRequest {
            customer_id: customer,
            start_time: Some(ts("2024-03-01T00:00:00.25Z")),
            end_time: Some(ts("2024-09-17T13:00:00Z")),
            top_terms: 200,
            time_zone: "Asia/Kathmandu".into(),
        },
        pb::GetCustomerInsightsRequest {
            customer_id: customer,
            start_time: Some(ts("2024-01-01T00:00:00Z")),
            end_time: Some(ts("2025-01-01T00:00:00Z")),
            top_terms: 3,
            ..Default::default()
        },
    ]
}

/// Every one-customer report of each customer answered alike by both servers; the
/// number of communications they covered.
async fn assert_same(
    indexed: &mut AnalyticsServiceClient<Channel>,
    read: &mut AnalyticsServiceClient<Channel>,
    customers: &[i64],
) -> i64 {
    let mut covered = 0;
    for &c in customers {
        for req in frequency_requests(c) {
            covered += same_frequency(indexed, read, req).await.total_count;
        }
        for req in insights_requests(c) {
            let fast = indexed
                .get_customer_insights(req.clone())
                .await
                .unwrap()
                .into_inner();
            let slow = read
                .get_customer_insights(req.clone())
                .await
                .unwrap()
                .into_inner();
            assert_eq!(fast, slow, "{req:?}");
            covered += fast.total_count;
        }
    }
    for req in all_customer_requests() {
        same_frequency(indexed, read, req).await;
    }
    covered
}

/// One frequency report answered alike by both servers.
async fn same_frequency(
    indexed: &mut AnalyticsServiceClient<Channel>,
    read: &mut AnalyticsServiceClient<Channel>,
    req: pb::GetFrequencyReportRequest,
) -> pb::GetFrequencyReportResponse {
    let fast = indexed
        .get_frequency_report(req.clone())
        .await
        .unwrap()
        .into_inner();
    let slow = read
        .get_frequency_report(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fast, slow, "{req:?}");
    fast
}

backend_tests! {
    async fn one_customer_reports_from_the_activity_index_equal_the_database_after_every_write_path(app: &TestApp) {
        let customers = new_customers(app, "activity customer", 6).await;
        let mut rng = Rng(0x0ac7_1f17_0000_0001);
        import(app, (0..1500).map(|_| generated(&mut rng, &customers)).collect()).await;
        let (mut indexed, mut read, _stop) = pair(app).await;
        let before = assert_same(&mut indexed, &mut read, &customers).await;
        assert!(before > 1500, "{before}");

        // Writes through another server (`app`), each followed at once by the reports.
        let logged = log_each(app, (0..30).map(|_| generated(&mut rng, &customers)).collect::<Vec<_>>()).await;
        import(app, (0..200).map(|_| generated(&mut rng, &customers)).collect()).await;
        assert_same(&mut indexed, &mut read, &customers).await;
        // Deletes, then a purge of customer 5 with every communication it had.
        delete_then_purge(app, &logged[..20], customers[5]).await;
        assert_same(&mut indexed, &mut read, &customers[..5]).await;
        app.customers()
            .merge_customers(pb::MergeCustomersRequest {
                surviving_customer_id: customers[1],
                merged_customer_ids: vec![customers[0], customers[2]],
                request_id: String::new(),
            })
            .await
            .unwrap();
        let survivors = [customers[1], customers[3], customers[4]];
        assert_same(&mut indexed, &mut read, &survivors).await;
        // A merged customer is refused alike.
        let req = frequency_requests(customers[0])[0].clone();
        for client in [&mut indexed, &mut read] {
            let err = client.get_frequency_report(req.clone()).await.unwrap_err();
            assert_status(&err, tonic::Code::NotFound, "CUSTOMER_MERGED");
        }

        // Reports on every customer count their buckets from the index too: rollup
        // counts raised behind every server's back move the rollup answer, not the
        // index's, which stays the base table's (the report shorter than a month reads
        // the rollups on both servers).
        let (base, _stop_base) = app.another_server(|c| c.report_rollups = false, None).await;
        let mut base = AnalyticsServiceClient::new(base);
        for table in ["communication_slots", "communication_hours"] {
            app.execute(&format!("UPDATE {table} SET n = n + 1000")).await;
        }
        let mut requests = all_customer_requests();
        let short = requests.pop().unwrap();
        for req in requests {
            same_frequency(&mut indexed, &mut base, req).await;
        }
        let year = all_customer_requests()[0].clone();
        let slow = read.get_frequency_report(year.clone()).await.unwrap().into_inner();
        let truth = base.get_frequency_report(year).await.unwrap().into_inner();
        assert!(slow.total_count > truth.total_count + 1000, "{} {}", slow.total_count, truth.total_count);
        same_frequency(&mut indexed, &mut read, short).await;
        for table in ["communication_slots", "communication_hours"] {
            app.execute(&format!("UPDATE {table} SET n = n - 1000")).await;
        }

        // The index does answer: rows moved behind every server's back (no write path
        // tells the index) move in the database's answer and not in the index's.
        app.execute(&format!(
            "UPDATE communications SET occur_time = '2030-01-15 00:00:00' WHERE customer_id = {}",
            customers[3]
        ))
        .await;
        let req = frequency_requests(customers[3]).pop().unwrap();
        let fast = indexed.get_frequency_report(req.clone()).await.unwrap().into_inner();
        let slow = read.get_frequency_report(req).await.unwrap().into_inner();
        assert_eq!(fast.total_count, 0);
        assert!(slow.total_count > 0);
        // So do reports on every customer: the base table's edge of this range (10 to
        // 31 January) holds the moved rows, the index does not.
        let req = pb::GetFrequencyReportRequest {
            start_time: Some(ts("2030-01-10T00:00:00Z")),
            end_time: Some(ts("2030-03-01T00:00:00Z")),
            granularity: pb::Granularity::Month as i32,
            time_zone: "UTC".into(),
            top_n: 3,
            ..Default::default()
        };
        let fast = indexed.get_frequency_report(req.clone()).await.unwrap().into_inner();
        let slow = read.get_frequency_report(req).await.unwrap().into_inner();
        assert_eq!((fast.customer_count, fast.top_customers.len()), (0, 0));
        assert_eq!(slow.customer_count, 1);
        assert_eq!(slow.top_customers[0].customer_id, customers[3]);
    }

    async fn concurrent_one_customer_reports_share_syncs_and_stay_exact(app: &TestApp) {
        let customers = new_customers(app, "activity race", 4).await;
        let mut rng = Rng(0x0ac7_1f17_0000_0002);
        import(app, (0..400).map(|_| generated(&mut rng, &customers)).collect()).await;
        let (indexed, mut read, _stop) = pair(app).await;
        // 16 callers at once, while a writer logs: each answer covers every row
        // committed before its call, so the counts a caller sees never go down.
        let writer = {
            let mut client = app.communications();
            let customers = customers.clone();
            tokio::spawn(async move {
                let mut rng = Rng(0x77);
                for _ in 0..40 {
                    let c = generated(&mut rng, &customers);
                    client.log_communication(crate::harness::log(c, "")).await.unwrap();
                }
            })
        };
        let mut callers = Vec::new();
        for k in 0..16 {
            let mut client = indexed.clone();
            let customer = customers[k % customers.len()];
            callers.push(tokio::spawn(async move {
                let req = frequency_requests(customer)[0].clone();
                let mut seen = 0;
                for _ in 0..6 {
                    let r = client.get_frequency_report(req.clone()).await.unwrap().into_inner();
                    assert!(r.total_count >= seen);
                    seen = r.total_count;
                }
            }));
        }
        for c in callers {
            c.await.unwrap();
        }
        writer.await.unwrap();
        let mut indexed = indexed;
        assert_same(&mut indexed, &mut read, &customers).await;
    }

    async fn after_a_start_from_the_snapshot_the_activity_is_built_and_answers_alike(app: &TestApp) {
        let customers = new_customers(app, "activity snapshot", 4).await;
        let mut rng = Rng(0x0ac7_1f17_0000_0003);
        import(app, (0..800).map(|_| generated(&mut rng, &customers)).collect()).await;
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
        // First life writes the snapshot; rows are written while no index runs.
        let (index, stop) = start(place.clone()).await;
        assert!(index.activity_ready());
        stop.send(true).unwrap();
        index.stopped().await;
        import(app, (0..150).map(|_| generated(&mut rng, &customers)).collect()).await;

        // Second life: the content index from the snapshot, the activity built after it.
        let (index, _stop_index) = start(place).await;
        assert!(index.loaded_from_snapshot());
        tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while !index.activity_ready() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the activity is built after a start from the snapshot");
        let rows = app.scalar("SELECT COUNT(*) FROM communications").await;
        assert_eq!(index.activity_size().0 as i64, rows);
        let (indexed, _stop_a) = app.another_server(|_| {}, Some(index.clone())).await;
        let (read, _stop_b) = app.another_server(|_| {}, None).await;
        let (mut indexed, mut read) = (
            AnalyticsServiceClient::new(indexed),
            AnalyticsServiceClient::new(read),
        );
        assert!(assert_same(&mut indexed, &mut read, &customers).await > 950);

        // The activity answers (not the database): rows moved behind every server's
        // back move in the database's answer only.
        app.execute(&format!(
            "UPDATE communications SET occur_time = '2030-01-15 00:00:00' WHERE customer_id = {}",
            customers[2]
        ))
        .await;
        let req = frequency_requests(customers[2]).pop().unwrap();
        let fast = indexed.get_frequency_report(req.clone()).await.unwrap().into_inner();
        let slow = read.get_frequency_report(req).await.unwrap().into_inner();
        assert_eq!(fast.total_count, 0);
        assert!(slow.total_count > 0);
    }

    async fn a_key_account_past_the_big_customer_threshold_answers_like_the_database(app: &TestApp) {
        let customers = new_customers(app, "activity key account", 3).await;
        let mut rng = Rng(0x0ac7_1f17_0000_0004);
        // About 18,000 rows for customers[0]: past TERM_TOTALS_FROM (16,384).
        let rows: Vec<pb::Communication> = (0..19_000)
            .map(|_| {
                let mut c = generated(&mut rng, &customers);
                if rng.below(20) != 0 {
                    c.customer_id = customers[0];
                }
                c
            })
            .collect();
        import(app, rows).await;
        let (mut indexed, mut read, _stop) = pair(app).await;
        assert!(assert_same(&mut indexed, &mut read, &customers).await > 18_000 * 4);

        // Appends after every row (in time order), then back-dated rows.
        let appended: Vec<pb::Communication> = (0..12)
            .map(|i| {
                let mut c = generated(&mut rng, &customers);
                c.customer_id = customers[0];
                c.occur_time = Some(prost_types::Timestamp {
                    seconds: 1_735_603_200 + i * 3_600,
                    nanos: 0,
                });
                c
            })
            .collect();
        let logged = log_each(app, appended).await;
        log_each(app, (0..10).map(|_| {
            let mut c = generated(&mut rng, &customers);
            c.customer_id = customers[0];
            c
        }).collect::<Vec<_>>()).await;
        assert_same(&mut indexed, &mut read, &customers).await;
        // The last row deleted, a customer purged, another merged into the key account.
        delete_then_purge(app, &logged[11..], customers[2]).await;
        assert_same(&mut indexed, &mut read, &customers[..2]).await;
        app.customers()
            .merge_customers(pb::MergeCustomersRequest {
                surviving_customer_id: customers[0],
                merged_customer_ids: vec![customers[1]],
                request_id: String::new(),
            })
            .await
            .unwrap();
        assert!(assert_same(&mut indexed, &mut read, &customers[..1]).await > 19_000 * 4);
    }
}

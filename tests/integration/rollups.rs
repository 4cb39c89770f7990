//! Reports answered from the rollups equal the same reports read from the base table,
//! on generated data, after every write path (log, import, delete, purge), under
//! concurrent writers, in DST and quarter-hour zones, and after a rebuild from scratch.
//!
//! Each test runs a second server on the same database with `report_rollups = false`
//! and compares whole responses.

use crm_comms::pb::{self, analytics_service_client::AnalyticsServiceClient};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::backend_tests;
use crate::harness::{
    delete_then_purge, import, log, log_each, new_customers, run_binary, ts, TestApp,
};

/// Deterministic xorshift so every run generates the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 2024-01-01T00:00:00Z.
const YEAR_START: i64 = 1_704_067_200;
/// Seconds of 2024 (a leap year).
const YEAR_SECS: i64 = 366 * 86_400;

/// Contents of every sentiment class, so the rollups' sentiment sums are compared too.
const MOODS: [&str; 5] = [
    "generated",
    "Thank you, the service was excellent!",
    "This is terrible, I am very disappointed.",
    "服务很好，非常满意",
    "质量太差了，很失望",
];

/// A communication at a generated time: mostly random seconds, some exactly on a
/// 15-minute slot boundary, some on DST changes and month boundaries.
fn generated(rng: &mut Rng, customers: &[i64]) -> pb::Communication {
    // Zipf-like: low indices far more often.
    let idx = (rng.below(customers.len() as u64) * rng.below(customers.len() as u64))
        / customers.len() as u64;
    let secs = match rng.below(10) {
        0 => YEAR_START + (rng.below((YEAR_SECS / 900) as u64) as i64) * 900,
        // 2024-03-10 07:00Z (New York DST) +- a few minutes.
        1 => 1_710_054_000 - 600 + rng.below(1200) as i64,
        // The last second of a month in UTC, and the first of the next.
        2 => 1_711_929_600 - 1 + rng.below(2) as i64,
        _ => YEAR_START + rng.below(YEAR_SECS as u64) as i64,
    };
    pb::Communication {
        customer_id: customers[idx as usize],
        channel: 1 + rng.below(4) as i32,
        direction: 1 + rng.below(2) as i32,
        occur_time: Some(prost_types::Timestamp {
            seconds: secs,
            nanos: (rng.below(1000) as i32) * 1_000_000,
        }),
        content: MOODS[rng.below(MOODS.len() as u64) as usize].into(),
        ..Default::default()
    }
}

/// A second server on the same database whose reports read only the base table.
async fn base_table_server(
    app: &TestApp,
) -> (AnalyticsServiceClient<Channel>, watch::Sender<bool>) {
    let (channel, stop) = app.another_server(|c| c.report_rollups = false, None).await;
    (AnalyticsServiceClient::new(channel), stop)
}

/// The report shapes compared: every granularity, aligned and unaligned ranges, zones
/// with DST and with :30 / :45 offsets, filters, top customers.
fn requests(customers: &[i64]) -> Vec<pb::GetFrequencyReportRequest> {
    use pb::Granularity::{Day, Hour, Month, Week};
    let req =
        |start: &str, end: &str, g: pb::Granularity, zone: &str| pb::GetFrequencyReportRequest {
            start_time: Some(ts(start)),
            end_time: Some(ts(end)),
            granularity: g as i32,
            time_zone: zone.to_owned(),
            top_n: 5,
            include_sentiment: true,
            ..Default::default()
        };
    let mut out = vec![
        // Shanghai's calendar year (starts 16:00 UTC the day before).
        req(
            "2023-12-31T16:00:00Z",
            "2024-12-31T16:00:00Z",
            Day,
            "Asia/Shanghai",
        ),
        req(
            "2023-12-31T16:00:00Z",
            "2024-12-31T16:00:00Z",
            Month,
            "Asia/Shanghai",
        ),
        req("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", Week, "UTC"),
        req(
            "2024-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
            Hour,
            "Asia/Kathmandu",
        ),
        req(
            "2024-03-01T05:00:00Z",
            "2024-04-01T04:00:00Z",
            Hour,
            "America/New_York",
        ),
        req(
            "2024-02-01T00:00:00Z",
            "2024-11-01T00:00:00Z",
            Day,
            "Australia/Eucla",
        ),
        req(
            "2024-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
            Day,
            "Asia/Kolkata",
        ),
        // Unaligned ends: edges from the base table.
        req(
            "2024-02-03T04:05:06.789Z",
            "2024-10-09T08:07:06.5Z",
            Day,
            "Europe/Berlin",
        ),
        req(
            "2024-03-10T06:52:00Z",
            "2024-03-10T07:08:00Z",
            Hour,
            "America/New_York",
        ),
        // Within one slot.
        req(
            "2024-03-31T23:59:59.5Z",
            "2024-04-01T00:00:00.5Z",
            Hour,
            "UTC",
        ),
    ];
    let mut chat_inbound = req(
        "2023-12-31T16:00:00Z",
        "2024-12-31T16:00:00Z",
        Day,
        "Asia/Shanghai",
    );
    chat_inbound.channels = vec![pb::Channel::Chat as i32, pb::Channel::Email as i32];
    chat_inbound.direction = pb::Direction::Inbound as i32;
    out.push(chat_inbound);
    let mut some = req("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", Month, "UTC");
    some.customer_ids = customers[..3].to_vec();
    some.include_gap_stats = true;
    out.push(some);
    out
}

/// Every request answered alike by `app` (rollups) and the base-table server.
async fn assert_same_reports(
    app: &TestApp,
    base: &mut AnalyticsServiceClient<Channel>,
    customers: &[i64],
) {
    for req in requests(customers) {
        let fast = app
            .analytics()
            .get_frequency_report(req.clone())
            .await
            .unwrap()
            .into_inner();
        let slow = base
            .get_frequency_report(req.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fast, slow, "{req:?}");
    }
}

async fn customers(app: &TestApp, n: usize) -> Vec<i64> {
    new_customers(app, "rollup customer", n).await
}

backend_tests! {
    async fn reports_from_rollups_equal_the_base_table_after_every_write_path(app: &TestApp) {
        let customers = customers(app, 12).await;
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let items: Vec<_> = (0..3000).map(|_| generated(&mut rng, &customers)).collect();
        import(app, items).await;
        let logged = log_each(app, (0..40).map(|_| generated(&mut rng, &customers)).collect::<Vec<_>>()).await;
        let (mut base, _stop) = base_table_server(app).await;
        let total = app.scalar("SELECT COUNT(*) FROM communications").await;
        assert_eq!(total, 3040);
        assert_same_reports(app, &mut base, &customers).await;

        // Deletes: single communications, then a whole customer purged.
        delete_then_purge(app, &logged[..25], customers[0]).await;
        assert_same_reports(app, &mut base, &customers[1..]).await;
        assert_eq!(
            app.scalar(&format!(
                "SELECT COUNT(*) FROM customer_months WHERE customer_id = {}",
                customers[0]
            ))
            .await,
            0,
            "a purged customer leaves no rollup rows"
        );
        assert_eq!(app.scalar("SELECT COUNT(*) FROM customer_months WHERE n <= 0").await, 0);
        for table in ["communication_slots", "communication_hours"] {
            assert_eq!(
                app.scalar(&format!("SELECT COALESCE(SUM(n), 0) FROM {table}")).await,
                app.scalar("SELECT COUNT(*) FROM communications").await,
                "{table}"
            );
        }

        // Compaction folds every shard into shard 0; removals after it still add up.
        let folded = crm_comms::db::rollups::compact(&app.db, crm_comms::model::time::MAX_TIME).await.unwrap();
        assert!(folded > 0);
        for table in ["communication_slots", "communication_hours"] {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE shard > 0");
            assert_eq!(app.scalar(&sql).await, 0, "{table}");
        }
        assert_same_reports(app, &mut base, &customers[1..]).await;
        for id in logged.iter().skip(25) {
            // Some belonged to the purged customer.
            let deleted = app
                .communications()
                .delete_communication(pb::DeleteCommunicationRequest { id: *id })
                .await;
            assert!(
                deleted.is_ok() || deleted.as_ref().unwrap_err().code() == tonic::Code::NotFound,
                "{deleted:?}"
            );
        }
        assert_same_reports(app, &mut base, &customers[1..]).await;

        // The reports do read the rollups: a count changed behind the service's back
        // shows in the rollup answer and not in the base-table one. The customer figures
        // of a range of whole months come from the per-customer activity, which follows
        // the rows, so they stay exact.
        app.execute("UPDATE communication_slots SET n = n + 1000").await;
        app.execute("UPDATE communication_hours SET n = n + 1000").await;
        app.execute("UPDATE customer_months SET n = n + 1000").await;
        let year = requests(&customers)[0].clone();
        let fast = app.analytics().get_frequency_report(year.clone()).await.unwrap().into_inner();
        let slow = base.get_frequency_report(year).await.unwrap().into_inner();
        assert!(fast.total_count > slow.total_count + 1000, "{} {}", fast.total_count, slow.total_count);
        assert_eq!(fast.top_customers, slow.top_customers);
        assert_eq!(fast.customer_count, slow.customer_count);
    }

    async fn concurrent_writers_of_one_slot_lose_no_count(app: &TestApp) {
        let customers = customers(app, 16).await;
        let mut writers = Vec::new();
        for &customer_id in &customers {
            let mut client = app.communications();
            writers.push(tokio::spawn(async move {
                for i in 0..25 {
                    let c = pb::Communication {
                        customer_id,
                        channel: pb::Channel::Chat as i32,
                        direction: pb::Direction::Inbound as i32,
                        // Every writer in the same slot and month.
                        occur_time: Some(ts(&format!("2024-05-06T10:0{}:00Z", i % 10))),
                        content: "race".into(),
                        ..Default::default()
                    };
                    client.log_communication(log(c, "")).await.unwrap();
                }
            }));
        }
        // Reports racing the writers always answer.
        let mut reader = app.analytics();
        let racing = requests(&customers)[0].clone();
        for _ in 0..5 {
            reader.get_frequency_report(racing.clone()).await.unwrap();
        }
        for w in writers {
            w.await.unwrap();
        }
        let (mut base, _stop) = base_table_server(app).await;
        assert_same_reports(app, &mut base, &customers).await;
        assert_eq!(
            app.scalar("SELECT COALESCE(SUM(n), 0) FROM communication_slots").await,
            400
        );
    }

    async fn rollups_rebuilt_from_scratch_equal_the_maintained_ones(app: &TestApp) {
        let customers = customers(app, 8).await;
        let mut rng = Rng(0x0bad_cafe_0000_0042);
        import(app, (0..1500).map(|_| generated(&mut rng, &customers)).collect()).await;
        let slots = "SELECT COALESCE(SUM(n * (slot % 97 + 1) * (channel * 3 + direction)), 0) \
                     FROM communication_slots";
        let months = "SELECT COALESCE(SUM(n * (month % 89 + 1) * (customer_id % 13 + 1)), 0) \
                      FROM customer_months";
        let hours = "SELECT COALESCE(SUM(n * (hour % 89 + 1) * (channel * 3 + direction)), 0) \
                     FROM communication_hours";
        let (slot_sum, month_sum) = (app.scalar(slots).await, app.scalar(months).await);
        let hour_sum = app.scalar(hours).await;
        crm_comms::db::rollups::rebuild(&app.db, crm_comms::model::time::now())
            .await
            .unwrap();
        assert_eq!(app.scalar(slots).await, slot_sum);
        assert_eq!(app.scalar(months).await, month_sum);
        assert_eq!(app.scalar(hours).await, hour_sum);
        let (mut base, _stop) = base_table_server(app).await;
        assert_same_reports(app, &mut base, &customers).await;
    }

    async fn rollups_stay_exact_after_a_merge_and_deletes_of_moved_communications(app: &TestApp) {
        let customers = customers(app, 9).await;
        let mut rng = Rng(0x3e76_e000_0000_0009);
        import(app, (0..1500).map(|_| generated(&mut rng, &customers)).collect()).await;
        let logged = log_each(app, (0..60).map(|_| generated(&mut rng, &customers)).collect::<Vec<_>>()).await;
        // Survivor and merged customers in different shards (customer_id mod 8).
        let (survivor, merged) = (customers[1], vec![customers[2], customers[3], customers[8]]);
        let moved: i64 = {
            let mut n = 0;
            for id in &merged {
                n += app.count_where("communications", "customer_id", *id).await;
            }
            n
        };
        assert!(moved > 0);
        let done = app
            .customers()
            .merge_customers(pb::MergeCustomersRequest {
                surviving_customer_id: survivor,
                merged_customer_ids: merged.clone(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(done.communication_count, moved);
        let live: Vec<i64> = customers.iter().copied().filter(|c| !merged.contains(c)).collect();
        let (mut base, _stop) = base_table_server(app).await;
        assert_same_reports(app, &mut base, &live).await;
        for id in &merged {
            assert_eq!(app.count_where("customer_months", "customer_id", *id).await, 0);
        }
        // Deletes of moved rows count down in the survivor's shard; every sum stays exact.
        let moved_ids: Vec<i64> = {
            let mut ids = Vec::new();
            for id in &logged {
                let owner = app.scalar(&format!("SELECT customer_id FROM communications WHERE id = {id}")).await;
                if owner == survivor {
                    ids.push(*id);
                }
            }
            ids
        };
        assert!(!moved_ids.is_empty());
        for id in &moved_ids {
            app.communications()
                .delete_communication(pb::DeleteCommunicationRequest { id: *id })
                .await
                .unwrap();
        }
        assert_same_reports(app, &mut base, &live).await;
        assert_eq!(app.scalar("SELECT COUNT(*) FROM customer_months WHERE n <= 0").await, 0);
        for table in ["communication_slots", "communication_hours"] {
            assert_eq!(
                app.scalar(&format!("SELECT COALESCE(SUM(n), 0) FROM {table}")).await,
                app.scalar("SELECT COUNT(*) FROM communications").await,
                "{table}"
            );
        }
        // The maintained rollups equal a rebuild from the base table.
        let slots = "SELECT COALESCE(SUM(n * (slot % 97 + 1) * (channel * 3 + direction)), 0) \
                     FROM communication_slots";
        let months = "SELECT COALESCE(SUM(n * (month % 89 + 1) * (customer_id % 13 + 1)), 0) \
                      FROM customer_months";
        let hours = "SELECT COALESCE(SUM(n * (hour % 89 + 1) * (channel * 3 + direction)), 0) \
                     FROM communication_hours";
        let before = (app.scalar(slots).await, app.scalar(months).await, app.scalar(hours).await);
        let month_rows = app.scalar("SELECT COUNT(*) FROM customer_months").await;
        crm_comms::db::rollups::rebuild(&app.db, crm_comms::model::time::now()).await.unwrap();
        assert_eq!((app.scalar(slots).await, app.scalar(months).await, app.scalar(hours).await), before);
        assert_eq!(app.scalar("SELECT COUNT(*) FROM customer_months").await, month_rows);
        assert_same_reports(app, &mut base, &live).await;
    }

    async fn rebuild_rollups_repairs_counts_changed_behind_the_service(app: &TestApp) {
        let customers = customers(app, 5).await;
        let mut rng = Rng(0x1234_5678_9abc_def0);
        import(app, (0..800).map(|_| generated(&mut rng, &customers)).collect()).await;
        app.execute("UPDATE communication_hours SET n = n + 5").await;
        app.execute("DELETE FROM customer_months").await;
        let (ok, output) = run_binary(&["rebuild-rollups"], &app.database_url);
        assert!(ok, "{output}");
        assert!(output.contains("rollups built"), "{output}");
        let (mut base, _stop) = base_table_server(app).await;
        assert_same_reports(app, &mut base, &customers).await;
    }
}

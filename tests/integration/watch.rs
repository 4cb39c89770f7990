//! Watched reports (wallboards): `WatchFrequencyReport` and `WatchResponseTimeReport`
//! through the real server. After random writes, imports, deletes and merges the
//! watcher's state, built only from the messages it was sent, equals the unary report;
//! a watch resumes from its state token; what waits shows and changes with time alone;
//! bad requests name the nested field; watches share the follow-stream limit.

use std::time::Duration;

use crm_comms::pb::watch_response_time_report_response::Change as RChange;
use crm_comms::pb::{self, watch_frequency_report_response::Change as FChange};
use tonic::{Code, Streaming};

use crate::backend_tests;
use crate::harness::{assert_invalid, assert_status, new_customer, note, ts, TestApp};

const RANGE: (&str, &str) = ("2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z");

fn query(customer_ids: Vec<i64>) -> pb::GetFrequencyReportRequest {
    pb::GetFrequencyReportRequest {
        customer_ids,
        start_time: Some(ts(RANGE.0)),
        end_time: Some(ts(RANGE.1)),
        granularity: pb::Granularity::Day as i32,
        time_zone: "Asia/Shanghai".into(),
        top_n: 5,
        include_gap_stats: true,
        ..Default::default()
    }
}

async fn unary(app: &TestApp, q: &pb::GetFrequencyReportRequest) -> pb::GetFrequencyReportResponse {
    app.analytics()
        .get_frequency_report(q.clone())
        .await
        .unwrap()
        .into_inner()
}

async fn watch(
    app: &TestApp,
    q: &pb::GetFrequencyReportRequest,
    resume_token: &str,
) -> Streaming<pb::WatchFrequencyReportResponse> {
    app.analytics()
        .watch_frequency_report(pb::WatchFrequencyReportRequest {
            query: Some(q.clone()),
            resume_token: resume_token.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// A client's copy of a watched frequency report, built from the messages only.
#[derive(Debug, Default)]
struct Board {
    report: pb::GetFrequencyReportResponse,
    token: String,
    messages: usize,
}

impl Board {
    fn apply(&mut self, m: pb::WatchFrequencyReportResponse) {
        match m.change.expect("a change") {
            FChange::Report(r) => self.report = r,
            FChange::Update(u) => {
                let mut buckets = std::mem::take(&mut self.report.buckets);
                for b in u.buckets {
                    buckets[b.index as usize] = b.bucket.unwrap();
                }
                self.report = u.summary.unwrap();
                assert!(self.report.buckets.is_empty(), "a summary holds no buckets");
                self.report.buckets = buckets;
            }
        }
        assert!(m.as_of.is_some());
        self.token = m.state_token;
        self.messages += 1;
    }

    /// Applies messages until the board equals `want` (the unary report after the
    /// last write), failing if that takes longer than `secs`.
    async fn settle_on(
        &mut self,
        s: &mut Streaming<pb::WatchFrequencyReportResponse>,
        want: &pb::GetFrequencyReportResponse,
        secs: u64,
    ) {
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        while self.report != *want {
            let m = tokio::time::timeout_at(until, s.message())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the watch did not reach {want:#?}\nit shows {:#?}",
                        self.report
                    )
                })
                .unwrap()
                .expect("watch open");
            self.apply(m);
        }
    }
}

/// A tiny deterministic generator (the test must be repeatable).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn chat(customer_id: i64, day: u64, hour: u64, direction: pb::Direction) -> pb::Communication {
    pb::Communication {
        customer_id,
        channel: pb::Channel::Chat as i32,
        direction: direction as i32,
        occur_time: Some(ts(&format!("2024-03-{:02}T{hour:02}:30:00Z", day + 1))),
        content: "订单 refund".into(),
        ..Default::default()
    }
}

async fn log(app: &TestApp, c: pb::Communication) -> i64 {
    app.communications()
        .log_communication(pb::LogCommunicationRequest {
            communication: Some(c),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

backend_tests! {
    async fn a_watched_frequency_report_equals_the_unary_one_after_random_writes_deletes_and_merges(app: &TestApp) {
        let customers = [
            new_customer(app, "看板 A").await,
            new_customer(app, "看板 B").await,
            new_customer(app, "看板 C").await,
        ];
        let mut ids = Vec::new();
        for (i, &c) in customers.iter().enumerate() {
            ids.push(log(app, note(c, "seed", &format!("2024-03-0{}T08:00:00Z", i + 1))).await);
        }
        let q = query(vec![]);
        let mut s = watch(app, &q, "").await;
        let mut board = Board::default();
        board.apply(s.message().await.unwrap().unwrap());
        assert_eq!(board.report, unary(app, &q).await, "the first message is the whole report");

        let mut rng = Lcg(7);
        let mut merged = false;
        // Customers that can still be written to (the merged one cannot).
        let mut live = customers.to_vec();
        for step in 0..14 {
            match rng.below(5) {
                0 | 1 => {
                    let c = live[rng.below(live.len() as u64) as usize];
                    let way = if rng.below(2) == 0 { pb::Direction::Inbound } else { pb::Direction::Outbound };
                    ids.push(log(app, chat(c, rng.below(31), rng.below(24), way)).await);
                }
                2 => {
                    let c = live[rng.below(live.len() as u64) as usize];
                    let items: Vec<pb::ImportCommunicationsRequest> = (0..1 + rng.below(5))
                        .map(|_| pb::ImportCommunicationsRequest {
                            communication: Some(chat(c, rng.below(31), rng.below(24), pb::Direction::Inbound)),
                            request_id: String::new(),
                        })
                        .collect();
                    app.communications().import_communications(tokio_stream::iter(items)).await.unwrap();
                }
                3 if ids.len() > 2 => {
                    let id = ids.remove(rng.below(ids.len() as u64) as usize);
                    app.communications()
                        .delete_communication(pb::DeleteCommunicationRequest { id })
                        .await
                        .unwrap();
                }
                _ if !merged => {
                    merged = true;
                    live.retain(|&c| c != customers[1]);
                    app.customers()
                        .merge_customers(pb::MergeCustomersRequest {
                            surviving_customer_id: customers[0],
                            merged_customer_ids: vec![customers[1]],
                            request_id: String::new(),
                        })
                        .await
                        .unwrap();
                }
                _ => {
                    ids.push(log(app, chat(customers[2], rng.below(31), 12, pb::Direction::Outbound)).await);
                }
            }
            let want = unary(app, &q).await;
            board.settle_on(&mut s, &want, 15).await;
            assert_eq!(board.report.total_count, want.total_count, "step {step}");
        }
        assert!(merged, "the sequence merged once");
        assert!(board.messages > 5, "updates arrived: {}", board.messages);

        // A write outside the report's range changes nothing: no message.
        log(app, note(customers[2], "later", "2024-05-01T00:00:00Z")).await;
        let quiet = tokio::time::timeout(Duration::from_millis(1500), s.message()).await;
        assert!(quiet.is_err(), "no message for a write outside the range: {quiet:?}");
    }

    async fn a_watch_resumes_from_its_state_token(app: &TestApp) {
        let c = new_customer(app, "续看").await;
        log(app, note(c, "one", "2024-03-05T08:00:00Z")).await;
        let q = query(vec![c]);
        let mut first = watch(app, &q, "").await;
        let mut board = Board::default();
        board.apply(first.message().await.unwrap().unwrap());
        drop(first);

        // Nothing changed: the resumed watch starts with an update without buckets.
        let mut again = watch(app, &q, &board.token).await;
        let m = again.message().await.unwrap().unwrap();
        let Some(FChange::Update(u)) = &m.change else { panic!("an update: {m:?}") };
        assert!(u.buckets.is_empty());
        assert_eq!(m.state_token, board.token);
        board.apply(m);
        assert_eq!(board.report, unary(app, &q).await);
        drop(again);

        // Changed while away: the watch catches up (the whole report again once the
        // server has seen the change), with another token.
        log(app, note(c, "two", "2024-03-06T08:00:00Z")).await;
        let mut later = watch(app, &q, &board.token).await;
        let old = board.token.clone();
        let want = unary(app, &q).await;
        board.settle_on(&mut later, &want, 15).await;
        assert_ne!(board.token, old);

        // Many watchers of one report: one state, the same token for all.
        let mut many = Vec::new();
        for _ in 0..20 {
            many.push(watch(app, &q, "").await);
        }
        log(app, note(c, "three", "2024-03-07T08:00:00Z")).await;
        let want = unary(app, &q).await;
        for s in &mut many {
            let mut b = Board::default();
            b.settle_on(s, &want, 15).await;
        }
    }

    async fn bad_watch_requests_name_the_nested_field(app: &TestApp) {
        let err = app
            .analytics()
            .watch_frequency_report(pb::WatchFrequencyReportRequest::default())
            .await
            .unwrap_err();
        assert_invalid(&err, &["query"]);
        let mut q = query(vec![-4]);
        q.time_zone = "Mars/Olympus".into();
        q.start_time = None;
        let err = app
            .analytics()
            .watch_frequency_report(pb::WatchFrequencyReportRequest {
                query: Some(q),
                resume_token: String::new(),
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["query.customer_ids[0]", "query.start_time", "query.time_zone"]);
        let err = app
            .analytics()
            .watch_response_time_report(pb::WatchResponseTimeReportRequest::default())
            .await
            .unwrap_err();
        assert_invalid(&err, &["query"]);
    }

    async fn a_response_time_watch_shows_who_waits_and_when_a_wait_passes_the_sla(app: &TestApp) {
        let c = new_customer(app, "等待").await;
        let now = chrono::Utc::now();
        let at = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 };
        let inbound = pb::Communication {
            customer_id: c,
            channel: pb::Channel::Chat as i32,
            direction: pb::Direction::Inbound as i32,
            occur_time: Some(at(now - chrono::TimeDelta::seconds(1))),
            content: "在吗? anyone there?".into(),
            ..Default::default()
        };
        log(app, inbound.clone()).await;
        let q = pb::GetResponseTimeReportRequest {
            customer_ids: vec![c],
            start_time: Some(at(now - chrono::TimeDelta::hours(1))),
            end_time: Some(at(now + chrono::TimeDelta::hours(1))),
            granularity: pb::Granularity::Hour as i32,
            sla: Some(prost_types::Duration { seconds: 4, nanos: 0 }),
            ..Default::default()
        };
        let mut s = app
            .analytics()
            .watch_response_time_report(pb::WatchResponseTimeReportRequest { query: Some(q), resume_token: String::new() })
            .await
            .unwrap()
            .into_inner();
        let total = |m: &pb::WatchResponseTimeReportResponse| match m.change.as_ref().unwrap() {
            RChange::Report(r) => r.total.unwrap(),
            RChange::Update(u) => u.summary.as_ref().unwrap().total.unwrap(),
        };
        let first = s.message().await.unwrap().unwrap();
        let t = total(&first);
        assert_eq!((t.pending_count, t.pending_customer_count, t.pending_over_sla_count), (1, 1, 0), "{t:?}");
        assert!(t.longest_pending_wait.unwrap().seconds < 4, "{t:?}");

        // No write: the wait passes the SLA with time alone, and the board says so.
        let mut t = total(&first);
        while t.pending_over_sla_count == 0 {
            let m = tokio::time::timeout(Duration::from_secs(15), s.message()).await.expect("an update in time").unwrap().unwrap();
            assert!(matches!(m.change, Some(RChange::Update(_))));
            t = total(&m);
        }
        assert_eq!((t.pending_count, t.pending_over_sla_count), (1, 1), "{t:?}");
        assert!(t.longest_pending_wait.unwrap().seconds >= 4, "{t:?}");

        // The reply: nobody waits any more.
        log(app, pb::Communication { direction: pb::Direction::Outbound as i32, occur_time: Some(at(chrono::Utc::now())), ..inbound }).await;
        while t.pending_count > 0 {
            let m = tokio::time::timeout(Duration::from_secs(15), s.message()).await.expect("an update in time").unwrap().unwrap();
            t = total(&m);
        }
        assert_eq!((t.pending_count, t.pending_customer_count, t.completed_count), (0, 0, 1), "{t:?}");
        assert_eq!(t.longest_pending_wait, None);
    }
}

crate::standalone_tests! {
    async fn watches_share_the_follow_stream_limit() {
        let Some(app) = TestApp::start_with(crate::harness::Backend::Sqlite, |c| c.max_follow_streams = 2).await else {
            return;
        };
        let c = new_customer(&app, "限").await;
        let q = query(vec![c]);
        let _a = watch(&app, &q, "").await;
        let _b = watch(&app, &q, "").await;
        let err = app
            .analytics()
            .watch_frequency_report(pb::WatchFrequencyReportRequest { query: Some(q.clone()), resume_token: String::new() })
            .await
            .unwrap_err();
        assert_status(&err, Code::ResourceExhausted, "TOO_MANY_FOLLOW_STREAMS");
        drop(_a);
        // The slot comes back once the server sees the stream gone.
        let mut reopened = false;
        for _ in 0..50 {
            if app.analytics().watch_frequency_report(pb::WatchFrequencyReportRequest { query: Some(q.clone()), resume_token: String::new() }).await.is_ok() {
                reopened = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(reopened, "a closed watch gives its slot back");
    }
}

//! Follow streams fed by the server's one poller: the query load does not grow with the
//! number of streams, and every event reaches every matching stream exactly once.

use std::collections::HashSet;
use std::time::Duration;

use crm_comms::db::Db;
use crm_comms::pb::{self, timeline_event::Entry};
use crm_comms::service::timeline::{hub::BUFFER_EVENTS, POLL_INTERVAL, SETTLE};
use tonic::{Code, Streaming};

use crate::backend_tests;
use crate::harness::{assert_status, new_customer, next_event, note, ts, TestApp};

/// Connection checkouts the server's pool has served so far (one per query), and the
/// connections in use right now.
fn pool_usage(db: &Db) -> (u64, u32) {
    let state = match db {
        Db::Mysql(pool) => pool.state(),
        Db::Sqlite { pool, .. } => pool.state(),
    };
    (
        state.statistics.get_started,
        state.connections - state.idle_connections,
    )
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

/// Imports `n` notes of `customer_id` occurring at `occur`, in one client stream.
async fn import_notes(app: &TestApp, customer_id: i64, n: usize, occur: &str) {
    import_sized(app, customer_id, n, occur, 0).await;
}

/// Like [`import_notes`], with `padding` more bytes of content per note.
async fn import_sized(app: &TestApp, customer_id: i64, n: usize, occur: &str, padding: usize) {
    let requests: Vec<pb::ImportCommunicationsRequest> = (0..n)
        .map(|i| pb::ImportCommunicationsRequest {
            communication: Some(note(
                customer_id,
                &format!("import {i} {}", "x".repeat(padding)),
                occur,
            )),
            request_id: String::new(),
        })
        .collect();
    let r = app
        .communications()
        .import_communications(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.accepted_count, n as i64);
}

/// `(source rank, id)`: what identifies an event.
fn identity(e: &pb::TimelineEvent) -> (u8, i64) {
    match e.entry.as_ref().unwrap() {
        Entry::Communication(c) => (0, c.id),
        Entry::Transaction(t) => (1, t.id),
        Entry::ServiceTicket(s) => (2, s.id),
    }
}

async fn open(app: &TestApp, req: pb::StreamTimelineRequest) -> Streaming<pb::TimelineEvent> {
    app.communications()
        .stream_timeline(req)
        .await
        .unwrap()
        .into_inner()
}

/// Every event of a finite (non-follow) stream.
async fn collect(app: &TestApp, req: pb::StreamTimelineRequest) -> Vec<pb::TimelineEvent> {
    let mut stream = open(app, req).await;
    let mut out = Vec::new();
    while let Some(e) = stream.message().await.unwrap() {
        out.push(e);
    }
    out
}

fn follow_of(customer_id: i64) -> pb::StreamTimelineRequest {
    pb::StreamTimelineRequest {
        customer_id,
        follow: true,
        ..Default::default()
    }
}

/// What a follow stream opened with `r` must have sent once everything recorded so far
/// reached it: a fresh read with the same filters, and for a resumed stream also what
/// was recorded after it opened (`before`: customer a's events then), wherever it falls.
async fn expected(
    app: &TestApp,
    r: &pb::StreamTimelineRequest,
    before: &HashSet<(u8, i64)>,
) -> HashSet<(u8, i64)> {
    let mut want: HashSet<(u8, i64)> = collect(app, r.clone()).await.iter().map(identity).collect();
    if !r.resume_cursor.is_empty() {
        let whole = pb::StreamTimelineRequest {
            resume_cursor: String::new(),
            ..r.clone()
        };
        want.extend(
            collect(app, whole)
                .await
                .iter()
                .map(identity)
                .filter(|id| !before.contains(id)),
        );
    }
    want
}

/// Queries one hub issues in `window`: every source once per poll, plus one poll of slack
/// at either end.
fn hub_queries(window: Duration) -> u64 {
    3 * (window.as_millis() / POLL_INTERVAL.as_millis() + 2) as u64
}

backend_tests! {
    async fn idle_follow_streams_cost_the_database_the_same_as_one(app: &TestApp) {
        let c = new_customer(app, "关注").await;
        log(app, note(c, "seed", "2024-01-01T00:00:00Z")).await;
        let window = Duration::from_secs(2);
        let mut measured = Vec::new();
        for n in [1usize, 64] {
            let mut streams = Vec::new();
            for _ in 0..n {
                let mut s = open(app, follow_of(c)).await;
                assert_eq!(next_event(&mut s, 10).await.occur_time, Some(ts("2024-01-01T00:00:00Z")));
                streams.push(s);
            }
            // Once every stream has this event its catch-up read is over: from here on
            // only the hub may query.
            let go = log(app, note(c, &format!("go {n}"), "2024-01-02T00:00:00Z")).await;
            for s in &mut streams {
                // Earlier rounds' events come first, from the history.
                while identity(&next_event(s, 10).await) != (0, go) {}
            }
            let (before, _) = pool_usage(&app.db);
            let mut busiest = 0;
            let started = tokio::time::Instant::now();
            while started.elapsed() < window {
                busiest = busiest.max(pool_usage(&app.db).1);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let (after, _) = pool_usage(&app.db);
            let queries = after - before;
            eprintln!("{n} idle follow streams: {queries} queries in {window:?}");
            assert!(
                queries <= hub_queries(window),
                "{n} idle follow streams issued {queries} queries in {window:?}"
            );
            // Only the hub queries, one read at a time: the pool stays free for calls.
            assert!(busiest <= 1, "{busiest} connections busy with {n} idle follow streams");
            let mut customers = app.customers();
            for _ in 0..5 {
                let got = tokio::time::timeout(
                    Duration::from_secs(1),
                    customers.get_customer(pb::GetCustomerRequest { id: c }),
                )
                .await
                .expect("an ordinary call is served while streams follow");
                assert_eq!(got.unwrap().into_inner().id, c);
            }
            measured.push(queries);
        }
        // Same order for 1 and 64 streams: the cost is the hub's, not the streams'.
        assert!(measured[1] <= 2 * measured[0] + 6, "queries for 1 and 64 streams: {measured:?}");

        // With nobody following the hub stops polling altogether.
        tokio::time::sleep(2 * POLL_INTERVAL).await;
        let (before, _) = pool_usage(&app.db);
        tokio::time::sleep(4 * POLL_INTERVAL).await;
        let (after, _) = pool_usage(&app.db);
        assert_eq!(after - before, 0, "queries with no follow stream open");
    }

    async fn events_logged_during_and_after_the_history_reach_every_matching_stream_once(app: &TestApp) {
        let a = new_customer(app, "甲方").await;
        let b = new_customer(app, "乙方").await;
        import_notes(app, a, 3000, "2024-03-01T00:00:00Z").await;
        // A cursor of a stream without follow names the settled snapshot at its start:
        // events recorded within SETTLE before it could come again after a resume.
        tokio::time::sleep(SETTLE).await;
        let middle = collect(app, pb::StreamTimelineRequest { customer_id: a, ..Default::default() }).await[1500].cursor.clone();
        // Different filters over the same hub: one customer and every source, one
        // channel, every customer, another customer's transactions and tickets, resumed.
        let everything_of_a = pb::StreamTimelineRequest {
            customer_id: a,
            include_transactions: true,
            include_service_tickets: true,
            ..Default::default()
        };
        let requests = [
            everything_of_a.clone(),
            pb::StreamTimelineRequest { customer_id: a, channels: vec![pb::Channel::Phone as i32], ..Default::default() },
            pb::StreamTimelineRequest::default(),
            pb::StreamTimelineRequest { customer_id: b, include_transactions: true, include_service_tickets: true, ..Default::default() },
            pb::StreamTimelineRequest { customer_id: a, resume_cursor: middle, ..Default::default() },
        ];
        let a_before: HashSet<(u8, i64)> = collect(app, everything_of_a.clone()).await.iter().map(identity).collect();
        let mut streams = Vec::new();
        let mut seen: Vec<Vec<pb::TimelineEvent>> = Vec::new();
        for r in &requests {
            let mut s = open(app, pb::StreamTimelineRequest { follow: true, ..r.clone() }).await;
            let mut got = Vec::new();
            // Stop each stream inside its history (those that have one).
            if r.customer_id != b && r.channels.is_empty() {
                got.push(next_event(&mut s, 10).await);
            }
            streams.push(s);
            seen.push(got);
        }

        // Logged while the histories are being read: ahead of the streams' positions,
        // behind them, on another channel, for another customer, other sources.
        let write_round = |round: &'static str| async move {
            let mut phone = note(a, &format!("{round} phone"), "2023-05-01T00:00:00Z");
            phone.channel = pb::Channel::Phone as i32;
            log(app, phone).await;
            log(app, note(a, &format!("{round} ahead"), "2025-01-01T00:00:00Z")).await;
            log(app, note(a, &format!("{round} behind"), "2023-01-01T00:00:00Z")).await;
            log(app, note(b, &format!("{round} of b"), "2024-03-01T00:00:00Z")).await;
            let mut customers = app.customers();
            for customer_id in [a, b] {
                customers
                    .create_transaction(pb::CreateTransactionRequest {
                        transaction: Some(pb::Transaction {
                            customer_id,
                            order_number: format!("{round}-{customer_id}"),
                            product: "手机".into(),
                            amount: Some(pb::Money { currency_code: "CNY".into(), units: 1, nanos: 0 }),
                            occur_time: Some(ts("2024-06-01T00:00:00Z")),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    })
                    .await
                    .unwrap();
                customers
                    .create_service_ticket(pb::CreateServiceTicketRequest {
                        service_ticket: Some(pb::ServiceTicket {
                            customer_id,
                            issue: format!("{round} 问题"),
                            open_time: Some(ts("2022-06-01T00:00:00Z")),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    })
                    .await
                    .unwrap();
            }
        };
        write_round("during").await;

        // Read every history through, then write again while all streams are live.
        for ((s, got), r) in streams.iter_mut().zip(&mut seen).zip(&requests) {
            let want = expected(app, r, &a_before).await.len();
            while got.len() < want {
                got.push(next_event(s, 10).await);
            }
        }
        write_round("after").await;

        // Past the re-read window, markers: whatever the hub would repeat it would have
        // sent before them.
        tokio::time::sleep(SETTLE + 2 * POLL_INTERVAL).await;
        let mut markers = HashSet::new();
        markers.insert((0, log(app, note(a, "marker", "2026-01-01T00:00:00Z")).await));
        let mut marker_phone = note(a, "marker phone", "2026-01-01T00:00:00Z");
        marker_phone.channel = pb::Channel::Phone as i32;
        markers.insert((0, log(app, marker_phone).await));
        let marker_b = app
            .customers()
            .create_service_ticket(pb::CreateServiceTicketRequest {
                service_ticket: Some(pb::ServiceTicket {
                    customer_id: b,
                    issue: "marker".into(),
                    open_time: Some(ts("2026-01-01T00:00:00Z")),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        markers.insert((2, marker_b));

        for (i, ((s, got), r)) in streams.iter_mut().zip(&mut seen).zip(&requests).enumerate() {
            let want = expected(app, r, &a_before).await;
            let mut markers_left: HashSet<_> = markers.intersection(&want).copied().collect();
            assert!(!markers_left.is_empty(), "stream {i} matches no marker");
            while !markers_left.is_empty() {
                let e = next_event(s, 10).await;
                markers_left.remove(&identity(&e));
                got.push(e);
            }
            let ids: Vec<(u8, i64)> = got.iter().map(identity).collect();
            let distinct: HashSet<(u8, i64)> = ids.iter().copied().collect();
            assert_eq!(distinct.len(), ids.len(), "stream {i} sent an event twice");
            let extra: Vec<_> = distinct.difference(&want).collect();
            let missed: Vec<_> = want.difference(&distinct).collect();
            assert!(extra.is_empty(), "stream {i} sent events outside its filters: {extra:?}");
            assert!(missed.is_empty(), "stream {i} missed events: {missed:?}");
        }
    }

    async fn a_follow_stream_that_falls_behind_ends_with_follow_lagged_and_resumes_without_loss(app: &TestApp) {
        let c = new_customer(app, "慢读").await;
        let mut stream = open(app, follow_of(c)).await;
        let go = log(app, note(c, "go", "2024-01-01T00:00:00Z")).await;
        let first = next_event(&mut stream, 10).await;
        assert_eq!(identity(&first), (0, go));
        // Far more than the hub buffers, while the client reads nothing (and large
        // enough that the HTTP/2 window holds few of them).
        let n = 3 * BUFFER_EVENTS;
        import_sized(app, c, n, "2024-02-01T00:00:00Z", 1000).await;
        // Still reading nothing while all of them settle and are broadcast.
        tokio::time::sleep(SETTLE + 8 * POLL_INTERVAL).await;
        let mut got = vec![first];
        let status = loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("in time") {
                Ok(Some(e)) => got.push(e),
                Ok(None) => panic!("stream ended without an error after {} events", got.len()),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::Unavailable);
        assert_status(&status, Code::Unavailable, "FOLLOW_LAGGED");
        assert!(got.len() < n + 1, "nothing was dropped, so nothing should lag");
        // Resuming from the last cursor delivers exactly the rest (without follow: what
        // has settled, so after SETTLE all of it).
        tokio::time::sleep(SETTLE).await;
        let rest = collect(
            app,
            pb::StreamTimelineRequest { customer_id: c, resume_cursor: got.last().unwrap().cursor.clone(), ..Default::default() },
        )
        .await;
        let ids: Vec<(u8, i64)> = got.iter().chain(&rest).map(identity).collect();
        let distinct: HashSet<&(u8, i64)> = ids.iter().collect();
        assert_eq!(ids.len(), n + 1);
        assert_eq!(distinct.len(), n + 1);
    }

    async fn a_long_history_on_a_busy_server_switches_to_live_without_loss(app: &TestApp) {
        let c = new_customer(app, "长史").await;
        // 6 MB of history: more than the channel and HTTP/2 windows hold, so the stream
        // is still inside it while the client pauses.
        import_sized(app, c, 3000, "2024-03-01T00:00:00Z", 2000).await;
        // Settled, so the 3000 are the stream's history.
        tokio::time::sleep(SETTLE).await;
        let mut stream = open(app, follow_of(c)).await;
        let mut got = vec![next_event(&mut stream, 10).await];
        // While the stream sits in its history, more is recorded than the hub buffers,
        // behind the stream's position: only the catch-up read can deliver it.
        let n = 3 * BUFFER_EVENTS;
        import_notes(app, c, n, "2023-01-01T00:00:00Z").await;
        while got.len() < 3000 + n {
            got.push(next_event(&mut stream, 10).await);
        }
        let live = log(app, note(c, "live", "2026-01-01T00:00:00Z")).await;
        let e = next_event(&mut stream, 10).await;
        assert_eq!(identity(&e), (0, live));
        got.push(e);
        let ids: Vec<(u8, i64)> = got.iter().map(identity).collect();
        let distinct: HashSet<&(u8, i64)> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "an event was sent twice");
        assert_eq!(ids.len(), 3000 + n + 1);
    }
}

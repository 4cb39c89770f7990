//! CommunicationService: recording, import, listing, and the timeline stream
//! (order, resume, follow, cancel) on both databases.

use std::collections::HashSet;
use std::time::Duration;

use crm_comms::pb::{self, communication::Details, timeline_event::Entry};
use crm_comms::service::timeline;
use tonic::Code;

use crate::harness::{
    assert_invalid, assert_status, log, new_customer, note, ts, Backend, TestApp,
};
use crate::{backend_tests, standalone_tests};

/// Imports `items` (communication, request_id) in one client stream.
async fn import(
    app: &TestApp,
    items: Vec<(pb::Communication, String)>,
) -> pb::ImportCommunicationsResponse {
    let requests: Vec<pb::ImportCommunicationsRequest> = items
        .into_iter()
        .map(|(c, r)| pb::ImportCommunicationsRequest {
            communication: Some(c),
            request_id: r,
        })
        .collect();
    app.communications()
        .import_communications(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
}

/// A timestamp `minutes` after 2024-01-01T00:00:00Z.
fn minute(minutes: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: 1_704_067_200 + minutes * 60,
        nanos: 0,
    }
}

/// (seconds, nanos, id, rank) of a timeline event: its total order.
fn key(e: &pb::TimelineEvent) -> (i64, i32, i64, u8) {
    let t = e.occur_time.unwrap();
    let (id, rank) = match e.entry.as_ref().unwrap() {
        Entry::Communication(c) => (c.id, 0),
        Entry::Transaction(t) => (t.id, 1),
        Entry::ServiceTicket(s) => (s.id, 2),
    };
    (t.seconds, t.nanos, id, rank)
}

async fn collect(app: &TestApp, req: pb::StreamTimelineRequest) -> Vec<pb::TimelineEvent> {
    let mut stream = app
        .communications()
        .stream_timeline(req)
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(e) = stream.message().await.unwrap() {
        out.push(e);
    }
    out
}

/// Seeds a customer with `n` communications (with many equal times), 40 transactions
/// and 30 tickets, returning the customer id.
async fn seed_mixed(app: &TestApp, name: &str, n: i64) -> i64 {
    let id = new_customer(app, name).await;
    let items = (0..n)
        .map(|i| {
            let mut c = note(id, &format!("{name} 第{i}次沟通"), "2024-01-01T00:00:00Z");
            // Every third event shares a minute with its neighbour: ties by id.
            c.occur_time = Some(minute(i - i % 3));
            c.channel = [1, 2, 3, 4, 5][(i % 5) as usize];
            (c, String::new())
        })
        .collect();
    let r = import(app, items).await;
    assert_eq!(r.accepted_count, n);
    let mut customers = app.customers();
    for i in 0..40 {
        customers
            .create_transaction(pb::CreateTransactionRequest {
                transaction: Some(pb::Transaction {
                    customer_id: id,
                    order_number: format!("o{i}"),
                    product: "手机".into(),
                    amount: Some(pb::Money {
                        currency_code: "CNY".into(),
                        units: 3000,
                        nanos: 0,
                    }),
                    occur_time: Some(minute(i * 30)),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap();
    }
    for i in 0..30 {
        customers
            .create_service_ticket(pb::CreateServiceTicketRequest {
                service_ticket: Some(pb::ServiceTicket {
                    customer_id: id,
                    issue: format!("问题{i}"),
                    open_time: Some(minute(i * 45)),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap();
    }
    id
}

fn all_of(customer_id: i64) -> pb::StreamTimelineRequest {
    pb::StreamTimelineRequest {
        customer_id,
        include_transactions: true,
        include_service_tickets: true,
        ..Default::default()
    }
}

backend_tests! {
    async fn each_channel_round_trips_with_its_details(app: &TestApp) {
        let id = new_customer(app, "张三").await;
        let mut client = app.communications();
        let cases = vec![
            pb::Communication {
                channel: pb::Channel::Phone as i32,
                direction: pb::Direction::Inbound as i32,
                content: "客户来电：问题反馈 😀".into(),
                outcome: "已记录".into(),
                details: Some(Details::PhoneCall(pb::PhoneCall {
                    phone_number: "+86 138 0000 0000".into(),
                    duration: Some(prost_types::Duration { seconds: 125, nanos: 500_000_000 }),
                })),
                ..Default::default()
            },
            pb::Communication {
                channel: pb::Channel::Email as i32,
                direction: pb::Direction::Outbound as i32,
                content: "您好，您的订单已发货。".into(),
                details: Some(Details::Email(pb::Email {
                    address: "ZhangSan@Example.com".into(),
                    subject: "订单查询".into(),
                })),
                ..Default::default()
            },
            pb::Communication {
                channel: pb::Channel::Chat as i32,
                direction: pb::Direction::Inbound as i32,
                content: "退款申请".into(),
                details: Some(Details::Chat(pb::Chat {
                    platform: "wechat".into(),
                    conversation_id: "conv-9".into(),
                })),
                ..Default::default()
            },
            pb::Communication {
                channel: pb::Channel::Meeting as i32,
                direction: pb::Direction::Outbound as i32,
                content: "季度回访会议".into(),
                ..Default::default()
            },
            pb::Communication {
                channel: pb::Channel::Note as i32,
                direction: pb::Direction::Outbound as i32,
                content: "VIP 客户".into(),
                ..Default::default()
            },
        ];
        let mut ids = Vec::new();
        for (i, mut c) in cases.into_iter().enumerate() {
            c.customer_id = id;
            c.occur_time = Some(minute(i as i64));
            let stored = client.log_communication(log(c.clone(), "")).await.unwrap().into_inner();
            let got = client
                .get_communication(pb::GetCommunicationRequest { id: stored.id })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(got, stored);
            assert_eq!(got.content, c.content);
            assert_eq!(got.channel, c.channel);
            assert_eq!(got.occur_time, c.occur_time);
            match (&got.details, &c.details) {
                (Some(Details::PhoneCall(p)), Some(_)) => {
                    assert_eq!(p.phone_number, "+8613800000000");
                    assert_eq!(p.duration, Some(prost_types::Duration { seconds: 125, nanos: 500_000_000 }));
                }
                (Some(Details::Email(e)), Some(_)) => {
                    assert_eq!(e.address, "zhangsan@example.com");
                    assert_eq!(e.subject, "订单查询");
                }
                (got, want) => assert_eq!(got, want),
            }
            ids.push(stored.id);
        }
        // Newest first, filtered by channel and direction.
        let all = client
            .list_communications(pb::ListCommunicationsRequest { customer_id: id, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.communications.iter().map(|c| c.id).collect::<Vec<_>>(), ids.iter().rev().copied().collect::<Vec<_>>());
        let inbound_calls_chats = client
            .list_communications(pb::ListCommunicationsRequest {
                customer_id: id,
                channels: vec![pb::Channel::Phone as i32, pb::Channel::Chat as i32, pb::Channel::Email as i32],
                direction: pb::Direction::Inbound as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(inbound_calls_chats.communications.iter().map(|c| c.id).collect::<Vec<_>>(), vec![ids[2], ids[0]]);
        client.delete_communication(pb::DeleteCommunicationRequest { id: ids[1] }).await.unwrap();
        let err = client.get_communication(pb::GetCommunicationRequest { id: ids[1] }).await.unwrap_err();
        assert_status(&err, Code::NotFound, "COMMUNICATION_NOT_FOUND");
        let err = client.delete_communication(pb::DeleteCommunicationRequest { id: ids[1] }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }

    async fn log_retry_with_request_id_is_harmless(app: &TestApp) {
        let id = new_customer(app, "李四").await;
        let mut client = app.communications();
        let first = client.log_communication(log(note(id, "订单查询", "2024-05-01T10:00:00Z"), "call-1")).await.unwrap().into_inner();
        let again = client.log_communication(log(note(id, "订单查询", "2024-05-01T10:00:00Z"), "call-1")).await.unwrap().into_inner();
        assert_eq!(first, again);
        assert_eq!(app.count_where("communications", "customer_id", id).await, 1);
    }

    async fn import_counts_good_bad_and_duplicate_items_exactly(app: &TestApp) {
        let a = new_customer(app, "A").await;
        let b = new_customer(app, "B").await;
        app.communications().log_communication(log(note(a, "earlier", "2024-01-01T00:00:00Z"), "dup-before")).await.unwrap();
        let mut items = Vec::new();
        let mut good = 0;
        for i in 0..2500 {
            let customer = if i % 2 == 0 { a } else { b };
            let (c, r) = match i % 10 {
                // Invalid: no channel.
                3 => (pb::Communication { channel: 0, ..note(customer, "x", "2024-01-01T00:00:00Z") }, format!("bad-{i}")),
                // Unknown customer.
                5 => (note(999_999, "x", "2024-01-01T00:00:00Z"), format!("ghost-{i}")),
                // Repeats the previous item, key and all.
                7 => {
                    let previous = if (i - 1) % 2 == 0 { a } else { b };
                    (note(previous, &format!("第{}条", i - 1), "2024-02-01T00:00:00Z"), format!("k-{}", i - 1))
                }
                _ => {
                    good += 1;
                    (note(customer, &format!("第{i}条"), "2024-02-01T00:00:00Z"), format!("k-{i}"))
                }
            };
            items.push((c, r));
        }
        items.push((note(a, "earlier", "2024-01-01T00:00:00Z"), "dup-before".into()));
        // An oversized item: rejected with its index.
        items.push((note(b, &"字".repeat(30_000), "2024-01-01T00:00:00Z"), "big".into()));
        let r = import(app, items).await;
        assert_eq!(r.accepted_count, good);
        assert_eq!(r.duplicate_count, 250 + 1);
        assert_eq!(r.rejected_count, 250 + 250 + 1);
        assert_eq!(r.rejected.len(), 501);
        let big = r.rejected.last().unwrap();
        assert_eq!((big.index, big.request_id.as_str()), (2501, "big"));
        assert!(big.reason.contains("communication.content"), "{}", big.reason);
        let ghost = r.rejected.iter().find(|x| x.index == 5).unwrap();
        assert!(ghost.reason.contains("customer_id"), "{}", ghost.reason);
        assert!(r.rejected.iter().find(|x| x.index == 3).unwrap().reason.contains("communication.channel"));
        assert_eq!(app.scalar("SELECT COUNT(*) FROM communications").await, good + 1);
        // The same import again stores nothing new.
        let again = import(app, vec![(note(a, "第0条", "2024-02-01T00:00:00Z"), "k-0".into())]).await;
        assert_eq!((again.accepted_count, again.duplicate_count), (0, 1));
    }

    async fn an_import_queued_behind_held_writes_is_stored_exactly_in_batches_grouped_on_sqlite(app: &TestApp) {
        let customers = crate::harness::new_customers(app, "group", 3).await;
        // Writes are held while the stream is sent, so its batches queue behind the first.
        let hold = crate::harness::WriteHold::take(app, customers[0]).await;
        let n = 9_000;
        let item = |i: usize, content: &str| {
            let month = 1 + i % 12;
            let day = 1 + i % 28;
            let at = format!("2024-{month:02}-{day:02}T{:02}:{:02}:00Z", i % 24, i % 60);
            note(customers[i % 3], content, &at)
        };
        let mut items: Vec<(pb::Communication, String)> =
            (0..n).map(|i| (item(i, &format!("第{i}条")), format!("g-{i}"))).collect();
        // Replays of earlier items, batches apart: one the same, one a different communication.
        items[4_500] = (item(10, "第10条"), "g-10".into());
        items[6_000] = (item(20, "另一条"), "g-20".into());
        let (sent, all_sent) = tokio::sync::oneshot::channel();
        let mut sent = Some(sent);
        let requests = items.into_iter().enumerate().map(move |(i, (c, r))| {
            if i + 1 == n {
                let _ = sent.take().map(|s| s.send(()));
            }
            pb::ImportCommunicationsRequest { communication: Some(c), request_id: r }
        });
        let mut client = app.communications();
        let call = tokio::spawn(async move {
            client.import_communications(tokio_stream::iter(requests)).await.map(|r| r.into_inner())
        });
        all_sent.await.expect("the whole stream was taken");
        tokio::time::sleep(Duration::from_millis(500)).await;
        hold.release().await;
        let report = call.await.expect("join").expect("the import is stored");
        let stored = n as i64 - 2;
        assert_eq!((report.accepted_count, report.duplicate_count, report.rejected_count), (stored, 1, 1), "{report:?}");
        assert_eq!(report.rejected[0].index, 6_000, "{report:?}");
        assert_eq!(app.scalar("SELECT COUNT(*) FROM communications").await, stored);
        for table in ["communication_slots", "communication_hours", "customer_months"] {
            let sum = format!("SELECT COALESCE(SUM(n), 0) FROM {table}");
            assert_eq!(app.scalar(&sum).await, stored, "{table}");
        }
        // Each transaction is audited once with its rows. On SQLite the batches that
        // queued were stored in fewer transactions than batches; on MariaDB each batch is
        // its own.
        let import = "method LIKE '%ImportCommunications'";
        let records = app.scalar(&format!("SELECT COUNT(*) FROM audit_records WHERE {import}")).await;
        let grouped = format!("{import} AND detail LIKE '____ rows%' AND detail NOT LIKE '1000 rows%'");
        let grouped = app.scalar(&format!("SELECT COUNT(*) FROM audit_records WHERE {grouped}")).await;
        let batches = (n / 1000) as i64;
        if app.backend == Backend::Sqlite {
            assert!(records < batches, "{records} transactions for {n} items");
            assert!(grouped >= 1, "no transaction stored more than one batch ({records} transactions)");
        } else {
            assert!(records >= batches, "{records} transactions for {n} items");
            assert_eq!(grouped, 0, "a transaction stored more than one batch");
        }
        let audited = app.scalar(&format!("SELECT COUNT(*) FROM audit_records WHERE {import} AND detail LIKE '% rows for 3 customers'")).await;
        assert_eq!(audited, records, "every transaction's record names its rows and customers");
    }

    async fn timeline_returns_every_event_once_in_total_order(app: &TestApp) {
        let c1 = seed_mixed(app, "甲", 3000).await;
        let c2 = seed_mixed(app, "乙", 500).await;
        let events = collect(app, all_of(c1)).await;
        assert_eq!(events.len(), 3000 + 40 + 30);
        let keys: Vec<_> = events.iter().map(key).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "not strictly ordered");
        let distinct: HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        for e in &events {
            let owner = match e.entry.as_ref().unwrap() {
                Entry::Communication(c) => c.customer_id,
                Entry::Transaction(t) => t.customer_id,
                Entry::ServiceTicket(s) => s.customer_id,
            };
            assert_eq!(owner, c1);
        }
        // Newest first is the exact reverse.
        let mut newest = collect(app, pb::StreamTimelineRequest { order: pb::TimelineOrder::NewestFirst as i32, ..all_of(c1) }).await;
        newest.reverse();
        assert_eq!(newest.iter().map(key).collect::<Vec<_>>(), keys);
        // Every customer, communications only, in a time range and channel filter.
        let everyone = collect(app, pb::StreamTimelineRequest { customer_id: 0, ..Default::default() }).await;
        assert_eq!(everyone.len(), 3500);
        assert!(everyone.windows(2).all(|w| key(&w[0]) < key(&w[1])));
        let ranged = collect(app, pb::StreamTimelineRequest {
            customer_id: c2,
            start_time: Some(minute(99)),
            end_time: Some(minute(201)),
            channels: vec![pb::Channel::Phone as i32],
            ..Default::default()
        }).await;
        // Minutes 99..=200 hold events i = 99..=202 (times round down to multiples of 3);
        // of those, channel PHONE is i % 5 == 0.
        let want = (99..=202).filter(|i| i % 5 == 0).count();
        assert_eq!(ranged.len(), want);
    }

    async fn resume_from_a_middle_cursor_reproduces_the_tail(app: &TestApp) {
        let c = seed_mixed(app, "丙", 2500).await;
        for order in [pb::TimelineOrder::OldestFirst, pb::TimelineOrder::NewestFirst] {
            let req = pb::StreamTimelineRequest { order: order as i32, ..all_of(c) };
            let full = collect(app, req.clone()).await;
            for cut in [0, 1, 1234, full.len() - 2, full.len() - 1] {
                let tail = collect(app, pb::StreamTimelineRequest { resume_cursor: full[cut].cursor.clone(), ..req.clone() }).await;
                assert_eq!(tail, full[cut + 1..].to_vec(), "order {order:?} cut {cut}");
            }
        }
        // A cursor is bound to the event set it came from.
        let full = collect(app, all_of(c)).await;
        let err = app.communications()
            .stream_timeline(pb::StreamTimelineRequest { resume_cursor: full[5].cursor.clone(), ..Default::default() })
            .await
            .unwrap_err();
        assert_invalid(&err, &["resume_cursor"]);
    }

    async fn follow_delivers_events_written_during_history_and_after(app: &TestApp) {
        let c = seed_mixed(app, "丁", 3000).await;
        let total_history = 3070;
        let mut stream = app.communications()
            .stream_timeline(pb::StreamTimelineRequest { follow: true, ..all_of(c) })
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        let mut seen = vec![first];
        // Written while the history is still being sent: one far in the future (the
        // history will reach it) and one back-dated before the stream's position.
        let mut client = app.communications();
        let during_future = client.log_communication(log(note(c, "during-future", "2025-01-01T00:00:00Z"), "")).await.unwrap().into_inner();
        let during_past = client.log_communication(log(note(c, "during-past", "2023-06-01T00:00:00Z"), "")).await.unwrap().into_inner();
        while seen.len() < total_history + 2 {
            let e = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("event in time").unwrap().unwrap();
            seen.push(e);
        }
        // Then live events, each within a second or so.
        let mut live_ids = Vec::new();
        for i in 0..3 {
            let sent = client.log_communication(log(note(c, &format!("live {i}"), &format!("2026-01-01T00:00:0{i}Z")), "")).await.unwrap().into_inner();
            let e = tokio::time::timeout(Duration::from_secs(3), stream.message()).await.expect("live event within the poll interval").unwrap().unwrap();
            let Some(Entry::Communication(got)) = e.entry.clone() else { panic!("not a communication") };
            assert_eq!(got.id, sent.id);
            live_ids.push(got.id);
            seen.push(e);
        }
        let ids: Vec<(i64, u8)> = seen.iter().map(|e| { let k = key(e); (k.2, k.3) }).collect();
        let distinct: HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "an event was sent twice");
        assert!(ids.contains(&(during_future.id, 0)) && ids.contains(&(during_past.id, 0)));
        // Nothing else arrives: no repeats after the switch to live. Wait until the newest
        // event has settled, plus a few polls, to give a repeat every chance to appear.
        let window = timeline::SETTLE + 4 * timeline::POLL_INTERVAL;
        let extra = tokio::time::timeout(window, stream.message()).await;
        assert!(extra.is_err(), "unexpected extra event {extra:?}");
        drop(stream);
        // The last cursor resumes after the live events with nothing missing.
        let resumed = collect(app, pb::StreamTimelineRequest { resume_cursor: seen.last().unwrap().cursor.clone(), ..all_of(c) }).await;
        assert!(resumed.is_empty(), "{} events after the newest", resumed.len());
    }

    async fn cancel_mid_stream_leaves_the_server_responsive(app: &TestApp) {
        let c = seed_mixed(app, "戊", 3000).await;
        for _ in 0..5 {
            let mut stream = app.communications().stream_timeline(all_of(c)).await.unwrap().into_inner();
            for _ in 0..10 {
                stream.message().await.unwrap().unwrap();
            }
            drop(stream);
        }
        let mut client = app.customers();
        let all = tokio::time::timeout(Duration::from_secs(10), async {
            for _ in 0..50 {
                client.get_customer(pb::GetCustomerRequest { id: c }).await.unwrap();
            }
            collect(app, all_of(c)).await.len()
        })
        .await
        .expect("server still serves after cancelled streams");
        assert_eq!(all, 3070);
    }

    async fn bad_input_gets_the_right_code_and_writes_nothing(app: &TestApp) {
        let c = new_customer(app, "己").await;
        let mut client = app.communications();
        let err = client.log_communication(log(note(424_242, "x", "2024-01-01T00:00:00Z"), "")).await.unwrap_err();
        assert_status(&err, Code::NotFound, "CUSTOMER_NOT_FOUND");
        let mut big = note(c, &"a".repeat(64 * 1024 + 1), "2024-01-01T00:00:00Z");
        big.direction = 0;
        big.details = Some(Details::Email(pb::Email { address: "nope".into(), subject: String::new() }));
        let err = client.log_communication(log(big, "")).await.unwrap_err();
        assert_invalid(&err, &["communication.content", "communication.direction", "communication.email", "communication.email.address"]);
        let err = client
            .stream_timeline(pb::StreamTimelineRequest { customer_id: 424_242, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = client
            .stream_timeline(pb::StreamTimelineRequest {
                customer_id: c,
                start_time: Some(ts("2024-02-01T00:00:00Z")),
                end_time: Some(ts("2024-01-01T00:00:00Z")),
                resume_cursor: "forged".into(),
                order: pb::TimelineOrder::NewestFirst as i32,
                follow: true,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["end_time", "resume_cursor", "follow"]);
        let err = client
            .list_communications(pb::ListCommunicationsRequest { channels: vec![42], page_size: -5, ..Default::default() })
            .await
            .unwrap_err();
        assert_invalid(&err, &["channels[0]", "page_size"]);
        assert_eq!(app.scalar("SELECT COUNT(*) FROM communications").await, 0);
    }

    async fn concurrent_writers_lose_nothing(app: &TestApp) {
        let c = new_customer(app, "癸").await;
        let mut tasks = Vec::new();
        for w in 0..16 {
            let mut client = app.communications();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    client
                        .log_communication(log(note(c, &format!("w{w} #{i}"), "2024-03-01T00:00:00Z"), &format!("w{w}-{i}")))
                        .await
                        .unwrap();
                }
            }));
        }
        let mut import_items = Vec::new();
        for i in 0..300 {
            import_items.push((note(c, "bulk", "2024-03-02T00:00:00Z"), format!("bulk-{i}")));
        }
        let imported = import(app, import_items).await;
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(imported.accepted_count, 300);
        assert_eq!(app.count_where("communications", "customer_id", c).await, 160 + 300);
    }

    async fn concurrent_logs_each_get_their_own_answer(app: &TestApp) {
        // 64 calls at once, so the writer batches them: new rows, keys repeated within
        // the burst and keys used before it, and unknown customers, interleaved.
        let a = new_customer(app, "甲").await;
        let b = new_customer(app, "乙").await;
        let mut client = app.communications();
        let before = client
            .log_communication(log(note(a, "used before", "2024-01-01T00:00:00Z"), "old-key"))
            .await
            .unwrap()
            .into_inner();
        let mut calls = Vec::new();
        for i in 0..64i64 {
            let mut client = app.communications();
            let (customer, key) = match i % 8 {
                0 => (a, "old-key".to_owned()),
                1 | 2 => (b, "same-in-burst".to_owned()),
                3 => (9_999_999, format!("ghost-{i}")),
                4 => (a, String::new()),
                _ => (if i % 2 == 0 { a } else { b }, format!("k-{i}")),
            };
            // A key's uses are replays of one request (a key reused for another
            // communication is refused; see the idempotency tests).
            let (content, occur) = match i % 8 {
                0 => ("used before".to_owned(), "2024-01-01T00:00:00Z"),
                1 | 2 => ("same in burst".to_owned(), "2024-02-01T00:00:00Z"),
                _ => (format!("burst #{i}"), "2024-02-01T00:00:00Z"),
            };
            calls.push(tokio::spawn(async move {
                let c = note(customer, &content, occur);
                (i, customer, content, client.log_communication(log(c, &key)).await)
            }));
        }
        let mut same_in_burst = Vec::new();
        for call in calls {
            let (i, customer, content, answer) = call.await.unwrap();
            match i % 8 {
                0 => assert_eq!(answer.unwrap().into_inner(), before, "call {i}"),
                1 | 2 => same_in_burst.push(answer.unwrap().into_inner()),
                3 => assert_status(&answer.unwrap_err(), Code::NotFound, "CUSTOMER_NOT_FOUND"),
                _ => {
                    let row = answer.unwrap().into_inner();
                    assert_eq!((row.customer_id, row.content.as_str()), (customer, content.as_str()));
                    // The id answered is the row stored.
                    let stored = client
                        .get_communication(pb::GetCommunicationRequest { id: row.id })
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(stored, row, "call {i}");
                }
            }
        }
        // Every use of one key answers the one row stored for it.
        assert_eq!(same_in_burst.len(), 16);
        assert!(same_in_burst.iter().all(|r| *r == same_in_burst[0]));
        let stored = app.count_where("communications", "customer_id", a).await
            + app.count_where("communications", "customer_id", b).await;
        // 1 before + 1 for the repeated key + 8 without a key + 24 with their own key.
        assert_eq!(stored, 1 + 1 + 8 + 24);
        for table in ["communication_slots", "communication_hours"] {
            let sum = format!("SELECT COALESCE(SUM(n), 0) FROM {table}");
            assert_eq!(app.scalar(&sum).await, stored, "{table}");
        }
    }

    async fn follow_sees_events_written_by_another_replica(app: &TestApp) {
    // A second server over the same database stands in for another replica.
    let c = new_customer(app, "壬").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = crm_comms::config::Config::new(addr, app.database_url.clone());
    let db = crm_comms::db::Db::connect(&app.database_url, &config.pool_options())
        .await
        .unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(crm_comms::server::serve(config, db, listener, rx));
    let mut other = pb::communication_service_client::CommunicationServiceClient::connect(format!(
        "http://{addr}"
    ))
    .await
    .unwrap();
    let mut stream = app
        .communications()
        .stream_timeline(pb::StreamTimelineRequest {
            customer_id: c,
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let sent = other
        .log_communication(log(note(c, "from replica B", "2024-01-01T00:00:00Z"), ""))
        .await
        .unwrap()
        .into_inner();
    let e = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("within a second or so")
        .unwrap()
        .unwrap();
    assert_eq!(key(&e).2, sent.id);
}

    async fn list_paginates_newest_first_across_pages(app: &TestApp) {
        let c = seed_mixed(app, "庚", 120).await;
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = app.communications()
                .list_communications(pb::ListCommunicationsRequest { customer_id: c, page_size: 7, page_token: token.clone(), ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.communications.iter().map(|x| (x.occur_time.unwrap().seconds, x.id)));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen.len(), 120);
        assert!(seen.windows(2).all(|w| w[0] > w[1]));
    }
}

standalone_tests! {
    async fn follow_streams_are_limited_and_end_on_shutdown() {
        let mut app = TestApp::start_with(Backend::Sqlite, |c| c.max_follow_streams = 1)
            .await
            .unwrap();
        let c = new_customer(&app, "辛").await;
        let follow = pb::StreamTimelineRequest {
            customer_id: c,
            follow: true,
            ..Default::default()
        };
        let mut first = app
            .communications()
            .stream_timeline(follow.clone())
            .await
            .unwrap()
            .into_inner();
        let err = app
            .communications()
            .stream_timeline(follow.clone())
            .await
            .unwrap_err();
        assert_status(&err, Code::ResourceExhausted, "TOO_MANY_FOLLOW_STREAMS");
        app.begin_shutdown();
        let end = tokio::time::timeout(Duration::from_secs(5), first.message())
            .await
            .expect("stream ends on shutdown");
        let status = end.unwrap_err();
        assert_status(&status, Code::Unavailable, "SHUTTING_DOWN");
        app.stop().await;
    }
}

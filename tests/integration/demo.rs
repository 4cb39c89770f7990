//! `crm-comms seed-demo`: the binary fills a fresh database through the service's own
//! write paths (checked here through the real server), refuses a database that holds
//! customers, and gives the same data for the same seed.

use crm_comms::pb::{self, communication::Details};

use crate::backend_tests;
use crate::harness::{run_binary, ts, TestApp};

const START: &str = "2025-01-01T00:00:00Z";
const END: &str = "2026-01-01T00:00:00Z";
const KEYWORDS: [&str; 4] = ["refund", "退款", "invoice", "发票"];

/// Runs `crm-comms seed-demo` with 30 customers and 3,000 communications over 2025 on
/// the app's database.
async fn seed_demo(app: &TestApp, seed: &str) -> (bool, String) {
    let url = app.database_url.clone();
    let seed = seed.to_owned();
    tokio::task::spawn_blocking(move || {
        run_binary(
            &[
                "seed-demo",
                "--customers",
                "30",
                "--communications",
                "3000",
                "--seed",
                &seed,
                "--end",
                END,
                "--log",
                "warn",
            ],
            &url,
        )
    })
    .await
    .expect("join")
}

/// The daily frequency report of 2025 in Shanghai, with the top 5 customers.
async fn frequency(app: &TestApp) -> pb::GetFrequencyReportResponse {
    app.analytics()
        .get_frequency_report(pb::GetFrequencyReportRequest {
            start_time: Some(ts(START)),
            end_time: Some(ts(END)),
            granularity: pb::Granularity::Day as i32,
            time_zone: "Asia/Shanghai".into(),
            top_n: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The content report of 2025: the four keywords and the top 20 terms.
async fn content(app: &TestApp) -> pb::GetContentReportResponse {
    app.analytics()
        .get_content_report(pb::GetContentReportRequest {
            start_time: Some(ts(START)),
            end_time: Some(ts(END)),
            keywords: KEYWORDS.map(String::from).to_vec(),
            top_terms: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Every customer, in one page.
async fn customers(app: &TestApp) -> Vec<pb::Customer> {
    let page = app
        .customers()
        .list_customers(pb::ListCustomersRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.next_page_token.is_empty());
    page.customers
}

/// What the API says about a seeded database: customers, daily counts per channel,
/// top customers, keyword counts and top terms.
async fn fingerprint(app: &TestApp) -> String {
    let f = frequency(app).await;
    let buckets: Vec<(i64, Vec<(i32, i64)>)> = f
        .buckets
        .iter()
        .map(|b| {
            let channels = b
                .channel_counts
                .iter()
                .map(|c| (c.channel, c.count))
                .collect();
            (b.count, channels)
        })
        .collect();
    let top: Vec<(i64, i64)> = f
        .top_customers
        .iter()
        .map(|t| (t.customer_id, t.count))
        .collect();
    let c = content(app).await;
    let keywords: Vec<(String, i64, i64)> = c
        .keywords
        .iter()
        .map(|k| (k.query.clone(), k.message_count, k.customer_count))
        .collect();
    let terms: Vec<(String, i64)> = c
        .top_terms
        .iter()
        .map(|t| (t.term.clone(), t.count))
        .collect();
    format!(
        "{:?}\n{buckets:?}\n{top:?}\n{keywords:?}\n{terms:?}",
        customers(app).await
    )
}

backend_tests! {
    async fn seed_demo_fills_a_fresh_database_and_refuses_one_with_customers(app: &TestApp) {
        let (ok, out) = seed_demo(app, "7").await;
        assert!(ok, "{out}");
        assert!(out.contains("30 customers") && out.contains("3000 communications"), "{out}");

        let all = customers(app).await;
        assert_eq!(all.len(), 30);
        let chinese = all
            .iter()
            .filter(|c| c.name.chars().any(|ch| ('\u{4e00}'..='\u{9fff}').contains(&ch)))
            .count();
        assert!((8..=26).contains(&chinese), "a mix of Chinese and English names: {chinese}");
        assert!(all.iter().all(|c| c.phone.starts_with('+')), "E.164 phones");

        let f = frequency(app).await;
        assert_eq!(f.total_count, 3000);
        let mut channels: Vec<i32> =
            f.channel_counts.iter().filter(|c| c.count > 0).map(|c| c.channel).collect();
        channels.sort_unstable();
        assert_eq!(channels, [1, 2, 3, 4, 5], "every channel: {:?}", f.channel_counts);
        assert!(f.customer_count <= 30 && f.customer_count >= 20, "{}", f.customer_count);
        let busiest = &f.top_customers[0];
        assert!(busiest.count > 2 * 3000 / 30, "a few very active customers: {busiest:?}");

        // Each channel's details, as the import path stores them.
        for channel in [pb::Channel::Phone, pb::Channel::Email, pb::Channel::Chat] {
            let page = app
                .communications()
                .list_communications(pb::ListCommunicationsRequest {
                    channels: vec![channel as i32],
                    page_size: 20,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(!page.communications.is_empty());
            for c in page.communications {
                match (channel, c.details) {
                    (pb::Channel::Phone, Some(Details::PhoneCall(p))) => {
                        assert!(p.phone_number.starts_with('+') && p.duration.is_some());
                    }
                    (pb::Channel::Email, Some(Details::Email(e))) => {
                        assert!(e.address.contains('@') && !e.subject.is_empty());
                    }
                    (pb::Channel::Chat, Some(Details::Chat(ch))) => {
                        assert!(["wechat", "web", "whatsapp"].contains(&ch.platform.as_str()));
                        assert!(!ch.conversation_id.is_empty());
                    }
                    (channel, details) => panic!("{channel:?} with {details:?}"),
                }
            }
        }

        // Orders and tickets through their own listings.
        let orders = app
            .customers()
            .list_transactions(pb::ListTransactionsRequest {
                customer_id: busiest.customer_id,
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .transactions;
        assert!(!orders.is_empty());
        assert!(orders.iter().all(|o| o.order_number.starts_with("SO-") && o.amount.is_some()));
        let tickets = app
            .customers()
            .list_service_tickets(pb::ListServiceTicketsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .service_tickets;
        assert!(!tickets.is_empty());

        // The searches a demo shows find something, in both languages.
        let c = content(app).await;
        assert_eq!(c.scanned_count, 3000);
        for k in &c.keywords {
            assert!(k.message_count > 0, "{k:?}");
        }

        // A second run refuses, names the database and writes nothing.
        let (ok, out) = seed_demo(app, "7").await;
        assert!(!ok, "{out}");
        assert!(out.contains("already holds 30 customers"), "{out}");
        assert!(out.contains("fresh database"), "{out}");
        assert!(out.contains(&app.database_url), "names the database: {out}");
        assert_eq!(customers(app).await.len(), 30);
        assert_eq!(frequency(app).await.total_count, 3000);

        // Deleted customers are still data: a database holding only those refuses too.
        app.execute("UPDATE customers SET delete_time = create_time").await;
        assert_eq!(customers(app).await.len(), 0);
        let (ok, out) = seed_demo(app, "7").await;
        assert!(!ok, "{out}");
        assert!(out.contains("already holds 30 customers (deleted ones included)"), "{out}");
        assert_eq!(app.scalar("SELECT COUNT(*) FROM customers").await, 30);
    }

    async fn seed_demo_gives_the_same_data_for_the_same_seed_and_other_data_for_another(
        app: &TestApp
    ) {
        let twin = TestApp::start(app.backend).await.expect("a second fresh database");
        let other = TestApp::start(app.backend).await.expect("a third fresh database");
        for (target, seed) in [(app, "7"), (&twin, "7"), (&other, "8")] {
            let (ok, out) = seed_demo(target, seed).await;
            assert!(ok, "{out}");
        }
        let first = fingerprint(app).await;
        assert_eq!(first, fingerprint(&twin).await, "same seed, same data");
        assert_ne!(first, fingerprint(&other).await, "another seed, other data");
    }
}

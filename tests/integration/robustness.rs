//! Inputs a hostile or unlucky client can send: forged page tokens and cursors with
//! positions out of range, money sums past 64 bits, and database URLs with passwords
//! that must never be printed.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use crm_comms::{grpc::paging, pb};
use serde::Serialize;
use tonic::{Code, Status};

use crate::backend_tests;
use crate::harness::{assert_invalid, assert_status, new_customer, run_binary, ts, TestApp};

/// Microseconds since the epoch of June 1st of `year`, 00:00 UTC.
fn year(year: i32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(year, 6, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

/// A token for the same method and filters as `issued` (a real token from the
/// server), holding `position` instead: what a client can forge, since tokens are
/// not secret. Reading the fingerprint off a real token keeps this test independent
/// of how the server composes it.
fn forge(issued: &str, position: &impl Serialize) -> String {
    let bytes = URL_SAFE_NO_PAD.decode(issued).unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(&bytes[..bytes.len() - 8]).unwrap();
    let kind = envelope["k"].as_str().unwrap();
    let filter = envelope["f"].as_u64().unwrap();
    paging::encode(kind, filter, position)
}

/// A timeline cursor for the same filters and snapshot as `issued` (a real cursor in
/// the compact integer form), holding the position `(us, id, rank)` instead.
fn forge_cursor(issued: &str, (us, id, rank): (i64, i64, i64)) -> String {
    let bytes = URL_SAFE_NO_PAD.decode(issued).unwrap();
    // Form byte, kind tag, then the filter fingerprint (little-endian).
    let filter = u64::from_le_bytes(bytes[5..13].try_into().unwrap());
    let (kind, fields) = paging::decode_ints("resume_cursor", &["timeline"], filter, issued)
        .unwrap()
        .expect("a compact cursor");
    assert_eq!((kind, fields.len()), (0, 4), "a history cursor: {fields:?}");
    paging::encode_ints("timeline", filter, &[us, id, rank, fields[3]])
}

fn money(units: i64, nanos: i32) -> pb::Money {
    pb::Money {
        currency_code: "USD".into(),
        units,
        nanos,
    }
}

async fn transaction(app: &TestApp, customer_id: i64, amount: pb::Money, at: &str) {
    app.customers()
        .create_transaction(pb::CreateTransactionRequest {
            transaction: Some(pb::Transaction {
                customer_id,
                order_number: format!("o-{at}-{}", amount.units),
                product: "widget".into(),
                amount: Some(amount),
                occur_time: Some(ts(at)),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap();
}

async fn ticket(app: &TestApp, customer_id: i64, at: &str) {
    app.customers()
        .create_service_ticket(pb::CreateServiceTicketRequest {
            service_ticket: Some(pb::ServiceTicket {
                customer_id,
                issue: "broken".into(),
                status: pb::TicketStatus::Open as i32,
                open_time: Some(ts(at)),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap();
}

async fn communication(app: &TestApp, customer_id: i64, at: &str) {
    app.communications()
        .log_communication(pb::LogCommunicationRequest {
            communication: Some(pb::Communication {
                customer_id,
                channel: pb::Channel::Note as i32,
                direction: pb::Direction::Outbound as i32,
                occur_time: Some(ts(at)),
                content: "note".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap();
}

/// Every paged method of the API, called with one page token.
#[derive(Debug, Clone, Copy)]
enum Paged {
    Customers,
    Communications,
    Transactions,
    Tickets,
    Timeline,
}

impl Paged {
    /// The first page (of one item) or the start of the timeline; returns the token or
    /// cursor it issued.
    async fn issued(self, app: &TestApp, customer_id: i64) -> String {
        match self {
            Paged::Timeline => {
                let mut stream = app
                    .communications()
                    .stream_timeline(timeline(customer_id, String::new()))
                    .await
                    .unwrap()
                    .into_inner();
                stream.message().await.unwrap().unwrap().cursor
            }
            _ => {
                let token = self.call(app, customer_id, String::new(), 1).await.unwrap();
                assert!(!token.is_empty(), "{self:?} issued no token");
                token
            }
        }
    }

    /// Calls the method with `token`; `Ok(next_page_token)` (the timeline: after
    /// draining the stream, an empty string).
    async fn call(
        self,
        app: &TestApp,
        customer_id: i64,
        token: String,
        page_size: i32,
    ) -> Result<String, Status> {
        Ok(match self {
            Paged::Customers => {
                app.customers()
                    .list_customers(pb::ListCustomersRequest {
                        page_size,
                        page_token: token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .next_page_token
            }
            Paged::Communications => {
                app.communications()
                    .list_communications(pb::ListCommunicationsRequest {
                        customer_id,
                        page_size,
                        page_token: token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .next_page_token
            }
            Paged::Transactions => {
                app.customers()
                    .list_transactions(pb::ListTransactionsRequest {
                        customer_id,
                        page_size,
                        page_token: token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .next_page_token
            }
            Paged::Tickets => {
                app.customers()
                    .list_service_tickets(pb::ListServiceTicketsRequest {
                        customer_id,
                        page_size,
                        page_token: token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .next_page_token
            }
            Paged::Timeline => {
                let mut stream = app
                    .communications()
                    .stream_timeline(timeline(customer_id, token))
                    .await?
                    .into_inner();
                while stream.message().await?.is_some() {}
                String::new()
            }
        })
    }

    fn field(self) -> &'static str {
        match self {
            Paged::Timeline => "resume_cursor",
            _ => "page_token",
        }
    }
}

/// A forged position: (time in microseconds, id, timeline source rank).
type Position = (i64, i64, i64);

fn timeline(customer_id: i64, resume_cursor: String) -> pb::StreamTimelineRequest {
    pb::StreamTimelineRequest {
        customer_id,
        include_transactions: true,
        include_service_tickets: true,
        resume_cursor,
        ..Default::default()
    }
}

backend_tests! {
    async fn page_tokens_with_out_of_range_positions_are_invalid_argument(app: &TestApp) {
        let c = new_customer(app, "tokens").await;
        new_customer(app, "tokens 2").await;
        for at in ["2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"] {
            communication(app, c, at).await;
            transaction(app, c, money(5, 0), at).await;
            ticket(app, c, at).await;
        }
        let valid = year(2024);
        for method in [Paged::Customers, Paged::Communications, Paged::Transactions, Paged::Tickets, Paged::Timeline] {
            let issued = method.issued(app, c).await;
            let (good, bad): (Vec<Position>, Vec<Position>) = match method {
                Paged::Customers => (
                    vec![(0, 1, 0)],
                    vec![(0, 0, 0), (0, -1, 0), (0, i64::MIN, 0)],
                ),
                _ => (
                    vec![(valid, 1, 0), (valid, i64::MAX, 0)],
                    vec![
                        (year(20000), 1, 0),
                        (year(10000), 1, 0),
                        (year(1), 1, 0),
                        (year(1899), 1, 0),
                        (i64::MAX, 1, 0),
                        (i64::MIN, 1, 0),
                        (valid, -1, 0),
                        (valid, 0, 0),
                        (valid, i64::MIN, 0),
                    ],
                ),
            };
            let forged = |(us, id, rank): Position| match method {
                Paged::Customers => forge(&issued, &id),
                Paged::Timeline => forge_cursor(&issued, (us, id, rank)),
                _ => forge(&issued, &(us, id)),
            };
            // In-range forgeries are accepted: the rejections below are about range,
            // not about a mismatched fingerprint.
            for p in good {
                method.call(app, c, forged(p), 10).await.unwrap_or_else(|e| panic!("{method:?} {p:?}: {e:?}"));
            }
            let mut bad = bad;
            if let Paged::Timeline = method {
                bad.extend([(valid, 1, -1), (valid, 1, 3), (valid, 1, i64::MAX)]);
            }
            for p in bad {
                let err = method.call(app, c, forged(p), 10).await.expect_err(&format!("{method:?} {p:?} was accepted"));
                assert_invalid(&err, &[method.field()]);
            }
        }
    }

    async fn insights_sum_money_past_64_bits_exactly(app: &TestApp) {
        // USD: MAX + 0.5, MAX, -MAX - 0.7. Any running sum passes i64; the total does
        // not: MAX - 0.2.
        let c = new_customer(app, "big spender").await;
        transaction(app, c, money(i64::MAX, 500_000_000), "2024-01-01T00:00:00Z").await;
        transaction(app, c, money(i64::MAX, 0), "2024-01-02T00:00:00Z").await;
        transaction(app, c, money(-i64::MAX, -700_000_000), "2024-01-03T00:00:00Z").await;
        transaction(app, c, pb::Money { currency_code: "EUR".into(), units: -3, nanos: -250_000_000 }, "2024-01-04T00:00:00Z").await;
        transaction(app, c, pb::Money { currency_code: "EUR".into(), units: 1, nanos: 0 }, "2024-01-05T00:00:00Z").await;
        let r = app.analytics().get_customer_insights(pb::GetCustomerInsightsRequest {
            customer_id: c,
            ..Default::default()
        }).await.unwrap().into_inner();
        let t = r.transactions.unwrap();
        assert_eq!(t.count, 5);
        assert_eq!(t.totals, vec![
            pb::Money { currency_code: "EUR".into(), units: -2, nanos: -250_000_000 },
            pb::Money { currency_code: "USD".into(), units: i64::MAX - 1, nanos: 800_000_000 },
        ]);

        // Two amounts of MAX: the total cannot be represented as Money.
        let d = new_customer(app, "too big").await;
        transaction(app, d, money(i64::MAX, 0), "2024-01-01T00:00:00Z").await;
        transaction(app, d, money(i64::MAX, 0), "2024-01-02T00:00:00Z").await;
        let err = app.analytics().get_customer_insights(pb::GetCustomerInsightsRequest {
            customer_id: d,
            ..Default::default()
        }).await.unwrap_err();
        assert_status(&err, Code::OutOfRange, "AMOUNT_OUT_OF_RANGE");
        // Nanos that carry the total past MAX.
        let e = new_customer(app, "carry").await;
        transaction(app, e, money(i64::MAX, 999_999_999), "2024-01-01T00:00:00Z").await;
        transaction(app, e, money(0, 1), "2024-01-02T00:00:00Z").await;
        let err = app.analytics().get_customer_insights(pb::GetCustomerInsightsRequest {
            customer_id: e,
            ..Default::default()
        }).await.unwrap_err();
        assert_status(&err, Code::OutOfRange, "AMOUNT_OUT_OF_RANGE");
        // The range decides: the first amount alone is representable.
        let r = app.analytics().get_customer_insights(pb::GetCustomerInsightsRequest {
            customer_id: d,
            end_time: Some(ts("2024-01-01T12:00:00Z")),
            ..Default::default()
        }).await.unwrap().into_inner();
        assert_eq!(r.transactions.unwrap().totals, vec![money(i64::MAX, 0)]);
    }
}

crate::standalone_tests! {
    async fn database_passwords_are_never_printed() {
        const SECRET: &str = "hunter2";
        let (ok, help) = run_binary(&["--help"], "mysql://app:hunter2@127.0.0.1:1/crm");
        assert!(ok, "{help}");
        assert!(help.contains("DATABASE_URL"), "{help}");
        assert!(!help.contains(SECRET), "--help shows the password: {help}");

        for (args, url) in [
            // No database.
            (&["migrate"][..], "mysql://app:hunter2@127.0.0.1:1"),
            (&["serve"][..], "mysql://app:hunter2@127.0.0.1:1/"),
            // Unsupported scheme, or none.
            (&["migrate"][..], "postgres://app:hunter2@127.0.0.1:1/crm"),
            (&["serve"][..], "app:hunter2@127.0.0.1:1/crm"),
            // Well-formed, but nothing listens there.
            (&["migrate"][..], "mysql://app:hunter2@127.0.0.1:1/crm"),
            (
                &["serve"][..],
                "mysql://app:hu@nter2@127.0.0.1:1/crm?password=hunter2",
            ),
        ] {
            let (ok, text) = run_binary(args, url);
            assert!(!ok, "{args:?} {url} succeeded: {text}");
            assert!(
                text.contains("DATABASE_URL") || text.contains("***"),
                "{args:?} {url}: says nothing useful: {text}"
            );
            assert!(
                !text.contains(SECRET),
                "{args:?} {url} printed the password: {text}"
            );
        }
    }
}

//! Behaviour under hostile or unlucky clients (issue 7): cancelled calls, keys that
//! differ only in case or accents, grpc-core style imports, malformed stream items,
//! oversized requests and pages. Each test runs on SQLite and MariaDB.

use std::time::Duration;

use crm_comms::{
    db::{Db, PoolOptions},
    error::Error,
    pb,
};
use prost::Message;
use tonic::Code;

use crate::backend_tests;
use crate::harness::{assert_invalid, log, new_customer, note, ts, Backend, TestApp};

/// Imports `n` communications of `customer_id` with `content`, through the API.
async fn import(app: &TestApp, customer_id: i64, n: usize, content: &str) {
    let items: Vec<pb::ImportCommunicationsRequest> = (0..n)
        .map(|i| pb::ImportCommunicationsRequest {
            communication: Some(note(
                customer_id,
                &format!("{content} #{i}"),
                "2024-05-01T08:00:00Z",
            )),
            request_id: String::new(),
        })
        .collect();
    let response = app
        .communications()
        .import_communications(tokio_stream::iter(items))
        .await
        .expect("import")
        .into_inner();
    assert_eq!(response.accepted_count, n as i64, "{response:?}");
}

/// A statement that keeps the database busy for about half a second.
fn slow_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Mysql => "SELECT SLEEP(0.5) AS n",
        Backend::Sqlite => {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000000) \
             SELECT COUNT(*) AS n FROM c"
        }
    }
}

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Runs `sql` on a pooled connection of `db` and returns its one integer.
async fn query_n(db: &Db, sql: &'static str) -> Result<i64, Error> {
    use diesel_async::RunQueryDsl;
    crm_comms::with_conn!(db, |conn| {
        let row: N = diesel::sql_query(sql).get_result(conn).await?;
        Ok(row.n)
    })
}

backend_tests! {
    async fn a_query_dropped_mid_flight_never_answers_the_next_caller(app: &TestApp) {
        // One connection, so the next query gets the very connection whose query was
        // cut off; before the fix it read the abandoned result (or failed).
        let db = Db::connect(
            &app.database_url,
            &PoolOptions { max_connections: 1, acquire_timeout: Duration::from_secs(10), ..PoolOptions::default() },
        )
        .await
        .unwrap();
        for round in 0..5 {
            let cut = tokio::time::timeout(
                Duration::from_millis(60),
                query_n(&db, slow_sql(app.backend)),
            )
            .await;
            assert!(cut.is_err(), "round {round}: the slow query finished within 60 ms");
            let answer = query_n(&db, "SELECT 42 AS n").await.unwrap();
            assert_eq!(answer, 42, "round {round}");
        }
        // Cancels at every moment of a short call: taking the connection from the pool
        // (where bb8 used to ping it), sending, reading. Each next answer must be its own.
        for round in 0..200u64 {
            let _ = tokio::time::timeout(
                Duration::from_micros(round * 3 % 900),
                query_n(&db, "SELECT 7 AS n"),
            )
            .await;
            let answer = query_n(&db, "SELECT 42 AS n").await.unwrap();
            assert_eq!(answer, 42, "short round {round}");
        }
    }

    async fn cancelled_calls_never_poison_pooled_connections(app: &TestApp) {
        let customer = new_customer(app, "cancel storm").await;
        let other = new_customer(app, "bystander").await;
        import(app, customer, 4000, &"客户询问退款进度 refund status please ".repeat(40)).await;
        let ids: Vec<i64> = {
            let page = app
                .communications()
                .list_communications(pb::ListCommunicationsRequest {
                    customer_id: customer,
                    page_size: 200,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            page.communications.iter().map(|c| c.id).collect()
        };
        assert_eq!(ids.len(), 200);

        // Reports cancelled by the client at staggered moments, many of them mid-query.
        let mut cancelled = tokio::task::JoinSet::new();
        for i in 0..120u64 {
            let mut client = app.analytics();
            cancelled.spawn(async move {
                let report = client.get_content_report(pb::GetContentReportRequest {
                    start_time: Some(ts("2024-01-01T00:00:00Z")),
                    end_time: Some(ts("2025-01-01T00:00:00Z")),
                    keywords: vec!["退款".into(), "refund".into()],
                    patterns: vec![r"#\d+7$".into()],
                    top_terms: 10,
                    ..Default::default()
                });
                let _ = tokio::time::timeout(Duration::from_millis(2 + (i * 7) % 90), report).await;
            });
        }
        while cancelled.join_next().await.is_some() {}

        // The server frees a cancelled call's place in flight when the cancel (a reset
        // stream) reaches it, a moment after the client dropped the call: until then
        // it may answer CONNECTION_OVERLOADED, as it says, "retry when one ends".
        let mut communications = app.communications();
        let mut customers = app.customers();
        for attempt in 0.. {
            match customers.get_customer(pb::GetCustomerRequest { id: other }).await {
                Ok(_) => break,
                Err(s) if s.code() == tonic::Code::ResourceExhausted && attempt < 100 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => panic!("GetCustomer {other} after the cancels: {s:?}"),
            }
        }

        // Every read answers correctly afterwards.
        for &id in &ids {
            let got = communications
                .get_communication(pb::GetCommunicationRequest { id })
                .await
                .unwrap_or_else(|s| panic!("GetCommunication {id}: {s:?}"))
                .into_inner();
            assert_eq!(got.id, id);
            assert_eq!(got.customer_id, customer);
            let c = customers
                .get_customer(pb::GetCustomerRequest { id: other })
                .await
                .unwrap_or_else(|s| panic!("GetCustomer {other}: {s:?}"))
                .into_inner();
            assert_eq!(c.id, other);
        }
        // And every write is stored exactly once, retries included.
        for i in 0..40 {
            let key = format!("after-storm-{i}");
            let first = communications
                .log_communication(log(note(other, "hello", "2024-05-02T08:00:00Z"), &key))
                .await
                .unwrap()
                .into_inner();
            let again = communications
                .log_communication(log(note(other, "hello", "2024-05-02T08:00:00Z"), &key))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(first.id, again.id);
        }
        assert_eq!(app.count_where("communications", "customer_id", other).await, 40);
    }

    async fn request_ids_differing_in_case_or_accents_are_distinct(app: &TestApp) {
        let pairs = [
            ("Repro-Key", "repro-key"),
            ("café", "cafe"),
            ("straße", "strasse"),
            ("ＫＥＹ", "KEY"),
            ("\u{e1}", "a\u{301}"),
            ("İd", "id"),
            ("ǅ", "ǆ"),
        ];
        let customer = new_customer(app, "keys").await;
        let mut communications = app.communications();
        let mut customers = app.customers();
        for (a, b) in pairs {
            let first = communications
                .log_communication(log(note(customer, a, "2024-05-01T08:00:00Z"), a))
                .await
                .unwrap()
                .into_inner();
            let second = communications
                .log_communication(log(note(customer, b, "2024-05-01T08:00:00Z"), b))
                .await
                .unwrap()
                .into_inner();
            assert_ne!(first.id, second.id, "{a:?} and {b:?} collided");
            assert_eq!(second.content, b);
            // The same request again still finds its own row.
            let retry = communications
                .log_communication(log(note(customer, b, "2024-05-01T08:00:00Z"), b))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(retry.id, second.id);

            let ca = customers
                .create_customer(pb::CreateCustomerRequest {
                    customer: Some(pb::Customer { name: a.to_owned(), ..Default::default() }),
                    request_id: format!("cust-{a}"),
                })
                .await
                .unwrap()
                .into_inner();
            let cb = customers
                .create_customer(pb::CreateCustomerRequest {
                    customer: Some(pb::Customer { name: b.to_owned(), ..Default::default() }),
                    request_id: format!("cust-{b}"),
                })
                .await
                .unwrap()
                .into_inner();
            assert_ne!(ca.id, cb.id, "customer keys {a:?} and {b:?} collided");
            assert_eq!(cb.name, b);
        }
        assert_eq!(
            app.count_where("communications", "customer_id", customer).await,
            2 * pairs.len() as i64
        );
    }

    async fn import_of_100k_single_frame_items_keeps_the_connection(app: &TestApp) {
        let customer = new_customer(app, "bulk").await;
        let n = 100_000;
        let items = (0..n).map(|i| pb::ImportCommunicationsRequest {
            communication: Some(note(customer, &format!("m{i}"), "2024-05-01T08:00:00Z")),
            request_id: format!("k{i}"),
        });
        let (status, response) = raw_import(app, items.map(|m| m.encode_to_vec())).await;
        assert_eq!(status, 0, "grpc-status of the import");
        let response = pb::ImportCommunicationsResponse::decode(response.as_slice()).unwrap();
        assert_eq!(response.accepted_count, n as i64, "{:?}", response.rejected.first());
        assert_eq!(app.count_where("communications", "customer_id", customer).await, n as i64);
    }

    async fn malformed_item_mid_import_is_invalid_argument_naming_it(app: &TestApp) {
        let customer = new_customer(app, "malformed").await;
        let valid = (0..1500).map(|i| {
            pb::ImportCommunicationsRequest {
                communication: Some(note(customer, &format!("ok {i}"), "2024-05-01T08:00:00Z")),
                request_id: String::new(),
            }
            .encode_to_vec()
        });
        // ImportCommunicationsRequest { communication { content: <not UTF-8> } }:
        // field 1 (message) holding field 5 (string) with bytes ff fe.
        let bad = vec![0x0a, 0x04, 0x2a, 0x02, 0xff, 0xfe];
        let after = (0..10).map(|i| {
            pb::ImportCommunicationsRequest {
                communication: Some(note(customer, &format!("late {i}"), "2024-05-01T08:00:00Z")),
                request_id: String::new(),
            }
            .encode_to_vec()
        });
        let (status, _) = raw_import(app, valid.chain(std::iter::once(bad)).chain(after)).await;
        assert_eq!(status, Code::InvalidArgument as i32);
        // Every valid item before the malformed one is stored, nothing after it.
        assert_eq!(app.count_where("communications", "customer_id", customer).await, 1500);
    }

    async fn oversized_requests_get_small_precise_errors(app: &TestApp) {
        let customer = new_customer(app, "limits").await;
        // 10,000 keywords of 200 characters: rejected on the count, nothing compiled.
        let started = std::time::Instant::now();
        let err = app
            .analytics()
            .get_content_report(pb::GetContentReportRequest {
                customer_ids: vec![customer],
                start_time: Some(ts("2024-01-01T00:00:00Z")),
                end_time: Some(ts("2024-02-01T00:00:00Z")),
                keywords: (0..10_000).map(|i| format!("{i:0>200}")).collect(),
                patterns: (0..2_000).map(|i| format!("({i}")).collect(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["keywords", "patterns"]);
        assert!(err.message().len() <= 512, "{}", err.message().len());
        eprintln!("10,000 keywords rejected in {:?}", started.elapsed());

        // A 1 MB time zone is quoted by a short prefix only.
        let err = app
            .analytics()
            .get_frequency_report(pb::GetFrequencyReportRequest {
                start_time: Some(ts("2024-01-01T00:00:00Z")),
                end_time: Some(ts("2024-02-01T00:00:00Z")),
                granularity: pb::Granularity::Day as i32,
                time_zone: "Z".repeat(1 << 20),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["time_zone"]);
        assert!(err.message().len() < 300, "{}", err.message());

        // 10,000 mask paths: one violation, a small status.
        let err = app
            .customers()
            .update_customer(pb::UpdateCustomerRequest {
                customer: Some(pb::Customer { id: customer, name: "x".into(), ..Default::default() }),
                update_mask: Some(prost_types::FieldMask {
                    paths: (0..10_000).map(|i| format!("no_such_field_{i}")).collect(),
                }),
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["update_mask"]);
        assert!(err.message().len() < 300, "{}", err.message());
        assert!(err.details().len() < 2048, "{}", err.details().len());

        // Many bad items: the first ones are named, the rest counted, another bad field
        // still named, and the status stays small.
        let err = app
            .analytics()
            .get_frequency_report(pb::GetFrequencyReportRequest {
                customer_ids: vec![-1; 900],
                start_time: Some(ts("2024-01-01T00:00:00Z")),
                end_time: Some(ts("2024-02-01T00:00:00Z")),
                granularity: pb::Granularity::Day as i32,
                time_zone: "X".repeat(5000),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let listed: Vec<(String, String)> = tonic_types::StatusExt::get_error_details(&err)
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| (v.field.clone(), v.description.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let fields: Vec<&str> = listed.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["customer_ids[0]", "customer_ids[1]", "customer_ids[2]", "time_zone", ""]
        );
        assert_eq!(listed[4].1, "and 897 more violations not listed");
        assert!(err.message().contains("time_zone") && err.message().contains("897 more"));
        assert!(err.message().len() <= 512 && err.details().len() < 4096);
    }

    async fn pages_of_large_communications_are_cut_by_size(app: &TestApp) {
        let customer = new_customer(app, "big pages").await;
        let big = "长".repeat(21_000); // 63,000 bytes of UTF-8
        import(app, customer, 80, &big).await;
        let mut seen = std::collections::HashSet::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = app
                .communications()
                .list_communications(pb::ListCommunicationsRequest {
                    customer_id: customer,
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(page.encoded_len() <= (2 << 20) + 70_000, "page of {} bytes", page.encoded_len());
            for c in &page.communications {
                assert!(seen.insert(c.id), "communication {} twice", c.id);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen.len(), 80);
        assert!(pages >= 3, "80 x 63 KB fit in {pages} pages");
    }
}

/// Calls ImportCommunications over a raw HTTP/2 connection the way grpc-core does:
/// one DATA frame per message. Returns the grpc-status and the response message bytes.
async fn raw_import(app: &TestApp, messages: impl Iterator<Item = Vec<u8>>) -> (i32, Vec<u8>) {
    use bytes::Bytes;
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/crm.v1.CommunicationService/ImportCommunications",
            app.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    for message in messages {
        let mut frame = Vec::with_capacity(message.len() + 5);
        frame.push(0);
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        // Wait for window so frames go out one by one as the server reads them.
        stream.reserve_capacity(frame.len());
        while stream.capacity() < frame.len() {
            match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                // The server answered early (an error) and reset or closed the stream.
                _ => break,
            }
        }
        if stream.send_data(Bytes::from(frame), false).is_err() {
            break;
        }
    }
    let _ = stream.send_data(Bytes::new(), true);
    let response = response.await.expect("response headers");
    let header_status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok());
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("response body");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let status = match header_status {
        Some(s) => s,
        None => body
            .trailers()
            .await
            .expect("trailers")
            .and_then(|t| t.get("grpc-status")?.to_str().ok()?.parse().ok())
            .expect("grpc-status"),
    };
    let message = if data.len() >= 5 {
        data[5..].to_vec()
    } else {
        Vec::new()
    };
    (status, message)
}

//! Keywords match composed and decomposed forms alike (both sides in NFC): `é` (U+00E9)
//! and `e` + U+0301, keyword in one form and content in the other, on the content index
//! and on the scan of the rows.

use crm_comms::pb::{self, analytics_service_client::AnalyticsServiceClient};
use crm_comms::service::content_index::ContentIndexHandle;

use crate::backend_tests;
use crate::harness::{import, new_customer, note, ts};

const COMPOSED: &str = "caf\u{e9}";
const DECOMPOSED: &str = "cafe\u{301}";

fn request(keyword: &str) -> pb::GetContentReportRequest {
    pb::GetContentReportRequest {
        start_time: Some(ts("2024-01-01T00:00:00Z")),
        end_time: Some(ts("2025-01-01T00:00:00Z")),
        keywords: vec![keyword.into(), "cafe".into()],
        sample_limit: 10,
        ..Default::default()
    }
}

backend_tests! {
    async fn keywords_match_composed_and_decomposed_forms_both_ways(app: &TestApp) {
        let a = new_customer(app, "A").await;
        let b = new_customer(app, "B").await;
        import(
            app,
            vec![
                note(a, &format!("un {COMPOSED} noir"), "2024-03-01T08:00:00Z"),
                note(b, &format!("un {DECOMPOSED} noir"), "2024-03-02T08:00:00Z"),
                note(b, "un cafe noir", "2024-03-03T08:00:00Z"),
            ],
        )
        .await;
        let (stop_index, rx) = tokio::sync::watch::channel(false);
        let index = ContentIndexHandle::start(app.db.clone(), rx);
        tokio::time::timeout(std::time::Duration::from_secs(60), index.wait_ready()).await.expect("the index loads");
        let (indexed, stop_a) = app.another_server(|_| {}, Some(index)).await;
        let (scanned, stop_b) = app.another_server(|_| {}, None).await;
        for channel in [indexed, scanned] {
            let mut client = AnalyticsServiceClient::new(channel);
            for keyword in [COMPOSED, DECOMPOSED] {
                for patterns in [Vec::new(), vec!["noir".to_owned()]] {
                    // A pattern sends the indexed server to the rows too.
                    let r = client
                        .get_content_report(pb::GetContentReportRequest { patterns: patterns.clone(), ..request(keyword) })
                        .await
                        .unwrap()
                        .into_inner();
                    let counts: Vec<(i64, i64)> = r.keywords.iter().map(|k| (k.message_count, k.customer_count)).collect();
                    // `é` in either form: both accented texts, two customers; "cafe" alone
                    // is only the plain text.
                    assert_eq!(counts, vec![(2, 2), (1, 1)], "{keyword:?} {patterns:?}: {r:?}");
                    assert!(r.samples.iter().filter(|s| s.snippet.contains(COMPOSED)).count() >= 2, "{r:?}");
                }
            }
        }
        for stop in [stop_index, stop_a, stop_b] {
            stop.send(true).ok();
        }
    }
}

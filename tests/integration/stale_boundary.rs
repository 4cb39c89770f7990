//! The STALE attention list counts "at least `stale_days`" inclusively: a customer last
//! contacted (or, never contacted, created) exactly `stale_days` before `as_of` is listed,
//! one microsecond later is not; on the rollup path and on the base table alike.

use chrono::{DateTime, Duration, Utc};
use crm_comms::pb::{self, analytics_service_client::AnalyticsServiceClient};
use tonic::transport::Channel;

use crate::backend_tests;
use crate::harness::{import, new_customer, note, ts};

fn stale(as_of: prost_types::Timestamp, never: bool) -> pb::ListAttentionCustomersRequest {
    pb::ListAttentionCustomersRequest {
        reason: pb::AttentionReason::Stale as i32,
        stale_days: 30,
        as_of: Some(as_of),
        include_never_contacted: never,
        page_size: 100,
        ..Default::default()
    }
}

async fn listed(
    client: &mut AnalyticsServiceClient<Channel>,
    request: pb::ListAttentionCustomersRequest,
) -> Vec<i64> {
    let page = client
        .list_attention_customers(request)
        .await
        .unwrap()
        .into_inner();
    assert!(page.next_page_token.is_empty(), "{page:?}");
    page.customers.iter().map(|c| c.customer_id).collect()
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

backend_tests! {
    async fn stale_customers_include_those_contacted_exactly_stale_days_before(app: &TestApp) {
        let exact = new_customer(app, "exactly 30 days").await;
        let less = new_customer(app, "a microsecond less").await;
        let more = new_customer(app, "a microsecond more").await;
        // 30 days before 2024-06-01T00:00:00Z is 2024-05-02T00:00:00Z.
        import(
            app,
            vec![
                note(exact, "x", "2024-05-02T00:00:00Z"),
                note(less, "x", "2024-05-02T00:00:00.000001Z"),
                note(more, "x", "2024-05-01T23:59:59.999999Z"),
            ],
        )
        .await;
        let as_of = ts("2024-06-01T00:00:00Z");
        let (channel, stop) = app.another_server(|c| c.report_rollups = false, None).await;
        let mut rollup = app.analytics();
        let mut base = AnalyticsServiceClient::new(channel);
        assert_eq!(listed(&mut rollup, stale(as_of, false)).await, vec![more, exact]);
        assert_eq!(listed(&mut base, stale(as_of, false)).await, vec![more, exact]);

        // Never contacted: created exactly 30 days before `as_of` counts too.
        let never = new_customer(app, "never contacted").await;
        let created = app
            .customers()
            .get_customer(pb::GetCustomerRequest { id: never })
            .await
            .unwrap()
            .into_inner()
            .create_time
            .unwrap();
        let created = DateTime::from_timestamp(created.seconds, created.nanos as u32).unwrap();
        let at = created + Duration::days(30);
        for client in [&mut rollup, &mut base] {
            let ids = listed(client, stale(timestamp(at), true)).await;
            assert_eq!(ids.first(), Some(&never), "{ids:?}");
            let ids = listed(client, stale(timestamp(at - Duration::microseconds(1)), true)).await;
            assert!(!ids.contains(&never), "{ids:?}");
        }
        stop.send(true).ok();
    }
}

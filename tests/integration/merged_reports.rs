//! Reports scoped to a merged customer: NOT_FOUND `CUSTOMER_MERGED` naming the survivor,
//! as every other RPC answers, never an empty report.

use crm_comms::pb;

use crate::backend_tests;
use crate::harness::{assert_merged, log, new_customer, note, ts};

backend_tests! {
    async fn every_report_scoped_to_a_merged_customer_answers_customer_merged(app: &TestApp) {
        let survivor = new_customer(app, "Survivor").await;
        let merged = new_customer(app, "Merged").await;
        let other = new_customer(app, "Other").await;
        app.communications().log_communication(log(note(merged, "退款 refund", "2024-03-04T08:00:00Z"), "")).await.unwrap();
        app.customers()
            .merge_customers(pb::MergeCustomersRequest {
                surviving_customer_id: survivor,
                merged_customer_ids: vec![merged],
                request_id: String::new(),
            })
            .await
            .unwrap();
        let (start, end) = (Some(ts("2024-03-01T00:00:00Z")), Some(ts("2024-04-01T00:00:00Z")));
        let mut a = app.analytics();
        for ids in [vec![merged], vec![other, merged]] {
            let err = a
                .get_frequency_report(pb::GetFrequencyReportRequest { customer_ids: ids.clone(), start_time: start, end_time: end, ..Default::default() })
                .await
                .unwrap_err();
            assert_merged(&err, merged, survivor);
            let err = a
                .get_content_report(pb::GetContentReportRequest { customer_ids: ids.clone(), start_time: start, end_time: end, keywords: vec!["refund".into()], ..Default::default() })
                .await
                .unwrap_err();
            assert_merged(&err, merged, survivor);
            let err = a
                .get_response_time_report(pb::GetResponseTimeReportRequest { customer_ids: ids.clone(), start_time: start, end_time: end, ..Default::default() })
                .await
                .unwrap_err();
            assert_merged(&err, merged, survivor);
            let err = a
                .get_resolution_time_report(pb::GetResolutionTimeReportRequest { customer_ids: ids.clone(), start_time: start, end_time: end, ..Default::default() })
                .await
                .unwrap_err();
            assert_merged(&err, merged, survivor);
        }
        // The survivor's scope holds the moved history.
        let r = a
            .get_content_report(pb::GetContentReportRequest { customer_ids: vec![survivor], start_time: start, end_time: end, keywords: vec!["refund".into()], ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.scanned_count, 1, "{r:?}");
        let f = a
            .get_frequency_report(pb::GetFrequencyReportRequest { customer_ids: vec![survivor, other], start_time: start, end_time: end, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(f.total_count, 1, "{f:?}");
    }
}

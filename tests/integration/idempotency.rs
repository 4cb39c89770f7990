//! Idempotency keys on every RPC that takes a `request_id`: a replay of the same request
//! answers the first result, a key reused for a different request is refused with
//! FAILED_PRECONDITION / REQUEST_ID_REUSED and writes nothing.

use crm_comms::pb::{self, business_hours_service_client::BusinessHoursServiceClient};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::backend_tests;
use crate::harness::{assert_status, log, new_customer, note, ts, TestApp};

/// Asserts that `status` refuses the reuse of `key`.
fn assert_reused(status: &Status, key: &str) {
    assert_status(status, Code::FailedPrecondition, "REQUEST_ID_REUSED");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.metadata["request_id"], key, "{status:?}");
}

/// Rows every write path leaves behind, to check that a refused call wrote nothing.
async fn footprint(app: &TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for table in [
        "customers",
        "communications",
        "transactions",
        "service_tickets",
        "customer_merges",
        "business_hours",
        "audit_records",
    ] {
        out.push(app.scalar(&format!("SELECT COUNT(*) FROM {table}")).await);
    }
    out
}

fn transaction(
    customer_id: i64,
    order: &str,
    units: i64,
    key: &str,
) -> pb::CreateTransactionRequest {
    pb::CreateTransactionRequest {
        transaction: Some(pb::Transaction {
            customer_id,
            order_number: order.into(),
            product: "茶叶".into(),
            amount: Some(pb::Money {
                currency_code: "CNY".into(),
                units,
                nanos: 0,
            }),
            occur_time: Some(ts("2024-03-02T08:00:00Z")),
            ..Default::default()
        }),
        request_id: key.into(),
    }
}

fn ticket(customer_id: i64, issue: &str, key: &str) -> pb::CreateServiceTicketRequest {
    pb::CreateServiceTicketRequest {
        service_ticket: Some(pb::ServiceTicket {
            customer_id,
            issue: issue.into(),
            ..Default::default()
        }),
        request_id: key.into(),
    }
}

fn customer(name: &str, email: &str, key: &str) -> pb::CreateCustomerRequest {
    pb::CreateCustomerRequest {
        customer: Some(pb::Customer {
            name: name.into(),
            email: email.into(),
            ..Default::default()
        }),
        request_id: key.into(),
    }
}

fn merge(survivor: i64, merged: &[i64], key: &str) -> pb::MergeCustomersRequest {
    pb::MergeCustomersRequest {
        surviving_customer_id: survivor,
        merged_customer_ids: merged.to_vec(),
        request_id: key.into(),
    }
}

fn schedule(name: &str, zone: &str, key: &str) -> pb::CreateBusinessHoursRequest {
    pb::CreateBusinessHoursRequest {
        business_hours: Some(pb::BusinessHours {
            name: name.into(),
            time_zone: zone.into(),
            windows: vec![pb::BusinessHoursWindow {
                weekday: pb::Weekday::Monday as i32,
                start: "09:00".into(),
                end: "17:00".into(),
            }],
            ..Default::default()
        }),
        request_id: key.into(),
    }
}

backend_tests! {
    async fn a_merge_request_id_reused_for_other_customers_is_refused_and_merges_nothing(app: &TestApp) {
        let survivor = new_customer(app, "Survivor").await;
        let a = new_customer(app, "A").await;
        let b = new_customer(app, "B").await;
        let mut c = app.customers();
        let first = c.merge_customers(merge(survivor, &[a], "m-1")).await.unwrap().into_inner();
        // The identical request again answers the first result.
        let again = c.merge_customers(merge(survivor, &[a], "m-1")).await.unwrap().into_inner();
        assert_eq!(again.merged_customer_ids, first.merged_customer_ids);
        let before = footprint(app).await;
        let err = c.merge_customers(merge(survivor, &[b], "m-1")).await.unwrap_err();
        assert_reused(&err, "m-1");
        assert_eq!(footprint(app).await, before);
        // B is untouched and still live.
        let live = c.get_customer(pb::GetCustomerRequest { id: b }).await.unwrap().into_inner();
        assert_eq!(live.name, "B");
    }

    async fn a_log_request_id_reused_for_another_communication_is_refused(app: &TestApp) {
        let id = new_customer(app, "Li").await;
        let mut c = app.communications();
        let first = c.log_communication(log(note(id, "hello", "2024-03-01T08:00:00Z"), "k-1")).await.unwrap().into_inner();
        let again = c.log_communication(log(note(id, "hello", "2024-03-01T08:00:00Z"), "k-1")).await.unwrap().into_inner();
        assert_eq!(again.id, first.id);
        let before = footprint(app).await;
        for changed in [
            note(id, "other text", "2024-03-01T08:00:00Z"),
            note(id, "hello", "2024-03-01T08:00:01Z"),
            pb::Communication { direction: pb::Direction::Inbound as i32, ..note(id, "hello", "2024-03-01T08:00:00Z") },
            pb::Communication { channel: pb::Channel::Chat as i32, ..note(id, "hello", "2024-03-01T08:00:00Z") },
            pb::Communication { outcome: "done".into(), ..note(id, "hello", "2024-03-01T08:00:00Z") },
        ] {
            let err = c.log_communication(log(changed, "k-1")).await.unwrap_err();
            assert_reused(&err, "k-1");
        }
        assert_eq!(footprint(app).await, before);
        // Without occur_time the server's clock fills it in; a replay does not repeat it.
        let untimed = pb::Communication { occur_time: None, ..note(id, "now", "2024-03-01T08:00:00Z") };
        let first = c.log_communication(log(untimed.clone(), "k-2")).await.unwrap().into_inner();
        let again = c.log_communication(log(untimed, "k-2")).await.unwrap().into_inner();
        assert_eq!(again.id, first.id);
    }

    async fn an_import_item_reusing_a_request_id_for_another_communication_is_rejected(app: &TestApp) {
        let id = new_customer(app, "Li").await;
        let mut c = app.communications();
        c.log_communication(log(note(id, "stored", "2024-03-01T08:00:00Z"), "i-1")).await.unwrap();
        let items = vec![
            // A replay of the stored one: a duplicate.
            (note(id, "stored", "2024-03-01T08:00:00Z"), "i-1"),
            // The stored key for other content: rejected.
            (note(id, "changed", "2024-03-01T08:00:00Z"), "i-1"),
            // New, then repeated within the stream, then reused within it.
            (note(id, "new", "2024-03-02T08:00:00Z"), "i-2"),
            (note(id, "new", "2024-03-02T08:00:00Z"), "i-2"),
            (note(id, "different", "2024-03-02T08:00:00Z"), "i-2"),
        ];
        let stream = tokio_stream::iter(items.into_iter().map(|(c, k)| pb::ImportCommunicationsRequest {
            communication: Some(c),
            request_id: k.into(),
        }));
        let resp = c.import_communications(stream).await.unwrap().into_inner();
        assert_eq!(resp.accepted_count, 1, "{resp:?}");
        assert_eq!(resp.duplicate_count, 2, "{resp:?}");
        let rejected: Vec<(i64, &str)> = resp.rejected.iter().map(|r| (r.index, r.request_id.as_str())).collect();
        assert_eq!(rejected, vec![(1, "i-1"), (4, "i-2")], "{resp:?}");
        assert!(resp.rejected.iter().all(|r| r.reason.contains("request_id")), "{resp:?}");
        assert_eq!(app.scalar("SELECT COUNT(*) FROM communications").await, 2);
    }

    async fn create_request_ids_reused_for_different_resources_are_refused(app: &TestApp) {
        let id = new_customer(app, "Li").await;
        let mut c = app.customers();

        let first = c.create_transaction(transaction(id, "A-1", 100, "t-1")).await.unwrap().into_inner();
        let again = c.create_transaction(transaction(id, "A-1", 100, "t-1")).await.unwrap().into_inner();
        assert_eq!(again.id, first.id);
        let before = footprint(app).await;
        assert_reused(&c.create_transaction(transaction(id, "A-1", 200, "t-1")).await.unwrap_err(), "t-1");
        assert_reused(&c.create_transaction(transaction(id, "A-2", 100, "t-1")).await.unwrap_err(), "t-1");
        assert_eq!(footprint(app).await, before);

        // No open_time given: the server's clock, which a replay does not repeat.
        let first = c.create_service_ticket(ticket(id, "broken", "s-1")).await.unwrap().into_inner();
        let again = c.create_service_ticket(ticket(id, "broken", "s-1")).await.unwrap().into_inner();
        assert_eq!(again.id, first.id);
        let before = footprint(app).await;
        assert_reused(&c.create_service_ticket(ticket(id, "other", "s-1")).await.unwrap_err(), "s-1");
        assert_eq!(footprint(app).await, before);

        let first = c.create_customer(customer("Wang", "wang@example.com", "c-1")).await.unwrap().into_inner();
        let again = c.create_customer(customer("Wang", "WANG@example.com", "c-1")).await.unwrap().into_inner();
        assert_eq!(again.id, first.id, "the same customer once normalized");
        let before = footprint(app).await;
        assert_reused(&c.create_customer(customer("Zhang", "zhang@example.com", "c-1")).await.unwrap_err(), "c-1");
        assert_eq!(footprint(app).await, before);

        let mut bh = BusinessHoursServiceClient::new(app.channel.clone());
        let first = bh.create_business_hours(schedule("Support", "Asia/Shanghai", "b-1")).await.unwrap().into_inner();
        let again = bh.create_business_hours(schedule("Support", "Asia/Shanghai", "b-1")).await.unwrap().into_inner();
        assert_eq!(again.id, first.id);
        let before = footprint(app).await;
        assert_reused(&bh.create_business_hours(schedule("Support", "Europe/Paris", "b-1")).await.unwrap_err(), "b-1");
        assert_eq!(footprint(app).await, before);
    }
}

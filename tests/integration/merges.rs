//! Duplicates and merge: phones stored in E.164 (and stored rows converted at start),
//! duplicate groups on hand-built data, MergeCustomers moving everything in one
//! transaction, merged ids answering NOT_FOUND with the survivor, idempotency,
//! validation that writes nothing, and a merge racing LogCommunication losing nothing.

use crm_comms::pb::{
    self, communication_service_client::CommunicationServiceClient,
    customer_service_client::CustomerServiceClient,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::backend_tests;
use crate::harness::{assert_invalid, assert_merged, assert_status, log, note, ts, TestApp};

/// Creates a customer with these fields; its id.
async fn customer(app: &TestApp, name: &str, phone: &str, email: &str, tags: &[&str]) -> i64 {
    app.customers()
        .create_customer(pb::CreateCustomerRequest {
            customer: Some(pb::Customer {
                name: name.into(),
                phone: phone.into(),
                email: email.into(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

/// A group as `(key, value, matched keys, count, member ids)`.
type GroupSummary = (i32, String, Vec<i32>, i32, Vec<i64>);

fn merge_request(survivor: i64, merged: &[i64], request_id: &str) -> pb::MergeCustomersRequest {
    pb::MergeCustomersRequest {
        surviving_customer_id: survivor,
        merged_customer_ids: merged.to_vec(),
        request_id: request_id.into(),
    }
}

/// Rows a write leaves behind, to check that refused calls write nothing.
async fn footprint(app: &TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for sql in [
        "SELECT COALESCE(SUM(version), 0) FROM customers",
        "SELECT COUNT(*) FROM customers WHERE merged_into IS NOT NULL",
        "SELECT COUNT(*) FROM customer_tags",
        "SELECT COALESCE(SUM(customer_id), 0) FROM communications",
        "SELECT COALESCE(SUM(customer_id), 0) FROM transactions",
        "SELECT COALESCE(SUM(customer_id), 0) FROM service_tickets",
        "SELECT COALESCE(SUM(customer_id * n), 0) FROM customer_months",
        "SELECT COUNT(*) FROM customer_merges",
        "SELECT COUNT(*) FROM audit_records",
    ] {
        out.push(app.scalar(sql).await);
    }
    out
}

async fn transaction(app: &TestApp, customer_id: i64, order: &str) -> i64 {
    app.customers()
        .create_transaction(pb::CreateTransactionRequest {
            transaction: Some(pb::Transaction {
                customer_id,
                order_number: order.into(),
                product: "茶叶".into(),
                amount: Some(pb::Money {
                    currency_code: "CNY".into(),
                    units: 100,
                    nanos: 0,
                }),
                occur_time: Some(ts("2024-03-02T08:00:00Z")),
                ..Default::default()
            }),
            request_id: order.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

async fn ticket(app: &TestApp, customer_id: i64, issue: &str) -> i64 {
    app.customers()
        .create_service_ticket(pb::CreateServiceTicketRequest {
            service_ticket: Some(pb::ServiceTicket {
                customer_id,
                issue: issue.into(),
                open_time: Some(ts("2024-03-03T08:00:00Z")),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

async fn logged(app: &TestApp, customer_id: i64, content: &str, occur: &str, key: &str) -> i64 {
    app.communications()
        .log_communication(log(note(customer_id, content, occur), key))
        .await
        .unwrap()
        .into_inner()
        .id
}

backend_tests! {
    async fn phones_are_stored_in_e164_and_numbers_invalid_for_their_country_are_refused(app: &TestApp) {
        let mut client = app.customers();
        for (typed, stored) in [
            ("138 0013 8000", "+8613800138000"),
            ("0086 138-0013-8000", "+8613800138000"),
            ("(010) 1234 5678", "+861012345678"),
            ("+44 20 7946 0958", "+442079460958"),
        ] {
            let c = client
                .create_customer(pb::CreateCustomerRequest {
                    customer: Some(pb::Customer { name: "王芳".into(), phone: typed.into(), ..Default::default() }),
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(c.phone, stored, "{typed}");
        }
        for bad in ["1380013800", "+86 12", "call me", "+1 650-253-0000 ext. 7"] {
            let err = client
                .create_customer(pb::CreateCustomerRequest {
                    customer: Some(pb::Customer { name: "王芳".into(), phone: bad.into(), ..Default::default() }),
                    request_id: String::new(),
                })
                .await
                .unwrap_err();
            assert_invalid(&err, &["customer.phone"]);
        }
        // An update is validated the same way.
        let id = customer(app, "李雷", "", "", &[]).await;
        let err = client
            .update_customer(pb::UpdateCustomerRequest {
                customer: Some(pb::Customer { id, phone: "1380013800".into(), ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["phone".into()] }),
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["customer.phone"]);
        let updated = client
            .update_customer(pb::UpdateCustomerRequest {
                customer: Some(pb::Customer { id, phone: "13900139000".into(), ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["phone".into()] }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.phone, "+8613900139000");
        // A phone call's number too.
        let mut call = note(id, "回访", "2024-03-01T08:00:00Z");
        call.channel = pb::Channel::Phone as i32;
        call.details = Some(pb::communication::Details::PhoneCall(pb::PhoneCall {
            phone_number: "139 0013 9000".into(),
            duration: None,
        }));
        let stored = app.communications().log_communication(log(call.clone(), "")).await.unwrap().into_inner();
        match stored.details {
            Some(pb::communication::Details::PhoneCall(p)) => assert_eq!(p.phone_number, "+8613900139000"),
            other => panic!("{other:?}"),
        }
        call.details = Some(pb::communication::Details::PhoneCall(pb::PhoneCall {
            phone_number: "12345".into(),
            duration: None,
        }));
        let err = app.communications().log_communication(log(call, "")).await.unwrap_err();
        assert_invalid(&err, &["communication.phone_call.phone_number"]);
        // The refused calls wrote nothing.
        assert_eq!(app.scalar("SELECT COUNT(*) FROM customers WHERE name = '王芳'").await, 4);
        assert_eq!(app.count_where("communications", "customer_id", id).await, 1);
    }

    async fn stored_national_phones_become_e164_when_a_server_starts(app: &TestApp) {
        // The first server has finished its start-up (its own conversion) once it answers.
        app.customers().list_customers(pb::ListCustomersRequest::default()).await.unwrap();
        // Rows stored by an older version, written straight into the table.
        let now = "'2024-01-01 00:00:00'";
        for (name, phone) in [("old one", "13800138000"), ("old two", "(010) 1234 5678"), ("old three", "not a phone"), ("old four", "+8613700137000")] {
            app.execute(&format!(
                "INSERT INTO customers (name, gender, address, phone, email, search_text, version, create_time, update_time) \
                 VALUES ('{name}', 0, '', '{phone}', '', '{name}\n{phone}\n', 1, {now}, {now})"
            ))
            .await;
        }
        let one = app.scalar("SELECT id FROM customers WHERE name = 'old one'").await;
        // The first server's run marked the database done for CN: forget it, as a
        // database from before this version has no marker.
        app.execute("DELETE FROM rollup_state WHERE name LIKE 'phones-e164:%'").await;
        let (channel, _stop) = app.another_server(|_| {}, None).await;
        let mut client = CustomerServiceClient::new(channel);
        let got = client.get_customer(pb::GetCustomerRequest { id: one }).await.unwrap().into_inner();
        assert_eq!(got.phone, "+8613800138000");
        let list = client
            .list_customers(pb::ListCustomersRequest { query: "old".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .customers;
        let phones: Vec<(String, String)> = list.into_iter().map(|c| (c.name, c.phone)).collect();
        assert_eq!(
            phones,
            [
                ("old one".to_owned(), "+8613800138000".to_owned()),
                ("old two".to_owned(), "+861012345678".to_owned()),
                ("old three".to_owned(), "not a phone".to_owned()),
                ("old four".to_owned(), "+8613700137000".to_owned()),
            ]
        );
        // The search text follows the phone.
        let found = client
            .list_customers(pb::ListCustomersRequest { query: "+861012345678".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .customers;
        assert_eq!(found.len(), 1);
        assert_eq!(app.scalar("SELECT COUNT(*) FROM rollup_state WHERE name = 'phones-e164:CN'").await, 1);
        // Done once: a row written national again is left alone by the next start.
        app.execute(&format!("UPDATE customers SET phone = '13800138000' WHERE id = {one}")).await;
        let (channel, _stop2) = app.another_server(|_| {}, None).await;
        let got = CustomerServiceClient::new(channel).get_customer(pb::GetCustomerRequest { id: one }).await.unwrap().into_inner();
        assert_eq!(got.phone, "13800138000");
    }

    async fn duplicates_are_grouped_by_shared_phone_or_email_with_the_keys_that_match(app: &TestApp) {
        // Hand-built: 1+2 share phone, email and name; 3+4 share a phone only;
        // 5+6 share an email only; 7 shares 3's email; 8 is alone; 9 shares 1's phone
        // but is deleted.
        let a1 = customer(app, "Zhang Wei", "138 0013 8000", "zw@example.com", &[]).await;
        let a2 = customer(app, "ＺＨＡＮＧ  wei", "+86 138-0013-8000", "ZW@example.com", &[]).await;
        let b3 = customer(app, "李雷", "139 0013 9000", "lilei@example.com", &[]).await;
        let b4 = customer(app, "韩梅梅", "13900139000", "", &[]).await;
        let c5 = customer(app, "王芳", "", "wf@example.com", &[]).await;
        let c6 = customer(app, "王芳芳", "13700137000", "wf@example.com", &[]).await;
        let d7 = customer(app, "Li Lei", "", "lilei@example.com", &[]).await;
        let _alone = customer(app, "赵六", "13600136000", "zl@example.com", &[]).await;
        let gone = customer(app, "Zhang Wei", "13800138000", "", &[]).await;
        app.customers().delete_customer(pb::DeleteCustomerRequest { id: gone, purge: false, etag: String::new() }).await.unwrap();
        // Emails equal only under MySQL's accent-insensitive collation: a group there
        // (listing both), none on SQLite (bytes differ).
        let accented = customer(app, "José", "", "josé@example.com", &[]).await;
        let plain = customer(app, "Jose", "", "jose@example.com", &[]).await;
        // Names alone: listed only when asked.
        let f1 = customer(app, "Wang  Fang", "", "", &[]).await;
        let f2 = customer(app, "ＷＡＮＧ fang", "13500135000", "", &[]).await;

        let mut client = app.customers();
        let all = client
            .list_duplicate_customers(pb::ListDuplicateCustomersRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(all.next_page_token.is_empty());
        use pb::DuplicateKey::{Email, Name, Phone};
        for g in &all.groups {
            assert_eq!(g.customers.len() as i32, g.customer_count, "{g:?}");
        }
        let accent_groups: Vec<Vec<i64>> = all
            .groups
            .iter()
            .filter(|g| g.value.starts_with("jos"))
            .map(|g| g.customers.iter().map(|c| c.id).collect())
            .collect();
        match app.backend {
            crate::harness::Backend::Mysql => assert_eq!(accent_groups, [vec![accented, plain]]),
            crate::harness::Backend::Sqlite => assert!(accent_groups.is_empty()),
        }
        let summary: Vec<GroupSummary> = all
            .groups
            .iter()
            .filter(|g| !g.value.starts_with("jos"))
            .map(|g| (g.key, g.value.clone(), g.matched_keys.clone(), g.customer_count, g.customers.iter().map(|c| c.id).collect()))
            .collect();
        assert_eq!(
            summary,
            [
                (Phone as i32, "+8613800138000".to_owned(), vec![Phone as i32, Email as i32, Name as i32], 2, vec![a1, a2]),
                (Phone as i32, "+8613900139000".to_owned(), vec![Phone as i32], 2, vec![b3, b4]),
                // zw@example.com is the phone group above; not listed twice.
                (Email as i32, "lilei@example.com".to_owned(), vec![Email as i32], 2, vec![b3, d7]),
                (Email as i32, "wf@example.com".to_owned(), vec![Email as i32], 2, vec![c5, c6]),
            ]
        );
        // Pages of one group each walk the same list.
        let mut token = String::new();
        let mut walked = Vec::new();
        loop {
            let page = client
                .list_duplicate_customers(pb::ListDuplicateCustomersRequest { page_size: 1, page_token: token.clone(), ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            assert!(page.groups.len() <= 1);
            walked.extend(page.groups.into_iter().map(|g| g.value));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let values: Vec<String> = all.groups.iter().map(|g| g.value.clone()).collect();
        assert_eq!(walked, values);
        let err = client
            .list_duplicate_customers(pb::ListDuplicateCustomersRequest { page_size: -1, page_token: "garbage".into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_size", "page_token"]);
        // With name groups: after the others, by normalized name.
        let with_names = client
            .list_duplicate_customers(pb::ListDuplicateCustomersRequest { include_name_groups: true, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let names: Vec<(String, Vec<i32>, Vec<i64>)> = with_names
            .groups
            .iter()
            .filter(|g| g.key == Name as i32)
            .map(|g| (g.value.clone(), g.matched_keys.clone(), g.customers.iter().map(|c| c.id).collect()))
            .collect();
        assert_eq!(
            names,
            [
                ("wang fang".to_owned(), vec![Name as i32], vec![f1, f2]),
                ("zhang wei".to_owned(), vec![Name as i32, Phone as i32, Email as i32], vec![a1, a2]),
            ]
        );
        assert_eq!(with_names.groups.len(), all.groups.len() + 2);
        let mut token = String::new();
        let mut walked = Vec::new();
        loop {
            let page = client
                .list_duplicate_customers(pb::ListDuplicateCustomersRequest { page_size: 2, page_token: token.clone(), include_name_groups: true })
                .await
                .unwrap()
                .into_inner();
            walked.extend(page.groups.into_iter().map(|g| (g.key, g.value)));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let expected: Vec<(i32, String)> = with_names.groups.iter().map(|g| (g.key, g.value.clone())).collect();
        assert_eq!(walked, expected);
        // A token is tied to the flag it was issued with.
        let first = client
            .list_duplicate_customers(pb::ListDuplicateCustomersRequest { page_size: 1, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let err = client
            .list_duplicate_customers(pb::ListDuplicateCustomersRequest { page_size: 1, page_token: first.next_page_token, include_name_groups: true })
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_token"]);
        // After a merge the group is gone.
        client.merge_customers(merge_request(a1, &[a2], "")).await.unwrap();
        let after = client.list_duplicate_customers(pb::ListDuplicateCustomersRequest::default()).await.unwrap().into_inner();
        assert_eq!(after.groups.len(), all.groups.len() - 1);
        assert!(after.groups.iter().all(|g| g.value != "+8613800138000"));
    }

    async fn merge_moves_every_row_and_the_merged_ids_name_the_survivor(app: &TestApp) {
        let s = customer(app, "张伟", "13800138000", "zw@example.com", &["vip", "b2b"]).await;
        let m1 = customer(app, "张 伟", "13800138000", "", &["vip", "churn-risk"]).await;
        let m2 = customer(app, "Zhang Wei", "", "zw@example.com", &["wechat"]).await;
        let other = customer(app, "李雷", "", "", &[]).await;
        let s_comm = logged(app, s, "首次咨询", "2024-03-01T08:00:00Z", "k1").await;
        let m1_comm = logged(app, m1, "退款 refund", "2024-03-05T08:00:00Z", "k1").await;
        let m1_comm2 = logged(app, m1, "第二次", "2024-04-05T08:00:00Z", "k2").await;
        let m2_comm = logged(app, m2, "发票", "2024-05-05T08:00:00Z", "").await;
        let _other_comm = logged(app, other, "别人", "2024-03-05T08:00:00Z", "").await;
        transaction(app, s, "o-1").await;
        transaction(app, m1, "o-1").await;
        transaction(app, m2, "o-2").await;
        ticket(app, m2, "发票错误").await;

        // Refusals write nothing.
        let before = footprint(app).await;
        let mut client = app.customers();
        let err = client.merge_customers(merge_request(s, &[], "")).await.unwrap_err();
        assert_invalid(&err, &["merged_customer_ids"]);
        let err = client.merge_customers(merge_request(0, &[s, -3, s, 7, 7], "")).await.unwrap_err();
        assert_invalid(&err, &["surviving_customer_id", "merged_customer_ids[1]", "merged_customer_ids[2]", "merged_customer_ids[4]"]);
        let err = client.merge_customers(merge_request(s, &[s], "")).await.unwrap_err();
        assert_invalid(&err, &["merged_customer_ids[0]"]);
        let err = client.merge_customers(merge_request(s, &(1..=101).map(|i| i + 1000).collect::<Vec<_>>(), "")).await.unwrap_err();
        assert_invalid(&err, &["merged_customer_ids"]);
        let err = client.merge_customers(merge_request(s, &[m1, 987_654], "")).await.unwrap_err();
        assert_status(&err, Code::NotFound, "CUSTOMER_NOT_FOUND");
        assert_eq!(err.get_error_details().error_info().unwrap().metadata["id"], "987654");
        assert_eq!(footprint(app).await, before);

        let done = client
            .merge_customers(merge_request(s, &[m2, m1], "merge-1"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(done.merged_customer_ids, [m1, m2]);
        assert_eq!((done.communication_count, done.transaction_count, done.service_ticket_count), (3, 2, 1));
        assert_eq!((done.tag_count, done.tags_dropped_count), (2, 0));
        let survivor = done.customer.clone().unwrap();
        assert_eq!(survivor.id, s);
        assert_eq!(survivor.tags, ["b2b", "churn-risk", "vip", "wechat"]);

        // The same key again: the first result, nothing new written.
        let written = footprint(app).await;
        let again = client.merge_customers(merge_request(s, &[m1, m2], "merge-1")).await.unwrap().into_inner();
        assert_eq!(again.merged_customer_ids, done.merged_customer_ids);
        assert_eq!(again.communication_count, 3);
        assert_eq!(again.merge_time, done.merge_time);
        assert_eq!(footprint(app).await, written);
        assert_eq!(app.scalar("SELECT COUNT(*) FROM audit_records WHERE method = 'MergeCustomers'").await, 3);

        // Everything is the survivor's now; nothing is left under the merged ids.
        for table in ["communications", "transactions", "service_tickets", "customer_tags", "customer_months"] {
            for id in [m1, m2] {
                assert_eq!(app.count_where(table, "customer_id", id).await, 0, "{table} {id}");
            }
        }
        let comms = app.communications()
            .list_communications(pb::ListCommunicationsRequest { customer_id: s, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .communications;
        let mut ids: Vec<i64> = comms.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [s_comm, m1_comm, m1_comm2, m2_comm]);
        let txs = client
            .list_transactions(pb::ListTransactionsRequest { customer_id: s, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .transactions;
        assert_eq!(txs.len(), 3);
        // The survivor's timeline holds the moved history.
        let mut stream = app.communications()
            .stream_timeline(pb::StreamTimelineRequest { customer_id: s, include_transactions: true, include_service_tickets: true, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let mut events = 0;
        while let Some(e) = stream.message().await.unwrap() {
            let _ = e;
            events += 1;
        }
        assert_eq!(events, 4 + 3 + 1);
        // Idempotency keys moved with their rows unless the survivor had them: m1's "k1"
        // stays the survivor's first row, m1's "k2" now answers for the survivor.
        let k2 = app.communications()
            .log_communication(log(note(s, "第二次", "2024-04-05T08:00:00Z"), "k2"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(k2.id, m1_comm2);
        let k1 = app.communications()
            .log_communication(log(note(s, "首次咨询", "2024-03-01T08:00:00Z"), "k1"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(k1.id, s_comm);

        // Every call naming a merged id answers NOT_FOUND naming the survivor.
        for id in [m1, m2] {
            let err = client.get_customer(pb::GetCustomerRequest { id }).await.unwrap_err();
            assert_merged(&err, id, s);
            let err = client
                .update_customer(pb::UpdateCustomerRequest {
                    customer: Some(pb::Customer { id, name: "x".into(), ..Default::default() }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
                })
                .await
                .unwrap_err();
            assert_merged(&err, id, s);
            for purge in [false, true] {
                let err = client.delete_customer(pb::DeleteCustomerRequest { id, purge, etag: String::new() }).await.unwrap_err();
                assert_merged(&err, id, s);
            }
            let err = app.communications().log_communication(log(note(id, "late", "2024-06-01T00:00:00Z"), "")).await.unwrap_err();
            assert_merged(&err, id, s);
            let err = client
                .create_transaction(pb::CreateTransactionRequest {
                    transaction: Some(pb::Transaction {
                        customer_id: id,
                        order_number: "o-9".into(),
                        product: "x".into(),
                        amount: Some(pb::Money { currency_code: "CNY".into(), units: 1, nanos: 0 }),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .unwrap_err();
            assert_merged(&err, id, s);
            let err = client.list_transactions(pb::ListTransactionsRequest { customer_id: id, ..Default::default() }).await.unwrap_err();
            assert_merged(&err, id, s);
            let err = app.communications()
                .stream_timeline(pb::StreamTimelineRequest { customer_id: id, ..Default::default() })
                .await
                .unwrap_err();
            assert_merged(&err, id, s);
            // Merging a merged customer again, or into it, names the survivor too.
            let err = client.merge_customers(merge_request(other, &[id], "")).await.unwrap_err();
            assert_merged(&err, id, s);
        }
        // Merged customers leave the listings.
        let listed: Vec<i64> = client
            .list_customers(pb::ListCustomersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .customers
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(listed, [s, other]);

        // A chain: the survivor merged in turn; the first merged ids name the last survivor.
        client.merge_customers(merge_request(other, &[s], "")).await.unwrap();
        for id in [m1, m2, s] {
            let err = client.get_customer(pb::GetCustomerRequest { id }).await.unwrap_err();
            assert_merged(&err, id, other);
        }
        assert_eq!(app.count_where("communications", "customer_id", other).await, 5);
        // Purging the last survivor erases the merged customers' rows too (one person).
        client.delete_customer(pb::DeleteCustomerRequest { id: other, purge: true, etag: String::new() }).await.unwrap();
        for id in [m1, m2, s, other] {
            assert_eq!(app.count_where("customers", "id", id).await, 0, "{id}");
            let err = client.get_customer(pb::GetCustomerRequest { id }).await.unwrap_err();
            assert_status(&err, Code::NotFound, "CUSTOMER_NOT_FOUND");
        }
        assert_eq!(app.count_where("communications", "customer_id", other).await, 0);
    }

    async fn the_survivor_keeps_its_own_tags_first_up_to_the_limit(app: &TestApp) {
        let own: Vec<String> = (0..19).map(|i| format!("own-{i:02}")).collect();
        let own_refs: Vec<&str> = own.iter().map(String::as_str).collect();
        let s = customer(app, "甲", "", "", &own_refs).await;
        let m = customer(app, "乙", "", "", &["own-00", "zz", "aa", "mm"]).await;
        let done = app.customers().merge_customers(merge_request(s, &[m], "")).await.unwrap().into_inner();
        assert_eq!((done.tag_count, done.tags_dropped_count), (1, 2));
        let tags = done.customer.unwrap().tags;
        assert_eq!(tags.len(), 20);
        assert!(tags.contains(&"aa".to_owned()) && !tags.contains(&"zz".to_owned()));
    }

    async fn a_merge_racing_log_communication_loses_nothing(app: &TestApp) {
        const CALLS: usize = 60;
        for round in 0..3 {
            let s = customer(app, &format!("survivor {round}"), "", "", &[]).await;
            let m = customer(app, &format!("merged {round}"), "", "", &[]).await;
            logged(app, s, "before", "2024-03-01T08:00:00Z", "").await;
            logged(app, m, "before", "2024-03-01T08:00:00Z", "").await;
            let before = app.count_where("communications", "customer_id", s).await;
            let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut writers = Vec::new();
            for w in 0..8 {
                let channel = app.new_channel().await;
                let answered = answered.clone();
                writers.push(tokio::spawn(async move {
                    let mut client = CommunicationServiceClient::new(channel);
                    let mut answers = Vec::new();
                    for i in 0..CALLS {
                        let c = note(m, &format!("race {w} {i}"), "2024-03-02T08:00:00Z");
                        answers.push(client.log_communication(log(c, &format!("r-{w}-{i}"))).await);
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    answers
                }));
            }
            // Let the writers get going, then merge while they run.
            while answered.load(std::sync::atomic::Ordering::Relaxed) < 30 + 20 * round {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            app.customers().merge_customers(merge_request(s, &[m], "")).await.unwrap();
            let (mut ok, mut refused) = (0i64, 0i64);
            for w in writers {
                for answer in w.await.unwrap() {
                    match answer {
                        Ok(row) => {
                            ok += 1;
                            // The row answered is stored, under the survivor.
                            let id = row.into_inner().id;
                            let stored = app.scalar(&format!("SELECT customer_id FROM communications WHERE id = {id}")).await;
                            assert_eq!(stored, s);
                        }
                        Err(status) => {
                            assert_merged(&status, m, s);
                            refused += 1;
                        }
                    }
                }
            }
            assert_eq!(ok + refused, 8 * CALLS as i64);
            assert!(refused > 0, "round {round}: the merge ran after every call");
            let after = app.count_where("communications", "customer_id", s).await;
            // The survivor's rows: its own, the merged customer's earlier one, and every
            // call answered OK.
            assert_eq!(after - before, 1 + ok, "round {round}: {ok} ok, {refused} refused");
            assert_eq!(app.count_where("communications", "customer_id", m).await, 0);
            assert_eq!(
                app.scalar(&format!("SELECT COALESCE(SUM(n), 0) FROM customer_months WHERE customer_id = {s}")).await,
                after
            );
        }
    }
}

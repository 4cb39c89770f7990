//! Statement plans that must not grow with the table: the batch key lookup of
//! ImportCommunications reads the keys it names through the whole unique key, and
//! re-imports still sort every item into stored, duplicate and rejected. The plans of
//! every statement at scale are pinned by `tools/plans/explain.sh`.

use crm_comms::pb;

use crate::backend_tests;
use crate::harness::{import, new_customers, note, Backend};

/// Item `i` of the test's import: one of `customers`, keyed `k{i}`.
fn item(customers: &[i64], i: usize, content: &str) -> pb::ImportCommunicationsRequest {
    let customer = customers[i % customers.len()];
    pb::ImportCommunicationsRequest {
        communication: Some(note(customer, content, "2024-03-01T10:00:00Z")),
        request_id: format!("k{i}"),
    }
}

backend_tests! {
    async fn batch_key_lookup_reads_only_the_named_keys_however_many_rows_the_customers_have(
        app: &TestApp
    ) {
        let customers = new_customers(app, "plan", 50).await;
        let first: Vec<_> = (0..3000).map(|i| item(&customers, i, &format!("v{i}"))).collect();
        let resp = app
            .communications()
            .import_communications(tokio_stream::iter(first.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((resp.accepted_count, resp.duplicate_count, resp.rejected_count), (3000, 0, 0));

        if app.backend == Backend::Mysql {
            // The same customers own many more rows (16x, other keys): a lookup that
            // used only the key's `customer_id` prefix would read all of them (the old
            // `customer_id IN (..) AND request_id IN (..)` was a full scan here: 50
            // customers x 2000 keys is too many ranges for MariaDB's range optimizer).
            for round in 0..4 {
                app.execute(&format!(
                    "INSERT INTO communications (customer_id, channel, direction, occur_time, \
                     content, outcome, create_time, request_id) SELECT customer_id, channel, \
                     direction, occur_time, content, outcome, create_time, \
                     CONCAT(request_id, '-', {round}) FROM communications"
                ))
                .await;
            }
            app.execute("ANALYZE TABLE communications").await;
            assert_eq!(app.scalar("SELECT COUNT(*) FROM communications").await, 48_000);
            // Two thousand keys (4000 values: past MariaDB's IN-list conversion
            // threshold of 1000), prepared with their bound values as the import runs it.
            let keys: Vec<(i64, String)> = (0..2000)
                .map(|i| (customers[i % customers.len()], format!("k{i}")))
                .collect();
            let plan = crm_comms::db::communications::explain_key_lookup(&app.db, keys)
                .await
                .unwrap();
            assert_eq!(plan.len(), 1, "one table read, no subquery: {plan:?}");
            let read = &plan[0];
            assert_eq!(read.key.as_deref(), Some("ux_communications_request"), "{plan:?}");
            // BIGINT customer_id is 8 bytes: more means request_id is used too.
            let key_len: i64 = read.key_len.as_deref().unwrap_or("0").parse().unwrap();
            assert!(key_len > 8, "the whole unique key: {plan:?}");
            assert!(read.estimated_rows().unwrap_or(i64::MAX) <= 4000, "about one row per key: {plan:?}");
        }

        // Again: the first 3000 are replays, 500 reuse a key for another communication,
        // 1000 are new.
        let mut again = first;
        again.extend((0..500).map(|i| item(&customers, i, "changed")));
        again.extend((3000..4000).map(|i| item(&customers, i, &format!("v{i}"))));
        let resp = app
            .communications()
            .import_communications(tokio_stream::iter(again))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((resp.accepted_count, resp.duplicate_count, resp.rejected_count), (1000, 3000, 500));
        assert!(resp.rejected.iter().all(|r| r.reason.starts_with("request_id:")), "{resp:?}");
        // A key is scoped to its customer: another customer may use `k0`.
        let other = new_customers(app, "plan-other", 1).await;
        import(app, vec![note(other[0], "v0", "2024-03-01T10:00:00Z")]).await;
        let resp = app
            .communications()
            .import_communications(tokio_stream::iter([item(&other, 0, "v0")]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.accepted_count, 1, "{resp:?}");
    }
}

//! CustomerService: customers, transactions and service tickets on both databases.

use std::collections::HashSet;

use crm_comms::pb;
use prost_types::FieldMask;
use tonic::Code;

use crate::backend_tests;
use crate::harness::{assert_invalid, assert_status, new_customer, ts};

fn customer(name: &str) -> pb::Customer {
    pb::Customer {
        name: name.to_owned(),
        ..Default::default()
    }
}

fn create(c: pb::Customer, request_id: &str) -> pb::CreateCustomerRequest {
    pb::CreateCustomerRequest {
        customer: Some(c),
        request_id: request_id.to_owned(),
    }
}

backend_tests! {
    async fn customer_crud_round_trips_every_field(app: &TestApp) {
        let mut client = app.customers();
        let created = client
            .create_customer(create(
                pb::Customer {
                    name: "  张三  ".into(),
                    gender: pb::Gender::Male as i32,
                    birth_date: "1990-05-01".into(),
                    address: "北京市朝阳区 1号".into(),
                    phone: "+86 138-0000-0000".into(),
                    email: "ZhangSan@Example.COM".into(),
                    tags: vec!["vip".into(), "vip".into(), "北京".into()],
                    ..Default::default()
                },
                "",
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(created.id > 0);
        assert_eq!(created.name, "张三");
        assert_eq!(created.phone, "+8613800000000");
        assert_eq!(created.email, "zhangsan@example.com");
        assert_eq!(created.tags, vec!["vip".to_owned(), "北京".to_owned()]);
        assert!(created.age.unwrap() >= 35);
        assert!(created.create_time.is_some() && !created.etag.is_empty());

        let got = client
            .get_customer(pb::GetCustomerRequest { id: created.id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, created);

        let updated = client
            .update_customer(pb::UpdateCustomerRequest {
                customer: Some(pb::Customer {
                    id: created.id,
                    address: "上海".into(),
                    tags: vec!["gold".into()],
                    name: "ignored, not in mask".into(),
                    etag: created.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["address".into(), "tags".into()],
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.address, "上海");
        assert_eq!(updated.tags, vec!["gold".to_owned()]);
        assert_eq!(updated.name, "张三");
        assert_ne!(updated.etag, created.etag);

        client
            .delete_customer(pb::DeleteCustomerRequest {
                id: created.id,
                ..Default::default()
            })
            .await
            .unwrap();
        let err = client
            .get_customer(pb::GetCustomerRequest { id: created.id })
            .await
            .unwrap_err();
        assert_status(&err, Code::NotFound, "CUSTOMER_NOT_FOUND");
    }

    async fn chinese_text_and_emoji_round_trip_byte_for_byte(app: &TestApp) {
        let mut client = app.customers();
        let name = "王五 🎉 客户👩‍💻 Ünïcødé";
        let address = "广州市天河区体育西路 𠀋 号 🏠";
        let c = client
            .create_customer(create(
                pb::Customer {
                    name: name.into(),
                    address: address.into(),
                    ..Default::default()
                },
                "",
            ))
            .await
            .unwrap()
            .into_inner();
        let got = client
            .get_customer(pb::GetCustomerRequest { id: c.id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.name.as_bytes(), name.as_bytes());
        assert_eq!(got.address.as_bytes(), address.as_bytes());
        let found = client
            .list_customers(pb::ListCustomersRequest {
                query: "🎉 客户".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.customers.len(), 1);
        assert_eq!(found.customers[0].name, name);
    }

    async fn request_id_replay_creates_one_row(app: &TestApp) {
        let mut client = app.customers();
        let first = client
            .create_customer(create(customer("李四"), "req-42"))
            .await
            .unwrap()
            .into_inner();
        let again = client
            .create_customer(create(customer("李四"), "req-42"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first, again);
        // Concurrent retries of one key still store one row.
        let mut handles = Vec::new();
        for _ in 0..8 {
            let mut c = app.customers();
            handles.push(tokio::spawn(async move {
                c.create_customer(create(customer("赵六"), "req-concurrent"))
                    .await
                    .map(|r| r.into_inner().id)
            }));
        }
        let mut ids = HashSet::new();
        for h in handles {
            ids.insert(h.await.unwrap().unwrap());
        }
        assert_eq!(ids.len(), 1);
        assert_eq!(app.scalar("SELECT COUNT(*) FROM customers").await, 2);
    }

    async fn etag_mismatch_is_aborted_and_writes_nothing(app: &TestApp) {
        let mut client = app.customers();
        let c = client.create_customer(create(customer("A"), "")).await.unwrap().into_inner();
        let update = |etag: &str, name: &str| pb::UpdateCustomerRequest {
            customer: Some(pb::Customer {
                id: c.id,
                name: name.into(),
                etag: etag.into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths: vec!["name".into()] }),
        };
        let b = client.update_customer(update(&c.etag, "B")).await.unwrap().into_inner();
        assert_eq!(b.name, "B");
        let err = client.update_customer(update(&c.etag, "C")).await.unwrap_err();
        assert_status(&err, Code::Aborted, "ETAG_MISMATCH");
        let now = client.get_customer(pb::GetCustomerRequest { id: c.id }).await.unwrap().into_inner();
        assert_eq!(now.name, "B");
        let err = client
            .delete_customer(pb::DeleteCustomerRequest { id: c.id, purge: false, etag: c.etag.clone() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Aborted);
    }

    async fn purge_leaves_nothing_of_the_customer(app: &TestApp) {
        let mut client = app.customers();
        let keep = new_customer(app, "keep").await;
        let gone = new_customer(app, "gone").await;
        client.update_customer(pb::UpdateCustomerRequest {
            customer: Some(pb::Customer { id: gone, tags: vec!["x".into()], ..Default::default() }),
            update_mask: Some(FieldMask { paths: vec!["tags".into()] }),
        }).await.unwrap();
        for id in [keep, gone] {
            client.create_transaction(pb::CreateTransactionRequest {
                transaction: Some(pb::Transaction {
                    customer_id: id,
                    order_number: "1001".into(),
                    product: "电脑".into(),
                    amount: Some(pb::Money { currency_code: "CNY".into(), units: 5000, nanos: 0 }),
                    ..Default::default()
                }),
                request_id: "t1".into(),
            }).await.unwrap();
            client.create_service_ticket(pb::CreateServiceTicketRequest {
                service_ticket: Some(pb::ServiceTicket {
                    customer_id: id,
                    issue: "退款问题".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            }).await.unwrap();
        }
        let mut comms = app.communications();
        for id in [keep, gone] {
            comms.log_communication(pb::LogCommunicationRequest {
                communication: Some(pb::Communication {
                    customer_id: id,
                    channel: pb::Channel::Note as i32,
                    direction: pb::Direction::Outbound as i32,
                    content: "回访".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            }).await.unwrap();
        }
        // Every kind of dependent row exists before the purge, so "gone after" proves it.
        let dependents = ["transactions", "service_tickets", "communications", "customer_tags"];
        for table in dependents {
            assert_eq!(app.count_where(table, "customer_id", gone).await, 1, "{table} before purge");
        }
        assert_eq!(app.count_where("customers", "id", gone).await, 1);
        client.delete_customer(pb::DeleteCustomerRequest { id: gone, purge: true, etag: String::new() }).await.unwrap();
        for table in dependents {
            assert_eq!(app.count_where(table, "customer_id", gone).await, 0, "{table} after purge");
        }
        assert_eq!(app.count_where("customers", "id", gone).await, 0);
        for table in ["transactions", "service_tickets", "communications"] {
            assert_eq!(app.count_where(table, "customer_id", keep).await, 1, "{table} of the other customer");
        }
        let err = client.get_customer(pb::GetCustomerRequest { id: gone }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        // A soft-deleted customer can still be purged later.
        client.delete_customer(pb::DeleteCustomerRequest { id: keep, purge: false, etag: String::new() }).await.unwrap();
        assert_eq!(app.count_where("customers", "id", keep).await, 1);
        client.delete_customer(pb::DeleteCustomerRequest { id: keep, purge: true, etag: String::new() }).await.unwrap();
        assert_eq!(app.count_where("customers", "id", keep).await, 0);
        for table in ["transactions", "service_tickets", "communications"] {
            assert_eq!(app.count_where(table, "customer_id", keep).await, 0, "{table} after the later purge");
        }
    }

    async fn list_paginates_without_gaps_or_repeats(app: &TestApp) {
        let mut client = app.customers();
        let mut expected = Vec::new();
        for i in 0..23 {
            let tags = if i % 2 == 0 { vec!["even".to_owned()] } else { vec![] };
            let c = client
                .create_customer(create(
                    pb::Customer {
                        name: format!("客户{i:02} 50%_off"),
                        tags,
                        ..Default::default()
                    },
                    "",
                ))
                .await
                .unwrap()
                .into_inner();
            expected.push(c.id);
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = client
                .list_customers(pb::ListCustomersRequest {
                    page_size: 5,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(page.customers.len() <= 5);
            seen.extend(page.customers.iter().map(|c| c.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 5);
        assert_eq!(seen, expected);

        // Tag filter across pages.
        let mut even = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_customers(pb::ListCustomersRequest {
                    page_size: 4,
                    page_token: token.clone(),
                    tag: "even".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            even.extend(page.customers.iter().map(|c| c.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(even, expected.iter().copied().step_by(2).collect::<Vec<_>>());

        // `%` and `_` are literal in `query`; matching ignores case.
        let literal = client
            .list_customers(pb::ListCustomersRequest {
                query: "50%_OFF".into(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(literal.customers.len(), 23);
        let none = client
            .list_customers(pb::ListCustomersRequest {
                query: "5%f".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(none.customers.is_empty());

        // A token only works with the filters it was issued for.
        let first = client
            .list_customers(pb::ListCustomersRequest { page_size: 2, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let err = client
            .list_customers(pb::ListCustomersRequest {
                page_size: 2,
                page_token: first.next_page_token,
                tag: "even".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_token"]);
    }

    async fn bad_input_names_every_field_and_writes_nothing(app: &TestApp) {
        let mut client = app.customers();
        let err = client
            .create_customer(create(
                pb::Customer {
                    name: "   ".into(),
                    email: "not-an-email".into(),
                    birth_date: "1990-02-30".into(),
                    phone: "call me".into(),
                    gender: 9,
                    ..Default::default()
                },
                "",
            ))
            .await
            .unwrap_err();
        assert_invalid(
            &err,
            &["customer.name", "customer.email", "customer.birth_date", "customer.phone", "customer.gender"],
        );
        let err = client
            .list_customers(pb::ListCustomersRequest { page_size: -1, ..Default::default() })
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_size"]);
        let err = client
            .list_customers(pb::ListCustomersRequest { page_token: "forged-token".into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_token"]);
        let err = client.get_customer(pb::GetCustomerRequest { id: 999_999 }).await.unwrap_err();
        assert_status(&err, Code::NotFound, "CUSTOMER_NOT_FOUND");
        let err = client.get_customer(pb::GetCustomerRequest { id: -3 }).await.unwrap_err();
        assert_invalid(&err, &["id"]);
        let err = client
            .update_customer(pb::UpdateCustomerRequest {
                customer: Some(pb::Customer { id: 1, ..Default::default() }),
                update_mask: Some(FieldMask { paths: vec!["id".into(), "email".into()] }),
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["update_mask"]);
        let err = client
            .create_transaction(pb::CreateTransactionRequest {
                transaction: Some(pb::Transaction {
                    customer_id: 999_999,
                    order_number: "1".into(),
                    product: "p".into(),
                    amount: Some(pb::Money { currency_code: "CNY".into(), units: 1, nanos: 0 }),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_status(&err, Code::NotFound, "CUSTOMER_NOT_FOUND");
        let err = client
            .create_transaction(pb::CreateTransactionRequest {
                transaction: Some(pb::Transaction {
                    customer_id: 0,
                    amount: Some(pb::Money { currency_code: "rmb".into(), units: 1, nanos: -5 }),
                    occur_time: Some(ts("2999-01-01T00:00:00Z")),
                    ..Default::default()
                }),
                request_id: "x".repeat(65),
            })
            .await
            .unwrap_err();
        assert_invalid(
            &err,
            &[
                "request_id",
                "transaction.customer_id",
                "transaction.order_number",
                "transaction.product",
                "transaction.amount.currency_code",
                "transaction.amount.nanos",
                "transaction.occur_time",
            ],
        );
        for table in ["customers", "transactions", "service_tickets"] {
            assert_eq!(app.scalar(&format!("SELECT COUNT(*) FROM {table}")).await, 0, "{table}");
        }
    }

    async fn transactions_keep_exact_money_and_list_newest_first(app: &TestApp) {
        let id = new_customer(app, "买家").await;
        let mut client = app.customers();
        let mut made = Vec::new();
        for (i, (units, nanos)) in [(5000, 250_000_000), (-30, -990_000_000), (9_007_199_254_740_993, 1)].iter().enumerate() {
            let t = client
                .create_transaction(pb::CreateTransactionRequest {
                    transaction: Some(pb::Transaction {
                        customer_id: id,
                        order_number: format!("10{i:02}"),
                        product: "平板".into(),
                        amount: Some(pb::Money { currency_code: "CNY".into(), units: *units, nanos: *nanos }),
                        occur_time: Some(ts(&format!("2021-01-0{}T08:00:00Z", i + 1))),
                        ..Default::default()
                    }),
                    request_id: format!("order-{i}"),
                })
                .await
                .unwrap()
                .into_inner();
            made.push(t);
        }
        // Replay returns the first result.
        let replay = client
            .create_transaction(pb::CreateTransactionRequest {
                transaction: made[0].clone().into(),
                request_id: "order-0".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(replay, made[0]);
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_transactions(pb::ListTransactionsRequest {
                    customer_id: id,
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.transactions);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        made.reverse();
        assert_eq!(seen, made);
        assert_eq!(seen[0].amount.as_ref().unwrap().units, 9_007_199_254_740_993);
        let ranged = client
            .list_transactions(pb::ListTransactionsRequest {
                customer_id: id,
                start_time: Some(ts("2021-01-02T00:00:00Z")),
                end_time: Some(ts("2021-01-03T00:00:00Z")),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ranged.transactions.len(), 1);
        assert_eq!(ranged.transactions[0].amount.as_ref().unwrap().nanos, -990_000_000);
        let err = client
            .list_transactions(pb::ListTransactionsRequest {
                customer_id: id,
                start_time: Some(ts("2021-01-03T00:00:00Z")),
                end_time: Some(ts("2021-01-02T00:00:00Z")),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["end_time"]);
    }

    async fn tickets_resolve_and_list_by_status(app: &TestApp) {
        let id = new_customer(app, "客户").await;
        let mut client = app.customers();
        let open = |issue: &str| pb::CreateServiceTicketRequest {
            service_ticket: Some(pb::ServiceTicket {
                customer_id: id,
                issue: issue.into(),
                ..Default::default()
            }),
            request_id: format!("ticket-{issue}"),
        };
        let a = client.create_service_ticket(open("换货问题")).await.unwrap().into_inner();
        let b = client.create_service_ticket(open("退货问题")).await.unwrap().into_inner();
        assert_eq!(client.create_service_ticket(open("换货问题")).await.unwrap().into_inner(), a);
        assert_eq!(a.status, pb::TicketStatus::Open as i32);
        assert!(a.resolve_time.is_none());

        let resolve = |etag: &str, solution: &str| pb::UpdateServiceTicketRequest {
            service_ticket: Some(pb::ServiceTicket {
                id: a.id,
                solution: solution.into(),
                status: pb::TicketStatus::Resolved as i32,
                etag: etag.into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths: vec!["solution".into(), "status".into()] }),
        };
        let err = client.update_service_ticket(resolve(&a.etag, "")).await.unwrap_err();
        assert_status(&err, Code::FailedPrecondition, "SOLUTION_REQUIRED");
        let resolved = client.update_service_ticket(resolve(&a.etag, "换货成功")).await.unwrap().into_inner();
        assert_eq!(resolved.status, pb::TicketStatus::Resolved as i32);
        assert!(resolved.resolve_time.is_some());
        let err = client.update_service_ticket(resolve(&a.etag, "again")).await.unwrap_err();
        assert_status(&err, Code::Aborted, "ETAG_MISMATCH");

        let list = |status: pb::TicketStatus| pb::ListServiceTicketsRequest {
            customer_id: id,
            status: status as i32,
            ..Default::default()
        };
        let open_list = client.list_service_tickets(list(pb::TicketStatus::Open)).await.unwrap().into_inner();
        assert_eq!(open_list.service_tickets.iter().map(|t| t.id).collect::<Vec<_>>(), vec![b.id]);
        let resolved_list = client.list_service_tickets(list(pb::TicketStatus::Resolved)).await.unwrap().into_inner();
        assert_eq!(resolved_list.service_tickets, vec![resolved]);
        let all = client.list_service_tickets(pb::ListServiceTicketsRequest { page_size: 1, ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(all.service_tickets.len(), 1);
        assert!(!all.next_page_token.is_empty());
        let err = client
            .update_service_ticket(pb::UpdateServiceTicketRequest {
                service_ticket: Some(pb::ServiceTicket { id: 424_242, ..Default::default() }),
                update_mask: Some(FieldMask { paths: vec!["issue".into()] }),
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["service_ticket.issue"]);
        let err = client
            .update_service_ticket(pb::UpdateServiceTicketRequest {
                service_ticket: Some(pb::ServiceTicket { id: 424_242, issue: "x".into(), ..Default::default() }),
                update_mask: Some(FieldMask { paths: vec!["issue".into()] }),
            })
            .await
            .unwrap_err();
        assert_status(&err, Code::NotFound, "SERVICE_TICKET_NOT_FOUND");
    }
}

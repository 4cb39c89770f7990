//! Who may call and what a call may cost (issue 10): every RPC under every identity,
//! tokens reloaded on SIGHUP, TLS and mutual TLS with certificates made here, the
//! exposure rule, the limits (in-flight cap, per-caller rate, message and header size,
//! stalled streams) and the audit trail. Each backend test runs on SQLite and MariaDB.
//!
//! Secured servers run beside the harness's own (anonymous, loopback) server on the
//! same database: fixtures are made through the harness server, the calls under test
//! go to the secured one, and the database is counted straight after each call.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crm_comms::config::Config;
use crm_comms::model::caller::Role;
use crm_comms::pb;
use crm_comms::security::tokens::new_token;
use pb::audit_service_client::AuditServiceClient;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::{
    assert_status, new_customer, note, ts, AnalyticsServiceClient, CommunicationServiceClient,
    CustomerServiceClient, TestApp,
};
use crate::{backend_tests, standalone_tests};

/// A tokens file with one token per role, in its own directory.
struct Tokens {
    _dir: tempfile::TempDir,
    path: PathBuf,
    reader: String,
    writer: String,
    admin: String,
}

impl Tokens {
    fn new() -> Tokens {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let (reader, r) = new_token(Role::Reader, "dashboards").unwrap();
        let (writer, w) = new_token(Role::Writer, "billing").unwrap();
        let (admin, a) = new_token(Role::Admin, "ops").unwrap();
        std::fs::write(&path, format!("# test tokens\n{r}\n{w}\n{a}\n")).unwrap();
        Tokens {
            _dir: dir,
            path,
            reader,
            writer,
            admin,
        }
    }
}

/// Who calls in the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    Malformed,
    Unknown,
    Reader,
    Writer,
    Admin,
}

const EVERYONE: [Who; 6] = [
    Who::Nobody,
    Who::Malformed,
    Who::Unknown,
    Who::Reader,
    Who::Writer,
    Who::Admin,
];

impl Who {
    fn header(self, tokens: &Tokens) -> Option<String> {
        match self {
            Who::Nobody => None,
            Who::Malformed => Some(format!("Basic {}", tokens.admin)),
            Who::Unknown => Some("Bearer crm_not-a-token-of-this-server".to_owned()),
            Who::Reader => Some(format!("Bearer {}", tokens.reader)),
            Who::Writer => Some(format!("bearer {}", tokens.writer)),
            Who::Admin => Some(format!("Bearer {}", tokens.admin)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Who::Nobody => "no token",
            Who::Malformed => "malformed",
            Who::Unknown => "unknown token",
            Who::Reader => "reader",
            Who::Writer => "writer",
            Who::Admin => "admin",
        }
    }

    fn role(self) -> Option<Role> {
        match self {
            Who::Reader => Some(Role::Reader),
            Who::Writer => Some(Role::Writer),
            Who::Admin => Some(Role::Admin),
            _ => None,
        }
    }
}

/// `message` with the caller's authorization header, if any.
fn authed<T>(message: T, header: &Option<String>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = header {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

/// Every RPC of the API, `DeleteCustomer` twice (with and without purge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    CreateCustomer,
    GetCustomer,
    UpdateCustomer,
    DeleteCustomer,
    PurgeCustomer,
    ListCustomers,
    CreateTransaction,
    ListTransactions,
    CreateServiceTicket,
    UpdateServiceTicket,
    ListServiceTickets,
    ListDuplicateCustomers,
    MergeCustomers,
    LogCommunication,
    ImportCommunications,
    GetCommunication,
    ListCommunications,
    DeleteCommunication,
    StreamTimeline,
    GetFrequencyReport,
    GetContentReport,
    GetCustomerInsights,
    GetResponseTimeReport,
    GetResolutionTimeReport,
    ListAttentionCustomers,
    RecordSatisfaction,
    GetSatisfactionReport,
    ListAuditRecords,
}

const EVERY_RPC: [Rpc; 28] = [
    Rpc::CreateCustomer,
    Rpc::GetCustomer,
    Rpc::UpdateCustomer,
    Rpc::DeleteCustomer,
    Rpc::PurgeCustomer,
    Rpc::ListCustomers,
    Rpc::CreateTransaction,
    Rpc::ListTransactions,
    Rpc::CreateServiceTicket,
    Rpc::UpdateServiceTicket,
    Rpc::ListServiceTickets,
    Rpc::ListDuplicateCustomers,
    Rpc::MergeCustomers,
    Rpc::LogCommunication,
    Rpc::ImportCommunications,
    Rpc::GetCommunication,
    Rpc::ListCommunications,
    Rpc::DeleteCommunication,
    Rpc::StreamTimeline,
    Rpc::GetFrequencyReport,
    Rpc::GetContentReport,
    Rpc::GetCustomerInsights,
    Rpc::GetResponseTimeReport,
    Rpc::GetResolutionTimeReport,
    Rpc::ListAttentionCustomers,
    Rpc::RecordSatisfaction,
    Rpc::GetSatisfactionReport,
    Rpc::ListAuditRecords,
];

impl Rpc {
    /// The least role that may make the call.
    fn needs(self) -> Role {
        match self {
            Rpc::CreateCustomer
            | Rpc::UpdateCustomer
            | Rpc::DeleteCustomer
            | Rpc::MergeCustomers
            | Rpc::CreateTransaction
            | Rpc::CreateServiceTicket
            | Rpc::UpdateServiceTicket
            | Rpc::LogCommunication
            | Rpc::ImportCommunications
            | Rpc::DeleteCommunication
            | Rpc::RecordSatisfaction => Role::Writer,
            Rpc::PurgeCustomer | Rpc::ListAuditRecords => Role::Admin,
            _ => Role::Reader,
        }
    }

    fn writes(self) -> bool {
        self.needs() == Role::Writer || self == Rpc::PurgeCustomer
    }
}

/// Rows a call acts on, made fresh for each call through the harness server.
struct Fixture {
    customer: i64,
    /// A second customer, for MergeCustomers to merge into `customer`.
    other: i64,
    communication: i64,
    ticket: i64,
}

async fn fixture(app: &TestApp) -> Fixture {
    let customer = new_customer(app, "张三 fixture").await;
    let communication = app
        .communications()
        .log_communication(crate::harness::log(
            note(customer, "想退款 refund", "2024-03-01T08:00:00Z"),
            "",
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let ticket = app
        .customers()
        .create_service_ticket(pb::CreateServiceTicketRequest {
            service_ticket: Some(pb::ServiceTicket {
                customer_id: customer,
                issue: "退款问题".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let other = new_customer(app, "张三 duplicate").await;
    Fixture {
        customer,
        other,
        communication,
        ticket,
    }
}

/// Makes `rpc` on `channel` with `header`, a request that succeeds when allowed.
async fn call(
    channel: &Channel,
    rpc: Rpc,
    header: &Option<String>,
    f: &Fixture,
) -> Result<(), Status> {
    let mut customers = CustomerServiceClient::new(channel.clone());
    let mut comms = CommunicationServiceClient::new(channel.clone());
    let mut analytics = AnalyticsServiceClient::new(channel.clone());
    let range = (
        Some(ts("2024-01-01T00:00:00Z")),
        Some(ts("2025-01-01T00:00:00Z")),
    );
    let r = |m| authed(m, header);
    match rpc {
        Rpc::CreateCustomer => {
            customers
                .create_customer(authed(
                    pb::CreateCustomerRequest {
                        customer: Some(pb::Customer {
                            name: "李四".into(),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                    header,
                ))
                .await?;
        }
        Rpc::GetCustomer => {
            customers
                .get_customer(authed(pb::GetCustomerRequest { id: f.customer }, header))
                .await?;
        }
        Rpc::UpdateCustomer => {
            customers
                .update_customer(authed(
                    pb::UpdateCustomerRequest {
                        customer: Some(pb::Customer {
                            id: f.customer,
                            name: "王五".into(),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["name".into()],
                        }),
                    },
                    header,
                ))
                .await?;
        }
        Rpc::DeleteCustomer | Rpc::PurgeCustomer => {
            customers
                .delete_customer(authed(
                    pb::DeleteCustomerRequest {
                        id: f.customer,
                        purge: rpc == Rpc::PurgeCustomer,
                        etag: String::new(),
                    },
                    header,
                ))
                .await?;
        }
        Rpc::ListCustomers => {
            customers
                .list_customers(authed(pb::ListCustomersRequest::default(), header))
                .await?;
        }
        Rpc::CreateTransaction => {
            customers
                .create_transaction(authed(
                    pb::CreateTransactionRequest {
                        transaction: Some(pb::Transaction {
                            customer_id: f.customer,
                            order_number: "A-1".into(),
                            product: "电脑".into(),
                            amount: Some(pb::Money {
                                currency_code: "CNY".into(),
                                units: 10,
                                nanos: 0,
                            }),
                            occur_time: Some(ts("2024-03-02T00:00:00Z")),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                    header,
                ))
                .await?;
        }
        Rpc::ListTransactions => {
            customers
                .list_transactions(authed(
                    pb::ListTransactionsRequest {
                        customer_id: f.customer,
                        ..Default::default()
                    },
                    header,
                ))
                .await?;
        }
        Rpc::CreateServiceTicket => {
            customers
                .create_service_ticket(authed(
                    pb::CreateServiceTicketRequest {
                        service_ticket: Some(pb::ServiceTicket {
                            customer_id: f.customer,
                            issue: "发票".into(),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                    header,
                ))
                .await?;
        }
        Rpc::UpdateServiceTicket => {
            customers
                .update_service_ticket(authed(
                    pb::UpdateServiceTicketRequest {
                        service_ticket: Some(pb::ServiceTicket {
                            id: f.ticket,
                            issue: "发票 (updated)".into(),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["issue".into()],
                        }),
                    },
                    header,
                ))
                .await?;
        }
        Rpc::ListServiceTickets => {
            customers
                .list_service_tickets(authed(
                    pb::ListServiceTicketsRequest {
                        customer_id: f.customer,
                        ..Default::default()
                    },
                    header,
                ))
                .await?;
        }
        Rpc::ListDuplicateCustomers => {
            customers
                .list_duplicate_customers(authed(
                    pb::ListDuplicateCustomersRequest::default(),
                    header,
                ))
                .await?;
        }
        Rpc::MergeCustomers => {
            customers
                .merge_customers(authed(
                    pb::MergeCustomersRequest {
                        surviving_customer_id: f.customer,
                        merged_customer_ids: vec![f.other],
                        request_id: String::new(),
                    },
                    header,
                ))
                .await?;
        }
        Rpc::LogCommunication => {
            comms
                .log_communication(r(crate::harness::log(
                    note(f.customer, "来电咨询", "2024-03-03T00:00:00Z"),
                    "",
                )))
                .await?;
        }
        Rpc::ImportCommunications => {
            let items = (0..3).map(|i| pb::ImportCommunicationsRequest {
                communication: Some(note(
                    f.customer,
                    &format!("导入 {i}"),
                    "2024-03-04T00:00:00Z",
                )),
                request_id: String::new(),
            });
            let response = comms
                .import_communications(authed(
                    tokio_stream::iter(items.collect::<Vec<_>>()),
                    header,
                ))
                .await?
                .into_inner();
            assert_eq!(response.accepted_count, 3);
        }
        Rpc::GetCommunication => {
            comms
                .get_communication(authed(
                    pb::GetCommunicationRequest {
                        id: f.communication,
                    },
                    header,
                ))
                .await?;
        }
        Rpc::ListCommunications => {
            comms
                .list_communications(authed(
                    pb::ListCommunicationsRequest {
                        customer_id: f.customer,
                        ..Default::default()
                    },
                    header,
                ))
                .await?;
        }
        Rpc::DeleteCommunication => {
            comms
                .delete_communication(authed(
                    pb::DeleteCommunicationRequest {
                        id: f.communication,
                    },
                    header,
                ))
                .await?;
        }
        Rpc::StreamTimeline => {
            let mut stream = comms
                .stream_timeline(authed(
                    pb::StreamTimelineRequest {
                        customer_id: f.customer,
                        ..Default::default()
                    },
                    header,
                ))
                .await?
                .into_inner();
            let mut n = 0;
            while stream.message().await?.is_some() {
                n += 1;
            }
            assert!(n >= 1, "the fixture's communication");
        }
        Rpc::GetFrequencyReport => {
            analytics
                .get_frequency_report(authed(
                    pb::GetFrequencyReportRequest {
                        start_time: range.0,
                        end_time: range.1,
                        granularity: pb::Granularity::Day as i32,
                        time_zone: "Asia/Shanghai".into(),
                        ..Default::default()
                    },
                    header,
                ))
                .await?;
        }
        Rpc::GetContentReport => {
            analytics
                .get_content_report(authed(
                    pb::GetContentReportRequest {
                        start_time: range.0,
                        end_time: range.1,
                        keywords: vec!["退款".into()],
                        ..Default::default()
                    },
                    header,
                ))
                .await?;
        }
        Rpc::GetCustomerInsights => {
            analytics
                .get_customer_insights(authed(
                    pb::GetCustomerInsightsRequest {
                        customer_id: f.customer,
                        ..Default::default()
                    },
                    header,
                ))
                .await?;
        }
        Rpc::GetResponseTimeReport => {
            analytics
                .get_response_time_report(authed(
                    pb::GetResponseTimeReportRequest {
                        start_time: range.0,
                        end_time: range.1,
                        ..Default::default()
                    },
                    header,
                ))
                .await?;
        }
        Rpc::GetResolutionTimeReport => {
            analytics
                .get_resolution_time_report(authed(
                    pb::GetResolutionTimeReportRequest {
                        start_time: range.0,
                        end_time: range.1,
                        ..Default::default()
                    },
                    header,
                ))
                .await?;
        }
        Rpc::RecordSatisfaction => {
            comms
                .record_satisfaction(authed(
                    pb::RecordSatisfactionRequest {
                        survey: Some(pb::SatisfactionSurvey {
                            target: Some(pb::satisfaction_survey::Target::CommunicationId(
                                f.communication,
                            )),
                            score: 5,
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                    header,
                ))
                .await?;
        }
        Rpc::GetSatisfactionReport => {
            analytics
                .get_satisfaction_report(authed(
                    pb::GetSatisfactionReportRequest {
                        start_time: range.0,
                        end_time: range.1,
                        ..Default::default()
                    },
                    header,
                ))
                .await?;
        }
        Rpc::ListAttentionCustomers => {
            analytics
                .list_attention_customers(authed(
                    pb::ListAttentionCustomersRequest {
                        reason: pb::AttentionReason::Stale as i32,
                        stale_days: 30,
                        ..Default::default()
                    },
                    header,
                ))
                .await?;
        }
        Rpc::ListAuditRecords => {
            AuditServiceClient::new(channel.clone())
                .list_audit_records(authed(pb::ListAuditRecordsRequest::default(), header))
                .await?;
        }
    }
    Ok(())
}

/// What the database holds, as counts and version sums: any write changes it.
async fn footprint(app: &TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for sql in [
        "SELECT COUNT(*) FROM customers",
        "SELECT COUNT(*) FROM customers WHERE delete_time IS NOT NULL",
        "SELECT COALESCE(SUM(version), 0) FROM customers",
        "SELECT COUNT(*) FROM communications",
        "SELECT COUNT(*) FROM transactions",
        "SELECT COUNT(*) FROM service_tickets",
        "SELECT COALESCE(SUM(version), 0) FROM service_tickets",
        "SELECT COUNT(*) FROM satisfaction_surveys",
        "SELECT COUNT(*) FROM audit_records",
    ] {
        out.push(app.scalar(sql).await);
    }
    out
}

/// A server on `app`'s database with these tokens and `tweak`, and a channel to it.
async fn secured(
    app: &TestApp,
    tokens: &Tokens,
    tweak: impl FnOnce(&mut Config),
) -> (Channel, watch::Sender<bool>) {
    let path = tokens.path.clone();
    app.another_server(
        move |c| {
            c.auth_tokens_file = Some(path);
            tweak(c);
        },
        None,
    )
    .await
}

/// The newest audit record, read with the admin token.
async fn newest_audit(channel: &Channel, tokens: &Tokens) -> pb::AuditRecord {
    let header = Who::Admin.header(tokens);
    AuditServiceClient::new(channel.clone())
        .list_audit_records(authed(
            pb::ListAuditRecordsRequest {
                page_size: 1,
                ..Default::default()
            },
            &header,
        ))
        .await
        .unwrap()
        .into_inner()
        .audit_records
        .into_iter()
        .next()
        .expect("an audit record")
}

fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

backend_tests! {
    async fn every_rpc_answers_each_identity_with_the_right_code_and_refusals_write_nothing(app: &TestApp) {
        let tokens = Tokens::new();
        let (channel, _stop) = secured(app, &tokens, |_| {}).await;
        let mut table = String::new();
        let (mut sent, mut right, mut refused, mut refused_writes) = (0, 0, 0, 0);
        for rpc in EVERY_RPC {
            let mut row = format!("| {rpc:?} | {} |", rpc.needs());
            for who in EVERYONE {
                let f = fixture(app).await;
                let before = footprint(app).await;
                let got = call(&channel, rpc, &who.header(&tokens), &f).await;
                let after = footprint(app).await;
                sent += 1;
                let allowed = who.role().is_some_and(|role| role >= rpc.needs());
                let (code, cell) = match &got {
                    Ok(()) => (Code::Ok, "OK".to_owned()),
                    Err(s) => (s.code(), format!("{:?} {}", s.code(), reason(s))),
                };
                if allowed {
                    assert_eq!(code, Code::Ok, "{rpc:?} as {}: {got:?}", who.name());
                    if rpc.writes() {
                        assert_ne!(before, after, "{rpc:?} as {} wrote nothing", who.name());
                        let audit = newest_audit(&channel, &tokens).await;
                        let expected = match who { Who::Writer => "billing", _ => "ops" };
                        assert_eq!(audit.caller, expected, "{rpc:?}: {audit:?}");
                        assert!(audit.peer.starts_with("127.0.0.1:"), "{audit:?}");
                    } else {
                        assert_eq!(before, after, "{rpc:?} as {} wrote", who.name());
                    }
                } else {
                    let status = got.expect_err("refused");
                    refused += 1;
                    match who.role() {
                        None => assert_eq!(status.code(), Code::Unauthenticated, "{rpc:?} {}", who.name()),
                        Some(_) => {
                            assert_eq!(status.code(), Code::PermissionDenied, "{rpc:?} {}", who.name());
                            let info = status.get_details_error_info().expect("ErrorInfo");
                            // The guard names the role the method needs; a purge's admin
                            // check follows in the handler, once the caller is a writer.
                            let needed = match rpc {
                                Rpc::PurgeCustomer if who == Who::Reader => Role::Writer,
                                rpc => rpc.needs(),
                            }
                            .to_string();
                            assert_eq!(info.reason, format!("{}_ROLE_REQUIRED", needed.to_uppercase()));
                            assert_eq!(info.metadata.get("required_role"), Some(&needed));
                            assert_eq!(info.domain, "crm.v1");
                        }
                    }
                    if before != after {
                        refused_writes += 1;
                    }
                    assert_eq!(before, after, "refused {rpc:?} as {} wrote", who.name());
                }
                right += 1;
                row.push_str(&format!(" {cell} |"));
            }
            table.push_str(&row);
            table.push('\n');
        }
        eprintln!(
            "| RPC | needs | {} |\n|---|---|{}\n{table}sent {sent}, right code {right}, refused {refused}, rows written by refused calls {refused_writes}",
            EVERYONE.map(Who::name).join(" | "),
            "---|".repeat(EVERYONE.len())
        );
        assert_eq!((sent, right), (28 * 6, 28 * 6));
        // Three identities without a valid token, the reader for the 13 writer and admin
        // calls, the writer for the 2 admin calls.
        assert_eq!(refused, 3 * 28 + 13 + 2);
    }

    async fn a_writer_cannot_purge_and_learns_nothing_by_trying(app: &TestApp) {
        let tokens = Tokens::new();
        let (channel, _stop) = secured(app, &tokens, |_| {}).await;
        let customer = new_customer(app, "赵六").await;
        let before = footprint(app).await;
        let mut client = CustomerServiceClient::new(channel.clone());
        let writer = Who::Writer.header(&tokens);
        // Refused before the id is looked at: an unknown id gets the same answer.
        for id in [customer, 987_654_321, -1] {
            let err = client
                .delete_customer(authed(pb::DeleteCustomerRequest { id, purge: true, etag: String::new() }, &writer))
                .await
                .unwrap_err();
            assert_status(&err, Code::PermissionDenied, "ADMIN_ROLE_REQUIRED");
            assert!(err.message().contains("admin"), "{}", err.message());
        }
        assert_eq!(footprint(app).await, before);
        // The admin may.
        client
            .delete_customer(authed(pb::DeleteCustomerRequest { id: customer, purge: true, etag: String::new() }, &Who::Admin.header(&tokens)))
            .await
            .unwrap();
        assert_eq!(app.count_where("customers", "id", customer).await, 0);
        let audit = newest_audit(&channel, &tokens).await;
        assert_eq!((audit.method.as_str(), audit.caller.as_str(), audit.customer_id, audit.detail.as_str()), ("DeleteCustomer", "ops", customer, "purge"));
    }

    async fn health_and_reflection_answer_without_a_token(app: &TestApp) {
        let tokens = Tokens::new();
        let (channel, _stop) = secured(app, &tokens, |_| {}).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let status = health
            .check(tonic_health::pb::HealthCheckRequest { service: "crm.v1.AuditService".into() })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        use tonic_reflection::pb::v1;
        let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("{answer:?}");
        };
        assert!(list.service.iter().any(|s| s.name == "crm.v1.AuditService"), "{list:?}");
    }

    async fn the_audit_trail_keeps_every_write_with_its_caller_through_a_purge(app: &TestApp) {
        let tokens = Tokens::new();
        let (channel, _stop) = secured(app, &tokens, |_| {}).await;
        let writer = Who::Writer.header(&tokens);
        let admin = Who::Admin.header(&tokens);
        let f = fixture(app).await; // by `anonymous`, through the harness server
        for rpc in [Rpc::UpdateCustomer, Rpc::CreateTransaction, Rpc::CreateServiceTicket, Rpc::UpdateServiceTicket, Rpc::LogCommunication, Rpc::ImportCommunications, Rpc::DeleteCommunication] {
            call(&channel, rpc, &writer, &f).await.unwrap();
        }
        // A retry with a used request id writes nothing, so records nothing.
        let mut comms = CommunicationServiceClient::new(channel.clone());
        for _ in 0..2 {
            comms.log_communication(authed(crate::harness::log(note(f.customer, "同一条", "2024-03-05T00:00:00Z"), "once"), &writer)).await.unwrap();
        }
        call(&channel, Rpc::PurgeCustomer, &admin, &f).await.unwrap();
        assert_eq!(app.count_where("communications", "customer_id", f.customer).await, 0);

        // Every record of the customer is still there, newest first, in pages of 3.
        let mut audit = AuditServiceClient::new(channel.clone());
        let mut records = Vec::new();
        let mut token = String::new();
        loop {
            let page = audit
                .list_audit_records(authed(pb::ListAuditRecordsRequest { page_size: 3, page_token: token, customer_id: f.customer, ..Default::default() }, &admin))
                .await
                .unwrap()
                .into_inner();
            assert!(page.audit_records.len() <= 3);
            records.extend(page.audit_records);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let got: Vec<(&str, &str)> = records.iter().rev().map(|r| (r.method.as_str(), r.caller.as_str())).collect();
        assert_eq!(got, [
            ("CreateCustomer", "anonymous"),
            ("LogCommunication", "anonymous"),
            ("CreateServiceTicket", "anonymous"),
            ("UpdateCustomer", "billing"),
            ("CreateTransaction", "billing"),
            ("CreateServiceTicket", "billing"),
            ("UpdateServiceTicket", "billing"),
            ("LogCommunication", "billing"),
            ("ImportCommunications", "billing"),
            ("DeleteCommunication", "billing"),
            ("LogCommunication", "billing"),
            ("DeleteCustomer", "ops"),
        ]);
        assert!(records.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        let import = records.iter().find(|r| r.method == "ImportCommunications").unwrap();
        assert_eq!(import.detail, "3 rows for 1 customers");
        let deleted = records.iter().find(|r| r.method == "DeleteCommunication").unwrap();
        assert_eq!(deleted.resource_id, f.communication);
        // Ids and callers only: nothing the customer said or is called.
        for r in &records {
            for personal in ["张三", "想退款", "王五", "导入"] {
                assert!(!format!("{r:?}").contains(personal), "{r:?}");
            }
        }
        // Filters: by caller and method; a token for other filters is refused.
        let by_ops = audit
            .list_audit_records(authed(pb::ListAuditRecordsRequest { caller: "ops".into(), method: "DeleteCustomer".into(), ..Default::default() }, &admin))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_ops.audit_records.len(), 1);
        let first = audit
            .list_audit_records(authed(pb::ListAuditRecordsRequest { page_size: 1, ..Default::default() }, &admin))
            .await
            .unwrap()
            .into_inner();
        let err = audit
            .list_audit_records(authed(pb::ListAuditRecordsRequest { page_size: 1, page_token: first.next_page_token, caller: "ops".into(), ..Default::default() }, &admin))
            .await
            .unwrap_err();
        crate::harness::assert_invalid(&err, &["page_token"]);
        let err = audit
            .list_audit_records(authed(pb::ListAuditRecordsRequest::default(), &writer))
            .await
            .unwrap_err();
        assert_status(&err, Code::PermissionDenied, "ADMIN_ROLE_REQUIRED");
    }

    async fn a_caller_over_its_rate_is_told_when_to_retry_and_others_are_not_slowed(app: &TestApp) {
        let tokens = Tokens::new();
        let (channel, _stop) = secured(app, &tokens, |c| {
            c.rate_limit = 2;
            c.rate_limit_burst = 5;
        })
        .await;
        let customer = new_customer(app, "rate").await;
        let mut client = CustomerServiceClient::new(channel.clone());
        let reader = Who::Reader.header(&tokens);
        let mut codes = Vec::new();
        let mut limited = None;
        for _ in 0..8 {
            match client.get_customer(authed(pb::GetCustomerRequest { id: customer }, &reader)).await {
                Ok(_) => codes.push(Code::Ok),
                Err(e) => {
                    codes.push(e.code());
                    limited = Some(e);
                }
            }
        }
        assert_eq!(codes.iter().filter(|c| **c == Code::Ok).count(), 5, "{codes:?}");
        let err = limited.unwrap();
        assert_status(&err, Code::ResourceExhausted, "RATE_LIMITED");
        let retry = err.get_details_retry_info().expect("RetryInfo").retry_delay.unwrap();
        assert!(retry > Duration::ZERO && retry <= Duration::from_millis(500), "{retry:?}");
        // Another caller has its own bucket.
        client.get_customer(authed(pb::GetCustomerRequest { id: customer }, &Who::Writer.header(&tokens))).await.unwrap();
        // After the advised wait the reader may call again.
        tokio::time::sleep(retry + Duration::from_millis(50)).await;
        client.get_customer(authed(pb::GetCustomerRequest { id: customer }, &reader)).await.unwrap();
    }

    async fn past_the_in_flight_cap_calls_are_refused_at_once_and_health_still_answers(app: &TestApp) {
        // One connection may hold every slot here: the server-wide cap is what is tested.
        let (channel, _stop) = app
            .another_server(
                |c| {
                    c.max_in_flight = 2;
                    c.max_in_flight_per_connection = Some(2);
                },
                None,
            )
            .await;
        let customer = new_customer(app, "cap").await;
        // Two imports held open: each is a call in flight until its stream ends. One
        // refused while a probe held a slot is started again.
        let start_import = || {
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportCommunicationsRequest>(4);
            let mut client = CommunicationServiceClient::new(channel.clone());
            let call = tokio::spawn(async move {
                client.import_communications(tokio_stream::wrappers::ReceiverStream::new(rx)).await
            });
            (tx, call)
        };
        let mut open = Vec::new();
        let mut client = CustomerServiceClient::new(channel.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        let err = loop {
            open.retain(|(_, call): &(_, tokio::task::JoinHandle<_>)| !call.is_finished());
            while open.len() < 2 {
                let (tx, call) = start_import();
                tx.send(pb::ImportCommunicationsRequest { communication: Some(note(customer, "held", "2024-03-01T00:00:00Z")), request_id: String::new() }).await.unwrap();
                open.push((tx, call));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            match client.get_customer(pb::GetCustomerRequest { id: customer }).await {
                Err(e) => break e,
                Ok(_) => assert!(Instant::now() < deadline, "never refused"),
            }
        };
        assert_status(&err, Code::ResourceExhausted, "SERVER_OVERLOADED");
        let started = Instant::now();
        let err = client.get_customer(pb::GetCustomerRequest { id: customer }).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(started.elapsed() < Duration::from_secs(1), "refused at once, not queued");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
        // The imports end: their rows are stored and calls are taken again.
        for (tx, call) in open {
            drop(tx);
            assert_eq!(call.await.unwrap().unwrap().into_inner().accepted_count, 1);
        }
        client.get_customer(pb::GetCustomerRequest { id: customer }).await.unwrap();
    }

    async fn an_oversized_message_is_resource_exhausted_and_writes_nothing(app: &TestApp) {
        let (channel, _stop) = app.another_server(|c| c.max_request_bytes = 16 << 10, None).await;
        let customer = new_customer(app, "size").await;
        let before = footprint(app).await;
        let mut comms = CommunicationServiceClient::new(channel.clone());
        let err = comms
            .log_communication(crate::harness::log(note(customer, &"长".repeat(10_000), "2024-03-01T00:00:00Z"), ""))
            .await
            .unwrap_err();
        assert_status(&err, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
        assert!(err.message().contains("16384"), "{}", err.message());
        assert_eq!(footprint(app).await, before);
        // In an import, the items before the oversized one are stored, none after.
        let items: Vec<pb::ImportCommunicationsRequest> = ["a", &"长".repeat(10_000), "c"]
            .iter()
            .map(|content| pb::ImportCommunicationsRequest { communication: Some(note(customer, content, "2024-03-01T00:00:00Z")), request_id: String::new() })
            .collect();
        let err = comms.import_communications(tokio_stream::iter(items)).await.unwrap_err();
        assert_status(&err, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
        assert!(err.message().contains("item 1"), "{}", err.message());
        assert_eq!(app.count_where("communications", "customer_id", customer).await, 1);
        // The default limit (4 MiB) answers the same code, no longer OUT_OF_RANGE.
        let err = app
            .analytics()
            .get_content_report(pb::GetContentReportRequest { keywords: vec!["k".repeat(5 << 20)], ..Default::default() })
            .await
            .unwrap_err();
        assert_status(&err, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
    }

    async fn oversized_metadata_is_refused_and_the_server_keeps_serving(app: &TestApp) {
        let (channel, _stop) = app.another_server(|c| c.max_header_list_bytes = 4096, None).await;
        let customer = new_customer(app, "headers").await;
        let mut request = tonic::Request::new(pb::GetCustomerRequest { id: customer });
        request.metadata_mut().insert("x-padding", "p".repeat(8192).parse().unwrap());
        let err = CustomerServiceClient::new(channel.clone()).get_customer(request).await.unwrap_err();
        assert_ne!(err.code(), Code::Ok);
        // The same channel (reconnecting if the connection was closed): still served.
        let mut client = CustomerServiceClient::new(channel.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match client.get_customer(pb::GetCustomerRequest { id: customer }).await {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    async fn a_timeline_whose_client_reads_nothing_is_ended_and_frees_its_follow_slot(app: &TestApp) {
        let (channel, _stop) = app.another_server(|c| { c.stream_idle_secs = 1; c.max_follow_streams = 1; }, None).await;
        let customer = new_customer(app, "stall").await;
        // Far more than the channel, the HTTP/2 windows and the socket buffers hold.
        let content = "字".repeat(2700);
        for chunk in 0..4 {
            let items: Vec<_> = (0..300).map(|i| pb::ImportCommunicationsRequest {
                communication: Some(note(customer, &format!("{chunk}-{i} {content}"), "2024-03-01T00:00:00Z")),
                request_id: String::new(),
            }).collect();
            app.communications().import_communications(tokio_stream::iter(items)).await.unwrap();
        }
        let follow = pb::StreamTimelineRequest { customer_id: customer, follow: true, ..Default::default() };
        let mut client = CommunicationServiceClient::new(channel.clone()).max_decoding_message_size(1 << 20);
        let mut stalled = client.stream_timeline(follow.clone()).await.unwrap().into_inner();
        stalled.message().await.unwrap().unwrap();
        // Not reading: after the idle bound the stream gives its slot back.
        let mut other = CommunicationServiceClient::new(channel.clone());
        let started = Instant::now();
        let second = loop {
            match other.stream_timeline(follow.clone()).await {
                Ok(s) => break s.into_inner(),
                Err(e) => {
                    assert_status(&e, Code::ResourceExhausted, "TOO_MANY_FOLLOW_STREAMS");
                    assert!(started.elapsed() < Duration::from_secs(15), "the slot never came back");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        drop(second);
        // Reading again: what was buffered, then the reason.
        let mut n = 1;
        let end = loop {
            match stalled.message().await {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("ended without a status after {n} events"),
                Err(e) => break e,
            }
        };
        assert_status(&end, Code::ResourceExhausted, "STREAM_STALLED");
        assert!(n < 1200, "{n} events: the stream was not cut");
    }

    async fn an_import_that_sends_nothing_is_ended_keeping_what_it_sent(app: &TestApp) {
        let (channel, _stop) = app.another_server(|c| c.stream_idle_secs = 1, None).await;
        let customer = new_customer(app, "idle import").await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(pb::ImportCommunicationsRequest { communication: Some(note(customer, "one", "2024-03-01T00:00:00Z")), request_id: String::new() }).await.unwrap();
        let started = Instant::now();
        let err = CommunicationServiceClient::new(channel.clone())
            .import_communications(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap_err();
        drop(tx);
        assert_status(&err, Code::ResourceExhausted, "STREAM_STALLED");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(app.count_where("communications", "customer_id", customer).await, 1);
    }
}

/// Test certificates: a CA, a server certificate for localhost and 127.0.0.1, and a
/// client certificate (`CN=billing-client`) signed by the CA.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_cert: String,
    client_key: String,
}

fn make_pki(ca_name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "billing-client");
    let client = client_params.signed_by(&client_key, &issuer).unwrap();
    std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
        dir,
    }
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Serves on SQLite in `dir` with `tweak`; the address and the stop sender.
async fn serve_sqlite(
    dir: &Path,
    tweak: impl FnOnce(&mut Config),
) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("sqlite://{}", dir.join("crm.db").display());
    let mut config = Config::new(addr, url.clone());
    config.content_index = false;
    tweak(&mut config);
    let db = crm_comms::db::Db::connect(&url, &config.pool_options())
        .await
        .unwrap();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(crm_comms::server::serve(config, db, listener, rx));
    (addr, tx)
}

/// A TLS channel to `addr` trusting `ca_pem`, with a client identity if given.
async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn create(channel: &Channel, header: &Option<String>) -> Result<i64, Status> {
    Ok(CustomerServiceClient::new(channel.clone())
        .create_customer(authed(
            pb::CreateCustomerRequest {
                customer: Some(pb::Customer {
                    name: "tls".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            header,
        ))
        .await?
        .into_inner()
        .id)
}

/// Sends SIGHUP to this process (the servers under test reload their files).
pub(crate) async fn sighup() {
    // A handler of our own first, so the signal can never take the default action.
    let _keep = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(std::process::id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

standalone_tests! {
    async fn tls_and_mutual_tls_serve_only_clients_that_complete_the_handshake() {
        let pki = make_pki("crm test CA");
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::new();
        let (addr, _stop) = serve_sqlite(dir.path(), |c| {
            c.tls_cert = Some(pki.path("server.pem"));
            c.tls_key = Some(pki.path("server.key"));
            c.auth_tokens_file = Some(tokens.path.clone());
        }).await;
        let channel = tls_channel(addr, &pki.ca_pem, None).await.unwrap();
        create(&channel, &Who::Writer.header(&tokens)).await.unwrap();
        // Plaintext HTTP/2 to the TLS port: no answer.
        let plain = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await;
        if let Ok(plain) = plain {
            assert!(create(&plain, &Who::Writer.header(&tokens)).await.is_err());
        }
        // A client that does not trust the server's CA: the handshake fails.
        let other = make_pki("another CA");
        assert!(match tls_channel(addr, &other.ca_pem, None).await { Ok(ch) => create(&ch, &None).await.is_err(), Err(_) => true });
        // The server still serves.
        create(&channel, &Who::Writer.header(&tokens)).await.unwrap();

        // Mutual TLS: no client certificate, no connection; with one, its subject is audited.
        let dir2 = tempfile::tempdir().unwrap();
        let (addr2, _stop2) = serve_sqlite(dir2.path(), |c| {
            c.tls_cert = Some(pki.path("server.pem"));
            c.tls_key = Some(pki.path("server.key"));
            c.tls_client_ca = Some(pki.path("ca.pem"));
            c.auth_tokens_file = Some(tokens.path.clone());
        }).await;
        let refused = match tls_channel(addr2, &pki.ca_pem, None).await {
            Ok(ch) => create(&ch, &Who::Writer.header(&tokens)).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "a client without a certificate was served");
        let stranger = match tls_channel(addr2, &pki.ca_pem, Some((&other.client_cert, &other.client_key))).await {
            Ok(ch) => create(&ch, &Who::Writer.header(&tokens)).await.is_err(),
            Err(_) => true,
        };
        assert!(stranger, "a certificate of another CA was accepted");
        let mutual = tls_channel(addr2, &pki.ca_pem, Some((&pki.client_cert, &pki.client_key))).await.unwrap();
        let id = create(&mutual, &Who::Writer.header(&tokens)).await.unwrap();
        let audit = newest_audit(&mutual, &tokens).await;
        assert_eq!((audit.customer_id, audit.caller.as_str()), (id, "billing"));
        assert!(audit.client_certificate.contains("CN=billing-client"), "{audit:?}");
    }

    async fn sighup_reloads_tokens_and_certificates_without_dropping_connections() {
        let pki1 = make_pki("first CA");
        let files = tempfile::tempdir().unwrap();
        let (cert, key) = (files.path().join("server.pem"), files.path().join("server.key"));
        std::fs::copy(pki1.path("server.pem"), &cert).unwrap();
        std::fs::copy(pki1.path("server.key"), &key).unwrap();
        let tokens = Tokens::new();
        let reader_only = std::fs::read_to_string(&tokens.path).unwrap().lines().filter(|l| l.starts_with("reader") || l.starts_with('#')).collect::<Vec<_>>().join("\n");
        let full = std::fs::read_to_string(&tokens.path).unwrap();
        std::fs::write(&tokens.path, &reader_only).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (addr, _stop) = serve_sqlite(dir.path(), |c| {
            c.tls_cert = Some(cert.clone());
            c.tls_key = Some(key.clone());
            c.auth_tokens_file = Some(tokens.path.clone());
        }).await;
        let channel = tls_channel(addr, &pki1.ca_pem, None).await.unwrap();
        let writer = Who::Writer.header(&tokens);
        assert_eq!(create(&channel, &writer).await.unwrap_err().code(), Code::Unauthenticated);

        // New tokens file and a certificate from another CA, then SIGHUP.
        std::fs::write(&tokens.path, &full).unwrap();
        let pki2 = make_pki("second CA");
        std::fs::copy(pki2.path("server.pem"), &cert).unwrap();
        std::fs::copy(pki2.path("server.key"), &key).unwrap();
        sighup().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        // The same connection: the writer's token now works.
        loop {
            match create(&channel, &writer).await {
                Ok(_) => break,
                Err(e) if e.code() == Code::Unauthenticated && Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("{e:?}"),
            }
        }
        // New connections get the new certificate.
        let renewed = tls_channel(addr, &pki2.ca_pem, None).await.unwrap();
        create(&renewed, &writer).await.unwrap();
        // A broken file is refused; the tokens in use stay.
        std::fs::write(&tokens.path, "writer billing not-a-hash\n").unwrap();
        sighup().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        create(&channel, &writer).await.unwrap();
        // Removing a token locks it out on the same connection.
        std::fs::write(&tokens.path, &reader_only).unwrap();
        sighup().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match create(&channel, &writer).await {
                Err(e) if e.code() == Code::Unauthenticated => break,
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("{other:?}"),
            }
        }
    }

    async fn a_peer_that_stops_answering_pings_is_disconnected() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let (addr, _stop) = serve_sqlite(dir.path(), |c| {
            c.http2_keepalive_secs = 1;
            c.http2_keepalive_timeout_secs = 1;
        })
        .await;
        // An HTTP/2 client that says hello (preface, empty SETTINGS) and then goes
        // silent: it never acknowledges anything, as a peer behind a dead link.
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the silent peer was never disconnected");
        // A ping a second after the connection went quiet, a second to answer it.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8), "{elapsed:?}");

        // The same silent peer under the defaults (a ping after 30 s) is still connected
        // 4 s later: the keepalive, not something else, ended the first connection.
        let dir = tempfile::tempdir().unwrap();
        let (addr, _stop) = serve_sqlite(dir.path(), |_| {}).await;
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let open = tokio::time::timeout(Duration::from_secs(4), async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(open.is_err(), "closed under the default keepalive");
    }

    async fn a_server_open_to_the_network_needs_tokens_and_tls_or_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("crm.db").display());
        let tokens = Tokens::new();
        for (with_tokens, insecure, refused) in [(false, false, true), (true, false, true), (false, true, false)] {
            let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut config = Config::new(addr, url.clone());
            config.content_index = false;
            config.insecure = insecure;
            if with_tokens {
                config.auth_tokens_file = Some(tokens.path.clone());
            }
            let db = crm_comms::db::Db::connect(&url, &config.pool_options()).await.unwrap();
            let (tx, rx) = watch::channel(false);
            let server = tokio::spawn(crm_comms::server::serve(config, db, listener, rx));
            if refused {
                let err = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap_err();
                let text = format!("{err:#}");
                assert!(text.contains("refusing to serve on 0.0.0.0") && text.contains("--insecure"), "{text}");
            } else {
                // Served (with a warning): a loopback client reaches it.
                let channel = Channel::from_shared(format!("http://127.0.0.1:{}", addr.port())).unwrap().connect().await.unwrap();
                create(&channel, &None).await.unwrap();
                tx.send(true).unwrap();
                server.await.unwrap().unwrap();
            }
        }
    }
}

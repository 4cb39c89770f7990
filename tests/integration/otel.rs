//! Traces: the real binary exports OpenTelemetry spans over OTLP/gRPC to a collector
//! stand-in that records what it receives. A call continues its caller's W3C trace,
//! its database statements are its children, and with no endpoint nothing is sent.
//!
//! The binary is run (not an in-process server) because the exporter hangs off the
//! process's one `tracing` subscriber; its batch is flushed at the graceful shutdown
//! that SIGTERM starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crm_comms::model::caller::Role;
use crm_comms::pb;
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};

use crate::binary::Binary;
use crate::harness::{Backend, CommunicationServiceClient, CustomerServiceClient, TestApp};
use crate::{backend_tests, standalone_tests};

/// An OTLP trace collector on an ephemeral port that keeps every export it receives.
struct Collector {
    endpoint: String,
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Recorder(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(Recorder(Arc::clone(&received)));
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        Collector {
            endpoint,
            received,
            server,
        }
    }

    /// Every span received so far, with its resource's attributes.
    fn spans(&self) -> Vec<(HashMap<String, String>, Span)> {
        let mut out = Vec::new();
        for export in self.received.lock().unwrap().iter() {
            for resource_spans in &export.resource_spans {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        out.push((resource.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Attributes as text (`Int` values in decimal).
fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A trace id and span id of a caller, unique to this run.
fn caller_ids(salt: u64) -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let trace = nanos ^ (u128::from(std::process::id()) << 64) ^ u128::from(salt);
    (
        format!("{trace:032x}"),
        format!("{:016x}", (nanos as u64) | 1),
    )
}

fn with_traceparent<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("traceparent", traceparent.parse().unwrap());
    metadata.insert("tracestate", "caller=test".parse().unwrap());
    request
}

/// The server span of `method` in trace `trace_id` that ended with `code` (exactly one).
fn rpc_span<'a>(
    spans: &'a [(HashMap<String, String>, Span)],
    method: &str,
    trace_id: &str,
    code: tonic::Code,
) -> &'a (HashMap<String, String>, Span) {
    let code = (code as i32).to_string();
    let found: Vec<_> = spans
        .iter()
        .filter(|(_, s)| {
            s.name == format!("crm.v1.{method}")
                && hex(&s.trace_id) == trace_id
                && s.kind == SpanKind::Server as i32
                && attributes(&s.attributes).get("rpc.grpc.status_code") == Some(&code)
        })
        .collect();
    assert_eq!(found.len(), 1, "{method} {code} in {trace_id}: {spans:#?}");
    found[0]
}

/// The `db.statement` spans whose parent is `parent`.
fn statements<'a>(spans: &'a [(HashMap<String, String>, Span)], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

backend_tests! {
    async fn a_call_is_traced_under_its_callers_traceparent_with_its_statements(app: &TestApp) {
        let collector = Collector::start().await;
        let binary = Binary::start_with_env(&app.database_url, &["--otlp-endpoint", &collector.endpoint], &[]);
        let channel = binary.channel().await;
        let mut customers = CustomerServiceClient::new(channel.clone());
        let secret_name = "Ms Tracey Privatename";

        // No traceparent: a trace of its own.
        let created = customers
            .create_customer(pb::CreateCustomerRequest {
                customer: Some(pb::Customer { name: secret_name.into(), ..Default::default() }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();

        let (trace_id, parent_id) = caller_ids(1);
        let traceparent = format!("00-{trace_id}-{parent_id}-01");
        let got = customers
            .get_customer(with_traceparent(pb::GetCustomerRequest { id: created.id }, &traceparent))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.name, secret_name);
        let missing = customers
            .get_customer(with_traceparent(pb::GetCustomerRequest { id: created.id + 1000 }, &traceparent))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        // A stream: its span lasts to its end (the status comes in the trailers) and
        // the statements of the task that feeds it are its children.
        let mut stream = CommunicationServiceClient::new(channel.clone())
            .stream_timeline(with_traceparent(
                pb::StreamTimelineRequest { customer_id: created.id, ..Default::default() },
                &traceparent,
            ))
            .await
            .unwrap()
            .into_inner();
        while stream.message().await.unwrap().is_some() {}
        // A malformed traceparent is ignored: the call succeeds in a new trace.
        customers
            .get_customer(with_traceparent(pb::GetCustomerRequest { id: created.id }, "00-nonsense-01"))
            .await
            .unwrap();
        drop(channel);
        binary.stop().await;

        let spans = collector.spans();
        let system = match app.backend {
            Backend::Sqlite => "sqlite",
            Backend::Mysql => "mysql",
        };

        let (resource, get) =
            rpc_span(&spans, "CustomerService/GetCustomer", &trace_id, tonic::Code::Ok).clone();
        assert_eq!(resource.get("service.name").map(String::as_str), Some("crm-comms"), "{resource:?}");
        assert_eq!(resource.get("service.version").map(String::as_str), Some(env!("CARGO_PKG_VERSION")));
        assert!(resource.get("host.name").is_some_and(|h| !h.is_empty()), "{resource:?}");
        assert_eq!(hex(&get.parent_span_id), parent_id);
        assert_eq!(get.trace_state, "caller=test");
        let attrs = attributes(&get.attributes);
        assert_eq!(attrs.get("rpc.system").map(String::as_str), Some("grpc"), "{attrs:?}");
        assert_eq!(attrs.get("rpc.service").map(String::as_str), Some("crm.v1.CustomerService"));
        assert_eq!(attrs.get("rpc.method").map(String::as_str), Some("GetCustomer"));
        assert_eq!(attrs.get("rpc.grpc.status_code").map(String::as_str), Some("0"));

        let queries = statements(&spans, &get);
        assert!(!queries.is_empty(), "no statement under GetCustomer: {spans:#?}");
        for query in &queries {
            let attrs = attributes(&query.attributes);
            assert_eq!(attrs.get("db.system").map(String::as_str), Some(system), "{attrs:?}");
            assert!(query.kind == SpanKind::Client as i32, "{query:?}");
            assert!(query.start_time_unix_nano >= get.start_time_unix_nano, "{query:?} {get:?}");
            assert!(query.end_time_unix_nano <= get.end_time_unix_nano, "{query:?} {get:?}");
        }
        assert!(
            queries.iter().any(|q| {
                let sql = attributes(&q.attributes).get("db.statement").cloned().unwrap_or_default();
                sql.starts_with("SELECT") && sql.contains("customers")
            }),
            "{queries:#?}"
        );

        // The failed call carries its code, under the same parent.
        let (_, not_found) =
            rpc_span(&spans, "CustomerService/GetCustomer", &trace_id, tonic::Code::NotFound);
        assert_eq!(hex(&not_found.parent_span_id), parent_id);

        let (_, timeline) =
            rpc_span(&spans, "CommunicationService/StreamTimeline", &trace_id, tonic::Code::Ok);
        // The page reads run in the task that feeds the stream.
        let read_pages = statements(&spans, timeline).iter().any(|q| {
            attributes(&q.attributes)
                .get("db.statement")
                .is_some_and(|sql| sql.contains("FROM communications"))
        });
        assert!(read_pages, "no page read under the stream: {spans:#?}");

        // The calls without a (valid) traceparent started traces of their own.
        let own_traces: Vec<_> = spans
            .iter()
            .filter(|(_, s)| s.kind == SpanKind::Server as i32 && hex(&s.trace_id) != trace_id)
            .collect();
        assert_eq!(own_traces.len(), 2, "{own_traces:#?}");
        for (_, span) in own_traces {
            assert!(span.parent_span_id.is_empty(), "{span:?}");
            assert!(!statements(&spans, span).is_empty(), "{span:?}");
        }

        // Bind values (customer data) are not exported.
        for (_, span) in &spans {
            for kv in &span.attributes {
                let text = format!("{:?}", kv.value);
                assert!(!text.contains("Privatename"), "{span:?}");
            }
        }
    }
}

/// The statements each of GetCustomer, a one-year daily frequency report on customer
/// `c` and its one-year insights runs under its own span, on the binary at `url` with
/// `args`, in that order.
async fn statements_per_call(url: &str, args: &[&str], c: i64, index: bool) -> [usize; 3] {
    let collector = Collector::start().await;
    let mut all = vec!["--otlp-endpoint", &collector.endpoint];
    all.extend_from_slice(args);
    let binary = Binary::start_with_env(url, &all, &[]);
    let channel = binary.channel().await;
    if index {
        // Read from every row or built after a start from the snapshot.
        binary.line("activity index ready").await;
    }
    let (trace_id, parent_id) = caller_ids(7);
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    let mut customers = CustomerServiceClient::new(channel.clone());
    customers
        .get_customer(with_traceparent(
            pb::GetCustomerRequest { id: c },
            &traceparent,
        ))
        .await
        .unwrap();
    let year = |s: &str| crate::harness::ts(s);
    let mut analytics = pb::analytics_service_client::AnalyticsServiceClient::new(channel.clone());
    let report = analytics
        .get_frequency_report(with_traceparent(
            pb::GetFrequencyReportRequest {
                customer_ids: vec![c],
                start_time: Some(year("2024-01-01T00:00:00Z")),
                end_time: Some(year("2025-01-01T00:00:00Z")),
                granularity: pb::Granularity::Day as i32,
                time_zone: "Asia/Shanghai".into(),
                ..Default::default()
            },
            &traceparent,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.total_count, 5000);
    let insights = analytics
        .get_customer_insights(with_traceparent(
            pb::GetCustomerInsightsRequest {
                customer_id: c,
                start_time: Some(year("2024-01-01T00:00:00Z")),
                end_time: Some(year("2025-01-01T00:00:00Z")),
                ..Default::default()
            },
            &traceparent,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(insights.total_count, 5000);
    drop(channel);
    binary.stop().await;
    let spans = collector.spans();
    let count = |method: &str| {
        let (_, rpc) = rpc_span(&spans, method, &trace_id, tonic::Code::Ok);
        statements(&spans, rpc).len()
    };
    [
        count("CustomerService/GetCustomer"),
        count("AnalyticsService/GetFrequencyReport"),
        count("AnalyticsService/GetCustomerInsights"),
    ]
}

backend_tests! {
    async fn one_customer_reports_from_the_index_run_a_few_statements_whatever_the_customer_holds(app: &TestApp) {
        let c = crate::harness::new_customer(app, "statements").await;
        let comms = (0..5000)
            .map(|i| pb::Communication {
                customer_id: c,
                channel: 1 + i % 4,
                direction: 1 + i % 2,
                occur_time: Some(prost_types::Timestamp { seconds: 1_704_067_200 + i64::from(i) * 6_000, nanos: 0 }),
                content: format!("refund 退款 order {}", i % 50),
                ..Default::default()
            })
            .collect();
        crate::harness::import(app, comms).await;
        let read = statements_per_call(&app.database_url, &[], c, false).await;
        let indexed = statements_per_call(&app.database_url, &["--content-index", "true"], c, true).await;
        eprintln!("statements under GetCustomer, frequency, insights: database path {read:?}, index {indexed:?}");
        // GetCustomer: the customer and its tags, after the pool's check-out ping when the
        // connection had been idle (half a second: one the index's load just used is not
        // pinged again).
        for n in [read[0], indexed[0]] {
            assert!((2..=3).contains(&n), "{read:?} {indexed:?}");
        }
        // From the index, the frequency report checks the customer is not merged and
        // insights read the customer, its tags, its transactions (the newest rows, summed
        // in memory when they are all) and tickets on one connection, after the check-out
        // ping when it had been idle; the sentiment trend comes from the index with the
        // other communication figures, and the feed's catch-up is shared between calls
        // (its own task, outside the call's span). The database path reads the
        // customer's rows per figure, in pages.
        assert!(indexed[1] <= 2, "{indexed:?}");
        assert!((4..=5).contains(&indexed[2]), "{indexed:?}");
        assert!(read[1] >= 4, "{read:?}");
        assert!(read[2] >= indexed[2] + 5, "{read:?} {indexed:?}");
    }
}

standalone_tests! {
    async fn without_an_endpoint_nothing_is_exported_and_calls_work() {
        let app = TestApp::start(Backend::Sqlite).await.unwrap();
        let collector = Collector::start().await;
        let binary = Binary::start_with_env(&app.database_url, &[], &[]);
        let channel = binary.channel().await;
        let (trace_id, parent_id) = caller_ids(2);
        let mut customers = CustomerServiceClient::new(channel.clone());
        let id = crate::harness::customer_via(&channel, "Untraced").await;
        customers
            .get_customer(with_traceparent(pb::GetCustomerRequest { id }, &format!("00-{trace_id}-{parent_id}-01")))
            .await
            .unwrap();
        drop(channel);
        binary.stop().await;
        // Nothing names the collector, and it stays silent.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(collector.received.lock().unwrap().is_empty());
    }

    async fn the_standard_otel_variables_turn_traces_on_and_refused_calls_are_traced() {
        let app = TestApp::start(Backend::Sqlite).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        let (token, line) = crm_comms::security::tokens::new_token(Role::Writer, "tracer").unwrap();
        std::fs::write(&tokens, format!("{line}\n")).unwrap();
        let collector = Collector::start().await;
        let binary = Binary::start_with_env(
            &app.database_url,
            &["--auth-tokens-file", tokens.to_str().unwrap()],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint),
                ("OTEL_SERVICE_NAME", "crm-comms-eu"),
            ],
        );
        let channel = binary.channel().await;
        let mut customers = CustomerServiceClient::new(channel.clone());
        let customer = || pb::CreateCustomerRequest {
            customer: Some(pb::Customer { name: "Traced".into(), ..Default::default() }),
            request_id: String::new(),
        };
        // The guard refuses a call without a token; its span says so.
        let refused = customers.create_customer(customer()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let mut allowed = tonic::Request::new(customer());
        allowed
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        customers.create_customer(allowed).await.unwrap();
        drop(channel);
        binary.stop().await;

        let spans = collector.spans();
        let create = |code: tonic::Code| {
            let code = (code as i32).to_string();
            spans
                .iter()
                .find(|(_, s)| {
                    s.name == "crm.v1.CustomerService/CreateCustomer"
                        && attributes(&s.attributes).get("rpc.grpc.status_code") == Some(&code)
                })
                .unwrap_or_else(|| panic!("no CreateCustomer {code}: {spans:#?}"))
        };
        let (resource, created) = create(tonic::Code::Ok);
        assert_eq!(resource.get("service.name").map(String::as_str), Some("crm-comms-eu"));
        assert!(!statements(&spans, created).is_empty(), "{spans:#?}");
        let (_, refused) = create(tonic::Code::Unauthenticated);
        assert!(statements(&spans, refused).is_empty(), "{spans:#?}");
    }
}

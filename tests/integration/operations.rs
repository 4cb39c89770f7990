//! What operators rely on (issue 11): readiness that follows the database, log lines
//! with method, code, latency, peer, caller and request id (text and JSON), and a
//! shutdown that health watchers do not hold and a second signal cuts short.
//!
//! The log and signal tests run the real binary, as an operator would.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crm_comms::pb;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::binary::Binary;
use crate::harness::{note, Backend, CommunicationServiceClient, CustomerServiceClient, TestApp};
use crate::{backend_tests, standalone_tests};

/// `GET path` over HTTP/1.1 from `addr`: the status code and the body.
async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the metric line that starts with `series` (name and labels), if any.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// One gRPC-Web frame: flag byte, 4-byte length, payload.
fn web_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A TCP proxy the test can cut (every connection dropped, new ones refused) and restore.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (c, o) = (Arc::clone(&cut), Arc::clone(&open));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                o.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { addr, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.open.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

async fn statuses(channel: &Channel) -> Vec<i32> {
    let mut health = HealthClient::new(channel.clone());
    let mut out = Vec::new();
    for service in [
        "",
        "crm.v1.CustomerService",
        "crm.v1.CommunicationService",
        "crm.v1.AnalyticsService",
        "crm.v1.AuditService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or(-1);
        out.push(status);
    }
    out
}

async fn wait_for_statuses(channel: &Channel, status: ServingStatus, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now = statuses(channel).await;
        if now.iter().all(|s| *s == status as i32) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "health still {now:?} after {limit:?}, want {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

standalone_tests! {
    async fn readiness_follows_the_database_away_and_back() {
        // MariaDB behind a proxy the test cuts: health must say NOT_SERVING while the
        // database does not answer and SERVING again when it does.
        let Some(app) = TestApp::start(Backend::Mysql).await else {
            eprintln!("MariaDB unreachable: skipped");
            return;
        };
        let url = app.database_url.clone();
        let upstream_host = url.split('@').nth(1).and_then(|r| r.split('/').next()).unwrap().to_owned();
        let upstream: std::net::SocketAddr = tokio::net::lookup_host(&upstream_host).await.unwrap().next().unwrap();
        let proxy = Proxy::start(upstream).await;
        // mysql_async would switch a loopback connection to the server's Unix socket,
        // around the proxy.
        let proxied = format!("{}?prefer_socket=false", url.replacen(&upstream_host, &proxy.addr.to_string(), 1));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = crm_comms::config::Config::new(addr, proxied.clone());
        config.content_index = false;
        config.db_acquire_timeout_secs = 1;
        let db = crm_comms::db::Db::connect(&proxied, &config.pool_options()).await.unwrap();
        let (tx, rx) = watch::channel(false);
        let server = tokio::spawn(crm_comms::server::serve(config, db, listener, rx));
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        wait_for_statuses(&channel, ServingStatus::Serving, Duration::from_secs(5)).await;

        proxy.cut();
        let down = wait_for_statuses(&channel, ServingStatus::NotServing, Duration::from_secs(15)).await;
        // Calls fail meanwhile with UNAVAILABLE, not a false answer.
        let err = CustomerServiceClient::new(channel.clone())
            .get_customer(pb::GetCustomerRequest { id: 1 })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

        proxy.restore();
        let up = wait_for_statuses(&channel, ServingStatus::Serving, Duration::from_secs(15)).await;
        eprintln!("readiness: NOT_SERVING {down:?} after the cut, SERVING {up:?} after the restore");
        CustomerServiceClient::new(channel.clone())
            .create_customer(pb::CreateCustomerRequest { customer: Some(pb::Customer { name: "back".into(), ..Default::default() }), request_id: String::new() })
            .await
            .unwrap();
        tx.send(true).unwrap();
        server.await.unwrap().unwrap();
        drop(app);
    }

    async fn an_open_health_watch_does_not_hold_the_drain() {
        let Some(mut app) = TestApp::start_with(Backend::Sqlite, |c| c.shutdown_grace_secs = 20).await else {
            unreachable!("SQLite always starts");
        };
        let mut watch = HealthClient::new(app.new_channel().await)
            .watch(HealthCheckRequest { service: String::new() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
        let started = Instant::now();
        let stop = tokio::spawn(async move {
            app.stop().await;
        });
        // The watcher hears NOT_SERVING, then its stream ends.
        let mut seen = Vec::new();
        let end = loop {
            match watch.message().await {
                Ok(Some(m)) => seen.push(m.status),
                Ok(None) => break None,
                Err(e) => break Some(e.code()),
            }
        };
        assert_eq!(seen.last(), Some(&(ServingStatus::NotServing as i32)), "{seen:?}");
        assert_eq!(end, Some(tonic::Code::Unavailable));
        stop.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "drain held {:?} of the 20 s grace", started.elapsed());
    }

    async fn rpc_lines_name_method_code_latency_peer_caller_and_request_id_in_json() {
        let binary = Binary::start(&["--log-format", "json"]);
        let channel = binary.channel().await;
        let mut request = tonic::Request::new(pb::GetCustomerRequest { id: 42 });
        request.metadata_mut().insert("x-request-id", "trace-7f3a".parse().unwrap());
        let err = CustomerServiceClient::new(channel.clone()).get_customer(request).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(err.metadata().get("x-request-id").unwrap(), "trace-7f3a");
        // Without one, the server makes an id and echoes it.
        let ok = CustomerServiceClient::new(channel.clone())
            .create_customer(pb::CreateCustomerRequest { customer: Some(pb::Customer { name: "日志".into(), ..Default::default() }), request_id: String::new() })
            .await
            .unwrap();
        let made = ok.metadata().get("x-request-id").unwrap().to_str().unwrap().to_owned();
        assert_eq!(made.len(), 16, "{made}");

        let line = binary.line("trace-7f3a").await;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["message"], "rpc", "{line}");
        assert_eq!(v["method"], "/crm.v1.CustomerService/GetCustomer");
        assert_eq!(v["code"], "NotFound");
        assert_eq!(v["caller"], "anonymous");
        assert_eq!(v["grpc_message"], "customer 42 not found");
        assert!(v["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{line}");
        let ms = v["latency_ms"].as_f64().unwrap();
        assert!(ms >= 0.0 && (ms * 10.0 - (ms * 10.0).round()).abs() < 1e-9, "{ms}");
        let created: serde_json::Value = serde_json::from_str(&binary.line(&made).await).unwrap();
        assert_eq!((created["code"].as_str(), created["level"].as_str()), (Some("Ok"), Some("INFO")));
        // Every line is JSON, the start-up ones included.
        for line in binary.lines.lock().unwrap().iter() {
            serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    }

    async fn text_logs_to_a_pipe_have_no_colours_and_a_bad_filter_stops_the_start() {
        let binary = Binary::start(&[]);
        let channel = binary.channel().await;
        CustomerServiceClient::new(channel).list_customers(pb::ListCustomersRequest::default()).await.unwrap();
        let line = binary.line("ListCustomers").await;
        assert!(!line.contains('\u{1b}'), "{line:?}");
        assert!(line.contains("code=Ok") && line.contains("caller=anonymous") && line.contains("request_id="), "{line}");
        let start = binary.line("serving gRPC").await;
        assert!(start.contains("backend=\"sqlite\"") || start.contains("backend=sqlite"), "{start}");

        let out = Command::new(env!("CARGO_BIN_EXE_crm-comms")).args(["--log", "info,=bogus=="]).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--log"), "{stderr}");
    }

    async fn a_second_signal_ends_the_drain_at_once() {
        let binary = Binary::start(&["--shutdown-grace-secs", "60"]);
        let channel = binary.channel().await;
        // An import held open: a call in flight that the drain would wait for.
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportCommunicationsRequest>(1);
        let mut client = CommunicationServiceClient::new(channel.clone());
        let import = tokio::spawn(async move {
            client.import_communications(tokio_stream::wrappers::ReceiverStream::new(rx)).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        binary.signal("TERM");
        binary.line("shutdown signal received").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut binary = binary;
        assert!(binary.child.try_wait().unwrap().is_none(), "exited before the second signal");
        let started = Instant::now();
        binary.signal("TERM");
        let status = loop {
            if let Some(status) = binary.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "still draining after the second signal");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status.code(), Some(130));
        binary.line("second shutdown signal").await;
        drop(tx);
        let _ = import.await;
    }
}

standalone_tests! {
    async fn metrics_count_rpcs_by_method_and_code_with_latency_streams_imports_and_the_pool() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let binary = Binary::start(&["--metrics-listen", &metrics_addr]);
        let channel = binary.channel().await;
        let mut customers = CustomerServiceClient::new(channel.clone());
        let mut ids = Vec::new();
        for name in ["甲", "乙"] {
            let c = customers
                .create_customer(pb::CreateCustomerRequest { customer: Some(pb::Customer { name: name.into(), ..Default::default() }), request_id: String::new() })
                .await
                .unwrap()
                .into_inner();
            ids.push(c.id);
        }
        assert_eq!(customers.get_customer(pb::GetCustomerRequest { id: 999 }).await.unwrap_err().code(), tonic::Code::NotFound);
        let items = vec![
            pb::ImportCommunicationsRequest { communication: Some(note(ids[0], "一", "2024-03-01T00:00:00Z")), request_id: String::new() },
            pb::ImportCommunicationsRequest { communication: Some(note(ids[1], "二", "2024-03-01T00:00:00Z")), request_id: String::new() },
            pb::ImportCommunicationsRequest { communication: Some(note(987_654, "ghost", "2024-03-01T00:00:00Z")), request_id: String::new() },
        ];
        let mut comms = CommunicationServiceClient::new(channel.clone());
        comms.import_communications(tokio_stream::iter(items)).await.unwrap();
        let mut follow = comms
            .stream_timeline(pb::StreamTimelineRequest { customer_id: ids[0], follow: true, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        follow.message().await.unwrap().unwrap();

        // The pool is sampled every 2 s.
        let started = Instant::now();
        let text = loop {
            let (status, text) = http_get(&metrics_addr, "/metrics").await;
            assert_eq!(status, 200, "{text}");
            if metric(&text, "crm_db_pool_max_connections").is_some() || started.elapsed() > Duration::from_secs(10) {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let want = [
            (r#"crm_rpc_requests_total{method="/crm.v1.CustomerService/CreateCustomer",code="Ok"}"#, 2.0),
            (r#"crm_rpc_requests_total{method="/crm.v1.CustomerService/GetCustomer",code="NotFound"}"#, 1.0),
            (r#"crm_rpc_requests_total{method="/crm.v1.CommunicationService/ImportCommunications",code="Ok"}"#, 1.0),
            (r#"crm_rpc_duration_seconds_count{method="/crm.v1.CustomerService/CreateCustomer"}"#, 2.0),
            (r#"crm_import_rows_total{outcome="accepted"}"#, 2.0),
            (r#"crm_import_rows_total{outcome="rejected"}"#, 1.0),
            (r#"crm_open_streams{kind="follow"}"#, 1.0),
            (r#"crm_build_info{version="0.1.0",backend="sqlite"}"#, 1.0),
            ("crm_db_pool_max_connections", 8.0),
        ];
        for (series, value) in want {
            assert_eq!(metric(&text, series), Some(value), "{series} in\n{text}");
        }
        // The follow stream itself is in flight.
        assert_eq!(metric(&text, "crm_rpc_in_flight"), Some(1.0), "{text}");
        assert!(text.contains(r#"crm_rpc_duration_seconds_bucket{method="/crm.v1.CustomerService/GetCustomer",le="0.005"}"#), "{text}");
        assert!(metric(&text, r#"crm_db_pool_connections{state="idle"}"#).is_some(), "{text}");
        drop(follow);
    }

    async fn reflection_serves_the_error_detail_types_so_tools_can_decode_them() {
        let Some(app) = TestApp::start(Backend::Sqlite).await else { unreachable!() };
        use tonic_reflection::pb::v1;
        let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
        let requests = vec![
            v1::server_reflection_request::MessageRequest::FileContainingSymbol("google.rpc.BadRequest".into()),
            v1::server_reflection_request::MessageRequest::FileContainingSymbol("google.rpc.ErrorInfo".into()),
            v1::server_reflection_request::MessageRequest::FileByFilename("google/rpc/status.proto".into()),
        ];
        let n = requests.len();
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(requests.into_iter().map(|r| v1::ServerReflectionRequest { host: String::new(), message_request: Some(r) })))
            .await
            .unwrap()
            .into_inner();
        let mut files = Vec::new();
        for _ in 0..n {
            let answer = answers.message().await.unwrap().unwrap();
            let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(found)) = answer.message_response else {
                panic!("{answer:?}");
            };
            use prost::Message;
            let file = prost_types::FileDescriptorProto::decode(found.file_descriptor_proto[0].as_slice()).unwrap();
            files.push(file.name().to_owned());
        }
        assert_eq!(files, ["google/rpc/error_details.proto", "google/rpc/error_details.proto", "google/rpc/status.proto"]);
    }
}

backend_tests! {
    async fn gzip_and_zstd_requests_are_taken_and_responses_compressed_on_request(app: &TestApp) {
        use tonic::codec::CompressionEncoding::{Gzip, Zstd};
        for encoding in [Gzip, Zstd] {
            let mut client = CustomerServiceClient::new(app.channel.clone())
                .send_compressed(encoding)
                .accept_compressed(encoding);
            let address = "压缩".repeat(200);
            let created = client
                .create_customer(pb::CreateCustomerRequest { customer: Some(pb::Customer { name: "压缩".into(), address: address.clone(), ..Default::default() }), request_id: String::new() })
                .await
                .unwrap();
            let sent = created.metadata().get("grpc-encoding").map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(sent.as_deref(), Some(if encoding == Gzip { "gzip" } else { "zstd" }));
            assert_eq!(created.into_inner().address, address);
        }
        // A client that asks for nothing gets plain responses.
        let plain = app.customers().list_customers(pb::ListCustomersRequest::default()).await.unwrap();
        assert!(plain.metadata().get("grpc-encoding").is_none());
    }

    async fn a_request_id_unfit_for_a_log_line_is_replaced_and_a_fit_one_echoed(app: &TestApp) {
        let mut client = CustomerServiceClient::new(app.channel.clone());
        let long = "x".repeat(129);
        for (sent, kept) in [("trace-7f3a", true), ("has space", false), (long.as_str(), false), ("x".repeat(128).as_str(), true)] {
            let mut request = tonic::Request::new(pb::GetCustomerRequest { id: 1 << 40 });
            request.metadata_mut().insert("x-request-id", sent.parse().unwrap());
            let err = client.get_customer(request).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::NotFound);
            let echoed = err.metadata().get("x-request-id").unwrap().to_str().unwrap().to_owned();
            if kept {
                assert_eq!(echoed, sent);
            } else {
                assert!(echoed.len() == 16 && echoed.bytes().all(|b| b.is_ascii_hexdigit()), "{sent:?} -> {echoed:?}");
            }
        }
    }

    async fn grpc_web_over_http1_works_when_enabled_and_cors_only_for_listed_origins(app: &TestApp) {
        use http_body_util::BodyExt;
        use prost::Message;
        // A server with gRPC-Web on, on the same database, reached over HTTP/1.1.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = crm_comms::config::Config::new(addr, app.database_url.clone());
        config.content_index = false;
        config.grpc_web = true;
        config.grpc_web_allow_origin = vec!["https://admin.example".into()];
        let (tx, rx) = watch::channel(false);
        tokio::spawn(crm_comms::server::serve(config, app.db.clone(), listener, rx));
        let tcp = loop {
            if let Ok(tcp) = TcpStream::connect(addr).await { break tcp; }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Full<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let message = pb::CreateCustomerRequest { customer: Some(pb::Customer { name: "网页".into(), ..Default::default() }), request_id: String::new() }.encode_to_vec();
        let request = http::Request::post(format!("http://{addr}/crm.v1.CustomerService/CreateCustomer"))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .header("origin", "https://admin.example")
            .body(http_body_util::Full::new(bytes::Bytes::from(web_frame(0, &message))))
            .unwrap();
        let response = send.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers().get("access-control-allow-origin").unwrap(), "https://admin.example");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        // A data frame with the customer, then a trailer frame (flag 0x80) with grpc-status 0.
        assert_eq!(body[0], 0);
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let customer = pb::Customer::decode(&body[5..5 + len]).unwrap();
        assert_eq!(customer.name, "网页");
        let trailer = &body[5 + len..];
        assert_eq!(trailer[0], 0x80);
        assert!(String::from_utf8_lossy(&trailer[5..]).contains("grpc-status:0"), "{:?}", String::from_utf8_lossy(trailer));

        // Another origin gets no CORS grant (the browser refuses to read the answer).
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Full<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let preflight = http::Request::builder()
            .method("OPTIONS")
            .uri(format!("http://{addr}/crm.v1.CustomerService/CreateCustomer"))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = send.send_request(preflight).await.unwrap();
        assert!(response.headers().get("access-control-allow-origin").is_none(), "{:?}", response.headers());
        tx.send(true).unwrap();

        // Off by default: HTTP/1.1 is not spoken at all.
        let tcp = TcpStream::connect(app.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Full<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let request = http::Request::post(format!("http://{}/crm.v1.CustomerService/CreateCustomer", app.addr))
            .header("content-type", "application/grpc-web+proto")
            .body(http_body_util::Full::new(bytes::Bytes::from(web_frame(0, &message))))
            .unwrap();
        assert!(send.send_request(request).await.is_err(), "HTTP/1.1 answered without --grpc-web");
    }
}

/// `GET /metrics` from `addr` once the listener answers (up to 30 s).
async fn scrape_when_up(addr: &str) -> String {
    let started = Instant::now();
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            let (status, text) = http_get(addr, "/metrics").await;
            assert_eq!(status, 200, "{text}");
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no metrics listener on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

backend_tests! {
    async fn every_metric_series_is_present_at_zero_right_after_start(app: &TestApp) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let _binary = Binary::start_on(&app.database_url, &["--metrics-listen", &metrics_addr]);
        // No call made, no stream opened, no import, no database error yet.
        let text = scrape_when_up(&metrics_addr).await;
        for series in crm_comms::metrics::SERIES {
            let name = series.name;
            assert!(text.contains(&format!("# TYPE {name} ")), "no TYPE for {name} in\n{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name} in\n{text}");
            let sample = match series.kind {
                crm_comms::metrics::Kind::Histogram => format!("{name}_count"),
                _ => name.to_owned(),
            };
            assert!(
                text.lines().any(|l| l.starts_with(&sample) && matches!(l.as_bytes().get(sample.len()), Some(b' ' | b'{'))),
                "no sample of {name} in\n{text}"
            );
        }
        for (series, value) in [
            (r#"crm_open_streams{kind="follow"}"#, 0.0),
            (r#"crm_open_streams{kind="history"}"#, 0.0),
            (r#"crm_import_rows_total{outcome="rejected"}"#, 0.0),
            (r#"crm_db_errors_total{kind="unavailable"}"#, 0.0),
            (r#"crm_db_errors_total{kind="conflict"}"#, 0.0),
            (r#"crm_rpc_requests_total{method="/crm.v1.CustomerService/GetCustomer",code="Unavailable"}"#, 0.0),
            (r#"crm_rpc_requests_total{method="other",code="Ok"}"#, 0.0),
            (r#"crm_rpc_duration_seconds_count{method="/crm.v1.CommunicationService/ImportCommunications"}"#, 0.0),
            ("crm_db_pool_timeouts_total", 0.0),
            ("crm_rpc_in_flight", 0.0),
        ] {
            assert_eq!(metric(&text, series), Some(value), "{series} in\n{text}");
        }
    }

    async fn a_client_that_drops_its_request_body_is_logged_cancelled_not_error(app: &TestApp) {
        use bytes::Bytes;
        let binary = Binary::start_on(&app.database_url, &["--log-format", "json"]);
        let _ = binary.channel().await;
        let addr: std::net::SocketAddr = binary.addr.parse().unwrap();
        let message = {
            use prost::Message;
            let bytes = pb::GetCustomerRequest { id: 1 }.encode_to_vec();
            let mut frame = vec![0];
            frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            frame.extend_from_slice(&bytes);
            frame
        };
        // 4 calls reset by the client mid-body, 4 whose connection is closed mid-body.
        let mut held = Vec::new();
        for reset in [true, false] {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (client, connection) = h2::client::handshake(tcp).await.unwrap();
            let connection = tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut client = client.ready().await.unwrap();
            let mut streams = Vec::new();
            for _ in 0..4 {
                let request = http::Request::builder()
                    .method("POST")
                    .uri(format!("http://{addr}/crm.v1.CustomerService/GetCustomer"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())
                    .unwrap();
                let (response, mut stream) = client.send_request(request, false).unwrap();
                stream.send_data(Bytes::from(message[..4].to_vec()), false).unwrap();
                streams.push((response, stream));
                client = client.ready().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if reset {
                for (_, stream) in &mut streams {
                    stream.send_reset(h2::Reason::CANCEL);
                }
                held.push((client, streams));
            } else {
                connection.abort();
            }
        }
        // Eight `rpc` lines for GetCustomer, every one CANCELLED; no ERROR line at all.
        let started = Instant::now();
        let rpc_lines = loop {
            let lines = binary.lines.lock().unwrap().clone();
            let rpc: Vec<String> = lines
                .iter()
                .filter(|l| l.contains(r#""message":"rpc""#) && l.contains("GetCustomer"))
                .cloned()
                .collect();
            if rpc.len() >= 8 {
                break rpc;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{} rpc lines: {lines:#?}", rpc.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for line in &rpc_lines {
            assert!(line.contains(r#""code":"Cancelled""#), "{line}");
            assert!(line.contains(r#""level":"INFO""#), "{line}");
        }
        let lines = binary.lines.lock().unwrap().clone();
        assert!(!lines.iter().any(|l| l.contains(r#""level":"ERROR""#)), "{lines:#?}");
        drop(held);
    }
}

//! What operators rely on (issue 11): readiness that follows the database, log lines
//! with method, code, latency, peer, caller and request id (text and JSON), and a
//! shutdown that health watchers do not hold and a second signal cuts short.
//!
//! The log and signal tests run the real binary, as an operator would.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crm_comms::pb;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::harness::{Backend, CommunicationServiceClient, CustomerServiceClient, TestApp};
use crate::standalone_tests;

/// The `crm-comms` binary under test, with its stderr lines collected.
struct Binary {
    child: Child,
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Binary {
    fn start(args: &[&str]) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("sqlite://{}", dir.path().join("crm.db").display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_crm-comms"))
            .args([
                "--listen",
                &addr,
                "--database-url",
                &url,
                "--content-index",
                "false",
            ])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Binary {
            child,
            addr,
            lines,
            _dir: dir,
        }
    }

    async fn channel(&self) -> Channel {
        let started = Instant::now();
        loop {
            match Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect()
                .await
            {
                Ok(channel) => return channel,
                Err(e) if started.elapsed() > Duration::from_secs(30) => panic!("{e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The first line containing `needle`, waiting up to 10 s.
    async fn line(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no log line with {needle:?}: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

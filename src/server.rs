//! Server assembly: services, reflection (v1 and v1alpha), health, per-RPC logging,
//! HTTP/2 limits, and graceful shutdown with a bounded drain.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::{Duration, Instant},
};

use anyhow::Context;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::{net::TcpListener, sync::watch};
use tonic::{
    codec::CompressionEncoding,
    server::NamedService,
    transport::{server::TcpIncoming, Server},
    Code,
};
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::db::Db;
use crate::grpc::{
    analytics::AnalyticsApi, audit::AuditApi, communication::CommunicationApi,
    customer::CustomerApi, AppState,
};
use crate::pb::{
    analytics_service_server::AnalyticsServiceServer, audit_service_server::AuditServiceServer,
    communication_service_server::CommunicationServiceServer,
    customer_service_server::CustomerServiceServer,
};
use crate::security::{
    guard::{CallerName, GuardLayer},
    Security,
};
use crate::service::content_index::ContentIndexHandle;
use crate::service::log_writer::LogWriter;
use crate::service::reports::ReportSource;
use crate::service::timeline::{FollowHub, Timeline};

/// HTTP/2 connection-level flow-control window, in bytes.
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// HTTP/2 stream-level flow-control window, in bytes.
const STREAM_WINDOW_BYTES: u32 = 256 << 10;

/// Connects to the database, binds the listener and serves until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Refuse an unprotected network listener before touching the database.
    if let crate::security::Exposure::Refused(message) = crate::security::exposure(
        config.listen,
        config.auth_tokens_file.is_some(),
        config.tls_cert.is_some(),
        config.insecure,
    ) {
        anyhow::bail!(message);
    }
    let db = Db::connect(&config.database_url, &config.pool_options())
        .await
        .with_context(|| {
            format!(
                "cannot use database {}",
                crate::db::redact(&config.database_url)
            )
        })?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining (a second signal exits at once)");
        let _ = tx.send(true);
        wait_for_signal().await;
        tracing::warn!("second shutdown signal: exiting now, without waiting for calls in flight");
        std::process::exit(130);
    });
    serve(config, db, listener, rx).await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Serves on `listener` until `shutdown` becomes `true`, then reports NOT_SERVING,
/// stops accepting, and gives in-flight calls `shutdown_grace_secs` to finish.
pub async fn serve(
    config: Config,
    db: Db,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let content_index = config
        .content_index
        .then(|| ContentIndexHandle::start(db.clone(), shutdown.clone()));
    serve_with_index(config, db, listener, shutdown, content_index).await
}

/// [`serve`] with a content index made by the caller (`None`: content reports scan),
/// e.g. one already loaded.
pub async fn serve_with_index(
    config: Config,
    db: Db,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
    content_index: Option<ContentIndexHandle>,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let security = Security::from_config(&config, local)?;
    if let Some(addr) = config.metrics_listen {
        crate::metrics::install(addr, db.backend().name())?;
        let max = config.pool_options().max_connections;
        crate::metrics::pool_max(match db.backend() {
            crate::db::Backend::Sqlite => max.min(crate::db::SQLITE_MAX_CONNECTIONS),
            crate::db::Backend::Mysql => max,
        });
        tokio::spawn(sample_pool(db.clone(), shutdown.clone()));
    }
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(security.clone(), shutdown.clone()));
    let follow = FollowHub::start(db.clone(), shutdown.clone());
    tokio::spawn(crate::service::maintenance::run_compactor(
        db.clone(),
        shutdown.clone(),
    ));
    let log_db = db.clone();
    let db_for_health = db.clone();
    let state = AppState {
        timeline: Timeline {
            db: db.clone(),
            follow,
            follow_permits: Arc::new(tokio::sync::Semaphore::new(config.max_follow_streams)),
            shutdown: shutdown.clone(),
            stream_idle: config.stream_idle(),
        },
        stream_idle: config.stream_idle(),
        db,
        report_source: if config.report_rollups {
            ReportSource::Rollups
        } else {
            ReportSource::BaseTable
        },
        content_index,
        log_writer: LogWriter::start(log_db, usize::from(config.log_writers)),
    };
    // The guard refuses larger messages first, from their frame header, with
    // RESOURCE_EXHAUSTED; tonic's own check (OUT_OF_RANGE) is the backstop.
    let max_message = config.max_request_bytes as usize;
    // Every service takes gzip- and zstd-compressed requests, and compresses responses
    // for a client that asks (`grpc-accept-encoding`).
    macro_rules! api {
        ($server:expr) => {
            $server
                .max_decoding_message_size(max_message)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd)
        };
    }
    let customer = api!(CustomerServiceServer::new(CustomerApi::new(state.clone())));
    let communication = api!(CommunicationServiceServer::new(CommunicationApi::new(
        state.clone()
    )));
    let audit = api!(AuditServiceServer::new(AuditApi::new(state.clone())));
    let analytics = api!(AnalyticsServiceServer::new(AnalyticsApi::new(state)));

    let (health, health_service) = tonic_health::server::health_reporter();
    let names = [
        "",
        <CustomerServiceServer<CustomerApi> as NamedService>::NAME,
        <CommunicationServiceServer<CommunicationApi> as NamedService>::NAME,
        <AnalyticsServiceServer<AnalyticsApi> as NamedService>::NAME,
        <AuditServiceServer<AuditApi> as NamedService>::NAME,
    ];
    for name in names {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_file_descriptor_set(error_detail_types())
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_file_descriptor_set(error_detail_types())
        .build_v1alpha()?;

    tokio::spawn(watch_database(
        db_for_health,
        health.clone(),
        names,
        shutdown.clone(),
    ));
    let mut stop = shutdown.clone();
    let health_on_stop = health.clone();
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
        for name in names {
            health_on_stop
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    };

    tracing::info!(
        listen = %local,
        backend = config.database_url.split(':').next().unwrap_or_default(),
        tls = security.tls.as_ref().map_or("off", |t| if t.mutual() { "mutual" } else { "on" }),
        auth = if security.guard.tokens.is_some() { "tokens" } else { "off (loopback)" },
        "serving gRPC"
    );
    let router = Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        // h2 ends a connection (GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames") once
        // the small DATA frames it holds unread cost more than half the connection
        // window (256 bytes minus payload each). grpc-core sends one frame per message,
        // so a client streaming small items faster than a handler reads them would trip
        // it with hyper's 1 MiB windows. A 16 MiB connection window (8 MiB budget) and
        // 256 KiB per stream keep one stream's unread frames of 9 bytes or more within
        // the budget, however far its reader falls behind.
        // A client that cancels many calls at once resets streams the server has not
        // accepted yet; h2 closes the whole connection (GOAWAY "too_many_resets") past
        // 20 such resets by default, failing the client's other calls with it. As many
        // as the client may have open is fair; a rapid-reset flood beyond it still ends.
        .http2_max_pending_accept_reset_streams(Some(config.max_concurrent_streams as usize))
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .http2_keepalive_interval(Some(Duration::from_secs(config.http2_keepalive_secs)))
        .http2_keepalive_timeout(Some(Duration::from_secs(
            config.http2_keepalive_timeout_secs,
        )))
        .http2_max_header_list_size(Some(config.max_header_list_bytes))
        // gRPC-Web over HTTP/1.1 only when asked for.
        .accept_http1(config.grpc_web)
        .layer(tower::util::option_layer(cors(&config)?))
        .layer(tower::util::option_layer(
            config.grpc_web.then(tonic_web::GrpcWebLayer::new),
        ))
        .layer(RpcLogLayer::default())
        .layer(WatchDrainLayer {
            shutdown: shutdown.clone(),
        })
        .layer(GuardLayer::new(std::sync::Arc::clone(&security.guard)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(customer)
        .add_service(communication)
        .add_service(analytics)
        .add_service(audit);
    let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match &security.tls {
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                crate::security::tls::incoming(listener, Arc::clone(tls)),
                stopping,
            )),
            None => Box::pin(router.serve_with_incoming_shutdown(incoming(listener), stopping)),
        };
    tokio::pin!(server);

    let mut drain = shutdown;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    tokio::select! {
        result = &mut server => result.context("server failed")?,
        () = async move {
            let _ = drain.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "drain timed out; closing remaining connections");
        }
    }
    tracing::info!("server stopped");
    Ok(())
}

/// The CORS layer for gRPC-Web from the origins in `--grpc-web-allow-origin`; `None`
/// (browsers' cross-origin calls refused) when none is given or gRPC-Web is off.
fn cors(config: &Config) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if !config.grpc_web || config.grpc_web_allow_origin.is_empty() {
        return Ok(None);
    }
    let origins = &config.grpc_web_allow_origin;
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| {
                http::HeaderValue::from_str(o)
                    .with_context(|| format!("--grpc-web-allow-origin {o:?} is not a header value"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    let headers = [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "authorization",
        "x-request-id",
    ]
    .map(http::HeaderName::from_static);
    let exposed = [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-request-id",
    ]
    .map(http::HeaderName::from_static);
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([http::Method::POST, http::Method::OPTIONS])
            .allow_headers(headers)
            .expose_headers(exposed)
            .max_age(Duration::from_secs(86_400)),
    ))
}

/// The descriptors of `google.rpc.Status` and the error detail messages (ErrorInfo,
/// BadRequest, RetryInfo, ...) that every error carries, under their canonical file
/// names (`google/rpc/status.proto`, `google/rpc/error_details.proto`; tonic-types ships
/// them without the directory), so `grpcurl` and other reflection clients decode details.
fn error_detail_types() -> prost_types::FileDescriptorSet {
    use prost::Message;
    let mut set = prost_types::FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .unwrap_or_default();
    for file in &mut set.file {
        if let Some(name @ ("status.proto" | "error_details.proto")) = file.name.as_deref() {
            file.name = Some(format!("google/rpc/{name}"));
        }
    }
    set
}

/// Records the pool's state for metrics every 2 s until shutdown.
async fn sample_pool(db: Db, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => crate::metrics::pool(&db.pool_stats()),
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// How often readiness asks the database whether it answers.
const READINESS_INTERVAL: Duration = Duration::from_secs(2);
/// How long the database gets to answer readiness's query.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness that tells the truth: every [`READINESS_INTERVAL`] the database is asked a
/// trivial query; while it does not answer, health reports NOT_SERVING (overall and for
/// every service), and SERVING again once it does, with a log line at each change.
/// Stops at shutdown (which reports NOT_SERVING itself).
async fn watch_database(
    db: Db,
    health: tonic_health::server::HealthReporter,
    names: [&'static str; 5],
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ready = true;
    let mut tick = tokio::time::interval(READINESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let answer = match tokio::time::timeout(READINESS_TIMEOUT, db.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {} s",
                READINESS_TIMEOUT.as_secs()
            )),
        };
        if *shutdown.borrow() {
            return;
        }
        let status = match (&answer, ready) {
            (Ok(()), false) => {
                tracing::warn!("the database answers again; health is SERVING");
                ServingStatus::Serving
            }
            (Err(e), true) => {
                tracing::error!(error = %e, "the database does not answer; health is NOT_SERVING until it does");
                ServingStatus::NotServing
            }
            _ => continue,
        };
        ready = answer.is_ok();
        for name in names {
            health.set_service_status(name, status).await;
        }
    }
}

/// Tower layer that ends open `Health/Watch` streams shortly after shutdown starts (once
/// they have sent NOT_SERVING), so watchers do not hold the drain for the whole grace
/// period. Other responses pass untouched.
#[derive(Clone)]
struct WatchDrainLayer {
    shutdown: watch::Receiver<bool>,
}

impl<S> tower::Layer<S> for WatchDrainLayer {
    type Service = WatchDrain<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WatchDrain {
            inner,
            shutdown: self.shutdown.clone(),
        }
    }
}

#[derive(Clone)]
struct WatchDrain<S> {
    inner: S,
    shutdown: watch::Receiver<bool>,
}

/// How long a health watcher gets after shutdown starts to receive NOT_SERVING.
const WATCH_DRAIN: Duration = Duration::from_millis(200);

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for WatchDrain<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = tonic::codegen::Bytes> + Unpin + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>> =
            (request.uri().path() == "/grpc.health.v1.Health/Watch").then(|| {
                let mut shutdown = self.shutdown.clone();
                let stop: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                    tokio::time::sleep(WATCH_DRAIN).await;
                });
                stop
            });
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|inner| {
                tonic::body::Body::new(EndsOnShutdown {
                    inner,
                    stop,
                    ended: false,
                })
            }))
        })
    }
}

/// A response body that, once `stop` completes, ends with UNAVAILABLE trailers.
struct EndsOnShutdown<B> {
    inner: B,
    stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    ended: bool,
}

impl<B> Body for EndsOnShutdown<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.stop.as_mut().map(|stop| stop.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => {
                this.ended = true;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
                trailers.insert(
                    "grpc-message",
                    http::HeaderValue::from_static("server%20is%20shutting%20down"),
                );
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reloads the tokens file and TLS certificates on each SIGHUP until shutdown.
#[cfg(unix)]
async fn reload_on_sighup(security: Security, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; tokens and certificates load at start only");
        return;
    };
    loop {
        tokio::select! {
            got = hangups.recv() => {
                if got.is_none() {
                    return;
                }
                tracing::info!("SIGHUP: reloading the tokens file and TLS certificates");
                security.reload();
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// The accepted connections of `listener`, each with TCP_NODELAY set: the builder's
/// `tcp_nodelay` does not reach `serve_with_incoming*`, and without it every response
/// written in more than one piece waits for Nagle's algorithm (~40 ms a page).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// What the log line of one RPC says.
#[derive(Debug, Clone, PartialEq)]
struct RpcRecord {
    /// The request path, `/package.Service/Method`.
    method: String,
    /// The final gRPC status code.
    code: Code,
    /// The decoded `grpc-message` (empty when OK).
    message: String,
    /// From the request to the end of the response body, to 0.1 ms.
    latency_ms: f64,
    /// The client's address, or `-`.
    peer: String,
    /// Who called (the token's name, `anonymous`), or `-` (unknown, health, reflection).
    caller: String,
    /// The request's `x-request-id`, as sent or made here; echoed in the response.
    request_id: String,
}

/// The header that carries a request's id (taken from the client when it is sane,
/// otherwise made here), echoed in the response headers.
const REQUEST_ID: &str = "x-request-id";

/// The id of a request: the client's `x-request-id` when it is 1-128 visible ASCII
/// characters, otherwise 16 random hex digits.
fn request_id(headers: &HeaderMap) -> String {
    if let Some(id) = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
    {
        return id.to_owned();
    }
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: a clock-based id is still unique enough to follow a call.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    crate::security::tokens::hex(&bytes)
}

/// Where the log lines go: `tracing` in the server, a recorder in tests.
type LogSink = Arc<dyn Fn(&RpcRecord) + Send + Sync>;

/// Writes the log line of one RPC through `tracing`.
fn log_rpc(record: &RpcRecord) {
    let RpcRecord {
        method,
        code,
        message,
        latency_ms,
        peer,
        caller,
        request_id,
    } = record;
    macro_rules! line {
        ($level:ident) => {
            if *code == Code::Ok {
                tracing::$level!(%method, code = ?code, latency_ms, %peer, %caller, %request_id, "rpc")
            } else {
                tracing::$level!(%method, code = ?code, latency_ms, %peer, %caller, %request_id, grpc_message = %message, "rpc")
            }
        };
    }
    match code {
        // The server's fault: someone should look.
        Code::Internal | Code::Unknown | Code::DataLoss => line!(error),
        // The database or the server is away: worth a look when it repeats.
        Code::Unavailable => line!(warn),
        _ => line!(info),
    }
}

/// Tower layer that logs one line per RPC when it ends: method, gRPC code (from the
/// trailers, or the headers of a trailers-only response), message, latency.
#[derive(Clone)]
struct RpcLogLayer {
    sink: LogSink,
}

impl Default for RpcLogLayer {
    fn default() -> Self {
        RpcLogLayer {
            sink: Arc::new(log_rpc),
        }
    }
}

impl<S> tower::Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLog {
            inner,
            sink: Arc::clone(&self.sink),
        }
    }
}

#[derive(Clone)]
struct RpcLog<S> {
    inner: S,
    sink: LogSink,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcLog<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
    ResBody: Body<Data = tonic::codegen::Bytes> + Unpin + Send + 'static,
    ResBody::Error: std::fmt::Display + Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let request_id = request_id(request.headers());
        let (peer, _) = crate::security::guard::connection_facts(request.extensions());
        crate::metrics::rpc_started();
        let mut call = PendingLog {
            method: request.uri().path().to_owned(),
            start: Instant::now(),
            sink: Arc::clone(&self.sink),
            peer: peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            caller: "-".to_owned(),
            request_id: request_id.clone(),
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            match future.await {
                Ok(response) => {
                    let (mut parts, body) = response.into_parts();
                    if let Some(name) = parts.extensions.get::<CallerName>() {
                        call.caller = name.0.clone();
                    }
                    if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                        parts.headers.insert(REQUEST_ID, value);
                    }
                    // Errors before the first message are sent trailers-only, with
                    // grpc-status in the headers; otherwise it comes in the trailers.
                    let pending = match status_of(&parts.headers) {
                        Some((code, message)) => {
                            call.finish(code, message);
                            None
                        }
                        None => Some(call),
                    };
                    Ok(http::Response::from_parts(
                        parts,
                        tonic::body::Body::new(LoggedBody {
                            inner: body,
                            pending,
                        }),
                    ))
                }
                Err(err) => {
                    crate::metrics::rpc_finished(&call.method, Code::Unknown, call.start.elapsed());
                    let latency_ms = rounded_ms(call.start.elapsed());
                    let method = std::mem::take(&mut call.method);
                    tracing::warn!(%method, latency_ms, peer = %call.peer, request_id = %call.request_id, error = %err, "rpc transport error");
                    Err(err)
                }
            }
        })
    }
}

/// The log line of an RPC whose status is not known yet.
struct PendingLog {
    method: String,
    start: Instant,
    sink: LogSink,
    peer: String,
    caller: String,
    request_id: String,
}

impl PendingLog {
    fn finish(self, code: Code, message: String) {
        crate::metrics::rpc_finished(&self.method, code, self.start.elapsed());
        (self.sink)(&RpcRecord {
            method: self.method,
            code,
            message,
            latency_ms: rounded_ms(self.start.elapsed()),
            peer: self.peer,
            caller: self.caller,
            request_id: self.request_id,
        });
    }
}

/// `elapsed` in milliseconds, to 0.1 ms (a log line needs no more, and prints no
/// floating-point noise).
fn rounded_ms(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The gRPC status in `headers` (trailers, or the headers of a trailers-only response).
fn status_of(headers: &HeaderMap) -> Option<(Code, String)> {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .map(Code::from)?;
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, message))
}

/// A response body that writes the RPC's log line when it ends: at the trailers, at
/// a body error, or when it is dropped early (the client went away).
struct LoggedBody<B> {
    inner: B,
    pending: Option<PendingLog>,
}

impl<B> LoggedBody<B> {
    fn finish(&mut self, code: Code, message: String) {
        if let Some(call) = self.pending.take() {
            call.finish(code, message);
        }
    }
}

impl<B> Body for LoggedBody<B>
where
    B: Body + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let (code, message) = status_of(trailers).unwrap_or_else(|| {
                        (Code::Unknown, "trailers without grpc-status".to_owned())
                    });
                    this.finish(code, message);
                }
            }
            Poll::Ready(Some(Err(e))) => this.finish(Code::Unknown, e.to_string()),
            Poll::Ready(None) => this.finish(
                Code::Unknown,
                "response ended without grpc-status".to_owned(),
            ),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        self.finish(
            Code::Cancelled,
            "the client went away before the response ended".to_owned(),
        );
    }
}

/// Decodes the percent-encoding gRPC applies to `grpc-message`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use tokio_stream::StreamExt;
    use tonic::codegen::Bytes;
    use tower::{Layer, Service};

    use super::*;

    #[test]
    fn grpc_messages_are_percent_decoded_for_logs() {
        assert_eq!(super::percent_decode("a%20b%E5%AD%97%"), "a b字%");
    }

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let stream = accepted
            .next()
            .await
            .expect("a connection")
            .expect("accept");
        assert!(stream.nodelay().expect("nodelay"), "TCP_NODELAY not set");
    }

    /// A response body made of the given frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }
    }

    fn grpc_headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, http::HeaderValue::from_static(value));
        }
        headers
    }

    /// Calls a fake service answering `headers` then `frames` through the log layer,
    /// returning the response and what was logged.
    async fn call_logged(
        headers: HeaderMap,
        frames: Vec<Frame<Bytes>>,
    ) -> (
        http::Response<tonic::body::Body>,
        Arc<Mutex<Vec<RpcRecord>>>,
    ) {
        let logged = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logged);
        let layer = RpcLogLayer {
            sink: Arc::new(move |r: &RpcRecord| sink.lock().expect("lock").push(r.clone())),
        };
        // Called once: the frames move into the one response.
        let frames = Mutex::new(Some(frames));
        let inner = tower::service_fn(move |_: http::Request<()>| {
            let frames = frames.lock().expect("lock").take().unwrap_or_default();
            let mut response = http::Response::new(Frames(frames.into()));
            *response.headers_mut() = headers.clone();
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        let mut service = layer.layer(inner);
        let request = http::Request::builder()
            .uri("/crm.v1.CommunicationService/StreamTimeline")
            .body(())
            .expect("request");
        let response = service.call(request).await.expect("response");
        (response, logged)
    }

    async fn drain(body: &mut tonic::body::Body) {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        {
            frame.expect("frame");
        }
    }

    fn codes(logged: &Mutex<Vec<RpcRecord>>) -> Vec<(Code, String)> {
        logged
            .lock()
            .expect("lock")
            .iter()
            .map(|r| (r.code, r.message.clone()))
            .collect()
    }

    #[tokio::test]
    async fn a_stream_ending_with_an_error_is_logged_with_the_trailer_status() {
        let frames = vec![
            Frame::data(Bytes::from_static(b"event")),
            Frame::trailers(grpc_headers(&[
                ("grpc-status", "14"),
                ("grpc-message", "resume%20from%20the%20last%20cursor"),
            ])),
        ];
        let headers = grpc_headers(&[("content-type", "application/grpc")]);
        let (response, logged) = call_logged(headers, frames).await;
        assert!(codes(&logged).is_empty(), "logged before the stream ended");
        let mut body = response.into_body();
        drain(&mut body).await;
        assert_eq!(
            codes(&logged),
            [(Code::Unavailable, "resume from the last cursor".to_owned())]
        );
        drop(body);
        let records = logged.lock().expect("lock").clone();
        assert_eq!(records.len(), 1, "logged twice: {records:?}");
        assert_eq!(
            records[0].method,
            "/crm.v1.CommunicationService/StreamTimeline"
        );
    }

    #[tokio::test]
    async fn a_successful_stream_is_logged_ok_when_it_ends() {
        let frames = vec![
            Frame::data(Bytes::from_static(b"event")),
            Frame::trailers(grpc_headers(&[("grpc-status", "0")])),
        ];
        let (response, logged) = call_logged(HeaderMap::new(), frames).await;
        let mut body = response.into_body();
        drain(&mut body).await;
        assert_eq!(codes(&logged), [(Code::Ok, String::new())]);
    }

    #[tokio::test]
    async fn a_trailers_only_error_is_logged_from_the_headers() {
        let headers = grpc_headers(&[("grpc-status", "5"), ("grpc-message", "customer%207")]);
        let (response, logged) = call_logged(headers, Vec::new()).await;
        assert_eq!(codes(&logged), [(Code::NotFound, "customer 7".to_owned())]);
        drop(response);
        assert_eq!(codes(&logged).len(), 1);
    }

    #[tokio::test]
    async fn a_stream_dropped_before_its_end_is_logged_cancelled() {
        let frames = vec![Frame::data(Bytes::from_static(b"event"))];
        let (response, logged) = call_logged(HeaderMap::new(), frames).await;
        drop(response);
        let got = codes(&logged);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, Code::Cancelled);
    }
}

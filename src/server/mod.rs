//! Server assembly: services, reflection (v1 and v1alpha), health, the layers in front of
//! every call (CORS and gRPC-Web, the RPC log, the health-watch drain, the security
//! guard), HTTP/2 limits, TLS or plain accepting, and graceful shutdown with a bounded
//! drain. The layers and background tasks live in `rpc_log` and `health`.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};
use tonic::{
    codec::CompressionEncoding,
    server::NamedService,
    transport::{server::TcpIncoming, Server},
};
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::db::Db;
use crate::grpc::{
    analytics::AnalyticsApi, audit::AuditApi, business_hours::BusinessHoursApi,
    communication::CommunicationApi, customer::CustomerApi, export::ExportApi, AppState,
};
use crate::pb::{
    analytics_service_server::AnalyticsServiceServer, audit_service_server::AuditServiceServer,
    business_hours_service_server::BusinessHoursServiceServer,
    communication_service_server::CommunicationServiceServer,
    customer_service_server::CustomerServiceServer, export_service_server::ExportServiceServer,
};
use crate::security::{guard::GuardLayer, Security};
use crate::service::content_index::ContentIndexHandle;
use crate::service::log_writer::LogWriter;
use crate::service::reports::ReportSource;
use crate::service::timeline::{FollowHub, Timeline};

mod health;
pub mod otel;
mod read_session;
mod rpc_log;

use health::{watch_database, WatchDrainLayer};
use read_session::ReadSessionLayer;
use rpc_log::RpcLogLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};

/// HTTP/2 connection-level flow-control window, in bytes.
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// Longest wait at shutdown for the content index's last snapshot.
const SNAPSHOT_WRITE_BOUND: Duration = Duration::from_secs(60);
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
    let db = Db::connect_with(
        &config.database_url,
        &config.pool_options(),
        config.migrations,
    )
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
    let content_index = config.content_index.then(|| {
        ContentIndexHandle::start_with_snapshot(
            db.clone(),
            shutdown.clone(),
            config.index_snapshot(),
        )
    });
    let served = serve_with_index(config, db, listener, shutdown, content_index.clone()).await;
    // The index writes its snapshot once shutdown is signalled; wait for it, boundedly.
    if let Some(index) = content_index {
        if tokio::time::timeout(SNAPSHOT_WRITE_BOUND, index.stopped())
            .await
            .is_err()
        {
            tracing::warn!("the content index snapshot is still being written; not waiting");
        }
    }
    served
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
    let db = match &config.read_database_url {
        Some(url) => {
            let db = db
                .with_replica(
                    &config.database_url,
                    url,
                    &config.pool_options(),
                    Duration::from_secs(config.read_max_lag_secs),
                )
                .with_context(|| format!("cannot use read replica {}", crate::db::redact(url)))?;
            tracing::info!(
                replica = %crate::db::redact(url),
                max_lag_secs = config.read_max_lag_secs,
                "reports, listings, Get reads and timeline history read from the replica"
            );
            db
        }
        None => db,
    };
    // Stored phones in E.164 under this region's rules, once per database and region.
    crate::db::customers::normalize_stored_phones(&db, config.phone_region)
        .await
        .map_err(|e| anyhow::anyhow!("cannot normalize the stored phone numbers: {e}"))?;
    if let Some(addr) = config.metrics_listen {
        crate::metrics::install(addr, db.backend().name())?;
        crate::metrics::pool_max(config.pool_options().max_for(db.backend()));
        tokio::spawn(sample_pool(db.clone(), shutdown.clone()));
    }
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(security.clone(), shutdown.clone()));
    let follow = FollowHub::start(
        crate::service::feed::Feed::new(db.clone()),
        shutdown.clone(),
    );
    tokio::spawn(crate::service::maintenance::run_compactor(
        db.clone(),
        shutdown.clone(),
    ));
    let log_db = db.clone();
    let report_source = if config.report_rollups {
        ReportSource::Rollups
    } else {
        ReportSource::BaseTable
    };
    let watches = crate::service::watch::WatchHub::start(
        db.clone(),
        content_index.clone(),
        report_source,
        shutdown.clone(),
    );
    let state = AppState {
        timeline: Timeline {
            db: db.clone(),
            follow,
            follow_permits: Arc::new(tokio::sync::Semaphore::new(config.max_follow_streams)),
            shutdown: shutdown.clone(),
            stream_idle: config.stream_idle(),
        },
        stream_idle: config.stream_idle(),
        phone_region: config.phone_region,
        db: db.clone(),
        report_source,
        content_index,
        watches,
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
    let business_hours = api!(BusinessHoursServiceServer::new(BusinessHoursApi::new(
        state.clone()
    )));
    let export = api!(ExportServiceServer::new(ExportApi::new(state.clone())));
    let analytics = api!(AnalyticsServiceServer::new(AnalyticsApi::new(state)));

    let (health, health_service) = tonic_health::server::health_reporter();
    let names = [
        "",
        <CustomerServiceServer<CustomerApi> as NamedService>::NAME,
        <CommunicationServiceServer<CommunicationApi> as NamedService>::NAME,
        <AnalyticsServiceServer<AnalyticsApi> as NamedService>::NAME,
        <AuditServiceServer<AuditApi> as NamedService>::NAME,
        <BusinessHoursServiceServer<BusinessHoursApi> as NamedService>::NAME,
        <ExportServiceServer<ExportApi> as NamedService>::NAME,
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
        crate::db::Probe::new(&config.database_url),
        db.clone(),
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
        .layer(tower::util::option_layer(otel::rpc_spans()))
        // The request's id: the client's when fit for a log line, else made here; echoed.
        .layer(tower::util::MapRequestLayer::new(
            rpc_log::drop_unfit_request_id::<tonic::body::Body>,
        ))
        .layer(SetRequestIdLayer::new(
            rpc_log::REQUEST_ID,
            rpc_log::MakeRequestId,
        ))
        .layer(PropagateRequestIdLayer::new(rpc_log::REQUEST_ID))
        .layer(RpcLogLayer::default())
        .layer(WatchDrainLayer {
            shutdown: shutdown.clone(),
        })
        .layer(GuardLayer::new(std::sync::Arc::clone(&security.guard)))
        // Innermost: needs the guard's caller.
        .layer(tower::util::option_layer(
            db.has_replica()
                .then(|| ReadSessionLayer { db: db.clone() }),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(customer)
        .add_service(communication)
        .add_service(analytics)
        .add_service(audit)
        .add_service(business_hours)
        .add_service(export);
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

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

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
}

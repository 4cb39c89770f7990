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
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{server::NamedService, transport::Server, Code};
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::db::Db;
use crate::grpc::{
    analytics::AnalyticsApi, communication::CommunicationApi, customer::CustomerApi, AppState,
};
use crate::pb::{
    analytics_service_server::AnalyticsServiceServer,
    communication_service_server::CommunicationServiceServer,
    customer_service_server::CustomerServiceServer,
};

/// HTTP/2 connection-level flow-control window, in bytes.
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// HTTP/2 stream-level flow-control window, in bytes.
const STREAM_WINDOW_BYTES: u32 = 256 << 10;

/// Connects to the database, binds the listener and serves until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
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
        tracing::info!("shutdown signal received; draining");
        let _ = tx.send(true);
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
    let local = listener.local_addr()?;
    let state = AppState {
        db,
        follow_permits: Arc::new(tokio::sync::Semaphore::new(config.max_follow_streams)),
        shutdown: shutdown.clone(),
    };
    let customer = CustomerServiceServer::new(CustomerApi::new(state.clone()));
    let communication = CommunicationServiceServer::new(CommunicationApi::new(state.clone()));
    let analytics = AnalyticsServiceServer::new(AnalyticsApi::new(state));

    let (health, health_service) = tonic_health::server::health_reporter();
    let names = [
        "",
        <CustomerServiceServer<CustomerApi> as NamedService>::NAME,
        <CommunicationServiceServer<CommunicationApi> as NamedService>::NAME,
        <AnalyticsServiceServer<AnalyticsApi> as NamedService>::NAME,
    ];
    for name in names {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

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

    tracing::info!(listen = %local, backend = ?config.database_url.split(':').next(), "serving gRPC");
    let server = Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        // h2 ends a connection (GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames") once
        // the small DATA frames it holds unread cost more than half the connection
        // window (256 bytes minus payload each). grpc-core sends one frame per message,
        // so a client streaming small items faster than a handler reads them would trip
        // it with hyper's 1 MiB windows. A 16 MiB connection window (8 MiB budget) and
        // 256 KiB per stream keep one stream's unread frames of 9 bytes or more within
        // the budget, however far its reader falls behind.
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .layer(RpcLogLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(customer)
        .add_service(communication)
        .add_service(analytics)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopping);
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

/// Tower layer that logs one line per RPC: method, gRPC code, latency.
#[derive(Debug, Clone, Copy)]
struct RpcLogLayer;

impl<S> tower::Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLog { inner }
    }
}

#[derive(Debug, Clone)]
struct RpcLog<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcLog<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let start = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok(response) => {
                    // Errors are sent trailers-only, with grpc-status in the headers;
                    // a successful call (or an open stream) has none there yet.
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|s| s.parse::<i32>().ok())
                        .map_or(Code::Ok, Code::from);
                    if code == Code::Ok {
                        tracing::info!(%method, code = ?code, latency_ms, "rpc");
                    } else {
                        let message = response
                            .headers()
                            .get("grpc-message")
                            .and_then(|v| v.to_str().ok())
                            .map(percent_decode)
                            .unwrap_or_default();
                        tracing::info!(%method, code = ?code, latency_ms, %message, "rpc");
                    }
                }
                Err(err) => {
                    tracing::warn!(%method, latency_ms, error = %err, "rpc transport error")
                }
            }
            result
        })
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
    #[test]
    fn grpc_messages_are_percent_decoded_for_logs() {
        assert_eq!(super::percent_decode("a%20b%E5%AD%97%"), "a b字%");
    }
}

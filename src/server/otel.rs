//! OpenTelemetry traces: the OTLP exporter and its `tracing` layer, started only when
//! an endpoint is configured, and the tower layer that opens one span per RPC.
//!
//! The RPC span continues the caller's trace (W3C `traceparent` and `tracestate` in the
//! request metadata; a missing or malformed header starts a new trace) and lasts until
//! the response ends, the last message of a stream included. Database statements run
//! by the call are its children (`db::instrument`). Off, neither layer exists: calls
//! and statements pay nothing.

use std::{
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicBool, Ordering},
    task::{Context as TaskContext, Poll},
};

use anyhow::Context as _;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
    KeyValue,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tonic::Code;
use tracing::{field::Empty, Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::Config;

/// The standard variable read when `--otlp-endpoint` is not given.
const STANDARD_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard variable that names the service instead of `crm-comms`.
const STANDARD_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The trace exporter of a running process; [`Telemetry::shutdown`] sends what its batch
/// holds.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Starts exporting traces when an endpoint is configured (`--otlp-endpoint`, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`); `None` when none is. Must run on the runtime
    /// that will serve. A collector that does not answer fails no call: batches that
    /// cannot be sent are dropped, with a log line.
    pub fn start(config: &Config) -> anyhow::Result<Option<Telemetry>> {
        let Some(endpoint) = config
            .otlp_endpoint
            .clone()
            .or_else(|| std::env::var(STANDARD_ENDPOINT).ok())
            .filter(|e| !e.trim().is_empty())
        else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&endpoint)
            .build()
            .with_context(|| format!("cannot export traces to {endpoint}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        EXPORTING.store(true, Ordering::Relaxed);
        crate::db::instrument::enable();
        Ok(Some(Telemetry { provider }))
    }

    /// The `tracing` layer that turns this crate's spans into exported spans (other
    /// crates' spans, and events below WARN, are not exported).
    pub fn layer(&self) -> Box<dyn Layer<Registry> + Send + Sync> {
        let exported = tracing_subscriber::filter::filter_fn(|meta| {
            meta.target().starts_with("crm_comms")
                && (meta.is_span() || *meta.level() <= tracing::Level::WARN)
        });
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("crm-comms"))
            .with_filter(exported)
            .boxed()
    }

    /// Exports the spans still batched and stops the exporter (blocks: call it off the
    /// runtime's workers, once serving has ended).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "cannot export the last traces");
        }
    }
}

/// `service.name` (`crm-comms` unless OTEL_SERVICE_NAME says otherwise; the standard
/// OTEL_RESOURCE_ATTRIBUTES are read too), `service.version`, `host.name`.
fn resource() -> Resource {
    let mut builder = Resource::builder();
    if std::env::var_os(STANDARD_SERVICE_NAME).is_none_or(|n| n.is_empty()) {
        builder = builder.with_service_name("crm-comms");
    }
    builder
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new(
                "host.name",
                gethostname::gethostname().to_string_lossy().into_owned(),
            ),
        ])
        .build()
}

/// The RPC span layer when traces are exported, `None` otherwise.
pub(super) fn rpc_spans() -> Option<RpcSpanLayer> {
    EXPORTING.load(Ordering::Relaxed).then_some(RpcSpanLayer)
}

/// Opens one span per RPC; see the module's documentation.
#[derive(Debug, Clone, Copy)]
pub(super) struct RpcSpanLayer;

impl<S> tower::Layer<S> for RpcSpanLayer {
    type Service = RpcSpans<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcSpans { inner }
    }
}

/// The service of [`RpcSpanLayer`].
#[derive(Debug, Clone)]
pub(super) struct RpcSpans<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcSpans<S>
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
        let span = rpc_span(request.uri().path(), request.headers());
        let future = span.in_scope(|| self.inner.call(request));
        let body_span = span.clone();
        Box::pin(
            async move {
                let response = match future.await {
                    Ok(response) => response,
                    Err(e) => {
                        body_span.record("otel.status_code", "error");
                        return Err(e);
                    }
                };
                let (parts, body) = response.into_parts();
                // Errors before the first message come trailers-only: the status is in
                // the headers; otherwise it comes in the trailers.
                let status = status_code(&parts.headers);
                if let Some(code) = status {
                    record_status(&body_span, code);
                }
                let body = SpannedBody {
                    inner: body,
                    span: Some(body_span),
                    status_seen: status.is_some(),
                };
                Ok(http::Response::from_parts(
                    parts,
                    tonic::body::Body::new(body),
                ))
            }
            .instrument(span),
        )
    }
}

/// The span of one call to `path` (`/package.Service/Method`), child of the caller's
/// span when `headers` carry a valid W3C trace context.
fn rpc_span(path: &str, headers: &HeaderMap) -> Span {
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        "rpc",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
    );
    let parent = caller_context(headers);
    if parent.span().span_context().is_valid() {
        // Fails only for a span already started, and this one is new.
        let _ = span.set_parent(parent);
    }
    span
}

/// The caller's trace context from `traceparent` / `tracestate`: an empty context (a
/// new trace) when they are missing or malformed.
pub fn caller_context(headers: &HeaderMap) -> opentelemetry::Context {
    let metadata = Metadata(headers);
    if !metadata.get(TRACEPARENT).is_some_and(well_formed) {
        return opentelemetry::Context::new();
    }
    TraceContextPropagator::new().extract(&metadata)
}

const TRACEPARENT: &str = "traceparent";

/// Whether `traceparent` has W3C's field widths (version, trace id, parent id, flags:
/// 2, 32, 16 and 2 hex digits): the propagator itself takes shorter ids.
fn well_formed(traceparent: &str) -> bool {
    let mut fields = traceparent.trim().split('-');
    [2, 32, 16, 2].iter().all(|&width| {
        fields
            .next()
            .is_some_and(|f| f.len() == width && f.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// Request metadata as the propagator reads it.
struct Metadata<'a>(&'a HeaderMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The `grpc-status` in `headers` (trailers, or the headers of a trailers-only answer).
fn status_code(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .map(Code::from)
}

/// Records `code` on the RPC span; the codes that mean the server failed (as
/// OpenTelemetry's RPC conventions list them) also mark the span as an error.
fn record_status(span: &Span, code: Code) {
    span.record("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.record("otel.status_code", "error");
    }
}

/// A response body that holds the RPC span open until the response ends (its trailers,
/// an error, or its drop when the client went away: CANCELLED) and enters it while a
/// stream is polled for its next message.
struct SpannedBody<B> {
    inner: B,
    span: Option<Span>,
    status_seen: bool,
}

impl<B> SpannedBody<B> {
    fn end(&mut self, code: Option<Code>) {
        if let Some(span) = self.span.take() {
            if let (Some(code), false) = (code, self.status_seen) {
                record_status(&span, code);
            }
        }
    }
}

impl<B: Body + Unpin> Body for SpannedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let entered = this.span.as_ref().map(Span::enter);
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        drop(entered);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status_code(trailers).unwrap_or(Code::Unknown);
                    this.end(Some(code));
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(Some(Code::Unknown)),
            Poll::Ready(None) => this.end(None),
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

impl<B> Drop for SpannedBody<B> {
    fn drop(&mut self) {
        self.end(Some(Code::Cancelled));
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn a_valid_traceparent_and_tracestate_are_the_parent() {
        let cx = caller_context(&headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=opaque"),
        ]));
        let span = cx.span();
        let parent = span.span_context();
        assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
        assert_eq!(
            parent.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            parent.span_id(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert_eq!(parent.trace_state().get("vendor"), Some("opaque"));
    }

    #[test]
    fn a_missing_or_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            vec![],
            vec![("traceparent", "garbage")],
            // An all-zero trace id is invalid.
            vec![(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
            // Too short a span id.
            vec![(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9-01",
            )],
            // Version ff is forbidden.
            vec![(
                "traceparent",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
        ] {
            let cx = caller_context(&headers(&bad));
            assert!(!cx.span().span_context().is_valid(), "{bad:?}");
        }
    }

    #[test]
    fn rpc_spans_are_off_until_traces_are_exported() {
        // No test in this binary starts an exporter.
        assert!(rpc_spans().is_none());
        assert!(!crate::db::instrument::enabled());
    }
}

//! The RPC log: one line per call when it ends (method, code, latency, peer, caller,
//! request id), the request id's rules (`tower-http`'s request-id layers take, make and
//! echo it), and the RPC metrics.
//!
//! A call whose client stopped sending its request (reset the stream, closed the
//! connection) is logged as the cancellation it is, not as the server's UNKNOWN error
//! tonic makes of the failed read. Not `tower-http`'s `TraceLayer`: it says nothing when
//! a call's future or response body is dropped (the client reset the call), which is
//! exactly the line this log must still write.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context as TaskContext, Poll},
    time::{Duration, Instant},
};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;

use crate::security::guard::CallerName;

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
pub(super) const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Removes a client's `x-request-id` unless it is 1-128 visible ASCII characters, so
/// that one is made here instead (a log line must not carry arbitrary bytes).
pub(super) fn drop_unfit_request_id<B>(mut request: http::Request<B>) -> http::Request<B> {
    let fit = |v: &http::HeaderValue| {
        (1..=128).contains(&v.len()) && v.as_bytes().iter().all(u8::is_ascii_graphic)
    };
    if request.headers().get(&REQUEST_ID).is_some_and(|v| !fit(v)) {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// Makes the id of a request that came without a fit one: 16 random hex digits.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct MakeRequestId;

impl tower_http::request_id::MakeRequestId for MakeRequestId {
    fn make_request_id<B>(
        &mut self,
        _: &http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: a clock-based id is still unique enough to follow a call.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            bytes = (nanos ^ u64::from(std::process::id())).to_le_bytes();
        }
        http::HeaderValue::from_str(&crate::security::tokens::hex(&bytes))
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
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
pub(super) struct RpcLogLayer {
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
pub(super) struct RpcLog<S> {
    inner: S,
    sink: LogSink,
}

impl<S, ResBody> tower::Service<http::Request<tonic::body::Body>> for RpcLog<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
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

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let request_id = request
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let peer = crate::security::guard::peer_address(request.extensions());
        crate::metrics::rpc_started();
        let read_failed = Arc::new(OnceLock::new());
        let mut call = PendingLog {
            method: request.uri().path().to_owned(),
            start: Instant::now(),
            sink: Arc::clone(&self.sink),
            peer: peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            caller: "-".to_owned(),
            request_id,
            read_failed: Arc::clone(&read_failed),
            done: false,
        };
        let request =
            request.map(|inner| tonic::body::Body::new(WatchedBody { inner, read_failed }));
        let future = self.inner.call(request);
        Box::pin(async move {
            match future.await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    if let Some(name) = parts.extensions.get::<CallerName>() {
                        call.caller = name.0.clone();
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
                    // Logged here, as a transport error, not again when dropped.
                    call.done = true;
                    let latency_ms = rounded_ms(call.start.elapsed());
                    let method = std::mem::take(&mut call.method);
                    tracing::warn!(%method, latency_ms, peer = %call.peer, request_id = %call.request_id, error = %err, "rpc transport error");
                    Err(err)
                }
            }
        })
    }
}

/// A request body that notes when reading it failed: the client reset the stream or
/// the connection ended before the request did.
struct WatchedBody {
    inner: tonic::body::Body,
    read_failed: Arc<OnceLock<String>>,
}

impl Body for WatchedBody {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            let _ = this.read_failed.set(e.message().to_owned());
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

/// The log line of an RPC whose status is not known yet; written as CANCELLED if it is
/// dropped unwritten (the client reset the call before it was answered, and the server
/// dropped the handler).
struct PendingLog {
    method: String,
    start: Instant,
    sink: LogSink,
    peer: String,
    caller: String,
    request_id: String,
    /// Set when reading the request failed (the client stopped sending it).
    read_failed: Arc<OnceLock<String>>,
    /// Whether the line was written.
    done: bool,
}

impl Drop for PendingLog {
    fn drop(&mut self) {
        if !self.done {
            self.write(
                Code::Cancelled,
                "dropped before it was answered: the client reset the call or the connection \
                 closed"
                    .to_owned(),
            );
        }
    }
}

impl PendingLog {
    fn finish(mut self, code: Code, message: String) {
        self.write(code, message);
    }

    /// Writes the line (and the metrics) once.
    fn write(&mut self, code: Code, message: String) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        // tonic answers a failed read with UNKNOWN (the read error) or INTERNAL
        // ("Missing request message": a reset stream reads as an early end); either
        // way the client gave up on the call.
        let (code, message) = match self.read_failed.get() {
            Some(why) if matches!(code, Code::Unknown | Code::Internal) => (
                Code::Cancelled,
                format!("the client stopped sending its request ({why})"),
            ),
            _ => (code, message),
        };
        crate::metrics::rpc_finished(&self.method, code, self.start.elapsed());
        (self.sink)(&RpcRecord {
            method: std::mem::take(&mut self.method),
            code,
            message,
            latency_ms: rounded_ms(self.start.elapsed()),
            peer: std::mem::take(&mut self.peer),
            caller: std::mem::take(&mut self.caller),
            request_id: std::mem::take(&mut self.request_id),
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
pub(super) struct LoggedBody<B> {
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

    use tonic::codegen::Bytes;
    use tower::{Layer, Service};

    use super::*;

    #[test]
    fn grpc_messages_are_percent_decoded_for_logs() {
        assert_eq!(super::percent_decode("a%20b%E5%AD%97%"), "a b字%");
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
        let inner = tower::service_fn(move |_: http::Request<tonic::body::Body>| {
            let frames = frames.lock().expect("lock").take().unwrap_or_default();
            let mut response = http::Response::new(Frames(frames.into()));
            *response.headers_mut() = headers.clone();
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        let mut service = layer.layer(inner);
        let request = http::Request::builder()
            .uri("/crm.v1.CommunicationService/StreamTimeline")
            .body(tonic::body::Body::empty())
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
    async fn a_call_dropped_before_its_answer_is_logged_cancelled_once() {
        let logged = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logged);
        let layer = RpcLogLayer {
            sink: Arc::new(move |r: &RpcRecord| sink.lock().expect("lock").push(r.clone())),
        };
        let inner = tower::service_fn(|_: http::Request<tonic::body::Body>| {
            std::future::pending::<Result<http::Response<Frames>, std::convert::Infallible>>()
        });
        let mut service = layer.layer(inner);
        let request = http::Request::builder()
            .uri("/crm.v1.CustomerService/GetCustomer")
            .body(tonic::body::Body::empty())
            .expect("request");
        let call = service.call(request);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), call)
                .await
                .is_err(),
            "answered"
        );
        let got = codes(&logged);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Code::Cancelled);
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

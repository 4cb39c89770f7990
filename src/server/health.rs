//! Health beyond liveness: readiness that follows the database, and the layer that ends
//! open `Health/Watch` streams at shutdown so they do not hold the drain.

use std::{
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tonic_health::ServingStatus;

/// How often readiness asks the database whether it answers.
const READINESS_INTERVAL: Duration = Duration::from_secs(2);
/// How long the database gets to answer readiness's query.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness that tells the truth: every [`READINESS_INTERVAL`] the database is asked a
/// trivial query; while it does not answer, health reports NOT_SERVING (overall and for
/// every service) and calls answer UNAVAILABLE at once (see
/// [`crate::db::Db::set_reachable`]), and SERVING again once it does, with a log line at
/// each change.
/// Stops at shutdown (which reports NOT_SERVING itself).
pub(super) async fn watch_database(
    mut probe: crate::db::Probe,
    db: crate::db::Db,
    health: tonic_health::server::HealthReporter,
    names: [&'static str; 7],
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
        let answer = match tokio::time::timeout(READINESS_TIMEOUT, probe.check()).await {
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
        db.set_reachable(answer.is_ok());
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
pub(super) struct WatchDrainLayer {
    pub(super) shutdown: watch::Receiver<bool>,
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
pub(super) struct WatchDrain<S> {
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
pub(super) struct EndsOnShutdown<B> {
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

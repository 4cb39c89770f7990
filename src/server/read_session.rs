//! Read-your-writes with a read replica: every guarded call runs as its caller's request
//! (so `Db::reader` can tell whose read it is), and a write call, once answered, marks
//! its caller's reads for the primary until the replica has applied the write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use crate::db::Db;
use crate::model::caller::{Caller, Role};
use crate::security::guard::{access, Access};

/// Layer of [`ReadSession`]; innermost, after the guard has put the [`Caller`] in the
/// request's extensions. Only installed when a replica is configured.
#[derive(Clone)]
pub(super) struct ReadSessionLayer {
    pub(super) db: Db,
}

impl<S> tower::Layer<S> for ReadSessionLayer {
    type Service = ReadSession<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReadSession {
            inner,
            db: self.db.clone(),
        }
    }
}

/// See [`ReadSessionLayer`].
#[derive(Clone)]
pub(super) struct ReadSession<S> {
    inner: S,
    db: Db,
}

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for ReadSession<S>
where
    S: tower::Service<http::Request<ReqBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let Some(name) = request
            .extensions()
            .get::<Caller>()
            .map(|c| Arc::<str>::from(c.name.as_str()))
        else {
            return Box::pin(self.inner.call(request));
        };
        // Whatever needs more than the reader role may write; an answered call (its
        // outcome aside: a cut-off call may still have committed) marks its caller.
        let writes =
            matches!(access(request.uri().path()), Access::Role(role) if role > Role::Reader);
        let db = self.db.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = crate::db::replica::scope_caller(Arc::clone(&name), future).await;
            if writes {
                db.note_write(&name);
            }
            response
        })
    }
}

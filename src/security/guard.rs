//! The guard in front of every RPC: who is calling (bearer token), may they call this
//! method (role), may they call now (per-caller rate, server-wide in-flight cap), and is
//! the request small enough (message size, read from each frame's header).
//!
//! Refusals are answered here, before any handler or database work, through the one
//! error mapping (`crate::error`). Health and reflection pass untouched: probes and
//! tools must work when everything else refuses.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use tokio::sync::Semaphore;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::limits::{FrameSizeCheck, Oversized, RateLimiter};
use super::tokens::{bearer, Role, TokenSet};
use crate::error::Error;

pub use crate::model::caller::Caller;

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: health and reflection.
    Open,
    /// A token with at least this role.
    Role(Role),
}

/// The access every method needs, by request path. Methods not listed need a reader
/// token (the router answers UNIMPLEMENTED); a unit test checks that every method of
/// the API is listed, so a new RPC cannot slip in unclassified. `DeleteCustomer` with
/// `purge` needs admin: its handler checks that (the guard does not read bodies).
pub fn access(path: &str) -> Access {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Access::Role(Role::Reader);
    };
    match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Access::Open,
        "crm.v1.AuditService" => Access::Role(Role::Admin),
        "crm.v1.CustomerService"
        | "crm.v1.CommunicationService"
        | "crm.v1.BusinessHoursService" => match method {
            "CreateCustomer"
            | "UpdateCustomer"
            | "DeleteCustomer"
            | "MergeCustomers"
            | "CreateTransaction"
            | "CreateServiceTicket"
            | "UpdateServiceTicket"
            | "LogCommunication"
            | "ImportCommunications"
            | "DeleteCommunication"
            | "CreateBusinessHours"
            | "UpdateBusinessHours"
            | "DeleteBusinessHours" => Access::Role(Role::Writer),
            _ => Access::Role(Role::Reader),
        },
        _ => Access::Role(Role::Reader),
    }
}

/// The guard's settings and shared state.
#[derive(Debug)]
pub struct GuardState {
    /// The tokens; `None`: no tokens file, every caller is `anonymous` with admin rights
    /// (the server then listens on loopback only, or was started `--insecure`).
    pub tokens: Option<RwLock<Arc<TokenSet>>>,
    /// Per-caller rate limit; `None`: off.
    pub rate: Option<RateLimiter>,
    /// Guarded calls in flight at most; past it, calls are refused at once.
    pub in_flight: Arc<Semaphore>,
    /// The in-flight cap, for messages.
    pub max_in_flight: usize,
    /// Largest request message, in bytes.
    pub max_request_bytes: usize,
}

impl GuardState {
    /// Replaces the tokens (SIGHUP); connections and calls in flight are untouched.
    pub fn replace_tokens(&self, set: TokenSet) {
        if let Some(tokens) = &self.tokens {
            *tokens
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
        }
    }

    /// Establishes the caller of a request with these headers and connection facts.
    fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<SocketAddr>,
        certificate: Option<String>,
    ) -> Result<Caller, Error> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller {
                name: "anonymous".to_owned(),
                role: Role::Admin,
                peer,
                certificate,
            });
        };
        let unauthenticated = |reason, message: &str| Error::Unauthenticated {
            reason,
            message: message.to_owned(),
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(unauthenticated(
                "MISSING_CREDENTIALS",
                "send `authorization: Bearer <token>`",
            ));
        };
        let Some(token) = bearer(value.as_bytes()) else {
            return Err(unauthenticated(
                "MALFORMED_CREDENTIALS",
                "the authorization header must be `Bearer <token>`",
            ));
        };
        let set = Arc::clone(
            &tokens
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        match set.find(token) {
            Some(entry) => Ok(Caller {
                name: entry.name.clone(),
                role: entry.role,
                peer,
                certificate,
            }),
            None => Err(unauthenticated(
                "INVALID_TOKEN",
                "the token is not known to this server",
            )),
        }
    }

    /// The caller of a guarded request, allowed to call `path` now; or the refusal, with
    /// the caller's name when the token was known.
    fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Caller, (Option<String>, Error)> {
        let (peer, certificate) = connection_facts(extensions);
        let caller = self
            .authenticate(headers, peer, certificate)
            .map_err(|e| (None, e))?;
        self.allow(path, &caller)
            .map_err(|e| (Some(caller.name.clone()), e))?;
        Ok(caller)
    }

    /// Whether `caller` may call `path` now: its role, then its rate.
    fn allow(&self, path: &str, caller: &Caller) -> Result<(), Error> {
        if let Access::Role(role) = access(path) {
            let method = path.rsplit('/').next().unwrap_or(path);
            let what = match method {
                "DeleteCustomer" => "DeleteCustomer (with purge: admin)",
                other => other,
            };
            caller.require(role, what)?;
        }
        if let Some(rate) = &self.rate {
            // Anonymous callers are told apart by address: one busy local tool must not
            // throttle the others.
            let key = match (&self.tokens, caller.peer) {
                (None, Some(peer)) => peer.ip().to_string(),
                _ => caller.name.clone(),
            };
            rate.check(&key, Instant::now())
                .map_err(|retry_after| Error::RateLimited {
                    retry_after,
                    message: format!(
                        "`{}` is over its rate limit; retry in {} ms",
                        caller.name,
                        retry_after.as_millis().max(1)
                    ),
                })?;
        }
        Ok(())
    }
}

/// The caller's name, in the extensions of every guarded response (and of refusals
/// whose token was known), for the RPC log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerName(pub String);

/// The peer address and client-certificate subject of the connection a request came on.
fn connection_facts(extensions: &http::Extensions) -> (Option<SocketAddr>, Option<String>) {
    let certificate = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|certs| certs.first().and_then(|c| super::tls::subject(c)));
    (peer_address(extensions), certificate)
}

/// The peer address of the connection a request came on (TLS or plain), without
/// parsing any certificate.
pub(crate) fn peer_address(extensions: &http::Extensions) -> Option<SocketAddr> {
    match extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        Some(tls) => tls.get_ref().remote_addr(),
        None => extensions
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr),
    }
}

/// Tower layer applying the guard to every request.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    state: Arc<GuardState>,
}

impl GuardLayer {
    /// A layer over the shared guard state.
    pub fn new(state: Arc<GuardState>) -> Self {
        GuardLayer { state }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

/// The guard service (see the module doc).
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    state: Arc<GuardState>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for Guard<S>
where
    S: tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
    >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        if access(&path) == Access::Open {
            return Box::pin(self.inner.call(request));
        }
        let state = &self.state;
        let admitted = state
            .admit(&path, request.headers(), request.extensions())
            .and_then(|caller| {
                let permit = Arc::clone(&state.in_flight)
                    .try_acquire_owned()
                    .map_err(|_| {
                        let e = Error::ResourceExhausted {
                            reason: "SERVER_OVERLOADED",
                            message: format!(
                                "{} calls are in flight, the most this server takes; retry \
                                 with backoff",
                                state.max_in_flight
                            ),
                        };
                        (Some(caller.name.clone()), e)
                    })?;
                Ok((caller, permit))
            });
        let (caller, permit) = match admitted {
            Ok(admitted) => admitted,
            Err((name, e)) => {
                let mut response: http::Response<tonic::body::Body> =
                    tonic::Status::from(e).into_http();
                if let Some(name) = name {
                    response.extensions_mut().insert(CallerName(name));
                }
                return Box::pin(async move { Ok(response) });
            }
        };
        let name = CallerName(caller.name.clone());
        request.extensions_mut().insert(caller);
        let check = FrameSizeCheck::new(state.max_request_bytes);
        let request = request.map(|body| {
            tonic::body::Body::new(SizeCheckedBody {
                inner: body,
                check,
                refused: None,
            })
        });
        let future = self.inner.call(request);
        Box::pin(async move {
            // Held until the handler has answered: for a server stream, until its
            // headers; open streams are bounded by their own limits.
            let _permit = permit;
            let mut response = future.await?;
            response.extensions_mut().insert(name);
            Ok(response)
        })
    }
}

/// A request body that fails with RESOURCE_EXHAUSTED as soon as a message's frame
/// header declares more than the limit.
struct SizeCheckedBody {
    inner: tonic::body::Body,
    check: FrameSizeCheck,
    /// The refusal, once the whole messages before the oversized one were passed on.
    refused: Option<tonic::Status>,
}

impl Body for SizeCheckedBody {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(status) = this.refused.take() {
            return Poll::Ready(Some(Err(status)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let Some(data) = frame.data_ref() else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                let Err(Oversized { len, header_at }) = this.check.feed(data) else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                let limit = this.check.limit();
                let status: tonic::Status = Error::ResourceExhausted {
                    reason: "MESSAGE_TOO_LARGE",
                    message: format!(
                        "a request message of {len} bytes is over the limit of {limit} bytes"
                    ),
                }
                .into();
                if header_at == 0 {
                    return Poll::Ready(Some(Err(status)));
                }
                // The whole messages in front of it still reach the handler (an import
                // stores them), then the refusal.
                let before = data.slice(..header_at);
                this.refused = Some(status);
                Poll::Ready(Some(Ok(Frame::data(before))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn every_api_method_has_a_role_and_only_health_and_reflection_are_open() {
        let set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap();
        let mut seen = 0;
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    let name = method.name();
                    let expected = if service.name() == "AuditService" {
                        Role::Admin
                    } else if ["Create", "Update", "Delete", "Log", "Import", "Merge"]
                        .iter()
                        .any(|p| name.starts_with(p))
                    {
                        Role::Writer
                    } else {
                        assert!(
                            ["Get", "List", "Stream"]
                                .iter()
                                .any(|p| name.starts_with(p)),
                            "{path}: classify it in `access`"
                        );
                        Role::Reader
                    };
                    assert_eq!(access(&path), Access::Role(expected), "{path}");
                    seen += 1;
                }
            }
        }
        assert!(seen >= 20, "{seen} methods");
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(access("/grpc.health.v1.Health/Watch"), Access::Open);
        assert_eq!(
            access("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Access::Open
        );
        assert_eq!(access("/crm.v1.Unknown/Method"), Access::Role(Role::Reader));
        assert_eq!(access("garbage"), Access::Role(Role::Reader));
    }
}

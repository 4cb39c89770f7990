//! The guard in front of every RPC: who is calling (bearer token), may they call this
//! method (role), may they call now (per-caller rate; the in-flight cap, server-wide and
//! per connection and caller), is the request small enough (message size, read from each
//! frame's header) and does it arrive in time (the request body timeout).
//!
//! Refusals are answered here, before any handler or database work, through the one
//! error mapping (`crate::grpc::status`). Health and reflection pass untouched: probes and
//! tools must work when everything else refuses.
//!
//! A call counts in flight while it costs something: a call with one request message
//! (unary or server streaming) from the end of its request body until its handler has
//! answered, so a client that never finishes its body holds no slot (and is cut at the
//! body timeout); a client stream (`ImportCommunications`) from its headers, since its
//! handler works while the items arrive (`--stream-idle-secs` ends one that stalls).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
        "crm.v1.AuditService" | "crm.v1.ExportService" => Access::Role(Role::Admin),
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
            | "RecordSatisfaction"
            | "CreateBusinessHours"
            | "UpdateBusinessHours"
            | "DeleteBusinessHours" => Access::Role(Role::Writer),
            _ => Access::Role(Role::Reader),
        },
        _ => Access::Role(Role::Reader),
    }
}

/// The request paths of the methods whose client sends a stream of messages (client
/// and bidirectional streaming), read from the API's descriptors.
static CLIENT_STREAMS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    use prost::Message;
    let mut paths = HashSet::new();
    if let Ok(set) = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET) {
        for file in &set.file {
            for service in &file.service {
                for method in service.method.iter().filter(|m| m.client_streaming()) {
                    paths.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    paths
});

/// Whether the client of `path` streams its request (see the module doc).
pub fn client_streaming(path: &str) -> bool {
    CLIENT_STREAMS.contains(path)
}

/// The in-flight calls each connection and each caller holds now (entries at zero are
/// removed, so the maps hold only who has calls running).
#[derive(Debug, Default)]
pub struct Held {
    by_connection: HashMap<SocketAddr, usize>,
    by_caller: HashMap<String, usize>,
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
    ///
    /// Not `tower::limit::ConcurrencyLimitLayer` + `LoadShedLayer`: those count a call
    /// from `poll_ready` until its response, before the caller is known, while its body
    /// still arrives and for health and reflection too; this permit is taken with the
    /// caller's and connection's shares once the body has ended (see the module doc).
    pub in_flight: Arc<Semaphore>,
    /// The in-flight cap, for messages.
    pub max_in_flight: usize,
    /// Largest request message, in bytes.
    pub max_request_bytes: usize,
    /// Calls in flight at most per client connection.
    pub per_connection: usize,
    /// Calls in flight at most per caller (token name); only with tokens (anonymous
    /// callers are told apart by connection alone).
    pub per_caller: usize,
    /// How long a request with one message may take from its headers to the end of
    /// its body.
    pub body_timeout: Duration,
    /// What each connection and caller holds now.
    pub held: Mutex<Held>,
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
                crate::error::Reason::MissingCredentials,
                "send `authorization: Bearer <token>`",
            ));
        };
        let Some(token) = bearer(value.as_bytes()) else {
            return Err(unauthenticated(
                crate::error::Reason::MalformedCredentials,
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
                crate::error::Reason::InvalidToken,
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
            rate.check(&key).map_err(|retry_after| Error::RateLimited {
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

impl GuardState {
    /// A place in flight for `caller`'s call: refused when the server is full
    /// (`SERVER_OVERLOADED`), or when the caller (`CALLER_OVERLOADED`) or its connection
    /// (`CONNECTION_OVERLOADED`) holds its share already. Refused at once, not queued.
    fn take_slot(self: &Arc<Self>, caller: &Caller) -> Result<Slot, Error> {
        let permit = Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| Error::ResourceExhausted {
                reason: crate::error::Reason::ServerOverloaded,
                message: format!(
                    "{} calls are in flight, the most this server takes; retry with backoff",
                    self.max_in_flight
                ),
            })?;
        let name = self.tokens.is_some().then(|| caller.name.clone());
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(name) = &name {
            if held.by_caller.get(name).copied().unwrap_or(0) >= self.per_caller {
                return Err(Error::ResourceExhausted {
                    reason: crate::error::Reason::CallerOverloaded,
                    message: format!(
                        "`{name}` has {} calls in flight, the most one caller may have; \
                         retry when one ends",
                        self.per_caller
                    ),
                });
            }
        }
        if let Some(peer) = caller.peer {
            if held.by_connection.get(&peer).copied().unwrap_or(0) >= self.per_connection {
                return Err(Error::ResourceExhausted {
                    reason: crate::error::Reason::ConnectionOverloaded,
                    message: format!(
                        "this connection has {} calls in flight, the most one connection \
                         may have; retry when one ends",
                        self.per_connection
                    ),
                });
            }
            *held.by_connection.entry(peer).or_default() += 1;
        }
        if let Some(name) = &name {
            *held.by_caller.entry(name.clone()).or_default() += 1;
        }
        Ok(Slot {
            _permit: permit,
            state: Arc::clone(self),
            connection: caller.peer,
            caller: name,
        })
    }
}

/// One call's place in flight: a server-wide permit and a count against its
/// connection's and caller's shares, all given back when dropped.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    state: Arc<GuardState>,
    connection: Option<SocketAddr>,
    caller: Option<String>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .state
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        fn give_back<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        if let Some(peer) = &self.connection {
            give_back(&mut held.by_connection, peer);
        }
        if let Some(name) = &self.caller {
            give_back(&mut held.by_caller, name);
        }
    }
}

/// Where a call's slot is kept while it runs: taken by the request body once it is
/// complete (or at the headers for a client stream), given back when the handler has
/// answered.
type SlotCell = Arc<Mutex<Option<Slot>>>;

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
        let streaming = client_streaming(&path);
        let admitted = state
            .admit(&path, request.headers(), request.extensions())
            .and_then(|caller| {
                // A client stream works while its items arrive: it takes its slot now.
                let slot = streaming
                    .then(|| state.take_slot(&caller))
                    .transpose()
                    .map_err(|e| (Some(caller.name.clone()), e))?;
                Ok((caller, slot))
            });
        let (caller, slot) = match admitted {
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
        let cell: SlotCell = Arc::new(Mutex::new(slot));
        let pending = (!streaming).then(|| PendingSlot {
            deadline: Box::pin(tokio::time::sleep(state.body_timeout)),
            timeout: state.body_timeout,
            state: Arc::clone(state),
            caller: caller.clone(),
            cell: Arc::clone(&cell),
        });
        request.extensions_mut().insert(caller);
        let check = FrameSizeCheck::new(state.max_request_bytes);
        let request = request.map(|body| {
            tonic::body::Body::new(GuardedBody {
                inner: body,
                check,
                refused: None,
                pending,
            })
        });
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            // Held until the handler has answered: for a server stream, until its
            // headers; open streams are bounded by their own limits.
            drop(
                cell.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take(),
            );
            let mut response = response?;
            response.extensions_mut().insert(name);
            Ok(response)
        })
    }
}

/// A call with one request message whose body has not ended yet: the deadline for its
/// end, and what it needs to take its slot then.
struct PendingSlot {
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    state: Arc<GuardState>,
    caller: Caller,
    cell: SlotCell,
}

impl PendingSlot {
    /// The body is complete: the call takes its slot, or is refused.
    fn admit(self) -> Result<(), tonic::Status> {
        let slot = self.state.take_slot(&self.caller)?;
        *self
            .cell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(slot);
        Ok(())
    }

    /// The refusal of a body that did not end in time.
    fn too_late(&self) -> tonic::Status {
        Error::RequestBodyTimeout(format!(
            "the request did not arrive within {} s of its headers",
            self.timeout.as_secs()
        ))
        .into()
    }
}

/// A request body that fails with RESOURCE_EXHAUSTED as soon as a message's frame
/// header declares more than the limit; for a call with one request message, one that
/// takes the call's slot when it ends and fails with DEADLINE_EXCEEDED when it does not
/// end in time.
struct GuardedBody {
    inner: tonic::body::Body,
    check: FrameSizeCheck,
    /// The refusal, once the whole messages before the oversized one were passed on.
    refused: Option<tonic::Status>,
    /// Until the body has ended (calls with one request message only).
    pending: Option<PendingSlot>,
}

impl GuardedBody {
    /// The body has ended: the call takes its slot (or is refused).
    fn ended(&mut self) -> Result<(), tonic::Status> {
        self.pending.take().map_or(Ok(()), PendingSlot::admit)
    }
}

impl Body for GuardedBody {
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
        // Checked before every read, so a body trickling in byte by byte is cut too.
        if let Some(pending) = &mut this.pending {
            if pending.deadline.as_mut().poll(cx).is_ready() {
                let status = pending.too_late();
                this.pending = None;
                return Poll::Ready(Some(Err(status)));
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let Some(data) = frame.data_ref() else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                let Err(Oversized { len, header_at }) = this.check.feed(data) else {
                    if this.inner.is_end_stream() {
                        if let Err(status) = this.ended() {
                            return Poll::Ready(Some(Err(status)));
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                };
                this.pending = None;
                let limit = this.check.limit();
                let status: tonic::Status = Error::ResourceExhausted {
                    reason: crate::error::Reason::MessageTooLarge,
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
            Poll::Ready(None) => match this.ended() {
                Ok(()) => Poll::Ready(None),
                Err(status) => Poll::Ready(Some(Err(status))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not ended until the slot is taken (a refusal is still to come).
        self.pending.is_none() && self.inner.is_end_stream()
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
                    let expected = if ["AuditService", "ExportService"].contains(&service.name()) {
                        Role::Admin
                    } else if [
                        "Create", "Update", "Delete", "Log", "Import", "Merge", "Record",
                    ]
                    .iter()
                    .any(|p| name.starts_with(p))
                    {
                        Role::Writer
                    } else {
                        assert!(
                            ["Get", "List", "Stream", "Watch"]
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

    #[test]
    fn only_client_streams_take_their_slot_at_the_headers() {
        assert!(client_streaming(
            "/crm.v1.CommunicationService/ImportCommunications"
        ));
        for path in [
            "/crm.v1.CustomerService/GetCustomer",
            "/crm.v1.CommunicationService/LogCommunication",
            "/crm.v1.CommunicationService/StreamTimeline",
            "garbage",
        ] {
            assert!(!client_streaming(path), "{path}");
        }
    }
}

//! The one domain error of the service and its one mapping to `tonic::Status`.
//!
//! Policy: storage and validation return [`Error`]; handlers turn it into a status with
//! `?` through `From<Error> for Status`, which is the only place codes, `ErrorInfo`
//! reasons and `BadRequest` violations are chosen. `anyhow` is used only at the edges
//! (startup in `main`).

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Domain of every `google.rpc.ErrorInfo` this service sends.
pub const ERROR_DOMAIN: &str = "crm.v1";

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path of the field in the request, e.g. `customer.email`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; every bad field is listed.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<Violation>),
    /// The named resource does not exist (or was deleted).
    #[error("{resource} {id} not found")]
    NotFound {
        /// Resource kind, e.g. `customer`.
        resource: &'static str,
        /// The id that was asked for.
        id: i64,
    },
    /// The customer was merged into another one (`MergeCustomers`): it is gone, and the
    /// answer names the customer that now holds its history.
    #[error("customer {id} was merged into customer {merged_into}")]
    Merged {
        /// The id that was asked for.
        id: i64,
        /// The surviving customer.
        merged_into: i64,
    },
    /// The resource to create exists already (e.g. a unique name is taken).
    #[error("{message}")]
    AlreadyExists {
        /// Stable UPPER_SNAKE reason.
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// An optimistic-concurrency check failed (stale etag).
    #[error("{0}")]
    Aborted(String),
    /// An idempotency key was used before for a different request: the first request's
    /// result stands and this one is refused, having written nothing. Not ALREADY_EXISTS,
    /// which retry loops commonly read as "my create went through".
    #[error("request_id {} was used before for a different {resource} request", quote(.request_id))]
    RequestIdReused {
        /// What the first request created, e.g. `communication`.
        resource: &'static str,
        /// The reused key.
        request_id: String,
    },
    /// The request conflicts with the resource's state.
    #[error("{message}")]
    FailedPrecondition {
        /// Stable UPPER_SNAKE reason.
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// A server limit was reached.
    #[error("{message}")]
    ResourceExhausted {
        /// Stable UPPER_SNAKE reason.
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// A caller's per-second allowance is used up.
    #[error("{message}")]
    RateLimited {
        /// When the caller may call again.
        retry_after: std::time::Duration,
        /// Human-readable explanation.
        message: String,
    },
    /// The caller is not known: no, a malformed or an unknown bearer token.
    #[error("{message}")]
    Unauthenticated {
        /// Stable UPPER_SNAKE reason.
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// The caller is known but its role does not allow the call.
    #[error("{message}")]
    PermissionDenied {
        /// The least role that may make the call.
        required: crate::security::tokens::Role,
        /// Human-readable explanation.
        message: String,
    },
    /// A result the request asks for cannot be represented (e.g. a sum past int64).
    #[error("{message}")]
    OutOfRange {
        /// Stable UPPER_SNAKE reason.
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// The call's deadline passed before the work finished.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The client did not finish sending its request within the server's bound
    /// (`--request-body-timeout-secs`); nothing was done.
    #[error("{0}")]
    RequestBodyTimeout(String),
    /// The server is shutting down or the database cannot be reached.
    #[error("unavailable: {message}")]
    Unavailable {
        /// Stable UPPER_SNAKE reason.
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// A database error that is not the client's fault.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// A bug or an unexpected state; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The violations as one line for the status message: as many as fit in about 400
/// bytes, then how many more there are (the BadRequest detail lists them).
fn describe(violations: &[Violation]) -> String {
    const BUDGET: usize = 400;
    let mut out = String::new();
    let mut shown = 0usize;
    for v in violations {
        let part = if v.field.is_empty() {
            v.description.clone()
        } else {
            format!("{}: {}", v.field, v.description)
        };
        if shown > 0 && out.len() + part.len() + 2 > BUDGET {
            break;
        }
        if shown > 0 {
            out.push_str("; ");
        }
        out.push_str(&part);
        shown += 1;
    }
    let rest = violations.len() - shown;
    if rest > 0 {
        out.push_str(&format!("; and {rest} more in the BadRequest details"));
    }
    out
}

impl Error {
    /// An INVALID_ARGUMENT error for a single field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![Violation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// Whether this is a unique-key violation (a concurrent duplicate insert).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Error::Database(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }

    /// Whether the database gave up on the transaction because of a concurrent one (a
    /// deadlock, a lock wait timeout, SQLite's busy file): running it again is safe.
    pub fn is_transaction_conflict(&self) -> bool {
        match self {
            Error::Database(e) => is_transaction_conflict(e),
            _ => false,
        }
    }

    /// Whether the failed work certainly left nothing behind, so it may be run again: a
    /// unique-key violation or a transaction conflict (the statement, and with it the
    /// transaction, was rolled back). A lost connection may have lost it mid-COMMIT.
    pub fn is_safe_to_replay(&self) -> bool {
        self.is_unique_violation() || self.is_transaction_conflict()
    }

    /// The same failure for another caller of one failed batch: the same code, the
    /// reason where it is stable, and this error's text (an `Error` is not `Clone`:
    /// it may hold the database's own error).
    pub fn for_another_caller(&self) -> Error {
        match self.code_and_reason() {
            (Code::Unavailable, reason) => Error::Unavailable {
                reason,
                message: match self {
                    Error::Unavailable { message, .. } => message.clone(),
                    // The driver's text stays in the log, as for the first caller.
                    _ => "database unavailable".to_owned(),
                },
            },
            (Code::DeadlineExceeded, _) => Error::DeadlineExceeded(self.to_string()),
            (Code::ResourceExhausted, reason) => Error::ResourceExhausted {
                reason,
                message: self.to_string(),
            },
            _ => Error::Internal(self.to_string()),
        }
    }

    fn code_and_reason(&self) -> (Code, &'static str) {
        match self {
            Error::InvalidArgument(_) => (Code::InvalidArgument, "INVALID_ARGUMENT"),
            Error::NotFound { resource, .. } => (Code::NotFound, not_found_reason(resource)),
            Error::Merged { .. } => (Code::NotFound, "CUSTOMER_MERGED"),
            Error::Aborted(_) => (Code::Aborted, "ETAG_MISMATCH"),
            Error::RequestIdReused { .. } => (Code::FailedPrecondition, "REQUEST_ID_REUSED"),
            Error::AlreadyExists { reason, .. } => (Code::AlreadyExists, reason),
            Error::FailedPrecondition { reason, .. } => (Code::FailedPrecondition, reason),
            Error::ResourceExhausted { reason, .. } => (Code::ResourceExhausted, reason),
            Error::OutOfRange { reason, .. } => (Code::OutOfRange, reason),
            Error::RateLimited { .. } => (Code::ResourceExhausted, "RATE_LIMITED"),
            Error::Unauthenticated { reason, .. } => (Code::Unauthenticated, reason),
            Error::PermissionDenied { required, .. } => (
                Code::PermissionDenied,
                match required {
                    crate::security::tokens::Role::Reader => "READER_ROLE_REQUIRED",
                    crate::security::tokens::Role::Writer => "WRITER_ROLE_REQUIRED",
                    crate::security::tokens::Role::Admin => "ADMIN_ROLE_REQUIRED",
                },
            ),
            Error::DeadlineExceeded(_) => (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            Error::RequestBodyTimeout(_) => (Code::DeadlineExceeded, "REQUEST_BODY_TIMEOUT"),
            Error::Unavailable { reason, .. } => (Code::Unavailable, reason),
            Error::Database(e) if is_connection_error(e) => {
                (Code::Unavailable, "DATABASE_UNAVAILABLE")
            }
            // Still conflicting after the retries of `db::retry_conflicts`: ABORTED is
            // gRPC's "retry at a higher level".
            Error::Database(e) if is_transaction_conflict(e) => {
                (Code::Aborted, "TRANSACTION_CONFLICT")
            }
            Error::Database(_) | Error::Internal(_) => (Code::Internal, "INTERNAL"),
        }
    }
}

fn not_found_reason(resource: &str) -> &'static str {
    match resource {
        "customer" => "CUSTOMER_NOT_FOUND",
        "communication" => "COMMUNICATION_NOT_FOUND",
        "service ticket" => "SERVICE_TICKET_NOT_FOUND",
        "transaction" => "TRANSACTION_NOT_FOUND",
        "business hours" => "BUSINESS_HOURS_NOT_FOUND",
        _ => "NOT_FOUND",
    }
}

/// Whether the database refused a transaction because of a concurrent one; see
/// [`Error::is_transaction_conflict`].
pub(crate) fn is_transaction_conflict(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error as D};
    match e {
        D::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        D::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let m = info.message();
            // MySQL/MariaDB/TiDB 1213 and 1205 (diesel-async keeps only the text), TiDB's
            // optimistic write conflict, SQLite's SQLITE_BUSY.
            m.contains("Deadlock found")
                || m.contains("Lock wait timeout exceeded")
                || m.contains("Write conflict")
                || m.contains("database is locked")
        }
        D::RollbackErrorOnCommit { commit_error, .. } => is_transaction_conflict(commit_error),
        _ => false,
    }
}

/// Whether a database error means the connection or the server failed (UNAVAILABLE,
/// worth a retry), rather than the statement.
///
/// diesel-async 0.9 turns every `mysql_async` error that is not a server error into
/// `DatabaseError(Unknown, <Display text>)` and keeps only the message of server
/// errors (`mysql/error_helper.rs`), so the text is all there is to classify:
/// `mysql_async` IO errors (EOF, connection reset or refused, broken pipe: the
/// CR_SERVER_LOST / CR_SERVER_GONE_ERROR cases of libmysql), a closed connection, a
/// desynchronised protocol, and the server messages of a shutdown or killed
/// connection. A unit test pins these texts to the `mysql_async` version in use.
pub(crate) fn is_connection_error(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error as D};
    match e {
        D::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | D::BrokenTransactionManager => true,
        D::RollbackErrorOnCommit {
            rollback_error,
            commit_error,
        } => is_connection_error(rollback_error) || is_connection_error(commit_error),
        D::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            connection_failure_text(info.message())
        }
        _ => false,
    }
}

/// Texts of connection-level failures, as diesel-async passes them on (see
/// [`is_connection_error`]).
fn connection_failure_text(message: &str) -> bool {
    /// Prefixes of `mysql_async::Error::Io` (any IO or TLS failure of the socket).
    const IO_PREFIXES: &[&str] = &["Input/output error:"];
    /// `mysql_async` driver errors that leave the connection unusable.
    const DRIVER: &[&str] = &[
        "Connection to the server is closed.",
        "Packet out of order.",
        "Unexpected packet.",
        "Bad compressed packet header.",
        "Pool was disconnected.",
    ];
    /// Server messages: 1053 ER_SERVER_SHUTDOWN, 1927 ER_CONNECTION_KILLED,
    /// 4031 ER_CLIENT_INTERACTION_TIMEOUT, 1047 (a Galera node not ready); and the
    /// libmysql texts of 2006 / 2013 should a proxy pass them through.
    const SERVER: &[&str] = &[
        "Server shutdown in progress",
        "Connection was killed",
        "The client was disconnected by the server",
        "WSREP has not yet prepared node",
        "MySQL server has gone away",
        "Lost connection to MySQL server",
        "Lost connection to server",
    ];
    // An oversized packet is refused by the codec as an IO error, but it is the
    // statement's fault: retrying it would fail forever.
    (IO_PREFIXES.iter().any(|p| message.starts_with(p)) && !message.contains("too large"))
        || (message.starts_with("Driver error:") && DRIVER.iter().any(|d| message.contains(d)))
        || SERVER.iter().any(|s| message.starts_with(s))
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let (code, reason) = err.code_and_reason();
        if let Error::Database(_) = &err {
            crate::metrics::db_error(match code {
                Code::Unavailable => "unavailable",
                Code::Aborted => "conflict",
                _ => "other",
            });
        }
        let message = match (&err, code) {
            // Internal details stay in the log, not in the response.
            (_, Code::Internal) => {
                tracing::error!(error = %err, "internal error");
                "internal error".to_owned()
            }
            (Error::Database(_), Code::Unavailable) => {
                tracing::warn!(error = %err, "database unavailable");
                "database unavailable".to_owned()
            }
            _ => truncate(&err.to_string(), MAX_MESSAGE_BYTES),
        };
        let mut metadata = HashMap::new();
        match &err {
            Error::NotFound { resource, id } => {
                metadata.insert("resource".to_owned(), (*resource).to_owned());
                metadata.insert("id".to_owned(), id.to_string());
            }
            Error::Merged { id, merged_into } => {
                metadata.insert("resource".to_owned(), "customer".to_owned());
                metadata.insert("id".to_owned(), id.to_string());
                metadata.insert("merged_into".to_owned(), merged_into.to_string());
            }
            Error::RequestIdReused {
                resource,
                request_id,
            } => {
                metadata.insert("resource".to_owned(), (*resource).to_owned());
                metadata.insert("request_id".to_owned(), request_id.clone());
            }
            _ => {}
        }
        let mut details = ErrorDetails::new();
        match &err {
            Error::PermissionDenied { required, .. } => {
                metadata.insert("required_role".to_owned(), required.to_string());
            }
            Error::RateLimited { retry_after, .. } => {
                metadata.insert(
                    "retry_after_ms".to_owned(),
                    retry_after.as_millis().max(1).to_string(),
                );
                details.set_retry_info(Some(*retry_after));
            }
            _ => {}
        }
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        if let Error::InvalidArgument(violations) = &err {
            details.set_bad_request(
                violations
                    .iter()
                    .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
                    .collect::<Vec<_>>(),
            );
        }
        Status::with_error_details(code, message, details)
    }
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for Error {
    fn from(err: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        Error::Unavailable {
            reason: "DATABASE_UNAVAILABLE",
            message: format!("cannot get a database connection: {err}"),
        }
    }
}

/// Most violations listed in one status; the rest are summed up in a last entry, so a
/// request with thousands of bad items still gets a status every client accepts
/// (grpc-core refuses response metadata over 8 KiB).
pub const MAX_VIOLATIONS: usize = 12;
/// Most violations listed for the items of one repeated field (`customer_ids[3]`,
/// `customer_ids[7]`, ...), so that a long bad list cannot hide another bad field.
const MAX_PER_FIELD: usize = 3;

/// The field a violation's path names, without item indexes: `keywords[3]` ->
/// `keywords`.
fn field_root(path: &str) -> &str {
    path.split('[').next().unwrap_or(path)
}

/// Longest field path kept in a violation, in bytes.
const MAX_FIELD_BYTES: usize = 100;
/// Longest description kept in a violation, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 160;
/// Longest status message sent, in bytes (the `grpc-message` header, which is
/// percent-encoded: up to three times longer on the wire).
const MAX_MESSAGE_BYTES: usize = 512;
/// Characters of a client's value quoted back in an error.
pub const QUOTE_CHARS: usize = 40;

/// A client's value quoted for an error message: at most [`QUOTE_CHARS`] characters,
/// Debug-escaped, with "…" when cut. Error messages never echo a whole input.
pub fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        Some((i, _)) => format!("{:?}…", &value[..i]),
        None => format!("{value:?}"),
    }
}

/// `s` cut to at most `max` bytes on a character boundary, with "…" when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Collects every invalid field of a request before failing, so a client learns
/// about all its mistakes at once (the first [`MAX_VIOLATIONS`] of them, and how many
/// more there were).
#[derive(Debug, Default)]
pub struct Violations {
    listed: Vec<Violation>,
    omitted: usize,
}

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is invalid.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        let field = field.into();
        let same_field = self
            .listed
            .iter()
            .filter(|v| field_root(&v.field) == field_root(&field))
            .count();
        if self.listed.len() >= MAX_VIOLATIONS || same_field >= MAX_PER_FIELD {
            self.omitted += 1;
            return;
        }
        self.listed.push(Violation {
            field: truncate(&field, MAX_FIELD_BYTES),
            description: truncate(&description.into(), MAX_DESCRIPTION_BYTES),
        });
    }

    /// Records the violations of a nested check, if it failed with INVALID_ARGUMENT.
    pub fn absorb<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(Error::InvalidArgument(vs)) => {
                for v in vs {
                    self.add(v.field, v.description);
                }
                None
            }
            Err(other) => {
                self.add("", other.to_string());
                None
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    /// `Ok(value)` when nothing was recorded, INVALID_ARGUMENT with all of them otherwise.
    pub fn finish<T>(self, value: T) -> Result<T> {
        if self.listed.is_empty() {
            Ok(value)
        } else {
            Err(Error::InvalidArgument(self.into_inner()))
        }
    }

    /// Takes the recorded violations out; past [`MAX_VIOLATIONS`], a last entry with an
    /// empty field says how many more there were.
    pub fn into_inner(mut self) -> Vec<Violation> {
        if self.omitted > 0 {
            self.listed.push(Violation {
                field: String::new(),
                description: format!("and {} more violations not listed", self.omitted),
            });
        }
        self.listed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quote_keeps_a_short_escaped_prefix() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "字".repeat(1000);
        let q = quote(&long);
        assert_eq!(q, format!("{:?}…", "字".repeat(QUOTE_CHARS)));
    }

    #[test]
    fn truncate_cuts_on_char_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        let t = truncate(&"é".repeat(100), 11);
        assert!(t.len() <= 11, "{t}");
        assert!(t.ends_with('…'));
    }

    #[test]
    fn thousands_of_violations_make_a_small_status() {
        let mut v = Violations::new();
        for i in 0..10_000 {
            v.add(format!("f{i}_{}", "x".repeat(1000)), "y".repeat(100_000));
        }
        let err = v.finish(()).unwrap_err();
        let Error::InvalidArgument(listed) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(listed.len(), MAX_VIOLATIONS + 1);
        assert_eq!(
            listed.last().unwrap().description,
            format!("and {} more violations not listed", 10_000 - MAX_VIOLATIONS)
        );
        let status = Status::from(err);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        // Message (percent-encoded, at most 3x) plus details (base64, 4/3x) stay under
        // grpc-core's 8 KiB metadata limit.
        assert!(
            status.details().len() < 4 * 1024,
            "{}",
            status.details().len()
        );
    }

    #[test]
    fn a_merged_customer_is_not_found_naming_the_survivor() {
        let status = Status::from(Error::Merged {
            id: 7,
            merged_into: 3,
        });
        assert_eq!(status.code(), Code::NotFound);
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "CUSTOMER_MERGED");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["merged_into"], "3");
        assert_eq!(info.metadata["id"], "7");
        assert_eq!(info.metadata["resource"], "customer");
        assert!(status.message().contains("merged into customer 3"));
    }

    #[test]
    fn a_long_bad_list_does_not_hide_another_bad_field() {
        let mut v = Violations::new();
        for i in 0..900 {
            v.add(format!("customer_ids[{i}]"), "must be a positive id");
        }
        v.add("time_zone", "\"X\" is not a known IANA time zone");
        let fields: Vec<String> = v.into_inner().into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "customer_ids[0]",
                "customer_ids[1]",
                "customer_ids[2]",
                "time_zone",
                ""
            ]
        );
    }
}

#[cfg(test)]
mod connection_error_tests {
    use diesel::result::{DatabaseErrorKind, Error as D};
    use std::io::ErrorKind;

    use super::*;

    #[test]
    fn every_caller_of_a_failed_batch_gets_the_same_code() {
        let away = Error::Unavailable {
            reason: "DATABASE_UNAVAILABLE",
            message: "pool timed out".into(),
        };
        let copy = away.for_another_caller();
        assert_eq!(copy.code_and_reason(), away.code_and_reason());
        assert!(copy.to_string().contains("pool timed out"));
        let lost = Error::Database(D::BrokenTransactionManager);
        assert_eq!(
            lost.for_another_caller().code_and_reason().0,
            lost.code_and_reason().0
        );
        assert!(
            !lost.is_safe_to_replay(),
            "a lost transaction may have committed"
        );
        let dup = Error::Database(D::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new("dup".to_owned()),
        ));
        assert!(dup.is_safe_to_replay());
    }

    /// A `mysql_async` error as diesel-async 0.9 hands it over (`ErrorHelper`).
    fn via_diesel_async(e: mysql_async::Error) -> D {
        match e {
            mysql_async::Error::Server(e) => {
                D::DatabaseError(DatabaseErrorKind::Unknown, Box::new(e.message))
            }
            e => D::DatabaseError(DatabaseErrorKind::Unknown, Box::new(e.to_string())),
        }
    }

    fn code(e: D) -> Code {
        Error::Database(e).code_and_reason().0
    }

    fn io(kind: ErrorKind) -> mysql_async::Error {
        mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::from(kind)))
    }

    fn server(code: u16, message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: message.to_owned(),
            state: "HY000".to_owned(),
        })
    }

    #[test]
    fn connection_failures_are_unavailable() {
        for e in [
            io(ErrorKind::UnexpectedEof),
            io(ErrorKind::ConnectionReset),
            io(ErrorKind::ConnectionRefused),
            io(ErrorKind::ConnectionAborted),
            io(ErrorKind::BrokenPipe),
            io(ErrorKind::TimedOut),
            mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed),
            mysql_async::Error::Driver(mysql_async::DriverError::PacketOutOfOrder),
            mysql_async::Error::Driver(mysql_async::DriverError::UnexpectedPacket {
                payload: vec![1],
            }),
            mysql_async::Error::Driver(mysql_async::DriverError::PoolDisconnected),
            server(1053, "Server shutdown in progress"),
            server(1927, "Connection was killed"),
        ] {
            let text = e.to_string();
            assert_eq!(code(via_diesel_async(e)), Code::Unavailable, "{text}");
        }
        assert_eq!(code(D::BrokenTransactionManager), Code::Unavailable);
        assert_eq!(
            code(D::DatabaseError(
                DatabaseErrorKind::ClosedConnection,
                Box::new(String::new())
            )),
            Code::Unavailable
        );
        assert_eq!(
            code(D::RollbackErrorOnCommit {
                rollback_error: Box::new(via_diesel_async(io(ErrorKind::UnexpectedEof))),
                commit_error: Box::new(via_diesel_async(io(ErrorKind::BrokenPipe))),
            }),
            Code::Unavailable
        );
        let status = Status::from(Error::Database(via_diesel_async(io(ErrorKind::BrokenPipe))));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status
                .get_error_details()
                .error_info()
                .map(|i| i.reason.clone()),
            Some("DATABASE_UNAVAILABLE".to_owned())
        );
    }

    #[test]
    fn statement_errors_stay_internal() {
        for e in [
            server(1064, "You have an error in your SQL syntax"),
            server(1146, "Table 'crm.nope' doesn't exist"),
            // Only a broken connection counts, not any driver error.
            mysql_async::Error::Driver(mysql_async::DriverError::PacketTooLarge),
            mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::other(
                "packet too large",
            ))),
        ] {
            let text = e.to_string();
            assert_eq!(code(via_diesel_async(e)), Code::Internal, "{text}");
        }
        assert_eq!(code(D::NotFound), Code::Internal);
    }

    #[test]
    fn transaction_conflicts_are_aborted() {
        for e in [
            server(
                1213,
                "Deadlock found when trying to get lock; try restarting transaction",
            ),
            server(
                1205,
                "Lock wait timeout exceeded; try restarting transaction",
            ),
        ] {
            let text = e.to_string();
            let e = Error::Database(via_diesel_async(e));
            assert!(e.is_transaction_conflict(), "{text}");
            let status = Status::from(e);
            assert_eq!(status.code(), Code::Aborted, "{text}");
            assert_eq!(
                status
                    .get_error_details()
                    .error_info()
                    .map(|i| i.reason.clone()),
                Some("TRANSACTION_CONFLICT".to_owned())
            );
        }
        assert!(
            !Error::Database(via_diesel_async(server(1064, "syntax"))).is_transaction_conflict()
        );
    }
}

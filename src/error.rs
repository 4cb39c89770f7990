//! The one domain error of the service and the stable reasons it is reported with.
//!
//! Policy: storage and validation return [`Error`]; handlers turn it into a gRPC status
//! with `?` through the transport's one mapping (`crate::grpc::status`), the only place
//! codes, `ErrorInfo` reasons and `BadRequest` violations are chosen. This module names
//! no transport type. `anyhow` is used only at the edges (startup in `main`).

use crate::model::role::Role;

/// Domain of every `google.rpc.ErrorInfo` this service sends.
pub const ERROR_DOMAIN: &str = "crm.v1";

/// The stable `google.rpc.ErrorInfo.reason` of an error, sent in SCREAMING_SNAKE_CASE
/// (`Reason::CustomerNotFound` is `CUSTOMER_NOT_FOUND`). Clients branch on these
/// strings: a variant's name never changes once released.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumString,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// One or more fields of the request are invalid (BadRequest lists them).
    InvalidArgument,
    /// A customer id that does not exist.
    CustomerNotFound,
    /// A communication id that does not exist.
    CommunicationNotFound,
    /// A service ticket id that does not exist.
    ServiceTicketNotFound,
    /// A transaction id that does not exist.
    TransactionNotFound,
    /// A business-hours id that does not exist.
    BusinessHoursNotFound,
    /// Any other resource that does not exist.
    NotFound,
    /// The customer was merged into another one.
    CustomerMerged,
    /// The request's etag is stale.
    EtagMismatch,
    /// An idempotency key was used before for a different request.
    RequestIdReused,
    /// A business-hours name is taken.
    BusinessHoursNameTaken,
    /// The target's satisfaction survey already holds a different answer.
    SurveyAlreadyAnswered,
    /// The target's satisfaction survey was recorded as sent at another time.
    SurveyAlreadySent,
    /// A ticket cannot be resolved or closed without a solution.
    SolutionRequired,
    /// `seed-demo` refuses a database that holds data.
    DatabaseNotEmpty,
    /// A caller's per-second allowance is used up.
    RateLimited,
    /// The server-wide in-flight cap is reached.
    ServerOverloaded,
    /// One caller's share of the in-flight cap is reached.
    CallerOverloaded,
    /// One connection's share of the in-flight cap is reached.
    ConnectionOverloaded,
    /// A request message is over the size limit.
    MessageTooLarge,
    /// A stream's client stopped sending or reading.
    StreamStalled,
    /// Too many follow streams are open.
    TooManyFollowStreams,
    /// No bearer token was sent.
    MissingCredentials,
    /// The authorization header is not `Bearer <token>`.
    MalformedCredentials,
    /// The bearer token is not known to this server.
    InvalidToken,
    /// The call needs the reader role.
    ReaderRoleRequired,
    /// The call needs the writer role.
    WriterRoleRequired,
    /// The call needs the admin role.
    AdminRoleRequired,
    /// A result does not fit its type (a money total past int64).
    AmountOutOfRange,
    /// The call's deadline passed.
    DeadlineExceeded,
    /// The client did not finish sending its request in time.
    RequestBodyTimeout,
    /// The database cannot be reached.
    DatabaseUnavailable,
    /// The server is shutting down.
    ShuttingDown,
    /// A follow stream fell behind new events.
    FollowLagged,
    /// The database still refused a transaction after the retries.
    TransactionConflict,
    /// A bug or an unexpected state.
    Internal,
}

impl Reason {
    /// The reason as sent in `ErrorInfo.reason`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

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
        reason: Reason,
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
        reason: Reason,
        /// Human-readable explanation.
        message: String,
    },
    /// A server limit was reached.
    #[error("{message}")]
    ResourceExhausted {
        /// Stable UPPER_SNAKE reason.
        reason: Reason,
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
        reason: Reason,
        /// Human-readable explanation.
        message: String,
    },
    /// The caller is known but its role does not allow the call.
    #[error("{message}")]
    PermissionDenied {
        /// The least role that may make the call.
        required: Role,
        /// Human-readable explanation.
        message: String,
    },
    /// A result the request asks for cannot be represented (e.g. a sum past int64).
    #[error("{message}")]
    OutOfRange {
        /// Stable UPPER_SNAKE reason.
        reason: Reason,
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
        reason: Reason,
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
        match self {
            Error::Unavailable { reason, message } => Error::Unavailable {
                reason: *reason,
                message: message.clone(),
            },
            // The driver's text stays in the log, as for the first caller.
            Error::Database(e) if is_connection_error(e) => Error::Unavailable {
                reason: Reason::DatabaseUnavailable,
                message: "database unavailable".to_owned(),
            },
            Error::DeadlineExceeded(_) | Error::RequestBodyTimeout(_) => {
                Error::DeadlineExceeded(self.to_string())
            }
            Error::ResourceExhausted { reason, .. } => Error::ResourceExhausted {
                reason: *reason,
                message: self.to_string(),
            },
            Error::RateLimited { .. } => Error::ResourceExhausted {
                reason: Reason::RateLimited,
                message: self.to_string(),
            },
            _ => Error::Internal(self.to_string()),
        }
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

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for Error {
    fn from(err: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        Error::Unavailable {
            reason: Reason::DatabaseUnavailable,
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
    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn reasons_keep_their_wire_strings() {
        let all: Vec<&str> = Reason::iter().map(Reason::as_str).collect();
        assert_eq!(
            all,
            [
                "INVALID_ARGUMENT",
                "CUSTOMER_NOT_FOUND",
                "COMMUNICATION_NOT_FOUND",
                "SERVICE_TICKET_NOT_FOUND",
                "TRANSACTION_NOT_FOUND",
                "BUSINESS_HOURS_NOT_FOUND",
                "NOT_FOUND",
                "CUSTOMER_MERGED",
                "ETAG_MISMATCH",
                "REQUEST_ID_REUSED",
                "BUSINESS_HOURS_NAME_TAKEN",
                "SURVEY_ALREADY_ANSWERED",
                "SURVEY_ALREADY_SENT",
                "SOLUTION_REQUIRED",
                "DATABASE_NOT_EMPTY",
                "RATE_LIMITED",
                "SERVER_OVERLOADED",
                "CALLER_OVERLOADED",
                "CONNECTION_OVERLOADED",
                "MESSAGE_TOO_LARGE",
                "STREAM_STALLED",
                "TOO_MANY_FOLLOW_STREAMS",
                "MISSING_CREDENTIALS",
                "MALFORMED_CREDENTIALS",
                "INVALID_TOKEN",
                "READER_ROLE_REQUIRED",
                "WRITER_ROLE_REQUIRED",
                "ADMIN_ROLE_REQUIRED",
                "AMOUNT_OUT_OF_RANGE",
                "DEADLINE_EXCEEDED",
                "REQUEST_BODY_TIMEOUT",
                "DATABASE_UNAVAILABLE",
                "SHUTTING_DOWN",
                "FOLLOW_LAGGED",
                "TRANSACTION_CONFLICT",
                "INTERNAL",
            ]
        );
        for r in Reason::iter() {
            assert_eq!(r.to_string(), r.as_str());
            assert_eq!(r.as_str().parse::<Reason>().unwrap(), r);
        }
    }

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

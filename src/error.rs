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
    /// An optimistic-concurrency check failed (stale etag).
    #[error("{0}")]
    Aborted(String),
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
    /// The call's deadline passed before the work finished.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
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

fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
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

    fn code_and_reason(&self) -> (Code, &'static str) {
        match self {
            Error::InvalidArgument(_) => (Code::InvalidArgument, "INVALID_ARGUMENT"),
            Error::NotFound { resource, .. } => (Code::NotFound, not_found_reason(resource)),
            Error::Aborted(_) => (Code::Aborted, "ETAG_MISMATCH"),
            Error::FailedPrecondition { reason, .. } => (Code::FailedPrecondition, reason),
            Error::ResourceExhausted { reason, .. } => (Code::ResourceExhausted, reason),
            Error::DeadlineExceeded(_) => (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            Error::Unavailable { reason, .. } => (Code::Unavailable, reason),
            Error::Database(e) if is_connection_error(e) => {
                (Code::Unavailable, "DATABASE_UNAVAILABLE")
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
        _ => "NOT_FOUND",
    }
}

fn is_connection_error(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error as D};
    matches!(
        e,
        D::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | D::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
            | D::BrokenTransactionManager
    )
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let (code, reason) = err.code_and_reason();
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
            _ => err.to_string(),
        };
        let mut metadata = HashMap::new();
        if let Error::NotFound { resource, id } = &err {
            metadata.insert("resource".to_owned(), (*resource).to_owned());
            metadata.insert("id".to_owned(), id.to_string());
        }
        let mut details = ErrorDetails::new();
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

/// Collects every invalid field of a request before failing, so a client learns
/// about all its mistakes at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is invalid.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Records the violations of a nested check, if it failed with INVALID_ARGUMENT.
    pub fn absorb<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(Error::InvalidArgument(vs)) => {
                self.0.extend(vs);
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
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded, INVALID_ARGUMENT with all of them otherwise.
    pub fn finish<T>(self, value: T) -> Result<T> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }

    /// Takes the recorded violations out.
    pub fn into_inner(self) -> Vec<Violation> {
        self.0
    }
}

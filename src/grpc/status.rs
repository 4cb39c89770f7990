//! The one mapping from the domain [`Error`] to a gRPC status: its code, the
//! `google.rpc.ErrorInfo` reason and metadata, `RetryInfo` and `BadRequest` violations.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::error::{
    is_connection_error, is_transaction_conflict, truncate, Error, Reason, ERROR_DOMAIN,
};
use crate::model::role::Role;

/// Longest status message sent, in bytes (the `grpc-message` header, which is
/// percent-encoded: up to three times longer on the wire).
const MAX_MESSAGE_BYTES: usize = 512;

/// The code and the reason of an error: the only place either is chosen.
pub(crate) fn code_and_reason(err: &Error) -> (Code, Reason) {
    match err {
        Error::InvalidArgument(_) => (Code::InvalidArgument, Reason::InvalidArgument),
        Error::NotFound { resource, .. } => (Code::NotFound, not_found_reason(resource)),
        Error::Merged { .. } => (Code::NotFound, Reason::CustomerMerged),
        Error::Aborted(_) => (Code::Aborted, Reason::EtagMismatch),
        Error::RequestIdReused { .. } => (Code::FailedPrecondition, Reason::RequestIdReused),
        Error::AlreadyExists { reason, .. } => (Code::AlreadyExists, *reason),
        Error::FailedPrecondition { reason, .. } => (Code::FailedPrecondition, *reason),
        Error::ResourceExhausted { reason, .. } => (Code::ResourceExhausted, *reason),
        Error::OutOfRange { reason, .. } => (Code::OutOfRange, *reason),
        Error::RateLimited { .. } => (Code::ResourceExhausted, Reason::RateLimited),
        Error::Unauthenticated { reason, .. } => (Code::Unauthenticated, *reason),
        Error::PermissionDenied { required, .. } => (
            Code::PermissionDenied,
            match required {
                Role::Reader => Reason::ReaderRoleRequired,
                Role::Writer => Reason::WriterRoleRequired,
                Role::Admin => Reason::AdminRoleRequired,
            },
        ),
        Error::DeadlineExceeded(_) => (Code::DeadlineExceeded, Reason::DeadlineExceeded),
        Error::RequestBodyTimeout(_) => (Code::DeadlineExceeded, Reason::RequestBodyTimeout),
        Error::Unavailable { reason, .. } => (Code::Unavailable, *reason),
        Error::Database(e) if is_connection_error(e) => {
            (Code::Unavailable, Reason::DatabaseUnavailable)
        }
        // Still conflicting after the retries of `db::retry_conflicts`: ABORTED is
        // gRPC's "retry at a higher level".
        Error::Database(e) if is_transaction_conflict(e) => {
            (Code::Aborted, Reason::TransactionConflict)
        }
        Error::Database(_) | Error::Internal(_) => (Code::Internal, Reason::Internal),
    }
}

fn not_found_reason(resource: &str) -> Reason {
    match resource {
        "customer" => Reason::CustomerNotFound,
        "communication" => Reason::CommunicationNotFound,
        "service ticket" => Reason::ServiceTicketNotFound,
        "transaction" => Reason::TransactionNotFound,
        "business hours" => Reason::BusinessHoursNotFound,
        _ => Reason::NotFound,
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let (code, reason) = code_and_reason(&err);
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
        details.set_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::error::{Violations, MAX_VIOLATIONS};

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
}

#[cfg(test)]
mod connection_error_tests {
    use diesel::result::{DatabaseErrorKind, Error as D};
    use std::io::ErrorKind;

    use super::*;

    #[test]
    fn every_caller_of_a_failed_batch_gets_the_same_code() {
        let away = Error::Unavailable {
            reason: Reason::DatabaseUnavailable,
            message: "pool timed out".into(),
        };
        let copy = away.for_another_caller();
        assert_eq!(code_and_reason(&copy), code_and_reason(&away));
        assert!(copy.to_string().contains("pool timed out"));
        let lost = Error::Database(D::BrokenTransactionManager);
        assert_eq!(
            code_and_reason(&lost.for_another_caller()).0,
            code_and_reason(&lost).0
        );
        assert!(
            !lost.is_safe_to_replay(),
            "a lost transaction may have committed"
        );
        for first in [
            Error::DeadlineExceeded("x".into()),
            Error::RequestBodyTimeout("x".into()),
            Error::RateLimited {
                retry_after: std::time::Duration::from_millis(5),
                message: "slow down".into(),
            },
            Error::ResourceExhausted {
                reason: Reason::TooManyFollowStreams,
                message: "x".into(),
            },
            Error::Database(via_diesel_async(io(ErrorKind::BrokenPipe))),
            Error::Internal("x".into()),
        ] {
            let copy = first.for_another_caller();
            assert_eq!(
                code_and_reason(&copy).0,
                code_and_reason(&first).0,
                "{first:?}"
            );
        }
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
        code_and_reason(&Error::Database(e)).0
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

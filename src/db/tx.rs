//! Write transactions that are stored whole or not at all, on one server as on a Galera
//! cluster.
//!
//! A Galera node may abort a transaction between two of its statements (a conflicting
//! write set from another node won certification). The client then learns of it on its
//! next statement, unless that next command is one the protocol gives no answer to (a
//! prepared statement's close): the error is lost, the session is back in autocommit,
//! and every later statement of the "transaction" is stored on its own, while COMMIT
//! answers OK. The call would be acknowledged with only half its writes.
//!
//! [`transaction`] closes that gap on MySQL-family databases: the session runs the
//! transaction with `autocommit = 0`, so statements after an abort open a new
//! transaction instead of being stored one by one, and a savepoint taken first is
//! released just before COMMIT: an aborted transaction has lost its savepoint, so the
//! release fails, everything after the abort is rolled back, and the attempt ends as a
//! retryable conflict. Begin and commit carry the guard's statements in the same round
//! trip, so the guard costs no extra one.
//!
//! SQLite cannot abort a transaction from outside; it runs diesel's own transaction.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncConnection;

use super::dialect::{Backend, Conn};
use crate::error::{Error, Result};

/// Opens the guarded transaction: later statements of an aborted one cannot autocommit.
const BEGIN: &str = "SET autocommit = 0; START TRANSACTION; SAVEPOINT crm_whole";
/// [`BEGIN`] at READ COMMITTED, for this transaction only (`SET TRANSACTION` without
/// `SESSION` applies to the next one; the session keeps its level).
const BEGIN_READ_COMMITTED: &str = "SET autocommit = 0; \
     SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION; SAVEPOINT crm_whole";
/// Stores the transaction only if it is still the one [`BEGIN`] opened.
const COMMIT: &str = "RELEASE SAVEPOINT crm_whole; COMMIT; SET autocommit = 1";
/// Discards whatever the session holds and restores autocommit.
const ROLLBACK: &str = "ROLLBACK; SET autocommit = 1";

/// Runs `body` in one write transaction on `conn` and commits it; rolls back on any
/// error. On MySQL the commit also fails (as a retryable transaction conflict, see
/// [`Error::is_transaction_conflict`]) when the database aborted the transaction before
/// its end, and nothing of it is stored.
pub async fn transaction<C, T, F>(conn: &mut C, body: F) -> Result<T>
where
    C: Conn,
    F: AsyncFnOnce(&mut C) -> Result<T>,
{
    guarded(conn, BEGIN, body).await
}

/// [`transaction`] at READ COMMITTED on MySQL (SQLite has one writer and no levels).
///
/// InnoDB then takes no gap or next-key locks for the transaction's searches, scans and
/// updates: it locks only the rows it changes (or reads `FOR UPDATE`), and releases rows
/// a scan examined but did not match. Only for a transaction that first locks, by
/// primary key, the rows every writer of the data it reads locks too (e.g. the customers
/// of a merge): each statement then sees the latest committed rows, and none it depends
/// on can change under it. Needs `binlog_format` MIXED or ROW where the binary log is on
/// (MariaDB's default is MIXED), as InnoDB refuses READ COMMITTED writes under STATEMENT.
pub async fn transaction_read_committed<C, T, F>(conn: &mut C, body: F) -> Result<T>
where
    C: Conn,
    F: AsyncFnOnce(&mut C) -> Result<T>,
{
    guarded(conn, BEGIN_READ_COMMITTED, body).await
}

/// The guarded transaction of either level, opened by `begin` (see the module header).
async fn guarded<C, T, F>(conn: &mut C, begin: &str, body: F) -> Result<T>
where
    C: Conn,
    F: AsyncFnOnce(&mut C) -> Result<T>,
{
    if C::BACKEND == Backend::Sqlite {
        return sqlite_transaction(conn, body).await;
    }
    // raw SQL: BEGIN with per-call isolation/lock options, COMMIT and ROLLBACK by text
    conn.batch_execute(begin).await?;
    let out = match body(conn).await {
        Ok(value) => match conn.batch_execute(COMMIT).await {
            Ok(()) => return Ok(value),
            Err(e) => Err(commit_error(e)),
        },
        Err(e) => Err(e),
    };
    // The work failed or was refused: nothing of it may stay. A failure here leaves the
    // connection in an unknown state; the error then says so and the pool drops it.
    conn.batch_execute(ROLLBACK).await?;
    out
}

/// SQLite: diesel's transaction (BEGIN ... COMMIT, ROLLBACK on error).
async fn sqlite_transaction<C, T, F>(conn: &mut C, body: F) -> Result<T>
where
    C: Conn,
    F: AsyncFnOnce(&mut C) -> Result<T>,
{
    use diesel_async::TransactionManager;
    type Tm<C> = <C as AsyncConnection>::TransactionManager;
    Tm::<C>::begin_transaction(conn).await?;
    match body(conn).await {
        Ok(value) => match Tm::<C>::commit_transaction(conn).await {
            Ok(()) => Ok(value),
            Err(e) => {
                let _ = Tm::<C>::rollback_transaction(conn).await;
                Err(e.into())
            }
        },
        Err(e) => {
            Tm::<C>::rollback_transaction(conn).await?;
            Err(e)
        }
    }
}

/// A retryable conflict found by the service itself (a row changed between its read and
/// its conditional write): [`super::retry_conflicts`] runs the transaction again.
pub fn conflict(message: String) -> Error {
    Error::Database(DieselError::DatabaseError(
        DatabaseErrorKind::SerializationFailure,
        Box::new(message),
    ))
}

/// The error of a failed guarded COMMIT: a lost savepoint means the database aborted the
/// transaction earlier (a retryable conflict); anything else is as the database said.
fn commit_error(e: DieselError) -> Error {
    match &e {
        DieselError::DatabaseError(_, info)
            if info.message().contains("crm_whole")
                && info.message().contains("does not exist") =>
        {
            conflict(
                "the database aborted the transaction before its end (a conflicting write \
                 on another cluster node); nothing of it was stored"
                    .to_owned(),
            )
        }
        _ => Error::Database(e),
    }
}

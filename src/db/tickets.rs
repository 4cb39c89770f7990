//! Service tickets: idempotent create, update with optimistic concurrency (resolving
//! sets `resolve_time`), and newest-first keyset listing by customer and status.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::service_tickets;
use super::{create_for_customer, ensure_customer, Db, Dialect as _};
use crate::error::{Error, Result};
use crate::with_conn;

/// `TicketStatus` values as stored.
pub mod status {
    /// Waiting for a solution.
    pub const OPEN: i32 = 1;
    /// Solved.
    pub const RESOLVED: i32 = 2;
    /// Closed.
    pub const CLOSED: i32 = 3;
}

/// A stored service ticket.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = service_tickets)]
pub struct TicketRow {
    /// Id.
    pub id: i64,
    /// Owner.
    pub customer_id: i64,
    /// The problem.
    pub issue: String,
    /// The solution.
    pub solution: String,
    /// `TicketStatus` value.
    pub status: i32,
    /// When it was opened (UTC).
    pub open_time: NaiveDateTime,
    /// When it was first resolved or closed.
    pub resolve_time: Option<NaiveDateTime>,
    /// When it was recorded.
    pub create_time: NaiveDateTime,
    /// Last change.
    pub update_time: NaiveDateTime,
    /// Optimistic-concurrency version; the etag.
    pub version: i64,
}

/// A new ticket, validated.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = service_tickets)]
pub struct TicketInsertForm {
    /// Owner.
    pub customer_id: i64,
    /// The problem.
    pub issue: String,
    /// The solution, if already known.
    pub solution: String,
    /// Initial status.
    pub status: i32,
    /// Open time.
    pub open_time: NaiveDateTime,
    /// Set when created already resolved.
    pub resolve_time: Option<NaiveDateTime>,
    /// Record time.
    pub create_time: NaiveDateTime,
    /// Record time.
    pub update_time: NaiveDateTime,
    /// Starts at 1.
    pub version: i64,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// Changes to a ticket; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TicketUpdateForm {
    /// New issue text.
    pub issue: Option<String>,
    /// New solution.
    pub solution: Option<String>,
    /// New status.
    pub status: Option<i32>,
}

#[derive(AsChangeset)]
#[diesel(table_name = service_tickets)]
struct TicketChangeset {
    issue: Option<String>,
    solution: Option<String>,
    status: Option<i32>,
    resolve_time: Option<Option<NaiveDateTime>>,
    update_time: NaiveDateTime,
    version: i64,
}

macro_rules! load_ticket {
    ($conn:expr, $id:expr) => {
        async {
            let row: Option<TicketRow> = service_tickets::table
                .find($id)
                .select(TicketRow::as_select())
                .first($conn)
                .await
                .optional()?;
            row.ok_or(Error::NotFound {
                resource: "service ticket",
                id: $id,
            })
        }
    };
}

/// Opens a ticket; a reused `request_id` returns the first result.
pub async fn create(db: &Db, form: &TicketInsertForm) -> Result<TicketRow> {
    create_for_customer!(db, service_tickets, TicketRow, form)
}

/// Applies `changes` when `expected_version` (if any) is current. Moving to RESOLVED
/// or CLOSED for the first time sets `resolve_time`; reopening clears it. Resolving
/// requires a solution.
pub async fn update(
    db: &Db,
    id: i64,
    expected_version: Option<i64>,
    changes: &TicketUpdateForm,
    now: NaiveDateTime,
) -> Result<TicketRow> {
    with_conn!(db, write, |conn| {
        conn.transaction(async |conn| {
            let current = load_ticket!(conn, id).await?;
            if let Some(expected) = expected_version {
                if expected != current.version {
                    return Err(Error::Aborted(format!(
                        "service ticket {id} was changed concurrently: etag {expected} is stale, current is {}",
                        current.version
                    )));
                }
            }
            let new_status = changes.status.unwrap_or(current.status);
            let solution = changes.solution.as_deref().unwrap_or(&current.solution);
            if new_status != status::OPEN && solution.trim().is_empty() {
                return Err(Error::FailedPrecondition {
                    reason: "SOLUTION_REQUIRED",
                    message: format!("service ticket {id} needs a solution before it is resolved or closed"),
                });
            }
            let resolve_time = match (new_status, current.resolve_time) {
                (status::OPEN, Some(_)) => Some(None),
                (status::RESOLVED | status::CLOSED, None) => Some(Some(now)),
                _ => None,
            };
            let changeset = TicketChangeset {
                issue: changes.issue.clone(),
                solution: changes.solution.clone(),
                status: changes.status,
                resolve_time,
                update_time: now,
                version: current.version + 1,
            };
            let updated = diesel::update(
                service_tickets::table
                    .filter(service_tickets::id.eq(id))
                    .filter(service_tickets::version.eq(current.version)),
            )
            .set(&changeset)
            .execute(conn)
            .await?;
            if updated != 1 {
                return Err(Error::Aborted(format!(
                    "service ticket {id} was changed concurrently; read it again"
                )));
            }
            load_ticket!(conn, id).await
        })
        .await
    })
}

/// Filters of a ticket listing.
#[derive(Debug, Clone)]
pub struct TicketFilter {
    /// Owner; `None` for every customer.
    pub customer_id: Option<i64>,
    /// Status; `None` for any.
    pub status: Option<i32>,
}

/// One page, newest `open_time` first, strictly after the position `after`.
pub async fn list(
    db: &Db,
    filter: &TicketFilter,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<TicketRow>> {
    with_conn!(db, |conn| {
        if let Some(customer_id) = filter.customer_id {
            ensure_customer!(conn, customer_id).await?;
        }
        let mut query = service_tickets::table
            .select(TicketRow::as_select())
            .order((
                service_tickets::open_time.desc(),
                service_tickets::id.desc(),
            ))
            .limit(limit)
            .into_boxed();
        if let Some(customer_id) = filter.customer_id {
            query = query.filter(service_tickets::customer_id.eq(customer_id));
        }
        if let Some(s) = filter.status {
            query = query.filter(service_tickets::status.eq(s));
        }
        if let Some((t, id)) = after {
            query = query.filter(service_tickets::open_time.le(t)).filter(
                service_tickets::open_time
                    .lt(t)
                    .or(service_tickets::open_time
                        .eq(t)
                        .and(service_tickets::id.lt(id))),
            );
        }
        Ok(query.load(conn).await?)
    })
}

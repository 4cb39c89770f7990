//! Service tickets: idempotent create, update with optimistic concurrency (resolving
//! sets `resolve_time`), and newest-first keyset listing by customer and status.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::audit::{self, Change};
use super::query::{self, Table};
use super::schema::service_tickets;
use super::stored_time::StoredTime;
use super::{retry_conflicts, Conn as _, Db};
use crate::error::{Error, Result};
use crate::model::caller::Caller;
use crate::with_conn;

/// The service tickets table for the statement builders (pages by `open_time`).
pub const TICKETS: Table = Table {
    name: "service_tickets",
    resource: "service ticket",
    columns: "id, customer_id, issue, solution, status, open_time, resolve_time, \
              create_time, update_time, version",
    time: "open_time",
    has_channel: false,
    order: &["open_time", "id"],
};

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
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
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
    #[diesel(deserialize_as = StoredTime)]
    pub open_time: NaiveDateTime,
    /// When it was first resolved or closed.
    pub resolve_time: Option<NaiveDateTime>,
    /// When it was recorded.
    #[diesel(deserialize_as = StoredTime)]
    pub create_time: NaiveDateTime,
    /// Last change.
    #[diesel(deserialize_as = StoredTime)]
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
    /// Whether the request set `open_time` (else it is the record time, which a replay
    /// does not repeat).
    #[diesel(skip_insertion)]
    pub open_time_given: bool,
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

impl super::Stored<TicketRow> for TicketInsertForm {
    fn stored(&self, id: i64) -> TicketRow {
        TicketRow {
            id,
            customer_id: self.customer_id,
            issue: self.issue.clone(),
            solution: self.solution.clone(),
            status: self.status,
            open_time: self.open_time,
            resolve_time: self.resolve_time,
            create_time: self.create_time,
            update_time: self.update_time,
            version: self.version,
        }
    }

    /// The open time is compared always; issue, solution and status only while the
    /// ticket is as created (a replay after an update answers the ticket as it is now).
    fn replays(&self, row: &TicketRow) -> bool {
        self.customer_id == row.customer_id
            && (!self.open_time_given || self.open_time == row.open_time)
            && (row.version != 1
                || (self.issue == row.issue
                    && self.solution == row.solution
                    && self.status == row.status))
    }
}

impl super::CustomerRowForm for TicketInsertForm {
    type Row = TicketRow;
    const RESOURCE: &'static str = "service ticket";

    fn customer_id(&self) -> i64 {
        self.customer_id
    }

    fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    fn set_create_time(&mut self, at: NaiveDateTime) {
        self.create_time = at;
    }

    fn insert<'c>(
        &'c self,
        conn: super::AnyConn<'c>,
    ) -> futures_util::future::BoxFuture<'c, QueryResult<usize>> {
        conn.execute(diesel::insert_into(service_tickets::table).values(self))
    }

    fn by_request_id<'c>(
        conn: super::AnyConn<'c>,
        customer_id: i64,
        request_id: &'c str,
    ) -> futures_util::future::BoxFuture<'c, QueryResult<Option<TicketRow>>> {
        let query = service_tickets::table
            .filter(service_tickets::customer_id.eq(customer_id))
            .filter(service_tickets::request_id.eq(request_id))
            .select(super::dialect::columns::<TicketRow>());
        conn.first(query)
    }
}

/// Opens a ticket; a reused `request_id` returns the first result.
pub async fn create(db: &Db, form: &TicketInsertForm, caller: &Caller) -> Result<TicketRow> {
    // A retry runs again with a fresh record stamp (see `feed::check_commit_bound`).
    super::retry_conflicts(|| async {
        super::create_for_customer(db, form, caller, "CreateServiceTicket").await
    })
    .await
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
    caller: &Caller,
) -> Result<TicketRow> {
    retry_conflicts(|| async { with_conn!(db, write, |conn| {
        crate::db::tx::transaction(conn, async |conn| {
            let current: TicketRow = query::by_id(conn, &TICKETS, id).await?;
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
                    reason: crate::error::Reason::SolutionRequired,
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
                return Err(match expected_version {
                    // The caller named a version: the change it meant is gone.
                    Some(_) => Error::Aborted(format!(
                        "service ticket {id} was changed concurrently; read it again"
                    )),
                    // No version named: another write came between the read and this
                    // write; run again on the new version.
                    None => crate::db::tx::conflict(format!(
                        "service ticket {id} was changed concurrently"
                    )),
                });
            }
            let change = Change::new("UpdateServiceTicket", current.customer_id, id);
            audit::record(conn, caller, now, &[change]).await?;
            query::by_id(conn, &TICKETS, id).await
        })
        .await
    }) }).await
}

/// Filters of a ticket listing.
#[derive(Debug, Clone)]
pub struct TicketFilter {
    /// Owner; `None` for every customer.
    pub customer_id: Option<i64>,
    /// Status; `None` for any.
    pub status: Option<i32>,
}

/// The statement of one listing page: newest `open_time` first, strictly after `after`.
#[diesel::dsl::auto_type]
fn list_query(filter: &TicketFilter, after: Option<(NaiveDateTime, i64)>, limit: i64) -> _ {
    let customer: query::When<diesel::dsl::Eq<service_tickets::customer_id, i64>> = query::when(
        filter
            .customer_id
            .map(|c| service_tickets::customer_id.eq(c)),
    );
    let status: query::When<diesel::dsl::Eq<service_tickets::status, i32>> =
        query::when(filter.status.map(|s| service_tickets::status.eq(s)));
    let page: query::When<query::OlderThan<service_tickets::open_time, service_tickets::id>> =
        query::when(
            after.map(|a| query::older_than(service_tickets::open_time, service_tickets::id, a)),
        );
    let columns: <TicketRow as diesel::Selectable<diesel::mysql::Mysql>>::SelectExpression =
        super::dialect::columns::<TicketRow>();
    service_tickets::table
        .filter(customer)
        .filter(status)
        .filter(page)
        .order((
            service_tickets::open_time.desc(),
            service_tickets::id.desc(),
        ))
        .limit(limit)
        .select(columns)
}

/// One page, newest `open_time` first, strictly after the position `after`. With a
/// customer in the filter, NOT_FOUND unless that customer exists.
pub async fn list(
    db: &Db,
    filter: &TicketFilter,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<TicketRow>> {
    let page = list_query(filter, after, limit);
    with_conn!(db, |conn| {
        if let Some(customer_id) = filter.customer_id {
            query::ensure_customer(conn, customer_id).await?;
        }
        Ok(conn.any().load(page).await?)
    })
}

//! The timeline's reads: keyset pages of each source (communications, transactions,
//! service tickets) in `(occur_time, id)` order, and rows recorded since a watermark
//! for follow streams. Each call borrows a pooled connection for one short query.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::communications::{CommunicationRow, COMMUNICATION_COLUMNS};
use super::schema::{communications, service_tickets, transactions};
use super::sql::{load_sql, Bind, Sql};
use super::tickets::TicketRow;
use super::transactions::TransactionRow;
use super::Backend;
use super::Db;
use crate::error::Result;
use crate::with_conn;

/// What a timeline event is; also its tie-breaker rank after `(occur_time, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// A communication.
    Communications = 0,
    /// A transaction.
    Transactions = 1,
    /// A service ticket (by `open_time`).
    Tickets = 2,
}

impl Source {
    /// The source with this rank.
    pub fn from_rank(rank: i64) -> Option<Source> {
        match rank {
            0 => Some(Source::Communications),
            1 => Some(Source::Transactions),
            2 => Some(Source::Tickets),
            _ => None,
        }
    }
}

/// One row of any source.
#[derive(Debug, Clone)]
pub enum Event {
    /// A communication.
    Communication(CommunicationRow),
    /// A transaction.
    Transaction(TransactionRow),
    /// A service ticket.
    Ticket(TicketRow),
}

/// Position of an event in the total timeline order.
pub type Key = (NaiveDateTime, i64, Source);

impl Event {
    /// `(occur_time, id, source)`: the total order of the timeline.
    pub fn key(&self) -> Key {
        match self {
            Event::Communication(r) => (r.occur_time, r.id, Source::Communications),
            Event::Transaction(r) => (r.occur_time, r.id, Source::Transactions),
            Event::Ticket(r) => (r.open_time, r.id, Source::Tickets),
        }
    }

    /// When the row was recorded.
    pub fn create_time(&self) -> NaiveDateTime {
        match self {
            Event::Communication(r) => r.create_time,
            Event::Transaction(r) => r.create_time,
            Event::Ticket(r) => r.create_time,
        }
    }
}

/// Which events a timeline contains.
#[derive(Debug, Clone, Default)]
pub struct TimelineFilter {
    /// One customer, or `None` for all.
    pub customer_id: Option<i64>,
    /// Communication channels; empty for all.
    pub channels: Vec<i32>,
    /// Inclusive lower bound of `occur_time`.
    pub start: Option<NaiveDateTime>,
    /// Exclusive upper bound of `occur_time`.
    pub end: Option<NaiveDateTime>,
}

impl TimelineFilter {
    /// Whether `event` passes this filter, exactly as the reads of this module apply
    /// it: follow streams filter the hub's events of every customer in memory.
    pub fn matches(&self, event: &Event) -> bool {
        let (customer_id, channel) = match event {
            Event::Communication(r) => (r.customer_id, Some(r.channel)),
            Event::Transaction(r) => (r.customer_id, None),
            Event::Ticket(r) => (r.customer_id, None),
        };
        let time = event.key().0;
        self.customer_id.is_none_or(|c| c == customer_id)
            && channel.is_none_or(|c| self.channels.is_empty() || self.channels.contains(&c))
            && self.start.is_none_or(|s| time >= s)
            && self.end.is_none_or(|e| time < e)
    }
}

/// Where a page starts: strictly after `(time, id)` in the page's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    /// `occur_time` of the last row seen.
    pub time: NaiveDateTime,
    /// Id of the last row seen.
    pub id: i64,
}

/// Applies filters, the keyset bound and the order to a boxed query of `$table`,
/// whose time column is `$time`.
macro_rules! keyset {
    ($query:expr, $table:ident, $time:ident, $filter:expr, $after:expr, $descending:expr) => {{
        let mut q = $query;
        if let Some(c) = $filter.customer_id {
            q = q.filter($table::customer_id.eq(c));
        }
        if let Some(s) = $filter.start {
            q = q.filter($table::$time.ge(s));
        }
        if let Some(e) = $filter.end {
            q = q.filter($table::$time.lt(e));
        }
        match ($after, $descending) {
            // The redundant `>=` / `<=` bound gives the optimizer a plain range on the
            // (customer_id, time, id) index; the OR alone is planned as a ref scan.
            (Some(a), false) => {
                q = q.filter($table::$time.ge(a.time)).filter(
                    $table::$time
                        .gt(a.time)
                        .or($table::$time.eq(a.time).and($table::id.gt(a.id))),
                )
            }
            (Some(a), true) => {
                q = q.filter($table::$time.le(a.time)).filter(
                    $table::$time
                        .lt(a.time)
                        .or($table::$time.eq(a.time).and($table::id.lt(a.id))),
                )
            }
            (None, _) => {}
        }
        if $descending {
            q.order(($table::$time.desc(), $table::id.desc()))
        } else {
            q.order(($table::$time.asc(), $table::id.asc()))
        }
    }};
}

/// One keyset page of communications, hand-built so MySQL can be told which index to
/// walk: when one customer owns most rows MariaDB otherwise plans a `ref` scan on
/// `customer_id` that re-reads the customer's earlier entries for every page
/// (quadratic over a long timeline). The redundant `>=` / `<=` bound lets SQLite seek.
async fn communications_page(
    db: &Db,
    filter: &TimelineFilter,
    after: Option<After>,
    descending: bool,
    limit: i64,
) -> Result<Vec<Event>> {
    let mut sql = Sql::default();
    sql.push("SELECT ")
        .push(COMMUNICATION_COLUMNS)
        .push(" FROM communications");
    if db.backend() == Backend::Mysql {
        sql.push(if filter.customer_id.is_some() {
            " FORCE INDEX (ix_communications_customer_time)"
        } else {
            " FORCE INDEX (ix_communications_time)"
        });
    }
    sql.push(" WHERE 1 = 1");
    if let Some(c) = filter.customer_id {
        sql.push(" AND customer_id = ").bind(Bind::I64(c));
    }
    if !filter.channels.is_empty() {
        sql.push(" AND channel IN (");
        for (i, c) in filter.channels.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(Bind::I32(*c));
        }
        sql.push(")");
    }
    if let Some(s) = filter.start {
        sql.push(" AND occur_time >= ").bind(Bind::Time(s));
    }
    if let Some(e) = filter.end {
        sql.push(" AND occur_time < ").bind(Bind::Time(e));
    }
    if let Some(a) = after {
        let (bound, strict, id) = if descending {
            ("<=", "<", "<")
        } else {
            (">=", ">", ">")
        };
        sql.push(&format!(" AND occur_time {bound} "))
            .bind(Bind::Time(a.time))
            .push(&format!(" AND (occur_time {strict} "))
            .bind(Bind::Time(a.time))
            .push(" OR (occur_time = ")
            .bind(Bind::Time(a.time))
            .push(&format!(" AND id {id} "))
            .bind(Bind::I64(a.id))
            .push("))");
    }
    sql.push(if descending {
        " ORDER BY occur_time DESC, id DESC LIMIT "
    } else {
        " ORDER BY occur_time ASC, id ASC LIMIT "
    })
    .bind(Bind::I64(limit));
    let rows = load_sql!(db, &sql, CommunicationRow);
    Ok(rows.into_iter().map(Event::Communication).collect())
}

/// One keyset page of `source`, at most `limit` rows, in the given direction.
pub async fn page(
    db: &Db,
    source: Source,
    filter: &TimelineFilter,
    after: Option<After>,
    descending: bool,
    limit: i64,
) -> Result<Vec<Event>> {
    if source == Source::Communications {
        return communications_page(db, filter, after, descending, limit).await;
    }
    with_conn!(db, |conn| {
        let events = match source {
            // Served by `communications_page` above.
            Source::Communications => Vec::new(),
            Source::Transactions => {
                let q = transactions::table
                    .select(TransactionRow::as_select())
                    .limit(limit)
                    .into_boxed();
                let q = keyset!(q, transactions, occur_time, filter, after, descending);
                let rows: Vec<TransactionRow> = q.load(conn).await?;
                rows.into_iter().map(Event::Transaction).collect()
            }
            Source::Tickets => {
                let q = service_tickets::table
                    .select(TicketRow::as_select())
                    .limit(limit)
                    .into_boxed();
                let q = keyset!(q, service_tickets, open_time, filter, after, descending);
                let rows: Vec<TicketRow> = q.load(conn).await?;
                rows.into_iter().map(Event::Ticket).collect()
            }
        };
        Ok(events)
    })
}

/// Rows of `source` matching `filter` recorded at or after `since`, in
/// `(create_time, id)` order, strictly after `after` (a `(create_time, id)` position).
pub async fn recorded_since(
    db: &Db,
    source: Source,
    filter: &TimelineFilter,
    since: NaiveDateTime,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<Event>> {
    macro_rules! since {
        ($q:expr, $table:ident) => {{
            let mut q = $q.filter($table::create_time.ge(since));
            if let Some(c) = filter.customer_id {
                q = q.filter($table::customer_id.eq(c));
            }
            if let Some((t, id)) = after {
                q = q.filter(
                    $table::create_time
                        .gt(t)
                        .or($table::create_time.eq(t).and($table::id.gt(id))),
                );
            }
            q.order(($table::create_time.asc(), $table::id.asc()))
                .limit(limit)
        }};
    }
    with_conn!(db, |conn| {
        let events = match source {
            Source::Communications => {
                let mut q = communications::table
                    .select(CommunicationRow::as_select())
                    .into_boxed();
                if !filter.channels.is_empty() {
                    q = q.filter(communications::channel.eq_any(filter.channels.clone()));
                }
                if let Some(s) = filter.start {
                    q = q.filter(communications::occur_time.ge(s));
                }
                let rows: Vec<CommunicationRow> = since!(q, communications).load(conn).await?;
                rows.into_iter().map(Event::Communication).collect()
            }
            Source::Transactions => {
                let mut q = transactions::table
                    .select(TransactionRow::as_select())
                    .into_boxed();
                if let Some(s) = filter.start {
                    q = q.filter(transactions::occur_time.ge(s));
                }
                let rows: Vec<TransactionRow> = since!(q, transactions).load(conn).await?;
                rows.into_iter().map(Event::Transaction).collect()
            }
            Source::Tickets => {
                let mut q = service_tickets::table
                    .select(TicketRow::as_select())
                    .into_boxed();
                if let Some(s) = filter.start {
                    q = q.filter(service_tickets::open_time.ge(s));
                }
                let rows: Vec<TicketRow> = since!(q, service_tickets).load(conn).await?;
                rows.into_iter().map(Event::Ticket).collect()
            }
        };
        Ok(events)
    })
}

//! The timeline's reads: keyset pages of each source (communications, transactions,
//! service tickets) in `(occur_time, id)` order, optionally bounded to a history
//! snapshot (rows recorded at or before a time). Each call borrows a pooled connection
//! for one short query; what was recorded since is read by `super::feed`.

use chrono::NaiveDateTime;

use super::communications::{CommunicationRow, COMMUNICATIONS};
use super::dialect::{Backend, Index};
use super::query::{self, Sql, Table};
use super::tickets::{TicketRow, TICKETS};
use super::transactions::{TransactionRow, TRANSACTIONS};
use super::Db;
use crate::error::Result;
use crate::model::filter::CommunicationFilter;

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
    /// The table this source reads.
    pub fn table(self) -> &'static Table {
        match self {
            Source::Communications => &COMMUNICATIONS,
            Source::Transactions => &TRANSACTIONS,
            Source::Tickets => &TICKETS,
        }
    }

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

    /// Whether this event passes `filter`, exactly as the reads of this module apply
    /// it: follow streams filter the hub's events of every customer in memory.
    pub fn is_in(&self, filter: &CommunicationFilter) -> bool {
        let (customer_id, channel, direction) = match self {
            Event::Communication(r) => (r.customer_id, Some(r.channel), Some(r.direction)),
            Event::Transaction(r) => (r.customer_id, None, None),
            Event::Ticket(r) => (r.customer_id, None, None),
        };
        filter.admits(customer_id, channel, direction, self.key().0)
    }

    /// When the row was recorded.
    pub fn create_time(&self) -> NaiveDateTime {
        match self {
            Event::Communication(r) => r.create_time,
            Event::Transaction(r) => r.create_time,
            Event::Ticket(r) => r.create_time,
        }
    }

    /// `(create_time, id, source)`: where the change feed found it.
    pub fn position(&self) -> super::feed::Position {
        let (_, id, source) = self.key();
        (self.create_time(), id, source)
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

/// The statement of one keyset page of `source`, of the rows recorded at or before
/// `snapshot` when one is given. Communications name their index on MySQL: when one
/// customer owns most rows MariaDB otherwise plans a `ref` scan on `customer_id` that
/// re-reads the customer's earlier entries for every page (quadratic over a long
/// timeline).
fn page_sql(
    backend: Backend,
    source: Source,
    filter: &CommunicationFilter,
    after: Option<After>,
    descending: bool,
    snapshot: Option<NaiveDateTime>,
    limit: i64,
) -> Sql {
    let table = source.table();
    // raw SQL: FORCE INDEX hint on a keyset page of a table chosen at run time
    let mut sql = table.select();
    if source == Source::Communications {
        sql.push(backend.index_hint(if filter.single_customer().is_some() {
            Index::CustomerTime
        } else {
            Index::Time
        }));
    }
    sql.filter(table, filter);
    let keyset = table.keyset(descending);
    keyset.after_row(&mut sql, after.map(|a| (a.time, a.id)));
    if let Some(snapshot) = snapshot {
        sql.and()
            .push("create_time <= ")
            .bind(query::Bind::Time(snapshot));
    }
    keyset.order_limit(&mut sql, limit);
    sql
}

/// One keyset page of `source`, at most `limit` rows, in the given direction; with a
/// `snapshot`, only rows recorded at or before it, read causally on a Galera node.
pub async fn page(
    db: &Db,
    source: Source,
    filter: &CommunicationFilter,
    after: Option<After>,
    descending: bool,
    snapshot: Option<(NaiveDateTime, bool)>,
    limit: i64,
) -> Result<Vec<Event>> {
    let sql = page_sql(
        db.backend(),
        source,
        filter,
        after,
        descending,
        snapshot.map(|s| s.0),
        limit,
    );
    let sql = super::feed::causal(sql, snapshot.is_some_and(|s| s.1));
    load_events(db, source, &sql).await
}

/// The rows of `sql`, a statement over `source`'s table, as events.
pub(crate) async fn load_events(db: &Db, source: Source, sql: &Sql) -> Result<Vec<Event>> {
    Ok(match source {
        Source::Communications => query::load_rows(db, sql)
            .await?
            .into_iter()
            .map(Event::Communication)
            .collect(),
        Source::Transactions => query::load_rows(db, sql)
            .await?
            .into_iter()
            .map(Event::Transaction)
            .collect(),
        Source::Tickets => query::load_rows(db, sql)
            .await?
            .into_iter()
            .map(Event::Ticket)
            .collect(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The timeline's statements per backend, pinned.
    use super::*;
    use crate::model::time::march_2024 as at;

    fn filter() -> CommunicationFilter {
        CommunicationFilter {
            channels: vec![1, 2],
            start: Some(at(1)),
            end: Some(at(9)),
            ..CommunicationFilter::customer(7)
        }
    }

    /// The timeline pages of each source, per backend, as insta snapshots.
    #[test]
    fn timeline_pages_snapshot_per_backend() {
        let after = Some(After {
            time: at(3),
            id: 40,
        });
        for (backend, name) in [(Backend::Mysql, "mysql"), (Backend::Sqlite, "sqlite")] {
            let sql = page_sql(
                backend,
                Source::Communications,
                &filter(),
                after,
                true,
                Some(at(20)),
                100,
            );
            insta::assert_snapshot!(format!("timeline_communications_page_{name}"), sql.text);
        }
    }

    #[test]
    fn communications_page_is_pinned_per_backend() {
        let after = Some(After {
            time: at(3),
            id: 40,
        });
        let mysql = page_sql(
            Backend::Mysql,
            Source::Communications,
            &filter(),
            after,
            false,
            None,
            100,
        );
        let sqlite = page_sql(
            Backend::Sqlite,
            Source::Communications,
            &filter(),
            after,
            false,
            None,
            100,
        );
        let tail = " WHERE occur_time >= ? AND occur_time < ? AND customer_id IN (?) AND \
                    channel IN (?, ?) AND occur_time >= ? AND (occur_time > ? OR (occur_time = ? \
                    AND id > ?)) ORDER BY occur_time ASC, id ASC LIMIT ?";
        let select = format!("SELECT {} FROM communications", COMMUNICATIONS.columns);
        assert_eq!(
            mysql.text,
            format!("{select} FORCE INDEX (ix_communications_customer_time){tail}")
        );
        assert_eq!(sqlite.text, format!("{select}{tail}"));
        assert_eq!(mysql.binds, sqlite.binds);
        assert_eq!(mysql.binds.len(), mysql.text.matches('?').count());
        // Every customer: the time index.
        let all = CommunicationFilter::default();
        let mysql = page_sql(
            Backend::Mysql,
            Source::Communications,
            &all,
            None,
            true,
            None,
            5,
        );
        assert_eq!(
            mysql.text,
            format!(
                "{select} FORCE INDEX (ix_communications_time) ORDER BY occur_time DESC, id DESC \
                 LIMIT ?"
            )
        );
    }

    #[test]
    fn tickets_page_by_open_time_ignores_channels() {
        let sql = page_sql(
            Backend::Mysql,
            Source::Tickets,
            &filter(),
            None,
            true,
            None,
            5,
        );
        assert_eq!(
            sql.text,
            format!(
                "SELECT {} FROM service_tickets WHERE open_time >= ? AND open_time < ? AND \
                 customer_id IN (?) ORDER BY open_time DESC, id DESC LIMIT ?",
                TICKETS.columns
            )
        );
    }
}

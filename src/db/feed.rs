//! The change feed's side of the database: the record stamp every write path puts on
//! its rows (and the commit bound that makes a stamp safe to follow), and the reads of
//! each source in recording order `(create_time, id)`, made causal on a Galera cluster.
//!
//! The bound: a write stamps its rows inside its transaction and fails the attempt
//! (as a retryable transaction conflict, so [`super::retry_conflicts`] runs it again
//! with a fresh stamp) when it reaches COMMIT with the stamp [`COMMIT_BOUND`] old or
//! older. So a row stamped `t` is committed (or never will be) by `t + COMMIT_BOUND`
//! plus the time COMMIT takes, and a read started at `t + SETTLE` sees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::BigInt;
use diesel::QueryableByName;

use super::query::{self, Bind, Keyset, Sql};
use super::timeline::{Event, Source};
use super::{Backend, Db};
use crate::error::{Error, Result};
use crate::model::filter::CommunicationFilter;
use crate::model::time::now;

/// Longest time a write may take from stamping its rows to COMMIT.
pub const COMMIT_BOUND: Duration = Duration::from_secs(1);
/// How old a record stamp must be before the feed follows past it: [`COMMIT_BOUND`],
/// plus an allowance for COMMIT itself and for clock skew between servers.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Write attempts failed by [`check_commit_bound`] since the process started.
static OVERRUNS: AtomicU64 = AtomicU64::new(0);

/// A recording position: `(create_time, id, source)`, the total order in which the
/// feed follows what was recorded.
pub type Position = (NaiveDateTime, i64, Source);

/// The record stamp of a write; take it inside the write's transaction closure, so that
/// a retried attempt stamps anew.
pub fn stamp() -> NaiveDateTime {
    now()
}

/// [`SETTLE`] as a `chrono` duration.
pub fn settle() -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(SETTLE).unwrap_or_default()
}

/// The latest settled record time: every row stamped at or before it is visible to a
/// read started from now on.
pub fn settled_now() -> NaiveDateTime {
    now() - settle()
}

/// Call right before a write's transaction closure returns `Ok` (before COMMIT): when
/// `stamp` is [`COMMIT_BOUND`] old or older, fails the attempt with a retryable
/// transaction conflict, so the write is run again with a fresh stamp.
pub fn check_commit_bound(stamp: NaiveDateTime) -> Result<()> {
    let elapsed = now() - stamp;
    if elapsed.to_std().is_ok_and(|e| e < COMMIT_BOUND) {
        return Ok(());
    }
    let overruns = OVERRUNS.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(
        elapsed_ms = elapsed.num_milliseconds(),
        overruns,
        "write reached commit too late after its record stamp; retrying with a fresh stamp"
    );
    Err(Error::Database(DieselError::DatabaseError(
        DatabaseErrorKind::SerializationFailure,
        Box::new(format!(
            "commit bound exceeded: {} ms since the record stamp",
            elapsed.num_milliseconds()
        )),
    )))
}

/// Write attempts refused by [`check_commit_bound`] so far.
pub fn commit_bound_overruns() -> u64 {
    OVERRUNS.load(Ordering::Relaxed)
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Whether `db` is a node of a Galera cluster (`wsrep_on` is ON in this session); any
/// failure to tell (MySQL, TiDB have no such variable) is `false`.
pub async fn is_galera(db: &Db) -> bool {
    if db.backend() != Backend::Mysql {
        return false;
    }
    // raw SQL: Galera status variable @@wsrep_on
    let sql = Sql::from("SELECT CAST(@@wsrep_on AS SIGNED) AS n");
    match query::load::<Flag>(db, &sql).await {
        Ok(rows) => rows.first().is_some_and(|f| f.n == 1),
        Err(_) => false,
    }
}

/// A diesel query made causal on a Galera node, as [`causal`] does for hand-built SQL:
/// `SET STATEMENT wsrep_sync_wait = 1 FOR <query>` when `galera`, the query as it is
/// otherwise (always on SQLite).
#[derive(Debug, Clone)]
pub struct Causal<Q> {
    query: Q,
    galera: bool,
}

impl<Q> Causal<Q> {
    /// `query`, causal when `galera`.
    pub fn new(query: Q, galera: bool) -> Self {
        Causal { query, galera }
    }
}

// No static id: the text depends on `galera`, so a cached statement must not be shared.
impl<Q> diesel::query_builder::QueryId for Causal<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for Causal<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, DB> diesel::query_builder::QueryFragment<DB> for Causal<Q>
where
    DB: diesel::backend::Backend,
    Q: diesel::query_builder::QueryFragment<DB>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        if self.galera {
            out.push_sql("SET STATEMENT wsrep_sync_wait = 1 FOR ");
        }
        self.query.walk_ast(out.reborrow())
    }
}

/// `sql` made causal on a Galera node: the node first applies every write committed
/// anywhere in the cluster before the read, so a lagging node does not skip rows.
pub fn causal(mut sql: Sql, galera: bool) -> Sql {
    if galera {
        sql.text = format!("SET STATEMENT wsrep_sync_wait = 1 FOR {}", sql.text);
    }
    sql
}

/// The `(create_time, id)` bound of `source` strictly after `after` in recording order:
/// a later-ranked source at the same `(create_time, id)` still comes after it.
fn bound_of(source: Source, after: Position) -> (NaiveDateTime, i64) {
    let (time, id, after_source) = after;
    if source > after_source {
        (time, id.saturating_sub(1))
    } else {
        (time, id)
    }
}

/// The statement of [`recorded`]: `source`'s rows matching `filter` (not its end: a
/// follow stream has none), recorded strictly after `after` and at or before `upto`,
/// in `(create_time, id)` order.
pub fn recorded_sql(
    source: Source,
    filter: &CommunicationFilter,
    after: Option<Position>,
    upto: NaiveDateTime,
    limit: i64,
) -> Sql {
    let table = source.table();
    // raw SQL: keyset page on (create_time, id) via the one Keyset/filter builder, made causal by a text prefix
    let mut sql = table.select();
    let open_ended = CommunicationFilter {
        end: None,
        ..filter.clone()
    };
    sql.filter(table, &open_ended);
    let keyset = Keyset {
        columns: &["create_time", "id"],
        descending: false,
    };
    keyset.after_row(&mut sql, after.map(|a| bound_of(source, a)));
    sql.and().push("create_time <= ").bind(Bind::Time(upto));
    keyset.order_limit(&mut sql, limit);
    sql
}

/// Up to `limit` rows of `source` matching `filter`, recorded after `after` and at or
/// before `upto`, in recording order; causal on a Galera node.
pub async fn recorded(
    db: &Db,
    galera: bool,
    source: Source,
    filter: &CommunicationFilter,
    after: Option<Position>,
    upto: NaiveDateTime,
    limit: i64,
) -> Result<Vec<Event>> {
    let sql = causal(recorded_sql(source, filter, after, upto, limit), galera);
    super::timeline::load_events(db, source, &sql).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The feed's statements, pinned.
    use super::*;
    use crate::model::time::march_2024 as at;

    /// The content feed's recorded-order page (the same text on both backends), plain
    /// and made causal for Galera, as insta snapshots.
    #[test]
    fn recorded_page_snapshot() {
        let filter = CommunicationFilter {
            customer_ids: vec![7],
            start: Some(at(1)),
            end: Some(at(9)),
            ..CommunicationFilter::default()
        };
        let sql = recorded_sql(
            Source::Communications,
            &filter,
            Some((at(2), 40, Source::Communications)),
            at(3),
            200,
        );
        assert_eq!(sql.binds.len(), sql.text.matches('?').count());
        insta::assert_snapshot!("content_feed_recorded_page", sql.text);
        insta::assert_snapshot!("content_feed_recorded_page_galera", causal(sql, true).text);
    }

    #[test]
    fn recorded_reads_are_bounded_on_both_sides_in_recording_order() {
        let filter = CommunicationFilter::customer(7);
        let sql = recorded_sql(
            Source::Transactions,
            &filter,
            Some((at(2), 40, Source::Communications)),
            at(3),
            50,
        );
        assert_eq!(
            sql.text,
            format!(
                "SELECT {} FROM transactions WHERE customer_id IN (?) AND create_time >= ? AND \
                 (create_time > ? OR (create_time = ? AND id > ?)) AND create_time <= ? ORDER BY \
                 create_time ASC, id ASC LIMIT ?",
                super::super::transactions::TRANSACTIONS.columns
            )
        );
        // A later-ranked source includes the same id at the same time.
        assert_eq!(sql.binds[4], Bind::I64(39));
        assert_eq!(sql.binds.len(), sql.text.matches('?').count());
        let same = recorded_sql(
            Source::Communications,
            &filter,
            Some((at(2), 40, Source::Transactions)),
            at(3),
            50,
        );
        assert_eq!(same.binds[4], Bind::I64(40));
    }

    #[test]
    fn reads_are_causal_on_galera_only() {
        let sql = Sql::from("SELECT 1");
        assert_eq!(causal(sql.clone(), false).text, "SELECT 1");
        assert_eq!(
            causal(sql, true).text,
            "SET STATEMENT wsrep_sync_wait = 1 FOR SELECT 1"
        );
    }

    #[test]
    fn a_write_past_the_commit_bound_is_a_retryable_conflict() {
        assert!(check_commit_bound(now()).is_ok());
        let late = now() - chrono::TimeDelta::from_std(COMMIT_BOUND).unwrap();
        let e = check_commit_bound(late).unwrap_err();
        assert!(e.is_transaction_conflict(), "{e}");
        assert!(commit_bound_overruns() >= 1);
    }
}

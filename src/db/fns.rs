//! Typed SQL the DSL lacks and the two backends spell differently: each is an
//! expression with its SQL type, written once per backend here, so statements stay
//! diesel DSL instead of carrying text fragments.

use diesel::expression::{
    is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping,
};
use diesel::mysql::Mysql;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Nullable, Timestamp};
use diesel::sqlite::Sqlite;
use diesel::QueryResult;

diesel::define_sql_function! {
    /// The first of two times that is not NULL (the same function on both backends).
    fn coalesce(x: Nullable<Timestamp>, y: Timestamp) -> Timestamp;
}

/// The id the last INSERT on this connection generated (`BIGINT`).
pub fn last_insert_id() -> LastInsertId {
    LastInsertId
}

/// See [`last_insert_id`].
#[derive(Debug, Clone, Copy, QueryId, ValidGrouping)]
pub struct LastInsertId;

impl Expression for LastInsertId {
    type SqlType = BigInt;
}

impl<QS> AppearsOnTable<QS> for LastInsertId {}
impl<QS> SelectableExpression<QS> for LastInsertId {}

impl QueryFragment<Mysql> for LastInsertId {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        // Unsigned on MySQL: cast, or it does not read as BIGINT.
        out.push_sql("CAST(LAST_INSERT_ID() AS SIGNED)");
        Ok(())
    }
}

impl QueryFragment<Sqlite> for LastInsertId {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("last_insert_rowid()");
        Ok(())
    }
}

/// The step between two ids one multi-row INSERT generates on this connection
/// (`BIGINT`): MySQL's session `auto_increment_increment` (2 or 3 on replication rings
/// and Galera clusters), 1 on SQLite.
pub fn id_step() -> IdStep {
    IdStep
}

/// See [`id_step`].
#[derive(Debug, Clone, Copy, QueryId, ValidGrouping)]
pub struct IdStep;

impl Expression for IdStep {
    type SqlType = BigInt;
}

impl<QS> AppearsOnTable<QS> for IdStep {}
impl<QS> SelectableExpression<QS> for IdStep {}

impl QueryFragment<Mysql> for IdStep {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("CAST(@@session.auto_increment_increment AS SIGNED)");
        Ok(())
    }
}

impl QueryFragment<Sqlite> for IdStep {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("1");
        Ok(())
    }
}

/// Whole units of `secs` seconds since the epoch of the UTC time `expr` (`BIGINT`),
/// floored for any stored time: the 15-minute slot or hour of a time rollup tier. `secs`
/// must divide 100,000 days; it is a constant of the service, written into the text.
pub fn time_unit<E>(expr: E, secs: i64) -> TimeUnit<E> {
    TimeUnit { expr, secs }
}

/// See [`time_unit`].
#[derive(Debug, Clone, Copy)]
pub struct TimeUnit<E> {
    expr: E,
    secs: i64,
}

/// Days added before the integer division so that the dividend is positive (integer
/// division then floors on both backends) for any time after 1700.
const UNIT_OFFSET_SECS: i64 = 100_000 * 86_400;

impl<E: Expression<SqlType = Timestamp>> Expression for TimeUnit<E> {
    type SqlType = BigInt;
}

impl<E: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for TimeUnit<E> where TimeUnit<E>: Expression {}
impl<E: SelectableExpression<QS>, QS> SelectableExpression<QS> for TimeUnit<E> where
    TimeUnit<E>: AppearsOnTable<QS>
{
}

// A statement selecting a unit groups by the same unit (diesel cannot see through a
// custom expression to the column it is computed from, so it is valid beside any
// grouping, as a constant is).
impl<E, GB> ValidGrouping<GB> for TimeUnit<E> {
    type IsAggregate = is_aggregate::Never;
}

// A column beside a unit in a GROUP BY is grouped by the column's own entry.
impl<E, Col> diesel::expression::IsContainedInGroupBy<Col> for TimeUnit<E> {
    type Output = diesel::expression::is_contained_in_group_by::No;
}

// `secs` is in the text, not in the type: no static id, so prepared statements are
// cached by their text.
impl<E> QueryId for TimeUnit<E> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<E: QueryFragment<Mysql>> QueryFragment<Mysql> for TimeUnit<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        // Not UNIX_TIMESTAMP: that depends on the session time zone. DIV truncates, and
        // the sums are DECIMAL without the cast.
        out.push_sql("CAST((TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', ");
        self.expr.walk_ast(out.reborrow())?;
        out.push_sql(&format!(
            ") + {UNIT_OFFSET_SECS}) DIV {} - {} AS SIGNED)",
            self.secs,
            UNIT_OFFSET_SECS / self.secs
        ));
        Ok(())
    }
}

impl<E: QueryFragment<Sqlite>> QueryFragment<Sqlite> for TimeUnit<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("((CAST(strftime('%s', ");
        self.expr.walk_ast(out.reborrow())?;
        out.push_sql(&format!(
            ") AS INTEGER) + {UNIT_OFFSET_SECS}) / {} - {})",
            self.secs,
            UNIT_OFFSET_SECS / self.secs
        ));
        Ok(())
    }
}

/// The UTC calendar month of the time `expr` as `year * 12 + month - 1` (`INTEGER`),
/// the key of `customer_months`.
pub fn month_index<E>(expr: E) -> MonthIndex<E> {
    MonthIndex(expr)
}

/// See [`month_index`].
#[derive(Debug, Clone, Copy, QueryId)]
pub struct MonthIndex<E>(E);

impl<E: Expression<SqlType = Timestamp>> Expression for MonthIndex<E> {
    type SqlType = diesel::sql_types::Integer;
}

impl<E: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for MonthIndex<E> where MonthIndex<E>: Expression {}
impl<E: SelectableExpression<QS>, QS> SelectableExpression<QS> for MonthIndex<E> where
    MonthIndex<E>: AppearsOnTable<QS>
{
}

impl<E: ValidGrouping<GB>, GB> ValidGrouping<GB> for MonthIndex<E> {
    type IsAggregate = E::IsAggregate;
}

impl<E: QueryFragment<Mysql>> QueryFragment<Mysql> for MonthIndex<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("(YEAR(");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(") * 12 + MONTH(");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(") - 1)");
        Ok(())
    }
}

impl<E: QueryFragment<Sqlite>> QueryFragment<Sqlite> for MonthIndex<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("(CAST(strftime('%Y', ");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(") AS INTEGER) * 12 + CAST(strftime('%m', ");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(") AS INTEGER) - 1)");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_spells_the_expressions_its_own_way() {
        let query = diesel::select((last_insert_id(), id_step()));
        assert_eq!(
            diesel::debug_query::<Mysql, _>(&query).to_string(),
            "SELECT CAST(LAST_INSERT_ID() AS SIGNED), \
             CAST(@@session.auto_increment_increment AS SIGNED) -- binds: []"
        );
        assert_eq!(
            diesel::debug_query::<Sqlite, _>(&query).to_string(),
            "SELECT last_insert_rowid(), 1 -- binds: []"
        );
    }

    #[test]
    fn a_month_index_is_year_times_twelve_plus_month_per_backend() {
        use crate::db::schema::communications;
        let month = month_index(communications::occur_time);
        assert_eq!(
            diesel::debug_query::<Mysql, _>(&month).to_string(),
            "(YEAR(`communications`.`occur_time`) * 12 + MONTH(`communications`.`occur_time`) \
             - 1) -- binds: []"
        );
        assert_eq!(
            diesel::debug_query::<Sqlite, _>(&month).to_string(),
            "(CAST(strftime('%Y', `communications`.`occur_time`) AS INTEGER) * 12 + \
             CAST(strftime('%m', `communications`.`occur_time`) AS INTEGER) - 1) -- binds: []"
        );
    }

    #[test]
    fn a_time_unit_is_floored_epoch_arithmetic_per_backend() {
        use crate::db::schema::communications;
        let unit = time_unit(communications::occur_time, 3600);
        assert_eq!(
            diesel::debug_query::<Mysql, _>(&unit).to_string(),
            "CAST((TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', \
             `communications`.`occur_time`) + 8640000000) DIV 3600 - 2400000 AS SIGNED) \
             -- binds: []"
        );
        assert_eq!(
            diesel::debug_query::<Sqlite, _>(&unit).to_string(),
            "((CAST(strftime('%s', `communications`.`occur_time`) AS INTEGER) + \
             8640000000) / 3600 - 2400000) -- binds: []"
        );
    }
}

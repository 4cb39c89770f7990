//! Typed SQL expressions diesel's DSL lacks: a two-column row-value `IN` list
//! ([`row_in`]), written per backend, and MySQL's `EXPLAIN` of a DSL statement ([`explain`]).
//!
//! Why [`row_in`]: `a IN (..) AND b IN (..)` over a two-column unique key lets MariaDB use
//! only the key's first column (a range over every row of those `a` values, growing with
//! the table), and an `IN` list of 1000 or more values is turned into a subquery
//! (`in_predicate_conversion_threshold`); `(a, b) IN ((..), (..))` reads exactly the
//! listed keys through the whole unique key.

use diesel::backend::Backend as DieselBackend;
use diesel::expression::{is_aggregate, AppearsOnTable, Expression, ValidGrouping};
use diesel::mysql::Mysql;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{Bool, HasSqlType, Untyped};
use diesel::sqlite::Sqlite;
use diesel::QueryResult;

/// `(a, b) IN ((?, ?), ...)`: true for the rows whose pair of columns is one of
/// `pairs`. MySQL and MariaDB take the list of row values as it is; SQLite takes row
/// values only from a subquery, so there it is `(a, b) IN (VALUES (?, ?), ...)` (both
/// walk the two-column index one key per pair). An empty list is false (`1 = 0`).
///
/// Each pair is two bound values: keep `pairs` within the backends' bind limits (see
/// [`ROW_IN_CHUNK`]).
pub fn row_in<A, B, X, Y>(columns: (A, B), pairs: Vec<(X, Y)>) -> RowIn<A, B, X, Y> {
    RowIn { columns, pairs }
}

/// Pairs per [`row_in`] statement: 2000 bound values, well within SQLite's 32766 and
/// MySQL's 65535, and the largest list one import batch needs.
pub const ROW_IN_CHUNK: usize = 1000;

/// See [`row_in`].
#[derive(Debug, Clone)]
pub struct RowIn<A, B, X, Y> {
    columns: (A, B),
    pairs: Vec<(X, Y)>,
}

impl<A, B, X, Y> Expression for RowIn<A, B, X, Y> {
    type SqlType = Bool;
}

impl<A, B, X, Y, QS> AppearsOnTable<QS> for RowIn<A, B, X, Y>
where
    A: AppearsOnTable<QS>,
    B: AppearsOnTable<QS>,
{
}

impl<A, B, X, Y> ValidGrouping<()> for RowIn<A, B, X, Y> {
    type IsAggregate = is_aggregate::Never;
}

impl<A, B, X, Y> QueryId for RowIn<A, B, X, Y> {
    type QueryId = ();
    // The text depends on the number of pairs: never cache it as one prepared statement.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<A, B, X, Y> RowIn<A, B, X, Y> {
    /// Writes the expression; `values` is what opens the list of rows (`(` or
    /// `(VALUES `).
    fn walk<'b, DB>(&'b self, mut out: AstPass<'_, 'b, DB>, values: &'static str) -> QueryResult<()>
    where
        DB: DieselBackend + HasSqlType<A::SqlType> + HasSqlType<B::SqlType>,
        A: Expression + QueryFragment<DB>,
        B: Expression + QueryFragment<DB>,
        X: ToSql<A::SqlType, DB>,
        Y: ToSql<B::SqlType, DB>,
    {
        if self.pairs.is_empty() {
            out.push_sql("1 = 0");
            return Ok(());
        }
        out.push_sql("(");
        self.columns.0.walk_ast(out.reborrow())?;
        out.push_sql(", ");
        self.columns.1.walk_ast(out.reborrow())?;
        out.push_sql(") IN ");
        out.push_sql(values);
        for (i, (x, y)) in self.pairs.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            out.push_bind_param::<A::SqlType, X>(x)?;
            out.push_sql(", ");
            out.push_bind_param::<B::SqlType, Y>(y)?;
            out.push_sql(")");
        }
        out.push_sql(")");
        Ok(())
    }
}

impl<A, B, X, Y> QueryFragment<Mysql> for RowIn<A, B, X, Y>
where
    Mysql: HasSqlType<A::SqlType> + HasSqlType<B::SqlType>,
    A: Expression + QueryFragment<Mysql>,
    B: Expression + QueryFragment<Mysql>,
    X: ToSql<A::SqlType, Mysql>,
    Y: ToSql<B::SqlType, Mysql>,
{
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        self.walk(out, "(")
    }
}

impl<A, B, X, Y> QueryFragment<Sqlite> for RowIn<A, B, X, Y>
where
    Sqlite: HasSqlType<A::SqlType> + HasSqlType<B::SqlType>,
    A: Expression + QueryFragment<Sqlite>,
    B: Expression + QueryFragment<Sqlite>,
    X: ToSql<A::SqlType, Sqlite>,
    Y: ToSql<B::SqlType, Sqlite>,
{
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.walk(out, "(VALUES ")
    }
}

/// `EXPLAIN` of `query` on the MySQL family, prepared with `query`'s own bound values
/// (the plan the server picks for the statement the service runs); load it as
/// [`PlanRow`]s. For plan checks (`tests/plans`).
pub fn explain<Q>(query: Q) -> Explain<Q> {
    Explain(query)
}

/// See [`explain`].
#[derive(Debug, Clone)]
pub struct Explain<Q>(Q);

impl<Q> QueryId for Explain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for Explain<Q> {
    type SqlType = Untyped;
}

impl<Q: QueryFragment<Mysql>> QueryFragment<Mysql> for Explain<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("EXPLAIN ");
        self.0.walk_ast(out)
    }
}

/// One row of MySQL's tabular `EXPLAIN`: how one table is read.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct PlanRow {
    /// The table (or derived table) read.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub table: Option<String>,
    /// Access type: `const`, `eq_ref`, `ref`, `range`, `index` (whole index), `ALL`
    /// (whole table), ...
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    #[diesel(column_name = "type")]
    pub access: Option<String>,
    /// The index used.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub key: Option<String>,
    /// Bytes of the index's columns the lookup uses.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub key_len: Option<String>,
    /// Estimated rows read (a number, sent as text by MariaDB).
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub rows: Option<String>,
    /// Notes (`Using filesort`, `Using index`, ...).
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    #[diesel(column_name = "Extra")]
    pub extra: Option<String>,
}

impl PlanRow {
    /// [`PlanRow::rows`] as a number (`None` when absent or not a number).
    pub fn estimated_rows(&self) -> Option<i64> {
        self.rows.as_deref()?.parse().ok()
    }
}

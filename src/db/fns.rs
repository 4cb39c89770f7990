//! Typed SQL the DSL lacks and the two backends spell differently: each is an
//! expression with its SQL type, written once per backend here, so statements stay
//! diesel DSL instead of carrying text fragments.

use diesel::expression::{
    is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping,
};
use diesel::mysql::Mysql;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use std::marker::PhantomData;

use chrono::NaiveDateTime;
use diesel::expression::TypedExpressionType;
use diesel::insertable::{CanInsertInSingleQuery, InsertValues};
use diesel::query_builder::ValuesClause;
use diesel::sql_types::{BigInt, Integer, Nullable, SqlType, Timestamp};
use diesel::sqlite::Sqlite;
use diesel::QueryResult;
use diesel::{AsChangeset, Column, Insertable};

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

// As for [`TimeUnit`]: a statement selecting a month index groups by the same index.
impl<E, GB> ValidGrouping<GB> for MonthIndex<E> {
    type IsAggregate = is_aggregate::Never;
}

impl<E, Col> diesel::expression::IsContainedInGroupBy<Col> for MonthIndex<E> {
    type Output = diesel::expression::is_contained_in_group_by::No;
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

/// `expr` as a 64-bit integer (`BIGINT`, NULL stays NULL): MySQL's SUM, DIV and CASE
/// give DECIMAL, so it is cast there; SQLite's integers are 64-bit already.
pub fn int<E>(expr: E) -> Int<E> {
    Int(expr)
}

/// See [`int()`].
#[derive(Debug, Clone, Copy, QueryId)]
pub struct Int<E>(E);

/// The type of [`int()`]`(e)`, as `#[diesel::dsl::auto_type]` names it.
#[allow(non_camel_case_types)]
pub type int<E> = Int<E>;

impl<E: Expression> Expression for Int<E> {
    type SqlType = Nullable<BigInt>;
}

impl<E: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for Int<E> where Int<E>: Expression {}
impl<E: SelectableExpression<QS>, QS> SelectableExpression<QS> for Int<E> where
    Int<E>: AppearsOnTable<QS>
{
}

impl<E: ValidGrouping<GB>, GB> ValidGrouping<GB> for Int<E> {
    type IsAggregate = E::IsAggregate;
}

impl<E: QueryFragment<Mysql>> QueryFragment<Mysql> for Int<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("CAST(");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(" AS SIGNED)");
        Ok(())
    }
}

impl<E: QueryFragment<Sqlite>> QueryFragment<Sqlite> for Int<E> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.0.walk_ast(out)
    }
}

/// Integer division `a / b` truncating toward zero (`DIV` on MySQL, `/` on SQLite).
pub fn div<A, B>(a: A, b: B) -> IntOp<A, B> {
    IntOp {
        a,
        b,
        op: IntOpKind::Div,
    }
}

/// The remainder of `a / b`, with the sign of `a` (`MOD` on MySQL, `%` on SQLite).
pub fn rem<A, B>(a: A, b: B) -> IntOp<A, B> {
    IntOp {
        a,
        b,
        op: IntOpKind::Rem,
    }
}

/// The type of [`div()`]`(a, b)`, as `#[diesel::dsl::auto_type]` names it.
#[allow(non_camel_case_types)]
pub type div<A, B> = IntOp<A, B>;

/// The type of [`rem()`]`(a, b)`, as `#[diesel::dsl::auto_type]` names it.
#[allow(non_camel_case_types)]
pub type rem<A, B> = IntOp<A, B>;

/// Which integer operator an [`IntOp`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOpKind {
    /// Truncating division.
    Div,
    /// Remainder.
    Rem,
}

/// See [`div()`] and [`rem()`].
#[derive(Debug, Clone, Copy)]
pub struct IntOp<A, B> {
    a: A,
    b: B,
    op: IntOpKind,
}

impl<A: Expression, B: Expression> Expression for IntOp<A, B> {
    type SqlType = A::SqlType;
}

impl<A: AppearsOnTable<QS>, B: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for IntOp<A, B> where
    IntOp<A, B>: Expression
{
}
impl<A: SelectableExpression<QS>, B: SelectableExpression<QS>, QS> SelectableExpression<QS>
    for IntOp<A, B>
where
    IntOp<A, B>: AppearsOnTable<QS>,
{
}

impl<A: ValidGrouping<GB>, B, GB> ValidGrouping<GB> for IntOp<A, B> {
    type IsAggregate = A::IsAggregate;
}

// The operator is a value, not a type: no static id.
impl<A, B> QueryId for IntOp<A, B> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<A: QueryFragment<Mysql>, B: QueryFragment<Mysql>> QueryFragment<Mysql> for IntOp<A, B> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("(");
        self.a.walk_ast(out.reborrow())?;
        out.push_sql(match self.op {
            IntOpKind::Div => " DIV ",
            IntOpKind::Rem => " MOD ",
        });
        self.b.walk_ast(out.reborrow())?;
        out.push_sql(")");
        Ok(())
    }
}

impl<A: QueryFragment<Sqlite>, B: QueryFragment<Sqlite>> QueryFragment<Sqlite> for IntOp<A, B> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("(");
        self.a.walk_ast(out.reborrow())?;
        out.push_sql(match self.op {
            IntOpKind::Div => " / ",
            IntOpKind::Rem => " % ",
        });
        self.b.walk_ast(out.reborrow())?;
        out.push_sql(")");
        Ok(())
    }
}

/// A constant of the service written into the statement (`BIGINT`), not bound: a
/// statement that groups by an expression holding it, or that is sent with others in
/// one round trip, needs the value in its text.
pub fn lit(v: i64) -> Lit<BigInt> {
    Lit(v, PhantomData)
}

/// [`lit`] of an `INTEGER` value.
pub fn lit_int(v: i32) -> Lit<Integer> {
    Lit(i64::from(v), PhantomData)
}

/// See [`lit`].
#[derive(Debug, Clone, Copy, ValidGrouping)]
pub struct Lit<ST>(i64, PhantomData<ST>);

impl<ST: SqlType + TypedExpressionType> Expression for Lit<ST> {
    type SqlType = ST;
}

impl<ST, QS> AppearsOnTable<QS> for Lit<ST> where Lit<ST>: Expression {}
impl<ST, QS> SelectableExpression<QS> for Lit<ST> where Lit<ST>: Expression {}

impl<ST> QueryId for Lit<ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST, DB: diesel::backend::Backend> QueryFragment<DB> for Lit<ST> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(&self.0.to_string());
        Ok(())
    }
}

/// A time the service computed, written into the statement (`TIMESTAMP`) in the text
/// each driver writes when binding it (see [`lit`]).
pub fn time_lit(t: NaiveDateTime) -> TimeLit {
    TimeLit(t)
}

/// See [`time_lit`].
#[derive(Debug, Clone, Copy, ValidGrouping)]
pub struct TimeLit(NaiveDateTime);

impl Expression for TimeLit {
    type SqlType = Timestamp;
}

impl<QS> AppearsOnTable<QS> for TimeLit {}
impl<QS> SelectableExpression<QS> for TimeLit {}

impl QueryId for TimeLit {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

/// A stored time as an SQL literal for `backend`, in the text its driver writes when
/// binding it (what a [`time_lit`] renders).
pub fn time_text(backend: super::Backend, t: NaiveDateTime) -> String {
    match backend {
        super::Backend::Mysql => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f")),
        super::Backend::Sqlite => format!("'{}'", t.format("%F %T%.f")),
    }
}

impl QueryFragment<Mysql> for TimeLit {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql(&time_text(super::Backend::Mysql, self.0));
        Ok(())
    }
}

impl QueryFragment<Sqlite> for TimeLit {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(&time_text(super::Backend::Sqlite, self.0));
        Ok(())
    }
}

/// In an upsert's changes, the value the INSERT proposed for `column` (`VALUES(c)` on
/// MySQL, `excluded.c` on SQLite).
pub fn inserted<C>(column: C) -> Inserted<C> {
    Inserted(column)
}

/// See [`inserted`].
#[derive(Debug, Clone, Copy, QueryId, ValidGrouping)]
pub struct Inserted<C>(C);

impl<C: Expression> Expression for Inserted<C> {
    type SqlType = C::SqlType;
}

impl<C: Column> AppearsOnTable<C::Table> for Inserted<C> where Inserted<C>: Expression {}

impl<C: Column> QueryFragment<Mysql> for Inserted<C> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("VALUES(");
        out.push_identifier(C::NAME)?;
        out.push_sql(")");
        Ok(())
    }
}

impl<C: Column> QueryFragment<Sqlite> for Inserted<C> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("excluded.");
        out.push_identifier(C::NAME)
    }
}

/// The larger of two values (`GREATEST` on MySQL, the two-argument `MAX` on SQLite).
pub fn greatest<A, B>(a: A, b: B) -> Greatest<A, B> {
    Greatest(a, b)
}

/// See [`greatest`].
#[derive(Debug, Clone, Copy, QueryId)]
pub struct Greatest<A, B>(A, B);

impl<A: Expression, B: Expression> Expression for Greatest<A, B> {
    type SqlType = A::SqlType;
}

impl<A: AppearsOnTable<QS>, B: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for Greatest<A, B> where
    Greatest<A, B>: Expression
{
}

impl<A: ValidGrouping<GB>, B, GB> ValidGrouping<GB> for Greatest<A, B> {
    type IsAggregate = A::IsAggregate;
}

impl<A: QueryFragment<Mysql>, B: QueryFragment<Mysql>> QueryFragment<Mysql> for Greatest<A, B> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("GREATEST(");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(", ");
        self.1.walk_ast(out.reborrow())?;
        out.push_sql(")");
        Ok(())
    }
}

impl<A: QueryFragment<Sqlite>, B: QueryFragment<Sqlite>> QueryFragment<Sqlite> for Greatest<A, B> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("MAX(");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(", ");
        self.1.walk_ast(out.reborrow())?;
        out.push_sql(")");
        Ok(())
    }
}

/// Several rows to insert with one multi-row INSERT, on either backend (diesel renders a
/// `Vec` of rows for SQLite only through its own executor): `insert_into(t).values(rows(v))`.
pub fn rows<R>(rows: Vec<R>) -> Rows<R> {
    Rows(rows)
}

/// See [`rows`].
#[derive(Debug, Clone)]
pub struct Rows<R>(Vec<R>);

impl<T, R: Insertable<T>> Insertable<T> for Rows<R> {
    type Values = RowsClause<R::Values>;

    fn values(self) -> Self::Values {
        RowsClause(self.0.into_iter().map(Insertable::values).collect())
    }
}

/// The VALUES clause of [`Rows`]: `(columns) VALUES (..), (..)`.
#[derive(Debug, Clone)]
pub struct RowsClause<V>(Vec<V>);

impl<V> QueryId for RowsClause<V> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<V, T, DB> QueryFragment<DB> for RowsClause<ValuesClause<V, T>>
where
    DB: diesel::backend::Backend,
    T: diesel::Table,
    V: InsertValues<DB, T>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let Some(first) = self.0.first() else {
            return Err(diesel::result::Error::QueryBuilderError(
                "an INSERT of no rows".into(),
            ));
        };
        out.push_sql("(");
        first.values.column_names(out.reborrow())?;
        out.push_sql(") VALUES ");
        for (i, row) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            out.push_sql("(");
            row.values.walk_ast(out.reborrow())?;
            out.push_sql(")");
        }
        Ok(())
    }
}

impl<V, DB: diesel::backend::Backend> CanInsertInSingleQuery<DB> for RowsClause<V> {
    fn rows_to_insert(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The INSERT `insert` (of rows or of a SELECT with a WHERE clause) as an upsert on the
/// primary key `key` of its table, applying `changes` to a row whose key exists: `ON
/// DUPLICATE KEY UPDATE` on MySQL, `ON CONFLICT (key) DO UPDATE SET` on SQLite. diesel's
/// own `on_conflict` takes a different target per backend, so one statement could not
/// serve both.
pub fn upsert<I, K, C>(insert: I, key: K, changes: C) -> Upsert<I, K, C::Changeset>
where
    C: AsChangeset,
{
    let _ = key;
    Upsert {
        insert,
        key: PhantomData,
        changes: changes.as_changeset(),
    }
}

/// See [`upsert`].
#[derive(Debug, Clone)]
pub struct Upsert<I, K, C> {
    insert: I,
    key: PhantomData<K>,
    changes: C,
}

impl<I, K, C> QueryId for Upsert<I, K, C> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

/// A primary key's columns, as an upsert names them.
pub trait KeyColumns {
    /// The column names, in key order.
    fn names() -> Vec<&'static str>;
}

impl<A: Column, B: Column> KeyColumns for (A, B) {
    fn names() -> Vec<&'static str> {
        vec![A::NAME, B::NAME]
    }
}

impl<A: Column, B: Column, C: Column, D: Column> KeyColumns for (A, B, C, D) {
    fn names() -> Vec<&'static str> {
        vec![A::NAME, B::NAME, C::NAME, D::NAME]
    }
}

impl<I: QueryFragment<Mysql>, K, C: QueryFragment<Mysql>> QueryFragment<Mysql> for Upsert<I, K, C> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        self.insert.walk_ast(out.reborrow())?;
        out.push_sql(" ON DUPLICATE KEY UPDATE ");
        self.changes.walk_ast(out.reborrow())
    }
}

impl<I: QueryFragment<Sqlite>, K: KeyColumns, C: QueryFragment<Sqlite>> QueryFragment<Sqlite>
    for Upsert<I, K, C>
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.insert.walk_ast(out.reborrow())?;
        out.push_sql(" ON CONFLICT (");
        for (i, name) in K::names().into_iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            out.push_identifier(name)?;
        }
        out.push_sql(") DO UPDATE SET ");
        self.changes.walk_ast(out.reborrow())
    }
}

/// Whole seconds since the epoch of the UTC time `expr` (`BIGINT`).
pub fn epoch_secs<E>(expr: E) -> EpochSecs<E> {
    EpochSecs(expr)
}

/// See [`epoch_secs`].
#[derive(Debug, Clone, Copy, QueryId)]
pub struct EpochSecs<E>(E);

impl<E: Expression> Expression for EpochSecs<E> {
    type SqlType = BigInt;
}

impl<E: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for EpochSecs<E> where EpochSecs<E>: Expression {}
impl<E: SelectableExpression<QS>, QS> SelectableExpression<QS> for EpochSecs<E> where
    EpochSecs<E>: AppearsOnTable<QS>
{
}

impl<E: ValidGrouping<GB>, GB> ValidGrouping<GB> for EpochSecs<E> {
    type IsAggregate = E::IsAggregate;
}

impl<E: QueryFragment<Mysql>> QueryFragment<Mysql> for EpochSecs<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        // Not UNIX_TIMESTAMP: that depends on the session time zone.
        out.push_sql("TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', ");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(")");
        Ok(())
    }
}

impl<E: QueryFragment<Sqlite>> QueryFragment<Sqlite> for EpochSecs<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("CAST(strftime('%s', ");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(") AS INTEGER)");
        Ok(())
    }
}

/// Exact microseconds from the stored time `from` to the stored time `to` (`BIGINT`).
pub fn micros_between<F, T>(from: F, to: T) -> MicrosBetween<F, T> {
    MicrosBetween { from, to }
}

/// See [`micros_between`].
#[derive(Debug, Clone, Copy, QueryId)]
pub struct MicrosBetween<F, T> {
    from: F,
    to: T,
}

impl<F: Expression, T: Expression> Expression for MicrosBetween<F, T> {
    type SqlType = BigInt;
}

impl<F: AppearsOnTable<QS>, T: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for MicrosBetween<F, T> where
    MicrosBetween<F, T>: Expression
{
}
impl<F: SelectableExpression<QS>, T: SelectableExpression<QS>, QS> SelectableExpression<QS>
    for MicrosBetween<F, T>
where
    MicrosBetween<F, T>: AppearsOnTable<QS>,
{
}

impl<F: ValidGrouping<GB>, T, GB> ValidGrouping<GB> for MicrosBetween<F, T> {
    type IsAggregate = F::IsAggregate;
}

impl<F: QueryFragment<Mysql>, T: QueryFragment<Mysql>> QueryFragment<Mysql>
    for MicrosBetween<F, T>
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("TIMESTAMPDIFF(MICROSECOND, ");
        self.from.walk_ast(out.reborrow())?;
        out.push_sql(", ");
        self.to.walk_ast(out.reborrow())?;
        out.push_sql(")");
        Ok(())
    }
}

impl<F: QueryFragment<Sqlite>, T: QueryFragment<Sqlite>> QueryFragment<Sqlite>
    for MicrosBetween<F, T>
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("(");
        sqlite_epoch_micros(&self.to, out.reborrow())?;
        out.push_sql(" - ");
        sqlite_epoch_micros(&self.from, out.reborrow())?;
        out.push_sql(")");
        Ok(())
    }
}

/// Exact microseconds since the epoch of a stored SQLite time (text `YYYY-MM-DD
/// HH:MM:SS[.f{1,9}]`; `strftime('%f')` only has milliseconds).
fn sqlite_epoch_micros<'b, E: QueryFragment<Sqlite>>(
    e: &'b E,
    mut out: AstPass<'_, 'b, Sqlite>,
) -> QueryResult<()> {
    out.push_sql("(CAST(strftime('%s', ");
    e.walk_ast(out.reborrow())?;
    out.push_sql(") AS INTEGER) * 1000000 + CASE WHEN length(");
    e.walk_ast(out.reborrow())?;
    out.push_sql(") > 20 THEN CAST(substr(");
    e.walk_ast(out.reborrow())?;
    out.push_sql(" || '000000', 21, 6) AS INTEGER) ELSE 0 END)");
    Ok(())
}

/// What [`sentiment_tally`] sums over the `sentiment` column of the rows it groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TallyPart {
    /// Rows whose score is negative (`analytics::sentiment::Label::Negative`).
    Negative,
    /// Rows whose score is positive.
    Positive,
    /// The sum of the scores (rows not scored yet add 0).
    Sum,
}

/// A sentiment aggregate of the grouped `communications` rows as `BIGINT`, 0 over no row:
/// the counts of negative or positive scores, or their sum (the same bounds as
/// `analytics::sentiment::Label`).
pub fn sentiment_tally(part: TallyPart) -> SentimentTally {
    SentimentTally(part)
}

/// See [`sentiment_tally`].
#[derive(Debug, Clone, Copy)]
pub struct SentimentTally(TallyPart);

impl QueryId for SentimentTally {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Expression for SentimentTally {
    type SqlType = BigInt;
}

impl<QS> AppearsOnTable<QS> for SentimentTally {}
impl<QS> SelectableExpression<QS> for SentimentTally {}

impl<GB> ValidGrouping<GB> for SentimentTally {
    type IsAggregate = is_aggregate::Yes;
}

impl SentimentTally {
    /// `COALESCE(SUM(<term>), 0)`.
    fn sum_text(self) -> String {
        let band = crate::analytics::sentiment::NEUTRAL_BAND;
        let term = match self.0 {
            TallyPart::Negative => format!("CASE WHEN sentiment < -{band} THEN 1 ELSE 0 END"),
            TallyPart::Positive => format!("CASE WHEN sentiment > {band} THEN 1 ELSE 0 END"),
            TallyPart::Sum => "sentiment".to_owned(),
        };
        format!("COALESCE(SUM({term}), 0)")
    }
}

impl QueryFragment<Mysql> for SentimentTally {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql(&format!("CAST({} AS SIGNED)", self.sum_text()));
        Ok(())
    }
}

impl QueryFragment<Sqlite> for SentimentTally {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(&self.sum_text());
        Ok(())
    }
}

/// Where a hand-built part goes in a typed expression that [`crate::db::query::Sql::around`]
/// writes around it (`BIGINT`).
pub fn hole() -> Hole {
    Hole
}

/// See [`hole`].
#[derive(Debug, Clone, Copy, QueryId, ValidGrouping)]
pub struct Hole;

/// The text a [`Hole`] renders as: a character no statement of the service contains.
pub const HOLE: &str = "\u{1}";

impl Expression for Hole {
    type SqlType = BigInt;
}

impl<QS> AppearsOnTable<QS> for Hole {}
impl<QS> SelectableExpression<QS> for Hole {}

impl<DB: diesel::backend::Backend> QueryFragment<DB> for Hole {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(HOLE);
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

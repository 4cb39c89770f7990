//! Hand-built SQL with bound values: the [`Sql`] builder, the one filter -> WHERE writer
//! ([`Sql::filter`]), the one keyset-pagination helper ([`Keyset`]), and the small reads
//! every resource shares (a row by id, a row by idempotency key, the customer check).
//!
//! Used where diesel's DSL cannot say the statement (per-backend arithmetic, index hints)
//! and for every keyset page, so that each backend's final text can be read and pinned
//! in a unit test. User input is only ever bound, never formatted into the text.

use chrono::NaiveDateTime;
use diesel::expression::{AppearsOnTable, Expression, ValidGrouping};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::BigInt;
use diesel::{
    dsl, mysql::Mysql, sqlite::Sqlite, BoolExpressionMethods, ExpressionMethods,
    NullableExpressionMethods, QueryDsl, QueryResult, QueryableByName,
};

use super::dialect::{for_update, Conn, Positional};
use super::schema::{communications, customers};
use super::Db;
use crate::error::{Error, Result};
use crate::model::filter::CommunicationFilter;
use crate::with_conn;
use diesel_async::methods::LoadQuery;
use diesel_async::AsyncMysqlConnection;

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    /// A BIGINT.
    I64(i64),
    /// An INT.
    I32(i32),
    /// A UTC time.
    Time(NaiveDateTime),
    /// A string.
    Text(String),
}

/// SQL text with its bound values, in placeholder order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sql {
    /// The statement with `?` placeholders.
    pub text: String,
    /// Values in placeholder order.
    pub binds: Vec<Bind>,
    /// Whether a WHERE clause was opened by [`Sql::and`].
    has_where: bool,
    /// Whether connections keep the statement prepared (see [`Sql::kept`]).
    pub kept: bool,
}

impl From<&str> for Sql {
    fn from(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            ..Sql::default()
        }
    }
}

impl Sql {
    /// Appends SQL text.
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// The same statement, kept prepared by the connections that run it (diesel's
    /// statement cache, keyed by the text), as diesel's own statements are. Only for a
    /// statement with a few fixed texts read again and again (the change feed's pages):
    /// every text stays prepared on every connection for its life.
    pub fn kept(mut self) -> Self {
        self.kept = true;
        self
    }

    /// Appends a `?` and binds `b` to it.
    pub fn bind(&mut self, b: Bind) -> &mut Self {
        self.text.push('?');
        self.binds.push(b);
        self
    }

    /// The statement with every value written in as a literal, for sending several
    /// statements in one round trip; `None` when a value is text (text is only ever
    /// bound). The statement must have no `?` other than its placeholders.
    pub fn inline(&self, backend: super::Backend) -> Option<String> {
        let mut out = String::with_capacity(self.text.len() + 8 * self.binds.len());
        let mut binds = self.binds.iter();
        for piece in self.text.split_inclusive('?') {
            match piece.strip_suffix('?') {
                Some(head) => {
                    out.push_str(head);
                    match binds.next()? {
                        Bind::I64(v) => out.push_str(&v.to_string()),
                        Bind::I32(v) => out.push_str(&v.to_string()),
                        Bind::Time(t) => out.push_str(&super::fns::time_text(backend, *t)),
                        Bind::Text(_) => return None,
                    }
                }
                None => out.push_str(piece),
            }
        }
        binds.next().is_none().then_some(out)
    }

    /// The text of a typed expression without bound values (a [`super::fns`] expression
    /// over columns and constants of the service) as `backend` spells it, for a
    /// hand-built statement to embed.
    pub fn expr_text<E>(backend: super::Backend, expr: &E) -> String
    where
        E: QueryFragment<Mysql> + QueryFragment<Sqlite>,
    {
        let text = match backend {
            super::Backend::Mysql => Sql::mysql_text(expr),
            super::Backend::Sqlite => Sql::sqlite_text(expr),
        };
        // A bound value would leave a `?` without its value, which the database refuses.
        debug_assert!(!text.contains('?'), "a bound value in {text}");
        text
    }

    /// The text of a typed statement or expression without bound values as MySQL
    /// spells it (see [`Sql::expr_text`]).
    pub fn mysql_text<E: QueryFragment<Mysql>>(expr: &E) -> String {
        use diesel::query_builder::QueryBuilder;
        let mut out = diesel::mysql::MysqlQueryBuilder::new();
        // Rendering columns and literals cannot fail.
        QueryFragment::<Mysql>::to_sql(expr, &mut out, &Mysql)
            .map(|()| out.finish())
            .unwrap_or_default()
    }

    /// The text of a typed statement or expression without bound values as SQLite
    /// spells it (see [`Sql::expr_text`]).
    pub fn sqlite_text<E: QueryFragment<Sqlite>>(expr: &E) -> String {
        use diesel::query_builder::QueryBuilder;
        let mut out = diesel::sqlite::SqliteQueryBuilder::new();
        QueryFragment::<Sqlite>::to_sql(expr, &mut out, &Sqlite)
            .map(|()| out.finish())
            .unwrap_or_default()
    }

    /// The typed expression `outer` (see [`super::fns`]) as `backend` spells it, with the
    /// hand-built `parts` (text and bound values) written where it holds
    /// [`super::fns::hole`]s, in order: per-backend SQL around parts that carry values,
    /// for instance `fns::int(fns::div(fns::hole(), fns::hole()))`.
    pub fn around<E>(backend: super::Backend, outer: &E, parts: &[&Sql]) -> Sql
    where
        E: QueryFragment<Mysql> + QueryFragment<Sqlite>,
    {
        let text = Sql::expr_text(backend, outer);
        let mut pieces = text.split(super::fns::HOLE);
        let mut out = Sql::from(pieces.next().unwrap_or_default());
        for (part, after) in parts.iter().zip(pieces.by_ref()) {
            out.append(part).push(after);
        }
        debug_assert!(pieces.next().is_none(), "a hole without its part in {text}");
        debug_assert_eq!(text.matches(super::fns::HOLE).count(), parts.len());
        out
    }

    /// Appends another statement part: its text and bound values.
    pub fn append(&mut self, part: &Sql) -> &mut Self {
        self.text.push_str(&part.text);
        self.binds.extend(part.binds.iter().cloned());
        self
    }

    /// Starts the next condition of the WHERE clause: ` WHERE ` the first time, ` AND `
    /// after that. The caller appends the condition.
    pub fn and(&mut self) -> &mut Self {
        let joint = if self.has_where { " AND " } else { " WHERE " };
        self.has_where = true;
        self.push(joint)
    }

    /// Appends `(?, ?, ...)` binding each of `values`.
    pub fn list(&mut self, values: impl IntoIterator<Item = Bind>) -> &mut Self {
        self.push("(");
        for (i, b) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(b);
        }
        self.push(")")
    }

    /// The conditions of `filter` on `table`, each through [`Sql::and`]: the time range
    /// on the table's time column first, then customers, and (on tables that have them)
    /// channels and direction.
    pub fn filter(&mut self, table: &Table, filter: &CommunicationFilter) -> &mut Self {
        let time = table.time;
        if let Some(start) = filter.start {
            self.and()
                .push(&format!("{time} >= "))
                .bind(Bind::Time(start));
        }
        if let Some(end) = filter.end {
            self.and().push(&format!("{time} < ")).bind(Bind::Time(end));
        }
        if !filter.customer_ids.is_empty() {
            self.and()
                .push("customer_id IN ")
                .list(filter.customer_ids.iter().map(|&c| Bind::I64(c)));
        }
        if table.has_channel {
            if !filter.channels.is_empty() {
                self.and()
                    .push("channel IN ")
                    .list(filter.channels.iter().map(|&c| Bind::I32(c)));
            }
            if let Some(d) = filter.direction {
                self.and().push("direction = ").bind(Bind::I32(d));
            }
        }
        self
    }
}

/// The conditions of a [`CommunicationFilter`] on `communications`, as one typed
/// expression for DSL statements (`.filter(Scope::of(filter))`): the same conditions,
/// in the same order, as [`Sql::filter`] writes for hand-built ones; `1 = 1` when the
/// filter has none.
#[derive(Debug, Clone)]
pub struct Scope {
    start: Option<dsl::GtEq<communications::occur_time, NaiveDateTime>>,
    end: Option<dsl::Lt<communications::occur_time, NaiveDateTime>>,
    customers: Option<dsl::EqAny<communications::customer_id, Vec<i64>>>,
    channels: Option<dsl::EqAny<communications::channel, Vec<i32>>>,
    direction: Option<dsl::Eq<communications::direction, i32>>,
}

impl Scope {
    /// The conditions of `filter`.
    pub fn of(filter: &CommunicationFilter) -> Self {
        let non_empty = |v: bool| v.then_some(());
        Scope {
            start: filter.start.map(|t| communications::occur_time.ge(t)),
            end: filter.end.map(|t| communications::occur_time.lt(t)),
            customers: non_empty(!filter.customer_ids.is_empty())
                .map(|()| communications::customer_id.eq_any(filter.customer_ids.clone())),
            channels: non_empty(!filter.channels.is_empty())
                .map(|()| communications::channel.eq_any(filter.channels.clone())),
            direction: filter.direction.map(|d| communications::direction.eq(d)),
        }
    }
}

impl Expression for Scope {
    type SqlType = diesel::sql_types::Bool;
}

impl AppearsOnTable<communications::table> for Scope {}

impl ValidGrouping<()> for Scope {
    type IsAggregate = diesel::expression::is_aggregate::No;
}

// Which conditions are present changes the text: no static id, so prepared statements
// are cached by their text.
impl QueryId for Scope {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: diesel::backend::Backend> QueryFragment<DB> for Scope
where
    dsl::GtEq<communications::occur_time, NaiveDateTime>: QueryFragment<DB>,
    dsl::Lt<communications::occur_time, NaiveDateTime>: QueryFragment<DB>,
    dsl::EqAny<communications::customer_id, Vec<i64>>: QueryFragment<DB>,
    dsl::EqAny<communications::channel, Vec<i32>>: QueryFragment<DB>,
    dsl::Eq<communications::direction, i32>: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let parts: [Option<&'b dyn QueryFragment<DB>>; 5] = [
            self.start.as_ref().map(|p| p as _),
            self.end.as_ref().map(|p| p as _),
            self.customers.as_ref().map(|p| p as _),
            self.channels.as_ref().map(|p| p as _),
            self.direction.as_ref().map(|p| p as _),
        ];
        let mut any = false;
        for part in parts.into_iter().flatten() {
            if any {
                out.push_sql(" AND ");
            }
            part.walk_ast(out.reborrow())?;
            any = true;
        }
        if !any {
            out.push_sql("1 = 1");
        }
        Ok(())
    }
}

/// An optional condition for DSL statements: `cond` when present, `1 = 1` when not, so
/// a statement with optional filters keeps one type (and one text per filter shape).
pub fn when<E>(cond: Option<E>) -> When<E> {
    When(cond)
}

/// See [`when`].
#[derive(Debug, Clone)]
pub struct When<E>(Option<E>);

impl<E: Expression<SqlType = diesel::sql_types::Bool>> Expression for When<E> {
    type SqlType = diesel::sql_types::Bool;
}

impl<E: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for When<E> where When<E>: Expression {}

impl<E: ValidGrouping<()>> ValidGrouping<()> for When<E> {
    type IsAggregate = E::IsAggregate;
}

// Present or not changes the text: no static id (see [`Scope`]).
impl<E> QueryId for When<E> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: diesel::backend::Backend, E: QueryFragment<DB>> QueryFragment<DB> for When<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        match &self.0 {
            Some(cond) => cond.walk_ast(out),
            None => {
                out.push_sql("1 = 1");
                Ok(())
            }
        }
    }
}

/// Any of `conds` for DSL statements: `(c1 OR c2 ...)`, `1 = 0` when there is none.
pub fn any_of<E>(conds: Vec<E>) -> AnyOf<E> {
    AnyOf(conds)
}

/// See [`any_of`].
#[derive(Debug, Clone)]
pub struct AnyOf<E>(Vec<E>);

impl<E: Expression<SqlType = diesel::sql_types::Bool>> Expression for AnyOf<E> {
    type SqlType = diesel::sql_types::Bool;
}

impl<E: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for AnyOf<E> where AnyOf<E>: Expression {}

impl<E: ValidGrouping<()>> ValidGrouping<()> for AnyOf<E> {
    type IsAggregate = E::IsAggregate;
}

// The number of conditions changes the text: no static id (see [`Scope`]).
impl<E> QueryId for AnyOf<E> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: diesel::backend::Backend, E: QueryFragment<DB>> QueryFragment<DB> for AnyOf<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if self.0.is_empty() {
            out.push_sql("1 = 0");
            return Ok(());
        }
        out.push_sql("(");
        for (i, cond) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_sql(" OR ");
            }
            cond.walk_ast(out.reborrow())?;
        }
        out.push_sql(")");
        Ok(())
    }
}

/// "Strictly after `(t, i)`" of a page ordered by `(time, id)` descending:
/// `time <= t AND (time < t OR (time = t AND id < i))` (see [`Keyset`] for why the
/// leading range).
pub type OlderThan<T, I> = dsl::And<
    dsl::LtEq<T, NaiveDateTime>,
    dsl::Or<dsl::Lt<T, NaiveDateTime>, dsl::And<dsl::Eq<T, NaiveDateTime>, dsl::Lt<I, i64>>>,
>;

/// See [`OlderThan`].
pub fn older_than<T, I>(time: T, id: I, (t, i): (NaiveDateTime, i64)) -> OlderThan<T, I>
where
    T: ExpressionMethods + Expression<SqlType = diesel::sql_types::Timestamp> + Copy,
    I: ExpressionMethods + Expression<SqlType = BigInt>,
{
    time.le(t).and(time.lt(t).or(time.eq(t).and(id.lt(i))))
}

/// "Strictly after `(t, i)`" of a page ordered by `(time, id)` ascending:
/// `time >= t AND (time > t OR (time = t AND id > i))`.
pub type NewerThan<T, I> = dsl::And<
    dsl::GtEq<T, NaiveDateTime>,
    dsl::Or<dsl::Gt<T, NaiveDateTime>, dsl::And<dsl::Eq<T, NaiveDateTime>, dsl::Gt<I, i64>>>,
>;

/// See [`NewerThan`].
pub fn newer_than<T, I>(time: T, id: I, (t, i): (NaiveDateTime, i64)) -> NewerThan<T, I>
where
    T: ExpressionMethods + Expression<SqlType = diesel::sql_types::Timestamp> + Copy,
    I: ExpressionMethods + Expression<SqlType = BigInt>,
{
    time.ge(t).and(time.gt(t).or(time.eq(t).and(id.gt(i))))
}

/// A table as the statement builders see it.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Its name.
    pub name: &'static str,
    /// What one row is called in a NOT_FOUND status.
    pub resource: &'static str,
    /// The columns of its row type, in the row type's field order.
    pub columns: &'static str,
    /// The time column its pages are ordered by.
    pub time: &'static str,
    /// Whether it has `channel` and `direction` (communications only).
    pub has_channel: bool,
    /// The page order: the time column, then `id`.
    pub order: &'static [&'static str],
}

impl Table {
    /// `SELECT <columns> FROM <name>`, for the builders to continue.
    pub fn select(&self) -> Sql {
        Sql::from(format!("SELECT {} FROM {}", self.columns, self.name).as_str())
    }

    /// The keyset of this table's pages: `(time, id)`.
    pub fn keyset(&self, descending: bool) -> Keyset<'static> {
        Keyset {
            columns: self.order,
            descending,
        }
    }
}

/// Keyset pagination over an ordered list of columns (the last one unique, usually
/// `id`): the bound "strictly after this row" and the matching ORDER BY.
///
/// The bound is written `c1 >= v1 AND (c1 > v1 OR (c1 = v1 AND (c2 > v2 OR ...)))`:
/// the redundant leading range gives the planners a plain range on the index (the OR
/// alone is planned by MariaDB as a `ref` scan, by SQLite as a full scan).
#[derive(Debug, Clone, Copy)]
pub struct Keyset<'a> {
    /// The order columns, most significant first.
    pub columns: &'a [&'a str],
    /// Whether pages run from the largest key down.
    pub descending: bool,
}

impl Keyset<'_> {
    /// Adds (through [`Sql::and`]) the condition "strictly after `after`" in this order;
    /// `after` holds one value per column. Nothing when `after` is `None`.
    pub fn after(&self, sql: &mut Sql, after: Option<&[Bind]>) {
        let Some(after) = after else { return };
        debug_assert_eq!(after.len(), self.columns.len());
        let (range, strict) = if self.descending {
            ("<=", "<")
        } else {
            (">=", ">")
        };
        let (Some(first), Some(first_value)) = (self.columns.first(), after.first()) else {
            return;
        };
        if self.columns.len() > 1 {
            sql.and()
                .push(&format!("{first} {range} "))
                .bind(first_value.clone());
        }
        sql.and();
        self.bound(sql, 0, after, strict);
    }

    /// [`Keyset::after`] for a `(time, id)` keyset and position.
    pub fn after_row(&self, sql: &mut Sql, after: Option<(NaiveDateTime, i64)>) {
        if let Some((time, id)) = after {
            self.after(sql, Some(&[Bind::Time(time), Bind::I64(id)]));
        }
    }

    /// `ci > vi OR (ci = vi AND <bound of the rest>)`, parenthesized.
    fn bound(&self, sql: &mut Sql, i: usize, after: &[Bind], strict: &str) {
        let column = self.columns[i];
        if i + 1 == self.columns.len() {
            sql.push(&format!("{column} {strict} "))
                .bind(after[i].clone());
            return;
        }
        sql.push(&format!("({column} {strict} "))
            .bind(after[i].clone())
            .push(&format!(" OR ({column} = "))
            .bind(after[i].clone())
            .push(" AND ");
        self.bound(sql, i + 1, after, strict);
        sql.push("))");
    }

    /// ` ORDER BY c1 DIR, c2 DIR ... LIMIT ?`.
    pub fn order_limit(&self, sql: &mut Sql, limit: i64) {
        let dir = if self.descending { "DESC" } else { "ASC" };
        let order: Vec<String> = self.columns.iter().map(|c| format!("{c} {dir}")).collect();
        sql.push(&format!(" ORDER BY {} LIMIT ", order.join(", ")))
            .bind(Bind::I64(limit));
    }
}

/// Loads the rows of `sql` on a pooled connection of either backend.
pub async fn load<R>(db: &Db, sql: &Sql) -> Result<Vec<R>>
where
    R: QueryableByName<Mysql> + QueryableByName<Sqlite> + Send + 'static,
{
    with_conn!(db, |conn| Ok(conn.load_sql::<R>(sql).await?))
}

/// Loads the rows of `sql`, whose select list is the row type `R`'s columns in its
/// field order (a [`Table`]'s `columns`), by position: the read of long row sets
/// (timelines, the change feed, the content index's load).
pub async fn load_rows<R>(db: &Db, sql: &Sql) -> Result<Vec<R>>
where
    R: Send + 'static,
    Positional<Mysql, R>: LoadQuery<'static, AsyncMysqlConnection, R>,
    Positional<Sqlite, R>: diesel::query_dsl::LoadQuery<'static, diesel::SqliteConnection, R>,
{
    with_conn!(db, |conn| Ok(conn.load_rows::<R>(sql).await?))
}

/// The row of `table` with this id, or NOT_FOUND.
pub async fn by_id<C, R>(conn: &mut C, table: &Table, id: i64) -> Result<R>
where
    C: Conn,
    R: QueryableByName<diesel::mysql::Mysql>
        + QueryableByName<diesel::sqlite::Sqlite>
        + Send
        + 'static,
{
    // raw SQL: table named at run time (every resource's by-id read)
    let mut sql = table.select();
    sql.and().push("id = ").bind(Bind::I64(id));
    let rows: Vec<R> = conn.load_sql(&sql).await?;
    rows.into_iter().next().ok_or(Error::NotFound {
        resource: table.resource,
        id,
    })
}

/// The row of a per-customer `table` this customer created with the idempotency key
/// `request_id`, if any. The key is bound as text.
pub async fn by_request_id<C, R>(
    conn: &mut C,
    table: &Table,
    customer_id: i64,
    request_id: &str,
) -> Result<Option<R>>
where
    C: Conn,
    R: QueryableByName<diesel::mysql::Mysql>
        + QueryableByName<diesel::sqlite::Sqlite>
        + Send
        + 'static,
{
    // raw SQL: table named at run time (every resource's idempotency-key read)
    let mut sql = table.select();
    sql.and()
        .push("customer_id = ")
        .bind(Bind::I64(customer_id))
        .and()
        .push("request_id = ")
        .bind(Bind::Text(request_id.to_owned()))
        .push(" LIMIT 1");
    let rows: Vec<R> = conn.load_sql(&sql).await?;
    Ok(rows.into_iter().next())
}

/// A row of one id column.
#[derive(Debug, QueryableByName)]
pub struct IdRow {
    /// The id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
}

/// NOT_FOUND unless the customer exists and is not deleted; a merged customer's
/// NOT_FOUND names the customer it was merged into ([`Error::Merged`]).
pub async fn ensure_customer<C: Conn>(conn: &mut C, id: i64) -> Result<()> {
    if conn.customer_is_live(id).await? {
        Ok(())
    } else {
        Err(customer_gone(conn, id).await?)
    }
}

/// [`ensure_customer`] for a write: in the caller's transaction, it also locks the
/// customer's row until the transaction ends (MySQL `FOR UPDATE`; SQLite's writer holds
/// the database), so a concurrent `MergeCustomers` cannot move the customer's history
/// away between this check and the caller's INSERT: the merge waits for this
/// transaction, or this check waits for the merge and then answers [`Error::Merged`].
pub async fn lock_customer<C: Conn>(conn: &mut C, id: i64) -> Result<()> {
    let live = lock_live_customers(conn, &[id]).await?;
    if live.contains(&id) {
        Ok(())
    } else {
        Err(customer_gone(conn, id).await?)
    }
}

/// The live customers among `ids`, their rows locked as [`lock_customer`] does (in
/// ascending id order, the order every locking writer uses, so two never wait on each
/// other in a cycle).
pub async fn lock_live_customers<C: Conn>(
    conn: &mut C,
    ids: &[i64],
) -> Result<std::collections::HashSet<i64>> {
    if ids.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let query = for_update(
        customers::table
            .filter(customers::id.eq_any(sorted))
            .filter(customers::delete_time.is_null())
            .order(customers::id)
            .select(customers::id),
    );
    let rows: Vec<i64> = conn.any().load(query).await?;
    Ok(rows.into_iter().collect())
}

/// Why customer `id` is not live: [`Error::Merged`] when it was merged into another,
/// NOT_FOUND otherwise.
pub async fn customer_gone<C: Conn>(conn: &mut C, id: i64) -> Result<Error> {
    let query = customers::table
        .filter(customers::id.eq(id))
        .filter(customers::merged_into.is_not_null())
        .select(customers::merged_into.assume_not_null());
    let merged_into: Option<i64> = conn.any().first(query).await?;
    Ok(match merged_into {
        Some(merged_into) => Error::Merged { id, merged_into },
        None => Error::NotFound {
            resource: "customer",
            id,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The builders' text, pinned: every keyset page and filtered read is assembled here.
    use super::*;
    use crate::model::time::march_2024 as at;

    /// The column names `R`'s selection reads, in order, as diesel prints them.
    fn selected<R: diesel::Selectable<Sqlite>>() -> Vec<String>
    where
        R::SelectExpression: QueryFragment<Sqlite>,
    {
        let text = diesel::debug_query::<Sqlite, _>(&R::construct_selection()).to_string();
        let list = text.split(" -- binds").next().unwrap();
        list.split(", ")
            .map(|c| c.rsplit('.').next().unwrap().trim_matches('`').to_owned())
            .collect()
    }

    fn listed(columns: &str) -> Vec<String> {
        columns.split(',').map(|c| c.trim().to_owned()).collect()
    }

    /// Rows read by position (`load_rows`) need each table's select list in its row
    /// type's field order: a swapped pair of same-typed columns would load silently.
    #[test]
    fn table_columns_are_their_row_types_selection_in_order() {
        use crate::db::communications::{CommunicationRow, COMMUNICATIONS};
        use crate::db::content_feed::{FeedRow, FEED_SELECT_LIST};
        use crate::db::tickets::{TicketRow, TICKETS};
        use crate::db::transactions::{TransactionRow, TRANSACTIONS};
        assert_eq!(
            listed(COMMUNICATIONS.columns),
            selected::<CommunicationRow>()
        );
        assert_eq!(listed(TRANSACTIONS.columns), selected::<TransactionRow>());
        assert_eq!(listed(TICKETS.columns), selected::<TicketRow>());
        assert_eq!(listed(FEED_SELECT_LIST), selected::<FeedRow>());
        assert_eq!(selected::<FeedRow>()[..3], ["id", "customer_id", "channel"]);
    }

    const T: Table = Table {
        name: "t",
        resource: "row",
        columns: "id, x",
        time: "occur_time",
        has_channel: true,
        order: &["occur_time", "id"],
    };

    #[test]
    fn any_of_joins_its_conditions_with_or_and_holds_none_without_any() {
        use communications::occur_time as t;
        let text = |conds: Vec<_>| {
            let q = communications::table
                .filter(any_of(conds))
                .select(communications::id);
            diesel::debug_query::<Sqlite, _>(&q).to_string()
        };
        let range = |a: u32, b: u32| t.ge(at(a)).and(t.lt(at(b)));
        let two = text(vec![range(1, 2), range(5, 9)]);
        let (a, b) = (
            "((`communications`.`occur_time` >= ?) AND (`communications`.`occur_time` < ?))",
            " -- binds: [2024-03-01T00:00:00, 2024-03-02T00:00:00",
        );
        let head = "SELECT `communications`.`id` FROM `communications` WHERE ";
        assert_eq!(
            two,
            format!("{head}({a} OR {a}){b}, 2024-03-05T00:00:00, 2024-03-09T00:00:00]")
        );
        assert_eq!(text(vec![range(1, 2)]), format!("{head}({a}){b}]"));
        assert_eq!(text(Vec::new()), format!("{head}1 = 0 -- binds: []"));
    }

    #[test]
    fn keyset_bounds_nest_per_column_with_a_leading_range() {
        let mut sql = Sql::default();
        let keyset = Keyset {
            columns: &["a", "b", "c"],
            descending: false,
        };
        keyset.after(&mut sql, Some(&[Bind::I64(1), Bind::I64(2), Bind::I64(3)]));
        keyset.order_limit(&mut sql, 10);
        assert_eq!(
            sql.text,
            " WHERE a >= ? AND (a > ? OR (a = ? AND (b > ? OR (b = ? AND c > ?)))) \
             ORDER BY a ASC, b ASC, c ASC LIMIT ?"
        );
        let values: Vec<Bind> = [1, 1, 1, 2, 2, 3, 10].map(Bind::I64).to_vec();
        assert_eq!(sql.binds, values);

        let mut sql = Sql::default();
        let keyset = Keyset {
            columns: &["id"],
            descending: true,
        };
        keyset.after(&mut sql, Some(&[Bind::I64(5)]));
        keyset.order_limit(&mut sql, 2);
        assert_eq!(sql.text, " WHERE id < ? ORDER BY id DESC LIMIT ?");
    }

    #[test]
    fn keyset_without_a_position_only_orders() {
        let mut sql = T.select();
        let keyset = T.keyset(true);
        keyset.after_row(&mut sql, None);
        keyset.order_limit(&mut sql, 3);
        assert_eq!(
            sql.text,
            "SELECT id, x FROM t ORDER BY occur_time DESC, id DESC LIMIT ?"
        );
        let mut sql = T.select();
        keyset.after_row(&mut sql, Some((at(1), 9)));
        assert_eq!(
            sql.text,
            "SELECT id, x FROM t WHERE occur_time <= ? AND (occur_time < ? OR \
             (occur_time = ? AND id < ?))"
        );
        assert_eq!(sql.binds.len(), sql.text.matches('?').count());
    }

    #[test]
    fn inline_writes_numbers_and_times_and_refuses_text() {
        let mut sql = Sql::from("INSERT INTO t VALUES ");
        sql.list([
            Bind::I64(-7),
            Bind::I32(3),
            Bind::Time(at(9) + chrono::Duration::microseconds(1_500)),
        ]);
        assert_eq!(
            sql.inline(super::super::Backend::Mysql).unwrap(),
            "INSERT INTO t VALUES (-7, 3, '2024-03-09 00:00:00.001500')"
        );
        assert_eq!(
            sql.inline(super::super::Backend::Sqlite).unwrap(),
            "INSERT INTO t VALUES (-7, 3, '2024-03-09 00:00:00.001500')"
        );
        let mut whole = Sql::from("SELECT ");
        whole.bind(Bind::Time(at(9)));
        assert_eq!(
            whole.inline(super::super::Backend::Sqlite).unwrap(),
            "SELECT '2024-03-09 00:00:00'"
        );
        let mut text = Sql::from("SELECT ");
        text.bind(Bind::Text("x'; DROP TABLE t; --".into()));
        assert_eq!(text.inline(super::super::Backend::Mysql), None);
    }

    #[test]
    fn filter_writes_every_field_in_a_fixed_order() {
        let filter = CommunicationFilter {
            customer_ids: vec![7, 9],
            channels: vec![1],
            direction: Some(2),
            start: Some(at(1)),
            end: Some(at(2)),
        };
        let mut sql = T.select();
        sql.filter(&T, &filter);
        assert_eq!(
            sql.text,
            "SELECT id, x FROM t WHERE occur_time >= ? AND occur_time < ? AND customer_id IN \
             (?, ?) AND channel IN (?) AND direction = ?"
        );
        assert_eq!(
            sql.binds,
            vec![
                Bind::Time(at(1)),
                Bind::Time(at(2)),
                Bind::I64(7),
                Bind::I64(9),
                Bind::I32(1),
                Bind::I32(2)
            ]
        );
        // Tables without channel and direction ignore those fields.
        let no_channel = Table {
            has_channel: false,
            time: "open_time",
            ..T
        };
        let mut sql = no_channel.select();
        sql.filter(&no_channel, &filter);
        assert_eq!(
            sql.text,
            "SELECT id, x FROM t WHERE open_time >= ? AND open_time < ? AND customer_id IN (?, ?)"
        );
        // An empty filter writes nothing.
        let mut sql = T.select();
        sql.filter(&T, &CommunicationFilter::default());
        assert_eq!(sql.text, "SELECT id, x FROM t");
    }
}

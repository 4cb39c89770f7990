//! Everything that differs between the two backends, in one place: index hints, locking
//! reads, `INSERT IGNORE`, the upsert clause of the run-time-named rollup tiers, and the
//! [`Conn`] operations the drivers implement differently (running a hand-built statement,
//! the last insert id, a multi-row INSERT). Per-backend expressions (epoch arithmetic,
//! integer casts and operators, upserts on schema tables) are typed, in `fns`; hand-built
//! statements embed them with `Sql::expr_text` / `Sql::around`.
//!
//! No other module matches on the backend to choose SQL text.

use std::future::Future;

use futures_util::future::{BoxFuture, FutureExt};

use diesel::{
    mysql::Mysql,
    query_builder::{AstPass, QueryFragment},
    sql_types::{BigInt, Integer, Text, Timestamp},
    sqlite::Sqlite,
    OptionalExtension, QueryResult, QueryableByName,
};
use diesel_async::methods::{ExecuteDsl, LoadQuery};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

use super::query::{Bind, Sql};
use super::schema::customers;
use super::{fns, SqliteConn};

/// The two supported backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// MySQL, MariaDB or TiDB.
    Mysql,
    /// SQLite.
    Sqlite,
}

impl Backend {
    /// `mysql` or `sqlite`, as in the database URL's scheme.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Mysql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// An index a statement asks the planner to walk. MySQL gets `FORCE INDEX`: MariaDB
/// otherwise picks plans that re-read rows for every page (a `ref` scan on
/// `customer_id`, or a full scan plus a filesort). SQLite's planner needs no hint except
/// to read a table in rowid order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    /// `communications (customer_id, occur_time, id)`.
    CustomerTime,
    /// `communications (occur_time, id)`.
    Time,
    /// The primary key, read in order (SQLite: `NOT INDEXED`, a rowid scan).
    Primary,
}

impl Backend {
    /// The hint that makes the planner use `index`, with a leading space; empty when the
    /// backend needs none.
    pub fn index_hint(self, index: Index) -> &'static str {
        match (self, index) {
            (Backend::Mysql, Index::CustomerTime) => {
                " FORCE INDEX (ix_communications_customer_time)"
            }
            (Backend::Mysql, Index::Time) => " FORCE INDEX (ix_communications_time)",
            (Backend::Mysql, Index::Primary) => " FORCE INDEX (PRIMARY)",
            (Backend::Sqlite, Index::Primary) => " NOT INDEXED",
            (Backend::Sqlite, Index::CustomerTime | Index::Time) => "",
        }
    }

    /// The clause that turns an INSERT into an upsert on the primary key `key`: each of
    /// `add` is increased by the inserted value. Only for the time-tier rollup tables,
    /// two tables of one layout named at run time; statements on a table the schema
    /// names use the typed [`fns::upsert`].
    pub fn upsert(self, key: &str, add: &[&str]) -> String {
        let sets: Vec<String> = add
            .iter()
            .map(|c| match self {
                Backend::Mysql => format!("{c} = {c} + VALUES({c})"),
                Backend::Sqlite => format!("{c} = {c} + excluded.{c}"),
            })
            .collect();
        match self {
            Backend::Mysql => format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", ")),
            Backend::Sqlite => format!(" ON CONFLICT ({key}) DO UPDATE SET {}", sets.join(", ")),
        }
    }

    /// ` FOR UPDATE` on the MySQL family: a read that locks the rows it reads until the
    /// transaction ends (and reads their latest committed state). Empty on SQLite, whose
    /// writing transaction holds the whole database (and this process's writers queue
    /// on the write lock before they begin).
    pub fn for_update(self) -> &'static str {
        match self {
            Backend::Mysql => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// `INSERT ... INTO` that skips rows whose key exists already, with a trailing space.
    pub fn insert_ignore(self) -> &'static str {
        match self {
            Backend::Mysql => "INSERT IGNORE INTO ",
            Backend::Sqlite => "INSERT OR IGNORE INTO ",
        }
    }
}

/// A borrowed connection of either backend, for storage functions written once: a
/// diesel DSL statement's type does not depend on the backend, so each method takes any
/// statement both connection types can run. The bounds are checked where the statement
/// is built (its type is concrete there), so a helper needs no per-backend where-clause
/// and no macro. Get one with [`Conn::any`].
pub enum AnyConn<'a> {
    /// MySQL, MariaDB or TiDB.
    Mysql(&'a mut AsyncMysqlConnection),
    /// SQLite.
    Sqlite(&'a mut SqliteConn),
}

impl<'c> AnyConn<'c> {
    /// Which backend this connection talks to.
    pub fn backend(&self) -> Backend {
        match self {
            AnyConn::Mysql(_) => Backend::Mysql,
            AnyConn::Sqlite(_) => Backend::Sqlite,
        }
    }

    // The futures are boxed: an `async fn` generic over the query's lifetime makes the
    // calling handler's future fail the `Send` check ("not general enough").

    /// Runs `query` and loads every row.
    pub fn load<'q, Q, R>(self, query: Q) -> BoxFuture<'c, QueryResult<Vec<R>>>
    where
        Q: LoadQuery<'q, AsyncMysqlConnection, R> + LoadQuery<'q, SqliteConn, R> + 'q,
        'q: 'c,
        R: Send + 'c,
    {
        match self {
            AnyConn::Mysql(c) => query.load(c).boxed(),
            AnyConn::Sqlite(c) => query.load(c).boxed(),
        }
    }

    /// Runs `query` and loads its one row (`NotFound` when there is none).
    pub fn get_result<'q, Q, R>(self, query: Q) -> BoxFuture<'c, QueryResult<R>>
    where
        Q: LoadQuery<'q, AsyncMysqlConnection, R> + LoadQuery<'q, SqliteConn, R> + 'q,
        'q: 'c,
        R: Send + 'c,
    {
        match self {
            AnyConn::Mysql(c) => query.get_result(c).boxed(),
            AnyConn::Sqlite(c) => query.get_result(c).boxed(),
        }
    }

    /// The first row of `query` (`LIMIT 1`), if any.
    pub fn first<'q, Q, R>(self, query: Q) -> BoxFuture<'c, QueryResult<Option<R>>>
    where
        Q: diesel::query_dsl::methods::LimitDsl,
        diesel::dsl::Limit<Q>:
            LoadQuery<'q, AsyncMysqlConnection, R> + LoadQuery<'q, SqliteConn, R> + Send + 'q,
        'q: 'c,
        R: Send + 'c,
    {
        let fut = match self {
            AnyConn::Mysql(c) => query.first(c).boxed(),
            AnyConn::Sqlite(c) => query.first(c).boxed(),
        };
        fut.map(OptionalExtension::optional).boxed()
    }

    /// Inserts `rows` into `table` with one multi-row INSERT (in the caller's
    /// transaction, if any); the number of rows stored.
    pub fn insert_all<T, V>(self, table: T, rows: Vec<V>) -> BoxFuture<'c, QueryResult<usize>>
    where
        T: diesel::Table + Send + 'static,
        V: Send + 'static,
        Vec<V>: diesel::Insertable<T>,
        diesel::query_builder::InsertStatement<T, <Vec<V> as diesel::Insertable<T>>::Values>:
            ExecuteDsl<AsyncMysqlConnection>
                + diesel::query_dsl::methods::ExecuteDsl<diesel::SqliteConnection>
                + Send
                + 'static,
    {
        match self {
            AnyConn::Mysql(c) => diesel::insert_into(table).values(rows).execute(c).boxed(),
            // A multi-row INSERT does not compile through the async wrapper on SQLite: it
            // runs with diesel's synchronous API on the wrapper's blocking thread, on the
            // same connection (and so in the caller's transaction).
            AnyConn::Sqlite(c) => c
                .spawn_blocking(move |conn| {
                    diesel::RunQueryDsl::execute(diesel::insert_into(table).values(rows), conn)
                })
                .boxed(),
        }
    }

    /// Runs a hand-built statement and loads its rows.
    pub fn load_sql<R>(self, sql: &Sql) -> BoxFuture<'c, QueryResult<Vec<R>>>
    where
        R: QueryableByName<Mysql> + QueryableByName<Sqlite> + Send + 'static,
    {
        match self {
            AnyConn::Mysql(c) => statement::<Mysql>(sql).load(c).boxed(),
            AnyConn::Sqlite(c) => statement::<Sqlite>(sql).load(c).boxed(),
        }
    }

    /// Runs a hand-built statement whose select list is `R`'s columns in `R`'s field
    /// order (a [`super::query::Table`]'s `columns`) and loads its rows by position,
    /// as diesel's DSL does: [`AnyConn::load_sql`] looks every field's column up by
    /// name, which costs more than decoding the row on long reads.
    pub fn load_rows<R>(self, sql: &Sql) -> BoxFuture<'c, QueryResult<Vec<R>>>
    where
        R: Send + 'static,
        Positional<Mysql, R>: LoadQuery<'static, AsyncMysqlConnection, R>,
        Positional<Sqlite, R>: diesel::query_dsl::LoadQuery<'static, diesel::SqliteConnection, R>,
    {
        match self {
            AnyConn::Mysql(c) => Positional::<Mysql, R>::new(statement(sql)).load(c).boxed(),
            // Read and decoded in one pass on the connection's blocking thread with
            // diesel's synchronous API: the async wrapper's load copies every value of
            // every row out of SQLite before decoding, three times the driver's cost
            // on long reads (timelines, the content index's load).
            AnyConn::Sqlite(c) => {
                let query = Positional::<Sqlite, R>::new(statement(sql));
                c.spawn_blocking(move |conn| diesel::RunQueryDsl::load::<R>(query, conn))
                    .boxed()
            }
        }
    }

    /// Runs a hand-built statement that returns no rows; the number of rows it changed.
    pub fn execute_sql(self, sql: &Sql) -> BoxFuture<'c, QueryResult<usize>> {
        match self {
            AnyConn::Mysql(c) => statement::<Mysql>(sql).execute(c).boxed(),
            AnyConn::Sqlite(c) => statement::<Sqlite>(sql).execute(c).boxed(),
        }
    }

    /// Runs `query`, which returns no rows; the number of rows it changed.
    pub fn execute<'q, Q>(self, query: Q) -> BoxFuture<'c, QueryResult<usize>>
    where
        Q: ExecuteDsl<AsyncMysqlConnection> + ExecuteDsl<SqliteConn> + 'q,
        'q: 'c,
    {
        match self {
            AnyConn::Mysql(c) => query.execute(c).boxed(),
            AnyConn::Sqlite(c) => query.execute(c).boxed(),
        }
    }
}

/// The columns of the row type `T`, for `.select(..)`: its `Selectable` selection. A
/// row of plain columns selects the same expression on both backends, unlike
/// `T::as_select()`, whose type names one backend; `T`'s derived `Queryable` reads it
/// on either.
pub fn columns<T: diesel::Selectable<Mysql>>() -> T::SelectExpression {
    T::construct_selection()
}

/// `query` as a locking read: `FOR UPDATE` on the MySQL family (the rows stay locked,
/// and are read in their latest committed state, until the transaction ends); `query`
/// as it is on SQLite, whose writing transaction holds the whole database (and this
/// process's writers queue on the write lock before they begin). diesel's own
/// `for_update()` does not exist for SQLite, so one statement could not serve both.
pub fn for_update<Q>(query: Q) -> ForUpdate<Q> {
    ForUpdate(query)
}

/// See [`for_update`].
#[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
pub struct ForUpdate<Q>(Q);

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for ForUpdate<Q> {
    type SqlType = Q::SqlType;
}

impl<Q: QueryFragment<Mysql>> QueryFragment<Mysql> for ForUpdate<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(" FOR UPDATE");
        Ok(())
    }
}

impl<Q: QueryFragment<Sqlite>> QueryFragment<Sqlite> for ForUpdate<Q> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.0.walk_ast(out)
    }
}

/// A connection of either backend: what `with_conn!` bodies may call besides diesel's
/// DSL, implemented once per driver.
pub trait Conn: AsyncConnection + Send {
    /// Which backend this connection talks to.
    const BACKEND: Backend;

    /// This connection as an [`AnyConn`], for DSL statements written once.
    fn any(&mut self) -> AnyConn<'_>;

    /// Runs a hand-built statement and loads its rows.
    fn load_sql<'a, R>(
        &'a mut self,
        sql: &'a Sql,
    ) -> impl Future<Output = QueryResult<Vec<R>>> + Send
    where
        R: QueryableByName<Mysql> + QueryableByName<Sqlite> + Send + 'static,
    {
        self.any().load_sql(sql)
    }

    /// [`AnyConn::load_rows`]: a hand-built statement selecting `R`'s columns, read by
    /// position.
    fn load_rows<'a, R>(
        &'a mut self,
        sql: &'a Sql,
    ) -> impl Future<Output = QueryResult<Vec<R>>> + Send
    where
        R: Send + 'static,
        Positional<Mysql, R>: LoadQuery<'static, AsyncMysqlConnection, R>,
        Positional<Sqlite, R>: diesel::query_dsl::LoadQuery<'static, diesel::SqliteConnection, R>,
    {
        self.any().load_rows(sql)
    }

    /// Runs a hand-built statement that returns no rows; the number of rows it changed.
    fn execute_sql<'a>(
        &'a mut self,
        sql: &'a Sql,
    ) -> impl Future<Output = QueryResult<usize>> + Send {
        self.any().execute_sql(sql)
    }

    /// Id generated by the last INSERT on this connection. A fixed statement, so the
    /// MySQL driver keeps it prepared (a hand-built one is prepared and closed each time).
    fn last_insert_id(&mut self) -> impl Future<Output = QueryResult<i64>> + Send {
        let query = diesel::select(fns::last_insert_id());
        self.any().get_result(query)
    }

    /// [`Conn::last_insert_id`] with the connection's id step (MySQL's session
    /// `auto_increment_increment`: 2 or 3 on replication rings and Galera clusters; 1 on
    /// SQLite), read in the same statement.
    fn last_insert_id_and_step(&mut self) -> impl Future<Output = QueryResult<(i64, i64)>> + Send {
        let query = diesel::select((fns::last_insert_id(), fns::id_step()));
        self.any().get_result(query)
    }

    /// Whether the customer exists and is not deleted; a fixed statement, kept prepared.
    fn customer_is_live(&mut self, id: i64) -> impl Future<Output = QueryResult<bool>> + Send {
        self.any()
            .first::<_, i64>(live_customer(id))
            .map(|found| found.map(|c| c.is_some()))
    }
}

/// The backend of a connection (whose type differs per `with_conn!` arm).
pub fn backend_of<C: Conn>(_: &C) -> Backend {
    C::BACKEND
}

/// Customer `id`, filtered.
type CustomerById = diesel::dsl::Filter<customers::table, diesel::dsl::Eq<customers::id, i64>>;
/// The query of [`Conn::customer_is_live`].
type LiveCustomer = diesel::dsl::Select<
    diesel::dsl::Filter<CustomerById, diesel::dsl::IsNull<customers::delete_time>>,
    customers::id,
>;

/// The id of customer `id` if it is live: the query of [`Conn::customer_is_live`].
fn live_customer(id: i64) -> LiveCustomer {
    use diesel::{ExpressionMethods, QueryDsl};
    customers::table
        .filter(customers::id.eq(id))
        .filter(customers::delete_time.is_null())
        .select(customers::id)
}

/// The SQL types of `R`'s selection (its `Selectable` columns, in field order).
pub type RowSqlType<R> =
    <<R as diesel::Selectable<Mysql>>::SelectExpression as diesel::Expression>::SqlType;

/// A hand-built statement typed as selecting `R`'s columns, so that diesel reads its
/// rows by position (`Queryable`) rather than by column name. Built by
/// [`AnyConn::load_rows`], whose callers name the row type their select list holds.
pub struct Positional<DB: diesel::backend::Backend, R> {
    query: Statement<DB>,
    row: std::marker::PhantomData<fn() -> R>,
}

impl<DB: diesel::backend::Backend, R> Positional<DB, R> {
    /// `query` typed as selecting `R`'s columns.
    fn new(query: Statement<DB>) -> Self {
        Positional {
            query,
            row: std::marker::PhantomData,
        }
    }
}

impl<DB: diesel::backend::Backend, R: diesel::Selectable<Mysql>> diesel::query_builder::Query
    for Positional<DB, R>
{
    type SqlType = RowSqlType<R>;
}

impl<DB: diesel::backend::Backend, R> diesel::query_builder::QueryId for Positional<DB, R> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: diesel::backend::Backend, R, C> diesel::RunQueryDsl<C> for Positional<DB, R> {}

impl<DB: diesel::backend::Backend, R> QueryFragment<DB> for Positional<DB, R>
where
    Statement<DB>: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.query.walk_ast(out)
    }
}

/// A hand-built statement ([`Sql`]) as a diesel query of backend `DB`, every value
/// bound to its `?` in order; its rows are read by name (`QueryableByName`).
///
/// Like diesel's own `sql_query`, it is prepared and closed on every run, unless the
/// [`Sql`] is [`Sql::kept`]: then the connection keeps it prepared (diesel's statement
/// cache, keyed by its text) as it does its DSL statements.
pub struct Statement<DB> {
    sql: Sql,
    backend: std::marker::PhantomData<fn() -> DB>,
}

/// `sql` as a [`Statement`].
fn statement<DB>(sql: &Sql) -> Statement<DB> {
    // raw SQL: the Sql builder's one way into diesel: its text with a bind per placeholder
    Statement {
        sql: sql.clone(),
        backend: std::marker::PhantomData,
    }
}

impl<DB> QueryFragment<DB> for Statement<DB>
where
    DB: diesel::backend::Backend + diesel::sql_types::HasSqlType<BigInt>,
    DB: diesel::sql_types::HasSqlType<Integer> + diesel::sql_types::HasSqlType<Timestamp>,
    DB: diesel::sql_types::HasSqlType<Text>,
    String: diesel::serialize::ToSql<Text, DB>,
    i64: diesel::serialize::ToSql<BigInt, DB>,
    i32: diesel::serialize::ToSql<Integer, DB>,
    chrono::NaiveDateTime: diesel::serialize::ToSql<Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if !self.sql.kept {
            out.unsafe_to_cache_prepared();
        }
        // The text's `?`s are its placeholders (the builder writes no other), each
        // written again by its bind.
        let mut pieces = self.sql.text.split('?');
        out.push_sql(pieces.next().unwrap_or_default());
        let mut binds = self.sql.binds.iter();
        for piece in pieces {
            match binds.next() {
                Some(Bind::I64(v)) => out.push_bind_param::<BigInt, _>(v)?,
                Some(Bind::I32(v)) => out.push_bind_param::<Integer, _>(v)?,
                Some(Bind::Time(v)) => out.push_bind_param::<Timestamp, _>(v)?,
                Some(Bind::Text(v)) => out.push_bind_param::<Text, _>(v)?,
                None => return Err(unbound(&self.sql)),
            }
            out.push_sql(piece);
        }
        match binds.next() {
            Some(_) => Err(unbound(&self.sql)),
            None => Ok(()),
        }
    }
}

/// The error of a statement whose `?`s and values do not pair up.
fn unbound(sql: &Sql) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        format!(
            "{} values for the placeholders of: {}",
            sql.binds.len(),
            sql.text
        )
        .into(),
    )
}

// No static id: cached by its text when kept.
impl<DB> diesel::query_builder::QueryId for Statement<DB> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> diesel::query_builder::Query for Statement<DB> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<DB, C> diesel::RunQueryDsl<C> for Statement<DB> {}

impl Conn for AsyncMysqlConnection {
    const BACKEND: Backend = Backend::Mysql;

    fn any(&mut self) -> AnyConn<'_> {
        AnyConn::Mysql(self)
    }
}

impl Conn for SqliteConn {
    const BACKEND: Backend = Backend::Sqlite;

    fn any(&mut self) -> AnyConn<'_> {
        AnyConn::Sqlite(self)
    }
}

#[cfg(test)]
mod tests {
    use diesel::query_builder::QueryBuilder;

    use super::*;

    /// `q`'s text as SQLite is sent it, or the builder's error.
    fn text(q: &Statement<Sqlite>) -> QueryResult<String> {
        let mut out = diesel::sqlite::SqliteQueryBuilder::new();
        q.to_sql(&mut out, &Sqlite)?;
        Ok(out.finish())
    }

    #[test]
    fn hand_built_statements_bind_every_value_and_are_cached_only_when_kept() {
        let mut sql = Sql::from("SELECT id FROM t WHERE a = ");
        sql.bind(Bind::I64(1))
            .push(" AND b = ")
            .bind(Bind::Text("a value with a ? in it".into()));
        let plain = statement::<Sqlite>(&sql);
        assert!(!plain.is_safe_to_cache_prepared(&Sqlite).unwrap());
        let kept = statement::<Sqlite>(&sql.clone().kept());
        assert!(kept.is_safe_to_cache_prepared(&Sqlite).unwrap());
        for q in [&plain, &kept] {
            assert_eq!(text(q).unwrap(), "SELECT id FROM t WHERE a = ? AND b = ?");
        }
        // Placeholders and values that do not pair up are refused, not sent.
        let mut short = sql.clone();
        short.binds.pop();
        assert!(text(&statement(&short)).is_err());
        let mut long = sql;
        long.binds.push(Bind::I32(3));
        assert!(text(&statement(&long)).is_err());
    }
}

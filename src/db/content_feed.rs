//! What the in-memory content index (`service::content_index`) reads to fill itself and
//! stay current, and the tombstones every delete of a communication writes for it.
//!
//! The index loads the table by id, then follows the change feed (`service::feed`):
//! rows recorded after its watermark through `ix_communications_created` (InnoDB and
//! SQLite keep the primary key in it, so it orders `(create_time, id)`), and tombstones
//! written after its other watermark through `ix_deleted_communications_time`. Any
//! number of servers over one database do the same, so each answers from the same rows.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, SmallInt, Text, Timestamp};
use diesel::QueryableByName;

use super::dialect::{columns, Conn};
use super::query::{self, Bind, Sql};
use super::schema::{communications, deleted_communications};
use super::stored_time::StoredTime;
use super::Db;
use crate::error::Result;
use crate::with_conn;

/// One communication as the content index takes it.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = communications)]
pub struct FeedRow {
    /// Id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Owner.
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    /// Channel.
    #[diesel(sql_type = Integer)]
    pub channel: i32,
    /// Direction (for the per-customer activity index).
    #[diesel(sql_type = Integer)]
    pub direction: i32,
    /// Call duration in microseconds (for the per-customer activity index).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub call_duration_us: Option<i64>,
    /// When it happened.
    #[diesel(sql_type = Timestamp, deserialize_as = StoredTime)]
    pub occur_time: NaiveDateTime,
    /// When it was recorded.
    #[diesel(sql_type = Timestamp, deserialize_as = StoredTime)]
    pub create_time: NaiveDateTime,
    /// What was said.
    #[diesel(sql_type = Text)]
    pub content: String,
    /// Its sentiment score (for the per-customer activity index); `None`: not scored yet.
    #[diesel(sql_type = Nullable<SmallInt>)]
    pub sentiment: Option<i16>,
}

/// The columns of [`FeedRow`], in its field order (it is read by position).
pub(crate) const FEED_SELECT_LIST: &str = "id, customer_id, channel, direction, \
     call_duration_us, occur_time, create_time, content, sentiment";

/// `SELECT <FeedRow's columns> FROM communications`, for the feed reads to continue.
fn feed_select() -> Sql {
    Sql::from(format!("SELECT {FEED_SELECT_LIST} FROM communications").as_str())
}

/// An id with a time: when a row was recorded, or when it was deleted.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Stamped {
    /// The communication.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The time.
    #[diesel(sql_type = Timestamp)]
    pub time: NaiveDateTime,
}

/// Up to `limit` rows with `id > after`, ascending by id; causal on a Galera node.
pub async fn page_after(db: &Db, galera: bool, after: i64, limit: u32) -> Result<Vec<FeedRow>> {
    // raw SQL: Galera causal read: a SET STATEMENT wsrep_sync_wait prefix and a LIMIT in the text
    let mut sql = feed_select();
    sql.push(" WHERE id > ")
        .bind(Bind::I64(after))
        .push(&format!(" ORDER BY id LIMIT {limit}"));
    query::load_rows(db, &super::feed::causal(sql.kept(), galera)).await
}

/// Up to `limit` rows recorded strictly after the `(create_time, id)` position
/// `after`, in that order; causal on a Galera node.
pub async fn recorded_after(
    db: &Db,
    galera: bool,
    after: Option<(NaiveDateTime, i64)>,
    limit: u32,
) -> Result<Vec<FeedRow>> {
    // raw SQL: Galera causal read: a SET STATEMENT wsrep_sync_wait prefix on a keyset page
    let mut sql = feed_select();
    let keyset = query::Keyset {
        columns: &["create_time", "id"],
        descending: false,
    };
    keyset.after_row(&mut sql, after);
    keyset.order_limit(&mut sql, i64::from(limit));
    query::load_rows(db, &super::feed::causal(sql.kept(), galera)).await
}

/// A communication as a watched report's change check reads it: what decides which
/// reports it can change (no content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable)]
pub struct Touched {
    /// Id.
    pub id: i64,
    /// Owner.
    pub customer_id: i64,
    /// Channel.
    pub channel: i32,
    /// Direction.
    pub direction: i32,
    /// When it happened.
    #[diesel(deserialize_as = StoredTime)]
    pub occur_time: NaiveDateTime,
    /// When it was recorded.
    #[diesel(deserialize_as = StoredTime)]
    pub create_time: NaiveDateTime,
}

/// Up to `limit` rows recorded strictly after `since`, in recording order; causal on a
/// Galera node.
pub async fn touched_since(
    db: &Db,
    galera: bool,
    since: NaiveDateTime,
    limit: i64,
) -> Result<Vec<Touched>> {
    with_conn!(db, |conn| {
        let query = super::feed::Causal::new(touched_since_query(since, limit), galera);
        Ok::<_, crate::error::Error>(diesel_async::RunQueryDsl::load(query, conn).await?)
    })
}

/// The statement of [`touched_since`] (before the Galera prefix).
#[diesel::dsl::auto_type]
fn touched_since_query(since: NaiveDateTime, limit: i64) -> _ {
    communications::table
        .filter(communications::create_time.gt(since))
        .order((communications::create_time.asc(), communications::id.asc()))
        .limit(limit)
        .select((
            communications::id,
            communications::customer_id,
            communications::channel,
            communications::direction,
            communications::occur_time,
            communications::create_time,
        ))
}

/// The rows with these ids (those that still exist).
pub async fn rows_by_id(db: &Db, ids: &[i64]) -> Result<Vec<FeedRow>> {
    let mut out = Vec::with_capacity(ids.len());
    for part in ids.chunks(1_000) {
        let query = communications::table
            .filter(communications::id.eq_any(part.to_vec()))
            .select(columns::<FeedRow>());
        let rows: Vec<FeedRow> = with_conn!(db, |conn| Ok::<_, crate::error::Error>(
            conn.any().load(query).await?
        ))?;
        out.extend(rows);
    }
    Ok(out)
}

/// Tombstones written strictly after `after` (all of them without one); causal on a
/// Galera node.
pub async fn deleted_after(
    db: &Db,
    galera: bool,
    after: Option<NaiveDateTime>,
) -> Result<Vec<Stamped>> {
    // raw SQL: Galera causal read: a SET STATEMENT wsrep_sync_wait prefix
    let mut sql = Sql::from("SELECT id, delete_time AS time FROM deleted_communications");
    if let Some(after) = after {
        sql.and().push("delete_time > ").bind(Bind::Time(after));
    }
    query::load(db, &super::feed::causal(sql.kept(), galera)).await
}

/// Records that communication `id` is deleted, in the caller's transaction.
pub async fn record_deletion<C: Conn>(conn: &mut C, id: i64, now: NaiveDateTime) -> Result<()> {
    let insert = diesel::insert_into(deleted_communications::table).values((
        deleted_communications::id.eq(id),
        deleted_communications::delete_time.eq(now),
    ));
    conn.any().execute(insert).await?;
    Ok(())
}

/// Records that every communication of `customer_id` is deleted, in the caller's
/// transaction, before they are.
pub async fn record_customer_deletions<C: Conn>(
    conn: &mut C,
    customer_id: i64,
    now: NaiveDateTime,
) -> Result<()> {
    let theirs = communications::table
        .filter(communications::customer_id.eq(customer_id))
        .select((communications::id, now.into_sql::<Timestamp>()));
    let insert = diesel::insert_into(deleted_communications::table)
        .values(theirs)
        .into_columns((
            deleted_communications::id,
            deleted_communications::delete_time,
        ));
    conn.any().execute(insert).await?;
    Ok(())
}

/// Moves the tombstones stamped `old` to `new`, in the caller's transaction (a purge
/// stamps them again once its deletes are done). Another delete's tombstones with the
/// very same stamp move too, which is harmless: a tombstone read twice removes nothing
/// more.
pub async fn restamp_deletions<C: Conn>(
    conn: &mut C,
    old: NaiveDateTime,
    new: NaiveDateTime,
) -> Result<()> {
    let update = diesel::update(deleted_communications::table)
        .filter(deleted_communications::delete_time.eq(old))
        .set(deleted_communications::delete_time.eq(new));
    conn.any().execute(update).await?;
    Ok(())
}

/// Deletes the tombstones written before `before`; how many.
pub async fn prune_deletions(db: &Db, before: NaiveDateTime) -> Result<usize> {
    let prune = diesel::delete(deleted_communications::table)
        .filter(deleted_communications::delete_time.lt(before));
    crate::with_conn!(db, write, |conn| Ok(conn.any().execute(prune).await?))
}

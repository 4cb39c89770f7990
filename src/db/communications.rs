//! Communication rows: idempotent single and batched inserts, get, delete, and
//! newest-first keyset listing with channel, direction and time filters.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::{communications, customers};
use super::{create_for_customer, ensure_customer, Db, Dialect as _};
use crate::error::{Error, Result};
use crate::with_conn;

/// A stored communication.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = communications)]
pub struct CommunicationRow {
    /// Id.
    pub id: i64,
    /// Owner.
    pub customer_id: i64,
    /// `Channel` value.
    pub channel: i32,
    /// `Direction` value.
    pub direction: i32,
    /// When it happened (UTC).
    pub occur_time: NaiveDateTime,
    /// What was said.
    pub content: String,
    /// Short result.
    pub outcome: String,
    /// Phone call: the number (set iff the details are a phone call).
    pub phone_number: Option<String>,
    /// Phone call: duration in microseconds.
    pub call_duration_us: Option<i64>,
    /// Email: the customer's address (set iff the details are an email).
    pub email_address: Option<String>,
    /// Email: subject.
    pub email_subject: Option<String>,
    /// Chat: platform (set iff the details are a chat).
    pub chat_platform: Option<String>,
    /// Chat: conversation id.
    pub chat_conversation_id: Option<String>,
    /// When it was recorded (UTC).
    pub create_time: NaiveDateTime,
}

/// A new communication, validated.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = communications)]
pub struct CommunicationInsertForm {
    /// Owner.
    pub customer_id: i64,
    /// `Channel` value.
    pub channel: i32,
    /// `Direction` value.
    pub direction: i32,
    /// When it happened.
    pub occur_time: NaiveDateTime,
    /// What was said.
    pub content: String,
    /// Short result.
    pub outcome: String,
    /// Phone number of a call.
    pub phone_number: Option<String>,
    /// Call duration in microseconds.
    pub call_duration_us: Option<i64>,
    /// Email address.
    pub email_address: Option<String>,
    /// Email subject.
    pub email_subject: Option<String>,
    /// Chat platform.
    pub chat_platform: Option<String>,
    /// Chat conversation id.
    pub chat_conversation_id: Option<String>,
    /// Record time.
    pub create_time: NaiveDateTime,
    /// Idempotency key.
    pub request_id: Option<String>,
}

macro_rules! live_customers {
    ($conn:expr, $ids:expr) => {
        customers::table
            .filter(customers::id.eq_any($ids))
            .filter(customers::delete_time.is_null())
            .select(customers::id)
    };
}

macro_rules! used_keys {
    ($conn:expr, $customers:expr, $keys:expr) => {
        communications::table
            .filter(communications::customer_id.eq_any($customers))
            .filter(communications::request_id.eq_any($keys))
            .select((communications::customer_id, communications::request_id))
    };
}

/// Records one communication; the customer must exist; a reused `request_id`
/// returns the first result and writes nothing.
pub async fn insert(db: &Db, form: &CommunicationInsertForm) -> Result<CommunicationRow> {
    create_for_customer!(db, communications, CommunicationRow, form)
}

/// The columns of [`CommunicationRow`], for hand-built SQL.
pub const COMMUNICATION_COLUMNS: &str =
    "id, customer_id, channel, direction, occur_time, content, \
     outcome, phone_number, call_duration_us, email_address, email_subject, chat_platform, \
     chat_conversation_id, create_time";

/// What happened to each item of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Stored.
    Stored,
    /// Its `request_id` was used already; not stored.
    Duplicate,
    /// Its customer does not exist (or was deleted); not stored.
    UnknownCustomer,
}

/// Stores a batch in one transaction with one multi-row INSERT. Items whose
/// `request_id` exists already (or repeats within the batch) and items of unknown
/// customers are skipped and reported; the outcome list matches `forms` by index.
pub async fn insert_batch(
    db: &Db,
    forms: Vec<CommunicationInsertForm>,
) -> Result<Vec<BatchOutcome>> {
    if forms.is_empty() {
        return Ok(Vec::new());
    }
    let customer_ids: Vec<i64> = {
        let mut ids: Vec<i64> = forms.iter().map(|f| f.customer_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let keys: Vec<String> = forms.iter().filter_map(|f| f.request_id.clone()).collect();
    match db {
        Db::Mysql(pool) => {
            let mut pooled = pool.get().await?;
            let conn = &mut *pooled;
            conn.transaction(async |conn| {
                let live: Vec<i64> = live_customers!(conn, &customer_ids).load(conn).await?;
                let used: Vec<(i64, Option<String>)> =
                    used_keys!(conn, &customer_ids, &keys).load(conn).await?;
                let (outcomes, rows) = plan_batch(forms, &live, used);
                if !rows.is_empty() {
                    diesel::insert_into(communications::table)
                        .values(&rows)
                        .execute(conn)
                        .await?;
                }
                Ok(outcomes)
            })
            .await
        }
        Db::Sqlite { pool, write_lock } => {
            let _write = write_lock.lock().await;
            let mut pooled = pool.get().await?;
            // Multi-row INSERT does not compile through the async wrapper on SQLite;
            // run the whole batch with sync diesel on the blocking pool.
            pooled
                .spawn_blocking(move |conn| {
                    sync_sqlite::insert_batch(conn, forms, &customer_ids, &keys)
                })
                .await
                .map_err(Error::from)
        }
    }
}

/// The SQLite batch path, with diesel's synchronous query API.
mod sync_sqlite {
    use diesel::prelude::*;

    use super::{plan_batch, BatchOutcome, CommunicationInsertForm};
    use crate::db::schema::{communications, customers};

    /// Checks customers and keys and inserts the batch in one IMMEDIATE transaction.
    pub(super) fn insert_batch(
        conn: &mut SqliteConnection,
        forms: Vec<CommunicationInsertForm>,
        customer_ids: &[i64],
        keys: &[String],
    ) -> QueryResult<Vec<BatchOutcome>> {
        conn.immediate_transaction(|conn| {
            let live: Vec<i64> = live_customers!(conn, customer_ids).load(conn)?;
            let used: Vec<(i64, Option<String>)> =
                used_keys!(conn, customer_ids, keys).load(conn)?;
            let (outcomes, rows) = plan_batch(forms, &live, used);
            if !rows.is_empty() {
                diesel::insert_into(communications::table)
                    .values(&rows)
                    .execute(conn)?;
            }
            Ok(outcomes)
        })
    }
}

/// Decides per item: store, duplicate (key used before or earlier in the batch), or
/// unknown customer. Pure, so both backends share it.
fn plan_batch(
    forms: Vec<CommunicationInsertForm>,
    live_customers: &[i64],
    used: Vec<(i64, Option<String>)>,
) -> (Vec<BatchOutcome>, Vec<CommunicationInsertForm>) {
    let live: HashSet<i64> = live_customers.iter().copied().collect();
    let mut seen: HashSet<(i64, String)> = used
        .into_iter()
        .filter_map(|(c, k)| k.map(|k| (c, k)))
        .collect();
    let mut outcomes = Vec::with_capacity(forms.len());
    let mut rows = Vec::with_capacity(forms.len());
    for form in forms {
        if !live.contains(&form.customer_id) {
            outcomes.push(BatchOutcome::UnknownCustomer);
            continue;
        }
        if let Some(key) = &form.request_id {
            if !seen.insert((form.customer_id, key.clone())) {
                outcomes.push(BatchOutcome::Duplicate);
                continue;
            }
        }
        outcomes.push(BatchOutcome::Stored);
        rows.push(form);
    }
    (outcomes, rows)
}

/// One communication by id.
pub async fn get(db: &Db, id: i64) -> Result<CommunicationRow> {
    with_conn!(db, |conn| {
        let row: Option<CommunicationRow> = communications::table
            .find(id)
            .select(CommunicationRow::as_select())
            .first(conn)
            .await
            .optional()?;
        row.ok_or(Error::NotFound {
            resource: "communication",
            id,
        })
    })
}

/// Deletes one communication by id; NOT_FOUND if absent.
pub async fn delete(db: &Db, id: i64) -> Result<()> {
    with_conn!(db, write, |conn| {
        let n = diesel::delete(communications::table.find(id))
            .execute(conn)
            .await?;
        if n == 0 {
            Err(Error::NotFound {
                resource: "communication",
                id,
            })
        } else {
            Ok(())
        }
    })
}

/// Filters of a communication listing.
#[derive(Debug, Clone, Default)]
pub struct CommunicationFilter {
    /// Owner; `None` for every customer.
    pub customer_id: Option<i64>,
    /// Channels; empty for all.
    pub channels: Vec<i32>,
    /// Direction; `None` for both.
    pub direction: Option<i32>,
    /// Inclusive lower bound of `occur_time`.
    pub start: Option<NaiveDateTime>,
    /// Exclusive upper bound of `occur_time`.
    pub end: Option<NaiveDateTime>,
}

/// One page, newest first, strictly after the `(occur_time, id)` position `after`.
pub async fn list(
    db: &Db,
    filter: &CommunicationFilter,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<CommunicationRow>> {
    with_conn!(db, |conn| {
        if let Some(customer_id) = filter.customer_id {
            ensure_customer!(conn, customer_id).await?;
        }
        let mut query = communications::table
            .select(CommunicationRow::as_select())
            .order((communications::occur_time.desc(), communications::id.desc()))
            .limit(limit)
            .into_boxed();
        if let Some(customer_id) = filter.customer_id {
            query = query.filter(communications::customer_id.eq(customer_id));
        }
        if !filter.channels.is_empty() {
            query = query.filter(communications::channel.eq_any(filter.channels.clone()));
        }
        if let Some(d) = filter.direction {
            query = query.filter(communications::direction.eq(d));
        }
        if let Some(start) = filter.start {
            query = query.filter(communications::occur_time.ge(start));
        }
        if let Some(end) = filter.end {
            query = query.filter(communications::occur_time.lt(end));
        }
        if let Some((t, id)) = after {
            query = query.filter(communications::occur_time.le(t)).filter(
                communications::occur_time
                    .lt(t)
                    .or(communications::occur_time
                        .eq(t)
                        .and(communications::id.lt(id))),
            );
        }
        Ok(query.load(conn).await?)
    })
}

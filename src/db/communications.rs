//! Communication rows: idempotent single and batched inserts, get, delete, and
//! newest-first keyset listing with channel, direction and time filters.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::query::{self, Sql, Table};
use super::rollups::{self, Contribution, Deltas};
use super::schema::{communications, customers};
use super::{create_for_customer, retry_conflicts, Conn as _, Db};
use crate::error::{Error, Result};
pub use crate::model::filter::CommunicationFilter;
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

/// The communications table for the statement builders.
pub const COMMUNICATIONS: Table = Table {
    name: "communications",
    resource: "communication",
    columns: COMMUNICATION_COLUMNS,
    time: "occur_time",
    has_channel: true,
    order: &["occur_time", "id"],
};

/// Records one communication; the customer must exist; a reused `request_id`
/// returns the first result and writes nothing.
pub async fn insert(db: &Db, form: &CommunicationInsertForm) -> Result<CommunicationRow> {
    retry_conflicts(|| async {
        create_for_customer!(
            db,
            communications,
            COMMUNICATIONS,
            CommunicationRow,
            form,
            after_insert = |conn, row| rollups::add(conn, &Deltas::of([row.into()], 1)).await
        )
    })
    .await
}

/// The columns of [`CommunicationRow`], in its field order.
pub const COMMUNICATION_COLUMNS: &str =
    "id, customer_id, channel, direction, occur_time, content, \
     outcome, phone_number, call_duration_us, email_address, email_subject, chat_platform, \
     chat_conversation_id, create_time";

impl From<&CommunicationInsertForm> for Contribution {
    fn from(f: &CommunicationInsertForm) -> Self {
        Contribution {
            customer_id: f.customer_id,
            channel: f.channel,
            direction: f.direction,
            occur_time: f.occur_time,
        }
    }
}

impl super::Stored<CommunicationRow> for CommunicationInsertForm {
    fn stored(&self, id: i64) -> CommunicationRow {
        CommunicationRow {
            id,
            customer_id: self.customer_id,
            channel: self.channel,
            direction: self.direction,
            occur_time: self.occur_time,
            content: self.content.clone(),
            outcome: self.outcome.clone(),
            phone_number: self.phone_number.clone(),
            call_duration_us: self.call_duration_us,
            email_address: self.email_address.clone(),
            email_subject: self.email_subject.clone(),
            chat_platform: self.chat_platform.clone(),
            chat_conversation_id: self.chat_conversation_id.clone(),
            create_time: self.create_time,
        }
    }
}

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
    retry_conflicts(|| with_batch(db, &forms, &customer_ids, &keys)).await
}

/// One attempt of [`insert_batch`].
async fn with_batch(
    db: &Db,
    forms: &[CommunicationInsertForm],
    customer_ids: &[i64],
    keys: &[String],
) -> Result<Vec<BatchOutcome>> {
    with_conn!(db, write, |conn| {
        conn.transaction(async |conn| {
            let live: Vec<i64> = customers::table
                .filter(customers::id.eq_any(customer_ids))
                .filter(customers::delete_time.is_null())
                .select(customers::id)
                .load(conn)
                .await?;
            let used: Vec<(i64, Option<String>)> = communications::table
                .filter(communications::customer_id.eq_any(customer_ids))
                .filter(communications::request_id.eq_any(keys))
                .select((communications::customer_id, communications::request_id))
                .load(conn)
                .await?;
            let (outcomes, rows) = plan_batch(forms, &live, used);
            if !rows.is_empty() {
                let deltas = Deltas::of(rows.iter().map(Contribution::from), 1);
                conn.insert_communications(rows).await?;
                rollups::add(conn, &deltas).await?;
            }
            Ok::<_, Error>(outcomes)
        })
        .await
    })
}
/// Decides per item: store, duplicate (key used before or earlier in the batch), or
/// unknown customer. Pure, so both backends share it.
fn plan_batch(
    forms: &[CommunicationInsertForm],
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
        rows.push(form.clone());
    }
    (outcomes, rows)
}

/// One communication by id.
pub async fn get(db: &Db, id: i64) -> Result<CommunicationRow> {
    with_conn!(db, |conn| query::by_id(conn, &COMMUNICATIONS, id).await)
}

/// Deletes one communication by id (and its count in the rollups); NOT_FOUND if absent.
pub async fn delete(db: &Db, id: i64) -> Result<()> {
    retry_conflicts(|| async {
        with_conn!(db, write, |conn| {
            conn.transaction(async |conn| {
                let row: CommunicationRow = query::by_id(conn, &COMMUNICATIONS, id).await?;
                let n = diesel::delete(communications::table.find(id))
                    .execute(conn)
                    .await?;
                if n == 1 {
                    rollups::remove(conn, &[(&row).into()]).await?;
                    super::content_feed::record_deletion(conn, id, crate::model::time::now())
                        .await?;
                }
                Ok::<_, Error>(())
            })
            .await
        })
    })
    .await
}

/// The statement of one listing page: newest first, strictly after `after`.
fn list_sql(filter: &CommunicationFilter, after: Option<(NaiveDateTime, i64)>, limit: i64) -> Sql {
    let mut sql = COMMUNICATIONS.select();
    sql.filter(&COMMUNICATIONS, filter);
    let keyset = COMMUNICATIONS.keyset(true);
    keyset.after_row(&mut sql, after);
    keyset.order_limit(&mut sql, limit);
    sql
}

/// One page, newest first, strictly after the `(occur_time, id)` position `after`.
/// With one customer in the filter, NOT_FOUND unless that customer exists.
pub async fn list(
    db: &Db,
    filter: &CommunicationFilter,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<CommunicationRow>> {
    let sql = list_sql(filter, after, limit);
    with_conn!(db, |conn| {
        if let Some(customer_id) = filter.single_customer() {
            query::ensure_customer(conn, customer_id).await?;
        }
        Ok(conn.load_sql(&sql).await?)
    })
}

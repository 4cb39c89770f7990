//! Communication rows: idempotent single and batched inserts, get, delete, and
//! newest-first keyset listing with channel, direction and time filters.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::audit::{self, Change};
use super::exprs::{explain, row_in, PlanRow, RowIn, ROW_IN_CHUNK};
use super::query::{self, Sql, Table};
use super::rollups::{self, Contribution, Deltas};
use super::schema::communications;
use super::stored_time::StoredTime;
use super::{retry_conflicts, Conn, Db, Stored as _};
use crate::error::{Error, Result};
use crate::model::caller::Caller;
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
    #[diesel(deserialize_as = StoredTime)]
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
    #[diesel(deserialize_as = StoredTime)]
    pub create_time: NaiveDateTime,
    /// Sentiment score, -1000..1000 (`analytics::sentiment`); `None` until scored.
    pub sentiment: Option<i16>,
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
    /// Sentiment score of `content` (`analytics::sentiment::score`).
    pub sentiment: Option<i16>,
    /// Whether the request set `occur_time` (else it is the record time, which a replay
    /// does not repeat).
    #[diesel(skip_insertion)]
    pub occur_time_given: bool,
}

/// Rows per multi-row INSERT of an import (an import batch's bound too; a transaction
/// holding several batches runs several): well under both backends' limits on bound
/// values.
pub const INSERT_ROWS: usize = 1000;
/// Content bytes per multi-row INSERT of an import (past its first row; an import
/// batch's bound too), well under MariaDB's default `max_allowed_packet` (16 MiB).
pub const INSERT_BYTES: usize = 4 << 20;

/// The communications table for the statement builders.
pub const COMMUNICATIONS: Table = Table {
    name: "communications",
    resource: "communication",
    columns: COMMUNICATION_COLUMNS,
    time: "occur_time",
    has_channel: true,
    order: &["occur_time", "id"],
};

impl super::CustomerRowForm for CommunicationInsertForm {
    type Row = CommunicationRow;
    const RESOURCE: &'static str = "communication";

    fn customer_id(&self) -> i64 {
        self.customer_id
    }

    fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    fn set_create_time(&mut self, at: NaiveDateTime) {
        self.create_time = at;
    }

    fn insert<'c>(
        &'c self,
        conn: super::AnyConn<'c>,
    ) -> futures_util::future::BoxFuture<'c, QueryResult<usize>> {
        conn.execute(diesel::insert_into(communications::table).values(self))
    }

    fn by_request_id<'c>(
        conn: super::AnyConn<'c>,
        customer_id: i64,
        request_id: &'c str,
    ) -> futures_util::future::BoxFuture<'c, QueryResult<Option<CommunicationRow>>> {
        let query = communications::table
            .filter(communications::customer_id.eq(customer_id))
            .filter(communications::request_id.eq(request_id))
            .select(super::dialect::columns::<CommunicationRow>());
        conn.first(query)
    }

    fn after_insert<C: Conn>(
        conn: &mut C,
        row: &CommunicationRow,
    ) -> impl std::future::Future<Output = Result<()>> + Send {
        let deltas = Deltas::of([row.into()], 1);
        async move { rollups::add(conn, &deltas).await }
    }
}

/// Records one communication; the customer must exist; a reused `request_id`
/// returns the first result and writes nothing.
pub async fn insert(
    db: &Db,
    form: &CommunicationInsertForm,
    caller: &Caller,
) -> Result<CommunicationRow> {
    retry_conflicts(|| async {
        super::create_for_customer(db, form, caller, "LogCommunication").await
    })
    .await
}

/// The columns of [`CommunicationRow`], in its field order.
pub const COMMUNICATION_COLUMNS: &str =
    "id, customer_id, channel, direction, occur_time, content, \
     outcome, phone_number, call_duration_us, email_address, email_subject, chat_platform, \
     chat_conversation_id, create_time, sentiment";

impl From<&CommunicationInsertForm> for Contribution {
    fn from(f: &CommunicationInsertForm) -> Self {
        Contribution {
            customer_id: f.customer_id,
            channel: f.channel,
            direction: f.direction,
            occur_time: f.occur_time,
            sentiment: f.sentiment,
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
            sentiment: self.sentiment,
        }
    }

    fn replays(&self, row: &CommunicationRow) -> bool {
        self.customer_id == row.customer_id
            && self.channel == row.channel
            && self.direction == row.direction
            && (!self.occur_time_given || self.occur_time == row.occur_time)
            && self.content == row.content
            && self.outcome == row.outcome
            && self.phone_number == row.phone_number
            && self.call_duration_us == row.call_duration_us
            && self.email_address == row.email_address
            && self.email_subject == row.email_subject
            && self.chat_platform == row.chat_platform
            && self.chat_conversation_id == row.chat_conversation_id
    }
}

/// What happened to each item of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Stored.
    Stored,
    /// Its `request_id` was used already for the same communication; not stored.
    Duplicate,
    /// Its `request_id` was used already for a different communication; not stored.
    RequestIdReused,
    /// Its customer does not exist (or was deleted); not stored.
    UnknownCustomer,
}

/// The two reads before a batch is stored, in its transaction on `conn`: the live
/// customers among `customer_ids` (a set; their rows stay locked until the transaction
/// ends, see [`query::lock_customer`], so a concurrent merge cannot move them away
/// before the INSERT), and the rows already stored under any of the `(customer_id,
/// request_id)` `keys`, each with its key (compared with the new item's fields: a replay
/// or a reused key).
///
/// The key lookup names whole keys of the unique key `(customer_id, request_id)` (see
/// [`key_lookup`]), in chunks of [`ROW_IN_CHUNK`], so it reads the listed keys and
/// nothing else however many rows those customers have.
async fn batch_lookups<C: Conn>(
    conn: &mut C,
    customer_ids: &[i64],
    keys: &[(i64, String)],
) -> Result<(HashSet<i64>, Vec<(Option<String>, CommunicationRow)>)> {
    let live: HashSet<i64> = query::lock_live_customers(conn, customer_ids).await?;
    let mut used = Vec::new();
    for chunk in keys.chunks(ROW_IN_CHUNK) {
        used.extend(conn.any().load(key_lookup(chunk.to_vec())).await?);
    }
    Ok((live, used))
}

/// The statement of [`key_lookup`].
pub type KeyLookup = diesel::dsl::Select<
    diesel::dsl::Filter<
        communications::table,
        RowIn<communications::customer_id, communications::request_id, i64, String>,
    >,
    (
        communications::request_id,
        <CommunicationRow as diesel::Selectable<diesel::mysql::Mysql>>::SelectExpression,
    ),
>;

/// The rows stored under any of the `(customer_id, request_id)` `keys`, with their key:
/// `(customer_id, request_id) IN ((?, ?), ...)`, one unique-key lookup per key.
pub fn key_lookup(keys: Vec<(i64, String)>) -> KeyLookup {
    communications::table
        .filter(row_in(
            (communications::customer_id, communications::request_id),
            keys,
        ))
        .select((
            communications::request_id,
            super::dialect::columns::<CommunicationRow>(),
        ))
}

/// MariaDB's plan of the batch key lookup for `keys`, prepared as the service runs it
/// (MySQL family only; for plan checks).
pub async fn explain_key_lookup(db: &Db, keys: Vec<(i64, String)>) -> Result<Vec<PlanRow>> {
    with_conn!(db, |conn| match conn.any() {
        super::AnyConn::Mysql(c) => Ok(explain(key_lookup(keys)).load(c).await?),
        super::AnyConn::Sqlite(_) => Err(Error::Internal(
            "EXPLAIN plans are read on the MySQL family only".into()
        )),
    })
}

/// The distinct customers (sorted) and the distinct `(customer_id, request_id)` keys
/// (sorted) of a batch.
fn batch_keys(forms: &[CommunicationInsertForm]) -> (Vec<i64>, Vec<(i64, String)>) {
    let mut ids: Vec<i64> = forms.iter().map(|f| f.customer_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut keys: Vec<(i64, String)> = forms
        .iter()
        .filter_map(|f| Some((f.customer_id, f.request_id.clone()?)))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    (ids, keys)
}

/// Stores a batch in one transaction with one multi-row INSERT. Items whose
/// `request_id` exists already (or repeats within the batch) and items of unknown
/// customers are skipped and reported; the outcome list matches `forms` by index.
///
/// The batch is audited as one `ImportCommunications` record by `caller`: how many rows,
/// for how many customers (the customer's id when there is one).
///
/// A batch that keeps conflicting for the whole retry budget (most often one too slow
/// to commit within the feed's commit bound on a loaded database) is stored as two
/// halves, each its own transaction and audit record, and so on down to single rows;
/// items of the second half that repeat a `request_id` of the first are then reported as
/// duplicates, as within one batch.
pub async fn insert_batch(
    db: &Db,
    forms: Vec<CommunicationInsertForm>,
    caller: &Caller,
) -> Result<Vec<BatchOutcome>> {
    if forms.is_empty() {
        return Ok(Vec::new());
    }
    let (customer_ids, keys) = batch_keys(&forms);
    match retry_conflicts(|| with_batch(db, &forms, &customer_ids, &keys, caller)).await {
        Err(e) if forms.len() > 1 && e.is_transaction_conflict() => {
            tracing::debug!(rows = forms.len(), error = %e, "batch split after conflicts");
            let mut first = forms;
            let second = first.split_off(first.len() / 2);
            let mut outcomes = Box::pin(insert_batch(db, first, caller)).await?;
            outcomes.extend(Box::pin(insert_batch(db, second, caller)).await?);
            Ok(outcomes)
        }
        outcome => outcome,
    }
}

/// Where one import batch's time went, in milliseconds: the customer and key look-up,
/// the multi-row INSERT, the rollup upserts and the audit row (the rest, logged beside
/// them, is the connection's checkout, BEGIN, planning the batch and COMMIT). Logged at
/// DEBUG for each batch stored, so a slow import shows which statement grows.
#[derive(Debug, Default)]
struct BatchTimes {
    look: f64,
    insert: f64,
    rollups: f64,
    audit: f64,
}

/// Milliseconds since `*mark`, moving the mark to now.
fn lap(mark: &mut std::time::Instant) -> f64 {
    let now = std::time::Instant::now();
    let ms = (now - *mark).as_secs_f64() * 1000.0;
    *mark = now;
    ms
}

/// One attempt of [`insert_batch`].
async fn with_batch(
    db: &Db,
    forms: &[CommunicationInsertForm],
    customer_ids: &[i64],
    keys: &[(i64, String)],
    caller: &Caller,
) -> Result<Vec<BatchOutcome>> {
    let started = std::time::Instant::now();
    let mut times = BatchTimes::default();
    let outcomes = with_conn!(db, write, |conn| {
        crate::db::tx::transaction(conn, async |conn| {
            let stamp = super::feed::stamp();
            let mut mark = std::time::Instant::now();
            let (live, used) = batch_lookups(conn, customer_ids, keys).await?;
            times.look = lap(&mut mark);
            let (outcomes, mut rows) = plan_batch(forms, &live, used);
            for row in &mut rows {
                row.create_time = stamp;
            }
            if !rows.is_empty() {
                let deltas = Deltas::of(rows.iter().map(Contribution::from), 1);
                let change = import_change(&rows);
                lap(&mut mark);
                for chunk in insert_chunks(rows) {
                    conn.any().insert_all(communications::table, chunk).await?;
                }
                times.insert = lap(&mut mark);
                rollups::add(conn, &deltas).await?;
                times.rollups = lap(&mut mark);
                audit::record(conn, caller, crate::model::time::now(), &[change]).await?;
                times.audit = lap(&mut mark);
                super::feed::check_commit_bound(stamp)?;
            }
            Ok::<_, Error>(outcomes)
        })
        .await
    })?;
    let t = times;
    let total = started.elapsed().as_secs_f64() * 1000.0;
    tracing::debug!(
        rows = forms.len(),
        look_ms = t.look,
        insert_ms = t.insert,
        rollups_ms = t.rollups,
        audit_ms = t.audit,
        rest_ms = total - t.look - t.insert - t.rollups - t.audit,
        "import batch stored"
    );
    Ok(outcomes)
}

/// `rows` in order, cut into multi-row INSERTs of at most [`INSERT_ROWS`] rows and,
/// past the first row of each, at most [`INSERT_BYTES`] of content.
fn insert_chunks(rows: Vec<CommunicationInsertForm>) -> Vec<Vec<CommunicationInsertForm>> {
    let mut chunks = Vec::new();
    let mut chunk: Vec<CommunicationInsertForm> = Vec::new();
    let mut bytes = 0;
    for row in rows {
        if !chunk.is_empty()
            && (chunk.len() == INSERT_ROWS || bytes + row.content.len() > INSERT_BYTES)
        {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += row.content.len();
        chunk.push(row);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// The audit record of an import batch storing `rows`.
fn import_change(rows: &[CommunicationInsertForm]) -> Change {
    let customers: HashSet<i64> = rows.iter().map(|r| r.customer_id).collect();
    let only = match customers.iter().next() {
        Some(&id) if customers.len() == 1 => id,
        _ => 0,
    };
    Change::new("ImportCommunications", only, 0).with_detail(format!(
        "{} rows for {} customers",
        rows.len(),
        customers.len()
    ))
}

/// The rows stored before under the keys of a batch, by `(customer_id, request_id)`.
type Used = HashMap<(i64, String), CommunicationRow>;

/// [`batch_lookups`]'s rows by key.
fn used_by_key(used: Vec<(Option<String>, CommunicationRow)>) -> Used {
    used.into_iter()
        .filter_map(|(k, row)| k.map(|k| ((row.customer_id, k), row)))
        .collect()
}

/// Decides per item: store, duplicate (key used before or earlier in the batch, for the
/// same communication), reused key (for a different one), or unknown customer. Pure, so
/// both backends share it.
fn plan_batch(
    forms: &[CommunicationInsertForm],
    live: &HashSet<i64>,
    used: Vec<(Option<String>, CommunicationRow)>,
) -> (Vec<BatchOutcome>, Vec<CommunicationInsertForm>) {
    let mut seen = used_by_key(used);
    let mut outcomes = Vec::with_capacity(forms.len());
    let mut rows = Vec::with_capacity(forms.len());
    for form in forms {
        if !live.contains(&form.customer_id) {
            outcomes.push(BatchOutcome::UnknownCustomer);
            continue;
        }
        if let Some(key) = &form.request_id {
            match seen.entry((form.customer_id, key.clone())) {
                Entry::Occupied(first) => {
                    outcomes.push(if form.replays(first.get()) {
                        BatchOutcome::Duplicate
                    } else {
                        BatchOutcome::RequestIdReused
                    });
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert(form.stored(0));
                }
            }
        }
        outcomes.push(BatchOutcome::Stored);
        rows.push(form.clone());
    }
    (outcomes, rows)
}

/// What a logged batch ([`log_batch`]) did with one item.
#[derive(Debug, Clone, PartialEq)]
pub enum Logged {
    /// Stored as this row (or, for a `request_id` repeated within the batch, the row
    /// its first use stored).
    Stored(Box<CommunicationRow>),
    /// Its `request_id` was used by an earlier call: the id of the row that call stored.
    Existing(i64),
    /// Its `request_id` was used before (or earlier in the batch) for a different
    /// communication; not stored.
    RequestIdReused,
    /// Its customer does not exist (or was deleted); not stored.
    UnknownCustomer,
}

/// Whether one multi-row INSERT always gets consecutive ids, so a batch's ids follow
/// from `LAST_INSERT_ID()` and the session's `auto_increment_increment` (read with it):
/// SQLite (one writer; `last_insert_rowid()` is the last row), and InnoDB with
/// `innodb_autoinc_lock_mode` 0 or 1 (MariaDB's default; the first row). MySQL 8's default mode 2 interleaves ids of concurrent statements, and TiDB
/// allocates ids per node: there each row gets its own INSERT.
pub async fn consecutive_ids(db: &Db) -> Result<bool> {
    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        mode: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    if db.backend() == super::Backend::Sqlite {
        return Ok(true);
    }
    // raw SQL: server variables @@innodb_autoinc_lock_mode and VERSION()
    let sql = Sql::from(
        "SELECT CAST(@@innodb_autoinc_lock_mode AS SIGNED) AS mode, VERSION() AS version",
    );
    let rows: Vec<Mode> = query::load(db, &sql).await?;
    Ok(<[Mode]>::first(&rows).is_some_and(|m| m.mode <= 1 && !m.version.contains("TiDB")))
}

/// Stores the communications of many LogCommunication calls in one transaction: one
/// customer check and one key lookup for all, one multi-row INSERT (one INSERT per row
/// unless `consecutive`, see [`consecutive_ids`]), one rollup update. The outcome list
/// matches `forms` by index.
///
/// `callers[i]` made the call of `forms[i]`; each stored row is audited as its caller's
/// `LogCommunication`.
pub async fn log_batch(
    db: &Db,
    forms: &[CommunicationInsertForm],
    callers: &[&Caller],
    consecutive: bool,
) -> Result<Vec<Logged>> {
    let (customer_ids, keys) = batch_keys(forms);
    retry_conflicts(|| async {
        with_conn!(db, write, |conn| {
            crate::db::tx::transaction(conn, async |conn| {
                let stamp = super::feed::stamp();
                let (live, used) = batch_lookups(conn, &customer_ids, &keys).await?;
                let plan = plan_log(forms, &live, used);
                let fresh: Vec<CommunicationInsertForm> = plan
                    .iter()
                    .zip(forms)
                    .filter(|(p, _)| matches!(p, LogPlan::Store))
                    .map(|(_, f)| CommunicationInsertForm {
                        create_time: stamp,
                        ..f.clone()
                    })
                    .collect();
                let deltas = Deltas::of(fresh.iter().map(Contribution::from), 1);
                let mut ids = Vec::with_capacity(fresh.len());
                if consecutive && fresh.len() > 1 {
                    let n = fresh.len() as i64;
                    conn.any().insert_all(communications::table, fresh).await?;
                    // The ids of one multi-row INSERT are consecutive in this session's
                    // sequence: `step` apart (auto_increment_increment), not always 1.
                    let (reported, step) = conn.last_insert_id_and_step().await?;
                    let first = match backend_of(conn) {
                        super::Backend::Mysql => reported,
                        super::Backend::Sqlite => reported - (n - 1) * step,
                    };
                    ids.extend((0..n).map(|i| first + i * step));
                } else {
                    for form in fresh {
                        conn.any()
                            .insert_all(communications::table, vec![form])
                            .await?;
                        ids.push(conn.last_insert_id().await?);
                    }
                }
                if !ids.is_empty() {
                    rollups::add(conn, &deltas).await?;
                    audit_logged(conn, &plan, forms, callers, &ids).await?;
                }
                super::feed::check_commit_bound(stamp)?;
                Ok::<_, Error>(resolve_log(plan, forms, &ids, stamp))
            })
            .await
        })
    })
    .await
}

/// Audits each stored row of a logged batch as its own caller's `LogCommunication`.
async fn audit_logged<C: super::dialect::Conn>(
    conn: &mut C,
    plan: &[LogPlan],
    forms: &[CommunicationInsertForm],
    callers: &[&Caller],
    ids: &[i64],
) -> Result<()> {
    let stored: Vec<(&Caller, Change)> = plan
        .iter()
        .enumerate()
        .filter(|(_, p)| **p == LogPlan::Store)
        .zip(ids)
        .map(|((i, _), &id)| {
            let caller = callers.get(i).copied().unwrap_or(&SYSTEM);
            (
                caller,
                Change::new("LogCommunication", forms[i].customer_id, id),
            )
        })
        .collect();
    let entries: Vec<(&Caller, &Change)> = stored.iter().map(|(c, ch)| (*c, ch)).collect();
    audit::record_each(conn, crate::model::time::now(), &entries).await
}

/// The caller of a logged row whose caller was not passed (a bug): still audited.
static SYSTEM: std::sync::LazyLock<Caller> = std::sync::LazyLock::new(|| Caller::system("unknown"));

/// The backend of a connection (the type differs per `with_conn!` branch).
fn backend_of<C: super::dialect::Conn>(_: &C) -> super::Backend {
    C::BACKEND
}

/// The decision for one item of a logged batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogPlan {
    Store,
    Existing(i64),
    /// Same key as item `usize` of the batch, which is stored.
    SameAs(usize),
    RequestIdReused,
    UnknownCustomer,
}

/// Decides per item of a logged batch; pure.
fn plan_log(
    forms: &[CommunicationInsertForm],
    live: &HashSet<i64>,
    used: Vec<(Option<String>, CommunicationRow)>,
) -> Vec<LogPlan> {
    // Per key: the plan of a later item with that key, and the row it must match.
    let mut known: HashMap<(i64, String), (LogPlan, CommunicationRow)> = used_by_key(used)
        .into_iter()
        .map(|(key, row)| (key, (LogPlan::Existing(row.id), row)))
        .collect();
    let mut plan = Vec::with_capacity(forms.len());
    for (i, form) in forms.iter().enumerate() {
        if !live.contains(&form.customer_id) {
            plan.push(LogPlan::UnknownCustomer);
            continue;
        }
        if let Some(key) = &form.request_id {
            match known.entry((form.customer_id, key.clone())) {
                Entry::Occupied(first) => {
                    let (first_plan, row) = first.get();
                    plan.push(if form.replays(row) {
                        *first_plan
                    } else {
                        LogPlan::RequestIdReused
                    });
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert((LogPlan::SameAs(i), form.stored(0)));
                }
            }
        }
        plan.push(LogPlan::Store);
    }
    plan
}

/// The outcomes, given the ids of the stored items in order.
/// `stamp` is the record time the stored items got.
fn resolve_log(
    plan: Vec<LogPlan>,
    forms: &[CommunicationInsertForm],
    ids: &[i64],
    stamp: NaiveDateTime,
) -> Vec<Logged> {
    let mut stored: Vec<Option<CommunicationRow>> = vec![None; forms.len()];
    let mut next = ids.iter();
    for (i, p) in plan.iter().enumerate() {
        if *p == LogPlan::Store {
            if let Some(&id) = next.next() {
                let mut row = super::Stored::stored(&forms[i], id);
                row.create_time = stamp;
                stored[i] = Some(row);
            }
        }
    }
    plan.iter()
        .enumerate()
        .map(|(i, p)| match *p {
            LogPlan::Store => stored[i]
                .clone()
                .map_or(Logged::UnknownCustomer, |r| Logged::Stored(Box::new(r))),
            LogPlan::SameAs(j) => stored[j]
                .clone()
                .map_or(Logged::UnknownCustomer, |r| Logged::Stored(Box::new(r))),
            LogPlan::Existing(id) => Logged::Existing(id),
            LogPlan::RequestIdReused => Logged::RequestIdReused,
            LogPlan::UnknownCustomer => Logged::UnknownCustomer,
        })
        .collect()
}

/// One communication by id.
pub async fn get(db: &Db, id: i64) -> Result<CommunicationRow> {
    with_conn!(db, |conn| query::by_id(conn, &COMMUNICATIONS, id).await)
}

/// Deletes one communication by id (and its count in the rollups); NOT_FOUND if absent.
pub async fn delete(db: &Db, id: i64, caller: &Caller) -> Result<()> {
    retry_conflicts(|| async {
        with_conn!(db, write, |conn| {
            crate::db::tx::transaction(conn, async |conn| {
                // The locks every writer takes, in their order: the customer's row, then
                // the communication (by primary key, read again as it is now), then the
                // rollups. A log of the same customer then waits here instead of locking
                // the communication this delete's rollup update reads while this delete
                // holds the rollup row it needs (a deadlock), and a merge either waits or
                // has moved the row already (then this attempt runs again).
                let seen: CommunicationRow = query::by_id(conn, &COMMUNICATIONS, id).await?;
                let for_update = super::dialect::backend_of(conn).for_update();
                // raw SQL: per-backend row lock suffix (FOR UPDATE on MySQL, nothing on SQLite)
                let mut lock = query::Sql::from("SELECT id FROM customers");
                lock.and()
                    .push("id = ")
                    .bind(query::Bind::I64(seen.customer_id))
                    .push(for_update);
                let _: Vec<query::IdRow> = conn.load_sql(&lock).await?;
                let mut lock = COMMUNICATIONS.select();
                lock.and()
                    .push("id = ")
                    .bind(query::Bind::I64(id))
                    .push(for_update);
                let rows: Vec<CommunicationRow> = conn.load_sql(&lock).await?;
                let row = rows.into_iter().next().ok_or(Error::NotFound {
                    resource: COMMUNICATIONS.resource,
                    id,
                })?;
                if row.customer_id != seen.customer_id {
                    return Err(crate::db::tx::conflict(format!(
                        "communication {id} was moved to customer {} by a merge",
                        row.customer_id
                    )));
                }
                let n = diesel::delete(communications::table.find(id))
                    .execute(conn)
                    .await?;
                if n == 1 {
                    let now = crate::model::time::now();
                    rollups::remove(conn, &[(&row).into()]).await?;
                    super::content_feed::record_deletion(conn, id, now).await?;
                    let change = Change::new("DeleteCommunication", row.customer_id, id);
                    audit::record(conn, caller, now, &[change]).await?;
                    super::feed::check_commit_bound(now)?;
                }
                Ok::<_, Error>(())
            })
            .await
        })
    })
    .await
}

/// The highest communication id stored (0 when there is none).
pub async fn last_id(db: &Db) -> Result<i64> {
    let query = communications::table.select(diesel::dsl::max(communications::id));
    let last: Option<i64> = with_conn!(db, |conn| Ok::<_, Error>(
        conn.any().get_result(query).await?
    ))?;
    Ok(last.unwrap_or(0))
}

/// Communications scored per transaction by [`score_unscored`].
pub const SCORE_BATCH: i64 = 500;

/// Scores up to [`SCORE_BATCH`] communications with ids above `after` that are stored
/// without a sentiment score (recorded before the server scored content, or by an older
/// server), lowest ids first, and adds their sentiment to the rollups in the same
/// transaction. Returns how many it scored and the highest id it looked at (`None` when
/// no row above `after` lacks a score).
pub async fn score_unscored(db: &Db, after: i64) -> Result<Option<(usize, i64)>> {
    // A plain read finds the candidates; the transaction then locks exactly those rows
    // (a locking scan would lock every scored row it passes on MySQL).
    let find = communications::table
        .filter(communications::id.gt(after))
        .filter(communications::sentiment.is_null())
        .order(communications::id)
        .limit(SCORE_BATCH)
        .select(communications::id);
    let ids: Vec<i64> = with_conn!(db, write, |conn| Ok::<_, Error>(
        conn.any().load(find).await?
    ))?;
    let Some(&last) = ids.last() else {
        return Ok(None);
    };
    let scored = retry_conflicts(|| async {
        with_conn!(db, write, |conn| {
            crate::db::tx::transaction(conn, async |conn| {
                let lock = super::dialect::for_update(
                    communications::table
                        .filter(communications::id.eq_any(ids.clone()))
                        .filter(communications::sentiment.is_null())
                        .select(super::dialect::columns::<CommunicationRow>()),
                );
                let mut rows: Vec<CommunicationRow> = conn.any().load(lock).await?;
                let mut by_score: HashMap<i16, Vec<i64>> = HashMap::new();
                for row in &mut rows {
                    let score = crate::analytics::sentiment::score(&row.content);
                    row.sentiment = Some(score);
                    by_score.entry(score).or_default().push(row.id);
                }
                for (score, ids) in by_score {
                    let update = diesel::update(
                        communications::table.filter(communications::id.eq_any(ids)),
                    )
                    .set(communications::sentiment.eq(score));
                    conn.any().execute(update).await?;
                }
                let deltas = Deltas::scored(rows.iter().map(Contribution::from));
                rollups::add(conn, &deltas).await?;
                Ok::<_, Error>(rows.len())
            })
            .await
        })
    })
    .await?;
    Ok(Some((scored, last)))
}

/// The statement of one listing page: newest first, strictly after `after`.
#[diesel::dsl::auto_type]
fn list_query(filter: &CommunicationFilter, after: Option<(NaiveDateTime, i64)>, limit: i64) -> _ {
    let scope: query::Scope = query::Scope::of(filter);
    let page: query::When<query::OlderThan<communications::occur_time, communications::id>> =
        query::when(
            after.map(|a| query::older_than(communications::occur_time, communications::id, a)),
        );
    let columns: <CommunicationRow as diesel::Selectable<diesel::mysql::Mysql>>::SelectExpression =
        super::dialect::columns::<CommunicationRow>();
    communications::table
        .filter(scope)
        .filter(page)
        .order((communications::occur_time.desc(), communications::id.desc()))
        .limit(limit)
        .select(columns)
}

/// One page, newest first, strictly after the `(occur_time, id)` position `after`.
/// With one customer in the filter, NOT_FOUND unless that customer exists.
pub async fn list(
    db: &Db,
    filter: &CommunicationFilter,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<CommunicationRow>> {
    let page = list_query(filter, after, limit);
    with_conn!(db, |conn| {
        if let Some(customer_id) = filter.single_customer() {
            query::ensure_customer(conn, customer_id).await?;
        }
        Ok(conn.any().load(page).await?)
    })
}

/// A form of customer `customer_id` with `content` under request id `key`, for tests.
#[cfg(test)]
pub(crate) fn sample_form(customer_id: i64, content: &str, key: &str) -> CommunicationInsertForm {
    let t = chrono::DateTime::from_timestamp(1_700_000_000, 0)
        .map(|t| t.naive_utc())
        .unwrap_or_default();
    CommunicationInsertForm {
        customer_id,
        channel: 5,
        direction: 2,
        occur_time: t,
        content: content.to_owned(),
        outcome: String::new(),
        phone_number: None,
        call_duration_us: None,
        email_address: None,
        email_subject: None,
        chat_platform: None,
        chat_conversation_id: None,
        create_time: t,
        request_id: Some(key.to_owned()),
        sentiment: None,
        occur_time_given: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ListCommunications keyset page, per backend.
    #[test]
    fn list_page_snapshot() {
        let at = crate::model::time::march_2024;
        let filter = CommunicationFilter {
            customer_ids: vec![7],
            channels: vec![1, 2],
            direction: Some(1),
            start: Some(at(1)),
            end: Some(at(9)),
        };
        let page = list_query(&filter, Some((at(5), 40)), 50);
        insta::assert_snapshot!(
            "list_communications_page_mysql",
            diesel::debug_query::<diesel::mysql::Mysql, _>(&page).to_string()
        );
        insta::assert_snapshot!(
            "list_communications_page_sqlite",
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&page).to_string()
        );
    }

    /// The batch key lookup names whole unique keys: a list of row values on MySQL,
    /// a VALUES subquery on SQLite (which takes row values only from a subquery).
    #[test]
    fn key_lookup_snapshot() {
        let keys = vec![(7, "a".to_owned()), (9, "b".to_owned())];
        let query = key_lookup(keys);
        let mysql = diesel::debug_query::<diesel::mysql::Mysql, _>(&query).to_string();
        insta::assert_snapshot!("key_lookup_mysql", mysql);
        let sqlite = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string();
        insta::assert_snapshot!("key_lookup_sqlite", sqlite);
        let query = key_lookup(Vec::new());
        let none = diesel::debug_query::<diesel::mysql::Mysql, _>(&query).to_string();
        assert!(none.contains("WHERE 1 = 0"), "{none}");
    }

    /// The bundled SQLite accepts the lookup and searches the unique index with both
    /// columns, once per key, and finds exactly the listed keys.
    #[test]
    fn sqlite_key_lookup_searches_the_whole_unique_key() {
        use diesel::Connection;
        use diesel_migrations::MigrationHarness;
        #[derive(QueryableByName)]
        struct Step {
            #[diesel(sql_type = diesel::sql_types::Text)]
            detail: String,
        }
        let mut conn = diesel::SqliteConnection::establish(":memory:").unwrap();
        conn.run_pending_migrations(super::super::SQLITE_MIGRATIONS)
            .unwrap();
        // raw SQL: test fixture, one customer's rows in one statement
        diesel::RunQueryDsl::execute(
            diesel::sql_query(
                "INSERT INTO customers (id, name, create_time, update_time) \
             VALUES (7, 'c', '2024-01-01 00:00:00', '2024-01-01 00:00:00')",
            ),
            &mut conn,
        )
        .unwrap();
        let rows: Vec<CommunicationInsertForm> =
            (0..50).map(|i| form(7, "x", &format!("k{i}"))).collect();
        diesel::RunQueryDsl::execute(
            diesel::insert_into(communications::table).values(rows),
            &mut conn,
        )
        .unwrap();
        let keys = vec![
            (7, "k3".to_owned()),
            (7, "k40".to_owned()),
            (8, "k3".to_owned()),
        ];
        let found: Vec<(Option<String>, CommunicationRow)> =
            diesel::RunQueryDsl::load(key_lookup(keys.clone()), &mut conn).unwrap();
        let mut found: Vec<String> = found.into_iter().filter_map(|(k, _)| k).collect();
        found.sort();
        assert_eq!(found, ["k3", "k40"]);
        let query = key_lookup(keys);
        let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string();
        let text = sql.split(" -- binds").next().unwrap_or_default();
        let bound = text
            .replacen('?', "7", 1)
            .replacen('?', "'k3'", 1)
            .replacen('?', "7", 1)
            .replacen('?', "'k40'", 1)
            .replacen('?', "8", 1)
            .replacen('?', "'k3'", 1);
        // raw SQL: EXPLAIN QUERY PLAN of the statement under test
        let plan: Vec<Step> = diesel::RunQueryDsl::load(
            diesel::sql_query(format!("EXPLAIN QUERY PLAN {bound}")),
            &mut conn,
        )
        .unwrap();
        let plan: Vec<String> = plan.into_iter().map(|s| s.detail).collect();
        assert!(
            plan.iter().any(|s| s.contains(
                "USING INDEX ux_communications_request (customer_id=? AND request_id=?)"
            )),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|s| s.starts_with("SCAN communications")),
            "{plan:?}"
        );
    }

    use super::sample_form as form;

    #[test]
    fn a_batch_is_inserted_in_order_in_statements_bounded_by_rows_and_bytes() {
        let keys = |chunks: &[Vec<CommunicationInsertForm>]| -> Vec<Vec<String>> {
            chunks
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|f| f.request_id.clone().unwrap_or_default())
                        .collect()
                })
                .collect()
        };
        let small: Vec<_> = (0..2_500).map(|i| form(1, "x", &i.to_string())).collect();
        let chunks = insert_chunks(small);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        let flat: Vec<String> = keys(&chunks).concat();
        assert_eq!(flat, (0..2_500).map(|i| i.to_string()).collect::<Vec<_>>());

        // Content past the byte bound starts a new statement; one row larger than the
        // bound is a statement of its own.
        let mb = "m".repeat(1 << 20);
        let big = "b".repeat(INSERT_BYTES + 1);
        let forms = vec![
            form(1, &mb, "a"),
            form(1, &mb, "b"),
            form(1, &mb, "c"),
            form(1, &mb, "d"),
            form(1, "x", "e"),
            form(1, &big, "f"),
            form(1, "x", "g"),
        ];
        assert_eq!(
            keys(&insert_chunks(forms)),
            [vec!["a", "b", "c", "d"], vec!["e"], vec!["f"], vec!["g"]]
        );
        assert!(insert_chunks(Vec::new()).is_empty());
    }

    #[test]
    fn a_key_repeated_within_a_batch_is_a_replay_only_for_the_same_communication() {
        let forms = [
            form(1, "first", "k"),
            form(1, "first", "k"),
            form(1, "other", "k"),
            form(2, "other", "k"),
            form(1, "stored", "old"),
            form(1, "changed", "old"),
        ];
        let live: HashSet<i64> = [1, 2].into();
        let used = || vec![(Some("old".to_owned()), form(1, "stored", "old").stored(9))];
        assert_eq!(
            plan_log(&forms, &live, used()),
            [
                LogPlan::Store,
                LogPlan::SameAs(0),
                LogPlan::RequestIdReused,
                LogPlan::Store,
                LogPlan::Existing(9),
                LogPlan::RequestIdReused,
            ]
        );
        let (outcomes, rows) = plan_batch(&forms, &live, used());
        assert_eq!(
            outcomes,
            [
                BatchOutcome::Stored,
                BatchOutcome::Duplicate,
                BatchOutcome::RequestIdReused,
                BatchOutcome::Stored,
                BatchOutcome::Duplicate,
                BatchOutcome::RequestIdReused,
            ]
        );
        assert_eq!(rows.len(), 2);
    }
}

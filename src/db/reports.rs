//! Report statements: frequency buckets, totals, top customers and per-customer sums
//! aggregated in the database, plus short keyset page readers for the rows a report must
//! read itself (timestamps for gap statistics, content for matching and terms).
//!
//! Aggregates are single statements over the indexed columns of `communications`, built
//! as text with `?` placeholders and bound values (never formatted user input); only the
//! epoch arithmetic differs per backend. Everything returns rows or plain structs: what
//! the figures mean (buckets, gaps, matches, money) is `service::reports`'s business.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
use diesel_async::RunQueryDsl;

use super::schema::{service_tickets, transactions};
use super::sql::{load_sql, Bind, Sql};
use super::transactions::TransactionRow;
use super::{Backend, Db};
use crate::analytics::buckets::BucketPlan;
use crate::error::{Error, Result};
use crate::with_conn;

/// Added to `epoch seconds + shift` before the integer division of the bucket key, so the
/// dividend is positive (integer division then floors on every backend) for any time
/// after 1700. A multiple of both key units (3600 and 86400).
const KEY_OFFSET_SECS: i64 = 100_000 * 86_400;

/// Which communications a report covers.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Customers; empty for every customer.
    pub customer_ids: Vec<i64>,
    /// Channels; empty for all.
    pub channels: Vec<i32>,
    /// Direction; `None` for both.
    pub direction: Option<i32>,
    /// Inclusive lower bound of `occur_time` (UTC).
    pub start: NaiveDateTime,
    /// Exclusive upper bound of `occur_time` (UTC).
    pub end: NaiveDateTime,
}

/// Scope filters for a [`Sql`] statement.
trait ScopeSql {
    /// `occur_time` range, customers, channels and direction, joined by AND.
    fn scope(&mut self, scope: &Scope) -> &mut Self;
}

impl ScopeSql for Sql {
    fn scope(&mut self, scope: &Scope) -> &mut Self {
        self.push("occur_time >= ")
            .bind(Bind::Time(scope.start))
            .push(" AND occur_time < ")
            .bind(Bind::Time(scope.end));
        if !scope.customer_ids.is_empty() {
            self.push(" AND customer_id IN (");
            for (i, id) in scope.customer_ids.iter().enumerate() {
                if i > 0 {
                    self.push(", ");
                }
                self.bind(Bind::I64(*id));
            }
            self.push(")");
        }
        if !scope.channels.is_empty() {
            self.push(" AND channel IN (");
            for (i, c) in scope.channels.iter().enumerate() {
                if i > 0 {
                    self.push(", ");
                }
                self.bind(Bind::I32(*c));
            }
            self.push(")");
        }
        if let Some(d) = scope.direction {
            self.push(" AND direction = ").bind(Bind::I32(d));
        }
        self
    }
}

/// Whole seconds since the epoch of the UTC `DATETIME` column `col`.
fn epoch_secs(backend: Backend, col: &str) -> String {
    match backend {
        // Not UNIX_TIMESTAMP: that depends on the session time zone.
        Backend::Mysql => format!("TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {col})"),
        Backend::Sqlite => format!("CAST(strftime('%s', {col}) AS INTEGER)"),
    }
}

/// Exact microseconds since the epoch of a stored time expression (SQLite text
/// `YYYY-MM-DD HH:MM:SS[.f{1,9}]`; `strftime('%f')` only has milliseconds).
fn sqlite_epoch_micros(expr: &str) -> String {
    format!(
        "(CAST(strftime('%s', {expr}) AS INTEGER) * 1000000 + CASE WHEN length({expr}) > 20 \
         THEN CAST(substr({expr} || '000000', 21, 6) AS INTEGER) ELSE 0 END)"
    )
}

/// `expr` as a 64-bit integer column (MySQL's SUM and CASE give DECIMAL).
fn int(backend: Backend, expr: &str) -> String {
    match backend {
        Backend::Mysql => format!("CAST({expr} AS SIGNED)"),
        Backend::Sqlite => expr.to_owned(),
    }
}

/// Integer division of non-negative operands.
fn div(backend: Backend) -> &'static str {
    match backend {
        Backend::Mysql => " DIV ",
        Backend::Sqlite => " / ",
    }
}

// ---------------------------------------------------------------------------------
// Frequency

/// One row of the bucket query: communications of one channel under one bucket key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCount {
    /// The zone offset segment's shift, seconds.
    pub shift_secs: i64,
    /// The bucket key, as [`BucketPlan::bucket_for_key`] takes it.
    pub key: i64,
    /// The channel.
    pub channel: i32,
    /// Communications.
    pub count: i64,
}

/// Count, distinct customers and time span of the communications in a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Communications.
    pub count: i64,
    /// Distinct customers.
    pub customers: i64,
    /// Earliest communication.
    pub first: Option<NaiveDateTime>,
    /// Latest communication.
    pub last: Option<NaiveDateTime>,
}

/// One of the most contacted customers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopCustomer {
    /// The customer.
    pub customer_id: i64,
    /// Communications in scope.
    pub count: i64,
    /// Latest of them.
    pub last_time: NaiveDateTime,
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = BigInt)]
    s: i64,
    #[diesel(sql_type = BigInt)]
    k: i64,
    #[diesel(sql_type = Integer)]
    channel: i32,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct TotalsRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    customers: i64,
    #[diesel(sql_type = Nullable<Timestamp>)]
    first_time: Option<NaiveDateTime>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    last_time: Option<NaiveDateTime>,
}

#[derive(QueryableByName)]
struct TopRow {
    #[diesel(sql_type = BigInt)]
    customer_id: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Timestamp)]
    last_time: NaiveDateTime,
}

/// `CASE WHEN occur_time < seg1.end THEN shift1 ... ELSE shiftN END`, each shift plus
/// `add`.
fn shift_case(sql: &mut Sql, plan: &BucketPlan, add: i64) {
    let segments = plan.segments();
    let Some((last, rest)) = segments.split_last() else {
        sql.bind(Bind::I64(add));
        return;
    };
    if rest.is_empty() {
        sql.bind(Bind::I64(last.shift_secs + add));
        return;
    }
    sql.push("CASE");
    for seg in rest {
        sql.push(" WHEN occur_time < ")
            .bind(Bind::Time(seg.end.naive_utc()))
            .push(" THEN ")
            .bind(Bind::I64(seg.shift_secs + add));
    }
    sql.push(" ELSE ")
        .bind(Bind::I64(last.shift_secs + add))
        .push(" END");
}

/// The one bucket query: `(shift, key, channel) -> count` over the scope.
fn bucket_sql(backend: Backend, scope: &Scope, plan: &BucketPlan) -> Sql {
    let mut sql = Sql::default();
    sql.push("SELECT ");
    let mut shift = Sql::default();
    shift_case(&mut shift, plan, 0);
    sql.push(&int(backend, &shift.text));
    sql.binds.extend(shift.binds);
    sql.push(" AS s, ");
    let mut key = Sql::default();
    key.push("(")
        .push(&epoch_secs(backend, "occur_time"))
        .push(" + ");
    shift_case(&mut key, plan, KEY_OFFSET_SECS);
    key.push(")")
        .push(div(backend))
        .bind(Bind::I64(plan.unit_secs()));
    sql.push(&int(backend, &key.text));
    sql.binds.extend(key.binds);
    sql.push(" AS k, channel, COUNT(*) AS n FROM communications WHERE ")
        .scope(scope)
        .push(" GROUP BY s, k, channel");
    sql
}

fn totals_sql(scope: &Scope) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT customer_id) AS customers, \
         MIN(occur_time) AS first_time, MAX(occur_time) AS last_time \
         FROM communications WHERE ",
    )
    .scope(scope);
    sql
}

fn top_sql(scope: &Scope, n: i64) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "SELECT customer_id, COUNT(*) AS n, MAX(occur_time) AS last_time \
         FROM communications WHERE ",
    )
    .scope(scope)
    .push(" GROUP BY customer_id ORDER BY n DESC, customer_id LIMIT ")
    .bind(Bind::I64(n));
    sql
}

/// Communications in scope per `(shift, key, channel)` of `plan`, in one statement.
pub async fn bucket_counts(db: &Db, scope: &Scope, plan: &BucketPlan) -> Result<Vec<KeyCount>> {
    let unit_offset = KEY_OFFSET_SECS / plan.unit_secs();
    Ok(
        load_sql!(db, &bucket_sql(db.backend(), scope, plan), KeyRow)
            .into_iter()
            .map(|row| KeyCount {
                shift_secs: row.s,
                key: row.k - unit_offset,
                channel: row.channel,
                count: row.n,
            })
            .collect(),
    )
}

/// Count, distinct customers, first and last time of the communications in scope.
pub async fn totals(db: &Db, scope: &Scope) -> Result<Option<Totals>> {
    Ok(load_sql!(db, &totals_sql(scope), TotalsRow)
        .into_iter()
        .next()
        .map(|t| Totals {
            count: t.n,
            customers: t.customers,
            first: t.first_time,
            last: t.last_time,
        }))
}

/// The `n` customers with the most communications in scope, most first, ties by id.
pub async fn top_customers(db: &Db, scope: &Scope, n: i64) -> Result<Vec<TopCustomer>> {
    Ok(load_sql!(db, &top_sql(scope, n), TopRow)
        .into_iter()
        .map(|r| TopCustomer {
            customer_id: r.customer_id,
            count: r.n,
            last_time: r.last_time,
        })
        .collect())
}

/// One row of a gap page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct GapRow {
    /// Owner.
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    /// When it happened.
    #[diesel(sql_type = Timestamp)]
    pub occur_time: NaiveDateTime,
    /// Id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
}

/// One page of `(customer_id, occur_time, id)` in scope, ordered by all three, strictly
/// after `after`.
pub async fn gap_page(
    db: &Db,
    scope: &Scope,
    after: Option<(i64, NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<GapRow>> {
    let backend = db.backend();
    let mut sql = Sql::default();
    sql.push("SELECT customer_id, occur_time, id FROM communications");
    if backend == Backend::Mysql {
        // MariaDB otherwise may pick the time index plus a filesort per page.
        sql.push(" FORCE INDEX (ix_communications_customer_time)");
    }
    sql.push(" WHERE ").scope(scope);
    if let Some((c, t, id)) = after {
        sql.push(" AND customer_id >= ")
            .bind(Bind::I64(c))
            .push(" AND (customer_id > ")
            .bind(Bind::I64(c))
            .push(" OR occur_time > ")
            .bind(Bind::Time(t))
            .push(" OR (occur_time = ")
            .bind(Bind::Time(t))
            .push(" AND id > ")
            .bind(Bind::I64(id))
            .push("))");
    }
    sql.push(" ORDER BY customer_id, occur_time, id LIMIT ")
        .bind(Bind::I64(limit));
    Ok(load_sql!(db, &sql, GapRow))
}

/// Sums behind the mean gap between consecutive contacts of the same customer: the
/// gaps of one customer telescope to (last - first), so the mean is the sum of the
/// customers' spans over the sum of (contacts - 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanSums {
    /// Whole seconds of the summed spans.
    pub secs: i64,
    /// Remaining microseconds of the summed spans.
    pub micros: i64,
    /// Number of gaps.
    pub gaps: i64,
}

#[derive(QueryableByName)]
struct SpanRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    secs: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    micros: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    gaps: Option<i64>,
}

/// The per-customer span sums of the scope, computed in SQL (see [`SpanSums`]).
pub async fn span_sums(db: &Db, scope: &Scope) -> Result<Option<SpanSums>> {
    let backend = db.backend();
    let span = match backend {
        Backend::Mysql => "TIMESTAMPDIFF(MICROSECOND, MIN(occur_time), MAX(occur_time))".to_owned(),
        Backend::Sqlite => format!(
            "({} - {})",
            sqlite_epoch_micros("MAX(occur_time)"),
            sqlite_epoch_micros("MIN(occur_time)")
        ),
    };
    let d = div(backend);
    let modulo = match backend {
        Backend::Mysql => " MOD ",
        Backend::Sqlite => " % ",
    };
    let mut sql = Sql::default();
    // Seconds and microseconds are summed apart so that no sum overflows 64 bits.
    sql.push(&format!(
        "SELECT {} AS secs, {} AS micros, {} AS gaps FROM (SELECT {span} AS span, \
         COUNT(*) AS n FROM communications WHERE ",
        int(backend, &format!("SUM(span{d}1000000)")),
        int(backend, &format!("SUM(span{modulo}1000000)")),
        int(backend, "SUM(n - 1)"),
    ))
    .scope(scope)
    .push(" GROUP BY customer_id) t");
    Ok(load_sql!(db, &sql, SpanRow)
        .into_iter()
        .next()
        .map(|row| SpanSums {
            secs: row.secs.unwrap_or(0),
            micros: row.micros.unwrap_or(0),
            gaps: row.gaps.unwrap_or(0),
        }))
}

// ---------------------------------------------------------------------------------
// Content

/// One row of a content page.
#[derive(Debug, Clone, QueryableByName)]
pub struct ContentRow {
    /// Id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Owner.
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    /// When it happened.
    #[diesel(sql_type = Timestamp)]
    pub occur_time: NaiveDateTime,
    /// What was said.
    #[diesel(sql_type = Text)]
    pub content: String,
}

/// Ids of the rows in a wide scope, to decide between scanning by time and by id.
#[derive(QueryableByName)]
struct IdSpan {
    #[diesel(sql_type = Nullable<BigInt>)]
    min_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    max_id: Option<i64>,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// For a scope of every customer: `Some((first id - 1, last id))` when the rows in scope
/// are dense in id order (at least a quarter of the id span), so reading the table in
/// primary-key order is sequential, instead of one random row lookup per index entry
/// of the time index (on MariaDB with 1M rows: 33 s by time against a few seconds by id).
pub async fn dense_id_span(db: &Db, scope: &Scope) -> Result<Option<(i64, i64)>> {
    if !scope.customer_ids.is_empty() {
        return Ok(None);
    }
    let mut sql = Sql::default();
    sql.push(
        "SELECT MIN(id) AS min_id, MAX(id) AS max_id, COUNT(*) AS n FROM communications WHERE ",
    )
    .scope(scope);
    let span: Vec<IdSpan> = load_sql!(db, &sql, IdSpan);
    Ok(match <[IdSpan]>::first(&span) {
        Some(IdSpan {
            min_id: Some(lo),
            max_id: Some(hi),
            n,
        }) if n.saturating_mul(4) >= hi.saturating_sub(*lo).saturating_add(1) => {
            Some((lo.saturating_sub(1), *hi))
        }
        _ => None,
    })
}

/// One page of content in scope in primary-key order: ids in `(after, last]`.
pub async fn content_page_by_id(
    db: &Db,
    scope: &Scope,
    after: i64,
    last: i64,
    limit: i64,
) -> Result<Vec<ContentRow>> {
    let mut sql = Sql::default();
    sql.push("SELECT id, customer_id, occur_time, content FROM communications");
    sql.push(if db.backend() == Backend::Mysql {
        " FORCE INDEX (PRIMARY)"
    } else {
        " NOT INDEXED"
    });
    sql.push(" WHERE id > ")
        .bind(Bind::I64(after))
        .push(" AND id <= ")
        .bind(Bind::I64(last))
        .push(" AND ")
        .scope(scope)
        .push(" ORDER BY id LIMIT ")
        .bind(Bind::I64(limit));
    Ok(load_sql!(db, &sql, ContentRow))
}

/// Where the next content page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentPosition {
    /// Time order, strictly after `(occur_time, id)`.
    Time(Option<(NaiveDateTime, i64)>),
    /// Id order: ids in `(after, last]`.
    Id {
        /// Last id read (exclusive lower bound).
        after: i64,
        /// Last id of the scan (inclusive upper bound).
        last: i64,
    },
}

impl ContentPosition {
    /// Where a scope's scan starts: in id order when [`dense_id_span`] found the rows
    /// dense, by time otherwise.
    pub async fn start(db: &Db, scope: &Scope) -> Result<Self> {
        Ok(match dense_id_span(db, scope).await? {
            Some((after, last)) => ContentPosition::Id { after, last },
            None => ContentPosition::Time(None),
        })
    }

    /// The position after `page`, read at `self` with `limit`; `None` when the page was
    /// the last (shorter than `limit`).
    pub fn after_page(self, page: &[ContentRow], limit: i64) -> Option<Self> {
        match (page.last(), self) {
            (Some(r), ContentPosition::Time(_)) if page.len() as i64 == limit => {
                Some(ContentPosition::Time(Some((r.occur_time, r.id))))
            }
            (Some(r), ContentPosition::Id { last, .. }) if page.len() as i64 == limit => {
                Some(ContentPosition::Id { after: r.id, last })
            }
            _ => None,
        }
    }
}

/// One page of at most `limit` rows of content in scope, from `at`.
pub async fn next_content_page(
    db: &Db,
    scope: &Scope,
    at: ContentPosition,
    limit: i64,
) -> Result<Vec<ContentRow>> {
    match at {
        ContentPosition::Time(after) => content_page(db, scope, after, limit).await,
        ContentPosition::Id { after, last } => {
            content_page_by_id(db, scope, after, last, limit).await
        }
    }
}

/// One page of content in scope, oldest first, strictly after `(occur_time, id)`.
pub async fn content_page(
    db: &Db,
    scope: &Scope,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<ContentRow>> {
    let mut sql = Sql::default();
    let mut page_scope = scope.clone();
    if let Some((t, _)) = after {
        page_scope.start = t;
    }
    sql.push("SELECT id, customer_id, occur_time, content FROM communications");
    if db.backend() == Backend::Mysql {
        // With a range covering most of the table MariaDB picks a full scan plus a
        // filesort for every page; the index already has the page order.
        sql.push(if scope.customer_ids.len() == 1 {
            " FORCE INDEX (ix_communications_customer_time)"
        } else {
            " FORCE INDEX (ix_communications_time)"
        });
    }
    sql.push(" WHERE ").scope(&page_scope);
    if let Some((t, id)) = after {
        sql.push(" AND (occur_time > ")
            .bind(Bind::Time(t))
            .push(" OR id > ")
            .bind(Bind::I64(id))
            .push(")");
    }
    sql.push(" ORDER BY occur_time, id LIMIT ")
        .bind(Bind::I64(limit));
    Ok(load_sql!(db, &sql, ContentRow))
}

// ---------------------------------------------------------------------------------
// Customer insights

/// Contacts of one channel.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ChannelRow {
    /// The channel.
    #[diesel(sql_type = Integer)]
    pub channel: i32,
    /// Communications.
    #[diesel(sql_type = BigInt)]
    pub n: i64,
    /// Summed call duration in microseconds.
    #[diesel(sql_type = BigInt)]
    pub duration_us: i64,
}

/// Communications in scope per channel, in channel order, with summed call durations.
pub async fn channel_counts(db: &Db, scope: &Scope) -> Result<Vec<ChannelRow>> {
    let backend = db.backend();
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT channel, COUNT(*) AS n, {} AS duration_us FROM communications WHERE ",
        int(backend, "COALESCE(SUM(call_duration_us), 0)")
    ))
    .scope(scope)
    .push(" GROUP BY channel ORDER BY channel");
    Ok(load_sql!(db, &sql, ChannelRow))
}

/// Per-currency sums of one customer's amounts. `units` is summed in two halves,
/// `units = hi * 2^32 + lo` (both truncating toward zero, so `lo` has the sign of
/// `units`), because a plain `SUM(amount_units)` passes 64 bits with two large amounts
/// (SQLite fails, MySQL's CAST clamps). Each half-sum fits 64 bits for up to 2^31 rows.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct CurrencyRow {
    /// ISO 4217 code.
    #[diesel(sql_type = Text)]
    pub currency_code: String,
    /// Transactions.
    #[diesel(sql_type = BigInt)]
    pub n: i64,
    /// Sum of `amount_units / 2^32` (truncated).
    #[diesel(sql_type = BigInt)]
    pub units_hi: i64,
    /// Sum of `amount_units % 2^32`.
    #[diesel(sql_type = BigInt)]
    pub units_lo: i64,
    /// Sum of `amount_nanos`.
    #[diesel(sql_type = BigInt)]
    pub nanos: i64,
}

/// One customer's transactions in `[start, end)` summed per currency, by code.
pub async fn currency_sums(
    db: &Db,
    customer_id: i64,
    start: NaiveDateTime,
    end: NaiveDateTime,
) -> Result<Vec<CurrencyRow>> {
    let backend = db.backend();
    let mut sql = Sql::default();
    // `/` (SQLite) and DIV (MySQL) both truncate toward zero, and `%` takes the sign of
    // the dividend on both, so hi * 2^32 + lo == amount_units for every sign.
    sql.push(&format!(
        "SELECT currency_code, COUNT(*) AS n, {} AS units_hi, {} AS units_lo, {} AS nanos \
         FROM transactions WHERE customer_id = ",
        int(
            backend,
            &format!("SUM(amount_units{}4294967296)", div(backend))
        ),
        int(backend, "SUM(amount_units % 4294967296)"),
        int(backend, "SUM(amount_nanos)"),
    ))
    .bind(Bind::I64(customer_id))
    .push(" AND occur_time >= ")
    .bind(Bind::Time(start))
    .push(" AND occur_time < ")
    .bind(Bind::Time(end))
    .push(" GROUP BY currency_code ORDER BY currency_code");
    Ok(load_sql!(db, &sql, CurrencyRow))
}

/// Status, open and resolve time of one service ticket.
pub type TicketTimes = (i32, NaiveDateTime, Option<NaiveDateTime>);

/// One customer's latest transaction and the tickets opened in `[start, end)`, read on
/// one connection.
pub async fn last_order_and_tickets(
    db: &Db,
    customer_id: i64,
    start: NaiveDateTime,
    end: NaiveDateTime,
) -> Result<(Option<TransactionRow>, Vec<TicketTimes>)> {
    with_conn!(db, |conn| {
        let last_order: Option<TransactionRow> = transactions::table
            .filter(transactions::customer_id.eq(customer_id))
            .filter(transactions::occur_time.ge(start))
            .filter(transactions::occur_time.lt(end))
            .order((transactions::occur_time.desc(), transactions::id.desc()))
            .select(TransactionRow::as_select())
            .first(conn)
            .await
            .optional()?;
        let tickets: Vec<TicketTimes> = service_tickets::table
            .filter(service_tickets::customer_id.eq(customer_id))
            .filter(service_tickets::open_time.ge(start))
            .filter(service_tickets::open_time.lt(end))
            .select((
                service_tickets::status,
                service_tickets::open_time,
                service_tickets::resolve_time,
            ))
            .load(conn)
            .await?;
        Ok::<_, Error>((last_order, tickets))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The reports' SQL text per backend, pinned: a refactor of the builders must send
    //! byte-identical statements (or change these on purpose).
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::analytics::buckets::Granularity;

    fn scope() -> Scope {
        Scope {
            customer_ids: vec![7, 9],
            channels: vec![1, 3],
            direction: Some(1),
            start: Utc
                .with_ymd_and_hms(2024, 3, 9, 0, 0, 0)
                .unwrap()
                .naive_utc(),
            end: Utc
                .with_ymd_and_hms(2024, 3, 12, 0, 0, 0)
                .unwrap()
                .naive_utc(),
        }
    }

    /// Three days of New York around the March 2024 DST change: two offset segments.
    fn plan() -> BucketPlan {
        BucketPlan::new(
            chrono_tz::America::New_York,
            Granularity::Day,
            Utc.with_ymd_and_hms(2024, 3, 9, 5, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2024, 3, 12, 4, 0, 0).unwrap(),
        )
    }

    #[test]
    fn bucket_sql_is_pinned_per_backend() {
        let mysql = bucket_sql(Backend::Mysql, &scope(), &plan());
        assert_eq!(mysql.text, PINNED_BUCKET_MYSQL);
        let sqlite = bucket_sql(Backend::Sqlite, &scope(), &plan());
        assert_eq!(sqlite.text, PINNED_BUCKET_SQLITE);
        // Every value is bound, the same ones on both backends.
        assert_eq!(format!("{:?}", mysql.binds), format!("{:?}", sqlite.binds));
        assert_eq!(mysql.binds.len(), mysql.text.matches('?').count());
    }

    #[test]
    fn totals_and_top_sql_are_pinned() {
        assert_eq!(totals_sql(&scope()).text, PINNED_TOTALS);
        let top = top_sql(&scope(), 5);
        assert_eq!(top.text, PINNED_TOP);
        assert_eq!(top.binds.len(), top.text.matches('?').count());
    }

    const PINNED_BUCKET_MYSQL: &str =
        "SELECT CAST(CASE WHEN occur_time < ? THEN ? ELSE ? END AS SIGNED) AS s, \
     CAST((TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', occur_time) + CASE WHEN \
     occur_time < ? THEN ? ELSE ? END) DIV ? AS SIGNED) AS k, channel, COUNT(*) AS n FROM \
     communications WHERE occur_time >= ? AND occur_time < ? AND customer_id IN (?, ?) \
     AND channel IN (?, ?) AND direction = ? GROUP BY s, k, channel";
    const PINNED_BUCKET_SQLITE: &str =
        "SELECT CASE WHEN occur_time < ? THEN ? ELSE ? END AS s, (CAST(strftime('%s', \
     occur_time) AS INTEGER) + CASE WHEN occur_time < ? THEN ? ELSE ? END) / ? AS k, \
     channel, COUNT(*) AS n FROM communications WHERE occur_time >= ? AND occur_time < ? \
     AND customer_id IN (?, ?) AND channel IN (?, ?) AND direction = ? GROUP BY s, k, \
     channel";
    const PINNED_TOTALS: &str =
        "SELECT COUNT(*) AS n, COUNT(DISTINCT customer_id) AS customers, MIN(occur_time) AS \
     first_time, MAX(occur_time) AS last_time FROM communications WHERE occur_time >= ? \
     AND occur_time < ? AND customer_id IN (?, ?) AND channel IN (?, ?) AND direction = ?";
    const PINNED_TOP: &str =
        "SELECT customer_id, COUNT(*) AS n, MAX(occur_time) AS last_time FROM communications \
     WHERE occur_time >= ? AND occur_time < ? AND customer_id IN (?, ?) AND channel IN \
     (?, ?) AND direction = ? GROUP BY customer_id ORDER BY n DESC, customer_id LIMIT ?";
}

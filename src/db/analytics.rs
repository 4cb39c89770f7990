//! Analytics queries: frequency buckets, totals, top customers and per-customer sums
//! aggregated in the database, plus short keyset pages for what Rust must read itself.
//!
//! Aggregates are single statements over the indexed columns of `communications`, built
//! as text with `?` placeholders and bound values (never formatted user input); only the
//! epoch arithmetic differs per backend. Gap statistics over wide scopes and content
//! matching read rows in keyset pages, checking the call's [`Deadline`] before each.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
use diesel_async::RunQueryDsl;

use super::schema::{service_tickets, transactions};
use super::sql::{load_sql, Bind, Sql};
use super::transactions::TransactionRow;
use super::{Backend, Db};
use crate::analytics::buckets::BucketPlan;
use crate::analytics::gaps::{mean_gap_micros, GapStats};
use crate::analytics::matching::{snippet, Hits, Matcher};
use crate::analytics::terms::TermCounter;
use crate::convert::micros;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::with_conn;

/// Rows per keyset page of a content scan.
pub const CONTENT_PAGE_ROWS: i64 = 2_000;
/// Rows per keyset page of a gap scan (three small columns per row).
pub const GAP_PAGE_ROWS: i64 = 20_000;
/// Characters of context either side of a sample's first match.
pub const SNIPPET_RADIUS: usize = 40;

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

/// Inputs of a frequency report.
#[derive(Debug, Clone)]
pub struct FrequencyParams {
    /// The communications covered.
    pub scope: Scope,
    /// Buckets of the zone's calendar over the scope's range.
    pub plan: BucketPlan,
    /// Read every timestamp for mean and median gaps.
    pub gap_stats: bool,
    /// How many top customers (0 = none).
    pub top_n: i64,
}

/// Count of one bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketCount {
    /// Communications in the bucket.
    pub count: i64,
    /// Per channel, channels with no contact left out.
    pub channels: BTreeMap<i32, i64>,
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

/// The figures of a frequency report.
#[derive(Debug, Clone, Default)]
pub struct FrequencyFigures {
    /// One entry per bucket of the plan.
    pub buckets: Vec<BucketCount>,
    /// Sum of the buckets.
    pub total: i64,
    /// Per channel over the whole range.
    pub channels: BTreeMap<i32, i64>,
    /// Distinct customers.
    pub customer_count: i64,
    /// Earliest communication.
    pub first: Option<NaiveDateTime>,
    /// Latest communication.
    pub last: Option<NaiveDateTime>,
    /// Mean gap in microseconds, when computed and defined.
    pub mean_gap_us: Option<i64>,
    /// Median gap in microseconds, when computed and defined.
    pub median_gap_us: Option<i64>,
    /// Most contacted customers.
    pub top: Vec<TopCustomer>,
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

/// Computes a frequency report; checks `deadline` before each statement.
pub async fn frequency(
    db: &Db,
    params: &FrequencyParams,
    deadline: Deadline,
) -> Result<FrequencyFigures> {
    let backend = db.backend();
    let plan = &params.plan;
    let scope = &params.scope;
    let mut figures = FrequencyFigures {
        buckets: vec![BucketCount::default(); plan.buckets().len()],
        ..Default::default()
    };

    deadline.check("the bucket query")?;
    let unit_offset = KEY_OFFSET_SECS / plan.unit_secs();
    for row in load_sql!(db, &bucket_sql(backend, scope, plan), KeyRow) {
        let Some(i) = plan.bucket_for_key(row.k - unit_offset, row.s) else {
            tracing::warn!(key = row.k, shift = row.s, "bucket key outside the plan");
            continue;
        };
        if let Some(bucket) = figures.buckets.get_mut(i) {
            bucket.count += row.n;
            *bucket.channels.entry(row.channel).or_insert(0) += row.n;
            *figures.channels.entry(row.channel).or_insert(0) += row.n;
            figures.total += row.n;
        }
    }

    deadline.check("the totals query")?;
    if let Some(t) = load_sql!(db, &totals_sql(scope), TotalsRow)
        .into_iter()
        .next()
    {
        if t.n != figures.total {
            // Rows written between the two statements; the buckets are authoritative.
            tracing::debug!(buckets = figures.total, totals = t.n, "concurrent writes");
        }
        figures.customer_count = t.customers;
        figures.first = t.first_time;
        figures.last = t.last_time;
    }

    if params.top_n > 0 {
        deadline.check("the top-customers query")?;
        figures.top = load_sql!(db, &top_sql(scope, params.top_n), TopRow)
            .into_iter()
            .map(|r| TopCustomer {
                customer_id: r.customer_id,
                count: r.n,
                last_time: r.last_time,
            })
            .collect();
    }

    if params.gap_stats {
        let gaps = gap_stats(db, scope, deadline).await?;
        figures.mean_gap_us = gaps.mean_micros();
        figures.median_gap_us = gaps.median_micros();
    }
    Ok(figures)
}

#[derive(QueryableByName)]
struct GapRow {
    #[diesel(sql_type = BigInt)]
    customer_id: i64,
    #[diesel(sql_type = Timestamp)]
    occur_time: NaiveDateTime,
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Reads `(customer_id, occur_time)` of every row in scope, in keyset pages ordered by
/// `(customer_id, occur_time, id)`, into gap statistics.
pub async fn gap_stats(db: &Db, scope: &Scope, deadline: Deadline) -> Result<GapStats> {
    let backend = db.backend();
    let mut stats = GapStats::new();
    let mut after: Option<(i64, NaiveDateTime, i64)> = None;
    loop {
        deadline.check("the next page of timestamps")?;
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
            .bind(Bind::I64(GAP_PAGE_ROWS));
        let rows = load_sql!(db, &sql, GapRow);
        for r in &rows {
            stats.push(r.customer_id, micros(r.occur_time));
        }
        match rows.last() {
            Some(r) if rows.len() as i64 == GAP_PAGE_ROWS => {
                after = Some((r.customer_id, r.occur_time, r.id));
            }
            _ => return Ok(stats),
        }
    }
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

/// Mean gap between consecutive contacts of the same customer, computed in SQL: the
/// gaps of one customer telescope to (last - first), so the mean is the sum of the
/// customers' spans over the sum of (contacts - 1).
pub async fn mean_gap(db: &Db, scope: &Scope) -> Result<Option<i64>> {
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
    let Some(row) = load_sql!(db, &sql, SpanRow).into_iter().next() else {
        return Ok(None);
    };
    let total = i128::from(row.secs.unwrap_or(0)) * 1_000_000 + i128::from(row.micros.unwrap_or(0));
    Ok(mean_gap_micros(total, row.gaps.unwrap_or(0)))
}

// ---------------------------------------------------------------------------------
// Content

/// Inputs of a content scan.
#[derive(Debug, Clone)]
pub struct ContentParams {
    /// The communications read.
    pub scope: Scope,
    /// Keywords and patterns; `None` when there are none.
    pub matcher: Option<Arc<Matcher>>,
    /// How many top terms (0 = do not tokenize).
    pub top_terms: usize,
    /// How many samples.
    pub sample_limit: usize,
}

/// Matches of one keyword or pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchFigures {
    /// Communications that match.
    pub messages: i64,
    /// Distinct customers among them.
    pub customers: i64,
}

/// A matching communication with a snippet around its first match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Communication id.
    pub id: i64,
    /// Its customer.
    pub customer_id: i64,
    /// When it happened.
    pub occur_time: NaiveDateTime,
    /// Text around the first match.
    pub snippet: String,
    /// The keyword or pattern that matched first.
    pub matched: String,
}

/// The figures of a content scan.
#[derive(Debug, Clone, Default)]
pub struct ContentFigures {
    /// Communications read.
    pub scanned: i64,
    /// One entry per keyword.
    pub keywords: Vec<MatchFigures>,
    /// One entry per pattern.
    pub patterns: Vec<MatchFigures>,
    /// Top terms, count descending, ties by term.
    pub top_terms: Vec<(String, u64)>,
    /// Oldest matching communications first.
    pub samples: Vec<Sample>,
}

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

/// Running state of a content scan; fed page by page on the blocking pool.
struct ContentScan {
    matcher: Option<Arc<Matcher>>,
    terms: Option<TermCounter>,
    sample_limit: usize,
    scanned: i64,
    /// Keywords then patterns: messages and distinct customers.
    messages: Vec<i64>,
    customers: Vec<HashSet<i64>>,
    samples: Vec<Sample>,
    /// `(occur_time, id)` of the newest kept sample.
    newest_sample: Option<(NaiveDateTime, i64)>,
    hits: Hits,
}

impl ContentScan {
    fn new(params: &ContentParams) -> Self {
        let queries = params
            .matcher
            .as_ref()
            .map_or(0, |m| m.keyword_count() + m.pattern_count());
        ContentScan {
            matcher: params.matcher.clone(),
            terms: (params.top_terms > 0).then(TermCounter::new),
            sample_limit: params.sample_limit,
            scanned: 0,
            messages: vec![0; queries],
            customers: vec![HashSet::new(); queries],
            samples: Vec::new(),
            hits: Hits::default(),
            newest_sample: None,
        }
    }

    fn feed(&mut self, rows: &[ContentRow]) {
        for row in rows {
            self.scanned += 1;
            if let Some(terms) = &mut self.terms {
                terms.add_text(&row.content);
            }
            let Some(matcher) = &self.matcher else {
                continue;
            };
            matcher.matches_into(&row.content, &mut self.hits);
            if !self.hits.any() {
                continue;
            }
            let all = self.hits.keywords.iter().chain(&self.hits.patterns);
            for (i, &hit) in all.enumerate() {
                if hit {
                    if let (Some(m), Some(c)) =
                        (self.messages.get_mut(i), self.customers.get_mut(i))
                    {
                        *m += 1;
                        c.insert(row.customer_id);
                    }
                }
            }
            // Keep the oldest `sample_limit` matches; rows may arrive in id order.
            let key = (row.occur_time, row.id);
            let full = self.samples.len() >= self.sample_limit;
            if self.sample_limit == 0 || (full && self.newest_sample.is_some_and(|n| key >= n)) {
                continue;
            }
            if let Some(first) = matcher.first_match(&row.content) {
                let sample = Sample {
                    id: row.id,
                    customer_id: row.customer_id,
                    occur_time: row.occur_time,
                    snippet: snippet(&row.content, first.start, first.end, SNIPPET_RADIUS),
                    matched: first.query,
                };
                if full {
                    if let Some(pos) = self
                        .samples
                        .iter()
                        .position(|x| Some((x.occur_time, x.id)) == self.newest_sample)
                    {
                        self.samples[pos] = sample;
                    }
                } else {
                    self.samples.push(sample);
                }
                self.newest_sample = self.samples.iter().map(|x| (x.occur_time, x.id)).max();
            }
        }
    }

    fn finish(mut self, top_terms: usize) -> ContentFigures {
        self.samples.sort_by_key(|x| (x.occur_time, x.id));
        let keyword_count = self.matcher.as_ref().map_or(0, |m| m.keyword_count());
        let mut all: Vec<MatchFigures> = self
            .messages
            .iter()
            .zip(&self.customers)
            .map(|(&messages, c)| MatchFigures {
                messages,
                customers: c.len() as i64,
            })
            .collect();
        let patterns = all.split_off(keyword_count.min(all.len()));
        ContentFigures {
            scanned: self.scanned,
            keywords: all,
            patterns,
            top_terms: self.terms.map(|t| t.top(top_terms)).unwrap_or_default(),
            samples: self.samples,
        }
    }
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
async fn dense_id_span(db: &Db, scope: &Scope) -> Result<Option<(i64, i64)>> {
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
async fn content_page_by_id(
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
#[derive(Debug, Clone, Copy)]
enum ContentPosition {
    /// Time order, strictly after `(occur_time, id)`.
    Time(Option<(NaiveDateTime, i64)>),
    /// Id order: ids in `(after, last]`.
    Id { after: i64, last: i64 },
}

async fn next_content_page(db: &Db, scope: &Scope, at: ContentPosition) -> Result<Vec<ContentRow>> {
    match at {
        ContentPosition::Time(after) => content_page(db, scope, after, CONTENT_PAGE_ROWS).await,
        ContentPosition::Id { after, last } => {
            content_page_by_id(db, scope, after, last, CONTENT_PAGE_ROWS).await
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

/// Scans the content in scope page by page: matching, term counting and samples run
/// on the blocking pool while the next page is read. Checks `deadline` before each page.
pub async fn content(
    db: &Db,
    params: &ContentParams,
    deadline: Deadline,
) -> Result<ContentFigures> {
    let mut scan = ContentScan::new(params);
    deadline.check("the size of the content scan")?;
    let mut at = match dense_id_span(db, &params.scope).await? {
        Some((after, last)) => ContentPosition::Id { after, last },
        None => ContentPosition::Time(None),
    };
    deadline.check("the first page of content")?;
    let mut page = next_content_page(db, &params.scope, at).await?;
    loop {
        let next_after = match (page.last(), at) {
            (Some(r), ContentPosition::Time(_)) if page.len() as i64 == CONTENT_PAGE_ROWS => {
                Some(ContentPosition::Time(Some((r.occur_time, r.id))))
            }
            (Some(r), ContentPosition::Id { last, .. })
                if page.len() as i64 == CONTENT_PAGE_ROWS =>
            {
                Some(ContentPosition::Id { after: r.id, last })
            }
            _ => None,
        };
        let work = tokio::task::spawn_blocking(move || {
            scan.feed(&page);
            scan
        });
        let next = match next_after {
            Some(next) => {
                deadline.check("the next page of content")?;
                at = next;
                Some(next_content_page(db, &params.scope, next).await?)
            }
            None => None,
        };
        scan = work
            .await
            .map_err(|e| Error::Internal(format!("content scan task failed: {e}")))?;
        match next {
            Some(rows) => page = rows,
            None => return Ok(scan.finish(params.top_terms)),
        }
    }
}

// ---------------------------------------------------------------------------------
// Customer insights

/// Contacts of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelFigures {
    /// The channel.
    pub channel: i32,
    /// Communications.
    pub count: i64,
    /// Summed call duration in microseconds.
    pub duration_us: i64,
}

/// Totals of one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencyTotal {
    /// ISO 4217 code.
    pub currency_code: String,
    /// Whole units.
    pub units: i64,
    /// Billionths, same sign as `units`.
    pub nanos: i32,
}

/// The figures of a customer's insights.
#[derive(Debug, Clone, Default)]
pub struct InsightFigures {
    /// Per channel, in channel order.
    pub channels: Vec<ChannelFigures>,
    /// Communications in range.
    pub total: i64,
    /// Earliest communication.
    pub first: Option<NaiveDateTime>,
    /// Latest communication.
    pub last: Option<NaiveDateTime>,
    /// Mean gap in microseconds.
    pub mean_gap_us: Option<i64>,
    /// Top terms.
    pub top_terms: Vec<(String, u64)>,
    /// Transactions in range.
    pub transaction_count: i64,
    /// Per currency, by code.
    pub totals: Vec<CurrencyTotal>,
    /// Most recent transaction in range.
    pub last_order: Option<TransactionRow>,
    /// Tickets opened in range.
    pub ticket_count: i64,
    /// Of which still open.
    pub open_tickets: i64,
    /// Mean open-to-resolution time of resolved or closed tickets, microseconds.
    pub mean_resolution_us: Option<i64>,
}

#[derive(QueryableByName)]
struct ChannelRow {
    #[diesel(sql_type = Integer)]
    channel: i32,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    duration_us: i64,
}

/// Per-currency sums of one customer's amounts. `units` is summed in two halves,
/// `units = hi * 2^32 + lo` (both truncating toward zero, so `lo` has the sign of
/// `units`), because a plain `SUM(amount_units)` passes 64 bits with two large amounts
/// (SQLite fails, MySQL's CAST clamps). Each half-sum fits 64 bits for up to 2^31 rows.
#[derive(QueryableByName)]
struct CurrencyRow {
    #[diesel(sql_type = Text)]
    currency_code: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    units_hi: i64,
    #[diesel(sql_type = BigInt)]
    units_lo: i64,
    #[diesel(sql_type = BigInt)]
    nanos: i64,
}

/// Whole units as `hi * 2^32 + lo`, exactly.
fn units_from_halves(hi: i64, lo: i64) -> i128 {
    i128::from(hi) * (1i128 << 32) + i128::from(lo)
}

/// `units + nanos / 1e9`, computed exactly and normalised so that nanos is within
/// ±999,999,999 and carries the sign of units; `None` when the units do not fit the
/// 64 bits of `Money.units`.
pub fn normalize_money(units: i128, nanos: i128) -> Option<(i64, i32)> {
    let total = units.checked_mul(1_000_000_000)?.checked_add(nanos)?;
    let u = i64::try_from(total / 1_000_000_000).ok()?;
    let n = i32::try_from(total % 1_000_000_000).ok()?;
    Some((u, n))
}

/// One customer's figures over `[scope.start, scope.end)`; `scope` names that customer.
pub async fn insights(
    db: &Db,
    customer_id: i64,
    scope: &Scope,
    top_terms: usize,
    deadline: Deadline,
) -> Result<InsightFigures> {
    let backend = db.backend();
    let mut f = InsightFigures::default();

    deadline.check("the channel query")?;
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT channel, COUNT(*) AS n, {} AS duration_us FROM communications WHERE ",
        int(backend, "COALESCE(SUM(call_duration_us), 0)")
    ))
    .scope(scope)
    .push(" GROUP BY channel ORDER BY channel");
    for r in load_sql!(db, &sql, ChannelRow) {
        f.total += r.n;
        f.channels.push(ChannelFigures {
            channel: r.channel,
            count: r.n,
            duration_us: r.duration_us,
        });
    }

    deadline.check("the totals query")?;
    if let Some(t) = load_sql!(db, &totals_sql(scope), TotalsRow)
        .into_iter()
        .next()
    {
        f.first = t.first_time;
        f.last = t.last_time;
    }
    deadline.check("the gap query")?;
    f.mean_gap_us = mean_gap(db, scope).await?;

    if top_terms > 0 {
        let params = ContentParams {
            scope: scope.clone(),
            matcher: None,
            top_terms,
            sample_limit: 0,
        };
        f.top_terms = content(db, &params, deadline).await?.top_terms;
    }

    deadline.check("the transaction query")?;
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
    .bind(Bind::Time(scope.start))
    .push(" AND occur_time < ")
    .bind(Bind::Time(scope.end))
    .push(" GROUP BY currency_code ORDER BY currency_code");
    for r in load_sql!(db, &sql, CurrencyRow) {
        f.transaction_count += r.n;
        let units = units_from_halves(r.units_hi, r.units_lo);
        let (units, nanos) =
            normalize_money(units, i128::from(r.nanos)).ok_or_else(|| Error::OutOfRange {
                reason: "AMOUNT_OUT_OF_RANGE",
                message: format!(
                    "the {} total of this customer's transactions in range does not fit \
                     Money (64-bit units); narrow start_time/end_time",
                    r.currency_code
                ),
            })?;
        f.totals.push(CurrencyTotal {
            currency_code: r.currency_code,
            units,
            nanos,
        });
    }

    deadline.check("the ticket query")?;
    let (start, end) = (scope.start, scope.end);
    let (last_order, tickets) = with_conn!(db, |conn| {
        let last_order: Option<TransactionRow> = transactions::table
            .filter(transactions::customer_id.eq(customer_id))
            .filter(transactions::occur_time.ge(start))
            .filter(transactions::occur_time.lt(end))
            .order((transactions::occur_time.desc(), transactions::id.desc()))
            .select(TransactionRow::as_select())
            .first(conn)
            .await
            .optional()?;
        let tickets: Vec<(i32, NaiveDateTime, Option<NaiveDateTime>)> = service_tickets::table
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
    })?;
    f.last_order = last_order;
    f.ticket_count = tickets.len() as i64;
    f.open_tickets = tickets
        .iter()
        .filter(|(status, _, _)| *status == super::tickets::status::OPEN)
        .count() as i64;
    let resolved: Vec<i64> = tickets
        .iter()
        .filter(|(status, _, _)| *status != super::tickets::status::OPEN)
        .filter_map(|(_, open, resolve)| resolve.map(|r| (micros(r) - micros(*open)).max(0)))
        .collect();
    if !resolved.is_empty() {
        let sum: i128 = resolved.iter().map(|&us| i128::from(us)).sum();
        f.mean_resolution_us = i64::try_from(sum / resolved.len() as i128).ok();
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_carries_nanos_into_units_exactly() {
        assert_eq!(normalize_money(10, 1_500_000_000), Some((11, 500_000_000)));
        assert_eq!(
            normalize_money(-3, -2_250_000_000),
            Some((-5, -250_000_000))
        );
        assert_eq!(normalize_money(5, -250_000_000), Some((4, 750_000_000)));
        assert_eq!(normalize_money(0, 0), Some((0, 0)));
        assert_eq!(normalize_money(i64::MAX.into(), 1_000_000_000), None);
        // Past 64 bits on the way, representable at the end.
        let two_max = 2 * i128::from(i64::MAX);
        assert_eq!(
            normalize_money(two_max - i128::from(i64::MAX), 0),
            Some((i64::MAX, 0))
        );
        assert_eq!(normalize_money(two_max, 0), None);
        assert_eq!(
            normalize_money(i64::MIN.into(), -999_999_999),
            Some((i64::MIN, -999_999_999))
        );
    }

    #[test]
    fn units_split_in_halves_rebuild_exactly() {
        // What the SQL computes per row: truncating division and remainder by 2^32.
        for units in [
            0i64,
            1,
            -1,
            4_294_967_296,
            -4_294_967_297,
            i64::MAX,
            i64::MIN,
        ] {
            let (hi, lo) = (units / 4_294_967_296, units % 4_294_967_296);
            assert_eq!(units_from_halves(hi, lo), i128::from(units), "{units}");
        }
    }
}

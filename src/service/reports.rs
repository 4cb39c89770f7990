//! The report use cases: frequency, content and customer insights.
//!
//! Each takes a validated query and the call's [`Deadline`], applies the report's
//! defaults, reads what it needs through `db::reports` (checking the deadline before
//! each statement or page), and computes the figures with `analytics`: buckets of the
//! caller's calendar, per-day averages, gap statistics, the content scan (run on the
//! blocking pool while the next page is read) and exact money totals.
//!
//! A report on one customer (a frequency report scoped to exactly one, customer
//! insights) reads that customer's communications from the activity index that follows
//! the database beside the content index (`service::content_index`) when the server has
//! one and it is loaded: the same figures from memory, after one shared sync, instead
//! of a statement per figure over the customer's rows. A report on every customer
//! over a range holding a whole UTC month takes its bucket counts (whole 15-minute
//! slots) and its customer figures from the same activity.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

use crate::analytics::activity::{
    AllCustomersAsk, FrequencyAsk, FrequencyFigures, InsightFigures, SlotAsk,
};
use crate::analytics::buckets::{span_days, Bucket, BucketPlan, Granularity};
use crate::analytics::content::{ContentScan, MatchFigures, Sample, ScannedRow};
use crate::analytics::content_index::{IndexFigures, IndexQuery};
use crate::analytics::gaps::{mean_gap_micros, GapStats};
use crate::analytics::matching::Matcher;
use crate::analytics::rollup::{month_of, month_split, month_start, Tier, SLOTS};
use crate::analytics::sentiment::{Label, Tally};
use crate::db::content_feed::{self, FeedRow};
use crate::db::customers::{self, Customer};
use crate::db::reports::{self as queries, ContentPosition, ContentRow, KeyCount, TopCustomer};
use crate::db::tickets::status;
use crate::db::transactions::TransactionRow;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::model::deadline::Deadline;
use crate::model::filter::CommunicationFilter;
use crate::model::time::{micros, MIN_TIME};
use crate::service::content_index::ContentIndexHandle;

/// Most customers in one report's scope.
pub const MAX_SCOPE_CUSTOMERS: usize = 1000;
/// Most keywords in one content report.
pub const MAX_KEYWORDS: usize = 50;
/// Most patterns in one content report.
pub const MAX_PATTERNS: usize = 20;
/// Largest `top_n`.
pub const MAX_TOP_N: i32 = 1000;
/// Largest `top_terms`.
pub const MAX_TOP_TERMS: i32 = 200;
/// Largest `sample_limit`.
pub const MAX_SAMPLES: i32 = 100;
/// Top terms of customer insights when the query leaves it 0.
pub const DEFAULT_INSIGHT_TERMS: usize = 10;
/// Rows per keyset page of a content scan.
pub const CONTENT_PAGE_ROWS: i64 = 2_000;
/// Rows per keyset page of a gap scan (three small columns per row).
pub const GAP_PAGE_ROWS: i64 = 20_000;

/// Longest range of a frequency report, in months: one year of hours, ten years of
/// anything coarser.
pub fn max_range_months(granularity: Granularity) -> u32 {
    if granularity == Granularity::Hour {
        12
    } else {
        120
    }
}

fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

// ---------------------------------------------------------------------------------
// Frequency

/// A validated frequency report request.
#[derive(Debug, Clone)]
pub struct FrequencyQuery {
    /// Customers, sorted and distinct; empty for every customer.
    pub customer_ids: Vec<i64>,
    /// Channels; empty for all.
    pub channels: Vec<i32>,
    /// Direction; `None` for both.
    pub direction: Option<i32>,
    /// Inclusive start (UTC).
    pub start: NaiveDateTime,
    /// Exclusive end (UTC), at most [`max_range_months`] after `start`.
    pub end: NaiveDateTime,
    /// The caller's zone, whose calendar the buckets follow.
    pub time_zone: Tz,
    /// Bucket size.
    pub granularity: Granularity,
    /// How many top customers (0 = none).
    pub top_n: usize,
    /// Whether gap statistics were asked for (always computed for one customer).
    pub include_gap_stats: bool,
    /// Whether to add the preceding period of equal length (see [`previous_period`]).
    pub compare_previous_period: bool,
    /// Whether to split the counts by sentiment.
    pub include_sentiment: bool,
}

/// The period of the same length right before `[start, end)`: `[start - (end - start),
/// start)`. `None` when it would begin before the earliest time the service stores.
pub fn previous_period(
    start: NaiveDateTime,
    end: NaiveDateTime,
) -> Option<(NaiveDateTime, NaiveDateTime)> {
    let previous_start = start.checked_sub_signed(end - start)?;
    (previous_start >= crate::model::time::MIN_TIME).then_some((previous_start, start))
}

/// Count of one bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketCount {
    /// Communications in the bucket.
    pub count: i64,
    /// Per channel, channels with no contact left out.
    pub channels: BTreeMap<i32, i64>,
    /// By sentiment (`n` = `count`); all zero unless the query included sentiment.
    pub sentiment: Tally,
}

/// A top customer with its per-day average.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerFrequency {
    /// Count and last contact.
    pub customer: TopCustomer,
    /// Communications per day of the range.
    pub per_day_average: f64,
}

/// A frequency report.
#[derive(Debug, Clone, PartialEq)]
pub struct FrequencyReport {
    /// Every bucket of the range with its count.
    pub buckets: Vec<(Bucket, BucketCount)>,
    /// Sum of the buckets.
    pub total: i64,
    /// Calendar days of the range in the zone.
    pub span_days: i64,
    /// `total` per day.
    pub per_day_average: f64,
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
    pub top: Vec<CustomerFrequency>,
    /// The zone of the buckets.
    pub time_zone: Tz,
    /// The range reported, `[start, end)` (UTC).
    pub range: (NaiveDateTime, NaiveDateTime),
    /// The preceding period of equal length (its totals, channels and buckets; no top
    /// customers or gaps), when asked for.
    pub previous: Option<Box<FrequencyReport>>,
    /// The whole range by sentiment, when asked for.
    pub sentiment: Option<Tally>,
}

/// Where reports read their counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSource {
    /// The rollups where they answer exactly (every customer; zones whose offsets are
    /// whole quarter hours), the base table for the rest.
    Rollups,
    /// Always the base table (to verify the rollups, or to work around them).
    BaseTable,
}

/// The bucket rows of a frequency report: with a rollup `tier`, its whole units of the
/// range from the rollup (none when `slots`: the activity counted the range's whole
/// slots) and the edges from the base table; without, all from the base table.
async fn bucket_rows(
    db: &Db,
    scope: &CommunicationFilter,
    plan: &BucketPlan,
    range: (NaiveDateTime, NaiveDateTime),
    (tier, slots): (Option<Tier>, bool),
    deadline: Deadline,
) -> Result<Vec<KeyCount>> {
    deadline.check("the bucket query")?;
    let Some(tier) = tier else {
        return queries::bucket_counts(db, scope, plan).await;
    };
    // Every tier's units are whole slots, so slot counts answer wherever a tier does.
    let split = match slots {
        true => SLOTS.split(range.0, range.1),
        false => tier.split(range.0, range.1),
    };
    let mut rows = match (slots, split.units) {
        (false, Some(units)) => queries::tier_bucket_counts(db, tier, scope, plan, units).await?,
        _ => Vec::new(),
    };
    for (start, end) in split.edges {
        deadline.check("the bucket query of an edge")?;
        let edge = CommunicationFilter {
            start: Some(start),
            end: Some(end),
            ..scope.clone()
        };
        rows.extend(queries::bucket_counts(db, &edge, plan).await?);
    }
    Ok(rows)
}

/// Computes a frequency report; checks `deadline` before each statement. A report on
/// exactly one customer is answered from `index`'s activity when it can.
pub async fn frequency(
    db: &Db,
    q: FrequencyQuery,
    source: ReportSource,
    index: Option<&ContentIndexHandle>,
    deadline: Deadline,
) -> Result<FrequencyReport> {
    let previous = match q.compare_previous_period {
        false => None,
        true => {
            let (start, end) = previous_period(q.start, q.end).ok_or_else(|| {
                Error::invalid(
                    "compare_previous_period",
                    "the preceding period would start before 1900-01-01",
                )
            })?;
            Some(FrequencyQuery {
                start,
                end,
                top_n: 0,
                include_gap_stats: false,
                compare_previous_period: false,
                ..q.clone()
            })
        }
    };
    let ids = q.customer_ids.clone();
    let before = async {
        match previous {
            Some(pq) => {
                deadline.check("the preceding period")?;
                frequency_of(db, pq, source, index, deadline)
                    .await
                    .map(Some)
            }
            None => Ok(None),
        }
    };
    // The merge check and both periods at once; each runs to its end, so a merged
    // customer is refused whatever else failed.
    let (merged, report, before) = tokio::join!(
        customers::refuse_merged(db, &ids),
        frequency_of(db, q, source, index, deadline),
        before
    );
    merged?;
    let mut report = report?;
    report.previous = before?.map(Box::new);
    Ok(report)
}

/// The plan's buckets' UTC bounds in microseconds.
fn bucket_bounds(plan: &BucketPlan) -> Vec<(i64, i64)> {
    plan.buckets()
        .iter()
        .map(|b| (b.start.timestamp_micros(), b.end.timestamp_micros()))
        .collect()
}

/// The report of one period (see [`frequency`]).
async fn frequency_of(
    db: &Db,
    q: FrequencyQuery,
    source: ReportSource,
    index: Option<&ContentIndexHandle>,
    deadline: Deadline,
) -> Result<FrequencyReport> {
    let plan = BucketPlan::new(q.time_zone, q.granularity, utc(q.start), utc(q.end));
    // The activity index holds no sentiment.
    let activity = index.filter(|_| !q.include_sentiment);
    if let (Some(index), &[customer]) = (activity, q.customer_ids.as_slice()) {
        let ask = FrequencyAsk {
            customer,
            channels: q.channels.clone(),
            direction: q.direction,
            buckets: bucket_bounds(&plan),
            gaps: true,
        };
        if let Some(f) = index.frequency(ask, deadline).await? {
            return Ok(frequency_from_activity(&q, &plan, customer, f));
        }
    }
    let gap_stats_wanted = q.include_gap_stats || q.customer_ids.len() == 1;
    // Rollups hold every customer; a report on chosen customers reads their rows through
    // the (customer_id, occur_time) index instead.
    let rollups = source == ReportSource::Rollups && q.customer_ids.is_empty();
    let tier = if rollups { Tier::for_plan(&plan) } else { None };
    // The customer-month rollup counts every channel and direction.
    let months = rollups && q.channels.is_empty() && q.direction.is_none();
    let scope = CommunicationFilter {
        customer_ids: q.customer_ids,
        channels: q.channels,
        direction: q.direction,
        start: Some(q.start),
        end: Some(q.end),
    };
    let mut buckets = vec![BucketCount::default(); plan.buckets().len()];
    let mut channels = BTreeMap::new();
    let mut total = 0;
    let mut sentiment = Tally::default();

    let month_split = month_split(q.start, q.end);
    // Over a whole month or more, every customer's figures and the buckets' whole slots
    // come from the activity index when it follows the rows: two binary searches per
    // customer instead of a probe per customer in the database, and slots in memory
    // instead of rollup rows. The activity holds no sentiment.
    let wanted = index.is_some() && rollups && month_split.units.is_some();
    let ask = AllCustomersAsk {
        span: (wanted && months).then(|| {
            let range = (
                utc(q.start).timestamp_micros(),
                utc(q.end).timestamp_micros(),
            );
            (range, q.top_n)
        }),
        slots: SLOTS
            .split(q.start, q.end)
            .units
            .filter(|_| wanted && tier.is_some() && !q.include_sentiment)
            .map(|units| SlotAsk {
                units,
                buckets: bucket_bounds(&plan),
                channels: scope.channels.clone(),
                direction: scope.direction,
            }),
    };
    let from_index = match index {
        Some(index) if ask.span.is_some() || ask.slots.is_some() => {
            index.all_customers(ask, deadline).await?
        }
        _ => None,
    };
    let (span, slots) = from_index.map_or((None, None), |f| (f.span, f.slots));

    let range = (q.start, q.end);
    let rows = bucket_rows(db, &scope, &plan, range, (tier, slots.is_some()), deadline).await?;
    let from_slots = slots
        .into_iter()
        .flatten()
        .enumerate()
        .flat_map(|(i, counted)| {
            counted
                .into_iter()
                .map(move |(channel, count)| (i, channel, count, Tally::default()))
        });
    let from_rows = rows.into_iter().filter_map(|row| {
        let i = plan.bucket_for_key(row.key, row.shift_secs);
        if i.is_none() {
            tracing::warn!(
                key = row.key,
                shift = row.shift_secs,
                "bucket key outside the plan"
            );
        }
        Some((i?, row.channel, row.count, row.sentiment))
    });
    for (i, channel, count, s) in from_slots.chain(from_rows) {
        if let Some(bucket) = buckets.get_mut(i) {
            bucket.count += count;
            *bucket.channels.entry(channel).or_insert(0) += count;
            *channels.entry(channel).or_insert(0) += count;
            total += count;
            bucket.sentiment.add(s);
            sentiment.add(s);
        }
    }

    deadline.check("the totals query")?;
    if let Some(s) = &span {
        if s.total != total {
            // Rows written between the statements; the buckets are authoritative.
            tracing::debug!(buckets = total, activity = s.total, "concurrent writes");
        }
    }
    let (customer_count, first, last) = match (&span, months, month_split.units) {
        (Some(s), _, _) => (s.customers, s.first.and_then(naive), s.last.and_then(naive)),
        (None, true, Some(units)) => {
            let customers =
                queries::customer_count_from_rollup(db, units, &month_split.edges).await?;
            deadline.check("the first and last contact")?;
            let (first, last) = queries::first_and_last(db, &scope).await?;
            (customers, first, last)
        }
        _ => {
            let totals = queries::totals(db, &scope).await?;
            if let Some(t) = totals {
                if t.count != total {
                    // Rows written between the two statements; the buckets are
                    // authoritative.
                    tracing::debug!(buckets = total, totals = t.count, "concurrent writes");
                }
            }
            (
                totals.map_or(0, |t| t.customers),
                totals.and_then(|t| t.first),
                totals.and_then(|t| t.last),
            )
        }
    };

    let mut top = Vec::new();
    if q.top_n > 0 {
        deadline.check("the top-customers query")?;
        let n = q.top_n as i64;
        top = match (span, months, month_split.units) {
            (Some(s), _, _) => s
                .top
                .into_iter()
                .filter_map(|(customer_id, count, last)| {
                    Some(TopCustomer {
                        customer_id,
                        count,
                        last_time: naive(last)?,
                    })
                })
                .collect(),
            (None, true, Some(units)) => {
                queries::top_customers_from_rollup(db, units, &month_split.edges, n).await?
            }
            _ => queries::top_customers(db, &scope, n).await?,
        };
    }

    let (mut mean_gap_us, mut median_gap_us) = (None, None);
    if gap_stats_wanted {
        let gaps = gap_stats(db, &scope, deadline).await?;
        mean_gap_us = gaps.mean_micros();
        median_gap_us = gaps.median_micros();
    }

    let days = span_days(q.time_zone, utc(q.start), utc(q.end));
    let per_day = |n: i64| n as f64 / days as f64;
    Ok(FrequencyReport {
        buckets: plan.buckets().iter().copied().zip(buckets).collect(),
        total,
        span_days: days,
        per_day_average: per_day(total),
        channels,
        customer_count,
        first,
        last,
        mean_gap_us,
        median_gap_us,
        top: top
            .into_iter()
            .map(|customer| CustomerFrequency {
                per_day_average: per_day(customer.count),
                customer,
            })
            .collect(),
        time_zone: q.time_zone,
        range: (q.start, q.end),
        previous: None,
        sentiment: q.include_sentiment.then_some(sentiment),
    })
}

/// A time of the activity index (microseconds) as the database gives it.
fn naive(micros: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_micros(micros).map(|t| t.naive_utc())
}

/// The report of one customer's activity figures: the same as the database path's
/// (one customer: at most one distinct customer and one top customer).
fn frequency_from_activity(
    q: &FrequencyQuery,
    plan: &BucketPlan,
    customer: i64,
    f: FrequencyFigures,
) -> FrequencyReport {
    let days = span_days(q.time_zone, utc(q.start), utc(q.end));
    let per_day = |n: i64| n as f64 / days as f64;
    let (first, last) = (f.first.and_then(naive), f.last.and_then(naive));
    let top = match last {
        Some(last_time) if q.top_n > 0 && f.total > 0 => vec![CustomerFrequency {
            per_day_average: per_day(f.total),
            customer: TopCustomer {
                customer_id: customer,
                count: f.total,
                last_time,
            },
        }],
        _ => Vec::new(),
    };
    let buckets = plan
        .buckets()
        .iter()
        .copied()
        .zip(f.buckets)
        .map(|(bucket, channels)| {
            let count = channels.iter().map(|&(_, n)| n).sum();
            (
                bucket,
                BucketCount {
                    count,
                    channels: channels.into_iter().collect(),
                    sentiment: Tally::default(),
                },
            )
        })
        .collect();
    FrequencyReport {
        buckets,
        total: f.total,
        span_days: days,
        per_day_average: per_day(f.total),
        channels: f.channels.into_iter().collect(),
        customer_count: i64::from(f.total > 0),
        first,
        last,
        mean_gap_us: f.mean_gap_us,
        median_gap_us: f.median_gap_us,
        top,
        time_zone: q.time_zone,
        range: (q.start, q.end),
        previous: None,
        sentiment: None,
    }
}

/// Reads `(customer_id, occur_time)` of every row in scope, in keyset pages ordered by
/// `(customer_id, occur_time, id)`, into gap statistics; checks `deadline` before each.
pub async fn gap_stats(
    db: &Db,
    scope: &CommunicationFilter,
    deadline: Deadline,
) -> Result<GapStats> {
    let mut stats = GapStats::new();
    let mut after: Option<(i64, NaiveDateTime, i64)> = None;
    loop {
        deadline.check("the next page of timestamps")?;
        let rows = queries::gap_page(db, scope, after, GAP_PAGE_ROWS).await?;
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

/// Mean gap between consecutive contacts of the same customer, from the sums the
/// database computes.
pub async fn mean_gap(db: &Db, scope: &CommunicationFilter) -> Result<Option<i64>> {
    let Some(s) = queries::span_sums(db, scope).await? else {
        return Ok(None);
    };
    let total = i128::from(s.secs) * 1_000_000 + i128::from(s.micros);
    Ok(mean_gap_micros(total, s.gaps))
}

// ---------------------------------------------------------------------------------
// Content

/// A validated content report request.
#[derive(Debug, Clone)]
pub struct ContentQuery {
    /// Customers, sorted and distinct; empty for every customer.
    pub customer_ids: Vec<i64>,
    /// Channels; empty for all.
    pub channels: Vec<i32>,
    /// Inclusive start (UTC).
    pub start: NaiveDateTime,
    /// Exclusive end (UTC).
    pub end: NaiveDateTime,
    /// Keywords, as given.
    pub keywords: Vec<String>,
    /// Patterns, as given.
    pub patterns: Vec<String>,
    /// The keywords and patterns compiled; `None` when there are none.
    pub matcher: Option<Arc<Matcher>>,
    /// How many top terms (0 = do not tokenize).
    pub top_terms: usize,
    /// How many samples.
    pub sample_limit: usize,
    /// Only rows of these sentiments (`None`: not scored yet); empty for all.
    pub sentiments: Vec<Option<Label>>,
}

/// A content report.
#[derive(Debug, Clone)]
pub struct ContentReport {
    /// Communications read.
    pub scanned: i64,
    /// Each keyword with its matches.
    pub keywords: Vec<(String, MatchFigures)>,
    /// Each pattern with its matches.
    pub patterns: Vec<(String, MatchFigures)>,
    /// Top terms, count descending, ties by term.
    pub top_terms: Vec<(String, u64)>,
    /// Oldest matching communications first.
    pub samples: Vec<Sample>,
}

/// Computes a content report: from the content index when there is one, it is loaded
/// and the request has no patterns (regular expressions need the original text), else
/// by scanning the rows in scope (on the read replica when it serves: see `Db::reader`).
pub async fn content(
    db: &Db,
    q: ContentQuery,
    index: Option<&ContentIndexHandle>,
    deadline: Deadline,
) -> Result<ContentReport> {
    customers::refuse_merged(db, &q.customer_ids).await?;
    // The index holds no sentiment.
    if let Some(index) = index.filter(|_| q.patterns.is_empty() && q.sentiments.is_empty()) {
        let asked = IndexQuery {
            start: q.start.and_utc().timestamp_micros(),
            end: q.end.and_utc().timestamp_micros(),
            customers: q.customer_ids.clone(),
            channels: q.channels.clone(),
            keywords: q.keywords.clone(),
            count_terms: q.top_terms > 0,
            sample_limit: q.sample_limit,
        };
        if let Some(f) = index.answer(asked, deadline).await? {
            return indexed_report(db, q, f).await;
        }
    }
    let scope = CommunicationFilter {
        customer_ids: q.customer_ids,
        channels: q.channels,
        direction: None,
        start: Some(q.start),
        end: Some(q.end),
    };
    let scan = ContentScan::new(q.matcher, q.top_terms > 0, q.sample_limit);
    // The scan may read the replica; the index follows the primary, so its answer and
    // the rows its samples are cut from stay there.
    let sentiments = q.sentiments;
    let f = scan_content(&db.reader(), &scope, scan, &sentiments, deadline)
        .await?
        .finish(q.top_terms);
    let named = |queries: Vec<String>, figures: Vec<MatchFigures>| {
        queries.into_iter().zip(figures).collect()
    };
    Ok(ContentReport {
        scanned: f.scanned,
        keywords: named(q.keywords, f.keywords),
        patterns: named(q.patterns, f.patterns),
        top_terms: f.top_terms,
        samples: f.samples,
    })
}

/// The report of the index's figures; the samples' snippets are cut from the rows
/// read back by id (a row deleted in between drops out of the samples).
async fn indexed_report(db: &Db, q: ContentQuery, f: IndexFigures) -> Result<ContentReport> {
    let mut samples = Vec::new();
    if !f.samples.is_empty() {
        let ids: Vec<i64> = f.samples.iter().map(|&(_, id)| id).collect();
        let rows = content_feed::rows_by_id(db, &ids).await?;
        let mut scan = ContentScan::new(q.matcher.clone(), false, q.sample_limit);
        scan.feed(&rows);
        samples = scan.finish(0).samples;
    }
    Ok(ContentReport {
        scanned: f.scanned,
        keywords: q.keywords.into_iter().zip(f.keywords).collect(),
        patterns: Vec::new(),
        top_terms: f.terms.top(q.top_terms),
        samples,
    })
}

/// The rows a content scan reads: both carry these four columns under the same names.
macro_rules! scanned_row {
    ($($row:ty),*) => {$(
        impl ScannedRow for $row {
            fn id(&self) -> i64 {
                self.id
            }
            fn customer_id(&self) -> i64 {
                self.customer_id
            }
            fn occur_time(&self) -> NaiveDateTime {
                self.occur_time
            }
            fn content(&self) -> &str {
                &self.content
            }
        }
    )*};
}
scanned_row!(ContentRow, FeedRow);

/// Feeds the content in scope to `scan` page by page, only rows of `sentiments` when it
/// names any: the scan of one page runs on the blocking pool while the next page is
/// read. Checks `deadline` before each page.
pub async fn scan_content(
    db: &Db,
    scope: &CommunicationFilter,
    mut scan: ContentScan,
    sentiments: &[Option<Label>],
    deadline: Deadline,
) -> Result<ContentScan> {
    deadline.check("the size of the content scan")?;
    let mut at = ContentPosition::start(db, scope).await?;
    deadline.check("the first page of content")?;
    let mut page = queries::next_content_page(db, scope, at, CONTENT_PAGE_ROWS).await?;
    loop {
        let next_after = at.after_page(&page, CONTENT_PAGE_ROWS);
        if !sentiments.is_empty() {
            page.retain(|r| sentiments.contains(&r.sentiment.map(Label::of)));
        }
        let work = tokio::task::spawn_blocking(move || {
            scan.feed(&page);
            scan
        });
        let next = match next_after {
            Some(next) => {
                deadline.check("the next page of content")?;
                at = next;
                Some(queries::next_content_page(db, scope, next, CONTENT_PAGE_ROWS).await?)
            }
            None => None,
        };
        scan = work
            .await
            .map_err(|e| Error::Internal(format!("content scan task failed: {e}")))?;
        match next {
            Some(rows) => page = rows,
            None => return Ok(scan),
        }
    }
}

// ---------------------------------------------------------------------------------
// Customer insights

/// A validated customer insights request.
#[derive(Debug, Clone)]
pub struct InsightsQuery {
    /// The customer.
    pub customer_id: i64,
    /// Inclusive start; `None` for the customer's first record.
    pub start: Option<NaiveDateTime>,
    /// Exclusive end; `None` for `now`.
    pub end: Option<NaiveDateTime>,
    /// The time of the request.
    pub now: NaiveDateTime,
    /// The caller's zone, whose calendar days the average counts.
    pub time_zone: Tz,
    /// How many top terms; 0 for [`DEFAULT_INSIGHT_TERMS`].
    pub top_terms: usize,
}

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

/// A customer's insights.
#[derive(Debug, Clone)]
pub struct InsightsReport {
    /// The customer.
    pub customer: Customer,
    /// Per channel, in channel order.
    pub channels: Vec<ChannelFigures>,
    /// Communications in range.
    pub total: i64,
    /// `total` per calendar day of the range in the zone.
    pub per_day_average: f64,
    /// Earliest communication.
    pub first: Option<NaiveDateTime>,
    /// Latest communication.
    pub last: Option<NaiveDateTime>,
    /// Whole days from the latest communication to now.
    pub days_since_last_contact: Option<i64>,
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
    /// Communications in range by sentiment.
    pub sentiment: Tally,
    /// The same per UTC calendar month from the first contact in range to its end (the
    /// first and last months clipped to the request's bounds, when it gave them).
    pub sentiment_trend: Vec<(NaiveDateTime, NaiveDateTime, Tally)>,
}

/// One customer's sentiment in `[start, end)` per UTC calendar month, zero-filled: whole
/// months from the customer-month rollup, the partial months at the ends from the
/// customer's rows. Each period is its whole month, the first and last clipped to `clip`
/// (the bounds the caller gave; none given: whole months, so the answer does not move
/// with the clock). `start` is the customer's first contact at or after `clip.0` (or
/// `clip.0` itself): the customer has no rows in `[clip.0, start)`. Checks `deadline`
/// before each statement.
pub async fn sentiment_trend(
    db: &Db,
    customer_id: i64,
    (start, end): (NaiveDateTime, NaiveDateTime),
    clip: (Option<NaiveDateTime>, Option<NaiveDateTime>),
    deadline: Deadline,
) -> Result<Vec<(NaiveDateTime, NaiveDateTime, Tally)>> {
    if end <= start {
        return Ok(Vec::new());
    }
    let (first, last) = (
        month_of(start),
        month_of(end - chrono::Duration::microseconds(1)),
    );
    // A side the caller left open is read as whole months from the rollup: nothing lies
    // before the first contact, and what the last month holds after `end` (rows dated
    // later, usually none) is taken off with one short read of the customer's index.
    // Nothing lies between the caller's start and `start` either (the first contact in
    // range), so a range that starts on a month reads its first month from the rollup
    // too, not the month's rows (a key account's month is tens of thousands of them).
    let lo = clip.0.map_or(month_start(first), |c| c.min(start));
    let hi = clip.1.map_or(month_start(last + 1), |_| end);
    let split = month_split(lo, hi);
    // Every month the range touches from the rollup, in one read: the whole ones are the
    // answer, and a partial one that holds most of a busy month is that month less the
    // rows outside it (a key account's month is tens of thousands of rows).
    deadline.check("the monthly sentiment")?;
    let months = (
        month_of(lo),
        month_of(hi - chrono::Duration::microseconds(1)) + 1,
    );
    let whole: BTreeMap<i64, Tally> = queries::customer_month_sentiment(db, customer_id, months)
        .await?
        .into_iter()
        .collect();
    let mut by_month: BTreeMap<i64, Tally> = BTreeMap::new();
    if let Some((a, b)) = split.units {
        by_month.extend(whole.range(a..b).map(|(&m, &t)| (m, t)));
    }
    // What the rollup leaves to the rows: each range with its month and sign.
    let mut reads: Vec<RowsRead> = Vec::new();
    for piece in split.edges.iter().flat_map(|&e| month_pieces(e)) {
        let m = month_of(piece.0);
        let month = (month_start(m), month_start(m + 1));
        let all = whole.get(&m).copied().unwrap_or_default();
        if all.n >= COMPLEMENT_FROM && (piece.1 - piece.0) * 2 > month.1 - month.0 {
            by_month.entry(m).or_default().add(all);
            for outside in [(month.0, piece.0), (piece.1, month.1)] {
                reads.push(RowsRead::new(outside, m, -1, all));
            }
        } else {
            reads.push(RowsRead::new(piece, m, 1, all));
        }
    }
    if hi > end {
        let all = whole.get(&last).copied().unwrap_or_default();
        reads.push(RowsRead::new((end, hi), last, -1, all));
    }
    // A month the rollup holds no row of has none to read; the ranges of the months with
    // fewer than `COMPLEMENT_FROM` rows are read as rows in one statement, the others
    // each as one sum.
    reads.retain(|r| r.range.0 < r.range.1 && r.month_rows > 0);
    let (few, many): (Vec<RowsRead>, Vec<RowsRead>) = reads
        .into_iter()
        .partition(|r| r.month_rows < COMPLEMENT_FROM);
    if !few.is_empty() {
        deadline.check("the sentiment of partial months")?;
        let ranges: Vec<_> = few.iter().map(|r| r.range).collect();
        for (t, score) in queries::customer_scores(db, customer_id, &ranges).await? {
            for r in few.iter().filter(|r| r.range.0 <= t && t < r.range.1) {
                by_month
                    .entry(r.month)
                    .or_default()
                    .add(Tally::of_row(score, r.sign));
            }
        }
    }
    for r in many {
        deadline.check("the sentiment of a partial month")?;
        let mut tally = queries::customer_sentiment(db, customer_id, r.range).await?;
        if r.sign < 0 {
            tally = tally.negated();
        }
        by_month.entry(r.month).or_default().add(tally);
    }
    Ok(trend_periods((start, end), clip, &by_month))
}

/// The trend of `[start, end)` (`start` before `end`) from its tallies per month: every
/// month from `start`'s to the one holding `end`'s last instant, zero-filled, each period
/// its whole month, the first and last clipped to `clip` (see [`sentiment_trend`]).
fn trend_periods(
    (start, end): (NaiveDateTime, NaiveDateTime),
    clip: (Option<NaiveDateTime>, Option<NaiveDateTime>),
    by_month: &BTreeMap<i64, Tally>,
) -> Vec<(NaiveDateTime, NaiveDateTime, Tally)> {
    if end <= start {
        return Vec::new();
    }
    let (first, last) = (
        month_of(start),
        month_of(end - chrono::Duration::microseconds(1)),
    );
    (first..=last)
        .map(|m| {
            let from = clip.0.map_or(month_start(m), |c| month_start(m).max(c));
            let to = clip
                .1
                .map_or(month_start(m + 1), |c| month_start(m + 1).min(c));
            (from, to, by_month.get(&m).copied().unwrap_or_default())
        })
        .collect()
}

/// A customer-month with at least this many communications has the sentiment of a part
/// holding most of it read as the month less the rest, and its parts read as sums;
/// those of a smaller month are read as rows, all in one statement.
const COMPLEMENT_FROM: i64 = 2_000;

/// A range of one customer's rows whose sentiment the trend adds (`sign` 1) or takes
/// away (-1) for `month`, which the rollup says holds `month_rows` rows.
#[derive(Debug, Clone, Copy)]
struct RowsRead {
    range: (NaiveDateTime, NaiveDateTime),
    month: i64,
    sign: i64,
    month_rows: i64,
}

impl RowsRead {
    fn new(range: (NaiveDateTime, NaiveDateTime), month: i64, sign: i64, all: Tally) -> Self {
        Self {
            range,
            month,
            sign,
            month_rows: all.n,
        }
    }
}

/// `[start, end)` cut at UTC month starts.
fn month_pieces(
    (start, end): (NaiveDateTime, NaiveDateTime),
) -> Vec<(NaiveDateTime, NaiveDateTime)> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let next = month_start(month_of(at) + 1).min(end);
        if next <= at {
            // Past the last representable month.
            out.push((at, end));
            break;
        }
        out.push((at, next));
        at = next;
    }
    out
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

/// The communication figures of one customer's insights: from `index`'s activity when
/// it can answer, else from the database (channels, totals, span sums, a content scan).
async fn communication_figures(
    db: &Db,
    scope: &CommunicationFilter,
    index: Option<&ContentIndexHandle>,
    top_terms: usize,
    deadline: Deadline,
) -> Result<InsightFigures> {
    let (Some(start), Some(end), &[customer]) =
        (scope.start, scope.end, scope.customer_ids.as_slice())
    else {
        return Err(Error::Internal(
            "insights need one customer and a range".into(),
        ));
    };
    if let Some(index) = index {
        let range = (micros(start), micros(end));
        if let Some(f) = index.insights(customer, range, top_terms, deadline).await? {
            return Ok(f);
        }
    }
    deadline.check("the channel query")?;
    let mut total = 0;
    let mut channels = Vec::new();
    for r in queries::channel_counts(db, scope).await? {
        total += r.n;
        channels.push((r.channel, r.n, r.duration_us));
    }
    deadline.check("the totals query")?;
    let (first, last) = queries::totals(db, scope)
        .await?
        .map_or((None, None), |t| (t.first, t.last));
    deadline.check("the gap query")?;
    let mean_gap_us = mean_gap(db, scope).await?;
    let mut terms = Vec::new();
    if top_terms > 0 {
        let scan = ContentScan::new(None, true, 0);
        terms = scan_content(db, scope, scan, &[], deadline)
            .await?
            .finish(top_terms)
            .top_terms;
    }
    Ok(InsightFigures {
        channels,
        total,
        first: first.map(micros),
        last: last.map(micros),
        mean_gap_us,
        top_terms: terms,
        sentiment_months: None,
    })
}

/// Computes one customer's insights over `[start, end)`; the communication figures from
/// `index`'s activity when it can answer.
pub async fn insights(
    db: &Db,
    q: InsightsQuery,
    index: Option<&ContentIndexHandle>,
    deadline: Deadline,
) -> Result<InsightsReport> {
    let end = q.end.unwrap_or(q.now);
    let top_terms = match q.top_terms {
        0 => DEFAULT_INSIGHT_TERMS,
        n => n,
    };
    let start = q.start.unwrap_or(MIN_TIME);
    let scope = CommunicationFilter {
        start: Some(start),
        end: Some(end),
        ..CommunicationFilter::customer(q.customer_id)
    };
    // The customer, money and tickets on one connection, at once with the
    // communication figures (an unknown customer's figures read nothing); both run to
    // their end, so an unknown customer is NOT_FOUND whatever else failed.
    let others = async {
        deadline.check("the customer, transaction and ticket queries")?;
        queries::customer_money_and_tickets(db, q.customer_id, start, end).await
    };
    let (others, f) = tokio::join!(
        others,
        communication_figures(db, &scope, index, top_terms, deadline)
    );
    let (customer, currency_rows, last_order, tickets) = others?;
    let f = f?;
    let total = f.total;
    let channels: Vec<ChannelFigures> = f
        .channels
        .iter()
        .map(|&(channel, count, duration_us)| ChannelFigures {
            channel,
            count,
            duration_us,
        })
        .collect();
    let (first, last) = (f.first.and_then(naive), f.last.and_then(naive));
    let (mean_gap_us, terms, months) = (f.mean_gap_us, f.top_terms, f.sentiment_months);

    let mut transaction_count = 0;
    let mut totals = Vec::new();
    for r in currency_rows {
        transaction_count += r.n;
        let units = units_from_halves(r.units_hi, r.units_lo);
        let (units, nanos) =
            normalize_money(units, i128::from(r.nanos)).ok_or_else(|| Error::OutOfRange {
                reason: crate::error::Reason::AmountOutOfRange,
                message: format!(
                    "the {} total of this customer's transactions in range does not fit \
                     Money (64-bit units); narrow start_time/end_time",
                    r.currency_code
                ),
            })?;
        totals.push(CurrencyTotal {
            currency_code: r.currency_code,
            units,
            nanos,
        });
    }

    let open_tickets = tickets
        .iter()
        .filter(|(s, _, _)| *s == status::OPEN)
        .count() as i64;
    let resolved: Vec<i64> = tickets
        .iter()
        .filter(|(s, _, _)| *s != status::OPEN)
        .filter_map(|(_, open, resolve)| resolve.map(|r| (micros(r) - micros(*open)).max(0)))
        .collect();
    let mean_resolution_us = if resolved.is_empty() {
        None
    } else {
        let sum: i128 = resolved.iter().map(|&us| i128::from(us)).sum();
        i64::try_from(sum / resolved.len() as i128).ok()
    };

    // Without a start the range begins at the customer's first record: its creation,
    // or an earlier (imported) communication.
    let range_start = q.start.unwrap_or_else(|| {
        first.map_or(customer.row.create_time, |t| {
            t.min(customer.row.create_time)
        })
    });
    let days = span_days(q.time_zone, utc(range_start), utc(end.max(range_start)));
    // The trend runs from the first contact in range (none before it): the rows of the
    // communication figures, which the activity index counted per month when it could.
    let trend_range = (first.unwrap_or(end).max(range_start), end);
    let clip = (q.start, q.end);
    let sentiment_trend = match months {
        Some(months) => trend_periods(trend_range, clip, &months.into_iter().collect()),
        None => sentiment_trend(db, q.customer_id, trend_range, clip, deadline).await?,
    };
    let mut sentiment = Tally::default();
    for (_, _, t) in &sentiment_trend {
        sentiment.add(*t);
    }
    Ok(InsightsReport {
        customer,
        channels,
        total,
        per_day_average: total as f64 / days as f64,
        first,
        last,
        days_since_last_contact: last.map(|t| (q.now - t).num_days().max(0)),
        mean_gap_us,
        top_terms: terms,
        transaction_count,
        totals,
        last_order,
        ticket_count: tickets.len() as i64,
        open_tickets,
        mean_resolution_us,
        sentiment,
        sentiment_trend,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_cut_at_month_starts() {
        let t = |m: u32, d: u32, h: u32| {
            chrono::NaiveDate::from_ymd_opt(2024, m, d)
                .and_then(|d| d.and_hms_opt(h, 0, 0))
                .expect("a valid time")
        };
        assert_eq!(
            month_pieces((t(1, 20, 5), t(3, 2, 0))),
            vec![
                (t(1, 20, 5), t(2, 1, 0)),
                (t(2, 1, 0), t(3, 1, 0)),
                (t(3, 1, 0), t(3, 2, 0))
            ]
        );
        assert_eq!(
            month_pieces((t(2, 1, 0), t(2, 9, 0))),
            vec![(t(2, 1, 0), t(2, 9, 0))]
        );
        assert!(month_pieces((t(2, 9, 0), t(2, 9, 0))).is_empty());
    }

    #[test]
    fn the_previous_period_has_the_same_length_and_ends_where_the_range_starts() {
        let t = |s: &str| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap_or_default()
        };
        assert_eq!(
            previous_period(t("2024-02-01 00:00:00"), t("2024-03-01 00:00:00")),
            Some((t("2024-01-03 00:00:00"), t("2024-02-01 00:00:00")))
        );
        assert_eq!(
            previous_period(t("2024-03-10 06:30:00"), t("2024-03-10 07:00:00")),
            Some((t("2024-03-10 06:00:00"), t("2024-03-10 06:30:00")))
        );
        assert_eq!(
            previous_period(t("1901-01-01 00:00:00"), t("1903-01-01 00:00:00")),
            None
        );
    }

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

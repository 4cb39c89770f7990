//! The per-customer activity index: each customer's communications sorted by time, with
//! their channel, direction, call duration, sentiment score and term ids, so one-customer
//! reports (buckets, channel figures, first and last contact, mean and exact median gap,
//! top terms, the sentiment per month) read only that customer's rows, in memory, without
//! a statement per figure.
//!
//! Pure data structure, no I/O: `service::content_index` fills it beside the content
//! index and keeps it current (inserts, deletes by id, customer merges). Answers equal
//! the database path's over the same rows: buckets by the plan's UTC bounds
//! ([`super::buckets::BucketPlan::bucket_of`]'s rule, walked with a moving boundary),
//! gaps by [`GapStats`](super::gaps::GapStats) over `(time, id)` order, terms by [`super::terms::terms`] ranked as
//! [`super::terms::TermCounter::top`] ranks them. A customer with a row the compact
//! layout cannot hold (a channel or direction past 255, more than 65,535 terms in one
//! row, a call of 2^47 microseconds or more, a call-time sum past 64 bits) answers
//! `None`, and the caller reads the database. The sentiment per month is also left to the
//! database when a row in range is not scored yet: the background scorer may have scored
//! it since, and only the database knows.
//!
//! A customer with [`TERM_TOTALS_FROM`] rows or more (a key account) also keeps its term
//! totals and a [`Big`]: per channel and direction its sorted times, its sorted gaps and
//! channel totals, so a report over most of its rows costs binary searches and the rows
//! outside the range, not a walk over the rows inside.
//!
//! Over every customer it keeps [`Slots`]: rows per 15-minute slot, channel and direction
//! (the `communication_slots` rollup's counts, kept in memory), so a report on every
//! customer counts its buckets in any zone from the slots its range holds.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::OnceLock;

use super::gaps::{mean_gap_micros, median_in_place};
use super::rollup::{month_of, month_start, SLOT_SECS};
use super::sentiment::Tally;
use super::terms::terms;

/// A customer with at least this many rows keeps its whole-history term counts, so a
/// range covering most of its rows counts only the rows outside it.
pub const TERM_TOTALS_FROM: usize = 16_384;
/// Owner of an id whose row was removed (ids are never reused).
const REMOVED: i64 = i64::MIN;

/// One communication as the index takes it.
#[derive(Debug, Clone, Copy)]
pub struct ActivityRow<'a> {
    /// Its id.
    pub id: i64,
    /// Its customer.
    pub customer_id: i64,
    /// Its channel (proto enum value).
    pub channel: i32,
    /// Its direction (proto enum value).
    pub direction: i32,
    /// When it happened, microseconds since the Unix epoch (UTC).
    pub occur_micros: i64,
    /// Call duration, microseconds.
    pub call_duration_us: Option<i64>,
    /// What was said (only its terms are kept).
    pub content: &'a str,
    /// Its sentiment score; `None`: not scored yet.
    pub sentiment: Option<i16>,
}

/// One row of a customer, 32 bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    time: i64,
    id: i64,
    /// The call duration in microseconds (below 2^47) above the sentiment score's 16
    /// bits ([`UNSCORED`] for a row not scored yet).
    duration_score: u64,
    /// Start of the row's term ids in its customer's `terms`.
    terms_at: u32,
    terms_len: u16,
    channel: u8,
    direction: u8,
}

/// The score bits of a row not scored yet (scores lie in `-1000..=1000`).
const UNSCORED: i16 = i16::MIN;
/// Call durations the layout holds: `0..MAX_DURATION` microseconds (about 4.4 years;
/// a stored call lasts at most a day).
const MAX_DURATION: i64 = 1 << 47;

impl Entry {
    fn key(&self) -> (i64, i64) {
        (self.time, self.id)
    }

    /// The layout of a duration and a score; `None` for a duration it cannot hold.
    fn pack(duration: i64, score: Option<i16>) -> Option<u64> {
        let duration = u64::try_from(duration)
            .ok()
            .filter(|&d| d < MAX_DURATION as u64)?;
        let score = score.unwrap_or(UNSCORED);
        Some(duration << 16 | u64::from(score as u16))
    }

    fn duration(&self) -> i64 {
        (self.duration_score >> 16) as i64
    }

    /// The sentiment score; `None`: not scored yet.
    fn score(&self) -> Option<i16> {
        Some(self.duration_score as u16 as i16).filter(|&s| s != UNSCORED)
    }
}

/// One customer's rows.
#[derive(Debug, Default)]
struct Customer {
    /// Sorted by `(time, id)` whenever no batch is in progress.
    rows: Vec<Entry>,
    /// Term ids of the rows, back to back (in arrival order; removed rows leave gaps).
    terms: Vec<u32>,
    /// Term ids in `terms` no live row refers to.
    dead_terms: usize,
    sorted: bool,
    /// A row the layout cannot hold was given: answers `None`.
    exotic: bool,
    /// Term counts of every row, kept from [`TERM_TOTALS_FROM`] rows on.
    totals: Option<HashMap<u32, u64>>,
    /// Per-kind times, sorted gaps and channel totals of a customer with
    /// [`TERM_TOTALS_FROM`] rows or more, built by the first report that needs them
    /// (see [`Big`]).
    big: OnceLock<Big>,
    /// `totals` in rank order (count descending, then term), built by the first report
    /// that ranks them and dropped whenever `totals` changes.
    ranked: OnceLock<Vec<(u32, u64)>>,
}

/// What a customer with many rows keeps beside its rows, so a report over most of them
/// reads a few binary searches and the rows outside the range instead of every row
/// inside it. Kept exact: appends in `(time, id)` order update it in place (their gaps
/// merged in at [`Customer::settle`]); any other change (a back-dated row, a delete, a
/// merge that interleaves) drops it, and the next report rebuilds it from the rows
/// (a bulk load or a busy writer costs no rebuild per batch).
#[derive(Debug, Default)]
struct Big {
    /// `(channel, direction)` of each kind present, ascending.
    kinds: Vec<(u8, u8)>,
    /// Per kind (as `kinds`), the times of its rows, ascending.
    times: Vec<Vec<i64>>,
    /// Every gap between consecutive rows in `(time, id)` order, ascending.
    gaps: Vec<i64>,
    /// Their sum.
    gap_sum: i128,
    /// Gaps of appended rows, not yet merged into `gaps`.
    fresh_gaps: Vec<i64>,
    /// Rows per channel.
    counts: Vec<i64>,
    /// Summed call duration per channel.
    durations: Vec<i128>,
    /// Per UTC calendar month holding a row, the sentiment of its rows.
    months: BTreeMap<i64, RowsSentiment>,
}

/// The sentiment of some rows: the scored ones' tally and how many are not scored yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RowsSentiment {
    scored: Tally,
    unscored: i64,
}

impl RowsSentiment {
    fn add(&mut self, e: &Entry) {
        match e.score() {
            Some(score) => self.scored.add(Tally::of_row(Some(score), 1)),
            None => self.unscored += 1,
        }
    }

    /// The tally of the rows, when every one is scored.
    fn tally(&self) -> Option<Tally> {
        (self.unscored == 0).then_some(self.scored)
    }

    fn rows(&self) -> i64 {
        self.scored.n + self.unscored
    }
}

/// The UTC month of times met in ascending order, with chrono called only when the
/// month changes.
#[derive(Debug, Clone, Copy)]
struct MonthCursor {
    month: i64,
    /// Start of `month` and of the month after it, µs (`start > next` before the first).
    start: i64,
    next: i64,
}

impl Default for MonthCursor {
    fn default() -> Self {
        MonthCursor {
            month: 0,
            start: i64::MAX,
            next: i64::MIN,
        }
    }
}

impl MonthCursor {
    /// The month of `time`; `None` outside chrono's range.
    fn month(&mut self, time: i64) -> Option<i64> {
        if time < self.start || time >= self.next {
            self.month = month_of(chrono::DateTime::from_timestamp_micros(time)?.naive_utc());
            self.start = month_micros(self.month);
            self.next = month_micros(self.month + 1);
            if self.next <= time {
                // Past the last month chrono represents: one month to the end.
                self.next = i64::MAX;
            }
        }
        Some(self.month)
    }
}

/// Start of a month index, µs since the epoch.
fn month_micros(month: i64) -> i64 {
    month_start(month).and_utc().timestamp_micros()
}

impl Big {
    /// Built from sorted rows.
    fn build(rows: &[Entry]) -> Big {
        let mut slot: HashMap<(u8, u8), usize> = HashMap::new();
        let mut big = Big {
            counts: vec![0; 256],
            durations: vec![0; 256],
            ..Big::default()
        };
        let mut times: Vec<Vec<i64>> = Vec::new();
        let mut kinds: Vec<(u8, u8)> = Vec::new();
        let mut cursor = MonthCursor::default();
        for e in rows {
            if let Some(m) = cursor.month(e.time) {
                big.months.entry(m).or_default().add(e);
            }
            let k = *slot.entry((e.channel, e.direction)).or_insert_with(|| {
                kinds.push((e.channel, e.direction));
                times.push(Vec::new());
                times.len() - 1
            });
            times[k].push(e.time);
            big.counts[e.channel as usize] += 1;
            big.durations[e.channel as usize] += i128::from(e.duration());
        }
        let mut order: Vec<usize> = (0..kinds.len()).collect();
        order.sort_unstable_by_key(|&k| kinds[k]);
        big.kinds = order.iter().map(|&k| kinds[k]).collect();
        big.times = order
            .iter()
            .map(|&k| {
                let mut t = std::mem::take(&mut times[k]);
                t.shrink_to_fit();
                t
            })
            .collect();
        big.gaps = rows.windows(2).map(|w| gap(&w[0], &w[1])).collect();
        big.gap_sum = big.gaps.iter().map(|&g| i128::from(g)).sum();
        big.gaps.sort_unstable();
        big
    }

    /// Takes `e`, which follows `last` (the customer's last row before it) in
    /// `(time, id)` order.
    fn append(&mut self, last: Option<&Entry>, e: &Entry) {
        let kind = (e.channel, e.direction);
        match self.kinds.binary_search(&kind) {
            Ok(k) => self.times[k].push(e.time),
            Err(k) => {
                self.kinds.insert(k, kind);
                self.times.insert(k, vec![e.time]);
            }
        }
        self.counts[e.channel as usize] += 1;
        self.durations[e.channel as usize] += i128::from(e.duration());
        if let Some(m) = MonthCursor::default().month(e.time) {
            self.months.entry(m).or_default().add(e);
        }
        if let Some(last) = last {
            let g = gap(last, e);
            self.fresh_gaps.push(g);
            self.gap_sum += i128::from(g);
        }
    }

    /// Merges the appended rows' gaps into `gaps`.
    fn merge_fresh(&mut self) {
        if self.fresh_gaps.is_empty() {
            return;
        }
        let mut fresh = std::mem::take(&mut self.fresh_gaps);
        fresh.sort_unstable();
        let old = std::mem::take(&mut self.gaps);
        let mut merged = Vec::with_capacity(old.len() + fresh.len());
        let (mut i, mut j) = (0, 0);
        while i < old.len() && j < fresh.len() {
            if old[i] <= fresh[j] {
                merged.push(old[i]);
                i += 1;
            } else {
                merged.push(fresh[j]);
                j += 1;
            }
        }
        merged.extend_from_slice(&old[i..]);
        merged.extend_from_slice(&fresh[j..]);
        self.gaps = merged;
    }

    fn heap_bytes(&self) -> usize {
        self.kinds.capacity() * 2
            + self.times.capacity() * 24
            + self.times.iter().map(|t| t.capacity() * 8).sum::<usize>()
            + (self.gaps.capacity() + self.fresh_gaps.capacity()) * 8
            + self.counts.capacity() * 8
            + self.durations.capacity() * 16
            + self.months.len() * 64
    }

    /// The `k`-th smallest (from 0) of `gaps` less the multiset `out` (sorted, a part
    /// of `gaps`), or `None` past the end.
    fn kth_without(&self, out: &[i64], k: usize) -> Option<i64> {
        // Smallest gap value v with #(gaps <= v) - #(out <= v) > k.
        let above =
            |v: i64| self.gaps.partition_point(|&g| g <= v) - out.partition_point(|&g| g <= v) > k;
        let p = self.gaps.partition_point(|&v| !above(v));
        self.gaps.get(p).copied()
    }

    /// Mean and exact median of the gaps between consecutive rows `lo..hi` of `rows`
    /// (the rows this was built from), by all gaps less those outside (cheap while few
    /// lie outside); `None` if the gaps disagree with the rows (never: the caller walks).
    fn gaps_inside(
        &self,
        rows: &[Entry],
        lo: usize,
        hi: usize,
    ) -> Option<(Option<i64>, Option<i64>)> {
        let n = rows.len();
        if hi <= lo + 1 || n < 2 {
            return Some((None, None));
        }
        // Gap i lies between rows i and i + 1; those inside are lo..hi - 1.
        let inside = hi - 1 - lo;
        let mut out: Vec<i64> = (0..lo)
            .chain(hi - 1..n - 1)
            .map(|i| gap(&rows[i], &rows[i + 1]))
            .collect();
        let out_sum: i128 = out.iter().map(|&g| i128::from(g)).sum();
        out.sort_unstable();
        let mean = mean_gap_micros(self.gap_sum - out_sum, inside as i64);
        let mid = inside / 2;
        let upper = self.kth_without(&out, mid)?;
        let median = if inside % 2 == 1 {
            Some(upper)
        } else {
            let lower = self.kth_without(&out, mid - 1)?;
            i64::try_from((i128::from(lower) + i128::from(upper)) / 2).ok()
        };
        Some((mean, median))
    }
}

/// The gap from `a` to the next row `b` ([`GapStats`]'s: never negative).
///
/// [`GapStats`]: super::gaps::GapStats
fn gap(a: &Entry, b: &Entry) -> i64 {
    b.time.saturating_sub(a.time).max(0)
}

impl Customer {
    fn terms_of(&self, e: &Entry) -> &[u32] {
        let at = e.terms_at as usize;
        self.terms.get(at..at + e.terms_len as usize).unwrap_or(&[])
    }

    /// Appends a row (unsorted until [`Self::settle`]).
    fn push(&mut self, mut e: Entry, term_ids: &[u32]) {
        if self.rows.last().is_some_and(|l| l.key() > e.key()) {
            self.sorted = false;
        }
        if let Some(big) = self.big.get_mut() {
            if self.sorted {
                big.append(self.rows.last(), &e);
            } else {
                self.big.take();
            }
        }
        let (Ok(at), Ok(len)) = (
            u32::try_from(self.terms.len()),
            u16::try_from(term_ids.len()),
        ) else {
            self.exotic = true;
            e.terms_at = 0;
            e.terms_len = 0;
            self.rows.push(e);
            return;
        };
        e.terms_at = at;
        e.terms_len = len;
        self.terms.extend_from_slice(term_ids);
        if let Some(totals) = &mut self.totals {
            self.ranked.take();
            for &t in term_ids {
                *totals.entry(t).or_insert(0) += 1;
            }
        }
        self.rows.push(e);
    }

    /// Sorts the rows, compacts the term ids when mostly dead, and starts keeping term
    /// totals once the customer has `totals_from` rows.
    fn settle(&mut self, totals_from: usize) {
        if !self.sorted {
            // Stable sort: runs (the sorted rows plus a sorted tail) merge in linear time.
            self.rows.sort_by_key(Entry::key);
            self.sorted = true;
        }
        if self.dead_terms > 1024 && self.dead_terms * 2 > self.terms.len() {
            let mut terms = Vec::with_capacity(self.terms.len() - self.dead_terms);
            for e in &mut self.rows {
                let at = e.terms_at as usize;
                let old = self.terms.get(at..at + e.terms_len as usize).unwrap_or(&[]);
                e.terms_at = u32::try_from(terms.len()).unwrap_or(u32::MAX);
                terms.extend_from_slice(old);
            }
            self.terms = terms;
            self.dead_terms = 0;
        }
        if self.totals.is_none() && self.rows.len() >= totals_from {
            let mut totals = HashMap::new();
            for e in &self.rows {
                for &t in self.terms_of(e) {
                    *totals.entry(t).or_insert(0u64) += 1;
                }
            }
            self.totals = Some(totals);
            self.ranked.take();
        }
        if let Some(big) = self.big.get_mut() {
            big.merge_fresh();
        }
    }

    /// [`Big`] of a customer with `from` rows or more (or that has one), built now if
    /// a change dropped it. Rows are settled whenever a reader holds the index.
    fn big(&self, from: usize) -> Option<&Big> {
        if self.big.get().is_none() && self.rows.len() < from {
            return None;
        }
        Some(self.big.get_or_init(|| Big::build(&self.rows)))
    }

    /// Rows with `start <= time < end`, as an index range of the sorted rows.
    fn range(&self, start: i64, end: i64) -> std::ops::Range<usize> {
        // Most customers of a long report lie wholly inside it: their first and last
        // rows answer without a search.
        let lo = match self.rows.first() {
            Some(e) if e.time < start => self.rows.partition_point(|e| e.time < start),
            _ => 0,
        };
        let hi = match self.rows.last() {
            Some(e) if e.time >= end => self.rows.partition_point(|e| e.time < end),
            _ => self.rows.len(),
        };
        lo..hi.max(lo)
    }
}

/// Where each id lives: ids in ascending order for the bulk (a load reads by id), a map
/// for the rest.
#[derive(Debug, Default)]
struct Owners {
    ids: Vec<i64>,
    owners: Vec<i64>,
    extra: HashMap<i64, i64>,
}

impl Owners {
    fn get(&self, id: i64) -> Option<i64> {
        if let Ok(i) = self.ids.binary_search(&id) {
            return Some(self.owners[i]);
        }
        self.extra.get(&id).copied()
    }

    fn set(&mut self, id: i64, owner: i64) {
        if let Ok(i) = self.ids.binary_search(&id) {
            self.owners[i] = owner;
        } else if self.ids.last().is_none_or(|&last| last < id) && self.extra.is_empty() {
            self.ids.push(id);
            self.owners.push(owner);
        } else {
            self.extra.insert(id, owner);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 8 + self.owners.capacity() * 8 + self.extra.capacity() * 24
    }
}

/// Live rows per 15-minute slot (`floor(unix seconds / SLOT_SECS)`, as the
/// `communication_slots` rollup keys them), channel and direction, over every customer.
#[derive(Debug, Default)]
struct Slots {
    counts: BTreeMap<i64, Vec<SlotKind>>,
    /// A row whose channel or direction the layout cannot hold was given: the slots
    /// answer `None` from then on.
    odd: bool,
}

/// One channel and direction of a slot.
#[derive(Debug, Clone, Copy)]
struct SlotKind {
    channel: u8,
    direction: u8,
    count: u32,
}

/// The slot of an instant in microseconds.
fn slot_of(micros: i64) -> i64 {
    micros.div_euclid(1_000_000).div_euclid(SLOT_SECS)
}

impl Slots {
    fn add(&mut self, time: i64, channel: u8, direction: u8) {
        let kinds = self.counts.entry(slot_of(time)).or_default();
        match kinds
            .iter_mut()
            .find(|k| (k.channel, k.direction) == (channel, direction))
        {
            Some(k) => k.count = k.count.saturating_add(1),
            None => kinds.push(SlotKind {
                channel,
                direction,
                count: 1,
            }),
        }
    }

    fn remove(&mut self, time: i64, channel: u8, direction: u8) {
        let slot = slot_of(time);
        let Some(kinds) = self.counts.get_mut(&slot) else {
            return;
        };
        if let Some(i) = kinds
            .iter()
            .position(|k| (k.channel, k.direction) == (channel, direction))
        {
            kinds[i].count -= 1;
            if kinds[i].count == 0 {
                kinds.swap_remove(i);
            }
        }
        if kinds.is_empty() {
            self.counts.remove(&slot);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.counts
            .values()
            .map(|k| 64 + k.capacity() * std::mem::size_of::<SlotKind>())
            .sum()
    }
}

/// What a one-customer frequency report asks.
#[derive(Debug, Clone, Default)]
pub struct FrequencyAsk {
    /// The customer.
    pub customer: i64,
    /// Channels; empty for all.
    pub channels: Vec<i32>,
    /// Direction; `None` for both.
    pub direction: Option<i32>,
    /// The buckets' UTC bounds `[start, end)` in microseconds, in order and contiguous;
    /// together they are the report's range.
    pub buckets: Vec<(i64, i64)>,
    /// Whether to collect the gaps (mean and median).
    pub gaps: bool,
}

/// The index's answer to a [`FrequencyAsk`].
#[derive(Debug, Clone, Default)]
pub struct FrequencyFigures {
    /// Per bucket, `(channel, count)` in channel order, channels without a row left out.
    pub buckets: Vec<Vec<(i32, i64)>>,
    /// Per channel over the range, in channel order.
    pub channels: Vec<(i32, i64)>,
    /// Rows in scope.
    pub total: i64,
    /// Earliest row in scope, microseconds.
    pub first: Option<i64>,
    /// Latest row in scope, microseconds.
    pub last: Option<i64>,
    /// Mean gap between consecutive rows in scope, µs (when asked and defined).
    pub mean_gap_us: Option<i64>,
    /// Median gap, µs, exact ([`super::gaps::GapStats`]'s rule; when asked and defined).
    pub median_gap_us: Option<i64>,
}

/// The communication figures of customer insights.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsightFigures {
    /// `(channel, count, summed call duration µs)` in channel order.
    pub channels: Vec<(i32, i64, i64)>,
    /// Rows in range.
    pub total: i64,
    /// Earliest row, microseconds.
    pub first: Option<i64>,
    /// Latest row, microseconds.
    pub last: Option<i64>,
    /// Mean gap, microseconds.
    pub mean_gap_us: Option<i64>,
    /// Top terms: count descending, ties by term.
    pub top_terms: Vec<(String, u64)>,
    /// Per UTC calendar month (`rollup::month_of`) holding a row in range, ascending,
    /// the sentiment of those rows; `None` when a row in range is not scored yet (the
    /// caller reads the database).
    pub sentiment_months: Option<Vec<(i64, Tally)>>,
}

/// Every customer's rows over one range, as a report on all customers needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanFigures {
    /// Customers with a row in range.
    pub customers: i64,
    /// Rows in range.
    pub total: i64,
    /// Earliest row in range, microseconds.
    pub first: Option<i64>,
    /// Latest row in range, microseconds.
    pub last: Option<i64>,
    /// The most contacted customers, most rows first, ties by id:
    /// `(customer, rows in range, latest of them in microseconds)`.
    pub top: Vec<(i64, i64, i64)>,
}

/// What a report on every customer asks (see [`ActivityIndex::all_customers`]).
#[derive(Debug, Clone, Default)]
pub struct AllCustomersAsk {
    /// For the customer figures: `[start, end)` in microseconds and the top customers
    /// wanted ([`ActivityIndex::span`]); `None` for none.
    pub span: Option<((i64, i64), usize)>,
    /// For the buckets; `None` for none.
    pub slots: Option<SlotAsk>,
}

/// Bucket counts asked of [`ActivityIndex::slot_buckets`].
#[derive(Debug, Clone, Default)]
pub struct SlotAsk {
    /// The whole slots counted, `[lo, hi)`.
    pub units: (i64, i64),
    /// The buckets' UTC bounds `[start, end)` in microseconds, in order and contiguous;
    /// no slot of `units` straddles a bound.
    pub buckets: Vec<(i64, i64)>,
    /// Channels; empty for all.
    pub channels: Vec<i32>,
    /// Direction; `None` for both.
    pub direction: Option<i32>,
}

/// The answer to an [`AllCustomersAsk`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllCustomersFigures {
    /// The customer figures, when asked.
    pub span: Option<SpanFigures>,
    /// Per bucket, `(channel, count)` of its whole slots in channel order, when asked
    /// and countable.
    pub slots: Option<Vec<Vec<(i32, i64)>>>,
}

/// The index; see the module header.
#[derive(Debug)]
pub struct ActivityIndex {
    customers: HashMap<i64, Customer>,
    owners: Owners,
    vocabulary: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    live_rows: usize,
    slots: Slots,
    /// [`TERM_TOTALS_FROM`], smaller in tests.
    term_totals_from: usize,
}

impl Default for ActivityIndex {
    fn default() -> Self {
        ActivityIndex {
            customers: HashMap::new(),
            owners: Owners::default(),
            vocabulary: HashMap::new(),
            names: Vec::new(),
            live_rows: 0,
            slots: Slots::default(),
            term_totals_from: TERM_TOTALS_FROM,
        }
    }
}

impl ActivityIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.live_rows
    }

    /// Whether no row is live.
    pub fn is_empty(&self) -> bool {
        self.live_rows == 0
    }

    /// Approximate heap use, in bytes.
    pub fn heap_bytes(&self) -> usize {
        let customers: usize = self
            .customers
            .values()
            .map(|c| {
                c.rows.capacity() * std::mem::size_of::<Entry>()
                    + c.terms.capacity() * 4
                    + c.totals.as_ref().map_or(0, |t| t.capacity() * 16)
                    + c.ranked.get().map_or(0, |r| r.capacity() * 16)
                    + c.big.get().map_or(0, Big::heap_bytes)
                    + 96
            })
            .sum();
        let words: usize = self.names.iter().map(|n| n.len() * 2 + 40).sum();
        customers + self.owners.heap_bytes() + words + self.slots.heap_bytes()
    }

    /// Whether row `id` was given (a removed row stays known: ids are never reused).
    pub fn contains(&self, id: i64) -> bool {
        self.owners.get(id).is_some()
    }

    /// Adds the rows whose ids are new, tokenizing them in up to `threads` threads
    /// first; how many were added.
    pub fn insert_all(&mut self, rows: &[ActivityRow<'_>], threads: usize) -> usize {
        let fresh: Vec<&ActivityRow<'_>> = rows.iter().filter(|r| !self.contains(r.id)).collect();
        let prepare = |part: &[&ActivityRow<'_>]| -> Vec<Vec<String>> {
            part.iter().map(|r| terms(r.content)).collect()
        };
        let threads = threads.clamp(1, 8);
        let prepared: Vec<Vec<String>> = if threads == 1 || fresh.len() < 256 {
            prepare(&fresh)
        } else {
            let per = fresh.len().div_ceil(threads);
            std::thread::scope(|s| {
                let parts: Vec<_> = fresh
                    .chunks(per)
                    .map(|p| s.spawn(move || prepare(p)))
                    .collect();
                parts
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            })
        };
        let mut touched = Vec::new();
        let mut added = 0;
        let mut ids = Vec::new();
        for (row, words) in fresh.iter().zip(prepared) {
            // A row given twice in `rows` is added once.
            if self.contains(row.id) {
                continue;
            }
            ids.clear();
            ids.extend(words.into_iter().map(|w| self.intern(w)));
            self.push(row, &ids);
            touched.push(row.customer_id);
            added += 1;
        }
        touched.sort_unstable();
        touched.dedup();
        for c in touched {
            if let Some(customer) = self.customers.get_mut(&c) {
                customer.settle(self.term_totals_from);
            }
        }
        added
    }

    fn push(&mut self, row: &ActivityRow<'_>, term_ids: &[u32]) {
        let customer = self
            .customers
            .entry(row.customer_id)
            .or_insert_with(|| Customer {
                sorted: true,
                ..Customer::default()
            });
        let (channel, direction) = match (u8::try_from(row.channel), u8::try_from(row.direction)) {
            (Ok(c), Ok(d)) => {
                self.slots.add(row.occur_micros, c, d);
                (c, d)
            }
            _ => {
                customer.exotic = true;
                self.slots.odd = true;
                (0, 0)
            }
        };
        let duration_score = Entry::pack(row.call_duration_us.unwrap_or(0), row.sentiment)
            .unwrap_or_else(|| {
                customer.exotic = true;
                0
            });
        customer.push(
            Entry {
                time: row.occur_micros,
                id: row.id,
                duration_score,
                terms_at: 0,
                terms_len: 0,
                channel,
                direction,
            },
            term_ids,
        );
        self.owners.set(row.id, row.customer_id);
        self.live_rows += 1;
    }

    fn intern(&mut self, term: String) -> u32 {
        if let Some(&id) = self.vocabulary.get(term.as_str()) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let name: Box<str> = term.into_boxed_str();
        self.names.push(name.clone());
        self.vocabulary.insert(name, id);
        id
    }

    /// Removes the rows with these ids; how many were live.
    pub fn remove_all(&mut self, ids: &[i64]) -> usize {
        let mut by_customer: HashMap<i64, Vec<i64>> = HashMap::new();
        for &id in ids {
            match self.owners.get(id) {
                Some(owner) if owner != REMOVED => {
                    by_customer.entry(owner).or_default().push(id);
                    self.owners.set(id, REMOVED);
                }
                _ => {}
            }
        }
        let mut removed = 0;
        let slots = &mut self.slots;
        for (owner, mut gone) in by_customer {
            let Some(customer) = self.customers.get_mut(&owner) else {
                continue;
            };
            gone.sort_unstable();
            let before = customer.rows.len();
            let mut dead_terms = 0;
            let mut dead: Vec<(u32, u16)> = Vec::new();
            customer.rows.retain(|e| {
                let keep = gone.binary_search(&e.id).is_err();
                if !keep {
                    dead_terms += e.terms_len as usize;
                    dead.push((e.terms_at, e.terms_len));
                    slots.remove(e.time, e.channel, e.direction);
                }
                keep
            });
            if let Some(totals) = &mut customer.totals {
                customer.ranked.take();
                for (at, len) in dead {
                    let at = at as usize;
                    for t in customer.terms.get(at..at + len as usize).unwrap_or(&[]) {
                        if let Some(n) = totals.get_mut(t) {
                            *n -= 1;
                            if *n == 0 {
                                totals.remove(t);
                            }
                        }
                    }
                }
            }
            customer.dead_terms += dead_terms;
            customer.big.take();
            removed += before - customer.rows.len();
            if customer.rows.is_empty() && !customer.exotic {
                self.customers.remove(&owner);
            } else {
                customer.settle(self.term_totals_from);
            }
        }
        self.live_rows -= removed;
        removed
    }

    /// Gives every row of the `merged` customers to `survivor` (a customer merge moved
    /// their communications); how many rows changed.
    pub fn reassign_customers(&mut self, merged: &[i64], survivor: i64) -> usize {
        let mut moved = 0;
        for &m in merged {
            if m == survivor {
                continue;
            }
            let Some(from) = self.customers.remove(&m) else {
                continue;
            };
            for e in &from.rows {
                self.owners.set(e.id, survivor);
            }
            let to = self.customers.entry(survivor).or_insert_with(|| Customer {
                sorted: true,
                ..Customer::default()
            });
            to.exotic |= from.exotic;
            for e in &from.rows {
                to.push(*e, from.terms_of(e));
            }
            moved += from.rows.len();
            to.settle(self.term_totals_from);
        }
        moved
    }

    /// Every customer's rows in `[start, end)` (microseconds), every channel and
    /// direction: how many customers and rows, the first and last time, and the `top_n`
    /// customers with the most rows. Two binary searches per customer, whatever its rows
    /// (a customer with a row the layout cannot hold still has its times right).
    pub fn span(&self, start: i64, end: i64, top_n: usize) -> SpanFigures {
        let mut out = SpanFigures::default();
        // The weakest of the best `top_n` on top: fewest rows, then the highest id.
        let mut top: BinaryHeap<Reverse<(i64, Reverse<i64>, i64)>> = BinaryHeap::new();
        for (&id, customer) in &self.customers {
            let range = customer.range(start, end);
            let n = range.len() as i64;
            let (Some(first), Some(last)) = (
                customer.rows.get(range.start),
                range.end.checked_sub(1).and_then(|i| customer.rows.get(i)),
            ) else {
                continue;
            };
            if n == 0 {
                continue;
            }
            out.customers += 1;
            out.total += n;
            out.first = Some(out.first.map_or(first.time, |t| t.min(first.time)));
            out.last = Some(out.last.map_or(last.time, |t| t.max(last.time)));
            if top_n > 0 {
                let entry = Reverse((n, Reverse(id), last.time));
                if top.len() < top_n {
                    top.push(entry);
                } else if top.peek().is_some_and(|weakest| entry < *weakest) {
                    top.pop();
                    top.push(entry);
                }
            }
        }
        out.top = top
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse((n, Reverse(id), last))| (id, n, last))
            .collect();
        out
    }

    /// What a report on every customer asks, in one read.
    pub fn all_customers(&self, ask: &AllCustomersAsk) -> AllCustomersFigures {
        AllCustomersFigures {
            span: ask
                .span
                .map(|((start, end), top_n)| self.span(start, end, top_n)),
            slots: ask.slots.as_ref().and_then(|a| self.slot_buckets(a)),
        }
    }

    /// Every customer's rows of the whole slots asked, per bucket and channel, of the
    /// channels and direction asked: each slot counts in the bucket its start lies in.
    /// `None` when a row's channel or direction did not fit the layout (the caller reads
    /// the rollups).
    pub fn slot_buckets(&self, ask: &SlotAsk) -> Option<Vec<Vec<(i32, i64)>>> {
        if self.slots.odd {
            return None;
        }
        let wanted = kinds(&ask.channels, ask.direction);
        let mut out = vec![Vec::new(); ask.buckets.len()];
        let (lo, hi) = ask.units;
        if lo >= hi {
            return Some(out);
        }
        let mut per_channel = [0i64; 256];
        let mut seen: Vec<u8> = Vec::new();
        let mut b = 0;
        for (&slot, slot_kinds) in self.slots.counts.range(lo..hi) {
            let t = slot.saturating_mul(SLOT_SECS).saturating_mul(1_000_000);
            if ask.buckets.get(b).is_some_and(|&(_, end)| t >= end) {
                if let Some(o) = out.get_mut(b) {
                    *o = drain_channels(&mut per_channel, &mut seen);
                }
                while ask.buckets.get(b).is_some_and(|&(_, end)| t >= end) {
                    b += 1;
                }
            }
            let Some(&(start, _)) = ask.buckets.get(b) else {
                break;
            };
            if t < start {
                continue;
            }
            for k in slot_kinds {
                if wanted.admits_kind(k.channel, k.direction) {
                    let n = &mut per_channel[k.channel as usize];
                    if *n == 0 {
                        seen.push(k.channel);
                    }
                    *n += i64::from(k.count);
                }
            }
        }
        if let Some(o) = out.get_mut(b) {
            *o = drain_channels(&mut per_channel, &mut seen);
        }
        Some(out)
    }

    /// One customer's frequency figures; `None` when the customer is exotic (see the
    /// module header).
    pub fn frequency(&self, ask: &FrequencyAsk) -> Option<FrequencyFigures> {
        let (Some(&(start, _)), Some(&(_, end))) = (ask.buckets.first(), ask.buckets.last()) else {
            return Some(empty_frequency(ask));
        };
        let Some(customer) = self.customers.get(&ask.customer) else {
            return Some(empty_frequency(ask));
        };
        if customer.exotic {
            return None;
        }
        let wanted = kinds(&ask.channels, ask.direction);
        if let Some(big) = customer.big(self.term_totals_from) {
            let range = customer.range(start, end);
            // Walking a few rows per bucket costs less than the binary searches.
            let searches = ask.buckets.len() * big.kinds.len().max(1) * 2;
            if range.len() > searches {
                let limit = range.len() / 4;
                if let Some(f) = frequency_fast(customer, big, ask, &wanted, limit) {
                    return Some(f);
                }
            }
        }
        Some(frequency_walk(customer, ask, &wanted))
    }

    /// One customer's communication figures over `[start, end)` (microseconds) with its
    /// `top_terms` most frequent terms; `None` when the customer is exotic or a call-time
    /// sum passes 64 bits.
    pub fn insights(
        &self,
        customer: i64,
        start: i64,
        end: i64,
        top_terms: usize,
    ) -> Option<InsightFigures> {
        self.insights_by(customer, start, end, top_terms, false)
    }

    /// [`Self::insights`]; with `totals`, a big customer's figures come from its totals
    /// less the rows outside the range whatever the range (tests compare both ways).
    fn insights_by(
        &self,
        customer: i64,
        start: i64,
        end: i64,
        top_terms: usize,
        totals: bool,
    ) -> Option<InsightFigures> {
        let Some(c) = self.customers.get(&customer) else {
            return Some(InsightFigures {
                sentiment_months: Some(Vec::new()),
                ..InsightFigures::default()
            });
        };
        if c.exotic {
            return None;
        }
        let range = c.range(start, end);
        let rows = &c.rows[range.clone()];
        let mut counts = [0i64; 256];
        let mut durations = [0i128; 256];
        match c.big(self.term_totals_from) {
            // Most rows in range: the totals less the rows outside.
            Some(big) if totals || c.rows.len() - rows.len() < rows.len() => {
                counts.copy_from_slice(&big.counts);
                durations.copy_from_slice(&big.durations);
                for e in c.rows[..range.start].iter().chain(&c.rows[range.end..]) {
                    counts[e.channel as usize] -= 1;
                    durations[e.channel as usize] -= i128::from(e.duration());
                }
            }
            _ => {
                for e in rows {
                    counts[e.channel as usize] += 1;
                    durations[e.channel as usize] += i128::from(e.duration());
                }
            }
        }
        let mut channels = Vec::new();
        for ch in 0..256 {
            if counts[ch] > 0 {
                channels.push((ch as i32, counts[ch], i64::try_from(durations[ch]).ok()?));
            }
        }
        let total = rows.len() as i64;
        let (first, last) = (rows.first().map(|e| e.time), rows.last().map(|e| e.time));
        let mean_gap_us = match (first, last) {
            (Some(f), Some(l)) => mean_gap_micros(i128::from(l) - i128::from(f), total - 1),
            _ => None,
        };
        Some(InsightFigures {
            channels,
            total,
            first,
            last,
            mean_gap_us,
            top_terms: self.top_terms(c, range.clone(), top_terms, totals),
            sentiment_months: sentiment_months(
                c,
                c.big(self.term_totals_from),
                (start, end),
                range,
            ),
        })
    }

    /// The `n` most frequent terms of the rows `range` of `c` (from the totals less
    /// the rows outside when most rows are inside, or always with `totals`).
    fn top_terms(
        &self,
        c: &Customer,
        range: std::ops::Range<usize>,
        n: usize,
        totals: bool,
    ) -> Vec<(String, u64)> {
        if n == 0 || range.is_empty() {
            return Vec::new();
        }
        let inside = range.len();
        let counted: Vec<(u32, u64)> = match &c.totals {
            Some(all) if totals || inside * 2 > c.rows.len() => {
                let mut out: HashMap<u32, u64> = HashMap::new();
                for e in c.rows[..range.start].iter().chain(&c.rows[range.end..]) {
                    for &t in c.terms_of(e) {
                        *out.entry(t).or_insert(0) += 1;
                    }
                }
                // Only the terms of the rows outside go down: the first n + |out| by
                // total hold the first n of the others, which keep their totals.
                let ranked = c.ranked.get_or_init(|| {
                    let mut ranked: Vec<(u32, u64)> = all.iter().map(|(&t, &k)| (t, k)).collect();
                    ranked.sort_unstable_by(|a, b| {
                        b.1.cmp(&a.1)
                            .then_with(|| self.name(a.0).cmp(self.name(b.0)))
                    });
                    ranked
                });
                let mut picked: Vec<(u32, u64)> =
                    ranked.iter().take(n + out.len()).copied().collect();
                picked.retain(|(t, _)| !out.contains_key(t));
                picked.extend(
                    out.iter()
                        .map(|(&t, &k)| (t, all.get(&t).copied().unwrap_or(0).saturating_sub(k))),
                );
                return self
                    .best(picked.into_iter(), n)
                    .into_iter()
                    .map(|(t, k)| (self.name(t).to_string(), k))
                    .collect();
            }
            _ if inside >= 4096 => {
                let mut dense = vec![0u64; self.names.len()];
                for e in &c.rows[range] {
                    for &t in c.terms_of(e) {
                        if let Some(k) = dense.get_mut(t as usize) {
                            *k += 1;
                        }
                    }
                }
                dense
                    .into_iter()
                    .enumerate()
                    .filter(|&(_, k)| k > 0)
                    .map(|(t, k)| (t as u32, k))
                    .collect()
            }
            _ => {
                let mut counts: HashMap<u32, u64> = HashMap::new();
                for e in &c.rows[range] {
                    for &t in c.terms_of(e) {
                        *counts.entry(t).or_insert(0) += 1;
                    }
                }
                counts.into_iter().collect()
            }
        };
        self.rank(counted, n)
    }

    /// The `n` first of `counted` in [`Self::rank`]'s order, keeping only `n` at a time.
    fn best(&self, counted: impl Iterator<Item = (u32, u64)>, n: usize) -> Vec<(u32, u64)> {
        let mut heap: BinaryHeap<Worse<'_>> = BinaryHeap::with_capacity(n + 1);
        for (id, count) in counted {
            if count == 0 {
                continue;
            }
            if heap.len() == n && heap.peek().is_some_and(|w| w.count > count) {
                continue; // the common case, without a name lookup
            }
            let term = Worse {
                count,
                name: self.name(id),
                id,
            };
            if heap.len() < n {
                heap.push(term);
            } else if heap.peek().is_some_and(|w| term < *w) {
                heap.pop();
                heap.push(term);
            }
        }
        heap.into_sorted_vec()
            .into_iter()
            .map(|w| (w.id, w.count))
            .collect()
    }

    /// Term `t`'s text.
    fn name(&self, t: u32) -> &str {
        self.names.get(t as usize).map_or("", |s| s)
    }

    /// The `n` first of `counted` by count descending, ties by term ascending
    /// ([`super::terms::TermCounter::top`]'s order).
    fn rank(&self, mut counted: Vec<(u32, u64)>, n: usize) -> Vec<(String, u64)> {
        let name = |t: u32| self.names.get(t as usize).map_or("", |s| s);
        let order =
            |a: &(u32, u64), b: &(u32, u64)| b.1.cmp(&a.1).then_with(|| name(a.0).cmp(name(b.0)));
        if n < counted.len() {
            counted.select_nth_unstable_by(n - 1, order);
            counted.truncate(n);
        }
        counted.sort_unstable_by(order);
        counted
            .into_iter()
            .map(|(t, k)| (name(t).to_string(), k))
            .collect()
    }
}

/// A report with no row.
/// The channels counted in `per_channel` (those in `seen`), in channel order, leaving
/// both empty.
fn drain_channels(per_channel: &mut [i64; 256], seen: &mut Vec<u8>) -> Vec<(i32, i64)> {
    seen.sort_unstable();
    seen.drain(..)
        .map(|c| (i32::from(c), std::mem::take(&mut per_channel[c as usize])))
        .collect()
}

fn empty_frequency(ask: &FrequencyAsk) -> FrequencyFigures {
    FrequencyFigures {
        buckets: vec![Vec::new(); ask.buckets.len()],
        ..FrequencyFigures::default()
    }
}

/// [`ActivityIndex::frequency`] by walking every row in range.
fn frequency_walk(customer: &Customer, ask: &FrequencyAsk, wanted: &Kinds) -> FrequencyFigures {
    let mut out = empty_frequency(ask);
    let (Some(&(start, _)), Some(&(_, end))) = (ask.buckets.first(), ask.buckets.last()) else {
        return out;
    };
    let mut per_channel = [0i64; 256];
    let mut in_bucket = [0i64; 256];
    let mut touched: Vec<u8> = Vec::new();
    let mut b = 0usize;
    let mut gaps: Vec<i64> = Vec::new();
    let mut sum: i128 = 0;
    for e in &customer.rows[customer.range(start, end)] {
        if !wanted.admits(e) {
            continue;
        }
        while ask
            .buckets
            .get(b)
            .is_some_and(|&(_, bucket_end)| bucket_end <= e.time)
        {
            if let Some(into) = out.buckets.get_mut(b) {
                into.extend(drain_channels(&mut in_bucket, &mut touched));
            }
            b += 1;
        }
        if b >= ask.buckets.len() {
            break;
        }
        if in_bucket[e.channel as usize] == 0 {
            touched.push(e.channel);
        }
        in_bucket[e.channel as usize] += 1;
        per_channel[e.channel as usize] += 1;
        out.total += 1;
        if let (true, Some(last)) = (ask.gaps, out.last) {
            // Sorted by time: never negative.
            let gap = e.time.saturating_sub(last).max(0);
            gaps.push(gap);
            sum += i128::from(gap);
        }
        out.first = out.first.or(Some(e.time));
        out.last = Some(e.time);
    }
    if let Some(into) = out.buckets.get_mut(b) {
        into.extend(drain_channels(&mut in_bucket, &mut touched));
    }
    if !gaps.is_empty() {
        out.mean_gap_us = mean_gap_micros(sum, gaps.len() as i64);
        out.median_gap_us = median_in_place(&mut gaps);
    }
    out.channels = (0..256)
        .filter(|&c| per_channel[c] > 0)
        .map(|c| (c as i32, per_channel[c]))
        .collect();
    out
}

/// The position of the first of the sorted `times` at or past `bound`, at or after
/// `from`, searched outwards from `from + hint` (where the caller expects it: the rows
/// the previous bucket held): probes `hint / 16` rows apart, doubling, on the side the
/// first probe points to, then a binary search in the last window. Consecutive bucket
/// bounds of a steady customer cost a probe or two in one or two cache lines, where a
/// search from `from` itself walks several lines and a binary search over the tail
/// misses the cache at half a million rows. Any `hint` gives the same answer.
fn gallop(times: &[i64], from: usize, bound: i64, hint: usize) -> usize {
    let tail = times.get(from..).unwrap_or(&[]);
    let n = tail.len();
    if n == 0 {
        return from;
    }
    // The answer a is the first i with tail[i] >= bound (n if none); the search keeps
    // lo <= a <= hi and ends with a binary search of tail[lo..hi].
    let first = hint.clamp(1, n) - 1;
    let mut step = (hint / 16).max(1);
    let (mut lo, mut hi);
    if tail[first] < bound {
        (lo, hi) = (first + 1, first + 1);
        while hi < n && tail[hi - 1] < bound {
            lo = hi;
            hi = (hi + step).min(n);
            step *= 2;
        }
    } else {
        (lo, hi) = (first, first + 1);
        while lo > 0 && tail[lo - 1] >= bound {
            hi = lo;
            lo = lo.saturating_sub(step);
            step *= 2;
        }
    }
    from + lo + tail[lo..hi].partition_point(|&t| t < bound)
}

/// [`ActivityIndex::frequency`] from a big customer's per-kind times: two binary
/// searches per kind and bucket bound, the gaps by [`Big::gaps_inside`] (with at most
/// `limit` gaps outside the range). `None` when gaps are asked of a filtered report or
/// of a range with more gaps outside (the walk answers those).
fn frequency_fast(
    customer: &Customer,
    big: &Big,
    ask: &FrequencyAsk,
    wanted: &Kinds,
    limit: usize,
) -> Option<FrequencyFigures> {
    let mut out = empty_frequency(ask);
    let (Some(&(start, _)), Some(&(_, end))) = (ask.buckets.first(), ask.buckets.last()) else {
        return Some(out);
    };
    let chosen: Vec<usize> = (0..big.kinds.len())
        .filter(|&k| {
            let (channel, direction) = big.kinds[k];
            wanted.admits_kind(channel, direction)
        })
        .collect();
    let whole = chosen.len() == big.kinds.len();
    let gaps = if ask.gaps {
        if !whole {
            return None;
        }
        let range = customer.range(start, end);
        let (lo, hi) = (range.start, range.end);
        let inside = hi.saturating_sub(lo + 1);
        let outside = customer.rows.len().saturating_sub(1) - inside;
        if outside > limit {
            return None;
        }
        Some(big.gaps_inside(&customer.rows, lo, hi)?)
    } else {
        None
    };
    // Bucket b holds the rows in [bounds[b], bounds[b + 1]): the walk's rule (the first
    // bucket whose end is past the row), clamped to the report's range.
    let top = end.max(start);
    let mut bounds = Vec::with_capacity(ask.buckets.len() + 1);
    bounds.push(start);
    for &(_, bucket_end) in &ask.buckets {
        let prev = bounds.last().copied().unwrap_or(start);
        bounds.push(bucket_end.clamp(prev, top));
    }
    // Per chosen kind, the position of each bound in its times, found bound by bound
    // across the kinds: their searches do not depend on each other, so the cache misses
    // of a key account's arrays overlap instead of following one another.
    let mut at: Vec<Vec<usize>> = vec![Vec::with_capacity(bounds.len()); chosen.len()];
    let mut searches: Vec<(usize, usize)> = vec![(0, 1); chosen.len()];
    for &bound in &bounds {
        for ((&k, (from, hint)), positions) in chosen.iter().zip(&mut searches).zip(&mut at) {
            let next = gallop(&big.times[k], *from, bound, *hint);
            (*from, *hint) = (next, next - *from);
            positions.push(next);
        }
    }
    let mut per_channel = [0i64; 256];
    for (b, into) in out.buckets.iter_mut().enumerate() {
        // Kinds are in channel order: one channel's kinds are adjacent.
        let mut current: Option<(u8, i64)> = None;
        for (i, &k) in chosen.iter().enumerate() {
            let channel = big.kinds[k].0;
            let n = (at[i][b + 1] - at[i][b]) as i64;
            match &mut current {
                Some((c, sum)) if *c == channel => *sum += n,
                _ => {
                    if let Some((c, sum)) = current.take().filter(|&(_, sum)| sum > 0) {
                        into.push((i32::from(c), sum));
                    }
                    current = Some((channel, n));
                }
            }
            per_channel[channel as usize] += n;
        }
        if let Some((c, sum)) = current.filter(|&(_, sum)| sum > 0) {
            into.push((i32::from(c), sum));
        }
    }
    out.channels = (0..256)
        .filter(|&c| per_channel[c] > 0)
        .map(|c| (c as i32, per_channel[c]))
        .collect();
    out.total = per_channel.iter().sum();
    let last_bound = ask.buckets.len();
    for (i, &k) in chosen.iter().enumerate() {
        let times = &big.times[k];
        let (lo, hi) = (at[i][0], at[i][last_bound]);
        if lo < hi {
            out.first = Some(out.first.map_or(times[lo], |f: i64| f.min(times[lo])));
            out.last = Some(
                out.last
                    .map_or(times[hi - 1], |l: i64| l.max(times[hi - 1])),
            );
        }
    }
    if let Some((mean, median)) = gaps {
        out.mean_gap_us = mean;
        out.median_gap_us = median;
    }
    Some(out)
}

/// The sentiment per UTC calendar month holding one of `c`'s rows `range` (those with
/// `start <= time < end`), in month order; `None` when one of them is not scored yet.
/// A customer with a [`Big`] takes its whole months from the Big's monthly tallies, and
/// each edge month from the fewer of its rows inside the range or outside it; any other
/// walks its rows.
fn sentiment_months(
    c: &Customer,
    big: Option<&Big>,
    (start, end): (i64, i64),
    range: std::ops::Range<usize>,
) -> Option<Vec<(i64, Tally)>> {
    let rows = &c.rows[range];
    let (Some(big), Some(first), Some(last)) = (big, rows.first(), rows.last()) else {
        return walk_months(rows);
    };
    let mut cursor = MonthCursor::default();
    let (lo, hi) = (cursor.month(first.time)?, cursor.month(last.time)?);
    let mut months = Vec::new();
    for (&m, all) in big.months.range(lo..=hi) {
        let from = month_micros(m);
        let to = Some(month_micros(m + 1))
            .filter(|&t| t > from)
            .unwrap_or(i64::MAX);
        let tally = if start <= from && to <= end {
            all.tally()?
        } else {
            let inside = c.range(start.max(from), end.min(to));
            if inside.is_empty() {
                continue;
            }
            if inside.len() as i64 * 2 <= all.rows() {
                walk_tally(&c.rows[inside])?
            } else {
                let mut outside = RowsSentiment::default();
                let before = c.range(from, start.max(from));
                let after = c.range(end.min(to), to);
                for e in c.rows[before].iter().chain(&c.rows[after]) {
                    outside.add(e);
                }
                if outside.unscored != all.unscored {
                    return None;
                }
                let mut tally = all.scored;
                tally.add(outside.scored.negated());
                tally
            }
        };
        months.push((m, tally));
    }
    Some(months)
}

/// The sentiment of `rows` (sorted by time) per UTC calendar month holding one, in month
/// order; `None` at a row not scored yet.
fn walk_months(rows: &[Entry]) -> Option<Vec<(i64, Tally)>> {
    let mut months: Vec<(i64, Tally)> = Vec::new();
    let mut cursor = MonthCursor::default();
    for e in rows {
        let score = e.score()?;
        let month = cursor.month(e.time)?;
        if months.last().is_none_or(|&(m, _)| m != month) {
            months.push((month, Tally::default()));
        }
        months.last_mut()?.1.add(Tally::of_row(Some(score), 1));
    }
    Some(months)
}

/// The sentiment of `rows`; `None` when one is not scored yet.
fn walk_tally(rows: &[Entry]) -> Option<Tally> {
    let mut sentiment = RowsSentiment::default();
    for e in rows {
        sentiment.add(e);
    }
    sentiment.tally()
}

/// A ranked term, ordered worst last: fewer rows, then the later name.
#[derive(PartialEq, Eq)]
struct Worse<'a> {
    count: u64,
    name: &'a str,
    id: u32,
}

impl Ord for Worse<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .count
            .cmp(&self.count)
            .then_with(|| self.name.cmp(other.name))
    }
}

impl PartialOrd for Worse<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Which channels and directions a frequency report admits.
struct Kinds {
    channels: [bool; 256],
    direction: Option<u8>,
    /// A filter value no row can have (past 255): nothing is admitted.
    none: bool,
}

fn kinds(channels: &[i32], direction: Option<i32>) -> Kinds {
    let mut k = Kinds {
        channels: [channels.is_empty(); 256],
        direction: None,
        none: false,
    };
    for &c in channels {
        if let Ok(c) = u8::try_from(c) {
            k.channels[c as usize] = true;
        }
    }
    if let Some(d) = direction {
        match u8::try_from(d) {
            Ok(d) => k.direction = Some(d),
            Err(_) => k.none = true,
        }
    }
    k
}

impl Kinds {
    fn admits(&self, e: &Entry) -> bool {
        self.admits_kind(e.channel, e.direction)
    }

    fn admits_kind(&self, channel: u8, direction: u8) -> bool {
        !self.none
            && self.channels[channel as usize]
            && self.direction.is_none_or(|d| d == direction)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::DateTime;
    use proptest::prelude::*;

    use super::*;
    use crate::analytics::buckets::{BucketPlan, Granularity};
    use crate::analytics::gaps::GapStats;
    use crate::analytics::terms::TermCounter;

    #[derive(Debug, Clone)]
    struct Row {
        id: i64,
        customer: i64,
        channel: i32,
        direction: i32,
        micros: i64,
        duration: Option<i64>,
        content: String,
        score: Option<i16>,
    }

    const WORDS: &[&str] = &[
        "refund",
        "Refund",
        "invoice",
        "delivery",
        "late",
        "退款",
        "请尽快处理",
        "配送",
        "订单",
        "order",
        "thanks",
        "the",
        "don't",
        "Ünïcode",
        "客服",
        "发票",
        "a1",
        "x",
    ];

    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200_000_000;
    const DAY: i64 = 86_400_000_000;

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    /// Rows over about 40 days of 2024, a few customers, some at the very same time.
    fn rows(rng: &mut Rng, first_id: i64, n: usize, customers: u64) -> Vec<Row> {
        (0..n as i64)
            .map(|i| {
                let words = rng.below(6);
                let content = (0..words)
                    .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ");
                let channel = 1 + rng.below(4) as i32;
                Row {
                    id: first_id + i,
                    customer: 1 + rng.below(customers) as i64,
                    channel,
                    direction: 1 + rng.below(2) as i32,
                    // Whole seconds, a tenth on a few shared instants, some sub-second.
                    micros: match rng.below(10) {
                        0 => T0 + 10 * DAY,
                        1 => T0 + rng.below(40 * 86_400_000_000) as i64,
                        _ => T0 + rng.below(40 * 86_400) as i64 * 1_000_000,
                    },
                    duration: (channel == 1).then(|| rng.below(3_600_000_000) as i64),
                    content,
                    // Now and then a row not scored yet.
                    score: (rng.below(300) != 0).then(|| rng.below(2001) as i16 - 1000),
                }
            })
            .collect()
    }

    fn activity(r: &Row) -> ActivityRow<'_> {
        ActivityRow {
            id: r.id,
            customer_id: r.customer,
            channel: r.channel,
            direction: r.direction,
            occur_micros: r.micros,
            call_duration_us: r.duration,
            content: &r.content,
            sentiment: r.score,
        }
    }

    /// The rows of `customer` in `[start, end)` passing the filters, in `(time, id)`
    /// order, as the database path reads them.
    fn scope<'a>(
        live: &'a [Row],
        customer: i64,
        (start, end): (i64, i64),
        channels: &[i32],
        direction: Option<i32>,
    ) -> Vec<&'a Row> {
        let mut out: Vec<&Row> = live
            .iter()
            .filter(|r| {
                r.customer == customer
                    && r.micros >= start
                    && r.micros < end
                    && (channels.is_empty() || channels.contains(&r.channel))
                    && direction.is_none_or(|d| d == r.direction)
            })
            .collect();
        out.sort_by_key(|r| (r.micros, r.id));
        out
    }

    fn utc(micros: i64) -> DateTime<chrono::Utc> {
        DateTime::from_timestamp_micros(micros).unwrap()
    }

    /// The database path's figures: buckets by `bucket_of`, gaps by `GapStats`.
    fn reference_frequency(
        live: &[Row],
        ask: &FrequencyAsk,
        plan: &BucketPlan,
    ) -> FrequencyFigures {
        let range = (ask.buckets[0].0, ask.buckets[ask.buckets.len() - 1].1);
        let rows = scope(live, ask.customer, range, &ask.channels, ask.direction);
        let mut buckets = vec![BTreeMap::<i32, i64>::new(); plan.buckets().len()];
        let mut channels = BTreeMap::<i32, i64>::new();
        let mut gaps = GapStats::new();
        for r in &rows {
            let b = plan.bucket_of(utc(r.micros)).unwrap();
            *buckets[b].entry(r.channel).or_insert(0) += 1;
            *channels.entry(r.channel).or_insert(0) += 1;
            gaps.push(r.customer, r.micros);
        }
        FrequencyFigures {
            buckets: buckets
                .into_iter()
                .map(|b| b.into_iter().collect())
                .collect(),
            channels: channels.into_iter().collect(),
            total: rows.len() as i64,
            first: rows.iter().map(|r| r.micros).min(),
            last: rows.iter().map(|r| r.micros).max(),
            mean_gap_us: gaps.mean_micros(),
            median_gap_us: gaps.median_micros(),
        }
    }

    fn reference_insights(
        live: &[Row],
        customer: i64,
        range: (i64, i64),
        n: usize,
    ) -> InsightFigures {
        let rows = scope(live, customer, range, &[], None);
        let mut channels = BTreeMap::<i32, (i64, i64)>::new();
        let mut counter = TermCounter::new();
        let mut gaps = GapStats::new();
        for r in &rows {
            let c = channels.entry(r.channel).or_insert((0, 0));
            c.0 += 1;
            c.1 += r.duration.unwrap_or(0);
            counter.add_text(&r.content);
            gaps.push(r.customer, r.micros);
        }
        // The trend per month as the rollup's months and the rows read it.
        let mut months = BTreeMap::<i64, Tally>::new();
        for r in &rows {
            let month = month_of(utc(r.micros).naive_utc());
            months
                .entry(month)
                .or_default()
                .add(Tally::of_row(r.score, 1));
        }
        let scored = rows.iter().all(|r| r.score.is_some());
        InsightFigures {
            channels: channels
                .into_iter()
                .map(|(ch, (k, d))| (ch, k, d))
                .collect(),
            total: rows.len() as i64,
            first: rows.first().map(|r| r.micros),
            last: rows.last().map(|r| r.micros),
            mean_gap_us: gaps.mean_micros(),
            top_terms: counter.top(n),
            sentiment_months: scored.then(|| months.into_iter().collect()),
        }
    }

    fn assert_frequency_equal(a: &FrequencyFigures, b: &FrequencyFigures) {
        assert_eq!(a.buckets, b.buckets);
        assert_eq!(a.channels, b.channels);
        assert_eq!((a.total, a.first, a.last), (b.total, b.first, b.last));
        assert_eq!(a.mean_gap_us, b.mean_gap_us);
        assert_eq!(a.median_gap_us, b.median_gap_us);
    }

    /// Every query shape on `customer` equal to the reference; a big customer's fast
    /// paths and walks are each compared too, whatever the heuristics would choose.
    fn check(index: &ActivityIndex, live: &[Row], customer: i64, rng: &mut Rng) {
        let zones = [
            chrono_tz::UTC,
            chrono_tz::Asia::Kathmandu,
            chrono_tz::Asia::Kolkata,
            chrono_tz::Pacific::Chatham,
            chrono_tz::America::New_York,
            chrono_tz::Australia::Lord_Howe,
        ];
        let grains = [
            Granularity::Hour,
            Granularity::Day,
            Granularity::Week,
            Granularity::Month,
        ];
        let times: Vec<i64> = scope(live, customer, (i64::MIN, i64::MAX), &[], None)
            .iter()
            .map(|r| r.micros)
            .collect();
        for _ in 0..4 {
            let (start, end) = match (rng.below(4), times.first(), times.last()) {
                // All rows.
                (0, Some(&f), Some(&l)) => (f - rng.below(2) as i64 * 3_600_000_000, l + 1),
                // Most rows: a few cut at either end (or at a row's very time).
                (1, Some(_), Some(_)) => {
                    let cut = |rng: &mut Rng| rng.below(times.len() as u64 / 8 + 1) as usize;
                    let (a, b) = (cut(rng), cut(rng));
                    let lo = times[a.min(times.len() - 1)];
                    let hi = times[times.len() - 1 - b.min(times.len() - 1)];
                    let start = lo + rng.below(2) as i64;
                    (start, (hi + rng.below(2) as i64).max(start + 1))
                }
                // A few rows.
                (2, Some(&f), _) => {
                    let s = f + rng.below(40 * 86_400) as i64 * 1_000_000;
                    (s, s + 1 + rng.below(6 * 3_600_000_000) as i64)
                }
                _ => {
                    let s = T0 - DAY
                        + rng.below(20 * 86_400) as i64 * 1_000_000
                        + rng.below(2) as i64 * 777;
                    (s, s + 1 + rng.below(45 * 86_400_000_000) as i64)
                }
            };
            let tz = zones[rng.below(zones.len() as u64) as usize];
            let grain = grains[rng.below(4) as usize];
            let plan = BucketPlan::new(tz, grain, utc(start), utc(end));
            let channels = match rng.below(4) {
                0 | 3 => Vec::new(),
                1 => vec![1 + rng.below(4) as i32],
                _ => vec![1, 3, 300],
            };
            let direction = [None, None, Some(1), Some(2)][rng.below(4) as usize];
            let ask = FrequencyAsk {
                customer,
                channels,
                direction,
                buckets: plan
                    .buckets()
                    .iter()
                    .map(|b| (b.start.timestamp_micros(), b.end.timestamp_micros()))
                    .collect(),
                gaps: true,
            };
            let want = reference_frequency(live, &ask, &plan);
            let got = index.frequency(&ask).unwrap();
            assert_frequency_equal(&got, &want);
            let n = rng.below(12) as usize;
            let want_insights = reference_insights(live, customer, (start, end), n);
            assert_eq!(
                index.insights(customer, start, end, n).unwrap(),
                want_insights
            );
            let Some(c) = index.customers.get(&customer) else {
                continue;
            };
            let wanted = kinds(&ask.channels, ask.direction);
            assert_frequency_equal(&frequency_walk(c, &ask, &wanted), &want);
            let Some(big) = c.big(index.term_totals_from) else {
                continue;
            };
            let whole = big.kinds.iter().all(|&(ch, d)| wanted.admits_kind(ch, d));
            match frequency_fast(c, big, &ask, &wanted, usize::MAX) {
                Some(fast) => assert_frequency_equal(&fast, &want),
                None => assert!(!whole, "the fast path answers every unfiltered report"),
            }
            // Without gaps, filtered reports too.
            let no_gaps = FrequencyAsk {
                gaps: false,
                ..ask.clone()
            };
            let fast = frequency_fast(c, big, &no_gaps, &wanted, 0).unwrap();
            assert_frequency_equal(
                &fast,
                &FrequencyFigures {
                    mean_gap_us: None,
                    median_gap_us: None,
                    ..want
                },
            );
            assert_eq!(
                index.insights_by(customer, start, end, n, true).unwrap(),
                want_insights
            );
        }
        assert_eq!(
            index.insights(customer, i64::MIN, i64::MAX, 200).unwrap(),
            reference_insights(live, customer, (i64::MIN, i64::MAX), 200)
        );
    }

    /// Every customer's [`Big`], where kept, equals one built afresh from its rows.
    fn assert_big_fresh(index: &ActivityIndex) {
        for (id, c) in &index.customers {
            let Some(big) = c.big.get() else {
                continue;
            };
            assert!(big.fresh_gaps.is_empty(), "customer {id}");
            let fresh = Big::build(&c.rows);
            assert_eq!(big.kinds, fresh.kinds, "customer {id}");
            assert_eq!(big.times, fresh.times, "customer {id}");
            assert_eq!(big.gaps, fresh.gaps, "customer {id}");
            assert_eq!(big.gap_sum, fresh.gap_sum, "customer {id}");
            assert_eq!(big.counts, fresh.counts, "customer {id}");
            assert_eq!(big.durations, fresh.durations, "customer {id}");
            assert_eq!(big.months, fresh.months, "customer {id}");
        }
    }

    /// [`ActivityIndex::span`] against the rows, over every row and a random range.
    fn check_span(index: &ActivityIndex, live: &[Row], rng: &mut Rng) {
        let a = T0 + rng.below(40 * 86_400) as i64 * 1_000_000;
        let b = T0 + rng.below(40 * 86_400) as i64 * 1_000_000;
        for (start, end) in [
            (i64::MIN, i64::MAX),
            (a.min(b), a.max(b)),
            (T0 + 10 * DAY, T0 + 10 * DAY + 1),
        ] {
            let inside: Vec<&Row> = live
                .iter()
                .filter(|r| r.micros >= start && r.micros < end)
                .collect();
            let mut per: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            for r in &inside {
                let e = per.entry(r.customer).or_insert((0, i64::MIN));
                e.0 += 1;
                e.1 = e.1.max(r.micros);
            }
            let mut ranked: Vec<(i64, i64, i64)> =
                per.iter().map(|(&c, &(n, last))| (c, n, last)).collect();
            ranked.sort_by_key(|&(c, n, _)| (Reverse(n), c));
            for top_n in [0, 1, 2, 10] {
                let got = index.span(start, end, top_n);
                let want = SpanFigures {
                    customers: per.len() as i64,
                    total: inside.len() as i64,
                    first: inside.iter().map(|r| r.micros).min(),
                    last: inside.iter().map(|r| r.micros).max(),
                    top: ranked.iter().take(top_n).copied().collect(),
                };
                assert_eq!(got, want, "[{start}, {end}) top {top_n}");
            }
        }
    }

    /// [`ActivityIndex::slot_buckets`] against the rows: random slots (all, some, none)
    /// under buckets of random lengths whose inner bounds are whole slots and whose outer
    /// ones are not (the edges the base table answers), with and without filters.
    fn check_slots(index: &ActivityIndex, live: &[Row], rng: &mut Rng) {
        const SLOT_MICROS: i64 = 900_000_000;
        let first = T0 / SLOT_MICROS - 50;
        let a = first + rng.below(41 * 96) as i64;
        let b = first + rng.below(41 * 96) as i64;
        let one_channel = 1 + rng.below(4) as i32;
        let one_direction = 1 + rng.below(2) as i32;
        for (lo, hi) in [(first, first + 42 * 96), (a.min(b), a.max(b)), (a, a)] {
            // Bounds from just before `lo` to just after `hi`.
            let mut bounds = vec![(lo - 1) * SLOT_MICROS + 123];
            let mut at = lo;
            while at < hi {
                bounds.push(at * SLOT_MICROS);
                at += 1 + rng.below(300) as i64;
            }
            bounds.push(hi * SLOT_MICROS);
            bounds.push((hi + 1) * SLOT_MICROS - 77);
            bounds.dedup();
            let buckets: Vec<(i64, i64)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
            for (channels, direction) in [
                (vec![], None),
                (vec![one_channel], None),
                (vec![], Some(one_direction)),
                (vec![1, 3], Some(2)),
            ] {
                let mut want = vec![BTreeMap::<i32, i64>::new(); buckets.len()];
                for r in live {
                    let slot = r.micros.div_euclid(SLOT_MICROS);
                    if slot >= lo
                        && slot < hi
                        && (channels.is_empty() || channels.contains(&r.channel))
                        && direction.is_none_or(|d| d == r.direction)
                    {
                        let i = buckets
                            .iter()
                            .position(|&(s, e)| s <= r.micros && r.micros < e)
                            .unwrap();
                        *want[i].entry(r.channel).or_default() += 1;
                    }
                }
                let want: Vec<Vec<(i32, i64)>> =
                    want.into_iter().map(|m| m.into_iter().collect()).collect();
                let ask = SlotAsk {
                    units: (lo, hi),
                    buckets: buckets.clone(),
                    channels: channels.clone(),
                    direction,
                };
                assert_eq!(
                    index.slot_buckets(&ask),
                    Some(want),
                    "slots [{lo}, {hi}) channels {channels:?} direction {direction:?}"
                );
            }
        }
    }

    /// Inserts (out of order, repeated), deletes and merges, checked after each step.
    fn run(seed: u64, batches: usize, customers: u64, big_from: usize) {
        let mut rng = Rng(seed | 1);
        let mut index = ActivityIndex {
            term_totals_from: big_from,
            ..ActivityIndex::new()
        };
        let mut live: Vec<Row> = Vec::new();
        let mut next_id = 1;
        for step in 0..batches {
            let n = rng.below(300) as usize;
            let mut batch = rows(&mut rng, next_id, n, customers);
            next_id += n as i64;
            // Arrival out of id order, and rows read twice.
            if batch.len() > 2 {
                let (i, j) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
                batch.swap(i, j);
            }
            let again: Vec<Row> = live.iter().rev().take(5).cloned().collect();
            let given: Vec<ActivityRow<'_>> = batch.iter().chain(&again).map(activity).collect();
            assert_eq!(index.insert_all(&given, 1 + step % 3), batch.len());
            live.extend(batch);
            match rng.below(4) {
                0 if !live.is_empty() => {
                    let gone: Vec<i64> = (0..1 + rng.below(40))
                        .map(|_| live[rng.below(live.len() as u64) as usize].id)
                        .chain([next_id + 1000])
                        .collect();
                    let before = live.len();
                    live.retain(|r| !gone.contains(&r.id));
                    assert_eq!(index.remove_all(&gone), before - live.len());
                    assert_eq!(
                        index.remove_all(&gone),
                        0,
                        "a second delete changes nothing"
                    );
                }
                1 => {
                    let survivor = 1 + rng.below(customers) as i64;
                    let merged = vec![
                        1 + rng.below(customers) as i64,
                        1 + rng.below(customers) as i64,
                    ];
                    let mut moved = 0;
                    for r in &mut live {
                        if merged.contains(&r.customer) && r.customer != survivor {
                            r.customer = survivor;
                            moved += 1;
                        }
                    }
                    assert_eq!(index.reassign_customers(&merged, survivor), moved);
                }
                _ => {}
            }
            assert_eq!(index.len(), live.len());
            assert_big_fresh(&index);
            check_span(&index, &live, &mut rng);
            check_slots(&index, &live, &mut rng);
            for customer in 1..=customers.min(3) {
                check(&index, &live, customer as i64, &mut rng);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn answers_equal_the_database_path_after_inserts_deletes_and_merges(
            seed in any::<u64>(),
            batches in 1usize..8,
            customers in 1u64..6,
            big_from in prop::sample::select(vec![1usize, 40, 300, TERM_TOTALS_FROM]),
        ) {
            run(seed, batches, customers, big_from);
        }
    }

    #[test]
    fn a_large_customer_keeps_term_totals_that_stay_exact() {
        let mut rng = Rng(0x5eed_0000_0000_00a1);
        let mut live = rows(&mut rng, 1, 3_000, 2);
        let mut index = ActivityIndex {
            term_totals_from: 1_000,
            ..ActivityIndex::new()
        };
        let given: Vec<ActivityRow<'_>> = live.iter().map(activity).collect();
        index.insert_all(&given, 2);
        assert!(index.customers[&1].totals.is_some());
        check(&index, &live, 1, &mut rng);
        // Remove most of a customer's rows (compacting its terms) and merge the other in.
        let gone: Vec<i64> = live
            .iter()
            .filter(|r| r.customer == 1 && r.id % 3 != 0)
            .map(|r| r.id)
            .collect();
        assert_eq!(index.remove_all(&gone), gone.len());
        live.retain(|r| !gone.contains(&r.id));
        check(&index, &live, 1, &mut rng);
        index.reassign_customers(&[2], 1);
        for r in &mut live {
            r.customer = 1;
        }
        check(&index, &live, 1, &mut rng);
        assert!(index.customers[&1].totals.is_some());
    }

    #[test]
    fn a_big_customer_stays_exact_through_appends_back_dated_rows_deletes_and_merges() {
        let mut rng = Rng(0x5eed_0000_0000_0b16);
        let mut index = ActivityIndex {
            term_totals_from: 200,
            ..ActivityIndex::new()
        };
        let mut live: Vec<Row> = Vec::new();
        let mut next_id = 1;
        // Appends in time order, in batches: the in-place path.
        let mut at = T0;
        for _ in 0..6 {
            let mut batch = rows(&mut rng, next_id, 120, 1);
            next_id += batch.len() as i64;
            for r in &mut batch {
                at += rng.below(3) as i64 * rng.below(7_200_000_000) as i64;
                r.micros = at;
            }
            let given: Vec<ActivityRow<'_>> = batch.iter().map(activity).collect();
            let had = index
                .customers
                .get(&1)
                .is_some_and(|c| c.big.get().is_some());
            index.insert_all(&given, 1);
            // Appends keep it, updated in place.
            assert_eq!(index.customers[&1].big.get().is_some(), had);
            live.extend(batch);
            assert_big_fresh(&index);
            check(&index, &live, 1, &mut rng);
        }
        assert!(index.customers[&1].big.get().is_some());
        // A back-dated row, and one at the very time of another.
        let mut late = rows(&mut rng, next_id, 2, 1);
        next_id += 2;
        late[0].micros = T0 + 1;
        late[1].micros = live[live.len() / 2].micros;
        let given: Vec<ActivityRow<'_>> = late.iter().map(activity).collect();
        index.insert_all(&given, 1);
        live.extend(late);
        assert!(index.customers[&1].big.get().is_none(), "rebuilt on use");
        check(&index, &live, 1, &mut rng);
        assert_big_fresh(&index);
        check(&index, &live, 1, &mut rng);
        // The first and the last row deleted.
        let first = live.iter().min_by_key(|r| (r.micros, r.id)).unwrap().id;
        let last = live.iter().max_by_key(|r| (r.micros, r.id)).unwrap().id;
        assert_eq!(index.remove_all(&[first, last]), 2);
        live.retain(|r| r.id != first && r.id != last);
        assert_big_fresh(&index);
        check(&index, &live, 1, &mut rng);
        // A small customer merged into the big one, then appends again.
        let small = rows(&mut rng, next_id, 50, 1);
        next_id += 50;
        let small: Vec<Row> = small
            .into_iter()
            .map(|r| Row { customer: 2, ..r })
            .collect();
        let given: Vec<ActivityRow<'_>> = small.iter().map(activity).collect();
        index.insert_all(&given, 1);
        assert!(index.customers[&2].big(index.term_totals_from).is_none());
        live.extend(small);
        assert_eq!(index.reassign_customers(&[2], 1), 50);
        for r in &mut live {
            r.customer = 1;
        }
        assert_big_fresh(&index);
        check(&index, &live, 1, &mut rng);
        let mut more = rows(&mut rng, next_id, 30, 1);
        for (i, r) in more.iter_mut().enumerate() {
            r.micros = at + 1 + i as i64 * 1_000_000;
        }
        let given: Vec<ActivityRow<'_>> = more.iter().map(activity).collect();
        index.insert_all(&given, 1);
        live.extend(more);
        assert_big_fresh(&index);
        for _ in 0..8 {
            check(&index, &live, 1, &mut rng);
        }
    }

    #[test]
    fn the_median_gap_of_a_big_customer_follows_the_even_and_odd_rule() {
        let mut index = ActivityIndex {
            term_totals_from: 1,
            ..ActivityIndex::new()
        };
        let sec = 1_000_000;
        // Gaps 10 s, 0 (two rows at one time), 25 s + 1 µs, 65 s - 1 µs, 5 s.
        let times = [0, 10 * sec, 10 * sec, 35 * sec + 1, 100 * sec, 105 * sec];
        let given: Vec<ActivityRow<'_>> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| ActivityRow {
                id: i as i64 + 1,
                customer_id: 9,
                channel: 1,
                direction: 1,
                occur_micros: T0 + t,
                call_duration_us: None,
                content: "",
                sentiment: Some(0),
            })
            .collect();
        index.insert_all(&given, 1);
        let c = &index.customers[&9];
        let big = c.big(index.term_totals_from).unwrap();
        let ask = |from: i64, to: i64| FrequencyAsk {
            customer: 9,
            buckets: vec![(T0 + from * sec, T0 + to * sec)],
            gaps: true,
            ..FrequencyAsk::default()
        };
        let every = kinds(&[], None);
        let figures = |from, to| frequency_fast(c, big, &ask(from, to), &every, usize::MAX);
        // Five gaps: the third smallest.
        let all = figures(0, 200).unwrap();
        assert_eq!(all.median_gap_us, Some(10 * sec));
        assert_eq!(all.mean_gap_us, Some(21 * sec));
        // Four gaps without the last: the mean of the middle two, rounded toward zero.
        let four = figures(0, 101).unwrap();
        assert_eq!(four.median_gap_us, Some(17_500_000));
        assert_eq!(four.mean_gap_us, Some(25 * sec));
        // Three gaps, the first row out: the middle one.
        assert_eq!(figures(5, 101).unwrap().median_gap_us, Some(25 * sec + 1));
        // One row, none.
        assert_eq!(figures(100, 101).unwrap().median_gap_us, None);
        assert_eq!(
            index.frequency(&ask(0, 200)).unwrap().median_gap_us,
            Some(10 * sec)
        );
    }

    #[test]
    fn galloping_finds_what_a_binary_search_finds() {
        let mut rng = Rng(7);
        for _ in 0..5000 {
            let n = rng.below(300) as usize;
            let mut times: Vec<i64> = (0..n).map(|_| rng.below(100) as i64).collect();
            times.sort_unstable();
            let from = rng.below(n as u64 + 1) as usize;
            let bound = rng.below(110) as i64 - 5;
            let hint = rng.below(400) as usize;
            let expect = from + times[from..].partition_point(|&t| t < bound);
            assert_eq!(
                gallop(&times, from, bound, hint),
                expect,
                "{times:?} from {from} bound {bound} hint {hint}"
            );
        }
    }

    #[test]
    fn the_sentiment_per_month_counts_each_row_in_its_utc_month_or_leaves_it_to_the_database() {
        let mut index = ActivityIndex::new();
        // 2024-02-01T00:00:00Z.
        let feb = T0 + 31 * DAY;
        let row = |id, occur_micros, sentiment| ActivityRow {
            id,
            customer_id: 7,
            channel: 1,
            direction: 1,
            occur_micros,
            call_duration_us: Some(60_000_000),
            content: "",
            sentiment,
        };
        index.insert_all(
            &[
                row(1, feb - 1, Some(-600)),
                row(2, feb, Some(700)),
                row(3, T0, Some(0)),
                row(4, feb + DAY, Some(-10)),
            ],
            1,
        );
        let months = |index: &ActivityIndex, start, end| {
            index.insights(7, start, end, 0).unwrap().sentiment_months
        };
        let (jan, feb_month) = (2024 * 12, 2024 * 12 + 1);
        let tally = |n, negative, positive, sum| Tally {
            n,
            negative,
            positive,
            sum,
        };
        assert_eq!(
            months(&index, i64::MIN, i64::MAX),
            Some(vec![
                (jan, tally(2, 1, 0, -600)),
                (feb_month, tally(2, 0, 1, 690))
            ])
        );
        // The range's own rows only; an empty range has no month.
        assert_eq!(
            months(&index, feb, feb + 1),
            Some(vec![(feb_month, tally(1, 0, 1, 700))])
        );
        assert_eq!(months(&index, T0 + 1, feb - 1), Some(Vec::new()));
        // Call durations are kept beside the scores.
        let figures = index.insights(7, i64::MIN, i64::MAX, 0).unwrap();
        assert_eq!(figures.channels, vec![(1, 4, 240_000_000)]);
        // A row not scored yet in range: the database answers (the scorer may have
        // scored it since); outside the range it does not matter.
        index.insert_all(&[row(5, feb + 2 * DAY, None)], 1);
        assert_eq!(months(&index, i64::MIN, i64::MAX), None);
        assert_eq!(
            months(&index, T0, feb),
            Some(vec![(jan, tally(2, 1, 0, -600))])
        );
        // A key account (a Big): whole months from its monthly tallies, an edge month
        // from the rows inside the range, or from the month less the rows outside it.
        let n = TERM_TOTALS_FROM as i64;
        // One row every 200 s: January and a week of February.
        const STEP: i64 = 200_000_000;
        let many: Vec<ActivityRow<'_>> = (0..n)
            .map(|i| ActivityRow {
                customer_id: 8,
                ..row(
                    100 + i,
                    T0 + i * STEP,
                    Some(if i % 4 == 0 { -100 } else { 1 }),
                )
            })
            .collect();
        index.insert_all(&many, 1);
        let jan_rows = (feb - T0 + STEP - 1) / STEP;
        let big_months = |index: &ActivityIndex, start, end| {
            index.insights(8, start, end, 0).unwrap().sentiment_months
        };
        let expect = |ids: std::ops::Range<i64>| {
            let mut by_month = BTreeMap::<i64, Tally>::new();
            for i in ids {
                let month = if i < jan_rows { jan } else { feb_month };
                let score = if i % 4 == 0 { -100 } else { 1 };
                by_month
                    .entry(month)
                    .or_default()
                    .add(Tally::of_row(Some(score), 1));
            }
            Some(by_month.into_iter().collect::<Vec<_>>())
        };
        assert!(index.customers[&8].big(index.term_totals_from).is_some());
        assert_eq!(big_months(&index, i64::MIN, i64::MAX), expect(0..n));
        // Most of January (the month less its first ten rows), a little of February.
        let at = |i: i64| T0 + i * STEP;
        assert_eq!(
            big_months(&index, at(10), at(jan_rows + 3)),
            expect(10..jan_rows + 3)
        );
        // A little of January, most of February.
        assert_eq!(
            big_months(&index, at(jan_rows - 2), at(n - 5)),
            expect(jan_rows - 2..n - 5)
        );
        // A row not scored yet: a range holding it is left to the database, one that
        // does not is not (its month read whole less the rows outside, that row among
        // them, or from the rows inside).
        index.insert_all(
            &[ActivityRow {
                customer_id: 8,
                ..row(100 + n, at(n), None)
            }],
            1,
        );
        assert_eq!(
            big_months(&index, at(10), at(jan_rows + 3)),
            expect(10..jan_rows + 3)
        );
        assert_eq!(big_months(&index, at(jan_rows - 2), at(n + 1)), None);
        assert_eq!(
            big_months(&index, at(jan_rows - 2), at(n - 5)),
            expect(jan_rows - 2..n - 5)
        );
    }

    #[test]
    fn a_call_duration_the_layout_cannot_hold_makes_its_customer_answer_none() {
        assert_eq!(
            Entry::pack(86_400_000_000, Some(-1000)).map(|p| p >> 16),
            Some(86_400_000_000)
        );
        let mut index = ActivityIndex::new();
        let row = |id, customer_id, call_duration_us| ActivityRow {
            id,
            customer_id,
            channel: 1,
            direction: 1,
            occur_micros: T0,
            call_duration_us: Some(call_duration_us),
            content: "",
            sentiment: Some(5),
        };
        index.insert_all(
            &[
                row(1, 7, MAX_DURATION - 1),
                row(2, 8, MAX_DURATION),
                row(3, 9, -1),
            ],
            1,
        );
        let figures = index.insights(7, i64::MIN, i64::MAX, 0).unwrap();
        assert_eq!(figures.channels, vec![(1, 1, MAX_DURATION - 1)]);
        assert!(index.insights(8, i64::MIN, i64::MAX, 0).is_none());
        assert!(index.insights(9, i64::MIN, i64::MAX, 0).is_none());
    }

    #[test]
    fn a_row_the_layout_cannot_hold_makes_its_customer_answer_none() {
        let mut index = ActivityIndex::new();
        let row = |id, channel| ActivityRow {
            id,
            customer_id: 7,
            channel,
            direction: 1,
            occur_micros: T0,
            call_duration_us: None,
            content: "refund",
            sentiment: Some(-300),
        };
        index.insert_all(&[row(1, 1), row(2, 1)], 1);
        assert!(index.insights(7, i64::MIN, i64::MAX, 5).is_some());
        let every_slot = SlotAsk {
            units: (T0 / 900_000_000, T0 / 900_000_000 + 1),
            buckets: vec![(T0, T0 + DAY)],
            ..SlotAsk::default()
        };
        assert_eq!(index.slot_buckets(&every_slot), Some(vec![vec![(1, 2)]]));
        index.insert_all(&[row(3, 4096)], 1);
        assert!(index.insights(7, i64::MIN, i64::MAX, 5).is_none());
        // Every customer's slots cannot count that row's channel: the rollups answer.
        assert_eq!(index.slot_buckets(&every_slot), None);
        let ask = FrequencyAsk {
            customer: 7,
            buckets: vec![(T0, T0 + DAY)],
            ..FrequencyAsk::default()
        };
        assert!(index.frequency(&ask).is_none());
        // Another customer answers, an unknown one answers zeros.
        assert_eq!(
            index.insights(8, i64::MIN, i64::MAX, 5),
            Some(InsightFigures {
                sentiment_months: Some(Vec::new()),
                ..InsightFigures::default()
            })
        );
    }
}

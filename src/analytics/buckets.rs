//! Calendar buckets (hour, local day, ISO week, month) in an IANA time zone.
//! Owns the bucket plan and the per-segment keying that lets SQL group rows into those buckets.

use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
/// Offsets are sampled at most this far apart when looking for transitions.
const SCAN_STEP: i64 = 6 * HOUR;
/// `NaiveDate::num_days_from_ce()` of 1970-01-01.
const EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// Parses an IANA time-zone name; the empty string means UTC.
///
/// Returns `None` when the name is not a known IANA zone (names are case-sensitive).
pub fn parse_time_zone(name: &str) -> Option<Tz> {
    if name.is_empty() {
        return Some(Tz::UTC);
    }
    name.parse::<Tz>().ok()
}

/// Width of one calendar bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One hour starting on a local hour boundary.
    Hour,
    /// One local calendar day (23, 24 or 25 hours long, or other lengths in unusual zones).
    Day,
    /// One ISO week, Monday local midnight to the next Monday local midnight.
    Week,
    /// One local calendar month.
    Month,
}

/// One bucket of a plan: the half-open UTC interval `[start, end)`.
///
/// The first and last buckets are clipped to the plan's range, so they may be shorter than a
/// full calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// First instant of the bucket (inclusive).
    pub start: DateTime<Utc>,
    /// First instant after the bucket (exclusive).
    pub end: DateTime<Utc>,
}

/// A maximal part `[start, end)` of the plan's range over which `shift_secs` is constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First instant of the segment (inclusive).
    pub start: DateTime<Utc>,
    /// First instant after the segment (exclusive).
    pub end: DateTime<Utc>,
    /// Seconds to add to a row's unix time before dividing by [`BucketPlan::unit_secs`].
    pub shift_secs: i64,
}

/// A part of the range over which the zone's UTC offset is constant.
#[derive(Debug, Clone, Copy)]
struct OffsetSpan {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    offset: i64,
}

/// Every calendar bucket that intersects a UTC range, plus the keying that SQL uses to
/// assign rows to them.
///
/// SQL cannot do time-zone arithmetic portably, so the plan splits the range into
/// [`Segment`]s over which one constant shift applies. Inside a segment a row is keyed as
/// `floor((unix_seconds(occur_time) + shift_secs) / unit_secs)`; the SQL groups by
/// `(shift_secs, key)` and [`BucketPlan::bucket_for_key`] maps each group back to a bucket.
/// Several groups may map to the same bucket (a day that contains a DST change appears in
/// two segments), so callers must add the groups' values per bucket index.
#[derive(Debug, Clone)]
pub struct BucketPlan {
    tz: Tz,
    granularity: Granularity,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    buckets: Vec<Bucket>,
    segments: Vec<Segment>,
    /// Day-based plans: local day number (days since 1970-01-01) where each bucket's
    /// calendar period starts, and where the next period starts.
    day_from: Vec<i64>,
    day_to: Vec<i64>,
    /// Hour plans: for each bucket, the unix second `key * 3600 - shift` of its hour cell and
    /// the shift of the segment it lies in.
    cells: Vec<(i64, i64)>,
}

impl BucketPlan {
    /// Plans every `granularity` bucket of zone `tz` that intersects `[start, end)`.
    ///
    /// The caller guarantees `start < end` and a range of at most about ten years; an empty
    /// or inverted range gives a plan with no buckets.
    pub fn new(tz: Tz, granularity: Granularity, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        let mut plan = BucketPlan {
            tz,
            granularity,
            start,
            end,
            buckets: Vec::new(),
            segments: Vec::new(),
            day_from: Vec::new(),
            day_to: Vec::new(),
            cells: Vec::new(),
        };
        if start >= end {
            return plan;
        }
        let spans = offset_spans(tz, start, end);
        match granularity {
            Granularity::Hour => {
                plan.segments = hour_segments(&spans);
                plan.plan_hours();
            }
            Granularity::Day | Granularity::Week | Granularity::Month => {
                plan.segments = spans
                    .iter()
                    .map(|s| Segment {
                        start: s.start,
                        end: s.end,
                        shift_secs: s.offset,
                    })
                    .collect();
                plan.plan_days(&spans);
            }
        }
        plan
    }

    /// The zone the plan was made for.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The plan's bucket width.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The buckets, in time order; indices are zero-based and contiguous.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// The partition of `[start, end)` into maximal intervals of constant `shift_secs`.
    pub fn segments(&self) -> Vec<Segment> {
        self.segments.clone()
    }

    /// The divisor of the SQL key: 3600 for hours, 86400 for day-based granularities.
    pub fn unit_secs(&self) -> i64 {
        match self.granularity {
            Granularity::Hour => HOUR,
            Granularity::Day | Granularity::Week | Granularity::Month => DAY,
        }
    }

    /// The `(key, shift_secs)` pair that the SQL keying gives the instant `t`, or `None`
    /// outside the plan's range. Mirrors the SQL so Rust-side aggregation can use it.
    pub fn key_of(&self, t: DateTime<Utc>) -> Option<(i64, i64)> {
        if t < self.start || t >= self.end {
            return None;
        }
        let i = self
            .segments
            .partition_point(|s| s.start <= t)
            .checked_sub(1)?;
        let shift = self.segments.get(i)?.shift_secs;
        Some(((t.timestamp() + shift).div_euclid(self.unit_secs()), shift))
    }

    /// The index of the bucket that an SQL row group `(key, shift_secs)` belongs to.
    ///
    /// Day, week and month keys are local day numbers (days since 1970-01-01), so the shift
    /// is not needed for them; hour keys need the shift of the segment they came from (two
    /// segments with different shifts can produce the same hour key for different buckets).
    /// Runs in O(log n). Returns `None` for keys outside the plan.
    pub fn bucket_for_key(&self, key: i64, shift_secs: i64) -> Option<usize> {
        match self.granularity {
            Granularity::Hour => {
                let cell = key.checked_mul(HOUR)?.checked_sub(shift_secs)?;
                let cell_start = DateTime::from_timestamp(cell, 0)?;
                let cell_end = DateTime::from_timestamp(cell.checked_add(HOUR)?, 0)?;
                let first = self.buckets.partition_point(|b| b.end <= cell_start);
                // At most a handful of buckets start inside one hour cell.
                (first..self.buckets.len())
                    .take_while(|&i| self.buckets[i].start < cell_end)
                    .find(|&i| self.cells[i] == (cell, shift_secs))
            }
            Granularity::Day | Granularity::Week | Granularity::Month => {
                let i = self
                    .day_from
                    .partition_point(|&d| d <= key)
                    .checked_sub(1)?;
                (key < self.day_to[i]).then_some(i)
            }
        }
    }

    /// The index of the bucket containing the instant `t`, or `None` outside `[start, end)`.
    ///
    /// Computed from the bucket bounds alone (binary search), independently of the keying.
    pub fn bucket_of(&self, t: DateTime<Utc>) -> Option<usize> {
        if t < self.start || t >= self.end {
            return None;
        }
        let i = self
            .buckets
            .partition_point(|b| b.start <= t)
            .checked_sub(1)?;
        (t < self.buckets[i].end).then_some(i)
    }

    fn plan_hours(&mut self) {
        for seg in &self.segments {
            let shift = seg.shift_secs;
            let first_key = (seg.start.timestamp() + shift).div_euclid(HOUR);
            let last_key = (ceil_secs(seg.end) - 1 + shift).div_euclid(HOUR);
            for key in first_key..=last_key {
                let cell = key * HOUR - shift;
                let b_start = at_secs(cell).max(seg.start);
                let b_end = at_secs(cell + HOUR).min(seg.end);
                if b_start < b_end {
                    self.buckets.push(Bucket {
                        start: b_start,
                        end: b_end,
                    });
                    self.cells.push((cell, shift));
                }
            }
        }
    }

    fn plan_days(&mut self, spans: &[OffsetSpan]) {
        let Some(first) = spans.first() else {
            return;
        };
        let start_day = (self.start.timestamp() + first.offset).div_euclid(DAY);
        let mut day = period_start(self.granularity, start_day);
        let mut b_start = self.start;
        let mut cursor = 0;
        loop {
            let next_day = next_period(self.granularity, day);
            let b_end = first_instant(spans, &mut cursor, next_day, self.end);
            if b_start < b_end {
                self.buckets.push(Bucket {
                    start: b_start,
                    end: b_end,
                });
                self.day_from.push(day);
                self.day_to.push(next_day);
            }
            if b_end >= self.end || next_day <= day {
                break;
            }
            b_start = b_end;
            day = next_day;
        }
    }
}

/// Number of local calendar dates of `tz` touched by `[start, end)` (end exclusive); at
/// least 1.
pub fn span_days(tz: Tz, start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    if end <= start {
        return 1;
    }
    let last = end
        .checked_sub_signed(TimeDelta::nanoseconds(1))
        .unwrap_or(end);
    let first_date = start.with_timezone(&tz).date_naive();
    let last_date = last.with_timezone(&tz).date_naive();
    ((last_date - first_date).num_days() + 1).max(1)
}

/// The instant at unix second `secs` (clamped to chrono's range).
fn at_secs(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(if secs < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// The smallest whole unix second not before `t`.
fn ceil_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

/// The zone's UTC offset in seconds at unix second `secs`.
fn offset_at(tz: Tz, secs: i64) -> i64 {
    let naive = at_secs(secs).naive_utc();
    i64::from(tz.offset_from_utc_datetime(&naive).fix().local_minus_utc())
}

/// Splits `[start, end)` (non-empty) into maximal spans of constant UTC offset.
///
/// Offsets are sampled every [`SCAN_STEP`]; a change between two samples is bisected to the
/// exact second. Two changes that cancel out within one step would be missed; no real zone
/// has those.
fn offset_spans(tz: Tz, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<OffsetSpan> {
    let mut spans = Vec::new();
    let mut span_start = start;
    let mut prev = start.timestamp();
    let mut offset = offset_at(tz, prev);
    let last = ceil_secs(end) - 1;
    'scan: while prev < last {
        let next = prev.saturating_add(SCAN_STEP).min(last);
        while offset_at(tz, next) != offset {
            // offset_at(lo) == offset, offset_at(hi) != offset.
            let (mut lo, mut hi) = (prev, next);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset_at(tz, mid) == offset {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let at = at_secs(hi);
            if at >= end {
                break 'scan;
            }
            spans.push(OffsetSpan {
                start: span_start,
                end: at,
                offset,
            });
            span_start = at;
            offset = offset_at(tz, hi);
            prev = hi;
        }
        prev = next;
    }
    spans.push(OffsetSpan {
        start: span_start,
        end,
        offset,
    });
    spans
}

/// Merges offset spans into segments of constant `offset mod 3600`.
fn hour_segments(spans: &[OffsetSpan]) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    for span in spans {
        let shift = span.offset.rem_euclid(HOUR);
        match segments.last_mut() {
            Some(last) if last.shift_secs == shift => last.end = span.end,
            _ => segments.push(Segment {
                start: span.start,
                end: span.end,
                shift_secs: shift,
            }),
        }
    }
    segments
}

/// The first instant whose local time is at or after local midnight of day number `day`,
/// or `end` when there is none before `end`. `cursor` must only move forward with `day`.
fn first_instant(
    spans: &[OffsetSpan],
    cursor: &mut usize,
    day: i64,
    end: DateTime<Utc>,
) -> DateTime<Utc> {
    let midnight = day.saturating_mul(DAY);
    while let Some(span) = spans.get(*cursor) {
        let candidate = at_secs(midnight.saturating_sub(span.offset));
        if candidate < span.end {
            return candidate.max(span.start);
        }
        *cursor += 1;
    }
    end
}

fn date_of_day(day: i64) -> Option<NaiveDate> {
    let ce = i32::try_from(day.checked_add(EPOCH_DAYS_FROM_CE)?).ok()?;
    NaiveDate::from_num_days_from_ce_opt(ce)
}

fn day_of_date(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce()) - EPOCH_DAYS_FROM_CE
}

/// The local day number where the period containing `day` starts.
fn period_start(granularity: Granularity, day: i64) -> i64 {
    match granularity {
        Granularity::Hour | Granularity::Day => day,
        // 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays.
        Granularity::Week => day - (day + 3).rem_euclid(7),
        Granularity::Month => date_of_day(day)
            .and_then(|d| d.with_day(1))
            .map_or(day, day_of_date),
    }
}

/// The local day number where the period after the one starting on `day` starts.
fn next_period(granularity: Granularity, day: i64) -> i64 {
    match granularity {
        Granularity::Hour | Granularity::Day => day + 1,
        Granularity::Week => day + 7,
        Granularity::Month => date_of_day(day)
            .and_then(|d| {
                let (y, m) = if d.month() == 12 {
                    (d.year() + 1, 1)
                } else {
                    (d.year(), d.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)
            })
            .map_or(day + 28, day_of_date),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::{Timelike, Weekday};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn tz(name: &str) -> Tz {
        parse_time_zone(name).unwrap()
    }

    fn hours(b: &Bucket) -> f64 {
        (b.end - b.start).num_seconds() as f64 / 3600.0
    }

    /// Structural invariants plus the SQL-keying cross-check over many instants.
    fn check_plan(plan: &BucketPlan, start: DateTime<Utc>, end: DateTime<Utc>) {
        let buckets = plan.buckets();
        assert!(!buckets.is_empty());
        assert_eq!(buckets[0].start, start);
        assert_eq!(buckets[buckets.len() - 1].end, end);
        for w in buckets.windows(2) {
            assert_eq!(w[0].end, w[1].start, "buckets must be contiguous");
            assert!(w[0].start < w[0].end);
        }
        let segs = plan.segments();
        assert_eq!(segs[0].start, start);
        assert_eq!(segs[segs.len() - 1].end, end);
        for w in segs.windows(2) {
            assert_eq!(w[0].end, w[1].start, "segments must partition the range");
            assert_ne!(w[0].shift_secs, w[1].shift_secs, "segments must be maximal");
        }
        let mut samples = Vec::new();
        let mut t = start;
        while t < end {
            samples.push(t);
            t += TimeDelta::minutes(7);
        }
        for b in buckets {
            for d in [-1, 0, 1] {
                samples.push(b.start + TimeDelta::seconds(d));
            }
            samples.push(b.end - TimeDelta::nanoseconds(1));
        }
        for s in &segs {
            for d in [-1, 0, 1] {
                samples.push(s.start + TimeDelta::seconds(d));
            }
        }
        let unit = plan.unit_secs();
        for t in samples {
            let expected = plan.bucket_of(t);
            if t < start || t >= end {
                assert_eq!(expected, None);
                assert_eq!(plan.key_of(t), None);
                continue;
            }
            let i = expected.unwrap();
            assert!(buckets[i].start <= t && t < buckets[i].end);
            // Emulate the SQL: find the segment by range, then floor((secs + shift) / unit).
            let seg = segs.iter().find(|s| s.start <= t && t < s.end).unwrap();
            let key = (t.timestamp() + seg.shift_secs).div_euclid(unit);
            assert_eq!(plan.key_of(t), Some((key, seg.shift_secs)));
            assert_eq!(
                plan.bucket_for_key(key, seg.shift_secs),
                Some(i),
                "instant {t} key {key} shift {}",
                seg.shift_secs
            );
        }
    }

    fn plan(zone: &str, g: Granularity, start: &str, end: &str) -> BucketPlan {
        let (s, e) = (utc(start), utc(end));
        let plan = BucketPlan::new(tz(zone), g, s, e);
        check_plan(&plan, s, e);
        plan
    }

    fn local_hm(plan: &BucketPlan, t: DateTime<Utc>) -> (u32, u32) {
        let l = t.with_timezone(&plan.tz());
        (l.hour(), l.minute())
    }

    #[test]
    fn parses_zone_names() {
        assert_eq!(parse_time_zone(""), Some(Tz::UTC));
        assert_eq!(parse_time_zone("Asia/Shanghai"), Some(Tz::Asia__Shanghai));
        assert_eq!(parse_time_zone("Mars/Olympus_Mons"), None);
        assert_eq!(parse_time_zone("asia/shanghai"), None);
    }

    #[test]
    fn new_york_dst_days() {
        let p = plan(
            "America/New_York",
            Granularity::Day,
            "2024-03-09T05:00:00Z",
            "2024-03-12T04:00:00Z",
        );
        let b = p.buckets();
        assert_eq!(b.len(), 3);
        assert_eq!(hours(&b[0]), 24.0);
        assert_eq!(b[1].start, utc("2024-03-10T05:00:00Z"));
        assert_eq!(b[1].end, utc("2024-03-11T04:00:00Z"));
        assert_eq!(hours(&b[1]), 23.0);
        assert_eq!(p.segments().len(), 2);
        assert_eq!(p.segments()[0].shift_secs, -5 * 3600);
        assert_eq!(p.segments()[1].shift_secs, -4 * 3600);
        assert_eq!(p.segments()[1].start, utc("2024-03-10T07:00:00Z"));
        // Key = local day number: 2024-03-10 is day 19792.
        assert_eq!(p.bucket_for_key(19_792, -5 * 3600), Some(1));
        assert_eq!(p.bucket_for_key(19_792, -4 * 3600), Some(1));
        assert_eq!(p.bucket_for_key(19_791, 0), Some(0));
        assert_eq!(p.bucket_for_key(19_790, 0), None);
        assert_eq!(p.bucket_for_key(19_794, 0), None);

        let p = plan(
            "America/New_York",
            Granularity::Day,
            "2024-11-02T04:00:00Z",
            "2024-11-05T05:00:00Z",
        );
        let b = p.buckets();
        assert_eq!(b.len(), 3);
        assert_eq!(b[1].start, utc("2024-11-03T04:00:00Z"));
        assert_eq!(b[1].end, utc("2024-11-04T05:00:00Z"));
        assert_eq!(hours(&b[1]), 25.0);
    }

    #[test]
    fn new_york_fall_back_hours_are_distinct() {
        let p = plan(
            "America/New_York",
            Granularity::Hour,
            "2024-11-03T04:00:00Z",
            "2024-11-03T08:00:00Z",
        );
        let starts: Vec<_> = p.buckets().iter().map(|b| b.start).collect();
        assert_eq!(
            starts,
            vec![
                utc("2024-11-03T04:00:00Z"),
                utc("2024-11-03T05:00:00Z"),
                utc("2024-11-03T06:00:00Z"),
                utc("2024-11-03T07:00:00Z"),
            ]
        );
        let labels: Vec<_> = starts.iter().map(|&t| local_hm(&p, t)).collect();
        assert_eq!(labels, vec![(0, 0), (1, 0), (1, 0), (2, 0)]);
        assert!(p.buckets().iter().all(|b| hours(b) == 1.0));
        // Whole-hour zone: one segment, shift 0, key = real UTC hour number.
        assert_eq!(p.segments().len(), 1);
        assert_eq!(p.segments()[0].shift_secs, 0);
        let key = utc("2024-11-03T06:00:00Z").timestamp() / 3600;
        assert_eq!(p.bucket_for_key(key, 0), Some(2));
        assert_eq!(p.bucket_for_key(key - 1, 0), Some(1));
        assert_eq!(p.bucket_for_key(key + 2, 0), None);
        assert_eq!(p.unit_secs(), 3600);
    }

    #[test]
    fn berlin_dst_days_and_hours() {
        let p = plan(
            "Europe/Berlin",
            Granularity::Day,
            "2024-03-30T23:00:00Z",
            "2024-03-31T22:00:00Z",
        );
        assert_eq!(p.buckets().len(), 1);
        assert_eq!(hours(&p.buckets()[0]), 23.0);

        let p = plan(
            "Europe/Berlin",
            Granularity::Day,
            "2024-10-25T22:00:00Z",
            "2024-10-28T23:00:00Z",
        );
        let b = p.buckets();
        assert_eq!(b.len(), 3);
        assert_eq!(b[1].start, utc("2024-10-26T22:00:00Z"));
        assert_eq!(b[1].end, utc("2024-10-27T23:00:00Z"));
        assert_eq!(hours(&b[1]), 25.0);
        assert_eq!(hours(&b[2]), 24.0);

        let p = plan(
            "Europe/Berlin",
            Granularity::Hour,
            "2024-03-30T23:00:00Z",
            "2024-03-31T04:00:00Z",
        );
        let labels: Vec<_> = p.buckets().iter().map(|b| local_hm(&p, b.start)).collect();
        assert_eq!(labels, vec![(0, 0), (1, 0), (3, 0), (4, 0), (5, 0)]);
    }

    #[test]
    fn kolkata_half_hour_offset() {
        let p = plan(
            "Asia/Kolkata",
            Granularity::Day,
            "2024-04-30T18:30:00Z",
            "2024-05-02T18:30:00Z",
        );
        assert_eq!(p.buckets().len(), 2);
        assert_eq!(p.buckets()[0].start, utc("2024-04-30T18:30:00Z"));
        assert_eq!(p.buckets()[1].start, utc("2024-05-01T18:30:00Z"));
        assert_eq!(p.segments()[0].shift_secs, 19_800);

        // A range that starts mid-day gets a clipped first bucket.
        let p = plan(
            "Asia/Kolkata",
            Granularity::Day,
            "2024-05-01T00:00:00Z",
            "2024-05-01T20:00:00Z",
        );
        assert_eq!(p.buckets().len(), 2);
        assert_eq!(p.buckets()[0].end, utc("2024-05-01T18:30:00Z"));

        let p = plan(
            "Asia/Kolkata",
            Granularity::Hour,
            "2024-05-01T00:00:00Z",
            "2024-05-01T03:00:00Z",
        );
        let starts: Vec<_> = p.buckets().iter().map(|b| b.start).collect();
        assert_eq!(
            starts,
            vec![
                utc("2024-05-01T00:00:00Z"),
                utc("2024-05-01T00:30:00Z"),
                utc("2024-05-01T01:30:00Z"),
                utc("2024-05-01T02:30:00Z"),
            ]
        );
        assert_eq!(p.segments()[0].shift_secs, 1_800);
    }

    #[test]
    fn kathmandu_hours_start_at_quarter_past() {
        let p = plan(
            "Asia/Kathmandu",
            Granularity::Hour,
            "2024-05-01T00:15:00Z",
            "2024-05-02T00:15:00Z",
        );
        assert_eq!(p.buckets().len(), 24);
        for b in p.buckets() {
            assert_eq!(b.start.minute(), 15);
            assert_eq!(hours(b), 1.0);
            assert_eq!(local_hm(&p, b.start).1, 0);
        }
        assert_eq!(p.segments()[0].shift_secs, 2_700);
    }

    #[test]
    fn shanghai_days() {
        let p = plan(
            "Asia/Shanghai",
            Granularity::Day,
            "2024-01-31T16:00:00Z",
            "2024-03-31T16:00:00Z",
        );
        // 2024 is a leap year: Feb 1 .. Mar 31 is 29 + 31 days.
        assert_eq!(p.buckets().len(), 60);
        assert!(p.buckets().iter().all(|b| hours(b) == 24.0));
        assert!(p.buckets().iter().all(|b| b.start.hour() == 16));
        assert_eq!(p.segments().len(), 1);
        assert_eq!(p.segments()[0].shift_secs, 28_800);
    }

    #[test]
    fn iso_weeks_start_on_monday() {
        let p = plan(
            "Asia/Shanghai",
            Granularity::Week,
            "2024-12-29T16:00:00Z",
            "2025-01-19T16:00:00Z",
        );
        let b = p.buckets();
        assert_eq!(b.len(), 3);
        for (i, bucket) in b.iter().enumerate() {
            let local = bucket.start.with_timezone(&p.tz());
            assert_eq!(local.weekday(), Weekday::Mon);
            assert_eq!((local.hour(), local.minute()), (0, 0));
            assert_eq!(local.iso_week().year(), 2025);
            assert_eq!(local.iso_week().week(), i as u32 + 1);
            assert_eq!(hours(bucket), 7.0 * 24.0);
        }
        assert_eq!(b[0].start, utc("2024-12-29T16:00:00Z"));

        // Starting on a Wednesday clips the first week; its key range still covers Monday.
        let p = plan(
            "UTC",
            Granularity::Week,
            "2025-01-01T00:00:00Z",
            "2025-01-10T00:00:00Z",
        );
        assert_eq!(p.buckets().len(), 2);
        assert_eq!(p.buckets()[1].start, utc("2025-01-06T00:00:00Z"));
        let monday_2024_12_30 = utc("2024-12-30T00:00:00Z").timestamp() / 86_400;
        assert_eq!(p.bucket_for_key(monday_2024_12_30, 0), Some(0));
        assert_eq!(p.bucket_for_key(monday_2024_12_30 + 7, 0), Some(1));
    }

    #[test]
    fn month_buckets() {
        let p = plan(
            "America/New_York",
            Granularity::Month,
            "2024-01-01T05:00:00Z",
            "2024-05-01T04:00:00Z",
        );
        let starts: Vec<_> = p.buckets().iter().map(|b| b.start).collect();
        assert_eq!(
            starts,
            vec![
                utc("2024-01-01T05:00:00Z"),
                utc("2024-02-01T05:00:00Z"),
                utc("2024-03-01T05:00:00Z"),
                utc("2024-04-01T04:00:00Z"),
            ]
        );
        assert_eq!(hours(&p.buckets()[2]), 31.0 * 24.0 - 1.0);
        assert_eq!(hours(&p.buckets()[1]), 29.0 * 24.0);

        // December rolls over into the next year.
        let p = plan(
            "UTC",
            Granularity::Month,
            "2023-11-15T00:00:00Z",
            "2024-02-01T00:00:00Z",
        );
        let starts: Vec<_> = p.buckets().iter().map(|b| b.start).collect();
        assert_eq!(
            starts,
            vec![
                utc("2023-11-15T00:00:00Z"),
                utc("2023-12-01T00:00:00Z"),
                utc("2024-01-01T00:00:00Z"),
            ]
        );
    }

    #[test]
    fn lord_howe_half_hour_dst() {
        // DST ends 2024-04-07 02:00 +11:00 -> 01:30 +10:30 (15:00Z);
        // DST starts 2024-10-06 02:00 +10:30 -> 02:30 +11:00 (15:30Z).
        let p = plan(
            "Australia/Lord_Howe",
            Granularity::Hour,
            "2024-04-06T13:00:00Z",
            "2024-04-06T17:30:00Z",
        );
        let got: Vec<_> = p.buckets().iter().map(|b| (b.start, b.end)).collect();
        assert_eq!(
            got,
            vec![
                (utc("2024-04-06T13:00:00Z"), utc("2024-04-06T14:00:00Z")),
                (utc("2024-04-06T14:00:00Z"), utc("2024-04-06T15:00:00Z")),
                (utc("2024-04-06T15:00:00Z"), utc("2024-04-06T15:30:00Z")),
                (utc("2024-04-06T15:30:00Z"), utc("2024-04-06T16:30:00Z")),
                (utc("2024-04-06T16:30:00Z"), utc("2024-04-06T17:30:00Z")),
            ]
        );
        let segs = p.segments();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1].start, utc("2024-04-06T15:00:00Z"));
        assert_eq!((segs[0].shift_secs, segs[1].shift_secs), (0, 1_800));

        let p = plan(
            "Australia/Lord_Howe",
            Granularity::Hour,
            "2024-10-05T13:30:00Z",
            "2024-10-05T17:00:00Z",
        );
        let got: Vec<_> = p.buckets().iter().map(|b| (b.start, b.end)).collect();
        assert_eq!(
            got,
            vec![
                (utc("2024-10-05T13:30:00Z"), utc("2024-10-05T14:30:00Z")),
                (utc("2024-10-05T14:30:00Z"), utc("2024-10-05T15:30:00Z")),
                (utc("2024-10-05T15:30:00Z"), utc("2024-10-05T16:00:00Z")),
                (utc("2024-10-05T16:00:00Z"), utc("2024-10-05T17:00:00Z")),
            ]
        );
        let labels: Vec<_> = p.buckets().iter().map(|b| local_hm(&p, b.start)).collect();
        assert_eq!(labels, vec![(0, 0), (1, 0), (2, 30), (3, 0)]);

        let p = plan(
            "Australia/Lord_Howe",
            Granularity::Day,
            "2024-10-04T13:30:00Z",
            "2024-10-07T13:00:00Z",
        );
        let b = p.buckets();
        assert_eq!(b.len(), 3);
        assert_eq!(b[1].start, utc("2024-10-05T13:30:00Z"));
        assert_eq!(b[1].end, utc("2024-10-06T13:00:00Z"));
        assert_eq!(hours(&b[1]), 23.5);
    }

    #[test]
    fn missing_local_midnight_starts_at_first_valid_instant() {
        // Chile: 2024-09-08 00:00 -04 jumps to 01:00 -03.
        let p = plan(
            "America/Santiago",
            Granularity::Day,
            "2024-09-07T04:00:00Z",
            "2024-09-09T03:00:00Z",
        );
        let b = p.buckets();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].start, utc("2024-09-08T04:00:00Z"));
        assert_eq!(local_hm(&p, b[1].start), (1, 0));
        assert_eq!(hours(&b[0]), 24.0);
        assert_eq!(hours(&b[1]), 23.0);

        // Chile: 2024-04-07 00:00 -03 falls back to 2024-04-06 23:00 -04.
        let p = plan(
            "America/Santiago",
            Granularity::Day,
            "2024-04-06T03:00:00Z",
            "2024-04-08T04:00:00Z",
        );
        let b = p.buckets();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].end, utc("2024-04-07T04:00:00Z"));
        assert_eq!(hours(&b[0]), 25.0);
    }

    #[test]
    fn property_every_seven_minutes_across_dst_ranges() {
        let zones = [
            "UTC",
            "America/New_York",
            "Europe/Berlin",
            "Asia/Kolkata",
            "Asia/Kathmandu",
            "Asia/Shanghai",
            "Australia/Lord_Howe",
            "America/Santiago",
            "America/St_Johns",
            "Pacific/Chatham",
        ];
        let ranges = [
            ("2024-03-01T00:00:00Z", "2024-04-15T00:00:00Z"),
            ("2024-09-25T13:17:05.250Z", "2024-11-10T07:41:00Z"),
        ];
        for zone in zones {
            for (s, e) in ranges {
                for g in [
                    Granularity::Hour,
                    Granularity::Day,
                    Granularity::Week,
                    Granularity::Month,
                ] {
                    plan(zone, g, s, e);
                }
            }
        }
    }

    #[test]
    fn hour_buckets_start_on_local_hour_boundaries() {
        for zone in ["America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"] {
            let p = plan(
                zone,
                Granularity::Hour,
                "2024-01-01T00:00:00Z",
                "2025-01-01T00:00:00Z",
            );
            let segs = p.segments();
            for b in &p.buckets()[1..] {
                let at_transition = segs.iter().any(|s| s.start == b.start);
                let (_, m) = local_hm(&p, b.start);
                assert!(m == 0 || at_transition, "{zone} {}", b.start);
                let is_last = b.end == p.buckets()[p.buckets().len() - 1].end;
                assert!(hours(b) == 1.0 || at_transition || is_last);
            }
        }
    }

    #[test]
    fn ten_year_plans_are_cheap() {
        // Cheap by construction, not by a clock: a plan holds one entry per bucket and
        // one segment per offset change, nothing per second or per row.
        let (s, e) = (utc("2020-01-01T00:00:00Z"), utc("2030-01-01T00:00:00Z"));
        let p = BucketPlan::new(tz("America/New_York"), Granularity::Hour, s, e);
        let d = BucketPlan::new(tz("Europe/Berlin"), Granularity::Day, s, e);
        assert_eq!(p.buckets().len(), 87_672);
        assert_eq!(p.cells.len(), p.buckets().len());
        assert!(p.day_from.is_empty() && p.day_to.is_empty());
        // Whole-hour offsets key every hour the same way: one segment for ten years.
        assert_eq!(p.segments().len(), 1);
        assert_eq!(d.buckets().len(), 3_654);
        assert_eq!(d.day_from.len(), d.buckets().len());
        assert_eq!(d.day_to.len(), d.buckets().len());
        assert!(d.cells.is_empty());
        // Two DST changes a year: 20 changes, 21 segments.
        assert_eq!(d.segments().len(), 21);
        assert_eq!(offset_spans(tz("America/New_York"), s, e).len(), 21);
    }

    #[test]
    fn outside_range_is_none() {
        let p = plan(
            "UTC",
            Granularity::Day,
            "2024-01-01T00:00:00Z",
            "2024-01-03T00:00:00Z",
        );
        assert_eq!(p.bucket_of(utc("2023-12-31T23:59:59Z")), None);
        assert_eq!(p.bucket_of(utc("2024-01-03T00:00:00Z")), None);
        assert_eq!(p.bucket_of(utc("2024-01-02T23:59:59Z")), Some(1));
        assert_eq!(p.bucket_for_key(i64::MAX, 0), None);
        let h = plan(
            "UTC",
            Granularity::Hour,
            "2024-01-01T00:00:00Z",
            "2024-01-01T02:00:00Z",
        );
        assert_eq!(h.bucket_for_key(i64::MAX, 0), None);
        assert_eq!(h.bucket_for_key(i64::MIN, 0), None);
        assert_eq!(h.bucket_for_key(0, 0), None);
        let empty = BucketPlan::new(
            Tz::UTC,
            Granularity::Day,
            utc("2024-01-02T00:00:00Z"),
            utc("2024-01-01T00:00:00Z"),
        );
        assert!(empty.buckets().is_empty());
        assert_eq!(empty.bucket_for_key(19_723, 0), None);
    }

    #[test]
    fn span_days_examples() {
        let ny = tz("America/New_York");
        // Local midnight Jan 1 to local midnight Jan 31.
        let (s, e) = (utc("2024-01-01T05:00:00Z"), utc("2024-01-31T05:00:00Z"));
        assert_eq!(span_days(ny, s, e), 30);
        assert_eq!(span_days(ny, s, e + TimeDelta::seconds(1)), 31);
        assert_eq!(span_days(ny, s, s + TimeDelta::hours(1)), 1);
        assert_eq!(
            span_days(ny, s - TimeDelta::seconds(1), s + TimeDelta::seconds(1)),
            2
        );
        assert_eq!(span_days(ny, s, s), 1);
        // The same UTC range touches different dates in different zones.
        let (s, e) = (utc("2024-05-01T12:00:00Z"), utc("2024-05-01T20:00:00Z"));
        assert_eq!(span_days(Tz::UTC, s, e), 1);
        assert_eq!(span_days(tz("Asia/Shanghai"), s, e), 2);
    }
}

//! The arithmetic of the pre-aggregated counts (rollups): which 15-minute slot and which
//! calendar month a communication counts in, which shard of a slot a writer adds to,
//! and how a report range splits into whole rollup units plus edges that are read from
//! the base table.
//!
//! Why 15 minutes: every UTC offset in use today (and every DST change) is a multiple of
//! 15 minutes (+05:45 Kathmandu, +08:45 Eucla, -09:30 Marquesas), so a slot never
//! straddles a local hour, day, week or month boundary. Zones whose offsets in the range
//! are not (local mean time before about 1920) are answered from the base table.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};

use super::buckets::BucketPlan;

/// Seconds of one rollup slot.
pub const SLOT_SECS: i64 = 900;

/// Seconds of one rollup hour.
pub const HOUR_SECS: i64 = 3600;

/// A level of the time rollups: `communication_slots` (15 minutes) or
/// `communication_hours`, keyed by `floor(unix seconds / secs)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// The rollup table.
    pub table: &'static str,
    /// Its time-unit column.
    pub column: &'static str,
    /// Seconds of one unit.
    pub secs: i64,
}

/// 15-minute slots: exact for every zone in use.
pub const SLOTS: Tier = Tier {
    table: "communication_slots",
    column: "slot",
    secs: SLOT_SECS,
};

/// Hours: exact for zones whose offsets in the range are whole hours (most of them).
pub const HOURS: Tier = Tier {
    table: "communication_hours",
    column: "hour",
    secs: HOUR_SECS,
};

impl Tier {
    /// The unit of an instant: `floor(unix seconds / secs)`.
    pub fn unit_of(self, t: NaiveDateTime) -> i64 {
        t.and_utc().timestamp().div_euclid(self.secs)
    }

    /// The first instant of a unit.
    pub fn unit_start(self, unit: i64) -> NaiveDateTime {
        DateTime::from_timestamp(unit.saturating_mul(self.secs), 0)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
            .naive_utc()
    }

    /// `[start, end)` as whole units plus edges.
    pub fn split(self, start: NaiveDateTime, end: NaiveDateTime) -> Split {
        split(start, end, |t| self.unit_of(t), |u| self.unit_start(u))
    }

    /// Whether this tier answers `plan` exactly: every offset of the zone in the range is
    /// a whole number of units, and every offset change falls on a unit boundary.
    pub fn fits(self, plan: &BucketPlan) -> bool {
        let segments = plan.segments();
        let inner_ends = segments.len().saturating_sub(1);
        segments.iter().all(|s| s.shift_secs % self.secs == 0)
            && segments[..inner_ends]
                .iter()
                .all(|s| s.end.timestamp().rem_euclid(self.secs) == 0)
    }

    /// The coarsest tier that answers `plan` exactly, if any.
    pub fn for_plan(plan: &BucketPlan) -> Option<Tier> {
        [HOURS, SLOTS].into_iter().find(|tier| tier.fits(plan))
    }
}

/// Rows a slot's count is spread over, so that concurrent writers of one slot, channel
/// and direction update different rows (a communication adds to shard
/// `customer_id mod SHARDS`). Compaction later folds shards into shard 0; a removal
/// after that adds -1 to its shard, which reads still sum correctly.
pub const SHARDS: i64 = 8;

/// Rollup units that ended less than this many seconds ago keep their shards (writers
/// of "now" use them).
pub const COMPACT_AFTER_SECS: i64 = 2 * 3600;

/// The shard a customer's communications count in.
pub fn shard_of(customer_id: i64) -> i64 {
    customer_id.rem_euclid(SHARDS)
}

/// The UTC calendar month of an instant, as `year * 12 + month0`.
pub fn month_of(t: NaiveDateTime) -> i64 {
    i64::from(t.year()) * 12 + i64::from(t.month0())
}

/// Midnight UTC of the first day of a month index.
pub fn month_start(month: i64) -> NaiveDateTime {
    let (year, month0) = (month.div_euclid(12), month.rem_euclid(12));
    i32::try_from(year)
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, month0 as u32 + 1, 1))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or(NaiveDateTime::MIN)
}

/// A range `[start, end)` split into whole units `[lo, hi)` of a rollup (slots or months)
/// and the parts before and after them, which the base table answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Whole units inside the range, `lo..hi`; `None` when there are none.
    pub units: Option<(i64, i64)>,
    /// Parts of the range outside the whole units, each `[start, end)`, non-empty.
    pub edges: Vec<(NaiveDateTime, NaiveDateTime)>,
}

/// Splits `[start, end)` over units whose index and start are given.
fn split(
    start: NaiveDateTime,
    end: NaiveDateTime,
    unit_of: impl Fn(NaiveDateTime) -> i64,
    unit_start: impl Fn(i64) -> NaiveDateTime,
) -> Split {
    if start >= end {
        return Split {
            units: None,
            edges: Vec::new(),
        };
    }
    // First unit starting at or after `start`; last unit ending at or before `end`.
    let first = unit_of(start);
    let lo = if unit_start(first) == start {
        first
    } else {
        first + 1
    };
    let hi = unit_of(end);
    if lo >= hi {
        return Split {
            units: None,
            edges: vec![(start, end)],
        };
    }
    let mut edges = Vec::new();
    if unit_start(lo) > start {
        edges.push((start, unit_start(lo)));
    }
    if unit_start(hi) < end {
        edges.push((unit_start(hi), end));
    }
    Split {
        units: Some((lo, hi)),
        edges,
    }
}

/// `[start, end)` as whole UTC calendar months plus edges.
pub fn month_split(start: NaiveDateTime, end: NaiveDateTime) -> Split {
    split(start, end, month_of, month_start)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::analytics::buckets::Granularity;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .unwrap()
            .naive_utc()
    }

    #[test]
    fn slots_and_months_floor() {
        assert_eq!(
            SLOTS.unit_start(SLOTS.unit_of(t(2024, 3, 9, 10, 14, 59))),
            t(2024, 3, 9, 10, 0, 0)
        );
        assert_eq!(
            SLOTS.unit_start(SLOTS.unit_of(t(2024, 3, 9, 10, 15, 0))),
            t(2024, 3, 9, 10, 15, 0)
        );
        // Before 1970 the slot still floors.
        assert_eq!(
            SLOTS.unit_start(SLOTS.unit_of(t(1950, 1, 1, 0, 7, 0))),
            t(1950, 1, 1, 0, 0, 0)
        );
        assert_eq!(
            month_start(month_of(t(2024, 12, 31, 23, 59, 59))),
            t(2024, 12, 1, 0, 0, 0)
        );
        assert_eq!(
            month_start(month_of(t(2024, 12, 31, 0, 0, 0)) + 1),
            t(2025, 1, 1, 0, 0, 0)
        );
        assert_eq!(shard_of(17), 1);
        assert_eq!(shard_of(-1), SHARDS - 1);
    }

    #[test]
    fn split_keeps_whole_units_and_names_the_edges() {
        // Shanghai's year: local midnight is 16:00 UTC the day before.
        let s = month_split(t(2023, 12, 31, 16, 0, 0), t(2024, 12, 31, 16, 0, 0));
        assert_eq!(
            s.units,
            Some((
                month_of(t(2024, 1, 1, 0, 0, 0)),
                month_of(t(2024, 12, 1, 0, 0, 0))
            ))
        );
        assert_eq!(
            s.edges,
            vec![
                (t(2023, 12, 31, 16, 0, 0), t(2024, 1, 1, 0, 0, 0)),
                (t(2024, 12, 1, 0, 0, 0), t(2024, 12, 31, 16, 0, 0)),
            ]
        );
        // Aligned: no edges.
        let s = SLOTS.split(t(2024, 1, 1, 0, 0, 0), t(2024, 1, 2, 0, 0, 0));
        assert_eq!(s.edges, vec![]);
        assert_eq!(s.units.map(|(lo, hi)| hi - lo), Some(96));
        // Inside one unit: one edge, no units.
        let s = SLOTS.split(t(2024, 1, 1, 0, 1, 0), t(2024, 1, 1, 0, 14, 0));
        assert_eq!(s.units, None);
        assert_eq!(
            s.edges,
            vec![(t(2024, 1, 1, 0, 1, 0), t(2024, 1, 1, 0, 14, 0))]
        );
        // Empty range.
        assert_eq!(
            SLOTS
                .split(t(2024, 1, 1, 0, 0, 0), t(2024, 1, 1, 0, 0, 0))
                .edges,
            vec![]
        );
    }

    #[test]
    fn split_covers_the_range_exactly() {
        let start = t(2024, 2, 10, 3, 7, 11);
        let end = t(2024, 5, 3, 21, 52, 2);
        for s in [SLOTS.split(start, end), month_split(start, end)] {
            let (lo, hi) = s.units.unwrap();
            assert_eq!(s.edges.len(), 2);
            assert_eq!(s.edges[0].0, start);
            assert_eq!(s.edges[1].1, end);
            assert!(lo < hi);
        }
        let s = month_split(start, end);
        assert_eq!(s.edges[0].1, month_start(s.units.unwrap().0));
        assert_eq!(s.edges[1].0, month_start(s.units.unwrap().1));
    }

    #[test]
    fn the_coarsest_exact_tier_is_chosen_per_zone() {
        let plan = |tz, y| {
            BucketPlan::new(
                tz,
                Granularity::Day,
                Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(y + 1, 1, 1, 0, 0, 0).unwrap(),
            )
        };
        let tier = |tz, y| Tier::for_plan(&plan(tz, y));
        assert_eq!(tier(chrono_tz::Asia::Kathmandu, 2024), Some(SLOTS));
        assert_eq!(tier(chrono_tz::Asia::Kolkata, 2024), Some(SLOTS));
        assert_eq!(tier(chrono_tz::America::New_York, 2024), Some(HOURS));
        assert_eq!(tier(chrono_tz::Asia::Shanghai, 2024), Some(HOURS));
        assert_eq!(tier(chrono_tz::Australia::Eucla, 2024), Some(SLOTS));
        assert_eq!(tier(chrono_tz::Pacific::Marquesas, 2024), Some(SLOTS));
        // Lord Howe moves by half an hour at DST: slots.
        assert_eq!(tier(chrono_tz::Australia::Lord_Howe, 2024), Some(SLOTS));
        // Kathmandu kept local mean time (+05:41:16) until 1920.
        assert_eq!(tier(chrono_tz::Asia::Kathmandu, 1919), None);
    }
}

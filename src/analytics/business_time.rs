//! Business time: how much of an interval falls inside a schedule's open windows.
//!
//! A [`BusinessClock`] lays a schedule (weekly windows in local wall time, holidays as
//! local dates) over a stretch of real time as sorted UTC intervals with running totals;
//! the business time between two instants is then two binary searches. Windows follow
//! the zone's calendar: on a DST day a 00:00-24:00 window is 23 or 25 hours long, a
//! window edge that falls in the skipped hour opens at the first instant after it, and an
//! edge on a repeated local time takes its first occurrence.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::model::schedule::Hours;

const MICROS_PER_SEC: i64 = 1_000_000;

/// A schedule's open time over a stretch of real time, as sorted UTC intervals.
#[derive(Debug, Clone, Default)]
pub struct BusinessClock {
    /// Open intervals `[start, end)`, unix microseconds, sorted and disjoint.
    open: Vec<(i64, i64)>,
    /// `before[i]`: open microseconds of `open[..i]`; one longer than `open`.
    before: Vec<i64>,
}

impl BusinessClock {
    /// The open intervals of `hours` in `tz` over every local day that `[from, to]`
    /// touches (plus a day either side). Instants outside that stretch count as closed.
    pub fn new(tz: Tz, hours: &Hours, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        let first = from.with_timezone(&tz).date_naive().pred_opt();
        let last = to.with_timezone(&tz).date_naive().succ_opt();
        let mut clock = BusinessClock::default();
        let (Some(mut day), Some(last)) = (first, last) else {
            clock.before.push(0);
            return clock;
        };
        while day <= last {
            if !hours.holidays.contains(&day) {
                let weekday = day.weekday().number_from_monday();
                for w in hours
                    .windows
                    .iter()
                    .filter(|w| u32::from(w.weekday) == weekday)
                {
                    let start = local_instant(tz, day, w.start);
                    let end = local_instant(tz, day, w.end);
                    clock.push(start, end);
                }
            }
            match day.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        clock.before = Vec::with_capacity(clock.open.len() + 1);
        let mut total = 0i64;
        clock.before.push(0);
        for &(s, e) in &clock.open {
            total += e - s;
            clock.before.push(total);
        }
        clock
    }

    /// Adds `[start, end)`, merged with the previous interval when they touch.
    fn push(&mut self, start: i64, end: i64) {
        let start = self.open.last().map_or(start, |&(_, e)| start.max(e));
        if end <= start {
            return;
        }
        match self.open.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.open.push((start, end)),
        }
    }

    /// Open microseconds before `t`.
    fn open_before(&self, t: i64) -> i64 {
        let i = self.open.partition_point(|&(_, e)| e <= t);
        let whole = self.before.get(i).copied().unwrap_or(0);
        match self.open.get(i) {
            Some(&(s, _)) if s < t => whole + (t - s),
            _ => whole,
        }
    }

    /// Open microseconds in `[a, b)` (0 when `b <= a`); `a` and `b` are unix microseconds.
    pub fn between(&self, a: i64, b: i64) -> i64 {
        if b <= a {
            return 0;
        }
        self.open_before(b) - self.open_before(a)
    }

    /// Whether the instant `t` (unix microseconds) falls in an open window.
    pub fn is_open(&self, t: i64) -> bool {
        let i = self.open.partition_point(|&(_, e)| e <= t);
        self.open.get(i).is_some_and(|&(s, _)| s <= t)
    }

    /// Number of open intervals (after merging).
    pub fn interval_count(&self) -> usize {
        self.open.len()
    }
}

/// The unix microsecond at which local `date` + `minute` minutes happens in `tz`:
/// the earlier one of a repeated local time, the end of the gap for a skipped one.
fn local_instant(tz: Tz, date: NaiveDate, minute: u16) -> i64 {
    let naive = date.and_time(chrono::NaiveTime::MIN) + Duration::minutes(i64::from(minute));
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.timestamp_micros(),
        LocalResult::None => after_gap(tz, naive),
    }
}

/// The first instant whose local time in `tz` is at or after `naive` (a local time the
/// zone skips), by bisection over the day around it.
fn after_gap(tz: Tz, naive: NaiveDateTime) -> i64 {
    let guess = naive.and_utc().timestamp();
    let (mut lo, mut hi) = (guess - 2 * 86_400, guess + 2 * 86_400);
    let local_at = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .map(|t| tz.from_utc_datetime(&t.naive_utc()).naive_local())
    };
    // local_at(lo) < naive <= local_at(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local_at(mid).is_some_and(|l| l >= naive) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi * MICROS_PER_SEC
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::schedule::Window;

    const HOUR: i64 = 3_600 * MICROS_PER_SEC;

    fn weekdays_9_to_18() -> Hours {
        Hours {
            windows: (1..=5)
                .map(|weekday| Window {
                    weekday,
                    start: 9 * 60,
                    end: 18 * 60,
                })
                .collect(),
            holidays: BTreeSet::new(),
        }
    }

    fn at(tz: Tz, y: i32, m: u32, d: u32, h: u32, mi: u32) -> i64 {
        tz.with_ymd_and_hms(y, m, d, h, mi, 0)
            .earliest()
            .unwrap()
            .timestamp_micros()
    }

    fn clock(tz: Tz, hours: &Hours, from: i64, to: i64) -> BusinessClock {
        BusinessClock::new(
            tz,
            hours,
            DateTime::from_timestamp_micros(from).unwrap(),
            DateTime::from_timestamp_micros(to).unwrap(),
        )
    }

    #[test]
    fn a_friday_evening_message_answered_on_monday_waited_one_business_hour() {
        let tz = chrono_tz::Asia::Shanghai;
        let hours = weekdays_9_to_18();
        // Friday 2024-03-01 17:30 to Monday 2024-03-04 09:30.
        let (a, b) = (at(tz, 2024, 3, 1, 17, 30), at(tz, 2024, 3, 4, 9, 30));
        let c = clock(tz, &hours, a, b);
        assert_eq!(c.between(a, b), HOUR);
        // Inside one window: wall time.
        let (x, y) = (at(tz, 2024, 3, 4, 10, 0), at(tz, 2024, 3, 4, 12, 15));
        assert_eq!(c.between(x, y), 2 * HOUR + HOUR / 4);
        // Entirely over the weekend: nothing.
        let (s, t) = (at(tz, 2024, 3, 2, 10, 0), at(tz, 2024, 3, 3, 16, 0));
        assert_eq!(c.between(s, t), 0);
        assert_eq!(c.between(b, a), 0, "reversed");
    }

    #[test]
    fn an_instant_is_open_from_a_window_start_up_to_its_end() {
        let tz = chrono_tz::Asia::Shanghai;
        let hours = weekdays_9_to_18();
        let (a, b) = (at(tz, 2024, 3, 1, 0, 0), at(tz, 2024, 3, 4, 23, 0));
        let c = clock(tz, &hours, a, b);
        assert!(c.is_open(at(tz, 2024, 3, 1, 9, 0)), "the start is open");
        assert!(c.is_open(at(tz, 2024, 3, 1, 17, 59)));
        assert!(!c.is_open(at(tz, 2024, 3, 1, 18, 0)), "the end is closed");
        assert!(!c.is_open(at(tz, 2024, 3, 2, 12, 0)), "Saturday");
        assert!(!c.is_open(at(tz, 2024, 3, 1, 8, 59)));
    }

    #[test]
    fn holidays_are_closed() {
        let tz = chrono_tz::Asia::Shanghai;
        let mut hours = weekdays_9_to_18();
        hours
            .holidays
            .insert(NaiveDate::from_ymd_opt(2024, 3, 4).unwrap());
        let (a, b) = (at(tz, 2024, 3, 1, 17, 30), at(tz, 2024, 3, 5, 9, 30));
        assert_eq!(clock(tz, &hours, a, b).between(a, b), HOUR);
    }

    #[test]
    fn dst_days_follow_the_local_calendar() {
        // Berlin springs forward on 2024-03-31 (02:00 -> 03:00): a 00:00-24:00 Sunday
        // window is 23 hours long, and one that opens at 02:30 opens at 03:00.
        let tz = chrono_tz::Europe::Berlin;
        let all_sunday = Hours {
            windows: vec![Window {
                weekday: 7,
                start: 0,
                end: 1440,
            }],
            holidays: BTreeSet::new(),
        };
        let (a, b) = (at(tz, 2024, 3, 30, 12, 0), at(tz, 2024, 4, 1, 12, 0));
        assert_eq!(clock(tz, &all_sunday, a, b).between(a, b), 23 * HOUR);
        // Falls back on 2024-10-27: 25 hours.
        let (a, b) = (at(tz, 2024, 10, 26, 12, 0), at(tz, 2024, 10, 28, 12, 0));
        assert_eq!(clock(tz, &all_sunday, a, b).between(a, b), 25 * HOUR);

        let gap_window = Hours {
            windows: vec![Window {
                weekday: 7,
                start: 150,
                end: 240,
            }],
            holidays: BTreeSet::new(),
        };
        let (a, b) = (at(tz, 2024, 3, 30, 12, 0), at(tz, 2024, 4, 1, 12, 0));
        assert_eq!(clock(tz, &gap_window, a, b).between(a, b), HOUR);
    }

    #[test]
    fn outside_the_stretch_counts_as_closed_and_touching_windows_merge() {
        let tz = chrono_tz::UTC;
        let hours = Hours {
            windows: vec![
                Window {
                    weekday: 1,
                    start: 22 * 60,
                    end: 1440,
                },
                Window {
                    weekday: 2,
                    start: 0,
                    end: 120,
                },
            ],
            holidays: BTreeSet::new(),
        };
        let (a, b) = (at(tz, 2024, 3, 4, 0, 0), at(tz, 2024, 3, 5, 23, 0));
        let c = clock(tz, &hours, a, b);
        assert_eq!(c.interval_count(), 1);
        assert_eq!(c.between(a, b), 4 * HOUR);
        let far = at(tz, 2025, 3, 4, 0, 0);
        assert_eq!(c.between(b, far), 0);
    }
}

//! Business hours: a weekly schedule of open windows in an IANA zone, with holidays.
//! Plain data with its parsing and checks; stored as JSON beside its name and zone.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Most windows per weekday.
pub const MAX_WINDOWS_PER_DAY: usize = 7;
/// Most holidays of one schedule.
pub const MAX_HOLIDAYS: usize = 1000;

/// One open window: a weekday (1 = Monday .. 7 = Sunday) and minutes of the local day,
/// `start < end <= 1440`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    /// ISO weekday, 1 = Monday.
    pub weekday: u8,
    /// Opening minute of the day.
    pub start: u16,
    /// Closing minute of the day (1440 = midnight at the end of the day).
    pub end: u16,
}

/// What is stored of a schedule besides its name and zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hours {
    /// Open windows, sorted.
    pub windows: Vec<Window>,
    /// Closed days, in the schedule's zone.
    pub holidays: BTreeSet<NaiveDate>,
}

/// Minutes of the day of `HH:MM`; `24:00` only when `end_of_day` is allowed.
pub fn parse_hhmm(s: &str, end_of_day: bool) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end_of_day => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// `HH:MM` of a minute of the day (1440 is `24:00`).
pub fn format_hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Sorts the windows and says what is wrong with them, if anything: windows of one
/// weekday that overlap, or more than [`MAX_WINDOWS_PER_DAY`] of them.
pub fn check_windows(windows: &mut [Window]) -> Result<(), String> {
    windows.sort_unstable();
    for day in 1..=7u8 {
        let of_day: Vec<&Window> = windows.iter().filter(|w| w.weekday == day).collect();
        if of_day.len() > MAX_WINDOWS_PER_DAY {
            return Err(format!(
                "at most {MAX_WINDOWS_PER_DAY} windows per weekday (weekday {day} has {})",
                of_day.len()
            ));
        }
        if let Some(pair) = of_day.windows(2).find(|p| p[1].start < p[0].end) {
            return Err(format!(
                "windows {}-{} and {}-{} of weekday {day} overlap",
                format_hhmm(pair[0].start),
                format_hhmm(pair[0].end),
                format_hhmm(pair[1].start),
                format_hhmm(pair[1].end)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_minutes_and_24_00_only_as_an_end() {
        assert_eq!(parse_hhmm("09:30", false), Some(570));
        assert_eq!(parse_hhmm("00:00", false), Some(0));
        assert_eq!(parse_hhmm("23:59", true), Some(1439));
        assert_eq!(parse_hhmm("24:00", true), Some(1440));
        for bad in [
            "24:00", "9:30", "09:60", "25:00", "0930", "", "ab:cd", "-1:00",
        ] {
            assert_eq!(parse_hhmm(bad, false), None, "{bad}");
        }
        assert_eq!(format_hhmm(1440), "24:00");
        assert_eq!(format_hhmm(570), "09:30");
    }

    #[test]
    fn windows_are_sorted_and_overlaps_refused() {
        let w = |weekday, start, end| Window {
            weekday,
            start,
            end,
        };
        let mut ok = vec![
            w(2, 780, 1080),
            w(1, 540, 720),
            w(2, 540, 720),
            w(1, 780, 1080),
        ];
        assert_eq!(check_windows(&mut ok), Ok(()));
        assert_eq!(ok[0], w(1, 540, 720));
        // Touching windows are fine; overlapping ones are not.
        assert_eq!(check_windows(&mut [w(3, 540, 720), w(3, 720, 800)]), Ok(()));
        let err = check_windows(&mut [w(3, 540, 721), w(3, 720, 800)]).unwrap_err();
        assert!(err.contains("09:00-12:01 and 12:00-13:20"), "{err}");
        let mut many: Vec<Window> = (0..8).map(|i| w(5, i * 60, i * 60 + 30)).collect();
        assert!(check_windows(&mut many).unwrap_err().contains("at most 7"));
    }
}

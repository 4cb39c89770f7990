//! UTC time as the service stores it: microseconds (`DATETIME(6)`), within
//! 1900-01-01..9999-12-31. Every incoming time is truncated to whole microseconds before
//! it is stored or compared.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Earliest accepted time (stored dates must fit MySQL's DATETIME range comfortably).
pub const MIN_TIME: NaiveDateTime = match NaiveDate::from_ymd_opt(1900, 1, 1) {
    Some(d) => match d.and_hms_opt(0, 0, 0) {
        Some(t) => t,
        None => NaiveDateTime::MIN,
    },
    None => NaiveDateTime::MIN,
};

/// Latest accepted time.
pub const MAX_TIME: NaiveDateTime = match NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(d) => match d.and_hms_opt(0, 0, 0) {
        Some(t) => t,
        None => NaiveDateTime::MAX,
    },
    None => NaiveDateTime::MAX,
};

/// The current UTC time, truncated to microseconds.
pub fn now() -> NaiveDateTime {
    truncate_micros(Utc::now().naive_utc())
}

/// Drops sub-microsecond precision.
pub fn truncate_micros(t: NaiveDateTime) -> NaiveDateTime {
    DateTime::from_timestamp_micros(t.and_utc().timestamp_micros()).map_or(t, |d| d.naive_utc())
}

/// Microseconds since the Unix epoch of a stored time.
pub fn micros(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_micros()
}

/// A stored time from microseconds since the Unix epoch.
pub fn from_micros(us: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_micros(us).map(|d| d.naive_utc())
}

/// Midnight UTC of a day of March 2024, for tests.
#[cfg(test)]
pub(crate) fn march_2024(day: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 3, day)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or(NaiveDateTime::MIN)
}

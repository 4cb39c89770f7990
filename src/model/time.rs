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

/// A time as SQLite holds it (`YYYY-MM-DD HH:MM:SS`, then `.` and 1 to 9 digits of the
/// second when it has a fraction: diesel's `%F %T%.f`), read without chrono's format
/// machinery; `None` for any other text, which the caller leaves to chrono. Whatever it
/// accepts, chrono's `%F %T%.f` reads as the same time.
pub fn parse_stored(text: &str) -> Option<NaiveDateTime> {
    let (head, fraction) = text.as_bytes().split_at_checked(19)?;
    if [4, 7, 10, 13, 16].map(|i| head[i]) != *b"-- ::" {
        return None;
    }
    let nanos = match fraction {
        [] => 0,
        [b'.', rest @ ..] if (1..=9).contains(&rest.len()) => {
            decimal(rest)? * 10u32.pow(9 - rest.len() as u32)
        }
        _ => return None,
    };
    let year = i32::try_from(decimal(&head[0..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, decimal(&head[5..7])?, decimal(&head[8..10])?)?.and_hms_nano_opt(
        decimal(&head[11..13])?,
        decimal(&head[14..16])?,
        decimal(&head[17..19])?,
        nanos,
    )
}

/// The value of ASCII decimal digits (at most 9 of them), `None` if one is not a digit.
fn decimal(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// Midnight UTC of a day of March 2024, for tests.
#[cfg(test)]
pub(crate) fn march_2024(day: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 3, day)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or(NaiveDateTime::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// chrono's reading of a stored time (diesel's first SQLite format).
    fn chrono_reads(text: &str) -> Option<NaiveDateTime> {
        NaiveDateTime::parse_from_str(text, "%F %T%.f").ok()
    }

    #[test]
    fn stored_times_read_as_chrono_reads_them() {
        for text in [
            "2025-03-04 05:06:07",
            "2025-03-04 05:06:07.1",
            "2025-03-04 05:06:07.123",
            "2025-03-04 05:06:07.123456",
            "2025-03-04 05:06:07.123456789",
            "1900-01-01 00:00:00",
            "9999-12-31 23:59:59.999999",
            "2024-02-29 12:00:00",
        ] {
            assert_eq!(parse_stored(text), chrono_reads(text), "{text}");
            assert!(parse_stored(text).is_some(), "{text}");
        }
        // Left to chrono: other forms, impossible dates, a leap second, stray text.
        for text in [
            "2025-03-04T05:06:07",
            "2025-03-04 05:06:07.",
            "2025-03-04 05:06:07.1234567890",
            "2025-03-04 05:06:07+08:00",
            "2025-3-04 05:06:07",
            "2025-02-29 05:06:07",
            "2025-03-04 24:00:00",
            "2025-03-04 23:59:60",
            "2025-03-04 05:06:0x",
            "2460000.5",
            "",
            "२०२५-03-04 05:06:07",
        ] {
            assert_eq!(parse_stored(text), None, "{text}");
        }
    }

    /// Texts shaped like stored times, many of them not quite: day 31 of short months,
    /// hour 24, second 60, a dot without digits, ten digits of fraction.
    const NEAR_STORED: &str = "[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]) \
         ([01][0-9]|2[0-4]):[0-5][0-9]:[0-6][0-9](\\.[0-9]{0,10})?";

    proptest! {
        /// Every time diesel writes to SQLite reads back as itself.
        #[test]
        fn a_written_time_reads_back(us in micros(MIN_TIME)..micros(MAX_TIME)) {
            let t = from_micros(us).unwrap_or(MIN_TIME);
            let text = t.format("%F %T%.f").to_string();
            prop_assert_eq!(parse_stored(&text), Some(t));
        }

        /// Whatever it accepts, chrono reads as the same time.
        #[test]
        fn what_it_accepts_chrono_reads_alike(text in NEAR_STORED) {
            if let Some(t) = parse_stored(&text) {
                prop_assert_eq!(Some(t), chrono_reads(&text));
            }
        }
    }
}

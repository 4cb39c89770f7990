//! Conversions between protobuf well-known types (`Timestamp`, `Duration`) and the
//! service's UTC times (see [`crate::model::time`]).

use chrono::{DateTime, NaiveDateTime};

use crate::model::time::{MAX_TIME, MIN_TIME};

/// A stored UTC time as a protobuf timestamp.
pub fn to_timestamp(t: NaiveDateTime) -> prost_types::Timestamp {
    let utc = t.and_utc();
    prost_types::Timestamp {
        seconds: utc.timestamp(),
        nanos: i32::try_from(utc.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp as a UTC time, truncated to microseconds; an error text when
/// it is malformed or outside 1900-01-01..9999-12-31.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Result<NaiveDateTime, String> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err("nanos must be in 0..999,999,999".to_owned());
    }
    let t = DateTime::from_timestamp(ts.seconds, (ts.nanos / 1000 * 1000) as u32)
        .map(|d| d.naive_utc())
        .ok_or_else(|| "is out of range".to_owned())?;
    if !(MIN_TIME..=MAX_TIME).contains(&t) {
        return Err("must be between 1900-01-01 and 9999-12-31".to_owned());
    }
    Ok(t)
}

/// A protobuf duration from microseconds.
pub fn duration_from_micros(us: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: us / 1_000_000,
        nanos: i32::try_from((us % 1_000_000) * 1000).unwrap_or(0),
    }
}

/// Microseconds of a protobuf duration, or an error text when it is malformed.
pub fn duration_to_micros(d: &prost_types::Duration) -> Result<i64, String> {
    // A range check, not `nanos.abs()`: that overflows (panics in debug) on i32::MIN.
    if !(-999_999_999..=999_999_999).contains(&d.nanos)
        || (d.seconds > 0 && d.nanos < 0)
        || (d.seconds < 0 && d.nanos > 0)
    {
        return Err("nanos must be within ±999,999,999 and carry the sign of seconds".to_owned());
    }
    d.seconds
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add(i64::from(d.nanos / 1000)))
        .ok_or_else(|| "is out of range".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_at_microsecond_precision() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        };
        let t = from_timestamp(&ts).unwrap();
        assert_eq!(
            to_timestamp(t),
            prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_000
            }
        );
    }

    #[test]
    fn out_of_range_timestamps_are_rejected() {
        let bad = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(from_timestamp(&bad).is_err());
        let neg = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert!(from_timestamp(&neg).is_err());
    }

    #[test]
    fn durations_convert_both_ways() {
        let d = duration_from_micros(90_500_000);
        assert_eq!((d.seconds, d.nanos), (90, 500_000_000));
        assert_eq!(duration_to_micros(&d).unwrap(), 90_500_000);
    }

    #[test]
    fn durations_with_nanos_out_of_range_are_rejected_without_overflow() {
        // Found by the fuzz suite: `i32::MIN.abs()` overflowed in the check.
        for (seconds, nanos) in [
            (0, i32::MIN),
            (-1, i32::MIN),
            (1, i32::MAX),
            (0, 1_000_000_000),
            (0, -1_000_000_000),
        ] {
            let d = prost_types::Duration { seconds, nanos };
            assert!(duration_to_micros(&d).is_err(), "{d:?}");
        }
        let d = prost_types::Duration {
            seconds: -1,
            nanos: -999_999_999,
        };
        assert_eq!(duration_to_micros(&d).unwrap(), -1_999_999);
    }
}

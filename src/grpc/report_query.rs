//! Validation shared by the report requests of `grpc::analytics` and
//! `grpc::service_levels`: customer scope, required range, granularity and zone.

use chrono::{Months, NaiveDateTime};
use chrono_tz::Tz;

use super::positive_id;
use crate::analytics::buckets::Granularity;
use crate::error::{Error, Violations};
use crate::grpc::validate::{self, time_zone};
use crate::pb;
use crate::service::reports::{max_range_months, MAX_SCOPE_CUSTOMERS};

/// `value` when nothing was recorded in `v`, INVALID_ARGUMENT with every violation
/// otherwise.
pub(crate) fn finish<T>(v: Violations, value: Option<T>) -> Result<T, Error> {
    match value {
        Some(value) if v.is_empty() => Ok(value),
        _ => Err(v
            .finish(())
            .err()
            .unwrap_or_else(|| Error::Internal("validation failed without a violation".into()))),
    }
}

/// A required `[start, end)` range, at most `max_months` long when given.
pub(crate) fn required_range(
    v: &mut Violations,
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
    max_months: Option<u32>,
) -> Option<(NaiveDateTime, NaiveDateTime)> {
    if start.is_none() {
        v.add("start_time", "is required");
    }
    if end.is_none() {
        v.add("end_time", "is required");
    }
    let (s, e) = validate::time_range(v, "start_time", start, "end_time", end);
    let (s, e) = (s?, e?);
    if e <= s {
        return None;
    }
    if let Some(months) = max_months {
        if s.checked_add_months(Months::new(months))
            .is_some_and(|limit| e > limit)
        {
            let what = if months % 12 == 0 {
                format!("{} years", months / 12)
            } else {
                format!("{months} months")
            };
            v.add(
                "end_time",
                format!("must be at most {what} after start_time"),
            );
            return None;
        }
    }
    Some((s, e))
}

/// The customers a report covers: at most [`MAX_SCOPE_CUSTOMERS`] positive ids,
/// sorted and de-duplicated.
pub(crate) fn customer_ids(v: &mut Violations, ids: &[i64]) -> Vec<i64> {
    if ids.len() > MAX_SCOPE_CUSTOMERS {
        v.add(
            "customer_ids",
            format!(
                "at most {MAX_SCOPE_CUSTOMERS} customers (got {})",
                ids.len()
            ),
        );
    }
    for (i, &id) in ids.iter().enumerate() {
        positive_id(v, &format!("customer_ids[{i}]"), id);
    }
    let mut out = ids.to_vec();
    out.sort_unstable();
    out.dedup();
    out
}

/// A validated range and zone of a bucketed report, `None` when either is invalid.
pub(crate) type Window = Option<((NaiveDateTime, NaiveDateTime), Tz)>;

/// What every bucketed report takes: its customers, the granularity, a required range
/// no longer than the granularity allows, and the zone; each violation recorded in `v`.
pub(crate) fn bucketed_window(
    v: &mut Violations,
    ids: &[i64],
    granularity_value: i32,
    (start, end): (
        Option<&prost_types::Timestamp>,
        Option<&prost_types::Timestamp>,
    ),
    zone: &str,
) -> (Vec<i64>, Granularity, Window) {
    let ids = customer_ids(v, ids);
    let granularity = granularity(v, granularity_value);
    let range = required_range(v, start, end, Some(max_range_months(granularity)));
    let tz = time_zone(v, zone);
    (ids, granularity, range.zip(tz))
}

/// The bucket size of a report; unspecified is a day.
pub(crate) fn granularity(v: &mut Violations, value: i32) -> Granularity {
    match pb::Granularity::try_from(value) {
        Ok(pb::Granularity::Unspecified | pb::Granularity::Day) => Granularity::Day,
        Ok(pb::Granularity::Hour) => Granularity::Hour,
        Ok(pb::Granularity::Week) => Granularity::Week,
        Ok(pb::Granularity::Month) => Granularity::Month,
        Err(_) => {
            v.add("granularity", format!("{value} is not a known value"));
            Granularity::Day
        }
    }
}

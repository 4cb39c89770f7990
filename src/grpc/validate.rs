//! Field validators and normalizers shared by every service: names, emails, phones,
//! dates, tags, money, idempotency keys and free text.
//!
//! Each returns the normalized value or records a violation naming the field, so a
//! request's every mistake is reported at once.

use chrono::{Datelike, NaiveDate, NaiveDateTime};

use crate::error::Violations;
use crate::model::phone::PhoneRegion;

/// Longest accepted idempotency key.
pub const MAX_REQUEST_ID_CHARS: usize = 64;

/// A required, trimmed text of 1..=max characters.
pub fn required_text(v: &mut Violations, field: &str, value: &str, max: usize) -> String {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        v.add(field, "is required");
    } else {
        check_len(v, field, trimmed, max);
    }
    trimmed.to_owned()
}

/// An optional text of at most `max` characters (kept as given, trimmed).
pub fn optional_text(v: &mut Violations, field: &str, value: &str, max: usize) -> String {
    let trimmed = value.trim();
    check_len(v, field, trimmed, max);
    trimmed.to_owned()
}

fn check_len(v: &mut Violations, field: &str, value: &str, max: usize) {
    let chars = value.chars().count();
    if chars > max {
        v.add(
            field,
            format!("must be at most {max} characters (got {chars})"),
        );
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        v.add(field, "must not contain control characters");
    }
}

/// An optional idempotency key: `None` when empty.
pub fn request_id(v: &mut Violations, field: &str, value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let chars = value.chars().count();
    if chars > MAX_REQUEST_ID_CHARS {
        v.add(
            field,
            format!("must be at most {MAX_REQUEST_ID_CHARS} characters (got {chars})"),
        );
    }
    if value.chars().any(char::is_control) || value.trim() != value {
        v.add(
            field,
            "must not contain control characters or surrounding spaces",
        );
    }
    Some(value.to_owned())
}

/// An email address, lower-cased; empty stays empty unless `required`.
pub fn email(v: &mut Violations, field: &str, value: &str, required: bool) -> String {
    let normalized = value.trim().to_lowercase();
    if normalized.is_empty() {
        if required {
            v.add(field, "is required");
        }
        return normalized;
    }
    if !is_valid_email(&normalized) {
        v.add(
            field,
            format!(
                "{} is not a valid email address",
                crate::error::quote(value)
            ),
        );
    }
    normalized
}

/// RFC 5322 syntax by `email_address`, with a dotted domain name (no IP literal, no
/// display name) and at most 254 bytes in all (RFC 5321's path limit).
fn is_valid_email(s: &str) -> bool {
    let options = email_address::Options::default()
        .with_required_tld()
        .without_domain_literal()
        .without_display_text();
    s.len() <= 254
        && email_address::EmailAddress::parse_with_options(s, options).is_ok_and(|address| {
            // Quoted local parts and `_` in a domain label are valid RFC 5322 syntax but
            // not mail a CRM sends to (RFC 5321 host names have no `_`): still refused.
            !address.local_part().starts_with('"') && !address.domain().contains('_')
        })
}

/// A phone number in E.164, parsed and validated by libphonenumber's rules (see
/// [`crate::model::phone`]): national numbers are read in `region`. Empty stays empty.
pub fn phone(v: &mut Violations, field: &str, value: &str, region: PhoneRegion) -> String {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return String::new();
    }
    match crate::model::phone::normalize(region, trimmed) {
        Ok(e164) => e164,
        Err(why) => {
            let hint = match why {
                crate::model::phone::PhoneError::NotANumber => {
                    format!(" (digits, with a +country code unless it is a number of {region})")
                }
                _ => String::new(),
            };
            v.add(field, format!("{} {why}{hint}", crate::error::quote(value)));
            trimmed.to_owned()
        }
    }
}

/// A `YYYY-MM-DD` birth date: a real date, not in the future, not before 1900.
pub fn birth_date(
    v: &mut Violations,
    field: &str,
    value: &str,
    today: NaiveDate,
) -> Option<NaiveDate> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let parsed = (value.len() == 10)
        .then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
        .flatten();
    match parsed {
        None => {
            v.add(
                field,
                format!(
                    "{} is not a date in YYYY-MM-DD form",
                    crate::error::quote(value)
                ),
            );
            None
        }
        Some(d) if d > today => {
            v.add(field, "must not be in the future");
            None
        }
        Some(d) if d.year() < 1900 => {
            v.add(field, "must not be before 1900-01-01");
            None
        }
        Some(d) => Some(d),
    }
}

/// Whole years between `birth` and `today`.
pub fn age(birth: NaiveDate, today: NaiveDate) -> i32 {
    let mut years = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years.max(0)
}

/// Tags: trimmed, 1..=50 characters each, at most 20, duplicates dropped (order kept).
pub fn tags(v: &mut Violations, field: &str, values: &[String]) -> Vec<String> {
    if values.len() > 20 {
        v.add(field, format!("at most 20 tags (got {})", values.len()));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for (i, tag) in values.iter().enumerate() {
        let t = required_text(v, &format!("{field}[{i}]"), tag, 50);
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// An enum value that must be one of the known, non-zero values.
pub fn known_enum<E: TryFrom<i32>>(v: &mut Violations, field: &str, value: i32, required: bool) {
    if value == 0 {
        if required {
            v.add(field, "is required");
        }
    } else if E::try_from(value).is_err() {
        v.add(field, format!("{value} is not a known value"));
    }
}

/// A time that must lie in the accepted range; `None` when absent.
pub fn time(
    v: &mut Violations,
    field: &str,
    value: Option<&prost_types::Timestamp>,
) -> Option<NaiveDateTime> {
    let ts = value?;
    match crate::grpc::convert::from_timestamp(ts) {
        Ok(t) => Some(t),
        Err(why) => {
            v.add(field, why);
            None
        }
    }
}

/// An optional `[start, end)` range: end must be after start when both are given.
pub fn time_range(
    v: &mut Violations,
    start_field: &str,
    start: Option<&prost_types::Timestamp>,
    end_field: &str,
    end: Option<&prost_types::Timestamp>,
) -> (Option<NaiveDateTime>, Option<NaiveDateTime>) {
    let s = time(v, start_field, start);
    let e = time(v, end_field, end);
    if let (Some(s), Some(e)) = (s, e) {
        if e <= s {
            v.add(end_field, format!("must be after {start_field}"));
        }
    }
    (s, e)
}

/// Money with a currency code, nanos in range and consistent signs.
pub fn money(
    v: &mut Violations,
    field: &str,
    value: Option<&crate::pb::Money>,
) -> Option<crate::pb::Money> {
    let Some(m) = value else {
        v.add(field, "is required");
        return None;
    };
    let mut ok = true;
    if m.currency_code.len() != 3 || !m.currency_code.chars().all(|c| c.is_ascii_uppercase()) {
        v.add(
            format!("{field}.currency_code"),
            format!(
                "{:?} is not a three-letter upper-case ISO 4217 code",
                m.currency_code
            ),
        );
        ok = false;
    }
    if !(-999_999_999..=999_999_999).contains(&m.nanos) {
        v.add(format!("{field}.nanos"), "must be within ±999,999,999");
        ok = false;
    } else if (m.units > 0 && m.nanos < 0) || (m.units < 0 && m.nanos > 0) {
        v.add(format!("{field}.nanos"), "must have the same sign as units");
        ok = false;
    }
    ok.then(|| m.clone())
}

/// A channel filter: known, non-zero channels, sorted and de-duplicated.
pub(crate) fn channels(v: &mut Violations, field: &str, values: &[i32]) -> Vec<i32> {
    let mut out = Vec::with_capacity(values.len());
    for (i, c) in values.iter().enumerate() {
        known_enum::<crate::pb::Channel>(v, &format!("{field}[{i}]"), *c, true);
        out.push(*c);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// An IANA time zone named in the request's `time_zone` field.
pub(crate) fn time_zone(v: &mut Violations, name: &str) -> Option<chrono_tz::Tz> {
    let tz = crate::analytics::buckets::parse_time_zone(name);
    if tz.is_none() {
        v.add(
            "time_zone",
            format!(
                "{} is not a known IANA time zone (e.g. \"Asia/Shanghai\")",
                crate::error::quote(name)
            ),
        );
    }
    tz
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
    }

    #[test]
    fn emails_are_lowercased_and_validated() {
        let mut v = Violations::new();
        assert_eq!(
            email(&mut v, "e", " ZhangSan@Example.COM ", false),
            "zhangsan@example.com"
        );
        for good in ["a+b@c.co", "张三@例子.中国", "o'brien@example.ie", "x@y.z"] {
            email(&mut v, "e", good, false);
        }
        email(
            &mut v,
            "e",
            &format!("{}@{}.com", "a".repeat(64), "b".repeat(63)),
            false,
        );
        assert!(v.is_empty(), "{:?}", v.into_inner());
        let mut v = Violations::new();
        email(&mut v, "e", &format!("{}@b.com", "a".repeat(65)), false);
        let label = "b".repeat(63);
        let long_domain = [label.as_str(); 4].join(".");
        email(&mut v, "e", &format!("a@{long_domain}"), false);
        assert_eq!(v.into_inner().len(), 2);
        for bad in [
            "no-at",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            ".a@b.com",
            "a@-b.com",
            "a..b@c.com",
            "a.@c.com",
            "a@b..com",
            "a@b-.com",
            "a@b_c.com",
            "\"a b\"@c.com",
            "a@[127.0.0.1]",
            "Name <a@b.com>",
            "a(comment)@b.com",
        ] {
            let mut v = Violations::new();
            email(&mut v, "e", bad, false);
            assert!(!v.is_empty(), "{bad} accepted");
        }
    }

    #[test]
    fn phones_are_normalized_to_e164() {
        let cn = PhoneRegion::default();
        let mut v = Violations::new();
        assert_eq!(
            phone(&mut v, "p", "+86 138-0000-0000", cn),
            "+8613800000000"
        );
        assert_eq!(phone(&mut v, "p", "0086 13800000000", cn), "+8613800000000");
        assert_eq!(phone(&mut v, "p", "(010) 1234 5678", cn), "+861012345678");
        assert_eq!(phone(&mut v, "p", "", cn), "");
        assert!(v.is_empty());
        phone(&mut v, "p", "call me", cn);
        phone(&mut v, "q", "1380013800", cn);
        let fields: Vec<String> = v.into_inner().into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["p", "q"]);
    }

    #[test]
    fn birth_dates_must_be_real_past_dates() {
        let mut v = Violations::new();
        assert_eq!(
            birth_date(&mut v, "b", "1990-02-28", today()),
            NaiveDate::from_ymd_opt(1990, 2, 28)
        );
        assert!(v.is_empty());
        for bad in [
            "1990-02-30",
            "1990-2-3",
            "2030-01-01",
            "1800-01-01",
            "yesterday",
        ] {
            let mut v = Violations::new();
            assert_eq!(birth_date(&mut v, "b", bad, today()), None);
            assert!(!v.is_empty(), "{bad} accepted");
        }
    }

    #[test]
    fn age_counts_whole_years() {
        let b = NaiveDate::from_ymd_opt(1990, 11, 26).unwrap();
        assert_eq!(age(b, today()), 35);
        let b = NaiveDate::from_ymd_opt(1990, 11, 25).unwrap();
        assert_eq!(age(b, today()), 36);
    }

    #[test]
    fn tags_are_deduplicated_and_bounded() {
        let mut v = Violations::new();
        let t = tags(
            &mut v,
            "tags",
            &["vip".into(), " vip ".into(), "新客户".into()],
        );
        assert_eq!(t, vec!["vip".to_owned(), "新客户".to_owned()]);
        assert!(v.is_empty());
        tags(&mut v, "tags", &["".into()]);
        assert_eq!(v.into_inner()[0].field, "tags[0]");
    }
}

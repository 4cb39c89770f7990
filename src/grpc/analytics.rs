//! `crm.v1.AnalyticsService`: frequency, content and per-customer reports.
//! Validates every field at once, derives the call's deadline, and converts the figures.

use std::sync::Arc;

use chrono::{DateTime, Months, NaiveDateTime, Utc};
use chrono_tz::Tz;
use tonic::{Request, Response, Status};

use super::communication::channels;
use super::customer::{customer_to_pb, transaction_to_pb};
use super::{positive_id, AppState};
use crate::analytics::buckets::{parse_time_zone, span_days, BucketPlan, Granularity};
use crate::analytics::matching::Matcher;
use crate::convert::{duration_from_micros, now, to_timestamp, MIN_TIME};
use crate::db::analytics::{self as queries, ContentParams, FrequencyParams, Scope};
use crate::db::customers;
use crate::deadline::Deadline;
use crate::error::{Error, Violations};
use crate::pb::{self, analytics_service_server::AnalyticsService};
use crate::validate;

/// Most customers in one report's scope.
pub const MAX_SCOPE_CUSTOMERS: usize = 1000;
/// Most keywords in one content report.
pub const MAX_KEYWORDS: usize = 50;
/// Most patterns in one content report.
pub const MAX_PATTERNS: usize = 20;
/// Largest `top_n`.
pub const MAX_TOP_N: i32 = 1000;
/// Largest `top_terms`.
pub const MAX_TOP_TERMS: i32 = 200;
/// Largest `sample_limit`.
pub const MAX_SAMPLES: i32 = 100;
/// Top terms of customer insights when the request leaves it 0.
const DEFAULT_INSIGHT_TERMS: usize = 10;

/// Implementation of `crm.v1.AnalyticsService`.
#[derive(Debug, Clone)]
pub struct AnalyticsApi {
    state: AppState,
}

impl AnalyticsApi {
    /// A service over the shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

/// A required `[start, end)` range, at most `max_months` long when given.
fn required_range(
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

fn time_zone(v: &mut Violations, name: &str) -> Option<Tz> {
    let tz = parse_time_zone(name);
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

fn customer_ids(v: &mut Violations, ids: &[i64]) -> Vec<i64> {
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

fn bounded(v: &mut Violations, field: &str, value: i32, max: i32) -> usize {
    if !(0..=max).contains(&value) {
        v.add(field, format!("must be between 0 and {max} (got {value})"));
        return 0;
    }
    usize::try_from(value).unwrap_or(0)
}

fn granularity(v: &mut Violations, value: i32) -> Granularity {
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

fn channel_counts(counts: &std::collections::BTreeMap<i32, i64>) -> Vec<pb::ChannelCount> {
    counts
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(&channel, &count)| pb::ChannelCount { channel, count })
        .collect()
}

fn term_counts(terms: Vec<(String, u64)>) -> Vec<pb::TermCount> {
    terms
        .into_iter()
        .map(|(term, count)| pb::TermCount {
            term,
            count: i64::try_from(count).unwrap_or(i64::MAX),
        })
        .collect()
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    to_timestamp(t.naive_utc())
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn get_frequency_report(
        &self,
        request: Request<pb::GetFrequencyReportRequest>,
    ) -> Result<Response<pb::GetFrequencyReportResponse>, Status> {
        let deadline = Deadline::from_metadata(request.metadata(), tokio::time::Instant::now());
        // A deadline that leaves no time is answered before any work (regex compiles
        // included), so short timeouts get DEADLINE_EXCEEDED rather than CANCELLED.
        deadline.check("the report")?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let ids = customer_ids(&mut v, &req.customer_ids);
        let granularity = granularity(&mut v, req.granularity);
        let months = if granularity == Granularity::Hour {
            12
        } else {
            120
        };
        let range = required_range(
            &mut v,
            req.start_time.as_ref(),
            req.end_time.as_ref(),
            Some(months),
        );
        let tz = time_zone(&mut v, &req.time_zone);
        let channels = channels(&mut v, "channels", &req.channels);
        validate::known_enum::<pb::Direction>(&mut v, "direction", req.direction, false);
        let top_n = bounded(&mut v, "top_n", req.top_n, MAX_TOP_N);
        let (Some((start, end)), Some(tz), true) = (range, tz, v.is_empty()) else {
            return Err(v.finish(()).err().unwrap_or_else(|| {
                Error::Internal("validation failed without a violation".into())
            }))?;
        };
        let plan = BucketPlan::new(tz, granularity, utc(start), utc(end));
        let params = FrequencyParams {
            gap_stats: req.include_gap_stats || ids.len() == 1,
            scope: Scope {
                customer_ids: ids,
                channels,
                direction: (req.direction != 0).then_some(req.direction),
                start,
                end,
            },
            plan,
            top_n: top_n as i64,
        };
        let f = queries::frequency(&self.state.db, &params, deadline).await?;

        let days = span_days(tz, utc(start), utc(end));
        let per_day = |n: i64| n as f64 / days as f64;
        let buckets = params
            .plan
            .buckets()
            .iter()
            .zip(&f.buckets)
            .map(|(b, c)| pb::FrequencyBucket {
                start_time: Some(ts(b.start)),
                end_time: Some(ts(b.end)),
                count: c.count,
                channel_counts: channel_counts(&c.channels),
            })
            .collect();
        Ok(Response::new(pb::GetFrequencyReportResponse {
            total_count: f.total,
            span_days: i32::try_from(days).unwrap_or(i32::MAX),
            per_day_average: per_day(f.total),
            channel_counts: channel_counts(&f.channels),
            buckets,
            first_contact_time: f.first.map(to_timestamp),
            last_contact_time: f.last.map(to_timestamp),
            mean_gap: f.mean_gap_us.map(duration_from_micros),
            median_gap: f.median_gap_us.map(duration_from_micros),
            customer_count: f.customer_count,
            top_customers: f
                .top
                .into_iter()
                .map(|t| pb::CustomerFrequency {
                    customer_id: t.customer_id,
                    count: t.count,
                    per_day_average: per_day(t.count),
                    last_contact_time: Some(to_timestamp(t.last_time)),
                })
                .collect(),
            time_zone: tz.name().to_owned(),
        }))
    }

    async fn get_content_report(
        &self,
        request: Request<pb::GetContentReportRequest>,
    ) -> Result<Response<pb::GetContentReportResponse>, Status> {
        let deadline = Deadline::from_metadata(request.metadata(), tokio::time::Instant::now());
        // A deadline that leaves no time is answered before any work (regex compiles
        // included), so short timeouts get DEADLINE_EXCEEDED rather than CANCELLED.
        deadline.check("the report")?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let ids = customer_ids(&mut v, &req.customer_ids);
        let range = required_range(&mut v, req.start_time.as_ref(), req.end_time.as_ref(), None);
        let channels = channels(&mut v, "channels", &req.channels);
        if req.keywords.len() > MAX_KEYWORDS {
            v.add(
                "keywords",
                format!(
                    "at most {MAX_KEYWORDS} keywords (got {})",
                    req.keywords.len()
                ),
            );
        }
        if req.patterns.len() > MAX_PATTERNS {
            v.add(
                "patterns",
                format!(
                    "at most {MAX_PATTERNS} patterns (got {})",
                    req.patterns.len()
                ),
            );
        }
        let too_many = req.keywords.len() > MAX_KEYWORDS || req.patterns.len() > MAX_PATTERNS;
        // Counts are checked before anything is compiled: thousands of queries would
        // cost minutes of CPU just to be rejected.
        let matcher = if too_many || (req.keywords.is_empty() && req.patterns.is_empty()) {
            None
        } else {
            match Matcher::new(&req.keywords, &req.patterns) {
                Ok(m) => Some(Arc::new(m)),
                Err(errors) => {
                    for e in errors {
                        v.add(e.field, e.message);
                    }
                    None
                }
            }
        };
        let top_terms = bounded(&mut v, "top_terms", req.top_terms, MAX_TOP_TERMS);
        let sample_limit = bounded(&mut v, "sample_limit", req.sample_limit, MAX_SAMPLES);
        let (Some((start, end)), true) = (range, v.is_empty()) else {
            return Err(v.finish(()).err().unwrap_or_else(|| {
                Error::Internal("validation failed without a violation".into())
            }))?;
        };
        let params = ContentParams {
            scope: Scope {
                customer_ids: ids,
                channels,
                direction: None,
                start,
                end,
            },
            matcher,
            top_terms,
            sample_limit,
        };
        let f = queries::content(&self.state.db, &params, deadline).await?;
        let counts = |queries: &[String], figures: Vec<queries::MatchFigures>| {
            queries
                .iter()
                .zip(figures)
                .map(|(q, m)| pb::MatchCount {
                    query: q.clone(),
                    message_count: m.messages,
                    customer_count: m.customers,
                })
                .collect()
        };
        Ok(Response::new(pb::GetContentReportResponse {
            scanned_count: f.scanned,
            keywords: counts(&req.keywords, f.keywords),
            patterns: counts(&req.patterns, f.patterns),
            top_terms: term_counts(f.top_terms),
            samples: f
                .samples
                .into_iter()
                .map(|s| pb::ContentSample {
                    communication_id: s.id,
                    customer_id: s.customer_id,
                    occur_time: Some(to_timestamp(s.occur_time)),
                    snippet: s.snippet,
                    matched: s.matched,
                })
                .collect(),
        }))
    }

    async fn get_customer_insights(
        &self,
        request: Request<pb::GetCustomerInsightsRequest>,
    ) -> Result<Response<pb::GetCustomerInsightsResponse>, Status> {
        let deadline = Deadline::from_metadata(request.metadata(), tokio::time::Instant::now());
        // A deadline that leaves no time is answered before any work (regex compiles
        // included), so short timeouts get DEADLINE_EXCEEDED rather than CANCELLED.
        deadline.check("the report")?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let customer_id = positive_id(&mut v, "customer_id", req.customer_id);
        let (start, end) = validate::time_range(
            &mut v,
            "start_time",
            req.start_time.as_ref(),
            "end_time",
            req.end_time.as_ref(),
        );
        let top_terms = match bounded(&mut v, "top_terms", req.top_terms, MAX_TOP_TERMS) {
            0 => DEFAULT_INSIGHT_TERMS,
            n => n,
        };
        let tz = time_zone(&mut v, &req.time_zone);
        let now = now();
        let end = end.unwrap_or(now);
        if let Some(s) = start {
            if req.end_time.is_none() && s >= end {
                v.add("start_time", "must be before end_time (default: now)");
            }
        }
        let (Some(tz), true) = (tz, v.is_empty()) else {
            return Err(v.finish(()).err().unwrap_or_else(|| {
                Error::Internal("validation failed without a violation".into())
            }))?;
        };
        let customer = customers::get(&self.state.db, customer_id).await?;
        let scope = Scope {
            customer_ids: vec![customer_id],
            channels: Vec::new(),
            direction: None,
            start: start.unwrap_or(MIN_TIME),
            end,
        };
        let f = queries::insights(&self.state.db, customer_id, &scope, top_terms, deadline).await?;

        // Without a start the range begins at the customer's first record: its creation,
        // or an earlier (imported) communication.
        let range_start = start.unwrap_or_else(|| {
            f.first.map_or(customer.row.create_time, |t| {
                t.min(customer.row.create_time)
            })
        });
        let days = span_days(tz, utc(range_start), utc(end.max(range_start)));
        Ok(Response::new(pb::GetCustomerInsightsResponse {
            customer: Some(customer_to_pb(customer)),
            total_count: f.total,
            channels: f
                .channels
                .iter()
                .map(|c| pb::ChannelInsight {
                    channel: c.channel,
                    count: c.count,
                    total_duration: Some(duration_from_micros(c.duration_us)),
                })
                .collect(),
            per_day_average: f.total as f64 / days as f64,
            first_contact_time: f.first.map(to_timestamp),
            last_contact_time: f.last.map(to_timestamp),
            days_since_last_contact: f.last.map(|t| (now - t).num_days().max(0)),
            mean_gap: f.mean_gap_us.map(duration_from_micros),
            top_terms: term_counts(f.top_terms),
            transactions: Some(pb::TransactionSummary {
                count: f.transaction_count,
                totals: f
                    .totals
                    .into_iter()
                    .map(|t| pb::Money {
                        currency_code: t.currency_code,
                        units: t.units,
                        nanos: t.nanos,
                    })
                    .collect(),
                last_order: f.last_order.map(transaction_to_pb),
            }),
            service_tickets: Some(pb::TicketSummary {
                total_count: f.ticket_count,
                open_count: f.open_tickets,
                mean_resolution_time: f.mean_resolution_us.map(duration_from_micros),
            }),
        }))
    }
}

//! Requests and responses of the service-level reports (response and resolution times)
//! and of the attention list: validation into `service` queries, figures into protos.
//! The handlers are in `grpc::analytics`.

use chrono::NaiveDateTime;

use super::paging::{self, Fingerprint};
use super::positive_id;
use crate::analytics::waits::WaitFigures;
use crate::error::{Error, Violations};
use crate::grpc::convert::{duration_from_micros, duration_to_micros, to_timestamp};
use crate::grpc::report_query::{bucketed_window, finish, required_range};
use crate::grpc::validate::{self, channels};
use crate::model::time::{micros, now};
use crate::pb;
use crate::service::attention::{
    AttentionItem, AttentionKind, AttentionPage, AttentionPosition, AttentionQuery,
};
use crate::service::service_levels::{WaitQuery, WaitReport};

/// Longest `stale_days`: a hundred years.
pub const MAX_STALE_DAYS: i32 = 36_500;
/// `min_drop_percent` when the request leaves it 0.
pub const DEFAULT_DROP_PERCENT: u32 = 50;
/// `max_average_score` when the request leaves it 0.
pub const DEFAULT_MAX_AVERAGE_SCORE: f64 = 2.5;
/// `min_sentiment_drop` when the request leaves it 0: a tenth of the scale.
pub const DEFAULT_SENTIMENT_DROP: i64 = 100;
/// Page-token kind of the attention list.
const ATTENTION_KIND: &str = "attention";

/// A positive `sla`, in microseconds.
fn sla(v: &mut Violations, value: Option<&prost_types::Duration>) -> Option<i64> {
    let d = value?;
    match duration_to_micros(d) {
        Ok(us) if us > 0 => Some(us),
        Ok(_) => {
            v.add("sla", "must be positive");
            None
        }
        Err(why) => {
            v.add("sla", why);
            None
        }
    }
}

/// `business_hours_id`: 0 for wall-clock time, else a positive id.
fn schedule(v: &mut Violations, id: i64) -> Option<i64> {
    (id != 0).then(|| positive_id(v, "business_hours_id", id))
}

/// The fields the two service-level requests share, in their proto form.
struct WaitFields<'a> {
    customer_ids: &'a [i64],
    granularity: i32,
    range: (
        Option<&'a prost_types::Timestamp>,
        Option<&'a prost_types::Timestamp>,
    ),
    time_zone: &'a str,
    channels: &'a [i32],
    same_channel: bool,
    business_hours_id: i64,
    sla: Option<&'a prost_types::Duration>,
}

/// A validated [`WaitQuery`], every violation at once.
fn wait_query(f: WaitFields<'_>) -> Result<WaitQuery, Error> {
    let mut v = Violations::new();
    let (customer_ids, granularity, window) =
        bucketed_window(&mut v, f.customer_ids, f.granularity, f.range, f.time_zone);
    let channels = channels(&mut v, "channels", f.channels);
    let business_hours_id = schedule(&mut v, f.business_hours_id);
    let sla_micros = sla(&mut v, f.sla);
    let ((start, end), time_zone) = finish(v, window)?;
    Ok(WaitQuery {
        customer_ids,
        channels,
        same_channel: f.same_channel,
        start,
        end,
        time_zone,
        granularity,
        business_hours_id,
        sla_micros,
    })
}

impl TryFrom<pb::GetResponseTimeReportRequest> for WaitQuery {
    type Error = Error;

    fn try_from(req: pb::GetResponseTimeReportRequest) -> Result<Self, Error> {
        wait_query(WaitFields {
            customer_ids: &req.customer_ids,
            granularity: req.granularity,
            range: (req.start_time.as_ref(), req.end_time.as_ref()),
            time_zone: &req.time_zone,
            channels: &req.channels,
            same_channel: req.same_channel,
            business_hours_id: req.business_hours_id,
            sla: req.sla.as_ref(),
        })
    }
}

impl TryFrom<pb::GetResolutionTimeReportRequest> for WaitQuery {
    type Error = Error;

    fn try_from(req: pb::GetResolutionTimeReportRequest) -> Result<Self, Error> {
        wait_query(WaitFields {
            customer_ids: &req.customer_ids,
            granularity: req.granularity,
            range: (req.start_time.as_ref(), req.end_time.as_ref()),
            time_zone: &req.time_zone,
            channels: &[],
            same_channel: false,
            business_hours_id: req.business_hours_id,
            sla: req.sla.as_ref(),
        })
    }
}

/// The proto form of wait figures.
fn wait_stats(f: &WaitFigures) -> pb::WaitStats {
    pb::WaitStats {
        total_count: f.count,
        completed_count: f.completed,
        pending_count: f.pending,
        mean: f.mean.map(duration_from_micros),
        median: f.median.map(duration_from_micros),
        p90: f.p90.map(duration_from_micros),
        completed_over_sla_count: f.completed_over,
        pending_over_sla_count: f.pending_over,
        longest_pending_wait: f.longest_pending.map(duration_from_micros),
        pending_customer_count: f.pending_customers,
    }
}

fn wait_buckets(r: &WaitReport) -> Vec<pb::WaitBucket> {
    r.buckets
        .iter()
        .map(|(b, f)| pb::WaitBucket {
            start_time: Some(to_timestamp(b.start.naive_utc())),
            end_time: Some(to_timestamp(b.end.naive_utc())),
            stats: Some(wait_stats(f)),
        })
        .collect()
}

impl From<WaitReport> for pb::GetResponseTimeReportResponse {
    fn from(r: WaitReport) -> Self {
        pb::GetResponseTimeReportResponse {
            total: Some(wait_stats(&r.total)),
            channels: r
                .channels
                .iter()
                .map(|(&channel, f)| pb::ChannelWaitStats {
                    channel,
                    stats: Some(wait_stats(f)),
                })
                .collect(),
            buckets: wait_buckets(&r),
            time_zone: r.time_zone.name().to_owned(),
            business_hours_id: r.business_hours_id,
            as_of: Some(to_timestamp(r.as_of)),
        }
    }
}

impl From<WaitReport> for pb::GetResolutionTimeReportResponse {
    fn from(r: WaitReport) -> Self {
        pb::GetResolutionTimeReportResponse {
            total: Some(wait_stats(&r.total)),
            buckets: wait_buckets(&r),
            time_zone: r.time_zone.name().to_owned(),
            business_hours_id: r.business_hours_id,
            as_of: Some(to_timestamp(r.as_of)),
        }
    }
}

/// What a page token of the attention list holds: the reference time and where the
/// previous page stopped.
#[derive(serde::Serialize, serde::Deserialize)]
struct AttentionCursor {
    as_of: i64,
    after: AttentionPosition,
}

/// The fingerprint of an attention request's filters, for [`attention_response`] (the
/// reference time travels in the token itself).
pub fn attention_fingerprint(req: &pb::ListAttentionCustomersRequest) -> u64 {
    let time = |t: Option<&prost_types::Timestamp>| t.map(|t| (t.seconds, i64::from(t.nanos)));
    let (start, end, as_of) = (
        time(req.start_time.as_ref()),
        time(req.end_time.as_ref()),
        time(req.as_of.as_ref()),
    );
    let fp = Fingerprint::new(ATTENTION_KIND)
        .field("reason", &req.reason)
        .field("stale_days", &req.stale_days)
        .field("as_of", &as_of.map(|(s, n)| vec![s, n]))
        .field(
            "include_never_contacted",
            &i32::from(req.include_never_contacted),
        )
        .field("start", &start.map(|(s, n)| vec![s, n]))
        .field("end", &end.map(|(s, n)| vec![s, n]))
        .field("min_drop_percent", &req.min_drop_percent)
        .field("min_previous_count", &req.min_previous_count);
    // Only this list's own fields, so the tokens of the other lists stay as they were.
    let fp = if req.reason == pb::AttentionReason::SentimentFalling as i32 {
        fp.field("min_sentiment_drop", &req.min_sentiment_drop)
    } else {
        fp
    };
    let fp = if req.reason == pb::AttentionReason::LowSatisfaction as i32 {
        fp.field(
            "max_average_score",
            &i64::from_le_bytes(req.max_average_score.to_bits().to_le_bytes()),
        )
        .field("min_answer_count", &req.min_answer_count)
    } else {
        fp
    };
    fp.finish()
}

/// A decoded cursor, checked against the list it was issued for.
fn cursor(
    v: &mut Violations,
    req: &pb::ListAttentionCustomersRequest,
) -> Option<(NaiveDateTime, AttentionPosition)> {
    if req.page_token.is_empty() {
        return None;
    }
    let decoded: Option<AttentionCursor> = v.absorb(paging::decode(
        "page_token",
        ATTENTION_KIND,
        attention_fingerprint(req),
        &req.page_token,
    ));
    let c = decoded?;
    let stale = req.reason == pb::AttentionReason::Stale as i32;
    let decline = req.reason == pb::AttentionReason::Decline as i32;
    let low = req.reason == pb::AttentionReason::LowSatisfaction as i32;
    let falling = req.reason == pb::AttentionReason::SentimentFalling as i32;
    let fits = match c.after {
        AttentionPosition::Never(id) => stale && id >= 0,
        AttentionPosition::Stale(us, id) => stale && paging::position("page_token", us, id).is_ok(),
        AttentionPosition::Decline(d) => decline && d.previous >= 1 && d.current >= 0,
        AttentionPosition::Mood(m) => {
            let sums_fit = |n: i64, sum: i64| {
                let bound = n.saturating_mul(i64::from(crate::analytics::sentiment::MAX));
                (-bound..=bound).contains(&sum)
            };
            falling
                && m.previous >= 1
                && m.current >= 1
                && sums_fit(m.previous, m.previous_sum)
                && sums_fit(m.current, m.current_sum)
        }
        AttentionPosition::LowSatisfaction(a) => {
            low && a.count >= 1 && (a.count..=a.count.saturating_mul(5)).contains(&a.sum)
        }
    };
    let as_of = paging::position("page_token", c.as_of, 1)
        .ok()
        .map(|(t, _)| t);
    match (fits, as_of) {
        (true, Some(as_of)) => Some((as_of, c.after)),
        _ => {
            v.add(
                "page_token",
                "holds a position out of range; it was not issued by this service",
            );
            None
        }
    }
}

impl TryFrom<pb::ListAttentionCustomersRequest> for AttentionQuery {
    type Error = Error;

    fn try_from(req: pb::ListAttentionCustomersRequest) -> Result<Self, Error> {
        let mut v = Violations::new();
        let limit = paging::page_size(&mut v, "page_size", req.page_size);
        let resumed = cursor(&mut v, &req);
        let kind = match pb::AttentionReason::try_from(req.reason) {
            Ok(pb::AttentionReason::Stale) => {
                if !(1..=MAX_STALE_DAYS).contains(&req.stale_days) {
                    v.add(
                        "stale_days",
                        format!(
                            "must be between 1 and {MAX_STALE_DAYS} (got {})",
                            req.stale_days
                        ),
                    );
                }
                Some(AttentionKind::Stale {
                    stale_days: i64::from(req.stale_days),
                    include_never_contacted: req.include_never_contacted,
                })
            }
            Ok(pb::AttentionReason::Decline) => {
                let range = required_range(
                    &mut v,
                    req.start_time.as_ref(),
                    req.end_time.as_ref(),
                    Some(120),
                );
                let min_percent = match req.min_drop_percent {
                    0 => DEFAULT_DROP_PERCENT,
                    p @ 1..=100 => p.unsigned_abs(),
                    p => {
                        v.add(
                            "min_drop_percent",
                            format!("must be between 1 and 100 (got {p})"),
                        );
                        DEFAULT_DROP_PERCENT
                    }
                };
                if req.min_previous_count < 0 {
                    v.add("min_previous_count", "must not be negative");
                }
                range.map(|(start, end)| AttentionKind::Decline {
                    start,
                    end,
                    min_percent,
                    min_previous: req.min_previous_count.max(1),
                })
            }
            Ok(pb::AttentionReason::SentimentFalling) => {
                let range = required_range(
                    &mut v,
                    req.start_time.as_ref(),
                    req.end_time.as_ref(),
                    Some(120),
                );
                let min_drop = match req.min_sentiment_drop {
                    0 => DEFAULT_SENTIMENT_DROP,
                    d @ 1..=2000 => i64::from(d),
                    d => {
                        v.add(
                            "min_sentiment_drop",
                            format!("must be between 1 and 2000 (got {d})"),
                        );
                        DEFAULT_SENTIMENT_DROP
                    }
                };
                if req.min_previous_count < 0 {
                    v.add("min_previous_count", "must not be negative");
                }
                range.map(|(start, end)| AttentionKind::SentimentFalling {
                    start,
                    end,
                    min_drop,
                    min_previous: req.min_previous_count.max(1),
                })
            }
            Ok(pb::AttentionReason::LowSatisfaction) => {
                let range = required_range(
                    &mut v,
                    req.start_time.as_ref(),
                    req.end_time.as_ref(),
                    Some(120),
                );
                let max = req.max_average_score;
                let max = if max == 0.0 {
                    DEFAULT_MAX_AVERAGE_SCORE
                } else if (1.0..=5.0).contains(&max) {
                    max
                } else {
                    v.add(
                        "max_average_score",
                        format!("must be between 1 and 5 (got {max})"),
                    );
                    DEFAULT_MAX_AVERAGE_SCORE
                };
                if req.min_answer_count < 0 {
                    v.add("min_answer_count", "must not be negative");
                }
                range.map(|(start, end)| AttentionKind::LowSatisfaction {
                    start,
                    end,
                    // In range 1..5, so the rounding cannot overflow.
                    max_milli: (max * 1000.0).round() as i64,
                    min_answers: req.min_answer_count.max(1),
                })
            }
            Ok(pb::AttentionReason::Unspecified) => {
                v.add(
                    "reason",
                    "is required (STALE, DECLINE, SENTIMENT_FALLING or LOW_SATISFACTION)",
                );
                None
            }
            Err(_) => {
                v.add("reason", format!("{} is not a known value", req.reason));
                None
            }
        };
        let as_of = match (&resumed, req.as_of.as_ref()) {
            (Some((as_of, _)), _) => Some(*as_of),
            (None, Some(t)) => validate::time(&mut v, "as_of", Some(t)),
            (None, None) => Some(now()),
        };
        let (kind, as_of) = finish(v, kind.zip(as_of))?;
        Ok(AttentionQuery {
            kind,
            as_of,
            after: resumed.map(|(_, p)| p),
            limit: usize::try_from(limit).unwrap_or(50),
        })
    }
}

fn attention_customer(i: AttentionItem) -> pb::AttentionCustomer {
    let d = i.decline;
    let m = i.mood;
    let s = i.satisfaction;
    pb::AttentionCustomer {
        customer_id: i.customer_id,
        name: i.name,
        last_contact_time: i.last_contact.map(|(t, _)| to_timestamp(t)),
        last_contact_channel: i.last_contact.map_or(0, |(_, c)| c),
        days_since_last_contact: i.days_since_last_contact,
        current_count: d.map_or(m.map_or(0, |m| m.current), |d| d.current),
        previous_count: d.map_or(m.map_or(0, |m| m.previous), |d| d.previous),
        drop_ratio: d.map_or(0.0, |d| d.ratio()),
        average_score: s.map_or(0.0, |s| s.average()),
        answer_count: s.map_or(0, |s| s.count),
        previous_mean_sentiment: m.map_or(0.0, |m| m.previous_mean()),
        current_mean_sentiment: m.map_or(0.0, |m| m.current_mean()),
    }
}

/// The response of one attention page; the token carries the filters' fingerprint.
pub fn attention_response(
    req_filters: u64,
    page: AttentionPage,
) -> pb::ListAttentionCustomersResponse {
    let next_page_token = page
        .next
        .map(|after| {
            paging::encode(
                ATTENTION_KIND,
                req_filters,
                &AttentionCursor {
                    as_of: micros(page.as_of),
                    after,
                },
            )
        })
        .unwrap_or_default();
    pb::ListAttentionCustomersResponse {
        customers: page.items.into_iter().map(attention_customer).collect(),
        next_page_token,
        as_of: Some(to_timestamp(page.as_of)),
    }
}

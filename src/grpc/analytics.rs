//! `crm.v1.AnalyticsService`: frequency, content and per-customer reports, response and
//! resolution times, the attention list (whose conversions are in
//! `grpc::service_levels`) and the satisfaction report (`grpc::satisfaction`).
//!
//! Transport only: each handler reads the call's deadline, turns the request into a
//! validated query of `service::reports` (every violation at once), runs the report and
//! converts its figures into the response.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use super::{positive_id, AppState};
use crate::analytics::content::MatchFigures;
use crate::analytics::matching::Matcher;
use crate::analytics::sentiment::Label;
use crate::error::{Error, Violations};
use crate::grpc::convert::{duration_from_micros, to_timestamp};
use crate::grpc::pb_conv::{customer_to_pb, sentiment_counts, transaction_to_pb};
use crate::grpc::report_query::{bucketed_window, customer_ids, finish, required_range};
use crate::grpc::service_levels::{attention_fingerprint, attention_response};
use crate::grpc::validate::{self, channels, time_zone};
use crate::grpc::watch::{self, WatchStream, Watchable};
use crate::model::deadline::Deadline;
use crate::model::time::now;
use crate::pb::{self, analytics_service_server::AnalyticsService};
use crate::service::attention::{self, AttentionQuery};
use crate::service::reports::{
    self, ContentQuery, ContentReport, FrequencyQuery, FrequencyReport, InsightsQuery,
    InsightsReport, MAX_KEYWORDS, MAX_PATTERNS, MAX_SAMPLES, MAX_TOP_N, MAX_TOP_TERMS,
};
use crate::service::satisfaction::{self, SatisfactionQuery};
use crate::service::service_levels::{self, WaitQuery};
use crate::service::watch::Watched;

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

    /// Opens a watch of `watched`: one of the server's stream slots (shared with follow
    /// streams), the report's current state, then its changes.
    async fn watch<K: Watchable>(
        &self,
        watched: Watched,
        resume_token: String,
        deadline: Deadline,
    ) -> Result<Response<WatchStream<K::Out>>, Status> {
        let permit = self
            .state
            .timeline
            .follow_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::ResourceExhausted {
                reason: crate::error::Reason::TooManyFollowStreams,
                message: "too many open follow streams and watches; retry later".to_owned(),
            })?;
        let subscription = self
            .state
            .watches
            .subscribe(watched, permit, deadline)
            .await?;
        Ok(Response::new(watch::stream::<K>(
            subscription,
            resume_token,
            self.state.stream_idle,
            self.state.timeline.shutdown.clone(),
        )))
    }
}

/// The call's deadline. One that leaves no time is answered before any work (regex
/// compiles included), so short timeouts get DEADLINE_EXCEEDED rather than CANCELLED.
fn report_deadline<T>(request: &Request<T>) -> Result<Deadline, Error> {
    let deadline = crate::grpc::deadline::of_call(request.metadata());
    deadline.check("the report")?;
    Ok(deadline)
}

fn bounded(v: &mut Violations, field: &str, value: i32, max: i32) -> usize {
    if !(0..=max).contains(&value) {
        v.add(field, format!("must be between 0 and {max} (got {value})"));
        return 0;
    }
    usize::try_from(value).unwrap_or(0)
}

fn channel_counts(counts: &BTreeMap<i32, i64>) -> Vec<pb::ChannelCount> {
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

impl TryFrom<pb::GetFrequencyReportRequest> for FrequencyQuery {
    type Error = Error;

    fn try_from(req: pb::GetFrequencyReportRequest) -> Result<Self, Error> {
        let mut v = Violations::new();
        let (ids, granularity, window) = bucketed_window(
            &mut v,
            &req.customer_ids,
            req.granularity,
            (req.start_time.as_ref(), req.end_time.as_ref()),
            &req.time_zone,
        );
        let channels = channels(&mut v, "channels", &req.channels);
        validate::known_enum::<pb::Direction>(&mut v, "direction", req.direction, false);
        let top_n = bounded(&mut v, "top_n", req.top_n, MAX_TOP_N);
        let ((start, end), time_zone) = finish(v, window)?;
        Ok(FrequencyQuery {
            customer_ids: ids,
            channels,
            direction: (req.direction != 0).then_some(req.direction),
            start,
            end,
            time_zone,
            granularity,
            top_n,
            include_gap_stats: req.include_gap_stats,
            compare_previous_period: req.compare_previous_period,
            include_sentiment: req.include_sentiment,
        })
    }
}

/// The proto form of a report's buckets.
fn frequency_buckets(r: &FrequencyReport) -> Vec<pb::FrequencyBucket> {
    r.buckets
        .iter()
        .map(|(b, c)| pb::FrequencyBucket {
            start_time: Some(ts(b.start)),
            end_time: Some(ts(b.end)),
            count: c.count,
            channel_counts: channel_counts(&c.channels),
            sentiment: r.sentiment.map(|_| sentiment_counts(&c.sentiment)),
        })
        .collect()
}

/// The preceding period of `current`, and the change from it.
fn previous_period(current: i64, p: &FrequencyReport) -> pb::PreviousPeriod {
    let change = current - p.total;
    pb::PreviousPeriod {
        start_time: Some(to_timestamp(p.range.0)),
        end_time: Some(to_timestamp(p.range.1)),
        total_count: p.total,
        span_days: i32::try_from(p.span_days).unwrap_or(i32::MAX),
        per_day_average: p.per_day_average,
        channel_counts: channel_counts(&p.channels),
        buckets: frequency_buckets(p),
        customer_count: p.customer_count,
        total_change: change,
        total_change_ratio: (p.total > 0).then(|| change as f64 / p.total as f64),
        sentiment: p.sentiment.as_ref().map(sentiment_counts),
    }
}

impl From<FrequencyReport> for pb::GetFrequencyReportResponse {
    fn from(r: FrequencyReport) -> Self {
        pb::GetFrequencyReportResponse {
            total_count: r.total,
            span_days: i32::try_from(r.span_days).unwrap_or(i32::MAX),
            per_day_average: r.per_day_average,
            channel_counts: channel_counts(&r.channels),
            buckets: frequency_buckets(&r),
            previous_period: r.previous.as_deref().map(|p| previous_period(r.total, p)),
            sentiment: r.sentiment.as_ref().map(sentiment_counts),
            first_contact_time: r.first.map(to_timestamp),
            last_contact_time: r.last.map(to_timestamp),
            mean_gap: r.mean_gap_us.map(duration_from_micros),
            median_gap: r.median_gap_us.map(duration_from_micros),
            customer_count: r.customer_count,
            top_customers: r
                .top
                .into_iter()
                .map(|t| pb::CustomerFrequency {
                    customer_id: t.customer.customer_id,
                    count: t.customer.count,
                    per_day_average: t.per_day_average,
                    last_contact_time: Some(to_timestamp(t.customer.last_time)),
                })
                .collect(),
            time_zone: r.time_zone.name().to_owned(),
        }
    }
}

impl TryFrom<pb::GetContentReportRequest> for ContentQuery {
    type Error = Error;

    fn try_from(req: pb::GetContentReportRequest) -> Result<Self, Error> {
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
        let mut sentiments = Vec::new();
        for (i, &s) in req.sentiments.iter().enumerate() {
            match pb::Sentiment::try_from(s) {
                Ok(s) => sentiments.push(sentiment_label(s)),
                Err(_) => v.add(
                    format!("sentiments[{i}]"),
                    format!("{s} is not a known value"),
                ),
            }
        }
        sentiments.sort_unstable();
        sentiments.dedup();
        let (start, end) = finish(v, range)?;
        Ok(ContentQuery {
            customer_ids: ids,
            channels,
            start,
            end,
            keywords: req.keywords,
            patterns: req.patterns,
            matcher,
            top_terms,
            sample_limit,
            sentiments,
        })
    }
}

/// The class a proto sentiment names (`None`: not scored yet).
fn sentiment_label(s: pb::Sentiment) -> Option<Label> {
    match s {
        pb::Sentiment::Unspecified => None,
        pb::Sentiment::Negative => Some(Label::Negative),
        pb::Sentiment::Neutral => Some(Label::Neutral),
        pb::Sentiment::Positive => Some(Label::Positive),
    }
}

fn match_counts(figures: Vec<(String, MatchFigures)>) -> Vec<pb::MatchCount> {
    figures
        .into_iter()
        .map(|(query, m)| pb::MatchCount {
            query,
            message_count: m.messages,
            customer_count: m.customers,
        })
        .collect()
}

impl From<ContentReport> for pb::GetContentReportResponse {
    fn from(r: ContentReport) -> Self {
        pb::GetContentReportResponse {
            scanned_count: r.scanned,
            keywords: match_counts(r.keywords),
            patterns: match_counts(r.patterns),
            top_terms: term_counts(r.top_terms),
            samples: r
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
        }
    }
}

impl TryFrom<pb::GetCustomerInsightsRequest> for InsightsQuery {
    type Error = Error;

    fn try_from(req: pb::GetCustomerInsightsRequest) -> Result<Self, Error> {
        let mut v = Violations::new();
        let customer_id = positive_id(&mut v, "customer_id", req.customer_id);
        let (start, end) = validate::time_range(
            &mut v,
            "start_time",
            req.start_time.as_ref(),
            "end_time",
            req.end_time.as_ref(),
        );
        let top_terms = bounded(&mut v, "top_terms", req.top_terms, MAX_TOP_TERMS);
        let tz = time_zone(&mut v, &req.time_zone);
        let now = now();
        if let (Some(s), None) = (start, req.end_time.as_ref()) {
            if s >= now {
                v.add("start_time", "must be before end_time (default: now)");
            }
        }
        let time_zone = finish(v, tz)?;
        Ok(InsightsQuery {
            customer_id,
            start,
            end,
            now,
            time_zone,
            top_terms,
        })
    }
}

impl From<InsightsReport> for pb::GetCustomerInsightsResponse {
    fn from(r: InsightsReport) -> Self {
        pb::GetCustomerInsightsResponse {
            customer: Some(customer_to_pb(r.customer)),
            total_count: r.total,
            channels: r
                .channels
                .iter()
                .map(|c| pb::ChannelInsight {
                    channel: c.channel,
                    count: c.count,
                    total_duration: Some(duration_from_micros(c.duration_us)),
                })
                .collect(),
            per_day_average: r.per_day_average,
            first_contact_time: r.first.map(to_timestamp),
            last_contact_time: r.last.map(to_timestamp),
            days_since_last_contact: r.days_since_last_contact,
            mean_gap: r.mean_gap_us.map(duration_from_micros),
            top_terms: term_counts(r.top_terms),
            sentiment: Some(sentiment_counts(&r.sentiment)),
            sentiment_trend: r
                .sentiment_trend
                .iter()
                .map(|(start, end, t)| pb::SentimentPeriod {
                    start_time: Some(to_timestamp(*start)),
                    end_time: Some(to_timestamp(*end)),
                    sentiment: Some(sentiment_counts(t)),
                })
                .collect(),
            transactions: Some(pb::TransactionSummary {
                count: r.transaction_count,
                totals: r
                    .totals
                    .into_iter()
                    .map(|t| pb::Money {
                        currency_code: t.currency_code,
                        units: t.units,
                        nanos: t.nanos,
                    })
                    .collect(),
                last_order: r.last_order.map(transaction_to_pb),
            }),
            service_tickets: Some(pb::TicketSummary {
                total_count: r.ticket_count,
                open_count: r.open_tickets,
                mean_resolution_time: r.mean_resolution_us.map(duration_from_micros),
            }),
        }
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn get_frequency_report(
        &self,
        request: Request<pb::GetFrequencyReportRequest>,
    ) -> Result<Response<pb::GetFrequencyReportResponse>, Status> {
        let deadline = report_deadline(&request)?;
        let query = FrequencyQuery::try_from(request.into_inner())?;
        let report = reports::frequency(
            &self.state.db.reader(),
            query,
            self.state.report_source,
            self.state.content_index.as_ref(),
            deadline,
        )
        .await?;
        Ok(Response::new(report.into()))
    }

    async fn get_content_report(
        &self,
        request: Request<pb::GetContentReportRequest>,
    ) -> Result<Response<pb::GetContentReportResponse>, Status> {
        let deadline = report_deadline(&request)?;
        let query = ContentQuery::try_from(request.into_inner())?;
        let report = reports::content(
            &self.state.db,
            query,
            self.state.content_index.as_ref(),
            deadline,
        )
        .await?;
        Ok(Response::new(report.into()))
    }

    async fn get_customer_insights(
        &self,
        request: Request<pb::GetCustomerInsightsRequest>,
    ) -> Result<Response<pb::GetCustomerInsightsResponse>, Status> {
        let deadline = report_deadline(&request)?;
        let query = InsightsQuery::try_from(request.into_inner())?;
        let report = reports::insights(
            &self.state.db.reader(),
            query,
            self.state.content_index.as_ref(),
            deadline,
        )
        .await?;
        Ok(Response::new(report.into()))
    }

    async fn get_response_time_report(
        &self,
        request: Request<pb::GetResponseTimeReportRequest>,
    ) -> Result<Response<pb::GetResponseTimeReportResponse>, Status> {
        let deadline = report_deadline(&request)?;
        let query = WaitQuery::try_from(request.into_inner())?;
        let report =
            service_levels::response_times(&self.state.db.reader(), query, deadline).await?;
        Ok(Response::new(report.into()))
    }

    type WatchFrequencyReportStream = WatchStream<pb::WatchFrequencyReportResponse>;

    async fn watch_frequency_report(
        &self,
        request: Request<pb::WatchFrequencyReportRequest>,
    ) -> Result<Response<Self::WatchFrequencyReportStream>, Status> {
        let deadline = report_deadline(&request)?;
        let request = request.into_inner();
        let query = watch::nested(request.query, FrequencyQuery::try_from)?;
        self.watch::<watch::Frequency>(Watched::Frequency(query), request.resume_token, deadline)
            .await
    }

    type WatchResponseTimeReportStream = WatchStream<pb::WatchResponseTimeReportResponse>;

    async fn watch_response_time_report(
        &self,
        request: Request<pb::WatchResponseTimeReportRequest>,
    ) -> Result<Response<Self::WatchResponseTimeReportStream>, Status> {
        let deadline = report_deadline(&request)?;
        let request = request.into_inner();
        let query = watch::nested(request.query, WaitQuery::try_from)?;
        self.watch::<watch::ResponseTimes>(
            Watched::ResponseTimes(query),
            request.resume_token,
            deadline,
        )
        .await
    }

    async fn get_resolution_time_report(
        &self,
        request: Request<pb::GetResolutionTimeReportRequest>,
    ) -> Result<Response<pb::GetResolutionTimeReportResponse>, Status> {
        let deadline = report_deadline(&request)?;
        let query = WaitQuery::try_from(request.into_inner())?;
        let report =
            service_levels::resolution_times(&self.state.db.reader(), query, deadline).await?;
        Ok(Response::new(report.into()))
    }

    async fn list_attention_customers(
        &self,
        request: Request<pb::ListAttentionCustomersRequest>,
    ) -> Result<Response<pb::ListAttentionCustomersResponse>, Status> {
        let deadline = report_deadline(&request)?;
        let request = request.into_inner();
        let filters = attention_fingerprint(&request);
        let query = AttentionQuery::try_from(request)?;
        let page = attention::attention(
            &self.state.db.reader(),
            query,
            self.state.report_source,
            deadline,
        )
        .await?;
        Ok(Response::new(attention_response(filters, page)))
    }

    async fn get_satisfaction_report(
        &self,
        request: Request<pb::GetSatisfactionReportRequest>,
    ) -> Result<Response<pb::GetSatisfactionReportResponse>, Status> {
        let deadline = report_deadline(&request)?;
        let query = SatisfactionQuery::try_from(request.into_inner())?;
        let report = satisfaction::satisfaction(&self.state.db.reader(), query, deadline).await?;
        Ok(Response::new(report.into()))
    }
}

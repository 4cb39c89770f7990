//! The satisfaction report: the surveys sent in a range, overall, per channel of the
//! surveyed communication, for service tickets and per bucket of their sent time,
//! optionally split by whether their target happened inside a schedule's business hours.
//!
//! The range is read off the `(sent_time, id)` index in keyset pages of small rows; the
//! figures are added up as the rows go by ([`SplitTally`]), so memory does not grow with
//! the number of surveys. With a schedule, the rows (about 50 bytes each) are kept until
//! the span of their targets' times is known, then the schedule's open windows are laid
//! over that span once ([`BusinessClock`]) and each target is looked up in it.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

use super::service_levels::schedule;
use crate::analytics::buckets::{Bucket, BucketPlan, Granularity};
use crate::analytics::business_time::BusinessClock;
use crate::analytics::satisfaction::{SatisfactionFigures, SplitTally};
use crate::db::satisfaction::{self as surveys, SurveyReportRow, SurveyScope};
use crate::db::{customers, Db};
use crate::error::Result;
use crate::model::deadline::Deadline;
use crate::model::time::micros;

/// Rows per page of the report's scan (six small columns each).
pub const SURVEY_PAGE_ROWS: i64 = 20_000;

/// A validated satisfaction-report request.
#[derive(Debug, Clone)]
pub struct SatisfactionQuery {
    /// Customers, sorted and distinct; empty for every customer.
    pub customer_ids: Vec<i64>,
    /// Channels of the surveyed communications; empty for every survey.
    pub channels: Vec<i32>,
    /// Inclusive start of the sent times (UTC).
    pub start: NaiveDateTime,
    /// Exclusive end of the sent times (UTC).
    pub end: NaiveDateTime,
    /// The zone of the buckets.
    pub time_zone: Tz,
    /// Bucket size.
    pub granularity: Granularity,
    /// The schedule splitting the figures; `None` for no split.
    pub business_hours_id: Option<i64>,
}

/// A satisfaction report.
#[derive(Debug, Clone, PartialEq)]
pub struct SatisfactionReport {
    /// Every survey.
    pub total: SatisfactionFigures,
    /// Per channel of the surveyed communication.
    pub channels: BTreeMap<i32, SatisfactionFigures>,
    /// The surveys about service tickets.
    pub service_tickets: SatisfactionFigures,
    /// Every bucket of the range with the surveys sent in it.
    pub buckets: Vec<(Bucket, SatisfactionFigures)>,
    /// The zone of the buckets.
    pub time_zone: Tz,
    /// The schedule counted, 0 for none.
    pub business_hours_id: i64,
}

fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

/// Reads every survey of the query's scope, page by page, handing each row to `each`.
async fn scan(
    db: &Db,
    scope: &SurveyScope,
    deadline: &Deadline,
    mut each: impl FnMut(&SurveyReportRow),
) -> Result<()> {
    let mut after = None;
    loop {
        deadline.check("the satisfaction scan")?;
        let page = surveys::report_page(db, scope, after, SURVEY_PAGE_ROWS).await?;
        page.iter().for_each(&mut each);
        match page.last() {
            Some(last) if page.len() as i64 == SURVEY_PAGE_ROWS => {
                after = Some((last.sent_time, last.id));
            }
            _ => return Ok(()),
        }
    }
}

/// The satisfaction report; checks `deadline` before each page.
pub async fn satisfaction(
    db: &Db,
    q: SatisfactionQuery,
    deadline: Deadline,
) -> Result<SatisfactionReport> {
    customers::refuse_merged(db, &q.customer_ids).await?;
    let schedule = schedule(db, q.business_hours_id).await?;
    let plan = BucketPlan::new(q.time_zone, q.granularity, utc(q.start), utc(q.end));
    let scope = SurveyScope {
        customer_ids: q.customer_ids.clone(),
        channels: q.channels.clone(),
        start: q.start,
        end: q.end,
    };
    let mut rows: Vec<SurveyReportRow> = Vec::new();
    let clock = match &schedule {
        None => None,
        Some((tz, hours)) => {
            // The targets may lie long before the range: the clock spans their times.
            let mut span: Option<(NaiveDateTime, NaiveDateTime)> = None;
            scan(db, &scope, &deadline, |r| {
                rows.push(*r);
                span = Some(span.map_or((r.target_time, r.target_time), |(a, b)| {
                    (a.min(r.target_time), b.max(r.target_time))
                }));
            })
            .await?;
            span.map(|(from, to)| BusinessClock::new(*tz, hours, utc(from), utc(to)))
        }
    };
    let split = schedule.is_some();
    let mut total = SplitTally::default();
    let mut channels: BTreeMap<i32, SplitTally> = BTreeMap::new();
    let mut tickets = SplitTally::default();
    let mut buckets = vec![SplitTally::default(); plan.buckets().len()];
    let mut add = |r: &SurveyReportRow| {
        let inside = split.then(|| {
            clock
                .as_ref()
                .is_some_and(|c| c.is_open(micros(r.target_time)))
        });
        total.add(r.score, inside);
        if r.ticket_id.is_some() {
            tickets.add(r.score, inside);
        } else {
            channels.entry(r.channel).or_default().add(r.score, inside);
        }
        if let Some(b) = plan
            .bucket_of(utc(r.sent_time))
            .and_then(|b| buckets.get_mut(b))
        {
            b.add(r.score, inside);
        }
    };
    if split {
        rows.iter().for_each(&mut add);
    } else {
        scan(db, &scope, &deadline, &mut add).await?;
    }
    deadline.check("the satisfaction figures")?;
    Ok(SatisfactionReport {
        total: total.figures(split),
        channels: channels
            .into_iter()
            .map(|(c, t)| (c, t.figures(split)))
            .collect(),
        service_tickets: tickets.figures(split),
        buckets: plan
            .buckets()
            .iter()
            .copied()
            .zip(buckets)
            .map(|(b, t)| (b, t.figures(split)))
            .collect(),
        time_zone: q.time_zone,
        business_hours_id: q.business_hours_id.unwrap_or(0),
    })
}

//! The service-level reports: how long inbound communications wait for a reply
//! (response time) and tickets for their resolution (resolution time), in wall-clock
//! time or in a schedule's business hours, overall, per channel and per bucket.
//!
//! The response-time report reads the range once off the covering time index, in
//! `(time, id)` pages (by customer when the scope lists customers), pairing each inbound communication with the next outbound one of
//! its customer as the rows go by ([`Replies`]); the messages still waiting at the end of
//! the range get one grouped index probe per 500 customers for the first reply after it.
//! Waits are then measured (wall clock, or a [`BusinessClock`]) and summarized
//! ([`WaitSet`]).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

use crate::analytics::buckets::{parse_time_zone, Bucket, BucketPlan, Granularity};
use crate::analytics::business_time::BusinessClock;
use crate::analytics::waits::{Replies, Wait, WaitFigures, WaitSet};
use crate::db::service_levels::{self, INBOUND, OUTBOUND};
use crate::db::{business_hours, customers, Db};
use crate::error::{Error, Result};
use crate::model::deadline::Deadline;
use crate::model::filter::CommunicationFilter;
use crate::model::schedule::Hours;
use crate::model::time::{micros, now};

/// Rows per page of the response-time scan (five small columns each).
pub const WAIT_PAGE_ROWS: i64 = 20_000;

/// A validated response-time or resolution-time request.
#[derive(Debug, Clone)]
pub struct WaitQuery {
    /// Customers, sorted and distinct; empty for every customer.
    pub customer_ids: Vec<i64>,
    /// Channels of the inbound communications; empty for all (response time only).
    pub channels: Vec<i32>,
    /// Whether only a reply on the inbound communication's channel counts.
    pub same_channel: bool,
    /// Inclusive start of the range the waits begin in (UTC).
    pub start: NaiveDateTime,
    /// Exclusive end of that range (UTC).
    pub end: NaiveDateTime,
    /// The zone of the buckets.
    pub time_zone: Tz,
    /// Bucket size.
    pub granularity: Granularity,
    /// The schedule whose business hours count; `None` for wall-clock time.
    pub business_hours_id: Option<i64>,
    /// The service-level threshold, microseconds.
    pub sla_micros: Option<i64>,
}

/// A service-level report.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitReport {
    /// Every wait.
    pub total: WaitFigures,
    /// Per channel of the inbound communication (response time only).
    pub channels: BTreeMap<i32, WaitFigures>,
    /// Every bucket of the range with the waits that began in it.
    pub buckets: Vec<(Bucket, WaitFigures)>,
    /// The zone of the buckets.
    pub time_zone: Tz,
    /// The schedule counted, 0 for wall-clock time.
    pub business_hours_id: i64,
    /// What pending waits are measured to.
    pub as_of: NaiveDateTime,
}

/// Where a wait is reported besides the total: its channel (0 for tickets) and bucket;
/// and its customer.
type Tag = (i32, Option<usize>, i64);

fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

/// A schedule's zone and hours, read once per report.
pub(crate) type Schedule = (Tz, Hours);

/// The schedule of `business_hours_id`, read before any scan so a wrong id costs
/// nothing; `None` for wall-clock time.
pub(crate) async fn schedule(db: &Db, business_hours_id: Option<i64>) -> Result<Option<Schedule>> {
    let Some(id) = business_hours_id else {
        return Ok(None);
    };
    let row = business_hours::get(db, id).await?;
    let tz = parse_time_zone(&row.time_zone).ok_or_else(|| {
        Error::Internal(format!(
            "business hours {id} has an unknown zone {:?}",
            row.time_zone
        ))
    })?;
    Ok(Some((tz, row.hours()?)))
}

/// Measures and summarizes `waits`.
fn summarize(
    q: &WaitQuery,
    schedule: Option<&Schedule>,
    plan: &BucketPlan,
    waits: Vec<Wait<Tag>>,
) -> WaitReport {
    let as_of = now();
    let as_of_us = micros(as_of);
    let latest = waits
        .iter()
        .filter_map(|w| w.until)
        .max()
        .map_or(as_of_us, |u| u.max(as_of_us));
    let to = crate::model::time::from_micros(latest).unwrap_or(as_of);
    let clock = schedule.map(|(tz, hours)| BusinessClock::new(*tz, hours, utc(q.start), utc(to)));
    let measure = |a: i64, b: i64| match &clock {
        Some(c) => c.between(a, b),
        None => (b - a).max(0),
    };
    let mut total = WaitSet::default();
    let mut channels: BTreeMap<i32, WaitSet> = BTreeMap::new();
    let mut buckets: Vec<WaitSet> = vec![WaitSet::default(); plan.buckets().len()];
    for w in waits {
        let (channel, bucket, customer) = w.tag;
        let sets = [
            Some(&mut total),
            (channel != 0).then(|| channels.entry(channel).or_default()),
        ];
        let duration = match w.until {
            Some(until) => Ok(measure(w.since, until)),
            None => Err(measure(w.since, as_of_us)),
        };
        let bucket_set = bucket.and_then(|b| buckets.get_mut(b));
        for set in sets.into_iter().flatten().chain(bucket_set) {
            match duration {
                Ok(d) => set.completed(d),
                Err(d) => set.pending(d, customer),
            }
        }
    }
    WaitReport {
        total: total.figures(q.sla_micros),
        channels: channels
            .into_iter()
            .map(|(c, s)| (c, s.figures(q.sla_micros)))
            .collect(),
        buckets: plan
            .buckets()
            .iter()
            .copied()
            .zip(buckets)
            .map(|(b, s)| (b, s.figures(q.sla_micros)))
            .collect(),
        time_zone: q.time_zone,
        business_hours_id: q.business_hours_id.unwrap_or(0),
        as_of,
    }
}

/// The response-time report; checks `deadline` before each page and statement.
pub async fn response_times(db: &Db, q: WaitQuery, deadline: Deadline) -> Result<WaitReport> {
    customers::refuse_merged(db, &q.customer_ids).await?;
    let schedule = schedule(db, q.business_hours_id).await?;
    let plan = BucketPlan::new(q.time_zone, q.granularity, utc(q.start), utc(q.end));
    let scope = CommunicationFilter {
        customer_ids: q.customer_ids.clone(),
        start: Some(q.start),
        end: Some(q.end),
        ..CommunicationFilter::default()
    };
    let mut replies: Replies<Tag> = Replies::new(q.same_channel);
    let mut after = None;
    loop {
        deadline.check("the response-time scan")?;
        let page = service_levels::contact_page(db, &scope, after, WAIT_PAGE_ROWS).await?;
        for r in &page {
            let at = micros(r.occur_time);
            if r.direction == OUTBOUND {
                replies.outbound(r.customer_id, r.channel, at);
            } else if r.direction == INBOUND
                && (q.channels.is_empty() || q.channels.contains(&r.channel))
            {
                let bucket = plan.bucket_of(utc(r.occur_time));
                let tag = (r.channel, bucket, r.customer_id);
                replies.inbound(r.customer_id, r.channel, at, tag);
            }
        }
        match page.last() {
            Some(last) if page.len() as i64 == WAIT_PAGE_ROWS => {
                after = Some((last.customer_id, last.occur_time, last.id));
            }
            _ => break,
        }
    }
    // Whatever still waits came after its customer's last reply in range: the first
    // outbound communication at or after the end answers it.
    let keys = replies.waiting_keys();
    if !keys.is_empty() {
        deadline.check("the replies after the range")?;
        let mut customers: Vec<i64> = keys.iter().map(|&(c, _)| c).collect();
        customers.dedup();
        let mut first: HashMap<(i64, i32), NaiveDateTime> = HashMap::new();
        for r in service_levels::first_replies(db, &customers, q.end).await? {
            let key = (r.customer_id, if q.same_channel { r.channel } else { 0 });
            let t = first.entry(key).or_insert(r.first_time);
            *t = (*t).min(r.first_time);
        }
        for (customer_id, channel) in keys {
            if let Some(&t) = first.get(&(customer_id, channel)) {
                replies.outbound(customer_id, channel, micros(t));
            }
        }
    }
    deadline.check("the response-time figures")?;
    Ok(summarize(&q, schedule.as_ref(), &plan, replies.finish()))
}

/// The resolution-time report of the tickets opened in range; checks `deadline`
/// before each page.
pub async fn resolution_times(db: &Db, q: WaitQuery, deadline: Deadline) -> Result<WaitReport> {
    customers::refuse_merged(db, &q.customer_ids).await?;
    let schedule = schedule(db, q.business_hours_id).await?;
    let plan = BucketPlan::new(q.time_zone, q.granularity, utc(q.start), utc(q.end));
    let scope = CommunicationFilter {
        customer_ids: q.customer_ids.clone(),
        start: Some(q.start),
        end: Some(q.end),
        ..CommunicationFilter::default()
    };
    let mut waits = Vec::new();
    let mut after = None;
    loop {
        deadline.check("the resolution-time scan")?;
        let page = service_levels::ticket_page(db, &scope, after, WAIT_PAGE_ROWS).await?;
        waits.extend(page.iter().map(|t| Wait {
            tag: (0, plan.bucket_of(utc(t.open_time)), t.customer_id),
            since: micros(t.open_time),
            until: t.resolve_time.map(micros),
        }));
        match page.last() {
            Some(last) if page.len() as i64 == WAIT_PAGE_ROWS => {
                after = Some((last.open_time, last.id));
            }
            _ => break,
        }
    }
    deadline.check("the resolution-time figures")?;
    Ok(summarize(&q, schedule.as_ref(), &plan, waits))
}

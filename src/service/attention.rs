//! The attention list: customers not contacted for a while, whose contacts or mood fell
//! sharply against the preceding period, or whose satisfaction surveys scored low, most
//! urgent first, in keyset pages.
//!
//! How it stays fast at 100,000 customers:
//! - **Stale**: each customer's last contact is the latest time of its latest month in
//!   the customer-month rollup (a loose index scan of `(customer_id, month)` and one
//!   primary-key read per customer); the database filters, sorts and returns one page.
//!   Never-contacted customers come first, by id.
//! - **Decline**: contacts per customer in both periods come from the customer-month
//!   rollup (whole months) plus the base table for the partial months at the edges: a
//!   grouped read of about one row per customer and month. The drops are ranked in
//!   memory with exact ratios, and a page is cut after the token's position.
//! - **Sentiment falling**: the same grouped read as declines, with the sums of the
//!   sentiment scores the rollup keeps beside the counts; falls of the mean are ranked
//!   exactly (cross-multiplied sums).
//! - **Low satisfaction**: answers per customer and score in the range, one grouped
//!   range read of the covering `(answer_time, customer_id, score)` index (at most five
//!   rows per customer); averages are ranked in memory exactly, like declines.
//! - Names and the last contact's channel are read for the page's customers only.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::reports::{previous_period, ReportSource};
use crate::analytics::attention::{decline_page, mood_page, Decline, Mood};
use crate::analytics::rollup::{month_split, Split};
use crate::analytics::satisfaction::{averages, low_satisfaction_page, MilliScore, ScoreAverage};
use crate::db::attention::{self as queries, CustomerCount, StaleRow};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::model::deadline::Deadline;
use crate::model::time::{from_micros, micros};

/// Where a page of the attention list continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttentionPosition {
    /// Among the never-contacted customers, after this id.
    Never(i64),
    /// Among the contacted ones, after this last contact (microseconds) and id.
    Stale(i64, i64),
    /// Among the declines, after this one.
    Decline(Decline),
    /// Among the falling moods, after this one.
    Mood(Mood),
    /// Among the low averages, after this one.
    LowSatisfaction(ScoreAverage),
}

/// Which list, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttentionKind {
    /// Customers whose last contact is at or before `as_of - stale_days`.
    Stale {
        /// Whole days without contact.
        stale_days: i64,
        /// Also customers never contacted (created at or before the cutoff).
        include_never_contacted: bool,
    },
    /// Customers whose contacts in `[start, end)` fell against the period before.
    Decline {
        /// Inclusive start (UTC).
        start: NaiveDateTime,
        /// Exclusive end (UTC).
        end: NaiveDateTime,
        /// The smallest drop, percent.
        min_percent: u32,
        /// The smallest previous count.
        min_previous: i64,
    },
    /// Customers whose mean sentiment in `[start, end)` fell against the period before.
    SentimentFalling {
        /// Inclusive start (UTC).
        start: NaiveDateTime,
        /// Exclusive end (UTC).
        end: NaiveDateTime,
        /// The smallest fall of the mean score, points.
        min_drop: i64,
        /// The smallest previous count.
        min_previous: i64,
    },
    /// Customers whose survey answers in `[start, end)` average at most `max_milli`.
    LowSatisfaction {
        /// Inclusive start of the answer times (UTC).
        start: NaiveDateTime,
        /// Exclusive end of the answer times (UTC).
        end: NaiveDateTime,
        /// The highest average listed, in thousandths of a point.
        max_milli: MilliScore,
        /// The fewest answers.
        min_answers: i64,
    },
}

/// A validated attention-list request.
#[derive(Debug, Clone)]
pub struct AttentionQuery {
    /// The list.
    pub kind: AttentionKind,
    /// The reference time (fixed by the first page).
    pub as_of: NaiveDateTime,
    /// Where the previous page stopped.
    pub after: Option<AttentionPosition>,
    /// Page size.
    pub limit: usize,
}

/// One customer of the list.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionItem {
    /// The customer.
    pub customer_id: i64,
    /// Its name.
    pub name: String,
    /// Its latest communication's time and channel.
    pub last_contact: Option<(NaiveDateTime, i32)>,
    /// Whole days from that contact to `as_of`.
    pub days_since_last_contact: Option<i64>,
    /// Counts of both periods (DECLINE).
    pub decline: Option<Decline>,
    /// Counts and score sums of both periods (SENTIMENT_FALLING).
    pub mood: Option<Mood>,
    /// The answers' sum and count (LOW_SATISFACTION).
    pub satisfaction: Option<ScoreAverage>,
}

/// A page of the list.
#[derive(Debug, Clone)]
pub struct AttentionPage {
    /// The customers, most urgent first.
    pub items: Vec<AttentionItem>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<AttentionPosition>,
    /// The reference time.
    pub as_of: NaiveDateTime,
}

/// One page of the attention list; checks `deadline` before each statement.
pub async fn attention(
    db: &Db,
    q: AttentionQuery,
    source: ReportSource,
    deadline: Deadline,
) -> Result<AttentionPage> {
    let (rows, next) = match q.kind {
        AttentionKind::Stale {
            stale_days,
            include_never_contacted,
        } => {
            stale_page(
                db,
                &q,
                stale_days,
                include_never_contacted,
                source,
                deadline,
            )
            .await?
        }
        AttentionKind::Decline {
            start,
            end,
            min_percent,
            min_previous,
        } => {
            let (current, previous, deleted) =
                both_periods(db, (start, end), source, deadline).await?;
            let current: HashMap<i64, i64> =
                current.into_iter().map(|c| (c.customer_id, c.n)).collect();
            let declines = previous
                .into_iter()
                .filter(|p| !deleted.contains(&p.customer_id))
                .map(|p| Decline {
                    customer_id: p.customer_id,
                    previous: p.n,
                    current: current.get(&p.customer_id).copied().unwrap_or(0),
                });
            let after = match q.after {
                Some(AttentionPosition::Decline(d)) => Some(d),
                _ => None,
            };
            let (page, more) =
                decline_page(declines, min_percent, min_previous, after.as_ref(), q.limit);
            let next = more
                .then(|| page.last().map(|d| AttentionPosition::Decline(*d)))
                .flatten();
            let ids: Vec<i64> = page.iter().map(|d| d.customer_id).collect();
            let names = queries::names(db, &ids).await?;
            let rows = page
                .into_iter()
                .map(|d| AttentionItem {
                    customer_id: d.customer_id,
                    name: names.get(&d.customer_id).cloned().unwrap_or_default(),
                    last_contact: None,
                    days_since_last_contact: None,
                    decline: Some(d),
                    mood: None,
                    satisfaction: None,
                })
                .collect();
            (rows, next)
        }
        AttentionKind::SentimentFalling {
            start,
            end,
            min_drop,
            min_previous,
        } => {
            let (current, previous, deleted) =
                both_periods(db, (start, end), source, deadline).await?;
            let current: HashMap<i64, (i64, i64)> = current
                .into_iter()
                .map(|c| (c.customer_id, (c.n, c.sentiment_sum)))
                .collect();
            let moods = previous
                .into_iter()
                .filter(|p| !deleted.contains(&p.customer_id))
                .map(|p| {
                    let (n, sum) = current.get(&p.customer_id).copied().unwrap_or((0, 0));
                    Mood {
                        customer_id: p.customer_id,
                        previous: p.n,
                        previous_sum: p.sentiment_sum,
                        current: n,
                        current_sum: sum,
                    }
                });
            let after = match q.after {
                Some(AttentionPosition::Mood(m)) => Some(m),
                _ => None,
            };
            let (page, more) = mood_page(moods, min_drop, min_previous, after.as_ref(), q.limit);
            let next = more
                .then(|| page.last().map(|m| AttentionPosition::Mood(*m)))
                .flatten();
            let ids: Vec<i64> = page.iter().map(|m| m.customer_id).collect();
            let names = queries::names(db, &ids).await?;
            let rows = page
                .into_iter()
                .map(|m| AttentionItem {
                    customer_id: m.customer_id,
                    name: names.get(&m.customer_id).cloned().unwrap_or_default(),
                    last_contact: None,
                    days_since_last_contact: None,
                    decline: None,
                    mood: Some(m),
                    satisfaction: None,
                })
                .collect();
            (rows, next)
        }
        AttentionKind::LowSatisfaction {
            start,
            end,
            max_milli,
            min_answers,
        } => low_satisfaction(db, &q, (start, end), max_milli, min_answers, deadline).await?,
    };
    let mut items: Vec<AttentionItem> = rows;
    let ids: Vec<i64> = items.iter().map(|i| i.customer_id).collect();
    deadline.check("the last contacts")?;
    let last = queries::last_contacts(db, &ids).await?;
    for item in &mut items {
        item.last_contact = last.get(&item.customer_id).copied();
        item.days_since_last_contact = item
            .last_contact
            .map(|(t, _)| (q.as_of - t).num_days().max(0));
    }
    Ok(AttentionPage {
        items,
        next,
        as_of: q.as_of,
    })
}

/// Per customer, the communications (and their score sums) of `[start, end)` and of the
/// equal period before it, and the deleted customers to leave out.
async fn both_periods(
    db: &Db,
    (start, end): (NaiveDateTime, NaiveDateTime),
    source: ReportSource,
    deadline: Deadline,
) -> Result<(Vec<CustomerCount>, Vec<CustomerCount>, HashSet<i64>)> {
    let (previous_start, _) = previous_period(start, end).ok_or_else(|| {
        Error::invalid(
            "start_time",
            "the preceding period would start before 1900-01-01",
        )
    })?;
    let split = |s, e| match source {
        ReportSource::Rollups => month_split(s, e),
        ReportSource::BaseTable => Split {
            units: None,
            edges: vec![(s, e)],
        },
    };
    deadline.check("the counts of the range")?;
    let current = queries::counts_per_customer(db, &split(start, end)).await?;
    deadline.check("the counts of the preceding period")?;
    let previous = queries::counts_per_customer(db, &split(previous_start, start)).await?;
    let deleted = queries::deleted_customers(db).await?.into_iter().collect();
    Ok((current, previous, deleted))
}

/// A page of the stale list: never-contacted customers first (when asked), then the
/// contacted ones by last contact.
async fn stale_page(
    db: &Db,
    q: &AttentionQuery,
    stale_days: i64,
    include_never_contacted: bool,
    source: ReportSource,
    deadline: Deadline,
) -> Result<(Vec<AttentionItem>, Option<AttentionPosition>)> {
    let cutoff = q
        .as_of
        .checked_sub_signed(chrono::Duration::days(stale_days))
        .ok_or_else(|| Error::invalid("stale_days", "reaches before the earliest time"))?;
    let want = q.limit + 1;
    let mut rows: Vec<(StaleRow, AttentionPosition)> = Vec::new();
    let never_phase = match q.after {
        None => Some(0),
        Some(AttentionPosition::Never(id)) => Some(id),
        Some(_) => None,
    };
    if let (true, Some(after_id)) = (include_never_contacted, never_phase) {
        deadline.check("the never-contacted customers")?;
        let limit = i64::try_from(want).unwrap_or(i64::MAX);
        for r in queries::never_contacted(db, cutoff, after_id, limit).await? {
            let position = AttentionPosition::Never(r.customer_id);
            rows.push((r, position));
        }
    }
    if rows.len() < want {
        let after = match q.after {
            Some(AttentionPosition::Stale(us, id)) => from_micros(us).map(|t| (t, id)),
            _ => None,
        };
        deadline.check("the stale customers")?;
        let limit = i64::try_from(want - rows.len()).unwrap_or(i64::MAX);
        let from_rollup = source == ReportSource::Rollups;
        for r in queries::stale(db, cutoff, after, limit, from_rollup).await? {
            let position = AttentionPosition::Stale(r.last_time.map_or(0, micros), r.customer_id);
            rows.push((r, position));
        }
    }
    let more = rows.len() > q.limit;
    rows.truncate(q.limit);
    let next = more.then(|| rows.last().map(|(_, p)| *p)).flatten();
    let items = rows
        .into_iter()
        .map(|(r, _)| AttentionItem {
            customer_id: r.customer_id,
            name: r.name,
            last_contact: None,
            days_since_last_contact: None,
            decline: None,
            mood: None,
            satisfaction: None,
        })
        .collect();
    Ok((items, next))
}

/// A page of the low-satisfaction list: live customers whose answers in the range
/// average at most the threshold, lowest average first.
async fn low_satisfaction(
    db: &Db,
    q: &AttentionQuery,
    (start, end): (NaiveDateTime, NaiveDateTime),
    max_milli: MilliScore,
    min_answers: i64,
    deadline: Deadline,
) -> Result<(Vec<AttentionItem>, Option<AttentionPosition>)> {
    deadline.check("the survey answers of the range")?;
    let rows = crate::db::satisfaction::answers_per_customer(db, start, end).await?;
    let deleted: HashSet<i64> = queries::deleted_customers(db).await?.into_iter().collect();
    let all = averages(rows.into_iter().map(|r| (r.customer_id, r.score, r.n)))
        .into_iter()
        .filter(|a| !deleted.contains(&a.customer_id));
    let after = match q.after {
        Some(AttentionPosition::LowSatisfaction(a)) => Some(a),
        _ => None,
    };
    let (page, more) = low_satisfaction_page(all, max_milli, min_answers, after.as_ref(), q.limit);
    let next = more
        .then(|| page.last().map(|a| AttentionPosition::LowSatisfaction(*a)))
        .flatten();
    let ids: Vec<i64> = page.iter().map(|a| a.customer_id).collect();
    let names = queries::names(db, &ids).await?;
    let items = page
        .into_iter()
        .map(|a| AttentionItem {
            customer_id: a.customer_id,
            name: names.get(&a.customer_id).cloned().unwrap_or_default(),
            last_contact: None,
            days_since_last_contact: None,
            decline: None,
            mood: None,
            satisfaction: Some(a),
        })
        .collect();
    Ok((items, next))
}

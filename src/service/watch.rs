//! Watched reports (wallboards): `WatchFrequencyReport` and `WatchResponseTimeReport`.
//!
//! Every distinct watched report is one *topic*: the server computes it once, however
//! many clients watch it, and publishes each new state to them through a
//! `tokio::sync::watch` channel (a slow client skips to the latest state; it never holds
//! the others up). One task per server, the *driver*, runs only while a topic exists:
//! every [`POLL`] it reads what was recorded, deleted and merged since its previous
//! read, and computes again the topics that it can change (a new communication only the
//! reports whose scope and range hold it; a deletion or merge every report). A report
//! whose pending waits can pass the SLA with time alone is computed again when the
//! first of them can. Nothing changes, nothing is computed: an idle wallboard costs one
//! short read per poll for the whole server, and no read when nobody watches. Under
//! constant writes the driver computes at most a third of the time: after computing for
//! `d` it waits `max(POLL, 2d)`, so costly reports are updated less often rather than
//! taking the server's CPU from its writers.
//!
//! Why it misses nothing: a write stamps its rows and commits within
//! [`COMMIT_BOUND`] of the stamp (`db::feed`), so a
//! read of the rows stamped after `t - COMMIT_BOUND - slack` sees every row committed
//! after the read at `t`. Each poll reads from its predecessor's start minus that
//! window (rows seen before are skipped by id), so a write is seen by the first poll
//! that starts after it commits, and that poll computes again every topic that
//! existed then. A topic made while a poll ran is computed once more by the next poll,
//! so a write seen just before the topic existed is not lost either. Reports read the
//! primary (not a read replica), where the change was seen.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};

use crate::db::content_feed::{self, Touched};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::model::deadline::Deadline;
use crate::model::time::now;
use crate::service::content_index::ContentIndexHandle;
use crate::service::feed::{Feed, COMMIT_BOUND};
use crate::service::reports::{self, FrequencyQuery, FrequencyReport, ReportSource};
use crate::service::service_levels::{self, WaitQuery, WaitReport};

/// How often the driver looks for changes while someone watches.
pub const POLL: Duration = Duration::from_millis(250);
/// Rows read per poll; past it, every topic is computed again (a burst changes them all
/// anyway).
const POLL_ROWS: i64 = 5_000;
/// How long a report computation may take before it is abandoned (and tried again at
/// the next poll).
const COMPUTE_LIMIT: Duration = Duration::from_secs(60);

/// A watched report: which one, and its validated request.
#[derive(Debug, Clone)]
pub enum Watched {
    /// `WatchFrequencyReport`.
    Frequency(FrequencyQuery),
    /// `WatchResponseTimeReport`.
    ResponseTimes(WaitQuery),
}

impl Watched {
    /// Equal requests share a topic: the validated query's full form names it.
    fn key(&self) -> String {
        format!("{self:?}")
    }

    /// Whether a communication recorded now can change the report.
    fn touched_by(&self, row: &Touched) -> bool {
        let (customers, start, end) = match self {
            Watched::Frequency(q) => {
                let kept = q.channels.is_empty() || q.channels.contains(&row.channel);
                let way = q.direction.is_none_or(|d| d == row.direction);
                if !kept || !way {
                    return false;
                }
                // The preceding period is in scope too.
                let start = match q.compare_previous_period {
                    true => reports::previous_period(q.start, q.end).map_or(q.start, |p| p.0),
                    false => q.start,
                };
                (&q.customer_ids, start, q.end)
            }
            // A reply after the range still ends a wait that began in it.
            Watched::ResponseTimes(q) => (&q.customer_ids, q.start, NaiveDateTime::MAX),
        };
        (customers.is_empty() || customers.binary_search(&row.customer_id).is_ok())
            && (start..end).contains(&row.occur_time)
    }
}

/// A report's figures.
#[derive(Debug, Clone)]
pub enum Report {
    /// A frequency report.
    Frequency(FrequencyReport),
    /// A response-time report.
    ResponseTimes(WaitReport),
}

impl Report {
    /// Whether two reports hold the same figures (a response-time report's `as_of`
    /// aside).
    fn same_as(&self, other: &Report) -> bool {
        match (self, other) {
            (Report::Frequency(a), Report::Frequency(b)) => a == b,
            // Field by field, `as_of` left out (no copy of the report per computation).
            (Report::ResponseTimes(a), Report::ResponseTimes(b)) => {
                a.total == b.total
                    && a.channels == b.channels
                    && a.buckets == b.buckets
                    && a.time_zone == b.time_zone
                    && a.business_hours_id == b.business_hours_id
            }
            _ => false,
        }
    }

    /// The soonest the report can change with time alone: when a pending wait can pass
    /// the SLA (business time runs no faster than the clock).
    fn due_in(&self) -> Option<Duration> {
        match self {
            Report::Frequency(_) => None,
            Report::ResponseTimes(r) => r
                .total
                .next_over_in
                .map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0)).max(POLL)),
        }
    }
}

/// One state of a watched report.
#[derive(Debug)]
pub struct Snapshot {
    /// Counts the states a topic published, from 1.
    pub version: u64,
    /// When the figures were read.
    pub as_of: NaiveDateTime,
    /// The figures, or why the report can no longer be computed (a customer merged
    /// away, say): the watch then ends with that error.
    pub report: std::result::Result<Report, Arc<Error>>,
    /// The transport's rendering of this state, made once for every watcher.
    pub rendered: OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

impl Snapshot {
    fn new(
        version: u64,
        as_of: NaiveDateTime,
        report: std::result::Result<Report, Arc<Error>>,
    ) -> Self {
        Snapshot {
            version,
            as_of,
            report,
            rendered: OnceLock::new(),
        }
    }
}

/// An open watch: the states of its report, and its slot among the server's streams.
#[derive(Debug)]
pub struct Subscription {
    /// The latest state; changes with every new one.
    pub states: watch::Receiver<Arc<Snapshot>>,
    _permit: OwnedSemaphorePermit,
}

/// One watched report and its watchers.
#[derive(Debug)]
struct Topic {
    watched: Watched,
    states: watch::Sender<Arc<Snapshot>>,
    /// When it must be computed again whatever happens (see [`Report::due_in`]; a new
    /// topic is due at once).
    due: Mutex<Option<Instant>>,
}

impl Topic {
    fn due(&self) -> Option<Instant> {
        *self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_due(&self, at: Option<Instant>) {
        *self.due.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }
}

/// The server's watched reports; cheap to clone.
#[derive(Debug, Clone)]
pub struct WatchHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    feed: Feed,
    index: Option<ContentIndexHandle>,
    source: ReportSource,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    /// Wakes the idle driver when the first topic appears.
    wake: Notify,
}

impl WatchHub {
    /// The hub over `db` (the primary); its driver ends when `shutdown` becomes `true`.
    pub fn start(
        db: Db,
        index: Option<ContentIndexHandle>,
        source: ReportSource,
        shutdown: watch::Receiver<bool>,
    ) -> WatchHub {
        let inner = Arc::new(Inner {
            feed: Feed::new(db),
            index,
            source,
            topics: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        });
        tokio::spawn(drive(Arc::clone(&inner), shutdown));
        WatchHub { inner }
    }

    /// Watches `watched`: its current state at once (computed now if nobody watched it
    /// yet, so a bad request fails here), then every change. `permit` is the stream's
    /// slot, held as long as the subscription.
    pub async fn subscribe(
        &self,
        watched: Watched,
        permit: OwnedSemaphorePermit,
        deadline: Deadline,
    ) -> Result<Subscription> {
        let key = watched.key();
        if let Some(topic) = self.topic(&key) {
            return Ok(Subscription {
                states: topic.states.subscribe(),
                _permit: permit,
            });
        }
        let as_of = now();
        let first = compute(&self.inner, &watched, deadline).await?;
        let mut topics = self.lock();
        // Another watcher of the same report may have made it meanwhile.
        let topic = topics.entry(key).or_insert_with(|| {
            let (states, _) = watch::channel(Arc::new(Snapshot::new(1, as_of, Ok(first))));
            // Computed again by the next poll: a change seen by a poll that ran while
            // this one computed would otherwise be missed (see the module header).
            Arc::new(Topic {
                watched,
                states,
                due: Mutex::new(Some(Instant::now())),
            })
        });
        let states = topic.states.subscribe();
        drop(topics);
        self.inner.wake.notify_one();
        Ok(Subscription {
            states,
            _permit: permit,
        })
    }

    fn topic(&self, key: &str) -> Option<Arc<Topic>> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Topic>>> {
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Computes a report from the primary.
async fn compute(inner: &Inner, watched: &Watched, deadline: Deadline) -> Result<Report> {
    let db = inner.feed.db();
    Ok(match watched {
        Watched::Frequency(q) => Report::Frequency(
            reports::frequency(db, q.clone(), inner.source, inner.index.as_ref(), deadline).await?,
        ),
        Watched::ResponseTimes(q) => {
            Report::ResponseTimes(service_levels::response_times(db, q.clone(), deadline).await?)
        }
    })
}

/// What a poll found that it had not seen before.
#[derive(Debug, Default)]
struct Changes {
    rows: Vec<Touched>,
    /// Deletions, merges, or more rows than one poll reads: every topic may change.
    everything: bool,
}

/// What the driver has seen within the read window, so a row read twice counts once.
#[derive(Debug, Default)]
struct Seen {
    rows: HashMap<i64, NaiveDateTime>,
    deletions: HashSet<(i64, NaiveDateTime)>,
    merges: HashSet<(i64, NaiveDateTime)>,
}

impl Seen {
    /// Forgets what was recorded at or before `since` (no later read returns it).
    fn prune(&mut self, since: NaiveDateTime) {
        self.rows.retain(|_, t| *t > since);
        self.deletions.retain(|(_, t)| *t > since);
        self.merges.retain(|(_, t)| *t > since);
    }
}

/// The read window before a poll's start: the commit bound and some slack.
fn window() -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(COMMIT_BOUND + Duration::from_millis(500)).unwrap_or_default()
}

/// Reads what was recorded, deleted and merged after `since` and not yet seen.
async fn changes(feed: &Feed, since: NaiveDateTime, seen: &mut Seen) -> Result<Changes> {
    let galera = feed.causal().await;
    let (rows, deleted, merges) = tokio::try_join!(
        content_feed::touched_since(feed.db(), galera, since, POLL_ROWS),
        feed.deletions_after(Some(since)),
        feed.merges_after(Some(since)),
    )?;
    let mut out = Changes {
        everything: rows.len() as i64 >= POLL_ROWS,
        ..Changes::default()
    };
    for row in rows {
        if seen.rows.insert(row.id, row.create_time).is_none() {
            out.rows.push(row);
        }
    }
    for d in deleted {
        out.everything |= seen.deletions.insert((d.id, d.time));
    }
    for (time, survivor, _) in merges {
        out.everything |= seen.merges.insert((survivor, time));
    }
    Ok(out)
}

/// The driver: idle while nothing is watched; otherwise polls, computes again what
/// changed and publishes, and drops the topics nobody watches any more.
async fn drive(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    loop {
        while inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            tokio::select! {
                () = inner.wake.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
        let mut seen = Seen::default();
        // The first poll reads one window back: a topic made just now is due anyway.
        let mut previous = now();
        let mut pause = POLL;
        loop {
            let started = now();
            let since = previous - window();
            match changes(&inner.feed, since, &mut seen).await {
                Ok(found) => {
                    seen.prune(since);
                    previous = started;
                    let computing = Instant::now();
                    refresh(&inner, &found).await;
                    // Reports that take long to compute are computed less often: the
                    // driver computes at most a third of the time.
                    pause = POLL.max(computing.elapsed() * 2);
                }
                // `previous` stays: the next poll reads this one's window again.
                Err(e) => {
                    tracing::warn!(error = %e, "watched reports: change poll failed; retrying")
                }
            }
            let live = {
                let mut topics = inner.topics.lock().unwrap_or_else(PoisonError::into_inner);
                topics.retain(|_, t| t.states.receiver_count() > 0);
                !topics.is_empty()
            };
            if !live {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Computes again every topic that `found` can change or that is due, and publishes the
/// states that differ.
async fn refresh(inner: &Inner, found: &Changes) {
    let topics: Vec<Arc<Topic>> = inner
        .topics
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .cloned()
        .collect();
    let at = Instant::now();
    for topic in topics {
        let due = topic.due().is_some_and(|d| d <= at);
        let touched = found.everything || found.rows.iter().any(|r| topic.watched.touched_by(r));
        if !(due || touched) || topic.states.receiver_count() == 0 {
            continue;
        }
        let as_of = now();
        let computed = compute(
            inner,
            &topic.watched,
            Deadline::for_timeout(tokio::time::Instant::now(), COMPUTE_LIMIT),
        )
        .await;
        let report = match computed {
            Ok(report) => Ok(report),
            // The report cannot be made any more: its watchers learn why.
            Err(
                e @ (Error::NotFound { .. } | Error::Merged { .. } | Error::InvalidArgument(_)),
            ) => Err(Arc::new(e)),
            Err(e) => {
                tracing::warn!(error = %e, "watched report failed; computing it again at the next poll");
                topic.set_due(Some(Instant::now()));
                continue;
            }
        };
        topic.set_due(
            report
                .as_ref()
                .ok()
                .and_then(Report::due_in)
                .map(|d| Instant::now() + d),
        );
        let current = topic.states.borrow().clone();
        let unchanged = match (&current.report, &report) {
            (Ok(a), Ok(b)) => a.same_as(b),
            _ => false,
        };
        if !unchanged {
            let next = Snapshot::new(current.version + 1, as_of, report);
            topic.states.send_replace(Arc::new(next));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::time::march_2024 as at;

    fn row(customer_id: i64, channel: i32, direction: i32, day: u32) -> Touched {
        Touched {
            id: 1,
            customer_id,
            channel,
            direction,
            occur_time: at(day),
            create_time: at(day),
        }
    }

    fn frequency(customer_ids: Vec<i64>, channels: Vec<i32>, direction: Option<i32>) -> Watched {
        Watched::Frequency(FrequencyQuery {
            customer_ids,
            channels,
            direction,
            start: at(10),
            end: at(20),
            time_zone: chrono_tz::UTC,
            granularity: crate::analytics::buckets::Granularity::Day,
            top_n: 0,
            include_gap_stats: false,
            compare_previous_period: false,
            include_sentiment: false,
        })
    }

    #[test]
    fn a_new_communication_touches_only_the_reports_that_hold_it() {
        let all = frequency(vec![], vec![], None);
        assert!(all.touched_by(&row(7, 1, 1, 12)));
        // Outside the range, before and at its exclusive end.
        assert!(!all.touched_by(&row(7, 1, 1, 9)));
        assert!(!all.touched_by(&row(7, 1, 1, 20)));
        let some = frequency(vec![3, 7], vec![2], Some(2));
        assert!(some.touched_by(&row(7, 2, 2, 12)));
        assert!(!some.touched_by(&row(8, 2, 2, 12)), "another customer");
        assert!(!some.touched_by(&row(7, 1, 2, 12)), "another channel");
        assert!(!some.touched_by(&row(7, 2, 1, 12)), "the other direction");
    }

    #[test]
    fn the_preceding_period_and_late_replies_are_in_scope() {
        let Watched::Frequency(mut q) = frequency(vec![], vec![], None) else {
            unreachable!()
        };
        q.compare_previous_period = true;
        assert!(Watched::Frequency(q).touched_by(&row(7, 1, 1, 1)));
        let waits = Watched::ResponseTimes(WaitQuery {
            customer_ids: vec![],
            channels: vec![],
            same_channel: false,
            start: at(10),
            end: at(20),
            time_zone: chrono_tz::UTC,
            granularity: crate::analytics::buckets::Granularity::Day,
            business_hours_id: None,
            sla_micros: None,
        });
        // A reply after the range ends a wait that began in it.
        assert!(waits.touched_by(&row(7, 1, 2, 25)));
        assert!(!waits.touched_by(&row(7, 1, 2, 9)));
    }

    #[test]
    fn equal_requests_share_a_topic_and_different_ones_do_not() {
        assert_eq!(
            frequency(vec![1], vec![], None).key(),
            frequency(vec![1], vec![], None).key()
        );
        assert_ne!(
            frequency(vec![1], vec![], None).key(),
            frequency(vec![2], vec![], None).key()
        );
    }

    #[test]
    fn rows_seen_are_forgotten_once_out_of_the_window() {
        let mut seen = Seen::default();
        seen.rows.insert(1, at(1));
        seen.rows.insert(2, at(3));
        seen.deletions.insert((5, at(1)));
        seen.prune(at(2));
        assert_eq!(seen.rows.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert!(seen.deletions.is_empty());
    }
}

//! The transport side of the watched reports (`WatchFrequencyReport`,
//! `WatchResponseTimeReport`): each state the hub publishes (`service::watch`) is turned
//! into its proto report once for every watcher, and each watcher is sent the whole
//! report first, then only the buckets that changed since the last state it was sent,
//! with the report's other figures whole. A slow watcher skips states, never falls
//! behind on them; one that reads nothing for the server's stall bound loses the stream,
//! as a follow stream does.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::error::{Error, Reason, Result, Violations};
use crate::grpc::convert::to_timestamp;
use crate::pb;
use crate::service::watch::{Report, Snapshot, Subscription};

/// The stream of one watch.
pub type WatchStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

/// Messages a watcher's stream may hold unread before it waits for the client.
const CHANNEL_MESSAGES: usize = 4;

/// What differs between the two watched reports.
pub trait Watchable: Send + Sync + 'static {
    /// The whole report (the unary RPC's response).
    type Full: Message + Clone + PartialEq + Send + Sync + 'static;
    /// One bucket of it.
    type Bucket: Message + Clone + PartialEq + Send + Sync + 'static;
    /// A message of the watch.
    type Out: Clone + Send + Sync + 'static;

    /// The proto form of `report`; `None` for the other kind (a bug).
    fn render(report: &Report) -> Option<Self::Full>;
    /// The report's buckets.
    fn buckets(full: &Self::Full) -> &[Self::Bucket];
    /// The report without its buckets (every other figure cloned, the buckets not).
    fn without_buckets(full: &Self::Full) -> Self::Full;
    /// Clears what changes with every computation whatever the data (`as_of`).
    fn clear_time(full: &mut Self::Full);
    /// The first message: the whole report.
    fn whole(full: Self::Full, as_of: prost_types::Timestamp, token: String) -> Self::Out;
    /// A later message: the changed buckets and the rest of the report.
    fn update(
        buckets: Vec<(u32, Self::Bucket)>,
        summary: Self::Full,
        as_of: prost_types::Timestamp,
        token: String,
    ) -> Self::Out;
}

/// A state as sent to watchers: the report, the token that names it, and the update
/// from the state before it, made once for every watcher that had that one.
struct Rendered<K: Watchable> {
    full: K::Full,
    token: String,
    version: u64,
    step: OnceLock<Option<K::Out>>,
}

impl<K: Watchable> std::fmt::Debug for Rendered<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("token", &self.token)
            .field("version", &self.version)
            .finish()
    }
}

impl<K: Watchable> Rendered<K> {
    fn new(full: K::Full, version: u64) -> Self {
        let token = token_of::<K>(&full);
        Rendered {
            full,
            token,
            version,
            step: OnceLock::new(),
        }
    }
}

/// The token of a report: a digest of its figures (not of when they were read), so
/// that a client resuming on another server of the deployment is recognized too.
fn token_of<K: Watchable>(full: &K::Full) -> String {
    let mut plain = full.clone();
    K::clear_time(&mut plain);
    let digest = Sha256::digest(plain.encode_to_vec());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The rendering of `snapshot`, made by the first watcher that needs it.
fn rendered<K: Watchable>(snapshot: &Snapshot, report: &Report) -> Option<Arc<Rendered<K>>> {
    let any = snapshot.rendered.get_or_init(|| {
        let made =
            K::render(report).map(|full| Arc::new(Rendered::<K>::new(full, snapshot.version)));
        Box::new(made)
    });
    any.downcast_ref::<Option<Arc<Rendered<K>>>>()
        .cloned()
        .flatten()
}

/// The message that takes a client from `last` (what it was sent before, if anything)
/// to `current`; `None` when nothing it shows changed. A client one state behind gets
/// the update every such client gets, made once.
fn message<K: Watchable>(
    last: Option<&Rendered<K>>,
    current: &Rendered<K>,
    as_of: prost_types::Timestamp,
) -> Option<K::Out> {
    let Some(last) = last else {
        return Some(K::whole(current.full.clone(), as_of, current.token.clone()));
    };
    if last.version + 1 == current.version {
        return current
            .step
            .get_or_init(|| diff(last, current, as_of))
            .clone();
    }
    diff(last, current, as_of)
}

/// The changed buckets and the rest of `current`; `None` when the figures are the same.
fn diff<K: Watchable>(
    last: &Rendered<K>,
    current: &Rendered<K>,
    as_of: prost_types::Timestamp,
) -> Option<K::Out> {
    if last.token == current.token {
        return None;
    }
    let (now, then) = (K::buckets(&current.full), K::buckets(&last.full));
    if now.len() != then.len() {
        // Not the same report's buckets (cannot happen for one query): start over.
        return Some(K::whole(current.full.clone(), as_of, current.token.clone()));
    }
    let changed = now
        .iter()
        .zip(then)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, _))| (u32::try_from(i).unwrap_or(u32::MAX), a.clone()))
        .collect();
    Some(K::update(
        changed,
        K::without_buckets(&current.full),
        as_of,
        current.token.clone(),
    ))
}

/// Why a watch whose client stopped reading was ended.
fn stalled(idle: Duration) -> Error {
    Error::ResourceExhausted {
        reason: Reason::StreamStalled,
        message: format!(
            "the client read nothing for {} s; the watch was ended: watch again with the last state_token",
            idle.as_secs()
        ),
    }
}

fn shutting_down() -> Error {
    Error::Unavailable {
        reason: Reason::ShuttingDown,
        message: "server is shutting down; watch again with the last state_token".to_owned(),
    }
}

/// Streams `subscription` to a client: the whole report (or, when `resume_token` names
/// the current state, an update without changed buckets), then every change.
pub fn stream<K: Watchable>(
    subscription: Subscription,
    resume_token: String,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> WatchStream<K::Out> {
    let (tx, rx) = mpsc::channel(CHANNEL_MESSAGES);
    let gone = Arc::new(AtomicBool::new(false));
    let stall = Arc::clone(&gone);
    let feed = async move {
        // Held to the end: its slot among the server's streams.
        let mut subscription = subscription;
        let states = &mut subscription.states;
        let mut last: Option<Arc<Rendered<K>>> = None;
        let mut resume = (!resume_token.is_empty()).then_some(resume_token);
        loop {
            let snapshot = states.borrow_and_update().clone();
            let out = match &snapshot.report {
                Err(e) => Some(Err(Status::from(e.for_another_caller()))),
                Ok(report) => {
                    let Some(current) = rendered::<K>(&snapshot, report) else {
                        return;
                    };
                    let as_of = to_timestamp(snapshot.as_of);
                    // A client resuming from the state it holds gets no buckets.
                    let base = match resume.take() {
                        Some(token) if token == current.token => Some(Arc::clone(&current)),
                        _ => last.clone(),
                    };
                    let m = message::<K>(base.as_deref(), &current, as_of).or_else(|| {
                        match last.is_none() {
                            // Resumed without a change: the client learns it is live.
                            true => Some(K::update(
                                Vec::new(),
                                K::without_buckets(&current.full),
                                as_of,
                                current.token.clone(),
                            )),
                            false => None,
                        }
                    });
                    last = Some(current);
                    m.map(Ok)
                }
            };
            let ended = matches!(out, Some(Err(_)));
            if let Some(out) = out {
                match tx.send_timeout(out, idle).await {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        stall.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => return,
                }
            }
            if ended {
                return;
            }
            let closing = tokio::select! {
                changed = states.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return,
                },
                r = shutdown.wait_for(|s| *s) => r.is_ok(),
                () = tx.closed() => return,
            };
            if closing {
                let _ = tx
                    .send_timeout(Err(Status::from(shutting_down())), idle)
                    .await;
            }
            return;
        }
    };
    tokio::spawn(feed);
    let tail = tokio_stream::once(()).filter_map(move |()| {
        gone.load(Ordering::Relaxed)
            .then(|| Err(Status::from(stalled(idle))))
    });
    Box::pin(ReceiverStream::new(rx).chain(tail))
}

/// The `query` of a watch request, its violations named `query.<field>`.
pub fn nested<Q, T>(query: Option<Q>, convert: impl FnOnce(Q) -> Result<T>) -> Result<T> {
    let Some(query) = query else {
        return Err(Error::invalid("query", "is required"));
    };
    convert(query).map_err(|e| match e {
        Error::InvalidArgument(found) => {
            let mut v = Violations::new();
            for f in found {
                let field = match f.field.is_empty() {
                    true => "query".to_owned(),
                    false => format!("query.{}", f.field),
                };
                v.add(field, f.description);
            }
            Error::InvalidArgument(v.into_inner())
        }
        other => other,
    })
}

/// `WatchFrequencyReport`.
#[derive(Debug)]
pub struct Frequency;

impl Watchable for Frequency {
    type Full = pb::GetFrequencyReportResponse;
    type Bucket = pb::FrequencyBucket;
    type Out = pb::WatchFrequencyReportResponse;

    fn render(report: &Report) -> Option<Self::Full> {
        match report {
            Report::Frequency(r) => Some(r.clone().into()),
            Report::ResponseTimes(_) => None,
        }
    }

    fn buckets(full: &Self::Full) -> &[Self::Bucket] {
        &full.buckets
    }

    fn without_buckets(f: &Self::Full) -> Self::Full {
        pb::GetFrequencyReportResponse {
            total_count: f.total_count,
            span_days: f.span_days,
            per_day_average: f.per_day_average,
            channel_counts: f.channel_counts.clone(),
            buckets: Vec::new(),
            first_contact_time: f.first_contact_time,
            last_contact_time: f.last_contact_time,
            mean_gap: f.mean_gap,
            median_gap: f.median_gap,
            customer_count: f.customer_count,
            top_customers: f.top_customers.clone(),
            time_zone: f.time_zone.clone(),
            previous_period: f.previous_period.clone(),
            sentiment: f.sentiment,
        }
    }

    fn clear_time(_: &mut Self::Full) {}

    fn whole(full: Self::Full, as_of: prost_types::Timestamp, token: String) -> Self::Out {
        pb::WatchFrequencyReportResponse {
            change: Some(pb::watch_frequency_report_response::Change::Report(full)),
            as_of: Some(as_of),
            state_token: token,
        }
    }

    fn update(
        buckets: Vec<(u32, Self::Bucket)>,
        summary: Self::Full,
        as_of: prost_types::Timestamp,
        token: String,
    ) -> Self::Out {
        let update = pb::FrequencyReportUpdate {
            buckets: buckets
                .into_iter()
                .map(|(index, bucket)| pb::IndexedFrequencyBucket {
                    index,
                    bucket: Some(bucket),
                })
                .collect(),
            summary: Some(summary),
        };
        pb::WatchFrequencyReportResponse {
            change: Some(pb::watch_frequency_report_response::Change::Update(update)),
            as_of: Some(as_of),
            state_token: token,
        }
    }
}

/// `WatchResponseTimeReport`.
#[derive(Debug)]
pub struct ResponseTimes;

impl Watchable for ResponseTimes {
    type Full = pb::GetResponseTimeReportResponse;
    type Bucket = pb::WaitBucket;
    type Out = pb::WatchResponseTimeReportResponse;

    fn render(report: &Report) -> Option<Self::Full> {
        match report {
            Report::ResponseTimes(r) => Some(r.clone().into()),
            Report::Frequency(_) => None,
        }
    }

    fn buckets(full: &Self::Full) -> &[Self::Bucket] {
        &full.buckets
    }

    fn without_buckets(f: &Self::Full) -> Self::Full {
        pb::GetResponseTimeReportResponse {
            total: f.total,
            channels: f.channels.clone(),
            buckets: Vec::new(),
            time_zone: f.time_zone.clone(),
            business_hours_id: f.business_hours_id,
            as_of: f.as_of,
        }
    }

    fn clear_time(full: &mut Self::Full) {
        full.as_of = None;
    }

    fn whole(full: Self::Full, as_of: prost_types::Timestamp, token: String) -> Self::Out {
        pb::WatchResponseTimeReportResponse {
            change: Some(pb::watch_response_time_report_response::Change::Report(
                full,
            )),
            as_of: Some(as_of),
            state_token: token,
        }
    }

    fn update(
        buckets: Vec<(u32, Self::Bucket)>,
        summary: Self::Full,
        as_of: prost_types::Timestamp,
        token: String,
    ) -> Self::Out {
        let update = pb::ResponseTimeReportUpdate {
            buckets: buckets
                .into_iter()
                .map(|(index, bucket)| pb::IndexedWaitBucket {
                    index,
                    bucket: Some(bucket),
                })
                .collect(),
            summary: Some(summary),
        };
        pb::WatchResponseTimeReportResponse {
            change: Some(pb::watch_response_time_report_response::Change::Update(
                update,
            )),
            as_of: Some(as_of),
            state_token: token,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn report(counts: &[i64]) -> Rendered<Frequency> {
        report_at(counts, 1)
    }

    fn report_at(counts: &[i64], version: u64) -> Rendered<Frequency> {
        let full = pb::GetFrequencyReportResponse {
            total_count: counts.iter().sum(),
            buckets: counts
                .iter()
                .map(|&count| pb::FrequencyBucket {
                    count,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        Rendered::new(full, version)
    }

    fn apply(state: &mut pb::GetFrequencyReportResponse, out: pb::WatchFrequencyReportResponse) {
        match out.change.unwrap() {
            pb::watch_frequency_report_response::Change::Report(r) => *state = r,
            pb::watch_frequency_report_response::Change::Update(u) => {
                let mut buckets = std::mem::take(&mut state.buckets);
                for b in u.buckets {
                    buckets[b.index as usize] = b.bucket.unwrap();
                }
                *state = u.summary.unwrap();
                state.buckets = buckets;
            }
        }
    }

    #[test]
    fn an_update_carries_only_the_changed_buckets_and_applies_to_the_new_state() {
        let (a, b) = (report_at(&[1, 2, 3, 4], 1), report_at(&[1, 5, 3, 6], 2));
        let first = message::<Frequency>(None, &a, Default::default()).unwrap();
        let mut state = pb::GetFrequencyReportResponse::default();
        apply(&mut state, first);
        assert_eq!(state, a.full);
        let next = message::<Frequency>(Some(&a), &b, Default::default()).unwrap();
        let Some(pb::watch_frequency_report_response::Change::Update(u)) = &next.change else {
            panic!("an update: {next:?}")
        };
        assert_eq!(
            u.buckets.iter().map(|b| b.index).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(next.state_token, b.token);
        apply(&mut state, next);
        assert_eq!(state, b.full);
        assert!(
            message::<Frequency>(Some(&b), &report_at(&[1, 5, 3, 6], 3), Default::default())
                .is_none()
        );
        // Every watcher one state behind gets the one update made for the step; one
        // further behind gets its own.
        let again = message::<Frequency>(Some(&a), &b, Default::default()).unwrap();
        assert!(b
            .step
            .get()
            .is_some_and(|step| step.as_ref() == Some(&again)));
        let c = report_at(&[9, 5, 3, 6], 3);
        let skipped = message::<Frequency>(Some(&a), &c, Default::default()).unwrap();
        let Some(pb::watch_frequency_report_response::Change::Update(u)) = &skipped.change else {
            panic!("an update: {skipped:?}")
        };
        assert_eq!(
            u.buckets.iter().map(|b| b.index).collect::<Vec<_>>(),
            vec![0, 1, 3]
        );
        assert!(c.step.get().is_none());
    }

    #[test]
    fn a_token_names_the_figures_not_the_time_they_were_read() {
        let at = |s| pb::GetResponseTimeReportResponse {
            as_of: Some(prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            token_of::<ResponseTimes>(&at(1)),
            token_of::<ResponseTimes>(&at(2))
        );
        assert_ne!(report(&[1]).token, report(&[2]).token);
        assert_eq!(report(&[1]).token.len(), 32);
    }

    #[test]
    fn violations_of_the_query_are_named_under_it() {
        let e = nested(Some(()), |()| -> Result<()> {
            Err(Error::invalid("start_time", "is required"))
        })
        .unwrap_err();
        let Error::InvalidArgument(v) = e else {
            panic!()
        };
        assert_eq!(v[0].field, "query.start_time");
        let Error::InvalidArgument(v) = nested(None::<()>, |()| Ok(())).unwrap_err() else {
            panic!()
        };
        assert_eq!(v[0].field, "query");
    }
}

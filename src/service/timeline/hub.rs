//! One poller per server for follow streams: while anyone follows, it walks the change
//! feed (`service::feed`) of every source, across all customers, from its watermark to
//! the settled bound, and broadcasts each event once, in recording order. Streams
//! filter in memory, so the query rate does not grow with them and an idle follow
//! stream holds no connection.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{broadcast, watch, Notify};

use super::POLL_INTERVAL;
use crate::db::timeline::{Event, Source};
use crate::error::Error;
use crate::model::filter::CommunicationFilter;
use crate::service::feed::{settled_now, Feed, Position};

/// New events the hub keeps for subscribers that have not read them yet; a subscriber
/// further behind than this has lagged and its stream ends with `FOLLOW_LAGGED`.
pub const BUFFER_EVENTS: usize = 4096;

/// Most events one poll broadcasts: a burst is spread over several polls, so streams
/// that keep up with it drain the buffer between them instead of lagging at once.
pub const POLL_EVENTS: usize = BUFFER_EVENTS / 4;

/// The pause after a poll that stopped at [`POLL_EVENTS`] (more is waiting).
const BURST_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Every source, in rank order: the hub reads them all for every stream.
const SOURCES: [Source; 3] = [
    Source::Communications,
    Source::Transactions,
    Source::Tickets,
];

/// One newly recorded event, as broadcast to every follow stream, in recording order.
#[derive(Debug)]
pub struct Recorded {
    /// The event.
    pub event: Event,
    /// Its recording position.
    pub position: Position,
}

/// Handle to the server's follow poller; cheap to clone.
#[derive(Clone)]
pub struct FollowHub {
    inner: Arc<Inner>,
    feed: Feed,
}

struct Inner {
    sender: broadcast::Sender<Arc<Recorded>>,
    /// Wakes the idle poller when the first subscriber arrives.
    wake: Notify,
    /// Every event at or before this position was broadcast before it was set; `None`
    /// while idle. Broadcasts and their watermark change under this lock, and so does
    /// a subscription, so a subscriber receives every event after the watermark it got.
    watermark: Mutex<Option<Position>>,
}

impl std::fmt::Debug for FollowHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowHub")
            .field("subscribers", &self.inner.sender.receiver_count())
            .finish()
    }
}

/// The position just after every event recorded at or before `time`.
pub fn end_of(time: chrono::NaiveDateTime) -> Position {
    (time, i64::MAX, Source::Tickets)
}

impl FollowHub {
    /// Spawns the poller over `feed`; it polls only while someone is subscribed and ends
    /// when `shutdown` becomes `true` (or its sender is dropped).
    pub fn start(feed: Feed, shutdown: watch::Receiver<bool>) -> FollowHub {
        let (sender, _) = broadcast::channel(BUFFER_EVENTS);
        let inner = Arc::new(Inner {
            sender,
            wake: Notify::new(),
            watermark: Mutex::new(None),
        });
        tokio::spawn(run(Arc::clone(&inner), feed.clone(), shutdown));
        FollowHub { inner, feed }
    }

    /// The feed the hub walks.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Subscribes to every event recorded after the returned position, waking the
    /// poller if it was idle (it then starts from the settled bound). Dropping the
    /// receiver unsubscribes.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Recorded>>, Position) {
        let mut watermark = self
            .inner
            .watermark
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let receiver = self.inner.sender.subscribe();
        let from = *watermark.get_or_insert_with(|| end_of(settled_now()));
        drop(watermark);
        self.inner.wake.notify_one();
        (receiver, from)
    }
}

/// Waits for subscribers, polls while there are any, and ends at shutdown.
async fn run(inner: Arc<Inner>, feed: Feed, mut shutdown: watch::Receiver<bool>) {
    loop {
        // Idle: nobody follows, so no query at all. A subscribe between the count and
        // `notified` leaves a permit, so the wake-up is not lost.
        while inner.sender.receiver_count() == 0 {
            tokio::select! {
                () = inner.wake.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
        if poll_while_subscribed(&inner, &feed, &mut shutdown)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Shutdown was signalled.
struct ShuttingDown;

/// Every `POLL_INTERVAL`, walks the feed from the watermark to the settled bound and
/// broadcasts what it finds; returns (idle, watermark forgotten) when the last
/// subscriber has gone.
async fn poll_while_subscribed(
    inner: &Inner,
    feed: &Feed,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ShuttingDown> {
    loop {
        let from = {
            let mut watermark = inner
                .watermark
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if inner.sender.receiver_count() == 0 {
                *watermark = None;
                return Ok(());
            }
            *watermark.get_or_insert_with(|| end_of(settled_now()))
        };
        // Taken before the read: every row stamped at or before it is visible to it.
        let upto = settled_now();
        let mut pause = POLL_INTERVAL;
        if upto > from.0 {
            match read(feed, from, upto).await {
                Ok((fresh, complete)) => {
                    let mut watermark = inner
                        .watermark
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    // Stopped early: every event up to the last one sent was sent.
                    let reached = match (complete, fresh.last()) {
                        (false, Some((_, last))) => *last,
                        _ => end_of(upto),
                    };
                    for (event, position) in fresh {
                        // No receiver left is fine: the next round goes idle.
                        let _ = inner.sender.send(Arc::new(Recorded { event, position }));
                    }
                    *watermark = Some(reached);
                    if !complete {
                        pause = BURST_PAUSE;
                    }
                }
                // The watermark stays put, so the next poll finds what this one
                // missed; subscribers just see the events later.
                Err(e) => tracing::warn!(error = %e, "follow poll failed; retrying"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|s| *s) => return Err(ShuttingDown),
        }
    }
}

/// The events of every customer recorded after `from` and at or before `upto`, in
/// recording order, at most [`POLL_EVENTS`]; `true` when that is all of them.
async fn read(
    feed: &Feed,
    from: Position,
    upto: chrono::NaiveDateTime,
) -> Result<(Vec<(Event, Position)>, bool), Error> {
    let mut walk = feed.walk(&SOURCES, &CommunicationFilter::default(), Some(from), upto);
    let mut fresh = Vec::new();
    while fresh.len() < POLL_EVENTS {
        let Some(event) = walk.next().await? else {
            return Ok((fresh, true));
        };
        let position = event.position();
        fresh.push((event, position));
    }
    Ok((fresh, false))
}

//! One poller per server for follow streams: while anyone follows, it reads what every
//! source recorded since its watermark, across all customers, and broadcasts each new
//! event once. Streams filter in memory, so the query rate does not grow with them and
//! an idle follow stream holds no connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::NaiveDateTime;
use tokio::sync::{broadcast, watch, Notify};

use super::{lookback, POLL_INTERVAL};
use crate::db::timeline::{self, Event, Source};
use crate::db::Db;
use crate::error::Error;
use crate::model::filter::CommunicationFilter;
use crate::model::time::now;

/// New events the hub keeps for subscribers that have not read them yet; a subscriber
/// further behind than this has lagged and its stream ends with `FOLLOW_LAGGED`.
pub const BUFFER_EVENTS: usize = 4096;

/// Rows per read of one source.
const PAGE_ROWS: i64 = super::PAGE_ROWS;

/// Every source, in rank order: the hub reads them all for every stream.
const SOURCES: [Source; 3] = [
    Source::Communications,
    Source::Transactions,
    Source::Tickets,
];

/// One newly recorded event, as broadcast to every follow stream.
#[derive(Debug)]
pub struct Recorded {
    /// The event.
    pub event: Event,
    /// Start of the record-time window of the poll that found it: this and every later
    /// message carries an event recorded at or after this time, so a subscriber may
    /// forget what it sent that was recorded earlier.
    pub window_start: NaiveDateTime,
}

/// Handle to the server's follow poller; cheap to clone.
#[derive(Clone)]
pub struct FollowHub {
    inner: Arc<Inner>,
}

struct Inner {
    sender: broadcast::Sender<Arc<Recorded>>,
    /// Wakes the idle poller when the first subscriber arrives.
    wake: Notify,
    /// Where an idle poller starts: the record-time window of its first subscriber.
    first_window: Mutex<Option<NaiveDateTime>>,
}

impl std::fmt::Debug for FollowHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowHub")
            .field("subscribers", &self.inner.sender.receiver_count())
            .finish()
    }
}

impl FollowHub {
    /// Spawns the poller over `db`; it polls only while someone is subscribed and ends
    /// when `shutdown` becomes `true` (or its sender is dropped).
    pub fn start(db: Db, shutdown: watch::Receiver<bool>) -> FollowHub {
        let (sender, _) = broadcast::channel(BUFFER_EVENTS);
        let inner = Arc::new(Inner {
            sender,
            wake: Notify::new(),
            first_window: Mutex::new(None),
        });
        tokio::spawn(run(Arc::clone(&inner), db, shutdown));
        FollowHub { inner }
    }

    /// Subscribes to every event recorded from now on (and a lookback before), waking
    /// the poller if it was idle. Dropping the receiver unsubscribes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Recorded>> {
        let receiver = self.inner.sender.subscribe();
        self.inner
            .first_window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| now() - lookback());
        self.inner.wake.notify_one();
        receiver
    }
}

/// Waits for subscribers, polls while there are any, and ends at shutdown.
async fn run(inner: Arc<Inner>, db: Db, mut shutdown: watch::Receiver<bool>) {
    loop {
        // Idle: nobody follows, so no query at all. A subscribe between the count and
        // `notified` leaves a permit, so the wake-up is not lost.
        while inner.sender.receiver_count() == 0 {
            tokio::select! {
                () = inner.wake.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
        if poll_while_subscribed(&inner, &db, &mut shutdown)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Shutdown was signalled.
struct ShuttingDown;

/// Every `POLL_INTERVAL`, reads what was recorded since the watermark and broadcasts
/// what was not broadcast yet; returns when the last subscriber has gone.
async fn poll_while_subscribed(
    inner: &Inner,
    db: &Db,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ShuttingDown> {
    // Rows recorded at or after `since` are read by the next poll; what was broadcast
    // within that window is remembered so nothing is sent twice.
    let mut since: Option<NaiveDateTime> = None;
    let mut recent: HashMap<(Source, i64), NaiveDateTime> = HashMap::new();
    loop {
        if inner.sender.receiver_count() == 0 {
            return Ok(());
        }
        // Only an idle poller starts from its first subscriber's window; a running
        // one already covers every later subscriber's window.
        let first = inner
            .first_window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let window = since.or(first).unwrap_or_else(|| now() - lookback());
        let poll_time = now();
        match read_since(db, window, &recent).await {
            Ok(mut fresh) => {
                fresh.sort_by_key(Event::key);
                for event in fresh {
                    recent.insert((event.key().2, event.key().1), event.create_time());
                    // No receiver left is fine: the next round goes idle.
                    let _ = inner.sender.send(Arc::new(Recorded {
                        event,
                        window_start: window,
                    }));
                }
                let next = window.max(poll_time - lookback());
                recent.retain(|_, created| *created >= next);
                since = Some(next);
            }
            Err(e) => {
                // The window stays put, so the next successful poll finds what this one
                // missed; subscribers just see the events later.
                tracing::warn!(error = %e, "follow poll failed; retrying");
                since = Some(window);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = shutdown.wait_for(|s| *s) => return Err(ShuttingDown),
        }
    }
}

/// Every event of every customer recorded at or after `since` that is not in `recent`.
async fn read_since(
    db: &Db,
    since: NaiveDateTime,
    recent: &HashMap<(Source, i64), NaiveDateTime>,
) -> Result<Vec<Event>, Error> {
    let everything = CommunicationFilter::default();
    let mut fresh = Vec::new();
    for source in SOURCES {
        let mut after = None;
        loop {
            let rows =
                timeline::recorded_since(db, source, &everything, since, after, PAGE_ROWS).await?;
            let full = rows.len() as i64 == PAGE_ROWS;
            if let Some(last) = rows.last() {
                after = Some((last.create_time(), last.key().1));
            }
            fresh.extend(
                rows.into_iter()
                    .filter(|e| !recent.contains_key(&(e.key().2, e.key().1))),
            );
            if !full {
                break;
            }
        }
    }
    Ok(fresh)
}

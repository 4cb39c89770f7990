//! The customer-360 timeline use case: merges the sources' keyset pages into one total
//! order `(occur_time, id, source)` (the history), resumes after a cursor, and follows
//! the change feed (`service::feed`) in recording order (the live phase). It streams
//! domain [`Event`]s, each with its [`Mark`]; the gRPC layer turns them into
//! `TimelineEvent`s and their marks into cursors.
//!
//! A follow stream reads its history as a snapshot: the rows recorded at or before a
//! settled time (the snapshot), which no later commit changes; its live phase then
//! delivers every event recorded after the snapshot, back-dated or not, in recording
//! order. A history event's cursor holds its key and the snapshot, a live event's its
//! recording position, so a resumed stream, on any server, continues exactly.
//!
//! A spawned task reads one short page at a time (no connection is held while the
//! client reads) and feeds a bounded channel, so a slow reader slows the stream and
//! the server's memory stays flat however long the timeline is. Follow streams then
//! take new events from the server's one [`FollowHub`] instead of polling themselves.

pub mod hub;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tracing::Instrument;

use crate::db::timeline::{self, After, Event, Key, Source};
use crate::db::{customers, Db};
use crate::error::Error;
use crate::model::filter::CommunicationFilter;
use crate::service::feed::{settled_now, Position};
pub use crate::service::feed::{COMMIT_BOUND, SETTLE};
pub use hub::FollowHub;
use hub::{end_of, Recorded};

/// Rows of a source's first page: what a stream sends before its second read.
pub const PAGE_ROWS: i64 = 1000;
/// Rows of a source's later pages: a long timeline is read in fewer, larger
/// statements (on MariaDB each is prepared, run and closed: three round trips), while
/// the first events still go out after one short read.
pub const LATER_PAGE_ROWS: i64 = 4000;
/// Events buffered between the reader task and the client.
const CHANNEL_EVENTS: usize = 512;
/// History events handed to the client's side at once: one channel operation (and at
/// most one wake-up of the sending task) per batch instead of per event.
const BATCH_EVENTS: usize = 64;
/// How often the follow hub looks for newly settled events: a live event reaches its
/// streams between [`SETTLE`] and `SETTLE + POLL_INTERVAL` (plus the read) after it
/// was recorded.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How many times a follow stream that fell behind the hub before sending any live
/// event (while sending its history) re-reads the feed instead of ending with
/// `FOLLOW_LAGGED`.
const HANDOVER_ATTEMPTS: u32 = 8;

/// Where a streamed event sits; its cursor holds this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A history event: its timeline key and the stream's history snapshot (rows
    /// recorded at or before it).
    History {
        /// `(occur_time, id, source)`.
        key: Key,
        /// The snapshot's record time.
        snapshot: NaiveDateTime,
    },
    /// A live event: its recording position.
    Recorded(Position),
}

/// Where a stream resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// After a history event; `snapshot` is `None` for a cursor issued before cursors
    /// named their snapshot (the new stream's own snapshot is used).
    History {
        /// `(occur_time, id, source)` of the event.
        key: Key,
        /// The snapshot its stream read.
        snapshot: Option<NaiveDateTime>,
    },
    /// After a live event.
    Recorded(Position),
}

/// One event of a stream with its mark.
#[derive(Debug, Clone)]
pub struct Streamed {
    /// The event.
    pub event: Event,
    /// Where it sits.
    pub mark: Mark,
}

/// What the timeline use case needs of the server: the database, the follow hub, the
/// follow-stream limit and the shutdown signal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The database.
    pub db: Db,
    /// The one poller that feeds every follow stream.
    pub follow: FollowHub,
    /// Permits for open follow streams; none left means RESOURCE_EXHAUSTED.
    pub follow_permits: Arc<Semaphore>,
    /// Becomes `true` when shutdown starts; streams end on it.
    pub shutdown: watch::Receiver<bool>,
    /// How long a stream may wait for its client to take an event: a client that reads
    /// nothing for this long loses the stream (and its follow slot).
    pub stream_idle: Duration,
}

/// The events of one timeline stream, in timeline order; an error ends it.
pub type EventStream = std::pin::Pin<Box<dyn Stream<Item = Result<Streamed, Error>> + Send>>;

/// Where a stream's reader task puts its events.
struct Out {
    tx: mpsc::Sender<Result<Vec<Streamed>, Error>>,
    /// See [`Timeline::stream_idle`].
    idle: Duration,
    /// Set when the client read nothing for `idle`: the stream then ends with
    /// [`stalled_error`] once the client reads again.
    stalled: Arc<AtomicBool>,
}

/// Why a stream whose client stopped reading was ended.
fn stalled_error(idle: Duration) -> Error {
    Error::ResourceExhausted {
        reason: crate::error::Reason::StreamStalled,
        message: format!(
            "the client read nothing for {} s; the stream was ended: resume from the last cursor",
            idle.as_secs()
        ),
    }
}

/// A validated timeline request.
#[derive(Debug, Clone)]
pub struct TimelineRequest {
    /// Which events.
    pub filter: CommunicationFilter,
    /// Which sources, communications always first.
    pub sources: Vec<Source>,
    /// Newest first instead of oldest first.
    pub descending: bool,
    /// Continue after this event.
    pub resume: Option<Resume>,
    /// Keep following after the history.
    pub follow: bool,
}

impl Timeline {
    /// Opens a timeline stream: the customer, if one is named, must exist, and a follow
    /// stream takes one of the follow permits (none left is RESOURCE_EXHAUSTED) and
    /// holds it until the stream ends.
    pub async fn open(&self, request: TimelineRequest) -> Result<EventStream, Error> {
        if let Some(customer_id) = request.filter.single_customer() {
            customers::ensure_exists(&self.db, customer_id).await?;
        }
        let permit = if request.follow {
            let permit = self
                .follow_permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| Error::ResourceExhausted {
                    reason: crate::error::Reason::TooManyFollowStreams,
                    message: "too many open follow streams; retry later".to_owned(),
                })?;
            Some(permit)
        } else {
            None
        };
        Ok(stream(self.clone(), request, permit))
    }
}

/// Starts streaming `request`; the permit (for follow streams) is held until the
/// stream ends.
fn stream(
    state: Timeline,
    request: TimelineRequest,
    permit: Option<OwnedSemaphorePermit>,
) -> EventStream {
    let (tx, rx) = mpsc::channel(CHANNEL_EVENTS / BATCH_EVENTS);
    let idle = state.stream_idle;
    let stalled = Arc::new(AtomicBool::new(false));
    let out = Out {
        tx,
        idle,
        stalled: Arc::clone(&stalled),
    };
    let feed = async move {
        let _permit = permit;
        let _open = crate::metrics::OpenStream::new(request.follow);
        let started = std::time::Instant::now();
        let mut sent = 0u64;
        let result = run(&state, &request, &out, &mut sent).await;
        let outcome = match result {
            Ok(()) if out.stalled.load(Ordering::Relaxed) => "stalled".to_owned(),
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                let text = e.to_string();
                if out.tx.send_timeout(Err(e), idle).await.is_err() {
                    out.stalled.store(true, Ordering::Relaxed);
                }
                text
            }
        };
        tracing::info!(
            events = sent,
            elapsed_ms = started.elapsed().as_millis() as u64,
            follow = request.follow,
            outcome,
            "timeline stream ended"
        );
    };
    // The call's span (traces) covers the work that feeds its stream.
    tokio::spawn(feed.in_current_span());
    // After the last event the task sent, the stall (if any) that ended the stream.
    let tail = tokio_stream::once(()).filter_map(move |()| {
        stalled
            .load(Ordering::Relaxed)
            .then(|| Err(stalled_error(idle)))
    });
    let events = futures_util::StreamExt::flat_map(ReceiverStream::new(rx), |batch| {
        let (events, error) = match batch {
            Ok(events) => (events, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        tokio_stream::iter(events.into_iter().map(Ok).chain(error.map(Err)))
    });
    Box::pin(events.chain(tail))
}

/// Why the stream stops early without an error of its own.
enum Stop {
    /// The client went away, or read nothing for the idle bound.
    Gone,
}

/// One source's events in timeline order: a task of its own reads its keyset pages
/// one after another into a channel of [`READ_AHEAD`] pages, so the database works
/// while the merge sends the buffered events (the next page's position is the last
/// row of the one before, so pages are read in sequence).
struct Reader {
    buffer: VecDeque<Event>,
    /// Pages, each with whether it is the source's last.
    pages: mpsc::Receiver<Result<(Vec<Event>, bool), Error>>,
    done: bool,
    task: tokio::task::JoinHandle<()>,
}

/// Pages a source's reader task may hold ready beyond the one being sent.
const READ_AHEAD: usize = 1;

/// What a history page reads: with `bound`, only rows recorded at or before its time,
/// causally on a Galera node (the flag).
#[derive(Debug, Clone, Copy)]
struct Pages {
    descending: bool,
    bound: Option<(NaiveDateTime, bool)>,
}

impl Reader {
    /// Starts reading `source`'s pages after `after`.
    fn start(
        state: &Timeline,
        req: &TimelineRequest,
        source: Source,
        mut after: Option<After>,
        pages: Pages,
    ) -> Reader {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let (db, filter) = (state.db.clone(), req.filter.clone());
        let read = async move {
            let mut limit = PAGE_ROWS;
            loop {
                let page = timeline::page(
                    &db,
                    source,
                    &filter,
                    after,
                    pages.descending,
                    pages.bound,
                    limit,
                )
                .await;
                let last = match &page {
                    Ok(rows) if (rows.len() as i64) == limit => rows.last().map(|e| {
                        let (time, id, _) = e.key();
                        After { time, id }
                    }),
                    _ => None,
                };
                // A short page is the last; the stream ended (or went away) when nobody
                // takes the page.
                let page = page.map(|rows| (rows, last.is_none()));
                if tx.send(page).await.is_err() || last.is_none() {
                    return;
                }
                after = last;
                limit = LATER_PAGE_ROWS;
            }
        };
        Reader {
            buffer: VecDeque::new(),
            pages: rx,
            done: false,
            task: tokio::spawn(read.in_current_span()),
        }
    }

    /// The next page; `done` once a page is short.
    async fn next_page(&mut self) -> Result<Vec<Event>, Error> {
        let (rows, last) = self
            .pages
            .recv()
            .await
            .ok_or_else(|| Error::Internal("timeline page reader stopped".into()))??;
        self.done = last;
        Ok(rows)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // A stream that ends early (client gone, error) stops its reads.
        self.task.abort();
    }
}

/// The first position to read of `source` so that the merged stream continues
/// strictly after `resume` in `(time, id, source)` order.
fn start_after(resume: Option<Key>, source: Source, descending: bool) -> Option<After> {
    let (time, id, resume_source) = resume?;
    // Same (time, id) in a later-ranked source still comes after the cursor, so that
    // source's bound is made inclusive by moving the id by one.
    let id = match (descending, source.cmp(&resume_source)) {
        (false, std::cmp::Ordering::Greater) => id.saturating_sub(1),
        (true, std::cmp::Ordering::Less) => id.saturating_add(1),
        _ => id,
    };
    Some(After { time, id })
}

fn shutting_down(state: &Timeline) -> bool {
    *state.shutdown.borrow()
}

fn shutdown_error() -> Error {
    Error::Unavailable {
        reason: crate::error::Reason::ShuttingDown,
        message: "server is shutting down; resume from the last cursor".to_owned(),
    }
}

async fn send(tx: &Out, event: Event, mark: Mark, sent: &mut u64) -> Result<(), Stop> {
    send_batch(tx, vec![Streamed { event, mark }], sent).await
}

/// The events of `batch`, leaving it empty with room for the next batch (none is
/// allocated while it stays empty).
fn take_batch(batch: &mut Vec<Streamed>) -> Vec<Streamed> {
    if batch.is_empty() {
        return Vec::new();
    }
    std::mem::replace(batch, Vec::with_capacity(BATCH_EVENTS))
}

/// Hands `batch` to the client's side (nothing when it is empty).
async fn send_batch(tx: &Out, batch: Vec<Streamed>, sent: &mut u64) -> Result<(), Stop> {
    let n = batch.len() as u64;
    if n == 0 {
        return Ok(());
    }
    // Room in the channel (the usual case while the client keeps up): no timer to arm.
    let item = match tx.tx.try_send(Ok(batch)) {
        Ok(()) => {
            *sent += n;
            return Ok(());
        }
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Gone),
        Err(mpsc::error::TrySendError::Full(item)) => item,
    };
    match tx.tx.send_timeout(item, tx.idle).await {
        Ok(()) => {}
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            tx.stalled.store(true, Ordering::Relaxed);
            return Err(Stop::Gone);
        }
        Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(Stop::Gone),
    }
    *sent += n;
    Ok(())
}

async fn run(
    state: &Timeline,
    req: &TimelineRequest,
    tx: &Out,
    sent: &mut u64,
) -> Result<(), Error> {
    // Subscribe before reading anything: the hub broadcasts every event recorded after
    // the position it names, and this stream's own reads cover what comes before.
    let live = req.follow.then(|| state.follow.subscribe());
    let (history_after, snapshot) = match req.resume {
        Some(Resume::Recorded(position)) => {
            // A live cursor: no history, the live phase continues after it. Without
            // follow, what has settled since is sent and the stream ends.
            let upto = settled_now();
            return match live {
                Some(live) => follow(state, req, tx, sent, position, live).await,
                None => catch_up(state, req, tx, sent, &mut { position }, upto)
                    .await
                    .map(|_| ()),
            };
        }
        Some(Resume::History { key, snapshot }) => {
            (Some(key), snapshot.unwrap_or_else(settled_now))
        }
        None => (None, settled_now()),
    };
    // A follow stream reads its history up to the snapshot and follows what comes
    // after; a stream without follow reads everything committed (its cursors name the
    // snapshot all the same, for a later resume).
    let pages = Pages {
        descending: req.descending,
        bound: match req.follow {
            true => Some((snapshot, state.follow.feed().causal().await)),
            false => None,
        },
    };
    let mut readers: Vec<Reader> = req
        .sources
        .iter()
        .map(|&source| {
            let after = start_after(history_after, source, req.descending);
            Reader::start(state, req, source, after, pages)
        })
        .collect();

    let mut batch = Vec::with_capacity(BATCH_EVENTS);
    loop {
        for r in readers
            .iter_mut()
            .filter(|r| r.buffer.is_empty() && !r.done)
        {
            if shutting_down(state) {
                return Err(shutdown_error());
            }
            if tx.tx.is_closed() {
                return Ok(());
            }
            // What is ready goes out before waiting for the database.
            if send_batch(tx, take_batch(&mut batch), sent).await.is_err() {
                return Ok(());
            }
            let rows = r.next_page().await?;
            r.buffer.extend(rows);
        }
        let next = readers
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.buffer.front().map(|e| (i, e.key())))
            .reduce(|a, b| {
                let b_first = if req.descending { b.1 > a.1 } else { b.1 < a.1 };
                if b_first {
                    b
                } else {
                    a
                }
            });
        let Some((index, _)) = next else { break };
        let Some(event) = readers[index].buffer.pop_front() else {
            break;
        };
        let mark = Mark::History {
            key: event.key(),
            snapshot,
        };
        batch.push(Streamed { event, mark });
        if batch.len() == BATCH_EVENTS
            && send_batch(tx, take_batch(&mut batch), sent).await.is_err()
        {
            return Ok(());
        }
    }
    if send_batch(tx, batch, sent).await.is_err() {
        return Ok(());
    }

    match live {
        Some(live) => follow(state, req, tx, sent, end_of(snapshot), live).await,
        None => Ok(()),
    }
}

/// Whether an event of the feed belongs on this stream.
fn wanted(req: &TimelineRequest, event: &Event) -> bool {
    req.sources.contains(&event.key().2) && event.is_in(&req.filter)
}

fn lagged_error() -> Error {
    Error::Unavailable {
        reason: crate::error::Reason::FollowLagged,
        message: "the follow stream fell behind new events; resume from the last cursor".to_owned(),
    }
}

/// The live phase: every event recorded after `from`, in recording order, each once:
/// first read from the feed up to the hub's watermark, then the hub's broadcasts.
async fn follow(
    state: &Timeline,
    req: &TimelineRequest,
    tx: &Out,
    sent: &mut u64,
    mut from: Position,
    (mut live, mut watermark): (broadcast::Receiver<Arc<Recorded>>, Position),
) -> Result<(), Error> {
    let mut shutdown = state.shutdown.clone();
    if !catch_up(state, req, tx, sent, &mut from, watermark.0).await? {
        return Ok(());
    }
    // Falling behind the hub before sending any live event (while the history and the
    // catch-up were being sent) is repaired: subscribe again and read the feed up to
    // the new watermark. Once live events flow, a stream that falls behind ends.
    let mut repairs_left = HANDOVER_ATTEMPTS;
    let mut sent_live = false;
    loop {
        let message = tokio::select! {
            m = live.recv() => m,
            () = tx.tx.closed() => return Ok(()),
            _ = shutdown.wait_for(|s| *s) => return Err(shutdown_error()),
        };
        let recorded = match message {
            Ok(recorded) => recorded,
            Err(RecvError::Lagged(_)) if !sent_live && repairs_left > 0 => {
                repairs_left -= 1;
                (live, watermark) = state.follow.subscribe();
                if !catch_up(state, req, tx, sent, &mut from, watermark.0).await? {
                    return Ok(());
                }
                continue;
            }
            // Events were dropped for this stream: end it rather than skip them.
            Err(RecvError::Lagged(_)) => return Err(lagged_error()),
            Err(RecvError::Closed) => return Err(shutdown_error()),
        };
        // The hub broadcasts in recording order: what is not after `from` was sent.
        if recorded.position <= from {
            continue;
        }
        from = recorded.position;
        if !wanted(req, &recorded.event) {
            continue;
        }
        sent_live = true;
        let mark = Mark::Recorded(recorded.position);
        if send(tx, recorded.event.clone(), mark, sent).await.is_err() {
            return Ok(());
        }
    }
}

/// Sends what this stream's filters select of the feed after `from` and at or before
/// `upto` (a settled time), in recording order, moving `from` along. `false` when the
/// client is gone.
async fn catch_up(
    state: &Timeline,
    req: &TimelineRequest,
    tx: &Out,
    sent: &mut u64,
    from: &mut Position,
    upto: NaiveDateTime,
) -> Result<bool, Error> {
    if *from >= end_of(upto) {
        return Ok(true);
    }
    let mut walk = state
        .follow
        .feed()
        .walk(&req.sources, &req.filter, Some(*from), upto);
    while let Some(event) = walk.next().await? {
        if shutting_down(state) {
            return Err(shutdown_error());
        }
        let position = event.position();
        *from = position;
        if send(tx, event, Mark::Recorded(position), sent)
            .await
            .is_err()
        {
            return Ok(false);
        }
    }
    *from = (*from).max(end_of(upto));
    Ok(true)
}

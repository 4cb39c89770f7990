//! LogCommunication's writer: calls that arrive together are stored together.
//!
//! Each call queues its communication and waits for its own answer. A few writer tasks
//! take whatever is queued (up to [`MAX_BATCH_ROWS`] rows or [`MAX_BATCH_BYTES`] of
//! content) and store it with `db::communications::log_batch`: one transaction, one
//! customer check, one multi-row INSERT, one rollup update for the lot, instead of the
//! same six statements per call. A lone call is a batch of one, so its latency is what
//! it was; under concurrency the statements per call fall with the batch size.
//!
//! Under load, a batch also waits a little to fill: a writer that finds half the
//! writers (at least one) storing batches keeps collecting calls until one of those
//! batches ends (or [`LINGER`] passes), since the calls answered then come back as the
//! next calls. A batch then holds a share of all waiting calls instead of whatever
//! arrived in the last instant, so the statements, round trips and commits per call
//! fall, while the other half of the writers still overlap their round trips and
//! commits. A lone call never waits.
//!
//! Every call still gets exactly its own answer: its row, the first row of a replayed
//! `request_id` (REQUEST_ID_REUSED when the key was used for a different
//! communication), or NOT_FOUND for an unknown customer. A batch that fails as a whole
//! where nothing can have been stored (a key race, a conflict) is replayed call by call
//! (`communications::insert`); any other failure (the database away, possibly
//! mid-COMMIT) answers every call with the error rather than risk storing a row twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Mutex, Notify, OnceCell};

use crate::db::communications::{self, CommunicationInsertForm, CommunicationRow, Logged};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::model::caller::Caller;

/// Most rows in one batch.
pub const MAX_BATCH_ROWS: usize = 128;
/// A batch is closed once its content reaches this many bytes.
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Calls queued before new ones wait for room.
const QUEUE: usize = 1024;
/// Longest a batch waits to fill while another writer is storing (see the module
/// header); a bound for a batch that is slow to commit, not the usual wait.
pub const LINGER: Duration = Duration::from_millis(5);

/// What the writers share besides the queue: how many are storing a batch now, from
/// how many a new batch waits to fill, and a signal each time one ends.
#[derive(Debug, Default)]
struct Turns {
    storing: AtomicUsize,
    busy_from: usize,
    ended: Notify,
}

/// One queued call.
struct Pending {
    form: CommunicationInsertForm,
    caller: Caller,
    reply: oneshot::Sender<Result<CommunicationRow>>,
}

/// The queue of LogCommunication calls and its writers; cheap to clone.
#[derive(Debug, Clone)]
pub struct LogWriter {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("customer_id", &self.form.customer_id)
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    /// A queue served by `writers` tasks (at least one) over `db`. The tasks end when
    /// the last handle is dropped, after the calls already queued.
    pub fn start(db: Db, writers: usize) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let consecutive = Arc::new(OnceCell::new());
        let turns = Arc::new(Turns {
            busy_from: (writers / 2).max(1),
            ..Turns::default()
        });
        for _ in 0..writers.max(1) {
            tokio::spawn(write_loop(
                db.clone(),
                rx.clone(),
                consecutive.clone(),
                turns.clone(),
            ));
        }
        LogWriter { queue }
    }

    /// Stores `form` for `caller` (with the calls queued beside it); its row.
    pub async fn log(
        &self,
        form: CommunicationInsertForm,
        caller: Caller,
    ) -> Result<CommunicationRow> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                form,
                caller,
                reply,
            })
            .await
            .map_err(|_| Error::Internal("the log writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("the log writer dropped a call".into()))?
    }
}

/// Takes batches off the queue and stores them until the queue closes.
async fn write_loop(
    db: Db,
    queue: Arc<Mutex<mpsc::Receiver<Pending>>>,
    consecutive: Arc<OnceCell<bool>>,
    turns: Arc<Turns>,
) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            collect(&mut queue, first, &turns).await
        };
        let consecutive = match consecutive
            .get_or_try_init(|| communications::consecutive_ids(&db))
            .await
        {
            Ok(&c) => c,
            Err(_) => false,
        };
        let started = Instant::now();
        let rows = batch.len();
        turns.storing.fetch_add(1, Ordering::SeqCst);
        write(&db, batch, consecutive).await;
        turns.storing.fetch_sub(1, Ordering::SeqCst);
        turns.ended.notify_waiters();
        tracing::debug!(
            rows,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "log batch stored"
        );
    }
}

/// The batch that starts with `first`: the calls queued behind it, and while half the
/// writers are storing batches, the calls that arrive until one of those ends (at most
/// [`LINGER`]), up to [`MAX_BATCH_ROWS`] rows or [`MAX_BATCH_BYTES`].
async fn collect(
    queue: &mut mpsc::Receiver<Pending>,
    first: Pending,
    turns: &Turns,
) -> Vec<Pending> {
    let mut bytes = first.form.content.len();
    let mut batch = vec![first];
    let full = |batch: &Vec<Pending>, bytes: usize| {
        batch.len() >= MAX_BATCH_ROWS || bytes >= MAX_BATCH_BYTES
    };
    while !full(&batch, bytes) {
        match queue.try_recv() {
            Ok(p) => {
                bytes += p.form.content.len();
                batch.push(p);
            }
            Err(_) => break,
        }
    }
    let deadline = tokio::time::Instant::now() + LINGER;
    // Registered before `storing` is read, so an end between the two is not missed.
    let ended = turns.ended.notified();
    tokio::pin!(ended);
    ended.as_mut().enable();
    while !full(&batch, bytes) && turns.storing.load(Ordering::SeqCst) >= turns.busy_from {
        tokio::select! {
            next = queue.recv() => match next {
                Some(p) => {
                    bytes += p.form.content.len();
                    batch.push(p);
                }
                None => break,
            },
            () = &mut ended => break,
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    batch
}

/// Stores one batch and answers each of its calls.
async fn write(db: &Db, batch: Vec<Pending>, consecutive: bool) {
    let forms: Vec<CommunicationInsertForm> = batch.iter().map(|p| p.form.clone()).collect();
    let callers: Vec<&Caller> = batch.iter().map(|p| &p.caller).collect();
    match communications::log_batch(db, &forms, &callers, consecutive).await {
        Ok(outcomes) => {
            for (pending, outcome) in batch.into_iter().zip(outcomes) {
                let answer = match outcome {
                    Logged::Stored(row) => Ok(*row),
                    Logged::Existing(id) => communications::get(db, id).await,
                    Logged::RequestIdReused => Err(Error::RequestIdReused {
                        resource: "communication",
                        request_id: pending.form.request_id.clone().unwrap_or_default(),
                    }),
                    Logged::UnknownCustomer => {
                        match crate::db::customers::why_gone(db, pending.form.customer_id).await {
                            Ok(gone) | Err(gone) => Err(gone),
                        }
                    }
                };
                // The caller may have gone (cancelled): the row is stored all the same.
                let _ = pending.reply.send(answer);
            }
        }
        // A key another server used after this batch looked, or a conflict: nothing was
        // stored, so the calls one by one resolve it (each its own transaction and answer).
        Err(e) if e.is_safe_to_replay() => {
            tracing::debug!(error = %e, rows = batch.len(), "log batch failed; storing its calls one by one");
            for pending in batch {
                let answer = communications::insert(db, &pending.form, &pending.caller).await;
                let _ = pending.reply.send(answer);
            }
        }
        // Anything else (the database away, possibly mid-COMMIT) is not replayed: every
        // call gets the error, and a client retry with its request_id is safe.
        Err(e) => {
            for pending in batch {
                let _ = pending.reply.send(Err(e.for_another_caller()));
            }
        }
    }
}

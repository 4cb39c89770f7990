//! The import use case: validated communications arrive one at a time, in stream
//! order; they are batched (one multi-row INSERT each) and written by a writer task of
//! their own while the caller keeps reading its stream, with the queued batches' memory
//! bounded. The writer stores one batch per transaction while it keeps up; on SQLite,
//! the batches queued meanwhile together (up to [`SQLITE_GROUP_BATCHES`]) when it falls
//! behind. Duplicates are counted, and unknown customers and invalid items are reported
//! as rejections in stream order.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::db::communications::{self, BatchOutcome, CommunicationInsertForm};
use crate::db::{Backend, Db};
use crate::error::Error;
use crate::model::caller::Caller;

/// Items per import batch (one multi-row INSERT; its own transaction unless batches
/// queue on SQLite, see [`SQLITE_GROUP_BATCHES`]).
pub const IMPORT_BATCH_ROWS: usize = communications::INSERT_ROWS;
/// Content bytes per import batch, so memory stays bounded with large messages.
const IMPORT_BATCH_BYTES: usize = communications::INSERT_BYTES;
/// Batches one transaction of an import's writer stores at most on SQLite: when the
/// writer falls behind its reader, the batches queued meanwhile are stored together
/// (one key look-up, one rollup update, one audit record and one COMMIT for them all).
/// A writer that keeps up stores each batch as it comes. On SQLite a COMMIT, with the
/// WAL checkpoint it triggers, costs about as much as the batch's statements, so four
/// batches together take about half the time of four transactions. On MariaDB a COMMIT
/// is a few milliseconds and larger transactions made each row's rollup upserts slower
/// (measured: 26-30 ms per 1,000 rows alone, 35-40 ms in groups of four), gaining
/// nothing, so each batch is its own transaction there.
const SQLITE_GROUP_BATCHES: usize = 4;
/// Batches queued for an import's writer before its reader waits. The request stream
/// must keep being read while a batch is written: grpc-core clients send one small
/// DATA frame per message, and h2 ends the whole connection (GOAWAY
/// ENHANCE_YOUR_CALM) when too many small frames sit unread.
const IMPORT_QUEUE_BATCHES: usize = 256;
/// Memory an import's queued batches may take, in KiB (counted as content bytes plus
/// [`ITEM_OVERHEAD_BYTES`] per item); the reader waits for the writer past it.
const IMPORT_QUEUE_KIB: u32 = 32 * 1024;
/// What one queued item costs besides its content, for the queue's memory bound.
const ITEM_OVERHEAD_BYTES: usize = 512;
/// Rejections listed in an import report; the rest are only counted.
pub const MAX_LISTED_REJECTIONS: usize = 1000;

/// Why one item of an import was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 0-based position of the item in the stream.
    pub index: i64,
    /// The item's request id, if it had one.
    pub request_id: String,
    /// What was wrong, naming the field.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Items stored.
    pub accepted_count: i64,
    /// Items not stored because their request id had been used already.
    pub duplicate_count: i64,
    /// Items rejected, in stream order; at most [`MAX_LISTED_REJECTIONS`].
    pub rejected: Vec<Rejection>,
    /// Every rejected item, listed or not.
    pub rejected_count: i64,
}

/// One batch of an import on its way to the writer: the forms and, for each, its
/// stream index and request id.
struct ImportBatch {
    forms: Vec<CommunicationInsertForm>,
    meta: Vec<(i64, String)>,
    /// Content bytes of the forms (the batch is full at [`IMPORT_BATCH_BYTES`]).
    content_bytes: usize,
    /// The batch's share of the queue's memory, given back once it is written.
    _memory: Option<OwnedSemaphorePermit>,
}

impl ImportBatch {
    fn new() -> Self {
        Self {
            forms: Vec::with_capacity(IMPORT_BATCH_ROWS),
            meta: Vec::with_capacity(IMPORT_BATCH_ROWS),
            content_bytes: 0,
            _memory: None,
        }
    }

    fn push(&mut self, form: CommunicationInsertForm, index: i64, request_id: String) {
        self.content_bytes += form.content.len();
        self.forms.push(form);
        self.meta.push((index, request_id));
    }

    fn is_full(&self) -> bool {
        self.forms.len() >= IMPORT_BATCH_ROWS || self.content_bytes >= IMPORT_BATCH_BYTES
    }

    /// Whether `next` fits beside this batch in one transaction of up to `batches`
    /// batches' worth of items and content.
    fn has_room_for(&self, next: &ImportBatch, batches: usize) -> bool {
        self.forms.len() + next.forms.len() <= batches * IMPORT_BATCH_ROWS
            && self.content_bytes + next.content_bytes <= batches * IMPORT_BATCH_BYTES
    }

    /// Adds `next`'s items after this batch's, holding its share of the queue's memory
    /// too.
    fn absorb(&mut self, next: ImportBatch) {
        self.forms.extend(next.forms);
        self.meta.extend(next.meta);
        self.content_bytes += next.content_bytes;
        match (&mut self._memory, next._memory) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }

    /// Waits until the queue has room for this batch's memory, then holds it.
    async fn reserve(mut self, memory: &Arc<Semaphore>) -> Self {
        let memory_bytes = self.content_bytes + self.forms.len() * ITEM_OVERHEAD_BYTES;
        let kib = u32::try_from(memory_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(IMPORT_QUEUE_KIB);
        self._memory = memory.clone().acquire_many_owned(kib).await.ok();
        self
    }
}

/// Outcome counts of an import.
#[derive(Default)]
struct ImportTally {
    report: ImportReport,
}

impl ImportTally {
    fn reject(&mut self, index: i64, request_id: String, reason: String) {
        self.report.rejected_count += 1;
        if self.report.rejected.len() < MAX_LISTED_REJECTIONS {
            self.report.rejected.push(Rejection {
                index,
                request_id,
                reason,
            });
        }
    }

    /// Adds the writer's counts to the reader's.
    fn merge(&mut self, other: ImportTally) {
        let (mine, theirs) = (&mut self.report, other.report);
        mine.accepted_count += theirs.accepted_count;
        mine.duplicate_count += theirs.duplicate_count;
        mine.rejected_count += theirs.rejected_count;
        let room = MAX_LISTED_REJECTIONS.saturating_sub(mine.rejected.len());
        mine.rejected.extend(theirs.rejected.into_iter().take(room));
    }
}

/// What the writer stores in its next transaction: the batch `held` back last time, or
/// else the next one queued, with the batches queued behind it that fit beside it in up
/// to `batches` batches' worth; the first that does not fit is held back for the next
/// transaction. `None` once the queue is closed and empty.
async fn next_group(
    queue: &mut mpsc::Receiver<ImportBatch>,
    held: &mut Option<ImportBatch>,
    batches: usize,
) -> Option<ImportBatch> {
    let mut group = match held.take() {
        Some(batch) => batch,
        None => queue.recv().await?,
    };
    while let Ok(next) = queue.try_recv() {
        if group.has_room_for(&next, batches) {
            group.absorb(next);
        } else {
            *held = Some(next);
            break;
        }
    }
    Some(group)
}

/// The writer of an import: stores each batch in one transaction, in stream order,
/// until the reader closes the queue. Runs on its own task, so the request stream is
/// read while a batch is written. Returns at the first database error; the batches
/// committed before it stay committed.
async fn write_batches(
    db: Db,
    mut queue: mpsc::Receiver<ImportBatch>,
    caller: Caller,
) -> Result<ImportTally, Error> {
    let mut tally = ImportTally::default();
    let group = match db.backend() {
        Backend::Sqlite => SQLITE_GROUP_BATCHES,
        Backend::Mysql => 1,
    };
    let mut held = None;
    while let Some(batch) = next_group(&mut queue, &mut held, group).await {
        let ImportBatch { forms, meta, .. } = batch;
        let customers: Vec<i64> = forms.iter().map(|f| f.customer_id).collect();
        let outcomes = match communications::insert_batch(&db, forms.clone(), &caller).await {
            Ok(o) => o,
            // A concurrent writer used one of the keys between our check and insert:
            // fall back to one row at a time, which resolves each key exactly.
            Err(e) if e.is_unique_violation() => {
                let mut out = Vec::with_capacity(forms.len());
                for form in forms {
                    out.push(
                        match communications::insert_batch(&db, vec![form], &caller).await {
                            Ok(o) => o.first().copied().unwrap_or(BatchOutcome::Duplicate),
                            Err(e) if e.is_unique_violation() => BatchOutcome::Duplicate,
                            Err(e) => return Err(e),
                        },
                    );
                }
                out
            }
            Err(e) => return Err(e),
        };
        for ((outcome, (index, request_id)), customer_id) in
            outcomes.into_iter().zip(meta).zip(customers)
        {
            match outcome {
                BatchOutcome::Stored => tally.report.accepted_count += 1,
                BatchOutcome::Duplicate => tally.report.duplicate_count += 1,
                BatchOutcome::RequestIdReused => tally.reject(
                    index,
                    request_id,
                    "request_id: was used before for a different communication".to_owned(),
                ),
                BatchOutcome::UnknownCustomer => {
                    // A merged customer's rejection names the customer to send it to.
                    let why = match crate::db::customers::why_gone(&db, customer_id).await {
                        Ok(merged @ Error::Merged { .. }) => merged.to_string(),
                        _ => "customer not found".to_owned(),
                    };
                    tally.reject(
                        index,
                        request_id,
                        format!("communication.customer_id: {why}"),
                    )
                }
            }
        }
    }
    Ok(tally)
}

/// The reason text of a rejected item: its violations as `field: description`.
fn reason(err: Error) -> String {
    match err {
        Error::InvalidArgument(vs) => vs
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// One running import: the caller [`push`](Import::push)es each item of its stream in
/// order, then [`finish`](Import::finish)es. Dropping it unfinished (the client went
/// away) stops batching; batches already queued are still written.
pub struct Import {
    queue: mpsc::Sender<ImportBatch>,
    memory: Arc<Semaphore>,
    writer: JoinHandle<Result<ImportTally, Error>>,
    tally: ImportTally,
    batch: ImportBatch,
    index: i64,
}

impl std::fmt::Debug for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Import")
            .field("index", &self.index)
            .finish()
    }
}

impl Import {
    /// Starts an import into `db`, spawning its writer.
    pub fn start(db: Db, caller: Caller) -> Import {
        let (queue, batches) = mpsc::channel(IMPORT_QUEUE_BATCHES);
        Import {
            queue,
            memory: Arc::new(Semaphore::new(IMPORT_QUEUE_KIB as usize)),
            writer: tokio::spawn(write_batches(db, batches, caller).in_current_span()),
            tally: ImportTally::default(),
            batch: ImportBatch::new(),
            index: 0,
        }
    }

    /// The 0-based stream index of the next item (the number of items taken so far).
    pub fn index(&self) -> i64 {
        self.index
    }

    /// Takes the next item of the stream: its request id and its validated form, or
    /// the error that rejects it. `false` when the writer stopped on a database error
    /// (reported by [`finish`](Import::finish)): read nothing more.
    pub async fn push(
        &mut self,
        request_id: String,
        item: Result<CommunicationInsertForm, Error>,
    ) -> bool {
        match item {
            Ok(form) => {
                self.batch.push(form, self.index, request_id);
                if self.batch.is_full() {
                    let full = std::mem::replace(&mut self.batch, ImportBatch::new());
                    if self
                        .queue
                        .send(full.reserve(&self.memory).await)
                        .await
                        .is_err()
                    {
                        // The writer stopped on a database error; reported by `finish`.
                        return false;
                    }
                }
            }
            Err(e) => self.tally.reject(self.index, request_id, reason(e)),
        }
        self.index += 1;
        true
    }

    /// Writes what is left and waits for the writer. A database error is returned
    /// first (the batches committed before it stay committed); then `malformed`, the
    /// error that stopped the caller's reading, if any; else the report, rejections in
    /// stream order.
    pub async fn finish(self, malformed: Option<Error>) -> Result<ImportReport, Error> {
        let Import {
            queue,
            memory,
            writer,
            mut tally,
            batch,
            index,
        } = self;
        if !batch.forms.is_empty() {
            let _ = queue.send(batch.reserve(&memory).await).await;
        }
        drop(queue);
        let written = writer
            .await
            .map_err(|e| Error::Internal(format!("import writer failed: {e}")))??;
        if let Some(err) = malformed {
            return Err(err);
        }
        tally.merge(written);
        let mut report = tally.report;
        crate::metrics::import_rows(
            report.accepted_count,
            report.duplicate_count,
            report.rejected_count,
        );
        // Unknown customers are found at write time, after later invalid items.
        report.rejected.sort_by_key(|r| r.index);
        tracing::info!(
            items = index,
            accepted = report.accepted_count,
            duplicates = report.duplicate_count,
            rejected = report.rejected_count,
            "import finished"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::communications::sample_form;

    /// A batch of `n` items of `bytes` content each, numbered from `first`.
    fn batch(first: i64, n: usize, bytes: usize) -> ImportBatch {
        let mut b = ImportBatch::new();
        for i in 0..n {
            let index = first + i as i64;
            b.push(
                sample_form(1, &"x".repeat(bytes), &index.to_string()),
                index,
                index.to_string(),
            );
        }
        b
    }

    async fn groups(batches: Vec<ImportBatch>, group: usize) -> Vec<Vec<i64>> {
        let (tx, mut rx) = mpsc::channel(16);
        for b in batches {
            tx.send(b).await.unwrap();
        }
        drop(tx);
        let mut held = None;
        let mut out = Vec::new();
        while let Some(g) = next_group(&mut rx, &mut held, group).await {
            assert_eq!(g.forms.len(), g.meta.len());
            out.push(g.meta.iter().map(|(i, _)| *i).collect());
        }
        out
    }

    #[tokio::test]
    async fn queued_batches_are_stored_together_in_order_up_to_the_group_bounds() {
        let full = IMPORT_BATCH_ROWS;
        let queued = || {
            (0..6)
                .map(|k| batch((k * full) as i64, full, 1))
                .collect::<Vec<_>>()
        };
        let got = groups(queued(), 4).await;
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            [4 * full, 2 * full]
        );
        assert_eq!(got.concat(), (0..(6 * full) as i64).collect::<Vec<_>>());
        // One batch per transaction (MariaDB).
        let got = groups(queued(), 1).await;
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [full; 6]);
        assert_eq!(got.concat(), (0..(6 * full) as i64).collect::<Vec<_>>());

        // A short last batch joins the group it fits beside.
        let got = groups(vec![batch(0, full, 1), batch(1000, 10, 1)], 4).await;
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [full + 10]);

        // Batches full by bytes: four fill a group.
        let by_bytes = IMPORT_BATCH_BYTES / 2;
        let queued: Vec<_> = (0..5).map(|k| batch(k * 2, 2, by_bytes)).collect();
        let got = groups(queued, 4).await;
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [8, 2]);
    }
}

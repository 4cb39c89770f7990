//! The in-memory content index (`analytics::content_index`) filled from the database
//! and kept current, so content reports count keywords and terms without reading every
//! row.
//!
//! At start a task loads the communications table by id (reports use the database
//! meanwhile), then follows it every [`SYNC_INTERVAL`] while content reports are being
//! asked for (within [`ACTIVE_FOR`]; an idle server does not poll), and each content
//! report follows it once more before answering, so the answer covers every row
//! committed before the call.
//! Following means:
//! - **new rows**: ids above the highest one seen, by primary key;
//! - **late commits**: an id skipped between two seen ids may belong to a transaction that
//!   commits later (concurrent writers commit out of id order). Each such gap is checked
//!   again at every sync until a row recorded [`MARGIN`] after it has been seen, by which
//!   time its transaction has committed or never will;
//! - **deletes**: tombstones (`deleted_communications`, written by DeleteCommunication and
//!   purge in the deleting transaction) at or after the latest seen, less [`MARGIN`];
//! - **merges**: `customer_merges` rows at or after the latest seen, less [`MARGIN`]: the
//!   communications of the merged customers now belong to the survivor.
//!
//! Every server over one database follows the same tables the same way, so a second
//! replica answers from the same rows as the first (and as the database itself): the
//! index is a cache of the table, never a source of truth. The bound this relies on:
//! write transactions commit within [`MARGIN`] of stamping their rows' `create_time`
//! (well above InnoDB's 50 s lock wait) and server clocks agree within a few seconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use tokio::sync::{watch, Mutex};

use crate::analytics::content_index::{ContentIndex, IndexFigures, IndexQuery, IndexRow};
use crate::db::content_feed::{self, FeedRow};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::model::deadline::Deadline;

/// How long a write transaction may take between stamping its rows and committing.
pub const MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(120);
/// Time between two background syncs.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Background syncs run while a content report came within this time; an idle server
/// does not poll (the next report catches up before it answers).
pub const ACTIVE_FOR: Duration = Duration::from_secs(600);
/// Tombstones are kept this long (a server that cannot sync for longer reloads).
pub const TOMBSTONE_KEEP: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// Rows per page of the initial load and of each sync.
const PAGE_ROWS: u32 = 10_000;
/// Most skipped ids remembered for one jump of the id sequence.
const MAX_GAP_IDS: i64 = 100_000;
/// Time between two retries of a failed load.
const RETRY: Duration = Duration::from_secs(5);

/// The content index of one server; cheap to clone. See the module header.
#[derive(Debug, Clone)]
pub struct ContentIndexHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    index: RwLock<ContentIndex>,
    ready: AtomicBool,
    /// When a content report last used the index: ms since `epoch` (0: never).
    used_at: AtomicU64,
    epoch: Instant,
    /// Held while syncing: one sync at a time.
    follow: Mutex<Follow>,
}

/// Where following the tables stands.
#[derive(Debug, Default)]
struct Follow {
    /// Highest id seen.
    last_id: i64,
    /// Latest `create_time` seen.
    newest: Option<NaiveDateTime>,
    /// Ids skipped between seen ones, with the `create_time` of the row after the skip.
    gaps: BTreeMap<i64, NaiveDateTime>,
    /// Latest tombstone time seen; `None` before the first read.
    deletions: Option<NaiveDateTime>,
    /// Latest customer merge seen; `None` before the first read.
    merges: Option<NaiveDateTime>,
    /// When the last sync succeeded.
    synced: Option<Instant>,
}

impl ContentIndexHandle {
    /// An index that loads and follows `db` in the background until `shutdown`.
    pub fn start(db: Db, shutdown: watch::Receiver<bool>) -> Self {
        let handle = ContentIndexHandle {
            shared: Arc::new(Shared {
                index: RwLock::new(ContentIndex::new()),
                ready: AtomicBool::new(false),
                used_at: AtomicU64::new(0),
                epoch: Instant::now(),
                follow: Mutex::new(Follow::default()),
            }),
        };
        tokio::spawn(handle.clone().run(db, shutdown));
        handle
    }

    /// Whether the initial load is done (until then reports read the database).
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Waits until [`Self::is_ready`], checking every 10 ms.
    pub async fn wait_ready(&self) {
        while !self.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn run(self, db: Db, mut shutdown: watch::Receiver<bool>) {
        loop {
            let started = Instant::now();
            match self.load(&db).await {
                Ok(()) => {
                    let (rows, bytes, terms) = self.size();
                    tracing::info!(
                        rows,
                        memory_mb = bytes / 1_000_000,
                        terms,
                        secs = started.elapsed().as_secs(),
                        "content index ready"
                    );
                    self.shared.ready.store(true, Ordering::Release);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "content index load failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => continue,
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
            // Follow while content reports are asked for, until shutdown or until the
            // index has not synced for so long that tombstones may have been pruned:
            // then load again from scratch.
            loop {
                tokio::select! {
                    () = tokio::time::sleep(SYNC_INTERVAL) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                if self.is_stale().await {
                    self.shared.ready.store(false, Ordering::Release);
                    break;
                }
                if !self.recently_used() {
                    continue;
                }
                if let Err(e) = self.sync(&db).await {
                    tracing::warn!(error = %e, "content index sync failed; retrying");
                }
            }
            tracing::warn!("content index out of date for too long; loading it again");
        }
    }

    /// Whether the last sync is so old that tombstones may have been pruned since.
    async fn is_stale(&self) -> bool {
        let keep = (TOMBSTONE_KEEP / 2).to_std().unwrap_or(Duration::MAX);
        self.shared
            .follow
            .lock()
            .await
            .synced
            .is_none_or(|t| t.elapsed() > keep)
    }

    /// Whether a content report used the index within [`ACTIVE_FOR`].
    fn recently_used(&self) -> bool {
        let used = self.shared.used_at.load(Ordering::Relaxed);
        used > 0
            && self.shared.epoch.elapsed().as_millis() as u64 - used < ACTIVE_FOR.as_millis() as u64
    }

    /// Live rows, approximate heap bytes, distinct terms.
    pub fn size(&self) -> (usize, usize, usize) {
        let index = self.shared.index.read().unwrap_or_else(|e| e.into_inner());
        (index.len(), index.heap_bytes(), index.vocabulary_len())
    }

    /// Loads every row from scratch, then syncs once.
    async fn load(&self, db: &Db) -> Result<()> {
        {
            let mut follow = self.shared.follow.lock().await;
            *follow = Follow {
                // Deletes during the load are caught by the sync after it.
                deletions: content_feed::last_deletion(db).await?,
                // Rows read from now on carry their owner after any earlier merge.
                merges: Some(crate::model::time::now()),
                ..Follow::default()
            };
            *self.write() = ContentIndex::new();
            self.take_new(db, &mut follow, true).await?;
        }
        self.sync(db).await
    }

    /// Adds every row above `follow.last_id`, page by page; with `log_progress`, says
    /// how far it is every 10 s.
    async fn take_new(&self, db: &Db, follow: &mut Follow, log_progress: bool) -> Result<()> {
        let mut logged = Instant::now();
        loop {
            let page = content_feed::page_after(db, follow.last_id, PAGE_ROWS).await?;
            let done = page.len() < PAGE_ROWS as usize;
            self.take(follow, page).await?;
            if done {
                return Ok(());
            }
            if log_progress && logged.elapsed() >= Duration::from_secs(10) {
                logged = Instant::now();
                tracing::info!(rows = self.size().0, "content index loading");
            }
        }
    }

    /// Catches up with the tables: new rows, late commits, tombstones.
    pub async fn sync(&self, db: &Db) -> Result<()> {
        let mut follow = self.shared.follow.lock().await;
        self.take_new(db, &mut follow, false).await?;
        if !follow.gaps.is_empty() {
            let ids: Vec<i64> = follow.gaps.keys().copied().collect();
            let late = content_feed::rows_by_id(db, &ids).await?;
            for row in &late {
                follow.gaps.remove(&row.id);
            }
            self.insert(late).await?;
            if let Some(newest) = follow.newest {
                follow.gaps.retain(|_, &mut after| newest - after <= MARGIN);
            }
        }
        let deleted = content_feed::deleted_since(db, follow.deletions.map(|t| t - MARGIN)).await?;
        if let Some(latest) = deleted.iter().map(|d| d.time).max() {
            follow.deletions = follow.deletions.max(Some(latest));
            let mut index = self.write();
            for d in &deleted {
                index.remove(d.id);
            }
        }
        // Merges re-own rows already indexed. Re-applying one is harmless (its merged
        // customers own nothing any more), and they apply in commit-time order, so a
        // chain (a into b, then b into c) ends with c.
        let merges = crate::db::merges::merges_since(db, follow.merges.map(|t| t - MARGIN)).await?;
        if let Some(latest) = merges.iter().map(|m| m.0).max() {
            follow.merges = follow.merges.max(Some(latest));
            let mut index = self.write();
            for (_, survivor, merged) in &merges {
                index.reassign_customers(merged, *survivor);
            }
        }
        follow.synced = Some(Instant::now());
        Ok(())
    }

    /// Adds a page of new rows (ascending ids above `last_id`), noting the ids skipped.
    async fn take(&self, follow: &mut Follow, page: Vec<FeedRow>) -> Result<()> {
        for row in &page {
            follow.newest = follow.newest.max(Some(row.create_time));
        }
        let newest = follow.newest;
        let mut prev = follow.last_id;
        for row in &page {
            // Only a skip next to a recent row can still be filled by a commit.
            let recent = newest.is_some_and(|n| n - row.create_time <= MARGIN);
            if recent && row.id - prev > 1 {
                let from = (prev + 1).max(row.id - MAX_GAP_IDS);
                for id in from..row.id {
                    follow.gaps.insert(id, row.create_time);
                }
            }
            prev = row.id;
        }
        follow.last_id = prev;
        if let Some(newest) = newest {
            follow.gaps.retain(|_, &mut after| newest - after <= MARGIN);
        }
        self.insert(page).await
    }

    /// Inserts rows (tokenizing them) on the blocking pool.
    async fn insert(&self, rows: Vec<FeedRow>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let batch: Vec<IndexRow<'_>> = rows
                .iter()
                .map(|row| IndexRow {
                    id: row.id,
                    customer_id: row.customer_id,
                    channel: row.channel,
                    occur_micros: row.occur_time.and_utc().timestamp_micros(),
                    content: &row.content,
                })
                .collect();
            let mut index = shared.index.write().unwrap_or_else(|e| e.into_inner());
            index.insert_all(&batch, threads());
        })
        .await
        .map_err(|e| Error::Internal(format!("content index insert failed: {e}")))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ContentIndex> {
        self.shared.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers `q` from the index after one more sync; `None` while the index is still
    /// loading (the caller reads the database instead).
    pub async fn answer(
        &self,
        db: &Db,
        q: IndexQuery,
        deadline: Deadline,
    ) -> Result<Option<IndexFigures>> {
        if !self.is_ready() || self.is_stale().await {
            return Ok(None);
        }
        let now = self.shared.epoch.elapsed().as_millis() as u64;
        self.shared.used_at.store(now.max(1), Ordering::Relaxed);
        self.sync(db).await?;
        deadline.check("the content index")?;
        let shared = self.shared.clone();
        let threads = threads();
        let figures = tokio::task::spawn_blocking(move || {
            let index = shared.index.read().unwrap_or_else(|e| e.into_inner());
            index.query(&q, threads, &|| deadline.check("").is_err())
        })
        .await
        .map_err(|e| Error::Internal(format!("content index query failed: {e}")))?;
        match figures {
            Some(f) => Ok(Some(f)),
            None => deadline.check("the content index scan").map(|()| None),
        }
    }
}

/// Threads for folding, tokenizing and scanning: the machine's cores.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

//! The in-memory content index (`analytics::content_index`) filled from the database
//! and kept current, so content reports count keywords and terms without reading every
//! row.
//!
//! At start a task loads the communications table by id (reports use the database
//! meanwhile), then follows the change feed (`service::feed`) every [`SYNC_INTERVAL`]
//! while content reports are being asked for (within [`ACTIVE_FOR`]; an idle server
//! does not poll), and each content report follows it once more before answering, so
//! the answer covers every row committed before the call.
//! Following means, each by a watermark that only the clock moves (the settled bound:
//! record times [`SETTLE`](crate::service::feed::SETTLE) old, which no later commit can reach back to):
//! - **new rows**: every row recorded after the watermark, in `(create_time, id)`
//!   order; those recorded within [`SETTLE`](crate::service::feed::SETTLE) are read again at the next sync (a commit
//!   may still land among them) and skipped when already indexed. No id is tracked,
//!   so id steps, id blocks and commit order do not matter;
//! - **deletes**: tombstones (`deleted_communications`, written by DeleteCommunication and
//!   purge in the deleting transaction) after their watermark;
//! - **merges**: `customer_merges` rows after their watermark: the communications of
//!   the merged customers now belong to the survivor.
//!
//! Every server over one database follows the same tables the same way, so a second
//! replica answers from the same rows as the first (and as the database itself): the
//! index is a cache of the table, never a source of truth.
//!
//! Beside it the same follower keeps the per-customer activity index
//! (`analytics::activity`): one-customer frequency reports and customer insights read a
//! customer's rows from it rather than from the database.
//!
//! A report's sync is shared: callers that arrive while one runs wait for the next one
//! (which starts after they arrived, so it covers every row committed before their
//! call), and one sync serves all of them, so concurrent reports do not queue one sync
//! each behind the follow lock.
//! **Snapshot.** With a [`SnapshotFile`], the index is written to a file (after a full
//! load, every [`SNAPSHOT_EVERY`] while it changes, and at shutdown; a temporary file
//! renamed over the old one) with its three watermarks and the database's identity
//! (`db::secrets::database_id`). At start that file is read instead of the table, and
//! the normal sync catches up from its watermarks (rows written, deleted and merged
//! since). A snapshot that is damaged, of another database, of another format, or so
//! old that tombstones may have been pruned since is ignored with a warning, and every
//! row is read as without one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex, Notify};

use crate::analytics::activity::{
    ActivityIndex, ActivityRow, AllCustomersAsk, AllCustomersFigures, FrequencyAsk,
    FrequencyFigures, InsightFigures,
};
use crate::analytics::content_index::{ContentIndex, IndexFigures, IndexQuery, IndexRow};
use crate::db::content_feed::{self, FeedRow};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::model::deadline::Deadline;
use crate::service::feed::{settled_now, Feed};

/// Time between two background syncs.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Background syncs run while a content report came within this time; an idle server
/// does not poll (the next report catches up before it answers).
pub const ACTIVE_FOR: Duration = Duration::from_secs(600);
/// Tombstones are kept this long (a server that cannot sync for longer reloads).
pub const TOMBSTONE_KEEP: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// Rows per page of the initial load and of each sync.
const PAGE_ROWS: u32 = 10_000;
/// Time between two retries of a failed load.
const RETRY: Duration = Duration::from_secs(5);
/// Time between two snapshots while the index changes.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(600);

/// Where the index's snapshot lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotFile {
    /// This file.
    At(PathBuf),
    /// A file in this directory named after the database's identity, so that servers of
    /// several databases may share the directory.
    InDirectory(PathBuf),
}

/// What a snapshot says about itself besides the index.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotMeta {
    /// The database's identity, hex.
    database: String,
    rows: NaiveDateTime,
    deletions: NaiveDateTime,
    merges: NaiveDateTime,
}

/// The content index of one server; cheap to clone. See the module header.
#[derive(Debug, Clone)]
pub struct ContentIndexHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    index: RwLock<ContentIndex>,
    /// Each customer's rows by time, filled and followed with `index`.
    activity: RwLock<ActivityIndex>,
    /// Whether the follower feeds `activity` (false while a private one is being
    /// filled after a snapshot load, which holds no activity).
    activity_fed: AtomicBool,
    /// Whether `activity` holds every row the follower has applied.
    activity_ready: AtomicBool,
    ready: AtomicBool,
    /// When a content report last used the index: ms since `epoch` (0: never).
    used_at: AtomicU64,
    epoch: Instant,
    /// Held while syncing: one sync at a time.
    follow: Mutex<Follow>,
    /// When the last sync succeeded: ms since `epoch`, plus one (0: not since the last
    /// load). Beside `follow`, not in it, so a report asks without waiting for a sync.
    synced_at: AtomicU64,
    /// What it follows.
    feed: Feed,
    /// Where its snapshot lives, if anywhere.
    snapshot: Option<SnapshotFile>,
    /// `changes()` of the index when the last snapshot was taken.
    snapshot_changes: AtomicU64,
    /// Whether the last load came from the snapshot.
    from_snapshot: AtomicBool,
    /// Turns true once the background task has ended (after its last snapshot).
    finished: watch::Sender<bool>,
    /// The shared syncs of reports.
    syncs: std::sync::Mutex<Syncs>,
    /// Woken when a shared sync ends.
    synced: Notify,
}

/// The shared syncs of reports, numbered from 1 in the order they start.
#[derive(Debug, Default)]
struct Syncs {
    /// The last sync started.
    started: u64,
    /// The last sync ended.
    done: u64,
    /// The last sync that succeeded.
    ok: u64,
    /// Whether sync `started` is still running.
    running: bool,
    /// The last failure, with its sync's number.
    failed: Option<(u64, Arc<Error>)>,
}

/// Where following the feed stands: three settled watermarks.
#[derive(Debug, Default)]
struct Follow {
    /// Every row recorded at or before this time is indexed; `None` before the load.
    rows: Option<NaiveDateTime>,
    /// Every tombstone written at or before this time is applied.
    deletions: Option<NaiveDateTime>,
    /// Every merge stamped at or before this time is applied.
    merges: Option<NaiveDateTime>,
}

impl ContentIndexHandle {
    /// An index that loads and follows `db` in the background until `shutdown`.
    pub fn start(db: Db, shutdown: watch::Receiver<bool>) -> Self {
        Self::start_on(Feed::new(db), shutdown, None)
    }

    /// An index that loads and follows `db` in the background until `shutdown`, keeping
    /// a snapshot in `snapshot` (see the module header).
    pub fn start_with_snapshot(
        db: Db,
        shutdown: watch::Receiver<bool>,
        snapshot: Option<SnapshotFile>,
    ) -> Self {
        Self::start_on(Feed::new(db), shutdown, snapshot)
    }

    /// An index that loads and follows `feed` in the background until `shutdown`.
    pub fn start_on(
        feed: Feed,
        shutdown: watch::Receiver<bool>,
        snapshot: Option<SnapshotFile>,
    ) -> Self {
        let handle = ContentIndexHandle {
            shared: Arc::new(Shared {
                index: RwLock::new(ContentIndex::new()),
                activity: RwLock::new(ActivityIndex::new()),
                activity_fed: AtomicBool::new(true),
                activity_ready: AtomicBool::new(false),
                ready: AtomicBool::new(false),
                used_at: AtomicU64::new(0),
                epoch: Instant::now(),
                follow: Mutex::new(Follow::default()),
                synced_at: AtomicU64::new(0),
                feed: feed.clone(),
                syncs: std::sync::Mutex::new(Syncs::default()),
                synced: Notify::new(),
                snapshot,
                snapshot_changes: AtomicU64::new(u64::MAX),
                from_snapshot: AtomicBool::new(false),
                finished: watch::channel(false).0,
            }),
        };
        let task = handle.clone();
        tokio::spawn(async move {
            task.clone().run(feed, shutdown).await;
            if task.is_ready() {
                task.write_snapshot().await;
            }
            task.shared.finished.send_replace(true);
        });
        handle
    }

    /// Waits until the background task has ended (after `shutdown`, once its last
    /// snapshot is written).
    pub async fn stopped(&self) {
        let mut finished = self.shared.finished.subscribe();
        let _ = finished.wait_for(|f| *f).await;
    }

    /// Whether the index was last loaded from its snapshot (not from every row).
    pub fn loaded_from_snapshot(&self) -> bool {
        self.shared.from_snapshot.load(Ordering::Acquire)
    }

    /// Whether the per-customer activity holds every applied row (until then
    /// one-customer reports read the database).
    pub fn activity_ready(&self) -> bool {
        self.shared.activity_ready.load(Ordering::Acquire)
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

    async fn run(self, db: Feed, mut shutdown: watch::Receiver<bool>) {
        loop {
            let started = Instant::now();
            let restored = self.restore(&db).await;
            let loaded = if restored {
                Ok(())
            } else {
                self.load(&db).await
            };
            match loaded {
                Ok(()) => {
                    let (rows, bytes, terms) = self.size();
                    let (_, activity_bytes) = self.activity_size();
                    tracing::info!(
                        rows,
                        memory_mb = bytes / 1_000_000,
                        activity_mb = activity_bytes / 1_000_000,
                        bytes_per_row = bytes.checked_div(rows).unwrap_or(0),
                        terms,
                        secs = started.elapsed().as_secs_f64(),
                        source = if restored { "snapshot" } else { "database" },
                        "content index ready"
                    );
                    self.shared.from_snapshot.store(restored, Ordering::Release);
                    self.shared.ready.store(true, Ordering::Release);
                    if !restored {
                        self.shared.activity_ready.store(true, Ordering::Release);
                        let (rows, bytes) = self.activity_size();
                        tracing::info!(
                            rows,
                            activity_mb = bytes / 1_000_000,
                            secs = started.elapsed().as_secs_f64(),
                            "activity index ready"
                        );
                        self.write_snapshot().await;
                    } else {
                        tokio::select! {
                            () = self.fill_activity(&db) => {}
                            _ = shutdown.wait_for(|s| *s) => return,
                        }
                    }
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
            let mut snapshot_at = Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(SYNC_INTERVAL) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                if self.is_stale() {
                    self.shared.ready.store(false, Ordering::Release);
                    break;
                }
                if snapshot_at.elapsed() >= SNAPSHOT_EVERY {
                    snapshot_at = Instant::now();
                    self.write_snapshot().await;
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
    fn is_stale(&self) -> bool {
        let keep = (TOMBSTONE_KEEP / 2).to_std().unwrap_or(Duration::MAX);
        match self.shared.synced_at.load(Ordering::Acquire) {
            0 => true,
            at => {
                let now = self.shared.epoch.elapsed().as_millis() as u64;
                Duration::from_millis(now.saturating_sub(at - 1)) > keep
            }
        }
    }

    /// Notes that a sync succeeded now (`None`: the index was replaced, not synced).
    fn mark_synced(&self, now: Option<Instant>) {
        let at = now.map_or(0, |t| {
            t.duration_since(self.shared.epoch).as_millis() as u64 + 1
        });
        self.shared.synced_at.store(at, Ordering::Release);
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

    /// Live rows and approximate heap bytes of the activity index.
    pub fn activity_size(&self) -> (usize, usize) {
        let activity = self
            .shared
            .activity
            .read()
            .unwrap_or_else(|e| e.into_inner());
        (activity.len(), activity.heap_bytes())
    }

    /// The snapshot's path and the database's identity (hex); `None` without a snapshot
    /// or when the identity cannot be read.
    async fn snapshot_path(&self) -> Option<(PathBuf, String)> {
        let place = self.shared.snapshot.as_ref()?;
        let id = match crate::db::secrets::database_id(self.shared.feed.db()).await {
            Ok(id) => id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the database identity; no content index snapshot");
                return None;
            }
        };
        let path = match place {
            SnapshotFile::At(path) => path.clone(),
            SnapshotFile::InDirectory(dir) => {
                dir.join(format!("content-index-{}.snapshot", &id[..16]))
            }
        };
        Some((path, id))
    }

    /// Reads the snapshot and catches up from its watermarks; `false` (and nothing
    /// changed) when there is none or it cannot be used (with a warning saying why).
    async fn restore(&self, feed: &Feed) -> bool {
        let Some((path, id)) = self.snapshot_path().await else {
            return false;
        };
        let file = path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let f = match std::fs::File::open(&file) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let len = f.metadata().map_err(|e| e.to_string())?.len();
            ContentIndex::read_snapshot(std::io::BufReader::with_capacity(1 << 20, f), len)
                .map(Some)
                .map_err(|e| e.to_string())
        })
        .await;
        let ignored = |why: &str| {
            tracing::warn!(path = %path.display(), why, "content index snapshot ignored; reading every row");
            false
        };
        let (index, meta) = match read {
            Ok(Ok(Some(read))) => read,
            Ok(Ok(None)) => return false,
            Ok(Err(e)) => return ignored(&e),
            Err(e) => return ignored(&e.to_string()),
        };
        let Ok(meta) = serde_json::from_slice::<SnapshotMeta>(&meta) else {
            return ignored("its header is not readable");
        };
        if meta.database != id {
            return ignored("it is a snapshot of another database");
        }
        let oldest = settled_now() - TOMBSTONE_KEEP / 2;
        if meta.deletions.min(meta.merges).min(meta.rows) < oldest {
            return ignored("it is older than the deleted rows' retention");
        }
        {
            let mut follow = self.shared.follow.lock().await;
            *follow = Follow {
                rows: Some(meta.rows),
                deletions: Some(meta.deletions),
                merges: Some(meta.merges),
            };
            self.mark_synced(None);
            *self.write() = index;
            self.shared.snapshot_changes.store(0, Ordering::Relaxed);
            // The snapshot holds no activity: `fill_activity` builds it after this.
            self.shared.activity_fed.store(false, Ordering::Release);
            self.shared.activity_ready.store(false, Ordering::Release);
            *self.activity_write() = ActivityIndex::new();
        }
        match self.sync(feed).await {
            Ok(()) => true,
            Err(e) => {
                *self.write() = ContentIndex::new();
                ignored(&format!("catching up from it failed: {e}"))
            }
        }
    }

    /// Writes the snapshot when the index changed since the last one: a copy taken under
    /// the locks (cheap: compressed texts are shared), written without them to a
    /// temporary file then renamed over the old one. Failures are logged.
    async fn write_snapshot(&self) {
        let Some((path, id)) = self.snapshot_path().await else {
            return;
        };
        let (snapshot, meta, changes, rows) = {
            let follow = self.shared.follow.lock().await;
            let (Some(rows), Some(deletions), Some(merges)) =
                (follow.rows, follow.deletions, follow.merges)
            else {
                return;
            };
            let index = self.shared.index.read().unwrap_or_else(|e| e.into_inner());
            if index.changes() == self.shared.snapshot_changes.load(Ordering::Relaxed) {
                return;
            }
            let meta = SnapshotMeta {
                database: id,
                rows,
                deletions,
                merges,
            };
            (index.snapshot(), meta, index.changes(), index.len())
        };
        let Ok(meta) = serde_json::to_vec(&meta) else {
            return;
        };
        let started = Instant::now();
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let mut tmp = target.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            let file = std::fs::File::create(&tmp)?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            snapshot.write(&meta, &mut w)?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            let bytes = file.metadata()?.len();
            std::fs::rename(&tmp, &target)?;
            Ok(bytes)
        })
        .await;
        match written {
            Ok(Ok(bytes)) => {
                self.shared
                    .snapshot_changes
                    .store(changes, Ordering::Relaxed);
                tracing::info!(
                    path = %path.display(),
                    rows,
                    bytes,
                    secs = started.elapsed().as_secs_f64(),
                    "content index snapshot written"
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the content index snapshot")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the content index snapshot")
            }
        }
    }

    /// Loads every row from scratch, then syncs once.
    async fn load(&self, feed: &Feed) -> Result<()> {
        {
            let mut follow = self.shared.follow.lock().await;
            // Taken before the first read: every row, tombstone and merge stamped at or
            // before it is visible to the load; later ones are read again by the sync.
            let start = settled_now();
            *follow = Follow {
                deletions: Some(start),
                merges: Some(start),
                ..Follow::default()
            };
            self.mark_synced(None);
            *self.write() = ContentIndex::new();
            *self.activity_write() = ActivityIndex::new();
            self.shared.activity_fed.store(true, Ordering::Release);
            self.shared.activity_ready.store(false, Ordering::Release);
            self.shared
                .snapshot_changes
                .store(u64::MAX, Ordering::Relaxed);
            let mut logged = Instant::now();
            let mut last_id = 0;
            loop {
                let causal = feed.causal().await;
                let page = content_feed::page_after(feed.db(), causal, last_id, PAGE_ROWS).await?;
                let done = page.len() < PAGE_ROWS as usize;
                last_id = page.last().map_or(last_id, |r| r.id);
                self.insert(page).await?;
                if done {
                    break;
                }
                if logged.elapsed() >= Duration::from_secs(10) {
                    logged = Instant::now();
                    tracing::info!(rows = self.size().0, "content index loading");
                }
            }
            follow.rows = Some(start);
        }
        self.sync(feed).await
    }

    /// Catches up with the feed: new rows, tombstones, merges.
    pub async fn sync(&self, feed: &Feed) -> Result<()> {
        let mut follow = self.shared.follow.lock().await;
        // Taken before the reads: what is stamped at or before it, they all see.
        let upto = settled_now();
        // The three reads run at once (each sees everything stamped at or before
        // `upto`, whatever the order); they apply in order: rows, tombstones, merges.
        let rows = async {
            let mut after = follow.rows.map(|t| (t, i64::MAX));
            loop {
                let page = feed.communications_after(after, PAGE_ROWS).await?;
                let done = page.len() < PAGE_ROWS as usize;
                after = page.last().map(|r| (r.create_time, r.id)).or(after);
                // Rows read before (recorded within SETTLE) are skipped by the index.
                self.insert(page).await?;
                if done {
                    return Ok::<_, Error>(());
                }
            }
        };
        let (deletions, merges) = (follow.deletions, follow.merges);
        let ((), deleted, merges) = tokio::try_join!(
            rows,
            feed.deletions_after(deletions),
            feed.merges_after(merges)
        )?;
        follow.rows = follow.rows.max(Some(upto));
        // Tombstones written within SETTLE are read again; removing twice is harmless.
        if !deleted.is_empty() {
            let mut index = self.write();
            for d in &deleted {
                index.remove(d.id);
            }
            drop(index);
            let ids: Vec<i64> = deleted.iter().map(|d| d.id).collect();
            self.activity_write().remove_all(&ids);
        }
        follow.deletions = follow.deletions.max(Some(upto));
        // Merges re-own rows already indexed. Re-applying one is harmless (its merged
        // customers own nothing any more), and they apply in stamp order, so a chain
        // (a into b, then b into c) ends with c.
        if !merges.is_empty() {
            let mut index = self.write();
            let mut activity = self.activity_write();
            for (_, survivor, merged) in &merges {
                index.reassign_customers(merged, *survivor);
                activity.reassign_customers(merged, *survivor);
            }
        }
        follow.merges = follow.merges.max(Some(upto));
        self.mark_synced(Some(Instant::now()));
        Ok(())
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
            drop(index);
            if !shared.activity_fed.load(Ordering::Acquire) {
                return;
            }
            let batch = activity_rows(&rows);
            let mut activity = shared.activity.write().unwrap_or_else(|e| e.into_inner());
            activity.insert_all(&batch, threads());
        })
        .await
        .map_err(|e| Error::Internal(format!("content index insert failed: {e}")))
    }

    /// Builds the per-customer activity after the content index came from its snapshot
    /// (which holds none), retrying a failed read: until it is done one-customer
    /// reports read the database.
    async fn fill_activity(&self, feed: &Feed) {
        let started = Instant::now();
        loop {
            match self.load_activity(feed).await {
                Ok(()) => {
                    let (rows, bytes) = self.activity_size();
                    tracing::info!(
                        rows,
                        activity_mb = bytes / 1_000_000,
                        secs = started.elapsed().as_secs_f64(),
                        "activity index ready"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "activity index load failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Every row read by id into a private activity index while the follower goes on
    /// with the content index; then, under the follow lock, what was recorded, deleted
    /// and merged since the read began is applied to it (in the sync's order: rows,
    /// tombstones, merges) and it replaces the shared one, which the follower feeds
    /// from then on. Rows it holds that the follower reads again are skipped; a
    /// tombstone or merge applied twice changes nothing.
    async fn load_activity(&self, feed: &Feed) -> Result<()> {
        let start = settled_now();
        let mut activity = ActivityIndex::new();
        let mut last_id = 0;
        loop {
            let causal = feed.causal().await;
            let page = content_feed::page_after(feed.db(), causal, last_id, PAGE_ROWS).await?;
            let done = page.len() < PAGE_ROWS as usize;
            last_id = page.last().map_or(last_id, |r| r.id);
            activity = insert_activity(activity, page).await?;
            if done {
                break;
            }
        }
        let _follow = self.shared.follow.lock().await;
        let mut after = Some((start, i64::MAX));
        loop {
            let page = feed.communications_after(after, PAGE_ROWS).await?;
            let done = page.len() < PAGE_ROWS as usize;
            after = page.last().map(|r| (r.create_time, r.id)).or(after);
            activity = insert_activity(activity, page).await?;
            if done {
                break;
            }
        }
        let deleted: Vec<i64> = feed
            .deletions_after(Some(start))
            .await?
            .iter()
            .map(|d| d.id)
            .collect();
        activity.remove_all(&deleted);
        for (_, survivor, merged) in &feed.merges_after(Some(start)).await? {
            activity.reassign_customers(merged, *survivor);
        }
        *self.activity_write() = activity;
        self.shared.activity_fed.store(true, Ordering::Release);
        self.shared.activity_ready.store(true, Ordering::Release);
        Ok(())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ContentIndex> {
        self.shared.index.write().unwrap_or_else(|e| e.into_inner())
    }

    fn activity_write(&self) -> std::sync::RwLockWriteGuard<'_, ActivityIndex> {
        self.shared
            .activity
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once a sync that started after this call began has succeeded (see the
    /// module header): at most one shared sync runs at a time, and every caller that
    /// arrived before it started is served by it. It runs as its own task, so a caller
    /// that goes away does not stop it halfway for the others.
    async fn synced_since_call(&self) -> Result<()> {
        let lock = || self.shared.syncs.lock().unwrap_or_else(|e| e.into_inner());
        // A sync running now may have read before this call: the next one is needed.
        let target = lock().started + 1;
        loop {
            let woken = self.shared.synced.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let mut s = lock();
                if s.ok >= target {
                    return Ok(());
                }
                if s.done >= target {
                    return Err(match &s.failed {
                        Some((_, e)) => e.for_another_caller(),
                        None => Error::Internal("content index sync failed".into()),
                    });
                }
                if !s.running {
                    s.running = true;
                    s.started += 1;
                    let number = s.started;
                    let handle = self.clone();
                    tokio::spawn(async move {
                        let result = handle.sync(&handle.shared.feed).await;
                        {
                            let mut s = handle
                                .shared
                                .syncs
                                .lock()
                                .unwrap_or_else(|e| e.into_inner());
                            s.running = false;
                            s.done = number;
                            match result {
                                Ok(()) => s.ok = number,
                                Err(e) => s.failed = Some((number, Arc::new(e))),
                            }
                        }
                        handle.shared.synced.notify_waiters();
                    });
                }
            }
            woken.await;
        }
    }

    /// Whether the index may answer now: loaded and not stale; marks it used.
    fn usable(&self) -> bool {
        if !self.is_ready() || self.is_stale() {
            return false;
        }
        let now = self.shared.epoch.elapsed().as_millis() as u64;
        self.shared.used_at.store(now.max(1), Ordering::Relaxed);
        true
    }

    /// One customer's frequency figures after one more (shared) sync; `None` while the
    /// index is loading or when it cannot hold the customer's rows (the caller reads
    /// the database instead).
    pub async fn frequency(
        &self,
        ask: FrequencyAsk,
        deadline: Deadline,
    ) -> Result<Option<FrequencyFigures>> {
        self.read_activity(deadline, move |a| a.frequency(&ask))
            .await
    }

    /// What a report on every customer asks (its customer figures, its slot counts)
    /// after one more (shared) sync; `None` while the index is loading.
    pub async fn all_customers(
        &self,
        ask: AllCustomersAsk,
        deadline: Deadline,
    ) -> Result<Option<AllCustomersFigures>> {
        self.read_activity(deadline, move |a| Some(a.all_customers(&ask)))
            .await
    }

    /// One customer's communication figures over `[start, end)` (microseconds) after one
    /// more (shared) sync; `None` as for [`Self::frequency`].
    pub async fn insights(
        &self,
        customer: i64,
        (start, end): (i64, i64),
        top_terms: usize,
        deadline: Deadline,
    ) -> Result<Option<InsightFigures>> {
        self.read_activity(deadline, move |a| {
            a.insights(customer, start, end, top_terms)
        })
        .await
    }

    /// `read` over the activity index on the blocking pool, after one more (shared)
    /// sync; `None` while the activity is not ready or the index is not usable.
    async fn read_activity<T: Send + 'static>(
        &self,
        deadline: Deadline,
        read: impl FnOnce(&ActivityIndex) -> Option<T> + Send + 'static,
    ) -> Result<Option<T>> {
        if !self.activity_ready() || !self.usable() {
            return Ok(None);
        }
        self.synced_since_call().await?;
        deadline.check("the activity index")?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            read(&shared.activity.read().unwrap_or_else(|e| e.into_inner()))
        })
        .await
        .map_err(|e| Error::Internal(format!("activity index query failed: {e}")))
    }

    /// Answers `q` from the index after one more sync; `None` while the index is still
    /// loading (the caller reads the database instead).
    pub async fn answer(&self, q: IndexQuery, deadline: Deadline) -> Result<Option<IndexFigures>> {
        if !self.usable() {
            return Ok(None);
        }
        self.synced_since_call().await?;
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

/// `rows` added to `activity` (tokenizing them) on the blocking pool.
async fn insert_activity(mut activity: ActivityIndex, rows: Vec<FeedRow>) -> Result<ActivityIndex> {
    if rows.is_empty() {
        return Ok(activity);
    }
    tokio::task::spawn_blocking(move || {
        activity.insert_all(&activity_rows(&rows), threads());
        activity
    })
    .await
    .map_err(|e| Error::Internal(format!("activity index insert failed: {e}")))
}

/// What the activity index takes of each row.
fn activity_rows(rows: &[FeedRow]) -> Vec<ActivityRow<'_>> {
    rows.iter()
        .map(|row| ActivityRow {
            id: row.id,
            customer_id: row.customer_id,
            channel: row.channel,
            direction: row.direction,
            occur_micros: row.occur_time.and_utc().timestamp_micros(),
            call_duration_us: row.call_duration_us,
            content: &row.content,
            sentiment: row.sentiment,
        })
        .collect()
}

/// Threads for folding, tokenizing and scanning: the machine's cores.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

//! Background upkeep while the server runs: folding the rollup shards of slots that
//! writers no longer touch, so reports read one row per slot, channel and direction;
//! pruning deletion tombstones older than the content index needs.

use std::time::Duration;

use tokio::sync::watch;

use crate::analytics::rollup::COMPACT_AFTER_SECS;
use crate::db::{content_feed, rollups, Db};
use crate::error::Result;
use crate::model::time::now;

/// Time between two compactions.
pub const COMPACT_INTERVAL: Duration = Duration::from_secs(30);

/// Folds the rollup shards of every unit that ended [`COMPACT_AFTER_SECS`] ago or
/// earlier; returns the shard rows folded.
pub async fn compact_now(db: &Db) -> Result<usize> {
    rollups::compact(db, now() - chrono::Duration::seconds(COMPACT_AFTER_SECS)).await
}

/// Compacts the time rollups at start and then every [`COMPACT_INTERVAL`] until
/// `shutdown` turns true. A failed round (the database away) is logged and tried again
/// next time: reads are exact with or without compaction, only slower.
pub async fn run_compactor(db: Db, mut shutdown: watch::Receiver<bool>) {
    loop {
        match compact_now(&db).await {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "compacted rollup shards"),
            Err(e) => tracing::warn!(error = %e, "rollup compaction failed; retrying later"),
        }
        let expired = now() - crate::service::content_index::TOMBSTONE_KEEP;
        if let Err(e) = content_feed::prune_deletions(&db, expired).await {
            tracing::warn!(error = %e, "pruning deletion tombstones failed; retrying later");
        }
        tokio::select! {
            () = tokio::time::sleep(COMPACT_INTERVAL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

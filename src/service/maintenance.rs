//! Background upkeep while the server runs: folding the rollup shards of slots that
//! writers no longer touch, so reports read one row per slot, channel and direction;
//! pruning deletion tombstones older than the content index needs; scoring the sentiment
//! of communications stored without one (rows recorded before the server scored content,
//! or by an older server during an upgrade).

use std::time::Duration;

use tokio::sync::watch;

use crate::analytics::rollup::COMPACT_AFTER_SECS;
use crate::db::{communications, content_feed, rollups, Db};
use crate::error::Result;
use crate::model::time::now;

/// Time between two compactions.
pub const COMPACT_INTERVAL: Duration = Duration::from_secs(30);

/// Compaction rounds between two looks for communications stored without a sentiment
/// score (at start, then every 5 minutes: such rows come only from an older server
/// during an upgrade, and each look is a statement even when there is nothing).
const SCORE_EVERY_ROUNDS: u32 = 10;

/// Folds the rollup shards of every unit that ended [`COMPACT_AFTER_SECS`] ago or
/// earlier; returns the shard rows folded.
pub async fn compact_now(db: &Db) -> Result<usize> {
    rollups::compact(db, now() - chrono::Duration::seconds(COMPACT_AFTER_SECS)).await
}

/// Scores every communication above id `after` stored without a sentiment score, batch
/// by batch, until none is left or `shutdown` turns true; returns how many it scored and
/// the id to continue after next time: past every id stored when it began, so the next
/// look reads only newer rows instead of the whole table again. (A row an older server
/// commits late under a lower id waits for the next start, which looks from id 0.)
pub async fn score_unscored(
    db: &Db,
    mut after: i64,
    shutdown: &watch::Receiver<bool>,
) -> Result<(u64, i64)> {
    let stored = communications::last_id(db).await?;
    let mut total = 0u64;
    while !*shutdown.borrow() {
        match communications::score_unscored(db, after).await? {
            Some((scored, last)) => {
                total += scored as u64;
                after = last;
            }
            None => return Ok((total, after.max(stored))),
        }
    }
    Ok((total, after))
}

/// Compacts the time rollups at start and then every [`COMPACT_INTERVAL`] until
/// `shutdown` turns true, and scores communications stored without a sentiment score
/// (from the lowest id at start, then only newer ones, every [`SCORE_EVERY_ROUNDS`]
/// rounds). A failed round (the database
/// away) is logged and tried again next time: reads are exact with or without
/// compaction, only slower; rows not scored yet count as neutral.
pub async fn run_compactor(db: Db, mut shutdown: watch::Receiver<bool>) {
    let mut scored_after = 0;
    for round in 0u32.. {
        if round % SCORE_EVERY_ROUNDS == 0 {
            match score_unscored(&db, scored_after, &shutdown).await {
                Ok((0, after)) => scored_after = after,
                Ok((rows, after)) => {
                    tracing::info!(
                        rows,
                        up_to_id = after,
                        "scored the sentiment of stored communications"
                    );
                    scored_after = after;
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "scoring stored communications failed; retrying later"
                ),
            }
        }
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

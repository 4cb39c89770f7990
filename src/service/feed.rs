//! The one change feed: what every source recorded, in recording order
//! `(create_time, id, source)`, followed only up to the settled bound (record times at
//! least [`SETTLE`] old), so a position read past is never filled in later. The follow
//! hub and stream catch-ups walk it; the content index follows the communications and
//! the tombstones and merges with the same rule.
//!
//! Why it is exact: every write stamps its rows' `create_time` inside its transaction
//! and refuses to commit once the stamp is `COMMIT_BOUND` old (`db::feed`), so a read
//! started at `t` sees every row stamped at or before `t - SETTLE`. Id order, id steps
//! (Galera's `auto_increment_increment`), id blocks per server (TiDB) and commit order
//! play no part; on a Galera node reads wait for the cluster's earlier commits
//! (`wsrep_sync_wait`), so a node applying writes late does not skip them either.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::NaiveDateTime;
use tokio::sync::OnceCell;

use crate::db::content_feed::{self, FeedRow, Stamped};
use crate::db::feed as statements;
pub use crate::db::feed::{settled_now, Position, COMMIT_BOUND, SETTLE};
use crate::db::timeline::{Event, Source};
use crate::db::Db;
use crate::error::Result;
use crate::model::filter::CommunicationFilter;

/// Rows per read of one source.
pub const PAGE_ROWS: i64 = 1000;

/// The feed over one database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Feed {
    db: Db,
    /// Whether the database is a Galera node, asked once.
    galera: Arc<OnceCell<bool>>,
}

impl Feed {
    /// The feed of `db`.
    pub fn new(db: Db) -> Feed {
        Feed {
            db,
            galera: Arc::new(OnceCell::new()),
        }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether reads must wait for the cluster (a Galera node).
    pub async fn causal(&self) -> bool {
        *self
            .galera
            .get_or_init(|| statements::is_galera(&self.db))
            .await
    }

    /// Walks `sources` (filtered) in recording order, strictly after `after` and at or
    /// before `upto`.
    pub fn walk(
        &self,
        sources: &[Source],
        filter: &CommunicationFilter,
        after: Option<Position>,
        upto: NaiveDateTime,
    ) -> Walk {
        Walk {
            feed: self.clone(),
            filter: filter.clone(),
            upto,
            lanes: sources
                .iter()
                .map(|&source| Lane {
                    source,
                    buffer: VecDeque::new(),
                    after,
                    done: false,
                })
                .collect(),
        }
    }

    /// Up to `limit` communications recorded strictly after the `(create_time, id)`
    /// position `after`, in that order, settled or not (the content index re-reads the
    /// unsettled ones until they settle).
    pub async fn communications_after(
        &self,
        after: Option<(NaiveDateTime, i64)>,
        limit: u32,
    ) -> Result<Vec<FeedRow>> {
        content_feed::recorded_after(&self.db, self.causal().await, after, limit).await
    }

    /// Tombstones written strictly after `after` (all of them without one).
    pub async fn deletions_after(&self, after: Option<NaiveDateTime>) -> Result<Vec<Stamped>> {
        content_feed::deleted_after(&self.db, self.causal().await, after).await
    }

    /// Customer merges stamped strictly after `after` (all of them without one), oldest
    /// first: `(merge time, survivor, merged ids)`.
    pub async fn merges_after(
        &self,
        after: Option<NaiveDateTime>,
    ) -> Result<Vec<(NaiveDateTime, i64, Vec<i64>)>> {
        crate::db::merges::merges_after(&self.db, self.causal().await, after).await
    }
}

/// A walk over the feed; see [`Feed::walk`].
#[derive(Debug)]
pub struct Walk {
    feed: Feed,
    filter: CommunicationFilter,
    upto: NaiveDateTime,
    lanes: Vec<Lane>,
}

/// One source of a walk: a page read ahead.
#[derive(Debug)]
struct Lane {
    source: Source,
    buffer: VecDeque<Event>,
    /// Position of the last row read.
    after: Option<Position>,
    done: bool,
}

impl Walk {
    /// The next event in recording order; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        let galera = self.feed.causal().await;
        for lane in self
            .lanes
            .iter_mut()
            .filter(|l| l.buffer.is_empty() && !l.done)
        {
            let rows = statements::recorded(
                &self.feed.db,
                galera,
                lane.source,
                &self.filter,
                lane.after,
                self.upto,
                PAGE_ROWS,
            )
            .await?;
            lane.done = (rows.len() as i64) < PAGE_ROWS;
            if let Some(last) = rows.last() {
                lane.after = Some(last.position());
            }
            lane.buffer.extend(rows);
        }
        let next = self
            .lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.buffer.front().map(|e| (i, e.position())))
            .min_by_key(|(_, p)| *p);
        Ok(next.and_then(|(i, _)| self.lanes[i].buffer.pop_front()))
    }
}

//! gRPC handlers, one module per service: validate, convert, call storage, map errors.
//!
//! Handlers stay thin; validation and proto conversions live next to them in
//! `convert`-style helpers, storage in `crate::db`.

pub mod analytics;
pub mod communication;
pub mod customer;

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use crate::db::Db;
use crate::timeline::FollowHub;

/// State shared by every service: the pool and server-wide limits.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Permits for open follow streams; none left means RESOURCE_EXHAUSTED.
    pub follow_permits: Arc<Semaphore>,
    /// Becomes `true` when shutdown starts; long-lived streams end on it.
    pub shutdown: watch::Receiver<bool>,
    /// The one poller that feeds every follow stream.
    pub follow: FollowHub,
}

/// The `customer_id` of a request: positive, or a violation.
pub(crate) fn positive_id(v: &mut crate::error::Violations, field: &str, id: i64) -> i64 {
    if id <= 0 {
        v.add(field, "must be a positive id");
    }
    id
}

//! gRPC handlers, one module per service: validate, convert, call a use case in
//! `crate::service` (or storage), map errors. The only layer that names tonic or pb.
//!
//! Handlers stay thin; validation and proto conversions live next to them in
//! `convert`-style helpers, use cases in `crate::service`, storage in `crate::db`.

pub mod analytics;
pub mod audit;
pub mod business_hours;
pub mod communication;
pub mod convert;
pub mod customer;
pub mod deadline;
pub mod export;
#[cfg(test)]
mod module_graph;
pub mod paging;
pub mod pb_conv;
pub mod report_query;
pub mod satisfaction;
pub mod service_levels;
pub mod status;
pub mod timeline;
pub mod validate;
pub mod watch;

use crate::db::Db;
use crate::service::timeline::Timeline;

/// State shared by every service: the pool and the use cases' server-wide state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The timeline use case: follow hub, follow-stream limit, shutdown signal.
    pub timeline: Timeline,
    /// Where reports read their counts from.
    pub report_source: crate::service::reports::ReportSource,
    /// LogCommunication's batching writer.
    pub log_writer: crate::service::log_writer::LogWriter,
    /// The in-memory content index; `None` when turned off.
    pub content_index: Option<crate::service::content_index::ContentIndexHandle>,
    /// How long a client stream may send nothing before the call ends.
    pub stream_idle: std::time::Duration,
    /// Region of phone numbers written without a country code (`--phone-region`).
    pub phone_region: crate::model::phone::PhoneRegion,
    /// The watched reports (wallboards).
    pub watches: crate::service::watch::WatchHub,
}

/// The caller the guard established for `request`. Every guarded call has one; should
/// one be missing (a bug), the call gets the least rights.
pub(crate) fn caller<T>(request: &tonic::Request<T>) -> crate::security::guard::Caller {
    request
        .extensions()
        .get::<crate::security::guard::Caller>()
        .cloned()
        .unwrap_or_else(|| crate::security::guard::Caller {
            name: "unknown".to_owned(),
            role: crate::security::tokens::Role::Reader,
            peer: None,
            certificate: None,
        })
}

/// The `customer_id` of a request: positive, or a violation.
pub(crate) fn positive_id(v: &mut crate::error::Violations, field: &str, id: i64) -> i64 {
    if id <= 0 {
        v.add(field, "must be a positive id");
    }
    id
}

/// Largest encoded size of the items of one list page, in bytes. Well under the 4 MiB
/// that gRPC clients accept by default; a page that would pass it ends early with a
/// `next_page_token`.
pub(crate) const MAX_PAGE_BYTES: usize = 2 << 20;
/// Rows read by the first query of a page; later queries size themselves from the
/// bytes per row seen so far, so memory stays near [`MAX_PAGE_BYTES`] whatever the
/// rows weigh, and small rows still take one or two queries.
const FIRST_CHUNK_ROWS: i64 = 100;

/// A `(time, id)` keyset position.
pub(crate) type Position = (chrono::NaiveDateTime, i64);

/// Reads one list page of at most `limit` items and at most [`MAX_PAGE_BYTES`] of
/// encoded items (always at least one item), in chunks: `fetch(after, n)` returns up to
/// `n` rows after the position, in page order. Returns the converted items and the
/// position of the last one when more remain (the next page token's position).
pub(crate) async fn read_page<R, P, Fut>(
    limit: i64,
    mut after: Option<Position>,
    mut fetch: impl FnMut(Option<Position>, i64) -> Fut,
    key: impl Fn(&R) -> Position,
    to_pb: impl Fn(R) -> P,
) -> Result<(Vec<P>, Option<Position>), crate::error::Error>
where
    Fut: std::future::Future<Output = Result<Vec<R>, crate::error::Error>>,
    P: prost::Message,
{
    let mut items: Vec<P> = Vec::new();
    let mut bytes = 0usize;
    let mut chunk = FIRST_CHUNK_ROWS.min(limit);
    loop {
        // One row more than needed tells whether anything follows.
        let rows = fetch(after, chunk + 1).await?;
        let more = rows.len() as i64 > chunk;
        for row in rows.into_iter().take(chunk as usize) {
            let position = key(&row);
            let item = to_pb(row);
            let len = item.encoded_len();
            if !items.is_empty() && bytes + len > MAX_PAGE_BYTES {
                return Ok((items, after));
            }
            bytes += len;
            after = Some(position);
            items.push(item);
        }
        let remaining = limit - items.len() as i64;
        if !more {
            return Ok((items, None));
        }
        if remaining == 0 {
            return Ok((items, after));
        }
        let per_row = (bytes / items.len().max(1)).max(1);
        let room = (MAX_PAGE_BYTES.saturating_sub(bytes) / per_row) as i64 + 1;
        chunk = remaining.min(room.max(1));
    }
}

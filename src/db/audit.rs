//! The audit trail: who wrote, deleted or purged what, recorded in the writing
//! transaction itself (see the `audit_records` migration), and read back newest first.
//!
//! Rows carry the caller's name, address and certificate subject, the RPC, and ids;
//! never a customer's personal data, so a purge leaves the trail intact and clean.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::dialect::{columns, Conn};
use super::schema::audit_records;
use super::Db;
use crate::error::Result;
use crate::model::caller::Caller;
use crate::with_conn;

/// One change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The RPC, e.g. `CreateCustomer`.
    pub method: &'static str,
    /// The customer concerned; 0 when none.
    pub customer_id: i64,
    /// The row written or deleted; 0 when none.
    pub resource_id: i64,
    /// A short note, e.g. `purge` or `1000 rows, ids 5..1004`.
    pub detail: String,
}

impl Change {
    /// A change to one resource of one customer.
    pub fn new(method: &'static str, customer_id: i64, resource_id: i64) -> Change {
        Change {
            method,
            customer_id,
            resource_id,
            detail: String::new(),
        }
    }

    /// The same change with a note.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Change {
        self.detail = detail.into();
        self
    }
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = audit_records)]
#[diesel(check_for_backend(diesel::mysql::Mysql, diesel::sqlite::Sqlite))]
pub struct AuditRow {
    /// Id, ascending in record order.
    pub id: i64,
    /// When the change was committed (UTC, within its transaction).
    pub record_time: NaiveDateTime,
    /// The token's name (`anonymous` without tokens; `seed-demo` for the seeder).
    pub caller: String,
    /// The client's address.
    pub peer: String,
    /// The subject of the client's TLS certificate (mutual TLS).
    pub client_certificate: String,
    /// The RPC.
    pub method: String,
    /// The customer concerned; 0 when none.
    pub customer_id: i64,
    /// The row written or deleted; 0 when none.
    pub resource_id: i64,
    /// A short note.
    pub detail: String,
}

/// A record to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = audit_records)]
pub struct AuditInsert {
    record_time: NaiveDateTime,
    caller: String,
    peer: String,
    client_certificate: String,
    method: String,
    customer_id: i64,
    resource_id: i64,
    detail: String,
}

/// Records `changes` by `caller` at `now`, in the caller's transaction, and logs each.
pub async fn record<C: Conn>(
    conn: &mut C,
    caller: &Caller,
    now: NaiveDateTime,
    changes: &[Change],
) -> Result<()> {
    let entries: Vec<(&Caller, &Change)> = changes.iter().map(|c| (caller, c)).collect();
    record_each(conn, now, &entries).await
}

/// Records each change with its own caller at `now` in one INSERT, in the caller's
/// transaction, and logs each.
pub async fn record_each<C: Conn>(
    conn: &mut C,
    now: NaiveDateTime,
    entries: &[(&Caller, &Change)],
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(entries.len());
    for (caller, change) in entries {
        let peer = caller.peer.map(|p| p.to_string()).unwrap_or_default();
        let certificate = caller.certificate.as_deref().unwrap_or_default();
        // The server's own writers (`seed-demo`) write thousands: their lines are DEBUG.
        if caller.peer.is_some() {
            tracing::info!(caller = %caller.name, peer = %peer, certificate, method = change.method, customer_id = change.customer_id, resource_id = change.resource_id, detail = %change.detail, "audit");
        } else {
            tracing::debug!(caller = %caller.name, method = change.method, customer_id = change.customer_id, resource_id = change.resource_id, detail = %change.detail, "audit");
        }
        rows.push(AuditInsert {
            record_time: now,
            caller: caller.name.clone(),
            client_certificate: certificate.chars().take(512).collect(),
            peer,
            method: change.method.to_owned(),
            customer_id: change.customer_id,
            resource_id: change.resource_id,
            detail: change.detail.chars().take(255).collect(),
        });
    }
    conn.any().insert_all(audit_records::table, rows).await?;
    Ok(())
}

/// Filters of an audit listing; empty or 0 means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this caller's changes.
    pub caller: String,
    /// Only this RPC's changes.
    pub method: String,
    /// Only changes to this customer.
    pub customer_id: i64,
    /// Inclusive lower bound of `record_time`.
    pub start: Option<NaiveDateTime>,
    /// Exclusive upper bound of `record_time`.
    pub end: Option<NaiveDateTime>,
}

/// Up to `limit` records with `id < before` (all when `None`) matching `filter`, newest
/// first.
pub async fn list(
    db: &Db,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>> {
    // Boxed for its optional filters; the body is written once and typed per backend.
    with_conn!(db, |conn| {
        let mut query = audit_records::table
            .select(columns::<AuditRow>())
            .order(audit_records::id.desc())
            .limit(limit)
            .into_boxed();
        if let Some(before) = before {
            query = query.filter(audit_records::id.lt(before));
        }
        if !filter.caller.is_empty() {
            query = query.filter(audit_records::caller.eq(filter.caller.clone()));
        }
        if !filter.method.is_empty() {
            query = query.filter(audit_records::method.eq(filter.method.clone()));
        }
        if filter.customer_id > 0 {
            query = query.filter(audit_records::customer_id.eq(filter.customer_id));
        }
        if let Some(start) = filter.start {
            query = query.filter(audit_records::record_time.ge(start));
        }
        if let Some(end) = filter.end {
            query = query.filter(audit_records::record_time.lt(end));
        }
        Ok(query.load(conn).await?)
    })
}

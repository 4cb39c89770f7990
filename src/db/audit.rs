//! The audit trail: who wrote, deleted or purged what, recorded in the writing
//! transaction itself (see the `audit_records` migration), and read back newest first.
//!
//! Rows carry the caller's name, address and certificate subject, the RPC, and ids;
//! never a customer's personal data, so a purge leaves the trail intact and clean.

use chrono::NaiveDateTime;
use diesel::sql_types::{BigInt, Text, Timestamp};
use diesel::QueryableByName;

use super::dialect::Conn;
use super::query::{self, Bind, Sql};
use super::Db;
use crate::error::Result;
use crate::model::caller::Caller;

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
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct AuditRow {
    /// Id, ascending in record order.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// When the change was committed (UTC, within its transaction).
    #[diesel(sql_type = Timestamp)]
    pub record_time: NaiveDateTime,
    /// The token's name (`anonymous` without tokens; `seed-demo` for the seeder).
    #[diesel(sql_type = Text)]
    pub caller: String,
    /// The client's address.
    #[diesel(sql_type = Text)]
    pub peer: String,
    /// The subject of the client's TLS certificate (mutual TLS).
    #[diesel(sql_type = Text)]
    pub client_certificate: String,
    /// The RPC.
    #[diesel(sql_type = Text)]
    pub method: String,
    /// The customer concerned; 0 when none.
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    /// The row written or deleted; 0 when none.
    #[diesel(sql_type = BigInt)]
    pub resource_id: i64,
    /// A short note.
    #[diesel(sql_type = Text)]
    pub detail: String,
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
    let mut sql = Sql::from(
        "INSERT INTO audit_records (record_time, caller, peer, client_certificate, method, \
         customer_id, resource_id, detail) VALUES ",
    );
    for (i, (caller, change)) in entries.iter().enumerate() {
        let peer = caller.peer.map(|p| p.to_string()).unwrap_or_default();
        let certificate = caller.certificate.as_deref().unwrap_or_default();
        // The server's own writers (`seed-demo`) write thousands: their lines are DEBUG.
        if caller.peer.is_some() {
            tracing::info!(caller = %caller.name, peer = %peer, certificate, method = change.method, customer_id = change.customer_id, resource_id = change.resource_id, detail = %change.detail, "audit");
        } else {
            tracing::debug!(caller = %caller.name, method = change.method, customer_id = change.customer_id, resource_id = change.resource_id, detail = %change.detail, "audit");
        }
        if i > 0 {
            sql.push(", ");
        }
        sql.push("(")
            .bind(Bind::Time(now))
            .push(", ")
            .bind(Bind::Text(caller.name.clone()))
            .push(", ")
            .bind(Bind::Text(peer))
            .push(", ")
            .bind(Bind::Text(certificate.chars().take(512).collect()))
            .push(", ")
            .bind(Bind::Text(change.method.to_owned()))
            .push(", ")
            .bind(Bind::I64(change.customer_id))
            .push(", ")
            .bind(Bind::I64(change.resource_id))
            .push(", ")
            .bind(Bind::Text(change.detail.chars().take(255).collect()))
            .push(")");
    }
    conn.execute_sql(&sql).await?;
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
    let mut sql = Sql::from(
        "SELECT id, record_time, caller, peer, client_certificate, method, customer_id, \
         resource_id, detail FROM audit_records",
    );
    if let Some(before) = before {
        sql.and().push("id < ").bind(Bind::I64(before));
    }
    if !filter.caller.is_empty() {
        sql.and()
            .push("caller = ")
            .bind(Bind::Text(filter.caller.clone()));
    }
    if !filter.method.is_empty() {
        sql.and()
            .push("method = ")
            .bind(Bind::Text(filter.method.clone()));
    }
    if filter.customer_id > 0 {
        sql.and()
            .push("customer_id = ")
            .bind(Bind::I64(filter.customer_id));
    }
    if let Some(start) = filter.start {
        sql.and().push("record_time >= ").bind(Bind::Time(start));
    }
    if let Some(end) = filter.end {
        sql.and().push("record_time < ").bind(Bind::Time(end));
    }
    sql.push(" ORDER BY id DESC LIMIT ").bind(Bind::I64(limit));
    query::load(db, &sql).await
}

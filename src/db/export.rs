//! The reads behind `export`: every exported table in keyset pages (diesel DSL), each
//! bounded by a window of record or change times, so an export holds one page at a time.
//!
//! Append-only tables (communications, transactions, tombstones, merges) page on their
//! recording stamp and id, the change feed's order; tables whose rows change (customers,
//! tickets) and the rollup page on their key, filtered by their change time.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;

use super::communications::CommunicationRow;
use super::dialect::columns;
use super::feed::Causal;
use super::query::newer_than;
use super::satisfaction::SurveyRow;
use super::schema::{
    audit_records, communications, customer_merges, customer_months, customer_tags, customers,
    deleted_communications, satisfaction_surveys, service_tickets, transactions,
};
use super::tickets::TicketRow;
use super::transactions::TransactionRow;
use super::Db;
use crate::error::{Error, Result};
use crate::with_conn;

/// The times an export covers: strictly after `from` (from the beginning without one)
/// and at or before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Exclusive lower bound.
    pub from: Option<NaiveDateTime>,
    /// Inclusive upper bound.
    pub to: NaiveDateTime,
}

/// A `(time, id)` keyset position.
pub type After = Option<(NaiveDateTime, i64)>;

/// Satisfaction surveys changed in `w` with `id > after`, by id (the stored rows: every
/// column is exported but the idempotency keys).
pub async fn surveys(
    db: &Db,
    galera: bool,
    w: Window,
    after: i64,
    limit: i64,
) -> Result<Vec<SurveyRow>> {
    use satisfaction_surveys::dsl as s;
    with_conn!(db, |conn| {
        let mut q = s::satisfaction_surveys
            .filter(s::update_time.le(w.to))
            .filter(s::id.gt(after))
            .order(s::id.asc())
            .limit(limit)
            .select(columns::<SurveyRow>())
            .into_boxed();
        if let Some(from) = w.from {
            q = q.filter(s::update_time.gt(from));
        }
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(Causal::new(q, galera), conn).await?)
    })
}

/// One customer as exported (tags read apart).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = customers)]
pub struct CustomerExport {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// `Gender` value.
    pub gender: i32,
    /// Birth date.
    pub birth_date: Option<NaiveDate>,
    /// Address.
    pub address: String,
    /// Phone.
    pub phone: String,
    /// Email.
    pub email: String,
    /// Version (the etag).
    pub version: i64,
    /// Created.
    pub create_time: NaiveDateTime,
    /// Last change (a delete and a merge are changes).
    pub update_time: NaiveDateTime,
    /// Deleted (or merged) at.
    pub delete_time: Option<NaiveDateTime>,
    /// The survivor it was merged into.
    pub merged_into: Option<i64>,
}

/// One merge as exported.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = customer_merges)]
pub struct MergeExport {
    /// Id of the merge.
    pub id: i64,
    /// The survivor.
    pub customer_id: i64,
    /// The merged ids, comma-separated.
    pub merged_ids: String,
    /// When.
    pub merge_time: NaiveDateTime,
}

/// One row of the `customer_months` rollup.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = customer_months)]
pub struct CustomerMonthExport {
    /// `year * 12 + month - 1` (UTC).
    pub month: i32,
    /// The customer.
    pub customer_id: i64,
    /// Communications that month.
    pub n: i64,
    /// The latest of them.
    pub last_time: NaiveDateTime,
    /// Of them negative.
    pub negative: i64,
    /// Of them positive.
    pub positive: i64,
    /// Sum of their sentiment scores.
    pub sentiment_sum: i64,
}

/// Communications recorded in `w` strictly after `after`, in recording order.
pub async fn communications(
    db: &Db,
    galera: bool,
    w: Window,
    after: After,
    limit: i64,
) -> Result<Vec<CommunicationRow>> {
    use communications::dsl as c;
    with_conn!(db, |conn| {
        let mut q = c::communications
            .filter(c::create_time.le(w.to))
            .order((c::create_time.asc(), c::id.asc()))
            .limit(limit)
            .select(columns::<CommunicationRow>())
            .into_boxed();
        if let Some(from) = w.from {
            q = q.filter(c::create_time.gt(from));
        }
        if let Some(a) = after {
            q = q.filter(newer_than(c::create_time, c::id, a));
        }
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(Causal::new(q, galera), conn).await?)
    })
}

/// Transactions recorded in `w` strictly after `after`, in recording order.
pub async fn transactions(
    db: &Db,
    galera: bool,
    w: Window,
    after: After,
    limit: i64,
) -> Result<Vec<TransactionRow>> {
    use transactions::dsl as t;
    with_conn!(db, |conn| {
        let mut q = t::transactions
            .filter(t::create_time.le(w.to))
            .order((t::create_time.asc(), t::id.asc()))
            .limit(limit)
            .select(columns::<TransactionRow>())
            .into_boxed();
        if let Some(from) = w.from {
            q = q.filter(t::create_time.gt(from));
        }
        if let Some(a) = after {
            q = q.filter(newer_than(t::create_time, t::id, a));
        }
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(Causal::new(q, galera), conn).await?)
    })
}

/// Tickets changed in `w` with `id > after`, by id.
pub async fn tickets(
    db: &Db,
    galera: bool,
    w: Window,
    after: i64,
    limit: i64,
) -> Result<Vec<TicketRow>> {
    use service_tickets::dsl as t;
    with_conn!(db, |conn| {
        let mut q = t::service_tickets
            .filter(t::update_time.le(w.to))
            .filter(t::id.gt(after))
            .order(t::id.asc())
            .limit(limit)
            .select(columns::<TicketRow>())
            .into_boxed();
        if let Some(from) = w.from {
            q = q.filter(t::update_time.gt(from));
        }
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(Causal::new(q, galera), conn).await?)
    })
}

/// Customers (deleted and merged ones included) changed in `w` with `id > after`, by
/// id, each with its tags, sorted.
pub async fn customers(
    db: &Db,
    galera: bool,
    w: Window,
    after: i64,
    limit: i64,
) -> Result<Vec<(CustomerExport, Vec<String>)>> {
    use customers::dsl as c;
    let rows: Vec<CustomerExport> = with_conn!(db, |conn| {
        let mut q = c::customers
            .filter(c::update_time.le(w.to))
            .filter(c::id.gt(after))
            .order(c::id.asc())
            .limit(limit)
            .select(columns::<CustomerExport>())
            .into_boxed();
        if let Some(from) = w.from {
            q = q.filter(c::update_time.gt(from));
        }
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(Causal::new(q, galera), conn).await?)
    })?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let tags: Vec<(i64, String)> = with_conn!(db, |conn| {
        let q = customer_tags::table
            .filter(customer_tags::customer_id.eq_any(ids.clone()))
            .order((customer_tags::customer_id, customer_tags::tag))
            .select((customer_tags::customer_id, customer_tags::tag));
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(q, conn).await?)
    })?;
    let mut by_id: std::collections::HashMap<i64, Vec<String>> = std::collections::HashMap::new();
    for (id, tag) in tags {
        by_id.entry(id).or_default().push(tag);
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let tags = by_id.remove(&r.id).unwrap_or_default();
            (r, tags)
        })
        .collect())
}

/// Tombstones of communications written in `w` strictly after `after`, in that order:
/// `(id, delete_time)`.
pub async fn deleted_communications(
    db: &Db,
    galera: bool,
    w: Window,
    after: After,
    limit: i64,
) -> Result<Vec<(i64, NaiveDateTime)>> {
    use deleted_communications::dsl as d;
    with_conn!(db, |conn| {
        let mut q = d::deleted_communications
            .filter(d::delete_time.le(w.to))
            .order((d::delete_time.asc(), d::id.asc()))
            .limit(limit)
            .select((d::id, d::delete_time))
            .into_boxed();
        if let Some(from) = w.from {
            q = q.filter(d::delete_time.gt(from));
        }
        if let Some(a) = after {
            q = q.filter(newer_than(d::delete_time, d::id, a));
        }
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(Causal::new(q, galera), conn).await?)
    })
}

/// Merges stamped in `w` strictly after `after`, in that order.
pub async fn merges(
    db: &Db,
    galera: bool,
    w: Window,
    after: After,
    limit: i64,
) -> Result<Vec<MergeExport>> {
    use customer_merges::dsl as m;
    with_conn!(db, |conn| {
        let mut q = m::customer_merges
            .filter(m::merge_time.le(w.to))
            .order((m::merge_time.asc(), m::id.asc()))
            .limit(limit)
            .select(columns::<MergeExport>())
            .into_boxed();
        if let Some(from) = w.from {
            q = q.filter(m::merge_time.gt(from));
        }
        if let Some(a) = after {
            q = q.filter(newer_than(m::merge_time, m::id, a));
        }
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(Causal::new(q, galera), conn).await?)
    })
}

/// Customers deleted or merged in `w` with `id > after`, by id:
/// `(id, delete_time, merged_into)`.
pub async fn deleted_customers(
    db: &Db,
    galera: bool,
    w: Window,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, Option<NaiveDateTime>, Option<i64>)>> {
    use customers::dsl as c;
    with_conn!(db, |conn| {
        let mut q = c::customers
            .filter(c::delete_time.le(w.to))
            .filter(c::id.gt(after))
            .order(c::id.asc())
            .limit(limit)
            .select((c::id, c::delete_time, c::merged_into))
            .into_boxed();
        if let Some(from) = w.from {
            q = q.filter(c::delete_time.gt(from));
        }
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(Causal::new(q, galera), conn).await?)
    })
}

/// Purges (`DeleteCustomer` with `purge`) recorded in the audit trail in `w` with
/// audit id `> after`, by that id: `(audit id, customer id, record time)`.
pub async fn purges(
    db: &Db,
    galera: bool,
    w: Window,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, i64, NaiveDateTime)>> {
    use audit_records::dsl as a;
    with_conn!(db, |conn| {
        let mut q = a::audit_records
            .filter(a::method.eq("DeleteCustomer"))
            .filter(a::detail.eq("purge"))
            .filter(a::record_time.le(w.to))
            .filter(a::id.gt(after))
            .order(a::id.asc())
            .limit(limit)
            .select((a::id, a::customer_id, a::record_time))
            .into_boxed();
        if let Some(from) = w.from {
            q = q.filter(a::record_time.gt(from));
        }
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(Causal::new(q, galera), conn).await?)
    })
}

/// The whole `customer_months` rollup after the key `after`, in key order.
pub async fn customer_months(
    db: &Db,
    galera: bool,
    after: Option<(i32, i64)>,
    limit: i64,
) -> Result<Vec<CustomerMonthExport>> {
    use customer_months::dsl as m;
    with_conn!(db, |conn| {
        let mut q = m::customer_months
            .order((m::month.asc(), m::customer_id.asc()))
            .limit(limit)
            .select(columns::<CustomerMonthExport>())
            .into_boxed();
        if let Some((month, customer)) = after {
            q = q.filter(
                m::month
                    .ge(month)
                    .and(m::month.gt(month).or(m::customer_id.gt(customer))),
            );
        }
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(Causal::new(q, galera), conn).await?)
    })
}

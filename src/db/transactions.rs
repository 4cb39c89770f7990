//! Transactions (orders) of a customer: idempotent create and newest-first keyset
//! listing. Money is stored exactly as integer units and nanos.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::transactions;
use super::{create_for_customer, ensure_customer, Db, Dialect as _};
use crate::error::Result;
use crate::with_conn;

/// A stored transaction.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = transactions)]
pub struct TransactionRow {
    /// Id.
    pub id: i64,
    /// Owner.
    pub customer_id: i64,
    /// The business's order number.
    pub order_number: String,
    /// What was bought.
    pub product: String,
    /// ISO 4217 code.
    pub currency_code: String,
    /// Whole units of the amount.
    pub amount_units: i64,
    /// Billionths of a unit.
    pub amount_nanos: i32,
    /// When the order was placed (UTC).
    pub occur_time: NaiveDateTime,
    /// When it was recorded (UTC).
    pub create_time: NaiveDateTime,
}

/// A new transaction, validated.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = transactions)]
pub struct TransactionInsertForm {
    /// Owner.
    pub customer_id: i64,
    /// Order number.
    pub order_number: String,
    /// Product.
    pub product: String,
    /// Currency.
    pub currency_code: String,
    /// Units.
    pub amount_units: i64,
    /// Nanos.
    pub amount_nanos: i32,
    /// Occurrence time.
    pub occur_time: NaiveDateTime,
    /// Record time.
    pub create_time: NaiveDateTime,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// Records a transaction; a reused `request_id` returns the first result.
pub async fn create(db: &Db, form: &TransactionInsertForm) -> Result<TransactionRow> {
    create_for_customer!(db, transactions, TransactionRow, form)
}

/// Filters of a transaction listing.
#[derive(Debug, Clone)]
pub struct TransactionFilter {
    /// Owner.
    pub customer_id: i64,
    /// Inclusive lower bound of `occur_time`.
    pub start: Option<NaiveDateTime>,
    /// Exclusive upper bound of `occur_time`.
    pub end: Option<NaiveDateTime>,
}

/// One page, newest first, strictly after the `(occur_time, id)` position `after`.
pub async fn list(
    db: &Db,
    filter: &TransactionFilter,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<TransactionRow>> {
    with_conn!(db, |conn| {
        ensure_customer!(conn, filter.customer_id).await?;
        let mut query = transactions::table
            .filter(transactions::customer_id.eq(filter.customer_id))
            .select(TransactionRow::as_select())
            .order((transactions::occur_time.desc(), transactions::id.desc()))
            .limit(limit)
            .into_boxed();
        if let Some(start) = filter.start {
            query = query.filter(transactions::occur_time.ge(start));
        }
        if let Some(end) = filter.end {
            query = query.filter(transactions::occur_time.lt(end));
        }
        if let Some((t, id)) = after {
            query = query.filter(transactions::occur_time.le(t)).filter(
                transactions::occur_time
                    .lt(t)
                    .or(transactions::occur_time.eq(t).and(transactions::id.lt(id))),
            );
        }
        Ok(query.load(conn).await?)
    })
}

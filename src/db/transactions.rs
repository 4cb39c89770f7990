//! Transactions (orders) of a customer: idempotent create and newest-first keyset
//! listing. Money is stored exactly as integer units and nanos.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::query::{self, Table};
use super::schema::transactions;
use super::stored_time::StoredTime;
use super::{Conn as _, Db};
use crate::error::Result;
use crate::model::caller::Caller;
use crate::model::filter::CommunicationFilter;
use crate::with_conn;

/// The transactions table for the statement builders.
pub const TRANSACTIONS: Table = Table {
    name: "transactions",
    resource: "transaction",
    columns: "id, customer_id, order_number, product, currency_code, amount_units, \
              amount_nanos, occur_time, create_time",
    time: "occur_time",
    has_channel: false,
    order: &["occur_time", "id"],
};

/// A stored transaction.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = super::schema::transactions)]
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
    #[diesel(deserialize_as = StoredTime)]
    pub occur_time: NaiveDateTime,
    /// When it was recorded (UTC).
    #[diesel(deserialize_as = StoredTime)]
    pub create_time: NaiveDateTime,
}

/// A new transaction, validated.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = super::schema::transactions)]
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
    /// Whether the request set `occur_time` (else it is the record time, which a replay
    /// does not repeat).
    #[diesel(skip_insertion)]
    pub occur_time_given: bool,
}

impl super::Stored<TransactionRow> for TransactionInsertForm {
    fn stored(&self, id: i64) -> TransactionRow {
        TransactionRow {
            id,
            customer_id: self.customer_id,
            order_number: self.order_number.clone(),
            product: self.product.clone(),
            currency_code: self.currency_code.clone(),
            amount_units: self.amount_units,
            amount_nanos: self.amount_nanos,
            occur_time: self.occur_time,
            create_time: self.create_time,
        }
    }

    fn replays(&self, row: &TransactionRow) -> bool {
        self.customer_id == row.customer_id
            && self.order_number == row.order_number
            && self.product == row.product
            && self.currency_code == row.currency_code
            && self.amount_units == row.amount_units
            && self.amount_nanos == row.amount_nanos
            && (!self.occur_time_given || self.occur_time == row.occur_time)
    }
}

impl super::CustomerRowForm for TransactionInsertForm {
    type Row = TransactionRow;
    const RESOURCE: &'static str = "transaction";

    fn customer_id(&self) -> i64 {
        self.customer_id
    }

    fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    fn set_create_time(&mut self, at: NaiveDateTime) {
        self.create_time = at;
    }

    fn insert<'c>(
        &'c self,
        conn: super::AnyConn<'c>,
    ) -> futures_util::future::BoxFuture<'c, QueryResult<usize>> {
        conn.execute(diesel::insert_into(transactions::table).values(self))
    }

    fn by_request_id<'c>(
        conn: super::AnyConn<'c>,
        customer_id: i64,
        request_id: &'c str,
    ) -> futures_util::future::BoxFuture<'c, QueryResult<Option<TransactionRow>>> {
        let query = transactions::table
            .filter(transactions::customer_id.eq(customer_id))
            .filter(transactions::request_id.eq(request_id))
            .select(super::dialect::columns::<TransactionRow>());
        conn.first(query)
    }
}

/// Records a transaction; a reused `request_id` returns the first result.
pub async fn create(
    db: &Db,
    form: &TransactionInsertForm,
    caller: &Caller,
) -> Result<TransactionRow> {
    // A retry runs again with a fresh record stamp (see `feed::check_commit_bound`).
    super::retry_conflicts(|| async {
        super::create_for_customer(db, form, caller, "CreateTransaction").await
    })
    .await
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

impl From<&TransactionFilter> for CommunicationFilter {
    /// The same customer and time range, for the one WHERE writer.
    fn from(f: &TransactionFilter) -> Self {
        CommunicationFilter {
            start: f.start,
            end: f.end,
            ..CommunicationFilter::customer(f.customer_id)
        }
    }
}

/// The statement of one listing page: newest first, strictly after `after`.
#[diesel::dsl::auto_type]
fn list_query(filter: &TransactionFilter, after: Option<(NaiveDateTime, i64)>, limit: i64) -> _ {
    let start: query::When<diesel::dsl::GtEq<transactions::occur_time, NaiveDateTime>> =
        query::when(filter.start.map(|t| transactions::occur_time.ge(t)));
    let end: query::When<diesel::dsl::Lt<transactions::occur_time, NaiveDateTime>> =
        query::when(filter.end.map(|t| transactions::occur_time.lt(t)));
    let page: query::When<query::OlderThan<transactions::occur_time, transactions::id>> =
        query::when(
            after.map(|a| query::older_than(transactions::occur_time, transactions::id, a)),
        );
    let customer_id: i64 = filter.customer_id;
    let columns: <TransactionRow as diesel::Selectable<diesel::mysql::Mysql>>::SelectExpression =
        super::dialect::columns::<TransactionRow>();
    transactions::table
        .filter(start)
        .filter(end)
        .filter(transactions::customer_id.eq(customer_id))
        .filter(page)
        .order((transactions::occur_time.desc(), transactions::id.desc()))
        .limit(limit)
        .select(columns)
}

/// One page, newest first, strictly after the `(occur_time, id)` position `after`;
/// NOT_FOUND unless the customer exists.
pub async fn list(
    db: &Db,
    filter: &TransactionFilter,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<TransactionRow>> {
    let page = list_query(filter, after, limit);
    with_conn!(db, |conn| {
        query::ensure_customer(conn, filter.customer_id).await?;
        Ok(conn.any().load(page).await?)
    })
}

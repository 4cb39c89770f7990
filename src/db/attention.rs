//! Reads behind the attention list: live customers by last contact (from the
//! customer-month rollup, or one `MAX(occur_time)` probe per customer on the base table), contacts per
//! customer over a range (whole months from `customer_months`, edges from the base
//! table), and the last contact's time and channel of a page of customers.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};

use diesel::dsl::{sql, sum};

use super::dialect::{Backend, Conn};
use super::fns::{self, TallyPart};
use super::query::{self, Bind, Keyset, Sql};
use super::schema::customers;
use super::Db;
use crate::analytics::rollup::Split;
use crate::error::Result;
use crate::with_conn;

/// A customer with its last contact, as the stale list reads it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct StaleRow {
    /// The customer.
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    /// Its name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Its latest communication; `None` when never contacted.
    #[diesel(sql_type = Nullable<Timestamp>)]
    pub last_time: Option<NaiveDateTime>,
}

/// The live customers in `[select]` with their last contact time, as a derived table
/// `t (customer_id, name, create_time, last_time)`.
const LAST_CONTACTS: &str = "SELECT customer_id, name, last_time FROM (SELECT c.id AS \
     customer_id, c.name AS name, c.create_time AS create_time, (SELECT MAX(x.occur_time) \
     FROM communications x WHERE x.customer_id = c.id) AS last_time FROM customers c WHERE \
     c.delete_time IS NULL) t";

/// Live customers never contacted and created at or before `cutoff` (at least the stale
/// days before the reference time), by id, after id `after`.
pub async fn never_contacted(
    db: &Db,
    cutoff: NaiveDateTime,
    after: i64,
    limit: i64,
) -> Result<Vec<StaleRow>> {
    query::load(db, &never_contacted_sql(cutoff, after, limit)).await
}

/// The statement of [`never_contacted`].
fn never_contacted_sql(cutoff: NaiveDateTime, after: i64, limit: i64) -> Sql {
    // raw SQL: correlated NOT EXISTS (diesel's subqueries may name only their own table's columns)
    let mut sql =
        Sql::from("SELECT c.id AS customer_id, c.name AS name, NULL AS last_time FROM customers c");
    sql.and()
        .push("c.delete_time IS NULL")
        .and()
        .push("NOT EXISTS (SELECT 1 FROM communications x WHERE x.customer_id = c.id)")
        .and()
        .push("c.create_time <= ")
        .bind(Bind::Time(cutoff))
        .and()
        .push("c.id > ")
        .bind(Bind::I64(after))
        .push(" ORDER BY c.id LIMIT ")
        .bind(Bind::I64(limit));
    sql
}

/// The live customers with their last contact time, from the customer-month rollup:
/// each customer's latest month (a loose scan of `(customer_id, month)`), then that
/// month's row, which holds the latest time. About 3x faster than `MAX(occur_time)` per
/// customer over the base table at 10M communications.
const LAST_CONTACTS_FROM_ROLLUP: &str = "SELECT c.id AS customer_id, c.name AS name, \
     m.last_time AS last_time FROM (SELECT customer_id, MAX(month) AS mm FROM customer_months \
     GROUP BY customer_id) x JOIN customer_months m ON m.month = x.mm AND m.customer_id = \
     x.customer_id JOIN customers c ON c.id = m.customer_id";

/// Live customers whose last contact is at or before `cutoff` (exactly the stale days
/// before the reference time counts as stale), oldest first (ties by id),
/// strictly after `(last_time, customer_id)` `after`; from the customer-month rollup, or
/// (`from_rollup` false) from the base table.
pub async fn stale(
    db: &Db,
    cutoff: NaiveDateTime,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
    from_rollup: bool,
) -> Result<Vec<StaleRow>> {
    query::load(db, &stale_sql(cutoff, after, limit, from_rollup)).await
}

/// The statement of [`stale`].
fn stale_sql(
    cutoff: NaiveDateTime,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
    from_rollup: bool,
) -> Sql {
    // raw SQL: keyset page over a derived table (diesel has no subquery in FROM)
    let (mut sql, columns): (Sql, &[&str]) = if from_rollup {
        let mut sql = Sql::from(LAST_CONTACTS_FROM_ROLLUP);
        sql.and().push("c.delete_time IS NULL");
        (sql, &["m.last_time", "c.id"])
    } else {
        (Sql::from(LAST_CONTACTS), &["last_time", "customer_id"])
    };
    sql.and()
        .push(&format!("{} <= ", columns[0]))
        .bind(Bind::Time(cutoff));
    let keyset = Keyset {
        columns,
        descending: false,
    };
    keyset.after_row(&mut sql, after);
    keyset.order_limit(&mut sql, limit);
    sql
}

/// Contacts of one customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct CustomerCount {
    /// The customer.
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    /// Communications.
    #[diesel(sql_type = BigInt)]
    pub n: i64,
    /// Sum of their sentiment scores.
    #[diesel(sql_type = BigInt)]
    pub sentiment_sum: i64,
}

/// Communications per customer (every customer, every channel and direction) and the sum
/// of their sentiment scores in the whole months of `split` (from `customer_months`) and
/// its edges (from the base table).
/// Customers without any are absent.
pub async fn counts_per_customer(db: &Db, split: &Split) -> Result<Vec<CustomerCount>> {
    match counts_sql(db.backend(), split) {
        Some(sql) => query::load(db, &sql).await,
        None => Ok(Vec::new()),
    }
}

/// The statement of [`counts_per_customer`]; `None` when `split` covers nothing.
fn counts_sql(backend: Backend, split: &Split) -> Option<Sql> {
    let mut parts: Vec<Sql> = Vec::new();
    if let Some((lo, hi)) = split.units {
        // raw SQL: UNION ALL summed over a derived table (diesel has no subquery in FROM)
        let mut part = Sql::from(
            "SELECT customer_id, n AS c, sentiment_sum AS s FROM customer_months WHERE month >= ",
        );
        part.bind(Bind::I64(lo))
            .push(" AND month < ")
            .bind(Bind::I64(hi));
        parts.push(part);
    }
    for &(start, end) in &split.edges {
        let mut part = Sql::from(&*format!(
            "SELECT customer_id, COUNT(*) AS c, {} AS s FROM communications WHERE occur_time >= ",
            Sql::expr_text(backend, &fns::sentiment_tally(TallyPart::Sum))
        ));
        part.bind(Bind::Time(start))
            .push(" AND occur_time < ")
            .bind(Bind::Time(end))
            .push(" GROUP BY customer_id");
        parts.push(part);
    }
    if parts.is_empty() {
        return None;
    }
    let total = |column: &str| Sql::expr_text(backend, &fns::int(sum(sql::<BigInt>(column))));
    let mut sql = Sql::from(&*format!(
        "SELECT customer_id, {} AS n, {} AS sentiment_sum FROM (",
        total("c"),
        total("s")
    ));
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push(&part.text);
        sql.binds.extend(part.binds);
    }
    sql.push(") t GROUP BY customer_id");
    Some(sql)
}

/// Ids of deleted customers (soft-deleted, kept for their history).
pub async fn deleted_customers(db: &Db) -> Result<Vec<i64>> {
    let query = customers::table
        .filter(customers::delete_time.is_not_null())
        .select(customers::id);
    with_conn!(db, |conn| Ok(conn.any().load(query).await?))
}

/// Names of `ids`.
pub async fn names(db: &Db, ids: &[i64]) -> Result<HashMap<i64, String>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let query = customers::table
        .filter(customers::id.eq_any(ids.to_vec()))
        .select((customers::id, customers::name));
    let rows: Vec<(i64, String)> = with_conn!(db, |conn| Ok::<_, crate::error::Error>(
        conn.any().load(query).await?
    ))?;
    Ok(rows.into_iter().collect())
}

#[derive(QueryableByName)]
struct LastRow {
    #[diesel(sql_type = BigInt)]
    customer_id: i64,
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Integer)]
    channel: i32,
    #[diesel(sql_type = Timestamp)]
    occur_time: NaiveDateTime,
}

/// The latest communication's time and channel of each of `ids` that has one (the
/// highest id among several at that time).
pub async fn last_contacts(db: &Db, ids: &[i64]) -> Result<HashMap<i64, (NaiveDateTime, i32)>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = last_contacts_sql(ids);
    let rows: Vec<LastRow> = query::load(db, &sql).await?;
    let mut out: HashMap<i64, (i64, NaiveDateTime, i32)> = HashMap::new();
    for r in rows {
        let entry = out
            .entry(r.customer_id)
            .or_insert((r.id, r.occur_time, r.channel));
        if r.id > entry.0 {
            *entry = (r.id, r.occur_time, r.channel);
        }
    }
    Ok(out
        .into_iter()
        .map(|(c, (_, t, ch))| (c, (t, ch)))
        .collect())
}

/// The statement of [`last_contacts`]: each customer's latest time found by a loose
/// index scan of `(customer_id, occur_time)`, then the rows at exactly that key, so the
/// cost is a few index dives per customer however many rows each has (a correlated
/// `occur_time = (SELECT MAX ...)` per row read every row of the listed customers).
fn last_contacts_sql(ids: &[i64]) -> Sql {
    // raw SQL: a row value IN a grouped subquery of the same table (diesel's IN takes one column)
    let mut sql = Sql::from(
        "SELECT x.customer_id, x.id, x.channel, x.occur_time FROM communications x WHERE \
         (x.customer_id, x.occur_time) IN (SELECT y.customer_id, MAX(y.occur_time) FROM \
         communications y WHERE y.customer_id IN ",
    );
    sql.list(ids.iter().map(|&c| Bind::I64(c)))
        .push(" GROUP BY y.customer_id)");
    sql
}

#[cfg(test)]
mod tests {
    //! The attention list's statements, pinned as insta snapshots (the same text on
    //! both backends but for the casts of the counts' sums).
    use super::*;
    use crate::model::time::march_2024 as at;

    #[test]
    fn attention_statements_snapshot() {
        let split = Split {
            units: Some((650, 652)),
            edges: vec![(at(1), at(2)), (at(20), at(21))],
        };
        let statements = [
            (
                "attention_never_contacted",
                never_contacted_sql(at(1), 7, 50),
            ),
            (
                "attention_stale_from_rollup",
                stale_sql(at(1), Some((at(2), 7)), 50, true),
            ),
            (
                "attention_stale_from_base_table",
                stale_sql(at(1), None, 50, false),
            ),
            (
                "attention_counts_per_customer",
                counts_sql(Backend::Mysql, &split).expect("a split with months"),
            ),
            (
                "attention_counts_per_customer_sqlite",
                counts_sql(Backend::Sqlite, &split).expect("a split with months"),
            ),
            ("attention_last_contacts", last_contacts_sql(&[3, 5])),
        ];
        for (name, sql) in statements {
            assert_eq!(sql.binds.len(), sql.text.matches('?').count(), "{name}");
            insta::assert_snapshot!(name, sql.text);
        }
        let nothing = Split {
            units: None,
            edges: Vec::new(),
        };
        assert_eq!(counts_sql(Backend::Sqlite, &nothing), None);
    }
}

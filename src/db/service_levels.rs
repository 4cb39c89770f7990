//! Reads behind the response-time and resolution-time reports: pages of
//! `(time, id, customer, channel, direction)` off the covering time index, the first
//! reply after a time for the customers still waiting, and pages of tickets by open time.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Timestamp};
use diesel::{dsl, QueryableByName};

use super::communications::COMMUNICATIONS;
use super::dialect::{Backend, Index};
use super::query::{self, Bind, Keyset, Sql};
use super::schema::service_tickets;
use super::{Conn as _, Db};
use crate::error::Result;
use crate::model::filter::CommunicationFilter;
use crate::with_conn;

/// `Direction` value of an outbound communication.
pub const OUTBOUND: i32 = 2;
/// `Direction` value of an inbound communication.
pub const INBOUND: i32 = 1;

/// One communication as the response-time report reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct ContactRow {
    /// Id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Owner.
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    /// Channel.
    #[diesel(sql_type = Integer)]
    pub channel: i32,
    /// Direction.
    #[diesel(sql_type = Integer)]
    pub direction: i32,
    /// When it happened.
    #[diesel(sql_type = Timestamp)]
    pub occur_time: NaiveDateTime,
}

/// Where a page of [`contact_page`] continues: the last row's `(customer_id,
/// occur_time, id)`.
pub type ContactPosition = (i64, NaiveDateTime, i64);

/// One page of the communications in `scope`, strictly after `after`. Over every
/// customer: ordered by `(occur_time, id)`, a range scan of the covering `(occur_time,
/// id, customer_id, channel, direction)` index. Over listed customers: ordered by
/// `(customer_id, occur_time, id)` off the `(customer_id, occur_time, ...)` index, which
/// reads only their rows. Either order keeps each customer's rows in time order, which
/// is all the reply pairing needs.
pub async fn contact_page(
    db: &Db,
    scope: &CommunicationFilter,
    after: Option<ContactPosition>,
    limit: i64,
) -> Result<Vec<ContactRow>> {
    query::load(db, &contact_page_sql(db.backend(), scope, after, limit)).await
}

/// The statement of [`contact_page`].
fn contact_page_sql(
    backend: Backend,
    scope: &CommunicationFilter,
    after: Option<ContactPosition>,
    limit: i64,
) -> Sql {
    let by_customer = !scope.customer_ids.is_empty();
    // raw SQL: FORCE INDEX hint on a keyset page
    let mut sql =
        Sql::from("SELECT id, customer_id, channel, direction, occur_time FROM communications");
    sql.push(backend.index_hint(if by_customer {
        Index::CustomerTime
    } else {
        Index::Time
    }))
    .filter(&COMMUNICATIONS, scope);
    let keyset = Keyset {
        columns: if by_customer {
            &["customer_id", "occur_time", "id"]
        } else {
            &["occur_time", "id"]
        },
        descending: false,
    };
    let after = after.map(|(c, t, id)| {
        if by_customer {
            vec![Bind::I64(c), Bind::Time(t), Bind::I64(id)]
        } else {
            vec![Bind::Time(t), Bind::I64(id)]
        }
    });
    keyset.after(&mut sql, after.as_deref());
    keyset.order_limit(&mut sql, limit);
    sql
}

/// The first outbound communication of a customer on a channel at or after a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct FirstReply {
    /// The customer.
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    /// The channel.
    #[diesel(sql_type = Integer)]
    pub channel: i32,
    /// The earliest outbound time.
    #[diesel(sql_type = Timestamp)]
    pub first_time: NaiveDateTime,
}

/// Customers per statement of [`first_replies`].
const REPLY_BATCH: usize = 500;

/// For each of `customer_ids` and each channel, its first outbound communication at or
/// after `from` (customers without one are absent). One grouped statement per 500
/// customers, each an index range of `(customer_id, occur_time)`.
pub async fn first_replies(
    db: &Db,
    customer_ids: &[i64],
    from: NaiveDateTime,
) -> Result<Vec<FirstReply>> {
    let mut out = Vec::new();
    for batch in customer_ids.chunks(REPLY_BATCH) {
        let sql = first_replies_sql(db.backend(), batch, from);
        out.extend(query::load::<FirstReply>(db, &sql).await?);
    }
    Ok(out)
}

/// The statement of [`first_replies`] for one batch of customers.
fn first_replies_sql(backend: Backend, batch: &[i64], from: NaiveDateTime) -> Sql {
    // raw SQL: FORCE INDEX hint on a per-customer MIN
    let mut sql =
        Sql::from("SELECT customer_id, channel, MIN(occur_time) AS first_time FROM communications");
    sql.push(backend.index_hint(Index::CustomerTime))
        .and()
        .push("customer_id IN ")
        .list(batch.iter().map(|&c| Bind::I64(c)))
        .and()
        .push("occur_time >= ")
        .bind(Bind::Time(from))
        .and()
        .push("direction = ")
        .bind(Bind::I32(OUTBOUND))
        .push(" GROUP BY customer_id, channel");
    sql
}

/// One ticket as the resolution-time report reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable)]
pub struct TicketWaitRow {
    /// Id.
    pub id: i64,
    /// Owner.
    pub customer_id: i64,
    /// Opened.
    pub open_time: NaiveDateTime,
    /// Resolved or closed; `None` while open.
    pub resolve_time: Option<NaiveDateTime>,
}

/// One page of the tickets opened in `scope` (customers and time only), ordered by
/// `(open_time, id)`, strictly after `after`.
pub async fn ticket_page(
    db: &Db,
    scope: &CommunicationFilter,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<TicketWaitRow>> {
    let page = ticket_page_query(scope, after, limit);
    with_conn!(db, |conn| Ok(conn.any().load(page).await?))
}

/// The statement of [`ticket_page`].
#[diesel::dsl::auto_type]
fn ticket_page_query(
    scope: &CommunicationFilter,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> _ {
    let start: query::When<dsl::GtEq<service_tickets::open_time, NaiveDateTime>> =
        query::when(scope.start.map(|t| service_tickets::open_time.ge(t)));
    let end: query::When<dsl::Lt<service_tickets::open_time, NaiveDateTime>> =
        query::when(scope.end.map(|t| service_tickets::open_time.lt(t)));
    let customers: query::When<dsl::EqAny<service_tickets::customer_id, Vec<i64>>> = query::when(
        (!scope.customer_ids.is_empty())
            .then(|| service_tickets::customer_id.eq_any(scope.customer_ids.clone())),
    );
    let page: query::When<query::NewerThan<service_tickets::open_time, service_tickets::id>> =
        query::when(
            after.map(|a| query::newer_than(service_tickets::open_time, service_tickets::id, a)),
        );
    service_tickets::table
        .filter(start)
        .filter(end)
        .filter(customers)
        .filter(page)
        .order((service_tickets::open_time.asc(), service_tickets::id.asc()))
        .limit(limit)
        .select((
            service_tickets::id,
            service_tickets::customer_id,
            service_tickets::open_time,
            service_tickets::resolve_time,
        ))
}

#[cfg(test)]
mod tests {
    //! The service-level reports' statements per backend, pinned as insta snapshots.
    use super::*;
    use crate::model::time::march_2024 as at;

    fn scope(customer_ids: Vec<i64>) -> CommunicationFilter {
        CommunicationFilter {
            customer_ids,
            channels: vec![1, 3],
            direction: None,
            start: Some(at(1)),
            end: Some(at(12)),
        }
    }

    #[test]
    fn service_level_statements_snapshot_per_backend() {
        for (backend, name) in [(Backend::Mysql, "mysql"), (Backend::Sqlite, "sqlite")] {
            let statements = [
                (
                    "service_levels_contact_page",
                    contact_page_sql(backend, &scope(Vec::new()), Some((7, at(2), 3)), 500),
                ),
                (
                    "service_levels_contact_page_by_customer",
                    contact_page_sql(backend, &scope(vec![7, 9]), Some((7, at(2), 3)), 500),
                ),
                (
                    "service_levels_first_replies",
                    first_replies_sql(backend, &[7, 9], at(2)),
                ),
            ];
            for (statement, sql) in statements {
                assert_eq!(
                    sql.binds.len(),
                    sql.text.matches('?').count(),
                    "{statement}"
                );
                insta::assert_snapshot!(format!("{statement}_{name}"), sql.text);
            }
        }
        let tickets = ticket_page_query(&scope(vec![7]), Some((at(2), 3)), 500);
        insta::assert_snapshot!(
            "service_levels_ticket_page_mysql",
            diesel::debug_query::<diesel::mysql::Mysql, _>(&tickets).to_string()
        );
        insta::assert_snapshot!(
            "service_levels_ticket_page_sqlite",
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&tickets).to_string()
        );
    }
}

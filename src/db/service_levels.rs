//! Reads behind the response-time and resolution-time reports: pages of
//! `(time, id, customer, channel, direction)` off the covering time index, the first
//! reply after a time for the customers still waiting, and pages of tickets by open time.

use chrono::NaiveDateTime;
use diesel::sql_types::{BigInt, Integer, Nullable, Timestamp};
use diesel::QueryableByName;

use super::communications::COMMUNICATIONS;
use super::dialect::Index;
use super::query::{self, Bind, Keyset, Sql};
use super::tickets::TICKETS;
use super::Db;
use crate::error::Result;
use crate::model::filter::CommunicationFilter;

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
    let by_customer = !scope.customer_ids.is_empty();
    // raw SQL: FORCE INDEX hint on a keyset page
    let mut sql =
        Sql::from("SELECT id, customer_id, channel, direction, occur_time FROM communications");
    sql.push(db.backend().index_hint(if by_customer {
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
    query::load(db, &sql).await
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
        // raw SQL: FORCE INDEX hint on a per-customer MIN
        let mut sql = Sql::from(
            "SELECT customer_id, channel, MIN(occur_time) AS first_time FROM communications",
        );
        sql.push(db.backend().index_hint(Index::CustomerTime))
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
        out.extend(query::load::<FirstReply>(db, &sql).await?);
    }
    Ok(out)
}

/// One ticket as the resolution-time report reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct TicketWaitRow {
    /// Id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Opened.
    #[diesel(sql_type = Timestamp)]
    pub open_time: NaiveDateTime,
    /// Resolved or closed; `None` while open.
    #[diesel(sql_type = Nullable<Timestamp>)]
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
    // raw SQL: keyset page on the one Keyset/filter builder, its text pinned per backend
    let mut sql = Sql::from("SELECT id, open_time, resolve_time FROM service_tickets");
    sql.filter(&TICKETS, scope);
    let keyset: Keyset<'_> = TICKETS.keyset(false);
    keyset.after_row(&mut sql, after);
    keyset.order_limit(&mut sql, limit);
    query::load(db, &sql).await
}

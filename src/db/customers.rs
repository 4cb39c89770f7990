//! Customer rows and their tags: create (idempotent), get, update with optimistic
//! concurrency, soft delete or purge, and keyset-paginated listing.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::audit::{self, Change};
use super::schema::{communications, customer_tags, customers, service_tickets, transactions};
use super::{query, retry_conflicts, Conn as _, Db};
use crate::error::{Error, Result};
use crate::model::caller::Caller;
use crate::with_conn;

/// A stored customer.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = customers)]
pub struct CustomerRow {
    /// Id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// `Gender` enum value.
    pub gender: i32,
    /// Birth date, if known.
    pub birth_date: Option<NaiveDate>,
    /// Postal address.
    pub address: String,
    /// Normalized phone.
    pub phone: String,
    /// Lower-cased email.
    pub email: String,
    /// Optimistic-concurrency version; the etag.
    pub version: i64,
    /// Creation time (UTC).
    pub create_time: NaiveDateTime,
    /// Last change (UTC).
    pub update_time: NaiveDateTime,
}

/// A customer with its tags.
#[derive(Debug, Clone)]
pub struct Customer {
    /// The row.
    pub row: CustomerRow,
    /// Tags, sorted.
    pub tags: Vec<String>,
}

/// Values of a new customer, validated and normalized.
#[derive(Debug, Clone)]
pub struct CustomerInsertForm {
    /// Display name.
    pub name: String,
    /// `Gender` enum value.
    pub gender: i32,
    /// Birth date.
    pub birth_date: Option<NaiveDate>,
    /// Address.
    pub address: String,
    /// Phone.
    pub phone: String,
    /// Email.
    pub email: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// Changes to a customer; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct CustomerUpdateForm {
    /// New name.
    pub name: Option<String>,
    /// New gender.
    pub gender: Option<i32>,
    /// New birth date (`Some(None)` clears it).
    pub birth_date: Option<Option<NaiveDate>>,
    /// New address.
    pub address: Option<String>,
    /// New phone.
    pub phone: Option<String>,
    /// New email.
    pub email: Option<String>,
    /// New tag set.
    pub tags: Option<Vec<String>>,
}

/// Filters of a customer listing.
#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    /// Lower-cased substring of name, phone or email.
    pub query: Option<String>,
    /// Required tag.
    pub tag: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = customers)]
struct NewCustomerRow<'a> {
    name: &'a str,
    gender: i32,
    birth_date: Option<NaiveDate>,
    address: &'a str,
    phone: &'a str,
    email: &'a str,
    search_text: String,
    request_id: Option<&'a str>,
    version: i64,
    create_time: NaiveDateTime,
    update_time: NaiveDateTime,
}

#[derive(AsChangeset)]
#[diesel(table_name = customers)]
struct CustomerChangeset {
    name: Option<String>,
    gender: Option<i32>,
    birth_date: Option<Option<NaiveDate>>,
    address: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    search_text: String,
    version: i64,
    update_time: NaiveDateTime,
}

/// The text the `query` filter searches: lower-cased name, phone and email.
fn search_text(name: &str, phone: &str, email: &str) -> String {
    format!("{}\n{}\n{}", name.to_lowercase(), phone, email)
}

/// Escapes `%`, `_` and the escape character itself for `LIKE ... ESCAPE '!'`.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

// Helpers are macros, not generic functions: each expands inside a `with_conn!` arm
// and so type-checks against that arm's concrete connection type.

/// `Option<i64>`: id of the customer created with this idempotency key.
macro_rules! id_by_request_id {
    ($conn:expr, $rid:expr) => {
        customers::table
            .filter(customers::request_id.eq($rid))
            .select(customers::id)
            .first::<i64>($conn)
            .await
            .optional()
    };
}

/// `Result<Customer>`: a customer with its tags; deleted ones only if `$deleted_ok`.
macro_rules! load_customer {
    ($conn:expr, $id:expr, $deleted_ok:expr) => {
        async {
            let mut query = customers::table
                .filter(customers::id.eq($id))
                .select(CustomerRow::as_select())
                .into_boxed();
            if !$deleted_ok {
                query = query.filter(customers::delete_time.is_null());
            }
            let row: Option<CustomerRow> = query.first($conn).await.optional()?;
            let row = row.ok_or(Error::NotFound {
                resource: "customer",
                id: $id,
            })?;
            let tags: Vec<String> = customer_tags::table
                .filter(customer_tags::customer_id.eq($id))
                .select(customer_tags::tag)
                .order(customer_tags::tag)
                .load($conn)
                .await?;
            Ok::<Customer, Error>(Customer { row, tags })
        }
    };
}

/// `QueryResult<()>`: replaces a customer's tags.
macro_rules! replace_tags {
    ($conn:expr, $id:expr, $tags:expr) => {
        async {
            diesel::delete(customer_tags::table.filter(customer_tags::customer_id.eq($id)))
                .execute($conn)
                .await?;
            for tag in $tags.iter() {
                diesel::insert_into(customer_tags::table)
                    .values((
                        customer_tags::customer_id.eq($id),
                        customer_tags::tag.eq(tag),
                    ))
                    .execute($conn)
                    .await?;
            }
            Ok::<(), diesel::result::Error>(())
        }
    };
}

/// Creates a customer; with a `request_id` already used, returns the first result.
pub async fn create(
    db: &Db,
    form: &CustomerInsertForm,
    now: NaiveDateTime,
    caller: &Caller,
) -> Result<Customer> {
    let result = with_conn!(db, write, |conn| {
        conn.transaction(async |conn| {
            if let Some(rid) = &form.request_id {
                if let Some(id) = id_by_request_id!(conn, rid)? {
                    return load_customer!(conn, id, true).await;
                }
            }
            diesel::insert_into(customers::table)
                .values(NewCustomerRow {
                    name: &form.name,
                    gender: form.gender,
                    birth_date: form.birth_date,
                    address: &form.address,
                    phone: &form.phone,
                    email: &form.email,
                    search_text: search_text(&form.name, &form.phone, &form.email),
                    request_id: form.request_id.as_deref(),
                    version: 1,
                    create_time: now,
                    update_time: now,
                })
                .execute(conn)
                .await?;
            let id = conn.last_insert_id().await?;
            replace_tags!(conn, id, form.tags).await?;
            audit::record(conn, caller, now, &[Change::new("CreateCustomer", id, id)]).await?;
            load_customer!(conn, id, false).await
        })
        .await
    });
    match (result, &form.request_id) {
        // A concurrent request with the same key won the race: answer with its row.
        (Err(e), Some(rid)) if e.is_unique_violation() => with_conn!(db, |conn| {
            match id_by_request_id!(conn, rid)? {
                Some(id) => load_customer!(conn, id, true).await,
                None => Err(e),
            }
        }),
        (result, _) => result,
    }
}

/// Returns a customer that exists and is not deleted.
pub async fn get(db: &Db, id: i64) -> Result<Customer> {
    with_conn!(db, |conn| load_customer!(conn, id, false).await)
}

/// Fails with NOT_FOUND unless the customer exists and is not deleted.
pub async fn ensure_exists(db: &Db, id: i64) -> Result<()> {
    with_conn!(db, |conn| query::ensure_customer(conn, id).await)
}

/// Applies `changes` when `expected_version` (if any) is current; ABORTED otherwise.
pub async fn update(
    db: &Db,
    id: i64,
    expected_version: Option<i64>,
    changes: &CustomerUpdateForm,
    now: NaiveDateTime,
    caller: &Caller,
) -> Result<Customer> {
    with_conn!(db, write, |conn| {
        conn.transaction(async |conn| {
                let current = load_customer!(conn, id, false).await?;
                let version = current.row.version;
                if let Some(expected) = expected_version {
                    if expected != version {
                        return Err(Error::Aborted(format!(
                            "customer {id} was changed concurrently: etag {expected} is stale, current is {version}"
                        )));
                    }
                }
                let name = changes.name.as_deref().unwrap_or(&current.row.name);
                let phone = changes.phone.as_deref().unwrap_or(&current.row.phone);
                let email = changes.email.as_deref().unwrap_or(&current.row.email);
                let changeset = CustomerChangeset {
                    name: changes.name.clone(),
                    gender: changes.gender,
                    birth_date: changes.birth_date,
                    address: changes.address.clone(),
                    phone: changes.phone.clone(),
                    email: changes.email.clone(),
                    search_text: search_text(name, phone, email),
                    version: version + 1,
                    update_time: now,
                };
                let updated = diesel::update(
                    customers::table
                        .filter(customers::id.eq(id))
                        .filter(customers::version.eq(version)),
                )
                .set(&changeset)
                .execute(conn)
                .await?;
                if updated != 1 {
                    return Err(Error::Aborted(format!(
                        "customer {id} was changed concurrently; read it again"
                    )));
                }
                if let Some(tags) = &changes.tags {
                    replace_tags!(conn, id, tags).await?;
                }
                audit::record(conn, caller, now, &[Change::new("UpdateCustomer", id, id)])
                    .await?;
                load_customer!(conn, id, false).await
        })
        .await
    })
}

/// Deletes a customer. Without `purge` it is marked deleted (its history stays for
/// audit); with `purge` the customer and every row carrying its id are erased in one
/// transaction, which is also allowed on an already deleted customer.
pub async fn delete(
    db: &Db,
    id: i64,
    purge: bool,
    expected_version: Option<i64>,
    now: NaiveDateTime,
    caller: &Caller,
) -> Result<()> {
    retry_conflicts(|| async {
        with_conn!(db, write, |conn| {
            conn.transaction(async |conn| {
                let current = load_customer!(conn, id, purge).await?;
                if let Some(expected) = expected_version {
                    if expected != current.row.version {
                        return Err(Error::Aborted(format!(
                            "customer {id} was changed concurrently: etag {expected} is stale"
                        )));
                    }
                }
                if purge {
                    super::rollups::remove_customer(conn, id).await?;
                    super::content_feed::record_customer_deletions(conn, id, now).await?;
                    diesel::delete(
                        communications::table.filter(communications::customer_id.eq(id)),
                    )
                    .execute(conn)
                    .await?;
                    diesel::delete(transactions::table.filter(transactions::customer_id.eq(id)))
                        .execute(conn)
                        .await?;
                    diesel::delete(
                        service_tickets::table.filter(service_tickets::customer_id.eq(id)),
                    )
                    .execute(conn)
                    .await?;
                    diesel::delete(customer_tags::table.filter(customer_tags::customer_id.eq(id)))
                        .execute(conn)
                        .await?;
                    diesel::delete(customers::table.filter(customers::id.eq(id)))
                        .execute(conn)
                        .await?;
                } else {
                    diesel::update(customers::table.filter(customers::id.eq(id)))
                        .set((
                            customers::delete_time.eq(Some(now)),
                            customers::update_time.eq(now),
                            customers::version.eq(current.row.version + 1),
                        ))
                        .execute(conn)
                        .await?;
                }
                let change = Change::new("DeleteCustomer", id, id).with_detail(if purge {
                    "purge"
                } else {
                    ""
                });
                audit::record(conn, caller, now, &[change]).await?;
                Ok(())
            })
            .await
        })
    })
    .await
}

/// One page of customers with `id > after`, ascending by id.
pub async fn list(
    db: &Db,
    filter: &CustomerFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<Customer>> {
    with_conn!(db, |conn| {
        let mut query = customers::table
            .filter(customers::delete_time.is_null())
            .filter(customers::id.gt(after))
            .select(CustomerRow::as_select())
            .order(customers::id.asc())
            .limit(limit)
            .into_boxed();
        if let Some(q) = &filter.query {
            query = query.filter(
                customers::search_text
                    .like(format!("%{}%", like_escape(q)))
                    .escape('!'),
            );
        }
        if let Some(tag) = &filter.tag {
            query = query.filter(
                customers::id.eq_any(
                    customer_tags::table
                        .filter(customer_tags::tag.eq(tag.clone()))
                        .select(customer_tags::customer_id),
                ),
            );
        }
        let rows: Vec<CustomerRow> = query.load(conn).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let tag_rows: Vec<(i64, String)> = customer_tags::table
            .filter(customer_tags::customer_id.eq_any(&ids))
            .select((customer_tags::customer_id, customer_tags::tag))
            .order((customer_tags::customer_id, customer_tags::tag))
            .load(conn)
            .await?;
        let mut tags_by_id: std::collections::HashMap<i64, Vec<String>> =
            std::collections::HashMap::new();
        for (cid, tag) in tag_rows {
            tags_by_id.entry(cid).or_default().push(tag);
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let tags = tags_by_id.remove(&row.id).unwrap_or_default();
                Customer { row, tags }
            })
            .collect())
    })
}

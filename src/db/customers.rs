//! Customer rows and their tags: create (idempotent), get, update with optimistic
//! concurrency, soft delete or purge, and keyset-paginated listing.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::audit::{self, Change};
use super::dialect::columns;
use super::schema::{
    communications, customer_tags, customers, satisfaction_surveys, service_tickets, transactions,
};
use super::{query, retry_conflicts, Conn, Db};
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

/// Id of the customer created with this idempotency key.
async fn id_by_request_id<C: Conn>(conn: &mut C, rid: &str) -> QueryResult<Option<i64>> {
    let query = customers::table
        .filter(customers::request_id.eq(rid))
        .select(customers::id);
    conn.any().first(query).await
}

/// A customer with its tags; deleted ones only if `deleted_ok`. A merged customer,
/// unless `deleted_ok`, is [`Error::Merged`] naming the survivor.
async fn load_customer<C: Conn>(conn: &mut C, id: i64, deleted_ok: bool) -> Result<Customer> {
    let query = customers::table.filter(customers::id.eq(id)).select((
        columns::<CustomerRow>(),
        customers::delete_time,
        customers::merged_into,
    ));
    let found: Option<(CustomerRow, Option<NaiveDateTime>, Option<i64>)> =
        conn.any().first(query).await?;
    let row = match found {
        Some((_, Some(_), Some(merged_into))) if !deleted_ok => {
            return Err(Error::Merged { id, merged_into })
        }
        Some((row, None, _)) => row,
        Some((row, Some(_), _)) if deleted_ok => row,
        _ => {
            return Err(Error::NotFound {
                resource: "customer",
                id,
            })
        }
    };
    let tags = customer_tags::table
        .filter(customer_tags::customer_id.eq(id))
        .select(customer_tags::tag)
        .order(customer_tags::tag);
    let tags: Vec<String> = conn.any().load(tags).await?;
    Ok(Customer { row, tags })
}

/// The customer a customer was merged into.
async fn merged_into<C: Conn>(conn: &mut C, id: i64) -> QueryResult<Option<i64>> {
    let query = customers::table
        .filter(customers::id.eq(id))
        .select(customers::merged_into);
    Ok(conn.any().first::<_, Option<i64>>(query).await?.flatten())
}

/// Replaces a customer's tags, writing only those that change, each by its primary
/// key. The caller holds the customer's row lock (a row it just inserted or updated),
/// so the tags read are the current ones. (A DELETE by `customer_id` alone also locked
/// the gap after the customer's tags, up to the next customer's: two creates, each
/// inserting into the gap the other had locked, deadlocked.)
async fn replace_tags<C: Conn>(conn: &mut C, id: i64, tags: &[String]) -> QueryResult<()> {
    let current = customer_tags::table
        .filter(customer_tags::customer_id.eq(id))
        .select(customer_tags::tag);
    let current: Vec<String> = conn.any().load(current).await?;
    for tag in current.iter().filter(|t| !tags.contains(*t)) {
        let delete = diesel::delete(
            customer_tags::table
                .filter(customer_tags::customer_id.eq(id))
                .filter(customer_tags::tag.eq(tag)),
        );
        conn.any().execute(delete).await?;
    }
    for tag in tags.iter().filter(|t| !current.contains(*t)) {
        let insert = diesel::insert_into(customer_tags::table).values((
            customer_tags::customer_id.eq(id),
            customer_tags::tag.eq(tag),
        ));
        conn.any().execute(insert).await?;
    }
    Ok(())
}

impl CustomerInsertForm {
    /// The answer to this form when its `request_id` found `first`: `first` for a
    /// replay; [`Error::RequestIdReused`] when `first`, still as created, differs from
    /// this form. Once updated it cannot be compared, and a replay gets it as it is now.
    fn replay(&self, first: Customer, request_id: &str) -> Result<Customer> {
        let mut tags = self.tags.clone();
        tags.sort_unstable();
        tags.dedup();
        let row = &first.row;
        let same = row.version != 1
            || (self.name == row.name
                && self.gender == row.gender
                && self.birth_date == row.birth_date
                && self.address == row.address
                && self.phone == row.phone
                && self.email == row.email
                && tags == first.tags);
        if same {
            Ok(first)
        } else {
            Err(Error::RequestIdReused {
                resource: "customer",
                request_id: request_id.to_owned(),
            })
        }
    }
}

/// Creates a customer; with a `request_id` already used, returns the first result (or
/// REQUEST_ID_REUSED for a different customer, see [`CustomerInsertForm::replay`]).
pub async fn create(
    db: &Db,
    form: &CustomerInsertForm,
    now: NaiveDateTime,
    caller: &Caller,
) -> Result<Customer> {
    let result = retry_conflicts(|| async {
        with_conn!(db, write, |conn| {
            crate::db::tx::transaction(conn, async |conn| {
                if let Some(rid) = &form.request_id {
                    if let Some(id) = id_by_request_id(conn, rid).await? {
                        return form.replay(load_customer(conn, id, true).await?, rid);
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
                replace_tags(conn, id, &form.tags).await?;
                audit::record(conn, caller, now, &[Change::new("CreateCustomer", id, id)]).await?;
                load_customer(conn, id, false).await
            })
            .await
        })
    })
    .await;
    match (result, &form.request_id) {
        // A concurrent request with the same key won the race: answer with its row.
        (Err(e), Some(rid)) if e.is_unique_violation() => with_conn!(db, |conn| {
            match id_by_request_id(conn, rid).await? {
                Some(id) => form.replay(load_customer(conn, id, true).await?, rid),
                None => Err(e),
            }
        }),
        (result, _) => result,
    }
}

/// Fails with [`Error::Merged`] (the lowest such id) when any of `ids` was merged into
/// another customer: a scope naming a merged customer is refused, not read as empty.
/// One statement for the whole list; ids that never existed pass.
pub async fn refuse_merged(db: &Db, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    // One id (a one-customer report) as `id = ?`: a statement the connection keeps
    // prepared, where diesel prepares and closes an `IN` list on every call.
    let (one, many) = match ids {
        [id] => (Some(*id), None),
        _ => (None, Some(ids.to_vec())),
    };
    let query = customers::table
        .filter(query::when(one.map(|id| customers::id.eq(id))))
        .filter(query::when(many.map(|ids| customers::id.eq_any(ids))))
        .filter(customers::merged_into.is_not_null())
        .select((customers::id, customers::merged_into))
        .order(customers::id);
    let merged: Option<(i64, Option<i64>)> = with_conn!(db, |conn| {
        Ok::<_, Error>(conn.any().first(query).await?)
    })?;
    match merged {
        Some((id, Some(merged_into))) => Err(Error::Merged { id, merged_into }),
        _ => Ok(()),
    }
}

/// Returns a customer that exists and is not deleted.
pub async fn get(db: &Db, id: i64) -> Result<Customer> {
    with_conn!(db, |conn| load_customer(conn, id, false).await)
}

/// [`get`] on the caller's connection (with more reads on it).
pub async fn get_on<C: Conn>(conn: &mut C, id: i64) -> Result<Customer> {
    load_customer(conn, id, false).await
}

/// Returns a customer whatever its state (deleted or merged), e.g. a merge's survivor
/// when the merge is replayed.
pub async fn get_any(db: &Db, id: i64) -> Result<Customer> {
    with_conn!(db, |conn| load_customer(conn, id, true).await)
}

/// The live customers among `ids`, with their tags, ascending by id.
pub async fn live_by_ids(db: &Db, ids: &[i64]) -> Result<Vec<Customer>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let chunk = chunk.to_vec();
        let rows: Vec<CustomerRow> = with_conn!(db, |conn| Ok::<_, Error>(
            customers::table
                .filter(customers::id.eq_any(&chunk))
                .filter(customers::delete_time.is_null())
                .select(CustomerRow::as_select())
                .order(customers::id.asc())
                .load(conn)
                .await?
        ))?;
        out.extend(with_tags(db, rows).await?);
    }
    out.sort_by_key(|c| c.row.id);
    Ok(out)
}

/// `rows` with their tags, in the same order.
async fn with_tags(db: &Db, rows: Vec<CustomerRow>) -> Result<Vec<Customer>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let tag_rows: Vec<(i64, String)> = with_conn!(db, |conn| Ok::<_, Error>(
        customer_tags::table
            .filter(customer_tags::customer_id.eq_any(&ids))
            .select((customer_tags::customer_id, customer_tags::tag))
            .order((customer_tags::customer_id, customer_tags::tag))
            .load(conn)
            .await?
    ))?;
    Ok(attach_tags(rows, tag_rows))
}

/// `rows` with their `(customer_id, tag)` rows attached, in the same order.
fn attach_tags(rows: Vec<CustomerRow>, tag_rows: Vec<(i64, String)>) -> Vec<Customer> {
    let mut tags_by_id: std::collections::HashMap<i64, Vec<String>> =
        std::collections::HashMap::new();
    for (cid, tag) in tag_rows {
        tags_by_id.entry(cid).or_default().push(tag);
    }
    rows.into_iter()
        .map(|row| {
            let tags = tags_by_id.remove(&row.id).unwrap_or_default();
            Customer { row, tags }
        })
        .collect()
}

/// Fails with NOT_FOUND unless the customer exists and is not deleted.
pub async fn ensure_exists(db: &Db, id: i64) -> Result<()> {
    with_conn!(db, |conn| query::ensure_customer(conn, id).await)
}

/// Why customer `id` is not live: [`Error::Merged`] naming the survivor when it was
/// merged, NOT_FOUND otherwise (or the error reading that).
pub async fn why_gone(db: &Db, id: i64) -> Result<Error> {
    with_conn!(db, |conn| query::customer_gone(conn, id).await)
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
    retry_conflicts(|| async { with_conn!(db, write, |conn| {
        crate::db::tx::transaction(conn, async |conn| {
                let current = load_customer(conn, id, false).await?;
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
                    return Err(match expected_version {
                    // The caller named a version: the change it meant is gone.
                    Some(_) => Error::Aborted(format!(
                        "customer {id} was changed concurrently; read it again"
                    )),
                    // No version named: another write came between the read and this
                    // write; run again on the new version.
                    None => crate::db::tx::conflict(format!(
                        "customer {id} was changed concurrently"
                    )),
                });
                }
                if let Some(tags) = &changes.tags {
                    replace_tags(conn, id, tags).await?;
                }
                audit::record(conn, caller, now, &[Change::new("UpdateCustomer", id, id)])
                    .await?;
                load_customer(conn, id, false).await
        })
        .await
    }) }).await
}

/// Deletes a customer. Without `purge` it is marked deleted (its history stays for
/// audit); with `purge` the customer and every row carrying its id are erased in one
/// transaction, which is also allowed on an already deleted customer, together with the
/// rows of the customers merged into it. A merged customer answers [`Error::Merged`].
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
            crate::db::tx::transaction(conn, async |conn| {
                // Lock the row, as a merge does, so a delete and a merge of one customer
                // run one after the other.
                let lock = super::dialect::for_update(
                    customers::table
                        .filter(customers::id.eq(id))
                        .select(customers::id),
                );
                let _: Vec<i64> = conn.any().load(lock).await?;
                let current = load_customer(conn, id, purge).await?;
                // A merged customer's history belongs to the survivor now: purging the
                // merged id would erase nothing of it, so it answers like any other call.
                if let Some(into) = merged_into(conn, id).await? {
                    return Err(Error::Merged {
                        id,
                        merged_into: into,
                    });
                }
                if let Some(expected) = expected_version {
                    if expected != current.row.version {
                        return Err(Error::Aborted(format!(
                            "customer {id} was changed concurrently: etag {expected} is stale"
                        )));
                    }
                }
                if purge {
                    // Tombstones are followed by their time (see `feed`).
                    let stamp = super::feed::stamp();
                    let deltas = super::rollups::customer_deltas(conn, id).await?;
                    super::content_feed::record_customer_deletions(conn, id, stamp).await?;
                    diesel::delete(
                        communications::table.filter(communications::customer_id.eq(id)),
                    )
                    .execute(conn)
                    .await?;
                    super::rollups::remove_customer(conn, id, &deltas).await?;
                    diesel::delete(transactions::table.filter(transactions::customer_id.eq(id)))
                        .execute(conn)
                        .await?;
                    diesel::delete(
                        service_tickets::table.filter(service_tickets::customer_id.eq(id)),
                    )
                    .execute(conn)
                    .await?;
                    diesel::delete(
                        satisfaction_surveys::table
                            .filter(satisfaction_surveys::customer_id.eq(id)),
                    )
                    .execute(conn)
                    .await?;
                    diesel::delete(customer_tags::table.filter(customer_tags::customer_id.eq(id)))
                        .execute(conn)
                        .await?;
                    diesel::delete(customers::table.filter(customers::id.eq(id)))
                        .execute(conn)
                        .await?;
                    // The customers merged into this one were the same person: their
                    // rows (name, phone, email) go too. Their history is this one's.
                    diesel::delete(customers::table.filter(customers::merged_into.eq(id)))
                        .execute(conn)
                        .await?;
                    // Stamped again after the deletes, so only the rest must fit the
                    // commit bound however many rows the customer had.
                    let fresh = super::feed::stamp();
                    super::content_feed::restamp_deletions(conn, stamp, fresh).await?;
                    super::feed::check_commit_bound(fresh)?;
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
        Ok(attach_tags(rows, tag_rows))
    })
}

/// Customers per batch of [`normalize_stored_phones`].
const PHONE_BATCH: i64 = 1_000;

/// A stored customer's searchable fields, for [`normalize_stored_phones`].
#[derive(Debug, diesel::QueryableByName)]
struct PhoneRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    phone: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    email: String,
}

/// What [`normalize_stored_phones`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhoneMigration {
    /// Whether it ran (false: done before for this region).
    pub ran: bool,
    /// Phones rewritten to E.164.
    pub converted: u64,
    /// Phones left as stored because they do not parse as a valid number.
    pub unparsed: u64,
}

/// Rewrites every stored customer phone to E.164 under `region`'s rules (see
/// `model::phone`), with its `search_text`, once per database and region: a marker in
/// `rollup_state` (`phones-e164:<region>`) says it is done. SQL cannot run
/// libphonenumber, so this reads the customers in id batches and updates the rows whose
/// phone changes, each batch its own transaction and each row only if its phone is
/// still the one read (a concurrent update wins). Idempotent, so an interrupted run
/// simply starts over. Phones that do not parse stay as stored and are counted.
pub async fn normalize_stored_phones(
    db: &Db,
    region: crate::model::phone::PhoneRegion,
) -> Result<PhoneMigration> {
    use query::{Bind, IdRow, Sql};
    let marker = format!("phones-e164:{region}");
    // raw SQL: one-off batch migration: marker read, id-keyset batches, updates, INSERT IGNORE / OR IGNORE marker
    let mut check = Sql::from("SELECT COUNT(*) AS id FROM rollup_state");
    check.and().push("name = ").bind(Bind::Text(marker.clone()));
    let done: Vec<IdRow> = query::load(db, &check).await?;
    if <[IdRow]>::first(&done).is_some_and(|r| r.id > 0) {
        return Ok(PhoneMigration::default());
    }
    let mut outcome = PhoneMigration {
        ran: true,
        ..PhoneMigration::default()
    };
    let mut after = 0i64;
    loop {
        let mut page = Sql::from("SELECT id, name, phone, email FROM customers");
        page.and()
            .push("id > ")
            .bind(Bind::I64(after))
            .and()
            .push("phone <> '' ORDER BY id LIMIT ")
            .bind(Bind::I64(PHONE_BATCH));
        let rows: Vec<PhoneRow> = query::load(db, &page).await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let full = rows.len() as i64 == PHONE_BATCH;
        let mut updates = Vec::new();
        for row in rows {
            match crate::model::phone::normalize(region, &row.phone) {
                Ok(e164) if e164 != row.phone => {
                    let mut sql = Sql::from("UPDATE customers SET phone = ");
                    sql.bind(Bind::Text(e164.clone()))
                        .push(", search_text = ")
                        .bind(Bind::Text(search_text(&row.name, &e164, &row.email)))
                        .push(", version = version + 1")
                        .and()
                        .push("id = ")
                        .bind(Bind::I64(row.id))
                        .and()
                        .push("phone = ")
                        .bind(Bind::Text(row.phone));
                    updates.push(sql);
                }
                Ok(_) => {}
                Err(_) => outcome.unparsed += 1,
            }
        }
        if !updates.is_empty() {
            outcome.converted += retry_conflicts(|| async {
                with_conn!(db, write, |conn| {
                    crate::db::tx::transaction(conn, async |conn| {
                        let mut n = 0u64;
                        for sql in &updates {
                            n += conn.execute_sql(sql).await? as u64;
                        }
                        Ok::<_, Error>(n)
                    })
                    .await
                })
            })
            .await?;
        }
        if !full {
            break;
        }
    }
    // Another server may have finished the same work at the same time: its marker stands.
    let mut claim = Sql::from(&*format!(
        "{}rollup_state (name, built_time) VALUES ",
        db.backend().insert_ignore()
    ));
    claim.list([Bind::Text(marker), Bind::Time(crate::model::time::now())]);
    // On a cluster, two nodes inserting the same marker conflict in certification.
    retry_conflicts(|| async {
        with_conn!(db, write, |conn| Ok::<_, Error>(
            conn.execute_sql(&claim).await?
        ))
    })
    .await?;
    tracing::info!(
        %region,
        converted = outcome.converted,
        unparsed = outcome.unparsed,
        "stored customer phones normalized to E.164 (unparsed ones kept as stored)"
    );
    Ok(outcome)
}

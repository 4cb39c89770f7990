//! Duplicate customers and their merge: groups of live customers sharing a stored phone
//! or email, and `MergeCustomers`, which moves a customer's whole history to another.
//!
//! A merge is one transaction that first locks every customer it touches (ascending id,
//! `FOR UPDATE` on the MySQL family; SQLite has one writer). Every write path that
//! stores a row for a customer locks that customer's row the same way before its INSERT
//! (`query::lock_customer`, `query::lock_live_customers`), so a write racing a merge
//! either commits first (and its row is moved) or waits and then finds the customer
//! merged (and answers NOT_FOUND naming the survivor, having written nothing).
//!
//! Rollups stay exact: `customer_months` rows of the merged customers are folded into
//! the survivor's; the time tiers (`communication_slots`, `communication_hours`) count
//! per slot, channel and direction, summed over shards, and a moved communication stays
//! in its slot, so their sums do not change. Their shards are only a spread of writers
//! (compaction folds them into shard 0 and a delete may leave a shard row negative, as
//! it already may after compaction), so a later delete of a moved row, counted in the
//! survivor's shard, keeps every sum exact.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;

use super::audit::{self, Change};
use super::customers::{self, Customer};
use super::dialect::{columns, for_update, Conn};
use super::query::{Bind, Sql};
use super::schema::{customer_merges, customer_tags, customers as customers_table};
use super::{retry_conflicts, Db};
use crate::error::{Error, Result};
use crate::model::caller::Caller;
use crate::with_conn;

/// Most customers merged by one call.
pub const MAX_MERGED: usize = 100;
/// Most tags a customer carries (as `CreateCustomer` allows).
pub const MAX_TAGS: usize = 20;
/// Most members listed per duplicate group.
pub const MAX_GROUP_MEMBERS: usize = 100;

/// A validated merge request.
#[derive(Debug, Clone)]
pub struct MergeForm {
    /// The customer that remains.
    pub survivor: i64,
    /// The customers merged into it: distinct, ascending, without the survivor.
    pub merged: Vec<i64>,
    /// Idempotency key, scoped to the survivor.
    pub request_id: Option<String>,
}

impl MergeForm {
    /// The answer to this form when its `request_id` found the stored merge `first`:
    /// `first` when it merged the same customers, else [`Error::RequestIdReused`].
    fn replay(&self, first: MergeRow, request_id: &str) -> Result<MergeRow> {
        if first.merged() == self.merged {
            Ok(first)
        } else {
            Err(Error::RequestIdReused {
                resource: "merge",
                request_id: request_id.to_owned(),
            })
        }
    }
}

/// What a merge did.
#[derive(Debug, Clone)]
pub struct MergeOutcome {
    /// The survivor after the merge.
    pub customer: Customer,
    /// The customers merged, ascending.
    pub merged: Vec<i64>,
    /// Communications moved.
    pub communications: i64,
    /// Transactions moved.
    pub transactions: i64,
    /// Service tickets moved.
    pub service_tickets: i64,
    /// Tags the survivor gained.
    pub tags_added: i64,
    /// Tags not kept (the survivor reached [`MAX_TAGS`]).
    pub tags_dropped: i64,
    /// When the merge was committed.
    pub merge_time: NaiveDateTime,
}

/// A stored merge (`customer_merges`).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = customer_merges)]
pub struct MergeRow {
    /// The survivor.
    pub customer_id: i64,
    /// The merged ids, comma-separated, ascending.
    pub merged_ids: String,
    /// Communications moved.
    pub communications_moved: i64,
    /// Transactions moved.
    pub transactions_moved: i64,
    /// Service tickets moved.
    pub service_tickets_moved: i64,
    /// Tags the survivor gained.
    pub tags_added: i64,
    /// Tags not kept.
    pub tags_dropped: i64,
    /// When.
    pub merge_time: NaiveDateTime,
}

impl MergeRow {
    /// The merged ids.
    pub fn merged(&self) -> Vec<i64> {
        self.merged_ids
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect()
    }
}

/// The state of a customer row a merge locks.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = customers_table)]
struct CustomerState {
    id: i64,
    merged_into: Option<i64>,
    delete_time: Option<NaiveDateTime>,
}

/// One tag of one customer.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = customer_tags)]
struct TagRow {
    customer_id: i64,
    tag: String,
}

/// A text value.
#[derive(Debug, QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Text)]
    value: String,
}

/// The per-customer tables whose rows move, each with its idempotency-key columns (a
/// unique `(customer_id, key)` each).
const MOVED_TABLES: [(&str, &[&str]); 4] = [
    ("communications", &["request_id"]),
    ("transactions", &["request_id"]),
    ("service_tickets", &["request_id"]),
    ("satisfaction_surveys", &["request_id", "answer_request_id"]),
];

/// Merges `form.merged` into `form.survivor`; see the module header. With a
/// `request_id` used before for this survivor, returns that merge's outcome and writes
/// nothing (REQUEST_ID_REUSED if that merge named other customers).
pub async fn merge(db: &Db, form: &MergeForm, caller: &Caller) -> Result<MergeOutcome> {
    let result = retry_conflicts(|| async {
        with_conn!(db, write, |conn| {
            // READ COMMITTED: see `merge_in`.
            crate::db::tx::transaction_read_committed(conn, async |conn| {
                let merged = merge_in(conn, form, super::feed::stamp(), caller).await?;
                super::feed::check_commit_bound(merged.merge_time)?;
                Ok::<_, Error>(merged)
            })
            .await
        })
    })
    .await;
    let row = match (result, &form.request_id) {
        (Ok(row), _) => row,
        // A concurrent merge with the same key committed first.
        (Err(e), Some(rid)) if e.is_unique_violation() => {
            let first = with_conn!(db, |conn| by_request_id(conn, form.survivor, rid).await)?;
            form.replay(first.ok_or(e)?, rid)?
        }
        (Err(e), _) => return Err(e),
    };
    outcome(db, row).await
}

/// The outcome of a stored merge, with the survivor as it is now.
async fn outcome(db: &Db, row: MergeRow) -> Result<MergeOutcome> {
    let customer = customers::get_any(db, row.customer_id).await?;
    Ok(MergeOutcome {
        customer,
        merged: row.merged(),
        communications: row.communications_moved,
        transactions: row.transactions_moved,
        service_tickets: row.service_tickets_moved,
        tags_added: row.tags_added,
        tags_dropped: row.tags_dropped,
        merge_time: row.merge_time,
    })
}

/// The merge stored under this survivor and key, if any.
async fn by_request_id<C: Conn>(
    conn: &mut C,
    survivor: i64,
    request_id: &str,
) -> Result<Option<MergeRow>> {
    let query = customer_merges::table
        .filter(customer_merges::customer_id.eq(survivor))
        .filter(customer_merges::request_id.eq(request_id))
        .select(columns::<MergeRow>());
    Ok(conn.any().first(query).await?)
}

/// `(?, ?, ...)` of ids.
fn id_list(sql: &mut Sql, ids: &[i64]) {
    sql.list(ids.iter().map(|&id| Bind::I64(id)));
}

/// The merge's work, in the caller's transaction; the stored merge row.
///
/// It runs at READ COMMITTED ([`crate::db::tx::transaction_read_committed`]): it first
/// locks every customer concerned by primary key, and every writer that stores, moves or
/// deletes rows of a customer locks that customer's row first (`query::lock_customer`,
/// a merge, a purge; a communication's delete locks the row it deletes), so no row of
/// the merged customers can appear or change while the merge reads and moves them, and
/// each statement sees the latest committed ones. Under REPEATABLE READ the moves by
/// `customer_id IN (..)` took next-key locks on secondary-index ranges and the gap after
/// them (other customers' rows), so concurrent merges of disjoint customers, and writes
/// to neighbouring fresh customers, deadlocked; see BENCHMARKS.md.
async fn merge_in<C: Conn>(
    conn: &mut C,
    form: &MergeForm,
    now: NaiveDateTime,
    caller: &Caller,
) -> Result<MergeRow> {
    let survivor = form.survivor;
    let merged = &form.merged;
    // 1. Lock every customer concerned, ascending (the order of every locking writer).
    let mut all: Vec<i64> = merged.clone();
    all.push(survivor);
    all.sort_unstable();
    let locking = for_update(
        customers_table::table
            .filter(customers_table::id.eq_any(&all))
            .order(customers_table::id)
            .select(columns::<CustomerState>()),
    );
    let states: Vec<CustomerState> = conn.any().load(locking).await?;
    // 2. A retry of a merge that committed (checked under the locks, so a concurrent
    // twin has committed or not started).
    if let Some(rid) = &form.request_id {
        if let Some(row) = by_request_id(conn, survivor, rid).await? {
            return form.replay(row, rid);
        }
    }
    // 3. Every customer exists and is live; the survivor's answer comes first.
    let by_id: HashMap<i64, &CustomerState> = states.iter().map(|s| (s.id, s)).collect();
    for id in std::iter::once(survivor).chain(merged.iter().copied()) {
        match by_id.get(&id) {
            None => {
                return Err(Error::NotFound {
                    resource: "customer",
                    id,
                })
            }
            Some(CustomerState {
                merged_into: Some(into),
                ..
            }) => {
                return Err(Error::Merged {
                    id,
                    merged_into: *into,
                })
            }
            Some(CustomerState {
                delete_time: Some(_),
                ..
            }) => {
                return Err(Error::NotFound {
                    resource: "customer",
                    id,
                })
            }
            Some(_) => {}
        }
    }
    // 4. Move the rows. An idempotency key a merged customer shares with the survivor
    // (or with another merged customer) cannot follow its row: the row moves without
    // it. Other keys move with their rows, so a client that retries with the survivor's
    // id after NOT_FOUND gets its first row back.
    let mut moved = [0i64; MOVED_TABLES.len()];
    for ((table, keys), count) in MOVED_TABLES.iter().zip(moved.iter_mut()) {
        for key in *keys {
            // raw SQL: table named at run time (each moved table in one loop)
            let mut clash = Sql::from(&*format!("SELECT {key} AS value FROM {table}"));
            clash
                .and()
                .push("customer_id IN ")
                .list(all.iter().map(|&id| Bind::I64(id)))
                .and()
                .push(&format!(
                    "{key} IS NOT NULL GROUP BY {key} HAVING COUNT(*) > 1"
                ));
            let clashing: Vec<TextRow> = conn.load_sql(&clash).await?;
            for values in clashing.chunks(500) {
                let mut clear = Sql::from(&*format!("UPDATE {table} SET {key} = NULL"));
                clear.and().push("customer_id IN ");
                id_list(&mut clear, merged);
                clear
                    .and()
                    .push(&format!("{key} IN "))
                    .list(values.iter().map(|k| Bind::Text(k.value.clone())));
                conn.execute_sql(&clear).await?;
            }
        }
        let mut update = Sql::from(&*format!("UPDATE {table} SET customer_id = "));
        update
            .bind(Bind::I64(survivor))
            .and()
            .push("customer_id IN ");
        id_list(&mut update, merged);
        *count = conn.execute_sql(&update).await? as i64;
    }
    // 5. Tags: the survivor's own first, then the merged customers' in ascending order,
    // up to the limit.
    let tags = customer_tags::table
        .filter(customer_tags::customer_id.eq_any(&all))
        .select(columns::<TagRow>());
    let tag_rows: Vec<TagRow> = conn.any().load(tags).await?;
    let (tags_added, tags_dropped) = merge_tags(survivor, tag_rows);
    let drop_tags =
        diesel::delete(customer_tags::table.filter(customer_tags::customer_id.eq_any(merged)));
    conn.any().execute(drop_tags).await?;
    if !tags_added.is_empty() {
        let rows: Vec<_> = tags_added
            .iter()
            .map(|tag| {
                (
                    customer_tags::customer_id.eq(survivor),
                    customer_tags::tag.eq(tag.clone()),
                )
            })
            .collect();
        conn.any().insert_all(customer_tags::table, rows).await?;
    }
    // 6. Rollups: the merged customers' months become the survivor's.
    super::rollups::merge_customer_months(conn, survivor, merged).await?;
    // 7. Mark the merged customers merged (and earlier merges into them now point at
    // the survivor, so every merged id names a live customer); the survivor changed.
    let mark = diesel::update(customers_table::table)
        .filter(customers_table::id.eq_any(merged))
        .set((
            customers_table::merged_into.eq(survivor),
            customers_table::delete_time.eq(now),
            customers_table::update_time.eq(now),
            customers_table::version.eq(customers_table::version + 1),
        ));
    conn.any().execute(mark).await?;
    // Found first, then updated by primary key: an UPDATE by `merged_into` (no index)
    // scanned, and locked, every customer.
    let earlier = customers_table::table
        .filter(customers_table::merged_into.eq_any(merged))
        .select(customers_table::id);
    let earlier: Vec<i64> = conn.any().load(earlier).await?;
    for chunk in earlier.chunks(500) {
        let repoint = diesel::update(customers_table::table)
            .filter(customers_table::id.eq_any(chunk))
            .set(customers_table::merged_into.eq(survivor));
        conn.any().execute(repoint).await?;
    }
    let touch = diesel::update(customers_table::table)
        .filter(customers_table::id.eq(survivor))
        .set((
            customers_table::version.eq(customers_table::version + 1),
            customers_table::update_time.eq(now),
        ));
    conn.any().execute(touch).await?;
    // 8. The merge itself, then the audit records. Its time is followed (see `feed`):
    // stamped here, after the moves, so only the rest must fit the commit bound.
    let now = super::feed::stamp();
    let row = MergeRow {
        customer_id: survivor,
        merged_ids: merged
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        communications_moved: moved[0],
        transactions_moved: moved[1],
        service_tickets_moved: moved[2],
        tags_added: tags_added.len() as i64,
        tags_dropped: tags_dropped as i64,
        merge_time: now,
    };
    let insert = diesel::insert_into(customer_merges::table).values((
        &row,
        customer_merges::request_id.eq(form.request_id.as_deref()),
    ));
    conn.any().execute(insert).await?;
    let mut changes = vec![
        Change::new("MergeCustomers", survivor, survivor).with_detail(format!(
            "merged {}; moved {} communications, {} transactions, {} service tickets",
            row.merged_ids, moved[0], moved[1], moved[2]
        )),
    ];
    changes.extend(merged.iter().map(|&id| {
        Change::new("MergeCustomers", id, survivor)
            .with_detail(format!("merged into customer {survivor}"))
    }));
    audit::record(conn, caller, now, &changes).await?;
    Ok(row)
}

/// The tags the survivor gains from `rows` (every tag of the merged customers and the
/// survivor), and how many it cannot take: its own tags stay, then the merged
/// customers' new tags in ascending order up to [`MAX_TAGS`].
fn merge_tags(survivor: i64, rows: Vec<TagRow>) -> (Vec<String>, usize) {
    let own: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.customer_id == survivor)
        .map(|r| r.tag.clone())
        .collect();
    let new: BTreeSet<String> = rows
        .into_iter()
        .filter(|r| r.customer_id != survivor && !own.contains(&r.tag))
        .map(|r| r.tag)
        .collect();
    let room = MAX_TAGS.saturating_sub(own.len());
    let dropped = new.len().saturating_sub(room);
    (new.into_iter().take(room).collect(), dropped)
}

/// Every merge stamped strictly after `after` (all of them for `None`), oldest first:
/// `(merge time, survivor, merged ids)` (what a content index re-owns); causal on a
/// Galera node.
pub async fn merges_after(
    db: &Db,
    galera: bool,
    after: Option<NaiveDateTime>,
) -> Result<Vec<(NaiveDateTime, i64, Vec<i64>)>> {
    // Boxed for its optional bound; the body is written once and typed per backend.
    let rows: Vec<MergeRow> = with_conn!(db, |conn| {
        let mut query = customer_merges::table
            .order((customer_merges::merge_time, customer_merges::id))
            .select(columns::<MergeRow>())
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(customer_merges::merge_time.gt(after));
        }
        let query = super::feed::Causal::new(query, galera);
        Ok::<_, Error>(diesel_async::RunQueryDsl::load(query, conn).await?)
    })?;
    Ok(rows
        .into_iter()
        .map(|r| (r.merge_time, r.customer_id, r.merged()))
        .collect())
}

/// What a duplicate group's members share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DuplicateKey {
    /// The stored phone.
    Phone,
    /// The stored email.
    Email,
    /// The normalized name ([`crate::model::names::name_key`]).
    Name,
}

impl DuplicateKey {
    fn column(self) -> &'static str {
        match self {
            DuplicateKey::Phone => "phone",
            DuplicateKey::Email => "email",
            DuplicateKey::Name => "name",
        }
    }

    /// The position of a group kind in the listing order (phones, then emails).
    pub fn rank(self) -> i32 {
        match self {
            DuplicateKey::Phone => 1,
            DuplicateKey::Email => 2,
            DuplicateKey::Name => 3,
        }
    }

    /// The kind of a rank, for page tokens.
    pub fn from_rank(rank: i32) -> Option<Self> {
        match rank {
            1 => Some(DuplicateKey::Phone),
            2 => Some(DuplicateKey::Email),
            3 => Some(DuplicateKey::Name),
            _ => None,
        }
    }
}

/// Live customers sharing one phone or email.
#[derive(Debug, Clone)]
pub struct DuplicateGroup {
    /// The key the group was formed by.
    pub key: DuplicateKey,
    /// The shared value.
    pub value: String,
    /// Every key all members share, `key` first.
    pub matched: Vec<DuplicateKey>,
    /// How many live customers share the key.
    pub count: i64,
    /// The first [`MAX_GROUP_MEMBERS`] members, ascending id.
    pub customers: Vec<Customer>,
}

/// A value and a count.
#[derive(Debug, Queryable, QueryableByName)]
struct ValueCount {
    #[diesel(sql_type = Text)]
    value: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A member of a group.
#[derive(Debug, Queryable, QueryableByName)]
struct Member {
    #[diesel(sql_type = Text)]
    value: String,
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// The shared values of `key` after `after` (ascending) with at least two live
/// customers, at most `limit`, with their counts. An ordered scan of the key's index
/// (see the `customer_merges` migration).
async fn groups_after(
    db: &Db,
    key: DuplicateKey,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ValueCount>> {
    let column = key.column();
    // raw SQL: column named at run time (the duplicate key)
    let mut sql = Sql::from(&*format!(
        "SELECT {column} AS value, COUNT(*) AS n FROM customers"
    ));
    sql.and()
        .push("delete_time IS NULL")
        .and()
        .push(&format!("{column} <> ''"));
    if let Some(after) = after {
        sql.and()
            .push(&format!("{column} > "))
            .bind(Bind::Text(after.to_owned()));
    }
    sql.push(&format!(
        " GROUP BY {column} HAVING COUNT(*) > 1 ORDER BY {column} LIMIT "
    ))
    .bind(Bind::I64(limit));
    super::query::load(db, &sql).await
}

/// The live members (ids, ascending) of the groups `values` of `key`; at most
/// [`MAX_GROUP_MEMBERS`] per group.
///
/// Groups are formed by the database's comparison of the column (MySQL's collation may
/// find `josé@x.cn` and `jose@x.cn` equal, SQLite compares bytes), so a member is
/// filed under its group's value as the database compared it: small groups are read
/// together and filed by their stored value, and any group that comes up short (its
/// members stored differently from its value) is read on its own.
async fn members(
    db: &Db,
    key: DuplicateKey,
    groups: &[ValueCount],
) -> Result<BTreeMap<String, Vec<i64>>> {
    let column = key.column();
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let select = |values: &[&ValueCount], limit: Option<usize>| {
        // raw SQL: column named at run time (the duplicate key)
        let mut sql = Sql::from(&*format!("SELECT {column} AS value, id FROM customers"));
        sql.and().push("delete_time IS NULL").and();
        sql.push(&format!("{column} IN "))
            .list(values.iter().map(|v| Bind::Text(v.value.clone())));
        sql.push(&format!(" ORDER BY {column}, id"));
        if let Some(limit) = limit {
            sql.push(" LIMIT ").bind(Bind::I64(limit as i64));
        }
        sql
    };
    let wanted = |g: &ValueCount| (g.n as usize).min(MAX_GROUP_MEMBERS);
    let small: Vec<&ValueCount> = groups
        .iter()
        .filter(|g| g.n as usize <= MAX_GROUP_MEMBERS)
        .collect();
    for chunk in small.chunks(200) {
        let rows: Vec<Member> = super::query::load(db, &select(chunk, None)).await?;
        for m in rows {
            out.entry(m.value).or_default().push(m.id);
        }
    }
    for g in groups {
        if out.get(&g.value).map_or(0, Vec::len) == wanted(g) {
            continue;
        }
        let rows: Vec<Member> =
            super::query::load(db, &select(&[g], Some(MAX_GROUP_MEMBERS))).await?;
        out.insert(g.value.clone(), rows.into_iter().map(|m| m.id).collect());
    }
    Ok(out)
}

/// One page of duplicate groups after the position `after` (`(key, value)` of the last
/// group of the previous page): phone groups, then email groups, each ascending. One
/// group more than `limit` tells whether another page follows: returns the groups and
/// the position to continue from (`None` on the last page).
pub async fn duplicates(
    db: &Db,
    after: Option<(DuplicateKey, String)>,
    limit: i64,
    with_names: bool,
) -> Result<(Vec<DuplicateGroup>, Option<(DuplicateKey, String)>)> {
    let mut found: Vec<(DuplicateKey, ValueCount)> = Vec::new();
    let mut name_members: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut kinds = vec![DuplicateKey::Phone, DuplicateKey::Email];
    if with_names {
        kinds.push(DuplicateKey::Name);
    }
    for key in kinds {
        let from = match &after {
            Some((k, _)) if *k > key => continue,
            Some((k, v)) if *k == key => Some(v.as_str()),
            _ => None,
        };
        let room = limit + 1 - found.len() as i64;
        if room <= 0 {
            break;
        }
        if key == DuplicateKey::Name {
            for (g, ids) in name_groups_after(db, from, room).await? {
                name_members.insert(g.value.clone(), ids);
                found.push((key, g));
            }
            continue;
        }
        found.extend(
            groups_after(db, key, from, room)
                .await?
                .into_iter()
                .map(|g| (key, g)),
        );
    }
    let next = if found.len() as i64 > limit {
        found.truncate(limit as usize);
        found.last().map(|(k, g)| (*k, g.value.clone()))
    } else {
        None
    };
    // Members of every group, then the customers themselves in one read.
    let mut groups = Vec::with_capacity(found.len());
    let mut member_ids: Vec<i64> = Vec::new();
    for key in [DuplicateKey::Phone, DuplicateKey::Email, DuplicateKey::Name] {
        let of_key: Vec<ValueCount> = found
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, g)| ValueCount {
                value: g.value.clone(),
                n: g.n,
            })
            .collect();
        if of_key.is_empty() {
            continue;
        }
        let mut ids = if key == DuplicateKey::Name {
            std::mem::take(&mut name_members)
        } else {
            members(db, key, &of_key).await?
        };
        for g in of_key {
            let members = ids.remove(&g.value).unwrap_or_default();
            member_ids.extend(&members);
            groups.push((key, g, members));
        }
    }
    let by_id: HashMap<i64, Customer> = customers::live_by_ids(db, &member_ids)
        .await?
        .into_iter()
        .map(|c| (c.row.id, c))
        .collect();
    // An email group with exactly the members of a phone group is listed once, as that
    // phone group: it is the same set of customers.
    let email_sets: Vec<(String, i64)> = groups
        .iter()
        .filter(|(k, ..)| *k == DuplicateKey::Email)
        .filter_map(|(_, g, ids)| {
            let phone = shared(ids, &by_id, |c| &c.row.phone)?;
            Some((phone, g.n))
        })
        .collect();
    let phone_counts = phone_counts(db, email_sets.iter().map(|(p, _)| p.clone())).await?;
    let mut out = Vec::with_capacity(groups.len());
    for (key, g, ids) in groups {
        // A customer may be in a phone group and in an email group.
        let members: Vec<Customer> = ids.iter().filter_map(|id| by_id.get(id).cloned()).collect();
        let complete = members.len() as i64 == g.n;
        let mut matched = vec![key];
        if complete {
            let phone = shared_of(&members, |c| &c.row.phone);
            let email = shared_of(&members, |c| &c.row.email);
            if key == DuplicateKey::Email {
                if let Some(p) = &phone {
                    if phone_counts.get(p) == Some(&g.n) {
                        // Listed as the phone group `p`.
                        continue;
                    }
                }
            }
            if key != DuplicateKey::Phone && phone.is_some() {
                matched.push(DuplicateKey::Phone);
            }
            if key != DuplicateKey::Email && email.is_some() {
                matched.push(DuplicateKey::Email);
            }
            if key != DuplicateKey::Name
                && crate::model::names::all_equal(members.iter().map(|c| c.row.name.as_str()))
            {
                matched.push(DuplicateKey::Name);
            }
            matched.sort_by_key(|k| (*k != key, k.rank()));
        }
        out.push(DuplicateGroup {
            key,
            value: g.value,
            matched,
            count: g.n,
            customers: members,
        });
    }
    Ok((out, next))
}

/// Live customers read per statement while grouping names.
const NAME_SCAN_ROWS: i64 = 10_000;

/// The normalized names after `after` (ascending) shared by at least two live customers,
/// at most `limit`, each with its count and first [`MAX_GROUP_MEMBERS`] ids. Names are
/// compared after NFKC and case folding, which SQL cannot do: this reads the id and name
/// of every live customer (in id pages), so it costs a scan of the customers per page.
async fn name_groups_after(
    db: &Db,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(ValueCount, Vec<i64>)>> {
    let mut by_key: BTreeMap<String, (i64, Vec<i64>)> = BTreeMap::new();
    let mut last = 0i64;
    loop {
        let page = customers_table::table
            .filter(customers_table::delete_time.is_null())
            .filter(customers_table::id.gt(last))
            .order(customers_table::id)
            .limit(NAME_SCAN_ROWS)
            .select((customers_table::name, customers_table::id));
        let rows: Vec<Member> =
            with_conn!(db, |conn| Ok::<_, Error>(conn.any().load(page).await?))?;
        let Some(end) = rows.last().map(|m| m.id) else {
            break;
        };
        let full = rows.len() as i64 == NAME_SCAN_ROWS;
        for m in rows {
            let key = crate::model::names::name_key(&m.value);
            if key.is_empty() || after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            let entry = by_key.entry(key).or_default();
            entry.0 += 1;
            if entry.1.len() < MAX_GROUP_MEMBERS {
                entry.1.push(m.id);
            }
        }
        last = end;
        if !full {
            break;
        }
    }
    Ok(by_key
        .into_iter()
        .filter(|(_, (n, _))| *n > 1)
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|(value, (n, ids))| (ValueCount { value, n }, ids))
        .collect())
}

/// The non-empty value every customer of `ids` has, if they all have the same one.
fn shared(
    ids: &[i64],
    by_id: &HashMap<i64, Customer>,
    field: impl Fn(&Customer) -> &String,
) -> Option<String> {
    let members: Vec<&Customer> = ids.iter().filter_map(|id| by_id.get(id)).collect();
    if members.len() != ids.len() {
        return None;
    }
    let first = field(members.first()?);
    (!first.is_empty() && members.iter().all(|c| field(c) == first)).then(|| first.clone())
}

/// [`shared`] over loaded customers.
fn shared_of(members: &[Customer], field: impl Fn(&Customer) -> &String) -> Option<String> {
    let first = field(members.first()?);
    (!first.is_empty() && members.iter().all(|c| field(c) == first)).then(|| first.clone())
}

/// How many live customers have each of `phones`.
async fn phone_counts(
    db: &Db,
    phones: impl Iterator<Item = String>,
) -> Result<HashMap<String, i64>> {
    let phones: BTreeSet<String> = phones.collect();
    let mut out = HashMap::new();
    let phones: Vec<String> = phones.into_iter().collect();
    for chunk in phones.chunks(500) {
        let counts = customers_table::table
            .filter(customers_table::delete_time.is_null())
            .filter(customers_table::phone.eq_any(chunk.to_vec()))
            .group_by(customers_table::phone)
            .select((customers_table::phone, diesel::dsl::count_star()));
        let rows: Vec<ValueCount> =
            with_conn!(db, |conn| Ok::<_, Error>(conn.any().load(counts).await?))?;
        out.extend(rows.into_iter().map(|r| (r.value, r.n)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(rows: &[(i64, &str)]) -> Vec<TagRow> {
        rows.iter()
            .map(|(c, t)| TagRow {
                customer_id: *c,
                tag: (*t).to_owned(),
            })
            .collect()
    }

    #[test]
    fn the_survivor_keeps_its_tags_and_gains_new_ones_up_to_the_limit() {
        let (added, dropped) = merge_tags(1, tags(&[(1, "vip"), (2, "vip"), (2, "b"), (3, "a")]));
        assert_eq!((added, dropped), (vec!["a".to_owned(), "b".to_owned()], 0));
        let own: Vec<(i64, String)> = (0..19).map(|i| (1, format!("t{i:02}"))).collect();
        let mut rows: Vec<(i64, &str)> = own.iter().map(|(c, t)| (*c, t.as_str())).collect();
        rows.extend([(2, "zz"), (2, "aa"), (3, "mm"), (3, "t00")]);
        let (added, dropped) = merge_tags(1, tags(&rows));
        assert_eq!((added, dropped), (vec!["aa".to_owned()], 2));
    }

    #[test]
    fn stored_merged_ids_read_back() {
        let row = MergeRow {
            customer_id: 1,
            merged_ids: "2,30,400".into(),
            communications_moved: 0,
            transactions_moved: 0,
            service_tickets_moved: 0,
            tags_added: 3,
            tags_dropped: 2,
            merge_time: crate::model::time::march_2024(1),
        };
        assert_eq!(row.merged(), [2, 30, 400]);
    }
}

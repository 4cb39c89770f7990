//! The rollup tables (`communication_slots`, `customer_months`): kept exact inside the
//! transaction of every write path (log, import, delete, purge), and built once for the
//! rows a database already holds when a server first starts with them.
//!
//! A communication counts `+1` in its 15-minute slot (shard `customer_id mod 8`, so
//! concurrent writers of one slot update different rows) and in its customer's UTC month.
//! Each write adds its rows with one multi-row upsert per table; writers always touch
//! `customer_months` before `communication_slots`, each in primary-key order, so two
//! writers never wait on each other in a cycle.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::dsl::{count_star, sum};
use diesel::mysql::Mysql;
use diesel::prelude::*;
use diesel::query_builder::{InsertStatement, QueryFragment};
use diesel::sql_types::BigInt;
use diesel::sqlite::Sqlite;
use diesel_async::methods::ExecuteDsl;
use diesel_async::AsyncMysqlConnection;

use super::communications::CommunicationRow;
use super::dialect::{Backend, Conn};
use super::fns::TallyPart;
use super::query::{Bind, Sql};
use super::schema::{communications, customer_months, rollup_state};
use super::{fns, retry_conflicts, Db, SqliteConn};
use crate::analytics::rollup::{month_of, month_start, shard_of, Tier, HOURS, SLOTS};
use crate::analytics::sentiment::Tally;
use crate::error::{Error, Result};
use crate::with_conn;

/// The name of the rollup set in `rollup_state`.
const ROLLUP_SET: &str = "communications-v1";

/// Rows per upsert statement (five or four values each).
const UPSERT_ROWS: usize = 1_000;

/// Base-table rows aggregated per statement while building.
const BUILD_CHUNK_IDS: i64 = 500_000;

/// What one communication contributes: its slot key and its customer-month key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contribution {
    /// Owner.
    pub customer_id: i64,
    /// `Channel` value.
    pub channel: i32,
    /// `Direction` value.
    pub direction: i32,
    /// When it happened (UTC).
    pub occur_time: NaiveDateTime,
    /// Its sentiment score; `None` (not scored yet) counts as neutral.
    pub sentiment: Option<i16>,
}

impl From<&CommunicationRow> for Contribution {
    fn from(r: &CommunicationRow) -> Self {
        Contribution {
            customer_id: r.customer_id,
            channel: r.channel,
            direction: r.direction,
            occur_time: r.occur_time,
            sentiment: r.sentiment,
        }
    }
}

/// Summed contributions, keyed in primary-key order of each table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deltas {
    /// Per time tier (slots, then hours): `(unit, channel, direction, shard) -> tally`.
    units: [BTreeMap<(i64, i32, i32, i64), Tally>; 2],
    /// `(month, customer_id) -> (tally, latest time)`.
    months: BTreeMap<(i64, i64), (Tally, NaiveDateTime)>,
}

impl Deltas {
    /// The sums of `rows`, each counted `sign` (1 to add, -1 to remove).
    pub fn of(rows: impl IntoIterator<Item = Contribution>, sign: i64) -> Self {
        Self::tallied(
            rows.into_iter()
                .map(|r| (r, Tally::of_row(r.sentiment, sign))),
        )
    }

    /// What scoring stored rows that were not scored changes: their counts stay, their
    /// sentiment moves from neutral and 0 to their scores.
    pub fn scored(rows: impl IntoIterator<Item = Contribution>) -> Self {
        Self::tallied(
            rows.into_iter()
                .map(|r| (r, Tally::of_score(r.sentiment, 1))),
        )
    }

    fn tallied(rows: impl IntoIterator<Item = (Contribution, Tally)>) -> Self {
        let mut d = Deltas::default();
        for (r, tally) in rows {
            for (tier, units) in TIERS.iter().zip(d.units.iter_mut()) {
                let key = (
                    tier.unit_of(r.occur_time),
                    r.channel,
                    r.direction,
                    shard_of(r.customer_id),
                );
                units.entry(key).or_default().add(tally);
            }
            let month = d
                .months
                .entry((month_of(r.occur_time), r.customer_id))
                .or_insert((Tally::default(), r.occur_time));
            month.0.add(tally);
            month.1 = month.1.max(r.occur_time);
        }
        d
    }
}

/// The counter columns of every rollup table, which upserts add up.
const TALLY: [&str; 4] = ["n", "negative", "positive", "sentiment_sum"];

/// [`TALLY`] as a column list.
const TALLY_COLUMNS: &str = "n, negative, positive, sentiment_sum";

/// The time tiers, in the order writers touch them.
const TIERS: [Tier; 2] = [SLOTS, HOURS];

/// The upserts that add `deltas` (months first, then slots, then hours; primary-key
/// order).
fn add_sql(backend: Backend, deltas: &Deltas) -> Vec<Sql> {
    let mut out = Vec::new();
    let months: Vec<_> = deltas.months.iter().collect();
    for chunk in months.chunks(UPSERT_ROWS) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|&(&(month, customer), &(t, last))| {
                (
                    customer_months::month.eq(fns::lit_int(month_key(month))),
                    customer_months::customer_id.eq(fns::lit(customer)),
                    customer_months::n.eq(fns::lit(t.n)),
                    customer_months::last_time.eq(fns::time_lit(last)),
                    customer_months::negative.eq(fns::lit(t.negative)),
                    customer_months::positive.eq(fns::lit(t.positive)),
                    customer_months::sentiment_sum.eq(fns::lit(t.sum)),
                )
            })
            .collect();
        // Values written in (numbers and times the service computed), so that `add` can
        // send the statement with others in one round trip.
        let text = Sql::expr_text(backend, &month_upsert(fns::rows(rows)));
        out.push(Sql::from(&*text));
    }
    for (tier, units) in TIERS.iter().zip(&deltas.units) {
        let units: Vec<_> = units.iter().collect();
        for chunk in units.chunks(UPSERT_ROWS) {
            // raw SQL: time-tier counter upserts, two tables of one layout named at run time
            let mut sql = Sql::from(&*format!(
                "INSERT INTO {} ({}, channel, direction, shard, {TALLY_COLUMNS}) VALUES ",
                tier.table, tier.column
            ));
            for (i, ((unit, channel, direction, shard), t)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.list([
                    Bind::I64(*unit),
                    Bind::I32(*channel),
                    Bind::I32(*direction),
                    Bind::I64(*shard),
                    Bind::I64(t.n),
                    Bind::I64(t.negative),
                    Bind::I64(t.positive),
                    Bind::I64(t.sum),
                ]);
            }
            sql.push(&backend.upsert(&unit_key(*tier), &TALLY));
            out.push(sql);
        }
    }
    out
}

/// Every column of `customer_months`, in its order.
fn month_columns() -> (
    customer_months::month,
    customer_months::customer_id,
    customer_months::n,
    customer_months::last_time,
    customer_months::negative,
    customer_months::positive,
    customer_months::sentiment_sum,
) {
    (
        customer_months::month,
        customer_months::customer_id,
        customer_months::n,
        customer_months::last_time,
        customer_months::negative,
        customer_months::positive,
        customer_months::sentiment_sum,
    )
}

/// The primary key of `customer_months`.
fn month_key_columns() -> (customer_months::month, customer_months::customer_id) {
    (customer_months::month, customer_months::customer_id)
}

/// `column = column + <inserted value>`.
type AddUp<C> = diesel::dsl::Eq<C, diesel::dsl::Add<C, fns::Inserted<C>>>;

/// What an upsert into `customer_months` does to an existing row: counts add up, the
/// latest time is kept.
type MonthChanges = (
    AddUp<customer_months::n>,
    diesel::dsl::Eq<
        customer_months::last_time,
        fns::Greatest<customer_months::last_time, fns::Inserted<customer_months::last_time>>,
    >,
    AddUp<customer_months::negative>,
    AddUp<customer_months::positive>,
    AddUp<customer_months::sentiment_sum>,
);

/// See [`MonthChanges`].
fn month_changes() -> MonthChanges {
    (
        customer_months::n.eq(customer_months::n + fns::inserted(customer_months::n)),
        customer_months::last_time.eq(fns::greatest(
            customer_months::last_time,
            fns::inserted(customer_months::last_time),
        )),
        customer_months::negative
            .eq(customer_months::negative + fns::inserted(customer_months::negative)),
        customer_months::positive
            .eq(customer_months::positive + fns::inserted(customer_months::positive)),
        customer_months::sentiment_sum
            .eq(customer_months::sentiment_sum + fns::inserted(customer_months::sentiment_sum)),
    )
}

/// An upsert of `values` into `customer_months`.
type MonthUpsert<V> = fns::Upsert<
    InsertStatement<customer_months::table, V>,
    (customer_months::month, customer_months::customer_id),
    <MonthChanges as AsChangeset>::Changeset,
>;

/// `values` upserted into `customer_months` (see [`MonthChanges`]).
fn month_upsert<V: Insertable<customer_months::table>>(values: V) -> MonthUpsert<V::Values> {
    fns::upsert(
        diesel::insert_into(customer_months::table).values(values),
        month_key_columns(),
        month_changes(),
    )
}

/// The base-table rows with ids in `(lo, hi]` added to `customer_months`.
fn build_months(
    lo: i64,
    hi: i64,
) -> impl ExecuteDsl<AsyncMysqlConnection>
       + ExecuteDsl<SqliteConn>
       + QueryFragment<Mysql>
       + QueryFragment<Sqlite> {
    let month = fns::month_index(communications::occur_time);
    let rows = communications::table
        .filter(communications::id.gt(lo))
        .filter(communications::id.le(hi))
        .group_by((month, communications::customer_id))
        .select((
            month,
            communications::customer_id,
            count_star(),
            diesel::dsl::max(communications::occur_time).assume_not_null(),
            fns::sentiment_tally(TallyPart::Negative),
            fns::sentiment_tally(TallyPart::Positive),
            fns::sentiment_tally(TallyPart::Sum),
        ));
    let insert = diesel::insert_into(customer_months::table)
        .values(rows)
        .into_columns(month_columns());
    fns::upsert(insert, month_key_columns(), month_changes())
}

/// The primary key of a time tier's table.
fn unit_key(tier: Tier) -> String {
    format!("{}, channel, direction, shard", tier.column)
}

/// Rows up to which [`add`] sends its upserts as one multi-statement round trip: every
/// import batch's (at most three rows per communication of a 1,000-row batch, about
/// 40 bytes each). Past it (merges and rebuilds of whole histories) the statements are
/// bound, so none grows without bound.
const INLINE_ROWS: usize = 3_000;

/// Adds stored communications to the rollups, in the caller's transaction. A write of
/// up to [`INLINE_ROWS`] rollup rows (a log batch, an import batch, a delete) sends its
/// three upserts in one round trip, with the values (numbers and times the service
/// computed) written in: MariaDB then parses one text statement where a bound one is
/// prepared, run and closed (three round trips) each time. Larger ones bind them.
pub async fn add<C: Conn>(conn: &mut C, deltas: &Deltas) -> Result<()> {
    let statements = add_sql(C::BACKEND, deltas);
    let rows = deltas.months.len() + deltas.units.iter().map(BTreeMap::len).sum::<usize>();
    if rows <= INLINE_ROWS {
        let inlined: Option<Vec<String>> =
            statements.iter().map(|s| s.inline(C::BACKEND)).collect();
        if let Some(inlined) = inlined {
            // Nothing to change (a purge of a customer without communications): MySQL
            // refuses an empty batch ("Query was empty").
            let text = inlined
                .iter()
                .filter(|s| !s.trim().is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(";\n");
            if !text.is_empty() {
                // raw SQL: several statements in one round trip (diesel sends one bound statement at a time)
                conn.batch_execute(&text).await?;
            }
            return Ok(());
        }
    }
    for sql in statements {
        if sql.binds.is_empty() {
            // The customer-month upserts: values written in.
            conn.batch_execute(&sql.text).await?;
        } else {
            conn.execute_sql(&sql).await?;
        }
    }
    Ok(())
}

/// Removes communications that the caller's transaction has just deleted: their counts
/// go down, each touched customer-month gets its latest time again from the remaining
/// rows, and customer-months left empty are deleted.
pub async fn remove<C: Conn>(conn: &mut C, rows: &[Contribution]) -> Result<()> {
    let deltas = Deltas::of(rows.iter().copied(), -1);
    // The latest times first, then the counts. Reading the customer's remaining rows
    // takes locks up to the first index record past them, which can be another
    // customer's row that a concurrent log has just inserted; that log then goes on to
    // the slot and hour rows. Had this removal locked those rows already (the counts),
    // each would wait for the other (a deadlock MariaDB resolves by rolling one back).
    for &(month, customer_id) in deltas.months.keys() {
        let latest = communications::table
            .filter(communications::customer_id.eq(customer_id))
            .filter(communications::occur_time.ge(month_start(month)))
            .filter(communications::occur_time.lt(month_start(month + 1)))
            .select(diesel::dsl::max(communications::occur_time))
            .single_value();
        let update = diesel::update(
            customer_months::table
                .filter(customer_months::month.eq(month_key(month)))
                .filter(customer_months::customer_id.eq(customer_id)),
        )
        .set(customer_months::last_time.eq(fns::coalesce(latest, customer_months::last_time)));
        conn.any().execute(update).await?;
    }
    add(conn, &deltas).await?;
    for &(month, customer_id) in deltas.months.keys() {
        let delete = diesel::delete(
            customer_months::table
                .filter(customer_months::month.eq(month_key(month)))
                .filter(customer_months::customer_id.eq(customer_id))
                .filter(customer_months::n.le(0)),
        );
        conn.any().execute(delete).await?;
    }
    Ok(())
}

/// One customer's communications per unit of `secs` seconds, channel and direction.
#[diesel::dsl::auto_type]
fn unit_counts_query(customer_id: i64, secs: i64) -> _ {
    let unit: fns::TimeUnit<communications::occur_time> =
        fns::time_unit(communications::occur_time, secs);
    let negative: fns::SentimentTally = fns::sentiment_tally(TallyPart::Negative);
    let positive: fns::SentimentTally = fns::sentiment_tally(TallyPart::Positive);
    let sentiment_sum: fns::SentimentTally = fns::sentiment_tally(TallyPart::Sum);
    communications::table
        .filter(communications::customer_id.eq(customer_id))
        .group_by((unit, communications::channel, communications::direction))
        .select((
            unit,
            communications::channel,
            communications::direction,
            count_star(),
            negative,
            positive,
            sentiment_sum,
        ))
}

/// A month index as `customer_months.month` stores it (an INT: months since year 0 fit
/// it for any time chrono represents).
fn month_key(month: i64) -> i32 {
    i32::try_from(month).unwrap_or(if month < 0 { i32::MIN } else { i32::MAX })
}

/// What a purge of one customer takes out of the time tiers: its communications' counts,
/// negated. Read before the purge deletes them; [`remove_customer`] applies them after.
pub async fn customer_deltas<C: Conn>(conn: &mut C, customer_id: i64) -> Result<Deltas> {
    let shard = shard_of(customer_id);
    let mut deltas = Deltas::default();
    for (tier, units) in TIERS.iter().zip(deltas.units.iter_mut()) {
        let counts = unit_counts_query(customer_id, tier.secs);
        let rows: Vec<(i64, i32, i32, i64, i64, i64, i64)> = conn.any().load(counts).await?;
        *units = rows
            .into_iter()
            .map(
                |(unit, channel, direction, n, negative, positive, sentiment_sum)| {
                    let tally = Tally {
                        n,
                        negative,
                        positive,
                        sum: sentiment_sum,
                    };
                    ((unit, channel, direction, shard), tally.negated())
                },
            )
            .collect();
    }
    Ok(deltas)
}

/// Takes a purged customer out of the rollups: `deltas` from [`customer_deltas`], and its
/// customer-months. Called after the purge has deleted its rows, so the purge locks the
/// customer's index range before any slot or hour row: a concurrent log that has just
/// inserted the next index record then waits for nothing this purge holds (taken the
/// other way round, each would wait for the other).
pub async fn remove_customer<C: Conn>(
    conn: &mut C,
    customer_id: i64,
    deltas: &Deltas,
) -> Result<()> {
    add(conn, deltas).await?;
    let delete =
        diesel::delete(customer_months::table.filter(customer_months::customer_id.eq(customer_id)));
    conn.any().execute(delete).await?;
    Ok(())
}

/// The unit of `occur_time` in a time tier, as SQL text for the hand-built statements:
/// the typed [`fns::time_unit`], written out for `backend`.
fn unit_expr(backend: Backend, tier: Tier) -> String {
    Sql::expr_text(
        backend,
        &fns::time_unit(communications::occur_time, tier.secs),
    )
}

/// The negative count, positive count and score sum of the grouped base-table rows, as
/// SQL text for the hand-built statements.
fn tally_exprs(backend: Backend) -> String {
    [TallyPart::Negative, TallyPart::Positive, TallyPart::Sum]
        .map(|part| Sql::expr_text(backend, &fns::sentiment_tally(part)))
        .join(", ")
}

/// The statements that aggregate the base-table rows with ids in `(lo, hi]` into every
/// rollup (time tiers into shard 0, as compaction leaves them).
fn build_sql(backend: Backend, lo: i64, hi: i64) -> Vec<Sql> {
    let range = |sql: &mut Sql| {
        sql.push(" WHERE id > ")
            .bind(Bind::I64(lo))
            .push(" AND id <= ")
            .bind(Bind::I64(hi));
    };
    let mut out = Vec::new();
    for tier in TIERS {
        // raw SQL: INSERT ... SELECT grouped by its select aliases, with an upsert; tier table named at run time
        let mut units = Sql::from(&*format!(
            "INSERT INTO {} ({}, channel, direction, shard, {TALLY_COLUMNS}) SELECT {} AS u, \
             channel, direction, 0, COUNT(*), {} FROM communications",
            tier.table,
            tier.column,
            unit_expr(backend, tier),
            tally_exprs(backend),
        ));
        range(&mut units);
        units
            .push(" GROUP BY u, channel, direction")
            .push(&backend.upsert(&unit_key(tier), &TALLY));
        out.push(units);
    }
    out
}

/// Builds the rollups from the base table unless `rollup_state` says they are built:
/// once per database, at start, before serving (progress in the log). The whole build is
/// one transaction that first claims the state row, so a second server starting at the
/// same time waits for it and then finds the rollups built.
pub async fn ensure_built(db: &Db, now: NaiveDateTime) -> Result<()> {
    let check = rollup_state::table
        .filter(rollup_state::name.eq(ROLLUP_SET))
        .count();
    let built: i64 = with_conn!(db, |conn| Ok::<_, Error>(
        conn.any().get_result(check).await?
    ))?;
    if built > 0 {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let backend = db.backend();
    // Servers starting together on a cluster conflict on the claim: the retry then finds
    // it taken (a duplicate key) or builds.
    let result = retry_conflicts(|| async {
        with_conn!(db, write, |conn| {
            crate::db::tx::transaction(conn, async |conn| {
                let claim = diesel::insert_into(rollup_state::table).values((
                    rollup_state::name.eq(ROLLUP_SET),
                    rollup_state::built_time.eq(now),
                ));
                conn.any().execute(claim).await?;
                conn.any()
                    .execute(diesel::delete(customer_months::table))
                    .await?;
                for tier in TIERS {
                    // raw SQL: table named at run time (each time tier)
                    conn.execute_sql(&Sql::from(&*format!("DELETE FROM {}", tier.table)))
                        .await?;
                }
                let span = communications::table.select(diesel::dsl::max(communications::id));
                let last: i64 = conn
                    .any()
                    .get_result::<_, Option<i64>>(span)
                    .await?
                    .unwrap_or(0);
                let mut lo = 0;
                while lo < last {
                    let hi = lo.saturating_add(BUILD_CHUNK_IDS).min(last);
                    conn.any().execute(build_months(lo, hi)).await?;
                    for sql in build_sql(backend, lo, hi) {
                        conn.execute_sql(&sql).await?;
                    }
                    tracing::info!(
                        done_ids = hi,
                        of_ids = last,
                        secs = started.elapsed().as_secs(),
                        "building rollups"
                    );
                    lo = hi;
                }
                Ok::<_, Error>(last)
            })
            .await
        })
    })
    .await;
    match result {
        Ok(last) => {
            tracing::info!(
                up_to_id = last,
                secs = started.elapsed().as_secs_f64(),
                "rollups built"
            );
            Ok(())
        }
        // Another server claimed the build and finished it.
        Err(e) if e.is_unique_violation() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Builds the rollups again from the base table, whatever state they are in (an
/// operator's repair; also what tests use to check the build against maintenance).
pub async fn rebuild(db: &Db, now: NaiveDateTime) -> Result<()> {
    let forget = diesel::delete(rollup_state::table.filter(rollup_state::name.eq(ROLLUP_SET)));
    with_conn!(db, write, |conn| Ok::<_, Error>(
        conn.any().execute(forget).await?
    ))?;
    ensure_built(db, now).await
}

/// The statements of [`compact`]: per time tier, shards 1.. of the units before the
/// one holding `before` folded into shard 0, then deleted.
fn compact_sql(backend: Backend, before: NaiveDateTime) -> Vec<Sql> {
    let mut out = Vec::new();
    for tier in TIERS {
        let (table, unit) = (tier.table, tier.column);
        let cutoff = tier.unit_of(before);
        // raw SQL: INSERT ... SELECT with an upsert, then DELETE; tier table named at run time
        let sums = TALLY.map(|c| format!("SUM({c})")).join(", ");
        let mut fold = Sql::from(&*format!(
            "INSERT INTO {table} ({unit}, channel, direction, shard, {TALLY_COLUMNS}) SELECT \
             {unit}, channel, direction, 0, {sums} FROM {table} WHERE shard > 0 AND {unit} < "
        ));
        fold.bind(Bind::I64(cutoff))
            .push(&format!(" GROUP BY {unit}, channel, direction"))
            .push(&backend.upsert(&unit_key(tier), &TALLY));
        let mut delete = Sql::from(&*format!(
            "DELETE FROM {table} WHERE shard > 0 AND {unit} < "
        ));
        delete.bind(Bind::I64(cutoff));
        out.extend([fold, delete]);
    }
    out
}

/// Folds the shards of time units that writers no longer touch (before the one holding
/// `before`) into shard 0, so reports read one row per unit, channel and direction. One
/// transaction: on MySQL the INSERT ... SELECT locks the rows it reads, so a concurrent
/// write to them waits and is not lost between the fold and the delete; SQLite has one
/// writer. Returns the shard rows folded.
pub async fn compact(db: &Db, before: NaiveDateTime) -> Result<usize> {
    let statements = compact_sql(db.backend(), before);
    retry_conflicts(|| async {
        with_conn!(db, write, |conn| {
            crate::db::tx::transaction(conn, async |conn| {
                let mut folded = 0;
                for (i, sql) in statements.iter().enumerate() {
                    let n = conn.execute_sql(sql).await?;
                    // Every second statement is a delete: the rows folded.
                    if i % 2 == 1 {
                        folded += n;
                    }
                }
                Ok::<_, Error>(folded)
            })
            .await
        })
    })
    .await
}

/// Folds the `customer_months` rows of the `merged` customers into the survivor's (counts
/// summed, latest times kept), in the caller's transaction, when a merge moves their
/// communications. The time tiers need nothing: see `db::merges`.
pub async fn merge_customer_months<C: Conn>(
    conn: &mut C,
    survivor: i64,
    merged: &[i64],
) -> Result<()> {
    let rows = customer_months::table
        .filter(customer_months::customer_id.eq_any(merged.to_vec()))
        .group_by(customer_months::month)
        .select((
            customer_months::month,
            survivor.into_sql::<BigInt>(),
            fns::int(sum(customer_months::n)).assume_not_null(),
            diesel::dsl::max(customer_months::last_time).assume_not_null(),
            fns::int(sum(customer_months::negative)).assume_not_null(),
            fns::int(sum(customer_months::positive)).assume_not_null(),
            fns::int(sum(customer_months::sentiment_sum)).assume_not_null(),
        ));
    let fold = diesel::insert_into(customer_months::table)
        .values(rows)
        .into_columns(month_columns());
    conn.any()
        .execute(fns::upsert(fold, month_key_columns(), month_changes()))
        .await?;
    let delete = diesel::delete(
        customer_months::table.filter(customer_months::customer_id.eq_any(merged.to_vec())),
    );
    conn.any().execute(delete).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The rollup build statements per backend, pinned as insta snapshots.
    use super::*;

    #[test]
    fn build_statements_snapshot_per_backend() {
        for (backend, name) in [(Backend::Mysql, "mysql"), (Backend::Sqlite, "sqlite")] {
            let statements = build_sql(backend, 100, 200);
            for sql in &statements {
                assert_eq!(sql.binds.len(), sql.text.matches('?').count());
            }
            let text: Vec<&str> = statements.iter().map(|s| s.text.as_str()).collect();
            insta::assert_snapshot!(format!("rollup_build_{name}"), text.join(";\n"));
        }
        let months = build_months(100, 200);
        insta::assert_snapshot!(
            "rollup_build_months_mysql",
            diesel::debug_query::<diesel::mysql::Mysql, _>(&months).to_string()
        );
        insta::assert_snapshot!(
            "rollup_build_months_sqlite",
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&months).to_string()
        );
        let at = |h| {
            chrono::NaiveDate::from_ymd_opt(2024, 3, 9)
                .and_then(|d| d.and_hms_micro_opt(h, 0, 0, 250))
                .expect("a valid time")
        };
        let write = Deltas::of(
            [(7, 1, at(9)), (7, 2, at(10)), (9, 1, at(11))].map(|(customer_id, channel, t)| {
                Contribution {
                    customer_id,
                    channel,
                    direction: 1,
                    occur_time: t,
                    sentiment: Some(if channel == 1 { 300 } else { -20 }),
                }
            }),
            1,
        );
        for (backend, name) in [(Backend::Mysql, "mysql"), (Backend::Sqlite, "sqlite")] {
            let text: Vec<String> = add_sql(backend, &write)
                .iter()
                .map(|s| s.inline(backend).expect("numbers and times only"))
                .collect();
            insta::assert_snapshot!(format!("rollup_add_{name}"), text.join(";\n"));
        }
        let counts = unit_counts_query(42, HOURS.secs);
        insta::assert_snapshot!(
            "rollup_unit_counts_of_a_customer_mysql",
            diesel::debug_query::<diesel::mysql::Mysql, _>(&counts).to_string()
        );
        insta::assert_snapshot!(
            "rollup_unit_counts_of_a_customer_sqlite",
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&counts).to_string()
        );
    }
}

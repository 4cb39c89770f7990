//! Business-hours schedules: idempotent create with a unique name, get, list by id,
//! versioned update and delete; each write audited in its transaction.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::audit::{self, Change};
use super::dialect::{columns, Conn};
use super::schema::business_hours;
use super::Db;
use crate::error::{Error, Result};
use crate::model::caller::Caller;
use crate::model::schedule::Hours;
use crate::with_conn;

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = business_hours)]
#[diesel(check_for_backend(diesel::mysql::Mysql, diesel::sqlite::Sqlite))]
pub struct ScheduleRow {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// IANA zone.
    pub time_zone: String,
    /// The windows and holidays, as JSON.
    pub hours: String,
    /// Idempotency key of the create.
    pub request_id: Option<String>,
    /// Version, the etag.
    pub version: i64,
    /// Created.
    pub create_time: NaiveDateTime,
    /// Last changed.
    pub update_time: NaiveDateTime,
}

impl ScheduleRow {
    /// The windows and holidays.
    pub fn hours(&self) -> Result<Hours> {
        serde_json::from_str(&self.hours)
            .map_err(|e| Error::Internal(format!("business hours {} unreadable: {e}", self.id)))
    }
}

/// A schedule to store: name, zone, windows and holidays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleForm {
    /// Unique name.
    pub name: String,
    /// IANA zone.
    pub time_zone: String,
    /// Windows and holidays.
    pub hours: Hours,
}

/// A new schedule's row.
#[derive(Debug, Insertable)]
#[diesel(table_name = business_hours)]
struct ScheduleInsert<'a> {
    name: &'a str,
    time_zone: &'a str,
    hours: &'a str,
    request_id: Option<&'a str>,
    version: i64,
    create_time: NaiveDateTime,
    update_time: NaiveDateTime,
}

/// What an update writes.
#[derive(Debug, AsChangeset)]
#[diesel(table_name = business_hours)]
struct ScheduleUpdate<'a> {
    name: &'a str,
    time_zone: &'a str,
    hours: &'a str,
    version: i64,
    update_time: NaiveDateTime,
}

fn json(hours: &Hours) -> Result<String> {
    serde_json::to_string(hours).map_err(|e| Error::Internal(format!("business hours: {e}")))
}

fn name_taken(name: &str) -> Error {
    Error::AlreadyExists {
        reason: crate::error::Reason::BusinessHoursNameTaken,
        message: format!("business hours named {name:?} exist already"),
    }
}

async fn by_name<C: Conn>(conn: &mut C, name: &str) -> Result<Option<ScheduleRow>> {
    let query = business_hours::table
        .filter(business_hours::name.eq(name))
        .select(columns::<ScheduleRow>());
    Ok(conn.any().first(query).await?)
}

async fn by_request_id<C: Conn>(conn: &mut C, rid: &str) -> Result<Option<ScheduleRow>> {
    let query = business_hours::table
        .filter(business_hours::request_id.eq(rid))
        .select(columns::<ScheduleRow>());
    Ok(conn.any().first(query).await?)
}

async fn existing<C: Conn>(conn: &mut C, id: i64) -> Result<ScheduleRow> {
    let query = business_hours::table
        .find(id)
        .select(columns::<ScheduleRow>());
    conn.any().first(query).await?.ok_or(Error::NotFound {
        resource: "business hours",
        id,
    })
}

/// The answer to a create whose `request_id` found `first`: `first` for a replay;
/// REQUEST_ID_REUSED when `first`, still as created, differs from the request (`hours`
/// is its JSON). Once updated it cannot be compared, and a replay gets it as it is now.
fn replay(first: ScheduleRow, form: &ScheduleForm, hours: &str, rid: &str) -> Result<ScheduleRow> {
    if first.version != 1
        || (first.name == form.name && first.time_zone == form.time_zone && first.hours == hours)
    {
        Ok(first)
    } else {
        Err(Error::RequestIdReused {
            resource: "business hours",
            request_id: rid.to_owned(),
        })
    }
}

/// Creates a schedule; a `request_id` used before returns the first result
/// (REQUEST_ID_REUSED for a different schedule). A taken name is ALREADY_EXISTS.
pub async fn create(
    db: &Db,
    form: &ScheduleForm,
    request_id: Option<&str>,
    now: NaiveDateTime,
    caller: &Caller,
) -> Result<ScheduleRow> {
    let hours = json(&form.hours)?;
    let result = with_conn!(db, write, |conn| {
        crate::db::tx::transaction(conn, async |conn| {
            if let Some(rid) = request_id {
                if let Some(first) = by_request_id(conn, rid).await? {
                    return replay(first, form, &hours, rid);
                }
            }
            if by_name(conn, &form.name).await?.is_some() {
                return Err(name_taken(&form.name));
            }
            let row = ScheduleInsert {
                name: &form.name,
                time_zone: &form.time_zone,
                hours: &hours,
                request_id,
                version: 1,
                create_time: now,
                update_time: now,
            };
            conn.any()
                .execute(diesel::insert_into(business_hours::table).values(&row))
                .await?;
            let id = conn.last_insert_id().await?;
            audit::record(
                conn,
                caller,
                now,
                &[Change::new("CreateBusinessHours", 0, id)],
            )
            .await?;
            existing(conn, id).await
        })
        .await
    });
    match result {
        // A concurrent create won the race for the key or the name.
        Err(e) if e.is_unique_violation() => with_conn!(db, |conn| {
            match request_id {
                Some(rid) => match by_request_id(conn, rid).await? {
                    Some(first) => replay(first, form, &hours, rid),
                    None => Err(name_taken(&form.name)),
                },
                None => Err(name_taken(&form.name)),
            }
        }),
        other => other,
    }
}

/// The schedule with this id, or NOT_FOUND.
pub async fn get(db: &Db, id: i64) -> Result<ScheduleRow> {
    with_conn!(db, |conn| existing(conn, id).await)
}

/// Up to `limit` schedules with `id > after`, ascending by id.
pub async fn list(db: &Db, after: i64, limit: i64) -> Result<Vec<ScheduleRow>> {
    let query = business_hours::table
        .filter(business_hours::id.gt(after))
        .order(business_hours::id)
        .limit(limit)
        .select(columns::<ScheduleRow>());
    with_conn!(db, |conn| Ok(conn.any().load(query).await?))
}

/// What an update changes; `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleChanges {
    /// New name.
    pub name: Option<String>,
    /// New zone.
    pub time_zone: Option<String>,
    /// New windows (holidays kept unless also given).
    pub windows: Option<Vec<crate::model::schedule::Window>>,
    /// New holidays.
    pub holidays: Option<std::collections::BTreeSet<chrono::NaiveDate>>,
}

fn stale(id: i64, expected: i64, current: i64) -> Error {
    Error::Aborted(format!(
        "business hours {id} were changed concurrently: etag {expected} is stale, current is {current}"
    ))
}

/// Applies `changes` when `expected_version` (if any) is current.
pub async fn update(
    db: &Db,
    id: i64,
    expected_version: Option<i64>,
    changes: &ScheduleChanges,
    now: NaiveDateTime,
    caller: &Caller,
) -> Result<ScheduleRow> {
    let result = with_conn!(db, write, |conn| {
        crate::db::tx::transaction(conn, async |conn| {
            let current = existing(conn, id).await?;
            if let Some(expected) = expected_version {
                if expected != current.version {
                    return Err(stale(id, expected, current.version));
                }
            }
            let mut hours = current.hours()?;
            if let Some(windows) = &changes.windows {
                hours.windows = windows.clone();
            }
            if let Some(holidays) = &changes.holidays {
                hours.holidays = holidays.clone();
            }
            let name = changes.name.clone().unwrap_or(current.name.clone());
            if name != current.name && by_name(conn, &name).await?.is_some() {
                return Err(name_taken(&name));
            }
            let time_zone = changes
                .time_zone
                .clone()
                .unwrap_or(current.time_zone.clone());
            let hours = json(&hours)?;
            let update = diesel::update(business_hours::table)
                .filter(business_hours::id.eq(id))
                .filter(business_hours::version.eq(current.version))
                .set(ScheduleUpdate {
                    name: &name,
                    time_zone: &time_zone,
                    hours: &hours,
                    version: current.version + 1,
                    update_time: now,
                });
            if conn.any().execute(update).await? != 1 {
                return Err(Error::Aborted(format!(
                    "business hours {id} were changed concurrently; read them again"
                )));
            }
            audit::record(
                conn,
                caller,
                now,
                &[Change::new("UpdateBusinessHours", 0, id)],
            )
            .await?;
            existing(conn, id).await
        })
        .await
    });
    match result {
        Err(e) if e.is_unique_violation() => Err(name_taken(
            changes.name.as_deref().unwrap_or("(the new name)"),
        )),
        other => other,
    }
}

/// Deletes a schedule when `expected_version` (if any) is current; NOT_FOUND if absent.
pub async fn delete(
    db: &Db,
    id: i64,
    expected_version: Option<i64>,
    now: NaiveDateTime,
    caller: &Caller,
) -> Result<()> {
    with_conn!(db, write, |conn| {
        crate::db::tx::transaction(conn, async |conn| {
            let current = existing(conn, id).await?;
            if let Some(expected) = expected_version {
                if expected != current.version {
                    return Err(stale(id, expected, current.version));
                }
            }
            conn.any()
                .execute(diesel::delete(business_hours::table.find(id)))
                .await?;
            audit::record(
                conn,
                caller,
                now,
                &[Change::new("DeleteBusinessHours", 0, id)],
            )
            .await?;
            Ok(())
        })
        .await
    })
}

//! Business-hours schedules: idempotent create with a unique name, get, list by id,
//! versioned update and delete; each write audited in its transaction.

use chrono::NaiveDateTime;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
use diesel::QueryableByName;

use super::audit::{self, Change};
use super::dialect::Conn;
use super::query::{self, Bind, Sql};
use super::Db;
use crate::error::{Error, Result};
use crate::model::caller::Caller;
use crate::model::schedule::Hours;
use crate::with_conn;

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ScheduleRow {
    /// Id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Unique name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// IANA zone.
    #[diesel(sql_type = Text)]
    pub time_zone: String,
    /// The windows and holidays, as JSON.
    #[diesel(sql_type = Text)]
    pub hours: String,
    /// Idempotency key of the create.
    #[diesel(sql_type = Nullable<Text>)]
    pub request_id: Option<String>,
    /// Version, the etag.
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    /// Created.
    #[diesel(sql_type = Timestamp)]
    pub create_time: NaiveDateTime,
    /// Last changed.
    #[diesel(sql_type = Timestamp)]
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

const COLUMNS: &str = "SELECT id, name, time_zone, hours, request_id, version, create_time, \
                       update_time FROM business_hours";

fn json(hours: &Hours) -> Result<String> {
    serde_json::to_string(hours).map_err(|e| Error::Internal(format!("business hours: {e}")))
}

fn name_taken(name: &str) -> Error {
    Error::AlreadyExists {
        reason: crate::error::Reason::BusinessHoursNameTaken,
        message: format!("business hours named {name:?} exist already"),
    }
}

async fn by<C>(conn: &mut C, column: &str, value: Bind) -> Result<Option<ScheduleRow>>
where
    C: Conn,
    ScheduleRow: QueryableByName<C::Backend>,
{
    let mut sql = Sql::from(COLUMNS);
    sql.and().push(column).push(" = ").bind(value);
    Ok(conn.load_sql::<ScheduleRow>(&sql).await?.into_iter().next())
}

async fn existing<C>(conn: &mut C, id: i64) -> Result<ScheduleRow>
where
    C: Conn,
    ScheduleRow: QueryableByName<C::Backend>,
{
    by(conn, "id", Bind::I64(id)).await?.ok_or(Error::NotFound {
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
                if let Some(first) = by(conn, "request_id", Bind::Text(rid.to_owned())).await? {
                    return replay(first, form, &hours, rid);
                }
            }
            if by(conn, "name", Bind::Text(form.name.clone()))
                .await?
                .is_some()
            {
                return Err(name_taken(&form.name));
            }
            let mut sql = Sql::from(
                "INSERT INTO business_hours (name, time_zone, hours, request_id, version, \
                 create_time, update_time) VALUES (",
            );
            sql.bind(Bind::Text(form.name.clone()))
                .push(", ")
                .bind(Bind::Text(form.time_zone.clone()))
                .push(", ")
                .bind(Bind::Text(hours.clone()));
            match request_id {
                Some(rid) => sql.push(", ").bind(Bind::Text(rid.to_owned())),
                None => sql.push(", NULL"),
            };
            sql.push(", 1, ")
                .bind(Bind::Time(now))
                .push(", ")
                .bind(Bind::Time(now))
                .push(")");
            conn.execute_sql(&sql).await?;
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
                Some(rid) => match by(conn, "request_id", Bind::Text(rid.to_owned())).await? {
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
    let mut sql = Sql::from(COLUMNS);
    sql.and().push("id > ").bind(Bind::I64(after));
    sql.push(" ORDER BY id LIMIT ").bind(Bind::I64(limit));
    query::load(db, &sql).await
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
            if name != current.name && by(conn, "name", Bind::Text(name.clone())).await?.is_some() {
                return Err(name_taken(&name));
            }
            let mut sql = Sql::from("UPDATE business_hours SET name = ");
            sql.bind(Bind::Text(name))
                .push(", time_zone = ")
                .bind(Bind::Text(
                    changes
                        .time_zone
                        .clone()
                        .unwrap_or(current.time_zone.clone()),
                ))
                .push(", hours = ")
                .bind(Bind::Text(json(&hours)?))
                .push(", version = ")
                .bind(Bind::I64(current.version + 1))
                .push(", update_time = ")
                .bind(Bind::Time(now))
                .push(" WHERE id = ")
                .bind(Bind::I64(id))
                .push(" AND version = ")
                .bind(Bind::I64(current.version));
            if conn.execute_sql(&sql).await? != 1 {
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
            let mut sql = Sql::from("DELETE FROM business_hours WHERE id = ");
            sql.bind(Bind::I64(id));
            conn.execute_sql(&sql).await?;
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

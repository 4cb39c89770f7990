//! `crm.v1.BusinessHoursService`: named weekly schedules with holidays (the basis of
//! business-time reports).

use std::collections::BTreeSet;

use chrono::NaiveDate;
use tonic::{Request, Response, Status};

use super::customer::{etag, mask_paths};
use super::{caller, positive_id, AppState};
use crate::db::business_hours::{self, ScheduleChanges, ScheduleForm, ScheduleRow};
use crate::error::{Error, Violations};
use crate::grpc::convert::to_timestamp;
use crate::grpc::paging;
use crate::grpc::validate::{self, time_zone};
use crate::model::schedule::{self, Window, MAX_HOLIDAYS};
use crate::model::time::now;
use crate::pb::{self, business_hours_service_server::BusinessHoursService};

/// Implementation of `crm.v1.BusinessHoursService`.
#[derive(Debug, Clone)]
pub struct BusinessHoursApi {
    state: AppState,
}

impl BusinessHoursApi {
    /// A service over the shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The proto form of a stored schedule.
fn to_pb(row: ScheduleRow) -> Result<pb::BusinessHours, Error> {
    let hours = row.hours()?;
    Ok(pb::BusinessHours {
        id: row.id,
        name: row.name,
        time_zone: row.time_zone,
        windows: hours
            .windows
            .iter()
            .map(|w| pb::BusinessHoursWindow {
                weekday: i32::from(w.weekday),
                start: schedule::format_hhmm(w.start),
                end: schedule::format_hhmm(w.end),
            })
            .collect(),
        holidays: hours
            .holidays
            .iter()
            .map(|d| d.format("%Y-%m-%d").to_string())
            .collect(),
        create_time: Some(to_timestamp(row.create_time)),
        update_time: Some(to_timestamp(row.update_time)),
        etag: row.version.to_string(),
    })
}

fn name(v: &mut Violations, field: &str, value: &str) -> String {
    validate::required_text(v, field, value, 100)
}

fn zone(v: &mut Violations, field: &str, value: &str) -> String {
    if value.trim().is_empty() {
        v.add(
            field,
            "is required, an IANA time zone (e.g. \"Asia/Shanghai\")",
        );
    } else {
        let mut inner = Violations::new();
        if time_zone(&mut inner, value).is_none() {
            v.add(
                field,
                format!(
                    "{} is not a known IANA time zone (e.g. \"Asia/Shanghai\")",
                    crate::error::quote(value)
                ),
            );
        }
    }
    value.to_owned()
}

fn windows(v: &mut Violations, field: &str, given: &[pb::BusinessHoursWindow]) -> Vec<Window> {
    if given.is_empty() {
        v.add(field, "needs at least one window");
        return Vec::new();
    }
    if given.len() > 7 * schedule::MAX_WINDOWS_PER_DAY {
        v.add(
            field,
            format!("at most {} windows", 7 * schedule::MAX_WINDOWS_PER_DAY),
        );
        return Vec::new();
    }
    let mut out = Vec::with_capacity(given.len());
    for (i, w) in given.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let weekday = u8::try_from(w.weekday).ok().filter(|d| (1..=7).contains(d));
        if weekday.is_none() {
            v.add(
                format!("{at}.weekday"),
                "must be WEEKDAY_MONDAY .. WEEKDAY_SUNDAY",
            );
        }
        let start = schedule::parse_hhmm(&w.start, false);
        if start.is_none() {
            v.add(format!("{at}.start"), "must be HH:MM, 00:00-23:59");
        }
        let end = schedule::parse_hhmm(&w.end, true);
        if end.is_none() {
            v.add(format!("{at}.end"), "must be HH:MM, 00:01-24:00");
        }
        if let (Some(weekday), Some(start), Some(end)) = (weekday, start, end) {
            if end <= start {
                v.add(format!("{at}.end"), "must be after start");
            } else {
                out.push(Window {
                    weekday,
                    start,
                    end,
                });
            }
        }
    }
    if out.len() == given.len() {
        if let Err(e) = schedule::check_windows(&mut out) {
            v.add(field, e);
        }
    }
    out
}

fn holidays(v: &mut Violations, field: &str, given: &[String]) -> BTreeSet<NaiveDate> {
    if given.len() > MAX_HOLIDAYS {
        v.add(field, format!("at most {MAX_HOLIDAYS} holidays"));
        return BTreeSet::new();
    }
    let mut out = BTreeSet::new();
    for (i, d) in given.iter().enumerate() {
        match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
            Ok(date) => {
                out.insert(date);
            }
            Err(_) => v.add(format!("{field}[{i}]"), "must be a date, YYYY-MM-DD"),
        }
    }
    out
}

const UPDATABLE: [&str; 4] = ["name", "time_zone", "windows", "holidays"];

#[tonic::async_trait]
impl BusinessHoursService for BusinessHoursApi {
    async fn create_business_hours(
        &self,
        request: Request<pb::CreateBusinessHoursRequest>,
    ) -> Result<Response<pb::BusinessHours>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = validate::request_id(&mut v, "request_id", &req.request_id);
        let Some(b) = req.business_hours else {
            v.add("business_hours", "is required");
            return Err(Error::InvalidArgument(v.into_inner()).into());
        };
        let form = ScheduleForm {
            name: name(&mut v, "business_hours.name", &b.name),
            time_zone: zone(&mut v, "business_hours.time_zone", &b.time_zone),
            hours: schedule::Hours {
                windows: windows(&mut v, "business_hours.windows", &b.windows),
                holidays: holidays(&mut v, "business_hours.holidays", &b.holidays),
            },
        };
        v.finish(())?;
        let row =
            business_hours::create(&self.state.db, &form, request_id.as_deref(), now(), &caller)
                .await?;
        Ok(Response::new(to_pb(row)?))
    }

    async fn get_business_hours(
        &self,
        request: Request<pb::GetBusinessHoursRequest>,
    ) -> Result<Response<pb::BusinessHours>, Status> {
        let mut v = Violations::new();
        let id = positive_id(&mut v, "id", request.get_ref().id);
        v.finish(())?;
        let row = business_hours::get(&self.state.db.reader(), id).await?;
        Ok(Response::new(to_pb(row)?))
    }

    async fn list_business_hours(
        &self,
        request: Request<pb::ListBusinessHoursRequest>,
    ) -> Result<Response<pb::ListBusinessHoursResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = paging::page_size(&mut v, "page_size", req.page_size);
        let fp = paging::Fingerprint::new("business_hours").finish();
        let after = paging::after_id(&mut v, "business_hours", fp, &req.page_token).unwrap_or(0);
        v.finish(())?;
        let mut page = business_hours::list(&self.state.db.reader(), after, limit + 1).await?;
        let next_page_token =
            paging::next_id_token(&mut page, limit, "business_hours", fp, |r| r.id);
        Ok(Response::new(pb::ListBusinessHoursResponse {
            business_hours: page.into_iter().map(to_pb).collect::<Result<_, _>>()?,
            next_page_token,
        }))
    }

    async fn update_business_hours(
        &self,
        request: Request<pb::UpdateBusinessHoursRequest>,
    ) -> Result<Response<pb::BusinessHours>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let Some(b) = &req.business_hours else {
            v.add("business_hours", "is required");
            return Err(Error::InvalidArgument(v.into_inner()).into());
        };
        let id = positive_id(&mut v, "business_hours.id", b.id);
        let expected = etag(&mut v, "business_hours.etag", &b.etag);
        let mut changes = ScheduleChanges::default();
        for path in mask_paths(&mut v, req.update_mask.as_ref(), &UPDATABLE) {
            let field = format!("business_hours.{path}");
            match path.as_str() {
                "name" => changes.name = Some(name(&mut v, &field, &b.name)),
                "time_zone" => changes.time_zone = Some(zone(&mut v, &field, &b.time_zone)),
                "windows" => changes.windows = Some(windows(&mut v, &field, &b.windows)),
                _ => changes.holidays = Some(holidays(&mut v, &field, &b.holidays)),
            }
        }
        v.finish(())?;
        let row =
            business_hours::update(&self.state.db, id, expected, &changes, now(), &caller).await?;
        Ok(Response::new(to_pb(row)?))
    }

    async fn delete_business_hours(
        &self,
        request: Request<pb::DeleteBusinessHoursRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = positive_id(&mut v, "id", req.id);
        let expected = etag(&mut v, "etag", &req.etag);
        v.finish(())?;
        business_hours::delete(&self.state.db, id, expected, now(), &caller).await?;
        Ok(Response::new(()))
    }
}

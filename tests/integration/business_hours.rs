//! `BusinessHoursService` (issue 12, item 1): named weekly schedules with holidays, their
//! validation, idempotent create, unique names, versioned updates and deletes, audited.
//! Each test runs on SQLite and MariaDB.

use crm_comms::pb::{self, business_hours_service_client::BusinessHoursServiceClient};
use tonic::transport::Channel;
use tonic::Code;

use crate::backend_tests;
use crate::harness::{assert_invalid, assert_status, TestApp};

fn client(app: &TestApp) -> BusinessHoursServiceClient<Channel> {
    BusinessHoursServiceClient::new(app.channel.clone())
}

fn window(weekday: pb::Weekday, start: &str, end: &str) -> pb::BusinessHoursWindow {
    pb::BusinessHoursWindow {
        weekday: weekday as i32,
        start: start.into(),
        end: end.into(),
    }
}

fn weekdays_nine_to_six(name: &str) -> pb::BusinessHours {
    use pb::Weekday::*;
    pb::BusinessHours {
        name: name.into(),
        time_zone: "Asia/Shanghai".into(),
        windows: [Friday, Monday, Tuesday, Wednesday, Thursday]
            .into_iter()
            .flat_map(|d| [window(d, "13:00", "18:00"), window(d, "09:00", "12:00")])
            .collect(),
        holidays: vec![
            "2025-10-01".into(),
            "2025-01-01".into(),
            "2025-10-01".into(),
        ],
        ..Default::default()
    }
}

async fn create(
    app: &TestApp,
    b: pb::BusinessHours,
    request_id: &str,
) -> Result<pb::BusinessHours, tonic::Status> {
    client(app)
        .create_business_hours(pb::CreateBusinessHoursRequest {
            business_hours: Some(b),
            request_id: request_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

backend_tests! {
    async fn a_schedule_is_created_once_normalized_and_names_are_unique(app: &TestApp) {
        let first = create(app, weekdays_nine_to_six("Support 上海"), "bh-1").await.unwrap();
        assert!(first.id > 0);
        assert_eq!(first.windows.len(), 10);
        assert_eq!(first.windows[0], window(pb::Weekday::Monday, "09:00", "12:00"));
        assert_eq!(first.windows[1], window(pb::Weekday::Monday, "13:00", "18:00"));
        assert_eq!(first.windows[9], window(pb::Weekday::Friday, "13:00", "18:00"));
        assert_eq!(first.holidays, ["2025-01-01", "2025-10-01"]);
        assert_eq!(first.etag, "1");
        // The same key again: the first result, nothing new.
        let again = create(app, weekdays_nine_to_six("Support 上海"), "bh-1").await.unwrap();
        assert_eq!(again, first);
        // The same key for another schedule: refused, nothing new.
        let err = create(app, weekdays_nine_to_six("another name"), "bh-1").await.unwrap_err();
        assert_status(&err, Code::FailedPrecondition, "REQUEST_ID_REUSED");
        assert_eq!(app.scalar("SELECT COUNT(*) FROM business_hours").await, 1);
        // The same name, another key: ALREADY_EXISTS; a name differing in case is another.
        let err = create(app, weekdays_nine_to_six("Support 上海"), "bh-2").await.unwrap_err();
        assert_status(&err, Code::AlreadyExists, "BUSINESS_HOURS_NAME_TAKEN");
        create(app, weekdays_nine_to_six("support 上海"), "").await.unwrap();
        let got = client(app).get_business_hours(pb::GetBusinessHoursRequest { id: first.id }).await.unwrap().into_inner();
        assert_eq!(got, first);
        // A day that ends at midnight.
        use pb::Weekday::*;
        let late = pb::BusinessHours { name: "late".into(), time_zone: "UTC".into(), windows: vec![window(Saturday, "18:00", "24:00")], ..Default::default() };
        assert_eq!(create(app, late, "").await.unwrap().windows[0].end, "24:00");
        let audited = app.scalar("SELECT COUNT(*) FROM audit_records WHERE method = 'CreateBusinessHours'").await;
        assert_eq!(audited, 3);
    }

    async fn every_bad_field_is_named_and_nothing_is_written(app: &TestApp) {
        use pb::Weekday::*;
        let bad = pb::BusinessHours {
            name: "  ".into(),
            time_zone: "Mars/Olympus".into(),
            windows: vec![
                window(Unspecified, "09:00", "12:00"),
                window(Monday, "9:00", "24:01"),
            ],
            holidays: vec!["2025-02-30".into(), "2025-03-01".into()],
            ..Default::default()
        };
        let err = create(app, bad, "").await.unwrap_err();
        assert_invalid(&err, &[
            "business_hours.name",
            "business_hours.time_zone",
            "business_hours.windows[0].weekday",
            "business_hours.windows[1].start",
            "business_hours.windows[1].end",
            "business_hours.holidays[0]",
        ]);
        let backwards = pb::BusinessHours {
            name: "backwards".into(),
            time_zone: "UTC".into(),
            windows: vec![window(Tuesday, "12:00", "12:00")],
            ..Default::default()
        };
        assert_invalid(&create(app, backwards, "").await.unwrap_err(), &["business_hours.windows[0].end"]);
        let overlapping = pb::BusinessHours {
            name: "overlap".into(),
            time_zone: "UTC".into(),
            windows: vec![window(Monday, "09:00", "12:30"), window(Monday, "12:00", "18:00")],
            ..Default::default()
        };
        let err = create(app, overlapping, "").await.unwrap_err();
        assert_invalid(&err, &["business_hours.windows"]);
        assert!(err.message().contains("overlap"), "{}", err.message());
        let none = pb::BusinessHours { name: "empty".into(), time_zone: "UTC".into(), ..Default::default() };
        assert_invalid(&create(app, none, "").await.unwrap_err(), &["business_hours.windows"]);
        let err = client(app).create_business_hours(pb::CreateBusinessHoursRequest::default()).await.unwrap_err();
        assert_invalid(&err, &["business_hours"]);
        assert_eq!(app.scalar("SELECT COUNT(*) FROM business_hours").await, 0);
        assert_eq!(app.scalar("SELECT COUNT(*) FROM audit_records").await, 0);
    }

    async fn schedules_are_listed_updated_with_etags_and_deleted(app: &TestApp) {
        let mut ids = Vec::new();
        for name in ["a", "b", "c"] {
            ids.push(create(app, weekdays_nine_to_six(name), "").await.unwrap().id);
        }
        let mut c = client(app);
        let first = c.list_business_hours(pb::ListBusinessHoursRequest { page_size: 2, ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(first.business_hours.iter().map(|b| b.id).collect::<Vec<_>>(), ids[..2]);
        let second = c.list_business_hours(pb::ListBusinessHoursRequest { page_size: 2, page_token: first.next_page_token }).await.unwrap().into_inner();
        assert_eq!(second.business_hours.iter().map(|b| b.id).collect::<Vec<_>>(), ids[2..]);
        assert!(second.next_page_token.is_empty());

        // Only the windows change; the holidays stay; the etag moves on.
        use pb::Weekday::*;
        let update = |etag: &str, windows: Vec<pb::BusinessHoursWindow>, paths: &[&str], name: &str| pb::UpdateBusinessHoursRequest {
            business_hours: Some(pb::BusinessHours { id: ids[0], etag: etag.into(), name: name.into(), windows, ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
        };
        let updated = c.update_business_hours(update("1", vec![window(Saturday, "10:00", "16:00")], &["windows"], "")).await.unwrap().into_inner();
        assert_eq!(updated.windows, [window(Saturday, "10:00", "16:00")]);
        assert_eq!(updated.holidays, ["2025-01-01", "2025-10-01"]);
        assert_eq!((updated.name.as_str(), updated.etag.as_str()), ("a", "2"));
        let err = c.update_business_hours(update("1", vec![window(Sunday, "10:00", "16:00")], &["windows"], "")).await.unwrap_err();
        assert_status(&err, Code::Aborted, "ETAG_MISMATCH");
        let err = c.update_business_hours(update("2", vec![], &["name"], "b")).await.unwrap_err();
        assert_status(&err, Code::AlreadyExists, "BUSINESS_HOURS_NAME_TAKEN");
        let err = c.update_business_hours(update("2", vec![], &["id"], "")).await.unwrap_err();
        assert_invalid(&err, &["update_mask"]);

        let err = c.delete_business_hours(pb::DeleteBusinessHoursRequest { id: ids[0], etag: "1".into() }).await.unwrap_err();
        assert_status(&err, Code::Aborted, "ETAG_MISMATCH");
        c.delete_business_hours(pb::DeleteBusinessHoursRequest { id: ids[0], etag: "2".into() }).await.unwrap();
        let err = c.get_business_hours(pb::GetBusinessHoursRequest { id: ids[0] }).await.unwrap_err();
        assert_status(&err, Code::NotFound, "BUSINESS_HOURS_NOT_FOUND");
        let err = c.delete_business_hours(pb::DeleteBusinessHoursRequest { id: ids[0], etag: String::new() }).await.unwrap_err();
        assert_status(&err, Code::NotFound, "BUSINESS_HOURS_NOT_FOUND");
        let methods = app.scalar("SELECT COUNT(*) FROM audit_records WHERE method IN ('UpdateBusinessHours', 'DeleteBusinessHours')").await;
        assert_eq!(methods, 2);
    }
}

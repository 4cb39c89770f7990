//! Response times, resolution times and the attention list (issue 12, items 2 and 3),
//! over hand-built timelines whose answers are worked out in the comments: replies
//! across a weekend, a holiday and a DST change in business hours, unanswered messages,
//! a reply after the range, customers not contacted for a while and customers whose
//! contacts fell. Each test runs on SQLite and MariaDB.

use chrono::{DateTime, NaiveTime, Utc};
use crm_comms::pb::{self, business_hours_service_client::BusinessHoursServiceClient};
use tonic::Code;

use crate::backend_tests;
use crate::harness::{assert_invalid, import, new_customer, ts, AnalyticsServiceClient, TestApp};

const PHONE: i32 = pb::Channel::Phone as i32;
const EMAIL: i32 = pb::Channel::Email as i32;
const CHAT: i32 = pb::Channel::Chat as i32;
const NOTE: i32 = pb::Channel::Note as i32;
const IN: i32 = pb::Direction::Inbound as i32;
const OUT: i32 = pb::Direction::Outbound as i32;

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;

fn comm(customer_id: i64, channel: i32, direction: i32, at: &str) -> pb::Communication {
    pb::Communication {
        customer_id,
        channel,
        direction,
        occur_time: Some(ts(at)),
        content: "hello".into(),
        ..Default::default()
    }
}

fn secs(d: &Option<prost_types::Duration>) -> Option<i64> {
    d.as_ref().map(|d| {
        assert_eq!(d.nanos, 0, "whole seconds in these timelines");
        d.seconds
    })
}

fn micros(d: &Option<prost_types::Duration>) -> Option<i64> {
    d.as_ref()
        .map(|d| d.seconds * 1_000_000 + i64::from(d.nanos / 1000))
}

fn micros_of(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos / 1000)
}

async fn open_ticket(app: &TestApp, customer_id: i64, at: DateTime<Utc>) -> pb::ServiceTicket {
    app.customers()
        .create_service_ticket(pb::CreateServiceTicketRequest {
            service_ticket: Some(pb::ServiceTicket {
                customer_id,
                issue: format!("opened at {at}"),
                open_time: Some(prost_types::Timestamp {
                    seconds: at.timestamp(),
                    nanos: 0,
                }),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn resolve(app: &TestApp, t: pb::ServiceTicket) -> pb::ServiceTicket {
    app.customers()
        .update_service_ticket(pb::UpdateServiceTicketRequest {
            service_ticket: Some(pb::ServiceTicket {
                status: pb::TicketStatus::Resolved as i32,
                solution: "fixed".into(),
                ..t
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["status".into(), "solution".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Microseconds from a ticket's opening to its resolution, as the server stored them.
fn waited(t: &pb::ServiceTicket) -> i64 {
    micros_of(&t.resolve_time.unwrap()) - micros_of(&t.open_time.unwrap())
}

fn duration(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

/// Weekdays 09:00-17:00 in Berlin, Easter Monday 2024-04-01 a holiday.
async fn berlin_office(app: &TestApp) -> i64 {
    use pb::Weekday::*;
    let windows = [Monday, Tuesday, Wednesday, Thursday, Friday]
        .into_iter()
        .map(|d| pb::BusinessHoursWindow {
            weekday: d as i32,
            start: "09:00".into(),
            end: "17:00".into(),
        })
        .collect();
    BusinessHoursServiceClient::new(app.channel.clone())
        .create_business_hours(pb::CreateBusinessHoursRequest {
            business_hours: Some(pb::BusinessHours {
                name: "Berlin office".into(),
                time_zone: "Europe/Berlin".into(),
                windows,
                holidays: vec!["2024-04-01".into()],
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

/// The timeline of the response-time tests. Berlin is UTC+1 until Sunday 2024-03-31
/// 02:00, UTC+2 after.
async fn conversations(app: &TestApp) -> (i64, i64, i64) {
    let a = new_customer(app, "A").await;
    let b = new_customer(app, "B").await;
    let c = new_customer(app, "C").await;
    import(
        app,
        vec![
            // An outbound call before any inbound one answers nothing.
            comm(b, PHONE, OUT, "2024-03-25T09:00:00Z"),
            // 1. Friday 16:00 Berlin, answered Tuesday 10:00 Berlin by email: business
            //    time Fri 16-17 + Tue 9-10 = 2 h (weekend, DST Sunday, holiday Monday);
            //    wall clock 89 h.
            comm(a, CHAT, IN, "2024-03-29T15:00:00Z"),
            comm(a, EMAIL, OUT, "2024-04-02T08:00:00Z"),
            // 2. Tuesday 11:00, answered 11:30 by phone: 30 min.
            comm(a, PHONE, IN, "2024-04-02T09:00:00Z"),
            comm(a, PHONE, OUT, "2024-04-02T09:30:00Z"),
            // 3. and 4. Tuesday 12:00 (email) and 12:10 (chat), one chat reply at 13:00:
            //    60 and 50 min.
            comm(a, EMAIL, IN, "2024-04-02T10:00:00Z"),
            comm(a, CHAT, IN, "2024-04-02T10:10:00Z"),
            comm(a, CHAT, OUT, "2024-04-02T11:00:00Z"),
            // 5. Wednesday 10:00, never answered.
            comm(a, CHAT, IN, "2024-04-03T08:00:00Z"),
            // 6. Thursday 20:00, answered Friday 09:15: 15 min of business time, 13 h 15.
            comm(b, PHONE, IN, "2024-04-04T18:00:00Z"),
            comm(b, PHONE, OUT, "2024-04-05T07:15:00Z"),
            // 7. Sunday 12:00, answered after the range, Tuesday 04-09 10:00: Monday's
            //    8 h + 1 h = 9 h of business time, 46 h wall clock.
            comm(c, CHAT, IN, "2024-04-07T10:00:00Z"),
            comm(c, NOTE, OUT, "2024-04-09T08:00:00Z"),
        ],
    )
    .await;
    (a, b, c)
}

fn response_request(business_hours_id: i64) -> pb::GetResponseTimeReportRequest {
    pb::GetResponseTimeReportRequest {
        start_time: Some(ts("2024-03-25T00:00:00Z")),
        end_time: Some(ts("2024-04-08T00:00:00Z")),
        granularity: pb::Granularity::Week as i32,
        time_zone: "Europe/Berlin".into(),
        business_hours_id,
        sla: duration(45 * MINUTE),
        ..Default::default()
    }
}

backend_tests! {
    async fn response_times_count_business_hours_across_a_weekend_a_holiday_and_dst(app: &TestApp) {
        let office = berlin_office(app).await;
        conversations(app).await;
        let r = app
            .analytics()
            .get_response_time_report(response_request(office))
            .await
            .unwrap()
            .into_inner();
        let total = r.total.unwrap();
        // Completed: 15, 30, 50, 60, 120, 540 min; pending: message 5.
        assert_eq!((total.total_count, total.completed_count, total.pending_count), (7, 6, 1));
        assert_eq!(secs(&total.mean), Some(815 * MINUTE / 6));
        assert_eq!(secs(&total.median), Some(55 * MINUTE));
        assert_eq!(secs(&total.p90), Some(540 * MINUTE));
        // Over 45 min: 50, 60, 120 and 540; message 5 has waited for years.
        assert_eq!(total.completed_over_sla_count, 4);
        assert_eq!(total.pending_over_sla_count, 1);
        assert_eq!(r.business_hours_id, office);
        assert_eq!(r.time_zone, "Europe/Berlin");

        let per_channel: Vec<(i32, i64, i64, Option<i64>)> = r
            .channels
            .iter()
            .map(|c| {
                let s = c.stats.unwrap();
                (c.channel, s.completed_count, s.pending_count, secs(&s.median))
            })
            .collect();
        assert_eq!(
            per_channel,
            vec![
                (PHONE, 2, 0, Some(45 * MINUTE / 2)),
                (EMAIL, 1, 0, Some(60 * MINUTE)),
                (CHAT, 3, 1, Some(120 * MINUTE)),
            ]
        );
        // Berlin weeks, the first cut at the range start: of 03-25 (message 1), of 04-01 (the
        // rest), of 04-08 (none: its
        // first two hours are in range).
        let weeks: Vec<(String, i64, i64)> = r
            .buckets
            .iter()
            .map(|b| {
                let s = b.stats.unwrap();
                let start = DateTime::<Utc>::from_timestamp(b.start_time.unwrap().seconds, 0).unwrap();
                (start.to_rfc3339(), s.completed_count, s.pending_count)
            })
            .collect();
        assert_eq!(
            weeks,
            vec![
                ("2024-03-25T00:00:00+00:00".to_owned(), 1, 0),
                ("2024-03-31T22:00:00+00:00".to_owned(), 5, 1),
                ("2024-04-07T22:00:00+00:00".to_owned(), 0, 0),
            ]
        );
        assert_eq!(r.buckets[2].stats.unwrap().mean, None);
    }

    async fn response_times_in_wall_clock_time_and_on_the_same_channel(app: &TestApp) {
        let office = berlin_office(app).await;
        let (a, _, _) = conversations(app).await;
        let mut analytics = app.analytics();
        let wall = analytics
            .get_response_time_report(response_request(0))
            .await
            .unwrap()
            .into_inner();
        let total = wall.total.unwrap();
        // 30 min, 50 min, 60 min, 13 h 15, 46 h, 89 h.
        assert_eq!(total.completed_count, 6);
        assert_eq!(secs(&total.median), Some((60 * MINUTE + 13 * HOUR + 15 * MINUTE) / 2));
        assert_eq!(secs(&total.p90), Some(89 * HOUR));
        assert_eq!(wall.business_hours_id, 0);

        // Only replies on the same channel: message 1 (chat) waits for Tuesday's 13:00
        // chat (5 h of business time), message 3 (email) has no email reply after it,
        // message 7 (chat) none either (its reply is a note).
        let same = analytics
            .get_response_time_report(pb::GetResponseTimeReportRequest {
                same_channel: true,
                ..response_request(office)
            })
            .await
            .unwrap()
            .into_inner();
        let total = same.total.unwrap();
        assert_eq!((total.completed_count, total.pending_count), (4, 3));
        assert_eq!(secs(&total.p90), Some(5 * HOUR));
        // Inbound chats only, of customer A: messages 1, 4 and 5.
        let chats = analytics
            .get_response_time_report(pb::GetResponseTimeReportRequest {
                customer_ids: vec![a],
                channels: vec![CHAT],
                ..response_request(office)
            })
            .await
            .unwrap()
            .into_inner();
        let total = chats.total.unwrap();
        assert_eq!((total.total_count, total.completed_count), (3, 2));
        assert_eq!(secs(&total.mean), Some((120 + 50) * MINUTE / 2));
    }

    async fn bad_response_time_requests_name_every_field(app: &TestApp) {
        let mut analytics = app.analytics();
        let err = analytics
            .get_response_time_report(pb::GetResponseTimeReportRequest {
                business_hours_id: -1,
                sla: Some(prost_types::Duration { seconds: -5, nanos: 0 }),
                channels: vec![99],
                time_zone: "Mars/Olympus".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(
            &err,
            &["start_time", "end_time", "business_hours_id", "sla", "channels[0]", "time_zone"],
        );
        // A schedule that does not exist: NOT_FOUND before anything is read.
        let err = analytics
            .get_response_time_report(response_request(424242))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        let err = analytics
            .get_resolution_time_report(pb::GetResolutionTimeReportRequest {
                start_time: Some(ts("2024-01-01T00:00:00Z")),
                end_time: Some(ts("2023-01-01T00:00:00Z")),
                sla: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["end_time", "sla"]);
    }

    async fn resolution_times_of_resolved_and_open_tickets(app: &TestApp) {
        let customer = new_customer(app, "ticket owner").await;
        let now = Utc::now();
        let t1 = open_ticket(app, customer, now - chrono::Duration::hours(50)).await;
        let t2 = open_ticket(app, customer, now - chrono::Duration::hours(20)).await;
        let t3 = open_ticket(app, customer, now - chrono::Duration::hours(1)).await;
        let (r1, r2) = (resolve(app, t1).await, resolve(app, t2).await);
        let (w1, w2) = (waited(&r1), waited(&r2));
        let start = (now - chrono::Duration::days(3)).date_naive();
        let request = pb::GetResolutionTimeReportRequest {
            start_time: Some(ts(&format!("{start}T00:00:00Z"))),
            end_time: Some(ts(&format!("{}T00:00:00Z", start + chrono::Duration::days(5)))),
            sla: duration(24 * HOUR),
            ..Default::default()
        };
        let mut analytics = app.analytics();
        let r = analytics.get_resolution_time_report(request.clone()).await.unwrap().into_inner();
        let total = r.total.unwrap();
        assert_eq!((total.total_count, total.completed_count, total.pending_count), (3, 2, 1));
        assert_eq!(micros(&total.mean), Some((w1 + w2) / 2));
        assert_eq!(micros(&total.p90), Some(w1.max(w2)));
        // 50 h is over a day, 20 h is not; the open ticket has waited 1 h.
        assert_eq!((total.completed_over_sla_count, total.pending_over_sla_count), (1, 0));
        assert_eq!(r.buckets.len(), 5);
        assert_eq!(t3.resolve_time, None);

        // In business hours: every day open all day (UTC) but the day ticket 1 was opened,
        // a holiday, so its wait starts at the next midnight (ticket 2 was opened 30 h
        // later, after that midnight).
        use pb::Weekday::*;
        let all_week = [Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday]
            .into_iter()
            .map(|d| pb::BusinessHoursWindow { weekday: d as i32, start: "00:00".into(), end: "24:00".into() })
            .collect();
        let opened = DateTime::<Utc>::from_timestamp(r1.open_time.unwrap().seconds, 0).unwrap();
        let schedule = BusinessHoursServiceClient::new(app.channel.clone())
            .create_business_hours(pb::CreateBusinessHoursRequest {
                business_hours: Some(pb::BusinessHours {
                    name: "always but one day".into(),
                    time_zone: "UTC".into(),
                    windows: all_week,
                    holidays: vec![opened.date_naive().to_string()],
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let next_midnight = opened.date_naive().succ_opt().unwrap().and_time(NaiveTime::MIN).and_utc();
        let skipped = (next_midnight - opened).num_microseconds().unwrap();
        let r = analytics
            .get_resolution_time_report(pb::GetResolutionTimeReportRequest { business_hours_id: schedule.id, ..request })
            .await
            .unwrap()
            .into_inner();
        let total = r.total.unwrap();
        assert_eq!(micros(&total.mean), Some((w1 - skipped + w2) / 2));
        assert_eq!(r.business_hours_id, schedule.id);
    }

    async fn the_attention_list_pages_stale_customers_oldest_first(app: &TestApp) {
        let a = new_customer(app, "A").await;
        let b = new_customer(app, "B").await;
        let c = new_customer(app, "C").await;
        let d = new_customer(app, "D (never contacted)").await;
        let gone = new_customer(app, "deleted").await;
        import(
            app,
            vec![
                comm(a, PHONE, IN, "2024-01-10T08:00:00Z"),
                comm(a, EMAIL, OUT, "2024-03-01T08:00:00Z"),
                comm(b, CHAT, IN, "2024-05-20T08:00:00Z"),
                comm(c, NOTE, OUT, "2024-02-01T08:00:00Z"),
                comm(c, CHAT, IN, "2024-02-01T08:00:00Z"),
                comm(gone, CHAT, IN, "2024-01-01T08:00:00Z"),
            ],
        )
        .await;
        app.customers()
            .delete_customer(pb::DeleteCustomerRequest { id: gone, purge: false, etag: String::new() })
            .await
            .unwrap();
        let stale = |as_of: &str, days: i32, never: bool, size: i32, token: String| pb::ListAttentionCustomersRequest {
            reason: pb::AttentionReason::Stale as i32,
            stale_days: days,
            as_of: Some(ts(as_of)),
            include_never_contacted: never,
            page_size: size,
            page_token: token,
            ..Default::default()
        };
        let mut analytics = app.analytics();
        // 30 days before 2024-06-01 is 2024-05-02: C (02-01) and A (03-01); B is recent,
        // D was created after it, the deleted customer is left out.
        let first = analytics
            .list_attention_customers(stale("2024-06-01T00:00:00Z", 30, true, 1, String::new()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.customers.len(), 1);
        let cc = &first.customers[0];
        assert_eq!((cc.customer_id, cc.name.as_str()), (c, "C"));
        assert_eq!(cc.days_since_last_contact, Some(120));
        assert_eq!(cc.last_contact_time, Some(ts("2024-02-01T08:00:00Z")));
        // Two at the same instant: the later-stored one (the chat).
        assert_eq!(cc.last_contact_channel, CHAT);
        assert!(!first.next_page_token.is_empty());
        let second = analytics
            .list_attention_customers(stale("2024-06-01T00:00:00Z", 30, true, 1, first.next_page_token.clone()))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<i64> = second.customers.iter().map(|x| x.customer_id).collect();
        assert_eq!(ids, vec![a]);
        assert_eq!(second.customers[0].last_contact_channel, EMAIL);
        assert_eq!(second.customers[0].days_since_last_contact, Some(91));
        assert!(second.next_page_token.is_empty(), "{second:?}");

        // A year after now: everyone is stale, D (never contacted) first.
        let later = (Utc::now() + chrono::Duration::days(400)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = analytics
                .list_attention_customers(stale(&later, 365, true, 2, token))
                .await
                .unwrap()
                .into_inner();
            assert!(page.customers.len() <= 2);
            seen.extend(page.customers.iter().map(|x| (x.customer_id, x.last_contact_time.is_some())));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(seen, vec![(d, false), (c, true), (a, true), (b, true)]);
        // The base table answers the same as the rollup.
        let (channel, stop) = app.another_server(|c| c.report_rollups = false, None).await;
        let base = AnalyticsServiceClient::new(channel)
            .list_attention_customers(stale(&later, 365, true, 10, String::new()))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<i64> = base.customers.iter().map(|x| x.customer_id).collect();
        assert_eq!(ids, vec![d, c, a, b]);
        stop.send(true).ok();
        // A token only works with the filters it was issued for.
        let err = analytics
            .list_attention_customers(stale("2024-06-01T00:00:00Z", 31, true, 1, first.next_page_token))
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_token"]);
        let err = analytics
            .list_attention_customers(pb::ListAttentionCustomersRequest { page_size: -1, ..Default::default() })
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_size", "reason"]);
        let err = analytics
            .list_attention_customers(stale("2024-06-01T00:00:00Z", 0, false, 0, String::new()))
            .await
            .unwrap_err();
        assert_invalid(&err, &["stale_days"]);
    }

    async fn the_attention_list_ranks_customers_whose_contacts_fell(app: &TestApp) {
        // Range March-April 2024 (61 days); the period before is 2023-12-31 .. 2024-03-01.
        let p = new_customer(app, "P: 10 -> 2").await;
        let q = new_customer(app, "Q: 4 -> 0").await;
        let r = new_customer(app, "R: 10 -> 6").await;
        let s = new_customer(app, "S: 0 -> 5").await;
        let t = new_customer(app, "T: 2 -> 1").await;
        let mut items = Vec::new();
        let mut add = |customer: i64, n: usize, first_day: &str| {
            for i in 0..n {
                let day = chrono::NaiveDate::parse_from_str(first_day, "%Y-%m-%d").unwrap()
                    + chrono::Duration::days(i as i64);
                items.push(comm(customer, CHAT, IN, &format!("{day}T12:00:00Z")));
            }
        };
        add(p, 10, "2024-01-05");
        add(p, 2, "2024-03-10");
        add(q, 3, "2024-02-01");
        add(q, 1, "2023-12-31");
        add(r, 10, "2024-02-10");
        add(r, 6, "2024-04-20");
        add(s, 5, "2024-04-01");
        add(t, 2, "2024-02-27");
        add(t, 1, "2024-04-30");
        import(app, items).await;
        let decline = |min_percent: i32, min_previous: i64, size: i32, token: String| pb::ListAttentionCustomersRequest {
            reason: pb::AttentionReason::Decline as i32,
            start_time: Some(ts("2024-03-01T00:00:00Z")),
            end_time: Some(ts("2024-05-01T00:00:00Z")),
            min_drop_percent: min_percent,
            min_previous_count: min_previous,
            page_size: size,
            page_token: token,
            ..Default::default()
        };
        let mut analytics = app.analytics();
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = analytics
                .list_attention_customers(decline(0, 0, 2, token))
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.customers.iter().map(|x| (x.customer_id, x.previous_count, x.current_count, x.drop_ratio)));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        // 100% (Q), 80% (P), 50% (T, at the default threshold); R fell 40%, S rose.
        assert_eq!(seen, vec![(q, 4, 0, 1.0), (p, 10, 2, 0.8), (t, 2, 1, 0.5)]);
        let (channel, stop) = app.another_server(|c| c.report_rollups = false, None).await;
        let base = AnalyticsServiceClient::new(channel)
            .list_attention_customers(decline(0, 0, 10, String::new()))
            .await
            .unwrap()
            .into_inner();
        let from_base: Vec<(i64, i64, i64)> = base.customers.iter().map(|x| (x.customer_id, x.previous_count, x.current_count)).collect();
        assert_eq!(from_base, vec![(q, 4, 0), (p, 10, 2), (t, 2, 1)]);
        stop.send(true).ok();
        let page = analytics
            .list_attention_customers(decline(30, 3, 0, String::new()))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<i64> = page.customers.iter().map(|x| x.customer_id).collect();
        assert_eq!(ids, vec![q, p, r]);
        assert_eq!(page.customers[0].last_contact_time, Some(ts("2024-02-03T12:00:00Z")));
        assert_eq!(page.customers[0].name, "Q: 4 -> 0");
        let err = analytics
            .list_attention_customers(decline(101, -1, 0, String::new()))
            .await
            .unwrap_err();
        assert_invalid(&err, &["min_drop_percent", "min_previous_count"]);
    }
}

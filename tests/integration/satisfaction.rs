//! Customer satisfaction surveys: recording (one survey per communication or ticket,
//! idempotency, conflicts, every bad field named), the satisfaction report against
//! hand-computed figures in a non-UTC zone with business hours, merges and purges, and
//! the low-satisfaction attention list. Each test runs on SQLite and MariaDB.

use crm_comms::pb::satisfaction_survey::Target;
use crm_comms::pb::{self, business_hours_service_client::BusinessHoursServiceClient};
use tonic::Code;

use crate::backend_tests;
use crate::harness::{
    assert_invalid, assert_merged, assert_status, log_each, new_customer, ts, TestApp,
};

const PHONE: i32 = pb::Channel::Phone as i32;
const EMAIL: i32 = pb::Channel::Email as i32;
const CHAT: i32 = pb::Channel::Chat as i32;

/// An inbound communication of `customer_id` on `channel` at `at` (RFC 3339).
fn contact(customer_id: i64, channel: i32, at: &str) -> pb::Communication {
    pb::Communication {
        customer_id,
        channel,
        direction: pb::Direction::Inbound as i32,
        occur_time: Some(ts(at)),
        content: "hello".into(),
        ..Default::default()
    }
}

/// One communication; its id.
async fn communication(app: &TestApp, customer_id: i64, channel: i32, at: &str) -> i64 {
    log_each(app, [contact(customer_id, channel, at)]).await[0]
}

/// One open ticket of `customer_id` opened at `at`; its id.
async fn ticket(app: &TestApp, customer_id: i64, at: &str) -> i64 {
    app.customers()
        .create_service_ticket(pb::CreateServiceTicketRequest {
            service_ticket: Some(pb::ServiceTicket {
                customer_id,
                issue: "the parcel is late".into(),
                open_time: Some(ts(at)),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

/// A survey of `target`, sent at `sent` (None: now), with `score` and `comment`,
/// answered at `answered` (None: the server's default).
fn survey(
    target: Target,
    sent: Option<&str>,
    score: i32,
    comment: &str,
    answered: Option<&str>,
) -> pb::SatisfactionSurvey {
    pb::SatisfactionSurvey {
        target: Some(target),
        sent_time: sent.map(ts),
        score,
        comment: comment.into(),
        answer_time: answered.map(ts),
        ..Default::default()
    }
}

fn record_request(s: pb::SatisfactionSurvey, request_id: &str) -> pb::RecordSatisfactionRequest {
    pb::RecordSatisfactionRequest {
        survey: Some(s),
        request_id: request_id.into(),
    }
}

async fn record(
    app: &TestApp,
    s: pb::SatisfactionSurvey,
    request_id: &str,
) -> Result<pb::SatisfactionSurvey, tonic::Status> {
    app.communications()
        .record_satisfaction(record_request(s, request_id))
        .await
        .map(tonic::Response::into_inner)
}

/// Weekdays 09:00-18:00 in Shanghai.
async fn shanghai_office(app: &TestApp) -> i64 {
    use pb::Weekday::*;
    let windows = [Monday, Tuesday, Wednesday, Thursday, Friday]
        .into_iter()
        .map(|d| pb::BusinessHoursWindow {
            weekday: d as i32,
            start: "09:00".into(),
            end: "18:00".into(),
        })
        .collect();
    BusinessHoursServiceClient::new(app.channel.clone())
        .create_business_hours(pb::CreateBusinessHoursRequest {
            business_hours: Some(pb::BusinessHours {
                name: "Shanghai office".into(),
                time_zone: "Asia/Shanghai".into(),
                windows,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

/// `(sent, answered, rate, average, distribution, csat)` of a stats message.
type Figures = (i64, i64, f64, Option<f64>, Vec<i64>, Option<f64>);

fn figures(s: &Option<pb::SatisfactionStats>) -> Figures {
    let s = s.as_ref().expect("stats");
    let scores: Vec<i32> = s.score_counts.iter().map(|c| c.score).collect();
    assert_eq!(scores, vec![1, 2, 3, 4, 5], "every score listed, in order");
    (
        s.sent_count,
        s.answered_count,
        s.response_rate,
        s.average_score,
        s.score_counts.iter().map(|c| c.count).collect(),
        s.csat_percent,
    )
}

fn overall(f: &Option<pb::SatisfactionFigures>) -> Figures {
    figures(&f.as_ref().expect("figures").overall)
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

backend_tests! {
    async fn a_survey_is_sent_then_answered_once_and_retries_return_the_same_record(app: &TestApp) {
        let a = new_customer(app, "A").await;
        let c = communication(app, a, EMAIL, "2024-03-04T02:00:00Z").await;
        let sent = survey(Target::CommunicationId(c), Some("2024-03-04T03:00:00Z"), 0, "", None);
        let first = record(app, sent.clone(), "send-1").await.unwrap();
        assert_eq!((first.customer_id, first.channel, first.score), (a, EMAIL, 0));
        assert_eq!(first.target, Some(Target::CommunicationId(c)));
        assert_eq!(first.target_time, Some(ts("2024-03-04T02:00:00Z")));
        assert_eq!(first.sent_time, Some(ts("2024-03-04T03:00:00Z")));
        assert_eq!(first.answer_time, None);
        // A retry returns the same record; the key with another sent time is refused.
        assert_eq!(record(app, sent.clone(), "send-1").await.unwrap(), first);
        let moved = survey(Target::CommunicationId(c), Some("2024-03-04T04:00:00Z"), 0, "", None);
        let err = record(app, moved.clone(), "send-1").await.unwrap_err();
        assert_status(&err, Code::FailedPrecondition, "REQUEST_ID_REUSED");
        // Without the key, another sent time for the same target is a second survey.
        let err = record(app, moved, "").await.unwrap_err();
        assert_status(&err, Code::AlreadyExists, "SURVEY_ALREADY_SENT");

        // The answer completes the survey sent before.
        let answer = survey(Target::CommunicationId(c), None, 4, "quick and kind", Some("2024-03-04T05:00:00Z"));
        let answered = record(app, answer.clone(), "answer-1").await.unwrap();
        assert_eq!(answered.id, first.id);
        assert_eq!((answered.score, answered.comment.as_str()), (4, "quick and kind"));
        assert_eq!(answered.sent_time, first.sent_time);
        assert_eq!(answered.answer_time, Some(ts("2024-03-04T05:00:00Z")));
        assert_eq!(record(app, answer.clone(), "answer-1").await.unwrap(), answered);
        // The same answer without a key is the same record too.
        assert_eq!(record(app, answer.clone(), "").await.unwrap(), answered);
        // The sending key now answers the survey as it is.
        assert_eq!(record(app, sent, "send-1").await.unwrap(), answered);
        // A different answer: under the answer's key, and without a key.
        let other = survey(Target::CommunicationId(c), None, 2, "", None);
        let err = record(app, other.clone(), "answer-1").await.unwrap_err();
        assert_status(&err, Code::FailedPrecondition, "REQUEST_ID_REUSED");
        let err = record(app, other, "").await.unwrap_err();
        assert_status(&err, Code::AlreadyExists, "SURVEY_ALREADY_ANSWERED");

        // A ticket's survey, answered at once: no channel, sent when answered.
        let t = ticket(app, a, "2024-03-05T01:00:00Z").await;
        let direct = record(app, survey(Target::TicketId(t), None, 5, "", Some("2024-03-06T00:00:00Z")), "").await.unwrap();
        assert_eq!((direct.customer_id, direct.channel, direct.score), (a, 0, 5));
        assert_eq!(direct.target, Some(Target::TicketId(t)));
        assert_eq!(direct.target_time, Some(ts("2024-03-05T01:00:00Z")));
        assert_eq!(direct.sent_time, direct.answer_time, "sent when answered, as it was earlier than now");
        assert_eq!(app.count_where("satisfaction_surveys", "customer_id", a).await, 2);
    }

    async fn bad_surveys_name_every_bad_field_and_write_nothing(app: &TestApp) {
        let a = new_customer(app, "A").await;
        let c = communication(app, a, PHONE, "2024-03-04T02:00:00Z").await;
        let mut client = app.communications();
        let err = client
            .record_satisfaction(pb::RecordSatisfactionRequest { survey: None, request_id: "k".repeat(65) })
            .await
            .unwrap_err();
        assert_invalid(&err, &["survey", "request_id"]);
        let far = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
        let bad = pb::SatisfactionSurvey {
            target: None,
            sent_time: Some(ts(&far)),
            score: 0,
            comment: "no score".into(),
            answer_time: Some(ts("2024-03-04T05:00:00Z")),
            ..Default::default()
        };
        let err = record(app, bad, "").await.unwrap_err();
        assert_invalid(&err, &["survey.target", "survey.sent_time", "survey.comment", "survey.answer_time"]);
        let bad = pb::SatisfactionSurvey {
            target: Some(Target::CommunicationId(-3)),
            sent_time: Some(ts("2024-03-04T05:00:00Z")),
            score: 6,
            comment: "x".repeat(1001),
            ..Default::default()
        };
        let err = record(app, bad, "").await.unwrap_err();
        assert_invalid(&err, &["survey.communication_id", "survey.score", "survey.comment"]);
        let early = survey(Target::CommunicationId(c), Some("2024-03-04T05:00:00Z"), 3, "", Some("2024-03-04T04:00:00Z"));
        let err = record(app, early, "").await.unwrap_err();
        assert_invalid(&err, &["survey.answer_time"]);
        let err = record(app, survey(Target::TicketId(0), None, 3, "", None), "").await.unwrap_err();
        assert_invalid(&err, &["survey.ticket_id"]);

        // Targets that do not exist, or are gone.
        let err = record(app, survey(Target::CommunicationId(c + 1000), None, 0, "", None), "").await.unwrap_err();
        assert_status(&err, Code::NotFound, "COMMUNICATION_NOT_FOUND");
        let err = record(app, survey(Target::TicketId(999), None, 5, "", None), "").await.unwrap_err();
        assert_status(&err, Code::NotFound, "SERVICE_TICKET_NOT_FOUND");
        let gone = communication(app, a, PHONE, "2024-03-04T03:00:00Z").await;
        client.delete_communication(pb::DeleteCommunicationRequest { id: gone }).await.unwrap();
        let err = record(app, survey(Target::CommunicationId(gone), None, 5, "", None), "").await.unwrap_err();
        assert_status(&err, Code::NotFound, "COMMUNICATION_NOT_FOUND");
        app.customers()
            .delete_customer(pb::DeleteCustomerRequest { id: a, purge: false, etag: String::new() })
            .await
            .unwrap();
        let err = record(app, survey(Target::CommunicationId(c), None, 5, "", None), "").await.unwrap_err();
        assert_status(&err, Code::NotFound, "CUSTOMER_NOT_FOUND");
        assert_eq!(app.scalar("SELECT COUNT(*) FROM satisfaction_surveys").await, 0);
    }

    async fn the_report_matches_hand_computed_figures_in_shanghai_with_business_hours(app: &TestApp) {
        let office = shanghai_office(app).await;
        let a = new_customer(app, "A").await;
        let b = new_customer(app, "B").await;
        // Targets (Shanghai is UTC+8; 2024-03-04 is a Monday), inside the office's
        // 09:00-18:00 or not, and the surveys sent about them:
        // - a1 phone Mon 10:00 (inside): sent Mon 11:00 (bucket Mon), answered 5
        // - a2 email Mon 20:00 (outside): sent Tue 01:00 (bucket Tue; UTC Mon), answered 2
        // - b1 phone Sat 11:00 (outside): sent Mon 09:00 (bucket Mon), not answered
        // - b2 chat Tue 09:30 (inside): sent Tue 10:00 (bucket Tue), answered 4
        // - ticket of A opened Tue 17:59 (inside): sent Tue 18:30 (bucket Tue), answered 1
        // - a3 Sun 23:59:59, sent then: before the range
        let a1 = communication(app, a, PHONE, "2024-03-04T10:00:00+08:00").await;
        let a2 = communication(app, a, EMAIL, "2024-03-04T20:00:00+08:00").await;
        let b1 = communication(app, b, PHONE, "2024-03-02T11:00:00+08:00").await;
        let b2 = communication(app, b, CHAT, "2024-03-05T09:30:00+08:00").await;
        let t = ticket(app, a, "2024-03-05T17:59:00+08:00").await;
        let a3 = communication(app, a, PHONE, "2024-03-03T23:59:59+08:00").await;
        let answered = "2024-03-06T12:00:00+08:00";
        for (target, sent, score) in [
            (Target::CommunicationId(a1), "2024-03-04T11:00:00+08:00", 5),
            (Target::CommunicationId(a2), "2024-03-05T01:00:00+08:00", 2),
            (Target::CommunicationId(b1), "2024-03-04T09:00:00+08:00", 0),
            (Target::CommunicationId(b2), "2024-03-05T10:00:00+08:00", 4),
            (Target::TicketId(t), "2024-03-05T18:30:00+08:00", 1),
            (Target::CommunicationId(a3), "2024-03-03T23:59:59+08:00", 1),
        ] {
            let answer = (score > 0).then_some(answered);
            record(app, survey(target, Some(sent), score, "", answer), "").await.unwrap();
        }
        let request = pb::GetSatisfactionReportRequest {
            start_time: Some(ts("2024-03-04T00:00:00+08:00")),
            end_time: Some(ts("2024-03-06T00:00:00+08:00")),
            time_zone: "Asia/Shanghai".into(),
            granularity: pb::Granularity::Day as i32,
            business_hours_id: office,
            ..Default::default()
        };
        let r = app.analytics().get_satisfaction_report(request.clone()).await.unwrap().into_inner();
        assert_eq!((r.time_zone.as_str(), r.business_hours_id), ("Asia/Shanghai", office));
        // 5 sent, 4 answered (5, 2, 4, 1): mean 3, half of them 4 or 5.
        let total = r.total.as_ref().unwrap();
        assert_eq!(figures(&total.overall), (5, 4, 0.8, Some(3.0), vec![1, 1, 0, 1, 1], Some(50.0)));
        // Inside: a1 (5), b2 (4), the ticket (1); outside: a2 (2), b1 (unanswered).
        let inside = figures(&total.inside_business_hours);
        assert_eq!((inside.0, inside.1, inside.4.clone()), (3, 3, vec![1, 0, 0, 1, 1]));
        assert!(close(inside.3, 10.0 / 3.0) && close(inside.5, 200.0 / 3.0), "{inside:?}");
        assert_eq!(figures(&total.outside_business_hours), (2, 1, 0.5, Some(2.0), vec![0, 1, 0, 0, 0], Some(0.0)));

        let channels: Vec<(i32, i64, i64, Option<f64>)> = r
            .channels
            .iter()
            .map(|c| {
                let f = overall(&c.figures);
                (c.channel, f.0, f.1, f.3)
            })
            .collect();
        assert_eq!(channels, vec![(PHONE, 2, 1, Some(5.0)), (EMAIL, 1, 1, Some(2.0)), (CHAT, 1, 1, Some(4.0))]);
        assert_eq!(overall(&r.service_tickets), (1, 1, 1.0, Some(1.0), vec![1, 0, 0, 0, 0], Some(0.0)));

        // Two Shanghai days: Monday a1 and b1, Tuesday a2, b2 and the ticket.
        let starts: Vec<_> = r.buckets.iter().map(|b| b.start_time.unwrap()).collect();
        assert_eq!(starts, vec![ts("2024-03-04T00:00:00+08:00"), ts("2024-03-05T00:00:00+08:00")]);
        let monday = r.buckets[0].figures.as_ref().unwrap();
        assert_eq!(figures(&monday.overall), (2, 1, 0.5, Some(5.0), vec![0, 0, 0, 0, 1], Some(100.0)));
        assert_eq!(figures(&monday.inside_business_hours).0, 1);
        assert_eq!(figures(&monday.outside_business_hours), (1, 0, 0.0, None, vec![0; 5], None));
        let tuesday = overall(&r.buckets[1].figures);
        assert_eq!((tuesday.0, tuesday.1), (3, 3));
        assert!(close(tuesday.3, 7.0 / 3.0) && close(tuesday.5, 100.0 / 3.0), "{tuesday:?}");

        // In UTC the same range touches three days, and a2 was sent on Monday.
        let utc = app
            .analytics()
            .get_satisfaction_report(pb::GetSatisfactionReportRequest { time_zone: String::new(), business_hours_id: 0, ..request.clone() })
            .await
            .unwrap()
            .into_inner();
        let sent: Vec<i64> = utc.buckets.iter().map(|b| overall(&b.figures).0).collect();
        assert_eq!(sent, vec![0, 3, 2]);
        assert_eq!(utc.total.unwrap().inside_business_hours, None, "no split without a schedule");

        // Scope: one customer; one channel (ticket surveys then left out).
        let only_b = app
            .analytics()
            .get_satisfaction_report(pb::GetSatisfactionReportRequest { customer_ids: vec![b], ..request.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(overall(&only_b.total).0, 2);
        let phone = app
            .analytics()
            .get_satisfaction_report(pb::GetSatisfactionReportRequest { channels: vec![PHONE], ..request.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(overall(&phone.total), (2, 1, 0.5, Some(5.0), vec![0, 0, 0, 0, 1], Some(100.0)));
        assert_eq!(overall(&phone.service_tickets).0, 0);

        // Bad requests name every bad field.
        let err = app
            .analytics()
            .get_satisfaction_report(pb::GetSatisfactionReportRequest {
                customer_ids: vec![0],
                start_time: None,
                time_zone: "Mars/Base".into(),
                channels: vec![42],
                business_hours_id: -1,
                granularity: 9,
                ..request.clone()
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["customer_ids[0]", "start_time", "time_zone", "channels[0]", "business_hours_id", "granularity"]);
        let err = app
            .analytics()
            .get_satisfaction_report(pb::GetSatisfactionReportRequest { business_hours_id: office + 1, ..request })
            .await
            .unwrap_err();
        assert_status(&err, Code::NotFound, "BUSINESS_HOURS_NOT_FOUND");
    }

    async fn a_merge_moves_surveys_and_a_purge_erases_them(app: &TestApp) {
        let survivor = new_customer(app, "S").await;
        let merged = new_customer(app, "M").await;
        let s1 = communication(app, survivor, PHONE, "2024-03-04T02:00:00Z").await;
        let m1 = communication(app, merged, CHAT, "2024-03-04T03:00:00Z").await;
        let m2 = communication(app, merged, CHAT, "2024-03-04T04:00:00Z").await;
        // Both use the key "csat": the merged customer's survey moves without it.
        record(app, survey(Target::CommunicationId(s1), Some("2024-03-04T05:00:00Z"), 5, "", None), "csat").await.unwrap();
        let moved = record(app, survey(Target::CommunicationId(m1), Some("2024-03-04T05:00:00Z"), 1, "", None), "csat").await.unwrap();
        record(app, survey(Target::CommunicationId(m2), Some("2024-03-04T05:00:00Z"), 0, "", None), "m2").await.unwrap();
        app.customers()
            .merge_customers(pb::MergeCustomersRequest {
                surviving_customer_id: survivor,
                merged_customer_ids: vec![merged],
                request_id: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(app.count_where("satisfaction_surveys", "customer_id", survivor).await, 3);
        assert_eq!(app.count_where("satisfaction_surveys", "customer_id", merged).await, 0);
        // The moved survey belongs to the survivor now, and its answer completes there.
        let again = record(app, survey(Target::CommunicationId(m1), None, 1, "", None), "").await.unwrap();
        assert_eq!((again.id, again.customer_id), (moved.id, survivor));
        let answered = record(app, survey(Target::CommunicationId(m2), None, 3, "", None), "m2-answer").await.unwrap();
        assert_eq!(answered.customer_id, survivor);
        // The moved key came along: a retry under the survivor finds its survey.
        let retried = record(app, survey(Target::CommunicationId(m2), Some("2024-03-04T05:00:00Z"), 0, "", None), "m2").await.unwrap();
        assert_eq!(retried.id, answered.id);

        let request = pb::GetSatisfactionReportRequest {
            customer_ids: vec![survivor],
            start_time: Some(ts("2024-03-04T00:00:00Z")),
            end_time: Some(ts("2024-03-05T00:00:00Z")),
            ..Default::default()
        };
        let r = app.analytics().get_satisfaction_report(request.clone()).await.unwrap().into_inner();
        let total = overall(&r.total);
        assert_eq!((total.0, total.1, total.2, total.3, total.4.clone()), (3, 3, 1.0, Some(3.0), vec![1, 0, 1, 0, 1]));
        assert!(close(total.5, 100.0 / 3.0), "{total:?}");
        let err = app
            .analytics()
            .get_satisfaction_report(pb::GetSatisfactionReportRequest { customer_ids: vec![merged], ..request.clone() })
            .await
            .unwrap_err();
        assert_merged(&err, merged, survivor);

        app.customers()
            .delete_customer(pb::DeleteCustomerRequest { id: survivor, purge: true, etag: String::new() })
            .await
            .unwrap();
        assert_eq!(app.scalar("SELECT COUNT(*) FROM satisfaction_surveys").await, 0);
        let r = app
            .analytics()
            .get_satisfaction_report(pb::GetSatisfactionReportRequest { customer_ids: Vec::new(), ..request })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(overall(&r.total).0, 0);
    }

    async fn low_satisfaction_lists_the_lowest_averages_first_in_pages(app: &TestApp) {
        let names = ["C1", "C2", "C3", "C4", "C5", "C6", "C7"];
        let mut ids = Vec::new();
        for name in names {
            ids.push(new_customer(app, name).await);
        }
        let [c1, c2, c3, c4, c5, c6, c7] = ids[..] else { unreachable!() };
        // Answers in March: C1 1 and 2 (1.5); C2 2 (2.0, one answer); C3 2, 2, 2 (2.0,
        // three); C4 3; C5 1 but deleted; C6 1 answered in April; C7 only sent.
        let answers = [
            (c1, 1, "2024-03-02T00:00:00Z"),
            (c1, 2, "2024-03-03T00:00:00Z"),
            (c2, 2, "2024-03-04T00:00:00Z"),
            (c3, 2, "2024-03-05T00:00:00Z"),
            (c3, 2, "2024-03-06T00:00:00Z"),
            (c3, 2, "2024-03-07T00:00:00Z"),
            (c4, 3, "2024-03-08T00:00:00Z"),
            (c5, 1, "2024-03-09T00:00:00Z"),
            (c6, 1, "2024-04-01T00:00:00Z"),
            (c7, 0, "2024-03-10T00:00:00Z"),
        ];
        for (customer, score, at) in answers {
            let c = communication(app, customer, EMAIL, "2024-03-01T00:00:00Z").await;
            let answered = (score > 0).then_some(at);
            record(app, survey(Target::CommunicationId(c), Some("2024-03-01T12:00:00Z"), score, "", answered), "").await.unwrap();
        }
        app.customers()
            .delete_customer(pb::DeleteCustomerRequest { id: c5, purge: false, etag: String::new() })
            .await
            .unwrap();
        let request = |page_size: i32, page_token: String| pb::ListAttentionCustomersRequest {
            reason: pb::AttentionReason::LowSatisfaction as i32,
            start_time: Some(ts("2024-03-01T00:00:00Z")),
            end_time: Some(ts("2024-04-01T00:00:00Z")),
            page_size,
            page_token,
            ..Default::default()
        };
        let mut analytics = app.analytics();
        let first = analytics.list_attention_customers(request(2, String::new())).await.unwrap().into_inner();
        let got: Vec<(i64, f64, i64)> = first.customers.iter().map(|c| (c.customer_id, c.average_score, c.answer_count)).collect();
        assert_eq!(got, vec![(c1, 1.5, 2), (c3, 2.0, 3)]);
        assert_eq!(first.customers[0].name, "C1");
        assert_eq!(first.customers[0].last_contact_time, Some(ts("2024-03-01T00:00:00Z")));
        assert!(!first.next_page_token.is_empty());
        let second = analytics.list_attention_customers(request(2, first.next_page_token.clone())).await.unwrap().into_inner();
        let got: Vec<(i64, f64, i64)> = second.customers.iter().map(|c| (c.customer_id, c.average_score, c.answer_count)).collect();
        assert_eq!(got, vec![(c2, 2.0, 1)]);
        assert!(second.next_page_token.is_empty());

        // A higher threshold takes C4 in; two answers at least leaves C2 out.
        let wider = analytics
            .list_attention_customers(pb::ListAttentionCustomersRequest { max_average_score: 3.0, ..request(10, String::new()) })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<i64> = wider.customers.iter().map(|c| c.customer_id).collect();
        assert_eq!(ids, vec![c1, c3, c2, c4]);
        let repeat = analytics
            .list_attention_customers(pb::ListAttentionCustomersRequest { min_answer_count: 2, ..request(10, String::new()) })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<i64> = repeat.customers.iter().map(|c| c.customer_id).collect();
        assert_eq!(ids, vec![c1, c3]);
        // A token is bound to the threshold it was issued under.
        let err = analytics
            .list_attention_customers(pb::ListAttentionCustomersRequest { max_average_score: 3.0, ..request(2, first.next_page_token) })
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_token"]);
        let err = analytics
            .list_attention_customers(pb::ListAttentionCustomersRequest {
                max_average_score: 5.5,
                min_answer_count: -1,
                start_time: None,
                ..request(2, String::new())
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["max_average_score", "min_answer_count", "start_time"]);
    }
}

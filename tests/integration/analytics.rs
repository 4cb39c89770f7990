//! AnalyticsService on both databases, over datasets whose answers are known by
//! construction: DST days, half- and quarter-hour zones, gaps, literal keywords, Chinese.

use std::time::Duration;

use crm_comms::pb::{self, communication::Details};
use tonic::{metadata::MetadataValue, Code, Request};
use tonic_types::StatusExt;

use crate::backend_tests;
use crate::harness::{
    assert_invalid, assert_status, import, log_each, new_customer, note, ts,
    AnalyticsServiceClient, TestApp,
};

const PHONE: i32 = pb::Channel::Phone as i32;
const EMAIL: i32 = pb::Channel::Email as i32;
const CHAT: i32 = pb::Channel::Chat as i32;

fn comm(customer_id: i64, channel: i32, at: &str, content: &str) -> pb::Communication {
    pb::Communication {
        customer_id,
        channel,
        direction: pb::Direction::Inbound as i32,
        occur_time: Some(ts(at)),
        content: content.to_owned(),
        ..Default::default()
    }
}

/// Stores one communication at each instant.
async fn at_times(app: &TestApp, customer_id: i64, times: &[&str]) {
    import(
        app,
        times
            .iter()
            .map(|t| comm(customer_id, CHAT, t, "hi"))
            .collect(),
    )
    .await;
}

fn freq(start: &str, end: &str, g: pb::Granularity, zone: &str) -> pb::GetFrequencyReportRequest {
    pb::GetFrequencyReportRequest {
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
        granularity: g as i32,
        time_zone: zone.to_owned(),
        ..Default::default()
    }
}

/// Runs a report and checks the invariants every report keeps.
async fn report(
    app: &TestApp,
    req: pb::GetFrequencyReportRequest,
) -> pb::GetFrequencyReportResponse {
    let r = app
        .analytics()
        .get_frequency_report(req.clone())
        .await
        .unwrap()
        .into_inner();
    let sum: i64 = r.buckets.iter().map(|b| b.count).sum();
    assert_eq!(r.total_count, sum, "total equals the sum of the buckets");
    let channel_sum: i64 = r.channel_counts.iter().map(|c| c.count).sum();
    assert_eq!(r.total_count, channel_sum);
    assert_eq!(
        r.per_day_average,
        r.total_count as f64 / f64::from(r.span_days)
    );
    assert_eq!(r.buckets.first().unwrap().start_time, req.start_time);
    assert_eq!(r.buckets.last().unwrap().end_time, req.end_time);
    for w in r.buckets.windows(2) {
        assert_eq!(w[0].end_time, w[1].start_time, "buckets are contiguous");
    }
    for b in &r.buckets {
        assert_eq!(
            b.count,
            b.channel_counts.iter().map(|c| c.count).sum::<i64>()
        );
    }
    r
}

fn counts(r: &pb::GetFrequencyReportResponse) -> Vec<i64> {
    r.buckets.iter().map(|b| b.count).collect()
}

fn hours(b: &pb::FrequencyBucket) -> i64 {
    (b.end_time.unwrap().seconds - b.start_time.unwrap().seconds) / 3600
}

fn content_req(start: &str, end: &str) -> pb::GetContentReportRequest {
    pb::GetContentReportRequest {
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
        ..Default::default()
    }
}

backend_tests! {
    async fn day_buckets_follow_new_york_and_berlin_dst(app: &TestApp) {
        let c = new_customer(app, "dst").await;
        at_times(app, c, &[
            // New York, spring forward on 2024-03-10 (a 23-hour day).
            "2024-03-10T04:59:59Z", "2024-03-10T05:00:00Z", "2024-03-10T06:59:00Z",
            "2024-03-10T07:00:00Z", "2024-03-11T03:59:59Z", "2024-03-11T04:00:00Z",
            // New York, fall back on 2024-11-03 (a 25-hour day; 01:30 happens twice).
            "2024-11-03T03:59:00Z", "2024-11-03T05:30:00Z", "2024-11-03T06:30:00Z",
            "2024-11-04T04:30:00Z", "2024-11-04T05:00:00Z",
            // Berlin, 2024-03-31 (23 hours) and 2024-10-27 (25 hours).
            "2024-03-31T00:59:00Z", "2024-03-31T01:00:00Z", "2024-03-31T21:59:00Z",
            "2024-03-31T22:00:00Z",
            "2024-10-27T00:30:00Z", "2024-10-27T01:30:00Z", "2024-10-27T22:59:00Z",
            "2024-10-27T23:00:00Z",
        ]).await;
        let ny = "America/New_York";
        let day = pb::Granularity::Day;
        let r = report(app, freq("2024-03-09T05:00:00Z", "2024-03-12T04:00:00Z", day, ny)).await;
        assert_eq!(counts(&r), vec![1, 4, 1]);
        assert_eq!(r.buckets.iter().map(hours).collect::<Vec<_>>(), vec![24, 23, 24]);
        assert_eq!(r.span_days, 3);
        assert_eq!(r.per_day_average, 2.0);
        assert_eq!(r.time_zone, ny);

        let r = report(app, freq("2024-11-02T04:00:00Z", "2024-11-05T05:00:00Z", day, ny)).await;
        assert_eq!(counts(&r), vec![1, 3, 1]);
        assert_eq!(r.buckets.iter().map(hours).collect::<Vec<_>>(), vec![24, 25, 24]);
        assert_eq!(r.per_day_average, 5.0 / 3.0);

        let berlin = "Europe/Berlin";
        let r = report(app, freq("2024-03-30T23:00:00Z", "2024-04-01T22:00:00Z", day, berlin)).await;
        assert_eq!(counts(&r), vec![3, 1]);
        assert_eq!(r.buckets.iter().map(hours).collect::<Vec<_>>(), vec![23, 24]);
        let r = report(app, freq("2024-10-26T22:00:00Z", "2024-10-28T23:00:00Z", day, berlin)).await;
        assert_eq!(counts(&r), vec![3, 1]);
        assert_eq!(r.buckets.iter().map(hours).collect::<Vec<_>>(), vec![25, 24]);
        assert_eq!(r.customer_count, 1);
    }

    async fn hour_buckets_in_kolkata_and_kathmandu_start_off_the_utc_hour(app: &TestApp) {
        let c = new_customer(app, "asia").await;
        at_times(app, c, &[
            "2024-05-01T00:10:00Z", "2024-05-01T00:30:00Z", "2024-05-01T01:29:59Z",
            "2024-05-01T01:30:00Z", "2024-05-01T02:45:00Z",
            "2024-06-01T00:15:00Z", "2024-06-01T01:14:59Z", "2024-06-01T01:15:00Z",
            "2024-06-01T03:14:00Z",
        ]).await;
        let hour = pb::Granularity::Hour;
        let r = report(app, freq("2024-05-01T00:00:00Z", "2024-05-01T03:00:00Z", hour, "Asia/Kolkata")).await;
        let starts: Vec<_> = r.buckets.iter().map(|b| b.start_time.unwrap()).collect();
        assert_eq!(starts, vec![
            ts("2024-05-01T00:00:00Z"), ts("2024-05-01T00:30:00Z"),
            ts("2024-05-01T01:30:00Z"), ts("2024-05-01T02:30:00Z"),
        ]);
        assert_eq!(counts(&r), vec![1, 2, 1, 1]);
        let r = report(app, freq("2024-06-01T00:15:00Z", "2024-06-01T03:15:00Z", hour, "Asia/Kathmandu")).await;
        assert_eq!(counts(&r), vec![2, 1, 1]);
        assert!(r.buckets.iter().all(|b| b.start_time.unwrap().seconds % 3600 == 900));
    }

    async fn shanghai_days_weeks_and_months_use_local_dates(app: &TestApp) {
        let c = new_customer(app, "shanghai").await;
        import(app, vec![
            comm(c, CHAT, "2024-01-01T15:59:00Z", "x"),
            comm(c, PHONE, "2024-01-01T16:30:00Z", "x"),
            comm(c, EMAIL, "2024-01-01T16:30:00Z", "x"),
            comm(c, CHAT, "2024-01-31T16:30:00Z", "x"),
            comm(c, CHAT, "2024-02-29T15:59:00Z", "x"),
            comm(c, CHAT, "2024-02-29T16:00:00Z", "x"),
        ]).await;
        let sh = "Asia/Shanghai";
        // A UTC-midnight range touches three Shanghai dates; 16:30Z is already Jan 2.
        let r = report(app, freq("2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z", pb::Granularity::Day, sh)).await;
        assert_eq!(r.span_days, 3);
        assert_eq!(counts(&r), vec![1, 2, 0]);
        assert_eq!(r.buckets[1].start_time, Some(ts("2024-01-01T16:00:00Z")));
        assert_eq!(r.buckets[1].channel_counts, vec![
            pb::ChannelCount { channel: PHONE, count: 1 },
            pb::ChannelCount { channel: EMAIL, count: 1 },
        ]);
        assert_eq!(r.per_day_average, 1.0);

        let r = report(app, freq("2023-12-31T16:00:00Z", "2024-03-31T16:00:00Z", pb::Granularity::Month, sh)).await;
        assert_eq!(counts(&r), vec![3, 2, 1]);
        assert_eq!(r.span_days, 91);
        assert_eq!(r.first_contact_time, Some(ts("2024-01-01T15:59:00Z")));
        assert_eq!(r.last_contact_time, Some(ts("2024-02-29T16:00:00Z")));

        // ISO weeks, Monday first: 2024-01-01 is a Monday in UTC.
        let r = report(app, freq("2024-01-01T00:00:00Z", "2024-01-22T00:00:00Z", pb::Granularity::Week, "UTC")).await;
        assert_eq!(counts(&r), vec![3, 0, 0]);
        assert_eq!(r.buckets.iter().map(hours).collect::<Vec<_>>(), vec![168, 168, 168]);
        // Filters: channel and direction.
        let mut req = freq("2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z", pb::Granularity::Month, "UTC");
        req.channels = vec![PHONE, EMAIL];
        assert_eq!(report(app, req.clone()).await.total_count, 2);
        req.direction = pb::Direction::Outbound as i32;
        assert_eq!(report(app, req).await.total_count, 0);
    }

    async fn gaps_and_top_customers_on_a_hand_made_sequence(app: &TestApp) {
        let a = new_customer(app, "a").await;
        let b = new_customer(app, "b").await;
        let c = new_customer(app, "c").await;
        // a: gaps of 1 h, 2 h, 4 h; b: one gap of 10 h; c: one gap of 30 min.
        at_times(app, a, &["2024-05-01T00:00:00Z", "2024-05-01T01:00:00Z", "2024-05-01T03:00:00Z", "2024-05-01T07:00:00Z"]).await;
        at_times(app, b, &["2024-05-01T00:00:00Z", "2024-05-01T10:00:00Z"]).await;
        at_times(app, c, &["2024-05-02T00:00:00Z", "2024-05-02T00:30:00Z"]).await;
        let hour = 3600;
        let mut req = freq("2024-05-01T00:00:00Z", "2024-05-03T00:00:00Z", pb::Granularity::Day, "UTC");
        req.customer_ids = vec![a];
        let r = report(app, req.clone()).await;
        assert_eq!(r.mean_gap.unwrap().seconds, 7 * hour / 3);
        assert_eq!(r.median_gap.unwrap().seconds, 2 * hour);

        req.customer_ids = vec![a, b];
        let r = report(app, req.clone()).await;
        assert_eq!(r.mean_gap, None, "gap stats of wide scopes only on request");
        req.include_gap_stats = true;
        let r = report(app, req.clone()).await;
        assert_eq!(r.mean_gap.unwrap().seconds, 17 * hour / 4);
        assert_eq!(r.median_gap.unwrap().seconds, 3 * hour);
        assert_eq!(r.customer_count, 2);

        req.customer_ids = vec![];
        req.top_n = 2;
        let r = report(app, req).await;
        // gaps 0.5, 1, 2, 4, 10 h: median 2 h, mean 17.5 / 5 h.
        assert_eq!(r.median_gap.unwrap().seconds, 2 * hour);
        assert_eq!(r.mean_gap.unwrap().seconds, 17 * hour / 5 + 1800 / 5);
        assert_eq!(r.customer_count, 3);
        let top: Vec<_> = r.top_customers.iter().map(|t| (t.customer_id, t.count)).collect();
        assert_eq!(top, vec![(a, 4), (b, 2)], "by count, ties by id");
        assert_eq!(r.top_customers[0].per_day_average, 2.0);
        assert_eq!(r.top_customers[0].last_contact_time, Some(ts("2024-05-01T07:00:00Z")));
    }

    async fn keywords_are_literal_and_case_insensitive(app: &TestApp) {
        let c = new_customer(app, "kw").await;
        let d = new_customer(app, "kw2").await;
        import(app, vec![
            comm(c, CHAT, "2024-05-01T00:00:00Z", "Big sale: 50% off today"),
            comm(c, CHAT, "2024-05-01T01:00:00Z", "Big sale: 500 off today"),
            comm(c, CHAT, "2024-05-01T02:00:00Z", "the a_b key"),
            comm(d, CHAT, "2024-05-01T03:00:00Z", "the axb key"),
            comm(d, CHAT, "2024-05-01T04:00:00Z", r"saved in C:\temp"),
            comm(d, CHAT, "2024-05-01T05:00:00Z", "saved in C:temp"),
            comm(d, CHAT, "2024-05-01T06:00:00Z", "ÉCOLE and STRASSE"),
        ]).await;
        let mut req = content_req("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z");
        req.keywords = vec!["50%".into(), "A_B".into(), r"\".into(), "école".into(), "sale".into()];
        req.patterns = vec![r"\b\d{3}\b".into()];
        req.sample_limit = 3;
        let r = app.analytics().get_content_report(req).await.unwrap().into_inner();
        assert_eq!(r.scanned_count, 7);
        let k: Vec<_> = r.keywords.iter().map(|m| (m.query.as_str(), m.message_count, m.customer_count)).collect();
        assert_eq!(k, vec![("50%", 1, 1), ("A_B", 1, 1), (r"\", 1, 1), ("école", 1, 1), ("sale", 2, 1)]);
        assert_eq!(r.patterns[0].message_count, 1);
        assert_eq!(r.samples.len(), 3);
        assert_eq!(r.samples[0].snippet, "Big sale: 50% off today");
        assert_eq!(r.samples[0].matched, "sale");
        assert_eq!(r.samples[1].matched, "sale");
        assert_eq!(r.samples[2].matched, "A_B");
        assert_eq!(r.samples[2].customer_id, c);
    }

    async fn samples_are_the_oldest_matches_whatever_the_id_order(app: &TestApp) {
        let c = new_customer(app, "order").await;
        // Imported newest first, so ids run against time; the all-customer scan reads in
        // id order, the one-customer scan in time order.
        let items: Vec<_> = (0..50)
            .rev()
            .map(|i| comm(c, CHAT, &format!("2024-06-01T00:{i:02}:00Z"), &format!("退款 refund #{i}")))
            .collect();
        import(app, items).await;
        for customer_ids in [vec![], vec![c]] {
            let mut req = content_req("2024-06-01T00:00:00Z", "2024-06-02T00:00:00Z");
            req.customer_ids = customer_ids.clone();
            req.keywords = vec!["REFUND".into()];
            req.sample_limit = 4;
            let r = app.analytics().get_content_report(req).await.unwrap().into_inner();
            assert_eq!(r.scanned_count, 50);
            assert_eq!(r.keywords[0].message_count, 50);
            let snippets: Vec<_> = r.samples.iter().map(|s| s.snippet.as_str()).collect();
            assert_eq!(snippets, vec!["退款 refund #0", "退款 refund #1", "退款 refund #2", "退款 refund #3"], "scope {customer_ids:?}");
        }
    }

    async fn chinese_top_terms_are_words_without_stop_words(app: &TestApp) {
        let c = new_customer(app, "zh").await;
        let texts = [
            "我想申请退款，订单还没有发货",
            "请问退款什么时候到账？",
            "物流太慢了，我们要退款",
            "退款已经处理，谢谢",
            "商品质量有问题，需要换货",
            "Refund requested for the order",
        ];
        import(app, texts.iter().enumerate().map(|(i, t)| {
            comm(c, CHAT, &format!("2024-05-01T0{i}:00:00Z"), t)
        }).collect()).await;
        let mut req = content_req("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z");
        req.top_terms = 20;
        let r = app.analytics().get_content_report(req).await.unwrap().into_inner();
        assert_eq!(r.top_terms[0], pb::TermCount { term: "退款".into(), count: 4 });
        for t in &r.top_terms {
            assert!(t.term.chars().count() >= 2, "single character {:?}", t.term);
            assert!(!["我们", "什么", "请问", "已经", "谢谢", "the", "for"].contains(&t.term.as_str()), "stop word {:?}", t.term);
        }
        assert!(r.top_terms.iter().any(|t| t.term == "refund"), "{:?}", r.top_terms);
    }

    async fn invalid_and_catastrophic_patterns(app: &TestApp) {
        let c = new_customer(app, "re").await;
        let long = format!("{}!", "a".repeat(60_000));
        import(app, vec![comm(c, CHAT, "2024-05-01T00:00:00Z", &long)]).await;
        let mut req = content_req("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z");
        req.patterns = vec!["(".into(), "ok".into()];
        let err = app.analytics().get_content_report(req.clone()).await.unwrap_err();
        assert_invalid(&err, &["patterns[0]"]);
        let details = err.get_error_details();
        let v = &details.bad_request().unwrap().field_violations[0];
        assert!(v.description.contains("\"(\""), "{}", v.description);

        req.patterns = vec!["(a+)+$".into()];
        req.keywords = vec!["aaa".into()];
        req.sample_limit = 1;
        // A backtracking engine would need about 2^60000 steps here; the linear-time one
        // answers at once. The bound only turns a hang into a failure: no timing is asserted.
        let r = tokio::time::timeout(Duration::from_secs(120), app.analytics().get_content_report(req))
            .await
            .expect("the report finishes")
            .unwrap()
            .into_inner();
        assert_eq!(r.scanned_count, 1);
        assert_eq!(r.patterns[0].message_count, 0);
        assert_eq!(r.keywords[0].message_count, 1);
        assert_eq!(r.samples[0].snippet.chars().count(), 3 + 40 + 1);
    }

    async fn invalid_requests_name_every_field(app: &TestApp) {
        let mut client = app.analytics();
        let mut req = freq("2024-05-02T00:00:00Z", "2024-05-01T00:00:00Z", pb::Granularity::Day, "Mars/Olympus_Mons");
        req.top_n = 5000;
        let err = client.get_frequency_report(req).await.unwrap_err();
        assert_invalid(&err, &["time_zone", "end_time", "top_n"]);

        let mut req = pb::GetFrequencyReportRequest { customer_ids: vec![0, 5, -1], direction: 9, channels: vec![0], ..Default::default() };
        req.granularity = 42;
        let err = client.get_frequency_report(req).await.unwrap_err();
        assert_invalid(&err, &["start_time", "end_time", "customer_ids[0]", "customer_ids[2]", "direction", "channels[0]", "granularity"]);

        let req = freq("2024-01-01T00:00:00Z", "2025-01-02T00:00:00Z", pb::Granularity::Hour, "UTC");
        assert_invalid(&client.get_frequency_report(req).await.unwrap_err(), &["end_time"]);
        let req = freq("2014-01-01T00:00:00Z", "2024-01-02T00:00:00Z", pb::Granularity::Day, "UTC");
        assert_invalid(&client.get_frequency_report(req).await.unwrap_err(), &["end_time"]);

        let mut req = content_req("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z");
        req.keywords = vec![String::new()];
        req.top_terms = 201;
        req.sample_limit = -1;
        let err = client.get_content_report(req).await.unwrap_err();
        assert_invalid(&err, &["end_time", "keywords[0]", "top_terms", "sample_limit"]);

        let req = pb::GetCustomerInsightsRequest { customer_id: 0, time_zone: "Nowhere".into(), top_terms: 300, ..Default::default() };
        assert_invalid(&client.get_customer_insights(req).await.unwrap_err(), &["customer_id", "time_zone", "top_terms"]);
        let req = pb::GetCustomerInsightsRequest { customer_id: 987_654, ..Default::default() };
        assert_status(&client.get_customer_insights(req).await.unwrap_err(), Code::NotFound, "CUSTOMER_NOT_FOUND");
    }

    async fn short_deadlines_end_with_deadline_exceeded(app: &TestApp) {
        let c = new_customer(app, "deadline").await;
        import(app, (0..3000).map(|i| {
            comm(c, CHAT, &format!("2024-05-01T{:02}:{:02}:{:02}Z", i / 3600, (i / 60) % 60, i % 60),
                 "退款 refund request number something long enough to tokenize")
        }).collect()).await;
        let mut req = content_req("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z");
        req.keywords = vec!["refund".into()];
        req.top_terms = 10;
        // A transport with no client-side timer: tonic's Channel would time the call out
        // itself after `grpc-timeout` and answer CANCELLED, racing the server's answer.
        // Here the header only reaches the server, and the answer must be exactly the
        // handler's DEADLINE_EXCEEDED.
        let mut untimed = AnalyticsServiceClient::new(app.untimed_channel().await);
        fn with_timeout<T>(value: &'static str, message: T) -> Request<T> {
            let mut r = Request::new(message);
            r.metadata_mut().insert("grpc-timeout", MetadataValue::from_static(value));
            r
        }

        // Below the 50 ms margin the internal deadline is the arrival: answered at once.
        // (Not 1-5 ms: tonic's own server-side timer answers CANCELLED "Timeout expired" at
        // the timeout, and on a loaded machine the handler may not even be polled by then.)
        for value in ["30m", "40m", "45000u"] {
            let err = untimed.get_content_report(with_timeout(value, req.clone())).await.unwrap_err();
            assert_status(&err, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
        }
        let r = with_timeout("40m", freq("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z", pb::Granularity::Hour, "UTC"));
        assert_status(&untimed.get_frequency_report(r).await.unwrap_err(), Code::DeadlineExceeded, "DEADLINE_EXCEEDED");

        // The server still answers normally afterwards, with a generous deadline too.
        let mut client = app.analytics();
        let mut r = Request::new(req);
        r.set_timeout(Duration::from_secs(60));
        let ok = client.get_content_report(r).await.unwrap().into_inner();
        assert_eq!(ok.scanned_count, 3000);
        assert_eq!(ok.keywords[0].message_count, 3000);
        assert_eq!(ok.top_terms[0].count, 3000);
    }

    async fn customer_insights_sum_many_transactions_as_they_sum_a_few(app: &TestApp) {
        // 70 orders, one a day in May and June 2024, in two currencies: more than
        // insights sum in memory over the whole range, a few over a week.
        let c = new_customer(app, "busy buyer").await;
        let mut customers = app.customers();
        let day = 86_400;
        let may = ts("2024-05-01T00:00:00Z").seconds;
        let mut orders = Vec::new();
        for i in 0..70i64 {
            let code = if i % 3 == 0 { "USD" } else { "CNY" };
            let (units, nanos) = (i * 1_000_003, ((i * 123_456_789) % 1_000_000_000) as i32);
            let at = prost_types::Timestamp { seconds: may + i * day + 3600, nanos: 0 };
            customers.create_transaction(pb::CreateTransactionRequest {
                transaction: Some(pb::Transaction {
                    customer_id: c,
                    order_number: format!("B{i}"),
                    product: "widget".into(),
                    amount: Some(pb::Money { currency_code: code.into(), units, nanos }),
                    occur_time: Some(at),
                    ..Default::default()
                }),
                request_id: String::new(),
            }).await.unwrap();
            orders.push((at.seconds, code, units, nanos));
        }
        let expected = |start: i64, end: i64| {
            let mut totals: std::collections::BTreeMap<&str, (i128, i128)> = Default::default();
            let mut count = 0;
            for &(at, code, units, nanos) in &orders {
                if at >= start && at < end {
                    let t = totals.entry(code).or_default();
                    t.0 += i128::from(units);
                    t.1 += i128::from(nanos);
                    count += 1;
                }
            }
            let totals: Vec<pb::Money> = totals
                .into_iter()
                .map(|(code, (units, nanos))| pb::Money {
                    currency_code: code.into(),
                    units: (units + nanos / 1_000_000_000) as i64,
                    nanos: (nanos % 1_000_000_000) as i32,
                })
                .collect();
            (count, totals)
        };
        for (start, end, last) in [(may, may + 70 * day, "B69"), (may + 10 * day, may + 17 * day, "B16")] {
            let r = app.analytics().get_customer_insights(pb::GetCustomerInsightsRequest {
                customer_id: c,
                start_time: Some(prost_types::Timestamp { seconds: start, nanos: 0 }),
                end_time: Some(prost_types::Timestamp { seconds: end, nanos: 0 }),
                ..Default::default()
            }).await.unwrap().into_inner();
            let t = r.transactions.unwrap();
            assert_eq!((t.count, t.totals), expected(start, end), "[{start}, {end})");
            assert_eq!(t.last_order.unwrap().order_number, last);
        }
    }

    async fn customer_insights_sum_calls_money_and_tickets(app: &TestApp) {
        let c = new_customer(app, "insight").await;
        let call = |at: &str, secs: i64, nanos: i32| pb::Communication {
            details: Some(Details::PhoneCall(pb::PhoneCall {
                phone_number: "+8613800000000".into(),
                duration: Some(prost_types::Duration { seconds: secs, nanos }),
            })),
            ..comm(c, PHONE, at, "退款 refund")
        };
        import(app, vec![
            call("2024-05-01T00:00:00Z", 90, 0),
            call("2024-05-01T02:00:00Z", 30, 500_000_000),
            comm(c, EMAIL, "2024-05-01T06:00:00Z", "refund status? 退款"),
        ]).await;
        let mut customers = app.customers();
        for (code, units, nanos, at, order) in [
            ("CNY", 10, 700_000_000, "2024-05-01T00:00:00Z", "A1"),
            ("CNY", 5, 600_000_000, "2024-05-03T00:00:00Z", "A2"),
            ("USD", 1, 999_999_999, "2024-05-02T00:00:00Z", "A3"),
            ("USD", 0, 1, "2024-05-02T00:00:00Z", "A4"),
        ] {
            customers.create_transaction(pb::CreateTransactionRequest {
                transaction: Some(pb::Transaction {
                    customer_id: c,
                    order_number: order.into(),
                    product: "widget".into(),
                    amount: Some(pb::Money { currency_code: code.into(), units, nanos }),
                    occur_time: Some(ts(at)),
                    ..Default::default()
                }),
                request_id: String::new(),
            }).await.unwrap();
        }
        let now = chrono::Utc::now();
        for (status, hours_ago) in [(pb::TicketStatus::Open, 1), (pb::TicketStatus::Resolved, 2), (pb::TicketStatus::Closed, 4)] {
            let open = (now - chrono::Duration::hours(hours_ago)).to_rfc3339();
            customers.create_service_ticket(pb::CreateServiceTicketRequest {
                service_ticket: Some(pb::ServiceTicket {
                    customer_id: c,
                    issue: "broken".into(),
                    solution: if status == pb::TicketStatus::Open { String::new() } else { "fixed".into() },
                    status: status as i32,
                    open_time: Some(ts(&open)),
                    ..Default::default()
                }),
                request_id: String::new(),
            }).await.unwrap();
        }
        let r = app.analytics().get_customer_insights(pb::GetCustomerInsightsRequest {
            customer_id: c,
            ..Default::default()
        }).await.unwrap().into_inner();
        assert_eq!(r.customer.unwrap().id, c);
        assert_eq!(r.total_count, 3);
        assert_eq!(r.channels.len(), 2);
        assert_eq!((r.channels[0].channel, r.channels[0].count), (PHONE, 2));
        assert_eq!(r.channels[0].total_duration, Some(prost_types::Duration { seconds: 120, nanos: 500_000_000 }));
        assert_eq!((r.channels[1].channel, r.channels[1].count), (EMAIL, 1));
        assert_eq!(r.channels[1].total_duration, Some(prost_types::Duration { seconds: 0, nanos: 0 }));
        assert_eq!(r.mean_gap.unwrap().seconds, 3 * 3600);
        assert_eq!(r.first_contact_time, Some(ts("2024-05-01T00:00:00Z")));
        assert!(r.days_since_last_contact.unwrap() >= 365);
        assert!(r.per_day_average > 0.0 && r.per_day_average < 1.0);
        assert_eq!(r.top_terms[0].term, "refund");
        assert_eq!(r.top_terms[0].count, 3);
        let t = r.transactions.unwrap();
        assert_eq!(t.count, 4);
        assert_eq!(t.totals, vec![
            pb::Money { currency_code: "CNY".into(), units: 16, nanos: 300_000_000 },
            pb::Money { currency_code: "USD".into(), units: 2, nanos: 0 },
        ]);
        assert_eq!(t.last_order.unwrap().order_number, "A2");
        let k = r.service_tickets.unwrap();
        assert_eq!((k.total_count, k.open_count), (3, 1));
        let mean = k.mean_resolution_time.unwrap().seconds;
        assert!((3 * 3600 - 60..=3 * 3600 + 60).contains(&mean), "{mean}");

        // A range narrows every part.
        let r = app.analytics().get_customer_insights(pb::GetCustomerInsightsRequest {
            customer_id: c,
            start_time: Some(ts("2024-05-01T01:00:00Z")),
            end_time: Some(ts("2024-05-02T12:00:00Z")),
            time_zone: "Asia/Shanghai".into(),
            ..Default::default()
        }).await.unwrap().into_inner();
        assert_eq!(r.total_count, 2);
        assert_eq!(r.per_day_average, 1.0);
        assert_eq!(r.transactions.as_ref().unwrap().count, 2);
        assert_eq!(r.service_tickets.unwrap().total_count, 0);
    }
}

backend_tests! {
    async fn the_previous_period_is_the_equal_length_before_with_its_buckets_and_the_change(app: &TestApp) {
        let c = new_customer(app, "对比").await;
        let other = new_customer(app, "别人").await;
        // The report: February 2024 (29 days); the preceding period: 2024-01-03 to 02-01.
        let times = [
            "2024-01-02T12:00:00Z", // before the preceding period
            "2024-01-03T00:00:00Z", // its first instant
            "2024-01-10T08:00:00Z",
            "2024-01-31T23:59:59Z", // its last day
            "2024-02-01T00:00:00Z", // the report's first instant
            "2024-02-10T08:00:00Z",
            "2024-02-10T09:00:00Z",
            "2024-02-29T23:00:00Z",
            "2024-03-01T00:00:00Z", // after the report
        ];
        for t in times {
            log_each(app, [note(c, "往来", t)]).await;
        }
        log_each(app, [note(other, "别人的", "2024-01-10T08:00:00Z")]).await;
        let request = pb::GetFrequencyReportRequest {
            customer_ids: vec![c],
            start_time: Some(ts("2024-02-01T00:00:00Z")),
            end_time: Some(ts("2024-03-01T00:00:00Z")),
            granularity: pb::Granularity::Day as i32,
            time_zone: "UTC".into(),
            compare_previous_period: true,
            ..Default::default()
        };
        let r = app.analytics().get_frequency_report(request.clone()).await.unwrap().into_inner();
        assert_eq!(r.total_count, 4);
        let p = r.previous_period.clone().expect("previous_period");
        assert_eq!((p.start_time, p.end_time), (Some(ts("2024-01-03T00:00:00Z")), Some(ts("2024-02-01T00:00:00Z"))));
        assert_eq!((p.total_count, p.span_days, p.customer_count), (3, 29, 1));
        assert_eq!((p.total_change, p.total_change_ratio), (1, Some(1.0 / 3.0)));
        assert_eq!(p.buckets.len(), 29);
        assert_eq!(p.buckets.iter().map(|b| b.count).sum::<i64>(), 3);
        let counted: Vec<(i64, i64)> = p.buckets.iter().filter(|b| b.count > 0).map(|b| (b.start_time.unwrap().seconds, b.count)).collect();
        assert_eq!(counted, [(ts("2024-01-03T00:00:00Z").seconds, 1), (ts("2024-01-10T00:00:00Z").seconds, 1), (ts("2024-01-31T00:00:00Z").seconds, 1)]);
        assert_eq!(p.channel_counts.len(), 1);

        // Every customer: the other customer's January contact counts too; without the
        // flag nothing is added.
        let all = pb::GetFrequencyReportRequest { customer_ids: vec![], ..request.clone() };
        let r = app.analytics().get_frequency_report(all).await.unwrap().into_inner();
        let p = r.previous_period.unwrap();
        assert_eq!((r.total_count, p.total_count, p.customer_count, p.total_change), (4, 4, 2, 0));
        assert_eq!(p.total_change_ratio, Some(0.0));
        let plain = pb::GetFrequencyReportRequest { compare_previous_period: false, ..request.clone() };
        assert!(app.analytics().get_frequency_report(plain).await.unwrap().into_inner().previous_period.is_none());

        // A preceding period with no contact: no ratio; one before 1900: refused.
        let empty = pb::GetFrequencyReportRequest {
            start_time: Some(ts("2023-02-01T00:00:00Z")),
            end_time: Some(ts("2023-03-01T00:00:00Z")),
            ..request.clone()
        };
        let p = app.analytics().get_frequency_report(empty).await.unwrap().into_inner().previous_period.unwrap();
        assert_eq!((p.total_count, p.total_change, p.total_change_ratio), (0, 0, None));
        let early = pb::GetFrequencyReportRequest {
            start_time: Some(ts("1901-01-01T00:00:00Z")),
            end_time: Some(ts("1903-01-01T00:00:00Z")),
            granularity: pb::Granularity::Month as i32,
            ..request
        };
        let err = app.analytics().get_frequency_report(early).await.unwrap_err();
        assert_invalid(&err, &["compare_previous_period"]);
    }
}

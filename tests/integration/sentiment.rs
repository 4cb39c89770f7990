//! Sentiment through the real server: scores on recorded and imported communications,
//! the frequency report's split by sentiment (from the rollups and from the base table,
//! equal), rows stored without a score scored by the server's upkeep with their rollups
//! kept exact, a customer's monthly trend in insights, and the attention list of falling
//! moods with its paging and bad input.

use crm_comms::analytics::sentiment::{score, Label};
use crm_comms::pb;

use crate::backend_tests;
use crate::harness::{assert_invalid, import, log, log_each, new_customer, note, ts, TestApp};

const HAPPY_EN: &str = "Thank you so much, the support was excellent and fast!";
const ANGRY_EN: &str = "This is terrible. I am very angry and disappointed.";
const HAPPY_ZH: &str = "服务很好，非常满意，谢谢！";
const ANGRY_ZH: &str = "质量太差了，很失望，我要投诉";
const PLAIN: &str = "Meeting moved to room 4.";

fn label_of(content: &str) -> pb::Sentiment {
    match Label::of(score(content)) {
        Label::Negative => pb::Sentiment::Negative,
        Label::Neutral => pb::Sentiment::Neutral,
        Label::Positive => pb::Sentiment::Positive,
    }
}

fn counts(s: &Option<pb::SentimentCounts>) -> (i64, i64, i64) {
    let s = s.as_ref().expect("sentiment counts");
    (s.negative_count, s.neutral_count, s.positive_count)
}

/// One customer's insights over `[start, end)`.
async fn insights_over(
    app: &TestApp,
    customer: i64,
    start: &str,
    end: &str,
) -> pb::GetCustomerInsightsResponse {
    app.analytics()
        .get_customer_insights(pb::GetCustomerInsightsRequest {
            customer_id: customer,
            start_time: Some(ts(start)),
            end_time: Some(ts(end)),
            ..Default::default()
        })
        .await
        .expect("insights")
        .into_inner()
}

/// `customer`'s communications as an older server stored them: no score, counted
/// neutral, in the rows and in every rollup (this test's database holds no other scores).
async fn unscore(app: &TestApp, customer: i64) {
    app.execute(&format!(
        "UPDATE communications SET sentiment = NULL WHERE customer_id = {customer}"
    ))
    .await;
    for table in [
        "communication_slots",
        "communication_hours",
        "customer_months",
    ] {
        app.execute(&format!(
            "UPDATE {table} SET negative = 0, positive = 0, sentiment_sum = 0"
        ))
        .await;
    }
}

/// A frequency report of every customer over 2024 by month, split by sentiment.
fn year_report(customer_ids: Vec<i64>) -> pb::GetFrequencyReportRequest {
    pb::GetFrequencyReportRequest {
        customer_ids,
        start_time: Some(ts("2024-01-01T00:00:00Z")),
        end_time: Some(ts("2025-01-01T00:00:00Z")),
        granularity: pb::Granularity::Month as i32,
        time_zone: "Asia/Shanghai".into(),
        include_sentiment: true,
        ..Default::default()
    }
}

backend_tests! {
    async fn recorded_and_imported_communications_carry_their_sentiment(app: &TestApp) {
        let customer = new_customer(app, "Mood").await;
        let mut comms = app.communications();
        for (content, want) in [
            (HAPPY_EN, pb::Sentiment::Positive),
            (ANGRY_EN, pb::Sentiment::Negative),
            (HAPPY_ZH, pb::Sentiment::Positive),
            (ANGRY_ZH, pb::Sentiment::Negative),
            (PLAIN, pb::Sentiment::Neutral),
        ] {
            let c = comms
                .log_communication(log(note(customer, content, "2024-05-01T10:00:00Z"), ""))
                .await
                .expect("log")
                .into_inner();
            assert_eq!(c.sentiment_score, Some(i32::from(score(content))), "{content}");
            assert_eq!(c.sentiment(), want, "{content}: {:?}", c.sentiment_score);
            let read = comms
                .get_communication(pb::GetCommunicationRequest { id: c.id })
                .await
                .expect("get")
                .into_inner();
            assert_eq!(read.sentiment_score, c.sentiment_score);
            assert_eq!(read.sentiment, c.sentiment);
        }
        import(app, vec![note(customer, ANGRY_ZH, "2024-05-02T10:00:00Z")]).await;
        let page = comms
            .list_communications(pb::ListCommunicationsRequest {
                customer_id: customer,
                page_size: 10,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        let imported = &page.communications[0];
        assert_eq!(imported.content, ANGRY_ZH);
        assert_eq!(imported.sentiment(), pb::Sentiment::Negative);
    }

    async fn the_frequency_report_splits_by_sentiment_from_rollups_and_rows_alike(app: &TestApp) {
        let a = new_customer(app, "Split A").await;
        let b = new_customer(app, "Split B").await;
        let plan = [
            (a, HAPPY_EN, "2024-01-15T10:00:00Z"),
            (a, ANGRY_ZH, "2024-01-31T17:00:00Z"), // February 1st in Shanghai
            (a, PLAIN, "2024-03-03T03:00:00Z"),
            (b, ANGRY_EN, "2024-03-04T05:00:00Z"),
            (b, HAPPY_ZH, "2024-03-05T06:00:00Z"),
            (b, HAPPY_ZH, "2024-12-31T15:59:59Z"),
        ];
        let mut comms = app.communications();
        for &(customer, content, at) in &plan {
            comms
                .log_communication(log(note(customer, content, at), ""))
                .await
                .expect("log");
        }
        let mut analytics = app.analytics();
        // Every customer: the rollups; the two customers by id: their rows.
        let all = analytics
            .get_frequency_report(year_report(Vec::new()))
            .await
            .expect("all customers")
            .into_inner();
        let chosen = analytics
            .get_frequency_report(year_report(vec![a, b]))
            .await
            .expect("chosen customers")
            .into_inner();
        assert_eq!(all, chosen, "rollups and rows give the same split");
        // By hand: months of Shanghai.
        let month = |i: usize| counts(&all.buckets[i].sentiment);
        assert_eq!(month(0), (0, 0, 1), "January: the thanks");
        assert_eq!(month(1), (1, 0, 0), "February (Shanghai): the complaint");
        assert_eq!(month(2), (1, 1, 1), "March");
        assert_eq!(month(11), (0, 0, 1), "December, last second of the year in Shanghai");
        assert_eq!(month(5), (0, 0, 0));
        assert_eq!(counts(&all.sentiment), (2, 1, 3));
        let mean: f64 = plan.iter().map(|p| f64::from(score(p.1))).sum::<f64>() / 6.0;
        let got = all.sentiment.as_ref().map(|s| s.mean_score).unwrap_or_default();
        assert!((got - mean).abs() < 1e-9, "{got} != {mean}");
        // One customer: the database, not the in-memory activity, answers the split.
        let one = analytics
            .get_frequency_report(year_report(vec![b]))
            .await
            .expect("one customer")
            .into_inner();
        assert_eq!(counts(&one.sentiment), (1, 0, 2));
        // Without the flag, no split.
        let plain = analytics
            .get_frequency_report(pb::GetFrequencyReportRequest {
                include_sentiment: false,
                ..year_report(Vec::new())
            })
            .await
            .expect("without sentiment")
            .into_inner();
        assert!(plain.sentiment.is_none());
        assert!(plain.buckets.iter().all(|b| b.sentiment.is_none()));
        assert_eq!(plain.total_count, 6);
    }

    async fn rows_stored_without_a_score_are_scored_and_the_rollups_follow(app: &TestApp) {
        let customer = new_customer(app, "Old rows").await;
        let mut comms = app.communications();
        let mut ids = Vec::new();
        for content in [ANGRY_EN, HAPPY_ZH, ANGRY_ZH, PLAIN] {
            let c = comms
                .log_communication(log(note(customer, content, "2024-06-10T08:00:00Z"), ""))
                .await
                .expect("log")
                .into_inner();
            ids.push(c.id);
        }
        unscore(app, customer).await;
        let unscored = comms
            .get_communication(pb::GetCommunicationRequest { id: ids[0] })
            .await
            .expect("get")
            .into_inner();
        assert_eq!(unscored.sentiment_score, None);
        assert_eq!(unscored.sentiment(), pb::Sentiment::Unspecified);
        let mut analytics = app.analytics();
        let before = analytics
            .get_frequency_report(year_report(Vec::new()))
            .await
            .expect("report")
            .into_inner();
        assert_eq!(counts(&before.sentiment), (0, 4, 0), "unscored rows count as neutral");

        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let (scored, after) =
            crm_comms::service::maintenance::score_unscored(&app.db, 0, &shutdown)
                .await
                .expect("score");
        assert_eq!(scored, 4);
        assert_eq!(after, *ids.iter().max().expect("ids"));
        let again = crm_comms::service::maintenance::score_unscored(&app.db, 0, &shutdown)
            .await
            .expect("score again");
        assert_eq!(again.0, 0, "nothing is scored twice");

        for (&id, content) in ids.iter().zip([ANGRY_EN, HAPPY_ZH, ANGRY_ZH, PLAIN]) {
            let c = comms
                .get_communication(pb::GetCommunicationRequest { id })
                .await
                .expect("get")
                .into_inner();
            assert_eq!(c.sentiment_score, Some(i32::from(score(content))));
            assert_eq!(c.sentiment(), label_of(content));
        }
        let rollups = analytics
            .get_frequency_report(year_report(Vec::new()))
            .await
            .expect("report")
            .into_inner();
        let rows = analytics
            .get_frequency_report(year_report(vec![customer]))
            .await
            .expect("report")
            .into_inner();
        assert_eq!(counts(&rollups.sentiment), (2, 1, 1));
        assert_eq!(rollups.sentiment, rows.sentiment);
        assert_eq!(rollups.buckets, rows.buckets);
    }

    async fn insights_show_the_monthly_trend_of_a_customers_mood(app: &TestApp) {
        let customer = new_customer(app, "Trend").await;
        let mut comms = app.communications();
        for (content, at) in [
            (HAPPY_EN, "2024-01-10T00:00:00Z"),
            (HAPPY_ZH, "2024-01-20T00:00:00Z"),
            (ANGRY_EN, "2024-03-01T00:00:00Z"),
            (ANGRY_ZH, "2024-03-31T23:00:00Z"),
            (PLAIN, "2024-04-02T00:00:00Z"),
        ] {
            comms
                .log_communication(log(note(customer, content, at), ""))
                .await
                .expect("log");
        }
        // Partial months at both ends: rows; the months between: the rollup.
        let insights = insights_over(app, customer, "2024-01-15T00:00:00Z", "2024-04-10T00:00:00Z").await;
        let trend: Vec<_> = insights
            .sentiment_trend
            .iter()
            .map(|p| {
                (
                    p.start_time.map(|t| t.seconds),
                    p.end_time.map(|t| t.seconds),
                    counts(&p.sentiment),
                )
            })
            .collect();
        let at = |s: &str| Some(ts(s).seconds);
        assert_eq!(
            trend,
            vec![
                (at("2024-01-15T00:00:00Z"), at("2024-02-01T00:00:00Z"), (0, 0, 1)),
                (at("2024-02-01T00:00:00Z"), at("2024-03-01T00:00:00Z"), (0, 0, 0)),
                (at("2024-03-01T00:00:00Z"), at("2024-04-01T00:00:00Z"), (2, 0, 0)),
                (at("2024-04-01T00:00:00Z"), at("2024-04-10T00:00:00Z"), (0, 1, 0)),
            ]
        );
        assert_eq!(counts(&insights.sentiment), (2, 1, 1));
        assert_eq!(insights.total_count, 4);

        // A range that starts on a month before the first contact: that month whole
        // (from the rollup), the same counts.
        let from_january = insights_over(app, customer, "2024-01-01T00:00:00Z", "2024-04-10T00:00:00Z").await;
        let first = &from_january.sentiment_trend[0];
        assert_eq!(
            (first.start_time.map(|t| t.seconds), first.end_time.map(|t| t.seconds)),
            (at("2024-01-01T00:00:00Z"), at("2024-02-01T00:00:00Z"))
        );
        assert_eq!(counts(&first.sentiment), (0, 0, 2));
        assert_eq!(from_january.sentiment_trend.len(), 4);
        assert_eq!(counts(&from_january.sentiment), (2, 1, 2));
    }

    async fn a_trend_without_an_end_leaves_out_what_is_dated_after_now(app: &TestApp) {
        // This month: one angry note already, one happy note dated later this month; one
        // angry note last month. Without an end the range ends now: the current month
        // is its rollup row less the rows dated after now.
        use chrono::{Datelike, TimeZone, Utc};
        let now = Utc::now();
        let month = Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .expect("month start");
        let next = month + chrono::Months::new(1);
        let last = month - chrono::Months::new(1);
        let rfc = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let customer = new_customer(app, "Open-ended").await;
        let mut comms = app.communications();
        for (content, at) in [
            (ANGRY_EN, last + chrono::Duration::days(3)),
            (ANGRY_ZH, month + (now - month) / 2),
            // Within the day a communication may be dated ahead, and within this month.
            (HAPPY_EN, now + ((next - now) / 2).min(chrono::Duration::hours(12))),
        ] {
            comms
                .log_communication(log(note(customer, content, &rfc(at)), ""))
                .await
                .expect("log");
        }
        let insights = app
            .analytics()
            .get_customer_insights(pb::GetCustomerInsightsRequest {
                customer_id: customer,
                start_time: Some(ts(&rfc(last))),
                ..Default::default()
            })
            .await
            .expect("insights")
            .into_inner();
        let trend: Vec<_> = insights
            .sentiment_trend
            .iter()
            .map(|p| (p.start_time.map(|t| t.seconds), counts(&p.sentiment)))
            .collect();
        assert_eq!(
            trend,
            vec![(Some(last.timestamp()), (1, 0, 0)), (Some(month.timestamp()), (1, 0, 0))]
        );
        assert_eq!(counts(&insights.sentiment), (2, 0, 0));
        assert_eq!(insights.total_count, 2);
    }

    async fn a_trend_over_rows_scored_after_the_index_read_them_comes_from_the_database(app: &TestApp) {
        // A server with its activity index loaded (its upkeep ran at its start, before
        // these rows), then rows stored as an older server stored them: no score,
        // counted neutral. The index reads them at the next report; the upkeep scores
        // them afterwards, which no index hears of: the trend must show the scores, as
        // the database does.
        let (_stop_index, rx) = tokio::sync::watch::channel(false);
        let index = crm_comms::service::content_index::ContentIndexHandle::start(app.db.clone(), rx);
        tokio::time::timeout(std::time::Duration::from_secs(60), index.wait_ready())
            .await
            .expect("the index loads");
        let (indexed, _stop) = app.another_server(|_| {}, Some(index)).await;
        let mut indexed = pb::analytics_service_client::AnalyticsServiceClient::new(indexed);
        let customer = new_customer(app, "Scored late").await;
        log_each(
            app,
            [
                (ANGRY_EN, "2024-05-10T08:00:00Z"),
                (HAPPY_ZH, "2024-06-10T08:00:00Z"),
                (ANGRY_ZH, "2024-06-11T08:00:00Z"),
            ]
            .map(|(content, at)| note(customer, content, at)),
        )
        .await;
        unscore(app, customer).await;
        let request = pb::GetCustomerInsightsRequest {
            customer_id: customer,
            start_time: Some(ts("2024-05-01T00:00:00Z")),
            end_time: Some(ts("2024-07-01T00:00:00Z")),
            ..Default::default()
        };
        let trend = |r: &pb::GetCustomerInsightsResponse| -> Vec<(i64, i64, i64)> {
            r.sentiment_trend.iter().map(|p| counts(&p.sentiment)).collect()
        };
        let before = indexed
            .get_customer_insights(request.clone())
            .await
            .expect("insights")
            .into_inner();
        assert_eq!(before.total_count, 3, "the index read the rows");
        assert_eq!(trend(&before), vec![(0, 1, 0), (0, 2, 0)]);

        let (_shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let (scored, _) = crm_comms::service::maintenance::score_unscored(&app.db, 0, &shutdown)
            .await
            .expect("score");
        assert_eq!(scored, 3);
        let after = indexed
            .get_customer_insights(request)
            .await
            .expect("insights")
            .into_inner();
        assert_eq!(trend(&after), vec![(1, 0, 0), (1, 0, 1)]);
        assert_eq!(counts(&after.sentiment), (2, 0, 1));
    }

    async fn the_trend_of_a_busy_customer_counts_partial_months_exactly(app: &TestApp) {
        // 2,400 communications in March 2024 (more than a busy month's threshold), one in
        // three negative, and a few in February and April.
        let customer = new_customer(app, "Busy").await;
        let content = |i: usize| if i % 3 == 0 { ANGRY_EN } else { HAPPY_ZH };
        let mut items: Vec<pb::Communication> = (0..2_400)
            .map(|i| {
                let at = format!("2024-03-{:02}T{:02}:{:02}:00Z", 1 + i % 31, (i / 31) % 24, i % 60);
                note(customer, content(i), &at)
            })
            .collect();
        items.push(note(customer, ANGRY_ZH, "2024-02-20T08:00:00Z"));
        items.push(note(customer, PLAIN, "2024-04-02T08:00:00Z"));
        import(app, items.clone()).await;
        let expected = |start: &str, end: &str| {
            let (start, end) = (ts(start).seconds, ts(end).seconds);
            let mut c = (0, 0, 0);
            for item in &items {
                let t = item.occur_time.as_ref().expect("time").seconds;
                if t >= start && t < end {
                    match score(&item.content) {
                        s if Label::of(s) == Label::Negative => c.0 += 1,
                        s if Label::of(s) == Label::Positive => c.2 += 1,
                        _ => c.1 += 1,
                    }
                }
            }
            c
        };
        // Most of March (read as March less its first two days) and a range whose only
        // partial part spans two months (20 February to 10 March).
        for (start, end, months) in [
            ("2024-03-03T00:00:00Z", "2024-04-01T00:00:00Z", vec![("2024-03-03T00:00:00Z", "2024-04-01T00:00:00Z")]),
            (
                "2024-02-20T00:00:00Z",
                "2024-03-10T00:00:00Z",
                vec![("2024-02-20T00:00:00Z", "2024-03-01T00:00:00Z"), ("2024-03-01T00:00:00Z", "2024-03-10T00:00:00Z")],
            ),
        ] {
            let insights = insights_over(app, customer, start, end).await;
            let trend: Vec<_> = insights
                .sentiment_trend
                .iter()
                .map(|p| (p.start_time.map(|t| t.seconds), counts(&p.sentiment)))
                .collect();
            let want: Vec<_> = months
                .iter()
                .map(|(a, b)| (Some(ts(a).seconds), expected(a, b)))
                .collect();
            assert_eq!(trend, want, "[{start}, {end})");
            assert_eq!(counts(&insights.sentiment), expected(start, end));
        }
    }

    async fn attention_lists_customers_whose_mood_fell(app: &TestApp) {
        let mut comms = app.communications();
        let mut customers = Vec::new();
        // (before, now): happy then angry falls most; happy then plain falls less; angry
        // both times does not fall; nothing now has no mean.
        let histories: [(&[&str], &[&str]); 5] = [
            (&[HAPPY_EN, HAPPY_ZH], &[ANGRY_EN]),
            (&[HAPPY_EN], &[PLAIN, PLAIN]),
            (&[ANGRY_ZH], &[ANGRY_EN]),
            (&[HAPPY_ZH], &[]),
            (&[HAPPY_EN, HAPPY_EN, HAPPY_ZH], &[ANGRY_ZH]),
        ];
        for (i, (before, now)) in histories.iter().enumerate() {
            let id = new_customer(app, &format!("Mood {i}")).await;
            customers.push(id);
            for content in before.iter() {
                comms
                    .log_communication(log(note(id, content, "2024-02-10T00:00:00Z"), ""))
                    .await
                    .expect("log");
            }
            for content in now.iter() {
                comms
                    .log_communication(log(note(id, content, "2024-03-20T00:00:00Z"), ""))
                    .await
                    .expect("log");
            }
        }
        let request = |page_token: String| pb::ListAttentionCustomersRequest {
            reason: pb::AttentionReason::SentimentFalling as i32,
            start_time: Some(ts("2024-03-01T00:00:00Z")),
            end_time: Some(ts("2024-04-01T00:00:00Z")),
            min_sentiment_drop: 300,
            page_size: 1,
            page_token,
            ..Default::default()
        };
        let mut analytics = app.analytics();
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = analytics
                .list_attention_customers(request(token))
                .await
                .expect("page")
                .into_inner();
            seen.extend(page.customers.iter().map(|c| {
                (
                    c.customer_id,
                    c.previous_count,
                    c.current_count,
                    c.previous_mean_sentiment,
                    c.current_mean_sentiment,
                )
            }));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        let mean = |texts: &[&str]| {
            texts.iter().map(|t| f64::from(score(t))).sum::<f64>() / texts.len() as f64
        };
        let mut want: Vec<_> = histories
            .iter()
            .zip(&customers)
            .filter(|((before, now), _)| !now.is_empty() && mean(before) - mean(now) >= 300.0)
            .map(|((before, now), &id)| {
                (id, before.len() as i64, now.len() as i64, mean(before), mean(now))
            })
            .collect();
        want.sort_by(|x, y| (y.3 - y.4).total_cmp(&(x.3 - x.4)).then(y.1.cmp(&x.1)));
        assert!(want.len() >= 3, "the histories make at least three falls: {want:?}");
        assert_eq!(seen.len(), want.len(), "{seen:?} != {want:?}");
        for (got, want) in seen.iter().zip(&want) {
            assert_eq!((got.0, got.1, got.2), (want.0, want.1, want.2));
            assert!((got.3 - want.3).abs() < 1e-6 && (got.4 - want.4).abs() < 1e-6);
        }

        let bad = analytics
            .list_attention_customers(pb::ListAttentionCustomersRequest {
                reason: pb::AttentionReason::SentimentFalling as i32,
                min_sentiment_drop: 2001,
                min_previous_count: -1,
                ..Default::default()
            })
            .await
            .expect_err("bad input");
        assert_invalid(
            &bad,
            &["start_time", "end_time", "min_sentiment_drop", "min_previous_count"],
        );
    }

    async fn the_content_report_reads_only_the_sentiments_asked_for(app: &TestApp) {
        let customer = new_customer(app, "Topics").await;
        let mut comms = app.communications();
        for content in [
            "The refund was terrible, I am very disappointed.",
            "退款太慢了，很失望",
            "Thanks, the refund arrived, excellent service!",
            "refund status: processing",
        ] {
            comms
                .log_communication(log(note(customer, content, "2024-05-01T10:00:00Z"), ""))
                .await
                .expect("log");
        }
        let request = |sentiments: Vec<pb::Sentiment>| pb::GetContentReportRequest {
            customer_ids: vec![customer],
            start_time: Some(ts("2024-01-01T00:00:00Z")),
            end_time: Some(ts("2025-01-01T00:00:00Z")),
            keywords: vec!["refund".into(), "退款".into()],
            top_terms: 5,
            sentiments: sentiments.into_iter().map(|s| s as i32).collect(),
            ..Default::default()
        };
        let mut analytics = app.analytics();
        let all = analytics
            .get_content_report(request(Vec::new()))
            .await
            .expect("all")
            .into_inner();
        assert_eq!(all.scanned_count, 4);
        assert_eq!(all.keywords[0].message_count, 3);
        let negative = analytics
            .get_content_report(request(vec![pb::Sentiment::Negative]))
            .await
            .expect("negative")
            .into_inner();
        assert_eq!(negative.scanned_count, 2);
        let found: Vec<i64> = negative.keywords.iter().map(|k| k.message_count).collect();
        assert_eq!(found, vec![1, 1]);
        assert!(negative.top_terms.iter().any(|t| t.term == "disappointed"));
        assert!(!negative.top_terms.iter().any(|t| t.term == "excellent"));
        let two = analytics
            .get_content_report(request(vec![pb::Sentiment::Positive, pb::Sentiment::Neutral]))
            .await
            .expect("positive and neutral")
            .into_inner();
        assert_eq!(two.scanned_count, 2);

        let mut bad = request(vec![pb::Sentiment::Negative]);
        bad.sentiments.push(9);
        let status = analytics.get_content_report(bad).await.expect_err("unknown value");
        assert_invalid(&status, &["sentiments[1]"]);
    }
}

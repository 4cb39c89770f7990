//! `--only service_levels` of the scale benchmark (issue 12): the response-time,
//! resolution-time and attention reports beside the hand-written SQL that answers the
//! same question on the base tables, with the same driver, in the same run.
//!
//! - Response times, every customer, one month: the service scans the month once off the
//!   time index and pairs replies in memory; the baseline is a window function (each
//!   row's next outbound time as a running `MIN` over the customer's later rows). A
//!   correlated `ORDER BY occur_time LIMIT 1` subquery per inbound row was tried first:
//!   MariaDB plans it as a `ref` scan of the customer's whole history and had not
//!   finished after 7 minutes at 10M.
//! - Resolution times, every ticket opened in the year: both read the tickets; the
//!   baseline sums in the client.
//! - Stale customers (first page): one index probe per customer for its last contact
//!   against `GROUP BY customer_id` with `MAX(occur_time)`.
//! - Declining customers (first page): per-customer counts from the customer-month
//!   rollup against one `GROUP BY customer_id` over both quarters of the base table.
//! - Duplicate customers (first page of 50 groups, with their members) against
//!   `GROUP BY phone HAVING COUNT(*) > 1` on the customers table.

use std::time::Duration;

use anyhow::Result;
use chrono::NaiveDateTime;
use crm_comms::pb::{
    self, analytics_service_client::AnalyticsServiceClient,
    customer_service_client::CustomerServiceClient,
};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use mysql_async::prelude::Queryable;

use super::{
    common, ms, parse_time, sqlite_conn, timed, Args, Driver, Figure, RatioKind, Target, SERVER,
    STARTUP,
};

/// A `(time, optional time)` row.
#[derive(QueryableByName)]
struct TimePair {
    #[diesel(sql_type = Text)]
    a: String,
    #[diesel(sql_type = Nullable<Text>)]
    b: Option<String>,
}

/// An `(id, previous, current)` row.
#[derive(QueryableByName)]
struct Drop3 {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    prev: i64,
    #[diesel(sql_type = BigInt)]
    cur: i64,
}

/// Longest a baseline statement may run on MariaDB (`max_statement_time`); past it the
/// figure records this limit as a lower bound of the baseline.
const BASELINE_LIMIT_SECS: u64 = 180;

/// `(start, optional end)` text pairs of a query (MySQL: the SQL casts to CHAR). On
/// MariaDB the statement is stopped after [`BASELINE_LIMIT_SECS`]: `None` then.
async fn time_pairs(driver: &Driver, sql: &str) -> Result<Option<Vec<(String, Option<String>)>>> {
    match driver {
        Driver::Mysql(url) => {
            let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
            c.query_drop(format!(
                "SET SESSION max_statement_time = {BASELINE_LIMIT_SECS}"
            ))
            .await?;
            let rows: Vec<(String, Option<String>)> = match c.query(sql).await {
                Ok(rows) => rows,
                // ER_STATEMENT_TIMEOUT
                Err(mysql_async::Error::Server(e)) if e.code == 1969 => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            c.disconnect().await?;
            Ok(Some(rows))
        }
        Driver::Sqlite(path) => {
            let (path, sql) = (path.clone(), sql.to_owned());
            tokio::task::spawn_blocking(move || {
                let rows: Vec<TimePair> = diesel::sql_query(sql).load(&mut sqlite_conn(&path)?)?;
                Ok(Some(rows.into_iter().map(|r| (r.a, r.b)).collect()))
            })
            .await?
        }
    }
}

/// `(id, previous, current)` rows of a query.
async fn drops(driver: &Driver, sql: &str) -> Result<Vec<(i64, i64, i64)>> {
    match driver {
        Driver::Mysql(url) => {
            let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
            let rows: Vec<(i64, i64, i64)> = c.query(sql).await?;
            c.disconnect().await?;
            Ok(rows)
        }
        Driver::Sqlite(path) => {
            let (path, sql) = (path.clone(), sql.to_owned());
            tokio::task::spawn_blocking(move || {
                let rows: Vec<Drop3> = diesel::sql_query(sql).load(&mut sqlite_conn(&path)?)?;
                Ok(rows.into_iter().map(|r| (r.id, r.prev, r.cur)).collect())
            })
            .await?
        }
    }
}

/// Count, answered count and mean wait (microseconds, rounded toward zero) of pairs.
fn wait_figures(rows: &[(String, Option<String>)]) -> Result<(i64, i64, Option<i64>)> {
    let mut answered = 0i64;
    let mut sum = 0i128;
    for (a, b) in rows {
        if let Some(b) = b {
            let w = (parse_time(b)? - parse_time(a)?)
                .num_microseconds()
                .unwrap_or(0);
            answered += 1;
            sum += i128::from(w.max(0));
        }
    }
    let mean = (answered > 0).then(|| (sum / i128::from(answered)) as i64);
    Ok((rows.len() as i64, answered, mean))
}

fn micros(d: &Option<prost_types::Duration>) -> Option<i64> {
    d.as_ref()
        .map(|d| d.seconds * 1_000_000 + i64::from(d.nanos / 1000))
}

fn utc_seconds(t: &str) -> i64 {
    NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc().timestamp())
        .unwrap_or(0)
}

/// The service-level figures on a server over the dataset.
pub(super) async fn measure(t: &Target, args: &Args, out: &mut Vec<Figure>) -> Result<()> {
    let runs = args.runs;
    let mysql = matches!(t.driver, Driver::Mysql(_));
    // These reports do not use the content index: leave it off so its loading does not
    // share the CPU with the measurements.
    let server =
        common::Server::start_with(SERVER, &t.url, STARTUP, &[("CRM_CONTENT_INDEX", "false")])
            .await?;
    let channel = server.channel().await?;
    let analytics = AnalyticsServiceClient::new(channel.clone())
        .max_decoding_message_size(common::MAX_MESSAGE_BYTES);
    let customers =
        CustomerServiceClient::new(channel).max_decoding_message_size(common::MAX_MESSAGE_BYTES);
    let cast = |col: &str| {
        if mysql {
            format!("CAST({col} AS CHAR)")
        } else {
            col.to_owned()
        }
    };

    // Response times: every customer, June 2025.
    let (start, end) = ("2025-06-01 00:00:00", "2025-07-01 00:00:00");
    let req = pb::GetResponseTimeReportRequest {
        start_time: Some(common::timestamp(utc_seconds(start), 0)),
        end_time: Some(common::timestamp(utc_seconds(end), 0)),
        granularity: pb::Granularity::Week as i32,
        sla: Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        ..Default::default()
    };
    let (service, report) = timed(runs, || {
        let mut c = analytics.clone();
        let req = req.clone();
        async move { Ok(c.get_response_time_report(req).await?.into_inner()) }
    })
    .await?;
    // Each row's next outbound time: a running MIN over the customer's later rows, read
    // newest first (a growing frame, which both databases compute incrementally). The
    // rows from the range start on, so replies after the range count.
    let sql = format!(
        "SELECT {} AS a, {} AS b FROM (SELECT id, direction, occur_time, MIN(CASE WHEN \
         direction = 2 THEN occur_time END) OVER (PARTITION BY customer_id ORDER BY \
         occur_time DESC, id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reply \
         FROM communications WHERE occur_time >= '{start}') t WHERE direction = 1 AND \
         occur_time < '{end}'",
        cast("occur_time"),
        cast("reply"),
    );
    let (baseline, rows) = timed(runs, || time_pairs(&t.driver, &sql)).await?;
    let total = report.total.unwrap_or_default();
    let got = (
        total.total_count,
        total.completed_count,
        micros(&total.mean),
    );
    let (baseline, same, note) = match rows {
        Some(rows) => {
            let expected = wait_figures(&rows)?;
            say!("  response times: baseline {expected:?}");
            (
                baseline,
                Some(got == expected),
                "compared: inbound count, answered count, mean wait".to_owned(),
            )
        }
        None => (
            Duration::from_secs(BASELINE_LIMIT_SECS),
            None,
            format!(
                "the baseline was stopped at {BASELINE_LIMIT_SECS} s (max_statement_time): its \
                 time and the ratio are lower bounds"
            ),
        ),
    };
    say!(
        "  response times: service {:.1} ms {got:?}, window MIN {:.1} ms, same: {same:?}",
        ms(service),
        ms(baseline)
    );
    let figure = Figure::new(
        t.db,
        "GetResponseTimeReport all customers, 1 month, weekly, SLA 1 h",
        "window MIN(outbound time) over each customer's later rows",
        "ms",
        ms(service),
        ms(baseline),
        RatioKind::Speed,
        None,
    )
    .note(note);
    out.push(match same {
        Some(same) => figure.same(same),
        None => figure,
    });

    // Resolution times: every ticket opened in 2025.
    let (start, end) = ("2025-01-01 00:00:00", "2026-01-01 00:00:00");
    let req = pb::GetResolutionTimeReportRequest {
        start_time: Some(common::timestamp(utc_seconds(start), 0)),
        end_time: Some(common::timestamp(utc_seconds(end), 0)),
        granularity: pb::Granularity::Month as i32,
        ..Default::default()
    };
    let (service, report) = timed(runs, || {
        let mut c = analytics.clone();
        let req = req.clone();
        async move { Ok(c.get_resolution_time_report(req).await?.into_inner()) }
    })
    .await?;
    let sql = format!(
        "SELECT {} AS a, {} AS b FROM service_tickets WHERE open_time >= '{start}' AND \
         open_time < '{end}'",
        cast("open_time"),
        cast("resolve_time"),
    );
    let (baseline, rows) = timed(runs, || time_pairs(&t.driver, &sql)).await?;
    let expected = wait_figures(&rows.unwrap_or_default())?;
    let total = report.total.unwrap_or_default();
    let got = (
        total.total_count,
        total.completed_count,
        micros(&total.mean),
    );
    let same = got == expected;
    say!(
        "  resolution times: service {:.1} ms {got:?}, SELECT {:.1} ms {expected:?}, same: {same}",
        ms(service),
        ms(baseline)
    );
    out.push(
        Figure::new(
            t.db,
            "GetResolutionTimeReport all tickets, 1 year, monthly",
            "SELECT open_time, resolve_time; figures in the client",
            "ms",
            ms(service),
            ms(baseline),
            RatioKind::Speed,
            None,
        )
        .same(same),
    );

    // Stale customers: no contact in the last 30 days of 2025, first page of 50.
    let cutoff = "2025-12-02 00:00:00";
    let req = pb::ListAttentionCustomersRequest {
        reason: pb::AttentionReason::Stale as i32,
        stale_days: 30,
        as_of: Some(common::timestamp(utc_seconds("2026-01-01 00:00:00"), 0)),
        ..Default::default()
    };
    let (service, page) = timed(runs, || {
        let mut c = analytics.clone();
        let req = req.clone();
        async move { Ok(c.list_attention_customers(req).await?.into_inner()) }
    })
    .await?;
    let sql = format!(
        "SELECT {} AS k, customer_id AS n FROM (SELECT customer_id, MAX(occur_time) AS last \
         FROM communications GROUP BY customer_id) t WHERE last < '{cutoff}' ORDER BY last, \
         customer_id LIMIT 50",
        cast("last")
    );
    let (baseline, rows) = timed(runs, || t.driver.key_counts(&sql, &sql)).await?;
    let rows: Vec<i64> = rows.into_iter().map(|(_, id)| id).collect();
    let got: Vec<i64> = page.customers.iter().map(|c| c.customer_id).collect();
    let same = got == rows;
    say!(
        "  stale customers: service {:.1} ms ({} rows), GROUP BY MAX {:.1} ms ({} rows), same: {same}",
        ms(service),
        got.len(),
        ms(baseline),
        rows.len()
    );
    out.push(
        Figure::new(
            t.db,
            "ListAttentionCustomers STALE 30 days, first page of 50",
            "GROUP BY customer_id MAX(occur_time) ORDER BY LIMIT 50",
            "ms",
            ms(service),
            ms(baseline),
            RatioKind::Speed,
            None,
        )
        .same(same),
    );

    // Declining customers: Q4 2025 against Q3 2025, at least 30% fewer, first page.
    let req = pb::ListAttentionCustomersRequest {
        reason: pb::AttentionReason::Decline as i32,
        start_time: Some(common::timestamp(utc_seconds("2025-10-01 00:00:00"), 0)),
        end_time: Some(common::timestamp(utc_seconds("2026-01-01 00:00:00"), 0)),
        min_drop_percent: 30,
        ..Default::default()
    };
    let (service, page) = timed(runs, || {
        let mut c = analytics.clone();
        let req = req.clone();
        async move { Ok(c.list_attention_customers(req).await?.into_inner()) }
    })
    .await?;
    let sql = "SELECT customer_id AS id, prev, cur FROM (SELECT customer_id, \
               SUM(CASE WHEN occur_time < '2025-10-01 00:00:00' THEN 1 ELSE 0 END) AS prev, \
               SUM(CASE WHEN occur_time >= '2025-10-01 00:00:00' THEN 1 ELSE 0 END) AS cur \
               FROM communications WHERE occur_time >= '2025-07-01 00:00:00' AND occur_time < \
               '2026-01-01 00:00:00' GROUP BY customer_id) t WHERE prev >= 1 AND \
               (prev - cur) * 100 >= 30 * prev ORDER BY (prev - cur) * 1.0 / prev DESC, prev \
               DESC, customer_id LIMIT 50";
    let (baseline, rows) = timed(runs, || drops(&t.driver, sql)).await?;
    let got: Vec<(i64, i64, i64)> = page
        .customers
        .iter()
        .map(|c| (c.customer_id, c.previous_count, c.current_count))
        .collect();
    let same = got == rows;
    say!(
        "  declining customers: service {:.1} ms ({} rows), GROUP BY {:.1} ms ({} rows), same: {same}",
        ms(service),
        got.len(),
        ms(baseline),
        rows.len()
    );
    out.push(
        Figure::new(
            t.db,
            "ListAttentionCustomers DECLINE Q4 vs Q3 >= 30%, first page of 50",
            "GROUP BY customer_id over both quarters, ORDER BY drop LIMIT 50",
            "ms",
            ms(service),
            ms(baseline),
            RatioKind::Speed,
            None,
        )
        .same(same),
    );

    // Duplicate customers: the first page of groups (phone groups come first).
    let req = pb::ListDuplicateCustomersRequest::default();
    let (service, page) = timed(runs, || {
        let mut c = customers.clone();
        let req = req.clone();
        async move { Ok(c.list_duplicate_customers(req).await?.into_inner()) }
    })
    .await?;
    let sql = "SELECT phone AS k, COUNT(*) AS n FROM customers WHERE delete_time IS NULL AND \
               phone <> '' GROUP BY phone HAVING COUNT(*) > 1 ORDER BY phone LIMIT 50";
    let (baseline, rows) = timed(runs, || t.driver.key_counts(sql, sql)).await?;
    let got: Vec<(String, i64)> = page
        .groups
        .iter()
        .filter(|g| g.key == pb::DuplicateKey::Phone as i32)
        .map(|g| (g.value.clone(), i64::from(g.customer_count)))
        .collect();
    let same = got.len() == page.groups.len().min(rows.len()) && rows.starts_with(&got);
    say!(
        "  duplicate groups: service {:.1} ms ({} groups, {} by phone), GROUP BY phone {:.1} ms ({} groups), same: {same}",
        ms(service),
        page.groups.len(),
        got.len(),
        ms(baseline),
        rows.len()
    );
    out.push(
        Figure::new(
            t.db,
            "ListDuplicateCustomers first page of 50 groups with members",
            "GROUP BY phone HAVING COUNT(*) > 1 ORDER BY phone LIMIT 50 (no members)",
            "ms",
            ms(service),
            ms(baseline),
            RatioKind::Speed,
            None,
        )
        .same(same),
    );
    drop(server);
    Ok(())
}

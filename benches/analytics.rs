//! Benchmark of AnalyticsService against the hand-written SQL for the same figures, on
//! SQLite and MariaDB, with the real server in-process and `CRM_BENCH_ROWS` rows.
//!
//! Run: `cargo bench --bench analytics` (MariaDB at `CRM_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306`; skipped with a message when unreachable).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::Rng;
use crm_comms::config::Config;
use crm_comms::db::Db;
use crm_comms::pb::{self, analytics_service_client::AnalyticsServiceClient};
use diesel::{Connection, RunQueryDsl};
use mysql_async::prelude::Queryable;
use tokio::{net::TcpListener, sync::watch};

const CUSTOMERS: u64 = 1000;
const BATCH: usize = 2000;
const RUNS: usize = 3;
const KEYWORDS: [&str; 3] = ["refund", "退款", "invoice"];
const PATTERN: &str = "order [0-9]{6}";
/// 2024-01-01T00:00:00Z and 2025-01-01T00:00:00Z.
const START: i64 = 1_704_067_200;
const END: i64 = 1_735_689_600;

const PHRASES: [&str; 12] = [
    "Customer asked about the refund for order ",
    "客户询问退款进度，订单号 ",
    "Sent the invoice again, order ",
    "电话回访，客户对物流速度不满意 ",
    "Follow-up call about delivery of order ",
    "客户希望更换颜色，已登记 ",
    "Discussed the annual contract renewal ",
    "在线咨询优惠活动和会员积分 ",
    "Complaint: the package arrived damaged ",
    "客户确认收货，满意度很高 ",
    "Requested a refund because of late delivery ",
    "发票抬头需要修改，已转财务 ",
];

struct Row {
    customer_id: u64,
    channel: u64,
    direction: u64,
    time: String,
    content: String,
    /// Scored as the service scores what it records.
    sentiment: i16,
}

fn row(rng: &mut Rng) -> Row {
    let secs = START + (rng.next() % (END - START) as u64) as i64;
    let micros = rng.next() % 1_000_000;
    let t = chrono::DateTime::from_timestamp(secs, (micros * 1000) as u32).unwrap();
    let a = PHRASES[(rng.next() % 12) as usize];
    let b = PHRASES[(rng.next() % 12) as usize];
    let n = rng.next() % 1_000_000;
    let content = format!("{a}{n:06}. {b}");
    Row {
        sentiment: crm_comms::analytics::sentiment::score(&content),
        customer_id: 1 + rng.next() % CUSTOMERS,
        channel: 1 + rng.next() % 5,
        direction: 1 + rng.next() % 2,
        // The text form diesel writes for SQLite (and the service compares against).
        time: t.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
        content,
    }
}

/// `INSERT ... VALUES (...), (...)` of the next `n` rows (values are generated, and
/// contain no quotes).
fn insert_sql(rng: &mut Rng, n: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO communications (customer_id, channel, direction, occur_time, content, \
         outcome, create_time, sentiment) VALUES ",
    );
    for i in 0..n {
        let r = row(rng);
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "({}, {}, {}, '{}', '{}', '', '{}', {})",
            r.customer_id, r.channel, r.direction, r.time, r.content, r.time, r.sentiment
        ));
    }
    sql
}

/// A satisfaction survey about every tenth communication, sent when it happened; its
/// score `(id / 10) % 6` (0: not answered).
fn surveys_sql(div: &str) -> String {
    format!(
        "INSERT INTO satisfaction_surveys (customer_id, communication_id, channel, target_time, \
         sent_time, score, comment, answer_time, create_time, update_time, version) SELECT \
         customer_id, id, channel, occur_time, occur_time, (id {div} 10) % 6, '', CASE WHEN \
         (id {div} 10) % 6 = 0 THEN NULL ELSE occur_time END, occur_time, occur_time, 1 FROM \
         communications WHERE id % 10 = 0"
    )
}

async fn seed_mysql(url: &str, rows: usize) {
    let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut done = 0;
    while done < rows {
        let n = BATCH.min(rows - done);
        conn.query_drop(insert_sql(&mut rng, n)).await.unwrap();
        done += n;
    }
    conn.query_drop(surveys_sql("DIV")).await.unwrap();
    conn.query_drop("ANALYZE TABLE communications, satisfaction_surveys")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
}

fn seed_sqlite(path: &str, rows: usize) {
    let mut conn = diesel::SqliteConnection::establish(path).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut done = 0;
    while done < rows {
        let n = BATCH.min(rows - done);
        let sql = insert_sql(&mut rng, n);
        conn.transaction::<_, diesel::result::Error, _>(|c| {
            diesel::sql_query(sql).execute(c)?;
            Ok(())
        })
        .unwrap();
        done += n;
    }
    diesel::sql_query(surveys_sql("/"))
        .execute(&mut conn)
        .unwrap();
    diesel::sql_query("ANALYZE").execute(&mut conn).unwrap();
}

async fn time<T, F: std::future::Future<Output = T>>(mut f: impl FnMut() -> F) -> (Duration, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let t0 = Instant::now();
        last = Some(f().await);
        times.push(t0.elapsed());
    }
    (common::median_by_key(times, |t| *t), last.unwrap())
}

/// Hand-written SQL, run on the same driver the service uses.
enum Direct {
    Mysql(String),
    Sqlite(String),
}

impl Direct {
    async fn daily(&self) -> Vec<(String, i64)> {
        match self {
            Direct::Mysql(url) => {
                let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
                let rows: Vec<(String, i64)> = conn
                    .query(
                        "SELECT CAST(DATE(occur_time) AS CHAR), COUNT(*) FROM communications \
                         WHERE occur_time >= '2024-01-01' AND occur_time < '2025-01-01' \
                         GROUP BY 1 ORDER BY 1",
                    )
                    .await
                    .unwrap();
                conn.disconnect().await.unwrap();
                rows
            }
            Direct::Sqlite(path) => {
                #[derive(diesel::QueryableByName)]
                struct R {
                    #[diesel(sql_type = diesel::sql_types::Text)]
                    d: String,
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                }
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
                    diesel::sql_query(
                        "SELECT date(occur_time) AS d, COUNT(*) AS n FROM communications \
                         WHERE occur_time >= '2024-01-01' AND occur_time < '2025-01-01' \
                         GROUP BY 1 ORDER BY 1",
                    )
                    .load::<R>(&mut conn)
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.d, r.n))
                    .collect()
                })
                .await
                .unwrap()
            }
        }
    }

    /// `(day, count, negative, positive)` rows of a one-column-per-figure GROUP BY.
    async fn daily_figures(&self, sql: &str) -> Vec<(String, i64, i64, i64)> {
        match self {
            Direct::Mysql(url) => {
                let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
                let rows: Vec<(String, i64, i64, i64)> = conn.query(sql).await.unwrap();
                conn.disconnect().await.unwrap();
                rows
            }
            Direct::Sqlite(path) => {
                #[derive(diesel::QueryableByName)]
                struct R {
                    #[diesel(sql_type = diesel::sql_types::Text)]
                    d: String,
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    a: i64,
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    b: i64,
                }
                let (path, sql) = (
                    path.clone(),
                    sql.replace("CAST(DATE(", "date((")
                        .replace(" AS CHAR)", ")")
                        .replace(" AS SIGNED)", ")")
                        .replace("CAST(", "("),
                );
                tokio::task::spawn_blocking(move || {
                    let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
                    diesel::sql_query(sql)
                        .load::<R>(&mut conn)
                        .unwrap()
                        .into_iter()
                        .map(|r| (r.d, r.n, r.a, r.b))
                        .collect()
                })
                .await
                .unwrap()
            }
        }
    }

    async fn content(&self) -> Vec<i64> {
        match self {
            Direct::Mysql(url) => {
                let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
                let row: Option<(i64, i64, i64, i64)> = conn
                    .query_first(format!(
                        "SELECT CAST(SUM(content LIKE '%{}%') AS SIGNED), \
                         CAST(SUM(content LIKE '%{}%') AS SIGNED), \
                         CAST(SUM(content LIKE '%{}%') AS SIGNED), \
                         CAST(SUM(content REGEXP '{PATTERN}') AS SIGNED) FROM communications \
                         WHERE occur_time >= '2024-01-01' AND occur_time < '2025-01-01'",
                        KEYWORDS[0], KEYWORDS[1], KEYWORDS[2]
                    ))
                    .await
                    .unwrap();
                conn.disconnect().await.unwrap();
                let (a, b, c, d) = row.unwrap();
                vec![a, b, c, d]
            }
            Direct::Sqlite(path) => {
                #[derive(diesel::QueryableByName)]
                struct R {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    a: i64,
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    b: i64,
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    c: i64,
                }
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
                    let r: R = diesel::sql_query(format!(
                        "SELECT SUM(content LIKE '%{}%') AS a, SUM(content LIKE '%{}%') AS b, \
                         SUM(content LIKE '%{}%') AS c FROM communications \
                         WHERE occur_time >= '2024-01-01' AND occur_time < '2025-01-01'",
                        KEYWORDS[0], KEYWORDS[1], KEYWORDS[2]
                    ))
                    .get_result(&mut conn)
                    .unwrap();
                    vec![r.a, r.b, r.c]
                })
                .await
                .unwrap()
            }
        }
    }
}

async fn measure(name: &str, url: &str, direct: Direct, out: &mut Vec<String>) {
    let db = Db::connect(url, &Default::default())
        .await
        .expect("connect");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(false);
    let server = tokio::spawn(crm_comms::server::serve(
        Config::new(addr, url.to_owned()),
        db,
        listener,
        rx,
    ));
    let channel = common::connect(&addr.to_string()).await.unwrap();
    let client =
        AnalyticsServiceClient::new(channel).max_decoding_message_size(common::MAX_MESSAGE_BYTES);

    let freq_req = pb::GetFrequencyReportRequest {
        start_time: Some(common::timestamp(START, 0)),
        end_time: Some(common::timestamp(END, 0)),
        granularity: pb::Granularity::Day as i32,
        time_zone: "UTC".into(),
        ..Default::default()
    };
    let (service, report) = time(|| {
        let mut c = client.clone();
        let req = freq_req.clone();
        async move { c.get_frequency_report(req).await.unwrap().into_inner() }
    })
    .await;
    let (sql, days) = time(|| direct.daily()).await;
    let sql_counts: Vec<i64> = days.iter().map(|d| d.1).collect();
    let service_counts: Vec<i64> = report.buckets.iter().map(|b| b.count).collect();
    let same = sql_counts == service_counts;
    out.push(row_line(
        name,
        "GetFrequencyReport (1 year, daily)",
        service,
        sql,
        same,
    ));
    eprintln!(
        "{name}: frequency total {} over {} buckets; SQL days {}; figures equal: {same}",
        report.total_count,
        report.buckets.len(),
        days.len()
    );

    let content_req = pb::GetContentReportRequest {
        start_time: Some(common::timestamp(START, 0)),
        end_time: Some(common::timestamp(END, 0)),
        keywords: KEYWORDS.iter().map(|k| (*k).to_owned()).collect(),
        patterns: vec![PATTERN.to_owned()],
        sample_limit: 10,
        ..Default::default()
    };
    let (service, report) = time(|| {
        let mut c = client.clone();
        let req = content_req.clone();
        async move { c.get_content_report(req).await.unwrap().into_inner() }
    })
    .await;
    let (sql, counts) = time(|| direct.content()).await;
    let service_counts: Vec<i64> = report
        .keywords
        .iter()
        .chain(&report.patterns)
        .map(|m| m.message_count)
        .take(counts.len())
        .collect();
    let same = service_counts == counts;
    let op = if counts.len() == 4 {
        "GetContentReport (3 keywords + 1 pattern)"
    } else {
        "GetContentReport (3 kw + 1 pattern; SQL: 3 LIKE only)"
    };
    out.push(row_line(name, op, service, sql, same));
    eprintln!(
        "{name}: content scanned {}; service {:?}; SQL {:?}",
        report.scanned_count,
        report
            .keywords
            .iter()
            .chain(&report.patterns)
            .map(|m| m.message_count)
            .collect::<Vec<_>>(),
        counts
    );
    // The frequency report split by sentiment, against the GROUP BY that sums it.
    let split_req = pb::GetFrequencyReportRequest {
        include_sentiment: true,
        ..freq_req.clone()
    };
    let (service, report) = time(|| {
        let mut c = client.clone();
        let req = split_req.clone();
        async move { c.get_frequency_report(req).await.unwrap().into_inner() }
    })
    .await;
    let (sql, days) = time(|| {
        direct.daily_figures(
            "SELECT CAST(DATE(occur_time) AS CHAR) AS d, COUNT(*) AS n, CAST(SUM(CASE WHEN \
             sentiment < -50 THEN 1 ELSE 0 END) AS SIGNED) AS a, CAST(SUM(CASE WHEN sentiment > \
             50 THEN 1 ELSE 0 END) AS SIGNED) AS b FROM communications WHERE occur_time >= \
             '2024-01-01' AND occur_time < '2025-01-01' GROUP BY 1 ORDER BY 1",
        )
    })
    .await;
    let sql_figures: Vec<(i64, i64, i64)> = days.iter().map(|d| (d.1, d.2, d.3)).collect();
    let service_figures: Vec<(i64, i64, i64)> = report
        .buckets
        .iter()
        .map(|b| {
            let s = b.sentiment.unwrap_or_default();
            (b.count, s.negative_count, s.positive_count)
        })
        .collect();
    let same = sql_figures == service_figures;
    out.push(row_line(
        name,
        "GetFrequencyReport with include_sentiment",
        service,
        sql,
        same,
    ));

    // The satisfaction report, against the GROUP BY of sent and answered surveys.
    let csat_req = pb::GetSatisfactionReportRequest {
        start_time: Some(common::timestamp(START, 0)),
        end_time: Some(common::timestamp(END, 0)),
        granularity: pb::Granularity::Day as i32,
        time_zone: "UTC".into(),
        ..Default::default()
    };
    let (service, report) = time(|| {
        let mut c = client.clone();
        let req = csat_req.clone();
        async move { c.get_satisfaction_report(req).await.unwrap().into_inner() }
    })
    .await;
    let (sql, days) = time(|| {
        direct.daily_figures(
            "SELECT CAST(DATE(sent_time) AS CHAR) AS d, COUNT(*) AS n, CAST(SUM(CASE WHEN score \
             > 0 THEN 1 ELSE 0 END) AS SIGNED) AS a, CAST(SUM(score) AS SIGNED) AS b FROM \
             satisfaction_surveys WHERE sent_time >= '2024-01-01' AND sent_time < '2025-01-01' \
             GROUP BY 1 ORDER BY 1",
        )
    })
    .await;
    let sql_figures: Vec<(i64, i64)> = days.iter().map(|d| (d.1, d.2)).collect();
    let service_figures: Vec<(i64, i64)> = report
        .buckets
        .iter()
        .filter_map(|b| b.figures.as_ref())
        .filter_map(|f| f.overall.as_ref())
        .map(|o| (o.sent_count, o.answered_count))
        .collect();
    let same = sql_figures == service_figures;
    out.push(row_line(
        name,
        "GetSatisfactionReport (1 year, daily)",
        service,
        sql,
        same,
    ));
    eprintln!(
        "{name}: satisfaction sent {:?} answered {:?}; SQL days {}; figures equal: {same}",
        report
            .total
            .as_ref()
            .and_then(|t| t.overall.as_ref())
            .map(|o| o.sent_count),
        report
            .total
            .as_ref()
            .and_then(|t| t.overall.as_ref())
            .map(|o| o.answered_count),
        days.len()
    );
    let _ = tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

/// Builds the rollups for the rows seeded behind the service's back (the seed writes
/// with plain SQL), as a server upgrading an existing database does at start.
async fn build_rollups(name: &str, url: &str) {
    let db = Db::connect(url, &Default::default())
        .await
        .expect("connect");
    let t0 = Instant::now();
    crm_comms::db::rollups::rebuild(&db, crm_comms::model::time::now())
        .await
        .expect("build rollups");
    eprintln!("{name}: built the rollups in {:.1?}", t0.elapsed());
}

fn row_line(db: &str, op: &str, service: Duration, sql: Duration, same: bool) -> String {
    let (s, q) = (service.as_secs_f64() * 1e3, sql.as_secs_f64() * 1e3);
    format!(
        "| {db:<8} | {op:<52} | {s:>10.1} | {q:>8.1} | {:>5.2} | {} |",
        s / q,
        if same { "yes" } else { "NO" }
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rows = common::env_usize("CRM_BENCH_ROWS", 1_000_000);
    let only = std::env::var("CRM_BENCH_ONLY").unwrap_or_default();
    let mut out = Vec::new();

    if only.is_empty() || only == "sqlite" {
        let db = common::TempSqlite::new().unwrap();
        drop(
            Db::connect(&db.url, &Default::default())
                .await
                .expect("migrate"),
        );
        let t0 = Instant::now();
        let p = db.path.clone();
        tokio::task::spawn_blocking(move || seed_sqlite(&p, rows))
            .await
            .unwrap();
        eprintln!("sqlite: seeded {rows} rows in {:.1?}", t0.elapsed());
        build_rollups("sqlite", &db.url).await;
        measure("SQLite", &db.url, Direct::Sqlite(db.path.clone()), &mut out).await;
    }

    if only.is_empty() || only == "mysql" {
        let base = common::mysql_base_url("CRM_TEST_MYSQL_URL");
        let name = common::run_database_name("crm_bench");
        match mysql_async::Conn::from_url(common::admin_url(&base)).await {
            Err(e) => eprintln!("skipping MariaDB: unreachable at {base}: {e}"),
            Ok(mut admin) => {
                let url = common::create_database(&mut admin, &base, &name)
                    .await
                    .unwrap();
                drop(
                    Db::connect(&url, &Default::default())
                        .await
                        .expect("migrate"),
                );
                let t0 = Instant::now();
                seed_mysql(&url, rows).await;
                eprintln!("mariadb: seeded {rows} rows in {:.1?}", t0.elapsed());
                build_rollups("mariadb", &url).await;
                measure("MariaDB", &url, Direct::Mysql(url.clone()), &mut out).await;
                common::drop_database(&mut admin, &name).await.unwrap();
                let _ = admin.disconnect().await;
            }
        }
    }

    println!("\n{rows} communications, ~{CUSTOMERS} customers, one year; median of {RUNS} runs\n");
    println!(
        "| database | {:<52} | service ms | SQL ms | ratio | same figures |",
        "operation"
    );
    println!("|---|---|---:|---:|---:|---|");
    for line in out {
        println!("{line}");
    }
}

//! Measures one `StreamTimeline` of 1,000,000 events (SQLite and MariaDB) against the same rows
//! read by the driver alone, and the server's peak memory; run: `cargo bench --bench timeline`.
#![allow(clippy::unwrap_used, missing_docs)]

// Settings (environment):
//   CRM_BENCH_ROWS       communications seeded for the one customer (default 1,000,000)
//   CRM_BENCH_MYSQL_URL  MariaDB server (default mysql://root@127.0.0.1:3306); a database
//                        `crm_bench_timeline_<pid>` is created there and dropped at the end
//   CRM_BENCH_RUNS       timed runs per figure, the median is printed (default 3)
//   CRM_BENCH_DB         `sqlite`, `mysql` or both (default)

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use common::{NewComm, Server};
use crm_comms::db::communications::CommunicationRow;
use crm_comms::db::schema::communications;
use crm_comms::pb::{
    communication_service_client::CommunicationServiceClient, timeline_event::Entry,
    StreamTimelineRequest, TimelineOrder,
};
use diesel::connection::DefaultLoadingMode;
use diesel::prelude::*;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Row, Value};
use prost::Message;
use tonic::transport::Channel;

const SERVER: &str = env!("CARGO_BIN_EXE_crm-comms");
/// Rows per statement when seeding.
const INSERT_ROWS: usize = 2000;
/// Rows per seeding transaction.
const TX_ROWS: usize = 50_000;
/// Rows per keyset page: the server's first page (`service::timeline::PAGE_ROWS`).
const PAGE: i64 = crm_comms::service::timeline::PAGE_ROWS;
/// A figure whose first run takes longer than this is not repeated (keeps the run short).
const SLOW: Duration = Duration::from_secs(45);
const YEAR_US: i64 = 365 * 86_400 * 1_000_000;
const COLUMNS: &str = "id, customer_id, channel, direction, occur_time, content, outcome, \
     phone_number, call_duration_us, email_address, email_subject, chat_platform, \
     chat_conversation_id, create_time, sentiment";

// ---------------------------------------------------------------------------------------
// Generated data
// ---------------------------------------------------------------------------------------

fn base_time() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
}

/// The time of timeline position `slot` (0..n): spread over a year; every slot divisible
/// by 7 shares the time of the slot before it, so about 1 in 7 times is repeated.
fn slot_time(slot: usize, n: usize) -> NaiveDateTime {
    let step = YEAR_US / n.max(1) as i64;
    let s = if slot % 7 == 0 && slot > 0 {
        slot - 1
    } else {
        slot
    };
    base_time() + chrono::Duration::microseconds(s as i64 * step)
}

/// Timeline position of the `i`-th inserted row: mostly in insertion order, but one
/// block of 1000 in ten was "back-filled" in reverse, so ids do not follow time there.
fn slot_of(i: usize, n: usize) -> usize {
    let block = i / 1000;
    let start = block * 1000;
    let end = (start + 1000).min(n);
    if block % 10 == 3 {
        start + (end - 1 - i)
    } else {
        i
    }
}

/// The first `k` events in timeline order are exactly those before `slot_time(k)`,
/// provided slot `k` does not share the time of slot `k - 1`.
fn cut_slot(n: usize) -> usize {
    let mut k = (n / 10).max(1);
    while k % 7 == 0 {
        k += 1;
    }
    k.min(n)
}

const CONTENTS: [&str; 6] = [
    "客户来电询问订单 #{n} 的物流进度, asked whether express delivery is possible; 已答复三天内送达。",
    "Sent the quarterly price list to the buyer; 客户表示下周确认采购数量 for order #{n}.",
    "微信沟通: customer reports the app crashes on login (iOS 17), 已转技术支持 ticket #{n}.",
    "Meeting at the Shanghai office 上海办公室, reviewed contract terms 合同条款 #{n}; next step: legal review.",
    "Internal note 内部备注: VIP customer, prefers email over phone; 不要在午休时间来电 #{n}.",
    "Outbound call about overdue invoice #{n}, customer promised payment by Friday 周五前付款.",
];
const OUTCOMES: [&str; 4] = [
    "",
    "resolved 已解决",
    "follow-up 需回访",
    "refund approved 退款已批准",
];
const PLATFORMS: [&str; 3] = ["wechat", "web", "whatsapp"];

fn gen_row(i: usize, n: usize, customer_id: i64) -> NewComm {
    let channel = (i % 5) as i32 + 1;
    let occur_time = slot_time(slot_of(i, n), n);
    let mut row = NewComm {
        customer_id,
        channel,
        direction: ((i / 5) % 2) as i32 + 1,
        occur_time,
        content: CONTENTS[i % CONTENTS.len()].replace("{n}", &format!("{}", 100_000 + i)),
        outcome: OUTCOMES[i % OUTCOMES.len()].to_owned(),
        phone_number: None,
        call_duration_us: None,
        email_address: None,
        email_subject: None,
        chat_platform: None,
        chat_conversation_id: None,
        create_time: occur_time + chrono::Duration::milliseconds(1500),
        sentiment: None,
    };
    row.sentiment = Some(crm_comms::analytics::sentiment::score(&row.content));
    match channel {
        1 => {
            row.phone_number = Some(format!("+86138{:08}", i % 100_000_000));
            row.call_duration_us = Some((30 + (i % 600) as i64) * 1_000_000);
        }
        2 => {
            row.email_address = Some("zhang.wei@example.com".to_owned());
            row.email_subject = Some(format!("Re: 订单 #{} invoice 发票", 100_000 + i));
        }
        3 => {
            row.chat_platform = Some(PLATFORMS[i % 3].to_owned());
            row.chat_conversation_id = Some(format!("conv-{}", i / 7));
        }
        _ => {}
    }
    row
}

/// Bytes of a row's column values (8 per integer or time), as the drivers hand them over.
#[allow(clippy::too_many_arguments)]
fn value_bytes(
    content: &str,
    outcome: &str,
    phone: &Option<String>,
    duration: &Option<i64>,
    email: &Option<String>,
    subject: &Option<String>,
    platform: &Option<String>,
    conversation: &Option<String>,
) -> u64 {
    let s = |o: &Option<String>| o.as_ref().map_or(0, |s| s.len());
    (6 * 8
        + content.len()
        + outcome.len()
        + s(phone)
        + duration.map_or(0, |_| 8)
        + s(email)
        + s(subject)
        + s(platform)
        + s(conversation)) as u64
}

fn row_bytes(r: &CommunicationRow) -> u64 {
    value_bytes(
        &r.content,
        &r.outcome,
        &r.phone_number,
        &r.call_duration_us,
        &r.email_address,
        &r.email_subject,
        &r.chat_platform,
        &r.chat_conversation_id,
    )
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Run {
    events: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

struct Line {
    db: &'static str,
    what: &'static str,
    run: Run,
    runs: usize,
}

struct Report {
    db: &'static str,
    lines: Vec<Line>,
    memory: Option<(f64, f64, usize, f64, usize)>,
    notes: Vec<String>,
}

impl Report {
    fn new(db: &'static str) -> Self {
        Report {
            db,
            lines: Vec::new(),
            memory: None,
            notes: Vec::new(),
        }
    }

    fn add(&mut self, what: &'static str, runs: Vec<Run>) {
        let runs_len = runs.len();
        let run = common::median_by_key(runs, |r| r.elapsed);
        println!(
            "  {what}: {} events, {:.2} s, {:.0} events/s (median of {})",
            run.events,
            run.elapsed.as_secs_f64(),
            run.rate(),
            runs_len
        );
        self.lines.push(Line {
            db: self.db,
            what,
            run,
            runs: runs_len,
        });
    }

    fn note(&mut self, s: String) {
        println!("  {s}");
        self.notes.push(s);
    }

    fn print(&self) {
        let base = self.lines.first().map(|l| l.run.rate());
        for l in &self.lines {
            let ratio = base.map_or(String::new(), |b| format!("{:.2}", l.run.rate() / b));
            println!(
                "{:<9} {:<32} {:>8} {:>8.2} {:>10.0} {:>8.1} {:>4} {:>8}",
                l.db,
                l.what,
                l.run.events,
                l.run.elapsed.as_secs_f64(),
                l.run.rate(),
                l.run.bytes as f64 / 1e6,
                l.runs,
                ratio
            );
        }
        if let Some((idle, cut, cut_n, full, full_n)) = self.memory {
            println!(
                "{:<9} server peak RSS (VmHWM) idle / {} / {} events: {:.1} MB / {:.1} MB / {:.1} MB",
                self.db, cut_n, full_n, idle, cut, full
            );
        }
        for n in &self.notes {
            println!("{:<9} note: {n}", self.db);
        }
    }
}

fn print_header() {
    println!(
        "{:<9} {:<32} {:>8} {:>8} {:>10} {:>8} {:>4} {:>8}",
        "database",
        "measurement",
        "events",
        "seconds",
        "events/s",
        "MB",
        "runs",
        "ratio vs driver keyset"
    );
}

// ---------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------

/// A gRPC client of a bench server, accepting large messages.
async fn connect_client(server: &Server) -> Result<CommunicationServiceClient<Channel>> {
    Ok(CommunicationServiceClient::new(server.channel().await?)
        .max_decoding_message_size(common::MAX_MESSAGE_BYTES))
}

fn migrate(database_url: &str) -> Result<()> {
    let status = Command::new(SERVER)
        .args(["migrate", "--database-url", database_url])
        .env("RUST_LOG", "warn")
        .status()?;
    if !status.success() {
        bail!("crm-comms migrate failed: {status}");
    }
    Ok(())
}

/// One `StreamTimeline`, oldest first, ending before `end` if given; checks that the
/// events are communications strictly increasing by `(occur_time, id)`.
async fn stream_timeline(
    client: &mut CommunicationServiceClient<Channel>,
    customer_id: i64,
    end: Option<NaiveDateTime>,
) -> Result<Run> {
    let request = StreamTimelineRequest {
        customer_id,
        order: TimelineOrder::OldestFirst as i32,
        end_time: end.map(|t| {
            let t = t.and_utc();
            common::timestamp(t.timestamp(), t.timestamp_subsec_nanos() as i32)
        }),
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = client.stream_timeline(request).await?.into_inner();
    let mut events = 0u64;
    let mut bytes = 0u64;
    let mut last: Option<(i64, i32, i64)> = None;
    while let Some(event) = stream.message().await? {
        bytes += event.encoded_len() as u64;
        let t = event.occur_time.context("event without occur_time")?;
        let Some(Entry::Communication(c)) = &event.entry else {
            bail!("unexpected event {event:?}");
        };
        let key = (t.seconds, t.nanos, c.id);
        if last.is_some_and(|l| l >= key) {
            bail!("out of order at event {events}: {last:?} then {key:?}");
        }
        last = Some(key);
        events += 1;
    }
    Ok(Run {
        events,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// The service's figures and the server's memory, on fresh server processes.
async fn measure_service(
    report: &mut Report,
    url: &str,
    customer_id: i64,
    n: usize,
    runs: usize,
) -> Result<()> {
    let cut = cut_slot(n);
    let cut_end = slot_time(cut, n);

    // Fresh server: idle peak, then the peak after a stream of the first `cut` events.
    let server = Server::start(SERVER, url, Duration::from_secs(10)).await?;
    let mut client = connect_client(&server).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = server.peak_mb()?;
    let r = stream_timeline(&mut client, customer_id, Some(cut_end)).await?;
    if r.events != cut as u64 {
        bail!("cut stream returned {} events, expected {cut}", r.events);
    }
    let cut_peak = server.peak_mb()?;
    println!(
        "  {} events (end_time {cut_end}): {:.2} s, peak {cut_peak:.1} MB (idle {idle:.1} MB)",
        r.events,
        r.elapsed.as_secs_f64()
    );
    drop(client);
    drop(server);

    // Fresh server: the full stream, peak after the first run; then the other runs.
    let server = Server::start(SERVER, url, Duration::from_secs(10)).await?;
    let mut client = connect_client(&server).await?;
    let mut all = Vec::new();
    let mut full_peak = 0.0;
    for i in 0..runs {
        let r = stream_timeline(&mut client, customer_id, None).await?;
        if r.events != n as u64 {
            bail!("stream returned {} events, expected {n}", r.events);
        }
        if i == 0 {
            full_peak = server.peak_mb()?;
        }
        println!(
            "  StreamTimeline run {}: {:.2} s, {:.0} events/s",
            i + 1,
            r.elapsed.as_secs_f64(),
            r.rate()
        );
        let slow = r.elapsed > SLOW;
        all.push(r);
        if slow {
            break;
        }
    }
    report.add("StreamTimeline over gRPC", all);
    report.memory = Some((idle, cut_peak, cut, full_peak, n));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------

fn sqlite_seed(path: &str, n: usize) -> Result<i64> {
    let mut conn = SqliteConnection::establish(path)?;
    diesel::sql_query("PRAGMA synchronous = NORMAL").execute(&mut conn)?;
    let now = base_time() + chrono::Duration::days(400);
    let (name, phone, email) = ("张伟 Zhang Wei", "+8613800000000", "zhang.wei@example.com");
    diesel::sql_query(
        "INSERT INTO customers (name, gender, address, phone, email, search_text, version, \
         create_time, update_time) VALUES (?, 1, '上海市浦东新区 Pudong, Shanghai', ?, ?, ?, 1, ?, ?)",
    )
    .bind::<diesel::sql_types::Text, _>(name)
    .bind::<diesel::sql_types::Text, _>(phone)
    .bind::<diesel::sql_types::Text, _>(email)
    .bind::<diesel::sql_types::Text, _>(format!("{}\n{phone}\n{email}", name.to_lowercase()))
    .bind::<diesel::sql_types::Timestamp, _>(now)
    .bind::<diesel::sql_types::Timestamp, _>(now)
    .execute(&mut conn)?;
    let customer_id: i64 = crm_comms::db::schema::customers::table
        .select(diesel::dsl::max(crm_comms::db::schema::customers::id))
        .first::<Option<i64>>(&mut conn)?
        .context("no customer")?;

    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let tx_end = (i + TX_ROWS).min(n);
        conn.transaction::<_, diesel::result::Error, _>(|conn| {
            while i < tx_end {
                let end = (i + INSERT_ROWS).min(tx_end);
                let rows: Vec<NewComm> = (i..end).map(|k| gen_row(k, n, customer_id)).collect();
                diesel::insert_into(communications::table)
                    .values(&rows)
                    .execute(conn)?;
                i = end;
            }
            Ok(())
        })?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  seeded {n} communications in {secs:.1} s ({:.0} rows/s)",
        n as f64 / secs
    );
    diesel::sql_query("ANALYZE").execute(&mut conn)?;
    Ok(customer_id)
}

/// The server's query shape: keyset pages of `PAGE` rows by `(occur_time, id)`.
/// With `bound`, the redundant `occur_time >= ?` is added, which lets SQLite seek the
/// index to the page start instead of scanning the customer's entries from the first.
fn sqlite_keyset(path: &str, customer_id: i64, bound: bool) -> Result<Run> {
    use communications::dsl as c;
    let mut conn = SqliteConnection::establish(path)?;
    let started = Instant::now();
    let (mut events, mut bytes) = (0u64, 0u64);
    let mut after: Option<(NaiveDateTime, i64)> = None;
    loop {
        let mut q = c::communications
            .select(CommunicationRow::as_select())
            .filter(c::customer_id.eq(customer_id))
            .limit(PAGE)
            .into_boxed();
        if let Some((t, id)) = after {
            if bound {
                q = q.filter(c::occur_time.ge(t));
            }
            q = q.filter(
                c::occur_time
                    .gt(t)
                    .or(c::occur_time.eq(t).and(c::id.gt(id))),
            );
        }
        let rows: Vec<CommunicationRow> = q
            .order((c::occur_time.asc(), c::id.asc()))
            .load(&mut conn)?;
        events += rows.len() as u64;
        bytes += rows.iter().map(row_bytes).sum::<u64>();
        let full = rows.len() as i64 == PAGE;
        match rows.last() {
            Some(r) if full => after = Some((r.occur_time, r.id)),
            _ => break,
        }
    }
    Ok(Run {
        events,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// One query, rows streamed one at a time (`load_iter`).
fn sqlite_single(path: &str, customer_id: i64) -> Result<Run> {
    use communications::dsl as c;
    let mut conn = SqliteConnection::establish(path)?;
    let started = Instant::now();
    let (mut events, mut bytes) = (0u64, 0u64);
    let rows = c::communications
        .select(CommunicationRow::as_select())
        .filter(c::customer_id.eq(customer_id))
        .order((c::occur_time.asc(), c::id.asc()))
        .load_iter::<CommunicationRow, DefaultLoadingMode>(&mut conn)?;
    for row in rows {
        let row = row?;
        events += 1;
        bytes += row_bytes(&row);
    }
    Ok(Run {
        events,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// The plan SQLite picks for a keyset page with bound parameters, as the server runs it
/// (literal values can give a better plan than the bound query gets).
fn sqlite_plan(path: &str, bound: bool) -> Result<String> {
    use diesel::sql_types::{BigInt, Text};
    #[derive(QueryableByName)]
    struct PlanRow {
        #[diesel(sql_type = Text)]
        detail: String,
    }
    let mut conn = SqliteConnection::establish(path)?;
    let lower = if bound { "occur_time >= ? AND " } else { "" };
    let t = "2024-06-01 00:00:00";
    let sql = format!(
        "EXPLAIN QUERY PLAN SELECT {COLUMNS} FROM communications WHERE customer_id = ? \
         AND {lower}(occur_time > ? OR (occur_time = ? AND id > ?)) \
         ORDER BY occur_time, id LIMIT ?"
    );
    let rows: Vec<PlanRow> = if bound {
        diesel::sql_query(sql)
            .bind::<BigInt, _>(1)
            .bind::<Text, _>(t)
            .bind::<Text, _>(t)
            .bind::<Text, _>(t)
            .bind::<BigInt, _>(5)
            .bind::<BigInt, _>(PAGE)
            .load(&mut conn)?
    } else {
        diesel::sql_query(sql)
            .bind::<BigInt, _>(1)
            .bind::<Text, _>(t)
            .bind::<Text, _>(t)
            .bind::<BigInt, _>(5)
            .bind::<BigInt, _>(PAGE)
            .load(&mut conn)?
    };
    Ok(rows
        .into_iter()
        .map(|r| r.detail)
        .collect::<Vec<_>>()
        .join("; "))
}

async fn bench_sqlite(rt_runs: usize, n: usize) -> Result<Report> {
    println!("== sqlite ==");
    let mut report = Report::new("sqlite");
    let db = common::TempSqlite::new()?;
    let (path, url) = (&db.path, &db.url);
    migrate(url)?;
    let p = path.clone();
    let customer_id = tokio::task::spawn_blocking(move || sqlite_seed(&p, n)).await??;
    let size = std::fs::metadata(path)?.len() as f64 / 1e6;
    report.note(format!("database file {size:.0} MB"));
    report.note(format!(
        "keyset page plan without the >= bound: {}",
        sqlite_plan(path, false)?
    ));
    report.note(format!(
        "keyset page plan (server's shape, with the >= bound): {}",
        sqlite_plan(path, true)?
    ));

    let mut bounded = Vec::new();
    let mut single = Vec::new();
    for _ in 0..rt_runs {
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || sqlite_keyset(&p, customer_id, true)).await??;
        let slow = r.elapsed > SLOW;
        bounded.push(r);
        let p = path.clone();
        single.push(tokio::task::spawn_blocking(move || sqlite_single(&p, customer_id)).await??);
        if slow {
            break;
        }
    }
    for r in bounded.iter().chain(&single) {
        if r.events != n as u64 {
            bail!("driver read {} rows, expected {n}", r.events);
        }
    }
    report.add("driver keyset pages (baseline)", bounded);
    report.add("driver single query (load_iter)", single);
    measure_service(&mut report, url, customer_id, n, rt_runs).await?;
    drop(db);
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------------------

fn my_time(t: NaiveDateTime) -> Value {
    Value::Date(
        t.year() as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.and_utc().timestamp_subsec_micros(),
    )
}

/// A `DATETIME` from the binary (`Value::Date`) or text protocol.
fn from_my_time(v: Value) -> Result<NaiveDateTime> {
    match v {
        Value::Date(y, mo, d, h, mi, s, us) => {
            NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into())
                .and_then(|d| d.and_hms_micro_opt(h.into(), mi.into(), s.into(), us))
                .context("bad DATETIME")
        }
        Value::Bytes(b) => Ok(NaiveDateTime::parse_from_str(
            std::str::from_utf8(&b)?,
            "%Y-%m-%d %H:%M:%S%.f",
        )?),
        other => bail!("unexpected DATETIME value {other:?}"),
    }
}

/// Decodes a row of `COLUMNS` into the server's row type.
fn my_row(mut r: Row) -> Result<CommunicationRow> {
    Ok(CommunicationRow {
        id: r.take(0).context("id")?,
        customer_id: r.take(1).context("customer_id")?,
        channel: r.take(2).context("channel")?,
        direction: r.take(3).context("direction")?,
        occur_time: from_my_time(r.take(4).context("occur_time")?)?,
        content: r.take(5).context("content")?,
        outcome: r.take(6).context("outcome")?,
        phone_number: r.take(7).context("phone_number")?,
        call_duration_us: r.take(8).context("call_duration_us")?,
        email_address: r.take(9).context("email_address")?,
        email_subject: r.take(10).context("email_subject")?,
        chat_platform: r.take(11).context("chat_platform")?,
        chat_conversation_id: r.take(12).context("chat_conversation_id")?,
        create_time: from_my_time(r.take(13).context("create_time")?)?,
        sentiment: r.take(14).context("sentiment")?,
    })
}

async fn mysql_seed(conn: &mut mysql_async::Conn, n: usize) -> Result<i64> {
    let now = base_time() + chrono::Duration::days(400);
    let (name, phone, email) = ("张伟 Zhang Wei", "+8613800000000", "zhang.wei@example.com");
    conn.exec_drop(
        "INSERT INTO customers (name, gender, address, phone, email, search_text, version, \
         create_time, update_time) VALUES (?, 1, '上海市浦东新区 Pudong, Shanghai', ?, ?, ?, 1, ?, ?)",
        (
            name,
            phone,
            email,
            format!("{}\n{phone}\n{email}", name.to_lowercase()),
            my_time(now),
            my_time(now),
        ),
    )
    .await?;
    let customer_id = conn.last_insert_id().context("no customer id")? as i64;

    let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let sql = |rows: usize| {
        format!(
            "INSERT INTO communications (customer_id, channel, direction, occur_time, content, \
             outcome, phone_number, call_duration_us, email_address, email_subject, \
             chat_platform, chat_conversation_id, create_time) VALUES {}",
            vec![one; rows].join(", ")
        )
    };
    let full = conn.prep(sql(INSERT_ROWS)).await?;
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let tx_end = (i + TX_ROWS).min(n);
        conn.query_drop("START TRANSACTION").await?;
        while i < tx_end {
            let end = (i + INSERT_ROWS).min(tx_end);
            let mut params: Vec<Value> = Vec::with_capacity((end - i) * 13);
            for k in i..end {
                let r = gen_row(k, n, customer_id);
                params.extend([
                    r.customer_id.into(),
                    r.channel.into(),
                    r.direction.into(),
                    my_time(r.occur_time),
                    r.content.into(),
                    r.outcome.into(),
                    r.phone_number.into(),
                    r.call_duration_us.into(),
                    r.email_address.into(),
                    r.email_subject.into(),
                    r.chat_platform.into(),
                    r.chat_conversation_id.into(),
                    my_time(r.create_time),
                ]);
            }
            if end - i == INSERT_ROWS {
                conn.exec_drop(&full, Params::Positional(params)).await?;
            } else {
                conn.exec_drop(sql(end - i), Params::Positional(params))
                    .await?;
            }
            i = end;
        }
        conn.query_drop("COMMIT").await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  seeded {n} communications in {secs:.1} s ({:.0} rows/s)",
        n as f64 / secs
    );
    conn.query_drop("ANALYZE TABLE communications").await?;
    Ok(customer_id)
}

/// The server's query shape: keyset pages of `PAGE` rows by `(occur_time, id)`, each a
/// prepared statement read into a `Vec` and decoded into the server's row type.
/// With `bound`, the redundant `occur_time >= ?` is added (see `sqlite_keyset`).
async fn mysql_keyset(conn: &mut mysql_async::Conn, customer_id: i64, bound: bool) -> Result<Run> {
    // The server's shape on MySQL: the hint keeps MariaDB off a `ref` scan that walks
    // the customer's earlier entries for every page.
    let hint = if bound {
        " FORCE INDEX (ix_communications_customer_time)"
    } else {
        ""
    };
    let first = format!(
        "SELECT {COLUMNS} FROM communications{hint} WHERE customer_id = ? \
         ORDER BY occur_time, id LIMIT {PAGE}"
    );
    let lower = if bound { "occur_time >= ? AND " } else { "" };
    let next = format!(
        "SELECT {COLUMNS} FROM communications{hint} WHERE customer_id = ? AND {lower}\
         (occur_time > ? OR (occur_time = ? AND id > ?)) ORDER BY occur_time, id LIMIT {PAGE}"
    );
    let started = Instant::now();
    let (mut events, mut bytes) = (0u64, 0u64);
    let mut after: Option<(NaiveDateTime, i64)> = None;
    loop {
        let raw: Vec<Row> = match after {
            None => conn.exec(&first, (customer_id,)).await?,
            Some((t, id)) if bound => {
                let p = (customer_id, my_time(t), my_time(t), my_time(t), id);
                conn.exec(&next, p).await?
            }
            Some((t, id)) => {
                conn.exec(&next, (customer_id, my_time(t), my_time(t), id))
                    .await?
            }
        };
        let rows = raw.into_iter().map(my_row).collect::<Result<Vec<_>>>()?;
        events += rows.len() as u64;
        bytes += rows.iter().map(row_bytes).sum::<u64>();
        let full = rows.len() as i64 == PAGE;
        match rows.last() {
            Some(r) if full => after = Some((r.occur_time, r.id)),
            _ => break,
        }
    }
    Ok(Run {
        events,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// One query (text protocol), rows streamed one at a time (`query_iter`).
async fn mysql_single(conn: &mut mysql_async::Conn, customer_id: i64) -> Result<Run> {
    let started = Instant::now();
    let (mut events, mut bytes) = (0u64, 0u64);
    let mut error = None;
    let mut result = conn
        .query_iter(format!(
            "SELECT {COLUMNS} FROM communications WHERE customer_id = {customer_id} \
             ORDER BY occur_time, id"
        ))
        .await?;
    result
        .for_each(|row| match my_row(row) {
            Ok(r) => {
                events += 1;
                bytes += row_bytes(&r);
            }
            Err(e) => error = Some(e),
        })
        .await?;
    drop(result);
    if let Some(e) = error {
        return Err(e);
    }
    Ok(Run {
        events,
        bytes,
        elapsed: started.elapsed(),
    })
}

async fn mysql_plan(conn: &mut mysql_async::Conn) -> Result<String> {
    let rows: Vec<Row> = conn
        .query(format!(
            "EXPLAIN SELECT {COLUMNS} FROM communications WHERE customer_id = 1 \
             AND (occur_time > '2024-06-01' OR (occur_time = '2024-06-01' AND id > 5)) \
             ORDER BY occur_time, id LIMIT 1000"
        ))
        .await?;
    let mut out = Vec::new();
    for mut r in rows {
        let key: Option<String> = r.take("key").unwrap_or(None);
        let typ: Option<String> = r.take("type").unwrap_or(None);
        let extra: Option<String> = r.take("Extra").unwrap_or(None);
        out.push(format!(
            "type={} key={} extra={}",
            typ.unwrap_or_default(),
            key.unwrap_or_default(),
            extra.unwrap_or_default()
        ));
    }
    Ok(out.join("; "))
}

async fn bench_mysql(runs: usize, n: usize) -> Result<Option<Report>> {
    println!("== mariadb ==");
    let base = common::mysql_base_url("CRM_BENCH_MYSQL_URL");
    let base = base.trim_end_matches('/').to_owned();
    let admin_url = common::admin_url(&base);
    let connect = mysql_async::Conn::from_url(admin_url.clone());
    let mut admin = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            println!("mariadb skipped: unreachable at {admin_url}: {e}");
            return Ok(None);
        }
        Err(_) => {
            println!("mariadb skipped: no answer from {admin_url} within 5 s");
            return Ok(None);
        }
    };
    let name = common::run_database_name("crm_bench_timeline");
    let url = common::create_database(&mut admin, &base, &name).await?;
    let result = bench_mysql_in(&url, runs, n).await;
    common::drop_database(&mut admin, &name).await?;
    admin.disconnect().await?;
    println!("  dropped database {name}");
    result.map(Some)
}

async fn bench_mysql_in(url: &str, runs: usize, n: usize) -> Result<Report> {
    let mut report = Report::new("mariadb");
    migrate(url)?;
    let mut conn = mysql_async::Conn::from_url(url).await?;
    let customer_id = mysql_seed(&mut conn, n).await?;
    report.note(format!(
        "keyset page plan without FORCE INDEX (the server adds it): {}",
        mysql_plan(&mut conn).await?
    ));

    let mut bounded = Vec::new();
    let mut single = Vec::new();
    for _ in 0..runs {
        let r = mysql_keyset(&mut conn, customer_id, true).await?;
        let slow = r.elapsed > SLOW;
        bounded.push(r);
        single.push(mysql_single(&mut conn, customer_id).await?);
        if slow {
            break;
        }
    }
    for r in bounded.iter().chain(&single) {
        if r.events != n as u64 {
            bail!("driver read {} rows, expected {n}", r.events);
        }
    }
    report.add("driver keyset pages (baseline)", bounded);
    report.add("driver single query (query_iter)", single);
    conn.disconnect().await?;
    measure_service(&mut report, url, customer_id, n, runs).await?;
    Ok(report)
}

// ---------------------------------------------------------------------------------------

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let n = common::env_usize("CRM_BENCH_ROWS", 1_000_000).max(1);
    let runs = common::env_usize("CRM_BENCH_RUNS", 3).max(1);
    let which = std::env::var("CRM_BENCH_DB").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "StreamTimeline benchmark: {n} communications of one customer, median of up to {runs} runs \
         (one when the first takes over {}s), \
         {} CPUs",
        SLOW.as_secs(),
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let started = Instant::now();
    let mut reports = Vec::new();
    if which.is_empty() || which == "sqlite" {
        reports.push(rt.block_on(bench_sqlite(runs, n))?);
    }
    if which.is_empty() || which == "mysql" || which == "mariadb" {
        if let Some(r) = rt.block_on(bench_mysql(runs, n))? {
            reports.push(r);
        }
    }
    println!();
    print_header();
    for r in &reports {
        r.print();
    }
    println!(
        "(MB: column bytes read by the driver; protobuf bytes received over gRPC. \
         Total run {:.0} s.)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

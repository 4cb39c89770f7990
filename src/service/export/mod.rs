//! `export`: the data for BI tools. Every table as Parquet or CSV files partitioned by
//! month, with a manifest; incremental from the watermark of the previous run.
//!
//! A run covers what was recorded or changed up to its watermark, the settled time when
//! it started (the change feed's bound, [`crate::service::feed::SETTLE`] ago), so a row
//! committed late is never skipped: the next run, starting from this watermark, reads it.
//! Append-only tables (communications, transactions, the tombstones of deleted
//! communications, merges) are exact: each row is in exactly one run. Customers and
//! service tickets change in place: a run has each one changed in its window (by
//! `update_time`) in its latest state, and the window reaches [`LOOKBACK`] further back
//! (their changes are not held to the commit bound), so a consumer upserts them by id
//! (the highest `version` wins). Deleted customers (deleted, merged, purged) are their
//! own table; the `customer_months` rollup is small and is written whole by every run.
//! The CLI writes the files into a directory; the RPC writes them into a private
//! temporary directory and streams them.

pub mod files;

use std::path::Path;

use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};

use self::files::{
    col, month_of, opt, time_text, Column, FileEntry, Format, Kind, TableWriter, Value,
};
use crate::analytics::sentiment::Label;
use crate::db::communications::CommunicationRow;
use crate::db::export::{self as rows, Window};
use crate::db::transactions::TransactionRow;
use crate::db::Db;
use crate::error::{Error, Result, Violations};

/// How far before the watermark the tables that change in place are read again.
pub const LOOKBACK: std::time::Duration = std::time::Duration::from_secs(300);
/// Rows per read.
const PAGE_ROWS: i64 = 1000;
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The manifest's layout version.
pub const MANIFEST_VERSION: u32 = 1;

/// What one run exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    /// The file format.
    pub format: Format,
    /// The previous run's watermark; `None` for a full export.
    pub since: Option<NaiveDateTime>,
}

/// How a consumer applies a table's files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableEntry {
    /// The table.
    pub name: String,
    /// `append` (new rows only), `upsert` (by `key`, the highest `version` wins),
    /// `replace` (the whole table, replacing the previous run's).
    pub mode: String,
    /// The columns that identify a row.
    pub key: Vec<String>,
    /// Rows written this run.
    pub rows: u64,
}

/// `manifest.json`: what a run wrote and the watermark the next run starts from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Layout version of this file.
    pub version: u32,
    /// `parquet` or `csv`.
    pub format: String,
    /// The watermark this run started from; null for a full export.
    pub from_watermark: Option<String>,
    /// The watermark it covers up to: pass it as `--since` (or this file as
    /// `--since-manifest`) to the next run.
    pub to_watermark: String,
    /// When the run started (UTC).
    pub create_time: String,
    /// Every table, with how to apply it.
    pub tables: Vec<TableEntry>,
    /// Every file written.
    pub files: Vec<FileEntry>,
}

/// A watermark as written in a manifest: RFC 3339, UTC, microseconds.
pub fn watermark_text(t: NaiveDateTime) -> String {
    time_text(t)
}

/// Reads a watermark (any RFC 3339 time); `field` names it in the violation.
pub fn parse_watermark(v: &mut Violations, field: &str, s: &str) -> Option<NaiveDateTime> {
    match DateTime::parse_from_rfc3339(s.trim()) {
        Ok(t) => {
            let t = crate::model::time::truncate_micros(t.naive_utc());
            if t > crate::service::feed::settled_now() {
                v.add(
                    field,
                    "is later than anything settled: use a manifest's to_watermark",
                );
                None
            } else {
                Some(t)
            }
        }
        Err(e) => {
            v.add(
                field,
                format!(
                    "is not a watermark (an RFC 3339 time such as a manifest's to_watermark): {e}"
                ),
            );
            None
        }
    }
}

/// Reads `to_watermark` from the manifest at `path`.
pub fn watermark_of_manifest(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let manifest: Manifest = serde_json::from_str(&text)?;
    Ok(manifest.to_watermark)
}

const CUSTOMERS: &[Column] = &[
    col("id", Kind::Int),
    col("name", Kind::Text),
    col("gender", Kind::Text),
    opt("birth_date", Kind::Date),
    col("address", Kind::Text),
    col("phone", Kind::Text),
    col("email", Kind::Text),
    col("tags", Kind::Text),
    col("version", Kind::Int),
    col("create_time", Kind::Time),
    col("update_time", Kind::Time),
    opt("delete_time", Kind::Time),
    opt("merged_into", Kind::Int),
];

const TRANSACTIONS: &[Column] = &[
    col("id", Kind::Int),
    col("customer_id", Kind::Int),
    col("order_number", Kind::Text),
    col("product", Kind::Text),
    col("currency_code", Kind::Text),
    col("amount", Kind::Money),
    col("occur_time", Kind::Time),
    col("create_time", Kind::Time),
];

const TICKETS: &[Column] = &[
    col("id", Kind::Int),
    col("customer_id", Kind::Int),
    col("issue", Kind::Text),
    col("solution", Kind::Text),
    col("status", Kind::Text),
    col("open_time", Kind::Time),
    opt("resolve_time", Kind::Time),
    col("create_time", Kind::Time),
    col("update_time", Kind::Time),
    col("version", Kind::Int),
];

const SURVEYS: &[Column] = &[
    col("id", Kind::Int),
    col("customer_id", Kind::Int),
    opt("communication_id", Kind::Int),
    opt("ticket_id", Kind::Int),
    opt("channel", Kind::Text),
    col("target_time", Kind::Time),
    col("sent_time", Kind::Time),
    opt("score", Kind::Int),
    col("comment", Kind::Text),
    opt("answer_time", Kind::Time),
    col("update_time", Kind::Time),
    col("version", Kind::Int),
];

const COMMUNICATIONS: &[Column] = &[
    col("id", Kind::Int),
    col("customer_id", Kind::Int),
    col("channel", Kind::Text),
    col("direction", Kind::Text),
    col("occur_time", Kind::Time),
    col("content", Kind::Text),
    col("outcome", Kind::Text),
    opt("phone_number", Kind::Text),
    opt("call_duration_us", Kind::Int),
    opt("email_address", Kind::Text),
    opt("email_subject", Kind::Text),
    opt("chat_platform", Kind::Text),
    opt("chat_conversation_id", Kind::Text),
    col("create_time", Kind::Time),
    opt("sentiment_score", Kind::Int),
    opt("sentiment", Kind::Text),
];

const DELETED_COMMUNICATIONS: &[Column] = &[col("id", Kind::Int), col("delete_time", Kind::Time)];

const MERGES: &[Column] = &[
    col("merge_id", Kind::Int),
    col("customer_id", Kind::Int),
    col("merged_id", Kind::Int),
    col("merge_time", Kind::Time),
];

const DELETED_CUSTOMERS: &[Column] = &[
    col("customer_id", Kind::Int),
    col("kind", Kind::Text),
    opt("merged_into", Kind::Int),
    col("delete_time", Kind::Time),
];

const CUSTOMER_MONTHS: &[Column] = &[
    col("month_start", Kind::Date),
    col("customer_id", Kind::Int),
    col("communication_count", Kind::Int),
    col("last_time", Kind::Time),
    col("negative_count", Kind::Int),
    col("positive_count", Kind::Int),
    col("sentiment_sum", Kind::Int),
];

fn name_of(names: &[&str], value: i32) -> String {
    usize::try_from(value)
        .ok()
        .and_then(|i| names.get(i))
        .map_or_else(|| value.to_string(), |s| (*s).to_owned())
}

fn channel(v: i32) -> String {
    name_of(&["", "phone", "email", "chat", "meeting", "note"], v)
}

fn sentiment_name(l: Label) -> String {
    match l {
        Label::Negative => "negative",
        Label::Neutral => "neutral",
        Label::Positive => "positive",
    }
    .to_owned()
}

fn direction(v: i32) -> String {
    name_of(&["", "inbound", "outbound"], v)
}

fn gender(v: i32) -> String {
    name_of(&["", "male", "female", "other"], v)
}

fn ticket_status(v: i32) -> String {
    name_of(&["", "open", "resolved", "closed"], v)
}

/// One table being written, with its count.
struct Table {
    writer: TableWriter,
    entry: TableEntry,
}

impl Table {
    fn new(
        out: &Path,
        spec: &ExportSpec,
        run: &str,
        name: &'static str,
        columns: &'static [Column],
        mode: &str,
        key: &[&str],
    ) -> Result<Table> {
        Ok(Table {
            writer: TableWriter::new(out, name, columns, spec.format, run)?,
            entry: TableEntry {
                name: name.to_owned(),
                mode: mode.to_owned(),
                key: key.iter().map(|k| (*k).to_owned()).collect(),
                rows: 0,
            },
        })
    }

    /// Starts writing a page of `(month, row)` on the blocking pool (file writes and
    /// Parquet encoding are CPU and disk work); the table comes back when it is done.
    fn start_write(mut self, page: Vec<(String, Vec<Value>)>) -> Writing {
        tokio::task::spawn_blocking(move || {
            for (month, row) in page {
                self.writer.write(&month, row)?;
                self.entry.rows += 1;
            }
            Ok(self)
        })
    }

    async fn finish(self, manifest: &mut Manifest) -> Result<()> {
        let Table { writer, entry } = self;
        let files = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| Error::Internal(format!("export: writer task failed: {e}")))??;
        manifest.files.extend(files);
        manifest.tables.push(entry);
        Ok(())
    }
}

/// A page being written; the table when done.
type Writing = tokio::task::JoinHandle<Result<Table>>;

/// The table of a write started with [`Table::start_write`], once it is done.
async fn written(writing: Writing) -> Result<Table> {
    writing
        .await
        .map_err(|e| Error::Internal(format!("export: writer task failed: {e}")))?
}

/// Copies one table's rows into `table`: pages of `read(after)` (keyset position
/// `after`, the first page from `first`) until a short page; `next` is the position of
/// a page's last row, `to_rows` turns a row into `(month, values)` (none, one or more).
/// The next page is read while the last one is written (at most two pages in memory).
async fn copy<R, P, Fut, I>(
    table: Table,
    first: P,
    mut read: impl FnMut(P) -> Fut,
    next: impl Fn(&R) -> P,
    to_rows: impl Fn(R) -> I,
) -> Result<Table>
where
    Fut: std::future::Future<Output = Result<Vec<R>>>,
    I: IntoIterator<Item = (String, Vec<Value>)>,
{
    let mut after = first;
    let mut writing = table.start_write(Vec::new());
    loop {
        let page = read(after).await;
        let table = written(writing).await?;
        let page = page?;
        let Some(last) = page.last() else {
            return Ok(table);
        };
        after = next(last);
        let full = page.len() as i64 == PAGE_ROWS;
        writing = table.start_write(page.into_iter().flat_map(&to_rows).collect());
        if !full {
            return written(writing).await;
        }
    }
}

/// Runs an export of `db` into the directory `out` (created if missing): every table's
/// files and `manifest.json`, which it also returns.
pub async fn export(db: &Db, spec: &ExportSpec, out: &Path) -> Result<Manifest> {
    let started = crate::model::time::now();
    let to = crate::model::time::truncate_micros(crate::service::feed::settled_now());
    if spec.since.is_some_and(|s| s > to) {
        let mut v = Violations::new();
        v.add("since", "is later than anything settled");
        return v.finish(Manifest::empty(spec, to, started));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::Internal(format!("export: {e}")))?;
    let galera = crate::db::feed::is_galera(db).await;
    let exact = Window {
        from: spec.since,
        to,
    };
    let lookback = chrono::TimeDelta::from_std(LOOKBACK).unwrap_or_default();
    let changed = Window {
        from: spec.since.map(|s| s - lookback),
        to,
    };
    let run = to.format("%Y%m%dT%H%M%S%6fZ").to_string();
    let mut manifest = Manifest::empty(spec, to, started);

    // Customers, then what they own, then what was deleted and merged, then the rollup.
    let t = Table::new(out, spec, &run, "customers", CUSTOMERS, "upsert", &["id"])?;
    let read = |after| rows::customers(db, galera, changed, after, PAGE_ROWS);
    let t = copy(
        t,
        0,
        read,
        |(c, _)| c.id,
        |(c, tags)| {
            let tags = serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into());
            Some((
                month_of(c.create_time),
                vec![
                    Value::Int(c.id),
                    Value::Text(c.name),
                    Value::Text(gender(c.gender)),
                    c.birth_date.map_or(Value::Null, Value::Date),
                    Value::Text(c.address),
                    Value::Text(c.phone),
                    Value::Text(c.email),
                    Value::Text(tags),
                    Value::Int(c.version),
                    Value::Time(c.create_time),
                    Value::Time(c.update_time),
                    Value::opt_time(c.delete_time),
                    Value::opt_int(c.merged_into),
                ],
            ))
        },
    )
    .await?;
    t.finish(&mut manifest).await?;

    let t = Table::new(
        out,
        spec,
        &run,
        "transactions",
        TRANSACTIONS,
        "append",
        &["id"],
    )?;
    let read = |after| rows::transactions(db, galera, exact, after, PAGE_ROWS);
    let next = |r: &TransactionRow| Some((r.create_time, r.id));
    let t = copy(t, None, read, next, |r| {
        let amount = i128::from(r.amount_units) * 1_000_000_000 + i128::from(r.amount_nanos);
        Some((
            month_of(r.occur_time),
            vec![
                Value::Int(r.id),
                Value::Int(r.customer_id),
                Value::Text(r.order_number),
                Value::Text(r.product),
                Value::Text(r.currency_code),
                Value::Money(amount),
                Value::Time(r.occur_time),
                Value::Time(r.create_time),
            ],
        ))
    })
    .await?;
    t.finish(&mut manifest).await?;

    let t = Table::new(
        out,
        spec,
        &run,
        "service_tickets",
        TICKETS,
        "upsert",
        &["id"],
    )?;
    let read = |after| rows::tickets(db, galera, changed, after, PAGE_ROWS);
    let t = copy(
        t,
        0,
        read,
        |r| r.id,
        |r| {
            Some((
                month_of(r.open_time),
                vec![
                    Value::Int(r.id),
                    Value::Int(r.customer_id),
                    Value::Text(r.issue),
                    Value::Text(r.solution),
                    Value::Text(ticket_status(r.status)),
                    Value::Time(r.open_time),
                    Value::opt_time(r.resolve_time),
                    Value::Time(r.create_time),
                    Value::Time(r.update_time),
                    Value::Int(r.version),
                ],
            ))
        },
    )
    .await?;
    t.finish(&mut manifest).await?;

    let t = Table::new(
        out,
        spec,
        &run,
        "satisfaction_surveys",
        SURVEYS,
        "upsert",
        &["id"],
    )?;
    let read = |after| rows::surveys(db, galera, changed, after, PAGE_ROWS);
    let t = copy(
        t,
        0,
        read,
        |r| r.id,
        |r| {
            Some((
                month_of(r.sent_time),
                vec![
                    Value::Int(r.id),
                    Value::Int(r.customer_id),
                    Value::opt_int(r.communication_id),
                    Value::opt_int(r.ticket_id),
                    Value::opt_text((r.channel != 0).then(|| channel(r.channel))),
                    Value::Time(r.target_time),
                    Value::Time(r.sent_time),
                    Value::opt_int((r.score != 0).then_some(i64::from(r.score))),
                    Value::Text(r.comment),
                    Value::opt_time(r.answer_time),
                    Value::Time(r.update_time),
                    Value::Int(r.version),
                ],
            ))
        },
    )
    .await?;
    t.finish(&mut manifest).await?;

    let t = Table::new(
        out,
        spec,
        &run,
        "communications",
        COMMUNICATIONS,
        "append",
        &["id"],
    )?;
    let read = |after| rows::communications(db, galera, exact, after, PAGE_ROWS);
    let next = |r: &CommunicationRow| Some((r.create_time, r.id));
    let t = copy(t, None, read, next, |r| {
        Some((
            month_of(r.occur_time),
            vec![
                Value::Int(r.id),
                Value::Int(r.customer_id),
                Value::Text(channel(r.channel)),
                Value::Text(direction(r.direction)),
                Value::Time(r.occur_time),
                Value::Text(r.content),
                Value::Text(r.outcome),
                Value::opt_text(r.phone_number),
                Value::opt_int(r.call_duration_us),
                Value::opt_text(r.email_address),
                Value::opt_text(r.email_subject),
                Value::opt_text(r.chat_platform),
                Value::opt_text(r.chat_conversation_id),
                Value::Time(r.create_time),
                Value::opt_int(r.sentiment.map(i64::from)),
                Value::opt_text(r.sentiment.map(|s| sentiment_name(Label::of(s)))),
            ],
        ))
    })
    .await?;
    t.finish(&mut manifest).await?;

    let name = "deleted_communications";
    let t = Table::new(
        out,
        spec,
        &run,
        name,
        DELETED_COMMUNICATIONS,
        "append",
        &["id"],
    )?;
    let read = |after| rows::deleted_communications(db, galera, exact, after, PAGE_ROWS);
    let next = |&(id, time): &(i64, NaiveDateTime)| Some((time, id));
    let t = copy(t, None, read, next, |(id, time)| {
        Some((month_of(time), vec![Value::Int(id), Value::Time(time)]))
    })
    .await?;
    t.finish(&mut manifest).await?;

    let key = ["merge_id", "merged_id"];
    let t = Table::new(out, spec, &run, "customer_merges", MERGES, "append", &key)?;
    let read = |after| rows::merges(db, galera, exact, after, PAGE_ROWS);
    let next = |m: &rows::MergeExport| Some((m.merge_time, m.id));
    let t = copy(t, None, read, next, |m| {
        let merged: Vec<i64> = m
            .merged_ids
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        merged.into_iter().map(move |id| {
            (
                month_of(m.merge_time),
                vec![
                    Value::Int(m.id),
                    Value::Int(m.customer_id),
                    Value::Int(id),
                    Value::Time(m.merge_time),
                ],
            )
        })
    })
    .await?;
    t.finish(&mut manifest).await?;

    let key = ["customer_id"];
    let t = Table::new(
        out,
        spec,
        &run,
        "deleted_customers",
        DELETED_CUSTOMERS,
        "upsert",
        &key,
    )?;
    let read = |after| rows::deleted_customers(db, galera, changed, after, PAGE_ROWS);
    let t = copy(
        t,
        0,
        read,
        |r| r.0,
        |(id, time, merged_into)| {
            let time = time?;
            let kind = if merged_into.is_some() {
                "merged"
            } else {
                "deleted"
            };
            Some((
                month_of(time),
                vec![
                    Value::Int(id),
                    Value::Text(kind.into()),
                    Value::opt_int(merged_into),
                    Value::Time(time),
                ],
            ))
        },
    )
    .await?;
    let read = |after| rows::purges(db, galera, changed, after, PAGE_ROWS);
    let t = copy(
        t,
        0,
        read,
        |r| r.0,
        |(_, id, time)| {
            Some((
                month_of(time),
                vec![
                    Value::Int(id),
                    Value::Text("purged".into()),
                    Value::Null,
                    Value::Time(time),
                ],
            ))
        },
    )
    .await?;
    t.finish(&mut manifest).await?;

    let key = ["month_start", "customer_id"];
    let t = Table::new(
        out,
        spec,
        &run,
        "customer_months",
        CUSTOMER_MONTHS,
        "replace",
        &key,
    )?;
    let read = |after| rows::customer_months(db, galera, after, PAGE_ROWS);
    let next = |r: &rows::CustomerMonthExport| Some((r.month, r.customer_id));
    let t = copy(t, None, read, next, |r| {
        let (year, month0) = (r.month.div_euclid(12), r.month.rem_euclid(12));
        let first = chrono::NaiveDate::from_ymd_opt(year, u32::try_from(month0 + 1).ok()?, 1)?;
        Some((
            format!("{year:04}-{:02}", month0 + 1),
            vec![
                Value::Date(first),
                Value::Int(r.customer_id),
                Value::Int(r.n),
                Value::Time(r.last_time),
                Value::Int(r.negative),
                Value::Int(r.positive),
                Value::Int(r.sentiment_sum),
            ],
        ))
    })
    .await?;
    t.finish(&mut manifest).await?;

    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::Internal(format!("export: manifest: {e}")))?;
    std::fs::write(out.join(MANIFEST), text + "\n")
        .map_err(|e| Error::Internal(format!("export: cannot write the manifest: {e}")))?;
    tracing::info!(
        format = spec.format.name(),
        from = manifest.from_watermark.as_deref().unwrap_or("-"),
        to = %manifest.to_watermark,
        files = manifest.files.len(),
        rows = manifest.tables.iter().map(|t| t.rows).sum::<u64>(),
        "export written"
    );
    Ok(manifest)
}

impl Manifest {
    fn empty(spec: &ExportSpec, to: NaiveDateTime, started: NaiveDateTime) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            format: spec.format.name().to_owned(),
            from_watermark: spec.since.map(watermark_text),
            to_watermark: watermark_text(to),
            create_time: time_text(started),
            tables: Vec::new(),
            files: Vec::new(),
        }
    }
}

/// An export written into a private temporary directory (for the RPC, which streams
/// it), removed when this is dropped.
#[derive(Debug)]
pub struct TempExport {
    dir: std::path::PathBuf,
    /// What was written.
    pub manifest: Manifest,
}

impl TempExport {
    /// Every file to send, in order (`manifest.json` last): `(path in the export, path
    /// on disk)`.
    pub fn files(&self) -> Vec<(String, std::path::PathBuf)> {
        self.manifest
            .files
            .iter()
            .map(|f| f.path.clone())
            .chain(std::iter::once(MANIFEST.to_owned()))
            .map(|p| {
                let disk = self.dir.join(&p);
                (p, disk)
            })
            .collect()
    }
}

impl Drop for TempExport {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove an export's temporary directory");
        }
    }
}

/// Runs [`export`] into a fresh private directory under the system's temporary
/// directory.
pub async fn export_to_temp(db: &Db, spec: &ExportSpec) -> Result<TempExport> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "crm-comms-export-{}-{}-{}",
        std::process::id(),
        crate::model::time::now().and_utc().timestamp_micros(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir)
        .map_err(|e| Error::Internal(format!("export: cannot create {}: {e}", dir.display())))?;
    let mut temp = TempExport {
        dir,
        manifest: Manifest::empty(spec, crate::model::time::now(), crate::model::time::now()),
    };
    temp.manifest = export(db, spec, &temp.dir).await?;
    Ok(temp)
}

//! Export benchmark: `crm-comms export` (Parquet, then CSV) of a `seed-demo` dataset on
//! MariaDB, beside MariaDB's own `SELECT ... INTO OUTFILE` of the same tables' columns
//! (tab-separated text written by the server itself: the floor of any export).
//!
//! Run: `cargo bench --bench export -- [--communications N] [--customers N]`
//! (`CRM_BENCH_COMMUNICATIONS`, `CRM_BENCH_CUSTOMERS`; defaults 1,000,000 and 10,000).
//! MariaDB is `CRM_BENCH_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`); it must run
//! on this machine with `secure_file_priv` allowing `/tmp` (INTO OUTFILE writes on the
//! server's side). The dataset is seeded once by the real binary into
//! `crm_bench_export_<N>` and reused while it holds N communications.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mysql_async::prelude::Queryable;

/// The server binary (release under `cargo bench`).
const BINARY: &str = env!("CARGO_BIN_EXE_crm-comms");

/// What INTO OUTFILE writes per table: the columns the export writes.
const OUTFILE: [(&str, &str); 4] = [
    (
        "customers",
        "id, name, gender, birth_date, address, phone, email, version, create_time, \
         update_time, delete_time, merged_into",
    ),
    (
        "transactions",
        "id, customer_id, order_number, product, currency_code, \
         amount_units * 1000000000 + amount_nanos, occur_time, create_time",
    ),
    (
        "service_tickets",
        "id, customer_id, issue, solution, status, open_time, resolve_time, create_time, \
         update_time, version",
    ),
    (
        "communications",
        "id, customer_id, channel, direction, occur_time, content, outcome, phone_number, \
         call_duration_us, email_address, email_subject, chat_platform, \
         chat_conversation_id, create_time",
    ),
];

fn arg(name: &str, env: &str, default: u64) -> Result<u64> {
    let args: Vec<String> = std::env::args().collect();
    let value = args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(env).ok());
    match value {
        Some(v) => v.parse().with_context(|| format!("{name} {v}")),
        None => Ok(default),
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
        }
    }
    total
}

fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()?;
    if !out.status.success() {
        bail!(
            "crm-comms {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let n = arg("--communications", "CRM_BENCH_COMMUNICATIONS", 1_000_000)?;
    let customers = arg("--customers", "CRM_BENCH_CUSTOMERS", 10_000)?;
    let base = std::env::var("CRM_BENCH_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let name = format!("crm_bench_export_{n}");
    let url = format!("{base}/{name}");
    let admin = mysql_async::Pool::new(format!("{base}/test").as_str());
    let mut conn = admin.get_conn().await?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4"
    ))
    .await?;
    let have: Option<i64> = conn
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{name}' \
             AND table_name = 'communications'"
        ))
        .await?;
    let rows: i64 = if have == Some(1) {
        conn.query_first(format!("SELECT COUNT(*) FROM {name}.communications"))
            .await?
            .unwrap_or(0)
    } else {
        0
    };
    if rows != n as i64 {
        eprintln!("seeding {name}: {customers} customers, {n} communications");
        conn.query_drop(format!("DROP DATABASE {name}")).await?;
        conn.query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
            .await?;
        run(&["--database-url", &url, "migrate"])?;
        eprint!(
            "{}",
            run(&[
                "--database-url",
                &url,
                "seed-demo",
                "--customers",
                &customers.to_string(),
                "--communications",
                &n.to_string(),
                "--end",
                "2026-01-01T00:00:00Z",
                "--days",
                "365",
            ])?
        );
        // What was just recorded settles first.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }

    let root = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("bench-export");
    println!("| export of {n} communications (+ customers, orders, tickets), MariaDB | s | rows/s | MB |");
    println!("|---|---:|---:|---:|");
    let mut total_rows = 0u64;
    for format in ["parquet", "csv"] {
        let out = root.join(format);
        let _ = std::fs::remove_dir_all(&out);
        let started = Instant::now();
        let mut child = Command::new(BINARY)
            .args([
                "--database-url",
                &url,
                "export",
                "--format",
                format,
                "--out",
                out.to_str().unwrap_or_default(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()?;
        // The process's peak resident memory (VmHWM), read until it exits.
        let mut peak_kb = 0u64;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
                if let Some(kb) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                {
                    peak_kb = kb;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let secs = started.elapsed().as_secs_f64();
        if !status.success() {
            bail!("crm-comms export --format {format} failed");
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json"))?)?;
        let rows: u64 = manifest["tables"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["rows"].as_u64()).sum())
            .unwrap_or(0);
        total_rows = rows;
        println!(
            "| `crm-comms export --format {format}` (every table, manifest; peak RSS {} MB) | {secs:.2} | {:.0} | {:.1} |",
            peak_kb / 1024,
            rows as f64 / secs,
            dir_bytes(&out) as f64 / 1e6
        );
        let _ = std::fs::remove_dir_all(&out);
    }

    // The floor: the server writes the same tables' columns itself, no client at all.
    let stamp = std::process::id();
    let mut bytes = 0;
    let mut rows = 0u64;
    let started = Instant::now();
    for (table, columns) in OUTFILE {
        let path = format!("/tmp/crm-bench-export-{stamp}-{table}.tsv");
        let _ = std::fs::remove_file(&path);
        conn.query_drop(format!(
            "SELECT {columns} FROM {name}.{table} INTO OUTFILE '{path}' CHARACTER SET utf8mb4"
        ))
        .await
        .with_context(|| format!("INTO OUTFILE {path} (secure_file_priv?)"))?;
        let n: Option<i64> = conn
            .query_first(format!("SELECT COUNT(*) FROM {name}.{table}"))
            .await?;
        rows += n.unwrap_or(0) as u64;
        bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
        let _ = std::fs::remove_file(&path);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "| `SELECT ... INTO OUTFILE` of the same four tables (server-side TSV, {rows} rows) | {secs:.2} | {:.0} | {:.1} |",
        rows as f64 / secs,
        bytes as f64 / 1e6
    );
    eprintln!("export rows (with the rollup): {total_rows}");
    drop(conn);
    admin.disconnect().await?;
    Ok(())
}

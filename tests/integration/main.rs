//! Black-box integration tests: the real server on an ephemeral port, real SQLite and
//! real MariaDB, generated clients. One test binary with a module per service.
//!
//! The binary has its own runner (`harness = false`, libtest-mimic): each test written
//! with `backend_tests!` is two trials, `file::name::sqlite` and `file::name::mysql`;
//! each written with `standalone_tests!` is one. MariaDB is probed once: when it is
//! unreachable and `CRM_REQUIRE_MYSQL` is unset, the MySQL trials are reported as
//! ignored (counted in the summary line); with `CRM_REQUIRE_MYSQL=1`, or when MariaDB
//! answers but refuses, they fail. The `cluster_tests!` trials run on a Galera cluster
//! named by `CRM_GALERA_URLS` and are reported as ignored when it is unset. Filtering
//! (`cargo test --test integration purge`), `--exact`, `--skip`, `--list`, `--ignored`
//! and `--test-threads` (or `RUST_TEST_THREADS`) work as with libtest; each trial runs
//! on its own runtime.

#![allow(clippy::unwrap_used, missing_docs)]

mod harness;

mod activity;
mod analytics;
mod binary;
mod business_hours;
mod cluster;
mod communications;
mod conflicts;
mod content_index;
mod customers;
mod demo;
mod durability;
mod export;
mod feed;
mod follow;
mod fuzz;
mod hardening;
mod idempotency;
mod merged_reports;
mod merges;
mod migrations;
mod operations;
mod otel;
mod outage;
mod page_token_privacy;
mod plans;
mod replicas;
mod robustness;
mod rollups;
mod satisfaction;
mod schema;
mod security;
mod sentiment;
mod server;
mod service_levels;
mod stale_boundary;
mod stall;
mod token_reload;
mod unicode_keywords;
mod watch;

use std::process::ExitCode;

/// libtest's options that take a value (as the next argument unless written `--opt=value`).
const VALUE_OPTIONS: [&str; 6] = [
    "--test-threads",
    "--logfile",
    "--skip",
    "--color",
    "--format",
    "-Z",
];

/// Splits the command line into options and name filters: libtest accepts several
/// filters (`cargo test --test integration purge follow`), libtest-mimic only one.
fn options_and_filters() -> (Vec<String>, Vec<String>) {
    let mut argv = std::env::args();
    let mut options: Vec<String> = argv.next().into_iter().collect();
    let mut filters = Vec::new();
    while let Some(arg) = argv.next() {
        if arg.starts_with('-') {
            let takes_value = VALUE_OPTIONS.contains(&arg.as_str());
            options.push(arg);
            if takes_value {
                options.extend(argv.next());
            }
        } else {
            filters.push(arg);
        }
    }
    (options, filters)
}

fn main() -> ExitCode {
    let (options, filters) = options_and_filters();
    let mut args = libtest_mimic::Arguments::from_iter(options);
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n > 0);
    }
    // One filter is libtest-mimic's (it counts what it filters out); several are ours.
    let mut filters = filters;
    if filters.len() == 1 {
        args.filter = filters.pop();
    }
    let exact = args.exact;
    let selected = |name: &str| {
        filters.is_empty()
            || filters.iter().any(|f| {
                if exact {
                    name == f
                } else {
                    name.contains(f.as_str())
                }
            })
    };
    let trials = |mysql: &harness::MysqlStatus| {
        let mut trials = harness::trials(mysql);
        trials.retain(|t| selected(t.name()));
        trials
    };
    // Probe MariaDB only when a MySQL trial is selected by name (under `--ignored` they
    // are selected exactly when the probe fails): `--list`, and filters that select
    // none, neither connect nor print the note.
    let by_name = libtest_mimic::Arguments {
        ignored: false,
        ..args.clone()
    };
    let selected_mysql = trials(&harness::MysqlStatus::Up)
        .iter()
        .filter(|t| t.name().ends_with("::mysql") && !by_name.is_filtered_out(t))
        .count();
    let mysql = if args.list || selected_mysql == 0 {
        harness::MysqlStatus::Up
    } else {
        harness::probe_mysql()
    };
    if let harness::MysqlStatus::Skipped(why) = &mysql {
        eprintln!(
            "note: {why}: the {selected_mysql} selected MySQL tests are reported as ignored \
             (set CRM_REQUIRE_MYSQL=1 to fail them instead)"
        );
    }
    let selected_cluster = trials(&mysql)
        .iter()
        .filter(|t| t.name().starts_with("cluster::") && !by_name.is_filtered_out(t))
        .count();
    if !args.list && selected_cluster > 0 && std::env::var_os(harness::GALERA_URLS_VAR).is_none() {
        eprintln!(
            "note: {} is unset: the {selected_cluster} selected Galera cluster tests are \
             reported as ignored (tools/galera/cluster.sh start; export {0}=$(tools/galera/cluster.sh urls))",
            harness::GALERA_URLS_VAR
        );
    }
    libtest_mimic::run(&args, trials(&mysql)).exit_code()
}

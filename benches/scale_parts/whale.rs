//! `--only whale` of the scale benchmark: one-customer reports on a key account. A copy
//! of the dataset in which one customer holds about `--whale-rows` communications (5% by
//! default: every row whose id is a multiple of k = communications / whale rows moved to
//! the first customer, rollups rebuilt), reused across runs:
//! `crm_bench_scale_<N>_<C>_whale` (MariaDB) or `scale-<N>-<C>-whale.db` (SQLite) for
//! k = 20, with `_whale<k>` / `-whale<k>` otherwise.
//!
//! At `--p99-clients` concurrent clients, each p99 against GetCustomer's p99 measured in
//! the same run on the same server (random customers): a one-year daily
//! GetFrequencyReport and a one-year GetCustomerInsights on the key account (target
//! 5x), and GetCustomerInsights on random customers (the median customer, target 3x;
//! the one-customer frequency report on random customers is the reports part's figure).
//! The totals are checked against the driver's count; one call of each on a server
//! without the content index (the database path) is noted for comparison.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crm_comms::pb::{
    self, analytics_service_client::AnalyticsServiceClient,
    customer_service_client::CustomerServiceClient,
};
use diesel::prelude::*;
use mysql_async::prelude::Queryable;

use super::{
    common, data_dir, freq_request, load, median_f64, ms, percentile, rows_of, sqlite_conn, Args,
    Driver, Figure, RatioKind, Target, SERVER, SHANGHAI, STARTUP, YEAR_END, YEAR_START,
};

/// One row in `share(args)` moves to the key account.
fn share(args: &Args) -> Result<i64> {
    let k = (args.communications / args.whale_rows.max(1)) as i64;
    anyhow::ensure!(
        k >= 2,
        "--whale-rows must be at most half of --communications"
    );
    Ok(k)
}

/// The suffix of the key-account copy's name: `whale`, or `whale<k>` for a share other
/// than the default one in 20.
fn suffix(k: i64) -> String {
    if k == 20 {
        "whale".into()
    } else {
        format!("whale{k}")
    }
}

/// The key-account copy of the dataset: its URL, driver and the key account's id.
struct Whale {
    url: String,
    driver: Driver,
    customer: i64,
}

/// The first customer of the dataset: the key account.
async fn first_customer(driver: &Driver) -> Result<i64> {
    driver
        .customer_ids()
        .await?
        .first()
        .copied()
        .context("the dataset has no customer")
}

/// Rebuilds the rollups of the copy with the release binary (the customer-month rollup
/// counts per customer).
fn rebuild_rollups(url: &str) -> Result<()> {
    let status = std::process::Command::new(SERVER)
        .args(["rebuild-rollups", "--database-url", url])
        .env("RUST_LOG", "warn")
        .status()
        .context("spawn rebuild-rollups")?;
    anyhow::ensure!(status.success(), "rebuild-rollups failed: {status}");
    Ok(())
}

/// The move of one row in `k` to `customer`.
fn move_sql(customer: i64, k: i64) -> String {
    format!("UPDATE communications SET customer_id = {customer} WHERE id % {k} = 0")
}

/// Creates (or reuses) the key-account copy of `t`'s dataset.
async fn prepare(t: &Target, args: &Args) -> Result<Whale> {
    let customer = first_customer(&t.driver).await?;
    let n = args.communications as i64;
    let k = share(args)?;
    let tag = suffix(k);
    let held = format!("communications WHERE customer_id = {customer}");
    match &t.driver {
        Driver::Mysql(url) => {
            let (base, name) = url.rsplit_once('/').context("dataset url")?;
            let whale = format!("{name}_{tag}");
            let whale_url = format!("{base}/{whale}");
            let driver = Driver::Mysql(whale_url.clone());
            if rows_of(&driver, "communications").await == Some(n)
                && rows_of(&driver, &held).await >= Some(n / k)
            {
                say!("reusing MariaDB database {whale}");
            } else {
                say!("copying {name} to {whale}, one row in {k} to customer {customer}");
                let mut admin = mysql_async::Conn::from_url(common::admin_url(base)).await?;
                common::drop_database(&mut admin, &whale).await?;
                common::create_database(&mut admin, base, &whale).await?;
                let tables: Vec<String> = admin
                    .query(format!(
                        "SHOW FULL TABLES FROM `{name}` WHERE Table_type = 'BASE TABLE'"
                    ))
                    .await?
                    .into_iter()
                    .map(|(t, _): (String, String)| t)
                    .collect();
                for table in tables {
                    admin
                        .query_drop(format!(
                            "CREATE TABLE `{whale}`.`{table}` LIKE `{name}`.`{table}`"
                        ))
                        .await?;
                    admin
                        .query_drop(format!(
                            "INSERT INTO `{whale}`.`{table}` SELECT * FROM `{name}`.`{table}`"
                        ))
                        .await?;
                }
                admin.query_drop(format!("USE `{whale}`")).await?;
                admin.query_drop(move_sql(customer, k)).await?;
                admin.disconnect().await?;
                let u = whale_url.clone();
                tokio::task::spawn_blocking(move || rebuild_rollups(&u)).await??;
                let mut c = mysql_async::Conn::from_url(whale_url.as_str()).await?;
                c.query_drop("ANALYZE TABLE communications").await?;
                c.disconnect().await?;
            }
            Ok(Whale {
                url: whale_url,
                driver,
                customer,
            })
        }
        Driver::Sqlite(path) => {
            let whale = data_dir()
                .join(format!(
                    "scale-{}-{}-{tag}.db",
                    args.communications, args.customers
                ))
                .display()
                .to_string();
            let driver = Driver::Sqlite(whale.clone());
            if std::path::Path::new(&whale).exists()
                && rows_of(&driver, "communications").await == Some(n)
                && rows_of(&driver, &held).await >= Some(n / k)
            {
                say!("reusing SQLite file {whale}");
            } else {
                say!("copying {path} to {whale}, one row in {k} to customer {customer}");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{whale}{suffix}"));
                }
                let (src, dst) = (path.clone(), whale.clone());
                tokio::task::spawn_blocking(move || {
                    diesel::sql_query(format!("VACUUM INTO '{dst}'"))
                        .execute(&mut sqlite_conn(&src)?)?;
                    diesel::sql_query(move_sql(customer, k)).execute(&mut sqlite_conn(&dst)?)?;
                    anyhow::Ok(())
                })
                .await??;
                let u = format!("sqlite://{whale}");
                tokio::task::spawn_blocking(move || rebuild_rollups(&u)).await??;
                let w = whale.clone();
                tokio::task::spawn_blocking(move || {
                    diesel::sql_query("ANALYZE").execute(&mut sqlite_conn(&w)?)?;
                    anyhow::Ok(())
                })
                .await??;
            }
            Ok(Whale {
                url: format!("sqlite://{whale}"),
                driver,
                customer,
            })
        }
    }
}

/// The one-year daily frequency report of `customer`, in Shanghai.
fn frequency(customer: i64) -> pb::GetFrequencyReportRequest {
    let mut r = freq_request(
        YEAR_START - SHANGHAI,
        YEAR_END - SHANGHAI,
        pb::Granularity::Day,
        "Asia/Shanghai",
    );
    r.customer_ids = vec![customer];
    r
}

/// The insights of `customer` over the same year.
fn insights(customer: i64) -> pb::GetCustomerInsightsRequest {
    pb::GetCustomerInsightsRequest {
        customer_id: customer,
        start_time: Some(common::timestamp(YEAR_START - SHANGHAI, 0)),
        end_time: Some(common::timestamp(YEAR_END - SHANGHAI, 0)),
        top_terms: 10,
        time_zone: "Asia/Shanghai".into(),
    }
}

/// What one load measures.
#[derive(Clone, Copy, PartialEq)]
enum Call {
    GetCustomer,
    Frequency,
    Insights,
}

/// The key-account figures.
pub(super) async fn measure(t: &Target, args: &Args, out: &mut Vec<Figure>) -> Result<()> {
    let w = prepare(t, args).await?;
    let (start, end) = (
        chrono::DateTime::from_timestamp(YEAR_START - SHANGHAI, 0)
            .context("start")?
            .naive_utc(),
        chrono::DateTime::from_timestamp(YEAR_END - SHANGHAI, 0)
            .context("end")?
            .naive_utc(),
    );
    let in_year = format!(
        "communications WHERE customer_id = {} AND occur_time >= '{}' AND occur_time < '{}'",
        w.customer,
        start.format("%Y-%m-%d %H:%M:%S"),
        end.format("%Y-%m-%d %H:%M:%S")
    );
    let expected = rows_of(&w.driver, &in_year)
        .await
        .context("count the key account")?;
    let held = rows_of(
        &w.driver,
        &format!("communications WHERE customer_id = {}", w.customer),
    )
    .await
    .unwrap_or(0);
    say!(
        "  key account {} holds {held} communications, {expected} in the year",
        w.customer
    );

    // The server under test (`CRM_BENCH_SERVER` names another build).
    let server = super::server_under_test();
    // The database path, once each (the server without the content index).
    let before = {
        let server =
            common::Server::start_with(&server, &w.url, STARTUP, &[("CRM_CONTENT_INDEX", "false")])
                .await?;
        let mut a = AnalyticsServiceClient::new(server.channel().await?)
            .max_decoding_message_size(common::MAX_MESSAGE_BYTES);
        let t0 = Instant::now();
        let f = a.get_frequency_report(frequency(w.customer)).await;
        let tf = t0.elapsed();
        let t0 = Instant::now();
        let i = a.get_customer_insights(insights(w.customer)).await;
        let ti = t0.elapsed();
        let show = |ok: bool, d: Duration| {
            if ok {
                format!("{:.0} ms", ms(d))
            } else {
                format!("failed after {:.0} ms", ms(d))
            }
        };
        let before = format!(
            "database path (no content index), one call each: frequency {}, insights {}",
            show(f.is_ok(), tf),
            show(i.is_ok(), ti)
        );
        say!("  {before}");
        before
    };

    let server = common::Server::start(&server, &w.url, STARTUP).await?;
    let channel = server.channel().await?;
    let analytics = AnalyticsServiceClient::new(channel.clone())
        .max_decoding_message_size(common::MAX_MESSAGE_BYTES);
    let customers = CustomerServiceClient::new(channel);
    let f = analytics
        .clone()
        .get_frequency_report(frequency(w.customer))
        .await?
        .into_inner();
    let i = analytics
        .clone()
        .get_customer_insights(insights(w.customer))
        .await?
        .into_inner();
    let same = f.total_count == expected && i.total_count == expected;
    say!(
        "  totals: frequency {}, insights {}, driver {expected}",
        f.total_count,
        i.total_count
    );

    let ids = w.driver.customer_ids().await?;
    let whale = [w.customer];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); 4];
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); 4];
    let loads = [
        (Call::GetCustomer, &ids[..]),
        (Call::Frequency, &whale[..]),
        (Call::Insights, &whale[..]),
        (Call::Insights, &ids[..]),
    ];
    for run in 0..args.runs {
        for (k, (call, who)) in loads.iter().enumerate() {
            let (a0, c0, call) = (analytics.clone(), customers.clone(), *call);
            let lat = load(args, args.p99_calls, who, run as u64, move |id| {
                let (mut a, mut c) = (a0.clone(), c0.clone());
                async move {
                    match call {
                        Call::GetCustomer => {
                            drop(c.get_customer(pb::GetCustomerRequest { id }).await?)
                        }
                        Call::Frequency => drop(a.get_frequency_report(frequency(id)).await?),
                        Call::Insights => drop(a.get_customer_insights(insights(id)).await?),
                    }
                    Ok(())
                }
            })
            .await?;
            p99[k].push(ms(percentile(lat.clone(), 0.99)));
            p50[k].push(ms(percentile(lat, 0.5)));
        }
    }
    let p99: Vec<f64> = p99.into_iter().map(median_f64).collect();
    let p50: Vec<f64> = p50.into_iter().map(median_f64).collect();
    say!(
        "  p99 (p50) ms: GetCustomer {:.2} ({:.2}), key-account frequency {:.2} ({:.2}), key-account insights {:.2} ({:.2}), insights of random customers {:.2} ({:.2})",
        p99[0], p50[0], p99[1], p50[1], p99[2], p50[2], p99[3], p50[3]
    );
    let clients = args.p99_clients;
    let share = format!("{held} of {} communications", args.communications);
    for (k, figure, target, note) in [
        (
            1,
            format!("GetFrequencyReport, key account ({share}), 1 year, daily: p99 at {clients} clients"),
            5.0,
            before.clone(),
        ),
        (2, format!("GetCustomerInsights, key account ({share}), 1 year: p99 at {clients} clients"), 5.0, before),
        (
            3,
            format!("GetCustomerInsights, random customers, 1 year: p99 at {clients} clients"),
            3.0,
            String::new(),
        ),
    ] {
        let mut fig = Figure::new(t.db, figure, "GetCustomer p99 at the same load", "ms", p99[k], p99[0], RatioKind::Cost, Some(target))
            .note(format!(
                "{} calls of each kind; p50 {:.2} vs {:.2} ms{}{note}",
                args.p99_calls,
                p50[k],
                p50[0],
                if note.is_empty() { "" } else { "; " }
            ));
        if k < 3 {
            fig = fig.same(same);
        }
        out.push(fig);
    }
    drop(server);
    Ok(())
}

//! The `crm-comms` binary: `serve` (default), `migrate`, `seed-demo` (whose generator,
//! [`demo`], lives in the binary, and which draws its progress bars here, on stderr) or
//! `rebuild-rollups`.

mod demo;

use anyhow::Context;
use clap::Parser;
use crm_comms::config::{Cli, Command, LogFormat};
use crm_comms::server::otel::Telemetry;
use tracing_subscriber::EnvFilter;

/// How long the runtime waits, once serving has ended, for work still running on
/// the blocking pool (a content scan's page, a SQLite statement) before the process
/// exits anyway: the grace period is a hard bound, not a hint.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run());
    // Dropping the runtime would wait for every blocking task without limit.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

async fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // Only the server exports traces.
    let telemetry = match command {
        Command::Serve => match Telemetry::start(&cli.config) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("{err:#}");
                return std::process::ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    init_logs(&cli.config, telemetry.as_ref());
    let result = match command {
        Command::Serve => crm_comms::server::run(cli.config).await,
        Command::Migrate(args) => migrate(&cli.config, &args).await,
        Command::SeedDemo(args) => seed_demo(&cli.config, &args).await,
        Command::RebuildRollups => rebuild_rollups(&cli.config).await,
        Command::Export(args) => export(&cli.config, &args).await,
        Command::Token(crm_comms::config::TokenCommand::New { role, name }) => {
            new_token(role, &name)
        }
    };
    if let Some(telemetry) = telemetry {
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `token new`: the token and its tokens-file line on stdout (one each, for scripts),
/// what to do with them on stderr.
fn new_token(role: crm_comms::model::caller::Role, name: &str) -> anyhow::Result<()> {
    let (token, line) = crm_comms::security::tokens::new_token(role, name)?;
    eprintln!("# the token for `{name}` ({role}); it is shown this once and stored nowhere:");
    println!("{token}");
    eprintln!("# add this line to the tokens file (--auth-tokens-file), then SIGHUP the server:");
    println!("{line}");
    Ok(())
}

/// Logs to stderr in the configured format; colours only on a terminal without NO_COLOR.
/// With `telemetry`, spans are also exported (under their own filter, not `--log`).
fn init_logs(config: &crm_comms::config::Config, telemetry: Option<&Telemetry>) {
    use std::io::IsTerminal;
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};
    // `--log` was parsed by the same filter when the arguments were read.
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let logs = match config.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            fmt.with_ansi(colour).with_filter(filter).boxed()
        }
    };
    let mut layers = vec![logs];
    layers.extend(telemetry.map(Telemetry::layer));
    tracing_subscriber::registry().with(layers).init();
}

async fn rebuild_rollups(config: &crm_comms::config::Config) -> anyhow::Result<()> {
    let url = &config.database_url;
    let db = crm_comms::db::Db::connect(url, &config.pool_options())
        .await
        .with_context(|| format!("cannot open {}", crm_comms::db::redact(url)))?;
    crm_comms::db::rollups::rebuild(&db, crm_comms::model::time::now())
        .await
        .map_err(|e| anyhow::anyhow!("cannot rebuild the rollups: {e}"))?;
    Ok(())
}

/// `export`: the files and manifest in `--out`; one summary line on stdout.
async fn export(
    config: &crm_comms::config::Config,
    args: &crm_comms::config::ExportArgs,
) -> anyhow::Result<()> {
    use crm_comms::config::ExportFormat;
    use crm_comms::service::export::{self, files::Format, ExportSpec};
    let since = match (&args.since, &args.since_manifest) {
        (Some(since), _) => Some(since.clone()),
        (None, Some(path)) => Some(
            export::watermark_of_manifest(path)
                .with_context(|| format!("cannot read the manifest {}", path.display()))?,
        ),
        (None, None) => None,
    };
    let mut violations = crm_comms::error::Violations::new();
    let since = since.and_then(|s| export::parse_watermark(&mut violations, "--since", &s));
    violations.finish(()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = ExportSpec {
        format: match args.format {
            ExportFormat::Parquet => Format::Parquet,
            ExportFormat::Csv => Format::Csv,
        },
        since,
    };
    let url = &config.database_url;
    let db = crm_comms::db::Db::connect(url, &config.pool_options())
        .await
        .with_context(|| format!("cannot open {}", crm_comms::db::redact(url)))?;
    let manifest = export::export(&db, &spec, &args.out)
        .await
        .map_err(|e| anyhow::anyhow!("cannot export: {e}"))?;
    let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
    println!(
        "exported {rows} rows in {} files to {}; next run: --since {}",
        manifest.files.len(),
        args.out.display(),
        manifest.to_watermark
    );
    Ok(())
}

async fn migrate(
    config: &crm_comms::config::Config,
    args: &crm_comms::config::MigrateArgs,
) -> anyhow::Result<()> {
    use crm_comms::db::migrate;
    let url = &config.database_url;
    let shown = crm_comms::db::redact(url);
    if args.check {
        let pending = migrate::pending(url)
            .await
            .with_context(|| format!("cannot read the migrations of {shown}"))?;
        for version in &pending {
            println!("{version}");
        }
        anyhow::ensure!(
            pending.is_empty(),
            "{} migration(s) pending on {shown}",
            pending.len()
        );
        tracing::info!(database = %shown, "no migration is pending");
        return Ok(());
    }
    if args.revert_last {
        let version = migrate::revert_last(url)
            .await
            .with_context(|| format!("cannot revert the last migration of {shown}"))?;
        tracing::info!(database = %shown, %version, "reverted migration");
        return Ok(());
    }
    let outcome = migrate::run(url, migrate::MigrationsMode::Auto)
        .await
        .with_context(|| format!("cannot migrate {shown}"))?;
    for version in &outcome.applied {
        tracing::info!(%version, "applied migration");
    }
    tracing::info!(database = %shown, "migrations are up to date");
    Ok(())
}

async fn seed_demo(
    config: &crm_comms::config::Config,
    args: &crm_comms::config::SeedDemoArgs,
) -> anyhow::Result<()> {
    use crate::demo::{self, DemoSpec};
    use crm_comms::model::time::{now, truncate_micros};

    let url = crm_comms::db::redact(&config.database_url);
    let spec = DemoSpec {
        customers: args.customers,
        communications: args.communications,
        seed: args.seed,
        end: args.end.map_or_else(
            || DemoSpec::default_end(now()),
            |end| truncate_micros(end.naive_utc()),
        ),
        days: args.days,
    };
    let db = crm_comms::db::Db::connect(&config.database_url, &config.pool_options())
        .await
        .with_context(|| format!("cannot open {url}"))?;
    eprintln!(
        "seeding {url}: {} customers, {} communications over {} days before {}, seed {}",
        spec.customers,
        spec.communications,
        spec.days,
        spec.end
            .and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        spec.seed
    );
    let report = demo::seed(&db, &spec, &mut Bars::default())
        .await
        .with_context(|| format!("cannot seed {url}"))?;
    println!(
        "seeded {url}: {} customers, {} orders, {} service tickets, {} communications = \
         {} rows in {:.1} s ({:.0} rows/s)",
        report.customers,
        report.orders,
        report.tickets,
        report.communications,
        report.rows(),
        report.elapsed().as_secs_f64(),
        report.rate()
    );
    Ok(())
}

/// `seed-demo`'s progress: a bar per phase with rate and ETA on stderr (drawn only on
/// a terminal), then a line per finished phase.
#[derive(Default)]
struct Bars {
    bar: Option<indicatif::ProgressBar>,
}

impl crate::demo::Progress for Bars {
    fn start(&mut self, phase: crate::demo::Phase, total: u64) {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix:>14} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {rate} ETA {eta}",
        ) {
            bar.set_style(style.with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} rows/s", state.per_sec());
                },
            ));
        }
        bar.set_prefix(phase.label());
        self.bar = Some(bar);
    }

    fn advance(&mut self, rows: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(rows);
        }
    }

    fn finish(&mut self, report: &crate::demo::PhaseReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!(
            "{:>14}: {:>9} rows in {:>6.1} s ({:.0} rows/s)",
            report.phase.label(),
            report.rows,
            report.elapsed.as_secs_f64(),
            report.rate()
        );
    }
}

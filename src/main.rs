//! The `crm-comms` binary: `serve` (default) or `migrate`.

use anyhow::Context;
use clap::Parser;
use crm_comms::config::{Cli, Command};
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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_new(&cli.config.log).unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => crm_comms::server::run(cli.config).await,
        Command::Migrate => migrate(&cli.config).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn migrate(config: &crm_comms::config::Config) -> anyhow::Result<()> {
    let url = &config.database_url;
    crm_comms::db::Db::connect(url, &config.pool_options())
        .await
        .with_context(|| format!("cannot migrate {}", crm_comms::db::redact(url)))?;
    tracing::info!(database = %crm_comms::db::redact(url), "migrations are up to date");
    Ok(())
}

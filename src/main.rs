//! The `crm-comms` binary: `serve` (default) or `migrate`.

use anyhow::Context;
use clap::Parser;
use crm_comms::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
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

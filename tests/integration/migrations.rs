//! Migrations at start: servers starting together on a new database all come up, the
//! `--migrations check|skip` modes, a runtime account without DDL rights, and
//! `migrate --revert-last`.

use std::time::Duration;

use crm_comms::{
    config::Config,
    db::{migrate::MigrationsMode, Db},
};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::Channel;

use crate::harness::{log, note, run_binary, Backend, CommunicationServiceClient};

/// Starts a server on `url` with `mode`; its channel and shutdown switch.
async fn serve(url: &str, mode: MigrationsMode) -> anyhow::Result<(Channel, watch::Sender<bool>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = Config::new(addr, url);
    config.migrations = mode;
    let db = Db::connect_with(url, &config.pool_options(), mode).await?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(crm_comms::server::serve(config, db, listener, rx));
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok((channel, tx))
}

/// A customer and one communication through `channel`: the server works.
async fn write_through(channel: &Channel, name: &str) -> i64 {
    let customer = crate::harness::customer_via(channel, name).await;
    CommunicationServiceClient::new(channel.clone())
        .log_communication(log(note(customer, name, "2024-05-01T09:00:00Z"), ""))
        .await
        .expect("log")
        .into_inner()
        .id
}

/// Servers started at once on the same new database.
const TOGETHER: usize = 4;

crate::backend_tests! {
    async fn servers_starting_together_on_a_new_database_all_come_up(app: &TestApp) {
        let url = app.empty_database_url("together").await;
        let starts: Vec<_> = (0..TOGETHER)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { serve(&url, MigrationsMode::Auto).await.map_err(|e| format!("{e:#}")) })
            })
            .collect();
        let mut servers = Vec::new();
        for start in starts {
            servers.push(start.await.expect("join").expect("every server starts"));
        }
        for (i, (channel, _)) in servers.iter().enumerate() {
            write_through(channel, &format!("together {i}")).await;
        }
        let pending = crm_comms::db::migrate::pending(&url).await.expect("pending");
        assert!(pending.is_empty(), "{pending:?}");
        for (_, stop) in &servers {
            let _ = stop.send(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.drop_database(&url).await;
    }

    async fn check_and_skip_modes_and_revert_last(app: &TestApp) {
        let url = app.empty_database_url("modes").await;
        // Nothing applied: `check` refuses to start and says what is pending.
        let err = serve(&url, MigrationsMode::Check).await.expect_err("pending migrations");
        assert!(format!("{err:#}").contains("pending"), "{err:#}");
        assert!(!crm_comms::db::migrate::pending(&url).await.unwrap().is_empty());
        let (ok, out) = run_binary(&["migrate", "--check"], &url);
        assert!(!ok, "migrate --check fails while migrations are pending: {out}");

        let (ok, out) = run_binary(&["migrate"], &url);
        assert!(ok, "migrate: {out}");
        let (ok, out) = run_binary(&["migrate", "--check"], &url);
        assert!(ok, "nothing pending after migrate: {out}");
        let (channel, stop) = serve(&url, MigrationsMode::Check).await.expect("check passes");
        write_through(&channel, "checked").await;
        let _ = stop.send(true);

        // Revert the last migration: it is pending again, `check` refuses, `migrate`
        // applies it again.
        let (ok, out) = run_binary(&["migrate", "--revert-last"], &url);
        assert!(ok, "revert: {out}");
        let pending = crm_comms::db::migrate::pending(&url).await.unwrap();
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert!(serve(&url, MigrationsMode::Check).await.is_err());
        let (ok, out) = run_binary(&["migrate"], &url);
        assert!(ok, "migrate again: {out}");
        assert!(crm_comms::db::migrate::pending(&url).await.unwrap().is_empty());
        app.drop_database(&url).await;
    }

    async fn a_runtime_account_without_ddl_rights_serves_with_skip(app: &TestApp) {
        if app.backend != Backend::Mysql {
            return;
        }
        let url = app.empty_database_url("restricted").await;
        let (ok, out) = run_binary(&["migrate"], &url);
        assert!(ok, "migrate as the DDL account: {out}");
        let (base, db_name) = url.rsplit_once('/').unwrap();
        let user = format!("crm_rt_{}", std::process::id());
        app.execute(&format!("DROP USER IF EXISTS '{user}'@'%'")).await;
        app.execute(&format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'rt-secret'")).await;
        app.execute(&format!("GRANT SELECT, INSERT, UPDATE, DELETE ON `{db_name}`.* TO '{user}'@'%'")).await;
        let host = base.rsplit_once('@').map_or(base.trim_start_matches("mysql://"), |(_, h)| h);
        let restricted = format!("mysql://{user}:rt-secret@{host}/{db_name}");

        // The account cannot change the schema.
        let mut conn = mysql_async::Conn::from_url(restricted.as_str()).await.expect("connect");
        let ddl = mysql_async::prelude::Queryable::query_drop(&mut conn, "CREATE TABLE nope (id INT)").await;
        assert!(ddl.is_err(), "the account has no DDL rights");
        let _ = conn.disconnect().await;

        for mode in [MigrationsMode::Skip, MigrationsMode::Check, MigrationsMode::Auto] {
            let (channel, stop) = serve(&restricted, mode)
                .await
                .unwrap_or_else(|e| panic!("{mode:?} starts without DDL rights: {e:#}"));
            write_through(&channel, &format!("restricted {mode:?}")).await;
            let _ = stop.send(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.execute(&format!("DROP USER IF EXISTS '{user}'@'%'")).await;
        app.drop_database(&url).await;
    }
}

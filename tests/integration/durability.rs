//! Writes are stored whole or not at all, with the ids the database gave them: the
//! guarded write transaction (an abort the client never heard of leaves nothing), and
//! batched LogCommunication ids on a server whose `auto_increment_increment` is not 1.

use std::collections::HashMap;
use std::time::Duration;

use crm_comms::{config::Config, db::Db, pb, with_conn};
use diesel_async::SimpleAsyncConnection;
use mysql_async::prelude::Queryable;
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::Channel;

use crate::harness::{log, note, Backend, CommunicationServiceClient, TestApp};
use crate::outage::PrivateMariaDb;

/// Runs `statements` (`;`-separated) in one guarded transaction; on MySQL, with
/// `abort_midway`, the session's transaction is rolled back after the first statement
/// (as a cluster node does to a transaction that lost certification) and the rest is
/// still sent.
async fn guarded(
    app: &TestApp,
    statements: &[&str],
    abort_midway: bool,
) -> crm_comms::error::Result<()> {
    let db = &app.db;
    with_conn!(db, write, |conn| {
        crm_comms::db::tx::transaction(conn, async |conn| {
            for (i, sql) in statements.iter().enumerate() {
                conn.batch_execute(sql).await?;
                if i == 0 && abort_midway {
                    conn.batch_execute("ROLLBACK").await?;
                }
            }
            Ok(())
        })
        .await
    })
}

/// One statement through a pooled connection, outside any transaction.
async fn plain_write(app: &TestApp, sql: &str) -> crm_comms::error::Result<()> {
    let db = &app.db;
    with_conn!(db, write, |conn| {
        conn.batch_execute(sql).await?;
        Ok(())
    })
}

crate::backend_tests! {
    async fn a_guarded_transaction_stores_all_or_nothing(app: &TestApp) {
        app.execute("CREATE TABLE guard_probe (id INTEGER PRIMARY KEY)").await;
        let count = || app.scalar("SELECT COUNT(*) FROM guard_probe");

        guarded(app, &["INSERT INTO guard_probe VALUES (1)", "INSERT INTO guard_probe VALUES (2)"], false)
            .await
            .expect("a transaction that runs to its end commits");
        assert_eq!(count().await, 2);

        // A statement that fails rolls back the ones before it.
        let err = guarded(app, &["INSERT INTO guard_probe VALUES (3)", "INSERT INTO guard_probe VALUES (1)"], false)
            .await
            .expect_err("duplicate key");
        assert!(err.is_unique_violation(), "{err}");
        assert_eq!(count().await, 2, "nothing of the failed transaction is stored");

        if app.backend == Backend::Mysql {
            // The database rolled the transaction back after its first statement and the
            // client was not told: the statements after it must not be stored on their
            // own, and the commit must say the transaction did not happen.
            let err = guarded(
                app,
                &[
                    "INSERT INTO guard_probe VALUES (4)",
                    "INSERT INTO guard_probe VALUES (5)",
                    "INSERT INTO guard_probe VALUES (6)",
                ],
                true,
            )
            .await
            .expect_err("an aborted transaction cannot commit");
            assert!(err.is_transaction_conflict(), "retryable: {err}");
            assert_eq!(count().await, 2, "nothing after the abort was stored");
            // The connection went back to the pool in autocommit mode: a plain write
            // through it is stored at once.
            plain_write(app, "INSERT INTO guard_probe VALUES (7)")
                .await
                .expect("plain write");
            assert_eq!(count().await, 3);
        }
    }
}

/// Customers and concurrent LogCommunication callers of the id test.
const CUSTOMERS: usize = 8;
const CALLERS: usize = 32;
const CALLS_EACH: usize = 25;

crate::standalone_tests! {
    async fn batched_log_ids_are_right_when_auto_increment_steps_by_two() {
        let Some(mut mariadb) = PrivateMariaDb::install_with(&[
            "--auto-increment-increment=2",
            "--auto-increment-offset=2",
        ]) else {
            return;
        };
        mariadb.start().await;
        let url = mariadb.create_database("crm").await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = Config::new(addr, url.clone());
        let db = Db::connect(&url, &config.pool_options()).await.expect("connect");
        let (_shutdown, rx) = watch::channel(false);
        tokio::spawn(crm_comms::server::serve(config, db, listener, rx));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to server");
        let mut customers = Vec::new();
        for i in 0..CUSTOMERS {
            let id = crate::harness::customer_via(&channel, &format!("step {i}")).await;
            customers.push(id);
        }

        // Many callers at once, so the writer stores batches of several rows.
        let mut callers = Vec::new();
        for c in 0..CALLERS {
            let (channel, customers) = (channel.clone(), customers.clone());
            callers.push(tokio::spawn(async move {
                let mut client = CommunicationServiceClient::new(channel);
                let mut acked = Vec::new();
                for i in 0..CALLS_EACH {
                    let customer = customers[(c + i) % customers.len()];
                    let key = format!("c{c}-{i}");
                    let content = format!("step content {key}");
                    let id = client
                        .log_communication(log(note(customer, &content, "2024-03-01T10:00:00Z"), &key))
                        .await
                        .expect("log")
                        .into_inner()
                        .id;
                    acked.push((key, customer, content, id));
                }
                acked
            }));
        }
        let mut acked = Vec::new();
        for caller in callers {
            acked.extend(caller.await.expect("caller"));
        }

        let mut conn = mysql_async::Conn::from_url(url.as_str()).await.expect("connect");
        let rows: Vec<(i64, i64, String)> = conn
            .query("SELECT id, customer_id, content FROM communications")
            .await
            .expect("read back");
        let _ = conn.disconnect().await;
        let stored: HashMap<i64, (i64, String)> =
            rows.into_iter().map(|(id, c, text)| (id, (c, text))).collect();
        assert_eq!(stored.len(), CALLERS * CALLS_EACH, "one row per call");
        let ids: std::collections::HashSet<i64> = acked.iter().map(|a| a.3).collect();
        assert_eq!(ids.len(), acked.len(), "every call got its own id");
        assert!(
            ids.iter().all(|id| id % 2 == 0),
            "the ids are the server's (offset 2, step 2)"
        );
        let wrong: Vec<_> = acked
            .iter()
            .filter(|(_, customer, content, id)| stored.get(id) != Some(&(*customer, content.clone())))
            .collect();
        assert!(wrong.is_empty(), "{} of {} acknowledged ids name another row, e.g. {:?}", wrong.len(), acked.len(), wrong.first());

        // A replay answers the id of the first call.
        let mut client = CommunicationServiceClient::new(channel.clone());
        for (key, customer, content, id) in acked.iter().step_by(7) {
            let again = client
                .log_communication(log(note(*customer, content, "2024-03-01T10:00:00Z"), key))
                .await
                .expect("replay")
                .into_inner()
                .id;
            assert_eq!(again, *id, "replay of {key}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the server's overall health is SERVING now.
async fn serving(channel: &Channel) -> bool {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// Polls `cond` every 100 ms for up to `limit`; whether it became true.
async fn eventually<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut cond: impl FnMut() -> F,
) -> bool {
    let until = std::time::Instant::now() + limit;
    while std::time::Instant::now() < until {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

crate::backend_tests! {
    async fn a_database_url_with_several_hosts_uses_the_first_that_answers(app: &TestApp) {
        if app.backend != Backend::Mysql {
            return;
        }
        let url = app.empty_database_url("hosts").await;
        // A host that refuses first (nothing listens on port 1), then the real one.
        let (creds_host, db_name) = url.rsplit_once('/').unwrap();
        let (prefix, host) = creds_host.rsplit_once('@').unwrap();
        let several = format!("{prefix}@127.0.0.1:1,{host}/{db_name}");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = Config::new(addr, several.clone());
        let db = Db::connect(&several, &config.pool_options()).await.expect("the second host serves");
        let (stop, rx) = watch::channel(false);
        tokio::spawn(crm_comms::server::serve(config, db, listener, rx));
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let customer = crate::harness::customer_via(&channel, "failover").await;
        assert!(customer > 0);
        assert!(eventually(Duration::from_secs(5), || serving(&channel)).await, "readiness uses the hosts in order too");
        let _ = stop.send(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.drop_database(&url).await;
    }
}

crate::standalone_tests! {
    async fn calls_answer_unavailable_at_once_while_the_database_is_away() {
        let Some(mut mariadb) = PrivateMariaDb::install() else {
            return;
        };
        mariadb.start().await;
        let url = mariadb.create_database("crm").await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = Config::new(addr, url.clone());
        config.db_acquire_timeout_secs = 5;
        let db = Db::connect(&url, &config.pool_options()).await.expect("connect");
        let (_stop, rx) = watch::channel(false);
        tokio::spawn(crm_comms::server::serve(config, db, listener, rx));
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut customers = crate::harness::CustomerServiceClient::new(channel.clone());
        let get = pb::GetCustomerRequest { id: 1 };
        assert!(eventually(Duration::from_secs(5), || serving(&channel)).await);

        mariadb.kill();
        assert!(
            eventually(Duration::from_secs(10), || async { !serving(&channel).await }).await,
            "readiness notices the outage"
        );
        for _ in 0..5 {
            let started = std::time::Instant::now();
            let status = customers.get_customer(get).await.expect_err("the database is away");
            let took = started.elapsed();
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(status.message().contains("unreachable"), "{status:?}");
            assert!(took < Duration::from_secs(1), "answered at once, not after the pool's 5 s: {took:?}");
        }

        mariadb.start().await;
        assert!(eventually(Duration::from_secs(15), || serving(&channel)).await, "ready again");
        let status = customers.get_customer(get).await.expect_err("no customer 1");
        assert_eq!(status.code(), tonic::Code::NotFound, "the database answers again: {status:?}");
    }
}

crate::backend_tests! {
    async fn an_import_batch_too_slow_to_commit_in_time_is_stored_in_halves(app: &TestApp) {
        if app.backend != Backend::Mysql {
            return;
        }
        let held = crate::harness::new_customer(app, "held").await;
        let free = crate::harness::new_customer(app, "free").await;
        // Another session holds `held`'s row for longer than the write's whole retry
        // budget: every attempt of the two-customer batch waits for it and reaches commit
        // past the bound.
        let mut locker = mysql_async::Conn::from_url(app.database_url.as_str()).await.expect("connect");
        locker.query_drop("START TRANSACTION").await.expect("begin");
        locker
            .query_drop(format!("SELECT id FROM customers WHERE id = {held} FOR UPDATE"))
            .await
            .expect("lock");
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(4_500)).await;
            locker.query_drop("ROLLBACK").await.expect("release");
            let _ = locker.disconnect().await;
        });
        let items = [(held, "b-1"), (free, "b-2")].map(|(customer, key)| pb::ImportCommunicationsRequest {
            communication: Some(note(customer, key, "2024-03-01T08:00:00Z")),
            request_id: key.into(),
        });
        let report = app
            .communications()
            .import_communications(tokio_stream::iter(items))
            .await
            .expect("the batch is stored, in halves")
            .into_inner();
        release.await.expect("released");
        assert_eq!(report.accepted_count, 2, "{report:?}");
        assert!(report.rejected.is_empty(), "{report:?}");
        for customer in [held, free] {
            assert_eq!(app.count_where("communications", "customer_id", customer).await, 1);
        }
        // Each half is its own transaction with its own audit record.
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM audit_records WHERE method LIKE '%ImportCommunications'").await,
            2
        );
    }
}

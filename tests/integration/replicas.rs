//! Read replicas (MySQL only): a private primary and a private replica (MariaDB GTID
//! replication), a server with `--read-database-url`. Listings and Get reads come from
//! the replica; a caller gets its own writes back at once; a replica past the lag bound
//! or gone sends reads to the primary without errors.
//!
//! Skipped (with a message) without `mariadbd` and `mariadb-install-db`.

use std::time::{Duration, Instant};

use crm_comms::model::caller::Role;
use crm_comms::pb;
use crm_comms::security::tokens::new_token;
use mysql_async::prelude::Queryable;
use tonic::{Code, Request, Status};

use crate::harness::{CustomerServiceClient, TestApp};
use crate::outage::PrivateMariaDb;

/// A customer written on the replica alone: whoever sees it read the replica.
const REPLICA_ONLY: i64 = 1_000_000;
/// The replica's lag bound for the test (`--read-max-lag-secs`).
const MAX_LAG_SECS: u64 = 3;

async fn run_sql(url: &str, statements: &[&str]) {
    let mut conn = mysql_async::Conn::from_url(url).await.expect("connect");
    for sql in statements {
        conn.query_drop(*sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let _ = conn.disconnect().await;
}

async fn text(url: &str, sql: &str) -> Option<String> {
    let mut conn = mysql_async::Conn::from_url(url).await.ok()?;
    let value: Option<String> = conn.query_first(sql).await.ok()?;
    let _ = conn.disconnect().await;
    value
}

/// `message` sent with `token`.
fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

/// The names `token`'s caller sees in ListCustomers.
async fn names(
    client: &mut CustomerServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Vec<String> {
    client
        .list_customers(with_token(token, pb::ListCustomersRequest::default()))
        .await
        .expect("ListCustomers answers")
        .into_inner()
        .customers
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// Whether `token`'s GetCustomer sees the replica-only customer (`Err` for other errors).
async fn sees_replica(
    client: &mut CustomerServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Result<bool, Status> {
    match client
        .get_customer(with_token(
            token,
            pb::GetCustomerRequest { id: REPLICA_ONLY },
        ))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(s),
    }
}

/// Polls `$check` every 100 ms until it holds; panics with `$what` after `$within`.
macro_rules! eventually {
    ($within:expr, $what:expr, $check:expr) => {{
        let start = Instant::now();
        while !$check {
            assert!(start.elapsed() < $within, "{} within {:?}", $what, $within);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

crate::standalone_tests! {
    async fn reads_use_the_replica_within_its_lag_bound_and_give_callers_their_own_writes() {
        let started = Instant::now();
        let Some(mut primary) = PrivateMariaDb::install_with(&[
            "--server-id=1",
            "--log-bin=primary-bin",
            "--binlog-format=ROW",
        ]) else {
            return;
        };
        let Some(mut replica) = PrivateMariaDb::install_with(&["--server-id=2"]) else {
            return;
        };
        tokio::join!(primary.start(), replica.start());
        // Replication from the empty primary: the database and the migrations follow.
        let change = format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
             MASTER_USE_GTID=slave_pos",
            primary.url("x").split(':').nth(2).and_then(|p| p.split('/').next()).expect("port"),
        );
        run_sql(&replica.url("mysql"), &[&change, "START SLAVE"]).await;
        run_sql(&primary.url("mysql"), &["CREATE DATABASE crm CHARACTER SET utf8mb4"]).await;

        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        let (alice, a) = new_token(Role::Writer, "alice").unwrap();
        let (bob, b) = new_token(Role::Reader, "bob").unwrap();
        std::fs::write(&tokens, format!("{a}\n{b}\n")).unwrap();
        let replica_url = replica.url("crm");
        let primary_url = primary.url("crm");
        let app = TestApp::start_on(&primary_url, |c| {
            c.read_database_url = Some(replica_url.clone());
            c.read_max_lag_secs = MAX_LAG_SECS;
            c.auth_tokens_file = Some(tokens.clone());
            c.db_acquire_timeout_secs = 2;
        })
        .await
        .expect("server on the primary");
        let mut client = CustomerServiceClient::new(app.channel.clone());

        // A customer on the replica alone (an id the primary never reaches).
        let binlog = || text(&primary_url, "SELECT @@gtid_binlog_pos");
        let applied = || text(&replica_url, "SELECT @@gtid_slave_pos");
        eventually!(Duration::from_secs(15), "the migrations reach the replica", {
            let (b, a) = (binlog().await, applied().await);
            b.is_some() && b == a
        });
        run_sql(
            &replica_url,
            &[&format!(
                "INSERT INTO customers (id, name, search_text, create_time, update_time) \
                 VALUES ({REPLICA_ONLY}, 'replica only', 'replica only\\n\\n', NOW(6), NOW(6))"
            )],
        )
        .await;
        eventually!(
            Duration::from_secs(10),
            "bob reads the replica",
            matches!(sees_replica(&mut client, &bob).await, Ok(true))
        );

        // (1) Replication stopped: alice's write is on the primary only. Bob's listing
        // comes from the replica and lacks it; alice's comes from the primary and has it.
        run_sql(&replica.url("mysql"), &["STOP SLAVE"]).await;
        let written = Instant::now();
        client
            .create_customer(with_token(
                &alice,
                pb::CreateCustomerRequest {
                    customer: Some(pb::Customer {
                        name: "written by alice".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await
            .expect("CreateCustomer");
        let seen_by_alice = names(&mut client, &alice).await;
        let seen_by_bob = names(&mut client, &bob).await;
        assert!(
            written.elapsed() < Duration::from_secs(MAX_LAG_SECS - 1),
            "the reads ran within the lag bound ({:?}); the machine is too slow to tell",
            written.elapsed()
        );
        assert!(
            seen_by_alice.contains(&"written by alice".to_owned())
                && !seen_by_alice.contains(&"replica only".to_owned()),
            "alice reads her own write from the primary: {seen_by_alice:?}"
        );
        assert!(
            !seen_by_bob.contains(&"written by alice".to_owned())
                && seen_by_bob.contains(&"replica only".to_owned()),
            "bob reads the stopped replica: {seen_by_bob:?}"
        );

        // (2) Still stopped: once the replica trails by more than the bound, bob's reads
        // go to the primary and see alice's write.
        eventually!(
            Duration::from_secs(MAX_LAG_SECS + 5),
            "bob's reads move to the primary",
            names(&mut client, &bob)
                .await
                .contains(&"written by alice".to_owned())
        );
        let switched = written.elapsed();
        assert!(
            matches!(sees_replica(&mut client, &bob).await, Ok(false)),
            "from the primary"
        );
        // The lag counts from the last check the replica had applied, up to a check
        // interval (longer on a busy machine) before the write.
        assert!(
            switched >= Duration::from_secs(MAX_LAG_SECS - 2),
            "not before the replica was near the bound: {switched:?}"
        );

        // Replication resumes: the replica catches up and serves again.
        run_sql(&replica.url("mysql"), &["START SLAVE"]).await;
        eventually!(
            Duration::from_secs(10),
            "bob reads the replica again",
            matches!(sees_replica(&mut client, &bob).await, Ok(true))
        );

        // (3) The replica dies: every read answers, from the primary.
        replica.kill();
        let until = Instant::now() + Duration::from_secs(3);
        let mut reads = 0;
        while Instant::now() < until {
            let got = sees_replica(&mut client, &bob).await;
            assert!(
                matches!(got, Ok(false)),
                "GetCustomer answers from the primary: {got:?}"
            );
            let seen = names(&mut client, &bob).await;
            assert!(seen.contains(&"written by alice".to_owned()), "{seen:?}");
            reads += 2;
        }
        assert!(reads >= 4, "{reads} reads");
        eprintln!(
            "replicas: bob's reads on the primary {switched:?} after the write (bound \
             {MAX_LAG_SECS} s); {reads} reads after the kill; {:?} in all",
            started.elapsed()
        );
    }
}

//! The one test harness: a real server on an ephemeral port over a fresh database
//! (a temporary SQLite file, or a uniquely named MariaDB database dropped afterwards),
//! and generated clients connected to it.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use crm_comms::{config::Config, db::Db, pb};
use mysql_async::prelude::Queryable;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::{transport::Channel, Code, Status};
use tonic_types::StatusExt;

pub use pb::{
    analytics_service_client::AnalyticsServiceClient,
    communication_service_client::CommunicationServiceClient,
    customer_service_client::CustomerServiceClient,
};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mysql,
}

/// Base URL of the MariaDB server the MySQL tests use.
fn mysql_base() -> String {
    std::env::var("CRM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// CI sets this so an unreachable MariaDB fails the run instead of skipping.
fn mysql_required() -> bool {
    std::env::var("CRM_REQUIRE_MYSQL").is_ok_and(|v| v == "1" || v == "true")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running server and what it needs to be torn down.
pub struct TestApp {
    pub backend: Backend,
    pub addr: std::net::SocketAddr,
    pub channel: Channel,
    pub db: Db,
    pub database_url: String,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
    mysql_database: Option<String>,
}

impl TestApp {
    /// Starts a server on `backend`; `None` when MariaDB is unreachable and not required.
    pub async fn start(backend: Backend) -> Option<TestApp> {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`TestApp::start`], adjusting the configuration first.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let (url, dir, mysql_database) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("crm.db").display());
                (url, Some(dir), None)
            }
            Backend::Mysql => {
                let name = format!(
                    "crm_test_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    chrono::Utc::now().timestamp_subsec_micros()
                );
                let admin = format!("{}/test", mysql_base());
                match create_mysql_database(&admin, &name).await {
                    Ok(()) => {}
                    Err(e) if !mysql_required() => {
                        eprintln!("skipping MySQL test: MariaDB unreachable at {admin}: {e} (set CRM_REQUIRE_MYSQL=1 to fail instead)");
                        return None;
                    }
                    Err(e) => panic!(
                        "MariaDB required (CRM_REQUIRE_MYSQL=1) but unreachable at {admin}: {e}"
                    ),
                }
                (format!("{}/{name}", mysql_base()), None, Some(name))
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = Config::new(addr, url.clone());
        config.shutdown_grace_secs = 2;
        tweak(&mut config);
        let db = Db::connect(&url, &config.pool_options())
            .await
            .expect("connect");
        let (tx, rx) = watch::channel(false);
        let server = tokio::spawn(crm_comms::server::serve(config, db.clone(), listener, rx));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to test server");
        Some(TestApp {
            backend,
            addr,
            channel,
            db,
            database_url: url,
            shutdown: tx,
            server: Some(server),
            _dir: dir,
            mysql_database,
        })
    }

    pub fn customers(&self) -> CustomerServiceClient<Channel> {
        CustomerServiceClient::new(self.channel.clone())
    }

    pub fn communications(&self) -> CommunicationServiceClient<Channel> {
        CommunicationServiceClient::new(self.channel.clone()).max_decoding_message_size(16 << 20)
    }

    pub fn analytics(&self) -> AnalyticsServiceClient<Channel> {
        AnalyticsServiceClient::new(self.channel.clone())
    }

    /// A fresh connection (not sharing the harness channel).
    pub async fn new_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// Starts shutdown and waits for the server task to end.
    pub async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
        }
    }

    /// Signals shutdown without waiting.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Counts rows of `table` whose `column` equals `value`, straight from the database.
    pub async fn count_where(&self, table: &str, column: &str, value: i64) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = {value}");
        self.scalar(&sql).await
    }

    /// Runs a `SELECT` returning one integer, straight on the database.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Mysql => {
                let mut conn = mysql_async::Conn::from_url(self.database_url.as_str())
                    .await
                    .expect("mysql connect");
                let v: Option<i64> = conn.query_first(sql).await.expect("query");
                let _ = conn.disconnect().await;
                v.unwrap_or(0)
            }
            Backend::Sqlite => {
                use diesel::{Connection, RunQueryDsl};
                #[derive(diesel::QueryableByName)]
                struct Row {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                }
                let path = self.database_url.trim_start_matches("sqlite://").to_owned();
                let sql = format!("SELECT ({sql}) AS n");
                tokio::task::spawn_blocking(move || {
                    let mut conn = diesel::SqliteConnection::establish(&path).expect("sqlite");
                    diesel::sql_query(sql)
                        .get_result::<Row>(&mut conn)
                        .expect("query")
                        .n
                })
                .await
                .expect("join")
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(name) = self.mysql_database.take() {
            let admin = format!("{}/test", mysql_base());
            // Drop runs inside the test's runtime; use a private one on another thread.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async {
                        if let Ok(mut conn) = mysql_async::Conn::from_url(admin.as_str()).await {
                            let _ = conn
                                .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                                .await;
                            let _ = conn.disconnect().await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

async fn create_mysql_database(admin_url: &str, name: &str) -> Result<(), mysql_async::Error> {
    let mut conn = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        mysql_async::Conn::from_url(admin_url),
    )
    .await
    .map_err(|_| mysql_async::Error::Other("connect timed out".into()))??;
    conn.query_drop(format!(
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .await?;
    conn.disconnect().await?;
    Ok(())
}

/// Runs each test body once against SQLite and once against MariaDB, each on its own
/// fresh database.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($app:ident: &TestApp) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($app: &$crate::harness::TestApp) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let app = $crate::harness::TestApp::start($crate::harness::Backend::Sqlite)
                        .await
                        .expect("sqlite always starts");
                    run(&app).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mysql() {
                    if let Some(app) =
                        $crate::harness::TestApp::start($crate::harness::Backend::Mysql).await
                    {
                        run(&app).await;
                    }
                }
            }
        )*
    };
}

/// Asserts that `status` is INVALID_ARGUMENT whose BadRequest names exactly `fields`
/// (in any order), and carries ErrorInfo in domain crm.v1.
pub fn assert_invalid(status: &Status, fields: &[&str]) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let mut got: Vec<String> = details
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    got.sort();
    got.dedup();
    let mut want: Vec<String> = fields.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(got, want, "violations of {status:?}");
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.domain, "crm.v1");
}

/// Asserts the status code and the ErrorInfo reason.
pub fn assert_status(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "crm.v1");
}

/// A protobuf timestamp from an RFC 3339 string.
pub fn ts(rfc3339: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).expect("rfc3339");
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Creates a customer with just a name and returns its id.
pub async fn new_customer(app: &TestApp, name: &str) -> i64 {
    app.customers()
        .create_customer(pb::CreateCustomerRequest {
            customer: Some(pb::Customer {
                name: name.to_owned(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("create customer")
        .into_inner()
        .id
}

//! The one test harness: a real server on an ephemeral port over a fresh database
//! (a temporary SQLite file, or a uniquely named MariaDB database dropped afterwards),
//! and generated clients connected to it; and the registry of tests that `main` turns
//! into one trial per test and backend.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

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

/// URL of the database the harness connects to for CREATE / DROP DATABASE.
fn mysql_admin_url() -> String {
    format!("{}/test", mysql_base())
}

/// `url` with any password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    match path {
        Some(p) => format!("{scheme}://{authority}/{p}"),
        None => format!("{scheme}://{authority}"),
    }
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
    /// Starts a server on `backend`; `None` when MariaDB is unreachable and not required
    /// (the runner fails a MySQL trial that gets `None`: its probe found MariaDB up).
    /// Panics when the server is reachable but the test database cannot be created.
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
                let admin = mysql_admin_url();
                match create_mysql_database(&admin, &name).await {
                    Ok(()) => {}
                    Err(MysqlSetupError::Unreachable(e)) if !mysql_required() => {
                        // The runner marks MySQL trials ignored when the probe fails; a
                        // server that vanishes mid-run fails the trial (see `run_trial`).
                        eprintln!("MariaDB unreachable at {}: {e}", redact(&admin));
                        return None;
                    }
                    Err(MysqlSetupError::Unreachable(e)) => panic!(
                        "MariaDB required (CRM_REQUIRE_MYSQL=1) but unreachable at {}: {e}",
                        redact(&admin)
                    ),
                    // The server answered: a failed CREATE DATABASE is a broken setup.
                    Err(MysqlSetupError::Refused(e)) => panic!(
                        "MariaDB at {} refused to create test database {name}: {e}",
                        redact(&admin)
                    ),
                }
                (format!("{}/{name}", mysql_base()), None, Some(name))
            }
        };
        let app = Self::serve(backend, url, dir, mysql_database, tweak).await;
        Some(app.expect("connect"))
    }

    /// Starts a server on the existing MariaDB database `url` (made and dropped by the
    /// caller, e.g. on a cluster node); the error when it cannot start (its migrations
    /// included).
    pub async fn start_on(url: &str, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<TestApp> {
        Self::serve(Backend::Mysql, url.to_owned(), None, None, tweak).await
    }

    async fn serve(
        backend: Backend,
        url: String,
        dir: Option<tempfile::TempDir>,
        mysql_database: Option<String>,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<TestApp> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = Config::new(addr, url.clone());
        config.shutdown_grace_secs = 2;
        tweak(&mut config);
        let db = Db::connect(&url, &config.pool_options()).await?;
        let (tx, rx) = watch::channel(false);
        let server = tokio::spawn(crm_comms::server::serve(config, db.clone(), listener, rx));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to test server");
        Ok(TestApp {
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

    /// A fresh connection without tonic's client-side deadline: a `grpc-timeout` header on
    /// a request through it is enforced by the server alone (tonic's `Channel` also times
    /// the call out itself and answers CANCELLED, racing the server's answer).
    pub async fn untimed_channel(&self) -> UntimedChannel {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("http2 handshake");
        tokio::spawn(conn);
        UntimedChannel {
            send,
            authority: self.addr.to_string(),
        }
    }

    /// Starts shutdown and waits for the server task to end; panics unless it ends
    /// cleanly within 10 s.
    pub async fn stop(&mut self) {
        self.begin_shutdown();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(std::time::Duration::from_secs(10), server)
                .await
                .expect("server stops within 10 s of shutdown")
                .expect("server task did not panic")
                .expect("server ends without error");
        }
    }

    /// Signals shutdown without waiting.
    pub fn begin_shutdown(&self) {
        // Fails only when the server already ended and dropped its receiver.
        let _ = self.shutdown.send(true);
    }

    /// Counts rows of `table` whose `column` equals `value`, straight from the database.
    pub async fn count_where(&self, table: &str, column: &str, value: i64) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = {value}");
        self.scalar(&sql).await
    }

    /// Another server on this database, its settings adjusted by `tweak`, with this
    /// content index (`None`: content reports scan); a channel to it and the sender that
    /// stops it (dropping the sender stops it too).
    pub async fn another_server(
        &self,
        tweak: impl FnOnce(&mut Config),
        index: Option<crm_comms::service::content_index::ContentIndexHandle>,
    ) -> (Channel, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = Config::new(addr, self.database_url.clone());
        config.content_index = index.is_some();
        tweak(&mut config);
        let (tx, rx) = watch::channel(false);
        tokio::spawn(crm_comms::server::serve_with_index(
            config,
            self.db.clone(),
            listener,
            rx,
            index,
        ));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the other server");
        (channel, tx)
    }

    /// The URL of a new, empty database beside this test's own (`suffix` tells them
    /// apart): a file in the same directory, or a MySQL database that
    /// [`TestApp::drop_database`] removes.
    pub async fn empty_database_url(&self, suffix: &str) -> String {
        match (&self.mysql_database, &self._dir) {
            (Some(name), _) => {
                let name = format!("{name}_{suffix}");
                self.execute(&format!(
                    "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                ))
                .await;
                format!("{}/{name}", mysql_base())
            }
            (None, Some(dir)) => format!(
                "sqlite://{}",
                dir.path().join(format!("{suffix}.db")).display()
            ),
            (None, None) => unreachable!("a test database is MySQL or a SQLite file"),
        }
    }

    /// Drops a MySQL database made by [`TestApp::empty_database_url`] (a no-op for SQLite).
    pub async fn drop_database(&self, url: &str) {
        if self.backend == Backend::Mysql {
            if let Some((_, name)) = url.rsplit_once('/') {
                self.execute(&format!("DROP DATABASE IF EXISTS `{name}`"))
                    .await;
            }
        }
    }

    /// Runs a statement that returns no rows, straight on the database.
    pub async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Mysql => {
                let mut conn = mysql_async::Conn::from_url(self.database_url.as_str())
                    .await
                    .expect("mysql connect");
                // The servers' own writers (compaction, pruning) may take the same rows:
                // a deadlock is retried, as any client of InnoDB retries it.
                let mut tries = 0;
                loop {
                    match conn.query_drop(sql).await {
                        Err(mysql_async::Error::Server(e)) if e.code == 1213 && tries < 5 => {
                            tries += 1;
                        }
                        done => break done.expect("statement"),
                    }
                }
                conn.disconnect().await.expect("mysql disconnect");
            }
            Backend::Sqlite => {
                use diesel::{Connection, RunQueryDsl};
                let path = self.database_url.trim_start_matches("sqlite://").to_owned();
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || {
                    let mut conn = diesel::SqliteConnection::establish(&path).expect("sqlite");
                    // The servers' own writers (compaction, pruning) may hold the lock.
                    diesel::sql_query("PRAGMA busy_timeout = 10000")
                        .execute(&mut conn)
                        .expect("busy timeout");
                    diesel::sql_query(sql)
                        .execute(&mut conn)
                        .expect("statement");
                })
                .await
                .expect("join");
            }
        }
    }

    /// Runs a `SELECT` returning one integer, straight on the database.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Mysql => {
                let mut conn = mysql_async::Conn::from_url(self.database_url.as_str())
                    .await
                    .expect("mysql connect");
                let v: Option<i64> = conn.query_first(sql).await.expect("query");
                conn.disconnect().await.expect("mysql disconnect");
                v.expect("the query returns one row")
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
        self.begin_shutdown();
        if let Some(name) = self.mysql_database.take() {
            drop_mysql_database(mysql_admin_url(), name);
        }
    }
}

/// Drops database `name` through `admin` (a URL), from `Drop`: it runs inside the test's
/// runtime, so it uses a private one on another thread. Cleanup does not decide a test's
/// outcome, but a failure is reported.
pub fn drop_mysql_database(admin: String, name: String) {
    let dropped = std::thread::spawn(move || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut conn = mysql_async::Conn::from_url(admin.as_str()).await?;
            conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                .await?;
            conn.disconnect().await
        })
        .map_err(|e: mysql_async::Error| format!("DROP DATABASE {name}: {e}"))
    })
    .join();
    match dropped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: test database left behind: {e}"),
        Err(_) => eprintln!("warning: test database cleanup panicked"),
    }
}

/// Why a MySQL test database could not be made.
#[derive(Debug)]
pub enum MysqlSetupError {
    /// No MariaDB answered (refused, timed out, I/O error): skippable unless required.
    Unreachable(String),
    /// MariaDB answered but refused (login, CREATE DATABASE, ...): always a failure.
    Refused(String),
}

impl std::fmt::Display for MysqlSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MysqlSetupError::Unreachable(e) | MysqlSetupError::Refused(e) => f.write_str(e),
        }
    }
}

/// Opens an admin connection, classifying a failure as unreachable or refused.
async fn mysql_admin_connection(admin_url: &str) -> Result<mysql_async::Conn, MysqlSetupError> {
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        mysql_async::Conn::from_url(admin_url),
    )
    .await
    {
        Err(_) => Err(MysqlSetupError::Unreachable(
            "connect timed out after 5 s".into(),
        )),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e @ mysql_async::Error::Io(_))) => Err(MysqlSetupError::Unreachable(e.to_string())),
        Ok(Err(e)) => Err(MysqlSetupError::Refused(e.to_string())),
    }
}

/// Creates database `name` through `admin_url` (utf8mb4, as the migrations expect).
pub async fn create_mysql_database(admin_url: &str, name: &str) -> Result<(), MysqlSetupError> {
    let mut conn = mysql_admin_connection(admin_url).await?;
    conn.query_drop(format!(
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .await
    .map_err(|e| MysqlSetupError::Refused(format!("CREATE DATABASE: {e}")))?;
    conn.disconnect()
        .await
        .map_err(|e| MysqlSetupError::Refused(format!("disconnect: {e}")))?;
    Ok(())
}

/// A client transport to the test server over one HTTP/2 connection, without the
/// client-side deadline that tonic's `Channel` applies; see [`TestApp::untimed_channel`].
#[derive(Clone)]
pub struct UntimedChannel {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
    authority: String,
}

impl tower::Service<http::Request<tonic::body::Body>> for UntimedChannel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // Generated clients send a path only; HTTP/2 needs the scheme and authority.
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() = format!("http://{}{path}", self.authority)
            .parse()
            .expect("uri");
        Box::pin(self.send.send_request(request))
    }
}

/// The future of one registered test body.
pub type TestFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// How a registered test runs.
#[derive(Clone, Copy)]
pub enum TestBody {
    /// Once per backend, each against a fresh [`TestApp`] (trials `...::sqlite`, `...::mysql`).
    PerBackend(for<'a> fn(&'a TestApp) -> TestFuture<'a>),
    /// Once, starting whatever servers it needs itself.
    Standalone(fn() -> TestFuture<'static>),
    /// Once, on the Galera cluster named by `CRM_GALERA_URLS` (ignored when unset);
    /// an `exclusive` test runs after, never alongside, the other cluster tests.
    Cluster {
        body: fn() -> TestFuture<'static>,
        exclusive: bool,
    },
}

/// The environment variable naming the Galera cluster's nodes (`tools/galera/cluster.sh urls`).
pub const GALERA_URLS_VAR: &str = "CRM_GALERA_URLS";

/// Shared by the cluster trials, taken whole by an exclusive one (it kills nodes).
static CLUSTER_LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// One test registered by [`backend_tests!`] or [`standalone_tests!`].
pub struct RegisteredTest {
    /// `module_path!()` of the test: the crate name, the file's module, the test's name.
    pub path: &'static str,
    /// What to run.
    pub body: TestBody,
}

inventory::collect!(RegisteredTest);

/// Runs each test body once against SQLite and once against MariaDB, each on its own
/// fresh database. Each body becomes two trials, `file::name::sqlite` and
/// `file::name::mysql`, registered with the runner in `main.rs`.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($app:ident: &TestApp) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($app: &$crate::harness::TestApp) $body

                fn boxed(app: &$crate::harness::TestApp) -> $crate::harness::TestFuture<'_> {
                    ::std::boxed::Box::pin(run(app))
                }

                ::inventory::submit! {
                    $crate::harness::RegisteredTest {
                        path: module_path!(),
                        body: $crate::harness::TestBody::PerBackend(boxed),
                    }
                }
            }
        )*
    };
}

/// Registers tests that start their own server(s) (a trial each, `file::name`), for
/// what needs a tweaked configuration or a server it can stop.
#[macro_export]
macro_rules! standalone_tests {
    ($(async fn $name:ident() $body:block)*) => {
        $crate::registered_tests!(
            |boxed| $crate::harness::TestBody::Standalone(boxed);
            $(async fn $name() $body)*
        );
    };
}
/// Registers tests that run on a Galera cluster (a trial each, `file::name`), reported
/// as ignored unless `CRM_GALERA_URLS` is set. `exclusive: true;` first makes them run
/// last and alone among the cluster tests.
#[macro_export]
macro_rules! cluster_tests {
    (exclusive: $exclusive:literal; $(async fn $name:ident() $body:block)*) => {
        $crate::registered_tests!(
            |boxed| $crate::harness::TestBody::Cluster { body: boxed, exclusive: $exclusive };
            $(async fn $name() $body)*
        );
    };
    ($(async fn $name:ident() $body:block)*) => {
        $crate::cluster_tests! { exclusive: false; $(async fn $name() $body)* }
    };
}

/// Registers each test as one trial whose body is `$kind` of its boxed run function
/// (the shared part of [`standalone_tests!`] and [`cluster_tests!`]).
#[macro_export]
macro_rules! registered_tests {
    (|$boxed:ident| $kind:expr; $(async fn $name:ident() $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run() $body

                fn boxed() -> $crate::harness::TestFuture<'static> {
                    ::std::boxed::Box::pin(run())
                }

                ::inventory::submit! {
                    $crate::harness::RegisteredTest {
                        path: module_path!(),
                        body: {
                            let $boxed = boxed;
                            $kind
                        },
                    }
                }
            }
        )*
    };
}
/// Whether the MySQL trials can run, decided once per test run.
#[derive(Debug, Clone)]
pub enum MysqlStatus {
    /// MariaDB answered the probe.
    Up,
    /// No MariaDB answered and none is required: the MySQL trials are ignored.
    Skipped(String),
    /// MariaDB is required but unreachable, or answered and refused: the MySQL trials fail.
    Broken(String),
}

/// Connects once to the MariaDB server the MySQL trials use.
pub fn probe_mysql() -> MysqlStatus {
    let admin = mysql_admin_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("probe runtime");
    let result = rt.block_on(async {
        let conn = mysql_admin_connection(&admin).await?;
        conn.disconnect()
            .await
            .map_err(|e| MysqlSetupError::Refused(format!("disconnect: {e}")))
    });
    let at = redact(&admin);
    match result {
        Ok(()) => MysqlStatus::Up,
        Err(MysqlSetupError::Unreachable(e)) if !mysql_required() => {
            MysqlStatus::Skipped(format!("MariaDB unreachable at {at}: {e}"))
        }
        Err(MysqlSetupError::Unreachable(e)) => MysqlStatus::Broken(format!(
            "MariaDB required (CRM_REQUIRE_MYSQL=1) but unreachable at {at}: {e}"
        )),
        Err(MysqlSetupError::Refused(e)) => {
            MysqlStatus::Broken(format!("MariaDB at {at} refused the test login: {e}"))
        }
    }
}

/// Every registered test as trials, sorted by name: one per backend for
/// [`backend_tests!`], marked ignored on MySQL when `mysql` is [`MysqlStatus::Skipped`].
pub fn trials(mysql: &MysqlStatus) -> Vec<libtest_mimic::Trial> {
    let mut trials = Vec::new();
    let mut exclusive_trials = Vec::new();
    let galera = std::env::var_os(GALERA_URLS_VAR).is_some();
    for test in inventory::iter::<RegisteredTest> {
        // Drop the crate name, as libtest does: `customers::purge_leaves_nothing_of_the_customer`.
        let name = test
            .path
            .split_once("::")
            .map_or(test.path, |(_, rest)| rest);
        match test.body {
            TestBody::Standalone(body) => {
                trials.push(libtest_mimic::Trial::test(name, move || run_trial(body())));
            }
            TestBody::Cluster { body, exclusive } => {
                let trial = libtest_mimic::Trial::test(name, move || {
                    if !galera {
                        // Runs only when asked (--ignored): it fails.
                        return Err(format!("{GALERA_URLS_VAR} is unset: no cluster").into());
                    }
                    let (_shared, _whole);
                    if exclusive {
                        _whole = CLUSTER_LOCK.write().unwrap_or_else(|e| e.into_inner());
                    } else {
                        _shared = CLUSTER_LOCK.read().unwrap_or_else(|e| e.into_inner());
                    }
                    run_trial(body())
                })
                .with_ignored_flag(!galera);
                if exclusive {
                    exclusive_trials.push(trial);
                } else {
                    trials.push(trial);
                }
            }
            TestBody::PerBackend(body) => {
                trials.push(libtest_mimic::Trial::test(
                    format!("{name}::sqlite"),
                    move || {
                        run_trial(async move {
                            let app = TestApp::start(Backend::Sqlite)
                                .await
                                .expect("sqlite always starts");
                            body(&app).await;
                        })
                    },
                ));
                let status = mysql.clone();
                let ignored = matches!(mysql, MysqlStatus::Skipped(_));
                trials.push(
                    libtest_mimic::Trial::test(format!("{name}::mysql"), move || {
                        if let MysqlStatus::Broken(why) | MysqlStatus::Skipped(why) = status {
                            // Skipped trials run only when asked (--ignored): they fail.
                            return Err(why.into());
                        }
                        run_trial(async move {
                            let app = TestApp::start(Backend::Mysql)
                                .await
                                .expect("MariaDB answered the probe but is unreachable now");
                            body(&app).await;
                        })
                    })
                    .with_ignored_flag(ignored),
                );
            }
        }
    }
    trials.sort_by(|a, b| a.name().cmp(b.name()));
    exclusive_trials.sort_by(|a, b| a.name().cmp(b.name()));
    trials.extend(exclusive_trials);
    trials
}

/// Runs one trial's future on its own runtime (2 workers, like `#[tokio::test]` with
/// `flavor = "multi_thread", worker_threads = 2`); a panic fails the trial.
fn run_trial(test: impl Future<Output = ()>) -> Result<(), libtest_mimic::Failed> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("test runtime: {e}"))?
        .block_on(test);
    Ok(())
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
    customer_via(&app.channel, name).await
}

/// Creates a customer named `name` through the server at `channel`; its id.
pub async fn customer_via(channel: &Channel, name: &str) -> i64 {
    CustomerServiceClient::new(channel.clone())
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

/// Runs this test binary on the tests whose names contain `test`, with `env`; returns
/// whether it succeeded, and its stdout and stderr.
async fn run_self(test: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([test, "--test-threads", "1"])
        .env_remove("CRM_REQUIRE_MYSQL");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run the test binary");
    outcome(&out)
}

/// Writes held off by another session, until [`WriteHold::release`]: on MariaDB customer
/// `customer`'s row locked (every write path of that customer waits for it), on SQLite
/// the database's write lock (every write waits).
pub struct WriteHold {
    release: Box<dyn FnOnce() -> tokio::task::JoinHandle<()> + Send>,
}

impl WriteHold {
    /// Takes the hold; returns once it is held.
    pub async fn take(app: &TestApp, customer: i64) -> WriteHold {
        match app.backend {
            Backend::Mysql => {
                let mut conn = mysql_async::Conn::from_url(app.database_url.as_str())
                    .await
                    .expect("mysql connect");
                conn.query_drop("START TRANSACTION").await.expect("begin");
                conn.query_drop(format!(
                    "SELECT id FROM customers WHERE id = {customer} FOR UPDATE"
                ))
                .await
                .expect("lock");
                WriteHold {
                    release: Box::new(move || {
                        tokio::spawn(async move {
                            conn.query_drop("ROLLBACK").await.expect("release");
                            conn.disconnect().await.expect("mysql disconnect");
                        })
                    }),
                }
            }
            Backend::Sqlite => {
                use diesel::{Connection, RunQueryDsl};
                let path = app.database_url.trim_start_matches("sqlite://").to_owned();
                let (held, is_held) = tokio::sync::oneshot::channel();
                let (go, release) = std::sync::mpsc::channel::<()>();
                let holder = tokio::task::spawn_blocking(move || {
                    let mut conn = diesel::SqliteConnection::establish(&path).expect("sqlite");
                    diesel::sql_query("PRAGMA busy_timeout = 10000")
                        .execute(&mut conn)
                        .expect("busy timeout");
                    diesel::sql_query("BEGIN IMMEDIATE")
                        .execute(&mut conn)
                        .expect("write lock");
                    let _ = held.send(());
                    let _ = release.recv();
                    diesel::sql_query("ROLLBACK")
                        .execute(&mut conn)
                        .expect("release");
                });
                is_held.await.expect("the write lock is held");
                WriteHold {
                    release: Box::new(move || {
                        let _ = go.send(());
                        holder
                    }),
                }
            }
        }
    }

    /// Lets the held writes go on.
    pub async fn release(self) {
        (self.release)().await.expect("released");
    }
}

/// `n` new customers named `{prefix} {i}`.
pub async fn new_customers(app: &TestApp, prefix: &str, n: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(new_customer(app, &format!("{prefix} {i}")).await);
    }
    ids
}

/// Logs each communication (no request id) one call at a time; the ids stored.
pub async fn log_each(
    app: &TestApp,
    items: impl IntoIterator<Item = pb::Communication>,
) -> Vec<i64> {
    let mut client = app.communications();
    let mut ids = Vec::new();
    for c in items {
        ids.push(
            client
                .log_communication(log(c, ""))
                .await
                .unwrap()
                .into_inner()
                .id,
        );
    }
    ids
}

/// Deletes these communications, then purges customer `purged`: every delete path.
pub async fn delete_then_purge(app: &TestApp, ids: &[i64], purged: i64) {
    let mut client = app.communications();
    for id in ids {
        client
            .delete_communication(pb::DeleteCommunicationRequest { id: *id })
            .await
            .unwrap();
    }
    app.customers()
        .delete_customer(pb::DeleteCustomerRequest {
            id: purged,
            purge: true,
            etag: String::new(),
        })
        .await
        .unwrap();
}

/// Stores `items` through ImportCommunications and checks that all were accepted.
pub async fn import(app: &TestApp, items: Vec<pb::Communication>) {
    let n = items.len() as i64;
    let stream = tokio_stream::iter(items.into_iter().map(|c| pb::ImportCommunicationsRequest {
        communication: Some(c),
        request_id: String::new(),
    }));
    let resp = app
        .communications()
        .import_communications(stream)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.accepted_count, n, "{resp:?}");
}

/// Runs the `crm-comms` binary with `args` and `DATABASE_URL` set to `url`; returns
/// whether it succeeded, and its stdout and stderr.
pub fn run_binary(args: &[&str], url: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm-comms"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "debug")
        .env("CRM_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run the crm-comms binary");
    outcome(&out)
}

/// Whether a finished process succeeded, and its stdout followed by its stderr.
pub fn outcome(out: &std::process::Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

crate::standalone_tests! {
    async fn unreachable_mariadb_is_reported_ignored_or_failed_never_passed() {
        // A closed port stands in for a MariaDB that is down. One backend test, run
        // through this very runner, must count its MySQL half as ignored, not passed.
        let down = [("CRM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:1")];
        let both = "customers::purge_leaves_nothing_of_the_customer::";
        let (ok, out) = run_self(both, &down).await;
        assert!(ok && out.contains("1 passed; 0 failed; 1 ignored"), "{out}");
        assert!(out.contains("MariaDB unreachable at mysql://root@127.0.0.1:1/test"), "{out}");

        // Required: the same trial fails, naming the cause.
        let required = [down[0], ("CRM_REQUIRE_MYSQL", "1")];
        let (ok, out) = run_self(&format!("{both}mysql"), &required).await;
        assert!(!ok && out.contains("0 passed; 1 failed; 0 ignored"), "{out}");
        assert!(out.contains("MariaDB required (CRM_REQUIRE_MYSQL=1) but unreachable"), "{out}");

        // A server that answers but refuses is broken, not absent: the trial fails even
        // when MariaDB is optional. Only checkable where MariaDB is up.
        let up = tokio::task::spawn_blocking(probe_mysql).await.expect("join");
        if matches!(up, MysqlStatus::Up) {
            let host = mysql_base();
            let host = host.rsplit_once('@').map_or_else(
                || host.split_once("://").map_or(host.as_str(), |(_, h)| h),
                |(_, h)| h,
            );
            let refused = format!("mysql://crm_no_such_user:secret@{host}");
            let (ok, out) = run_self(&format!("{both}mysql"), &[("CRM_TEST_MYSQL_URL", &refused)]).await;
            assert!(!ok && out.contains("0 passed; 1 failed; 0 ignored"), "{out}");
            assert!(out.contains("refused the test login"), "{out}");
            assert!(!out.contains("secret"), "the password is redacted: {out}");
        }
    }
}

/// A note (outbound) of `customer_id` with `content`, occurring at `occur` (RFC 3339).
pub fn note(customer_id: i64, content: &str, occur: &str) -> pb::Communication {
    pb::Communication {
        customer_id,
        channel: pb::Channel::Note as i32,
        direction: pb::Direction::Outbound as i32,
        occur_time: Some(ts(occur)),
        content: content.into(),
        ..Default::default()
    }
}

/// A LogCommunication request for `c` with idempotency key `request_id` ("" for none).
pub fn log(c: pb::Communication, request_id: &str) -> pb::LogCommunicationRequest {
    pb::LogCommunicationRequest {
        communication: Some(c),
        request_id: request_id.into(),
    }
}

/// The next event of a timeline stream, which must come within `secs`.
pub async fn next_event(
    stream: &mut tonic::Streaming<pb::TimelineEvent>,
    secs: u64,
) -> pb::TimelineEvent {
    tokio::time::timeout(std::time::Duration::from_secs(secs), stream.message())
        .await
        .expect("event in time")
        .unwrap()
        .expect("stream still open")
}

/// Asserts that `status` is NOT_FOUND for the merged customer `id`, naming `survivor`.
pub fn assert_merged(status: &Status, id: i64, survivor: i64) {
    assert_status(status, Code::NotFound, "CUSTOMER_MERGED");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        info.metadata["merged_into"],
        survivor.to_string(),
        "{status:?}"
    );
    assert_eq!(info.metadata["id"], id.to_string(), "{status:?}");
}

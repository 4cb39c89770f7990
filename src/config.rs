//! Command-line and environment configuration of the server.
//!
//! Every flag has an environment variable, so the same binary runs from a shell or a
//! container without a config file.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

/// Most customers `seed-demo` may create.
pub const MAX_DEMO_CUSTOMERS: u32 = 1_000_000;
/// Most communications `seed-demo` may write.
pub const MAX_DEMO_COMMUNICATIONS: u64 = 100_000_000;
/// Longest time range of `seed-demo`, in days (ten years).
pub const MAX_DEMO_DAYS: u32 = 3650;

/// The `crm-comms` command line.
#[derive(Debug, Parser)]
#[command(
    name = "crm-comms",
    version,
    about = "gRPC backend of a CRM's customer-communication module"
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply migrations and serve gRPC (the default).
    Serve,
    /// Apply pending migrations and exit (under the migration lock, so it may run while
    /// servers start); `--revert-last` reverts the last applied one instead.
    Migrate(MigrateArgs),
    /// Fill a fresh database with a realistic demo dataset (customers, orders, service
    /// tickets, communications) through the service's own write paths, then exit.
    ///
    /// The same --seed, --end and sizes always give identical data. Refuses a database
    /// that already holds customers.
    SeedDemo(SeedDemoArgs),
    /// Build the rollups (pre-aggregated counts behind the reports) again from the
    /// stored communications, then exit. A repair for a database written to behind the
    /// service's back; run it while no server writes to the database.
    RebuildRollups,
    /// Bearer tokens: `token new --role writer --name billing` prints a fresh token
    /// once, and the line to add to the tokens file (which holds only its hash).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write the data for BI tools: every table as Parquet or CSV files partitioned by
    /// month, and a manifest.json whose to_watermark the next run passes to --since (or
    /// pass the manifest itself to --since-manifest) to export only what changed.
    Export(ExportArgs),
}

/// File format of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Apache Parquet (typed: timestamps with zone, decimals, UTF-8 text).
    Parquet,
    /// RFC 4180 CSV, UTF-8.
    Csv,
}

/// Options of `export`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Export")]
pub struct ExportArgs {
    /// File format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Directory to write into (created if missing): `<table>/month=YYYY-MM/part-*.<ext>`
    /// and `manifest.json`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Export only what was recorded or changed after this watermark (a previous
    /// manifest's to_watermark, RFC 3339); a full export without it.
    #[arg(long, value_name = "WATERMARK", conflicts_with = "since_manifest")]
    pub since: Option<String>,
    /// Export only what changed since the run that wrote this manifest.json.
    #[arg(long, value_name = "PATH")]
    pub since_manifest: Option<PathBuf>,
}

/// Options of `migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Revert the last applied migration (its down.sql) instead of applying.
    #[arg(long)]
    pub revert_last: bool,
    /// Only list the pending migrations; exits non-zero when there are some.
    #[arg(long, conflicts_with = "revert_last")]
    pub check: bool,
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new random token; prints the token (give it to the caller; it is not
    /// stored anywhere) and its tokens-file line.
    New {
        /// What the caller may do: reader, writer or admin.
        #[arg(long, value_parser = parse_role)]
        role: crate::model::caller::Role,
        /// The caller's name, as logged and audited (letters, digits, `-_.@:`).
        #[arg(long)]
        name: String,
    },
}

fn parse_role(s: &str) -> Result<crate::model::caller::Role, String> {
    crate::model::caller::Role::parse(s)
        .ok_or_else(|| format!("`{s}` is not a role: reader, writer or admin"))
}

/// Options of `seed-demo`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Demo data")]
pub struct SeedDemoArgs {
    /// Customers to create (60% Chinese, 40% English names; two thirds in Shanghai's
    /// time zone); about 3 orders and 0.7 service tickets each per year, more for the
    /// active ones.
    #[arg(
        long,
        default_value_t = 200,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DEMO_CUSTOMERS))
    )]
    pub customers: u32,
    /// Communications to write, over every channel, skewed to a few busy customers.
    #[arg(
        long,
        default_value_t = 20_000,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(0..=MAX_DEMO_COMMUNICATIONS)
    )]
    pub communications: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42, value_name = "N")]
    pub seed: u64,
    /// End of the time range, exclusive (RFC 3339, e.g. 2026-01-01T00:00:00Z); by
    /// default today's midnight UTC.
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub end: Option<DateTime<Utc>>,
    /// Days of history before --end.
    #[arg(
        long,
        default_value_t = 365,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DEMO_DAYS))
    )]
    pub days: u32,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Accepts a log filter only if `tracing`'s `EnvFilter` parses it (a typo would
/// otherwise silently log at another level).
fn parse_log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{e}: e.g. `info` or `warn,crm_comms=debug`"))
}

/// Parses an RFC 3339 time (any offset) as UTC.
fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}: expected RFC 3339, e.g. 2026-01-01T00:00:00Z"))
}

/// Server settings. `Debug` shows the database URL only redacted.
#[derive(Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long,
        env = "CRM_LISTEN",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub listen: SocketAddr,
    /// `sqlite://PATH` (embedded, default) or `mysql://user:pass@host:port/db`.
    /// `--help` does not show the environment's value (it may hold a password).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://crm.db",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,
    /// A MariaDB replica (asynchronous replication of `--database-url`) for reports,
    /// listings, Get reads and timeline history; MySQL only, may list several hosts.
    #[arg(
        long,
        env = "CRM_READ_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub read_database_url: Option<String>,
    /// Seconds the replica may lag the primary before reads go to the primary.
    #[arg(
        long,
        env = "CRM_READ_MAX_LAG_SECS",
        default_value_t = 5,
        global = true
    )]
    pub read_max_lag_secs: u64,
    /// Most pooled database connections.
    #[arg(
        long,
        env = "CRM_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,
    /// Seconds a request waits for a database connection before UNAVAILABLE.
    #[arg(
        long,
        env = "CRM_DB_ACQUIRE_TIMEOUT_SECS",
        default_value_t = 5,
        global = true
    )]
    pub db_acquire_timeout_secs: u64,
    /// MiB of an SQLite database file each connection maps and reads in place (SQLite's
    /// `mmap_size`); 0 reads every page with a system call instead.
    #[arg(
        long,
        env = "CRM_SQLITE_MMAP_MIB",
        default_value_t = crate::db::SQLITE_MMAP_BYTES >> 20,
        global = true
    )]
    pub sqlite_mmap_mib: u64,
    /// Most concurrently open `StreamTimeline` follow streams.
    #[arg(
        long,
        env = "CRM_MAX_FOLLOW_STREAMS",
        default_value_t = 256,
        global = true
    )]
    pub max_follow_streams: usize,
    /// Tasks storing LogCommunication batches: one writes while the others gather the
    /// next calls. Fewer make larger batches (fewer statements per call), more overlap
    /// more round trips.
    #[arg(
        long,
        env = "CRM_LOG_WRITERS",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=64),
        global = true
    )]
    pub log_writers: u16,
    /// Most concurrent HTTP/2 streams per client connection.
    #[arg(
        long,
        env = "CRM_MAX_CONCURRENT_STREAMS",
        default_value_t = 256,
        global = true
    )]
    pub max_concurrent_streams: u32,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    #[arg(
        long,
        env = "CRM_SHUTDOWN_GRACE_SECS",
        default_value_t = 10,
        global = true
    )]
    pub shutdown_grace_secs: u64,
    /// Schema migrations at start: `auto` applies pending ones (under a lock, so servers
    /// starting together on one database or cluster take turns), `check` refuses to
    /// start while any is pending, `skip` neither checks nor applies (for an account
    /// with only SELECT, INSERT, UPDATE and DELETE rights; run `crm-comms migrate` with
    /// a DDL account first).
    #[arg(
        long,
        env = "CRM_MIGRATIONS",
        value_enum,
        default_value_t = crate::db::migrate::MigrationsMode::Auto,
        global = true
    )]
    pub migrations: crate::db::migrate::MigrationsMode,
    /// Whether reports read the rollups (pre-aggregated counts) where they answer
    /// exactly; `false` reads every row from the base table (to verify the rollups).
    #[arg(
        long,
        env = "CRM_REPORT_ROLLUPS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub report_rollups: bool,
    /// Whether content reports answer keywords and top terms from an in-memory index of
    /// every communication's content (loaded at start, kept current; costs memory:
    /// about 30 bytes per communication on typical texts); `false` scans the rows in
    /// scope each time.
    #[arg(
        long,
        env = "CRM_CONTENT_INDEX",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub content_index: bool,
    /// Where the content index keeps its snapshot (written at shutdown and every few
    /// minutes while it changes, read at start so the index is ready in seconds instead
    /// of reading every row): a directory, or `off`. By default beside an SQLite
    /// database file (`crm.db` -> `crm.db.content-index`), and none for MySQL.
    #[arg(
        long,
        env = "CRM_INDEX_SNAPSHOT_DIR",
        value_name = "DIR|off",
        global = true
    )]
    pub index_snapshot_dir: Option<PathBuf>,
    /// Region whose numbering plan applies to phone numbers written without a country
    /// code: a two-letter CLDR code that libphonenumber knows (CN, HK, TW, US, GB, ...);
    /// anything else is refused at start. Phones are stored in E.164; rows stored before
    /// are converted once per region at start.
    #[arg(long, env = "CRM_PHONE_REGION", default_value = "CN", global = true)]
    pub phone_region: crate::model::phone::PhoneRegion,
    /// Tokens file: one `<role> <name> <sha256-hex-of-token>` per line, `#` comments
    /// (see `token new`); reloaded on SIGHUP. Without it every caller is anonymous with
    /// every right, and the server listens on loopback addresses only.
    #[arg(
        long,
        env = "CRM_AUTH_TOKENS_FILE",
        global = true,
        help_heading = "Security"
    )]
    pub auth_tokens_file: Option<PathBuf>,
    /// Accept a tokens file without any token (every caller refused) at start and on
    /// SIGHUP; without it such a file is refused, as a malformed one is.
    #[arg(
        long,
        env = "CRM_ALLOW_EMPTY_TOKENS",
        global = true,
        help_heading = "Security"
    )]
    pub allow_empty_tokens: bool,
    /// TLS certificate chain (PEM); with --tls-key, the server speaks TLS only.
    /// Reloaded on SIGHUP.
    #[arg(long, env = "CRM_TLS_CERT", global = true, help_heading = "Security")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "CRM_TLS_KEY", global = true, help_heading = "Security")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) for mutual TLS: clients must present a certificate signed
    /// by one; its subject names the caller in the log and the audit trail.
    #[arg(
        long,
        env = "CRM_TLS_CLIENT_CA",
        global = true,
        help_heading = "Security"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve on a non-loopback address without tokens and TLS (refused otherwise);
    /// warns at start and every hour.
    #[arg(long, env = "CRM_INSECURE", global = true, help_heading = "Security")]
    pub insecure: bool,
    /// Calls in flight at most (health and reflection aside); past it calls are refused
    /// at once with RESOURCE_EXHAUSTED rather than queued.
    #[arg(
        long,
        env = "CRM_MAX_IN_FLIGHT",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000),
        global = true,
        help_heading = "Limits"
    )]
    pub max_in_flight: u32,
    /// Calls in flight at most from one client connection; past it that connection's
    /// calls are refused with RESOURCE_EXHAUSTED `CONNECTION_OVERLOADED`. Default: a
    /// quarter of --max-in-flight (at least 1).
    #[arg(
        long,
        env = "CRM_MAX_IN_FLIGHT_PER_CONNECTION",
        value_parser = clap::value_parser!(u32).range(1..=1_000_000),
        global = true,
        help_heading = "Limits"
    )]
    pub max_in_flight_per_connection: Option<u32>,
    /// Calls in flight at most for one caller (token name; only with a tokens file),
    /// over all its connections; past it RESOURCE_EXHAUSTED `CALLER_OVERLOADED`.
    /// Default: half of --max-in-flight (at least 1).
    #[arg(
        long,
        env = "CRM_MAX_IN_FLIGHT_PER_CALLER",
        value_parser = clap::value_parser!(u32).range(1..=1_000_000),
        global = true,
        help_heading = "Limits"
    )]
    pub max_in_flight_per_caller: Option<u32>,
    /// Seconds a request may take from its headers to the end of its body (every call
    /// but client streams); past it the call ends with DEADLINE_EXCEEDED
    /// `REQUEST_BODY_TIMEOUT`. Until its body is complete a call holds no in-flight slot.
    #[arg(
        long,
        env = "CRM_REQUEST_BODY_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600),
        global = true,
        help_heading = "Limits"
    )]
    pub request_body_timeout_secs: u64,
    /// Calls per second per caller (token name; client IP without tokens), on average;
    /// 0 turns the limit off.
    #[arg(
        long,
        env = "CRM_RATE_LIMIT",
        default_value_t = 1000,
        global = true,
        help_heading = "Limits"
    )]
    pub rate_limit: u32,
    /// Calls a caller may make at once above the rate (the bucket's size).
    #[arg(
        long,
        env = "CRM_RATE_LIMIT_BURST",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true,
        help_heading = "Limits"
    )]
    pub rate_limit_burst: u32,
    /// Largest request message, in bytes; larger ones are refused with
    /// RESOURCE_EXHAUSTED from their header, before they are read.
    #[arg(
        long,
        env = "CRM_MAX_REQUEST_BYTES",
        default_value_t = 4 << 20,
        value_parser = clap::value_parser!(u32).range(1024..=(64 << 20)),
        global = true,
        help_heading = "Limits"
    )]
    pub max_request_bytes: u32,
    /// Largest HTTP/2 header list (metadata) of a request, in bytes.
    #[arg(
        long,
        env = "CRM_MAX_HEADER_LIST_BYTES",
        default_value_t = 16 << 10,
        value_parser = clap::value_parser!(u32).range(1024..=(1 << 20)),
        global = true,
        help_heading = "Limits"
    )]
    pub max_header_list_bytes: u32,
    /// Seconds between HTTP/2 pings on an idle connection; a peer that does not answer
    /// within --http2-keepalive-timeout-secs is disconnected.
    #[arg(
        long,
        env = "CRM_HTTP2_KEEPALIVE_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true,
        help_heading = "Limits"
    )]
    pub http2_keepalive_secs: u64,
    /// Seconds a keepalive ping may go unanswered.
    #[arg(
        long,
        env = "CRM_HTTP2_KEEPALIVE_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true,
        help_heading = "Limits"
    )]
    pub http2_keepalive_timeout_secs: u64,
    /// Seconds a stream may stall: a timeline whose client reads nothing for this long
    /// is ended (its follow slot freed), and so is an import that sends nothing.
    #[arg(
        long,
        env = "CRM_STREAM_IDLE_SECS",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true,
        help_heading = "Limits"
    )]
    pub stream_idle_secs: u64,
    /// Address of the Prometheus metrics listener (`/metrics`, text format), e.g.
    /// `127.0.0.1:9100`; off when not given.
    #[arg(
        long,
        env = "CRM_METRICS_LISTEN",
        global = true,
        help_heading = "Operations"
    )]
    pub metrics_listen: Option<SocketAddr>,
    /// OTLP/gRPC endpoint (an OpenTelemetry collector) to export traces to, e.g.
    /// `http://127.0.0.1:4317`; when unset, the standard OTEL_EXPORTER_OTLP_ENDPOINT is
    /// used, and without either no trace is made. One span per call, under the caller's
    /// W3C `traceparent`, with a child per database statement.
    #[arg(
        long,
        env = "CRM_OTLP_ENDPOINT",
        global = true,
        help_heading = "Operations"
    )]
    pub otlp_endpoint: Option<String>,
    /// Also serve gRPC-Web (HTTP/1.1 and HTTP/2) for browser tools; cross-origin calls
    /// stay refused unless --grpc-web-allow-origin names the origin.
    #[arg(long, env = "CRM_GRPC_WEB", global = true, help_heading = "Operations")]
    pub grpc_web: bool,
    /// Origins allowed to call gRPC-Web from a browser (CORS), e.g.
    /// `https://admin.example.com`; repeat or comma-separate; `*` allows any.
    #[arg(
        long,
        env = "CRM_GRPC_WEB_ALLOW_ORIGIN",
        value_delimiter = ',',
        global = true,
        help_heading = "Operations"
    )]
    pub grpc_web_allow_origin: Vec<String>,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info` or `warn,crm_comms=debug`);
    /// a filter that does not parse is refused at start.
    #[arg(long, env = "RUST_LOG", default_value = "info", value_parser = parse_log_filter, global = true)]
    pub log: String,
    /// Log format: `text` (coloured only on a terminal, and never with NO_COLOR set) or
    /// `json` (one object per line).
    #[arg(long, env = "CRM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &crate::db::redact(&self.database_url))
            .field(
                "read_database_url",
                &self.read_database_url.as_deref().map(crate::db::redact),
            )
            .field("read_max_lag_secs", &self.read_max_lag_secs)
            .field("db_max_connections", &self.db_max_connections)
            .field("db_acquire_timeout_secs", &self.db_acquire_timeout_secs)
            .field("sqlite_mmap_mib", &self.sqlite_mmap_mib)
            .field("max_follow_streams", &self.max_follow_streams)
            .field("log_writers", &self.log_writers)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("migrations", &self.migrations)
            .field("report_rollups", &self.report_rollups)
            .field("content_index", &self.content_index)
            .field("index_snapshot_dir", &self.index_snapshot_dir)
            .field("phone_region", &self.phone_region)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .field("metrics_listen", &self.metrics_listen)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("grpc_web", &self.grpc_web)
            .field("grpc_web_allow_origin", &self.grpc_web_allow_origin)
            .field("auth_tokens_file", &self.auth_tokens_file)
            .field("allow_empty_tokens", &self.allow_empty_tokens)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("insecure", &self.insecure)
            .field("max_in_flight", &self.max_in_flight)
            .field(
                "max_in_flight_per_connection",
                &self.max_in_flight_per_connection,
            )
            .field("max_in_flight_per_caller", &self.max_in_flight_per_caller)
            .field("request_body_timeout_secs", &self.request_body_timeout_secs)
            .field("rate_limit", &self.rate_limit)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_header_list_bytes", &self.max_header_list_bytes)
            .field("http2_keepalive_secs", &self.http2_keepalive_secs)
            .field(
                "http2_keepalive_timeout_secs",
                &self.http2_keepalive_timeout_secs,
            )
            .field("stream_idle_secs", &self.stream_idle_secs)
            .finish()
    }
}

impl Config {
    /// Settings for tests and embedding: the defaults with this listen address and URL.
    pub fn new(listen: SocketAddr, database_url: impl Into<String>) -> Self {
        Config {
            listen,
            database_url: database_url.into(),
            read_database_url: None,
            read_max_lag_secs: 5,
            db_max_connections: 16,
            db_acquire_timeout_secs: 5,
            sqlite_mmap_mib: crate::db::SQLITE_MMAP_BYTES >> 20,
            max_follow_streams: 256,
            log_writers: 4,
            max_concurrent_streams: 256,
            shutdown_grace_secs: 10,
            migrations: crate::db::migrate::MigrationsMode::Auto,
            report_rollups: true,
            content_index: true,
            index_snapshot_dir: None,
            phone_region: crate::model::phone::PhoneRegion::default(),
            log: "info".into(),
            log_format: LogFormat::Text,
            metrics_listen: None,
            otlp_endpoint: None,
            grpc_web: false,
            grpc_web_allow_origin: Vec::new(),
            auth_tokens_file: None,
            allow_empty_tokens: false,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            insecure: false,
            max_in_flight: 256,
            max_in_flight_per_connection: None,
            max_in_flight_per_caller: None,
            request_body_timeout_secs: 10,
            rate_limit: 1000,
            rate_limit_burst: 2000,
            max_request_bytes: 4 << 20,
            max_header_list_bytes: 16 << 10,
            http2_keepalive_secs: 30,
            http2_keepalive_timeout_secs: 10,
            stream_idle_secs: 120,
        }
    }

    /// How long a stream may stall (see `--stream-idle-secs`).
    pub fn stream_idle(&self) -> Duration {
        Duration::from_secs(self.stream_idle_secs.max(1))
    }

    /// Calls in flight at most per client connection (see
    /// `--max-in-flight-per-connection`).
    pub fn in_flight_per_connection(&self) -> usize {
        let share = self
            .max_in_flight_per_connection
            .unwrap_or(self.max_in_flight / 4);
        share.clamp(1, self.max_in_flight.max(1)) as usize
    }

    /// Calls in flight at most per caller (see `--max-in-flight-per-caller`).
    pub fn in_flight_per_caller(&self) -> usize {
        let share = self
            .max_in_flight_per_caller
            .unwrap_or(self.max_in_flight / 2);
        share.clamp(1, self.max_in_flight.max(1)) as usize
    }

    /// How long a request body may take (see `--request-body-timeout-secs`).
    pub fn request_body_timeout(&self) -> Duration {
        Duration::from_secs(self.request_body_timeout_secs.max(1))
    }

    /// Where the content index's snapshot lives (see `--index-snapshot-dir`); `None`
    /// when there is none.
    pub fn index_snapshot(&self) -> Option<crate::service::content_index::SnapshotFile> {
        use crate::service::content_index::SnapshotFile;
        match &self.index_snapshot_dir {
            Some(dir) if dir.as_os_str() == "off" => None,
            Some(dir) => Some(SnapshotFile::InDirectory(dir.clone())),
            None => match crate::db::DatabaseUrl::parse(&self.database_url) {
                Ok(crate::db::DatabaseUrl::Sqlite(path)) if !path.starts_with(':') => Some(
                    SnapshotFile::At(PathBuf::from(format!("{path}.content-index"))),
                ),
                _ => None,
            },
        }
    }

    /// The pool settings.
    pub fn pool_options(&self) -> crate::db::PoolOptions {
        crate::db::PoolOptions {
            max_connections: self.db_max_connections.max(1),
            acquire_timeout: Duration::from_secs(self.db_acquire_timeout_secs.max(1)),
            sqlite_mmap_bytes: self.sqlite_mmap_mib.saturating_mul(1 << 20),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn config_debug_redacts_the_database_url() {
        let config = Config::new("127.0.0.1:1".parse().unwrap(), "mysql://app:hunter2@db/crm");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("mysql://app:***@db/crm"), "{shown}");
    }

    #[test]
    fn seed_demo_takes_sizes_within_limits_and_an_rfc3339_end() {
        let cli = Cli::try_parse_from([
            "crm-comms",
            "seed-demo",
            "--customers",
            "30",
            "--end",
            "2026-01-01T08:00:00+08:00",
        ])
        .unwrap();
        let Some(Command::SeedDemo(args)) = cli.command else {
            panic!("{cli:?}");
        };
        assert_eq!(
            (args.customers, args.communications, args.seed, args.days),
            (30, 20_000, 42, 365)
        );
        assert_eq!(args.end.unwrap().to_rfc3339(), "2026-01-01T00:00:00+00:00");
        for bad in [
            &["--communications", "100000001"][..],
            &["--customers", "0"],
            &["--days", "0"],
            &["--end", "2026-01-01"],
        ] {
            let err =
                Cli::try_parse_from(["crm-comms", "seed-demo"].iter().chain(bad)).unwrap_err();
            assert!(err.to_string().contains(bad[0]), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_index_snapshot_sits_beside_an_sqlite_file_unless_configured() {
        use crate::service::content_index::SnapshotFile;
        let at = |url: &str, dir: Option<&str>| {
            let mut config = Config::new("127.0.0.1:1".parse().unwrap(), url);
            config.index_snapshot_dir = dir.map(PathBuf::from);
            config.index_snapshot()
        };
        assert_eq!(
            at("sqlite:///var/lib/crm.db", None),
            Some(SnapshotFile::At("/var/lib/crm.db.content-index".into()))
        );
        assert_eq!(at("sqlite::memory:", None), None);
        assert_eq!(at("mysql://app@db/crm", None), None);
        assert_eq!(
            at("mysql://app@db/crm", Some("/var/cache/crm")),
            Some(SnapshotFile::InDirectory("/var/cache/crm".into()))
        );
        assert_eq!(at("sqlite:///var/lib/crm.db", Some("off")), None);
    }

    #[test]
    fn log_writers_take_one_to_sixty_four() {
        let cli = Cli::try_parse_from(["crm-comms", "--log-writers", "1"]).unwrap();
        assert_eq!(cli.config.log_writers, 1);
        for bad in ["0", "65", "many"] {
            let err = Cli::try_parse_from(["crm-comms", "--log-writers", bad]).unwrap_err();
            assert!(err.to_string().contains("--log-writers"), "{bad}: {err}");
        }
    }

    #[test]
    fn phone_region_defaults_to_china_and_refuses_unknown_regions() {
        let cli = Cli::try_parse_from(["crm-comms"]).unwrap();
        assert_eq!(cli.config.phone_region.to_string(), "CN");
        let cli = Cli::try_parse_from(["crm-comms", "--phone-region", "hk"]).unwrap();
        assert_eq!(cli.config.phone_region.to_string(), "HK");
        for bad in ["ZZ", "china", ""] {
            let err = Cli::try_parse_from(["crm-comms", "--phone-region", bad]).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("--phone-region") && text.contains("CLDR"),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn help_never_shows_the_database_url_from_the_environment() {
        let cmd = Cli::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "database_url")
            .unwrap();
        assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new("DATABASE_URL")));
        assert!(arg.is_hide_env_values_set());
    }
}

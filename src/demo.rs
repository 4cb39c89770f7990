//! The `seed-demo` command: fills a fresh database with a realistic, deterministic demo
//! dataset through the storage functions the gRPC handlers use (never raw SQL). It is
//! part of the binary only; the server's library does not carry the generator.
//!
//! [`generate`] plans the data (pure, unit-tested), [`people`] and [`texts`] hold its
//! names and words, [`rng`] its random numbers. [`seed`] drives the writes in three
//! phases (customers; orders and service tickets; communications, in import batches)
//! and reports progress through [`Progress`], which the binary draws as progress bars.

pub mod generate;
pub mod people;
pub mod rng;
pub mod texts;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;

use crm_comms::db::communications::{self, BatchOutcome, CommunicationInsertForm};
use crm_comms::db::customers;
use crm_comms::db::{tickets, transactions, Db};
use crm_comms::error::{Error, Result};
use crm_comms::model::caller::Caller;
use generate::{Plan, KEY_CUSTOMERS};

/// Most customers a demo may create (the command line's limit).
pub const MAX_CUSTOMERS: u32 = crm_comms::config::MAX_DEMO_CUSTOMERS;
// Every customer index fits in a communication key.
const _: () = assert!(MAX_CUSTOMERS as u64 <= KEY_CUSTOMERS);

/// Most communications a demo may write (the command line's limit).
pub const MAX_COMMUNICATIONS: u64 = crm_comms::config::MAX_DEMO_COMMUNICATIONS;
/// Longest range, in days (the command line's limit).
pub const MAX_DAYS: u32 = crm_comms::config::MAX_DEMO_DAYS;
/// Communications per `insert_batch` call (one multi-row INSERT, one transaction).
pub const BATCH_ROWS: usize = 2_000;

/// What to generate. The same spec gives the same data, row for row, on either
/// database: the ids and every stored value (record times are simulated too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSpec {
    /// Customers to create (1..=[`MAX_CUSTOMERS`]); orders and tickets scale with them.
    pub customers: u32,
    /// Communications to write (0..=[`MAX_COMMUNICATIONS`]).
    pub communications: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// End of the range (exclusive, UTC); nothing happens at or after it.
    pub end: NaiveDateTime,
    /// Length of the range in days, ending at `end` (1..=[`MAX_DAYS`]).
    pub days: u32,
}

impl DemoSpec {
    /// Midnight UTC of `now`'s day: the default `end`.
    pub fn default_end(now: NaiveDateTime) -> NaiveDateTime {
        now.date().and_time(chrono::NaiveTime::MIN)
    }

    /// Checks the sizes and the range; every problem is reported. The range must start
    /// in 2000 or later and end at most a day after `now`, as the API accepts.
    pub fn check(&self, now: NaiveDateTime) -> Result<()> {
        let mut violations = crm_comms::error::Violations::new();
        if !(1..=MAX_CUSTOMERS).contains(&self.customers) {
            violations.add(
                "customers",
                format!(
                    "must be between 1 and {MAX_CUSTOMERS} (got {})",
                    self.customers
                ),
            );
        }
        if self.communications > MAX_COMMUNICATIONS {
            violations.add(
                "communications",
                format!(
                    "must be at most {MAX_COMMUNICATIONS} (got {})",
                    self.communications
                ),
            );
        }
        if !(1..=MAX_DAYS).contains(&self.days) {
            violations.add(
                "days",
                format!("must be between 1 and {MAX_DAYS} (got {})", self.days),
            );
        }
        if self.end > now + chrono::Duration::days(1) {
            violations.add("end", "must not be more than one day in the future");
        }
        let earliest = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap_or(NaiveDateTime::MIN);
        if self.end - chrono::Duration::days(i64::from(self.days.min(MAX_DAYS))) < earliest {
            violations.add("end", "the range must start in 2000 or later");
        }
        violations.finish(())
    }
}

/// The phases of a demo seeding, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Creating customers.
    Customers,
    /// Creating orders (transactions) and service tickets.
    OrdersAndTickets,
    /// Importing communications.
    Communications,
}

impl Phase {
    /// A short label for progress output.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Customers => "customers",
            Phase::OrdersAndTickets => "orders+tickets",
            Phase::Communications => "communications",
        }
    }
}

/// Receives the progress of a seeding (the binary draws progress bars).
pub trait Progress {
    /// `phase` starts and will write `total` rows.
    fn start(&mut self, phase: Phase, total: u64);
    /// `rows` more rows of the current phase are written.
    fn advance(&mut self, rows: u64);
    /// The current phase is done.
    fn finish(&mut self, report: &PhaseReport);
}

/// What one phase wrote and how long it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseReport {
    /// The phase.
    pub phase: Phase,
    /// Rows written.
    pub rows: u64,
    /// Wall time, generation included.
    pub elapsed: Duration,
}

/// Rows per second of `rows` written in `elapsed`.
fn rate(rows: u64, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64().max(1e-9)
}

impl PhaseReport {
    /// Rows per second.
    pub fn rate(&self) -> f64 {
        rate(self.rows, self.elapsed)
    }
}

/// What a seeding wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeedReport {
    /// Customers created.
    pub customers: u64,
    /// Transactions (orders) created.
    pub orders: u64,
    /// Service tickets created.
    pub tickets: u64,
    /// Communications written.
    pub communications: u64,
    /// Each phase, in order.
    pub phases: Vec<PhaseReport>,
}

impl SeedReport {
    /// Every row written.
    pub fn rows(&self) -> u64 {
        self.customers + self.orders + self.tickets + self.communications
    }

    /// Wall time of all phases.
    pub fn elapsed(&self) -> Duration {
        self.phases.iter().map(|p| p.elapsed).sum()
    }

    /// Rows per second over all phases.
    pub fn rate(&self) -> f64 {
        rate(self.rows(), self.elapsed())
    }
}

/// Customers the database holds (not deleted), counted through the listing.
/// Rows of `table`, deleted customers included (a soft-deleted customer is still data).
async fn count_rows(db: &Db, table: &str) -> Result<u64> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    // raw SQL: table named at run time
    let sql = crm_comms::db::query::Sql::from(&*format!("SELECT COUNT(*) AS n FROM {table}"));
    let rows: Vec<Count> = crm_comms::db::query::load(db, &sql).await?;
    Ok(<[Count]>::first(&rows).map_or(0, |c| c.n.max(0) as u64))
}

/// Fills `db` with the demo dataset of `spec`, reporting to `progress`. Refuses
/// (FAILED_PRECONDITION, reason `DATABASE_NOT_EMPTY`) a database that already holds
/// customers (deleted ones too) or communications: demo rows never mix with real ones.
pub async fn seed(db: &Db, spec: &DemoSpec, progress: &mut dyn Progress) -> Result<SeedReport> {
    spec.check(crm_comms::model::time::now())?;
    let existing = count_rows(db, "customers").await?;
    let communications = count_rows(db, "communications").await?;
    if existing > 0 || communications > 0 {
        let noun = if existing == 1 {
            "customer"
        } else {
            "customers"
        };
        return Err(Error::FailedPrecondition {
            reason: crm_comms::error::Reason::DatabaseNotEmpty,
            message: format!(
                "the database already holds {existing} {noun} (deleted ones included) and \
                 {communications} communications; demo data goes only into a fresh database \
                 (a new SQLite file or an empty MySQL database)"
            ),
        });
    }
    let plan = {
        let spec = spec.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || Plan::new(&spec))
                .await
                .map_err(|e| Error::Internal(format!("demo planner failed: {e}")))?,
        )
    };
    let mut report = SeedReport::default();

    let started = phase_start(progress, Phase::Customers, plan.customers.len());
    let mut ids = Vec::with_capacity(plan.customers.len());
    for (i, c) in plan.customers.iter().enumerate() {
        let stored = customers::create(db, &plan.customer_form(i), c.created, &SEEDER).await?;
        ids.push(stored.row.id);
        progress.advance(1);
    }
    report.customers = ids.len() as u64;
    let rows = report.customers;
    phase_end(progress, &mut report, Phase::Customers, started, rows);

    let started = phase_start(
        progress,
        Phase::OrdersAndTickets,
        plan.orders.len() + plan.tickets.len(),
    );
    for k in 0..plan.orders.len() {
        transactions::create(db, &plan.transaction_form(k, &ids), &SEEDER).await?;
        progress.advance(1);
    }
    for k in 0..plan.tickets.len() {
        tickets::create(db, &plan.ticket_form(k, &ids), &SEEDER).await?;
        progress.advance(1);
    }
    report.orders = plan.orders.len() as u64;
    report.tickets = plan.tickets.len() as u64;
    let rows = report.orders + report.tickets;
    phase_end(
        progress,
        &mut report,
        Phase::OrdersAndTickets,
        started,
        rows,
    );

    let started = phase_start(
        progress,
        Phase::Communications,
        plan.communications as usize,
    );
    report.communications = write_communications(db, plan, ids, progress).await?;
    let rows = report.communications;
    phase_end(progress, &mut report, Phase::Communications, started, rows);
    // A bulk load of history: fold the rollup shards it wrote now, rather than leave
    // them to the first server's compactor.
    crm_comms::service::maintenance::compact_now(db).await?;
    Ok(report)
}

fn phase_start(progress: &mut dyn Progress, phase: Phase, total: usize) -> Instant {
    progress.start(phase, total as u64);
    Instant::now()
}

fn phase_end(
    progress: &mut dyn Progress,
    report: &mut SeedReport,
    phase: Phase,
    started: Instant,
    rows: u64,
) {
    let done = PhaseReport {
        phase,
        rows,
        elapsed: started.elapsed(),
    };
    progress.finish(&done);
    report.phases.push(done);
}

/// The seeder's name in the audit trail.
static SEEDER: std::sync::LazyLock<Caller> =
    std::sync::LazyLock::new(|| Caller::system("seed-demo"));

/// Writes every planned communication through the import path, in batches of
/// [`BATCH_ROWS`]: the next batch is generated while the previous one is written.
async fn write_communications(
    db: &Db,
    plan: Arc<Plan>,
    ids: Vec<i64>,
    progress: &mut dyn Progress,
) -> Result<u64> {
    let keys = {
        let plan = Arc::clone(&plan);
        tokio::task::spawn_blocking(move || plan.communication_keys())
            .await
            .map_err(|e| Error::Internal(format!("demo planner failed: {e}")))?
    };
    let mut written = 0u64;
    let mut pending: Option<tokio::task::JoinHandle<Result<Vec<BatchOutcome>>>> = None;
    for (b, chunk) in keys.chunks(BATCH_ROWS).enumerate() {
        let first = (b * BATCH_ROWS) as u64;
        let forms: Vec<CommunicationInsertForm> = chunk
            .iter()
            .enumerate()
            .map(|(j, &key)| plan.communication(first + j as u64, key, &ids))
            .collect();
        if let Some(batch) = pending.take() {
            let n = stored(batch).await?;
            written += n;
            progress.advance(n);
        }
        let db = db.clone();
        pending = Some(tokio::spawn(async move {
            communications::insert_batch(&db, forms, &SEEDER).await
        }));
    }
    if let Some(batch) = pending {
        let n = stored(batch).await?;
        written += n;
        progress.advance(n);
    }
    Ok(written)
}

/// How many rows a written batch stored; every one must have been (the customers
/// were created just before, and demo rows carry no idempotency keys).
async fn stored(batch: tokio::task::JoinHandle<Result<Vec<BatchOutcome>>>) -> Result<u64> {
    let outcomes = batch
        .await
        .map_err(|e| Error::Internal(format!("demo writer failed: {e}")))??;
    match outcomes.iter().find(|o| **o != BatchOutcome::Stored) {
        Some(o) => Err(Error::Internal(format!(
            "a demo communication was not stored ({o:?}): was a customer deleted while seeding?"
        ))),
        None => Ok(outcomes.len() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(h, 0, 0))
            .unwrap_or_default()
    }

    fn spec() -> DemoSpec {
        DemoSpec {
            customers: 200,
            communications: 20_000,
            seed: 42,
            end: at(2026, 1, 1, 0),
            days: 365,
        }
    }

    #[test]
    fn the_default_end_is_todays_midnight_utc() {
        assert_eq!(
            DemoSpec::default_end(at(2026, 11, 25, 23)),
            at(2026, 11, 25, 0)
        );
    }

    #[test]
    fn sizes_and_ranges_are_checked_all_at_once() {
        let now = at(2026, 11, 25, 12);
        assert!(spec().check(now).is_ok());
        let max = DemoSpec {
            customers: MAX_CUSTOMERS,
            communications: MAX_COMMUNICATIONS,
            days: MAX_DAYS,
            ..spec()
        };
        assert!(max.check(now).is_ok());
        let bad = DemoSpec {
            customers: 0,
            communications: MAX_COMMUNICATIONS + 1,
            days: 0,
            end: at(2026, 11, 27, 0),
            ..spec()
        };
        let Err(Error::InvalidArgument(v)) = bad.check(now) else {
            panic!("accepted {bad:?}");
        };
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["customers", "communications", "days", "end"]);
        assert!(v[1].description.contains("at most 100000000"), "{v:?}");
        let early = DemoSpec {
            end: at(2001, 1, 1, 0),
            days: 400,
            ..spec()
        };
        assert!(early.check(now).is_err());
    }

    #[test]
    fn reports_add_up() {
        let phase = |phase, rows, ms| PhaseReport {
            phase,
            rows,
            elapsed: Duration::from_millis(ms),
        };
        let report = SeedReport {
            customers: 10,
            orders: 20,
            tickets: 5,
            communications: 965,
            phases: vec![
                phase(Phase::Customers, 10, 100),
                phase(Phase::OrdersAndTickets, 25, 400),
                phase(Phase::Communications, 965, 500),
            ],
        };
        assert_eq!(report.rows(), 1000);
        assert_eq!(report.elapsed(), Duration::from_secs(1));
        assert!((report.rate() - 1000.0).abs() < 1e-6);
        assert!((report.phases[0].rate() - 100.0).abs() < 1e-6);
    }
}

//! Trace spans for database statements: diesel's connection instrumentation opens a
//! child of the caller's current `tracing` span per statement, once traces are exported.
//! On a pooled MySQL connection the same instrumentation also notes when its last
//! statement succeeded, so that the pool's check-out ping can be skipped right after one
//! ([`answered_within`]).
//!
//! Off (the default), no span is opened and nothing is measured; a pooled MySQL
//! connection only notes the time of each successful statement.
//! On, each statement run inside a span (an RPC's, see `server::otel`) becomes a
//! `db.statement` span with `db.system`, the SQL text without its bind values, and the
//! error if the statement failed. Statements run outside any span (background work
//! such as the compactor, or the pool opening a connection) are not traced: they would
//! each start a trace of their own. SQLite runs its statements on the blocking pool;
//! [`SpanCarrying`] takes the caller's span there.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::{sync_connection_wrapper::SpawnBlocking, AsyncConnection};
use futures_util::{future::BoxFuture, FutureExt, TryFutureExt};
use tracing::{field::Empty, Span};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns statement spans on for connections opened from now on (once traces are
/// exported; there is no way back for the life of the process).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether statement spans are on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Registers statement spans on a new pooled connection of `system` (`mysql` or
/// `sqlite`) when they are on; leaves the connection untouched otherwise.
pub fn trace_statements<C: AsyncConnection>(conn: &mut C, system: &'static str) {
    if enabled() {
        conn.set_instrumentation(StatementSpans::new(system, true));
    }
}

/// The instrumentation of a new pooled connection that the pool's setup future opened:
/// statement spans when they are on, and the time of its last successful statement
/// always (see [`answered_within`]).
pub fn traced<C: AsyncConnection>(
    conn: diesel::ConnectionResult<C>,
    system: &'static str,
) -> diesel::ConnectionResult<C> {
    conn.map(|mut conn| {
        conn.set_instrumentation(StatementSpans::new(system, enabled()));
        conn
    })
}

/// Whether `conn`'s last statement succeeded less than `window` ago (false for a
/// connection without [`traced`]'s instrumentation).
pub fn answered_within<C: AsyncConnection>(conn: &mut C, window: Duration) -> bool {
    conn.instrumentation()
        .downcast_ref::<StatementSpans>()
        .and_then(|s| s.answered)
        .is_some_and(|at| at.elapsed() < window)
}

/// The instrumentation behind [`trace_statements`] and [`traced`]: one span per
/// statement, open from `StartQuery` to `FinishQuery`, when `spans` is set; and when
/// the last statement succeeded.
struct StatementSpans {
    system: &'static str,
    spans: bool,
    /// The statement running now (a connection runs one at a time). One whose future
    /// was dropped mid-way ends when the next one starts.
    open: Option<Span>,
    /// When the last statement finished without an error.
    answered: Option<Instant>,
}

impl StatementSpans {
    fn new(system: &'static str, spans: bool) -> Self {
        Self {
            system,
            spans,
            open: None,
            answered: None,
        }
    }
}

impl Instrumentation for StatementSpans {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { .. } if !self.spans => {}
            InstrumentationEvent::StartQuery { query, .. } => {
                self.open = None;
                let parent = Span::current();
                if parent.is_none() {
                    return;
                }
                let text = sql_of(query);
                let sql = statement_text(&text);
                self.open = Some(tracing::info_span!(
                    parent: &parent,
                    "db.statement",
                    otel.name = operation(sql),
                    otel.kind = "client",
                    otel.status_code = Empty,
                    otel.status_description = Empty,
                    db.system = self.system,
                    db.statement = sql,
                ));
            }
            InstrumentationEvent::FinishQuery { error, .. } => {
                if error.is_none() {
                    self.answered = Some(Instant::now());
                }
                if let (Some(span), Some(error)) = (self.open.take(), error) {
                    span.record("otel.status_code", "error");
                    span.record("otel.status_description", tracing::field::display(error));
                }
            }
            _ => {}
        }
    }
}

/// Where diesel's rendering of a statement (`SQL -- binds: [...]`) turns to the bind
/// values: they are customer data and stay out of traces.
const BINDS: &str = " -- binds: ";

/// diesel's rendering of `query`, cut off before the bind values are even formatted.
fn sql_of<Q: std::fmt::Display + ?Sized>(query: &Q) -> String {
    struct UntilBinds(String);
    impl std::fmt::Write for UntilBinds {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            if s.starts_with(BINDS) {
                return Err(std::fmt::Error);
            }
            self.0.push_str(s);
            Ok(())
        }
    }
    let mut out = UntilBinds(String::new());
    // The error is the cut-off.
    let _ = std::fmt::write(&mut out, format_args!("{query}"));
    out.0
}

/// The SQL of diesel's rendering of a statement, without the bind values.
pub fn statement_text(rendered: &str) -> &str {
    rendered
        .find(BINDS)
        .map_or(rendered, |end| &rendered[..end])
        .trim()
}

/// The statement's first keyword (`SELECT`, `INSERT`, ...), the span's name.
fn operation(sql: &str) -> &str {
    sql.split_whitespace().next().unwrap_or("SQL")
}

/// diesel-async's tokio spawner for the SQLite wrapper, which also runs each blocking
/// statement inside the span current where it was issued (so it nests under its RPC).
/// Like diesel-async's own, dropping the future of a statement still running waits for
/// it, so the connection is never handed out while a statement holds it.
pub struct SpanCarrying(tokio::runtime::Handle);

impl SpawnBlocking for SpanCarrying {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        let span = enabled().then(Span::current);
        let task = move || match span {
            Some(span) => span.in_scope(task),
            None => task(),
        };
        Finishing {
            join: self.0.spawn_blocking(task),
            handle: self.0.clone(),
        }
        .map_err(Box::from)
        .boxed()
    }

    fn get_runtime() -> Self {
        // The pool opens SQLite connections from within the server's runtime.
        SpanCarrying(tokio::runtime::Handle::current())
    }
}

/// A blocking task's result; dropped before the task ended, it waits for the task.
struct Finishing<R> {
    join: tokio::task::JoinHandle<R>,
    handle: tokio::runtime::Handle,
}

impl<R> Future for Finishing<R> {
    type Output = Result<R, tokio::task::JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().join).poll(cx)
    }
}

impl<R> Drop for Finishing<R> {
    fn drop(&mut self) {
        if !self.join.is_finished() {
            let (join, handle) = (&mut self.join, &self.handle);
            tokio::task::block_in_place(|| {
                let _ = handle.block_on(join);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_text_drops_the_bind_values() {
        use crate::db::schema::customers;
        use diesel::prelude::*;
        let query = customers::table
            .filter(customers::name.eq("Ms Secret -- binds: [x]"))
            .select(customers::id);
        let debug = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query);
        let rendered = debug.to_string();
        assert!(rendered.contains("Ms Secret"), "{rendered}");
        for sql in [statement_text(&rendered), &sql_of(&debug)] {
            assert!(sql.starts_with("SELECT"), "{sql}");
            assert!(sql.contains("`customers`"), "{sql}");
            assert!(!sql.contains("Secret") && !sql.contains("binds"), "{sql}");
            assert_eq!(operation(sql), "SELECT");
        }
        assert_eq!(sql_of(&"BEGIN"), "BEGIN");
        assert_eq!(statement_text("BEGIN"), "BEGIN");
    }
}

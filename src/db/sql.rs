//! Hand-built SQL with bound values, for the few statements diesel's DSL cannot say:
//! per-backend epoch arithmetic and MySQL index hints. User input is only ever bound.

use chrono::NaiveDateTime;

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    /// A BIGINT.
    I64(i64),
    /// An INT.
    I32(i32),
    /// A UTC time.
    Time(NaiveDateTime),
}

/// SQL text with its bound values, in placeholder order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sql {
    /// The statement with `?` placeholders.
    pub(crate) text: String,
    /// Values in placeholder order.
    pub(crate) binds: Vec<Bind>,
}

impl Sql {
    /// Appends SQL text.
    pub(crate) fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a `?` and binds `b` to it.
    pub(crate) fn bind(&mut self, b: Bind) -> &mut Self {
        self.text.push('?');
        self.binds.push(b);
        self
    }
}

/// Loads `$row`s of an [`Sql`] on either backend.
macro_rules! load_sql {
    ($db:expr, $sql:expr, $row:ty) => {{
        use diesel::sql_types::{BigInt, Integer, Timestamp};
        use diesel_async::RunQueryDsl;
        use $crate::db::sql::{Bind, Sql};
        let sql: &Sql = $sql;
        $crate::with_conn!($db, |conn| {
            // The backend of the boxed query is inferred from `conn` in each arm.
            let mut q = diesel::sql_query(sql.text.clone()).into_boxed();
            for b in &sql.binds {
                q = match b {
                    Bind::I64(v) => q.bind::<BigInt, _>(*v),
                    Bind::I32(v) => q.bind::<Integer, _>(*v),
                    Bind::Time(v) => q.bind::<Timestamp, _>(*v),
                };
            }
            let rows: Vec<$row> = q.load(conn).await?;
            Ok::<_, $crate::error::Error>(rows)
        })?
    }};
}

pub(crate) use load_sql;

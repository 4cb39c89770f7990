//! [`StoredTime`]: how the long row reads (timelines, the change feed and the content
//! index's load, the database path's gap and content pages) decode a `Timestamp` column.

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::mysql::Mysql;
use diesel::sql_types::Timestamp;
use diesel::sqlite::Sqlite;

use crate::model::time::parse_stored;

/// A `Timestamp` read into a `NaiveDateTime` (a row field's `deserialize_as`). SQLite
/// holds times as text, which diesel reads by trying chrono formats one after another,
/// the costliest part of decoding a long read's rows; the form the service writes is
/// read directly ([`parse_stored`]), anything else by diesel as before. MySQL's binary
/// times are diesel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromSqlRow)]
pub struct StoredTime(NaiveDateTime);

impl From<StoredTime> for NaiveDateTime {
    fn from(t: StoredTime) -> Self {
        t.0
    }
}

impl FromSql<Timestamp, Sqlite> for StoredTime {
    fn from_sql(mut value: <Sqlite as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        if let Some(t) = parse_stored(value.read_text()) {
            return Ok(StoredTime(t));
        }
        <NaiveDateTime as FromSql<Timestamp, Sqlite>>::from_sql(value).map(StoredTime)
    }
}

impl FromSql<Timestamp, Mysql> for StoredTime {
    fn from_sql(value: <Mysql as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        <NaiveDateTime as FromSql<Timestamp, Mysql>>::from_sql(value).map(StoredTime)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use diesel::connection::Connection;
    use diesel::dsl::sql;
    use diesel::{RunQueryDsl, SqliteConnection};

    use super::*;

    /// SQLite's value of `expr` read as a [`StoredTime`] and by diesel's own decoding.
    fn both(conn: &mut SqliteConnection, expr: &str) -> (NaiveDateTime, NaiveDateTime) {
        let ours: StoredTime = diesel::select(sql::<Timestamp>(expr))
            .get_result(conn)
            .unwrap();
        let diesels: NaiveDateTime = diesel::select(sql::<Timestamp>(expr))
            .get_result(conn)
            .unwrap();
        (ours.into(), diesels)
    }

    #[test]
    fn sqlite_times_in_any_form_diesel_reads_decode_as_diesel_decodes_them() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        for expr in [
            // As the service writes them.
            "'2025-03-04 05:06:07'",
            "'2025-03-04 05:06:07.123456'",
            // SQLite's own functions, an ISO form, an offset, a Julian day number.
            "strftime('%Y-%m-%d %H:%M:%f', '2025-03-04 05:06:07.5')",
            "datetime('2025-03-04 05:06:07')",
            "'2025-03-04T05:06:07.25'",
            "'2025-03-04 05:06:07+08:00'",
            "2460738.7125",
        ] {
            let (ours, diesels) = both(&mut conn, expr);
            assert_eq!(ours, diesels, "{expr}");
        }
        // What neither reads is an error for both.
        let bad = diesel::select(sql::<Timestamp>("'not a time'"));
        assert!(bad.get_result::<StoredTime>(&mut conn).is_err());
    }
}

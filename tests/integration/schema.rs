//! The two backends' migrations declare the same schema: every table and column of the
//! SQLite migrations (from which `src/db/schema.rs` is generated) exists on MariaDB with
//! the same nullability, and MariaDB has no other.

use std::collections::BTreeSet;

use crate::harness::Backend;

/// `(table, column, nullable)` of every column of a migrated database, migration
/// bookkeeping left out.
type Columns = BTreeSet<(String, String, bool)>;

/// Bookkeeping tables: diesel's migration list and the migration lock row.
const BOOKKEEPING: [&str; 2] = ["__diesel_schema_migrations", "crm_migration_lock"];

/// The columns of the SQLite database at `path`.
fn sqlite_columns(path: &str) -> Columns {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Column {
        #[diesel(sql_type = diesel::sql_types::Text)]
        table_name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        column_name: String,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        not_null: i32,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pk: i32,
    }
    let mut conn = diesel::SqliteConnection::establish(path).expect("sqlite");
    let rows: Vec<Column> = diesel::sql_query(
        "SELECT m.name AS table_name, p.name AS column_name, p.\"notnull\" AS not_null, \
         p.pk AS pk FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
    )
    .load(&mut conn)
    .expect("columns");
    rows.into_iter()
        .filter(|c| !BOOKKEEPING.contains(&c.table_name.as_str()))
        // A primary-key column is never NULL, declared so or not.
        .map(|c| (c.table_name, c.column_name, c.not_null == 0 && c.pk == 0))
        .collect()
}

crate::backend_tests! {
    async fn mysql_migrations_declare_the_tables_and_columns_of_the_sqlite_ones(app: &TestApp) {
        if app.backend != Backend::Mysql {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("schema.db").display().to_string();
        crm_comms::db::Db::connect(&format!("sqlite://{path}"), &Default::default())
            .await
            .expect("migrate a new SQLite file");
        let sqlite = tokio::task::spawn_blocking(move || sqlite_columns(&path))
            .await
            .expect("join");

        let mut conn = mysql_async::Conn::from_url(app.database_url.as_str())
            .await
            .expect("mysql connect");
        let rows: Vec<(String, String, String)> = mysql_async::prelude::Queryable::query(
            &mut conn,
            "SELECT TABLE_NAME, COLUMN_NAME, IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE()",
        )
        .await
        .expect("information_schema");
        let _ = conn.disconnect().await;
        let mysql: Columns = rows
            .into_iter()
            .filter(|(table, _, _)| !BOOKKEEPING.contains(&table.as_str()))
            .map(|(table, column, nullable)| (table, column, nullable == "YES"))
            .collect();

        assert!(sqlite.len() > 80, "the SQLite schema was read: {sqlite:?}");
        let only_sqlite: Vec<_> = sqlite.difference(&mysql).collect();
        let only_mysql: Vec<_> = mysql.difference(&sqlite).collect();
        assert!(
            only_sqlite.is_empty() && only_mysql.is_empty(),
            "columns (table, column, nullable) only in the SQLite migrations: {only_sqlite:?}; \
             only in the MySQL ones: {only_mysql:?}"
        );
    }
}

//! Typed SQL the DSL lacks and the two backends spell differently: each is an
//! expression with its SQL type, written once per backend here, so statements stay
//! diesel DSL instead of carrying text fragments.

use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::mysql::Mysql;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::BigInt;
use diesel::sqlite::Sqlite;
use diesel::QueryResult;

/// The id the last INSERT on this connection generated (`BIGINT`).
pub fn last_insert_id() -> LastInsertId {
    LastInsertId
}

/// See [`last_insert_id`].
#[derive(Debug, Clone, Copy, QueryId, ValidGrouping)]
pub struct LastInsertId;

impl Expression for LastInsertId {
    type SqlType = BigInt;
}

impl<QS> AppearsOnTable<QS> for LastInsertId {}
impl<QS> SelectableExpression<QS> for LastInsertId {}

impl QueryFragment<Mysql> for LastInsertId {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        // Unsigned on MySQL: cast, or it does not read as BIGINT.
        out.push_sql("CAST(LAST_INSERT_ID() AS SIGNED)");
        Ok(())
    }
}

impl QueryFragment<Sqlite> for LastInsertId {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("last_insert_rowid()");
        Ok(())
    }
}

/// The step between two ids one multi-row INSERT generates on this connection
/// (`BIGINT`): MySQL's session `auto_increment_increment` (2 or 3 on replication rings
/// and Galera clusters), 1 on SQLite.
pub fn id_step() -> IdStep {
    IdStep
}

/// See [`id_step`].
#[derive(Debug, Clone, Copy, QueryId, ValidGrouping)]
pub struct IdStep;

impl Expression for IdStep {
    type SqlType = BigInt;
}

impl<QS> AppearsOnTable<QS> for IdStep {}
impl<QS> SelectableExpression<QS> for IdStep {}

impl QueryFragment<Mysql> for IdStep {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("CAST(@@session.auto_increment_increment AS SIGNED)");
        Ok(())
    }
}

impl QueryFragment<Sqlite> for IdStep {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("1");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_spells_the_expressions_its_own_way() {
        let query = diesel::select((last_insert_id(), id_step()));
        assert_eq!(
            diesel::debug_query::<Mysql, _>(&query).to_string(),
            "SELECT CAST(LAST_INSERT_ID() AS SIGNED), \
             CAST(@@session.auto_increment_increment AS SIGNED) -- binds: []"
        );
        assert_eq!(
            diesel::debug_query::<Sqlite, _>(&query).to_string(),
            "SELECT last_insert_rowid(), 1 -- binds: []"
        );
    }
}

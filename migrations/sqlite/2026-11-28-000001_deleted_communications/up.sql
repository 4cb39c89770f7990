-- Tombstones of deleted communications (DeleteCommunication and purge), written in the
-- deleting transaction. Every server keeps an in-memory content index of the
-- communications table (see `service::content_index`) and learns from this table which
-- rows another server deleted. Tombstones older than a week are pruned. Mirrors
-- migrations/mysql.
CREATE TABLE deleted_communications (
  id INTEGER NOT NULL PRIMARY KEY,
  delete_time TIMESTAMP NOT NULL
);
CREATE INDEX ix_deleted_communications_time ON deleted_communications (delete_time);

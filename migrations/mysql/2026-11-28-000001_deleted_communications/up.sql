-- Tombstones of deleted communications (DeleteCommunication and purge), written in the
-- deleting transaction. Every server keeps an in-memory content index of the
-- communications table (see `service::content_index`) and learns from this table which
-- rows another server deleted. Tombstones older than a week are pruned.
CREATE TABLE deleted_communications (
  id BIGINT NOT NULL PRIMARY KEY,
  delete_time DATETIME(6) NOT NULL,
  KEY ix_deleted_communications_time (delete_time)
) ENGINE=InnoDB;

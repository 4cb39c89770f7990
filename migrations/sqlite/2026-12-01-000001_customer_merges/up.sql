-- Duplicates and merge; mirrors migrations/mysql (see there).
ALTER TABLE customers ADD COLUMN merged_into BIGINT NULL;
CREATE INDEX ix_customers_phone ON customers (phone, delete_time);
CREATE INDEX ix_customers_email ON customers (email, delete_time);

CREATE TABLE customer_merges (
  id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  customer_id BIGINT NOT NULL,
  merged_ids TEXT NOT NULL,
  communications_moved BIGINT NOT NULL,
  transactions_moved BIGINT NOT NULL,
  service_tickets_moved BIGINT NOT NULL,
  tags_added BIGINT NOT NULL,
  tags_dropped BIGINT NOT NULL,
  request_id TEXT NULL,
  merge_time TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX ux_customer_merges_request ON customer_merges (customer_id, request_id);
CREATE INDEX ix_customer_merges_time ON customer_merges (merge_time);

-- Duplicates and merge (CustomerService.ListDuplicateCustomers / MergeCustomers).
-- A merged customer keeps its row, marked deleted and pointing at the customer it was
-- merged into, so its id stays resolvable (NOT_FOUND naming the surviving id).
ALTER TABLE customers ADD COLUMN merged_into BIGINT NULL;
-- Duplicate detection groups live customers by phone and by email: an ordered scan of
-- these indexes, which cover the liveness test (delete_time) and the id (the primary
-- key is part of every secondary index), so no row is read to form a group.
CREATE INDEX ix_customers_phone ON customers (phone, delete_time);
CREATE INDEX ix_customers_email ON customers (email, delete_time);

-- One row per MergeCustomers call: its idempotency key (unique per surviving customer,
-- as for the other per-customer rows), what it merged and moved. Content indexes of
-- every server follow this table to re-own the moved communications.
CREATE TABLE customer_merges (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  customer_id BIGINT NOT NULL,
  merged_ids VARCHAR(2100) NOT NULL,
  communications_moved BIGINT NOT NULL,
  transactions_moved BIGINT NOT NULL,
  service_tickets_moved BIGINT NOT NULL,
  tags_added BIGINT NOT NULL,
  tags_dropped BIGINT NOT NULL,
  request_id VARCHAR(64) COLLATE utf8mb4_bin NULL,
  merge_time DATETIME(6) NOT NULL,
  UNIQUE KEY ux_customer_merges_request (customer_id, request_id),
  KEY ix_customer_merges_time (merge_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

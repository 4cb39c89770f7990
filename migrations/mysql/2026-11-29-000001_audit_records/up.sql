-- The audit trail: one row per write, delete or purge, written in the same transaction
-- as the change it records (so neither exists without the other). Append-only: the
-- service never updates or deletes a row, and a purge leaves the trail alone; rows hold
-- ids and names of callers only, never a customer's personal data. In production the
-- service's database account needs only INSERT and SELECT on this table.
-- `customer_id` and `resource_id` are 0 where the call names no such id.
CREATE TABLE audit_records (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  record_time DATETIME(6) NOT NULL,
  caller VARCHAR(64) NOT NULL,
  peer VARCHAR(64) NOT NULL,
  client_certificate VARCHAR(512) NOT NULL,
  method VARCHAR(64) NOT NULL,
  customer_id BIGINT NOT NULL,
  resource_id BIGINT NOT NULL,
  detail VARCHAR(255) NOT NULL,
  KEY ix_audit_records_customer (customer_id, id),
  KEY ix_audit_records_caller (caller, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

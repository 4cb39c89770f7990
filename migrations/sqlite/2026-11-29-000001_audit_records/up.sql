-- The audit trail; mirrors migrations/mysql (see there). AUTOINCREMENT: ids are never
-- reused, even after the newest rows' transaction rolled back. Triggers make the table
-- append-only for anyone writing to the file directly, too.
CREATE TABLE audit_records (
  id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  record_time TIMESTAMP NOT NULL,
  caller TEXT NOT NULL,
  peer TEXT NOT NULL,
  client_certificate TEXT NOT NULL,
  method TEXT NOT NULL,
  customer_id BIGINT NOT NULL,
  resource_id BIGINT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX ix_audit_records_customer ON audit_records (customer_id, id);
CREATE INDEX ix_audit_records_caller ON audit_records (caller, id);
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN
  SELECT RAISE(ABORT, 'audit_records is append-only');
END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN
  SELECT RAISE(ABORT, 'audit_records is append-only');
END;

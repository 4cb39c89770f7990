-- crm-comms schema for SQLite (the embedded default).
-- Times are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' in columns declared TIMESTAMP (DATE for
-- dates), the names `diesel print-schema` maps to Timestamp and Date; such text never reads
-- as a number, so it is stored as text as under a TEXT declaration. Money is exact
-- (units + nanos). AUTOINCREMENT so ids are never reused. Mirrors migrations/mysql.

CREATE TABLE customers (
  id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  gender INTEGER NOT NULL DEFAULT 0,
  birth_date DATE NULL,
  address TEXT NOT NULL DEFAULT '',
  phone TEXT NOT NULL DEFAULT '',
  email TEXT NOT NULL DEFAULT '',
  search_text TEXT NOT NULL DEFAULT '',
  request_id TEXT NULL,
  version BIGINT NOT NULL DEFAULT 1,
  create_time TIMESTAMP NOT NULL,
  update_time TIMESTAMP NOT NULL,
  delete_time TIMESTAMP NULL
);
CREATE UNIQUE INDEX ux_customers_request ON customers (request_id);

CREATE TABLE customer_tags (
  customer_id BIGINT NOT NULL,
  tag TEXT NOT NULL,
  PRIMARY KEY (customer_id, tag)
);
CREATE INDEX ix_customer_tags_tag ON customer_tags (tag, customer_id);

CREATE TABLE transactions (
  id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  customer_id BIGINT NOT NULL,
  order_number TEXT NOT NULL,
  product TEXT NOT NULL,
  currency_code TEXT NOT NULL,
  amount_units BIGINT NOT NULL,
  amount_nanos INTEGER NOT NULL,
  occur_time TIMESTAMP NOT NULL,
  create_time TIMESTAMP NOT NULL,
  request_id TEXT NULL
);
CREATE UNIQUE INDEX ux_transactions_request ON transactions (customer_id, request_id);
CREATE INDEX ix_transactions_customer_time ON transactions (customer_id, occur_time, id);
CREATE INDEX ix_transactions_time ON transactions (occur_time, id);
CREATE INDEX ix_transactions_created ON transactions (create_time);

CREATE TABLE service_tickets (
  id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  customer_id BIGINT NOT NULL,
  issue TEXT NOT NULL,
  solution TEXT NOT NULL,
  status INTEGER NOT NULL,
  open_time TIMESTAMP NOT NULL,
  resolve_time TIMESTAMP NULL,
  create_time TIMESTAMP NOT NULL,
  update_time TIMESTAMP NOT NULL,
  version BIGINT NOT NULL DEFAULT 1,
  request_id TEXT NULL
);
CREATE UNIQUE INDEX ux_service_tickets_request ON service_tickets (customer_id, request_id);
CREATE INDEX ix_service_tickets_customer_time ON service_tickets (customer_id, open_time, id);
CREATE INDEX ix_service_tickets_time ON service_tickets (open_time, id);
CREATE INDEX ix_service_tickets_status ON service_tickets (status, open_time, id);
CREATE INDEX ix_service_tickets_created ON service_tickets (create_time);

CREATE TABLE communications (
  id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  customer_id BIGINT NOT NULL,
  channel INTEGER NOT NULL,
  direction INTEGER NOT NULL,
  occur_time TIMESTAMP NOT NULL,
  content TEXT NOT NULL,
  outcome TEXT NOT NULL DEFAULT '',
  phone_number TEXT NULL,
  call_duration_us BIGINT NULL,
  email_address TEXT NULL,
  email_subject TEXT NULL,
  chat_platform TEXT NULL,
  chat_conversation_id TEXT NULL,
  create_time TIMESTAMP NOT NULL,
  request_id TEXT NULL
);
CREATE UNIQUE INDEX ux_communications_request ON communications (customer_id, request_id);
CREATE INDEX ix_communications_customer_time ON communications (customer_id, occur_time, id, channel, direction);
CREATE INDEX ix_communications_time ON communications (occur_time, id, customer_id, channel, direction);
CREATE INDEX ix_communications_created ON communications (create_time);

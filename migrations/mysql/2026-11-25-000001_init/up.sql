-- crm-comms schema for MySQL 8 / MariaDB 10.6+ / TiDB.
-- Times are UTC DATETIME(6); text is utf8mb4; money is exact (units + nanos).
-- Every per-customer table carries customer_id (shard key); no foreign keys, so the
-- schema also fits Vitess. Idempotency keys live on the row they created
-- (request_id, unique per customer), so a key is written and purged with its row.

CREATE TABLE customers (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(200) NOT NULL,
  gender INT NOT NULL DEFAULT 0,
  birth_date DATE NULL,
  address VARCHAR(500) NOT NULL DEFAULT '',
  phone VARCHAR(32) NOT NULL DEFAULT '',
  email VARCHAR(254) NOT NULL DEFAULT '',
  -- lower-cased "name\nphone\nemail", compared byte-wise for the `query` filter
  search_text VARCHAR(600) COLLATE utf8mb4_bin NOT NULL DEFAULT '',
  request_id VARCHAR(64) NULL,
  version BIGINT NOT NULL DEFAULT 1,
  create_time DATETIME(6) NOT NULL,
  update_time DATETIME(6) NOT NULL,
  delete_time DATETIME(6) NULL,
  UNIQUE KEY ux_customers_request (request_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE customer_tags (
  customer_id BIGINT NOT NULL,
  tag VARCHAR(50) COLLATE utf8mb4_bin NOT NULL,
  PRIMARY KEY (customer_id, tag),
  KEY ix_customer_tags_tag (tag, customer_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE transactions (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  customer_id BIGINT NOT NULL,
  order_number VARCHAR(64) NOT NULL,
  product VARCHAR(200) NOT NULL,
  currency_code CHAR(3) NOT NULL,
  amount_units BIGINT NOT NULL,
  amount_nanos INT NOT NULL,
  occur_time DATETIME(6) NOT NULL,
  create_time DATETIME(6) NOT NULL,
  request_id VARCHAR(64) NULL,
  UNIQUE KEY ux_transactions_request (customer_id, request_id),
  KEY ix_transactions_customer_time (customer_id, occur_time, id),
  KEY ix_transactions_time (occur_time, id),
  KEY ix_transactions_created (create_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE service_tickets (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  customer_id BIGINT NOT NULL,
  issue TEXT NOT NULL,
  solution TEXT NOT NULL,
  status INT NOT NULL,
  open_time DATETIME(6) NOT NULL,
  resolve_time DATETIME(6) NULL,
  create_time DATETIME(6) NOT NULL,
  update_time DATETIME(6) NOT NULL,
  version BIGINT NOT NULL DEFAULT 1,
  request_id VARCHAR(64) NULL,
  UNIQUE KEY ux_service_tickets_request (customer_id, request_id),
  KEY ix_service_tickets_customer_time (customer_id, open_time, id),
  KEY ix_service_tickets_time (open_time, id),
  KEY ix_service_tickets_status (status, open_time, id),
  KEY ix_service_tickets_created (create_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE communications (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  customer_id BIGINT NOT NULL,
  channel INT NOT NULL,
  direction INT NOT NULL,
  occur_time DATETIME(6) NOT NULL,
  content MEDIUMTEXT NOT NULL,
  outcome VARCHAR(200) NOT NULL DEFAULT '',
  phone_number VARCHAR(32) NULL,
  call_duration_us BIGINT NULL,
  email_address VARCHAR(254) NULL,
  email_subject VARCHAR(500) NULL,
  chat_platform VARCHAR(50) NULL,
  chat_conversation_id VARCHAR(200) NULL,
  create_time DATETIME(6) NOT NULL,
  request_id VARCHAR(64) NULL,
  UNIQUE KEY ux_communications_request (customer_id, request_id),
  -- keyset order of one customer's timeline; also covers per-customer analytics
  KEY ix_communications_customer_time (customer_id, occur_time, id, channel, direction),
  -- keyset order of the all-customer timeline; covers all-customer analytics
  KEY ix_communications_time (occur_time, id, customer_id, channel, direction),
  -- follow streams poll for rows recorded since a watermark
  KEY ix_communications_created (create_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

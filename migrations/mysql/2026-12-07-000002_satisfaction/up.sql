-- Customer satisfaction surveys (CommunicationService.RecordSatisfaction): one per
-- communication or service ticket (unique target; MySQL and SQLite both allow many
-- NULLs in a unique key). customer_id, channel and target_time are copied from the
-- target, which never changes them, so reports and the attention list read this table
-- alone. Ids come from AUTO_INCREMENT as everywhere (no meaning in their values: a
-- Galera cluster interleaves them); idempotency keys are per customer, as for the
-- other per-customer rows: request_id of the request that created the row,
-- answer_request_id of the answer that completed it.
CREATE TABLE satisfaction_surveys (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  customer_id BIGINT NOT NULL,
  communication_id BIGINT NULL,
  ticket_id BIGINT NULL,
  channel INT NOT NULL,
  target_time DATETIME(6) NOT NULL,
  sent_time DATETIME(6) NOT NULL,
  score INT NOT NULL,
  comment VARCHAR(1000) NOT NULL DEFAULT '',
  answer_time DATETIME(6) NULL,
  create_time DATETIME(6) NOT NULL,
  update_time DATETIME(6) NOT NULL,
  version BIGINT NOT NULL DEFAULT 1,
  request_id VARCHAR(64) COLLATE utf8mb4_bin NULL,
  answer_request_id VARCHAR(64) COLLATE utf8mb4_bin NULL,
  UNIQUE KEY ux_satisfaction_surveys_request (customer_id, request_id),
  UNIQUE KEY ux_satisfaction_surveys_answer_request (customer_id, answer_request_id),
  UNIQUE KEY ux_satisfaction_surveys_communication (communication_id),
  UNIQUE KEY ux_satisfaction_surveys_ticket (ticket_id),
  -- the report over every customer: a range of sent times
  KEY ix_satisfaction_surveys_sent (sent_time, id),
  -- the report over listed customers
  KEY ix_satisfaction_surveys_customer_sent (customer_id, sent_time, id),
  -- the attention list: answers in a range, grouped per customer (covering)
  KEY ix_satisfaction_surveys_answer (answer_time, customer_id, score)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

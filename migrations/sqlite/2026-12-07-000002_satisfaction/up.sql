-- Customer satisfaction surveys; mirrors migrations/mysql (see there).
CREATE TABLE satisfaction_surveys (
  id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  customer_id BIGINT NOT NULL,
  communication_id BIGINT NULL,
  ticket_id BIGINT NULL,
  channel INTEGER NOT NULL,
  target_time TIMESTAMP NOT NULL,
  sent_time TIMESTAMP NOT NULL,
  score INTEGER NOT NULL,
  comment TEXT NOT NULL DEFAULT '',
  answer_time TIMESTAMP NULL,
  create_time TIMESTAMP NOT NULL,
  update_time TIMESTAMP NOT NULL,
  version BIGINT NOT NULL DEFAULT 1,
  request_id TEXT NULL,
  answer_request_id TEXT NULL
);
CREATE UNIQUE INDEX ux_satisfaction_surveys_request ON satisfaction_surveys (customer_id, request_id);
CREATE UNIQUE INDEX ux_satisfaction_surveys_answer_request ON satisfaction_surveys (customer_id, answer_request_id);
CREATE UNIQUE INDEX ux_satisfaction_surveys_communication ON satisfaction_surveys (communication_id);
CREATE UNIQUE INDEX ux_satisfaction_surveys_ticket ON satisfaction_surveys (ticket_id);
CREATE INDEX ix_satisfaction_surveys_sent ON satisfaction_surveys (sent_time, id);
CREATE INDEX ix_satisfaction_surveys_customer_sent ON satisfaction_surveys (customer_id, sent_time, id);
CREATE INDEX ix_satisfaction_surveys_answer ON satisfaction_surveys (answer_time, customer_id, score);

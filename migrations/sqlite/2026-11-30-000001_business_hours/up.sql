-- Business hours; mirrors migrations/mysql (see there).
CREATE TABLE business_hours (
  id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  time_zone TEXT NOT NULL,
  hours TEXT NOT NULL,
  request_id TEXT NULL,
  version BIGINT NOT NULL,
  create_time TIMESTAMP NOT NULL,
  update_time TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX ux_business_hours_name ON business_hours (name);
CREATE UNIQUE INDEX ux_business_hours_request ON business_hours (request_id);

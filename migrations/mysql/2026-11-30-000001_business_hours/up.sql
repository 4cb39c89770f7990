-- Business hours: named weekly schedules (BusinessHoursService). `hours` is JSON: the
-- open windows (weekday, start and end minute of the local day) and the holidays.
CREATE TABLE business_hours (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) COLLATE utf8mb4_bin NOT NULL,
  time_zone VARCHAR(64) NOT NULL,
  hours MEDIUMTEXT NOT NULL,
  request_id VARCHAR(64) COLLATE utf8mb4_bin NULL,
  version BIGINT NOT NULL,
  create_time DATETIME(6) NOT NULL,
  update_time DATETIME(6) NOT NULL,
  UNIQUE KEY ux_business_hours_name (name),
  UNIQUE KEY ux_business_hours_request (request_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

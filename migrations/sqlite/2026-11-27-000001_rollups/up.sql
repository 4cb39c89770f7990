-- Rollups: pre-aggregated communication counts kept exact by every write path (log,
-- import, delete, purge), so reports over long ranges read counts, not every row.
-- Filled for the rows already stored when the server starts (see `db::rollups`).

-- Communications per 15-minute UTC slot (floor(unix seconds / 900)), channel and
-- direction. A slot's count is spread over `shard` = customer_id mod 8 so concurrent
-- writers of one slot update different rows.
CREATE TABLE communication_slots (
  slot BIGINT NOT NULL,
  channel INT NOT NULL,
  direction INT NOT NULL,
  shard INT NOT NULL,
  n BIGINT NOT NULL,
  PRIMARY KEY (slot, channel, direction, shard)
) WITHOUT ROWID;
-- compaction folds shards 1.. of old slots into shard 0
CREATE INDEX ix_communication_slots_shard ON communication_slots (shard, slot);

-- The same per UTC hour (floor(unix seconds / 3600)): reports in zones whose offsets are
-- whole hours read 4x fewer rows.
CREATE TABLE communication_hours (
  hour BIGINT NOT NULL,
  channel INT NOT NULL,
  direction INT NOT NULL,
  shard INT NOT NULL,
  n BIGINT NOT NULL,
  PRIMARY KEY (hour, channel, direction, shard)
) WITHOUT ROWID;
CREATE INDEX ix_communication_hours_shard ON communication_hours (shard, hour);

-- Communications per customer and UTC calendar month (year * 12 + month - 1), with the
-- latest time; rows whose count reaches 0 are deleted.
CREATE TABLE customer_months (
  month INT NOT NULL,
  customer_id BIGINT NOT NULL,
  n BIGINT NOT NULL,
  last_time TIMESTAMP NOT NULL,
  PRIMARY KEY (month, customer_id)
) WITHOUT ROWID;
CREATE INDEX ix_customer_months_customer ON customer_months (customer_id, month);

-- One row per rollup set once it covers every stored row.
CREATE TABLE rollup_state (
  name TEXT NOT NULL PRIMARY KEY,
  built_time TIMESTAMP NOT NULL
);

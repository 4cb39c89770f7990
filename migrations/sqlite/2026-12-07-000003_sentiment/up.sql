-- Sentiment: every communication's score (-1000 most negative .. 1000 most positive,
-- thousandths of VADER's compound; NULL until scored: rows stored before this migration
-- are scored by the server at start), and per rollup row the negative and positive
-- counts (score below -50, above 50; the rest of `n` is neutral) and the sum of scores.
ALTER TABLE communications ADD COLUMN sentiment SMALLINT NULL;
ALTER TABLE communication_slots ADD COLUMN negative BIGINT NOT NULL DEFAULT 0;
ALTER TABLE communication_slots ADD COLUMN positive BIGINT NOT NULL DEFAULT 0;
ALTER TABLE communication_slots ADD COLUMN sentiment_sum BIGINT NOT NULL DEFAULT 0;
ALTER TABLE communication_hours ADD COLUMN negative BIGINT NOT NULL DEFAULT 0;
ALTER TABLE communication_hours ADD COLUMN positive BIGINT NOT NULL DEFAULT 0;
ALTER TABLE communication_hours ADD COLUMN sentiment_sum BIGINT NOT NULL DEFAULT 0;
ALTER TABLE customer_months ADD COLUMN negative BIGINT NOT NULL DEFAULT 0;
ALTER TABLE customer_months ADD COLUMN positive BIGINT NOT NULL DEFAULT 0;
ALTER TABLE customer_months ADD COLUMN sentiment_sum BIGINT NOT NULL DEFAULT 0;

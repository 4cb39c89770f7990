ALTER TABLE customer_months DROP COLUMN negative, DROP COLUMN positive, DROP COLUMN sentiment_sum;
ALTER TABLE communication_hours DROP COLUMN negative, DROP COLUMN positive, DROP COLUMN sentiment_sum;
ALTER TABLE communication_slots DROP COLUMN negative, DROP COLUMN positive, DROP COLUMN sentiment_sum;
ALTER TABLE communications DROP COLUMN sentiment;

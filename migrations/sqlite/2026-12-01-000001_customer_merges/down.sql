DROP TABLE customer_merges;
DROP INDEX ix_customers_email;
DROP INDEX ix_customers_phone;
ALTER TABLE customers DROP COLUMN merged_into;

DROP TABLE customer_merges;
DROP INDEX ix_customers_email ON customers;
DROP INDEX ix_customers_phone ON customers;
ALTER TABLE customers DROP COLUMN merged_into;

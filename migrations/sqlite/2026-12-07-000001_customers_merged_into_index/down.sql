DROP INDEX ix_customers_merged_into;

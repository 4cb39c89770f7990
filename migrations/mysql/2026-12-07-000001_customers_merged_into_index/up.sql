-- Customers by the survivor they were merged into: a merge's repointing of earlier
-- merges (`merged_into IN (...)`) and a purge's cleanup (`merged_into = ?`) read the
-- rows that name it, not the whole customers table.
CREATE INDEX ix_customers_merged_into ON customers (merged_into);

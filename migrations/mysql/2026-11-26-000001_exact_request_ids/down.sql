-- Back to the table collation. Fails with a duplicate-key error if keys that differ only
-- in case or accents were stored meanwhile; resolve those rows first.
ALTER TABLE customers MODIFY request_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL;
ALTER TABLE transactions MODIFY request_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL;
ALTER TABLE service_tickets MODIFY request_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL;
ALTER TABLE communications MODIFY request_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL;

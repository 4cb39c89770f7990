-- Idempotency keys compare byte for byte (issue: `Repro-Key` and `repro-key`, `café` and
-- `cafe`, `ＫＥＹ` and `KEY` were one key under utf8mb4_unicode_ci). utf8mb4_bin compares
-- code points, which for valid UTF-8 is byte equality; its PAD SPACE rule cannot merge
-- two keys because keys with surrounding spaces are rejected by validation.
-- Existing rows cannot collide after this change: the old, coarser unique key already
-- allowed at most one row per case/accent-folded key, and a finer comparison only
-- separates keys. Keys keep their exact stored bytes.
ALTER TABLE customers MODIFY request_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL;
ALTER TABLE transactions MODIFY request_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL;
ALTER TABLE service_tickets MODIFY request_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL;
ALTER TABLE communications MODIFY request_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL;

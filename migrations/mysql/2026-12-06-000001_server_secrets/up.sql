-- Secrets every server of a deployment shares, made by the first server that needs one
-- (e.g. the key that seals page tokens carrying personal data). Hex text.
CREATE TABLE server_secrets (
  name VARCHAR(64) COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
  value VARCHAR(128) COLLATE utf8mb4_bin NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

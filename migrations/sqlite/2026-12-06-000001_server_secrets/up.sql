-- Secrets every server of a deployment shares, made by the first server that needs one
-- (e.g. the key that seals page tokens carrying personal data). Hex text.
CREATE TABLE server_secrets (
  name TEXT NOT NULL PRIMARY KEY,
  value TEXT NOT NULL
);

//! Black-box integration tests: the real server on an ephemeral port, real SQLite and
//! real MariaDB, generated clients. One test binary with a module per service.

#![allow(clippy::unwrap_used, missing_docs)]

mod harness;

mod analytics;
mod communications;
mod customers;
mod follow;
mod server;

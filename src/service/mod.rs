//! Use cases, between the transport and storage: what the server does, in domain terms.
//!
//! Layer rule: `grpc -> service -> {db, analytics, model}`. A service takes validated
//! domain requests and returns domain results and [`crate::error::Error`]s: it applies
//! defaults and limits, checks the call's deadline between steps, drives `db` (which
//! returns rows and plain structs) and the pure logic of `analytics`. It names no
//! transport or pb type (the gRPC layer converts both ways and maps errors to statuses) and writes
//! no SQL. Nothing below it imports it.

pub mod attention;
pub mod content_index;
pub mod export;
pub mod feed;
pub mod import;
pub mod log_writer;
pub mod maintenance;
pub mod reports;
pub mod satisfaction;
pub mod service_levels;
pub mod timeline;
pub mod watch;

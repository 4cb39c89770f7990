//! Use cases, between the transport and storage: what the server does, in domain terms.
//!
//! Layer rule: `grpc -> service -> {db, analytics, model}`. A service takes validated
//! domain requests and returns domain results and [`crate::error::Error`]s; it names no
//! tonic or pb type (the gRPC layer converts both ways and maps errors to statuses) and
//! writes no SQL (it calls `crate::db`). Nothing below it imports it.

pub mod import;
pub mod timeline;

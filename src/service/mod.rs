//! Use cases, between transport and storage: `grpc` turns requests into the queries
//! defined here and the results back into responses; the service applies defaults and
//! limits, checks the call's deadline between steps, drives `db` (which returns rows and
//! plain structs) and the pure logic of `analytics`, and assembles the figures. The
//! dependency order is grpc -> service -> {db, analytics, model}; the service names no
//! tonic or pb type and writes no SQL.

pub mod reports;

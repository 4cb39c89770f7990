//! crm-comms: the gRPC backend of a CRM's customer-communication module.
//!
//! Layout: `grpc` (transport: handlers, validation, page tokens, proto conversions, the
//! one status mapping), `service` (use cases: import, timeline, reports), `db` (pool,
//! dispatch, schema, the per-backend dialect, the statement builder, queries per
//! resource), `analytics` (pure report logic), `model` (the communications filter, time
//! helpers, deadlines, roles), `security` (tokens, limits, TLS), `config`, `server`,
//! `error` (one error and its reasons). Dependencies point one way: grpc -> service ->
//! {db, analytics, model}. The demo data generator of `seed-demo` is part of the binary
//! (`src/demo`), not of this library.

pub mod analytics;
pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod model;
pub mod security;
pub mod server;
pub mod service;

/// Code generated from `proto/crm/v1/*.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("crm.v1");

    /// Encoded `FileDescriptorSet` of the API, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/crm_descriptor.bin"));
}

//! crm-comms: the gRPC backend of a CRM's customer-communication module.
//!
//! Layout: `grpc` (handlers only), `service` (use cases: grpc -> service -> {db,
//! analytics}), `db` (pool, dispatch, schema, queries per resource), `analytics` (pure
//! report logic), `config`, `error` (one error, one status mapping).

pub mod analytics;
pub mod config;
pub mod convert;
pub mod db;
pub mod deadline;
pub mod error;
pub mod grpc;
pub mod paging;
pub mod server;
pub mod service;
pub mod timeline;
pub mod validate;

/// Code generated from `proto/crm/v1/*.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("crm.v1");

    /// Encoded `FileDescriptorSet` of the API, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/crm_descriptor.bin"));
}

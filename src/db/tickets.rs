//! tickets queries.

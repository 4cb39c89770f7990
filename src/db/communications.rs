//! communications queries.

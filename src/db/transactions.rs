//! transactions queries.

//! Domain values shared by every layer, with no I/O and no transport types: the call
//! deadline, the caller, the communications filter, phone and name normalization and the
//! service's UTC time helpers.

pub mod caller;
pub mod deadline;
pub mod filter;
pub mod names;
pub mod phone;
pub mod role;
pub mod schedule;
pub mod time;

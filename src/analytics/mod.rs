//! Pure-logic analytics helpers (no I/O) used by the CRM analytics RPCs.
//! Owns calendar bucketing, contact-gap statistics, content matching and top terms.

pub mod buckets;
pub mod gaps;
pub mod matching;
pub mod terms;

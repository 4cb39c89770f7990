//! Pure-logic analytics helpers (no I/O) used by the CRM analytics RPCs.
//! Owns calendar bucketing, contact-gap statistics, content matching, top terms and the
//! content scan that combines them page by page, business time, response and
//! resolution waits, and the ranking of customers whose contact rate fell.

pub mod activity;
pub mod attention;
pub mod buckets;
pub mod business_time;
pub mod content;
pub mod content_index;
pub mod fold;
pub mod gaps;
pub mod matching;
pub mod rollup;
pub mod sentiment;
pub mod terms;
pub mod waits;

//! Opaque page tokens and timeline cursors: a position plus a fingerprint of the
//! filters it was issued for, with a checksum so tampered or foreign tokens fail.
//!
//! Tokens are not secrets (a position reveals nothing the caller could not list), so
//! a checksum, not a MAC, is enough to turn forgeries into INVALID_ARGUMENT.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Violations};

/// Page size used when the request says 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page size; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// Validates a `page_size` field: 0 means the default, negative is invalid, larger than
/// the maximum is clamped.
pub fn page_size(violations: &mut Violations, field: &str, size: i32) -> i64 {
    match size {
        0 => DEFAULT_PAGE_SIZE,
        s if s < 0 => {
            violations.add(field, "must not be negative");
            DEFAULT_PAGE_SIZE
        }
        s => i64::from(s).min(MAX_PAGE_SIZE),
    }
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_continue(0xcbf2_9ce4_8422_2325, bytes)
}

/// Continues an FNV-1a hash over more bytes (hashing `a` then `b` equals hashing `a ++ b`).
fn fnv1a_continue(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A fingerprint of a request's filters, so a token is only valid with the filters it
/// was issued for. Build it from the `Debug` text of the filter values.
pub fn fingerprint(filters: &impl std::fmt::Debug) -> u64 {
    fnv1a(format!("{filters:?}").as_bytes())
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    /// What the token is for, e.g. "customers".
    k: String,
    /// Filter fingerprint.
    f: u64,
    /// The position.
    p: T,
}

const SALT: &[u8] = b"crm.v1/page-token/1";

/// Encodes a position for `kind` and the filters with `filter` fingerprint.
pub fn encode<T: Serialize>(kind: &str, filter: u64, position: &T) -> String {
    let envelope = Envelope {
        k: kind.to_owned(),
        f: filter,
        p: position,
    };
    let mut bytes = serde_json::to_vec(&envelope).unwrap_or_default();
    let sum = checksum(&bytes);
    bytes.extend_from_slice(&sum.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Checksum of `SALT ++ payload`, without copying (it runs once per timeline event).
fn checksum(payload: &[u8]) -> u64 {
    fnv1a_continue(fnv1a(SALT), payload)
}

/// Decodes a token issued by [`encode`] for the same `kind` and `filter`; any other
/// token is INVALID_ARGUMENT on `field`.
pub fn decode<T: DeserializeOwned>(
    field: &str,
    kind: &str,
    filter: u64,
    token: &str,
) -> Result<T, Error> {
    let invalid = |why: &str| Error::invalid(field, why);
    let bytes = URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .map_err(|_| invalid("is not a token issued by this service"))?;
    if bytes.len() < 9 {
        return Err(invalid("is not a token issued by this service"));
    }
    let (payload, sum) = bytes.split_at(bytes.len() - 8);
    let mut sum_bytes = [0u8; 8];
    sum_bytes.copy_from_slice(sum);
    if checksum(payload) != u64::from_be_bytes(sum_bytes) {
        return Err(invalid("is corrupted or was not issued by this service"));
    }
    let envelope: Envelope<T> = serde_json::from_slice(payload)
        .map_err(|_| invalid("is not a token issued by this service"))?;
    if envelope.k != kind {
        return Err(invalid("belongs to a different method"));
    }
    if envelope.f != filter {
        return Err(invalid("was issued for different filters"));
    }
    Ok(envelope.p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_detects_tampering() {
        let f = fingerprint(&("vip", 3));
        let token = encode("customers", f, &(42i64, "x"));
        let back: (i64, String) = decode("page_token", "customers", f, &token).unwrap();
        assert_eq!(back, (42, "x".to_owned()));

        let mut forged = token.into_bytes();
        let last = forged.len() - 3;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(decode::<(i64, String)>("page_token", "customers", f, &forged).is_err());
        assert!(decode::<(i64, String)>("page_token", "customers", f, "garbage!").is_err());
    }

    #[test]
    fn token_is_bound_to_kind_and_filters() {
        let token = encode("customers", 1, &7i64);
        assert!(decode::<i64>("page_token", "customers", 2, &token).is_err());
        assert!(decode::<i64>("page_token", "tickets", 1, &token).is_err());
    }

    #[test]
    fn page_size_defaults_clamps_and_rejects_negative() {
        let mut v = Violations::new();
        assert_eq!(page_size(&mut v, "page_size", 0), 50);
        assert_eq!(page_size(&mut v, "page_size", 5000), 1000);
        assert!(v.is_empty());
        page_size(&mut v, "page_size", -1);
        assert!(!v.is_empty());
    }
}

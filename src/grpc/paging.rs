//! Opaque page tokens and timeline cursors: a position plus a fingerprint of the
//! filters it was issued for, with a checksum so corrupted or foreign tokens fail.
//!
//! Tokens are neither secrets nor tamper-proof, by decision: a position is a row's
//! `(time, id)`, which reveals nothing the caller could not list, and a forged
//! position only asks for rows the same filters would list anyway. So the checksum
//! (unkeyed FNV) catches accidents, not attackers, and no server secret is needed;
//! what protects the database is that every decoded position is validated
//! ([`decode_id`], [`decode_time_id`], [`position`]): a time outside the stored range
//! or an id below 1 is INVALID_ARGUMENT, like any other malformed token.
//!
//! The exception is a position that holds personal data (the duplicate listing continues
//! after a phone, an email or a name): tokens end up in URLs and logs, so such a token is
//! sealed ([`encode_sealed`], ChaCha20-Poly1305) under a key every server of the
//! deployment reads from the database (`db::secrets`), and replicas accept each other's.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use chrono::NaiveDateTime;

use crate::error::{Error, Violations};
use crate::model::time::{from_micros, micros, MAX_TIME, MIN_TIME};

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
/// was issued for.
///
/// It hashes (FNV-1a) a defined byte encoding, never `Debug` text, so it is stable
/// across compilers and dependency updates: each field is its name (length-prefixed),
/// a type tag and the value; `i64` is 8 little-endian bytes, a string its length (8
/// bytes LE) and UTF-8 bytes, a time its microseconds since the epoch as `i64`, an
/// option a presence byte then the value, a list its count (8 bytes LE) then the
/// items. Changing the encoding invalidates every token in flight; a unit test pins it.
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// Starts the fingerprint of the filters of one method.
    pub fn new(kind: &str) -> Self {
        Fingerprint(fnv1a(b"crm.v1/filter/1")).field("kind", kind)
    }

    /// Adds one named filter field.
    pub fn field<V: FingerprintValue + ?Sized>(mut self, name: &str, value: &V) -> Self {
        self.len_bytes(name.as_bytes());
        value.feed(&mut self);
        self
    }

    /// The finished fingerprint.
    pub fn finish(self) -> u64 {
        self.0
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0 = fnv1a_continue(self.0, bytes);
    }

    fn len_bytes(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }
}

/// A value that can be part of a [`Fingerprint`], with a defined encoding.
pub trait FingerprintValue {
    /// Feeds the value's type tag and bytes.
    fn feed(&self, fp: &mut Fingerprint);
}

impl FingerprintValue for i64 {
    fn feed(&self, fp: &mut Fingerprint) {
        fp.bytes(b"i");
        fp.bytes(&self.to_le_bytes());
    }
}

impl FingerprintValue for i32 {
    fn feed(&self, fp: &mut Fingerprint) {
        i64::from(*self).feed(fp);
    }
}

impl FingerprintValue for str {
    fn feed(&self, fp: &mut Fingerprint) {
        fp.bytes(b"s");
        fp.len_bytes(self.as_bytes());
    }
}

impl FingerprintValue for String {
    fn feed(&self, fp: &mut Fingerprint) {
        self.as_str().feed(fp);
    }
}

impl FingerprintValue for NaiveDateTime {
    fn feed(&self, fp: &mut Fingerprint) {
        fp.bytes(b"t");
        fp.bytes(&micros(*self).to_le_bytes());
    }
}

impl<T: FingerprintValue> FingerprintValue for Option<T> {
    fn feed(&self, fp: &mut Fingerprint) {
        match self {
            None => fp.bytes(&[0]),
            Some(v) => {
                fp.bytes(&[1]);
                v.feed(fp);
            }
        }
    }
}

impl<T: FingerprintValue> FingerprintValue for [T] {
    fn feed(&self, fp: &mut Fingerprint) {
        fp.bytes(b"l");
        fp.bytes(&(self.len() as u64).to_le_bytes());
        for v in self {
            v.feed(fp);
        }
    }
}

impl<T: FingerprintValue> FingerprintValue for Vec<T> {
    fn feed(&self, fp: &mut Fingerprint) {
        self.as_slice().feed(fp);
    }
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
    URL_SAFE_NO_PAD.encode(envelope_bytes(kind, filter, position))
}

/// The checksummed envelope of a token, before base64.
fn envelope_bytes<T: Serialize>(kind: &str, filter: u64, position: &T) -> Vec<u8> {
    let envelope = Envelope {
        k: kind.to_owned(),
        f: filter,
        p: position,
    };
    let mut bytes = serde_json::to_vec(&envelope).unwrap_or_default();
    let sum = checksum(&bytes);
    bytes.extend_from_slice(&sum.to_be_bytes());
    bytes
}

/// The first byte of a [`encode_ints`] token; an [`encode`] envelope starts with `{`.
const INTS_FORM: u8 = 1;
/// Bytes of a [`encode_ints`] token before its fields: form, kind tag, filter.
const INTS_HEAD: usize = 1 + 4 + 8;

/// The 32-bit tag of `kind` an [`encode_ints`] token carries.
fn kind_tag(kind: &str) -> [u8; 4] {
    let [a, b, c, d, ..] = fnv1a(kind.as_bytes()).to_le_bytes();
    [a, b, c, d]
}

/// Encodes an integer position like [`encode`], in a compact binary form: the form
/// byte, a tag of `kind`, the filter fingerprint, each field as a zigzag varint
/// (protobuf's encoding), then the same checksum. A timeline cursor is about 55
/// characters this way instead of about 130, and costs no JSON: streams issue one
/// per event.
pub fn encode_ints(kind: &str, filter: u64, fields: &[i64]) -> String {
    let mut bytes = Vec::with_capacity(INTS_HEAD + 10 * fields.len() + 8);
    bytes.push(INTS_FORM);
    bytes.extend_from_slice(&kind_tag(kind));
    bytes.extend_from_slice(&filter.to_le_bytes());
    for &f in fields {
        prost::encoding::encode_varint(((f << 1) ^ (f >> 63)) as u64, &mut bytes);
    }
    let sum = checksum(&bytes);
    bytes.extend_from_slice(&sum.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a token of [`encode_ints`] issued for one of `kinds` and `filter`: `None`
/// when `token` is not of that form (it may be an [`encode`] envelope); the kind's
/// index in `kinds` and the fields otherwise. A token of the form that fails its
/// checks is INVALID_ARGUMENT on `field`, saying why.
pub fn decode_ints(
    field: &str,
    kinds: &[&str],
    filter: u64,
    token: &str,
) -> Result<Option<(usize, Vec<i64>)>, Error> {
    let invalid = |why: &str| Error::invalid(field, why);
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(token.as_bytes()) else {
        return Ok(None);
    };
    if bytes.first() != Some(&INTS_FORM) {
        return Ok(None);
    }
    if bytes.len() < INTS_HEAD + 8 {
        return Err(invalid("is not a token issued by this service"));
    }
    let (payload, sum) = bytes.split_at(bytes.len() - 8);
    if checksum(payload).to_be_bytes() != sum {
        return Err(invalid("is corrupted or was not issued by this service"));
    }
    let Some(kind) = kinds.iter().position(|k| kind_tag(k) == payload[1..5]) else {
        return Err(invalid("belongs to a different method"));
    };
    if payload[5..INTS_HEAD] != filter.to_le_bytes() {
        return Err(invalid("was issued for different filters"));
    }
    let mut rest = &payload[INTS_HEAD..];
    let mut fields = Vec::with_capacity(4);
    while !rest.is_empty() {
        let z = prost::encoding::decode_varint(&mut rest)
            .map_err(|_| invalid("is not a token issued by this service"))?;
        fields.push((z >> 1) as i64 ^ -((z & 1) as i64));
    }
    Ok(Some((kind, fields)))
}

/// Encodes a position that holds personal data (a phone, an email, a name), which must
/// not show in URLs or logs: the envelope of [`encode`] sealed with ChaCha20-Poly1305
/// under `key`, which every server of a deployment shares (`db::secrets`), behind a
/// random nonce. INTERNAL only when the OS has no randomness.
pub fn encode_sealed<T: Serialize>(
    key: &[u8; 32],
    kind: &str,
    filter: u64,
    position: &T,
) -> Result<String, Error> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
    let sealing = UnboundKey::new(&CHACHA20_POLY1305, key)
        .map(LessSafeKey::new)
        .map_err(|_| Error::Internal("page token key refused".into()))?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| Error::Internal(format!("no OS randomness: {e}")))?;
    let mut sealed = envelope_bytes(kind, filter, position);
    sealing
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(kind.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| Error::Internal("cannot seal a page token".into()))?;
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Decodes a token issued by [`encode_sealed`] under `key` for the same `kind` and
/// `filter`; any other token (also one sealed under another deployment's key) is
/// INVALID_ARGUMENT on `field`.
pub fn decode_sealed<T: DeserializeOwned>(
    field: &str,
    key: &[u8; 32],
    kind: &str,
    filter: u64,
    token: &str,
) -> Result<T, Error> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
    let invalid = || Error::invalid(field, "is not a token issued by this service");
    let bytes = URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .map_err(|_| invalid())?;
    if bytes.len() < NONCE_LEN {
        return Err(invalid());
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| invalid())?;
    let opening = UnboundKey::new(&CHACHA20_POLY1305, key)
        .map(LessSafeKey::new)
        .map_err(|_| Error::Internal("page token key refused".into()))?;
    let mut sealed = sealed.to_vec();
    let envelope = opening
        .open_in_place(nonce, Aad::from(kind.as_bytes()), &mut sealed)
        .map_err(|_| invalid())?;
    decode_envelope(field, kind, filter, envelope)
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
    let bytes = URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .map_err(|_| Error::invalid(field, "is not a token issued by this service"))?;
    decode_envelope(field, kind, filter, &bytes)
}

/// Checks and reads the envelope of a token (see [`decode`]).
fn decode_envelope<T: DeserializeOwned>(
    field: &str,
    kind: &str,
    filter: u64,
    bytes: &[u8],
) -> Result<T, Error> {
    let invalid = |why: &str| Error::invalid(field, why);
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

/// Checks a decoded `(microseconds, id)` position: the time must lie in the range the
/// service stores (1900-01-01..=9999-12-31) and the id must name a row (>= 1). Any
/// other position was not issued by this service: INVALID_ARGUMENT on `field`.
pub fn position(field: &str, us: i64, id: i64) -> Result<(NaiveDateTime, i64), Error> {
    match from_micros(us) {
        Some(t) if (MIN_TIME..=MAX_TIME).contains(&t) && id >= 1 => Ok((t, id)),
        _ => Err(Error::invalid(
            field,
            "holds a position out of range; it was not issued by this service",
        )),
    }
}

/// Decodes a token whose position is a row id (>= 1), like [`decode`].
pub fn decode_id(field: &str, kind: &str, filter: u64, token: &str) -> Result<i64, Error> {
    let id = decode::<i64>(field, kind, filter, token)?;
    if id < 1 {
        return Err(Error::invalid(
            field,
            "holds a position out of range; it was not issued by this service",
        ));
    }
    Ok(id)
}

/// The id a listing keyed by id continues after: `None` for the first page (no token)
/// and for a token not issued for `kind` and these filters (then a violation on
/// `page_token` is recorded).
pub fn after_id(v: &mut Violations, kind: &str, filter: u64, token: &str) -> Option<i64> {
    if token.is_empty() {
        return None;
    }
    v.absorb(decode_id("page_token", kind, filter, token))
}

/// The token of the page after `page`, for listings keyed by id: `page` holds up to
/// `limit + 1` rows (the one extra row says another page exists) and is cut to `limit`;
/// empty when it was the last page.
pub fn next_id_token<T>(
    page: &mut Vec<T>,
    limit: i64,
    kind: &str,
    filter: u64,
    id: impl Fn(&T) -> i64,
) -> String {
    if page.len() as i64 <= limit {
        return String::new();
    }
    page.truncate(limit as usize);
    page.last()
        .map(|r| encode(kind, filter, &id(r)))
        .unwrap_or_default()
}

/// Decodes a token whose position is a `(time, id)` keyset, like [`decode`], and
/// validates it with [`position`].
pub fn decode_time_id(
    field: &str,
    kind: &str,
    filter: u64,
    token: &str,
) -> Result<(NaiveDateTime, i64), Error> {
    let (us, id) = decode::<(i64, i64)>(field, kind, filter, token)?;
    position(field, us, id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_detects_tampering() {
        let f = Fingerprint::new("customers")
            .field("tag", "vip")
            .field("n", &3i64)
            .finish();
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

    /// The fingerprint of the filters in [`fingerprint_encoding_is_pinned`].
    fn sample_fingerprint() -> u64 {
        let start = from_micros(1_700_000_000_000_000).unwrap();
        Fingerprint::new("communications")
            .field("customer_id", &Some(7i64))
            .field("channels", &vec![1i32, 3])
            .field("direction", &None::<i32>)
            .field("start", &Some(start))
            .field("query", "café")
            .finish()
    }

    #[test]
    fn fingerprint_encoding_is_pinned() {
        // The documented encoding, spelled out byte by byte.
        let mut bytes = b"crm.v1/filter/1".to_vec();
        let name = |bytes: &mut Vec<u8>, n: &str| {
            bytes.extend_from_slice(&(n.len() as u64).to_le_bytes());
            bytes.extend_from_slice(n.as_bytes());
        };
        name(&mut bytes, "kind");
        bytes.push(b's');
        name(&mut bytes, "communications");
        name(&mut bytes, "customer_id");
        bytes.extend_from_slice(&[1, b'i']);
        bytes.extend_from_slice(&7i64.to_le_bytes());
        name(&mut bytes, "channels");
        bytes.push(b'l');
        bytes.extend_from_slice(&2u64.to_le_bytes());
        for c in [1i64, 3] {
            bytes.push(b'i');
            bytes.extend_from_slice(&c.to_le_bytes());
        }
        name(&mut bytes, "direction");
        bytes.push(0);
        name(&mut bytes, "start");
        bytes.extend_from_slice(&[1, b't']);
        bytes.extend_from_slice(&1_700_000_000_000_000i64.to_le_bytes());
        name(&mut bytes, "query");
        bytes.push(b's');
        name(&mut bytes, "café");
        assert_eq!(sample_fingerprint(), fnv1a(&bytes));
        // Golden value: if this changes, every page token in flight is invalidated.
        assert_eq!(sample_fingerprint(), GOLDEN_FINGERPRINT);
    }

    const GOLDEN_FINGERPRINT: u64 = 0x8c41_00ce_e175_3208;

    #[test]
    fn fingerprint_separates_field_boundaries_and_presence() {
        let fp = |f: Fingerprint| f.finish();
        let base = || Fingerprint::new("k");
        assert_ne!(
            fp(base().field("a", "bc").field("d", "")),
            fp(base().field("a", "b").field("d", "c"))
        );
        assert_ne!(
            fp(base().field("x", &None::<i64>)),
            fp(base().field("x", &Some(0i64)))
        );
        assert_ne!(
            fp(base().field("x", &Vec::<i64>::new())),
            fp(base().field("x", &vec![0i64]))
        );
        assert_ne!(fp(base().field("x", &1i64)), fp(base().field("y", &1i64)));
        assert_ne!(fp(Fingerprint::new("a")), fp(Fingerprint::new("b")));
    }

    #[test]
    fn positions_out_of_the_stored_range_are_invalid() {
        let year = |y: i32| {
            micros(
                chrono::NaiveDate::from_ymd_opt(y, 6, 1)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap(),
            )
        };
        assert!(position("page_token", year(2024), 1).is_ok());
        assert!(position("page_token", micros(MIN_TIME), 1).is_ok());
        assert!(position("page_token", micros(MAX_TIME), i64::MAX).is_ok());
        for (us, id) in [
            (year(20000), 1),
            (year(1899), 1),
            (year(2024), 0),
            (year(2024), -5),
            (i64::MAX, 1),
            (i64::MIN, 1),
        ] {
            let err = position("page_token", us, id).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(ref v) if v[0].field == "page_token"));
        }
        let f = Fingerprint::new("customers").finish();
        assert!(decode_id(
            "page_token",
            "customers",
            f,
            &encode("customers", f, &-1i64)
        )
        .is_err());
        assert_eq!(
            decode_id("page_token", "customers", f, &encode("customers", f, &9i64)).unwrap(),
            9
        );
        let t = encode("tickets", f, &(year(20000), 3i64));
        assert!(decode_time_id("page_token", "tickets", f, &t).is_err());
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

/// Properties of page tokens over arbitrary input: decoding never panics, and anything
/// the service did not issue for the same kind and filters is INVALID_ARGUMENT on the
/// token's field.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod token_properties {
    use proptest::prelude::*;

    use super::*;

    const FIELD: &str = "page_token";
    const KIND: &str = "communications";

    fn config() -> ProptestConfig {
        // Failures print the minimal input; no regression files in the source tree.
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(256)
        }
    }

    /// Whether `result` is INVALID_ARGUMENT naming exactly the token's field.
    fn is_invalid_token<T>(result: &Result<T, Error>) -> bool {
        matches!(result, Err(Error::InvalidArgument(v)) if v.len() == 1 && v[0].field == FIELD)
    }

    /// Microseconds of the stored time range.
    fn stored_micros() -> std::ops::RangeInclusive<i64> {
        micros(MIN_TIME)..=micros(MAX_TIME)
    }

    /// Microseconds anywhere, with weight on the stored range's edges.
    fn any_micros() -> impl Strategy<Value = i64> {
        let (lo, hi) = (micros(MIN_TIME), micros(MAX_TIME));
        prop_oneof![
            any::<i64>(),
            stored_micros(),
            (lo - 2)..=(lo + 2),
            (hi - 2)..=(hi + 2),
            Just(i64::MIN),
            Just(i64::MAX),
        ]
    }

    /// Ids anywhere, with weight around 0.
    fn any_id() -> impl Strategy<Value = i64> {
        prop_oneof![any::<i64>(), -2i64..=2, Just(i64::MIN), Just(i64::MAX)]
    }

    /// The `(time, id)` of a position the service issues tokens for.
    fn in_range(us: i64, id: i64) -> Option<(NaiveDateTime, i64)> {
        from_micros(us)
            .filter(|t| (MIN_TIME..=MAX_TIME).contains(t) && id >= 1)
            .map(|t| (t, id))
    }

    /// `token` with the character at `index` replaced by `with` (tokens are ASCII).
    fn replace_char(token: &str, index: usize, with: char) -> String {
        token
            .chars()
            .enumerate()
            .map(|(i, c)| if i == index { with } else { c })
            .collect()
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_text_is_never_a_token(filter in any::<u64>(), token in any::<String>()) {
            prop_assert!(is_invalid_token(&decode_time_id(FIELD, KIND, filter, &token)));
            prop_assert!(is_invalid_token(&decode_id(FIELD, KIND, filter, &token)));
            prop_assert!(is_invalid_token(&decode::<serde_json::Value>(FIELD, KIND, filter, &token)));
        }

        #[test]
        fn text_of_the_token_alphabet_is_never_a_token(
            filter in any::<u64>(),
            token in "[A-Za-z0-9_-]{0,160}",
        ) {
            prop_assert!(is_invalid_token(&decode_time_id(FIELD, KIND, filter, &token)));
            prop_assert!(is_invalid_token(&decode_id(FIELD, KIND, filter, &token)));
        }

        #[test]
        fn checksummed_garbage_is_never_a_token(
            filter in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            // Past base64 and the checksum, into the JSON envelope.
            let mut bytes = payload.clone();
            bytes.extend_from_slice(&checksum(&payload).to_be_bytes());
            let token = URL_SAFE_NO_PAD.encode(bytes);
            prop_assert!(is_invalid_token(&decode_time_id(FIELD, KIND, filter, &token)));
            prop_assert!(is_invalid_token(&decode_id(FIELD, KIND, filter, &token)));
        }

        #[test]
        fn a_well_formed_token_decodes_only_for_its_kind_filters_and_a_valid_position(
            filter in any::<u64>(),
            other_filter in any::<u64>(),
            same_filter in any::<bool>(),
            kind in prop_oneof![Just(KIND), Just("customers"), Just("timeline"), Just("")],
            us in any_micros(),
            id in any_id(),
        ) {
            let issued_for = if same_filter { filter } else { other_filter };
            let token = encode(kind, issued_for, &(us, id));
            let result = decode_time_id(FIELD, KIND, filter, &token);
            match in_range(us, id).filter(|_| kind == KIND && issued_for == filter) {
                Some(want) => prop_assert_eq!(result.unwrap(), want),
                None => prop_assert!(is_invalid_token(&result)),
            }
            let token = encode(kind, issued_for, &id);
            let result = decode_id(FIELD, KIND, filter, &token);
            if kind == KIND && issued_for == filter && id >= 1 {
                prop_assert_eq!(result.unwrap(), id);
            } else {
                prop_assert!(is_invalid_token(&result));
            }
            // A token of the other position shape is not one either.
            prop_assert!(is_invalid_token(&decode_id(FIELD, KIND, filter, &encode(kind, issued_for, &(us, id)))));
        }

        #[test]
        fn position_never_panics_and_accepts_exactly_the_stored_range(us in any_micros(), id in any_id()) {
            match in_range(us, id) {
                Some(want) => prop_assert_eq!(position(FIELD, us, id).unwrap(), want),
                None => prop_assert!(is_invalid_token(&position(FIELD, us, id))),
            }
        }

        #[test]
        fn a_token_with_one_character_changed_is_rejected(
            filter in any::<u64>(),
            us in stored_micros(),
            id in 1..=i64::MAX,
            index in any::<proptest::sample::Index>(),
            with in any::<char>(),
        ) {
            let token = encode(KIND, filter, &(us, id));
            prop_assert_eq!(decode_time_id(FIELD, KIND, filter, &token).unwrap(), in_range(us, id).unwrap());
            let i = index.index(token.len());
            prop_assume!(token.chars().nth(i) != Some(with));
            let tampered = replace_char(&token, i, with);
            prop_assert!(is_invalid_token(&decode_time_id(FIELD, KIND, filter, &tampered)));
        }

        #[test]
        fn a_token_with_one_bit_flipped_is_rejected(
            filter in any::<u64>(),
            us in stored_micros(),
            id in 1..=i64::MAX,
            index in any::<proptest::sample::Index>(),
            bit in 0u32..8,
        ) {
            // FNV-1a changes with any one byte of the payload, so this always fails.
            let mut raw = URL_SAFE_NO_PAD.decode(encode(KIND, filter, &(us, id))).unwrap();
            let i = index.index(raw.len());
            raw[i] ^= 1 << bit;
            let tampered = URL_SAFE_NO_PAD.encode(raw);
            prop_assert!(is_invalid_token(&decode_time_id(FIELD, KIND, filter, &tampered)));
        }
    }
}

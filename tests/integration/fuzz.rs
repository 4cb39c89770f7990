//! A fuzz suite over every RPC of every `crm.v1` service: "0 panics".
//!
//! The methods are read from the API's own descriptor set
//! (`crm_comms::pb::FILE_DESCRIPTOR_SET`), so an RPC added later is fuzzed without a
//! change here. For each method a seeded generator writes protobuf wire bytes guided by
//! the request message's descriptor: each field present or not, values biased to
//! boundaries and nasties (integer extremes, unknown and negative enum numbers, empty,
//! whitespace-only, 64 KiB + 1, Chinese, accented, RTL, zero-width, NUL, `%_\`,
//! invalid-regex strings, timestamps and durations out of range, field masks, random,
//! truncated and tampered page tokens and cursors, nested messages to a bounded depth,
//! repeated fields from empty to over a thousand items), and now and then bytes that do
//! not decode at all (random bytes, a wrong wire type, invalid UTF-8, truncation, a bad
//! length, an over-long varint, field number 0, an open group). The bytes go through the
//! real server on a raw-bytes codec: unary calls, client streams of 0..N items
//! (ImportCommunications), server streams read for a few messages and then dropped
//! (StreamTimeline, the watched reports; a `follow` stream or a watch is dropped after a
//! short idle time), each with a 10 s deadline.
//!
//! Every answer must be OK or a status that is not UNKNOWN, INTERNAL or UNIMPLEMENTED
//! and carries a `google.rpc.ErrorInfo` in domain `crm.v1`; a transport error, a reset
//! stream or a stream that ends without a status (what a panicking handler gives) fails
//! the same check, since none of them carries details. The one exception is tonic's own
//! answer to a request message that does not decode, see [`tonic_decode_error`]. After
//! the run the server must still answer a normal call on each service and
//! `grpc.health.v1.Health/Check`. A table of what each method answered is printed (shown
//! with `--nocapture`).
//!
//! "A rejected request writes nothing": before and after every call the test reads a
//! footprint of the database straight from it, in one SELECT (row counts of every table
//! a request writes, soft-deleted customers, and the sums of the optimistic-lock
//! versions, see [`FOOTPRINT`]). A call answered with any non-OK status must leave it
//! unchanged. The exception is ImportCommunications, which documents that the valid
//! items before a malformed or oversized item are stored: there the new communications
//! must be at most the well-formed items before the first bad one (found by decoding
//! each item as the server does, and checked against the `items[N]` the server names),
//! the new audit records at most the batches those items make and at least one when any
//! was stored, and nothing else may change. The table counts the refused calls of each
//! method and the rows they wrote (which must be 0).
//!
//! Knobs (environment):
//! - `CRM_FUZZ_CASES`: requests per method and backend (default 150, about 7-9 s).
//! - `CRM_FUZZ_SEED`: the seed, decimal or `0x` hex (default a fixed seed, printed).
//! - `CRM_FUZZ_METHODS`: comma-separated method names (`GetContentReport`) to fuzz only
//!   those.
//! - `CRM_FUZZ_VERBOSE=1`: one line per call (method, case, code, message).
//! - `RUST_LOG` (e.g. `crm_comms=warn`): the server's log, where an INTERNAL's cause is.
//! - `CRM_FUZZ_REPLAY_HEX`: with `CRM_FUZZ_METHODS` naming one method, sends exactly
//!   this request (hex; client-stream items separated by `,`) instead of fuzzing.
//!
//! A failure prints the seed, the method, the case number, the request in text form
//! and in hex (the whole hex is also written to a file under the temp directory), and
//! what came back.
//!
//! The long run (400,000 calls per backend, about 10 minutes in a debug build; the two
//! backends run side by side; any seed, it is printed):
//!
//! ```text
//! CRM_FUZZ_CASES=20000 CRM_FUZZ_SEED=$RANDOM cargo test --test integration -- fuzz --nocapture
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use bytes::{Buf, BufMut, Bytes};
use crm_comms::pb;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::backend_tests;
use crate::harness::{new_customer, ts, Backend, TestApp};

/// Requests per method when `CRM_FUZZ_CASES` is unset: the CI-sized run.
const DEFAULT_CASES: usize = 150;
/// Seed when `CRM_FUZZ_SEED` is unset, so CI runs are reproducible.
const DEFAULT_SEED: u64 = 0x5eed_c0de_f0f0_2024;
/// The deadline of every call (`grpc-timeout`).
const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// How long the test waits for any one call before calling it hung.
const CALL_GUARD: Duration = Duration::from_secs(15);
/// Messages read from a server stream before it is dropped.
const STREAM_READ: usize = 5;
/// How long a server stream may be idle: longer is a hang, except for a `follow`
/// stream, which stays open after the history and is dropped after a short wait.
const STREAM_IDLE: Duration = Duration::from_secs(5);
const FOLLOW_IDLE: Duration = Duration::from_millis(300);
/// Deepest nesting of generated messages.
const MAX_DEPTH: u32 = 4;
/// Bytes of strings and bytes one request may hold (well under tonic's 4 MiB limit).
const REQUEST_BUDGET: usize = 512 << 10;
/// Bytes of all the items of one client stream.
const STREAM_BUDGET: usize = 2 << 20;
/// Services that must be found in the descriptor set.
const SERVICES: [&str; 3] = [
    "crm.v1.CustomerService",
    "crm.v1.CommunicationService",
    "crm.v1.AnalyticsService",
];

backend_tests! {
    async fn every_rpc_answers_fuzzed_requests_with_a_proper_status(app: &TestApp) {
        fuzz_every_rpc(app).await;
    }
}

// ---------------------------------------------------------------------------------
// The raw-bytes codec: requests are written by the generator, responses kept as bytes.

/// A codec that passes message bytes through unchanged.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

/// Writes one message's bytes as they are.
#[derive(Debug)]
struct RawEncoder;

/// Reads one message's bytes as they are.
#[derive(Debug)]
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

// ---------------------------------------------------------------------------------
// The API as the descriptor set describes it.

/// One RPC.
#[derive(Debug, Clone)]
struct Method {
    /// Full service name, `crm.v1.CustomerService`.
    service: String,
    /// Method name, `CreateCustomer`.
    name: String,
    /// Full request type name with a leading dot, `.crm.v1.CreateCustomerRequest`.
    input: String,
    /// Full response type name.
    output: String,
    client_streaming: bool,
    server_streaming: bool,
}

impl Method {
    fn path(&self) -> String {
        format!("/{}/{}", self.service, self.name)
    }

    fn label(&self) -> String {
        let service = self.service.rsplit('.').next().unwrap_or(&self.service);
        format!("{}/{}", service.trim_end_matches("Service"), self.name)
    }
}

/// Messages and enums by full name (leading dot), and the `crm.v1` methods.
struct Schema {
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, Vec<i32>>,
    methods: Vec<Method>,
    /// Every field name of every `crm.v1` message: field-mask paths.
    field_names: Vec<String>,
}

impl Schema {
    fn load() -> Schema {
        let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET)
            .expect("FILE_DESCRIPTOR_SET decodes as a FileDescriptorSet");
        let mut schema = Schema {
            messages: HashMap::new(),
            enums: HashMap::new(),
            methods: Vec::new(),
            field_names: Vec::new(),
        };
        let mut names = HashSet::new();
        for file in &set.file {
            let package = file.package();
            let prefix = if package.is_empty() {
                String::new()
            } else {
                format!(".{package}")
            };
            for e in &file.enum_type {
                schema.add_enum(&prefix, e);
            }
            for m in &file.message_type {
                schema.add_message(&prefix, m, package == "crm.v1", &mut names);
            }
            if package != "crm.v1" {
                continue;
            }
            for service in &file.service {
                for m in &service.method {
                    schema.methods.push(Method {
                        service: format!("{package}.{}", service.name()),
                        name: m.name().to_owned(),
                        input: m.input_type().to_owned(),
                        output: m.output_type().to_owned(),
                        client_streaming: m.client_streaming(),
                        server_streaming: m.server_streaming(),
                    });
                }
            }
        }
        schema.field_names = names.into_iter().collect();
        schema.field_names.sort();
        schema
    }

    fn add_enum(&mut self, prefix: &str, e: &prost_types::EnumDescriptorProto) {
        let numbers = e.value.iter().map(|v| v.number()).collect();
        self.enums.insert(format!("{prefix}.{}", e.name()), numbers);
    }

    fn add_message(
        &mut self,
        prefix: &str,
        m: &DescriptorProto,
        ours: bool,
        names: &mut HashSet<String>,
    ) {
        let full = format!("{prefix}.{}", m.name());
        for e in &m.enum_type {
            self.add_enum(&full, e);
        }
        for nested in &m.nested_type {
            self.add_message(&full, nested, ours, names);
        }
        if ours {
            names.extend(m.field.iter().map(|f| f.name().to_owned()));
        }
        self.messages.insert(full, m.clone());
    }
}

// ---------------------------------------------------------------------------------
// A small seeded generator (SplitMix64).

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with `percent` % probability.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// FNV-1a of a string: per-method seeds that do not depend on the method order.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The seed of one case: independent of the other methods and cases.
fn case_seed(seed: u64, method: &Method, case: usize) -> u64 {
    let mut r = Rng::new(seed ^ fnv(&method.path()) ^ (case as u64).wrapping_mul(0x2545_f491));
    r.next_u64()
}

// ---------------------------------------------------------------------------------
// Protobuf wire writing.

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const FIXED32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, number: u32, wire: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire));
}

fn put_len(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_tag(out, number, LEN);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// The wire type a field of type `t` is written with (unpacked).
fn wire_type(t: Type) -> u8 {
    match t {
        Type::Double | Type::Fixed64 | Type::Sfixed64 => FIXED64,
        Type::Float | Type::Fixed32 | Type::Sfixed32 => FIXED32,
        Type::String | Type::Bytes | Type::Message | Type::Group => LEN,
        _ => VARINT,
    }
}

/// A wire type prost refuses for a field of type `t`, repeated or not.
fn wrong_wire_type(t: Type) -> u8 {
    match wire_type(t) {
        LEN => VARINT,
        FIXED32 => FIXED64,
        _ => FIXED32,
    }
}

// ---------------------------------------------------------------------------------
// Values: boundaries and nasties.

const I64_EDGES: [i64; 16] = [
    0,
    1,
    -1,
    2,
    i64::MIN,
    i64::MAX,
    i64::MIN + 1,
    i64::MAX - 1,
    i32::MIN as i64,
    i32::MAX as i64,
    u32::MAX as i64,
    1000,
    1001,
    10_000,
    -1000,
    9_007_199_254_740_993,
];

const I32_EDGES: [i32; 18] = [
    0,
    1,
    -1,
    2,
    i32::MIN,
    i32::MAX,
    i32::MIN + 1,
    i32::MAX - 1,
    10,
    20,
    21,
    50,
    100,
    101,
    200,
    201,
    1000,
    1001,
];

const ENUM_NASTIES: [i32; 8] = [-1, i32::MIN, i32::MAX, 6, 99, 1000, -2, 65_536];

/// Seconds of notable instants: the stored range's edges and well past them.
const SECONDS_EDGES: [i64; 16] = [
    0,
    -1,
    1_000_000_000_000,
    -1_000_000_000_000,
    -62_167_219_200, // 0000-01-01
    -62_135_596_800, // 0001-01-01
    253_402_300_800, // 10000-01-01
    253_402_300_799, // 9999-12-31T23:59:59
    253_402_214_400, // 9999-12-31T00:00:00
    253_402_214_399,
    -2_208_988_800, // 1900-01-01
    -2_208_988_801,
    i64::MAX,
    i64::MIN,
    4_102_444_800, // 2100-01-01
    1_704_067_200, // 2024-01-01
];

const NANOS_EDGES: [i32; 7] = [
    -1,
    1_000_000_000,
    999_999_999,
    i32::MAX,
    i32::MIN,
    -999_999_999,
    1,
];

/// Strings that have broken services before.
fn nasty_strings() -> Vec<String> {
    vec![
        String::new(),
        "a".into(),
        "字".into(),
        "x".repeat(64 * 1024 + 1),
        "x".repeat(64 * 1024),
        "字".repeat(21_846),
        "   ".into(),
        " \t\r\n ".into(),
        "\u{3000}\u{a0}\u{2003}".into(),
        "MiXeD CaSe Ünïcödé café ÉCOLE ǅ ß ẞ İstanbul".into(),
        "客户询问退款进度，请尽快处理".into(),
        "%_\\".into(),
        "%".into(),
        "_".into(),
        "\\".into(),
        "100%_off\\n".into(),
        "(".into(),
        "[a-".into(),
        "a{99999}".into(),
        "(?P<x".into(),
        "*".into(),
        "a**".into(),
        "(a+)+$".into(),
        ".{1000}{1000}".into(),
        "\\p{Nope}".into(),
        "(?i)退款|refund".into(),
        "\u{202e}evil\u{202c} مرحبا עברית".into(),
        "\u{200b}\u{200c}\u{200d}\u{feff}".into(),
        "a\u{0}b".into(),
        "\u{0}".into(),
        "\u{1b}[31mred\u{1b}[0m".into(),
        "e\u{301}\u{301}\u{301}".into(),
        "👍🏽👨‍👩‍👧\u{10ffff}".into(),
        "'; DROP TABLE customers; --".into(),
        "\" OR 1=1 --".into(),
        "x".repeat(51),
        "x".repeat(65),
        "x".repeat(201),
        "x".repeat(255),
        "x".repeat(501),
        "x".repeat(1001),
        "x".repeat(4001),
        "null".into(),
        "${jndi:ldap://x}".into(),
    ]
}

/// Plausible or almost plausible values for a field, by its name.
fn hints(name: &str) -> Vec<String> {
    let v = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
    match name {
        n if n.contains("email") => v(&[
            "a@b.co",
            "Zhang.San@Example.COM",
            " x@y.cn ",
            "bad@",
            "@x.com",
            "a@b",
            "a@@b.com",
            ".a@b.com",
            "a@-b.com",
            "用户@例子.中国",
        ]),
        n if n.contains("phone") => v(&[
            "+86 138-0000-0000",
            "0086 13800000000",
            "(010) 1234 5678",
            "12345",
            "1234",
            "+0123456",
            "+1234567890123456",
            "call me",
            "00",
            "+",
        ]),
        "birth_date" => v(&[
            "1990-02-28",
            "1990-02-30",
            "2999-01-01",
            "1899-12-31",
            "1900-01-01",
            "0000-01-01",
            "1990-2-3",
            "9999-12-31",
            "2000-02-29",
            "１９９０-０１-０１",
        ]),
        "time_zone" => v(&[
            "UTC",
            "Asia/Shanghai",
            "America/New_York",
            "Europe/London",
            "Asia/Kolkata",
            "Pacific/Chatham",
            "utc",
            "Mars/Olympus",
            "+08:00",
            "Etc/GMT+14",
        ]),
        // Customer.address is postal, Email.address an email address.
        "address" => v(&["上海市浦东新区 1 号", "1 Main St.", "a@b.co", "Bad@", "\n"]),
        "currency_code" => v(&["CNY", "USD", "EUR", "usd", "EURO", "US", "€€€", "ＵＳＤ"]),
        "request_id" => v(&["k1", "k2", "same-key", " spaced ", "键", "K1"]),
        "tag" | "tags" => v(&["vip", " vip ", "VIP", "churn-risk", "新客户", "Vip"]),
        "name" => v(&["张三", "Zhang San", "Ünïcödé", "Li Si"]),
        "query" | "keywords" => v(&["退款", "refund", "REFUND", "zhang", "138", "@example", "é"]),
        "patterns" => v(&[
            "退款|refund",
            "^\\d+$",
            "(?i)vip",
            "\\bcall\\b",
            "[a-z]+@",
            ".",
        ]),
        "content" | "subject" | "issue" | "solution" | "outcome" => v(&[
            "refund please",
            "客户询问退款进度 refund status please",
            "call back tomorrow",
        ]),
        "platform" => v(&["wechat", "web", "whatsapp"]),
        "order_number" => v(&["SO-1", "SO-2", "订单-3"]),
        "product" => v(&["widget", "手机壳"]),
        _ => Vec::new(),
    }
}

/// Characters random strings are made of: ASCII, accents, CJK, RTL, zero-width,
/// controls, emoji.
const CHARS: &[char] = &[
    'a',
    'Z',
    '0',
    '9',
    ' ',
    '\t',
    '\n',
    '%',
    '_',
    '\\',
    '.',
    '*',
    '(',
    '[',
    '{',
    '|',
    '@',
    '+',
    '-',
    '\'',
    '"',
    'é',
    'Ü',
    'ß',
    'İ',
    '字',
    '客',
    '退',
    'ا',
    'ע',
    '\u{202e}',
    '\u{200b}',
    '\u{feff}',
    '\u{0}',
    '\u{7f}',
    '\u{1b}',
    '😀',
    '\u{10ffff}',
    '\u{3000}',
];

/// Byte sequences that are not UTF-8.
const INVALID_UTF8: [&[u8]; 7] = [
    &[0xff],
    &[0xc3],
    &[0xe5, 0xad],
    &[b'a', 0x80, b'b'],
    &[0xed, 0xa0, 0x80],
    &[0xf4, 0x90, 0x80, 0x80],
    &[0xc0, 0xaf],
];

/// What the generator knows about the running server: ids and tokens it answered with.
#[derive(Debug, Default)]
struct Pools {
    /// Every id seen.
    ids: Vec<i64>,
    /// Ids by entity (`customer`, `service_ticket`): the `id` of a message of that type
    /// or an `<entity>_id` field.
    by_entity: BTreeMap<String, Vec<i64>>,
    tokens: Vec<String>,
    /// Short strings seen, by field name (`etag`, `order_number`, ...).
    strings: BTreeMap<String, Vec<String>>,
}

impl Pools {
    fn add_id(&mut self, entity: &str, id: i64) {
        if id <= 0 {
            return;
        }
        if !self.ids.contains(&id) && self.ids.len() < 500 {
            self.ids.push(id);
        }
        let ids = self.by_entity.entry(entity.to_owned()).or_default();
        if !ids.contains(&id) && ids.len() < 100 {
            ids.push(id);
        }
    }

    /// The ids of the entity an integer field names: `customer_id` -> customers, `id`
    /// of `GetCommunicationRequest` -> communications (the longest entity named).
    fn ids_for(&self, field: &str, message: &str) -> Option<&Vec<i64>> {
        let subject = match field.strip_suffix("_id") {
            Some(entity) => entity.to_owned(),
            None if field == "id" => snake_case(message),
            None => return None,
        };
        self.by_entity
            .iter()
            .filter(|(entity, _)| subject.contains(entity.as_str()))
            .max_by_key(|(entity, _)| entity.len())
            .map(|(_, ids)| ids)
    }

    fn add_string(&mut self, field: &str, value: &str) {
        let values = self.strings.entry(field.to_owned()).or_default();
        if !value.is_empty()
            && value.len() <= 100
            && !values.iter().any(|v| v == value)
            && values.len() < 50
        {
            values.push(value.to_owned());
        }
    }

    fn add_token(&mut self, token: String) {
        if !token.is_empty() && !self.tokens.contains(&token) && self.tokens.len() < 500 {
            self.tokens.push(token);
        }
    }
}

/// How a request is spoiled on purpose so that it does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spoil {
    RandomBytes,
    InvalidUtf8,
    Truncate,
    WrongWireType,
    OverlongVarint,
    BadLength,
    TagZero,
    OpenGroup,
    BadWireType,
}

const SPOILS: [Spoil; 9] = [
    Spoil::RandomBytes,
    Spoil::InvalidUtf8,
    Spoil::Truncate,
    Spoil::WrongWireType,
    Spoil::OverlongVarint,
    Spoil::BadLength,
    Spoil::TagZero,
    Spoil::OpenGroup,
    Spoil::BadWireType,
];

/// One generated request message.
#[derive(Debug, Clone)]
struct Generated {
    bytes: Bytes,
    /// Spoiled on purpose: it may not decode.
    spoiled: Option<Spoil>,
    /// Sets a top-level bool field named `follow`: a stream that may stay open.
    follow: bool,
}

/// Writes protobuf messages from their descriptors.
struct Gen<'a> {
    schema: &'a Schema,
    pools: &'a Pools,
    rng: Rng,
    /// Bytes of strings and bytes still allowed in this request.
    budget: usize,
    /// Write some strings as invalid UTF-8.
    invalid_utf8: bool,
    wrote_invalid_utf8: bool,
    follow: bool,
    /// The message whose fields are being written.
    parent: String,
    /// The name of the field whose message is being written.
    field_name: String,
    /// Percent of values drawn from the nasties; the others are plausible, so that
    /// some requests get past validation to the queries and reports behind it.
    nasty: usize,
}

impl<'a> Gen<'a> {
    fn new(schema: &'a Schema, pools: &'a Pools, rng: Rng, budget: usize) -> Gen<'a> {
        Gen {
            schema,
            pools,
            rng,
            budget,
            invalid_utf8: false,
            wrote_invalid_utf8: false,
            follow: false,
            parent: String::new(),
            field_name: String::new(),
            nasty: 50,
        }
    }

    /// Whether the next value is a nasty one.
    fn nasty(&mut self) -> bool {
        let percent = self.nasty;
        self.rng.chance(percent)
    }

    /// One request of type `type_name`; spoiled on purpose about one time in twelve.
    fn request(&mut self, type_name: &str) -> Generated {
        self.invalid_utf8 = false;
        self.wrote_invalid_utf8 = false;
        self.follow = false;
        self.nasty = *self.rng.pick(&[0, 3, 10, 30, 60]);
        let spoil = self.rng.chance(8).then(|| *self.rng.pick(&SPOILS));
        let mut out = Vec::new();
        if spoil == Some(Spoil::RandomBytes) {
            let n = self.rng.between(1, 300);
            out.extend((0..n).map(|_| self.rng.next_u64() as u8));
            return Generated {
                bytes: out.into(),
                spoiled: spoil,
                follow: false,
            };
        }
        self.invalid_utf8 = spoil == Some(Spoil::InvalidUtf8);
        self.message(type_name, 0, &mut out);
        let fields = self
            .schema
            .messages
            .get(type_name)
            .map(|m| m.field.clone())
            .unwrap_or_default();
        let any_number = if fields.is_empty() {
            1
        } else {
            self.rng.pick(&fields).number()
        };
        let spoiled = match spoil {
            None | Some(Spoil::RandomBytes) => spoil,
            Some(Spoil::InvalidUtf8) => self.wrote_invalid_utf8.then_some(Spoil::InvalidUtf8),
            Some(Spoil::Truncate) => {
                if out.len() < 2 {
                    None
                } else {
                    out.truncate(self.rng.between(1, out.len() - 1));
                    spoil
                }
            }
            Some(Spoil::WrongWireType) => {
                if fields.is_empty() {
                    None
                } else {
                    let f = self.rng.pick(&fields).clone();
                    let wire = wrong_wire_type(f.r#type());
                    put_tag(&mut out, f.number() as u32, wire);
                    match wire {
                        FIXED64 => out.extend_from_slice(&[7; 8]),
                        FIXED32 => out.extend_from_slice(&[7; 4]),
                        _ => put_varint(&mut out, 7),
                    }
                    spoil
                }
            }
            Some(Spoil::OverlongVarint) => {
                put_tag(&mut out, any_number as u32, VARINT);
                out.extend_from_slice(&[0xff; 11]);
                spoil
            }
            Some(Spoil::BadLength) => {
                put_tag(&mut out, any_number as u32, LEN);
                put_varint(&mut out, 1 << 20);
                out.extend_from_slice(b"abc");
                spoil
            }
            Some(Spoil::TagZero) => {
                out.push(0);
                spoil
            }
            Some(Spoil::OpenGroup) => {
                put_tag(&mut out, 9999, START_GROUP);
                spoil
            }
            Some(Spoil::BadWireType) => {
                put_tag(&mut out, 9999, if self.rng.chance(50) { 6 } else { 7 });
                spoil
            }
        };
        Generated {
            bytes: out.into(),
            spoiled,
            follow: self.follow,
        }
    }

    /// Appends the fields of a message of type `type_name`.
    fn message(&mut self, type_name: &str, depth: u32, out: &mut Vec<u8>) {
        match type_name {
            ".google.protobuf.Timestamp" => return self.timestamp(out),
            ".google.protobuf.Duration" => return self.duration(out),
            ".google.protobuf.FieldMask" => return self.field_mask(out),
            _ => {}
        }
        let schema: &'a Schema = self.schema;
        let Some(descriptor) = schema.messages.get(type_name) else {
            return;
        };
        let outer = std::mem::replace(&mut self.parent, type_name.to_owned());
        // One member of each real oneof (synthetic ones of `optional` fields are plain).
        let mut chosen: HashMap<i32, i32> = HashMap::new();
        for (index, _) in descriptor.oneof_decl.iter().enumerate() {
            let members: Vec<i32> = descriptor
                .field
                .iter()
                .filter(|f| f.oneof_index == Some(index as i32) && !f.proto3_optional())
                .map(FieldDescriptorProto::number)
                .collect();
            if !members.is_empty() {
                chosen.insert(index as i32, *self.rng.pick(&members));
            }
        }
        let mut fields: Vec<&'a FieldDescriptorProto> = descriptor.field.iter().collect();
        if self.rng.chance(10) {
            // Field order on the wire is free.
            for i in (1..fields.len()).rev() {
                let j = self.rng.below(i + 1);
                fields.swap(i, j);
            }
        }
        for f in fields {
            let present = match f.oneof_index {
                Some(i) if !f.proto3_optional() => {
                    // Mostly one member; sometimes none, sometimes several (last wins).
                    let p = if self.nasty == 0 { 50 } else { 70 };
                    (chosen.get(&i) == Some(&f.number()) && self.rng.chance(p))
                        || (self.nasty > 0 && self.rng.chance(5))
                }
                // Gentle requests carry most fields, and their messages nearly always.
                _ if self.nasty >= 20 => self.rng.chance(60),
                _ if f.r#type() == Type::Message => self.rng.chance(92),
                _ if self.nasty == 0 => self.rng.chance(90),
                _ => self.rng.chance(75),
            };
            if !present {
                continue;
            }
            self.field(f, depth, out);
            if f.label() != Label::Repeated && self.rng.chance(3) {
                // The same field twice: the last value wins, messages merge.
                self.field(f, depth, out);
            }
        }
        if self.rng.chance(5) {
            // An unknown field, which a receiver must skip.
            let max = descriptor
                .field
                .iter()
                .map(|f| f.number())
                .max()
                .unwrap_or(0);
            let number = (max + 50 + self.rng.below(1000) as i32) as u32;
            match self.rng.below(4) {
                0 => {
                    put_tag(out, number, VARINT);
                    put_varint(out, self.rng.next_u64());
                }
                1 => {
                    put_tag(out, number, FIXED64);
                    out.extend_from_slice(&self.rng.next_u64().to_le_bytes());
                }
                2 => {
                    put_tag(out, number, FIXED32);
                    out.extend_from_slice(&(self.rng.next_u64() as u32).to_le_bytes());
                }
                _ => put_len(out, number, b"\xff\x00unknown"),
            }
        }
        self.parent = outer;
    }

    /// Appends one field: one value, or 0..N items of a repeated field.
    fn field(&mut self, f: &FieldDescriptorProto, depth: u32, out: &mut Vec<u8>) {
        let number = f.number() as u32;
        let t = f.r#type();
        if f.label() != Label::Repeated {
            if depth == 0 && t == Type::Bool && f.name() == "follow" {
                // Recorded below from the value written.
                let mut value = Vec::new();
                self.scalar(f, &mut value);
                self.follow = value.iter().any(|b| *b != 0);
                put_tag(out, number, VARINT);
                out.extend_from_slice(&value);
                return;
            }
            self.tagged_value(f, depth, out);
            return;
        }
        let count = match self.rng.below(100) {
            _ if !self.nasty() => self.rng.between(0, 3),
            0..=24 => 0,
            25..=69 => self.rng.between(1, 3),
            70..=89 => self.rng.between(4, 20),
            90..=96 => self.rng.between(21, 200),
            _ => self.rng.between(1001, 1500),
        };
        let packable = wire_type(t) != LEN;
        if packable && self.rng.chance(80) {
            let mut payload = Vec::new();
            for _ in 0..count {
                self.scalar(f, &mut payload);
            }
            put_len(out, number, &payload);
        } else {
            for _ in 0..count {
                if self.budget == 0 && wire_type(t) == LEN {
                    break;
                }
                self.tagged_value(f, depth, out);
            }
        }
    }

    /// Appends the tag and one value of field `f`.
    fn tagged_value(&mut self, f: &FieldDescriptorProto, depth: u32, out: &mut Vec<u8>) {
        let number = f.number() as u32;
        match f.r#type() {
            Type::Message | Type::Group => {
                let mut nested = Vec::new();
                if depth < MAX_DEPTH {
                    self.field_name = f.name().to_owned();
                    self.message(f.type_name(), depth + 1, &mut nested);
                }
                put_len(out, number, &nested);
            }
            Type::String => {
                let value = self.string_bytes(f.name());
                put_len(out, number, &value);
            }
            Type::Bytes => {
                let n = self.rng.below(64).min(self.budget);
                self.budget -= n;
                let value: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                put_len(out, number, &value);
            }
            t => {
                put_tag(out, number, wire_type(t));
                self.scalar(f, out);
            }
        }
    }

    /// Appends one scalar value (no tag) of field `f`.
    fn scalar(&mut self, f: &FieldDescriptorProto, out: &mut Vec<u8>) {
        match f.r#type() {
            Type::Int64 | Type::Uint64 => {
                let known = self.pools.ids_for(f.name(), &self.parent);
                let v = match known {
                    Some(ids) if !ids.is_empty() && self.rng.chance(60) => *self.rng.pick(ids),
                    _ => self.int64(),
                };
                put_varint(out, v as u64);
            }
            Type::Int32 => put_varint(out, i64::from(self.int32()) as u64),
            Type::Uint32 => put_varint(out, u64::from(self.int32() as u32)),
            Type::Sint64 => {
                let v = self.int64();
                put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
            }
            Type::Sint32 => {
                let v = self.int32();
                put_varint(out, u64::from(((v << 1) ^ (v >> 31)) as u32));
            }
            Type::Fixed64 | Type::Sfixed64 => out.extend_from_slice(&self.int64().to_le_bytes()),
            Type::Fixed32 | Type::Sfixed32 => out.extend_from_slice(&self.int32().to_le_bytes()),
            Type::Double => {
                let v = *self.rng.pick(&[
                    0.0,
                    -0.0,
                    1.5,
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::MAX,
                    f64::MIN_POSITIVE,
                ]);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Type::Float => {
                let v = *self
                    .rng
                    .pick(&[0.0f32, -0.0, 1.5, f32::NAN, f32::INFINITY, f32::MAX]);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Type::Bool => {
                let v = match self.rng.below(100) {
                    n if n < 96 && !self.nasty() => u64::from(n % 2 == 0),
                    0..=47 => 0,
                    48..=95 => 1,
                    96..=97 => 2,
                    _ => u64::MAX,
                };
                put_varint(out, v);
            }
            Type::Enum => {
                let known = self
                    .schema
                    .enums
                    .get(f.type_name())
                    .cloned()
                    .unwrap_or_default();
                let v = if !known.is_empty() && !self.nasty() {
                    let set: Vec<i32> = known.iter().copied().filter(|v| *v != 0).collect();
                    if set.is_empty() || self.rng.chance(15) {
                        *self.rng.pick(&known)
                    } else {
                        *self.rng.pick(&set)
                    }
                } else {
                    *self.rng.pick(&ENUM_NASTIES)
                };
                put_varint(out, i64::from(v) as u64);
            }
            // Length-delimited types are written by `tagged_value`.
            Type::String | Type::Bytes | Type::Message | Type::Group => put_varint(out, 0),
        }
    }

    fn int64(&mut self) -> i64 {
        if !self.nasty() {
            return if self.pools.ids.is_empty() || self.rng.chance(20) {
                self.rng.between(1, 20) as i64
            } else {
                *self.rng.pick(&self.pools.ids)
            };
        }
        match self.rng.below(100) {
            0..=34 if !self.pools.ids.is_empty() => *self.rng.pick(&self.pools.ids),
            0..=69 => *self.rng.pick(&I64_EDGES),
            70..=84 => self.rng.between(1, 20) as i64,
            _ => self.rng.next_u64() as i64,
        }
    }

    fn int32(&mut self) -> i32 {
        if !self.nasty() {
            return self.rng.between(0, 100) as i32;
        }
        match self.rng.below(100) {
            0..=64 => *self.rng.pick(&I32_EDGES),
            65..=84 => self.rng.between(0, 20) as i32,
            _ => self.rng.next_u64() as i32,
        }
    }

    /// A string value for a field named `name`, as bytes (invalid UTF-8 when asked).
    fn string_bytes(&mut self, name: &str) -> Vec<u8> {
        if self.invalid_utf8 && self.rng.chance(40) {
            self.wrote_invalid_utf8 = true;
            let mut v = b"ok ".to_vec();
            let bad = *self.rng.pick::<&[u8]>(&INVALID_UTF8);
            v.extend_from_slice(bad);
            return v;
        }
        let s = self.string(name);
        if s.len() > self.budget {
            return b"over budget".to_vec();
        }
        self.budget -= s.len();
        s.into_bytes()
    }

    fn string(&mut self, name: &str) -> String {
        if name.ends_with("token") || name.ends_with("cursor") {
            return self.token();
        }
        let mut hinted = hints(name);
        if let Some(seen) = self.pools.strings.get(name) {
            // Values the server answered with (etags, order numbers) come first.
            let mut seen = seen.clone();
            seen.append(&mut hinted);
            hinted = seen;
        }
        if !self.nasty() {
            return if hinted.is_empty() {
                (*self
                    .rng
                    .pick(&["", "refund", "vip", "张三", "call back", "a"]))
                .to_owned()
            } else {
                self.rng.pick(&hinted[..hinted.len().min(4)]).clone()
            };
        }
        match self.rng.below(100) {
            0..=49 if !hinted.is_empty() => self.rng.pick(&hinted).clone(),
            0..=79 => {
                let nasty = nasty_strings();
                self.rng.pick(&nasty).clone()
            }
            _ => {
                let n = self.rng.below(40);
                (0..n).map(|_| *self.rng.pick(CHARS)).collect()
            }
        }
    }

    /// A page token or cursor: real, tampered, truncated, forged or garbage.
    fn token(&mut self) -> String {
        let real =
            (!self.pools.tokens.is_empty()).then(|| self.rng.pick(&self.pools.tokens).clone());
        let gentle = !self.nasty();
        match (self.rng.below(100), real) {
            (0..=49, Some(t)) if gentle => t,
            _ if gentle => String::new(),
            (0..=19, _) => String::new(),
            (20..=44, Some(t)) => t,
            (45..=59, Some(t)) => {
                // One character replaced by another of the base64url alphabet.
                const ALPHABET: &[u8] =
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let mut b = t.into_bytes();
                let i = self.rng.below(b.len());
                let mut c = *self.rng.pick(ALPHABET);
                if c == b[i] {
                    c = if c == b'A' { b'B' } else { b'A' };
                }
                b[i] = c;
                String::from_utf8(b).unwrap_or_default()
            }
            (60..=69, Some(t)) => {
                let cut = self.rng.below(t.len());
                t.get(..cut).unwrap_or_default().to_owned()
            }
            (70..=74, Some(t)) => format!("{t}{t}"),
            (75..=84, _) => {
                let n = self.rng.below(120);
                let raw: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                URL_SAFE_NO_PAD.encode(raw)
            }
            (85..=92, _) => {
                // Well-formed and checksummed, but for a guessed kind and filters, with
                // positions at the edges.
                let kind = *self.rng.pick(&[
                    "customers",
                    "communications",
                    "transactions",
                    "tickets",
                    "timeline",
                    "",
                ]);
                let fp = *self.rng.pick(&[0u64, 1, u64::MAX]);
                let a = *self.rng.pick(&I64_EDGES);
                let b = *self.rng.pick(&I64_EDGES);
                match self.rng.below(3) {
                    0 => crm_comms::grpc::paging::encode(kind, fp, &a),
                    1 => crm_comms::grpc::paging::encode(kind, fp, &(a, b)),
                    _ => crm_comms::grpc::paging::encode(
                        kind,
                        fp,
                        &(a, b, *self.rng.pick(&[-1i64, 0, 3])),
                    ),
                }
            }
            _ => {
                let nasty = nasty_strings();
                self.rng.pick(&nasty).clone()
            }
        }
    }

    /// Appends the fields of a `google.protobuf.Timestamp`.
    fn timestamp(&mut self, out: &mut Vec<u8>) {
        let gentle = !self.nasty();
        let seconds = match self.rng.below(100) {
            // 2024: the first half for starts, the second for ends, so ranges are valid.
            _ if gentle && self.field_name.starts_with("start") => {
                1_704_067_200 + self.rng.below(182 * 86_400) as i64
            }
            _ if gentle && self.field_name.starts_with("end") => {
                1_719_792_000 + self.rng.below(183 * 86_400) as i64
            }
            _ if gentle => 1_704_067_200 + self.rng.below(366 * 86_400) as i64,
            0..=54 => 1_577_836_800 + self.rng.below(6 * 365 * 86_400) as i64,
            55..=89 => *self.rng.pick(&SECONDS_EDGES),
            _ => self.rng.next_u64() as i64,
        };
        let nanos = match self.rng.below(100) {
            _ if gentle => self.rng.below(1_000) as i32 * 1_000_000,
            0..=39 => 0,
            40..=84 => self.rng.below(1_000_000_000) as i32,
            _ => *self.rng.pick(&NANOS_EDGES),
        };
        self.seconds_nanos(seconds, nanos, out);
    }

    /// Appends the fields of a `google.protobuf.Duration`.
    fn duration(&mut self, out: &mut Vec<u8>) {
        let gentle = !self.nasty();
        let seconds = match self.rng.below(100) {
            _ if gentle => self.rng.below(3_600) as i64,
            0..=59 => self.rng.below(2 * 86_400) as i64,
            60..=89 => *self.rng.pick(&[
                -1,
                86_400,
                86_401,
                315_576_000_000,
                315_576_000_001,
                i64::MAX,
                i64::MIN,
            ]),
            _ => self.rng.next_u64() as i64,
        };
        let nanos = match self.rng.below(100) {
            _ if gentle => 0,
            0..=59 => 0,
            60..=84 => self.rng.below(1_000_000_000) as i32,
            _ => *self.rng.pick(&NANOS_EDGES),
        };
        self.seconds_nanos(seconds, nanos, out);
    }

    fn seconds_nanos(&mut self, seconds: i64, nanos: i32, out: &mut Vec<u8>) {
        if seconds != 0 || self.rng.chance(10) {
            put_tag(out, 1, VARINT);
            put_varint(out, seconds as u64);
        }
        if nanos != 0 || self.rng.chance(10) {
            put_tag(out, 2, VARINT);
            put_varint(out, i64::from(nanos) as u64);
        }
    }

    /// Appends the fields of a `google.protobuf.FieldMask`: valid and bogus paths.
    fn field_mask(&mut self, out: &mut Vec<u8>) {
        // The fields of the messages next to the mask: what it can name.
        let schema: &'a Schema = self.schema;
        let siblings: Vec<String> = schema
            .messages
            .get(&self.parent)
            .into_iter()
            .flat_map(|m| &m.field)
            .filter(|f| {
                f.r#type() == Type::Message && f.type_name() != ".google.protobuf.FieldMask"
            })
            .filter_map(|f| schema.messages.get(f.type_name()))
            .flat_map(|m| m.field.iter().map(|f| f.name().to_owned()))
            .collect();
        let gentle = !siblings.is_empty() && !self.nasty();
        let count = match self.rng.below(100) {
            _ if gentle => self.rng.between(1, 3),
            0..=14 => 0,
            15..=89 => self.rng.between(1, 4),
            90..=96 => self.rng.between(5, 30),
            _ => self.rng.between(100, 300),
        };
        for _ in 0..count {
            let path = match self.rng.below(100) {
                _ if gentle => self.rng.pick(&siblings).clone(),
                0..=59 => self.rng.pick(&self.schema.field_names).clone(),
                60..=69 => "*".to_owned(),
                70..=79 => {
                    let a = self.rng.pick(&self.schema.field_names).clone();
                    let b = self.rng.pick(&self.schema.field_names).clone();
                    format!("{a}.{b}")
                }
                80..=84 => self.rng.pick(&self.schema.field_names).to_uppercase(),
                _ => self.string("paths"),
            };
            if path.len() > self.budget {
                break;
            }
            self.budget -= path.len();
            put_len(out, 1, path.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------
// Protobuf wire reading: for harvesting ids and tokens, and for describing requests.

#[derive(Debug, Clone, Copy)]
enum Wire<'b> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'b [u8]),
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The fields of a message, or `None` when it is not well-formed (groups included).
fn read_fields(mut buf: &[u8]) -> Option<Vec<(u32, Wire<'_>)>> {
    let mut fields = Vec::new();
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let number = u32::try_from(key >> 3).ok().filter(|n| *n > 0)?;
        let value = match key & 7 {
            0 => Wire::Varint(read_varint(&mut buf)?),
            1 => {
                let (b, rest) = buf.split_at_checked(8)?;
                buf = rest;
                Wire::Fixed64(u64::from_le_bytes(b.try_into().ok()?))
            }
            2 => {
                let n = usize::try_from(read_varint(&mut buf)?).ok()?;
                let (b, rest) = buf.split_at_checked(n)?;
                buf = rest;
                Wire::Len(b)
            }
            5 => {
                let (b, rest) = buf.split_at_checked(4)?;
                buf = rest;
                Wire::Fixed32(u32::from_le_bytes(b.try_into().ok()?))
            }
            _ => return None,
        };
        fields.push((number, value));
    }
    Some(fields)
}

/// `.crm.v1.ServiceTicket` -> `service_ticket`.
fn snake_case(type_name: &str) -> String {
    let short = type_name.rsplit('.').next().unwrap_or(type_name);
    let mut out = String::new();
    for (i, c) in short.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Collects the positive ids (`id`, `*_id` fields) and the tokens and cursors (string
/// fields named `*token`, `*cursor`) of a response of type `type_name`.
fn harvest(schema: &Schema, type_name: &str, bytes: &[u8], depth: u32, pools: &mut Pools) {
    let Some(descriptor) = schema.messages.get(type_name) else {
        return;
    };
    let Some(fields) = read_fields(bytes) else {
        return;
    };
    for (number, value) in fields {
        let Some(f) = descriptor
            .field
            .iter()
            .find(|f| f.number() == number as i32)
        else {
            continue;
        };
        let name = f.name();
        match (f.r#type(), value) {
            (Type::Int64, Wire::Varint(v)) if name == "id" => {
                pools.add_id(&snake_case(type_name), v as i64);
            }
            (Type::Int64, Wire::Varint(v)) if name.ends_with("_id") => {
                pools.add_id(name.trim_end_matches("_id"), v as i64);
            }
            (Type::String, Wire::Len(b)) => {
                if let Ok(s) = std::str::from_utf8(b) {
                    if name.ends_with("token") || name.ends_with("cursor") {
                        pools.add_token(s.to_owned());
                    } else {
                        pools.add_string(name, s);
                    }
                }
            }
            (Type::Message, Wire::Len(b)) if depth < MAX_DEPTH => {
                harvest(schema, f.type_name(), b, depth + 1, pools);
            }
            _ => {}
        }
    }
}

/// A request in text form, for failure reports: field names and values, long strings
/// cut, unknown fields by number.
fn describe(schema: &Schema, type_name: &str, bytes: &[u8], depth: u32) -> String {
    let Some(fields) = read_fields(bytes) else {
        return format!("<not well-formed protobuf, {} bytes>", bytes.len());
    };
    let descriptor = schema.messages.get(type_name);
    let mut parts = Vec::new();
    for (number, value) in fields {
        let f = descriptor.and_then(|d| d.field.iter().find(|f| f.number() == number as i32));
        let name = f.map_or_else(|| format!("#{number}"), |f| f.name().to_owned());
        let text = match (f.map(FieldDescriptorProto::r#type), value) {
            (Some(Type::Message), Wire::Len(b)) if depth < 8 => {
                let type_name = f.map(FieldDescriptorProto::type_name).unwrap_or_default();
                describe(schema, type_name, b, depth + 1)
            }
            (Some(Type::String), Wire::Len(b)) => match std::str::from_utf8(b) {
                Ok(s) if s.chars().count() > 60 => {
                    let head: String = s.chars().take(60).collect();
                    format!("{head:?}… ({} chars)", s.chars().count())
                }
                Ok(s) => format!("{s:?}"),
                Err(_) => format!("<invalid UTF-8 {}>", hex(b)),
            },
            (Some(Type::Int32 | Type::Enum), Wire::Varint(v)) => (v as i64 as i32).to_string(),
            (Some(Type::Bool), Wire::Varint(v)) => format!("{} (varint {v})", v != 0),
            (Some(Type::Int32 | Type::Int64 | Type::Enum), Wire::Len(b)) => {
                // Packed.
                let mut buf = b;
                let mut items = Vec::new();
                while let Some(v) = (!buf.is_empty()).then(|| read_varint(&mut buf)).flatten() {
                    items.push(v as i64);
                }
                if items.len() > 12 {
                    format!("{:?}… ({} items, packed)", &items[..12], items.len())
                } else {
                    format!("{items:?} (packed)")
                }
            }
            (_, Wire::Varint(v)) => (v as i64).to_string(),
            (_, Wire::Fixed64(v)) => format!("fixed64 {v:#x}"),
            (_, Wire::Fixed32(v)) => format!("fixed32 {v:#x}"),
            (_, Wire::Len(b)) => format!("bytes {}", hex(&b[..b.len().min(64)])),
        };
        parts.push(format!("{name}: {text}"));
    }
    format!("{{{}}}", parts.join(", "))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    s.chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(text, 16).expect("hex digit pair")
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Calling the server and judging its answers.

/// How a call ended.
#[derive(Debug)]
enum Outcome {
    /// OK, with the response messages read.
    Ok(Vec<Bytes>),
    /// A server stream that was still open when the test stopped reading and dropped it.
    Cut(Vec<Bytes>),
    /// A status (possibly after some stream messages).
    Failed(Status),
    /// No answer within [`CALL_GUARD`], or the channel refused the call.
    Hung(String),
}

/// Sends `items` (one for a unary or server-streaming method) to `method`.
async fn call(app: &TestApp, method: &Method, items: Vec<Bytes>, follow: bool) -> Outcome {
    let work = async {
        let mut grpc =
            tonic::client::Grpc::new(app.channel.clone()).max_decoding_message_size(64 << 20);
        if let Err(e) = grpc.ready().await {
            return Outcome::Hung(format!("channel not ready: {e}"));
        }
        let path: http::uri::PathAndQuery = method.path().parse().expect("method path");
        match (method.client_streaming, method.server_streaming) {
            (false, false) => {
                let mut request = tonic::Request::new(items.into_iter().next().unwrap_or_default());
                request.set_timeout(CALL_DEADLINE);
                match grpc.unary(request, path, RawCodec).await {
                    Ok(response) => Outcome::Ok(vec![response.into_inner()]),
                    Err(status) => Outcome::Failed(status),
                }
            }
            (true, false) => {
                let mut request = tonic::Request::new(tokio_stream::iter(items));
                request.set_timeout(CALL_DEADLINE);
                match grpc.client_streaming(request, path, RawCodec).await {
                    Ok(response) => Outcome::Ok(vec![response.into_inner()]),
                    Err(status) => Outcome::Failed(status),
                }
            }
            (client_streaming, true) => {
                let response = if client_streaming {
                    let mut request = tonic::Request::new(tokio_stream::iter(items));
                    request.set_timeout(CALL_DEADLINE);
                    grpc.streaming(request, path, RawCodec).await
                } else {
                    let mut request =
                        tonic::Request::new(items.into_iter().next().unwrap_or_default());
                    request.set_timeout(CALL_DEADLINE);
                    grpc.server_streaming(request, path, RawCodec).await
                };
                let mut stream = match response {
                    Ok(response) => response.into_inner(),
                    Err(status) => return Outcome::Failed(status),
                };
                let idle = if follow { FOLLOW_IDLE } else { STREAM_IDLE };
                let mut read = Vec::new();
                while read.len() < STREAM_READ {
                    match tokio::time::timeout(idle, stream.message()).await {
                        Ok(Ok(Some(m))) => read.push(m),
                        Ok(Ok(None)) => return Outcome::Ok(read),
                        Ok(Err(status)) => return Outcome::Failed(status),
                        Err(_) if follow => return Outcome::Cut(read),
                        Err(_) => {
                            return Outcome::Hung(format!(
                                "a stream without `follow` idle for {idle:?} after {} messages",
                                read.len()
                            ))
                        }
                    }
                }
                Outcome::Cut(read)
            }
        }
    };
    match tokio::time::timeout(CALL_GUARD, work).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Hung(format!("no answer within {CALL_GUARD:?}")),
    }
}

/// Whether `status` is tonic's own answer to a request message that does not decode:
/// tonic-prost maps every `prost::DecodeError` to INTERNAL "failed to decode Protobuf
/// message: ..." before any handler runs, so it carries no ErrorInfo. That is the one
/// INTERNAL allowed, and only for requests the generator spoiled on purpose and only
/// for methods whose request is a single message (a client stream's items reach the
/// handler, which answers INVALID_ARGUMENT naming the item).
fn tonic_decode_error(status: &Status) -> bool {
    status.code() == Code::Internal
        && status
            .message()
            .starts_with("failed to decode Protobuf message")
        && status.details().is_empty()
}

/// Why a status is not a proper answer, or `None` when it is.
fn judge(status: &Status, decode_error_allowed: bool) -> Option<String> {
    if decode_error_allowed && tonic_decode_error(status) {
        return None;
    }
    if matches!(
        status.code(),
        Code::Unknown | Code::Internal | Code::Unimplemented
    ) {
        return Some(format!("forbidden code {:?}", status.code()));
    }
    let details = status.get_error_details();
    match details.error_info() {
        None => Some("no google.rpc.ErrorInfo detail".to_owned()),
        Some(info) if info.domain != "crm.v1" => Some(format!(
            "ErrorInfo domain {:?}, not \"crm.v1\"",
            info.domain
        )),
        Some(info) if info.reason.is_empty() => Some("ErrorInfo without a reason".to_owned()),
        Some(_) => None,
    }
}

// ---------------------------------------------------------------------------------
// The database's footprint: "a rejected request writes nothing".

/// What the footprint reads, as (column alias, scalar subquery): the rows of every table
/// a request can write, the soft-deleted customers, and the sums of the versions that
/// every update bumps. All in one SELECT: one snapshot, on either backend.
const FOOTPRINT: [(&str, &str); 12] = [
    ("customers", "SELECT COUNT(*) FROM customers"),
    (
        "deleted_customers",
        "SELECT COUNT(*) FROM customers WHERE delete_time IS NOT NULL",
    ),
    (
        "customer_versions",
        "SELECT COALESCE(SUM(version), 0) FROM customers",
    ),
    ("customer_tags", "SELECT COUNT(*) FROM customer_tags"),
    ("communications", "SELECT COUNT(*) FROM communications"),
    (
        "deleted_communications",
        "SELECT COUNT(*) FROM deleted_communications",
    ),
    ("transactions", "SELECT COUNT(*) FROM transactions"),
    ("service_tickets", "SELECT COUNT(*) FROM service_tickets"),
    (
        "ticket_versions",
        "SELECT COALESCE(SUM(version), 0) FROM service_tickets",
    ),
    ("surveys", "SELECT COUNT(*) FROM satisfaction_surveys"),
    (
        "survey_versions",
        "SELECT COALESCE(SUM(version), 0) FROM satisfaction_surveys",
    ),
    ("audit_records", "SELECT COUNT(*) FROM audit_records"),
];

/// The footprint's row as SQLite gives it to diesel (the field names are the aliases of
/// [`FOOTPRINT`], in its order).
#[derive(diesel::QueryableByName)]
struct SqliteFootprint {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    customers: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    deleted_customers: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    customer_versions: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    customer_tags: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    communications: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    deleted_communications: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    transactions: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    service_tickets: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    ticket_versions: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    surveys: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    survey_versions: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    audit_records: i64,
}

impl SqliteFootprint {
    fn values(&self) -> Vec<i64> {
        vec![
            self.customers,
            self.deleted_customers,
            self.customer_versions,
            self.customer_tags,
            self.communications,
            self.deleted_communications,
            self.transactions,
            self.service_tickets,
            self.ticket_versions,
            self.surveys,
            self.survey_versions,
            self.audit_records,
        ]
    }
}

/// One connection straight to the test's database, beside the server's pool, open for
/// the whole run (as `TestApp::scalar` reaches it, without connecting per query).
enum DirectConn {
    Mysql(mysql_async::Conn),
    /// Taken out while a blocking task uses it.
    Sqlite(Option<diesel::SqliteConnection>),
}

/// Reads the footprint of the test's database.
struct Footprints {
    sql: String,
    conn: DirectConn,
}

impl Footprints {
    async fn open(app: &TestApp) -> Footprints {
        let columns: Vec<String> = FOOTPRINT
            .iter()
            .map(|(alias, query)| format!("({query}) AS {alias}"))
            .collect();
        let sql = format!("SELECT {}", columns.join(", "));
        let conn = match app.backend {
            Backend::Mysql => DirectConn::Mysql(
                mysql_async::Conn::from_url(app.database_url.as_str())
                    .await
                    .expect("mysql connect for footprints"),
            ),
            Backend::Sqlite => {
                use diesel::{Connection, RunQueryDsl};
                let path = app.database_url.trim_start_matches("sqlite://").to_owned();
                let conn = tokio::task::spawn_blocking(move || {
                    let mut conn =
                        diesel::SqliteConnection::establish(&path).expect("sqlite for footprints");
                    // The server's writers (compaction) may hold the lock a moment.
                    diesel::sql_query("PRAGMA busy_timeout = 10000")
                        .execute(&mut conn)
                        .expect("busy timeout");
                    conn
                })
                .await
                .expect("join");
                DirectConn::Sqlite(Some(conn))
            }
        };
        Footprints { sql, conn }
    }

    /// The footprint now: one value per [`FOOTPRINT`] column.
    async fn read(&mut self) -> Vec<i64> {
        let values = match &mut self.conn {
            DirectConn::Mysql(conn) => {
                use mysql_async::prelude::Queryable;
                let row: mysql_async::Row = conn
                    .query_first(self.sql.as_str())
                    .await
                    .expect("footprint query")
                    .expect("the footprint query returns one row");
                (0..row.len())
                    .map(|i| {
                        row.get_opt::<i64, _>(i)
                            .expect("a footprint value")
                            .unwrap_or_else(|e| panic!("footprint column {i}: {e}"))
                    })
                    .collect()
            }
            DirectConn::Sqlite(slot) => {
                use diesel::RunQueryDsl;
                let mut conn = slot.take().expect("the footprint connection");
                let sql = self.sql.clone();
                let (conn, row) = tokio::task::spawn_blocking(move || {
                    let row = diesel::sql_query(sql)
                        .get_result::<SqliteFootprint>(&mut conn)
                        .expect("footprint query");
                    (conn, row)
                })
                .await
                .expect("join");
                *slot = Some(conn);
                row.values()
            }
        };
        assert_eq!(values.len(), FOOTPRINT.len(), "footprint {values:?}");
        values
    }

    async fn close(self) {
        if let DirectConn::Mysql(conn) = self.conn {
            conn.disconnect().await.expect("mysql disconnect");
        }
    }
}

/// Index of a [`FOOTPRINT`] column.
fn footprint_column(alias: &str) -> usize {
    FOOTPRINT
        .iter()
        .position(|(a, _)| *a == alias)
        .unwrap_or_else(|| panic!("no footprint column {alias}"))
}

/// What a refused ImportCommunications may have stored: the valid items before the
/// first bad one, in batches.
#[derive(Debug, Clone, Copy)]
struct ImportAllowance {
    /// Well-formed items before the first bad one (all of them when none is bad).
    prefix: usize,
    /// Items sent.
    sent: usize,
    /// Most batches (one audit record each) the prefix can make.
    batches: i64,
}

/// Items per import batch and content bytes per batch (`src/service/import.rs`).
const IMPORT_BATCH_ROWS: usize = 1000;
const IMPORT_BATCH_BYTES: usize = 4 << 20;

impl ImportAllowance {
    /// Finds the first bad item as the server does: one over the request size limit
    /// (refused from its header) or one that does not decode as an
    /// `ImportCommunicationsRequest` (tonic decodes with prost, as here).
    fn of(items: &[Bytes], max_bytes: usize) -> ImportAllowance {
        let prefix = items
            .iter()
            .position(|b| {
                b.len() > max_bytes || pb::ImportCommunicationsRequest::decode(b.as_ref()).is_err()
            })
            .unwrap_or(items.len());
        // A batch closes at IMPORT_BATCH_ROWS items or IMPORT_BATCH_BYTES of content, and
        // an item's content is at most its size.
        let bytes: usize = items[..prefix].iter().map(Bytes::len).sum();
        let batches = (prefix / IMPORT_BATCH_ROWS + bytes / IMPORT_BATCH_BYTES + 1).min(prefix);
        ImportAllowance {
            prefix,
            sent: items.len(),
            batches: batches as i64,
        }
    }

    /// Why the server's answer disagrees on where the first bad item is, if it does.
    fn disagreement(&self, items: &[Bytes], max_bytes: usize, outcome: &Outcome) -> Option<String> {
        let status = match outcome {
            Outcome::Failed(status) => status,
            Outcome::Ok(_) if self.prefix < self.sent => {
                return Some(format!(
                    "item {} does not decode, yet the import was answered OK",
                    self.prefix
                ))
            }
            _ => return None,
        };
        let named: Vec<String> = status
            .get_error_details()
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| v.field.clone())
                    .filter(|f| f.starts_with("items["))
                    .collect()
            })
            .unwrap_or_default();
        let want = format!("items[{}]", self.prefix);
        if self.prefix == self.sent {
            return (!named.is_empty())
                .then(|| format!("every item decodes, yet the server named {named:?}"));
        }
        if items[self.prefix].len() > max_bytes {
            return (status.code() != Code::ResourceExhausted).then(|| {
                format!(
                    "item {} is over {max_bytes} bytes, yet the answer is {:?}",
                    self.prefix,
                    status.code()
                )
            });
        }
        (named != [want.clone()]).then(|| {
            format!("the first item that does not decode is {want}, the server named {named:?}")
        })
    }
}

/// What a refused call changed in the footprint: the rows it wrote that it must not
/// have (the sum of the changes, a version sum counting one per update), the
/// communications a refused import stored as documented, and why it is wrong.
#[derive(Debug, Default)]
struct Writes {
    wrote: i64,
    stored_prefix: i64,
    why: Option<String>,
}

fn refused_writes(before: &[i64], after: &[i64], import: Option<ImportAllowance>) -> Writes {
    let mut delta: Vec<i64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let changes: Vec<String> = FOOTPRINT
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|((alias, _), (b, a))| format!("{alias} {b} -> {a}"))
        .collect();
    let mut writes = Writes::default();
    let mut why = Vec::new();
    if let Some(allowed) = import {
        let (c, a) = (
            footprint_column("communications"),
            footprint_column("audit_records"),
        );
        let (stored, audited) = (delta[c], delta[a]);
        if (0..=allowed.prefix as i64).contains(&stored)
            && (0..=allowed.batches).contains(&audited)
            && (stored > 0) == (audited > 0)
        {
            writes.stored_prefix = stored;
            delta[c] = 0;
            delta[a] = 0;
        } else {
            why.push(format!(
                "an import refused after {} well-formed items of {} stored {stored} \
                 communications (at most {}) with {audited} audit records (at most {} \
                 batches, at least one when any row was stored)",
                allowed.prefix, allowed.sent, allowed.prefix, allowed.batches
            ));
        }
    }
    writes.wrote = delta.iter().map(|d| d.abs()).sum();
    if writes.wrote > 0 {
        why.push(format!(
            "a refused call changed the database: {}",
            changes.join(", ")
        ));
    }
    writes.why = (!why.is_empty()).then(|| why.join("; "));
    writes
}

/// Short column names of the table, in column order.
fn column(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID",
        Code::DeadlineExceeded => "DEADLINE",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "EXISTS",
        Code::PermissionDenied => "DENIED",
        Code::ResourceExhausted => "EXHAUSTED",
        Code::FailedPrecondition => "PRECOND",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "RANGE",
        Code::Unimplemented => "UNIMPL",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAIL",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTH",
    }
}

const COLUMNS: [&str; 20] = [
    "OK",
    "CUT",
    "INVALID",
    "NOT_FOUND",
    "EXISTS",
    "ABORTED",
    "PRECOND",
    "RANGE",
    "EXHAUSTED",
    "DEADLINE",
    "UNAVAIL",
    "DENIED",
    "UNAUTH",
    "CANCELLED",
    "DECODE*",
    "UNKNOWN",
    "INTERNAL",
    "UNIMPL",
    "DATA_LOSS",
    "HUNG",
];

/// What one method answered.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    spoiled: usize,
    items: usize,
    by_column: BTreeMap<&'static str, usize>,
    /// Calls answered with a non-OK status.
    refused: usize,
    /// Rows the refused calls wrote (must be 0), see [`refused_writes`].
    wrote: i64,
    /// Communications refused imports stored from before their first bad item.
    stored_prefix: i64,
    /// Well-formed items refused imports sent before their first bad item.
    prefix_items: usize,
}

/// The table of answers per method.
fn table(stats: &BTreeMap<String, Tally>) -> String {
    let used: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| stats.values().any(|t| t.by_column.contains_key(c)))
        .collect();
    let width = stats.keys().map(String::len).max().unwrap_or(6).max(6);
    let mut out = format!(
        "{:<width$} {:>5} {:>6} {:>4} {:>7} {:>5}",
        "method", "sent", "items", "bad", "refused", "wrote"
    );
    for c in &used {
        let _ = write!(out, " {c:>w$}", w = c.len().max(4));
    }
    out.push('\n');
    let mut total = Tally::default();
    for (name, t) in stats {
        let _ = write!(
            out,
            "{name:<width$} {:>5} {:>6} {:>4} {:>7} {:>5}",
            t.sent, t.items, t.spoiled, t.refused, t.wrote
        );
        for c in &used {
            let n = t.by_column.get(c).copied().unwrap_or(0);
            let _ = write!(out, " {n:>w$}", w = c.len().max(4));
            *total.by_column.entry(c).or_default() += n;
        }
        out.push('\n');
        total.sent += t.sent;
        total.items += t.items;
        total.spoiled += t.spoiled;
        total.refused += t.refused;
        total.wrote += t.wrote;
        total.stored_prefix += t.stored_prefix;
        total.prefix_items += t.prefix_items;
    }
    let _ = write!(
        out,
        "{:<width$} {:>5} {:>6} {:>4} {:>7} {:>5}",
        "total", total.sent, total.items, total.spoiled, total.refused, total.wrote
    );
    for c in &used {
        let n = total.by_column.get(c).copied().unwrap_or(0);
        let _ = write!(out, " {n:>w$}", w = c.len().max(4));
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "refused {}, rows written by refused calls {}",
        total.refused, total.wrote
    );
    let _ = writeln!(
        out,
        "refused imports stored {} communications of the {} well-formed items before their \
         first bad one (documented; not counted above)",
        total.stored_prefix, total.prefix_items
    );
    out.push_str(
        "(items: request messages sent; bad: calls with a request spoiled on purpose; refused: calls answered \
         with a non-OK status; wrote: rows the refused calls wrote, from the database's footprint before and \
         after each call, a version sum counting one per update; CUT: stream dropped by the test while open; \
         DECODE*: tonic's INTERNAL for an undecodable request, allowed)\n",
    );
    out
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn env_seed() -> u64 {
    match std::env::var("CRM_FUZZ_SEED") {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
                None => v.replace('_', "").parse(),
            };
            parsed.unwrap_or_else(|_| panic!("CRM_FUZZ_SEED={v:?} is not a number"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// Data for the generator to aim at: customers, communications, transactions and
/// tickets, and real page tokens and cursors of every list and the timeline.
async fn seed_data(app: &TestApp, schema: &Schema, pools: &mut Pools) {
    let customers = [
        new_customer(app, "Fuzz Zhang").await,
        new_customer(app, "Fuzz Li").await,
        new_customer(app, "模糊 王").await,
    ];
    for id in customers {
        let customer = app
            .customers()
            .get_customer(pb::GetCustomerRequest { id })
            .await
            .expect("get customer")
            .into_inner();
        harvest(
            schema,
            ".crm.v1.Customer",
            &customer.encode_to_vec(),
            0,
            pools,
        );
    }
    let mut comms = app.communications();
    for (i, c) in customers.iter().enumerate() {
        for j in 0..3 {
            let details = match j {
                0 => Some(pb::communication::Details::PhoneCall(pb::PhoneCall {
                    phone_number: "+8613800000000".into(),
                    duration: Some(prost_types::Duration {
                        seconds: 90,
                        nanos: 0,
                    }),
                })),
                1 => Some(pb::communication::Details::Email(pb::Email {
                    address: "a@b.co".into(),
                    subject: "refund".into(),
                })),
                _ => None,
            };
            let channel = match j {
                0 => pb::Channel::Phone,
                1 => pb::Channel::Email,
                _ => pb::Channel::Note,
            };
            let logged = comms
                .log_communication(pb::LogCommunicationRequest {
                    communication: Some(pb::Communication {
                        customer_id: *c,
                        channel: channel as i32,
                        direction: pb::Direction::Inbound as i32,
                        occur_time: Some(ts(&format!("2024-05-0{}T08:0{j}:00Z", i + 1))),
                        content: "客户询问退款进度 refund status please".into(),
                        details,
                        ..Default::default()
                    }),
                    request_id: format!("seed-{i}-{j}"),
                })
                .await
                .expect("seed communication")
                .into_inner();
            harvest(
                schema,
                ".crm.v1.Communication",
                &logged.encode_to_vec(),
                0,
                pools,
            );
        }
    }
    let mut crm = app.customers();
    for (i, c) in customers.iter().enumerate() {
        for j in 0..2 {
            let t = crm
                .create_transaction(pb::CreateTransactionRequest {
                    transaction: Some(pb::Transaction {
                        customer_id: *c,
                        order_number: format!("SO-{i}-{j}"),
                        product: "widget".into(),
                        amount: Some(pb::Money {
                            currency_code: "CNY".into(),
                            units: 5000,
                            nanos: 250_000_000,
                        }),
                        occur_time: Some(ts(&format!("2024-05-0{}T09:0{j}:00Z", i + 1))),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .expect("seed transaction")
                .into_inner();
            harvest(schema, ".crm.v1.Transaction", &t.encode_to_vec(), 0, pools);
            let s = crm
                .create_service_ticket(pb::CreateServiceTicketRequest {
                    service_ticket: Some(pb::ServiceTicket {
                        customer_id: *c,
                        issue: "退货 return".into(),
                        open_time: Some(ts(&format!("2024-05-0{}T10:0{j}:00Z", i + 1))),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .expect("seed ticket")
                .into_inner();
            harvest(
                schema,
                ".crm.v1.ServiceTicket",
                &s.encode_to_vec(),
                0,
                pools,
            );
        }
    }
    let token = crm
        .list_customers(pb::ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list customers")
        .into_inner()
        .next_page_token;
    pools.add_token(token);
    let token = crm
        .list_transactions(pb::ListTransactionsRequest {
            customer_id: customers[0],
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list transactions")
        .into_inner()
        .next_page_token;
    pools.add_token(token);
    let token = crm
        .list_service_tickets(pb::ListServiceTicketsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list tickets")
        .into_inner()
        .next_page_token;
    pools.add_token(token);
    let token = comms
        .list_communications(pb::ListCommunicationsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list communications")
        .into_inner()
        .next_page_token;
    pools.add_token(token);
    let mut timeline = comms
        .stream_timeline(pb::StreamTimelineRequest {
            customer_id: customers[0],
            include_transactions: true,
            include_service_tickets: true,
            ..Default::default()
        })
        .await
        .expect("timeline")
        .into_inner();
    for _ in 0..3 {
        if let Some(event) = timeline.message().await.expect("timeline event") {
            pools.add_token(event.cursor);
        }
    }
    assert!(pools.tokens.len() >= 5, "seeded tokens: {:?}", pools.tokens);
}

/// One failure, reported with everything needed to replay it.
struct Failure {
    method: String,
    case: usize,
    why: String,
    request: String,
    hex_file: String,
    hex_head: String,
}

/// Requests of one case: one message, or 0..N client-stream items.
fn generate(schema: &Schema, pools: &Pools, method: &Method, rng: Rng) -> (Vec<Generated>, bool) {
    let mut gen = Gen::new(schema, pools, rng, REQUEST_BUDGET);
    if !method.client_streaming {
        let one = gen.request(&method.input);
        let follow = one.follow;
        return (vec![one], follow);
    }
    let n = match gen.rng.below(100) {
        0..=9 => 0,
        10..=69 => gen.rng.between(1, 5),
        70..=94 => gen.rng.between(6, 50),
        _ => gen.rng.between(100, 300),
    };
    let mut items = Vec::with_capacity(n);
    let mut left = STREAM_BUDGET;
    for _ in 0..n {
        gen.budget = left.min(REQUEST_BUDGET / 2);
        let before = gen.budget;
        items.push(gen.request(&method.input));
        left -= before - gen.budget;
    }
    let follow = items.iter().any(|g| g.follow);
    (items, follow)
}

async fn fuzz_every_rpc(app: &TestApp) {
    if std::env::var("RUST_LOG").is_ok() {
        // The server's own log (an INTERNAL's cause is logged, not sent).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let schema = Schema::load();
    let services: HashSet<&str> = schema.methods.iter().map(|m| m.service.as_str()).collect();
    assert!(
        !schema.methods.is_empty(),
        "no crm.v1 methods in the descriptor set"
    );
    for s in SERVICES {
        assert!(services.contains(s), "{s} missing from {services:?}");
    }
    for m in &schema.methods {
        assert!(
            schema.messages.contains_key(&m.input),
            "{}: request type {} not in the descriptor set",
            m.path(),
            m.input
        );
    }

    let cases = env_usize("CRM_FUZZ_CASES", DEFAULT_CASES);
    let seed = env_seed();
    let only: Vec<String> = std::env::var("CRM_FUZZ_METHODS")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let methods: Vec<Method> = schema
        .methods
        .iter()
        .filter(|m| only.is_empty() || only.iter().any(|o| *o == m.name || *o == m.path()))
        .cloned()
        .collect();
    assert!(
        !methods.is_empty(),
        "CRM_FUZZ_METHODS={only:?} names no method"
    );
    eprintln!(
        "fuzz [{:?}]: seed {seed:#x} (CRM_FUZZ_SEED), {cases} cases per method (CRM_FUZZ_CASES), \
         {} methods of {} services",
        app.backend,
        methods.len(),
        services.len()
    );

    let mut pools = Pools::default();
    seed_data(app, &schema, &mut pools).await;
    let mut footprints = Footprints::open(app).await;
    // The harness starts the server with the default limits.
    let max_request_bytes = crm_comms::config::Config::new(app.addr, app.database_url.clone())
        .max_request_bytes as usize;

    let replay = std::env::var("CRM_FUZZ_REPLAY_HEX").ok();
    let verbose = std::env::var("CRM_FUZZ_VERBOSE").is_ok_and(|v| v == "1");
    let started = Instant::now();
    let mut stats: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures: Vec<Failure> = Vec::new();
    let total_cases = if replay.is_some() { 1 } else { cases };
    for case in 0..total_cases {
        for method in &methods {
            let (generated, follow) = match &replay {
                Some(text) => {
                    assert_eq!(
                        methods.len(),
                        1,
                        "CRM_FUZZ_REPLAY_HEX needs one method in CRM_FUZZ_METHODS"
                    );
                    let items: Vec<Generated> = text
                        .split(',')
                        .map(|h| Generated {
                            bytes: unhex(h).into(),
                            spoiled: Some(Spoil::RandomBytes),
                            follow: true,
                        })
                        .collect();
                    (items, true)
                }
                None => generate(
                    &schema,
                    &pools,
                    method,
                    Rng::new(case_seed(seed, method, case)),
                ),
            };
            let spoiled = generated.iter().any(|g| g.spoiled.is_some());
            let items: Vec<Bytes> = generated.iter().map(|g| g.bytes.clone()).collect();
            let tally = stats.entry(method.label()).or_default();
            tally.sent += 1;
            tally.items += items.len();
            tally.spoiled += usize::from(spoiled);

            let before = footprints.read().await;
            // A watch (WatchFrequencyReport, ...) stays open after its first message,
            // as a `follow` stream does.
            let open = follow || method.name.starts_with("Watch");
            let outcome = call(app, method, items.clone(), open).await;
            let after = footprints.read().await;
            let import = (method.name == "ImportCommunications")
                .then(|| ImportAllowance::of(&items, max_request_bytes));
            let decode_error_allowed = spoiled && !method.client_streaming;
            let (col, mut why) = match &outcome {
                Outcome::Ok(_) => ("OK", None),
                Outcome::Cut(_) => ("CUT", None),
                Outcome::Hung(why) => ("HUNG", Some(why.clone())),
                Outcome::Failed(status) => {
                    let col = if decode_error_allowed && tonic_decode_error(status) {
                        "DECODE*"
                    } else {
                        column(status.code())
                    };
                    (
                        col,
                        judge(status, decode_error_allowed).map(|why| format!("{why}: {status:?}")),
                    )
                }
            };
            *tally.by_column.entry(col).or_default() += 1;
            let mut wrong = Vec::new();
            if let Outcome::Failed(_) = &outcome {
                let writes = refused_writes(&before, &after, import);
                tally.refused += 1;
                tally.wrote += writes.wrote;
                tally.stored_prefix += writes.stored_prefix;
                if let Some(allowed) = import {
                    tally.prefix_items += allowed.prefix;
                }
                wrong.extend(writes.why);
            }
            if let Some(allowed) = import {
                wrong.extend(allowed.disagreement(&items, max_request_bytes, &outcome));
            }
            if !wrong.is_empty() {
                wrong.extend(why.take());
                why = Some(wrong.join("; "));
            }
            if verbose {
                let message = match &outcome {
                    Outcome::Failed(status) => status.message().to_owned(),
                    Outcome::Hung(why) => why.clone(),
                    Outcome::Ok(_) | Outcome::Cut(_) => String::new(),
                };
                eprintln!("  {} #{case}: {col} {message}", method.label());
            }
            if let Outcome::Ok(responses) | Outcome::Cut(responses) = &outcome {
                for r in responses {
                    harvest(&schema, &method.output, r, 0, &mut pools);
                }
            }
            if let Some(why) = why {
                let request = items
                    .iter()
                    .map(|b| describe(&schema, &method.input, b, 0))
                    .collect::<Vec<_>>()
                    .join("\n    ");
                let all_hex = items.iter().map(|b| hex(b)).collect::<Vec<_>>().join(",");
                let file = std::env::temp_dir().join(format!(
                    "crm-fuzz-{seed:x}-{}-{case}-{:?}.hex",
                    method.name, app.backend
                ));
                let hex_file = match std::fs::write(&file, &all_hex) {
                    Ok(()) => file.display().to_string(),
                    Err(e) => format!("(not written: {e})"),
                };
                let hex_head = if all_hex.len() > 1024 {
                    format!("{}… ({} hex digits)", &all_hex[..1024], all_hex.len())
                } else {
                    all_hex
                };
                failures.push(Failure {
                    method: method.path(),
                    case,
                    why,
                    request,
                    hex_file,
                    hex_head,
                });
            }
        }
    }
    let elapsed = started.elapsed();
    footprints.close().await;

    eprintln!(
        "fuzz [{:?}]: seed {seed:#x}, {} calls in {:.1} s\n{}",
        app.backend,
        stats.values().map(|t| t.sent).sum::<usize>(),
        elapsed.as_secs_f64(),
        table(&stats)
    );

    // The server is still up and answers normal calls, on each service, and health.
    let still = new_customer(app, "after the fuzz").await;
    assert!(still > 0);
    app.communications()
        .list_communications(pb::ListCommunicationsRequest {
            customer_id: still,
            ..Default::default()
        })
        .await
        .expect("ListCommunications after the fuzz");
    app.analytics()
        .get_frequency_report(pb::GetFrequencyReportRequest {
            start_time: Some(ts("2024-01-01T00:00:00Z")),
            end_time: Some(ts("2024-12-31T00:00:00Z")),
            ..Default::default()
        })
        .await
        .expect("GetFrequencyReport after the fuzz");
    let health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("grpc.health.v1.Health/Check after the fuzz")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    if !failures.is_empty() {
        for f in failures.iter().take(20) {
            eprintln!(
                "FUZZ FAILURE [{:?}] seed {seed:#x} {} case {}: {}\n  request: {}\n  hex: {}\n  \
                 whole hex: {}\n  replay: CRM_FUZZ_METHODS={} CRM_FUZZ_REPLAY_HEX=$(cat {}) \
                 cargo test --test integration -- fuzz --nocapture",
                app.backend,
                f.method,
                f.case,
                f.why,
                f.request,
                f.hex_head,
                f.hex_file,
                f.method.rsplit('/').next().unwrap_or_default(),
                f.hex_file,
            );
        }
        panic!(
            "{} of the fuzzed calls got an improper answer (seed {seed:#x}); see the reports above",
            failures.len()
        );
    }
}

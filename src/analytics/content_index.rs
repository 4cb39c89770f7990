//! The in-memory content index: every communication's content, case-folded, with its
//! terms, customer, channel and time, in compact columns, so that keyword counts and
//! top terms are answered without reading the database.
//!
//! Pure data structure, no I/O: `service::content_index` fills it from the database and
//! keeps it current, and keeps a snapshot of it in a file. Rows live in chunks of
//! [`CHUNK_ROWS`]; each chunk holds its folded texts back to back (one `0xFF` byte, which
//! UTF-8 never contains, after each), so one `memmem` pass over a chunk finds a keyword
//! in all of its rows, and a chunk whose time span misses the range is skipped whole.
//! Terms are interned once (`u32` ids), so top terms are a counting pass over the rows
//! in scope.
//!
//! The chunk being filled keeps plain vectors. A full chunk is sealed: sorted by id, its
//! ids, times, customers and channels bit-packed as offsets from the chunk's smallest
//! value, `live` a bitset, and its texts and term lists (varints) each compressed with
//! zstd; a scan decompresses the chunks in range, one thread per part of them. On the
//! demo data this takes about 25 bytes per communication instead of about 200.
//!
//! Answers equal [`super::content::ContentScan`]'s over the same rows: keywords match by
//! [`super::fold`] (proved equal to the keyword regex there), terms come from the same
//! [`super::terms::terms`], and ordering ties use the same rules.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::sync::Arc;

use memchr::memmem::Finder;

use super::content::{match_figures, MatchFigures};
use super::fold::{fold, fold_into};
use super::terms::{terms, TermCounter};

/// Rows per chunk.
pub const CHUNK_ROWS: usize = 16_384;
/// A chunk is sealed early once its folded text passes this many bytes (offsets are u32).
const CHUNK_TEXT_BYTES: usize = 256 << 20;
/// Written after each row's folded text; never part of UTF-8, so never of a keyword.
const SEPARATOR: u8 = 0xFF;
/// zstd level of sealed chunks: level 3 takes demo texts to 14% of their size at
/// sealing speed; higher levels gain 1-2 points for 3-5 times the time.
const ZSTD_LEVEL: i32 = 3;
/// First bytes of a snapshot; the last two are the format version.
const SNAPSHOT_MAGIC: &[u8; 8] = b"CRMCIX\x00\x01";

/// One communication as the index takes it.
#[derive(Debug, Clone, Copy)]
pub struct IndexRow<'a> {
    /// Its id.
    pub id: i64,
    /// Its customer.
    pub customer_id: i64,
    /// Its channel (proto enum value).
    pub channel: i32,
    /// When it happened, microseconds since the Unix epoch (UTC).
    pub occur_micros: i64,
    /// What was said.
    pub content: &'a str,
}

/// What a content report asks of the index.
#[derive(Debug, Clone, Default)]
pub struct IndexQuery {
    /// Inclusive start, microseconds since the epoch.
    pub start: i64,
    /// Exclusive end, microseconds since the epoch.
    pub end: i64,
    /// Customers in scope, sorted; empty for every customer.
    pub customers: Vec<i64>,
    /// Channels in scope; empty for all.
    pub channels: Vec<i32>,
    /// Keywords as given (case-insensitive substrings).
    pub keywords: Vec<String>,
    /// Count terms for a top-terms answer.
    pub count_terms: bool,
    /// How many of the oldest matching rows to name.
    pub sample_limit: usize,
}

/// The index's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFigures {
    /// Rows in scope.
    pub scanned: i64,
    /// One entry per keyword.
    pub keywords: Vec<MatchFigures>,
    /// Term counts of the rows in scope (empty unless asked).
    pub terms: TermCounter,
    /// `(occur_micros, id)` of the oldest rows matching any keyword, oldest first.
    pub samples: Vec<(i64, i64)>,
}

/// Why a snapshot was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading it failed.
    #[error("cannot read the snapshot: {0}")]
    Io(#[from] io::Error),
    /// It is not a snapshot of this format, or it is damaged.
    #[error("not a valid content index snapshot: {0}")]
    Invalid(&'static str),
}

/// The columns a scan reads, whichever way a chunk stores them.
trait Columns {
    fn len(&self) -> usize;
    fn dead(&self) -> usize;
    fn live(&self, i: usize) -> bool;
    fn id(&self, i: usize) -> i64;
    fn time(&self, i: usize) -> i64;
    fn customer(&self, i: usize) -> i64;
    fn channel(&self, i: usize) -> i32;
    fn span(&self) -> (i64, i64);
}

/// The chunk being filled: rows in arrival order, in plain columns.
#[derive(Debug, Clone, Default)]
struct Open {
    ids: Vec<i64>,
    times: Vec<i64>,
    customers: Vec<i64>,
    channels: Vec<i32>,
    live: Vec<bool>,
    dead: usize,
    /// Folded texts, each followed by [`SEPARATOR`].
    text: Vec<u8>,
    /// Offset of each row's separator in `text` (its text ends there).
    text_end: Vec<u32>,
    terms: Vec<u32>,
    /// End of each row's term ids in `terms`.
    terms_end: Vec<u32>,
    min_time: i64,
    max_time: i64,
    max_id: i64,
    /// Ids ascend.
    sorted: bool,
}

impl Open {
    fn new() -> Self {
        Open {
            min_time: i64::MAX,
            max_time: i64::MIN,
            max_id: i64::MIN,
            sorted: true,
            ..Open::default()
        }
    }

    fn push(&mut self, row: &IndexRow<'_>, text: &[u8], term_ids: &[u32]) {
        if self.max_id >= row.id {
            self.sorted = false;
        }
        self.ids.push(row.id);
        self.times.push(row.occur_micros);
        self.customers.push(row.customer_id);
        self.channels.push(row.channel);
        self.live.push(true);
        self.text.extend_from_slice(text);
        self.text_end.push(offset(self.text.len()));
        self.text.push(SEPARATOR);
        self.terms.extend_from_slice(term_ids);
        self.terms_end.push(offset(self.terms.len()));
        self.min_time = self.min_time.min(row.occur_micros);
        self.max_time = self.max_time.max(row.occur_micros);
        self.max_id = self.max_id.max(row.id);
    }

    fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 8
            + self.times.capacity() * 8
            + self.customers.capacity() * 8
            + self.channels.capacity() * 4
            + self.live.capacity()
            + self.text.capacity()
            + self.text_end.capacity() * 4
            + self.terms.capacity() * 4
            + self.terms_end.capacity() * 4
    }

    /// Its live rows, ascending by id, sealed.
    fn seal(&self) -> Sealed {
        let mut order: Vec<usize> = (0..self.ids.len()).filter(|&i| self.live[i]).collect();
        if !self.sorted {
            order.sort_unstable_by_key(|&i| self.ids[i]);
        }
        let mut builder = Builder::default();
        for i in order {
            builder.push(
                self.ids[i],
                self.times[i],
                self.customers[i],
                self.channels[i],
                row_slice(&self.text, &self.text_end, i, 1),
                row_slice(&self.terms, &self.terms_end, i, 0),
            );
        }
        builder.finish()
    }
}

impl Columns for Open {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn dead(&self) -> usize {
        self.dead
    }
    fn live(&self, i: usize) -> bool {
        self.live[i]
    }
    fn id(&self, i: usize) -> i64 {
        self.ids[i]
    }
    fn time(&self, i: usize) -> i64 {
        self.times[i]
    }
    fn customer(&self, i: usize) -> i64 {
        self.customers[i]
    }
    fn channel(&self, i: usize) -> i32 {
        self.channels[i]
    }
    fn span(&self) -> (i64, i64) {
        (self.min_time, self.max_time)
    }
}

/// Row `i` of values laid out back to back with `ends`; `gap` values (a separator)
/// follow each row.
fn row_slice<'a, T>(values: &'a [T], ends: &[u32], i: usize, gap: usize) -> &'a [T] {
    let start = if i == 0 {
        0
    } else {
        ends[i - 1] as usize + gap
    };
    values.get(start..ends[i] as usize).unwrap_or_default()
}

/// Row `i`'s text in `text`, its separator at `ends.get(i)`.
fn text_of<'a>(text: &'a [u8], ends: &Ends<'_>, i: usize) -> &'a [u8] {
    let start = if i == 0 { 0 } else { ends.get(i - 1) + 1 };
    text.get(start..ends.get(i)).unwrap_or_default()
}

/// Where each row's text ends (at its separator), as a chunk keeps it.
#[derive(Clone, Copy)]
enum Ends<'a> {
    Plain(&'a [u32]),
    Packed(&'a Packed, usize),
}

impl Ends<'_> {
    fn get(&self, i: usize) -> usize {
        match self {
            Ends::Plain(e) => e[i] as usize,
            Ends::Packed(p, _) => p.get(i) as usize,
        }
    }

    fn len(&self) -> usize {
        match self {
            Ends::Plain(e) => e.len(),
            Ends::Packed(_, n) => *n,
        }
    }

    /// The first row at or after `from` whose text ends at or after `at`.
    fn row_at(&self, from: usize, at: usize) -> usize {
        let (mut lo, mut hi) = (from, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid) < at {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Integers bit-packed as offsets from the smallest (frame of reference): `bits` bits
/// each, enough for the largest minus the smallest.
#[derive(Debug, Clone, Default)]
struct Packed {
    base: i64,
    bits: u32,
    words: Box<[u64]>,
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn words_for(len: usize, bits: u32) -> usize {
    (len * bits as usize).div_ceil(64)
}

impl Packed {
    fn new(values: &[i64]) -> Packed {
        let (Some(&min), Some(&max)) = (values.iter().min(), values.iter().max()) else {
            return Packed::default();
        };
        let range = (i128::from(max) - i128::from(min)) as u64;
        let bits = 64 - range.leading_zeros();
        let mut packed = Packed {
            base: min,
            bits,
            words: vec![0; words_for(values.len(), bits)].into_boxed_slice(),
        };
        for (i, &v) in values.iter().enumerate() {
            packed.put(i, v.wrapping_sub(min) as u64);
        }
        packed
    }

    fn put(&mut self, i: usize, x: u64) {
        if self.bits == 0 {
            return;
        }
        let m = mask(self.bits);
        let at = i * self.bits as usize;
        let (w, off) = (at / 64, (at % 64) as u32);
        self.words[w] = (self.words[w] & !(m << off)) | (x << off);
        if off + self.bits > 64 {
            let shift = 64 - off;
            self.words[w + 1] = (self.words[w + 1] & !(m >> shift)) | (x >> shift);
        }
    }

    #[inline]
    fn get(&self, i: usize) -> i64 {
        if self.bits == 0 {
            return self.base;
        }
        let at = i * self.bits as usize;
        let (w, off) = (at / 64, (at % 64) as u32);
        let mut x = self.words[w] >> off;
        if off + self.bits > 64 {
            x |= self.words[w + 1] << (64 - off);
        }
        self.base.wrapping_add((x & mask(self.bits)) as i64)
    }

    /// Sets value `i` when `v` fits the frame; `false` (nothing changed) when not.
    fn set(&mut self, i: usize, v: i64) -> bool {
        let d = i128::from(v) - i128::from(self.base);
        if d < 0 || d > i128::from(mask(self.bits)) {
            return false;
        }
        self.put(i, d as u64);
        true
    }

    fn all(&self, len: usize) -> Vec<i64> {
        (0..len).map(|i| self.get(i)).collect()
    }

    fn heap_bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// A full chunk, sorted by id and compressed; see the module header.
#[derive(Debug, Clone)]
struct Sealed {
    rows: usize,
    ids: Packed,
    times: Packed,
    customers: Packed,
    channels: Packed,
    /// One bit per row.
    live: Box<[u64]>,
    dead: usize,
    /// The folded texts, each followed by [`SEPARATOR`], compressed; shared with the
    /// copies a snapshot writes from.
    text: Arc<[u8]>,
    text_len: usize,
    /// Offset of each row's separator in the decompressed texts.
    text_end: Packed,
    /// The chunk's terms (global ids, ascending) and how often each occurs in it, so a
    /// chunk without deletes counts its terms without reading its rows.
    vocab: Packed,
    vocab_len: usize,
    counts: Packed,
    /// Per row a varint count and that many varint positions in `vocab`, compressed.
    terms: Arc<[u8]>,
    terms_len: usize,
    min_time: i64,
    max_time: i64,
    min_id: i64,
    max_id: i64,
}

/// Collects rows (ascending by id) for a sealed chunk.
#[derive(Default)]
struct Builder {
    ids: Vec<i64>,
    times: Vec<i64>,
    customers: Vec<i64>,
    channels: Vec<i64>,
    text: Vec<u8>,
    text_end: Vec<i64>,
    terms: Vec<u32>,
    terms_end: Vec<usize>,
}

fn put_varint(out: &mut Vec<u8>, mut x: u32) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// The varint at `*at` of `bytes`, moving `*at` past it; `None` when malformed.
fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u32> {
    let mut x: u32 = 0;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        x |= u32::from(b & 0x7F).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(x);
        }
    }
    None
}

impl Builder {
    fn push(
        &mut self,
        id: i64,
        time: i64,
        customer: i64,
        channel: i32,
        text: &[u8],
        terms: &[u32],
    ) {
        self.ids.push(id);
        self.times.push(time);
        self.customers.push(customer);
        self.channels.push(i64::from(channel));
        self.text.extend_from_slice(text);
        self.text_end.push(self.text.len() as i64);
        self.text.push(SEPARATOR);
        self.terms.extend_from_slice(terms);
        self.terms_end.push(self.terms.len());
    }

    fn finish(self) -> Sealed {
        let rows = self.ids.len();
        let mut vocab = self.terms.clone();
        vocab.sort_unstable();
        vocab.dedup();
        let mut counts = vec![0i64; vocab.len()];
        let mut stream = Vec::new();
        let mut start = 0;
        for &end in &self.terms_end {
            let row = &self.terms[start..end];
            start = end;
            put_varint(&mut stream, offset(row.len()));
            for t in row {
                let local = vocab.binary_search(t).unwrap_or_default();
                counts[local] += 1;
                put_varint(&mut stream, offset(local));
            }
        }
        let vocab: Vec<i64> = vocab.into_iter().map(i64::from).collect();
        let compress = |raw: &[u8]| -> Arc<[u8]> {
            // Compressing from memory into a buffer of the bound's size cannot fail; the
            // raw bytes are kept should it ever.
            zstd::bulk::compress(raw, ZSTD_LEVEL)
                .unwrap_or_else(|_| raw.to_vec())
                .into()
        };
        let mut live = vec![u64::MAX; rows.div_ceil(64)];
        if rows % 64 != 0 {
            if let Some(last) = live.last_mut() {
                *last = mask((rows % 64) as u32);
            }
        }
        Sealed {
            rows,
            min_time: self.times.iter().copied().min().unwrap_or(i64::MAX),
            max_time: self.times.iter().copied().max().unwrap_or(i64::MIN),
            min_id: self.ids.first().copied().unwrap_or(i64::MAX),
            max_id: self.ids.last().copied().unwrap_or(i64::MIN),
            ids: Packed::new(&self.ids),
            times: Packed::new(&self.times),
            customers: Packed::new(&self.customers),
            channels: Packed::new(&self.channels),
            live: live.into_boxed_slice(),
            dead: 0,
            text_len: self.text.len(),
            text: compress(&self.text),
            text_end: Packed::new(&self.text_end),
            vocab: Packed::new(&vocab),
            vocab_len: vocab.len(),
            counts: Packed::new(&counts),
            terms_len: stream.len(),
            terms: compress(&stream),
        }
    }
}

/// A sealed chunk's texts and terms decompressed: a scanning thread's buffers, reused
/// chunk after chunk.
struct Unpacked {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    /// Folded texts, each followed by [`SEPARATOR`].
    text: Vec<u8>,
    /// The compressed term lists, decompressed.
    raw: Vec<u8>,
    terms: Vec<u32>,
    terms_end: Vec<u32>,
}

impl Unpacked {
    fn new() -> Self {
        Unpacked {
            zstd: zstd::bulk::Decompressor::new().ok(),
            text: Vec::new(),
            raw: Vec::new(),
            terms: Vec::new(),
            terms_end: Vec::new(),
        }
    }

    /// Decompresses `blob` (`len` bytes once decompressed) into `out`.
    fn inflate(
        zstd: &mut Option<zstd::bulk::Decompressor<'static>>,
        blob: &[u8],
        len: usize,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        out.clear();
        out.reserve(len);
        let n = zstd.as_mut()?.decompress_to_buffer(blob, out).ok()?;
        (n == len).then_some(())
    }

    /// `chunk`'s texts; `None` when they do not decompress to what its ends say.
    fn text(&mut self, chunk: &Sealed) -> Option<()> {
        Self::inflate(&mut self.zstd, &chunk.text, chunk.text_len, &mut self.text)?;
        let last = chunk.rows.checked_sub(1).map(|i| chunk.text_end.get(i));
        (last.map_or(0, |e| e as usize + 1) == self.text.len()).then_some(())
    }

    /// `chunk`'s term ids and where each row's end; `None` when they do not decode to
    /// one list per row.
    fn terms(&mut self, chunk: &Sealed) -> Option<()> {
        Self::inflate(&mut self.zstd, &chunk.terms, chunk.terms_len, &mut self.raw)?;
        self.terms.clear();
        self.terms_end.clear();
        let mut at = 0;
        while at < self.raw.len() {
            let n = get_varint(&self.raw, &mut at)?;
            for _ in 0..n {
                let local = get_varint(&self.raw, &mut at)? as usize;
                if local >= chunk.vocab_len {
                    return None;
                }
                self.terms.push(chunk.vocab.get(local) as u32);
            }
            self.terms_end.push(offset(self.terms.len()));
        }
        (self.terms_end.len() == chunk.rows).then_some(())
    }
}

impl Sealed {
    fn is_live(&self, i: usize) -> bool {
        self.live[i / 64] >> (i % 64) & 1 == 1
    }

    /// Position of `id`, live or not.
    fn find(&self, id: i64) -> Option<usize> {
        if id < self.min_id || id > self.max_id {
            return None;
        }
        let (mut lo, mut hi) = (0, self.rows);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.ids.get(mid).cmp(&id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Marks row `i` deleted; `false` when it already was.
    fn kill(&mut self, i: usize) -> bool {
        if !self.is_live(i) {
            return false;
        }
        self.live[i / 64] &= !(1u64 << (i % 64));
        self.dead += 1;
        true
    }

    /// Gives the rows of `merged` (sorted) to `survivor`; how many changed.
    fn reassign(&mut self, merged: &[i64], survivor: i64) -> usize {
        let hits: Vec<usize> = (0..self.rows)
            .filter(|&i| merged.binary_search(&self.customers.get(i)).is_ok())
            .collect();
        if hits.is_empty() {
            return 0;
        }
        if !hits.iter().all(|&i| self.customers.set(i, survivor)) {
            // The survivor is outside the column's frame: pack it again.
            let mut all = self.customers.all(self.rows);
            for &i in &hits {
                all[i] = survivor;
            }
            self.customers = Packed::new(&all);
        }
        hits.len()
    }

    /// A chunk of the live rows; `None` when the texts or terms do not decompress.
    fn rebuilt(&self, unpacked: &mut Unpacked) -> Option<Sealed> {
        unpacked.text(self)?;
        unpacked.terms(self)?;
        let mut builder = Builder::default();
        for i in (0..self.rows).filter(|&i| self.is_live(i)) {
            builder.push(
                self.ids.get(i),
                self.times.get(i),
                self.customers.get(i),
                self.channel(i),
                text_of(&unpacked.text, &Ends::Packed(&self.text_end, self.rows), i),
                row_slice(&unpacked.terms, &unpacked.terms_end, i, 0),
            );
        }
        Some(builder.finish())
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Sealed>()
            + self.ids.heap_bytes()
            + self.times.heap_bytes()
            + self.customers.heap_bytes()
            + self.channels.heap_bytes()
            + self.live.len() * 8
            + self.text_end.heap_bytes()
            + self.vocab.heap_bytes()
            + self.counts.heap_bytes()
            + self.text.len()
            + self.terms.len()
    }
}

impl Columns for Sealed {
    fn len(&self) -> usize {
        self.rows
    }
    fn dead(&self) -> usize {
        self.dead
    }
    fn live(&self, i: usize) -> bool {
        self.is_live(i)
    }
    fn id(&self, i: usize) -> i64 {
        self.ids.get(i)
    }
    fn time(&self, i: usize) -> i64 {
        self.times.get(i)
    }
    fn customer(&self, i: usize) -> i64 {
        self.customers.get(i)
    }
    fn channel(&self, i: usize) -> i32 {
        self.channels.get(i) as i32
    }
    fn span(&self) -> (i64, i64) {
        (self.min_time, self.max_time)
    }
}

/// The index; see the module header.
#[derive(Debug)]
pub struct ContentIndex {
    /// Full chunks, each ascending by id (their id spans may overlap a little when rows
    /// arrive out of id order).
    sealed: Vec<Sealed>,
    /// The chunk being filled, in arrival order.
    open: Open,
    /// Position of each id of `open`.
    open_ids: HashMap<i64, usize>,
    /// Largest id in `sealed`.
    sealed_max_id: i64,
    vocabulary: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    live_rows: usize,
    /// Inserts, removes and reassignments so far (a snapshot is due when it moved).
    changes: u64,
    /// Reused by `insert`.
    scratch: Vec<u8>,
}

impl Default for ContentIndex {
    fn default() -> Self {
        ContentIndex {
            sealed: Vec::new(),
            open: Open::new(),
            open_ids: HashMap::new(),
            sealed_max_id: i64::MIN,
            vocabulary: HashMap::new(),
            names: Vec::new(),
            live_rows: 0,
            changes: 0,
            scratch: Vec::new(),
        }
    }
}

impl ContentIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.live_rows
    }

    /// Whether no row is live.
    pub fn is_empty(&self) -> bool {
        self.live_rows == 0
    }

    /// Distinct terms seen.
    pub fn vocabulary_len(&self) -> usize {
        self.names.len()
    }

    /// Rows inserted, removed or reassigned since the index was made or read from a
    /// snapshot (a counter: compare two readings).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Heap use in bytes: every column, text and term list, the vocabulary (its map
    /// estimated at 40 bytes a word beyond the word twice).
    pub fn heap_bytes(&self) -> usize {
        let chunks: usize = self.sealed.iter().map(Sealed::heap_bytes).sum();
        let words: usize = self.names.iter().map(|n| n.len() * 2 + 40).sum();
        chunks + self.open.heap_bytes() + self.open_ids.capacity() * 24 + words
    }

    /// Where `id` is: chunk (`None` for the open one) and position.
    fn locate(&self, id: i64) -> Option<(Option<usize>, usize)> {
        if let Some(&i) = self.open_ids.get(&id) {
            return Some((None, i));
        }
        if id > self.sealed_max_id {
            return None;
        }
        self.sealed
            .iter()
            .enumerate()
            .rev()
            .find_map(|(c, chunk)| chunk.find(id).map(|i| (Some(c), i)))
    }

    /// Whether row `id` is in the index (a deleted row may stay until its chunk is rebuilt;
    /// ids are never reused, and a deleted row is never read back from the database).
    pub fn contains(&self, id: i64) -> bool {
        self.locate(id).is_some()
    }

    /// Gives every row of the `merged` customers to `survivor` (a customer merge moved
    /// their communications); how many rows changed.
    pub fn reassign_customers(&mut self, merged: &[i64], survivor: i64) -> usize {
        let mut merged = merged.to_vec();
        merged.sort_unstable();
        let mut changed = 0;
        for chunk in &mut self.sealed {
            changed += chunk.reassign(&merged, survivor);
        }
        for customer in self.open.customers.iter_mut() {
            if merged.binary_search(customer).is_ok() {
                *customer = survivor;
                changed += 1;
            }
        }
        self.changes += changed as u64;
        changed
    }

    /// Adds a row; `false` (and nothing changes) when its id is already known.
    pub fn insert(&mut self, row: IndexRow<'_>) -> bool {
        if self.contains(row.id) {
            return false;
        }
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        fold_into(row.content, &mut text);
        self.push(&row, &text, terms(row.content));
        self.scratch = text;
        true
    }

    /// Adds many rows, folding and tokenizing them (the costly part) in up to `threads`
    /// threads first; how many were new.
    pub fn insert_all(&mut self, rows: &[IndexRow<'_>], threads: usize) -> usize {
        let fresh: Vec<&IndexRow<'_>> = rows.iter().filter(|r| !self.contains(r.id)).collect();
        let prepare = |part: &[&IndexRow<'_>]| -> Vec<(Vec<u8>, Vec<String>)> {
            part.iter()
                .map(|r| {
                    let mut text = Vec::new();
                    fold_into(r.content, &mut text);
                    (text, terms(r.content))
                })
                .collect()
        };
        let threads = threads.clamp(1, 8);
        let prepared: Vec<(Vec<u8>, Vec<String>)> = if threads == 1 || fresh.len() < 256 {
            prepare(&fresh)
        } else {
            let per = fresh.len().div_ceil(threads);
            std::thread::scope(|s| {
                let parts: Vec<_> = fresh
                    .chunks(per)
                    .map(|p| s.spawn(move || prepare(p)))
                    .collect();
                parts
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            })
        };
        let mut added = 0;
        for (row, (text, words)) in fresh.iter().zip(prepared) {
            // A row given twice in `rows` is added once.
            if !self.contains(row.id) {
                self.push(row, &text, words);
                added += 1;
            }
        }
        added
    }

    fn push(&mut self, row: &IndexRow<'_>, text: &[u8], words: Vec<String>) {
        let term_ids: Vec<u32> = words.into_iter().map(|t| self.intern(t)).collect();
        self.push_folded(row, text, &term_ids);
    }

    /// Adds a row already folded and tokenized.
    fn push_folded(&mut self, row: &IndexRow<'_>, text: &[u8], term_ids: &[u32]) {
        self.open_ids.insert(row.id, self.open.ids.len());
        self.open.push(row, text, term_ids);
        self.live_rows += 1;
        self.changes += 1;
        if self.open.ids.len() >= CHUNK_ROWS || self.open.text.len() >= CHUNK_TEXT_BYTES {
            self.seal();
        }
    }

    fn intern(&mut self, term: String) -> u32 {
        if let Some(&id) = self.vocabulary.get(term.as_str()) {
            return id;
        }
        let id = offset(self.names.len());
        let name: Box<str> = term.into_boxed_str();
        self.names.push(name.clone());
        self.vocabulary.insert(name, id);
        id
    }

    /// Moves the open chunk to the sealed ones (sorted by id, compressed).
    fn seal(&mut self) {
        let open = std::mem::replace(&mut self.open, Open::new());
        self.open_ids.clear();
        let chunk = open.seal();
        if chunk.rows > 0 {
            self.sealed_max_id = self.sealed_max_id.max(chunk.max_id);
            self.sealed.push(chunk);
        }
    }

    /// Marks row `id` deleted; `false` when it is unknown or already deleted. A sealed
    /// chunk that is more than half deleted is rebuilt without its dead rows.
    pub fn remove(&mut self, id: i64) -> bool {
        let Some((chunk, i)) = self.locate(id) else {
            return false;
        };
        match chunk {
            None => {
                if !self.open.live[i] {
                    return false;
                }
                self.open.live[i] = false;
                self.open.dead += 1;
            }
            Some(c) => {
                let sealed = &mut self.sealed[c];
                if !sealed.kill(i) {
                    return false;
                }
                if sealed.dead * 2 > sealed.rows {
                    // A chunk that cannot be read again keeps its dead rows (still
                    // skipped by every scan).
                    if let Some(rebuilt) = sealed.rebuilt(&mut Unpacked::new()) {
                        *sealed = rebuilt;
                    }
                }
            }
        }
        self.live_rows -= 1;
        self.changes += 1;
        true
    }

    /// Answers `q` over the live rows, in up to `threads` threads; `None` when
    /// `cancelled` turns true between two chunks, or when a chunk cannot be read.
    pub fn query(
        &self,
        q: &IndexQuery,
        threads: usize,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Option<IndexFigures> {
        let finders: Vec<Finder<'static>> = q
            .keywords
            .iter()
            .map(|k| Finder::new(fold(k).as_bytes()).into_owned())
            .collect();
        let in_range = |c: &dyn Columns| {
            let (min, max) = c.span();
            c.len() > c.dead() && min < q.end && max >= q.start
        };
        let chunks: Vec<ChunkRef<'_>> = self
            .sealed
            .iter()
            .filter(|c| in_range(*c))
            .map(ChunkRef::Sealed)
            .chain(in_range(&self.open).then_some(ChunkRef::Open(&self.open)))
            .collect();
        let scan = Scan {
            q,
            finders: &finders,
            vocabulary: self.names.len(),
        };
        let threads = threads.clamp(1, 8).min(chunks.len().max(1));
        let per = chunks.len().div_ceil(threads).max(1);
        let parts: Vec<Option<Partial>> = if threads == 1 {
            vec![scan.run(&chunks, cancelled)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = chunks
                    .chunks(per)
                    .map(|part| {
                        let scan = &scan;
                        s.spawn(move || scan.run(part, cancelled))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().ok().flatten())
                    .collect()
            })
        };
        let mut total = scan.empty();
        for part in parts {
            total.merge(part?);
        }
        Some(total.finish(&self.names, q.sample_limit))
    }

    /// What a snapshot holds, copied cheaply (the compressed texts are shared), so that
    /// it is written without holding the index.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sealed: self.sealed.clone(),
            open: self.open.seal(),
            names: self.names.clone(),
        }
    }

    /// Reads a snapshot written by [`Snapshot::write`] of `len` bytes; the index and the
    /// caller's `meta`. Any damage (a changed byte, a short file) is an error.
    pub fn read_snapshot(r: impl Read, len: u64) -> Result<(ContentIndex, Vec<u8>), SnapshotError> {
        let mut r = In {
            r,
            crc: crc32fast::Hasher::new(),
            left: len,
        };
        let magic = r.bytes(SNAPSHOT_MAGIC.len())?;
        if magic != SNAPSHOT_MAGIC {
            return Err(SnapshotError::Invalid("not a snapshot of this version"));
        }
        let meta_len = r.u64()?;
        let meta = r.bytes(meta_len)?;
        let mut index = ContentIndex::new();
        let words = r.u64()?;
        for id in 0..words {
            let len = r.u32()?;
            let word = String::from_utf8(r.bytes(len)?)
                .map_err(|_| SnapshotError::Invalid("a term is not UTF-8"))?;
            let name: Box<str> = word.into_boxed_str();
            index.names.push(name.clone());
            index.vocabulary.insert(name, offset(id as usize));
        }
        let chunks = r.u64()?;
        for _ in 0..chunks {
            let chunk = r.chunk()?;
            index.sealed_max_id = index.sealed_max_id.max(chunk.max_id);
            index.live_rows += chunk.rows - chunk.dead;
            index.sealed.push(chunk);
        }
        let open = r.chunk()?;
        let sum = r.crc.clone().finalize();
        let mut tail = [0u8; 4];
        r.r.read_exact(&mut tail)?;
        if u32::from_le_bytes(tail) != sum || r.left != 4 {
            return Err(SnapshotError::Invalid("checksum mismatch"));
        }
        // The open chunk's rows go back into the open chunk.
        let mut unpacked = Unpacked::new();
        if open.rows > 0 {
            unpacked
                .text(&open)
                .and_then(|()| unpacked.terms(&open))
                .ok_or(SnapshotError::Invalid("the open chunk does not decompress"))?;
            for i in 0..open.rows {
                let row = IndexRow {
                    id: open.ids.get(i),
                    customer_id: open.customers.get(i),
                    channel: open.channel(i),
                    occur_micros: open.times.get(i),
                    content: "",
                };
                let text = text_of(&unpacked.text, &Ends::Packed(&open.text_end, open.rows), i);
                let terms = row_slice(&unpacked.terms, &unpacked.terms_end, i, 0);
                index.push_folded(&row, text, terms);
            }
        }
        index.changes = 0;
        Ok((index, meta))
    }
}

/// A copy of the index to write as a snapshot; see [`ContentIndex::snapshot`].
#[derive(Debug)]
pub struct Snapshot {
    sealed: Vec<Sealed>,
    /// The open chunk's live rows, sealed for the file.
    open: Sealed,
    names: Vec<Box<str>>,
}

impl Snapshot {
    /// Writes the snapshot with the caller's `meta` (read back by
    /// [`ContentIndex::read_snapshot`]): little-endian arrays of the columns and the
    /// compressed texts as they are in memory, then a CRC-32 of everything.
    pub fn write(&self, meta: &[u8], w: impl Write) -> io::Result<()> {
        let mut w = Out {
            w,
            crc: crc32fast::Hasher::new(),
        };
        w.put(SNAPSHOT_MAGIC)?;
        w.u64(meta.len() as u64)?;
        w.put(meta)?;
        w.u64(self.names.len() as u64)?;
        for name in &self.names {
            w.u32(offset(name.len()))?;
            w.put(name.as_bytes())?;
        }
        w.u64(self.sealed.len() as u64)?;
        for chunk in self.sealed.iter().chain(std::iter::once(&self.open)) {
            w.chunk(chunk)?;
        }
        let sum = w.crc.finalize();
        w.w.write_all(&sum.to_le_bytes())?;
        w.w.flush()
    }
}

/// A snapshot being written, and its checksum so far.
struct Out<W> {
    w: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Out<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.w.write_all(bytes)
    }

    fn u64(&mut self, x: u64) -> io::Result<()> {
        self.put(&x.to_le_bytes())
    }

    fn u32(&mut self, x: u32) -> io::Result<()> {
        self.put(&x.to_le_bytes())
    }

    fn words(&mut self, words: &[u64]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(words.len() * 8);
        for w in words {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        self.put(&bytes)
    }

    fn packed(&mut self, p: &Packed) -> io::Result<()> {
        self.u64(p.base as u64)?;
        self.u32(p.bits)?;
        self.words(&p.words)
    }

    fn chunk(&mut self, c: &Sealed) -> io::Result<()> {
        for x in [c.rows as u64, c.dead as u64] {
            self.u64(x)?;
        }
        for x in [c.min_time, c.max_time, c.min_id, c.max_id] {
            self.u64(x as u64)?;
        }
        for p in [&c.ids, &c.times, &c.customers, &c.channels, &c.text_end] {
            self.packed(p)?;
        }
        self.u64(c.vocab_len as u64)?;
        self.packed(&c.vocab)?;
        self.packed(&c.counts)?;
        self.words(&c.live)?;
        for (len, blob) in [(c.text_len, &c.text), (c.terms_len, &c.terms)] {
            self.u64(len as u64)?;
            self.u64(blob.len() as u64)?;
            self.put(blob)?;
        }
        Ok(())
    }
}

/// A snapshot being read: its checksum so far and the bytes not read yet (no length
/// read from the file allocates more than that).
struct In<R> {
    r: R,
    crc: crc32fast::Hasher,
    left: u64,
}

/// Largest decompressed text or term list of a chunk a snapshot may claim.
const MAX_BLOB: u64 = 1 << 31;

impl<R: Read> In<R> {
    fn bytes(&mut self, n: impl TryInto<u64>) -> Result<Vec<u8>, SnapshotError> {
        let n = n
            .try_into()
            .ok()
            .filter(|&n| n <= self.left)
            .ok_or(SnapshotError::Invalid("a length runs past the end"))?;
        self.left -= n;
        let mut buf = vec![0; n as usize];
        self.r.read_exact(&mut buf)?;
        self.crc.update(&buf);
        Ok(buf)
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let b = self.bytes(8u64)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let b = self.bytes(4u64)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn words(&mut self, n: usize) -> Result<Box<[u64]>, SnapshotError> {
        let bytes = self.bytes(n as u64 * 8)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .collect())
    }

    fn packed(&mut self, rows: usize) -> Result<Packed, SnapshotError> {
        let base = self.u64()? as i64;
        let bits = self.u32()?;
        if bits > 64 {
            return Err(SnapshotError::Invalid("a column is wider than 64 bits"));
        }
        let words = self.words(words_for(rows, bits))?;
        Ok(Packed { base, bits, words })
    }

    fn chunk(&mut self) -> Result<Sealed, SnapshotError> {
        let invalid = SnapshotError::Invalid;
        let rows = usize::try_from(self.u64()?)
            .ok()
            .filter(|&n| n <= CHUNK_ROWS)
            .ok_or(invalid("a chunk is too long"))?;
        let dead = self.u64()? as usize;
        let [min_time, max_time, min_id, max_id] =
            [self.u64()?, self.u64()?, self.u64()?, self.u64()?].map(|x| x as i64);
        let ids = self.packed(rows)?;
        let times = self.packed(rows)?;
        let customers = self.packed(rows)?;
        let channels = self.packed(rows)?;
        let text_end = self.packed(rows)?;
        let vocab_len = usize::try_from(self.u64()?)
            .ok()
            .filter(|&n| n as u64 <= self.left)
            .ok_or(invalid("a chunk's terms run past the end"))?;
        let vocab = self.packed(vocab_len)?;
        let counts = self.packed(vocab_len)?;
        let live = self.words(rows.div_ceil(64))?;
        let ones: usize = live.iter().map(|w| w.count_ones() as usize).sum();
        if dead > rows || ones != rows - dead {
            return Err(invalid("a chunk's deleted rows do not add up"));
        }
        let mut blob = || -> Result<(usize, Arc<[u8]>), SnapshotError> {
            let len = self.u64()?;
            if len > MAX_BLOB {
                return Err(invalid("a chunk's text is too long"));
            }
            let n = self.u64()?;
            Ok((len as usize, self.bytes(n)?.into()))
        };
        let (text_len, text) = blob()?;
        let (terms_len, terms) = blob()?;
        Ok(Sealed {
            rows,
            ids,
            times,
            customers,
            channels,
            live,
            dead,
            text,
            text_len,
            text_end,
            vocab,
            vocab_len,
            counts,
            terms,
            terms_len,
            min_time,
            max_time,
            min_id,
            max_id,
        })
    }
}

/// A chunk a scan reads.
#[derive(Clone, Copy)]
enum ChunkRef<'a> {
    Open(&'a Open),
    Sealed(&'a Sealed),
}

/// One query's prepared state, shared by the scanning threads.
struct Scan<'a> {
    q: &'a IndexQuery,
    finders: &'a [Finder<'static>],
    vocabulary: usize,
}

/// What one thread found.
struct Partial {
    scanned: i64,
    messages: Vec<i64>,
    customers: Vec<HashSet<i64>>,
    term_counts: Vec<u64>,
    /// Max-heap of the oldest matches, at most `sample_limit`.
    samples: BinaryHeap<(i64, i64)>,
}

impl Partial {
    fn merge(&mut self, other: Partial) {
        self.scanned += other.scanned;
        for (a, b) in self.messages.iter_mut().zip(other.messages) {
            *a += b;
        }
        for (a, b) in self.customers.iter_mut().zip(other.customers) {
            a.extend(b);
        }
        if self.term_counts.is_empty() {
            self.term_counts = other.term_counts;
        } else {
            for (a, b) in self.term_counts.iter_mut().zip(other.term_counts) {
                *a += b;
            }
        }
        self.samples.extend(other.samples);
    }

    fn finish(self, names: &[Box<str>], sample_limit: usize) -> IndexFigures {
        let mut samples = self.samples.into_sorted_vec();
        samples.truncate(sample_limit);
        IndexFigures {
            scanned: self.scanned,
            keywords: match_figures(&self.messages, &self.customers),
            terms: TermCounter::from_counts(
                self.term_counts
                    .iter()
                    .enumerate()
                    .filter(|(_, &n)| n > 0)
                    .map(|(t, &n)| (names[t].to_string(), n)),
            ),
            samples,
        }
    }
}

/// A chunk's texts and term lists as a scan reads them.
struct Parts<'a> {
    text: &'a [u8],
    text_end: Ends<'a>,
    terms: &'a [u32],
    terms_end: &'a [u32],
    /// The chunk's term counts `(terms, counts, distinct)`, while it has no deletes.
    counted: Option<(&'a Packed, &'a Packed, usize)>,
}

impl Scan<'_> {
    fn empty(&self) -> Partial {
        Partial {
            scanned: 0,
            messages: vec![0; self.finders.len()],
            customers: vec![HashSet::new(); self.finders.len()],
            term_counts: if self.q.count_terms {
                vec![0; self.vocabulary]
            } else {
                Vec::new()
            },
            samples: BinaryHeap::new(),
        }
    }

    fn run(
        &self,
        chunks: &[ChunkRef<'_>],
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Option<Partial> {
        let mut out = self.empty();
        let mut unpacked = Unpacked::new();
        for chunk in chunks {
            if cancelled() {
                return None;
            }
            match chunk {
                ChunkRef::Open(c) => {
                    let parts = Parts {
                        text: &c.text,
                        text_end: Ends::Plain(&c.text_end),
                        terms: &c.terms,
                        terms_end: &c.terms_end,
                        counted: None,
                    };
                    self.chunk(*c, &parts, &mut out);
                }
                ChunkRef::Sealed(c) => {
                    // Only what the query reads is decompressed, nothing when no row
                    // of the customers in scope is in the chunk.
                    if !self.q.customers.is_empty()
                        && !(0..c.rows).any(|i| self.admits(*c, i, false))
                    {
                        continue;
                    }
                    if !self.finders.is_empty() {
                        unpacked.text(c)?;
                    }
                    let counted = (c.dead == 0).then_some((&c.vocab, &c.counts, c.vocab_len));
                    if self.q.count_terms && !(counted.is_some() && self.unfiltered(*c)) {
                        unpacked.terms(c)?;
                    }
                    let parts = Parts {
                        text: &unpacked.text,
                        text_end: Ends::Packed(&c.text_end, c.rows),
                        terms: &unpacked.terms,
                        terms_end: &unpacked.terms_end,
                        counted,
                    };
                    self.chunk(*c, &parts, &mut out);
                }
            }
        }
        Some(out)
    }

    /// Whether row `i` of `chunk` is in scope (`whole`: the chunk's span is in range).
    fn admits(&self, chunk: &impl Columns, i: usize, whole: bool) -> bool {
        let q = self.q;
        chunk.live(i)
            && (whole || (chunk.time(i) >= q.start && chunk.time(i) < q.end))
            && (q.channels.is_empty() || q.channels.contains(&chunk.channel(i)))
            && (q.customers.is_empty() || q.customers.binary_search(&chunk.customer(i)).is_ok())
    }

    /// Whether every live row of `chunk` is in scope.
    fn unfiltered(&self, chunk: &impl Columns) -> bool {
        let (min_time, max_time) = chunk.span();
        min_time >= self.q.start
            && max_time < self.q.end
            && self.q.channels.is_empty()
            && self.q.customers.is_empty()
    }

    fn chunk(&self, chunk: &impl Columns, parts: &Parts<'_>, out: &mut Partial) {
        let q = self.q;
        let (min_time, max_time) = chunk.span();
        let whole = min_time >= q.start && max_time < q.end;
        let unfiltered = self.unfiltered(chunk);
        // Rows in scope and their terms.
        if unfiltered && !q.count_terms {
            out.scanned += (chunk.len() - chunk.dead()) as i64;
        } else if let (true, Some((terms, counts, n))) = (unfiltered, parts.counted) {
            out.scanned += (chunk.len() - chunk.dead()) as i64;
            for j in 0..n {
                if let Some(c) = out.term_counts.get_mut(terms.get(j) as usize) {
                    *c += counts.get(j) as u64;
                }
            }
        } else {
            for i in 0..chunk.len() {
                if self.admits(chunk, i, whole) {
                    out.scanned += 1;
                    if q.count_terms {
                        for &t in row_slice(parts.terms, parts.terms_end, i, 0) {
                            if let Some(n) = out.term_counts.get_mut(t as usize) {
                                *n += 1;
                            }
                        }
                    }
                }
            }
        }
        if self.finders.is_empty() {
            return;
        }
        let (text, text_end) = (parts.text, parts.text_end);
        // Keywords: a few customers -> test their rows one by one; otherwise one pass
        // over the chunk's text per keyword, each hit mapped to its row.
        // Rows matching any keyword, kept only when samples are asked for.
        let mut matched = vec![false; if q.sample_limit > 0 { chunk.len() } else { 0 }];
        for (k, finder) in self.finders.iter().enumerate() {
            let mut hit = |i: usize, out: &mut Partial| {
                out.messages[k] += 1;
                out.customers[k].insert(chunk.customer(i));
                if let Some(m) = matched.get_mut(i) {
                    *m = true;
                }
            };
            if !q.customers.is_empty() {
                for i in 0..chunk.len() {
                    if self.admits(chunk, i, whole)
                        && finder.find(text_of(text, &text_end, i)).is_some()
                    {
                        hit(i, out);
                    }
                }
                continue;
            }
            let mut from = 0usize;
            let mut row = 0usize;
            while let Some(at) = finder.find(&text[from..]) {
                let at = from + at;
                row = text_end.row_at(row, at);
                if row >= text_end.len() {
                    break;
                }
                if self.admits(chunk, row, whole) {
                    hit(row, out);
                }
                from = text_end.get(row) + 1;
                if from >= text.len() {
                    break;
                }
            }
        }
        if q.sample_limit > 0 {
            for (i, _) in matched.iter().enumerate().filter(|(_, &m)| m) {
                out.samples.push((chunk.time(i), chunk.id(i)));
                if out.samples.len() > q.sample_limit {
                    out.samples.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::DateTime;

    use super::*;
    use crate::analytics::content::{ContentScan, ScannedRow};
    use crate::analytics::matching::Matcher;

    #[derive(Clone)]
    struct Row {
        id: i64,
        customer: i64,
        channel: i32,
        micros: i64,
        content: String,
    }

    impl ScannedRow for Row {
        fn id(&self) -> i64 {
            self.id
        }
        fn customer_id(&self) -> i64 {
            self.customer
        }
        fn occur_time(&self) -> chrono::NaiveDateTime {
            DateTime::from_timestamp_micros(self.micros)
                .unwrap()
                .naive_utc()
        }
        fn content(&self) -> &str {
            &self.content
        }
    }

    const WORDS: &[&str] = &[
        "refund",
        "Refund",
        "REFUND",
        "退款",
        "invoice",
        "delivery",
        "late",
        "K\u{212A}",
        "ſtatus",
        "请",
        "尽快",
        "处理",
        "退款申请",
        "order",
        "%",
        "_x",
        "\\",
        "配送",
    ];

    fn rows(n: i64, seed: u64) -> Vec<Row> {
        let mut state = seed | 1;
        let mut next = |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        (1..=n)
            .map(|id| {
                let words = 1 + next(8);
                let content = (0..words)
                    .map(|_| WORDS[next(WORDS.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(if next(2) == 0 { " " } else { "" });
                Row {
                    id,
                    customer: 1 + next(20) as i64,
                    channel: 1 + next(4) as i32,
                    micros: next(1_000_000) as i64 * 1_000_000,
                    content,
                }
            })
            .collect()
    }

    fn indexed(r: &Row) -> IndexRow<'_> {
        IndexRow {
            id: r.id,
            customer_id: r.customer,
            channel: r.channel,
            occur_micros: r.micros,
            content: &r.content,
        }
    }

    fn index_of(rows: &[Row]) -> ContentIndex {
        let mut index = ContentIndex::new();
        for r in rows {
            index.insert(indexed(r));
        }
        index
    }

    /// The reference: the database path's scan over the rows in scope.
    fn reference(rows: &[Row], q: &IndexQuery) -> IndexFigures {
        let scope: Vec<Row> = rows
            .iter()
            .filter(|r| {
                r.micros >= q.start
                    && r.micros < q.end
                    && (q.channels.is_empty() || q.channels.contains(&r.channel))
                    && (q.customers.is_empty() || q.customers.contains(&r.customer))
            })
            .cloned()
            .collect();
        let matcher =
            (!q.keywords.is_empty()).then(|| Arc::new(Matcher::new(&q.keywords, &[]).unwrap()));
        let mut scan = ContentScan::new(matcher, q.count_terms, q.sample_limit);
        scan.feed(&scope);
        let f = scan.finish(usize::MAX);
        IndexFigures {
            scanned: f.scanned,
            keywords: f.keywords,
            terms: TermCounter::from_counts(f.top_terms),
            samples: f
                .samples
                .iter()
                .map(|s| (s.occur_time.and_utc().timestamp_micros(), s.id))
                .collect(),
        }
    }

    fn queries() -> Vec<IndexQuery> {
        let keywords: Vec<String> = ["refund", "退款", "k", "STATUS", "%", "_", "\\", "申请 o"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        vec![
            IndexQuery {
                start: i64::MIN,
                end: i64::MAX,
                keywords: keywords.clone(),
                count_terms: true,
                sample_limit: 7,
                ..IndexQuery::default()
            },
            IndexQuery {
                start: 200_000_000_000,
                end: 700_000_000_000,
                channels: vec![2, 3],
                keywords: keywords.clone(),
                count_terms: true,
                sample_limit: 3,
                ..IndexQuery::default()
            },
            IndexQuery {
                start: 0,
                end: 900_000_000_000,
                customers: vec![3, 7, 19],
                keywords,
                count_terms: true,
                sample_limit: 100,
                ..IndexQuery::default()
            },
        ]
    }

    #[test]
    fn answers_equal_the_scan_over_the_same_rows() {
        // More than two chunks, so sealing and the multi-thread merge are exercised.
        let rows = rows(2 * CHUNK_ROWS as i64 + 500, 7);
        let index = index_of(&rows);
        for q in queries() {
            for threads in [1, 2, 3] {
                let got = index.query(&q, threads, &|| false).unwrap();
                assert_eq!(got, reference(&rows, &q), "threads {threads} query {q:?}");
            }
        }
    }

    #[test]
    fn deletes_and_out_of_order_arrivals_are_exact() {
        let mut rows = rows(CHUNK_ROWS as i64 + 3_000, 11);
        // Arrive out of id order (late commits), and twice (re-reads).
        let mut arrival = rows.clone();
        arrival.swap(10, 19_000);
        arrival.swap(5, CHUNK_ROWS + 100);
        let mut index = ContentIndex::new();
        for r in arrival.iter().chain(arrival.iter().take(50)) {
            index.insert(indexed(r));
        }
        assert_eq!(index.len(), rows.len());
        // Delete most of the first chunk (forcing a rebuild) and a few others.
        let gone: HashSet<i64> = (1..=12_000).chain([19_300, 19_001]).collect();
        // In id order, so which deletes come before a chunk's rebuild is the same every
        // run (a set's order is not).
        let mut order: Vec<i64> = gone.iter().copied().collect();
        order.sort_unstable();
        for &id in &order {
            assert!(index.remove(id));
            assert!(!index.remove(id), "a second delete changes nothing");
        }
        assert!(!index.remove(10_000_000));
        rows.retain(|r| !gone.contains(&r.id));
        assert_eq!(index.len(), rows.len());
        assert!(
            !index.contains(1),
            "a rebuilt chunk forgets its deleted rows"
        );
        assert!(index.contains(12_001));
        for q in queries() {
            assert_eq!(index.query(&q, 2, &|| false).unwrap(), reference(&rows, &q));
        }
    }

    #[test]
    fn inserting_in_threads_equals_inserting_one_by_one() {
        let rows = rows(CHUNK_ROWS as i64 + 700, 5);
        let one = index_of(&rows);
        let mut many = ContentIndex::new();
        let batch: Vec<IndexRow<'_>> = rows
            .iter()
            .chain(rows.iter().take(10))
            .map(indexed)
            .collect();
        assert_eq!(many.insert_all(&batch, 3), rows.len());
        assert_eq!(many.insert_all(&batch[..5], 2), 0);
        for q in queries() {
            assert_eq!(many.query(&q, 2, &|| false), one.query(&q, 1, &|| false));
        }
    }

    #[test]
    fn a_cancelled_query_answers_nothing() {
        let index = index_of(&rows(100, 3));
        assert!(index.query(&queries()[0], 1, &|| true).is_none());
    }

    #[test]
    fn reassigned_rows_answer_for_their_new_customer() {
        let mut index = ContentIndex::new();
        for (id, customer) in [(1, 7), (2, 8), (3, 9), (4, 8)] {
            index.insert(IndexRow {
                id,
                customer_id: customer,
                channel: 1,
                occur_micros: id * 1_000_000,
                content: "refund",
            });
        }
        let scoped = |customers: Vec<i64>| IndexQuery {
            start: 0,
            end: i64::MAX,
            customers,
            keywords: vec!["refund".into()],
            ..IndexQuery::default()
        };
        assert_eq!(index.reassign_customers(&[9, 8], 7), 3);
        assert_eq!(
            index.query(&scoped(vec![7]), 1, &|| false).unwrap().scanned,
            4
        );
        assert_eq!(
            index
                .query(&scoped(vec![8, 9]), 1, &|| false)
                .unwrap()
                .scanned,
            0
        );
        assert_eq!(index.reassign_customers(&[9, 8], 7), 0, "idempotent");
    }

    #[test]
    fn a_snapshot_reads_back_to_the_same_answers_and_damage_is_refused() {
        let mut rows = rows(2 * CHUNK_ROWS as i64 + 900, 13);
        let mut index = index_of(&rows);
        // Deletes in a sealed chunk (not enough to rebuild it) and in the open one, and
        // a merge, so every column and the counts of a chunk with deletes are written.
        let gone: Vec<i64> = (100..400).chain([2 * CHUNK_ROWS as i64 + 5]).collect();
        for &id in &gone {
            assert!(index.remove(id));
        }
        rows.retain(|r| !gone.contains(&r.id));
        index.reassign_customers(&[4], 19);
        for r in &mut rows {
            if r.customer == 4 {
                r.customer = 19;
            }
        }
        let mut bytes = Vec::new();
        index.snapshot().write(b"meta", &mut bytes).unwrap();
        let (back, meta) = ContentIndex::read_snapshot(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(meta, b"meta");
        assert_eq!((back.len(), back.changes()), (rows.len(), 0));
        assert!(
            back.contains(2 * CHUNK_ROWS as i64 + 1),
            "the open chunk's rows are back"
        );
        for q in queries() {
            assert_eq!(back.query(&q, 2, &|| false).unwrap(), reference(&rows, &q));
        }
        // Every changed byte, every cut is refused (some positions of each kind).
        for at in (0..bytes.len()).step_by(bytes.len() / 97) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x41;
            assert!(
                ContentIndex::read_snapshot(&bad[..], bad.len() as u64).is_err(),
                "{at}"
            );
            assert!(
                ContentIndex::read_snapshot(&bytes[..at], at as u64).is_err(),
                "{at}"
            );
        }
    }

    #[test]
    fn packed_columns_hold_any_range_and_refuse_what_does_not_fit() {
        let values = [i64::MIN, -1, 0, 7, i64::MAX];
        let p = Packed::new(&values);
        assert_eq!(p.all(values.len()), values);
        let mut small = Packed::new(&[100, 103, 101]);
        assert_eq!(small.bits, 2);
        assert!(small.set(1, 100));
        assert!(!small.set(2, 104));
        assert!(!small.set(2, 99));
        assert_eq!(small.all(3), [100, 100, 101]);
        assert_eq!(Packed::new(&[5, 5]).all(2), [5, 5]);
    }

    #[test]
    fn an_empty_index_answers_zeros() {
        let q = &queries()[0];
        let f = ContentIndex::new().query(q, 2, &|| false).unwrap();
        assert_eq!(f.scanned, 0);
        assert_eq!(f.keywords.len(), q.keywords.len());
        assert!(f.samples.is_empty());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
/// Measurements on a real database (not run by default): `DEMO_DB=path/to/demo.db cargo
/// test --lib content_index::measure -- --ignored --nocapture`, the file made by
/// `crm-comms seed-demo`.
mod measure {
    use super::*;

    /// Every communication of DEMO_DB: id, customer, channel, micros, content.
    fn demo_rows() -> Vec<(i64, i64, i32, i64, String)> {
        use diesel::prelude::*;
        let path = std::env::var("DEMO_DB").unwrap();
        let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
        // raw SQL: the content feed's own row type (QueryableByName), read synchronously
        diesel::sql_query(format!(
            "SELECT {} FROM communications ORDER BY id",
            crate::db::content_feed::FEED_SELECT_LIST
        ))
        .load::<crate::db::content_feed::FeedRow>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|f| {
            (
                f.id,
                f.customer_id,
                f.channel,
                f.occur_time.and_utc().timestamp_micros(),
                f.content,
            )
        })
        .collect()
    }

    /// DEMO_DB's rows ten times over (ids moved on), keyword counts and top terms timed.
    #[test]
    #[ignore]
    fn keyword_and_term_times() {
        let rows = demo_rows();
        let prepared: Vec<(Vec<u8>, Vec<String>)> = rows
            .iter()
            .map(|r| {
                let mut t = Vec::new();
                fold_into(&r.4, &mut t);
                (t, terms(&r.4))
            })
            .collect();
        let mut index = ContentIndex::new();
        let copies = 10;
        let t = std::time::Instant::now();
        for copy in 0..copies {
            for (r, (text, words)) in rows.iter().zip(&prepared) {
                let row = IndexRow {
                    id: r.0 + copy * 1_000_000,
                    customer_id: r.1,
                    channel: r.2,
                    occur_micros: r.3,
                    content: "",
                };
                index.push(&row, text, words.clone());
            }
        }
        eprintln!(
            "rows {} built in {:?}, heap {} B/row",
            index.len(),
            t.elapsed(),
            index.heap_bytes() / index.len()
        );
        let keywords = IndexQuery {
            start: i64::MIN,
            end: i64::MAX,
            keywords: vec!["退款".into(), "refund".into(), "invoice".into()],
            ..IndexQuery::default()
        };
        let terms_q = IndexQuery {
            start: i64::MIN,
            end: i64::MAX,
            count_terms: true,
            ..IndexQuery::default()
        };
        let mut some = keywords.clone();
        some.customers = vec![5, 17, 300];
        some.sample_limit = 10;
        for (name, q) in [
            ("keywords", &keywords),
            ("top terms", &terms_q),
            ("keywords, 3 customers", &some),
        ] {
            let mut best = std::time::Duration::MAX;
            let mut answer = None;
            for _ in 0..3 {
                let t = std::time::Instant::now();
                answer = index.query(q, 2, &|| false);
                best = best.min(t.elapsed());
            }
            let a = answer.unwrap();
            eprintln!(
                "{name}: best of 3 {best:?} scanned {} kw {:?}",
                a.scanned,
                a.keywords.iter().map(|k| k.messages).collect::<Vec<_>>()
            );
        }
    }
}

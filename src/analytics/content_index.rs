//! The in-memory content index: every communication's content, case-folded, with its
//! terms, customer, channel and time, in compact columns, so that keyword counts and
//! top terms are answered without reading the database.
//!
//! Pure data structure, no I/O: `service::content_index` fills it from the database and
//! keeps it current. Rows live in chunks of [`CHUNK_ROWS`]; each chunk holds its folded
//! texts back to back (one `0xFF` byte, which UTF-8 never contains, after each), so one
//! `memmem` pass over a chunk finds a keyword in all of its rows, and a chunk whose time
//! span misses the range is skipped whole. Terms are interned once (`u32` ids), so top
//! terms are a counting pass over the rows in scope.
//!
//! Answers equal [`super::content::ContentScan`]'s over the same rows: keywords match by
//! [`super::fold`] (proved equal to the keyword regex there), terms come from the same
//! [`super::terms::terms`], and ordering ties use the same rules.

use std::collections::{BinaryHeap, HashMap, HashSet};

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

/// Rows in columns; see the module header.
#[derive(Debug, Default)]
struct Chunk {
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
    min_id: i64,
    max_id: i64,
    /// Ids ascend (sealed chunks always do).
    sorted: bool,
}

impl Chunk {
    fn new() -> Self {
        Chunk {
            min_time: i64::MAX,
            max_time: i64::MIN,
            min_id: i64::MAX,
            max_id: i64::MIN,
            sorted: true,
            ..Chunk::default()
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
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
        self.min_id = self.min_id.min(row.id);
        self.max_id = self.max_id.max(row.id);
    }

    fn text_of(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.text_end[i - 1] as usize + 1
        };
        &self.text[start..self.text_end[i] as usize]
    }

    fn terms_of(&self, i: usize) -> &[u32] {
        let start = if i == 0 {
            0
        } else {
            self.terms_end[i - 1] as usize
        };
        &self.terms[start..self.terms_end[i] as usize]
    }

    /// A chunk of the live rows, ascending by id.
    fn rebuilt(&self) -> Chunk {
        let mut order: Vec<usize> = (0..self.len()).filter(|&i| self.live[i]).collect();
        order.sort_unstable_by_key(|&i| self.ids[i]);
        let mut out = Chunk::new();
        for i in order {
            let row = IndexRow {
                id: self.ids[i],
                customer_id: self.customers[i],
                channel: self.channels[i],
                occur_micros: self.times[i],
                content: "",
            };
            out.push(&row, self.text_of(i), self.terms_of(i));
        }
        out
    }

    /// Position of `id`, live or not.
    fn find(&self, id: i64) -> Option<usize> {
        if id < self.min_id || id > self.max_id {
            return None;
        }
        if self.sorted {
            self.ids.binary_search(&id).ok()
        } else {
            self.ids.iter().position(|&x| x == id)
        }
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
}

fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The index; see the module header.
#[derive(Debug)]
pub struct ContentIndex {
    /// Full chunks, each ascending by id (their id spans may overlap a little when rows
    /// arrive out of id order).
    sealed: Vec<Chunk>,
    /// The chunk being filled, in arrival order.
    open: Chunk,
    /// Position of each id of `open`.
    open_ids: HashMap<i64, usize>,
    /// Largest id in `sealed`.
    sealed_max_id: i64,
    vocabulary: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    live_rows: usize,
    /// Reused by `insert`.
    scratch: Vec<u8>,
}

impl Default for ContentIndex {
    fn default() -> Self {
        ContentIndex {
            sealed: Vec::new(),
            open: Chunk::new(),
            open_ids: HashMap::new(),
            sealed_max_id: i64::MIN,
            vocabulary: HashMap::new(),
            names: Vec::new(),
            live_rows: 0,
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

    /// Approximate heap use, in bytes.
    pub fn heap_bytes(&self) -> usize {
        let chunks: usize = self.sealed.iter().map(Chunk::heap_bytes).sum();
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
        for chunk in self
            .sealed
            .iter_mut()
            .chain(std::iter::once(&mut self.open))
        {
            for customer in chunk.customers.iter_mut() {
                if merged.binary_search(customer).is_ok() {
                    *customer = survivor;
                    changed += 1;
                }
            }
        }
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
        self.open_ids.insert(row.id, self.open.len());
        self.open.push(row, text, &term_ids);
        self.live_rows += 1;
        if self.open.len() >= CHUNK_ROWS || self.open.text.len() >= CHUNK_TEXT_BYTES {
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

    /// Moves the open chunk to the sealed ones (sorted by id).
    fn seal(&mut self) {
        let open = std::mem::replace(&mut self.open, Chunk::new());
        self.open_ids.clear();
        let chunk = if open.sorted && open.dead == 0 {
            open
        } else {
            open.rebuilt()
        };
        if chunk.len() > 0 {
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
        let target = match chunk {
            None => &mut self.open,
            Some(c) => &mut self.sealed[c],
        };
        if !target.live[i] {
            return false;
        }
        target.live[i] = false;
        target.dead += 1;
        self.live_rows -= 1;
        if let Some(c) = chunk {
            let sealed = &mut self.sealed[c];
            if sealed.dead * 2 > sealed.len() {
                *sealed = sealed.rebuilt();
            }
        }
        true
    }

    /// Answers `q` over the live rows, in up to `threads` threads; `None` when
    /// `cancelled` turns true between two chunks.
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
        let chunks: Vec<&Chunk> = self
            .sealed
            .iter()
            .chain(std::iter::once(&self.open))
            .filter(|c| c.len() > c.dead && c.min_time < q.end && c.max_time >= q.start)
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

    fn run(&self, chunks: &[&Chunk], cancelled: &(dyn Fn() -> bool + Sync)) -> Option<Partial> {
        let mut out = self.empty();
        for chunk in chunks {
            if cancelled() {
                return None;
            }
            self.chunk(chunk, &mut out);
        }
        Some(out)
    }

    /// Whether row `i` of `chunk` is in scope (`whole`: the chunk's span is in range).
    fn admits(&self, chunk: &Chunk, i: usize, whole: bool) -> bool {
        let q = self.q;
        chunk.live[i]
            && (whole || (chunk.times[i] >= q.start && chunk.times[i] < q.end))
            && (q.channels.is_empty() || q.channels.contains(&chunk.channels[i]))
            && (q.customers.is_empty() || q.customers.binary_search(&chunk.customers[i]).is_ok())
    }

    fn chunk(&self, chunk: &Chunk, out: &mut Partial) {
        let q = self.q;
        let whole = chunk.min_time >= q.start && chunk.max_time < q.end;
        let unfiltered = whole && q.channels.is_empty() && q.customers.is_empty();
        // Rows in scope and their terms.
        if unfiltered && !q.count_terms {
            out.scanned += (chunk.len() - chunk.dead) as i64;
        } else {
            for i in 0..chunk.len() {
                if self.admits(chunk, i, whole) {
                    out.scanned += 1;
                    for &t in chunk.terms_of(i) {
                        if let Some(n) = out.term_counts.get_mut(t as usize) {
                            *n += 1;
                        }
                    }
                }
            }
        }
        if self.finders.is_empty() {
            return;
        }
        // Keywords: a few customers -> test their rows one by one; otherwise one pass
        // over the chunk's text per keyword, each hit mapped to its row.
        // Rows matching any keyword, kept only when samples are asked for.
        let mut matched = vec![false; if q.sample_limit > 0 { chunk.len() } else { 0 }];
        for (k, finder) in self.finders.iter().enumerate() {
            let mut hit = |i: usize, out: &mut Partial| {
                out.messages[k] += 1;
                out.customers[k].insert(chunk.customers[i]);
                if let Some(m) = matched.get_mut(i) {
                    *m = true;
                }
            };
            if !q.customers.is_empty() {
                for i in 0..chunk.len() {
                    if self.admits(chunk, i, whole) && finder.find(chunk.text_of(i)).is_some() {
                        hit(i, out);
                    }
                }
                continue;
            }
            let mut from = 0usize;
            let mut row = 0usize;
            while let Some(at) = finder.find(&chunk.text[from..]) {
                let at = from + at;
                while (chunk.text_end[row] as usize) < at {
                    row += 1;
                }
                if self.admits(chunk, row, whole) {
                    hit(row, out);
                }
                from = chunk.text_end[row] as usize + 1;
                if from >= chunk.text.len() {
                    break;
                }
            }
        }
        if q.sample_limit > 0 {
            for (i, _) in matched.iter().enumerate().filter(|(_, &m)| m) {
                out.samples.push((chunk.times[i], chunk.ids[i]));
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
    fn an_empty_index_answers_zeros() {
        let q = &queries()[0];
        let f = ContentIndex::new().query(q, 2, &|| false).unwrap();
        assert_eq!(f.scanned, 0);
        assert_eq!(f.keywords.len(), q.keywords.len());
        assert!(f.samples.is_empty());
    }
}

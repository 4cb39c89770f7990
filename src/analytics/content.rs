//! The content scan: keyword and pattern matches, distinct customers, top terms and the
//! oldest samples over communications fed page by page. Pure state machine, no I/O; the
//! caller reads the pages and decides where to run [`ContentScan::feed`].

use std::collections::HashSet;
use std::sync::Arc;

use chrono::NaiveDateTime;

use super::matching::{nfc, snippet, Hits, Matcher};
use super::terms::TermCounter;

/// Characters of context either side of a sample's first match.
pub const SNIPPET_RADIUS: usize = 40;

/// One communication as the scan sees it.
pub trait ScannedRow {
    /// Its id.
    fn id(&self) -> i64;
    /// Its customer.
    fn customer_id(&self) -> i64;
    /// When it happened.
    fn occur_time(&self) -> NaiveDateTime;
    /// What was said.
    fn content(&self) -> &str;
}

/// Matches of one keyword or pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchFigures {
    /// Communications that match.
    pub messages: i64,
    /// Distinct customers among them.
    pub customers: i64,
}

/// The figures of each query from its message count and its set of customers.
pub fn match_figures(messages: &[i64], customers: &[HashSet<i64>]) -> Vec<MatchFigures> {
    messages
        .iter()
        .zip(customers)
        .map(|(&messages, c)| MatchFigures {
            messages,
            customers: c.len() as i64,
        })
        .collect()
}

/// A matching communication with a snippet around its first match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Communication id.
    pub id: i64,
    /// Its customer.
    pub customer_id: i64,
    /// When it happened.
    pub occur_time: NaiveDateTime,
    /// Text around the first match.
    pub snippet: String,
    /// The keyword or pattern that matched first.
    pub matched: String,
}

/// The figures of a content scan.
#[derive(Debug, Clone, Default)]
pub struct ContentFigures {
    /// Communications read.
    pub scanned: i64,
    /// One entry per keyword.
    pub keywords: Vec<MatchFigures>,
    /// One entry per pattern.
    pub patterns: Vec<MatchFigures>,
    /// Top terms, count descending, ties by term.
    pub top_terms: Vec<(String, u64)>,
    /// Oldest matching communications first.
    pub samples: Vec<Sample>,
}

/// Running state of a content scan, fed page by page.
#[derive(Debug)]
pub struct ContentScan {
    matcher: Option<Arc<Matcher>>,
    terms: Option<TermCounter>,
    sample_limit: usize,
    scanned: i64,
    /// Keywords then patterns: messages and distinct customers.
    messages: Vec<i64>,
    customers: Vec<HashSet<i64>>,
    samples: Vec<Sample>,
    /// `(occur_time, id)` of the newest kept sample.
    newest_sample: Option<(NaiveDateTime, i64)>,
    hits: Hits,
}

impl ContentScan {
    /// A scan matching `matcher` (none: no matching), counting terms when `top_terms`
    /// is set, keeping at most `sample_limit` samples.
    pub fn new(matcher: Option<Arc<Matcher>>, top_terms: bool, sample_limit: usize) -> Self {
        let queries = matcher
            .as_ref()
            .map_or(0, |m| m.keyword_count() + m.pattern_count());
        ContentScan {
            matcher,
            terms: top_terms.then(TermCounter::new),
            sample_limit,
            scanned: 0,
            messages: vec![0; queries],
            customers: vec![HashSet::new(); queries],
            samples: Vec::new(),
            hits: Hits::default(),
            newest_sample: None,
        }
    }

    /// Adds one page of rows, in any order.
    pub fn feed<R: ScannedRow>(&mut self, rows: &[R]) {
        for row in rows {
            self.scanned += 1;
            if let Some(terms) = &mut self.terms {
                terms.add_text(row.content());
            }
            let Some(matcher) = &self.matcher else {
                continue;
            };
            matcher.matches_into(row.content(), &mut self.hits);
            if !self.hits.any() {
                continue;
            }
            let all = self.hits.keywords.iter().chain(&self.hits.patterns);
            for (i, &hit) in all.enumerate() {
                if hit {
                    if let (Some(m), Some(c)) =
                        (self.messages.get_mut(i), self.customers.get_mut(i))
                    {
                        *m += 1;
                        c.insert(row.customer_id());
                    }
                }
            }
            // Keep the oldest `sample_limit` matches; rows may arrive in id order.
            let key = (row.occur_time(), row.id());
            let full = self.samples.len() >= self.sample_limit;
            if self.sample_limit == 0 || (full && self.newest_sample.is_some_and(|n| key >= n)) {
                continue;
            }
            if let Some(first) = matcher.first_match(row.content()) {
                // The match's offsets are into the content's NFC form.
                let text = nfc(row.content());
                let sample = Sample {
                    id: row.id(),
                    customer_id: row.customer_id(),
                    occur_time: row.occur_time(),
                    snippet: snippet(&text, first.start, first.end, SNIPPET_RADIUS),
                    matched: first.query,
                };
                if full {
                    if let Some(pos) = self
                        .samples
                        .iter()
                        .position(|x| Some((x.occur_time, x.id)) == self.newest_sample)
                    {
                        self.samples[pos] = sample;
                    }
                } else {
                    self.samples.push(sample);
                }
                self.newest_sample = self.samples.iter().map(|x| (x.occur_time, x.id)).max();
            }
        }
    }

    /// The figures, with the `top_terms` most frequent terms.
    pub fn finish(mut self, top_terms: usize) -> ContentFigures {
        self.samples.sort_by_key(|x| (x.occur_time, x.id));
        let keyword_count = self.matcher.as_ref().map_or(0, |m| m.keyword_count());
        let mut all = match_figures(&self.messages, &self.customers);
        let patterns = all.split_off(keyword_count.min(all.len()));
        ContentFigures {
            scanned: self.scanned,
            keywords: all,
            patterns,
            top_terms: self.terms.map(|t| t.top(top_terms)).unwrap_or_default(),
            samples: self.samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row(i64, i64, &'static str, &'static str);

    impl ScannedRow for Row {
        fn id(&self) -> i64 {
            self.0
        }
        fn customer_id(&self) -> i64 {
            self.1
        }
        fn occur_time(&self) -> NaiveDateTime {
            NaiveDateTime::parse_from_str(self.2, "%Y-%m-%d %H:%M:%S").unwrap()
        }
        fn content(&self) -> &str {
            self.3
        }
    }

    #[test]
    fn counts_matches_customers_and_keeps_the_oldest_samples_across_pages() {
        let matcher = Matcher::new(&["refund".into()], &["order \\d+".into()]).unwrap();
        let mut scan = ContentScan::new(Some(Arc::new(matcher)), false, 2);
        // Pages in id order, times out of order across them.
        scan.feed(&[
            Row(1, 10, "2024-01-03 00:00:00", "refund please"),
            Row(2, 11, "2024-01-02 00:00:00", "order 7 late"),
        ]);
        scan.feed(&[
            Row(3, 10, "2024-01-01 00:00:00", "refund for order 9"),
            Row(4, 12, "2024-01-04 00:00:00", "nothing here"),
        ]);
        let f = scan.finish(0);
        assert_eq!(f.scanned, 4);
        assert_eq!(
            f.keywords,
            vec![MatchFigures {
                messages: 2,
                customers: 1
            }]
        );
        assert_eq!(
            f.patterns,
            vec![MatchFigures {
                messages: 2,
                customers: 2
            }]
        );
        assert_eq!(f.samples.iter().map(|s| s.id).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(f.samples[0].matched, "refund");
        assert!(f.top_terms.is_empty());
    }

    #[test]
    fn without_a_matcher_only_counts_and_tokenizes() {
        let mut scan = ContentScan::new(None, true, 5);
        scan.feed(&[
            Row(1, 1, "2024-01-01 00:00:00", "invoice invoice"),
            Row(2, 1, "2024-01-01 00:00:00", "invoice"),
        ]);
        let f = scan.finish(1);
        assert_eq!(f.scanned, 2);
        assert!(f.keywords.is_empty() && f.patterns.is_empty() && f.samples.is_empty());
        assert_eq!(f.top_terms.len(), 1);
        assert_eq!(f.top_terms[0].0, "invoice");
    }
}

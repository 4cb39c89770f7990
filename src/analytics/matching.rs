//! Keyword and regular-expression matching over message content.
//! Owns query validation, one-pass "which queries matched" checks, first-match lookup and snippets.

use std::borrow::Cow;
use std::fmt;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// `text` in Unicode NFC, so that a composed `é` and `e` + U+0301 are one text; borrowed
/// when it is NFC already (the common case, decided by the quick check).
pub fn nfc(text: &str) -> Cow<'_, str> {
    match is_nfc_quick(text.chars()) {
        IsNormalized::Yes => Cow::Borrowed(text),
        _ => Cow::Owned(text.nfc().collect()),
    }
}

/// Longest accepted keyword, in characters.
pub const MAX_KEYWORD_CHARS: usize = 200;
/// Longest accepted pattern, in characters.
pub const MAX_PATTERN_CHARS: usize = 1_000;
/// Compiled-size and lazy-DFA cache limit of each regular expression, in bytes.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Upper bound on the compiled size of the combined set of all queries, in bytes.
const SET_SIZE_LIMIT_CAP: usize = 64 << 20;

/// One rejected keyword or pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchError {
    /// The offending request field, e.g. `"keywords[0]"` or `"patterns[2]"`.
    pub field: String,
    /// Human-readable reason; quotes the keyword or pattern text.
    pub message: String,
}

impl fmt::Display for MatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for MatchError {}

/// Which keywords and which patterns matched one text (indices as given to [`Matcher::new`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hits {
    /// `keywords[i]` is true when keyword `i` occurs in the text.
    pub keywords: Vec<bool>,
    /// `patterns[i]` is true when pattern `i` matches the text.
    pub patterns: Vec<bool>,
}

impl Hits {
    /// True when any keyword or pattern matched.
    pub fn any(&self) -> bool {
        self.keywords.iter().chain(&self.patterns).any(|&hit| hit)
    }
}

/// The earliest-starting match of any query in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstMatch {
    /// Byte offset where the match starts.
    pub start: usize,
    /// Byte offset just past the match.
    pub end: usize,
    /// The keyword or pattern (as given) that produced the match.
    pub query: String,
}

/// A validated, compiled set of keywords and patterns.
#[derive(Debug, Clone)]
pub struct Matcher {
    keyword_count: usize,
    /// Original query texts: keywords first, then patterns.
    queries: Vec<String>,
    /// One regex per query, same order as `queries`.
    regexes: Vec<Regex>,
    /// All queries in one set for single-pass matching; `None` when there are no queries or
    /// the combined set would be too big (then the regexes are run one by one).
    set: Option<RegexSet>,
}

impl Matcher {
    /// Validates and compiles `keywords` and `patterns`, reporting every problem at once.
    ///
    /// Keywords are case-insensitive (Unicode) literal substrings: `%`, `_` and `\` have no
    /// special meaning. They must be non-empty and at most [`MAX_KEYWORD_CHARS`] characters.
    /// Patterns use Rust `regex` syntax, must be non-empty, at most [`MAX_PATTERN_CHARS`]
    /// characters, and compile within [`REGEX_SIZE_LIMIT`].
    pub fn new(keywords: &[String], patterns: &[String]) -> Result<Matcher, Vec<MatchError>> {
        let mut errors = Vec::new();
        let mut sources = Vec::with_capacity(keywords.len() + patterns.len());
        let mut regexes = Vec::with_capacity(keywords.len() + patterns.len());

        for (i, keyword) in keywords.iter().enumerate() {
            let field = format!("keywords[{i}]");
            let chars = keyword.chars().count();
            if chars == 0 {
                errors.push(error(field, "keyword must not be empty".to_owned()));
                continue;
            }
            if chars > MAX_KEYWORD_CHARS {
                errors.push(error(
                    field,
                    format!(
                        "keyword {} is {chars} characters long; at most {MAX_KEYWORD_CHARS} are allowed",
                        crate::error::quote(keyword)
                    ),
                ));
                continue;
            }
            // Texts are matched in NFC (see `matches_into`), so keywords are too.
            let source = format!("(?i:{})", regex::escape(&nfc(keyword)));
            match compile(&source) {
                Ok(re) => {
                    regexes.push(re);
                    sources.push(source);
                }
                Err(e) => errors.push(error(field, describe("keyword", keyword, &e))),
            }
        }

        for (i, pattern) in patterns.iter().enumerate() {
            let field = format!("patterns[{i}]");
            let chars = pattern.chars().count();
            if chars == 0 {
                errors.push(error(field, "pattern must not be empty".to_owned()));
                continue;
            }
            if chars > MAX_PATTERN_CHARS {
                errors.push(error(
                    field,
                    format!(
                        "pattern {} is {chars} characters long; at most {MAX_PATTERN_CHARS} are allowed",
                        crate::error::quote(pattern)
                    ),
                ));
                continue;
            }
            match compile(pattern) {
                Ok(re) => {
                    regexes.push(re);
                    sources.push(pattern.clone());
                }
                Err(e) => errors.push(error(field, describe("pattern", pattern, &e))),
            }
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        let set = if sources.is_empty() {
            None
        } else {
            let n = sources.len();
            RegexSetBuilder::new(&sources)
                .size_limit(REGEX_SIZE_LIMIT.saturating_mul(n).min(SET_SIZE_LIMIT_CAP))
                .dfa_size_limit(REGEX_SIZE_LIMIT.saturating_mul(n.min(8)))
                .build()
                .ok()
        };
        Ok(Matcher {
            keyword_count: keywords.len(),
            queries: keywords.iter().chain(patterns).cloned().collect(),
            regexes,
            set,
        })
    }

    /// Number of keywords.
    pub fn keyword_count(&self) -> usize {
        self.keyword_count
    }

    /// Number of patterns.
    pub fn pattern_count(&self) -> usize {
        self.queries.len() - self.keyword_count
    }

    /// Which keywords and patterns match `text`.
    pub fn matches(&self, text: &str) -> Hits {
        let mut hits = Hits::default();
        self.matches_into(text, &mut hits);
        hits
    }

    /// Like [`Matcher::matches`], but reuses `hits`' buffers (resized and overwritten).
    /// The text is matched in NFC ([`nfc`]), as keywords are compiled.
    pub fn matches_into(&self, text: &str, hits: &mut Hits) {
        let text = nfc(text);
        let text = text.as_ref();
        hits.keywords.clear();
        hits.keywords.resize(self.keyword_count, false);
        hits.patterns.clear();
        hits.patterns.resize(self.pattern_count(), false);
        let mut mark = |i: usize| {
            if i < self.keyword_count {
                hits.keywords[i] = true;
            } else {
                hits.patterns[i - self.keyword_count] = true;
            }
        };
        match &self.set {
            Some(set) => set.matches(text).iter().for_each(&mut mark),
            None => {
                for (i, re) in self.regexes.iter().enumerate() {
                    if re.is_match(text) {
                        mark(i);
                    }
                }
            }
        }
    }

    /// True when any keyword or pattern matches `text`.
    pub fn is_match(&self, text: &str) -> bool {
        let text = nfc(text);
        let text = text.as_ref();
        match &self.set {
            Some(set) => set.is_match(text),
            None => self.regexes.iter().any(|re| re.is_match(text)),
        }
    }

    /// The earliest-starting match among all keywords and patterns; on a tie the query
    /// listed first (keywords before patterns) wins. The offsets are into `nfc(text)`
    /// ([`nfc`]), which is what a snippet is cut from.
    pub fn first_match(&self, text: &str) -> Option<FirstMatch> {
        let text = nfc(text);
        let text = text.as_ref();
        let mut best: Option<(usize, usize, usize)> = None;
        for (i, re) in self.regexes.iter().enumerate() {
            if let Some(m) = re.find(text) {
                if best.is_none_or(|(start, _, _)| m.start() < start) {
                    best = Some((m.start(), m.end(), i));
                }
            }
        }
        let (start, end, i) = best?;
        Some(FirstMatch {
            start,
            end,
            query: self.queries.get(i)?.clone(),
        })
    }
}

fn error(field: String, message: String) -> MatchError {
    MatchError { field, message }
}

fn compile(source: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(source)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// A one-line explanation of why `text` (a keyword or pattern) did not compile.
fn describe(kind: &str, text: &str, err: &regex::Error) -> String {
    match err {
        regex::Error::Syntax(detail) => {
            // The syntax message spans several lines (pattern, caret, reason); keep the reason.
            let reason = detail
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("syntax error");
            let reason = reason.strip_prefix("error: ").unwrap_or(reason);
            format!("invalid {kind} {}: {reason}", crate::error::quote(text))
        }
        regex::Error::CompiledTooBig(limit) => {
            format!(
                "{kind} {} is too complex: it compiles to more than {limit} bytes",
                crate::error::quote(text)
            )
        }
        other => format!("invalid {kind} {}: {other}", crate::error::quote(text)),
    }
}

/// Up to `radius_chars` characters either side of the byte range `[start, end)` of `text`.
///
/// Offsets are clamped to the text and widened to character boundaries, so the result never
/// splits a UTF-8 sequence. "…" marks each side where text was cut, and every run of
/// whitespace (newlines included) becomes a single space, trimmed at both ends.
pub fn snippet(text: &str, start: usize, end: usize, radius_chars: usize) -> String {
    let mut start = start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = end.clamp(start, text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    let from = if radius_chars == 0 {
        start
    } else {
        text[..start]
            .char_indices()
            .rev()
            .nth(radius_chars - 1)
            .map_or(0, |(i, _)| i)
    };
    let to = text[end..]
        .char_indices()
        .nth(radius_chars)
        .map_or(text.len(), |(i, _)| end + i);

    let mut out = String::with_capacity(to - from + 8);
    if from > 0 {
        out.push('…');
    }
    let mut first = true;
    for word in text[from..to].split_whitespace() {
        if !first {
            out.push(' ');
        }
        out.push_str(word);
        first = false;
    }
    if to < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn keywords(items: &[&str]) -> Matcher {
        Matcher::new(&strings(items), &[]).unwrap()
    }

    #[test]
    fn like_metacharacters_are_literal() {
        let m = keywords(&["50%"]);
        assert!(m.is_match("50% off"));
        assert!(!m.is_match("500 off"));
        let m = keywords(&["a_b"]);
        assert!(!m.is_match("axb"));
        assert!(m.is_match("xa_bx"));
        let m = keywords(&[r"C:\temp"]);
        assert!(m.is_match(r"saved in C:\TEMP\x"));
        assert!(!m.is_match("saved in C:temp"));
        let m = keywords(&["a.b", "(x)"]);
        assert_eq!(m.matches("aXb (x)").keywords, vec![false, true]);
    }

    #[test]
    fn keywords_are_case_insensitive_and_unicode() {
        let m = keywords(&["REFUND", "退款", "straße"]);
        let hits = m.matches("I want a refund");
        assert_eq!(hits.keywords, vec![true, false, false]);
        assert!(hits.patterns.is_empty());
        assert!(hits.any());
        assert_eq!(
            m.matches("我想申请退款，谢谢").keywords,
            vec![false, true, false]
        );
        assert_eq!(
            m.matches("STRASSE STRAẞE").keywords,
            vec![false, false, true]
        );
        assert!(!m.matches("退货").any());
    }

    #[test]
    fn matches_into_reuses_and_resets() {
        let m = Matcher::new(&strings(&["foo", "bar"]), &strings(&[r"\d{4}", "^hi"])).unwrap();
        assert_eq!((m.keyword_count(), m.pattern_count()), (2, 2));
        let mut hits = Hits::default();
        m.matches_into("hi foo 1234", &mut hits);
        assert_eq!(hits.keywords, vec![true, false]);
        assert_eq!(hits.patterns, vec![true, true]);
        m.matches_into("BAR", &mut hits);
        assert_eq!(hits.keywords, vec![false, true]);
        assert_eq!(hits.patterns, vec![false, false]);
    }

    #[test]
    fn no_queries_matches_nothing() {
        let m = Matcher::new(&[], &[]).unwrap();
        assert!(!m.is_match("anything"));
        assert_eq!(m.matches("anything"), Hits::default());
        assert_eq!(m.first_match("anything"), None);
    }

    #[test]
    fn invalid_pattern_names_field_and_text() {
        let errs = Matcher::new(&[], &strings(&["("])).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "patterns[0]");
        assert!(errs[0].message.contains("\"(\""), "{}", errs[0].message);
        assert!(
            errs[0].message.contains("unclosed group"),
            "{}",
            errs[0].message
        );
        assert!(!errs[0].message.contains('\n'));
    }

    #[test]
    fn all_errors_are_reported() {
        let long_keyword = "k".repeat(201);
        let long_pattern = "p".repeat(1_001);
        let errs = Matcher::new(
            &strings(&["ok", "", &long_keyword]),
            &strings(&[
                "fine",
                "[z-a]",
                "",
                &long_pattern,
                r"(?:\w{1000}){1000}",
                "(?P<x",
            ]),
        )
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "keywords[1]",
                "keywords[2]",
                "patterns[1]",
                "patterns[2]",
                "patterns[3]",
                "patterns[4]",
                "patterns[5]",
            ]
        );
        assert!(errs[1].message.contains("201 characters"));
        assert!(errs[1].message.contains("kkkk"));
        assert!(errs[2].message.contains("[z-a]"));
        assert!(errs[4].message.contains("1001 characters"));
        assert!(
            errs[5].message.contains("too complex"),
            "{}",
            errs[5].message
        );
        assert!(errs[5].message.contains(r"(?:\\w{1000}){1000}"));
        assert!(errs[6].message.contains("(?P<x"));
        // Exactly at the limits is fine.
        assert!(Matcher::new(
            &strings(&[&"k".repeat(200)]),
            &strings(&[&"p".repeat(1_000)])
        )
        .is_ok());
        assert_eq!(
            errs[0].to_string(),
            format!("keywords[1]: {}", errs[0].message)
        );
    }

    #[test]
    fn pathological_pattern_is_linear() {
        // A backtracking engine would need about 2^100000 steps for this text, so the test
        // would never finish; the linear-time engine answers every call. No clock needed.
        let m = Matcher::new(&[], &strings(&["(a+)+$"])).unwrap();
        let mut text = "a".repeat(100_000);
        text.push('!');
        assert!(!m.is_match(&text));
        assert_eq!(m.matches(&text).patterns, vec![false]);
        assert_eq!(m.first_match(&text), None);
        text.pop();
        assert_eq!(m.matches(&text).patterns, vec![true]);
    }

    #[test]
    fn first_match_is_earliest_start() {
        let m = Matcher::new(&strings(&["refund", "order"]), &strings(&[r"\d+"])).unwrap();
        let text = "Order 1001: please REFUND";
        assert_eq!(
            m.first_match(text),
            Some(FirstMatch {
                start: 0,
                end: 5,
                query: "order".to_owned()
            })
        );
        let text = "ref 42 then refund";
        let fm = m.first_match(text).unwrap();
        assert_eq!((fm.start, fm.end, fm.query.as_str()), (4, 6, r"\d+"));
        // Tie on start: the query listed first wins.
        let m = Matcher::new(&strings(&["ab"]), &strings(&["a"])).unwrap();
        assert_eq!(m.first_match("xab").unwrap().query, "ab");
        let m = Matcher::new(&strings(&["退款"]), &[]).unwrap();
        let text = "我想申请退款";
        let fm = m.first_match(text).unwrap();
        assert_eq!(&text[fm.start..fm.end], "退款");
    }

    #[test]
    fn snippet_cuts_on_characters() {
        let text = "我想申请退款，订单号是一〇〇一。";
        let start = text.find("退款").unwrap();
        let end = start + "退款".len();
        assert_eq!(snippet(text, start, end, 3), "…想申请退款，订单…");
        assert_eq!(snippet(text, start, end, 0), "…退款…");
        assert_eq!(snippet(text, start, end, 100), text);
        // Offsets inside a character are widened, never split.
        assert_eq!(snippet(text, start + 1, end - 1, 1), "…请退款，…");
        assert_eq!(snippet(text, 999, 1_000, 2), "…一。");
        assert_eq!(snippet("", 0, 0, 5), "");
    }

    #[test]
    fn snippet_collapses_whitespace() {
        let text = "first line\n\n  second\tline with refund here\r\nthird";
        let start = text.find("refund").unwrap();
        assert_eq!(
            snippet(text, start, start + 6, 17),
            "…second line with refund here third"
        );
        assert_eq!(
            snippet(text, start, start + 6, 12),
            "…d line with refund here third"
        );
        assert_eq!(snippet("  refund  ", 2, 8, 1), "…refund…");
        assert_eq!(snippet("  refund  ", 2, 8, 2), "refund");
    }
}

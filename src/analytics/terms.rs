//! Top terms of message content: tokenization (jieba for Chinese), stop words and counting.
//! Owns the process-wide segmenter and the mergeable term counter.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use jieba_rs::Jieba;

/// The segmenter with jieba's default dictionary, loaded once on first use (slow: do not
/// build one per request).
pub(crate) static JIEBA: LazyLock<Jieba> = LazyLock::new(Jieba::new);

static ENGLISH_STOP: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| ENGLISH_STOP_WORDS.iter().copied().collect());

static CHINESE_STOP: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| CHINESE_STOP_WORDS.iter().copied().collect());

/// English words never counted as terms (lower case). Kept here rather than taken from the
/// `stop-words` crate: its ISO English list drops words the reports must count (`want`,
/// `order`), and its NLTK lists (a crate-wide feature) have no Chinese.
const ENGLISH_STOP_WORDS: &[&str] = &[
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "aren't",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "can't",
    "cannot",
    "could",
    "couldn't",
    "did",
    "didn't",
    "do",
    "does",
    "doesn't",
    "doing",
    "don",
    "don't",
    "down",
    "during",
    "each",
    "either",
    "else",
    "etc",
    "even",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "got",
    "had",
    "hadn't",
    "has",
    "hasn't",
    "have",
    "haven't",
    "having",
    "he",
    "he's",
    "hello",
    "her",
    "here",
    "hers",
    "herself",
    "hi",
    "him",
    "himself",
    "his",
    "how",
    "i'd",
    "i'll",
    "i'm",
    "i've",
    "if",
    "in",
    "into",
    "is",
    "isn't",
    "it",
    "it's",
    "its",
    "itself",
    "just",
    "let",
    "let's",
    "like",
    "ll",
    "may",
    "me",
    "might",
    "more",
    "most",
    "much",
    "must",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "ok",
    "okay",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "please",
    "re",
    "same",
    "shall",
    "she",
    "should",
    "so",
    "some",
    "still",
    "such",
    "than",
    "thank",
    "thanks",
    "that",
    "that's",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "there's",
    "these",
    "they",
    "they're",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "upon",
    "us",
    "ve",
    "very",
    "via",
    "was",
    "wasn't",
    "we",
    "we're",
    "were",
    "weren't",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "won",
    "won't",
    "would",
    "wouldn't",
    "yeah",
    "yes",
    "yet",
    "you",
    "you're",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Chinese words never counted as terms (single characters are dropped anyway). Not the
/// `stop-words` crate's ISO Chinese list: it lacks the service phrases (`请问`, `已经`,
/// `谢谢`, `您好`) that would otherwise top every report.
const CHINESE_STOP_WORDS: &[&str] = &[
    "我们",
    "你们",
    "他们",
    "她们",
    "它们",
    "咱们",
    "您们",
    "这个",
    "那个",
    "这些",
    "那些",
    "这种",
    "那种",
    "这样",
    "那样",
    "这么",
    "那么",
    "这里",
    "那里",
    "哪里",
    "这边",
    "那边",
    "什么",
    "怎么",
    "怎样",
    "如何",
    "为什么",
    "为何",
    "因为",
    "所以",
    "但是",
    "可是",
    "不过",
    "然而",
    "而且",
    "并且",
    "或者",
    "或是",
    "还是",
    "以及",
    "如果",
    "要是",
    "虽然",
    "即使",
    "于是",
    "因此",
    "然后",
    "接着",
    "另外",
    "此外",
    "总之",
    "反正",
    "其实",
    "当然",
    "确实",
    "可以",
    "可能",
    "应该",
    "能够",
    "已经",
    "没有",
    "一个",
    "一些",
    "一下",
    "一样",
    "一直",
    "一起",
    "一定",
    "就是",
    "只是",
    "还有",
    "也是",
    "都是",
    "不是",
    "是不是",
    "有没有",
    "能不能",
    "不要",
    "不会",
    "不能",
    "现在",
    "目前",
    "刚才",
    "时候",
    "以后",
    "之后",
    "以前",
    "之前",
    "的话",
    "自己",
    "大家",
    "各位",
    "非常",
    "比较",
    "特别",
    "十分",
    "真的",
    "关于",
    "对于",
    "通过",
    "根据",
    "为了",
    "比如",
    "例如",
    "其他",
    "其它",
    "别的",
    "每个",
    "你好",
    "您好",
    "谢谢",
    "请问",
    "麻烦",
    "好的",
    "是的",
    "对的",
    "没事",
    "知道",
    "觉得",
];

/// Counts terms over many texts and reports the most frequent ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermCounter {
    counts: HashMap<String, u64>,
}

impl TermCounter {
    /// An empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter holding these counts (a term given twice keeps its last count).
    pub fn from_counts(counts: impl IntoIterator<Item = (String, u64)>) -> Self {
        TermCounter {
            counts: counts.into_iter().collect(),
        }
    }

    /// Tokenizes `text` (see [`terms`]) and counts every kept term.
    pub fn add_text(&mut self, text: &str) {
        for_each_term(text, |term| {
            if let Some(count) = self.counts.get_mut(term.as_ref()) {
                *count = count.saturating_add(1);
            } else {
                self.counts.insert(term.into_owned(), 1);
            }
        });
    }

    /// The `n` most frequent terms: count descending, ties by term ascending.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        if n == 0 {
            return Vec::new();
        }
        let order =
            |a: &(&String, u64), b: &(&String, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
        let mut entries: Vec<(&String, u64)> = self.counts.iter().map(|(t, &c)| (t, c)).collect();
        if n < entries.len() {
            entries.select_nth_unstable_by(n - 1, order);
            entries.truncate(n);
        }
        entries.sort_unstable_by(order);
        entries.into_iter().map(|(t, c)| (t.clone(), c)).collect()
    }

    /// Adds all of `other`'s counts to this counter.
    pub fn merge(&mut self, other: TermCounter) {
        if self.counts.is_empty() {
            self.counts = other.counts;
            return;
        }
        for (term, count) in other.counts {
            let total = self.counts.entry(term).or_insert(0);
            *total = total.saturating_add(count);
        }
    }

    /// Number of distinct terms counted.
    pub fn distinct_terms(&self) -> usize {
        self.counts.len()
    }
}

/// The terms of `text`, in order, as [`TermCounter`] counts them.
///
/// Segmentation is jieba's `cut` with HMM. A token of Han characters is kept when it has at
/// least 2 characters and is not a stop word. Everything between Han tokens is split into
/// words of letters, digits and apostrophes (so `don't` and `Ünïcode` stay whole even though
/// jieba cuts non-ASCII letters and apostrophes apart); a word is kept when it starts with a
/// letter, has at least 2 characters and is not a stop word, and is counted lower-cased.
/// Numbers, punctuation, whitespace, single Han characters and tokens mixing Han with other
/// characters are dropped.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_term(text, |term| out.push(term.into_owned()));
    out
}

fn for_each_term<'a>(text: &'a str, mut f: impl FnMut(Cow<'a, str>)) {
    let base = text.as_ptr() as usize;
    // Byte range of the current stretch of contiguous non-Han tokens.
    let mut pending: Option<(usize, usize)> = None;
    for token in JIEBA.cut(text, true) {
        let at = (token.as_ptr() as usize).checked_sub(base);
        let has_han = token.chars().any(is_han);
        match at {
            Some(start)
                if !has_han
                    && start
                        .checked_add(token.len())
                        .and_then(|end| text.get(start..end))
                        == Some(token) =>
            {
                let end = start + token.len();
                pending = match pending {
                    Some((s, e)) if e == start => Some((s, end)),
                    Some((s, e)) => {
                        latin_words(text.get(s..e).unwrap_or_default(), &mut f);
                        Some((start, end))
                    }
                    None => Some((start, end)),
                };
            }
            _ => {
                if let Some((s, e)) = pending.take() {
                    latin_words(text.get(s..e).unwrap_or_default(), &mut f);
                }
                if has_han {
                    if let Some(term) = han_term(token) {
                        f(Cow::Borrowed(term));
                    }
                } else {
                    latin_words(token, &mut f);
                }
            }
        }
    }
    if let Some((s, e)) = pending {
        latin_words(text.get(s..e).unwrap_or_default(), &mut f);
    }
}

/// Whether `c` is a Han ideograph (the ranges jieba segments as Chinese).
pub(crate) fn is_han(c: char) -> bool {
    matches!(
        u32::from(c),
        0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xF900..=0xFAFF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2EBEF
            | 0x2F800..=0x2FA1F
            | 0x30000..=0x3134F
    )
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// The token itself when it is a countable Han word.
fn han_term(token: &str) -> Option<&str> {
    let kept = token.chars().all(is_han)
        && token.chars().nth(1).is_some()
        && !CHINESE_STOP.contains(token);
    kept.then_some(token)
}

/// Calls `f` with every countable word of a stretch of non-Han text.
fn latin_words<'a>(stretch: &'a str, f: &mut impl FnMut(Cow<'a, str>)) {
    let pieces = stretch.split(|c: char| !(c.is_alphanumeric() || is_apostrophe(c)) || is_han(c));
    for piece in pieces {
        let word = piece.trim_matches(is_apostrophe);
        let mut chars = word.chars();
        let starts_with_letter = chars.next().is_some_and(char::is_alphabetic);
        if !starts_with_letter || chars.next().is_none() {
            continue;
        }
        let term = if word.chars().any(|c| c.is_uppercase() || c == '\u{2019}') {
            Cow::Owned(word.to_lowercase().replace('\u{2019}', "'"))
        } else {
            Cow::Borrowed(word)
        };
        if !ENGLISH_STOP.contains(term.as_ref()) {
            f(term);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stop_word_lists_are_well_formed() {
        assert!(ENGLISH_STOP_WORDS.len() >= 150);
        assert_eq!(ENGLISH_STOP.len(), ENGLISH_STOP_WORDS.len(), "duplicates");
        assert!(ENGLISH_STOP_WORDS.iter().all(|w| *w == w.to_lowercase()));
        assert!(CHINESE_STOP_WORDS.len() >= 100);
        assert_eq!(CHINESE_STOP.len(), CHINESE_STOP_WORDS.len(), "duplicates");
        assert!(CHINESE_STOP_WORDS
            .iter()
            .all(|w| w.chars().count() >= 2 && w.chars().all(is_han)));
    }

    #[test]
    fn chinese_refund_is_top_term() {
        let mut counter = TermCounter::new();
        for _ in 0..3 {
            counter.add_text("我想申请退款，订单号是1001。退款什么时候到账？");
        }
        let top = counter.top(10);
        assert_eq!(top[0], ("退款".to_owned(), 6));
        for (term, _) in &top {
            assert!(term.chars().count() >= 2, "single-character term {term}");
            assert!(!CHINESE_STOP.contains(term.as_str()), "stop word {term}");
            assert!(!term.chars().all(|c| c.is_ascii_digit()), "number {term}");
            assert!(!term.contains('，') && !term.contains('？'));
        }
        assert!(top.iter().all(|(t, _)| t != "什么" && t != "1001"));
        assert!(top.iter().any(|(t, c)| t == "申请" && *c == 3));
    }

    #[test]
    fn english_is_lowercased_without_stop_words() {
        let mut counter = TermCounter::new();
        counter.add_text("Refund REFUND refund the order");
        assert_eq!(
            counter.top(10),
            vec![("refund".to_owned(), 3), ("order".to_owned(), 1)]
        );
    }

    #[test]
    fn tokens_filtering() {
        assert_eq!(
            terms("I don't want order #1001, it’s 50% off! a b x9 mp3 Ünïcode e-mail"),
            vec!["want", "order", "x9", "mp3", "ünïcode", "mail"]
        );
        assert_eq!(terms("   \n\t ,.!? 123 4.5"), Vec::<String>::new());
        assert_eq!(terms("申请退款到账"), vec!["申请", "退款"]);
        assert_eq!(terms("Refund退款ok"), vec!["refund", "退款"]);
        assert_eq!(terms("O'Brien's café"), vec!["o'brien's", "café"]);
    }

    #[test]
    fn ties_sort_by_term_and_top_truncates() {
        let mut counter = TermCounter::new();
        counter.add_text("delta charlie bravo alpha charlie delta delta");
        assert_eq!(
            counter.top(3),
            vec![
                ("delta".to_owned(), 3),
                ("charlie".to_owned(), 2),
                ("alpha".to_owned(), 1),
            ]
        );
        assert_eq!(counter.top(0), vec![]);
        assert_eq!(counter.top(100).len(), 4);
        assert_eq!(counter.distinct_terms(), 4);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = TermCounter::new();
        a.add_text("refund refund order");
        let mut b = TermCounter::new();
        b.add_text("order order shipping 退款");
        a.merge(b);
        assert_eq!(
            a.top(10),
            vec![
                ("order".to_owned(), 3),
                ("refund".to_owned(), 2),
                ("shipping".to_owned(), 1),
                ("退款".to_owned(), 1),
            ]
        );
        let mut empty = TermCounter::new();
        empty.merge(a.clone());
        assert_eq!(empty.top(10), a.top(10));
    }
}

//! Case folding for keyword matching over the in-memory content index.
//!
//! A keyword matches a text when the text contains it ignoring case, exactly as the
//! regular expression `(?i:<keyword escaped>)` of [`super::matching::Matcher`] decides:
//! a text character matches a keyword character when both lie in the same class of
//! Unicode *simple* case folding (the table `regex` itself uses). [`fold_into`] maps
//! every character to one representative of its class, so that "contains, ignoring
//! case" becomes "the folded text contains the folded keyword", a plain substring test
//! (`memchr::memmem`). Simple folding maps one character to one character, so
//! `ß` does not match `ss` (as with the regex), while `K` (Kelvin sign), `k` and `K` all
//! fold to one representative. Texts are folded in NFC, so a composed `é` and `e` +
//! U+0301 fold alike, as the regex (which also matches NFC text) decides.

use std::sync::LazyLock;

use regex_syntax::hir::{ClassUnicode, ClassUnicodeRange};

/// The representative of each non-ASCII character whose case-fold class has more than
/// one member and whose representative is not itself, sorted by character.
static NON_ASCII: LazyLock<Vec<(char, char)>> = LazyLock::new(build_table);

/// Representative of `c`: the smallest character of its simple case-fold class. For an
/// ASCII letter that is its upper-case form (every class holding an ASCII letter holds
/// its upper-case form, the smallest code point in it).
pub fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    let table = &*NON_ASCII;
    match table.binary_search_by_key(&c, |&(from, _)| from) {
        Ok(i) => table[i].1,
        Err(_) => c,
    }
}

/// Appends the folded form of `text` to `out` (UTF-8): its NFC form (as the keyword
/// regex matches, see [`super::matching::nfc`]), each character folded.
pub fn fold_into(text: &str, out: &mut Vec<u8>) {
    let text = super::matching::nfc(text);
    out.reserve(text.len());
    let mut buf = [0u8; 4];
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_uppercase() as u8);
        } else {
            out.extend_from_slice(fold_char(c).encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// The folded form of `text`.
pub fn fold(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    fold_into(text, &mut out);
    // Folding maps characters to characters: the bytes are UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// Every non-ASCII character with case whose class representative differs from it.
fn build_table() -> Vec<(char, char)> {
    let mut table = Vec::new();
    for c in ('\u{80}'..=char::MAX).filter(|&c| has_case(c)) {
        let mut class = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
        class.case_fold_simple();
        let smallest = class.ranges().first().map_or(c, |r| r.start());
        if smallest != c {
            table.push((c, smallest));
        }
    }
    table
}

/// Whether `c` can belong to a case-fold class of more than one character: only
/// characters with case do (letters with a case mapping, and the few marks such as
/// U+0345 that are `Lowercase`).
fn has_case(c: char) -> bool {
    c.is_lowercase()
        || c.is_uppercase()
        || c.to_lowercase().ne(std::iter::once(c))
        || c.to_uppercase().ne(std::iter::once(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::matching::Matcher;

    #[test]
    fn ascii_folds_to_upper_case() {
        assert_eq!(fold("Refund, please! 42"), "REFUND, PLEASE! 42");
    }

    #[test]
    fn classes_fold_to_one_representative() {
        // Kelvin sign, long s, final sigma, Cherokee, dotless i.
        assert_eq!(fold("\u{212A}k"), "KK");
        assert_eq!(fold("\u{17F}s"), "SS");
        assert_eq!(fold("Σσς"), fold("σσσ"));
        assert_eq!(fold("\u{13A0}"), fold("\u{AB70}"));
        assert_eq!(fold("ß"), fold("ẞ"));
        assert_ne!(fold("ß"), fold("ss"));
        assert_eq!(fold("退款"), "退款");
        assert_ne!(fold("ı"), fold("i"));
    }

    #[test]
    fn composed_and_decomposed_forms_fold_and_match_alike() {
        let (composed, decomposed) = ("caf\u{e9}", "cafe\u{301}");
        assert_eq!(fold(composed), fold(decomposed));
        for (text, keyword) in [(composed, decomposed), (decomposed, composed)] {
            let matcher = Matcher::new(&[keyword.to_owned()], &[]).expect("keyword");
            assert!(matcher.matches(&format!("un {text} noir")).keywords[0]);
            assert!(fold(&format!("un {text} noir")).contains(&fold(keyword)));
        }
        // An `e` alone is not an `é`, in either form.
        let matcher = Matcher::new(&["cafe ".to_owned()], &[]).expect("keyword");
        assert!(!matcher.matches(decomposed).keywords[0]);
    }

    /// Folded containment decides exactly what the keyword regex decides, over texts
    /// and keywords built from the characters where case folding is tricky.
    #[test]
    fn folded_containment_equals_the_keyword_regex() {
        let alphabet: Vec<char> =
            "aAkK\u{212A}sS\u{17F}ßẞσςΣiIıİ\u{345}ιΙ退款\u{13A0}\u{AB70}ǅǆǄ%_\\ "
                .chars()
                .collect();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..5_000 {
            let text: String = (0..next(12))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            let keyword: String = (0..1 + next(3))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            let matcher = Matcher::new(std::slice::from_ref(&keyword), &[]).expect("keyword");
            let by_regex = matcher.matches(&text).keywords[0];
            let by_fold = fold(&text).contains(&fold(&keyword));
            assert_eq!(by_fold, by_regex, "text {text:?} keyword {keyword:?}");
        }
    }
}

//! Names made comparable for duplicate detection: Unicode NFKC (full-width letters and
//! digits, ligatures and compatibility forms become their plain forms), case folded,
//! white space runs collapsed to one space, trimmed.

use unicode_normalization::UnicodeNormalization;

/// The comparison key of a name: `"ＺＨＡＮＧ\u{3000} Wei "` and `"zhang wei"` have the
/// same key. Spaces inside a name still count (`"张 三"` is not `"张三"`): a space
/// between two Latin words separates given and family names.
pub fn name_key(name: &str) -> String {
    // NFKC, then lower-case (which may produce characters NFKC would change, e.g. the
    // Kelvin sign's lower-case), then NFKC again.
    let folded: String = name
        .nfkc()
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .nfkc()
        .collect();
    let mut out = String::with_capacity(folded.len());
    for word in folded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Whether every name of `names` has the same key (false for fewer than two names).
pub fn all_equal<'a>(mut names: impl Iterator<Item = &'a str>) -> bool {
    let Some(first) = names.next().map(name_key) else {
        return false;
    };
    let mut n = 1;
    for name in names {
        if name_key(name) != first {
            return false;
        }
        n += 1;
    }
    n >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_case_and_spacing_do_not_matter() {
        assert_eq!(name_key("ＺＨＡＮＧ\u{3000} Wei "), "zhang wei");
        assert_eq!(name_key("  Zhang\t\nWEI"), "zhang wei");
        assert_eq!(name_key("张三"), "张三");
        assert_eq!(name_key("Ｍüller"), "müller");
        // The ligature "ﬁ" is "fi" under NFKC; "Å" (angstrom sign) is "å".
        assert_eq!(name_key("ﬁona \u{212B}"), "fiona å");
        assert_ne!(name_key("张 三"), name_key("张三"));
        assert_eq!(name_key(""), "");
    }

    #[test]
    fn all_equal_needs_two_names_with_one_key() {
        assert!(all_equal(
            ["Zhang Wei", "ZHANG  WEI", "ｚｈａｎｇ wei"].into_iter()
        ));
        assert!(!all_equal(["Zhang Wei", "Zhang Wu"].into_iter()));
        assert!(!all_equal(["Zhang Wei"].into_iter()));
        assert!(!all_equal(std::iter::empty()));
    }
}

//! Bearer tokens: the tokens file (`<role> <name> <sha256-hex>` per line), roles, the
//! constant-time look-up of a presented token, and the making of new tokens.
//!
//! The file holds only SHA-256 hashes: a leaked file (or a log of it) grants nothing.
//! A presented token is hashed and compared with every entry in constant time, so the
//! time taken says nothing about which entry, or how much of one, matched.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::model::caller::Role;

/// One line of the tokens file.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// The caller's role.
    pub role: Role,
    /// The caller's name, as logged and audited.
    pub name: String,
    /// SHA-256 of the token.
    hash: [u8; 32],
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is no secret, but it has no business in logs either.
        f.debug_struct("TokenEntry")
            .field("role", &self.role)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Longest caller name: it is logged and stored with every audited write.
pub const MAX_NAME_CHARS: usize = 64;

/// The parsed tokens file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

/// Why a tokens file was refused: every bad line, with its number.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}", .0.join("; "))]
pub struct TokenFileError(pub Vec<String>);

impl TokenSet {
    /// Parses the text of a tokens file. Blank lines and `#` comments (whole lines or
    /// after an entry) are skipped; any other malformed line fails the whole file, so a
    /// typo never silently locks a caller out or lets one in.
    pub fn parse(text: &str) -> Result<TokenSet, TokenFileError> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, name, hash] = fields[..] else {
                errors.push(format!(
                    "line {n}: expected `<role> <name> <sha256-hex>`, found {} fields",
                    fields.len()
                ));
                continue;
            };
            let Some(role) = Role::parse(role) else {
                errors.push(format!(
                    "line {n}: unknown role `{}` (reader, writer or admin)",
                    truncate(role)
                ));
                continue;
            };
            if !valid_name(name) {
                errors.push(format!(
                    "line {n}: name `{}` must be 1-{MAX_NAME_CHARS} letters, digits or -_.@:",
                    truncate(name)
                ));
                continue;
            }
            let Some(hash) = parse_hex32(hash) else {
                errors.push(format!(
                    "line {n}: `{}` is not a SHA-256 hex digest (64 hex digits); the file holds \
                     hashes, never tokens: use `crm-comms token new`",
                    truncate(hash)
                ));
                continue;
            };
            if let Some(other) = entries.iter().find(|e| e.hash == hash) {
                errors.push(format!(
                    "line {n}: the same token hash as `{}` above",
                    other.name
                ));
                continue;
            }
            entries.push(TokenEntry {
                role,
                name: name.to_owned(),
                hash,
            });
        }
        if errors.is_empty() {
            Ok(TokenSet { entries })
        } else {
            Err(TokenFileError(errors))
        }
    }

    /// Reads and parses the tokens file at `path`. A file without any token (empty,
    /// blank or comments only) is refused like a malformed one, since it would lock
    /// every caller out (a truncated or half-written file looks just like that), unless
    /// `allow_empty` (`--allow-empty-tokens`) says that is meant.
    pub fn load(path: &Path, allow_empty: bool) -> anyhow::Result<TokenSet> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read tokens file {}: {e}", path.display()))?;
        let set = TokenSet::parse(&text)
            .map_err(|e| anyhow::anyhow!("tokens file {} refused: {e}", path.display()))?;
        if set.entries.is_empty() && !allow_empty {
            anyhow::bail!(
                "tokens file {} refused: it holds no token, so every caller would be refused; \
                 add one (`crm-comms token new`), or pass --allow-empty-tokens if that is meant",
                path.display()
            );
        }
        Ok(set)
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// The entry whose hash is SHA-256 of `token`. Every entry is compared, in constant
    /// time, whatever matches.
    pub fn find(&self, token: &str) -> Option<&TokenEntry> {
        let hash = sha256(token.as_bytes());
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(entry);
            }
        }
        found
    }
}

/// The token of an `authorization` header value: `Bearer <token>` (the scheme in any
/// case, RFC 7235). `None` for any other form.
pub fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// A new random token (256 bits from the OS, URL-safe base64, `crm_` prefix so it is
/// recognisable in a leak scan) and its tokens-file line.
pub fn new_token(role: Role, name: &str) -> anyhow::Result<(String, String)> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let token = format!(
        "crm_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    if !valid_name(name) {
        anyhow::bail!("name `{name}` must be 1-{MAX_NAME_CHARS} letters, digits or -_.@:");
    }
    let line = format!("{role} {name} {}", hex(&sha256(token.as_bytes())));
    Ok((token, line))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(data));
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` may name a caller: 1-64 letters, digits or `-_.@:` (it is logged and
/// stored with every audited write, and must stay one word in the tokens file).
fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.@:".contains(c))
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A file's word for an error message: at most 40 characters of it.
fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ABC_HASH: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn sha256_matches_the_standard_vector() {
        assert_eq!(hex(&sha256(b"abc")), ABC_HASH);
    }

    #[test]
    fn a_file_with_comments_and_blank_lines_parses() {
        let text = format!(
            "# who may call\n\nreader dashboards {ABC_HASH}  # the BI team\n\
             admin ops {}\n",
            hex(&sha256(b"ops-token"))
        );
        let set = TokenSet::parse(&text).unwrap();
        assert_eq!(set.entries().len(), 2);
        let found = set.find("abc").unwrap();
        assert_eq!(
            (found.role, found.name.as_str()),
            (Role::Reader, "dashboards")
        );
        assert_eq!(set.find("ops-token").unwrap().role, Role::Admin);
        assert!(set.find("ABC").is_none());
        assert!(set.find("").is_none());
    }

    #[test]
    fn every_bad_line_is_named_and_nothing_loads() {
        let text = format!(
            "reader a {ABC_HASH}\nroot b {ABC_HASH}\nwriter c crm_plaintexttoken\n\
             writer d\nwriter d {ABC_HASH}\nwriter bad/name {}\n",
            hex(&sha256(b"x"))
        );
        let err = TokenSet::parse(&text).unwrap_err();
        let lines: Vec<&str> = err.0.iter().map(|e| e.split(':').next().unwrap()).collect();
        assert_eq!(
            lines,
            ["line 2", "line 3", "line 4", "line 5", "line 6"],
            "{err}"
        );
        assert!(err.to_string().contains("unknown role `root`"));
        assert!(err.to_string().contains("never tokens"));
        assert!(err.to_string().contains("same token hash as `a`"));
    }

    #[test]
    fn bearer_takes_the_scheme_in_any_case_and_nothing_else() {
        assert_eq!(bearer(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer(b"bearer   abc "), Some("abc"));
        assert_eq!(bearer(b"BEARER abc"), Some("abc"));
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"abc",
            b"Bearer a b",
            b"\xff\xfe",
        ] {
            assert_eq!(bearer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_new_token_is_found_by_its_own_line_only() {
        let (token, line) = new_token(Role::Writer, "billing").unwrap();
        assert!(token.starts_with("crm_") && token.len() == 47, "{token}");
        assert!(line.starts_with("writer billing "), "{line}");
        assert!(!line.contains(&token));
        let set = TokenSet::parse(&line).unwrap();
        assert_eq!(set.find(&token).unwrap().name, "billing");
        let (other, _) = new_token(Role::Writer, "billing").unwrap();
        assert_ne!(token, other);
        assert!(set.find(&other).is_none());
    }

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in "\\PC{0,400}") {
            let _ = TokenSet::parse(&text);
        }

        #[test]
        fn parsing_any_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(token) = bearer(&bytes) {
                prop_assert!(!token.is_empty() && !token.contains(' '));
            }
        }

        #[test]
        fn only_the_exact_token_matches(token in "[A-Za-z0-9_-]{1,60}", flip in 0usize..60) {
            let line = format!("writer w {}", hex(&sha256(token.as_bytes())));
            let set = TokenSet::parse(&line).unwrap();
            prop_assert!(set.find(&token).is_some());
            let mut bytes = token.clone().into_bytes();
            let i = flip % bytes.len();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let other = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(set.find(&other).is_some(), other == token);
        }
    }
}

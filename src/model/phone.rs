//! Phone numbers made comparable: parsed with libphonenumber's rules (the `phonenumber`
//! crate) against a default region, validated for their country, stored as E.164.
//!
//! A number written with a country code (`+44 20 7946 0958`, or the region's
//! international prefix, `0044 ...` from China) keeps that country; a national number
//! (`138 0013 8000`, `(010) 1234 5678`) gets the default region's. So one line is stored
//! one way however it was typed, and duplicate detection can compare stored values.

use std::str::FromStr;

use phonenumber::country::Id;
use phonenumber::Mode;

/// The region whose numbering plan applies to numbers written without a country code
/// (`--phone-region`): a CLDR region code that libphonenumber has metadata for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PhoneRegion(Id);

impl Default for PhoneRegion {
    /// China: the service's users are Chinese.
    fn default() -> Self {
        PhoneRegion(Id::CN)
    }
}

impl std::fmt::Display for PhoneRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

impl FromStr for PhoneRegion {
    type Err = String;

    /// A region code, any case (`cn`, `CN`); refused unless libphonenumber knows its
    /// numbering plan.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let id = Id::from_str(&upper)
            .ok()
            .filter(|id| phonenumber::metadata::DATABASE.by_id(id.as_ref()).is_some())
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a region libphonenumber knows: use a two-letter CLDR region \
                     code such as CN, HK, TW, US or GB"
                )
            })?;
        Ok(PhoneRegion(id))
    }
}

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneError {
    /// Not a phone number at all (letters, too short or too long, no digits).
    NotANumber,
    /// It parses, but is not a number in use in its country's numbering plan.
    InvalidForCountry {
        /// The country code it was read with, e.g. 86.
        country_code: u16,
        /// The region, when the country code names one.
        region: Option<String>,
    },
    /// It has an extension (`ext. 123`), which E.164 cannot hold.
    HasExtension,
}

impl std::fmt::Display for PhoneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PhoneError::NotANumber => f.write_str("is not a phone number"),
            PhoneError::InvalidForCountry {
                country_code,
                region: Some(region),
            } => write!(
                f,
                "is not a valid number in {region} (+{country_code})'s numbering plan"
            ),
            PhoneError::InvalidForCountry { country_code, .. } => {
                write!(f, "is not a valid number for country code +{country_code}")
            }
            PhoneError::HasExtension => {
                f.write_str("has an extension; store the line's number without it")
            }
        }
    }
}

/// `input` in E.164 (`+8613800138000`): national numbers read in `region`, numbers with
/// a `+` or the region's international prefix in their own country; valid for that
/// country or refused.
pub fn normalize(region: PhoneRegion, input: &str) -> Result<String, PhoneError> {
    let trimmed = input.trim();
    // The parser accepts letters as keypad digits ("1-800-FLOWERS"); a CRM field with
    // letters in it is a mistake, not a vanity number.
    if trimmed.is_empty()
        || trimmed.chars().any(char::is_alphabetic) && !has_extension_marker(trimmed)
    {
        return Err(PhoneError::NotANumber);
    }
    let number = phonenumber::parse(Some(region.0), trimmed).map_err(|_| PhoneError::NotANumber)?;
    if number.extension().is_some() {
        return Err(PhoneError::HasExtension);
    }
    if !phonenumber::is_valid(&number) {
        return Err(PhoneError::InvalidForCountry {
            country_code: number.code().value(),
            region: number.country().id().map(|id| id.as_ref().to_owned()),
        });
    }
    Ok(number.format().mode(Mode::E164).to_string())
}

/// Whether the letters of `s` are an extension marker (`ext`, `x`) and nothing else.
fn has_extension_marker(s: &str) -> bool {
    let letters: String = s
        .chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect();
    matches!(letters.as_str(), "ext" | "x" | "extension")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cn(s: &str) -> Result<String, PhoneError> {
        normalize(PhoneRegion::default(), s)
    }

    #[test]
    fn national_and_international_forms_of_one_line_are_one_number() {
        for s in [
            "13800138000",
            "138 0013 8000",
            "138-0013-8000",
            "+86 138 0013 8000",
            "+8613800138000",
            "0086 138 0013 8000",
            "(+86) 138-0013-8000",
        ] {
            assert_eq!(cn(s).unwrap(), "+8613800138000", "{s}");
        }
        // A Beijing landline with its trunk prefix.
        assert_eq!(cn("(010) 1234 5678").unwrap(), "+861012345678");
        assert_eq!(cn("010-12345678").unwrap(), "+861012345678");
    }

    #[test]
    fn numbers_with_a_country_code_keep_their_country() {
        assert_eq!(cn("+44 20 7946 0958").unwrap(), "+442079460958");
        assert_eq!(cn("+1 650-253-0000").unwrap(), "+16502530000");
        assert_eq!(cn("+852 6123 4567").unwrap(), "+85261234567");
        let us: PhoneRegion = "us".parse().unwrap();
        assert_eq!(normalize(us, "(650) 253-0000").unwrap(), "+16502530000");
        // A US caller's national number is a US number, not a Chinese one.
        assert!(normalize(us, "138 0013 8000").is_err());
    }

    #[test]
    fn numbers_not_in_use_in_their_country_are_refused() {
        // Too short for a Chinese mobile, a prefix no Chinese number has.
        assert!(matches!(
            cn("1380013800"),
            Err(PhoneError::InvalidForCountry {
                country_code: 86,
                ..
            })
        ));
        assert!(matches!(
            cn("+86 000 0000 0000"),
            Err(PhoneError::InvalidForCountry { .. }) | Err(PhoneError::NotANumber)
        ));
        assert!(matches!(
            cn("+44 12"),
            Err(PhoneError::InvalidForCountry { .. }) | Err(PhoneError::NotANumber)
        ));
        for s in ["call me", "", "   ", "12", "1-800-FLOWERS", "+", "++86"] {
            assert!(cn(s).is_err(), "{s}");
        }
        assert_eq!(
            cn("+1 650-253-0000 ext. 123"),
            Err(PhoneError::HasExtension)
        );
        let e = cn("1380013800").unwrap_err().to_string();
        assert!(e.contains("CN") && e.contains("+86"), "{e}");
    }

    #[test]
    fn regions_are_checked_against_the_metadata() {
        assert_eq!("CN".parse::<PhoneRegion>().unwrap().to_string(), "CN");
        assert_eq!(" hk ".parse::<PhoneRegion>().unwrap().to_string(), "HK");
        for bad in ["", "ZZ", "china", "C", "001"] {
            let e = bad.parse::<PhoneRegion>().unwrap_err();
            assert!(e.contains("CLDR"), "{bad}: {e}");
        }
    }
}

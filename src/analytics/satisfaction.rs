//! Customer satisfaction arithmetic: the figures of a set of surveys (response rate,
//! average, distribution, CSAT), and the low-satisfaction attention order and pages.
//!
//! CSAT is the usual definition: the share of answers scoring 4 or 5 on the 1..5 scale.
//! Averages are compared exactly (integer cross-multiplication), so pages of the
//! attention list never skip or repeat a customer.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// The lowest score of an answer.
pub const MIN_SCORE: i32 = 1;
/// The highest score of an answer.
pub const MAX_SCORE: i32 = 5;
/// The lowest score that counts as satisfied for CSAT.
pub const SATISFIED_FROM: i32 = 4;

/// Counts of a set of surveys: what is added up before any ratio is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Surveys sent.
    pub sent: i64,
    /// Answers per score, index 0 for score 1.
    pub scores: [i64; 5],
}

impl Tally {
    /// Adds one survey: `score` 1..5 answered, 0 sent and not answered. Scores outside
    /// 0..5 (never stored) count as sent only.
    pub fn add(&mut self, score: i32) {
        self.sent += 1;
        if let Some(slot) = score_index(score).and_then(|i| self.scores.get_mut(i)) {
            *slot += 1;
        }
    }

    /// Answered surveys.
    pub fn answered(&self) -> i64 {
        self.scores.iter().sum()
    }

    /// The figures of these counts.
    pub fn stats(&self) -> SatisfactionStats {
        let answered = self.answered();
        let sum: i64 = self
            .scores
            .iter()
            .zip(MIN_SCORE..)
            .map(|(n, s)| n * i64::from(s))
            .sum();
        let satisfied: i64 = self
            .scores
            .iter()
            .zip(MIN_SCORE..)
            .filter(|(_, s)| *s >= SATISFIED_FROM)
            .map(|(n, _)| n)
            .sum();
        SatisfactionStats {
            sent: self.sent,
            answered,
            response_rate: ratio(answered, self.sent),
            average_score: (answered > 0).then(|| ratio(sum, answered)),
            scores: self.scores,
            csat_percent: (answered > 0).then(|| 100.0 * ratio(satisfied, answered)),
        }
    }
}

/// `n / d`, 0 when `d` is 0.
fn ratio(n: i64, d: i64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

/// The slot of an answer's score in [`Tally::scores`]; `None` for 0 (unanswered).
fn score_index(score: i32) -> Option<usize> {
    (MIN_SCORE..=MAX_SCORE)
        .contains(&score)
        .then(|| usize::try_from(score - MIN_SCORE).ok())
        .flatten()
}

/// The figures of a set of surveys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SatisfactionStats {
    /// Surveys sent.
    pub sent: i64,
    /// Surveys answered.
    pub answered: i64,
    /// `answered / sent`; 0 when nothing was sent.
    pub response_rate: f64,
    /// Mean score of the answers; `None` without one.
    pub average_score: Option<f64>,
    /// Answers per score, index 0 for score 1.
    pub scores: [i64; 5],
    /// Percentage of answers scoring 4 or 5; `None` without an answer.
    pub csat_percent: Option<f64>,
}

/// Counts of a set of surveys, and of those whose target happened inside and outside
/// a schedule's business hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitTally {
    /// Every survey.
    pub overall: Tally,
    /// Targets inside business hours.
    pub inside: Tally,
    /// Targets outside business hours.
    pub outside: Tally,
}

impl SplitTally {
    /// Adds one survey; `inside` says where its target happened (`None`: no split).
    pub fn add(&mut self, score: i32, inside: Option<bool>) {
        self.overall.add(score);
        match inside {
            Some(true) => self.inside.add(score),
            Some(false) => self.outside.add(score),
            None => {}
        }
    }

    /// The figures; the inside and outside ones only when `split`.
    pub fn figures(&self, split: bool) -> SatisfactionFigures {
        SatisfactionFigures {
            overall: self.overall.stats(),
            inside: split.then(|| self.inside.stats()),
            outside: split.then(|| self.outside.stats()),
        }
    }
}

/// The figures of a set of surveys, split by business hours when asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SatisfactionFigures {
    /// Every survey.
    pub overall: SatisfactionStats,
    /// Targets inside business hours.
    pub inside: Option<SatisfactionStats>,
    /// Targets outside business hours.
    pub outside: Option<SatisfactionStats>,
}

/// The answers of one customer in a range: how many, and the sum of their scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreAverage {
    /// The customer.
    pub customer_id: i64,
    /// Sum of the scores.
    pub sum: i64,
    /// Number of answers.
    pub count: i64,
}

/// A threshold on average scores, in thousandths of a point (2.5 is 2500), so it
/// compares with averages exactly.
pub type MilliScore = i64;

impl ScoreAverage {
    /// The mean score; 0 without answers.
    pub fn average(&self) -> f64 {
        ratio(self.sum, self.count)
    }

    /// Whether the average is at most `max_milli` thousandths over at least
    /// `min_count` (at least 1) answers.
    pub fn qualifies(&self, max_milli: MilliScore, min_count: i64) -> bool {
        self.count >= min_count.max(1)
            && i128::from(self.sum) * 1000 <= i128::from(max_milli) * i128::from(self.count)
    }

    /// Attention order: the lowest average first, then the most answers, then the
    /// smaller id.
    pub fn urgency(&self, other: &Self) -> Ordering {
        let mine = i128::from(self.sum) * i128::from(other.count);
        let theirs = i128::from(other.sum) * i128::from(self.count);
        mine.cmp(&theirs)
            .then(other.count.cmp(&self.count))
            .then(self.customer_id.cmp(&other.customer_id))
    }
}

/// Sums `(customer_id, score, count)` rows into one [`ScoreAverage`] per customer, in
/// customer order.
pub fn averages(rows: impl IntoIterator<Item = (i64, i32, i64)>) -> Vec<ScoreAverage> {
    let mut by_customer: std::collections::BTreeMap<i64, ScoreAverage> = Default::default();
    for (customer_id, score, n) in rows {
        let a = by_customer.entry(customer_id).or_insert(ScoreAverage {
            customer_id,
            sum: 0,
            count: 0,
        });
        a.sum += i64::from(score) * n;
        a.count += n;
    }
    by_customer.into_values().collect()
}

/// The qualifying customers in attention order, strictly after `after` (a previous
/// page's last item), at most `limit` of them, and whether more follow.
pub fn low_satisfaction_page(
    averages: impl IntoIterator<Item = ScoreAverage>,
    max_milli: MilliScore,
    min_count: i64,
    after: Option<&ScoreAverage>,
    limit: usize,
) -> (Vec<ScoreAverage>, bool) {
    let qualifying = averages
        .into_iter()
        .filter(|a| a.qualifies(max_milli, min_count));
    super::attention::ranked_page(qualifying, ScoreAverage::urgency, after, limit)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tally(scores: &[i32]) -> Tally {
        let mut t = Tally::default();
        for &s in scores {
            t.add(s);
        }
        t
    }

    #[test]
    fn figures_follow_the_csat_definitions() {
        // 6 sent, 4 answered: 5, 4, 2, 1. Mean 3, two of four satisfied.
        let s = tally(&[5, 0, 4, 2, 0, 1]).stats();
        assert_eq!(s.sent, 6);
        assert_eq!(s.answered, 4);
        assert_eq!(s.response_rate, 4.0 / 6.0);
        assert_eq!(s.average_score, Some(3.0));
        assert_eq!(s.scores, [1, 1, 0, 1, 1]);
        assert_eq!(s.csat_percent, Some(50.0));
    }

    #[test]
    fn nothing_answered_has_no_average_and_no_csat() {
        let s = tally(&[0, 0]).stats();
        assert_eq!((s.sent, s.answered, s.response_rate), (2, 0, 0.0));
        assert_eq!((s.average_score, s.csat_percent), (None, None));
        let empty = Tally::default().stats();
        assert_eq!((empty.sent, empty.response_rate), (0, 0.0));
    }

    #[test]
    fn the_split_adds_every_survey_to_the_whole_and_to_one_side() {
        let mut t = SplitTally::default();
        t.add(5, Some(true));
        t.add(1, Some(false));
        t.add(0, Some(false));
        let f = t.figures(true);
        assert_eq!(f.overall.sent, 3);
        assert_eq!(f.inside.unwrap().average_score, Some(5.0));
        assert_eq!(f.outside.unwrap().response_rate, 0.5);
        assert_eq!(t.figures(false).inside, None);
    }

    fn avg(customer_id: i64, sum: i64, count: i64) -> ScoreAverage {
        ScoreAverage {
            customer_id,
            sum,
            count,
        }
    }

    #[test]
    fn averages_sum_the_score_counts_per_customer() {
        let rows = [(7, 1, 2), (3, 5, 1), (7, 4, 1), (3, 2, 3)];
        assert_eq!(averages(rows), vec![avg(3, 11, 4), avg(7, 6, 3)]);
    }

    #[test]
    fn the_threshold_is_inclusive_and_exact() {
        assert!(avg(1, 5, 2).qualifies(2500, 1), "2.5 at 2.5");
        assert!(!avg(1, 8, 3).qualifies(2500, 1), "2.667 above 2.5");
        assert!(
            avg(1, 11, 5).qualifies(2200, 1),
            "2.2 at 2.2, no float rounding"
        );
        assert!(!avg(1, 2, 1).qualifies(2500, 2), "too few answers");
        assert!(!avg(1, 0, 0).qualifies(5000, 0), "no answer is no average");
    }

    #[test]
    fn pages_follow_the_lowest_average_then_most_answers_then_id() {
        let all = vec![
            avg(1, 4, 2), // 2.0, 2 answers
            avg(2, 2, 2), // 1.0
            avg(3, 6, 3), // 2.0, 3 answers
            avg(4, 5, 2), // 2.5
            avg(5, 2, 1), // 2.0, 1 answer
            avg(6, 4, 2), // 2.0, 2 answers, id 6
            avg(7, 9, 2), // 4.5: above the threshold
        ];
        let (page, more) = low_satisfaction_page(all.clone(), 2500, 1, None, 100);
        assert!(!more);
        let order: Vec<i64> = page.iter().map(|a| a.customer_id).collect();
        assert_eq!(order, vec![2, 3, 1, 6, 5, 4]);
        let mut seen = Vec::new();
        let mut after: Option<ScoreAverage> = None;
        loop {
            let (page, more) = low_satisfaction_page(all.clone(), 2500, 1, after.as_ref(), 4);
            seen.extend(page.iter().map(|a| a.customer_id));
            after = page.last().copied();
            if !more {
                break;
            }
        }
        assert_eq!(seen, order);
    }
}

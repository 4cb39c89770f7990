//! Customers who need attention because their contact rate or their mood fell: which
//! drops qualify, their urgency order and keyset pages over it. Ratios and means are
//! compared exactly (integer cross-multiplication), so pages never skip or repeat a
//! customer.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// A customer's contacts in the range and in the equal period before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    /// The customer.
    pub customer_id: i64,
    /// Contacts in the preceding period.
    pub previous: i64,
    /// Contacts in the range.
    pub current: i64,
}

impl Decline {
    /// Whether the count fell by at least `min_percent` percent from a previous count of
    /// at least `min_previous` (which is at least 1).
    pub fn qualifies(&self, min_percent: u32, min_previous: i64) -> bool {
        self.previous >= min_previous.max(1)
            && self.current < self.previous
            && i128::from(self.previous - self.current) * 100
                >= i128::from(min_percent) * i128::from(self.previous)
    }

    /// `(previous - current) / previous`: 1 when contact stopped; 0 without a previous
    /// count.
    pub fn ratio(&self) -> f64 {
        if self.previous <= 0 {
            return 0.0;
        }
        (self.previous - self.current) as f64 / self.previous as f64
    }

    /// Urgency order: the largest relative drop first, then the largest previous count
    /// (the bigger customer), then the smaller id.
    pub fn urgency(&self, other: &Self) -> Ordering {
        let mine = i128::from(self.previous - self.current) * i128::from(other.previous);
        let theirs = i128::from(other.previous - other.current) * i128::from(self.previous);
        theirs
            .cmp(&mine)
            .then(other.previous.cmp(&self.previous))
            .then(self.customer_id.cmp(&other.customer_id))
    }
}

/// One page of an attention list: the `items` in `urgency` order strictly after `after`
/// (a previous page's last item), at most `limit` of them, and whether more follow.
/// `urgency` must be a total order (ties broken by id), so pages never skip or repeat.
pub fn ranked_page<T: Copy>(
    items: impl IntoIterator<Item = T>,
    urgency: impl Fn(&T, &T) -> Ordering,
    after: Option<&T>,
    limit: usize,
) -> (Vec<T>, bool) {
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|x| after.is_none_or(|a| urgency(x, a) == Ordering::Greater))
        .collect();
    let more = rest.len() > limit;
    if more {
        rest.select_nth_unstable_by(limit, &urgency);
        rest.truncate(limit);
    }
    rest.sort_unstable_by(&urgency);
    (rest, more)
}

/// The qualifying declines in urgency order, strictly after `after` (a previous page's
/// last item), at most `limit` of them, and whether more follow.
pub fn decline_page(
    counts: impl IntoIterator<Item = Decline>,
    min_percent: u32,
    min_previous: i64,
    after: Option<&Decline>,
    limit: usize,
) -> (Vec<Decline>, bool) {
    let qualifying = counts
        .into_iter()
        .filter(|d| d.qualifies(min_percent, min_previous));
    ranked_page(qualifying, Decline::urgency, after, limit)
}

/// A customer's communications and the sum of their sentiment scores in the range and in
/// the equal period before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mood {
    /// The customer.
    pub customer_id: i64,
    /// Communications in the preceding period.
    pub previous: i64,
    /// Sum of their scores.
    pub previous_sum: i64,
    /// Communications in the range.
    pub current: i64,
    /// Sum of their scores.
    pub current_sum: i64,
}

impl Mood {
    /// The fall of the mean score times `previous * current` (positive when it fell):
    /// `previous_sum * current - current_sum * previous`.
    fn scaled_fall(&self) -> i128 {
        i128::from(self.previous_sum) * i128::from(self.current)
            - i128::from(self.current_sum) * i128::from(self.previous)
    }

    /// Whether the mean score fell by at least `min_drop` points, from at least
    /// `min_previous` communications (at least 1) to at least one.
    pub fn qualifies(&self, min_drop: i64, min_previous: i64) -> bool {
        self.previous >= min_previous.max(1)
            && self.current >= 1
            && self.scaled_fall()
                >= i128::from(min_drop) * i128::from(self.previous) * i128::from(self.current)
    }

    /// The mean score of the preceding period; 0 without communications.
    pub fn previous_mean(&self) -> f64 {
        mean(self.previous_sum, self.previous)
    }

    /// The mean score of the range; 0 without communications.
    pub fn current_mean(&self) -> f64 {
        mean(self.current_sum, self.current)
    }

    /// Urgency order: the largest fall of the mean first, then the most communications
    /// before (the bigger customer), then the smaller id. Only for qualifying moods
    /// (both counts at least 1).
    pub fn urgency(&self, other: &Self) -> Ordering {
        let mine = self.scaled_fall() * i128::from(other.previous) * i128::from(other.current);
        let theirs = other.scaled_fall() * i128::from(self.previous) * i128::from(self.current);
        theirs
            .cmp(&mine)
            .then(other.previous.cmp(&self.previous))
            .then(self.customer_id.cmp(&other.customer_id))
    }
}

fn mean(sum: i64, n: i64) -> f64 {
    if n <= 0 {
        0.0
    } else {
        sum as f64 / n as f64
    }
}

/// The qualifying moods in urgency order, strictly after `after` (a previous page's last
/// item), at most `limit` of them, and whether more follow.
pub fn mood_page(
    moods: impl IntoIterator<Item = Mood>,
    min_drop: i64,
    min_previous: i64,
    after: Option<&Mood>,
    limit: usize,
) -> (Vec<Mood>, bool) {
    let qualifying = moods
        .into_iter()
        .filter(|m| m.qualifies(min_drop, min_previous));
    ranked_page(qualifying, Mood::urgency, after, limit)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(customer_id: i64, previous: i64, current: i64) -> Decline {
        Decline {
            customer_id,
            previous,
            current,
        }
    }

    #[test]
    fn a_drop_qualifies_at_or_past_the_threshold() {
        assert!(d(1, 10, 5).qualifies(50, 1));
        assert!(!d(1, 10, 6).qualifies(50, 1));
        assert!(d(1, 3, 0).qualifies(100, 1));
        assert!(!d(1, 3, 0).qualifies(50, 4), "too few before");
        assert!(!d(1, 0, 0).qualifies(0, 0), "nothing before is no drop");
        assert!(!d(1, 5, 5).qualifies(0, 1), "no fall");
        assert!(!d(1, 5, 9).qualifies(0, 1), "a rise");
        assert_eq!(d(1, 4, 1).ratio(), 0.75);
    }

    #[test]
    fn pages_follow_urgency_without_gaps_or_repeats() {
        let all = vec![
            d(1, 10, 5), // 0.5
            d(2, 4, 0),  // 1.0, previous 4
            d(3, 20, 0), // 1.0, previous 20
            d(4, 9, 3),  // 0.667
            d(5, 2, 1),  // 0.5, previous 2
            d(6, 10, 5), // 0.5, previous 10, id 6
            d(7, 10, 9), // 0.1: below the threshold
        ];
        let order: Vec<i64> = {
            let (page, more) = decline_page(all.clone(), 50, 1, None, 100);
            assert!(!more);
            page.iter().map(|x| x.customer_id).collect()
        };
        assert_eq!(order, vec![3, 2, 4, 1, 6, 5]);
        let mut seen = Vec::new();
        let mut after: Option<Decline> = None;
        loop {
            let (page, more) = decline_page(all.clone(), 50, 1, after.as_ref(), 4);
            seen.extend(page.iter().map(|x| x.customer_id));
            after = page.last().copied();
            if !more {
                break;
            }
        }
        assert_eq!(seen, order);
    }

    fn m(customer_id: i64, previous: (i64, i64), current: (i64, i64)) -> Mood {
        Mood {
            customer_id,
            previous: previous.0,
            previous_sum: previous.1,
            current: current.0,
            current_sum: current.1,
        }
    }

    #[test]
    fn a_mood_qualifies_when_its_mean_fell_far_enough() {
        // Mean 400 -> 100: a fall of 300.
        let fell = m(1, (4, 1600), (2, 200));
        assert!(fell.qualifies(300, 1));
        assert!(!fell.qualifies(301, 1));
        assert!(!fell.qualifies(300, 5), "too few before");
        assert!(
            !m(1, (3, 900), (0, 0)).qualifies(1, 1),
            "nothing now: no mean"
        );
        assert!(!m(1, (3, -300), (3, 0)).qualifies(1, 1), "a rise");
        assert_eq!(fell.previous_mean(), 400.0);
        assert_eq!(fell.current_mean(), 100.0);
    }

    #[test]
    fn mood_pages_follow_the_largest_fall_without_gaps_or_repeats() {
        let all = vec![
            m(1, (2, 1000), (1, 0)),   // fall 500
            m(2, (3, 900), (3, -900)), // fall 600
            m(3, (10, 5000), (4, 0)),  // fall 500, 10 before
            m(4, (1, 100), (1, 0)),    // fall 100: below 200
            m(5, (5, 0), (5, -3000)),  // fall 600, 5 before
            m(6, (2, 1000), (3, 0)),   // fall 500, id 6
        ];
        let (page, more) = mood_page(all.clone(), 200, 1, None, 100);
        assert!(!more);
        let order: Vec<i64> = page.iter().map(|x| x.customer_id).collect();
        assert_eq!(order, vec![5, 2, 3, 1, 6]);
        let mut seen = Vec::new();
        let mut after: Option<Mood> = None;
        loop {
            let (page, more) = mood_page(all.clone(), 200, 1, after.as_ref(), 2);
            seen.extend(page.iter().map(|x| x.customer_id));
            after = page.last().copied();
            if !more {
                break;
            }
        }
        assert_eq!(seen, order);
    }
}

//! Customers who need attention because their contact rate fell: which drops qualify,
//! their urgency order and keyset pages over it. Ratios are compared exactly (integer
//! cross-multiplication), so pages never skip or repeat a customer.

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

/// The qualifying declines in urgency order, strictly after `after` (a previous page's
/// last item), at most `limit` of them, and whether more follow.
pub fn decline_page(
    counts: impl IntoIterator<Item = Decline>,
    min_percent: u32,
    min_previous: i64,
    after: Option<&Decline>,
    limit: usize,
) -> (Vec<Decline>, bool) {
    let mut rest: Vec<Decline> = counts
        .into_iter()
        .filter(|d| d.qualifies(min_percent, min_previous))
        .filter(|d| after.is_none_or(|a| d.urgency(a) == Ordering::Greater))
        .collect();
    let more = rest.len() > limit;
    if more {
        rest.select_nth_unstable_by(limit, Decline::urgency);
        rest.truncate(limit);
    }
    rest.sort_unstable_by(Decline::urgency);
    (rest, more)
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
}

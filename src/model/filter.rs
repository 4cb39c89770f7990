//! [`CommunicationFilter`]: which communications a read covers. One struct for the
//! listing, the timeline and every report; the storage layer turns it into one WHERE
//! clause, and follow streams apply it in memory with [`CommunicationFilter::admits`].

use chrono::NaiveDateTime;

/// Which communications a read covers. Every field narrows; empty or `None` means no
/// restriction. On a timeline, transactions and tickets are filtered by customer and
/// time only (they have no channel or direction).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommunicationFilter {
    /// Customers; empty for every customer.
    pub customer_ids: Vec<i64>,
    /// Channels (`Channel` values); empty for all.
    pub channels: Vec<i32>,
    /// Direction (`Direction` value); `None` for both.
    pub direction: Option<i32>,
    /// Inclusive lower bound of the time (UTC).
    pub start: Option<NaiveDateTime>,
    /// Exclusive upper bound of the time (UTC).
    pub end: Option<NaiveDateTime>,
}

impl CommunicationFilter {
    /// Every communication of one customer.
    pub fn customer(customer_id: i64) -> Self {
        CommunicationFilter {
            customer_ids: vec![customer_id],
            ..CommunicationFilter::default()
        }
    }

    /// The one customer this filter is limited to, if it names exactly one.
    pub fn single_customer(&self) -> Option<i64> {
        match self.customer_ids.as_slice() {
            [id] => Some(*id),
            _ => None,
        }
    }

    /// Whether a row with these values passes, exactly as the WHERE clause built from
    /// this filter decides. `channel` and `direction` are `None` for rows that have
    /// none (transactions, tickets), which pass those conditions.
    pub fn admits(
        &self,
        customer_id: i64,
        channel: Option<i32>,
        direction: Option<i32>,
        time: NaiveDateTime,
    ) -> bool {
        (self.customer_ids.is_empty() || self.customer_ids.contains(&customer_id))
            && channel.is_none_or(|c| self.channels.is_empty() || self.channels.contains(&c))
            && direction.is_none_or(|d| self.direction.is_none_or(|want| want == d))
            && self.start.is_none_or(|s| time >= s)
            && self.end.is_none_or(|e| time < e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::time::march_2024 as at;

    #[test]
    fn admits_applies_every_field() {
        let f = CommunicationFilter {
            customer_ids: vec![7],
            channels: vec![1, 3],
            direction: Some(2),
            start: Some(at(2)),
            end: Some(at(5)),
        };
        assert!(f.admits(7, Some(3), Some(2), at(2)));
        assert!(!f.admits(8, Some(3), Some(2), at(2)), "other customer");
        assert!(!f.admits(7, Some(2), Some(2), at(2)), "other channel");
        assert!(!f.admits(7, Some(3), Some(1), at(2)), "other direction");
        assert!(!f.admits(7, Some(3), Some(2), at(1)), "before the start");
        assert!(
            !f.admits(7, Some(3), Some(2), at(5)),
            "the end is exclusive"
        );
        // Rows without channel or direction pass those conditions.
        assert!(f.admits(7, None, None, at(4)));
        assert!(CommunicationFilter::default().admits(1, Some(9), Some(9), at(1)));
    }

    #[test]
    fn single_customer_only_for_exactly_one() {
        assert_eq!(CommunicationFilter::customer(4).single_customer(), Some(4));
        assert_eq!(CommunicationFilter::default().single_customer(), None);
        let two = CommunicationFilter {
            customer_ids: vec![1, 2],
            ..Default::default()
        };
        assert_eq!(two.single_customer(), None);
    }
}

//! Gap statistics between consecutive contacts of the same customer.
//! Owns the streaming accumulator (mean and median gap) and the SQL-side mean helper.

/// Accumulates the gaps between consecutive contacts of each customer.
///
/// Feed it rows sorted by `(customer_id, time)`; every row after the first of a customer adds
/// one gap (current time minus the previous time of that customer). Gaps are kept in memory
/// (8 bytes each) so that the median is exact.
#[derive(Debug, Clone, Default)]
pub struct GapStats {
    last: Option<(i64, i64)>,
    gaps: Vec<i64>,
    sum: i128,
}

impl GapStats {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one contact of `customer_id` at `t_micros` (microseconds since the epoch).
    ///
    /// Input must be sorted by `(customer_id, time)`. An out-of-order time of the same
    /// customer is not an error: it yields a gap of 0 rather than a negative one.
    pub fn push(&mut self, customer_id: i64, t_micros: i64) {
        if let Some((last_customer, last_t)) = self.last {
            if last_customer == customer_id {
                let gap = t_micros.saturating_sub(last_t).max(0);
                self.gaps.push(gap);
                self.sum += i128::from(gap);
            }
        }
        self.last = Some((customer_id, t_micros));
    }

    /// Number of gaps seen so far.
    pub fn gap_count(&self) -> u64 {
        self.gaps.len() as u64
    }

    /// Mean gap in microseconds (rounded toward zero), or `None` when there is no gap.
    pub fn mean_micros(&self) -> Option<i64> {
        let count = i128::try_from(self.gaps.len()).ok()?;
        if count == 0 {
            return None;
        }
        i64::try_from(self.sum / count).ok()
    }

    /// Median gap in microseconds, or `None` when there is no gap.
    ///
    /// With an even number of gaps this is the mean of the two middle ones, rounded toward
    /// zero. Works on a copy of the gaps (O(n) time and memory).
    pub fn median_micros(&self) -> Option<i64> {
        let mut gaps = self.gaps.clone();
        median_in_place(&mut gaps)
    }
}

/// Median of `values`, reordering them; `None` when empty. With an even number of
/// values, the mean of the two middle ones rounded toward zero ([`GapStats`]'s rule).
pub fn median_in_place(values: &mut [i64]) -> Option<i64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mid = n / 2;
    let (lower, upper, _) = values.select_nth_unstable(mid);
    let upper = *upper;
    if n % 2 == 1 {
        return Some(upper);
    }
    let lower_max = lower.iter().copied().max()?;
    i64::try_from((i128::from(lower_max) + i128::from(upper)) / 2).ok()
}

/// Mean gap from SQL-side aggregates, rounded toward zero.
///
/// `span_sum_micros` is the sum over customers of (last contact - first contact) and
/// `gap_count` the sum over customers of (contacts - 1); the gaps of one customer telescope
/// to its span, so this equals the mean of all gaps. `None` when `gap_count <= 0` or the
/// result does not fit in an `i64`.
pub fn mean_gap_micros(span_sum_micros: i128, gap_count: i64) -> Option<i64> {
    if gap_count <= 0 {
        return None;
    }
    i64::try_from(span_sum_micros / i128::from(gap_count)).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    #[test]
    fn empty_and_single_contacts_have_no_gaps() {
        let mut s = GapStats::new();
        assert_eq!(s.gap_count(), 0);
        assert_eq!(s.mean_micros(), None);
        assert_eq!(s.median_micros(), None);
        s.push(1, 100);
        s.push(2, 50);
        s.push(3, 10);
        assert_eq!(s.gap_count(), 0);
        assert_eq!(s.mean_micros(), None);
        assert_eq!(s.median_micros(), None);
    }

    #[test]
    fn hand_made_sequence() {
        let mut s = GapStats::new();
        // Customer 1: gaps 10s, 20s. Customer 2: none. Customer 3: gaps 5s, 60s, 1s.
        for (c, t) in [
            (1, 0),
            (1, 10 * SEC),
            (1, 30 * SEC),
            (2, 5 * SEC),
            (3, 100 * SEC),
            (3, 105 * SEC),
            (3, 165 * SEC),
            (3, 166 * SEC),
        ] {
            s.push(c, t);
        }
        assert_eq!(s.gap_count(), 5);
        // (10 + 20 + 5 + 60 + 1) / 5 = 19.2s
        assert_eq!(s.mean_micros(), Some(19_200_000));
        // sorted: 1, 5, 10, 20, 60
        assert_eq!(s.median_micros(), Some(10 * SEC));
        // SQL-side mean: spans 30s + 0s + 66s over 2 + 0 + 3 gaps.
        assert_eq!(mean_gap_micros(i128::from(96 * SEC), 5), s.mean_micros());

        // A sixth gap makes the count even: sorted 1, 5, 7, 10, 20, 60 -> (7 + 10) / 2 = 8.5s.
        s.push(4, 0);
        s.push(4, 7 * SEC);
        assert_eq!(s.gap_count(), 6);
        assert_eq!(s.median_micros(), Some(8_500_000));
    }

    #[test]
    fn even_median_rounds_toward_zero() {
        let mut s = GapStats::new();
        for t in [0, 1, 3] {
            s.push(7, t);
        }
        // gaps 1 and 2 -> 1.5 -> 1
        assert_eq!(s.median_micros(), Some(1));
        assert_eq!(s.mean_micros(), Some(1));
    }

    #[test]
    fn same_customer_id_after_other_customer_is_new_run() {
        let mut s = GapStats::new();
        s.push(1, 0);
        s.push(2, 1_000);
        s.push(2, 3_000);
        assert_eq!(s.gap_count(), 1);
        assert_eq!(s.mean_micros(), Some(2_000));
    }

    #[test]
    fn out_of_order_time_gives_zero_gap() {
        let mut s = GapStats::new();
        s.push(1, 10);
        s.push(1, 4);
        assert_eq!(s.median_micros(), Some(0));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut s = GapStats::new();
        s.push(1, i64::MIN);
        s.push(1, i64::MAX);
        s.push(1, i64::MAX);
        assert_eq!(s.gap_count(), 2);
        // gaps i64::MAX (saturated) and 0
        assert_eq!(s.median_micros(), Some(i64::MAX / 2));
        assert_eq!(s.mean_micros(), Some(i64::MAX / 2));
    }

    #[test]
    fn mean_gap_from_sql_sums() {
        assert_eq!(mean_gap_micros(0, 0), None);
        assert_eq!(mean_gap_micros(100, -1), None);
        assert_eq!(mean_gap_micros(100, 3), Some(33));
        assert_eq!(mean_gap_micros(-100, 3), Some(-33));
        assert_eq!(mean_gap_micros(i128::MAX, 1), None);
    }
}

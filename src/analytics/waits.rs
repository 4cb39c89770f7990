//! Waits and their figures: how long inbound messages waited for a reply, or tickets for
//! their resolution.
//!
//! [`Replies`] pairs each inbound communication with the next outbound one of the same
//! customer (optionally on the same channel) as rows stream by in time order;
//! [`WaitFigures`] summarizes a set of waits (count, completed, pending, mean, median,
//! p90, over a threshold).

use std::collections::HashMap;

/// What is known of one item that waits (an inbound message, a ticket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait<T> {
    /// Caller's label of the item (its channel and bucket, say).
    pub tag: T,
    /// When the wait began, unix microseconds.
    pub since: i64,
    /// When it ended (the reply, the resolution), unix microseconds; `None` while pending.
    pub until: Option<i64>,
}

/// Pairs inbound communications with the next outbound one to the same customer.
///
/// Feed every communication of the scope in `(time, id)` order with [`Replies::inbound`]
/// and [`Replies::outbound`]; an outbound one answers every inbound one of its customer
/// (of its channel, with `same_channel`) that came before it and is still waiting. Each
/// inbound message is one wait: three messages before one reply are three waits.
#[derive(Debug, Clone)]
pub struct Replies<T> {
    same_channel: bool,
    waiting: HashMap<(i64, i32), Vec<(T, i64)>>,
    done: Vec<Wait<T>>,
}

impl<T: Copy> Replies<T> {
    /// Pairs replies on any channel, or only on the inbound message's own channel.
    pub fn new(same_channel: bool) -> Self {
        Replies {
            same_channel,
            waiting: HashMap::new(),
            done: Vec::new(),
        }
    }

    fn key(&self, customer_id: i64, channel: i32) -> (i64, i32) {
        (customer_id, if self.same_channel { channel } else { 0 })
    }

    /// An inbound communication that waits for a reply.
    pub fn inbound(&mut self, customer_id: i64, channel: i32, at: i64, tag: T) {
        let key = self.key(customer_id, channel);
        self.waiting.entry(key).or_default().push((tag, at));
    }

    /// An outbound communication: the reply to everything its customer has waiting.
    pub fn outbound(&mut self, customer_id: i64, channel: i32, at: i64) {
        let key = self.key(customer_id, channel);
        if let Some(waiting) = self.waiting.remove(&key) {
            self.done
                .extend(waiting.into_iter().map(|(tag, since)| Wait {
                    tag,
                    since,
                    until: Some(at),
                }));
        }
    }

    /// The `(customer, channel)` keys with messages still waiting; the channel is 0
    /// unless replies must be on the same channel.
    pub fn waiting_keys(&self) -> Vec<(i64, i32)> {
        let mut keys: Vec<(i64, i32)> = self.waiting.keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    /// Whether replies must be on the inbound message's channel.
    pub fn same_channel(&self) -> bool {
        self.same_channel
    }

    /// Every wait, answered ones first; the rest with `until` `None`.
    pub fn finish(mut self) -> Vec<Wait<T>> {
        let mut keys: Vec<(i64, i32)> = self.waiting.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            if let Some(waiting) = self.waiting.remove(&key) {
                self.done
                    .extend(waiting.into_iter().map(|(tag, since)| Wait {
                        tag,
                        since,
                        until: None,
                    }));
            }
        }
        self.done
    }
}

/// Figures of a set of waits. Durations are microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitFigures {
    /// Items.
    pub count: i64,
    /// Items whose wait ended (answered, resolved).
    pub completed: i64,
    /// Items still waiting.
    pub pending: i64,
    /// Mean of the completed waits, rounded toward zero.
    pub mean: Option<i64>,
    /// Median of the completed waits (mean of the middle two, rounded toward zero).
    pub median: Option<i64>,
    /// 90th percentile of the completed waits, nearest rank: the smallest wait that at
    /// least 90% of them do not exceed.
    pub p90: Option<i64>,
    /// Completed waits longer than the threshold.
    pub completed_over: i64,
    /// Pending items that have waited longer than the threshold so far.
    pub pending_over: i64,
    /// The longest wait of a pending item so far.
    pub longest_pending: Option<i64>,
    /// Distinct customers with a pending item.
    pub pending_customers: i64,
    /// How much longer the pending item nearest to the threshold (and not over it) can
    /// wait before it is over: the soonest the figures can change with time alone.
    pub next_over_in: Option<i64>,
}

/// Collects waits of one group (the whole report, a channel, a bucket).
#[derive(Debug, Clone, Default)]
pub struct WaitSet {
    completed: Vec<i64>,
    pending: Vec<i64>,
    /// The customer of each pending item.
    waiting: Vec<i64>,
}

impl WaitSet {
    /// A completed wait of `micros`.
    pub fn completed(&mut self, micros: i64) {
        self.completed.push(micros.max(0));
    }

    /// A pending item of `customer` that has waited `micros` so far.
    pub fn pending(&mut self, micros: i64, customer: i64) {
        self.pending.push(micros.max(0));
        self.waiting.push(customer);
    }

    /// The figures; waits longer than `threshold` (when given) are counted as over it.
    pub fn figures(mut self, threshold: Option<i64>) -> WaitFigures {
        self.completed.sort_unstable();
        let c = &self.completed;
        let n = c.len();
        let sum: i128 = c.iter().map(|&w| i128::from(w)).sum();
        let mean = (n > 0)
            .then(|| i64::try_from(sum / n as i128).ok())
            .flatten();
        let median = match n {
            0 => None,
            _ if n % 2 == 1 => Some(c[n / 2]),
            _ => i64::try_from((i128::from(c[n / 2 - 1]) + i128::from(c[n / 2])) / 2).ok(),
        };
        // Nearest rank: ceil(0.9 n), 1-based.
        let p90 = (n > 0).then(|| c[(9 * n).div_ceil(10) - 1]);
        let over = |values: &[i64]| {
            threshold.map_or(0, |t| values.iter().filter(|&&w| w > t).count() as i64)
        };
        self.waiting.sort_unstable();
        self.waiting.dedup();
        let next_over_in = threshold.and_then(|t| {
            self.pending
                .iter()
                .filter(|&&w| w <= t)
                .map(|&w| t - w + 1)
                .min()
        });
        WaitFigures {
            count: (n + self.pending.len()) as i64,
            completed: n as i64,
            pending: self.pending.len() as i64,
            mean,
            median,
            p90,
            completed_over: over(c),
            pending_over: over(&self.pending),
            longest_pending: self.pending.iter().copied().max(),
            pending_customers: self.waiting.len() as i64,
            next_over_in,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_outbound_message_answers_every_earlier_inbound_one_of_its_customer() {
        let mut r = Replies::new(false);
        r.inbound(1, 1, 100, 'a');
        r.inbound(1, 3, 150, 'b');
        r.inbound(2, 1, 160, 'c');
        r.outbound(1, 2, 200);
        r.inbound(1, 1, 300, 'd');
        assert_eq!(r.waiting_keys(), vec![(1, 0), (2, 0)]);
        let waits = r.finish();
        assert_eq!(
            waits,
            vec![
                Wait {
                    tag: 'a',
                    since: 100,
                    until: Some(200)
                },
                Wait {
                    tag: 'b',
                    since: 150,
                    until: Some(200)
                },
                Wait {
                    tag: 'd',
                    since: 300,
                    until: None
                },
                Wait {
                    tag: 'c',
                    since: 160,
                    until: None
                },
            ]
        );
    }

    #[test]
    fn with_same_channel_only_a_reply_on_that_channel_counts() {
        let mut r = Replies::new(true);
        r.inbound(1, 1, 100, 'a');
        r.inbound(1, 3, 150, 'b');
        r.outbound(1, 3, 200);
        assert_eq!(r.waiting_keys(), vec![(1, 1)]);
        r.outbound(1, 1, 400);
        let waits = r.finish();
        assert_eq!(
            waits[0],
            Wait {
                tag: 'b',
                since: 150,
                until: Some(200)
            }
        );
        assert_eq!(
            waits[1],
            Wait {
                tag: 'a',
                since: 100,
                until: Some(400)
            }
        );
    }

    fn s_without_threshold() -> WaitFigures {
        let mut s = WaitSet::default();
        s.pending(5, 1);
        s.figures(None)
    }

    #[test]
    fn figures_are_exact() {
        let mut s = WaitSet::default();
        for w in [10, 40, 20, 30, 50, 60, 70, 80, 90, 100] {
            s.completed(w);
        }
        s.pending(5, 1);
        s.pending(500, 2);
        s.pending(75, 1);
        let f = s.figures(Some(75));
        assert_eq!(f.count, 13);
        assert_eq!(f.completed, 10);
        assert_eq!(f.pending, 3);
        assert_eq!(f.mean, Some(55));
        assert_eq!(f.median, Some(55));
        assert_eq!(f.p90, Some(90));
        assert_eq!(f.completed_over, 3);
        assert_eq!(f.pending_over, 1);
        // What waits now: two customers, the longest for 500; the wait of 75 is over
        // the threshold 1 µs later, before the wait of 5.
        assert_eq!(f.pending_customers, 2);
        assert_eq!(f.longest_pending, Some(500));
        assert_eq!(f.next_over_in, Some(1));
        assert_eq!(s_without_threshold().next_over_in, None);

        let mut one = WaitSet::default();
        one.completed(7);
        let f = one.figures(None);
        assert_eq!(
            (f.mean, f.median, f.p90, f.completed_over),
            (Some(7), Some(7), Some(7), 0)
        );

        let mut eleven = WaitSet::default();
        (1..=11).for_each(|w| eleven.completed(w));
        // ceil(9.9) = 10th smallest.
        assert_eq!(eleven.figures(None).p90, Some(10));
        assert_eq!(WaitSet::default().figures(Some(1)), WaitFigures::default());
    }
}

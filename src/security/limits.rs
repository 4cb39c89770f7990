//! The per-call limits' pure parts: a token bucket per caller, and the reader of gRPC
//! message frame headers that refuses an oversized message from its 5-byte prefix,
//! before its body is buffered.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::Quota;

/// How often the limiter forgets callers idle long enough to have a full bucket again
/// (they would start full anyway), so many short-lived callers do not grow memory.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A token bucket per caller: `rate` calls a second on average, bursts up to `burst`
/// (governor's keyed GCRA limiter).
#[derive(Debug)]
pub struct RateLimiter {
    limiter: governor::RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>,
    /// When idle callers were last forgotten.
    swept: Mutex<Instant>,
}

impl RateLimiter {
    /// A limiter of `rate` calls per second and bursts of `burst` (at least 1) per key.
    pub fn new(rate: NonZeroU32, burst: u32) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        RateLimiter {
            limiter: governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// Takes one call from `key`'s bucket; when it is empty, how long until it holds
    /// one again.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.sweep_if_due();
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Forgets the callers whose bucket is full again, at most once per [`SWEEP_EVERY`];
    /// a call that finds another one sweeping goes on.
    fn sweep_if_due(&self) {
        let Ok(mut swept) = self.swept.try_lock() else {
            return;
        };
        if swept.elapsed() >= SWEEP_EVERY {
            *swept = Instant::now();
            drop(swept);
            self.sweep();
        }
    }

    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// A message over the limit, found by [`FrameSizeCheck::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized {
    /// The length its header declares.
    pub len: u64,
    /// Where its header starts in the chunk fed (0 when it began in an earlier chunk):
    /// the messages before it are whole and may be passed on.
    pub header_at: usize,
}

/// Reads the frame headers of a gRPC request body (1 flag byte, 4 length bytes, then
/// the message) as its chunks arrive, however they are split.
#[derive(Debug, Clone)]
pub struct FrameSizeCheck {
    limit: usize,
    header: [u8; 5],
    have: usize,
    body_left: u64,
}

impl FrameSizeCheck {
    /// A check refusing messages over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FrameSizeCheck {
            limit,
            header: [0; 5],
            have: 0,
            body_left: 0,
        }
    }

    /// The largest message allowed, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes the next chunk of the body; `Err` when a message declares more bytes than
    /// the limit.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Oversized> {
        let mut at = 0;
        while at < chunk.len() {
            if self.body_left > 0 {
                let take = self.body_left.min((chunk.len() - at) as u64);
                self.body_left -= take;
                at += take as usize;
                continue;
            }
            // Where this header starts in the chunk (0 if it began in an earlier one).
            let header_at = at.saturating_sub(self.have);
            let take = (5 - self.have).min(chunk.len() - at);
            self.header[self.have..self.have + take].copy_from_slice(&chunk[at..at + take]);
            self.have += take;
            at += take;
            if self.have == 5 {
                self.have = 0;
                let len = u64::from(u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]));
                if len > self.limit as u64 {
                    return Err(Oversized { len, header_at });
                }
                self.body_left = len;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut out = vec![0u8];
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend(std::iter::repeat_n(7u8, len));
        out
    }

    fn rate(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn a_bucket_allows_its_burst_then_the_rate() {
        let limiter = RateLimiter::new(rate(10), 3);
        for _ in 0..3 {
            limiter.check("billing").unwrap();
        }
        let wait = limiter.check("billing").unwrap_err();
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another caller has its own bucket.
        limiter.check("dashboards").unwrap();
        // After the advised wait one call is back, not two.
        std::thread::sleep(wait);
        limiter.check("billing").unwrap();
        assert!(limiter.check("billing").is_err());
    }

    #[test]
    fn callers_with_a_full_bucket_again_are_forgotten() {
        let limiter = RateLimiter::new(rate(1000), 1);
        for i in 0..100 {
            limiter.check(&i.to_string()).unwrap();
        }
        assert_eq!(limiter.limiter.len(), 100);
        std::thread::sleep(Duration::from_millis(20));
        limiter.check("late").unwrap();
        limiter.sweep();
        assert_eq!(limiter.limiter.len(), 1);
    }

    #[test]
    fn frames_within_the_limit_pass_and_a_larger_one_is_caught_at_its_header() {
        let mut body = frame(10);
        body.extend(frame(0));
        body.extend(frame(100));
        let mut check = FrameSizeCheck::new(100);
        assert_eq!(check.feed(&body), Ok(()));
        let mut big = frame(3);
        big.extend(frame(101));
        big.truncate(13);
        assert_eq!(
            check.feed(&big),
            Err(Oversized {
                len: 101,
                header_at: 8
            })
        );
        let mut huge = FrameSizeCheck::new(4 << 20);
        assert_eq!(
            huge.feed(&[0, 0xff, 0xff, 0xff, 0xff]),
            Err(Oversized {
                len: u64::from(u32::MAX),
                header_at: 0
            })
        );
    }

    proptest! {
        #[test]
        fn any_split_of_the_body_gives_the_same_answer(
            lens in proptest::collection::vec(0usize..300, 1..6),
            cuts in proptest::collection::vec(0usize..2000, 0..10),
        ) {
            let body: Vec<u8> = lens.iter().flat_map(|&l| frame(l)).collect();
            let expect = lens.iter().find(|&&l| l > 200).map(|&l| l as u64);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.push(body.len());
            cuts.sort_unstable();
            let mut check = FrameSizeCheck::new(200);
            let mut got = None;
            let mut from = 0;
            for cut in cuts {
                if let Err(e) = check.feed(&body[from..cut]) {
                    // A header starting in this chunk starts right after the whole
                    // messages before it.
                    let whole: usize = lens.iter().take_while(|&&l| l <= 200).map(|l| l + 5).sum();
                    prop_assert!(e.header_at == 0 || from + e.header_at == whole);
                    got = Some(e.len);
                    break;
                }
                from = cut;
            }
            prop_assert_eq!(got, expect);
        }
    }
}

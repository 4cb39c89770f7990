//! The per-call limits' pure parts: a token bucket per caller, and the reader of gRPC
//! message frame headers that refuses an oversized message from its 5-byte prefix,
//! before its body is buffered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Callers remembered at most; past it, callers idle long enough to have a full bucket
/// again are forgotten (they would start full anyway).
const MAX_TRACKED_CALLERS: usize = 10_000;

/// A token bucket per caller: `rate` calls a second on average, bursts up to `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter of `rate` calls per second and bursts of `burst` (at least 1) per key.
    pub fn new(rate: f64, burst: u32) -> Self {
        RateLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call from `key`'s bucket at `now`; when it is empty, how long until
    /// it holds one again.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED_CALLERS && !buckets.contains_key(key) {
            let refill = Duration::from_secs_f64(self.burst / self.rate);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < refill);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
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

    #[test]
    fn a_bucket_allows_its_burst_then_the_rate() {
        let limiter = RateLimiter::new(10.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check("billing", t0).unwrap();
        }
        let wait = limiter.check("billing", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Another caller has its own bucket.
        limiter.check("dashboards", t0).unwrap();
        // 100 ms later one call is back, not two.
        let t1 = t0 + Duration::from_millis(100);
        limiter.check("billing", t1).unwrap();
        assert!(limiter.check("billing", t1).is_err());
        // Idle for long, the bucket is full again but never fuller than the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            limiter.check("billing", t2).unwrap();
        }
        assert!(limiter.check("billing", t2).is_err());
    }

    #[test]
    fn many_callers_are_forgotten_once_refilled() {
        let limiter = RateLimiter::new(1000.0, 1);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_CALLERS {
            limiter.check(&i.to_string(), t0).unwrap();
        }
        limiter.check("late", t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
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

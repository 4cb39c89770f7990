//! The demo generator's random numbers: SplitMix64, written here so that a seed gives
//! the same data with every build and every version of every crate.

/// The SplitMix64 increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A SplitMix64 generator (Steele, Lea and Flood; the seeding generator of xoshiro).
/// Small, fast and good enough for test data; not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// An independent generator for one purpose (`stream`) and one item (`index`) of
    /// the dataset of `seed`: each item draws from its own numbers, so what one item
    /// draws never shifts another's.
    pub fn derive(seed: u64, stream: u64, index: u64) -> Self {
        let a = mix(seed ^ mix(stream.wrapping_add(GAMMA)));
        Rng::new(mix(a ^ mix(index.wrapping_mul(GAMMA).wrapping_add(stream))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A number in `0..n` (0 when `n` is 0), by Lemire's multiply-shift (its bias,
    /// below 2^-32 for the sizes used here, does not matter for demo data).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// A float in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One item of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn with the given (non-negative, not all zero) weights.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut u = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if u < *w {
                return i;
            }
            u -= w;
        }
        weights.len() - 1
    }

    /// A Poisson-distributed count with mean `mean` (Knuth's method; means here are
    /// small).
    pub fn poisson(&mut self, mean: f64) -> u32 {
        let limit = (-mean).exp();
        let mut product = self.unit();
        let mut count = 0;
        while product > limit && count < 1000 {
            count += 1;
            product *= self.unit();
        }
        count
    }

    /// A log-uniform number in `[lo, hi)`: as many between 10 and 100 as between 100
    /// and 1000 (call lengths, resolution times).
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Draws indices in proportion to fixed weights in O(log n): a binary search over the
/// running totals.
#[derive(Debug, Clone)]
pub struct Cumulative {
    totals: Vec<f64>,
}

impl Cumulative {
    /// The sampler of `weights` (non-negative, at least one positive).
    pub fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut sum = 0.0;
        let totals = weights
            .into_iter()
            .map(|w| {
                sum += w;
                sum
            })
            .collect();
        Cumulative { totals }
    }

    /// An index with probability proportional to its weight.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let total = self.totals.last().copied().unwrap_or(0.0);
        let u = rng.unit() * total;
        self.totals
            .partition_point(|&t| t <= u)
            .min(self.totals.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // The reference implementation's first outputs for seed 1234567.
        let mut rng = Rng::new(1_234_567);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            vec![
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
    }

    #[test]
    fn derived_streams_are_fixed_and_independent() {
        let a = Rng::derive(42, 1, 0).next_u64();
        assert_eq!(a, Rng::derive(42, 1, 0).next_u64());
        assert_ne!(a, Rng::derive(42, 1, 1).next_u64());
        assert_ne!(a, Rng::derive(42, 2, 0).next_u64());
        assert_ne!(a, Rng::derive(43, 1, 0).next_u64());
    }

    #[test]
    fn draws_stay_in_range() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            assert!(rng.below(10) < 10);
            assert!((5..=9).contains(&rng.between(5, 9)));
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
            let l = rng.log_uniform(30.0, 1800.0);
            assert!((30.0..1800.0 + 1e-6).contains(&l), "{l}");
        }
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn weighted_and_cumulative_follow_the_weights() {
        let mut rng = Rng::new(3);
        let weights = [1.0, 0.0, 3.0];
        let sampler = Cumulative::new(weights);
        let mut a = [0u32; 3];
        let mut b = [0u32; 3];
        for _ in 0..40_000 {
            a[rng.weighted(&weights)] += 1;
            b[sampler.sample(&mut rng)] += 1;
        }
        for counts in [a, b] {
            assert_eq!(counts[1], 0, "zero weight is never drawn: {counts:?}");
            let ratio = f64::from(counts[2]) / f64::from(counts[0]);
            assert!((2.7..3.3).contains(&ratio), "{counts:?}");
        }
    }

    #[test]
    fn poisson_has_the_asked_mean() {
        let mut rng = Rng::new(11);
        let n = 20_000;
        let sum: u32 = (0..n).map(|_| rng.poisson(2.5)).sum();
        let mean = f64::from(sum) / f64::from(n);
        assert!((2.4..2.6).contains(&mean), "{mean}");
    }
}

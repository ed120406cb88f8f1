//! Nearest-rank percentiles of a sample.

/// Count and nearest-rank percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stats {
    pub(crate) count: usize,
    pub(crate) p50: i64,
    pub(crate) p99: i64,
    pub(crate) max: i64,
}

impl Stats {
    pub(crate) fn of(mut sample: Vec<i64>) -> Self {
        if sample.is_empty() {
            return Stats::default();
        }
        sample.sort_unstable();
        let rank = |p: f64| {
            let r = (p / 100.0 * sample.len() as f64).ceil() as usize;
            sample[r.clamp(1, sample.len()) - 1]
        };
        Stats {
            count: sample.len(),
            p50: rank(50.0),
            p99: rank(99.0),
            max: sample[sample.len() - 1],
        }
    }

    pub(crate) fn triple(&self) -> String {
        if self.count == 0 {
            "-".into()
        } else {
            format!("{} / {} / {}", self.p50, self.p99, self.max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Stats::of((1..=100).collect());
        assert_eq!((s.count, s.p50, s.p99, s.max), (100, 50, 99, 100));
        assert_eq!(Stats::of(vec![7]).p99, 7);
        assert_eq!(Stats::of(Vec::new()).count, 0);
    }
}

//! Deployment selection. Pure: the random sample comes from the caller.

use crate::config::ModelGroup;

/// Weighted pick: `sample` in [0, 1) against the group's running weight sums, O(log n).
/// Returns the index into `config.deployments`.
pub fn weighted_pick(group: &ModelGroup, sample: f64) -> Option<usize> {
    let total = *group.cumulative_weights.last()?;
    let target = sample.clamp(0.0, 1.0) * total;
    let slot = group.cumulative_weights.partition_point(|&w| w <= target);
    let slot = slot.min(group.deployments.len().saturating_sub(1));
    group.deployments.get(slot).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::SplitMix64;

    fn group(weights: &[f64]) -> ModelGroup {
        let mut total = 0.0;
        ModelGroup {
            name: "g".into(),
            header_name: "g".into(),
            metric_label: "g".into(),
            deployments: (10..10 + weights.len()).collect(),
            weights: weights.to_vec(),
            orders: vec![0],
            wildcard_prefix: None,
            cumulative_weights: weights
                .iter()
                .map(|w| {
                    total += w;
                    total
                })
                .collect(),
        }
    }

    #[test]
    fn edges() {
        let g = group(&[1.0, 3.0]);
        assert_eq!(weighted_pick(&g, 0.0), Some(10));
        assert_eq!(weighted_pick(&g, 0.2499), Some(10));
        assert_eq!(weighted_pick(&g, 0.25), Some(11));
        assert_eq!(weighted_pick(&g, 0.999_999), Some(11));
        assert_eq!(weighted_pick(&g, 1.0), Some(11));
        assert_eq!(weighted_pick(&group(&[]), 0.5), None);
        // A zero-weight member is never picked.
        let g = group(&[0.0, 1.0]);
        assert_eq!(weighted_pick(&g, 0.0), Some(11));
    }

    /// 1:3 weights over 20,000 seeded draws: the share of the first must lie within
    /// 4 standard deviations of the binomial mean (p = 0.25).
    #[test]
    fn distribution_within_binomial_tolerance() {
        let g = group(&[1.0, 3.0]);
        let mut rng = SplitMix64::new(42);
        let n = 20_000u32;
        let mut first = 0u32;
        for _ in 0..n {
            let sample = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if weighted_pick(&g, sample) == Some(10) {
                first += 1;
            }
        }
        let p = 0.25;
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (first as f64 - mean).abs() < 4.0 * sd,
            "{first} vs {mean}±{sd}"
        );
    }
}

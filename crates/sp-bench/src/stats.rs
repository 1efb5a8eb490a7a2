//! Summaries of repeated measurements: median, min, max, count.

use serde::{Deserialize, Serialize};

/// Median, minimum and maximum of `n` repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The median (the mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

/// Summarises the finite values of `values`; `None` if there are none.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: sorted[0],
        max: sorted[n - 1],
        n,
    })
}

/// The median of the finite values, if any.
pub fn median(values: &[f64]) -> Option<f64> {
    summarize(values).map(|s| s.median)
}

/// The median of the element-wise ratios `a[i] / b[i]` (pairs measured back to back), if any pair
/// has a finite, non-zero denominator.
pub fn median_ratio(a: &[f64], b: &[f64]) -> Option<f64> {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, den)| **den != 0.0)
        .map(|(num, den)| num / den)
        .collect();
    median(&ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_medians() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn non_finite_values_are_ignored() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN]), None);
        assert_eq!(median(&[f64::INFINITY, 5.0]), Some(5.0));
    }

    #[test]
    fn ratios_are_paired_then_medianed() {
        // The pair (10, 0) is skipped; ratios are 2, 3, 0.5.
        let r = median_ratio(&[2.0, 9.0, 1.0, 10.0], &[1.0, 3.0, 2.0, 0.0]).unwrap();
        assert_eq!(r, 2.0);
    }
}

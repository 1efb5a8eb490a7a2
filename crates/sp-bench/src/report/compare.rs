//! The comparison with a saved baseline: every figure that moved by more than a threshold, by its
//! ratio to the socketpair when both runs have one (which cancels the machine's drift between the
//! runs), else by its median.

use comfy_table::{Cell as TableCell, Table};

use super::schema::{Metric, Results};
use super::table::{fmt_num, markdown_table, right};
use crate::size::fmt_size;
use crate::transport::BASELINE;

/// A figure that moved by more than the threshold against a saved baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Transport name.
    pub transport: String,
    /// Bytes per message.
    pub size_bytes: u64,
    /// The metric.
    pub metric: Metric,
    /// The compared value before (the ratio to the socketpair baseline when both runs have it).
    pub before: f64,
    /// The compared value now.
    pub after: f64,
    /// Relative change of the compared value, positive = better.
    pub gain: f64,
    /// Whether the compared value is a ratio to the baseline transport (else a raw median).
    pub ratio: bool,
}

/// Compares `after` with the saved `before`: every figure present in both whose compared value
/// moved by more than `threshold` (0.10 = 10%), best first. The compared value is the ratio to the
/// socketpair baseline when both runs have one (it cancels the machine's drift between the two
/// runs), else the raw median.
pub fn compare(before: &Results, after: &Results, threshold: f64) -> Vec<Change> {
    let mut changes = Vec::new();
    for new in &after.records {
        let metric = new.metric;
        let Some(old) = before.find(&new.transport, new.size_bytes, metric) else {
            continue;
        };
        let use_ratio = new.transport != BASELINE.name();
        let (b, a, ratio) = match (old.vs_baseline, new.vs_baseline) {
            (Some(b), Some(a)) if use_ratio => (b, a, true),
            _ => (old.median, new.median, false),
        };
        if b <= 0.0 || !b.is_finite() || !a.is_finite() {
            continue;
        }
        let change = (a - b) / b;
        let gain = if metric.higher_is_better() {
            change
        } else {
            -change
        };
        if gain.abs() > threshold {
            changes.push(Change {
                transport: new.transport.clone(),
                size_bytes: new.size_bytes,
                metric,
                before: b,
                after: a,
                gain,
                ratio,
            });
        }
    }
    changes.sort_by(|x, y| x.gain.total_cmp(&y.gain));
    changes
}

/// The table of changes against a baseline, worst first.
pub fn change_table(changes: &[Change]) -> Table {
    let mut table = markdown_table();
    table.set_header(vec![
        "transport",
        "size",
        "metric",
        "compared",
        "before",
        "now",
        "change",
        "",
    ]);
    for c in changes {
        table.add_row(vec![
            TableCell::new(&c.transport),
            right(fmt_size(c.size_bytes)),
            TableCell::new(c.metric.name()),
            TableCell::new(if c.ratio { "×base" } else { "median" }),
            right(fmt_num(c.before)),
            right(fmt_num(c.after)),
            right(format!("{:+.0}%", c.gain * 100.0)),
            TableCell::new(if c.gain < 0.0 { "REGRESSION" } else { "better" }),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{rec, results};

    #[test]
    fn comparison_flags_regressions_in_the_right_direction() {
        let before = results(vec![
            rec("pipe", Metric::Throughput, 1e9, Some(2.0)),
            rec("pipe", Metric::RttP50, 1000.0, Some(1.0)),
            rec("sp-core", Metric::Throughput, 1e9, Some(1.0)),
        ]);
        let after = results(vec![
            // Throughput ratio fell 25%: a regression even though the raw median rose.
            rec("pipe", Metric::Throughput, 2e9, Some(1.5)),
            // Latency ratio fell 20%: better.
            rec("pipe", Metric::RttP50, 1000.0, Some(0.8)),
            // Within 10%: not reported.
            rec("sp-core", Metric::Throughput, 1e9, Some(1.05)),
        ]);
        let changes = compare(&before, &after, 0.10);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].metric, Metric::Throughput);
        assert!(changes[0].ratio);
        assert!((changes[0].gain + 0.25).abs() < 1e-9);
        assert_eq!(changes[1].metric, Metric::RttP50);
        assert!(changes[1].gain > 0.0);
    }

    #[test]
    fn raw_medians_are_compared_without_ratios() {
        let before = results(vec![rec(
            BASELINE.name(),
            Metric::RttP99,
            1000.0,
            Some(1.0),
        )]);
        let after = results(vec![rec(
            BASELINE.name(),
            Metric::RttP99,
            1500.0,
            Some(1.0),
        )]);
        let changes = compare(&before, &after, 0.10);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].ratio);
        assert!((changes[0].gain + 0.5).abs() < 1e-9);
    }
}

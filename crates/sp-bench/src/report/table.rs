//! The printed report: the header (machine, profile, probe), the summary table with one row per
//! transport × size, and the notes on collapsed cells.

use std::fmt::Write as _;

use comfy_table::{Cell as TableCell, CellAlignment, ContentArrangement, Table, presets};

use super::schema::{Limit, Metric, Record, Results};
use crate::size::fmt_size;
use crate::transport::{BASELINE, Transport};

impl Results {
    /// The header printed above the table: machine, profile and probe.
    pub fn header(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sp-bench {} run, {}: {} CPUs ({}), kernel {}, {}",
            self.profile.name,
            self.date,
            m.nproc,
            m.cpu_model,
            m.kernel,
            if m.pinned {
                "driver on CPU 0, peer on CPU 1"
            } else {
                "not pinned"
            }
        );
        let _ = writeln!(
            out,
            "{} interleaved pairs per cell, {} ms warm-up + {} ms per measurement; ratios are \
             against {} measured just before each run (×base; the scenario rows against their \
             partner: sp-pool-N against crossbeam-pool-N, sp-pipeline against \
             sp-pipeline-relayed, sp-start against spawn-pipe, its ratio in brackets in the \
             `start p50` column) and against the machine limit \
             (×limit, named in the `limit` column: for throughput ref-ring of the same size for \
             the sp-shm ring rows, measured in the same repetitions, memcpy for the others; for round trips the cache-line probe \
             taken around the transport's measurements plus the message copied each way at \
             memcpy speed).",
            self.profile.reps,
            self.profile.warmup_ms,
            self.profile.duration_ms,
            self.baseline_transport
        );
        let _ = write!(
            out,
            "Probe (cache-line round trip CPU 0 <-> 1): median {} ns, min {} ns, max {} ns over {} samples.",
            fmt_num(self.probe.median),
            fmt_num(self.probe.min),
            fmt_num(self.probe.max),
            self.probe.samples.len()
        );
        if let Some(timer) = self.probe.timer_ns {
            let _ = write!(
                out,
                "\nTimer: an empty interval reads {} ns (median); every rtt sample includes it, the probe does not.",
                fmt_num(timer)
            );
        }
        out
    }

    /// `text`, followed by the number of repetitions when some of them failed, and marked `!`
    /// when the record collapsed.
    fn with_n(&self, r: &Record, text: String) -> String {
        let text = if r.collapsed {
            format!("!{text}")
        } else {
            text
        };
        if r.n < self.profile.reps && r.transport != BASELINE.name() {
            format!("{text} (n={})", r.n)
        } else {
            text
        }
    }

    /// One line per collapsed record (marked `!` in the table): the cell, the median, the best
    /// repetition and every repetition, in the order measured.
    pub fn collapse_notes(&self) -> Vec<String> {
        self.records
            .iter()
            .filter(|r| r.collapsed)
            .map(|r| {
                let metric = r.metric;
                let best = if metric.higher_is_better() {
                    r.max
                } else {
                    r.min
                };
                let reps: Vec<String> = r.reps.iter().map(|v| fmt_value(metric, *v)).collect();
                format!(
                    "{} {} {}: median {}, best {}; repetitions {}",
                    r.transport,
                    fmt_size(r.size_bytes),
                    metric.name(),
                    fmt_value(metric, r.median),
                    fmt_value(metric, best),
                    reps.join(", ")
                )
            })
            .collect()
    }

    /// One line per record compared with its rival in the same repetitions (message rate and
    /// round-trip p50): the median ratio and each pair's.
    pub fn rival_notes(&self) -> Vec<String> {
        self.records
            .iter()
            .filter(|r| matches!(r.metric, Metric::MessageRate | Metric::RttP50))
            .filter_map(|r| {
                let (rival, ratio) = (r.rival.as_ref()?, r.vs_rival?);
                let pairs: Vec<String> = r.rival_ratios.iter().map(|v| format!("{v:.2}")).collect();
                Some(format!(
                    "{} {} {}: {ratio:.2}× {rival} (pairs {})",
                    r.transport,
                    fmt_size(r.size_bytes),
                    r.metric.name(),
                    pairs.join(", ")
                ))
            })
            .collect()
    }

    /// The summary table: one row per transport × size. A figure from fewer repetitions than
    /// planned (some failed; see the notes) carries its count, `(n=2)`.
    pub fn table(&self) -> Table {
        let mut table = markdown_table();
        table.set_header(vec![
            "transport",
            "size",
            "throughput",
            "spread",
            "×base",
            "×limit",
            "limit",
            "msg/s",
            "rtt p50",
            "rtt p99",
            "rtt p99.9",
            "p50 ×base",
            "p50 ×limit",
            "cpu tx s/GB",
            "cpu rx s/GB",
            "wake B/1k",
            "start p50",
        ]);
        let mut rows: Vec<(usize, u64, &str)> = self
            .records
            .iter()
            .map(|r| {
                let order = Transport::from_name(&r.transport)
                    .and_then(|t| Transport::ALL.iter().position(|x| *x == t))
                    .unwrap_or(usize::MAX);
                (order, r.size_bytes, r.transport.as_str())
            })
            .collect();
        rows.sort();
        rows.dedup();
        let mut by_size: Vec<(u64, usize, &str)> =
            rows.into_iter().map(|(o, s, t)| (s, o, t)).collect();
        by_size.sort();
        for (size, _, transport) in by_size {
            let get = |m: Metric| self.find(transport, size, m);
            let tp = get(Metric::Throughput);
            let p50 = get(Metric::RttP50);
            table.add_row(vec![
                TableCell::new(transport),
                right(fmt_size(size)),
                right(tp.map_or(String::new(), |r| self.with_n(r, fmt_rate(r.median)))),
                right(tp.map_or(String::new(), fmt_spread)),
                right(fmt_ratio(tp.and_then(|r| r.vs_baseline))),
                right(fmt_ratio(tp.and_then(|r| r.vs_limit))),
                TableCell::new(tp.and_then(|r| r.limit).map_or("", Limit::name)),
                right(
                    get(Metric::MessageRate)
                        .map_or(String::new(), |r| self.with_n(r, fmt_count(r.median))),
                ),
                right(p50.map_or(String::new(), |r| self.with_n(r, fmt_ns(r.median)))),
                right(get(Metric::RttP99).map_or(String::new(), |r| fmt_ns(r.median))),
                right(get(Metric::RttP999).map_or(String::new(), |r| fmt_ns(r.median))),
                right(fmt_ratio(p50.and_then(|r| r.vs_baseline))),
                right(fmt_ratio(p50.and_then(|r| r.vs_limit))),
                right(get(Metric::CpuTx).map_or(String::new(), |r| fmt_num(r.median))),
                right(get(Metric::CpuRx).map_or(String::new(), |r| fmt_num(r.median))),
                right(get(Metric::WakeBytes).map_or(String::new(), |r| fmt_num(r.median))),
                right(get(Metric::StartupP50).map_or(String::new(), |r| {
                    format!("{} ({})", fmt_ns(r.median), fmt_ratio(r.vs_baseline))
                })),
            ]);
        }
        table
    }
}

/// An empty table printed as Markdown, columns as wide as their contents.
pub(super) fn markdown_table() -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled);
    table
}

pub(super) fn right(text: String) -> TableCell {
    TableCell::new(text).set_alignment(CellAlignment::Right)
}

fn fmt_rate(bytes_per_s: f64) -> String {
    if bytes_per_s >= 1e9 {
        format!("{:.2} GB/s", bytes_per_s / 1e9)
    } else {
        format!("{:.1} MB/s", bytes_per_s / 1e6)
    }
}

fn fmt_count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// A value of `metric` as the table prints it.
fn fmt_value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Throughput => fmt_rate(v),
        Metric::MessageRate => format!("{} msg/s", fmt_count(v)),
        Metric::RttP50 | Metric::RttP99 | Metric::RttP999 | Metric::StartupP50 => fmt_ns(v),
        Metric::CpuTx | Metric::CpuRx | Metric::WakeBytes | Metric::Parks => fmt_num(v),
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 10.0 => format!("{r:.0}"),
        Some(r) => format!("{r:.2}"),
        None => String::new(),
    }
}

/// (max − min) ÷ median, as a percentage.
fn fmt_spread(r: &Record) -> String {
    if r.median > 0.0 && r.n > 1 {
        format!("±{:.0}%", (r.max - r.min) / r.median * 50.0)
    } else {
        String::new()
    }
}

pub(super) fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

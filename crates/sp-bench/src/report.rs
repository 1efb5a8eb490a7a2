//! The results file (`results.json`), the table printed at the end, and the comparison with a saved
//! baseline.
//!
//! A results file holds one [`Record`] per transport × size × metric, with the median, minimum and
//! maximum over the repetitions, plus two ratios: `vs_baseline`, the median over interleaved pairs
//! of (transport ÷ socketpair-stream measured just before it), and `vs_limit`, the median against
//! the machine's limit (memcpy of the same size for throughput, the cache-line ping-pong for round
//! trips). The top level records the machine and the probe.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use comfy_table::{Cell as TableCell, CellAlignment, ContentArrangement, Table, presets};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::plan::{Cell, Config};
use crate::run::{Mode, Sample};
use crate::stats::{self, Summary};
use crate::transport::{BASELINE, Transport};

/// Version of the results-file layout.
pub const SCHEMA: u32 = 1;

/// A whole benchmark run, as written to `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA`].
    pub schema: u32,
    /// When the run started (RFC 3339, UTC).
    pub date: String,
    /// The machine it ran on.
    pub machine: Machine,
    /// The cache-line ping-pong probe, taken before every cell: round trip in nanoseconds.
    pub probe: Probe,
    /// `quick` or `full`, with the round lengths.
    pub profile: Profile,
    /// The transport the ratios are taken against.
    pub baseline_transport: String,
    /// One record per transport × size × metric.
    pub records: Vec<Record>,
    /// Measurements that failed or were skipped, with the reason.
    pub notes: Vec<String>,
}

/// Facts about the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs this process could use.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// Whether driver and peer were pinned to cores 0 and 1.
    pub pinned: bool,
}

/// The probe's samples and their summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Always `ns`: one cache-line round trip between the two cores.
    pub unit: String,
    /// Median over the samples.
    pub median: f64,
    /// Fastest sample.
    pub min: f64,
    /// Slowest sample.
    pub max: f64,
    /// Every sample, in the order taken.
    pub samples: Vec<f64>,
    /// What the harness's clock adds to every round-trip sample: the median of an empty
    /// interval timed the way a sample is (`Instant::now()` ... `elapsed()`), in nanoseconds.
    /// The probe itself is timed over batches and does not include it. Absent in older files.
    #[serde(default)]
    pub timer_ns: Option<f64>,
}

/// How long each measurement ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// `quick` or `full`.
    pub name: String,
    /// Interleaved pairs per cell.
    pub reps: usize,
    /// Warm-up round, milliseconds.
    pub warmup_ms: u64,
    /// Measured round, milliseconds.
    pub duration_ms: u64,
}

/// One figure: a transport, a size, a metric, summarised over the repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Transport name.
    pub transport: String,
    /// Bytes per message.
    pub size_bytes: u64,
    /// See [`Metric`].
    pub metric: String,
    /// Unit of `median`, `min`, `max`.
    pub unit: String,
    /// Median over the repetitions.
    pub median: f64,
    /// Smallest repetition.
    pub min: f64,
    /// Largest repetition.
    pub max: f64,
    /// Repetitions.
    pub n: usize,
    /// Every repetition's value, in the order measured. Absent in files written before it
    /// existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reps: Vec<f64>,
    /// Whether the cell collapsed: its median is below half its best repetition (throughput,
    /// message rate), or above twice its best (round-trip p50). See [`Metric::collapse_checked`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub collapsed: bool,
    /// Median of transport ÷ baseline over the interleaved pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_baseline: Option<f64>,
    /// `median` ÷ the machine's limit for this metric and size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_limit: Option<f64>,
    /// What `vs_limit` divides by. Absent in files written before it existed (there it was
    /// memcpy for throughput and the probe for round trips).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
}

/// What a record's `vs_limit` is taken against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    /// memcpy of the same size in the same run (throughput of every row but the rings').
    Memcpy,
    /// `ref-ring` of the same size in the same run (throughput and message rate of the sp-shm
    /// ring rows): a plain ring between the same two processes.
    RefRing,
    /// The cache-line probe taken before the cell, plus the message copied each way at memcpy
    /// speed when memcpy was measured (round trips).
    Probe,
    /// The pingpong ceiling's p50, for round trips of a cell that has no probe of its own.
    Pingpong,
}

impl Limit {
    /// The name in the table and the results file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memcpy => "memcpy",
            Self::RefRing => "ref-ring",
            Self::Probe => "probe",
            Self::Pingpong => "pingpong",
        }
    }
}

/// The metrics a record can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Bytes per second, one direction.
    Throughput,
    /// Messages per second, one direction.
    MessageRate,
    /// Round trip, median.
    RttP50,
    /// Round trip, 99th percentile.
    RttP99,
    /// Round trip, 99.9th percentile.
    RttP999,
    /// Sender CPU seconds per GB.
    CpuTx,
    /// Receiver CPU seconds per GB.
    CpuRx,
    /// Bytes written to wake the peer, per 1,000 messages.
    WakeBytes,
    /// Times either side parked, per 1,000 messages.
    Parks,
}

/// A figure that moved by more than the threshold against a saved baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Transport name.
    pub transport: String,
    /// Bytes per message.
    pub size_bytes: u64,
    /// Metric name.
    pub metric: String,
    /// The compared value before (the ratio to the socketpair baseline when both runs have it).
    pub before: f64,
    /// The compared value now.
    pub after: f64,
    /// Relative change of the compared value, positive = better.
    pub gain: f64,
    /// Whether the compared value is a ratio to the baseline transport (else a raw median).
    pub ratio: bool,
}

impl Metric {
    /// Every metric, in table order.
    pub const ALL: [Self; 9] = [
        Self::Throughput,
        Self::MessageRate,
        Self::RttP50,
        Self::RttP99,
        Self::RttP999,
        Self::CpuTx,
        Self::CpuRx,
        Self::WakeBytes,
        Self::Parks,
    ];

    /// The name in the results file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::MessageRate => "message_rate",
            Self::RttP50 => "rtt_p50",
            Self::RttP99 => "rtt_p99",
            Self::RttP999 => "rtt_p999",
            Self::CpuTx => "cpu_tx",
            Self::CpuRx => "cpu_rx",
            Self::WakeBytes => "wake_bytes",
            Self::Parks => "parks",
        }
    }

    /// The unit in the results file.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Throughput => "B/s",
            Self::MessageRate => "msg/s",
            Self::RttP50 | Self::RttP99 | Self::RttP999 => "ns",
            Self::CpuTx | Self::CpuRx => "s/GB",
            Self::WakeBytes => "B/1k msgs",
            Self::Parks => "/1k msgs",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Self::Throughput | Self::MessageRate)
    }

    /// Whether a record of this metric is checked for a collapse: throughput and message rate
    /// (median below half the best repetition) and the round-trip median (median above twice the
    /// best). Tail percentiles, CPU and wake-ups vary too much from one short round to the next.
    pub fn collapse_checked(self) -> bool {
        matches!(self, Self::Throughput | Self::MessageRate | Self::RttP50)
    }

    /// Whether a median of `median` over repetitions whose best is `best` is a collapse.
    fn collapsed(self, median: f64, best: f64) -> bool {
        if !self.collapse_checked() {
            false
        } else if self.higher_is_better() {
            median < best / 2.0
        } else {
            median > best * 2.0
        }
    }

    /// The metric with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn mode(self) -> Mode {
        match self {
            Self::RttP50 | Self::RttP99 | Self::RttP999 => Mode::Latency,
            _ => Mode::Throughput,
        }
    }

    /// The value of this metric in one sample, if the sample has it.
    fn of(self, sample: &Sample) -> Option<f64> {
        let latency = sample.latency;
        let v = match self {
            Self::Throughput => sample.bytes_per_s(),
            Self::MessageRate => sample.msgs_per_s(),
            Self::RttP50 => latency?.p50,
            Self::RttP99 => latency?.p99,
            Self::RttP999 => latency?.p999,
            Self::CpuTx => {
                if sample.spec.transport.is_ceiling() {
                    return None;
                }
                sample.cpu_tx_s_per_gb()
            }
            Self::CpuRx => {
                if sample.spec.transport.is_ceiling() {
                    return None;
                }
                sample.cpu_rx_s_per_gb()
            }
            Self::WakeBytes => sample.wake_bytes_per_1k()?,
            Self::Parks => sample.parks_per_1k()?,
        };
        Some(v)
    }
}

impl Machine {
    /// Reads the machine's facts: CPU count, model (/proc/cpuinfo) and kernel release (uname).
    pub fn detect() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        Self {
            nproc: crate::cpu::available_cpus(),
            cpu_model,
            kernel,
            pinned: crate::cpu::can_pin(),
        }
    }
}

impl Probe {
    /// Summarises the probe's samples (nanoseconds).
    pub fn new(samples: Vec<f64>) -> Self {
        let summary = stats::summarize(&samples);
        Self {
            unit: "ns".into(),
            median: summary.map_or(f64::NAN, |s| s.median),
            min: summary.map_or(f64::NAN, |s| s.min),
            max: summary.map_or(f64::NAN, |s| s.max),
            samples,
            timer_ns: None,
        }
    }

    /// Records the clock's own cost (see [`timer_ns`](Self::timer_ns)).
    #[must_use]
    pub fn with_timer(mut self, timer_ns: f64) -> Self {
        self.timer_ns = Some(timer_ns);
        self
    }
}

impl Results {
    /// Builds the records from the measured cells.
    pub fn build(
        config: &Config,
        date: String,
        machine: Machine,
        probe: Probe,
        cells: &[Cell],
    ) -> Self {
        let mut records = Vec::new();
        let mut notes = Vec::new();
        // The baseline's own samples, pooled over every cell of the same size and mode.
        let mut baseline: BTreeMap<(usize, bool), Vec<&Sample>> = BTreeMap::new();
        // The probes taken before the latency cells of each transport and size.
        let mut probes: BTreeMap<(&str, u64), Vec<f64>> = BTreeMap::new();
        for cell in cells {
            for err in &cell.errors {
                notes.push(format!(
                    "{} {} B {:?}: {err}",
                    cell.transport.name(),
                    cell.size,
                    cell.mode
                ));
            }
            let key = (cell.size, cell.mode == Mode::Latency);
            baseline
                .entry(key)
                .or_default()
                .extend(cell.pairs.iter().map(|(b, _)| b));
            if let (Some(probe), Mode::Latency) = (cell.probe_ns, cell.mode) {
                probes
                    .entry((BASELINE.name(), cell.size as u64))
                    .or_default()
                    .push(probe);
                if cell.transport != BASELINE {
                    probes
                        .entry((cell.transport.name(), cell.size as u64))
                        .or_default()
                        .push(probe);
                }
            }
        }
        for cell in cells {
            if cell.transport == BASELINE {
                continue;
            }
            for metric in Metric::ALL.into_iter().filter(|m| m.mode() == cell.mode) {
                let values: Vec<f64> = cell
                    .pairs
                    .iter()
                    .filter_map(|(_, t)| metric.of(t))
                    .collect();
                let (num, den): (Vec<f64>, Vec<f64>) = cell
                    .pairs
                    .iter()
                    .filter_map(|(b, t)| Some((metric.of(t)?, metric.of(b)?)))
                    .unzip();
                if let Some(record) = record(cell.transport, cell.size, metric, &values) {
                    records.push(Record {
                        vs_baseline: stats::median_ratio(&num, &den),
                        ..record
                    });
                }
            }
        }
        for ((size, latency), samples) in &baseline {
            for metric in Metric::ALL {
                if (metric.mode() == Mode::Latency) != *latency {
                    continue;
                }
                let values: Vec<f64> = samples.iter().filter_map(|s| metric.of(s)).collect();
                if let Some(record) = record(BASELINE, *size, metric, &values) {
                    records.push(Record {
                        vs_baseline: Some(1.0),
                        ..record
                    });
                }
            }
        }
        records.sort_by_key(sort_key);
        let probes: BTreeMap<(&str, u64), f64> = probes
            .into_iter()
            .filter_map(|(key, p)| Some((key, stats::median(&p)?)))
            .collect();
        set_limit_ratios(&mut records, &probes);
        Self {
            schema: SCHEMA,
            date,
            machine,
            probe,
            profile: Profile {
                name: config.profile.clone(),
                reps: config.reps,
                warmup_ms: config.warmup.as_millis() as u64,
                duration_ms: config.duration.as_millis() as u64,
            },
            baseline_transport: BASELINE.name().into(),
            records,
            notes,
        }
    }

    /// Reads a results file.
    ///
    /// # Errors
    /// If the file cannot be read or is not a results file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read(path)?;
        Ok(serde_json::from_slice(&text)?)
    }

    /// Writes the results file (pretty JSON), creating its directory.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(path, text)?;
        Ok(())
    }

    /// The record for this transport, size and metric.
    pub fn find(&self, transport: &str, size_bytes: u64, metric: Metric) -> Option<&Record> {
        self.records.iter().find(|r| {
            r.transport == transport && r.size_bytes == size_bytes && r.metric == metric.name()
        })
    }

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
             against {} measured just before each run (×base) and against the machine limit \
             (×limit, named in the `limit` column: for throughput ref-ring of the same size for \
             the sp-shm ring rows, memcpy for the others; for round trips the cache-line probe \
             taken before the cell plus the message copied each way at memcpy speed).",
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
            .filter_map(|r| {
                let metric = Metric::from_name(&r.metric)?;
                let best = if metric.higher_is_better() {
                    r.max
                } else {
                    r.min
                };
                let reps: Vec<String> = r.reps.iter().map(|v| fmt_value(metric, *v)).collect();
                Some(format!(
                    "{} {} {}: median {}, best {}; repetitions {}",
                    r.transport,
                    fmt_size(r.size_bytes),
                    r.metric,
                    fmt_value(metric, r.median),
                    fmt_value(metric, best),
                    reps.join(", ")
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
            ]);
        }
        table
    }
}

/// Compares `after` with the saved `before`: every figure present in both whose compared value
/// moved by more than `threshold` (0.10 = 10%), best first. The compared value is the ratio to the
/// socketpair baseline when both runs have one (it cancels the machine's drift between the two
/// runs), else the raw median.
pub fn compare(before: &Results, after: &Results, threshold: f64) -> Vec<Change> {
    let mut changes = Vec::new();
    for new in &after.records {
        let Some(metric) = Metric::from_name(&new.metric) else {
            continue;
        };
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
                metric: new.metric.clone(),
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

/// An empty table printed as Markdown, columns as wide as their contents.
fn markdown_table() -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled);
    table
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
            TableCell::new(&c.metric),
            TableCell::new(if c.ratio { "×base" } else { "median" }),
            right(fmt_num(c.before)),
            right(fmt_num(c.after)),
            right(format!("{:+.0}%", c.gain * 100.0)),
            TableCell::new(if c.gain < 0.0 { "REGRESSION" } else { "better" }),
        ]);
    }
    table
}

/// `64 B`, `64 KiB`, `1 MiB`.
pub fn fmt_size(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// Parses a message size: `64`, `1k`/`1KiB` (KiB), `1m`/`1MiB` (MiB).
///
/// # Errors
/// A message naming the bad input.
pub fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (digits, shift) = match t.strip_suffix('k') {
        Some(d) => (d, 10),
        None => match t.strip_suffix('m') {
            Some(d) => (d, 20),
            None => (t, 0),
        },
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {text:?} (try 64, 1k, 64k, 1m)"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("size too large: {text:?}"))
}

fn record(transport: Transport, size: usize, metric: Metric, values: &[f64]) -> Option<Record> {
    let Summary {
        median,
        min,
        max,
        n,
    } = stats::summarize(values)?;
    let best = if metric.higher_is_better() { max } else { min };
    Some(Record {
        reps: values.to_vec(),
        collapsed: n > 1 && metric.collapsed(median, best),
        transport: transport.name().into(),
        size_bytes: size as u64,
        metric: metric.name().into(),
        unit: metric.unit().into(),
        median,
        min,
        max,
        n,
        vs_baseline: None,
        vs_limit: None,
        limit: None,
    })
}

fn sort_key(r: &Record) -> (u64, usize, usize) {
    let t = Transport::from_name(&r.transport)
        .and_then(|t| Transport::ALL.iter().position(|x| *x == t))
        .unwrap_or(usize::MAX);
    let m = Metric::from_name(&r.metric).map_or(usize::MAX, |m| m as usize);
    (r.size_bytes, t, m)
}

/// Sets `vs_limit` and `limit`. Throughput of the sp-shm ring rows: against `ref-ring` of the same
/// size (message rate too; the two ratios are the same at one size), none if the run has no
/// ref-ring. Other throughput: against memcpy of the same size. Round trips: against the fastest
/// a round trip could be, the probe taken before the cell (one cache line there and back; the
/// machine's cross-core speed drifts too much for one figure to serve a whole run) plus, when
/// memcpy was measured, writing and reading the message once each way at memcpy speed
/// (`2 × size ÷ memcpy`). Without a probe the pingpong ceiling stands in for it.
fn set_limit_ratios(records: &mut [Record], probes: &BTreeMap<(&str, u64), f64>) {
    let medians = |transport: Transport, metric: Metric| -> BTreeMap<u64, f64> {
        records
            .iter()
            .filter(|r| r.transport == transport.name() && r.metric == metric.name())
            .map(|r| (r.size_bytes, r.median))
            .collect()
    };
    let memcpy = medians(Transport::Memcpy, Metric::Throughput);
    let ref_ring =
        [Metric::Throughput, Metric::MessageRate].map(|m| medians(Transport::RefRing, m));
    let pingpong = records
        .iter()
        .find(|r| r.transport == Transport::Pingpong.name() && r.metric == "rtt_p50")
        .map(|r| r.median);
    for r in records.iter_mut() {
        let is_ring = Transport::from_name(&r.transport).is_some_and(Transport::is_ring);
        let limit = match r.metric.as_str() {
            "throughput" if is_ring => ref_ring[0].get(&r.size_bytes).map(|l| (*l, Limit::RefRing)),
            "message_rate" if is_ring => {
                ref_ring[1].get(&r.size_bytes).map(|l| (*l, Limit::RefRing))
            }
            "throughput" => memcpy.get(&r.size_bytes).map(|l| (*l, Limit::Memcpy)),
            "rtt_p50" | "rtt_p99" | "rtt_p999" => {
                let hop = match probes.get(&(r.transport.as_str(), r.size_bytes)) {
                    Some(probe) => Some((*probe, Limit::Probe)),
                    None => pingpong.map(|p| (p, Limit::Pingpong)),
                };
                let copies = if r.transport == Transport::Pingpong.name() {
                    0.0
                } else {
                    memcpy
                        .get(&r.size_bytes)
                        .filter(|bw| **bw > 0.0)
                        .map_or(0.0, |bw| 2.0 * r.size_bytes as f64 / bw * 1e9)
                };
                hop.map(|(hop, kind)| (hop + copies, kind))
            }
            _ => None,
        };
        let limit = limit.filter(|(l, _)| *l > 0.0);
        r.vs_limit = limit.map(|(l, _)| r.median / l);
        r.limit = limit.map(|(_, kind)| kind);
    }
}

fn right(text: String) -> TableCell {
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
        Metric::RttP50 | Metric::RttP99 | Metric::RttP999 => fmt_ns(v),
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

fn fmt_num(v: f64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn results(records: Vec<Record>) -> Results {
        Results {
            schema: SCHEMA,
            date: "2026-01-01T00:00:00Z".into(),
            machine: Machine {
                nproc: 2,
                cpu_model: "test".into(),
                kernel: "6".into(),
                pinned: true,
            },
            probe: Probe::new(vec![100.0, 120.0, 90.0]),
            profile: Profile {
                name: "quick".into(),
                reps: 3,
                warmup_ms: 1,
                duration_ms: 1,
            },
            baseline_transport: BASELINE.name().into(),
            records,
            notes: vec![],
        }
    }

    fn rec(transport: &str, metric: Metric, median: f64, vs_baseline: Option<f64>) -> Record {
        Record {
            transport: transport.into(),
            size_bytes: 64,
            metric: metric.name().into(),
            unit: metric.unit().into(),
            median,
            min: median,
            max: median,
            n: 3,
            vs_baseline,
            vs_limit: None,
            limit: None,
            reps: vec![median; 3],
            collapsed: false,
        }
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("lots").is_err());
        assert_eq!(fmt_size(65536), "64 KiB");
        assert_eq!(fmt_size(100), "100 B");
    }

    #[test]
    fn results_round_trip_through_json_with_the_required_fields() {
        let r = results(vec![rec("pipe", Metric::Throughput, 1e9, Some(1.5))]);
        let text = serde_json::to_string(&r).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let first = &value["records"][0];
        for field in [
            "transport",
            "size_bytes",
            "metric",
            "unit",
            "median",
            "min",
            "max",
            "n",
        ] {
            assert!(!first[field].is_null(), "missing {field}");
        }
        for field in ["nproc", "cpu_model", "kernel"] {
            assert!(!value["machine"][field].is_null(), "missing {field}");
        }
        assert!(value["date"].is_string());
        assert_eq!(serde_json::from_str::<Results>(&text).unwrap(), r);
    }

    #[test]
    fn timer_overhead_is_recorded_shown_and_optional_in_older_files() {
        let mut r = results(vec![]);
        assert!(!r.header().contains("Timer:"));
        r.probe = r.probe.with_timer(21.0);
        assert!(
            r.header().contains("empty interval reads 21.00 ns"),
            "{}",
            r.header()
        );
        let mut value = serde_json::to_value(&r).unwrap();
        assert_eq!(value["probe"]["timer_ns"], 21.0);
        // A results file written before the field existed still loads.
        value["probe"].as_object_mut().unwrap().remove("timer_ns");
        let old: Results = serde_json::from_value(value).unwrap();
        assert_eq!(old.probe.timer_ns, None);
    }

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
        assert_eq!(changes[0].metric, "throughput");
        assert!(changes[0].ratio);
        assert!((changes[0].gain + 0.25).abs() < 1e-9);
        assert_eq!(changes[1].metric, "rtt_p50");
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

    fn sample(transport: Transport, mode: Mode, n_msgs: u64, p50: f64) -> Sample {
        use std::time::Duration;
        Sample {
            spec: crate::RunSpec::new(
                transport,
                64,
                mode,
                Duration::from_millis(1),
                Duration::from_millis(1),
            ),
            n_msgs,
            elapsed_ns: 1_000_000_000,
            cpu_driver_ns: 1_000,
            cpu_peer_ns: 2_000,
            latency: (mode == Mode::Latency).then_some(crate::Percentiles {
                p50,
                p99: p50 * 2.0,
                p999: p50 * 3.0,
            }),
            wake_bytes: None,
            parks: None,
        }
    }

    #[test]
    fn build_pairs_ratios_and_pools_the_baseline() {
        let tp = |t, n| sample(t, Mode::Throughput, n, 0.0);
        let lat = |t, p50| sample(t, Mode::Latency, 1, p50);
        let cells = vec![
            Cell {
                transport: Transport::Pipe,
                size: 64,
                mode: Mode::Throughput,
                // Ratios 2, 3 and 1: median 2, although the medians are 400 / 200 = 2 too.
                pairs: vec![
                    (tp(BASELINE, 100), tp(Transport::Pipe, 200)),
                    (tp(BASELINE, 200), tp(Transport::Pipe, 600)),
                    (tp(BASELINE, 400), tp(Transport::Pipe, 400)),
                ],
                errors: vec!["one failed".into()],
                probe_ns: Some(50.0),
            },
            Cell {
                transport: Transport::Pipe,
                size: 64,
                mode: Mode::Latency,
                pairs: vec![(lat(BASELINE, 1000.0), lat(Transport::Pipe, 500.0))],
                errors: vec![],
                probe_ns: Some(100.0),
            },
        ];
        let r = Results::build(
            &Config::quick(),
            "now".into(),
            Machine::detect(),
            Probe::new(vec![50.0, 100.0]),
            &cells,
        );
        let pipe = r.find("pipe", 64, Metric::Throughput).unwrap();
        assert_eq!((pipe.median, pipe.n), (400.0 * 64.0, 3));
        assert_eq!(pipe.vs_baseline, Some(2.0));
        let base = r.find(BASELINE.name(), 64, Metric::Throughput).unwrap();
        assert_eq!((base.median, base.vs_baseline), (200.0 * 64.0, Some(1.0)));
        // CPU per GB: 1 µs for 200 × 64 bytes.
        let cpu = r.find("pipe", 64, Metric::CpuTx).unwrap();
        assert!((cpu.median - 1e-6 / (400.0 * 64.0 / 1e9)).abs() < 1e-9);
        let rtt = r.find("pipe", 64, Metric::RttP50).unwrap();
        assert_eq!(rtt.vs_baseline, Some(0.5));
        // No memcpy in this run: the limit is the cell's probe alone.
        assert_eq!(rtt.vs_limit, Some(5.0));
        assert_eq!(r.notes.len(), 1);
        assert!(r.table().to_string().contains("pipe"));
    }

    #[test]
    fn limit_ratios_use_memcpy_and_pingpong() {
        let mut records = vec![
            rec("memcpy", Metric::Throughput, 10e9, None),
            rec("pipe", Metric::Throughput, 1e9, None),
            rec("pingpong", Metric::RttP50, 100.0, None),
            rec("pipe", Metric::RttP99, 5000.0, None),
        ];
        let probes = BTreeMap::from([(("pipe", 64), 200.0)]);
        set_limit_ratios(&mut records, &probes);
        assert_eq!(records[1].vs_limit, Some(0.1));
        // The pipe's probe (200 ns) plus 2 × 64 B at 10 GB/s (12.8 ns).
        assert!((records[3].vs_limit.unwrap() - 5000.0 / 212.8).abs() < 1e-9);
        // The pingpong has no probe of its own here: its own median.
        assert_eq!(records[2].vs_limit, Some(1.0));
        assert_eq!(records[1].limit, Some(Limit::Memcpy));
        assert_eq!(records[2].limit, Some(Limit::Pingpong));
        assert_eq!(records[3].limit, Some(Limit::Probe));
    }

    #[test]
    fn a_median_below_half_the_best_repetition_is_flagged_with_every_repetition() {
        let tp = |n_msgs| sample(Transport::SpShmAdaptive, Mode::Throughput, n_msgs, 0.0);
        let lat = |p50| sample(Transport::SpShmAdaptive, Mode::Latency, 1, p50);
        let base = |mode| sample(BASELINE, mode, 100, 1000.0);
        let cells = vec![
            Cell {
                transport: Transport::SpShmAdaptive,
                size: 64,
                mode: Mode::Throughput,
                // 2,350 and 2,400 msg/s against a best of 36,500: collapsed.
                pairs: vec![
                    (base(Mode::Throughput), tp(2_350)),
                    (base(Mode::Throughput), tp(36_500)),
                    (base(Mode::Throughput), tp(2_400)),
                ],
                errors: vec![],
                probe_ns: None,
            },
            Cell {
                transport: Transport::SpShmAdaptive,
                size: 64,
                mode: Mode::Latency,
                // A median exactly twice the best is not (yet) a collapse.
                pairs: vec![
                    (base(Mode::Latency), lat(100.0)),
                    (base(Mode::Latency), lat(200.0)),
                    (base(Mode::Latency), lat(300.0)),
                ],
                errors: vec![],
                probe_ns: None,
            },
        ];
        let r = Results::build(
            &Config::quick(),
            "now".into(),
            Machine::detect(),
            Probe::new(vec![50.0]),
            &cells,
        );
        let tp = r.find("sp-shm-adaptive", 64, Metric::MessageRate).unwrap();
        assert!(tp.collapsed);
        assert_eq!(tp.reps, [2_350.0, 36_500.0, 2_400.0]);
        assert!(
            r.find("sp-shm-adaptive", 64, Metric::Throughput)
                .unwrap()
                .collapsed
        );
        assert!(
            !r.find("sp-shm-adaptive", 64, Metric::RttP50)
                .unwrap()
                .collapsed
        );
        // Tail percentiles are not checked: p99 = 2 × p50 here, median 400 against best 200.
        assert!(
            !r.find("sp-shm-adaptive", 64, Metric::RttP99)
                .unwrap()
                .collapsed
        );
        assert!(
            !r.find(BASELINE.name(), 64, Metric::Throughput)
                .unwrap()
                .collapsed
        );

        let notes = r.collapse_notes();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes.contains(
                &"sp-shm-adaptive 64 B message_rate: median 2.4 k msg/s, best 36.5 k msg/s; \
                  repetitions 2.4 k msg/s, 36.5 k msg/s, 2.4 k msg/s"
                    .to_owned()
            ),
            "{notes:?}"
        );
        let table = r.table().to_string();
        assert!(
            table.contains("!150.4 kB/s") || table.contains("!0.2 MB/s"),
            "{table}"
        );
        assert!(table.contains("!2.4 k"), "{table}");

        let json = serde_json::to_value(&r).unwrap();
        let flagged: Vec<&serde_json::Value> = json["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rec| rec["collapsed"] == true)
            .collect();
        assert_eq!(flagged.len(), 2);
        assert_eq!(flagged[0]["reps"].as_array().unwrap().len(), 3);
        // Records that did not collapse leave the field out; older files load without either.
        let rtt = json["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rec| rec["metric"] == "rtt_p50" && rec["transport"] == "sp-shm-adaptive")
            .unwrap();
        assert!(rtt.get("collapsed").is_none());
        let mut old = json.clone();
        for rec in old["records"].as_array_mut().unwrap() {
            let rec = rec.as_object_mut().unwrap();
            rec.remove("reps");
            rec.remove("collapsed");
        }
        let old: Results = serde_json::from_value(old).unwrap();
        assert!(
            old.records
                .iter()
                .all(|rec| !rec.collapsed && rec.reps.is_empty())
        );
    }

    #[test]
    fn ring_rows_are_measured_against_the_ref_ring_of_their_size() {
        let at = |transport: &str, metric: Metric, median: f64, size: u64| Record {
            size_bytes: size,
            ..rec(transport, metric, median, None)
        };
        let mut records = vec![
            at("memcpy", Metric::Throughput, 100e9, 64),
            at("ref-ring", Metric::Throughput, 3.2e9, 64),
            at("ref-ring", Metric::MessageRate, 50e6, 64),
            at("ref-ring", Metric::Throughput, 40e9, 1 << 20),
            at("sp-shm-spin", Metric::Throughput, 1.6e9, 64),
            at("sp-shm-spin", Metric::MessageRate, 25e6, 64),
            at("sp-shm-park", Metric::Throughput, 30e9, 1 << 20),
            // No ref-ring at this size: no limit, rather than memcpy's.
            at("sp-shm-adaptive", Metric::Throughput, 1e9, 1 << 10),
            at("pipe", Metric::Throughput, 1e9, 64),
        ];
        set_limit_ratios(&mut records, &BTreeMap::new());
        let limit = |i: usize| (records[i].vs_limit, records[i].limit);
        assert_eq!(limit(4), (Some(0.5), Some(Limit::RefRing)));
        assert_eq!(limit(5), (Some(0.5), Some(Limit::RefRing)));
        assert_eq!(limit(6), (Some(0.75), Some(Limit::RefRing)));
        assert_eq!(limit(7), (None, None));
        assert_eq!(limit(8), (Some(0.01), Some(Limit::Memcpy)));
        // The ref-ring itself is a throughput row like any other: against memcpy.
        assert_eq!(limit(1), (Some(0.032), Some(Limit::Memcpy)));
        let table = results(records).table().to_string();
        assert!(table.contains("| ref-ring "), "{table}");
    }
}

//! The results file's layout: [`Results`] (the machine, the probe, the profile) with one
//! [`Record`] per transport × size × [`Metric`]. A metric is named in the file by
//! [`Metric::name`] and nowhere else as a string.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::spec::{Mode, Sample};
use crate::stats;

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
    /// What the figures measure (its [`name`](Metric::name) in the file).
    pub metric: Metric,
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
    /// The transport's [`rival`](crate::transport::Transport::rival), measured in the same
    /// repetitions (throughput, message rate and round-trip p50 only). Absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rival: Option<String>,
    /// Median of transport ÷ rival over the interleaved pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_rival: Option<f64>,
    /// Transport ÷ rival, pair by pair, in the order measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rival_ratios: Vec<f64>,
    /// The probes (round trips, ns) before and after each measurement of every repetition kept,
    /// in order (cells compared with a partner or rival): within a repetition they agree to
    /// [`PHASE_RATIO`](crate::plan::PHASE_RATIO) unless its cell ran out of repetitions to redo.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rep_probes: Vec<Vec<f64>>,
    /// Repetitions measured again because the machine changed phase during them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redone: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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
    /// The cache-line probes taken just before and after the transport's measurements (else the
    /// one before the cell), plus the message copied each way at memcpy speed when memcpy was
    /// measured (round trips).
    Probe,
    /// The pingpong ceiling's p50, for round trips of a cell that has no probe of its own.
    Pingpong,
}

/// The metrics a record can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// From starting a child to its first value, median over the starts (start-up scenarios).
    StartupP50,
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

impl Metric {
    /// Every metric, in table order.
    pub const ALL: [Self; 10] = [
        Self::Throughput,
        Self::MessageRate,
        Self::RttP50,
        Self::RttP99,
        Self::RttP999,
        Self::CpuTx,
        Self::CpuRx,
        Self::WakeBytes,
        Self::Parks,
        Self::StartupP50,
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
            Self::StartupP50 => "startup_p50",
        }
    }

    /// The unit in the results file.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Throughput => "B/s",
            Self::MessageRate => "msg/s",
            Self::RttP50 | Self::RttP99 | Self::RttP999 | Self::StartupP50 => "ns",
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
    pub(super) fn collapsed(self, median: f64, best: f64) -> bool {
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

    pub(super) fn mode(self) -> Mode {
        match self {
            Self::RttP50 | Self::RttP99 | Self::RttP999 | Self::StartupP50 => Mode::Latency,
            _ => Mode::Throughput,
        }
    }

    /// The value of this metric in one sample, if the sample has it.
    pub(super) fn of(self, sample: &Sample) -> Option<f64> {
        let latency = sample.latency;
        let v = match self {
            Self::Throughput => sample.bytes_per_s(),
            Self::MessageRate => sample.msgs_per_s(),
            Self::RttP50 => latency?.p50,
            Self::RttP99 => latency?.p99,
            Self::RttP999 => latency?.p999,
            Self::StartupP50 => sample.startup_ns?,
            Self::CpuTx => {
                if sample.spec.transport.is_ceiling() || sample.spec.transport.is_scenario() {
                    return None;
                }
                sample.cpu_tx_s_per_gb()
            }
            Self::CpuRx => {
                if sample.spec.transport.is_ceiling() || sample.spec.transport.is_scenario() {
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

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown metric {name:?}")))
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
        self.records
            .iter()
            .find(|r| r.transport == transport && r.size_bytes == size_bytes && r.metric == metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{rec, results};

    #[test]
    fn every_metric_is_written_by_its_name() {
        for metric in Metric::ALL {
            let text = serde_json::to_string(&metric).unwrap();
            assert_eq!(text, format!("\"{}\"", metric.name()));
            assert_eq!(serde_json::from_str::<Metric>(&text).unwrap(), metric);
        }
        assert!(serde_json::from_str::<Metric>("\"speed\"").is_err());
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
}

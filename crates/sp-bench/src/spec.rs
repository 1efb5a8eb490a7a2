//! What one measurement is and what it yields: the [`RunSpec`] the driver sends the child, the
//! [`Sample`] a measured round gives, and the figures derived from it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cpu;
use crate::transport::Transport;

/// Time allowed beyond warm-up and measurement for setting up and tearing down.
pub(crate) const SLACK: Duration = Duration::from_secs(20);

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One direction, as fast as the transport goes: bytes/s, messages/s, CPU per GB.
    Throughput,
    /// Ping-pong of one message each way: round-trip percentiles.
    Latency,
}

/// One measurement to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The transport.
    pub transport: Transport,
    /// Bytes per message.
    pub size: usize,
    /// Throughput or latency.
    pub mode: Mode,
    /// Length of the warm-up round, which is not reported.
    pub warmup: Duration,
    /// Length of the measured round.
    pub duration: Duration,
    /// Whether each side pins itself to its own core.
    pub pin: bool,
}

/// Round-trip percentiles of one measurement, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// The outcome of one measurement (its measured round).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// What was run.
    pub spec: RunSpec,
    /// Messages sent by the driver (and checked by the peer).
    pub n_msgs: u64,
    /// Wall time of the measured round, in nanoseconds.
    pub elapsed_ns: u64,
    /// CPU time of the driver (the sender, for throughput), in nanoseconds.
    pub cpu_driver_ns: u64,
    /// CPU time of the peer (the receiver, for throughput), in nanoseconds.
    pub cpu_peer_ns: u64,
    /// Round-trip percentiles (latency mode).
    pub latency: Option<Percentiles>,
    /// Bytes both sides wrote to wake each other, for transports that count them.
    pub wake_bytes: Option<u64>,
    /// Times both sides parked waiting for each other, for transports that count them.
    #[serde(default)]
    pub parks: Option<u64>,
    /// Median time from starting a child to its first value, in nanoseconds (the start-up
    /// scenarios).
    #[serde(default)]
    pub startup_ns: Option<f64>,
}

impl RunSpec {
    /// A spec with the given warm-up and measured durations, pinned when the machine allows.
    pub fn new(
        transport: Transport,
        size: usize,
        mode: Mode,
        warmup: Duration,
        duration: Duration,
    ) -> Self {
        Self {
            transport,
            size,
            mode,
            warmup,
            duration,
            pin: cpu::can_pin(),
        }
    }

    /// The most this measurement may take before its watchdog fires.
    pub fn limit(&self) -> Duration {
        self.warmup + self.duration + SLACK
    }

    pub(crate) fn describe(&self) -> String {
        format!("{} {} B {:?}", self.transport.name(), self.size, self.mode)
    }
}

impl Sample {
    /// Bytes per second, one direction.
    pub fn bytes_per_s(&self) -> f64 {
        self.n_msgs as f64 * self.spec.size as f64 / self.elapsed_s()
    }

    /// Messages per second (round trips per second in latency mode).
    pub fn msgs_per_s(&self) -> f64 {
        self.n_msgs as f64 / self.elapsed_s()
    }

    /// Sender CPU seconds per GB (10^9 bytes) moved.
    pub fn cpu_tx_s_per_gb(&self) -> f64 {
        self.cpu_driver_ns as f64 / self.gigabytes() / 1e9
    }

    /// Receiver CPU seconds per GB moved.
    pub fn cpu_rx_s_per_gb(&self) -> f64 {
        self.cpu_peer_ns as f64 / self.gigabytes() / 1e9
    }

    /// Wake-up bytes per 1,000 messages.
    pub fn wake_bytes_per_1k(&self) -> Option<f64> {
        let wake = self.wake_bytes? as f64;
        Some(wake * 1000.0 / self.n_msgs.max(1) as f64)
    }

    /// Parks (both sides) per 1,000 messages.
    pub fn parks_per_1k(&self) -> Option<f64> {
        let parks = self.parks? as f64;
        Some(parks * 1000.0 / self.n_msgs.max(1) as f64)
    }

    fn elapsed_s(&self) -> f64 {
        (self.elapsed_ns.max(1)) as f64 / 1e9
    }

    fn gigabytes(&self) -> f64 {
        (self.n_msgs as f64 * self.spec.size as f64 / 1e9).max(1e-12)
    }
}

//! Results, records and samples for the report's unit tests.

use super::schema::{Machine, Metric, Probe, Profile, Record, Results, SCHEMA};
use crate::spec::{Mode, Sample};
use crate::transport::{BASELINE, Transport};

pub(super) fn results(records: Vec<Record>) -> Results {
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

pub(super) fn rec(
    transport: &str,
    metric: Metric,
    median: f64,
    vs_baseline: Option<f64>,
) -> Record {
    Record {
        transport: transport.into(),
        size_bytes: 64,
        metric,
        unit: metric.unit().into(),
        median,
        min: median,
        max: median,
        n: 3,
        vs_baseline,
        vs_limit: None,
        limit: None,
        rival: None,
        vs_rival: None,
        rival_ratios: Vec::new(),
        rep_probes: Vec::new(),
        redone: 0,
        reps: vec![median; 3],
        collapsed: false,
    }
}

pub(super) fn sample(transport: Transport, mode: Mode, n_msgs: u64, p50: f64) -> Sample {
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
        startup_ns: None,
    }
}

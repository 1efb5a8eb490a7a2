//! What a benchmark run measures and in which order: cells (transport × size × mode), each run as
//! interleaved pairs with the baseline (baseline, transport, baseline, transport, ...), so that a
//! change in the machine's speed hits both alike and their ratio stays meaningful.
//!
//! A virtual machine's two CPUs change phase within seconds: the cache-line round trip between
//! them halves (likely the hypervisor putting them on one physical core's two threads), or grows
//! several-fold (likely one physical CPU taking turns at both), and back; everything bound by
//! cross-core traffic changes with it, 64 KiB handed from one side to the other by up to 4×. A
//! pair measured across such a change compares two machines. So every measurement of a repetition is bracketed by a short
//! probe, and a repetition whose probes disagree by more than [`PHASE_RATIO`] is measured again,
//! at most [`Config::reps`] times per cell; the cell records how many and the probes of each kept
//! repetition. Which side was faster plays no part in the rule.

use std::path::Path;
use std::time::Duration;

use crate::error::Error;
use crate::run;
use crate::spec::{Mode, RunSpec, Sample};
use crate::transport::{BASELINE, Transport};

/// The knobs of one benchmark run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Transports to measure (the baseline is measured alongside each of them regardless).
    pub transports: Vec<Transport>,
    /// Message sizes in bytes.
    pub sizes: Vec<usize>,
    /// Interleaved pairs per cell.
    pub reps: usize,
    /// Warm-up round per measurement.
    pub warmup: Duration,
    /// Measured round per measurement.
    pub duration: Duration,
    /// Probe (cache-line ping-pong) length, taken before every cell.
    pub probe: Duration,
    /// `"quick"` or `"full"`, for the results file.
    pub profile: String,
}

/// One transport × size × mode, with its paired samples.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The transport measured.
    pub transport: Transport,
    /// Bytes per message.
    pub size: usize,
    /// Throughput or latency.
    pub mode: Mode,
    /// `(baseline, transport)` samples, measured back to back. For the baseline itself both are
    /// the same sample.
    pub pairs: Vec<(Sample, Sample)>,
    /// `(rival, transport)` samples, when the transport has a [`Transport::rival`] that can run
    /// here: the rival measured between the baseline and the transport of the same repetition.
    pub rivals: Vec<(Sample, Sample)>,
    /// Measurements that failed, with the reason.
    pub errors: Vec<String>,
    /// The probe (cache-line round trip, ns) taken just before the cell, if the machine has two
    /// cores: the round-trip limit the cell's latencies are compared with.
    pub probe_ns: Option<f64>,
    /// The probes around the measurements of each kept repetition (ns, in order), for cells
    /// compared with a partner or rival; empty where the machine cannot probe.
    pub rep_probes: Vec<Vec<f64>>,
    /// The probes of each repetition measured again because they disagreed (see the module doc).
    pub redone: Vec<Vec<f64>>,
}

/// What [`Cell::run`] reports as it goes, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// One measurement finished.
    Measured,
    /// A repetition will be measured again: this many measurements more than planned.
    Redo(u64),
}

/// Length of the probe before and after each measurement of a repetition.
pub const PHASE_PROBE: Duration = Duration::from_millis(4);

/// A repetition whose largest probe is more than this many times its smallest ran across a change
/// of the machine's phase: phases differ by 2× and more, probes within one by well under this.
pub const PHASE_RATIO: f64 = 1.4;

/// Above this size only the transports that [`Transport::runs_large`] are measured.
pub const LARGE: usize = 1 << 20;

/// Quick sizes: small, medium, large.
pub const QUICK_SIZES: [usize; 3] = [64, 64 << 10, 1 << 20];
/// Full sizes.
pub const FULL_SIZES: [usize; 5] = [64, 1 << 10, 64 << 10, 1 << 20, 16 << 20];

impl Config {
    /// The default: three sizes, three pairs of short rounds; a few minutes on two cores.
    pub fn quick() -> Self {
        Self {
            transports: Transport::ALL.to_vec(),
            sizes: QUICK_SIZES.to_vec(),
            reps: 3,
            warmup: Duration::from_millis(30),
            duration: Duration::from_millis(120),
            probe: Duration::from_millis(20),
            profile: "quick".into(),
        }
    }

    /// All sizes, plus 16 MiB for the shared-memory transports; seven pairs of longer rounds.
    pub fn full() -> Self {
        Self {
            transports: Transport::ALL.to_vec(),
            sizes: FULL_SIZES.to_vec(),
            reps: 7,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(400),
            probe: Duration::from_millis(50),
            profile: "full".into(),
        }
    }

    /// The cells to measure, in order, without samples yet. The ping-pong ceiling (one cache
    /// line, whatever the size) runs once, at the smallest size.
    pub fn cells(&self) -> Vec<Cell> {
        let smallest = self.sizes.iter().copied().min().unwrap_or(64);
        let mut cells = Vec::new();
        for &size in &self.sizes {
            for &transport in &self.transports {
                if transport == Transport::Pingpong && size != smallest {
                    continue;
                }
                if (size > LARGE && !transport.runs_large()) || !transport.carries(size) {
                    continue;
                }
                // A scenario's partner runs in the pairs of the scenario it is compared with.
                if transport.partner() == transport
                    && transport != BASELINE
                    && self
                        .transports
                        .iter()
                        .any(|t| *t != transport && t.partner() == transport)
                {
                    continue;
                }
                for mode in [Mode::Throughput, Mode::Latency] {
                    if !transport.measures(mode == Mode::Latency) {
                        continue;
                    }
                    cells.push(Cell {
                        transport,
                        size,
                        mode,
                        pairs: Vec::new(),
                        rivals: Vec::new(),
                        errors: Vec::new(),
                        probe_ns: None,
                        rep_probes: Vec::new(),
                        redone: Vec::new(),
                    });
                }
            }
        }
        cells
    }

    /// Measurements a cell takes (for a progress bar).
    pub fn runs_per_cell(&self, cell: &Cell) -> u64 {
        self.reps as u64 * cell.runs_per_rep()
    }

    fn spec(&self, transport: Transport, size: usize, mode: Mode) -> RunSpec {
        RunSpec::new(transport, size, mode, self.warmup, self.duration)
    }
}

impl Cell {
    /// The rival measured in this cell's repetitions, if it can run here at this size.
    pub fn rival(&self) -> Option<Transport> {
        self.transport
            .rival(self.size, self.mode == Mode::Latency)
            .filter(|r| r.unavailable().is_none() && r.carries(self.size))
    }

    /// Takes the probe, then runs the cell's interleaved pairs, each measured again (within a
    /// bound) when the machine changed phase during it; `on_run` hears of each measurement and of
    /// each repetition redone. A transport that cannot run here stops after its first failure.
    pub fn run(&mut self, config: &Config, exe: &Path, on_run: &mut dyn FnMut(Progress)) {
        self.probe_ns = crate::probe(config.probe).ok();
        if let Some(why) = self.transport.unavailable() {
            self.errors.push(format!("not measured: {why}"));
            return;
        }
        let spec = config.spec(self.transport, self.size, self.mode);
        let baseline_spec = config.spec(self.transport.partner(), self.size, self.mode);
        let rival_spec = self.rival().map(|r| config.spec(r, self.size, self.mode));
        let alone = self.transport.partner() == self.transport;
        let (mut done, mut redo_left) = (0, config.reps);
        while done < config.reps {
            let mut probes = Vec::new();
            let mut measure = |spec: &RunSpec, probes: &mut Vec<f64>| {
                if !alone {
                    phase_probe(probes);
                }
                let res = run::measure(spec, exe);
                on_run(Progress::Measured);
                res
            };
            let baseline = match measure(&baseline_spec, &mut probes) {
                Ok(sample) => sample,
                Err(err) => {
                    self.errors.push(format!("baseline: {err}"));
                    done += 1;
                    continue;
                }
            };
            if alone {
                self.pairs.push((baseline.clone(), baseline));
                done += 1;
                continue;
            }
            let rival = rival_spec.as_ref().map(|spec| measure(spec, &mut probes));
            let res = measure(&spec, &mut probes);
            phase_probe(&mut probes);
            match res {
                Ok(_) if redo_left > 0 && !same_phase(&probes) => {
                    redo_left -= 1;
                    self.redone.push(probes);
                    on_run(Progress::Redo(self.runs_per_rep()));
                }
                Ok(sample) => {
                    done += 1;
                    match rival {
                        Some(Ok(rival)) => self.rivals.push((rival, sample.clone())),
                        Some(Err(err)) => self.errors.push(format!("rival: {err}")),
                        None => {}
                    }
                    self.pairs.push((baseline, sample));
                    self.rep_probes.push(probes);
                }
                Err(err) => {
                    done += 1;
                    let fatal = matches!(err, Error::Unsupported(_));
                    self.errors.push(err.to_string());
                    if fatal {
                        break;
                    }
                }
            }
        }
    }

    /// Measurements in one repetition: the partner, the rival if any, the transport.
    pub fn runs_per_rep(&self) -> u64 {
        if self.transport.partner() == self.transport {
            1
        } else {
            2 + u64::from(self.rival().is_some())
        }
    }
}

/// Appends a short probe to `probes` (nothing where the machine cannot probe).
fn phase_probe(probes: &mut Vec<f64>) {
    if let Ok(ns) = crate::probe(PHASE_PROBE) {
        probes.push(ns);
    }
}

/// Whether `probes` (of one repetition) all come from one phase of the machine.
fn same_phase(probes: &[f64]) -> bool {
    let (lo, hi) = probes.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &p| {
        (lo.min(p), hi.max(p))
    });
    probes.is_empty() || hi <= lo * PHASE_RATIO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_that_halve_within_a_repetition_are_two_phases() {
        assert!(same_phase(&[]));
        assert!(same_phase(&[63.0, 68.0, 60.0, 66.0]));
        assert!(same_phase(&[28.0, 30.0, 29.0]));
        assert!(!same_phase(&[63.0, 28.0, 29.0, 30.0]));
        assert!(!same_phase(&[28.0, 29.0, 30.0, 64.0]));
        // A stray probe (the helper thread descheduled) counts as a change too: one more run.
        assert!(!same_phase(&[63.0, 300.0, 64.0]));
    }
}

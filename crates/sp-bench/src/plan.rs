//! What a benchmark run measures and in which order: cells (transport × size × mode), each run as
//! interleaved pairs with the baseline (baseline, transport, baseline, transport, ...), so that a
//! change in the machine's speed hits both alike and their ratio stays meaningful.

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
}

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
                    });
                }
            }
        }
        cells
    }

    /// Measurements a cell takes (for a progress bar).
    pub fn runs_per_cell(&self, cell: &Cell) -> u64 {
        let per_rep = if cell.transport.partner() == cell.transport {
            1
        } else {
            2 + u64::from(cell.rival().is_some())
        };
        self.reps as u64 * per_rep
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

    /// Takes the probe, then runs the cell's interleaved pairs; `on_run` is called after each
    /// measurement. A transport that cannot run here stops after its first failure.
    pub fn run(&mut self, config: &Config, exe: &Path, on_run: &mut dyn FnMut()) {
        self.probe_ns = crate::probe(config.probe).ok();
        if let Some(why) = self.transport.unavailable() {
            self.errors.push(format!("not measured: {why}"));
            return;
        }
        let spec = config.spec(self.transport, self.size, self.mode);
        let baseline_spec = config.spec(self.transport.partner(), self.size, self.mode);
        let rival_spec = self.rival().map(|r| config.spec(r, self.size, self.mode));
        for _ in 0..config.reps {
            let baseline = run::measure(&baseline_spec, exe);
            on_run();
            let baseline = match baseline {
                Ok(sample) => sample,
                Err(err) => {
                    self.errors.push(format!("baseline: {err}"));
                    continue;
                }
            };
            if self.transport.partner() == self.transport {
                self.pairs.push((baseline.clone(), baseline));
                continue;
            }
            let rival = rival_spec.as_ref().map(|spec| {
                let res = run::measure(spec, exe);
                on_run();
                res.map_err(|err| self.errors.push(format!("rival: {err}")))
            });
            let res = run::measure(&spec, exe);
            on_run();
            match res {
                Ok(sample) => {
                    if let Some(Ok(rival)) = rival {
                        self.rivals.push((rival, sample.clone()));
                    }
                    self.pairs.push((baseline, sample));
                }
                Err(err) => {
                    let fatal = matches!(err, Error::Unsupported(_));
                    self.errors.push(err.to_string());
                    if fatal {
                        break;
                    }
                }
            }
        }
    }
}

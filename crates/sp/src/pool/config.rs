//! The settings of a pool, how it chooses the idle strategy from the number of workers and cores,
//! and how it tells a worker what it chose ([`WORKER_ENV`]).

use std::time::Duration;

use sp_shm::IdleStrategy;

use crate::config::Config;

/// The environment variable through which a worker learns its index and the settings its pool
/// chose: `index:spins,yields,park:capacity:max_payload` (decimal; `park` is 0 or 1).
/// [`serve`](crate::pool::serve) reads it.
pub const WORKER_ENV: &str = "SP_POOL_WORKER";

/// Settings of a [`Pool`](crate::Pool).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let config = sp::PoolConfig::new()
///     .max_in_flight(8)
///     .respawn(true)
///     .stop_timeout(Duration::from_secs(1));
/// assert_eq!(config.in_flight_limit(), 8);
/// ```
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub(crate) channel: Config,
    pub(crate) max_in_flight: usize,
    pub(crate) respawn: bool,
    pub(crate) idle: Option<IdleStrategy>,
    pub(crate) stop_timeout: Duration,
}

impl PoolConfig {
    /// Defaults: rings of 256 KiB each way per worker with records up to 64 KiB (larger items and
    /// results go as blobs), 16 items in flight per worker, no respawn, the idle strategy chosen
    /// from the number of workers and cores ([`idle_for`]), 2 s for a worker to exit when the
    /// pool closes.
    pub fn new() -> Self {
        Self {
            channel: Config::new().capacity(256 << 10).max_payload(64 << 10),
            max_in_flight: 16,
            respawn: false,
            idle: None,
            stop_timeout: Duration::from_secs(2),
        }
    }

    /// The typed channel to each worker: ring geometry, blob threshold, time limits, spawn
    /// options. Its idle strategy is ignored (see [`idle`](Self::idle)); the worker's rings get the
    /// same capacity and largest record.
    #[must_use]
    pub fn channel(mut self, config: Config) -> Self {
        self.channel = config;
        self
    }

    /// The most items one worker holds at a time (at least 1). [`submit`](crate::Pool::submit)
    /// waits when every worker holds this many.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Whether a worker that dies is replaced at once by a new one at the same index (default
    /// no; [`Pool::respawn`](crate::Pool::respawn) does it on demand).
    #[must_use]
    pub fn respawn(mut self, yes: bool) -> Self {
        self.respawn = yes;
        self
    }

    /// How the parent and the workers wait, instead of the choice by core count ([`idle_for`]).
    #[must_use]
    pub fn idle(mut self, strategy: IdleStrategy) -> Self {
        self.idle = Some(strategy);
        self
    }

    /// How long [`close`](crate::Pool::close) (and dropping the pool) waits for the workers to
    /// exit after their rings are closed, before it kills them.
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// The most items one worker holds at a time.
    pub fn in_flight_limit(&self) -> usize {
        self.max_in_flight
    }

    /// The strategy a pool of `n_workers` uses.
    pub(crate) fn idle_strategy(&self, n_workers: usize) -> IdleStrategy {
        self.idle.unwrap_or_else(|| idle_for(n_workers))
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The idle strategy of a pool of `n_workers`: [`IdleStrategy::adaptive`] (spin a while, then
/// park) while the workers do not outnumber the cores (`n_workers <= cores`, from
/// `std::thread::available_parallelism`), otherwise [`IdleStrategy::park`]. A process that spins
/// holds a core; once workers outnumber the cores, spinning takes the core from one that has
/// work, so every side parks at once instead (one wake-up byte per idle period, no CPU while
/// idle). The parent is not counted: between submissions it waits for answers, and a worker
/// that spins a while catches its next item without the wake-up and the context switch a parked
/// one pays for every item (docs/benchmarks.md, pools).
///
/// # Examples
/// ```
/// // 64 workers outnumber any core count this test runs on.
/// assert_eq!(sp::pool::idle_for(64), sp::IdleStrategy::park());
/// ```
pub fn idle_for(n_workers: usize) -> IdleStrategy {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n_workers <= cores {
        IdleStrategy::adaptive()
    } else {
        IdleStrategy::park()
    }
}

/// What a worker learns from [`WORKER_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkerSetup {
    pub(crate) index: usize,
    pub(crate) idle: IdleStrategy,
    pub(crate) capacity: usize,
    pub(crate) max_payload: usize,
}

impl WorkerSetup {
    pub(crate) fn encode(&self) -> String {
        format!(
            "{}:{},{},{}:{}:{}",
            self.index,
            self.idle.spins(),
            self.idle.yields(),
            u8::from(self.idle.parks()),
            self.capacity,
            self.max_payload
        )
    }

    /// Parses the variable's value; `None` for anything malformed.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let index = parts.next()?.parse().ok()?;
        let mut idle = parts.next()?.split(',');
        let spins = idle.next()?.parse().ok()?;
        let yields = idle.next()?.parse().ok()?;
        let park = match idle.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let capacity = parts.next()?.parse().ok()?;
        let max_payload = parts.next()?.parse().ok()?;
        if idle.next().is_some() || parts.next().is_some() {
            return None;
        }
        Some(Self {
            index,
            idle: IdleStrategy::new(spins, yields, park),
            capacity,
            max_payload,
        })
    }

    /// The worker's side of the channel: its results ring like the pool's items ring.
    pub(crate) fn config(&self) -> Config {
        Config::new()
            .capacity(self.capacity)
            .max_payload(self.max_payload)
            .idle(self.idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_setup_round_trips_and_refuses_garbage() {
        let setup = WorkerSetup {
            index: 63,
            idle: IdleStrategy::new(7, 3, true),
            capacity: 1 << 18,
            max_payload: 1 << 16,
        };
        assert_eq!(WorkerSetup::decode(&setup.encode()), Some(setup));
        for bad in [
            "",
            "1",
            "1:2,3,1:4",
            "1:2,3,2:4:5",
            "x:2,3,1:4:5",
            "1:2,3,1:4:5:6",
        ] {
            assert_eq!(WorkerSetup::decode(bad), None, "{bad}");
        }
    }
}

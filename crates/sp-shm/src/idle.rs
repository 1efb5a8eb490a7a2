//! What a side does while it waits for the other: spin, then yield, then park.
//!
//! This is aeron's `BackoffIdleStrategy` (`aeron_agent.h`): a busy spin answers within
//! nanoseconds but burns a core; `sched_yield` gives the core away when another thread wants it;
//! parking in `poll(2)` costs a wake-up byte from the peer and a few microseconds, but no CPU.
//! A side that never parks still checks, every [`CHECK_EVERY`] steps, whether the peer hung up
//! or the deadline passed, so nothing spins forever; it also yields then, so that two spinning
//! processes on an oversubscribed machine (more spinning threads than cores) keep progressing.
//!
//! A consumer that has not received a record yet parks at once under any strategy that parks:
//! a peer that was just started may share this core (the set-up's socket wake-ups are
//! synchronous, which lets the kernel move the woken task to the waker's core), and spinning
//! there would hold it off (`Consumer::wait_strategy`; docs/benchmarks.md has the start-up
//! measurements).

/// How long a waiting side spins and yields before it parks.
///
/// # Examples
/// ```
/// use sp_shm::IdleStrategy;
/// let low_latency = IdleStrategy::spin();
/// let default = IdleStrategy::adaptive();
/// let frugal = IdleStrategy::park();
/// let custom = IdleStrategy::new(500, 20, true);
/// assert_ne!(low_latency, frugal);
/// # let _ = (default, custom);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleStrategy {
    spins: u32,
    yields: u32,
    park: bool,
}

/// How often (in idle steps) a side that is not parked polls for hang-up and checks its deadline.
pub(crate) const CHECK_EVERY: u32 = 1024;

/// One step of waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Spin,
    Yield,
    Park,
}

/// The state of one wait.
#[derive(Debug)]
pub(crate) struct Backoff {
    strategy: IdleStrategy,
    n_steps: u64,
}

impl IdleStrategy {
    /// `spins` busy-wait steps, then `yields` calls to `sched_yield`, then park in `poll` if
    /// `park` (else keep spinning).
    pub const fn new(spins: u32, yields: u32, park: bool) -> Self {
        Self {
            spins,
            yields,
            park,
        }
    }

    /// Never park: lowest latency, one core busy while waiting. The peer never needs to send a
    /// wake-up byte to this side. Like every strategy, it checks for hang-up and yields the core
    /// once every 1024 idle steps.
    pub const fn spin() -> Self {
        Self::new(u32::MAX, 0, false)
    }

    /// Spin a while, then park (the default): 20,000 spin steps, long enough to cover the gap
    /// between two 1 MiB records of a stream, so that a streaming side does not park and need a
    /// wake-up byte for each one (docs/benchmarks.md has the measurements behind the number).
    ///
    /// No yield phase: on a core shared with another runnable process, one `sched_yield` can hand
    /// the core away for a whole time slice (milliseconds), and a wait that ended in the yields
    /// cost more than a park would have.
    pub const fn adaptive() -> Self {
        Self::new(20_000, 0, true)
    }

    /// Park at once: no CPU while idle, a wake-up byte per idle period.
    pub const fn park() -> Self {
        Self::new(0, 0, true)
    }

    /// Busy-wait steps before yielding.
    pub const fn spins(&self) -> u32 {
        self.spins
    }

    /// Calls to `sched_yield` after the spins, before parking.
    pub const fn yields(&self) -> u32 {
        self.yields
    }

    /// Whether a wait parks in `poll` after the spins and yields (else it keeps spinning).
    pub const fn parks(&self) -> bool {
        self.park
    }
}

impl Default for IdleStrategy {
    fn default() -> Self {
        Self::adaptive()
    }
}

impl Backoff {
    pub(crate) fn new(strategy: IdleStrategy) -> Self {
        Self {
            strategy,
            n_steps: 0,
        }
    }

    /// The next step to take.
    pub(crate) fn next_step(&mut self) -> Step {
        let n = self.n_steps;
        self.n_steps += 1;
        let spins = u64::from(self.strategy.spins);
        let yields = u64::from(self.strategy.yields);
        if n < spins {
            Step::Spin
        } else if n < spins + yields {
            Step::Yield
        } else if self.strategy.park {
            Step::Park
        } else {
            Step::Spin
        }
    }

    /// Whether a spinning or yielding side should now check for hang-up and its deadline.
    pub(crate) fn check_due(&self) -> bool {
        self.n_steps.is_multiple_of(u64::from(CHECK_EVERY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_spins_then_yields_then_parks() {
        let mut b = Backoff::new(IdleStrategy::new(2, 1, true));
        let steps: Vec<Step> = (0..5).map(|_| b.next_step()).collect();
        assert_eq!(
            steps,
            [Step::Spin, Step::Spin, Step::Yield, Step::Park, Step::Park]
        );
    }

    #[test]
    fn spin_never_parks() {
        let mut b = Backoff::new(IdleStrategy::new(1, 1, false));
        assert!((0..100).all(|_| b.next_step() != Step::Park));
    }
}

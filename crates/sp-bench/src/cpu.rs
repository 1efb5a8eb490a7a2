//! CPUs: how many this process may use, pinning a thread to one, and reading CPU-time clocks.

use std::sync::OnceLock;

use rustix::thread::CpuSet;
use rustix::time::{ClockId, clock_gettime};

/// The CPU the driver (parent process, or first thread) runs on when pinning is possible.
pub(crate) const DRIVER_CPU: usize = 0;
/// The CPU the peer (child process, or second thread) runs on when pinning is possible.
pub(crate) const PEER_CPU: usize = 1;

/// Which CPU-time clock a side reads: the whole process, or only the calling thread (for the
/// in-process ceilings, where both sides share one process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CpuClock {
    /// `CLOCK_PROCESS_CPUTIME_ID`: user + system time of every thread of this process, the same
    /// figure `getrusage(RUSAGE_SELF)` reports, at nanosecond resolution.
    Process,
    /// `CLOCK_THREAD_CPUTIME_ID`: the calling thread only.
    Thread,
}

impl CpuClock {
    /// CPU time consumed so far, in nanoseconds.
    pub(crate) fn now_ns(self) -> u64 {
        let id = match self {
            Self::Process => ClockId::ProcessCPUTime,
            Self::Thread => ClockId::ThreadCPUTime,
        };
        let ts = clock_gettime(id);
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    }
}

/// The CPUs this process could run on when it started (its affinity mask, as `sched_getaffinity`
/// reports it). Read once: after [`pin_driver`](crate::pin_driver) the mask holds one CPU.
pub fn available_cpus() -> usize {
    startup_mask().0
}

/// Whether the driver and the peer can each have a core of their own (judged from the affinity
/// mask at start, before any pinning).
pub fn can_pin() -> bool {
    startup_mask().1
}

fn startup_mask() -> (usize, bool) {
    static MASK: OnceLock<(usize, bool)> = OnceLock::new();
    *MASK.get_or_init(|| {
        let n_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let both = rustix::thread::sched_getaffinity(None)
            .is_ok_and(|set| set.is_set(DRIVER_CPU) && set.is_set(PEER_CPU));
        (n_cpus, n_cpus >= 2 && both)
    })
}

/// `sched_setaffinity(0, {cpu})`: pins the calling thread (and the threads it starts later) to
/// `cpu`. The caller decides whether to pin ([`can_pin`]); a child process inherits its parent's
/// mask, so it cannot judge for itself.
pub(crate) fn pin_current_thread(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu);
    // Pinning is an improvement, not a requirement: a failure (say, a cgroup that forbids the CPU)
    // leaves the thread where the scheduler put it.
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// `sched_setaffinity(0, every CPU at start)`: undoes [`pin_current_thread`] for the calling
/// thread (the scenarios, whose processes and threads the scheduler places, start from here).
pub(crate) fn unpin_current_thread() {
    let mut set = CpuSet::new();
    for cpu in 0..available_cpus().min(CpuSet::MAX_CPU) {
        set.set(cpu);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

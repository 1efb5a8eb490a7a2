//! The loops that drive one round of a measurement, shared by every placement: the driver's
//! [`drive_round`] (sends, and in latency mode receives, for the round's duration, then checks the
//! peer's report against what it sent) and the peer's [`serve_round`] (receives, and answers in
//! latency mode, until the message flagged last). Two processes (`run.rs`) and two threads
//! (`ceiling.rs`) run the same loops over a [`Link`].

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cpu::CpuClock;
use crate::error::{Error, Result};
use crate::payload::{Generator, Verifier};
use crate::spec::{Mode, Percentiles, RunSpec, Sample};
use crate::transport::{IdleCounts, Link};

/// What the peer reports after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SideReport {
    pub(crate) n_msgs: u64,
    pub(crate) checksum_in: u64,
    pub(crate) checksum_out: u64,
    pub(crate) cpu_ns: u64,
    pub(crate) idle: Option<IdleCounts>,
}

/// The driver's view of one finished round.
#[derive(Debug)]
pub(crate) struct Round {
    pub(crate) n_msgs: u64,
    pub(crate) elapsed_ns: u64,
    pub(crate) cpu_ns: u64,
    pub(crate) hist: Option<Histogram<u64>>,
    pub(crate) peer: SideReport,
    pub(crate) idle: Option<IdleCounts>,
}

/// Builds the reported sample from the measured round.
pub(crate) fn sample_from(spec: &RunSpec, round: Round) -> Sample {
    let latency = round.hist.as_ref().map(|hist| Percentiles {
        p50: hist.value_at_quantile(0.50) as f64,
        p99: hist.value_at_quantile(0.99) as f64,
        p999: hist.value_at_quantile(0.999) as f64,
    });
    let idle = match (round.idle, round.peer.idle) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or_default().plus(b.unwrap_or_default())),
    };
    Sample {
        spec: spec.clone(),
        n_msgs: round.n_msgs,
        elapsed_ns: round.elapsed_ns,
        cpu_driver_ns: round.cpu_ns,
        cpu_peer_ns: round.peer.cpu_ns,
        latency,
        wake_bytes: idle.map(|c| c.wake_bytes),
        parks: idle.map(|c| c.parks),
        startup_ns: None,
    }
}

/// The median of `n` empty intervals timed as a round-trip sample is (`Instant::now()`, then
/// `elapsed()`), in nanoseconds: the clock's share of every rtt sample.
pub fn timer_overhead_ns(n: usize) -> f64 {
    let mut ns: Vec<u64> = (0..n.max(1))
        .map(|_| {
            let start = Instant::now();
            start.elapsed().as_nanos() as u64
        })
        .collect();
    ns.sort_unstable();
    ns[ns.len() / 2] as f64
}

/// Runs one round on the driver's side: sends (and in latency mode receives) until `duration` has
/// passed, then waits for the peer's report and checks it against what was sent.
pub(crate) fn drive_round(
    link: &mut dyn Link,
    spec: &RunSpec,
    duration: Duration,
    clock: CpuClock,
    wait_report: &mut dyn FnMut() -> Result<SideReport>,
) -> Result<Round> {
    let mut generator = Generator::default();
    let mut verifier = Verifier::new(spec.size);
    let mut hist = match spec.mode {
        Mode::Throughput => None,
        Mode::Latency => Some(
            Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3)
                .map_err(|err| Error::Corrupt(format!("histogram: {err}")))?,
        ),
    };
    // Reading the clock costs ~20 ns: for small messages, look at it every few messages (a mask,
    // not a `%`: a division per message is measurable at 64 B).
    let clock_mask: u64 = if spec.size >= 4096 { 0 } else { 15 };
    let batch = link.batch_len();
    let idle0 = link.idle_counts();
    let cpu0 = clock.now_ns();
    let t0 = Instant::now();
    let deadline = t0 + duration;
    loop {
        match &mut hist {
            None if batch > 1 => {
                // The clock once per batch; the batch's final message carries the flag.
                let last = Instant::now() >= deadline;
                let mut i = 0;
                link.send_batch(batch, &mut |buf| {
                    i += 1;
                    generator.fill(buf, last && i == batch);
                })?;
                if last {
                    break;
                }
            }
            None => {
                let last = generator.n_msgs & clock_mask == 0 && Instant::now() >= deadline;
                link.send(&mut |buf| generator.fill(buf, last))?;
                if last {
                    break;
                }
            }
            Some(hist) => {
                let start = Instant::now();
                let last = start >= deadline;
                link.send(&mut |buf| generator.fill(buf, last))?;
                link.recv(&mut |buf| verifier.check(buf))?;
                hist.saturating_record(start.elapsed().as_nanos() as u64);
                if last {
                    break;
                }
            }
        }
    }
    let peer = wait_report()?;
    let elapsed_ns = t0.elapsed().as_nanos() as u64;
    let cpu_ns = clock.now_ns().saturating_sub(cpu0);
    if peer.n_msgs != generator.n_msgs || peer.checksum_in != generator.checksum {
        return Err(Error::Corrupt(format!(
            "sent {} messages (checksum {:#x}), the peer read {} (checksum {:#x})",
            generator.n_msgs, generator.checksum, peer.n_msgs, peer.checksum_in
        )));
    }
    if hist.is_some()
        && (verifier.n_msgs != generator.n_msgs || verifier.checksum != peer.checksum_out)
    {
        return Err(Error::Corrupt(format!(
            "the peer replied {} times (checksum {:#x}), {} replies read (checksum {:#x})",
            generator.n_msgs, peer.checksum_out, verifier.n_msgs, verifier.checksum
        )));
    }
    Ok(Round {
        n_msgs: generator.n_msgs,
        elapsed_ns,
        cpu_ns,
        hist,
        peer,
        idle: idle_since(link, idle0),
    })
}

/// Runs one round on the peer's side: receives (and in latency mode answers) until the message
/// flagged last.
pub(crate) fn serve_round(
    link: &mut dyn Link,
    spec: &RunSpec,
    clock: CpuClock,
) -> Result<SideReport> {
    let mut verifier = Verifier::new(spec.size);
    let mut generator = Generator::default();
    let batch = link.batch_len();
    let idle0 = link.idle_counts();
    let cpu0 = clock.now_ns();
    loop {
        if batch > 1 && spec.mode == Mode::Throughput {
            // The flagged message ends its batch, so nothing follows it.
            link.recv_batch(batch, &mut |buf| verifier.check(buf))?;
        } else {
            link.recv(&mut |buf| verifier.check(buf))?;
        }
        let last = verifier.saw_last;
        if spec.mode == Mode::Latency {
            link.send(&mut |buf| generator.fill(buf, last))?;
        }
        if last {
            break;
        }
    }
    let cpu_ns = clock.now_ns().saturating_sub(cpu0);
    Ok(SideReport {
        n_msgs: verifier.n_msgs,
        checksum_in: verifier.checksum,
        checksum_out: generator.checksum,
        cpu_ns,
        idle: idle_since(link, idle0),
    })
}

/// The link's idle counts since `earlier`, if it counts them.
fn idle_since(link: &dyn Link, earlier: Option<IdleCounts>) -> Option<IdleCounts> {
    Some(link.idle_counts()?.since(earlier?))
}

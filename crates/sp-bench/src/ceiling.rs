//! The ceilings: what the machine allows without any IPC at all.
//!
//! - `crossbeam`: a bounded crossbeam channel between two threads of this process, each pinned to
//!   its core. Buffers move by pointer and come back through a second channel for reuse, so what
//!   is left is the cost of writing and reading the bytes plus the channel's hand-off.
//! - `memcpy`: one thread copying one message into another buffer, again and again.
//! - `pingpong`: two threads bouncing one cache line: the floor under any cross-core round trip.
//!   The same loop, run briefly, is the *probe* recorded with every run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use hdrhistogram::Histogram;
use memmap2::MmapMut;

use crate::cpu::{self, CpuClock};
use crate::error::{Error, Result};
use crate::round::{Round, SideReport, drive_round, sample_from, serve_round};
use crate::spec::{Mode, Percentiles, RunSpec, Sample};
use crate::transport::{Check, Fill, Link, Transport};
use crate::watchdog::{Victim, Watchdog};

/// Round trips timed together in the ping-pong; one clock read per batch keeps the clock's own
/// cost (~20 ns) out of a ~100 ns round trip.
const PINGPONG_BATCH: u64 = 64;

/// How long a ping-pong side spins without an answer before it gives up.
const SPIN_LIMIT: Duration = Duration::from_secs(2);

/// One side of a crossbeam-channel pair.
#[derive(Debug)]
struct CrossbeamLink {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    /// Buffers this side has read go back to the other side through here.
    give_back: Sender<Vec<u8>>,
    /// Buffers the other side has read come back through here.
    returned: Receiver<Vec<u8>>,
    size: usize,
    limit: Duration,
}

/// The cache line the ping-pong bounces, alone on its 128 bytes (adjacent-line prefetch).
#[repr(align(128))]
#[derive(Debug, Default)]
struct Line(AtomicU64);

/// Measures a ceiling in this process.
pub(crate) fn measure(spec: &RunSpec) -> Result<Sample> {
    let dog = Watchdog::arm(
        spec.limit(),
        Victim::None,
        format!("the {} ceiling", spec.transport.name()),
    );
    let res = match spec.transport {
        Transport::Crossbeam => crossbeam(spec),
        Transport::Memcpy => memcpy(spec),
        Transport::Pingpong => pingpong_sample(spec),
        other => Err(Error::Unsupported(format!(
            "{} is not a ceiling",
            other.name()
        ))),
    };
    dog.disarm();
    res
}

/// A short ping-pong: the median round trip of one cache line between the two cores, in
/// nanoseconds. Recorded with every run so the reader can see the machine's state.
///
/// # Errors
/// [`Error::Unsupported`] with fewer than two usable cores (spinning would starve the peer).
pub fn probe(duration: Duration) -> Result<f64> {
    if !cpu::can_pin() {
        return Err(Error::Unsupported(
            "the probe spins and needs two cores".into(),
        ));
    }
    let batches = pingpong(duration, true)?;
    let mut ns: Vec<f64> = batches;
    ns.sort_by(f64::total_cmp);
    Ok(ns.get(ns.len() / 2).copied().unwrap_or(f64::NAN))
}

fn crossbeam(spec: &RunSpec) -> Result<Sample> {
    let limit = spec.limit();
    let (mut mine, mut theirs) = CrossbeamLink::pair(spec.size, limit);
    let (report_tx, report_rx) = crossbeam_channel::bounded::<Result<SideReport, String>>(2);
    let peer_spec = spec.clone();
    let peer = std::thread::Builder::new()
        .name("sp-bench-crossbeam-peer".into())
        .spawn(move || {
            if peer_spec.pin {
                cpu::pin_current_thread(cpu::PEER_CPU);
            }
            for _ in 0..2 {
                let res = serve_round(&mut theirs, &peer_spec, CpuClock::Thread);
                let failed = res.is_err();
                let _ = report_tx.send(res.map_err(|err| err.to_string()));
                if failed {
                    return;
                }
            }
        })?;
    let mut wait = || match report_rx.recv_timeout(limit) {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(why)) => Err(Error::Child(why)),
        Err(_) => Err(Error::TimedOut("waiting for the peer thread")),
    };
    let mut last: Option<Round> = None;
    let mut res = Ok(());
    for duration in [spec.warmup, spec.duration] {
        match drive_round(&mut mine, spec, duration, CpuClock::Thread, &mut wait) {
            Ok(round) => last = Some(round),
            Err(err) => {
                res = Err(err);
                break;
            }
        }
    }
    drop(mine);
    let _ = peer.join();
    res?;
    let round = last.ok_or(Error::Child("no round".into()))?;
    Ok(sample_from(spec, round))
}

impl CrossbeamLink {
    fn pair(size: usize, limit: Duration) -> (Self, Self) {
        let (a_tx, b_rx) = crossbeam_channel::bounded(16);
        let (b_tx, a_rx) = crossbeam_channel::bounded(16);
        let (a_back, b_returned) = crossbeam_channel::unbounded();
        let (b_back, a_returned) = crossbeam_channel::unbounded();
        let a = Self {
            tx: a_tx,
            rx: a_rx,
            give_back: a_back,
            returned: a_returned,
            size,
            limit,
        };
        let b = Self {
            tx: b_tx,
            rx: b_rx,
            give_back: b_back,
            returned: b_returned,
            size,
            limit,
        };
        (a, b)
    }
}

impl Link for CrossbeamLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        let mut buf = self
            .returned
            .try_recv()
            .unwrap_or_else(|_| vec![0; self.size]);
        fill(&mut buf);
        self.tx
            .send(buf)
            .map_err(|_| Error::Core(sp_core::Error::PeerGone))
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let buf = self.rx.recv_timeout(self.limit).map_err(|err| match err {
            RecvTimeoutError::Timeout => Error::TimedOut("crossbeam receive"),
            RecvTimeoutError::Disconnected => Error::Core(sp_core::Error::PeerGone),
        })?;
        check(&buf)?;
        // The other side may have finished; then the buffer is simply dropped.
        let _ = self.give_back.send(buf);
        Ok(())
    }
}

fn memcpy(spec: &RunSpec) -> Result<Sample> {
    // Both buffers page-aligned, so their offsets in the page match: on this machine's CPU a
    // `memcpy` (`rep movsb`) of 4 KiB to 256 KiB whose destination sits a few bytes after the
    // source's offset in the page runs at ~1 GB/s instead of 15-90 GB/s, and two heap `Vec`s
    // land at whatever offsets the allocator picks.
    let mut src = MmapMut::map_anon(spec.size)?;
    crate::payload::fill(&mut src, 1);
    let mut dst = MmapMut::map_anon(spec.size)?;
    // Copy at least 1 MiB between clock reads.
    let per_check = ((1 << 20) / spec.size).max(1) as u64;
    let run = |duration: Duration, dst: &mut MmapMut| {
        let cpu0 = CpuClock::Thread.now_ns();
        let t0 = Instant::now();
        let mut n_msgs = 0u64;
        while t0.elapsed() < duration {
            for _ in 0..per_check {
                dst.copy_from_slice(std::hint::black_box(&src[..]));
                std::hint::black_box(&mut *dst);
            }
            n_msgs += per_check;
        }
        (n_msgs, t0.elapsed(), CpuClock::Thread.now_ns() - cpu0)
    };
    run(spec.warmup, &mut dst);
    let (n_msgs, elapsed, cpu_ns) = run(spec.duration, &mut dst);
    Ok(Sample {
        spec: spec.clone(),
        n_msgs,
        elapsed_ns: elapsed.as_nanos() as u64,
        cpu_driver_ns: cpu_ns,
        cpu_peer_ns: 0,
        latency: None,
        wake_bytes: None,
        parks: None,
        startup_ns: None,
    })
}

fn pingpong_sample(spec: &RunSpec) -> Result<Sample> {
    if spec.mode != Mode::Latency {
        return Err(Error::Unsupported(
            "pingpong measures round trips only".into(),
        ));
    }
    pingpong(spec.warmup, spec.pin)?;
    let t0 = Instant::now();
    let batches = pingpong(spec.duration, spec.pin)?;
    let elapsed = t0.elapsed();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3)
        .map_err(|err| Error::Corrupt(format!("histogram: {err}")))?;
    for ns in &batches {
        hist.saturating_record(ns.round() as u64);
    }
    Ok(Sample {
        spec: spec.clone(),
        n_msgs: batches.len() as u64 * PINGPONG_BATCH,
        elapsed_ns: elapsed.as_nanos() as u64,
        cpu_driver_ns: 0,
        cpu_peer_ns: 0,
        latency: Some(Percentiles {
            p50: hist.value_at_quantile(0.50) as f64,
            p99: hist.value_at_quantile(0.99) as f64,
            p999: hist.value_at_quantile(0.999) as f64,
        }),
        wake_bytes: None,
        parks: None,
        startup_ns: None,
    })
}

/// Bounces one cache line between this thread and a helper for `duration`. Returns the mean round
/// trip of each batch of [`PINGPONG_BATCH`], in nanoseconds. Exactly two threads spin.
fn pingpong(duration: Duration, pin: bool) -> Result<Vec<f64>> {
    let line = Arc::new(Line::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let (line2, stop2, ready2) = (Arc::clone(&line), Arc::clone(&stop), Arc::clone(&ready));
    let helper = std::thread::Builder::new()
        .name("sp-bench-pingpong".into())
        .spawn(move || {
            if pin {
                cpu::pin_current_thread(cpu::PEER_CPU);
            }
            ready2.store(true, Ordering::Release);
            let mut expect = 1u64;
            loop {
                // SYNC POINT: Acquire pairs with the driver's Release store of an odd value.
                if !spin_until(&line2.0, expect, &stop2) {
                    return;
                }
                // SYNC POINT: Release pairs with the driver's Acquire load of the even value.
                line2.0.store(expect + 1, Ordering::Release);
                expect += 2;
            }
        })?;
    // The helper starts on this thread's core and must run there once to move to its own; the
    // clock starts when it has (a spinning driver would hold the core for a time slice, which a
    // short probe would report as its round trip).
    let waiting = Instant::now();
    while !ready.load(Ordering::Acquire) {
        if waiting.elapsed() > SPIN_LIMIT {
            stop.store(true, Ordering::Relaxed);
            let _ = helper.join();
            return Err(Error::TimedOut("the ping-pong helper did not start"));
        }
        std::thread::yield_now();
    }
    let mut batches = Vec::new();
    let mut value = 0u64;
    let t0 = Instant::now();
    let mut ok = true;
    'outer: while t0.elapsed() < duration {
        let start = Instant::now();
        for _ in 0..PINGPONG_BATCH {
            // SYNC POINT: Release pairs with the helper's Acquire load.
            line.0.store(value + 1, Ordering::Release);
            if !spin_until(&line.0, value + 2, &stop) {
                ok = false;
                break 'outer;
            }
            value += 2;
        }
        batches.push(start.elapsed().as_nanos() as f64 / PINGPONG_BATCH as f64);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = helper.join();
    if !ok {
        return Err(Error::TimedOut("the ping-pong helper stopped answering"));
    }
    Ok(batches)
}

/// Spins until `word` holds `want` (true), or `stop` is set or [`SPIN_LIMIT`] passes (false).
fn spin_until(word: &AtomicU64, want: u64, stop: &AtomicBool) -> bool {
    let mut spins = 0u32;
    let mut since: Option<Instant> = None;
    // SYNC POINT: Acquire pairs with the other thread's Release store of `want`.
    while word.load(Ordering::Acquire) != want {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(4096) {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let started = *since.get_or_insert_with(Instant::now);
            if started.elapsed() > SPIN_LIMIT {
                return false;
            }
        }
    }
    true
}

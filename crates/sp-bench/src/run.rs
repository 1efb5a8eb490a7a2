//! One measurement: a transport, a message size and a mode (throughput or round trips), run as a
//! warm-up round and a measured round between a driver and a peer.
//!
//! For a cross-process transport the driver is this process and the peer a child started from the
//! same executable (`sp-bench __sp-bench-peer`) through [`sp_core::spawn_with`] with a parent-death
//! signal of `SIGKILL`, so no child outlives the benchmark. The two talk over an sp-core seqpacket
//! control channel: the driver sends the [`RunSpec`] and the transport's descriptors, the child
//! answers `Ready`, then after each round a `Report` with what it received, its checksum and its
//! CPU time. Each side pins itself to its own core when the machine has two.
//!
//! - **Throughput**: the driver sends messages for the round's duration, the last one flagged; the
//!   round ends when the peer's report arrives, so the time covers every byte being read.
//! - **Latency**: the driver sends one message and waits for the peer's reply of the same size,
//!   recording each round trip in an HDR histogram.
//!
//! A [`Watchdog`](crate::watchdog::Watchdog) bounds every measurement.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use sp_core::{Channel, End, Signal, SocketKind, SpawnOptions};

use crate::cpu::{self, CpuClock};
use crate::error::{Error, Result};
use crate::payload::{Generator, MIN_SIZE, Verifier};
use crate::transport::{self, IdleCounts, Link, Offer, Placement, Transport};
use crate::watchdog::{Victim, Watchdog};

/// The first argument that makes the sp-bench binary play the child side of a measurement.
pub const PEER_ARG: &str = "__sp-bench-peer";

/// Time allowed beyond warm-up and measurement for setting up and tearing down.
const SLACK: Duration = Duration::from_secs(20);

/// Largest control message (a spec or a report as JSON).
const MAX_CONTROL_LEN: usize = 64 << 10;

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
}

/// What the peer reports after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SideReport {
    pub(crate) n_msgs: u64,
    pub(crate) checksum_in: u64,
    pub(crate) checksum_out: u64,
    pub(crate) cpu_ns: u64,
    pub(crate) idle: Option<IdleCounts>,
}

/// The control messages, as JSON over the sp-core control channel.
#[derive(Debug, Serialize, Deserialize)]
enum Control {
    Setup { spec: RunSpec, extra: String },
    Ready,
    Report(SideReport),
    Failed(String),
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

    fn describe(&self) -> String {
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

/// Runs one measurement. `exe` is the sp-bench binary, started as the child for cross-process
/// transports.
///
/// # Errors
/// [`Error::Unsupported`] when the transport cannot run here or in this mode; any failure of the
/// transport, the child, or the checks ([`Error::Corrupt`]); [`Error::TimedOut`] past
/// [`RunSpec::limit`].
pub fn measure(spec: &RunSpec, exe: &Path) -> Result<Sample> {
    if let Some(why) = spec.transport.unavailable() {
        return Err(Error::Unsupported(why));
    }
    if spec.size < MIN_SIZE {
        return Err(Error::Unsupported(format!(
            "messages under {MIN_SIZE} bytes"
        )));
    }
    if !spec.transport.measures(spec.mode == Mode::Latency) {
        return Err(Error::Unsupported(format!("{:?} mode", spec.mode)));
    }
    match spec.transport.placement() {
        Placement::TwoProcesses => measure_processes(spec, exe),
        Placement::TwoThreads | Placement::OneThread => crate::ceiling::measure(spec),
    }
}

/// The child's side of a measurement: call this from `main` when the first argument is
/// [`PEER_ARG`].
///
/// # Errors
/// When the control channel cannot be adopted or the measurement fails; the driver has been sent
/// the reason already.
pub fn peer_main() -> Result<()> {
    let end = sp_core::adopt()?;
    let mut ctl = Channel::new(end)?.with_max_message_len(MAX_CONTROL_LEN);
    let msg = ctl.recv_timeout(SLACK)?;
    let Control::Setup { spec, extra } = serde_json::from_slice(&msg.bytes)? else {
        return Err(Error::Child(
            "the first control message was not a setup".into(),
        ));
    };
    if spec.pin {
        cpu::pin_current_thread(cpu::PEER_CPU);
    }
    // The child's own bound, in case the driver is stuck rather than gone.
    let limit = spec.limit() + SLACK;
    std::thread::Builder::new()
        .name("sp-bench-peer-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            eprintln!("sp-bench peer: still running after {limit:?}; exiting");
            std::process::exit(4);
        })?;
    let res = serve(&mut ctl, &spec, &extra, msg.fds);
    if let Err(err) = &res {
        let _ = send_control(&ctl, &Control::Failed(err.to_string()));
    }
    res
}

fn measure_processes(spec: &RunSpec, exe: &Path) -> Result<Sample> {
    let (ctl_mine, ctl_theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    let mut cmd = Command::new(exe);
    cmd.arg(PEER_ARG).stdin(Stdio::null()).stdout(Stdio::null());
    let opts = SpawnOptions::new().parent_death_signal(Signal::KILL);
    let mut child = sp_core::spawn_with(&mut cmd, ctl_theirs, opts)?;
    let victim = match child.pidfd() {
        Some(fd) => match rustix::io::fcntl_dupfd_cloexec(fd, 0) {
            Ok(fd) => Victim::Pidfd(fd),
            Err(_) => Victim::Pid(child.id()),
        },
        None => Victim::Pid(child.id()),
    };
    let dog = Watchdog::arm(spec.limit(), victim, spec.describe());
    let res = drive_child(spec, ctl_mine);
    if res.is_err() {
        let _ = child.kill();
    }
    let status = child.wait();
    if dog.disarm() {
        return Err(Error::TimedOut("the measurement ran past its limit"));
    }
    let sample = res?;
    let status = status?;
    if !status.success() {
        return Err(Error::Child(format!("exited with {status}")));
    }
    Ok(sample)
}

fn drive_child(spec: &RunSpec, ctl_end: End) -> Result<Sample> {
    let mut ctl = Channel::new(ctl_end)?.with_max_message_len(MAX_CONTROL_LEN);
    let Offer { extra, fds, finish } = transport::offer(spec.transport, spec.size)?;
    let setup = serde_json::to_vec(&Control::Setup {
        spec: spec.clone(),
        extra,
    })?;
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|fd| fd.as_fd()).collect();
    ctl.send(&setup, &borrowed)?;
    drop(borrowed);
    drop(fds);
    let mut link = match finish() {
        Ok(link) => link,
        Err(err) => return Err(child_error_or(&mut ctl, err)),
    };
    match recv_control(&mut ctl, spec.limit())? {
        Control::Ready => {}
        Control::Failed(why) => return Err(Error::Child(why)),
        other => return Err(Error::Child(format!("unexpected {other:?}"))),
    }
    let limit = spec.limit();
    let mut rounds = Vec::with_capacity(2);
    for duration in [spec.warmup, spec.duration] {
        let res = drive_round(&mut *link, spec, duration, CpuClock::Process, &mut || {
            read_report(&mut ctl, limit)
        });
        match res {
            Ok(round) => rounds.push(round),
            Err(err) => return Err(child_error_or(&mut ctl, err)),
        }
    }
    let round = rounds.pop().ok_or(Error::Child("no round".into()))?;
    Ok(sample_from(spec, round))
}

/// Turns a driver-side error into the child's own explanation, if it sent one.
fn child_error_or(ctl: &mut Channel, err: Error) -> Error {
    match recv_control(ctl, Duration::from_secs(1)) {
        Ok(Control::Failed(why)) => Error::Child(why),
        _ => err,
    }
}

fn recv_control(ctl: &mut Channel, limit: Duration) -> Result<Control> {
    let msg = ctl.recv_timeout(limit).map_err(|err| match err {
        sp_core::Error::TimedOut => Error::TimedOut("waiting for the child"),
        sp_core::Error::PeerGone => Error::Child("exited before reporting".into()),
        other => Error::Core(other),
    })?;
    Ok(serde_json::from_slice(&msg.bytes)?)
}

fn read_report(ctl: &mut Channel, limit: Duration) -> Result<SideReport> {
    match recv_control(ctl, limit)? {
        Control::Report(report) => Ok(report),
        Control::Failed(why) => Err(Error::Child(why)),
        other => Err(Error::Child(format!("unexpected {other:?}"))),
    }
}

fn send_control(ctl: &Channel, msg: &Control) -> Result<()> {
    Ok(ctl.send(&serde_json::to_vec(msg)?, &[])?)
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

fn serve(
    ctl: &mut Channel,
    spec: &RunSpec,
    extra: &str,
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<()> {
    let mut link = transport::accept(spec.transport, spec.size, extra, fds)?;
    send_control(ctl, &Control::Ready)?;
    for _ in 0..2 {
        let report = serve_round(&mut *link, spec, CpuClock::Process)?;
        send_control(ctl, &Control::Report(report))?;
    }
    Ok(())
}

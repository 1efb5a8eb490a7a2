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
//! A [`Watchdog`](crate::watchdog::Watchdog) bounds every measurement. The round loops are in
//! `round.rs`, shared with the in-process ceilings (`ceiling.rs`).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sp_core::{Channel, End, Signal, SocketKind, SpawnOptions};

use crate::cpu::{self, CpuClock};
use crate::error::{Error, Result};
use crate::payload::MIN_SIZE;
use crate::round::{SideReport, drive_round, sample_from, serve_round};
use crate::spec::{Mode, RunSpec, SLACK, Sample};
use crate::transport::{self, Offer, Placement};
use crate::watchdog::{Victim, Watchdog};

/// The first argument that makes the sp-bench binary play the child side of a measurement.
pub const PEER_ARG: &str = "__sp-bench-peer";

/// Largest control message (a spec or a report as JSON).
const MAX_CONTROL_LEN: usize = 64 << 10;

/// The control messages, as JSON over the sp-core control channel.
#[derive(Debug, Serialize, Deserialize)]
enum Control {
    Setup { spec: RunSpec, extra: String },
    Ready,
    Report(SideReport),
    Failed(String),
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
        Placement::Scenario => crate::scenario::measure(spec, exe),
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
    let Offer { extra, fds, finish } =
        transport::offer(spec.transport, spec.size, spec.mode == Mode::Latency)?;
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
        sp_core::RecvTimeoutError::Timeout => Error::TimedOut("waiting for the child"),
        sp_core::RecvTimeoutError::Broken(sp_core::Error::PeerGone) => {
            Error::Child("exited before reporting".into())
        }
        sp_core::RecvTimeoutError::Broken(other) => Error::Core(other),
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

fn serve(
    ctl: &mut Channel,
    spec: &RunSpec,
    extra: &str,
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<()> {
    let mut link = transport::accept(
        spec.transport,
        spec.size,
        spec.mode == Mode::Latency,
        extra,
        fds,
    )?;
    send_control(ctl, &Control::Ready)?;
    for _ in 0..2 {
        let report = serve_round(&mut *link, spec, CpuClock::Process)?;
        send_control(ctl, &Control::Report(report))?;
    }
    Ok(())
}

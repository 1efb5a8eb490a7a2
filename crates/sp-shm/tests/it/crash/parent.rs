//! The crash suite's parent kills: the *parent* of a pair is killed, and its child must notice.
//!
//! A round has three processes. This side (the test, T) starts child A (role `crash-parent`,
//! with `PR_SET_PDEATHSIG` so that it never outlives T). A starts B (role `crash-orphan`) the way
//! an application would, with `sp_shm::spawn` and no parent-death signal (or, for the handshake
//! point, by hand with the independent peer), and talks to it. A tells T B's pid, then that it has
//! reached its point; where the point is "B parked", T also waits until B's main thread is inside
//! `poll`. T kills A. Then B must, on its own:
//!
//! - see every record A committed (and only those), whole and in order, then `PeerGone`, from
//!   every blocked or parked operation (or from `sp_shm::adopt`, if the handshake was cut);
//! - close everything the pair opened: once it has dropped the duplex, its descriptor table is
//!   the one it started with less the end it adopted;
//! - exit with status 0 within [`PROMPT`] of the kill.
//!
//! T is a child subreaper (`PR_SET_CHILD_SUBREAPER`) for the trial, so B becomes T's child when
//! A dies: T waits for B's exit through a pidfd (with the bound above), sees it in `/proc` as a
//! zombie whose parent is T, reaps it and reads its exit status, then checks that B's pid is gone
//! from `/proc` and that no process has T as its parent. B writes its tally (records and messages
//! it checked) to its stdout, a pipe T reads once A and B are gone, which must then be at its end
//! (nobody else holds it); what went wrong, B says on its stderr, which the test's stderr shows.

use std::os::fd::{OwnedFd, RawFd};
use std::process::Stdio;
use std::sync::mpsc;

use rustix::pipe::PipeFlags;
use sp_core::{Channel, SocketKind, SpawnOptions};
use sp_shm::{Config, Duplex};
use sp_test_support::fds::{fd_diff, open_fds};
use sp_test_support::procs::{
    Descendant, Subreaper, process_state, state_and_parent, wait_until_thread_in_poll,
};
use sp_test_support::rng::XorShift;
use sp_test_support::shm::{self, Flaw, Ring};

use super::roles::wait_for_kill;
use super::{
    FD_WINDOW, Reaper, STEP, Tally, check_fd_message, command, ring_bytes, send_fds_forever,
};
use crate::cross::{check_record, consume, produce, record_len, write_record};
use crate::hostile::{CAPACITY, MAX_PAYLOAD};
use crate::{PROMPT, TestResult};

/// Set in A and B: the name of the round's point.
const POINT_ENV: &str = "SP_CRASH_POINT";

/// Where A is when it is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Point {
    /// A committed K records and stopped; B read them all and parked its consumer.
    ChildConsumerParked,
    /// A never reads; B filled its ring and parked its producer.
    ChildProducerParked,
    /// A committed K records, committed some more with `commit_deferred`, and holds a
    /// half-written grant.
    MidReserve,
    /// Both directions stream; A has read a random number of B's records.
    Stream,
    /// A is sending messages with descriptors and blobs on the control channel.
    FdSend,
    /// A runs the handshake by hand (the independent peer) and stops at a random step: before
    /// its OFFER, after it, after B's OFFER, or after READY both ways.
    Handshake,
}

pub(super) const POINTS: [Point; 6] = [
    Point::ChildConsumerParked,
    Point::ChildProducerParked,
    Point::MidReserve,
    Point::Stream,
    Point::FdSend,
    Point::Handshake,
];

impl Point {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::ChildConsumerParked => "child_consumer_parked",
            Self::ChildProducerParked => "child_producer_parked",
            Self::MidReserve => "mid_reserve",
            Self::Stream => "streaming_both_ways",
            Self::FdSend => "mid_fd_send",
            Self::Handshake => "during_handshake",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        POINTS.into_iter().find(|p| p.name() == name)
    }

    /// Whether T waits for B's main thread in `poll` before it kills A.
    fn b_parks(self) -> bool {
        matches!(
            self,
            Self::ChildConsumerParked | Self::ChildProducerParked | Self::Handshake
        )
    }
}

/// Runs one scenario's rounds (`rounds` is the suite's runner) with this process a child
/// subreaper throughout.
pub(super) fn run(
    point: Point,
    rounds: impl FnOnce(&mut dyn FnMut(&mut XorShift, &mut Tally) -> TestResult) -> TestResult,
) -> TestResult {
    let _subreaper = Subreaper::set()?;
    rounds(&mut |rng, tally| round(point, rng, tally))
}

/// A and B of a round, ended in that order whatever happens: A killed and reaped first, so that
/// B (killed through its pidfd) is this process's child by the time it is reaped.
struct Family {
    a: Option<Reaper>,
    b: Option<Descendant>,
}

impl Drop for Family {
    fn drop(&mut self) {
        drop(self.a.take());
        drop(self.b.take());
    }
}

fn round(point: Point, rng: &mut XorShift, tally: &mut Tally) -> TestResult {
    let idle = if point.b_parks() {
        rng.pick(&["adaptive", "park"])
    } else {
        rng.pick(&["spin", "adaptive", "park"])
    };
    let capacity: usize = rng.pick(&[4096, 16 << 10, 64 << 10]);
    let config = Config::new().capacity(capacity);
    let param = match point {
        Point::ChildConsumerParked => rng.below(64),
        Point::ChildProducerParked => 0,
        Point::MidReserve => {
            // As the child-kill writer: everything fits without B reading, so A never waits.
            let deferred = rng.below(4);
            let room = capacity - (8 + config.max_payload_bytes() + 8);
            let mut k = rng.below(capacity as u64 / 64);
            while k > 0 && ring_bytes(k + deferred) > room {
                k -= 1;
            }
            k | deferred << 32 | u64::from(rng.below(2) == 1) << 48
        }
        Point::Stream => rng.below(3000),
        Point::FdSend => 1 + rng.below(48),
        Point::Handshake => rng.below(4),
    };
    let (ours, theirs) = sp_core::pair(SocketKind::SeqPacket).map_err(|e| e.to_string())?;
    // A's and B's stdout: B writes its tally there, and once both are gone it reads to its end.
    let (tally_in, tally_out) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| e.to_string())?;
    let a = {
        let mut cmd = command("crash-parent", idle, capacity, param);
        cmd.env(POINT_ENV, point.name())
            .stdout(Stdio::from(tally_out));
        let opts = SpawnOptions::new().parent_death_signal(sp_core::Signal::KILL);
        sp_core::spawn_with(&mut cmd, theirs, opts).map_err(|e| format!("spawn A: {e}"))?
        // `cmd`, and with it this process's copy of the pipe's write end, is dropped here.
    };
    let mut family = Family {
        a: Some(Reaper(a)),
        b: None,
    };
    let mut from_a = Channel::new(ours).map_err(|e| e.to_string())?;
    let msg = from_a
        .recv_timeout(STEP)
        .map_err(|e| format!("A never said who B is: {e}"))?;
    let b_pid: u32 = String::from_utf8_lossy(&msg.bytes)
        .parse()
        .map_err(|_| format!("not a pid: {:?}", msg.bytes))?;
    family.b = Some(Descendant::open(b_pid)?);
    let msg = from_a
        .recv_timeout(STEP)
        .map_err(|e| format!("waiting for A to reach its point: {e}"))?;
    if msg.bytes != b"reached" {
        return Err(format!("unexpected message from A: {:?}", msg.bytes));
    }
    if point.b_parks() {
        wait_until_thread_in_poll(b_pid, b_pid, STEP).map_err(|e| format!("B: {e}"))?;
    }
    let mut a = family.a.take().ok_or("A is gone")?;
    let killed = a.kill()?;
    a.reap_killed().map_err(|e| format!("A: {e}"))?;
    tally.kills += 1;
    let b = family.b.as_mut().ok_or("B is gone")?;
    if !b.ended_by(killed + PROMPT) {
        return Err(format!(
            "B (pid {b_pid}, idle {idle}, param {param}) was still running {PROMPT:?} after \
             its parent was killed"
        ));
    }
    // Ended, and (this process being a subreaper) a zombie child of this process, not of init.
    match state_and_parent(b_pid) {
        Some(('Z', parent)) if parent == std::process::id() => {}
        other => {
            return Err(format!(
                "B ended but is not this process's zombie: {other:?}"
            ));
        }
    }
    match b.reap() {
        Ok(0) => {}
        Ok(code) => return Err(format!("B exited with {code} (its stderr says why)")),
        Err(why) => return Err(format!("B: {why}")),
    }
    if let Some(state) = process_state(b_pid) {
        return Err(format!(
            "B (pid {b_pid}) is still in /proc, state {state}, after reaping"
        ));
    }
    let (records, messages) = read_tally(&tally_in)?;
    tally.records += records;
    tally.messages += messages;
    tally.orphans += 1;
    tally.handshakes += u64::from(point == Point::Handshake);
    Ok(())
}

/// B's tally (records and messages it checked), from the pipe that was A's and B's stdout. Both
/// are gone, so the pipe must be at its end: a process still holding it would be one left behind.
fn read_tally(pipe: &OwnedFd) -> Result<(u64, u64), String> {
    rustix::io::ioctl_fionbio(pipe, true).map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match rustix::io::read(pipe, &mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                return Err("A and B are gone, yet someone still holds their stdout".into());
            }
            Err(err) => return Err(format!("read B's tally: {err}")),
        }
    }
    let text = String::from_utf8_lossy(&text);
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    match (words.next(), words.next(), words.next()) {
        (Some(Ok(records)), Some(Ok(messages)), None) => Ok((records, messages)),
        _ => Err(format!("B's tally: {text:?}")),
    }
}

// --- A: the parent that is killed -------------------------------------------------------------

/// A: starts B, tells T its pid, talks to it until the point, says "reached", and waits to be
/// killed.
pub(super) fn parent_role(idle: &str, config: &Config, param: u64) -> TestResult {
    let point = current_point()?;
    let end = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
    let mut to_t = Channel::new(end).map_err(|e| e.to_string())?;
    let mut cmd = command("crash-orphan", idle, config.capacity_bytes(), param);
    cmd.env(POINT_ENV, point.name());
    if point == Point::Handshake {
        return parent_handshake(&mut cmd, &mut to_t, param);
    }
    // As an application would: no parent-death signal, so B outlives A unless it notices.
    let (b, duplex) = sp_shm::spawn(&mut cmd, SpawnOptions::new(), config)
        .map_err(|e| format!("spawn B: {e}"))?;
    say(&to_t, b.id().to_string().as_bytes())?;
    let (mut producer, mut consumer, mut control) = duplex.into_parts();
    match point {
        Point::ChildConsumerParked => {
            produce(&mut producer, param).map_err(|e| e.to_string())?;
            expect(&mut control, b"parking")?;
        }
        Point::ChildProducerParked => expect(&mut control, b"parking")?,
        Point::MidReserve => {
            let (k, deferred, hold) = split_mid_reserve(param);
            produce(&mut producer, k).map_err(|e| e.to_string())?;
            for seq in k..k + deferred {
                let mut grant = producer
                    .reserve(record_len(seq))
                    .map_err(|e| e.to_string())?;
                let used = write_record(seq, &mut grant);
                grant.commit_deferred(used);
            }
            // Held (never committed) while this process waits to be killed.
            let _grant = if hold {
                let mut grant = producer
                    .reserve(config.max_payload_bytes())
                    .map_err(|e| e.to_string())?;
                let half = grant.len() / 2;
                grant[..half].fill(0xEE);
                Some(grant)
            } else {
                None
            };
            return wait_for_kill(&mut to_t, b"reached");
        }
        Point::Stream => {
            let _sender = std::thread::spawn(move || produce(&mut producer, u64::MAX));
            consume(&mut consumer, param)?;
            say(&to_t, b"reached")?;
            // Go on reading (checking nothing more) until killed.
            let mut buf = Vec::new();
            loop {
                consumer
                    .recv_into_timeout(&mut buf, STEP)
                    .map_err(|e| format!("expected to be killed, got {e}"))?;
            }
        }
        Point::FdSend => {
            return send_fds_forever(&control, &mut consumer, |seq| {
                if seq + 1 == param {
                    say(&to_t, b"reached")?;
                }
                Ok(())
            });
        }
        Point::Handshake => unreachable!("handled above"),
    }
    wait_for_kill(&mut to_t, b"reached")
}

/// A's handshake by hand, with the independent peer: B is started with `sp_core::spawn_with`, and
/// A goes as far as step `step` (0: nothing sent; 1: A's OFFER sent; 2: B's OFFER received;
/// 3: READY both ways, so B's `adopt` completes).
fn parent_handshake(cmd: &mut std::process::Command, to_t: &mut Channel, step: u64) -> TestResult {
    let (ours, theirs) = sp_core::pair(SocketKind::SeqPacket).map_err(|e| e.to_string())?;
    let b = sp_core::spawn_with(cmd, theirs, SpawnOptions::new())
        .map_err(|e| format!("spawn B: {e}"))?;
    say(to_t, b.id().to_string().as_bytes())?;
    let mut ring = Ring::new(CAPACITY, MAX_PAYLOAD, Flaw::None)?;
    let _theirs = if step >= 1 {
        ring.send_offer(&ours)?;
        if step >= 2 {
            Some(shm::recv_offer(&ours, STEP)?)
        } else {
            None
        }
    } else {
        None
    };
    if step >= 3 {
        shm::exchange_ready(&ours, STEP)?;
    }
    wait_for_kill(to_t, b"reached")
}

// --- B: the child whose parent is killed ------------------------------------------------------

/// B: checks what its point promises, then that the pair left nothing open.
pub(super) fn orphan_role(config: &Config, param: u64) -> TestResult {
    let point = current_point()?;
    let adopted: RawFd = std::env::var(sp_core::FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or("no SP_CORE_FD")?;
    let mut want = open_fds();
    want.remove(&adopted);
    let (records, messages) = match sp_shm::adopt(config) {
        Ok(duplex) => orphan(point, duplex, param)?,
        Err(sp_shm::Error::PeerGone) if point == Point::Handshake && param < 3 => (0, 0),
        Err(err) => return Err(format!("adopt: {err}")),
    };
    fd_diff(&want, &open_fds())
        .map_err(|e| format!("after PeerGone, with the duplex dropped: {e}"))?;
    println!("{records} {messages}");
    Ok(())
}

/// What B does at `point` until `PeerGone`; the records and messages it checked.
fn orphan(point: Point, duplex: Duplex, param: u64) -> Result<(u64, u64), String> {
    let (mut producer, mut consumer, mut control) = duplex.into_parts();
    let (mut records, mut messages) = (0, 0);
    match point {
        Point::ChildConsumerParked => {
            consume(&mut consumer, param)?;
            say(&control, b"parking")?;
            let more = read_until_gone(&mut consumer, param)?;
            if more != 0 {
                return Err(format!("{more} records after the {param} the parent sent"));
            }
            records = param;
        }
        Point::ChildProducerParked => {
            let mut record = [0u8; 256];
            let mut seq = 0;
            loop {
                let len = write_record(seq, &mut record);
                match producer.try_send(&record[..len]) {
                    Ok(()) => seq += 1,
                    Err(err) if err.is_full() => break,
                    Err(err) => return Err(format!("filling: {err}")),
                }
            }
            say(&control, b"parking")?;
            let len = write_record(seq, &mut record);
            match producer.send_timeout(&record[..len], STEP) {
                Err(err) if err.is_disconnected() => {}
                other => return Err(format!("blocked send: {other:?}, not PeerGone")),
            }
        }
        Point::MidReserve => {
            let (k, deferred, hold) = split_mid_reserve(param);
            let n = read_until_gone(&mut consumer, 0)?;
            if n != k + deferred {
                return Err(format!(
                    "{k} records committed and {deferred} deferred, {n} delivered (grant held: \
                     {hold})"
                ));
            }
            records = n;
        }
        Point::Stream => {
            let (done_tx, done_rx) = mpsc::channel();
            let sender = std::thread::spawn(move || {
                let _ = done_tx.send(produce(&mut producer, u64::MAX));
            });
            let n = read_until_gone(&mut consumer, 0)?;
            let sent = done_rx
                .recv_timeout(STEP)
                .map_err(|_| "the producer never noticed the parent's death")?;
            sender.join().map_err(|_| "producer thread panicked")?;
            match sent {
                Err(sp_shm::Error::PeerGone) => {}
                other => return Err(format!("producer ended with {other:?} after {n} records")),
            }
            records = n;
        }
        Point::FdSend => {
            let mut seq = 0;
            loop {
                match control.recv_timeout(STEP) {
                    Ok(msg) => check_fd_message(seq, msg)?,
                    Err(err) if err.is_disconnected() => break,
                    Err(err) => return Err(format!("message {seq}: {err}")),
                }
                if seq % FD_WINDOW == FD_WINDOW - 1 {
                    match producer.send(b"ack") {
                        Ok(()) => {}
                        Err(sp_shm::Error::PeerGone) => {}
                        Err(err) => return Err(format!("ack: {err}")),
                    }
                }
                seq += 1;
            }
            messages = seq;
        }
        Point::Handshake => {
            // READY both ways: the parent's ring is empty, and stays so.
            match consumer.read_timeout(STEP).map(|rec| rec.len()) {
                Err(err) if err.is_disconnected() => {}
                other => return Err(format!("after a complete handshake: {other:?}")),
            }
        }
    }
    Ok((records, messages))
}

/// Reads records `first..` until `PeerGone`, checking each; how many arrived.
fn read_until_gone(consumer: &mut sp_shm::Consumer, first: u64) -> Result<u64, String> {
    let mut buf = Vec::new();
    let mut seq = first;
    loop {
        match consumer.recv_into_timeout(&mut buf, STEP) {
            Ok(_) => {
                check_record(seq, &buf)?;
                seq += 1;
            }
            Err(err) if err.is_disconnected() => return Ok(seq - first),
            Err(err) => return Err(format!("record {seq}: {err}, not PeerGone")),
        }
    }
}

fn split_mid_reserve(param: u64) -> (u64, u64, bool) {
    (
        param & 0xFFFF_FFFF,
        (param >> 32) & 0xFFFF,
        param >> 48 == 1,
    )
}

fn current_point() -> Result<Point, String> {
    let name = std::env::var(POINT_ENV).unwrap_or_default();
    Point::from_name(&name).ok_or_else(|| format!("no point named {name:?}"))
}

fn say(channel: &Channel, bytes: &[u8]) -> TestResult {
    channel.send(bytes, &[]).map_err(|e| e.to_string())
}

fn expect(channel: &mut Channel, want: &[u8]) -> TestResult {
    let msg = channel
        .recv_timeout(STEP)
        .map_err(|e| format!("waiting for {:?}: {e}", String::from_utf8_lossy(want)))?;
    if msg.bytes == want {
        Ok(())
    } else {
        Err(format!("expected {want:?}, got {:?}", msg.bytes))
    }
}

//! The crash suite's child kills, this side: a child killed at each point of `Point`, and what
//! this side must see afterwards (see `mod.rs`). The child's side is `roles.rs`.

use std::sync::mpsc;
use std::time::Instant;

use sp_shm::{Config, Error};
use sp_test_support::procs::{children_of_this_process, wait_until_thread_in_poll};
use sp_test_support::rng::XorShift;

use super::{
    FD_WINDOW, Reaper, STEP, Tally, check_fd_message, command, drain_then_peer_gone, ring_bytes,
    send_until_peer_gone, spawn,
};
use crate::cross::{check_record, kill_when_waiting, produce, write_record};
use crate::{PROMPT, TestResult, idle_from};

/// The scenarios, by where the child is when it dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Point {
    /// Committed K records, committed some more with `commit_deferred` (visible at once: a
    /// record's header publishes it; only the wake-up is deferred), holds a half-written grant.
    MidReserve,
    /// Published K records and stopped.
    AfterCommit,
    /// Its producer is parked on a full ring.
    ParkedProducer,
    /// Its consumer is parked on an empty ring.
    ParkedConsumer,
    /// Its consumer holds a read grant.
    HoldingRead,
    /// It is sending messages with descriptors and blobs on the control channel.
    FdSend,
    /// It streams records both ways.
    Stream,
    /// It is in the middle of the handshake (before its OFFER, after it, before READY, or just
    /// after a complete handshake).
    Handshake,
}

pub(super) const POINTS: [Point; 8] = [
    Point::MidReserve,
    Point::AfterCommit,
    Point::ParkedProducer,
    Point::ParkedConsumer,
    Point::HoldingRead,
    Point::FdSend,
    Point::Stream,
    Point::Handshake,
];

impl Point {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::MidReserve => "mid_reserve",
            Self::AfterCommit => "after_commit",
            Self::ParkedProducer => "parked_producer",
            Self::ParkedConsumer => "parked_consumer",
            Self::HoldingRead => "holding_read_grant",
            Self::FdSend => "mid_fd_send",
            Self::Stream => "streaming_both_ways",
            Self::Handshake => "during_handshake",
        }
    }
}

pub(super) fn round(point: Point, rng: &mut XorShift, tally: &mut Tally) -> TestResult {
    let parks = matches!(
        point,
        Point::ParkedProducer | Point::ParkedConsumer | Point::HoldingRead | Point::Handshake
    );
    let idle = if parks {
        rng.pick(&["adaptive", "park"])
    } else {
        rng.pick(&["spin", "adaptive", "park"])
    };
    let capacity = rng.pick(&[4096, 16 << 10, 64 << 10]);
    let config = Config::new().capacity(capacity).idle(idle_from(idle));
    tally.kills += 1;
    match point {
        Point::MidReserve | Point::AfterCommit => writer(point, rng, &config, idle, tally),
        Point::ParkedProducer => parked_producer(rng, &config, idle, tally),
        Point::ParkedConsumer => parked_consumer(rng, &config, idle, tally),
        Point::HoldingRead => holding_read(rng, &config, idle, tally),
        Point::FdSend => fd_send(rng, &config, idle, tally),
        Point::Stream => stream(rng, &config, idle, tally),
        Point::Handshake => handshake(rng, &config, idle, tally),
    }
}

/// Mid-reserve / after commit: the child commits `k` records, commits `deferred` more with
/// `commit_deferred` (published by their headers like the others; only the wake-up is skipped),
/// optionally half-writes a reserved record, says "reached", and is killed. This side sees
/// exactly the `k + deferred` committed records, whole, then `PeerGone`, and nothing of the
/// half-written one.
fn writer(
    point: Point,
    rng: &mut XorShift,
    config: &Config,
    idle: &str,
    tally: &mut Tally,
) -> TestResult {
    let capacity = config.capacity_bytes();
    let hold = point == Point::MidReserve;
    let deferred = if hold { rng.below(4) } else { 0 };
    // Everything the child writes must fit without this side reading, so it never waits: the
    // held grant needs its slot and the 8 bytes after it (the next header slot, which a commit
    // zeroes).
    let room = capacity - (8 + config.max_payload_bytes() + 8);
    let mut k = rng.below(capacity as u64 / 64);
    while k > 0 && ring_bytes(k + deferred) > room {
        k -= 1;
    }
    let param = k | deferred << 32 | u64::from(hold) << 48;
    let (reaper, duplex) = spawn(&mut command("crash-writer", idle, capacity, param), config)?;
    let mut reaper = reaper;
    let (_producer, mut consumer, mut control) = duplex.into_parts();
    // Read some records while the child is still writing.
    let early = rng.below(k + 1);
    let mut buf = Vec::new();
    for seq in 0..early {
        consumer
            .recv_into_timeout(&mut buf, STEP)
            .map_err(|e| format!("record {seq} before the kill: {e}"))?;
        check_record(seq, &buf)?;
    }
    let msg = control
        .recv_timeout(STEP)
        .map_err(|e| format!("waiting for the child to reach its point: {e}"))?;
    if msg.bytes != b"reached" {
        return Err(format!("unexpected control message {:?}", msg.bytes));
    }
    let killed = reaper.kill()?;
    let late = drain_then_peer_gone(&mut consumer, early, killed)?;
    if early + late != k + deferred {
        return Err(format!(
            "{k} records committed and {deferred} deferred, {} delivered (grant held: {hold})",
            early + late
        ));
    }
    tally.records += k + deferred;
    reaper.reap_killed()
}

/// The child's producer fills the ring and parks; it is killed while parked. This side reads
/// every record it committed, whole and in order, then `PeerGone`.
fn parked_producer(
    rng: &mut XorShift,
    config: &Config,
    idle: &str,
    tally: &mut Tally,
) -> TestResult {
    let capacity = config.capacity_bytes();
    let (mut reaper, duplex) = spawn(&mut command("crash-stream-out", idle, capacity, 0), config)?;
    let (_producer, mut consumer, _control) = duplex.into_parts();
    // Seen in `poll`, the child may be a process woken but not yet run again: still in the
    // handshake's wait for this side's READY, or parked on a ring this side has since drained.
    // So read at least one record first (the handshake is over), and fewer than fit in half the
    // ring: the child parks only on a full ring, which holds more than half the capacity in
    // records (a record and a wrap cost at most 2 x 272 bytes), so some stay committed and
    // unread when it is killed.
    let half = (0..64)
        .take_while(|&n| ring_bytes(n) <= capacity / 2)
        .count() as u64;
    let early = 1 + rng.below(half - 1);
    let mut buf = Vec::new();
    for seq in 0..early {
        consumer
            .recv_into_timeout(&mut buf, STEP)
            .map_err(|e| format!("record {seq}: {e}"))?;
        check_record(seq, &buf)?;
    }
    wait_until_in_poll(reaper.pid())?;
    let killed = reaper.kill()?;
    let late = drain_then_peer_gone(&mut consumer, early, killed)?;
    if late == 0 {
        return Err(format!(
            "the parked producer had committed nothing past record {early} (capacity {capacity})"
        ));
    }
    tally.records += early + late;
    reaper.reap_killed()
}

/// The child's consumer reads what this side sends and parks on the empty ring; it is killed
/// while parked. This side's sends then end in `PeerGone`, and its consumer reports `PeerGone`.
fn parked_consumer(
    rng: &mut XorShift,
    config: &Config,
    idle: &str,
    tally: &mut Tally,
) -> TestResult {
    let capacity = config.capacity_bytes();
    let (mut reaper, duplex) = spawn(&mut command("crash-stream-in", idle, capacity, 0), config)?;
    let (mut producer, mut consumer, _control) = duplex.into_parts();
    let n = rng.below(64);
    produce(&mut producer, n).map_err(|e| format!("send: {e}"))?;
    wait_until_in_poll(reaper.pid())?;
    let killed = reaper.kill()?;
    send_until_peer_gone(&mut producer, killed)?;
    drain_then_peer_gone(&mut consumer, 0, killed)?;
    tally.records += n;
    reaper.reap_killed()
}

/// The child reads `n - 1` records, holds a read grant on the last, says so, and is killed,
/// either at once or once this side is blocked sending into the full ring.
fn holding_read(rng: &mut XorShift, config: &Config, idle: &str, tally: &mut Tally) -> TestResult {
    let capacity = config.capacity_bytes();
    let n = 1 + rng.below(32);
    let (mut reaper, duplex) = spawn(&mut command("crash-holder", idle, capacity, n), config)?;
    let (mut producer, mut consumer, mut control) = duplex.into_parts();
    produce(&mut producer, n).map_err(|e| format!("send: {e}"))?;
    let msg = control
        .recv_timeout(STEP)
        .map_err(|e| format!("waiting for the grant: {e}"))?;
    if msg.bytes != (n - 1).to_le_bytes() {
        return Err(format!("child holds the wrong record: {:?}", msg.bytes));
    }
    let killed = if rng.below(2) == 0 {
        reaper.kill()?
    } else {
        // Fill the ring, then block in `send` and be woken by the kill.
        let mut record = [0u8; 256];
        let mut seq = n;
        loop {
            let len = write_record(seq, &mut record);
            match producer.try_send(&record[..len]) {
                Ok(()) => seq += 1,
                Err(err) if err.is_full() => break,
                Err(err) => return Err(format!("filling: {err}")),
            }
        }
        let killer = kill_when_waiting(reaper.pid(), idle);
        let len = write_record(seq, &mut record);
        let res = producer.send_timeout(&record[..len], STEP);
        let killed = killer.join().map_err(|_| "killer panicked")??;
        match res {
            Err(err) if err.is_disconnected() => {}
            other => return Err(format!("blocked send after the kill: {other:?}")),
        }
        killed
    };
    send_until_peer_gone(&mut producer, killed)?;
    drain_then_peer_gone(&mut consumer, 0, killed)?;
    tally.records += n;
    reaper.reap_killed()
}

/// The child sends messages with 1 to 4 memfds, and blobs, on the control channel; it is killed
/// after this side has received a random number. Every message that arrives is whole, with
/// exactly its descriptors and their contents, then `PeerGone`.
fn fd_send(rng: &mut XorShift, config: &Config, idle: &str, tally: &mut Tally) -> TestResult {
    let capacity = config.capacity_bytes();
    let (mut reaper, duplex) = spawn(&mut command("crash-fd-sender", idle, capacity, 0), config)?;
    let (mut producer, _consumer, mut control) = duplex.into_parts();
    let n = 1 + rng.below(48);
    for seq in 0..n {
        let msg = control
            .recv_timeout(STEP)
            .map_err(|e| format!("message {seq}: {e}"))?;
        check_fd_message(seq, msg)?;
        if seq % FD_WINDOW == FD_WINDOW - 1 {
            producer.send(b"ack").map_err(|e| format!("ack: {e}"))?;
        }
    }
    let killed = reaper.kill()?;
    let mut seq = n;
    loop {
        match control.recv_timeout(PROMPT) {
            Ok(msg) => check_fd_message(seq, msg)?,
            Err(err) if err.is_disconnected() => break,
            Err(err) => return Err(format!("message {seq} after the kill: {err}")),
        }
        seq += 1;
        if killed.elapsed() > PROMPT {
            return Err("still receiving long after the kill".into());
        }
    }
    tally.messages += seq;
    reaper.reap_killed()
}

/// Both directions stream at full speed; the child is killed once this side has read a random
/// number of records.
fn stream(rng: &mut XorShift, config: &Config, idle: &str, tally: &mut Tally) -> TestResult {
    let capacity = config.capacity_bytes();
    let (mut reaper, duplex) = spawn(&mut command("crash-stream-both", idle, capacity, 0), config)?;
    let (mut producer, mut consumer, _control) = duplex.into_parts();
    let (done_tx, done_rx) = mpsc::channel();
    let sender = std::thread::spawn(move || {
        let res = produce(&mut producer, u64::MAX);
        let _ = done_tx.send(res);
    });
    let n = rng.below(3000);
    let mut buf = Vec::new();
    for seq in 0..n {
        consumer
            .recv_into_timeout(&mut buf, STEP)
            .map_err(|e| format!("record {seq}: {e}"))?;
        check_record(seq, &buf)?;
    }
    let killed = reaper.kill()?;
    let late = drain_then_peer_gone(&mut consumer, n, killed)?;
    let sent = done_rx
        .recv_timeout(PROMPT)
        .map_err(|_| "this side's producer did not notice the kill")?;
    sender.join().map_err(|_| "producer thread panicked")?;
    match sent {
        Err(Error::PeerGone) => {}
        other => return Err(format!("producer ended with {other:?}")),
    }
    tally.records += n + late;
    reaper.reap_killed()
}

/// The child stops at a random step of the handshake and is killed once this side's thread waits
/// in `poll` (inside `sp_shm::spawn`, or reading after a completed handshake). `spawn` fails with
/// `PeerGone` and reaps the child itself, or a completed duplex reads `PeerGone`.
fn handshake(rng: &mut XorShift, config: &Config, idle: &str, tally: &mut Tally) -> TestResult {
    let stop_at = rng.below(4);
    let mut cmd = command("crash-handshake", idle, config.capacity_bytes(), stop_at);
    let tid = rustix::thread::gettid();
    let killer = std::thread::spawn(move || -> Result<Instant, String> {
        let deadline = Instant::now() + STEP;
        let pid = loop {
            if let [pid] = children_of_this_process()[..] {
                break pid;
            }
            if Instant::now() > deadline {
                return Err("no child appeared".into());
            }
            std::thread::yield_now();
        };
        wait_until_thread_in_poll(std::process::id(), tid.as_raw_nonzero().get() as u32, STEP)?;
        let pid = rustix::process::Pid::from_raw(pid as i32).ok_or("bad pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)
            .map_err(|e| format!("kill: {e}"))?;
        Ok(Instant::now())
    });
    let opts = sp_core::SpawnOptions::new().parent_death_signal(sp_core::Signal::KILL);
    let res = match sp_shm::spawn(&mut cmd, opts, config) {
        Ok((child, mut duplex)) => {
            let reaper = Reaper(child);
            let res = duplex.consumer().read_timeout(STEP).map(|rec| rec.len());
            let killed = killer.join().map_err(|_| "killer panicked")??;
            match res {
                Err(err) if err.is_disconnected() && killed.elapsed() < PROMPT => {}
                other => return Err(format!("after a complete handshake: {other:?}")),
            }
            reaper.reap_killed()
        }
        Err(err) => {
            let killed = killer.join().map_err(|_| "killer panicked")??;
            match err {
                Error::PeerGone if killed.elapsed() < PROMPT => Ok(()),
                other => Err(format!(
                    "spawn with the child stopped at step {stop_at}: {other}"
                )),
            }
        }
    };
    tally.handshakes += 1;
    res
}

/// Waits until the main thread of `pid` is inside `poll`/`ppoll`.
pub(super) fn wait_until_in_poll(pid: u32) -> TestResult {
    wait_until_thread_in_poll(pid, pid, STEP)
}

//! The crash suite: a child killed with `SIGKILL` at random points, hundreds of times.
//!
//! Each scenario is one trial that runs [`iterations`] rounds (`SP_CRASH_ITERS` per scenario,
//! default [`DEFAULT_ITERS`]). A round spawns this binary as a child, lets it reach a point (in
//! the middle of a reservation, after a commit, parked in `poll`, holding a read grant, sending
//! descriptors, or streaming both ways), kills it, and then checks that this side
//!
//! - never hangs (every wait has a bound, and the trial has a watchdog),
//! - receives only whole, checksummed records (or messages, or blobs) in sequence, and then
//!   `PeerGone`,
//! - leaked no descriptor (`/proc/self/fd` before and after the round), and
//! - left no child behind (the child is reaped, and no process in `/proc` has this one as its
//!   parent).
//!
//! The kill is triggered by what this side observes, never by a sleep: a random number of
//! records received, a control message the child sends on reaching its point, or the child's
//! thread seen inside `poll` in `/proc/<pid>/task/<tid>/syscall`. All random choices come from one
//! generator per scenario, seeded from `SP_CRASH_SEED` (or the clock); the seed is printed with
//! every result, so `SP_CRASH_SEED=<seed>` replays a failure.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use rustix::fs::MemfdFlags;
use sp_core::Channel;
use sp_shm::{BLOB_MAGIC, BLOB_MSG_LEN, Blob, Config, Duplex, Error};

use crate::cross::{
    PROMPT, TestResult, check_record, child_command, consume, idle_from, kill_when_waiting,
    open_fds, produce, record_len, spawn_child, trial_with_limit, write_record,
};
use crate::hostile::{self, Flaw};

const SEED_ENV: &str = "SP_CRASH_SEED";
const ITERS_ENV: &str = "SP_CRASH_ITERS";
const PARAM_ENV: &str = "SP_CRASH_PARAM";
const CAP_ENV: &str = "SP_CRASH_CAP";
/// Rounds per scenario in the default (CI) configuration: 8 scenarios, 1200 kills.
const DEFAULT_ITERS: u64 = 150;
/// The bound on any wait that happens before the kill (the child is alive and working).
const STEP: Duration = Duration::from_secs(10);
/// Messages the fd-sending child sends before it waits for an acknowledgement.
const FD_WINDOW: u64 = 8;

/// The scenarios, by where the child is when it dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
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

const POINTS: [Point; 8] = [
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
    fn name(self) -> &'static str {
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

/// What one scenario saw, summed over its rounds.
#[derive(Debug, Default)]
struct Tally {
    kills: u64,
    handshakes: u64,
    records: u64,
    messages: u64,
    fds_leaked: usize,
    children_left: usize,
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Kills and reaps the child when dropped, so that a failing round leaves nothing behind.
struct Reaper(sp_core::Child);

impl Reaper {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) -> Result<Instant, String> {
        self.0.kill().map_err(|e| format!("kill: {e}"))?;
        Ok(Instant::now())
    }

    /// Reaps the child; it must have died of `SIGKILL`, not of an error of its own.
    fn reap_killed(mut self) -> TestResult {
        let status = self.0.wait().map_err(|e| format!("wait: {e}"))?;
        if status.signal() != Some(rustix::process::Signal::KILL.as_raw()) {
            return Err(format!("child was not killed but ended with {status}"));
        }
        Ok(())
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One trial per scenario, with a watchdog that grows with the number of rounds.
pub(crate) fn trials() -> Vec<Trial> {
    let iters = iterations();
    let limit = Duration::from_secs(30) + Duration::from_millis(500) * iters as u32;
    POINTS
        .into_iter()
        .map(|point| {
            trial_with_limit(&format!("crash_{}", point.name()), limit, move || {
                run_scenario(point, iters)
            })
        })
        .collect()
}

fn iterations() -> u64 {
    std::env::var(ITERS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERS)
}

fn base_seed() -> u64 {
    std::env::var(SEED_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn run_scenario(point: Point, iters: u64) -> TestResult {
    let seed = base_seed();
    let mut rng = Rng::new(seed ^ (point as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut tally = Tally::default();
    let started = Instant::now();
    for i in 0..iters {
        let before = open_fds();
        let res = round(point, &mut rng, &mut tally);
        let after = open_fds();
        let leaked: Vec<&String> = after.difference(&before).collect();
        tally.fds_leaked += leaked.len();
        let children = children_of_this_process();
        tally.children_left += children.len();
        let res = res.and_then(|()| {
            if !leaked.is_empty() {
                return Err(format!("fds leaked: {leaked:?}"));
            }
            if !children.is_empty() {
                return Err(format!("children left behind: {children:?}"));
            }
            Ok(())
        });
        res.map_err(|e| {
            format!(
                "crash_{} round {i}: {e} (replay with {SEED_ENV}={seed})",
                point.name()
            )
        })?;
    }
    eprintln!(
        "  crash_{}: {} kills, {} handshakes, {} records and {} messages checked, fds leaked {}, children left {}, hangs 0; {SEED_ENV}={seed}; {:.2?}",
        point.name(),
        tally.kills,
        tally.handshakes,
        tally.records,
        tally.messages,
        tally.fds_leaked,
        tally.children_left,
        started.elapsed()
    );
    Ok(())
}

/// Processes whose parent is this process (zombies included), from `/proc/<pid>/stat`.
fn children_of_this_process() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid ...": the command may hold spaces and parentheses.
            let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after_comm.split_whitespace().nth(1) == Some(me.to_string().as_str())
        })
        .collect()
}

/// The child command for a scenario: role, idle strategy, ring capacity and a parameter.
fn command(role: &str, idle: &str, capacity: usize, param: u64) -> Command {
    let mut cmd = child_command(role, idle);
    cmd.env(CAP_ENV, capacity.to_string())
        .env(PARAM_ENV, param.to_string());
    cmd
}

fn spawn(cmd: &mut Command, config: &Config) -> Result<(Reaper, Duplex), String> {
    let (child, duplex) = spawn_child(cmd, config)?;
    Ok((Reaper(child), duplex))
}

fn round(point: Point, rng: &mut Rng, tally: &mut Tally) -> TestResult {
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

/// Bytes the records `0..n` take in the ring (no wrap: they start at offset 0).
fn ring_bytes(n: u64) -> usize {
    (0..n)
        .map(|seq| (8 + record_len(seq)).next_multiple_of(8))
        .sum()
}

/// Reads records `first..` until `PeerGone`, checking each; the child was killed at `killed`.
fn drain_then_peer_gone(
    consumer: &mut sp_shm::Consumer,
    first: u64,
    killed: Instant,
) -> Result<u64, String> {
    let mut buf = Vec::new();
    let mut seq = first;
    loop {
        match consumer.recv_into_timeout(&mut buf, PROMPT) {
            Ok(_) => {
                check_record(seq, &buf)?;
                seq += 1;
            }
            Err(err) if err.is_disconnected() => break,
            Err(err) => return Err(format!("after the kill, record {seq}: {err}")),
        }
        if killed.elapsed() > PROMPT {
            return Err(format!("still reading records {PROMPT:?} after the kill"));
        }
    }
    if killed.elapsed() > PROMPT {
        return Err(format!(
            "PeerGone came {:?} after the kill",
            killed.elapsed()
        ));
    }
    Ok(seq - first)
}

/// Sends until the producer reports `PeerGone`, which must come within [`PROMPT`].
fn send_until_peer_gone(producer: &mut sp_shm::Producer, killed: Instant) -> TestResult {
    let mut record = [0u8; 256];
    for seq in 0.. {
        let len = write_record(seq, &mut record);
        match producer.send_timeout(&record[..len], PROMPT) {
            Ok(()) => {}
            Err(err) if err.is_disconnected() => break,
            Err(err) => return Err(format!("send after the kill: {err}")),
        }
        if killed.elapsed() > PROMPT {
            return Err("the producer never noticed the kill".into());
        }
    }
    Ok(())
}

// --- scenarios, this side -------------------------------------------------------------------

/// Mid-reserve / after commit: the child commits `k` records, commits `deferred` more with
/// `commit_deferred` (published by their headers like the others; only the wake-up is skipped),
/// optionally half-writes a reserved record, says "reached", and is killed. This side sees
/// exactly the `k + deferred` committed records, whole, then `PeerGone`, and nothing of the
/// half-written one.
fn writer(
    point: Point,
    rng: &mut Rng,
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
fn parked_producer(rng: &mut Rng, config: &Config, idle: &str, tally: &mut Tally) -> TestResult {
    let capacity = config.capacity_bytes();
    let (mut reaper, duplex) = spawn(&mut command("crash-stream-out", idle, capacity, 0), config)?;
    let (_producer, mut consumer, _control) = duplex.into_parts();
    let early = rng.below(64);
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
        return Err("the parked producer had committed nothing".into());
    }
    tally.records += early + late;
    reaper.reap_killed()
}

/// The child's consumer reads what this side sends and parks on the empty ring; it is killed
/// while parked. This side's sends then end in `PeerGone`, and its consumer reports `PeerGone`.
fn parked_consumer(rng: &mut Rng, config: &Config, idle: &str, tally: &mut Tally) -> TestResult {
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
fn holding_read(rng: &mut Rng, config: &Config, idle: &str, tally: &mut Tally) -> TestResult {
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
fn fd_send(rng: &mut Rng, config: &Config, idle: &str, tally: &mut Tally) -> TestResult {
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
fn stream(rng: &mut Rng, config: &Config, idle: &str, tally: &mut Tally) -> TestResult {
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
fn handshake(rng: &mut Rng, config: &Config, idle: &str, tally: &mut Tally) -> TestResult {
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
        wait_until_thread_in_poll(std::process::id(), tid.as_raw_nonzero().get() as u32)?;
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
fn wait_until_in_poll(pid: u32) -> TestResult {
    wait_until_thread_in_poll(pid, pid)
}

/// Waits until thread `tid` of process `pid` is inside `poll`/`ppoll`.
fn wait_until_thread_in_poll(pid: u32, tid: u32) -> TestResult {
    let path = format!("/proc/{pid}/task/{tid}/syscall");
    let deadline = Instant::now() + STEP;
    loop {
        let syscall = std::fs::read_to_string(&path).unwrap_or_default();
        let nr = syscall.split_whitespace().next().unwrap_or("");
        // x86-64: 7 = poll, 271 = ppoll; aarch64: 73 = ppoll.
        if ["7", "271", "73"].contains(&nr) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("thread {tid} never parked (syscall: {syscall:?})"));
        }
        std::thread::yield_now();
    }
}

fn fd_contents(seq: u64, fd_idx: usize) -> Vec<u8> {
    let mut record = [0u8; 256];
    let len = write_record(seq, &mut record);
    let mut out = vec![fd_idx as u8];
    out.extend_from_slice(&record[..len]);
    out
}

fn n_fds_for(seq: u64) -> usize {
    1 + (seq % 4) as usize
}

fn is_blob(seq: u64) -> bool {
    seq % 5 == 4
}

fn check_fd_message(seq: u64, msg: sp_core::Message) -> TestResult {
    if is_blob(seq) {
        if msg.bytes.len() != BLOB_MSG_LEN || msg.bytes[..8] != BLOB_MAGIC {
            return Err(format!("message {seq}: expected a blob"));
        }
        let blob = Blob::from_message(msg).map_err(|e| format!("blob {seq}: {e}"))?;
        return check_record(seq, &blob);
    }
    check_record(seq, &msg.bytes)?;
    if msg.fds.len() != n_fds_for(seq) {
        return Err(format!(
            "message {seq}: {} fds, expected {}",
            msg.fds.len(),
            n_fds_for(seq)
        ));
    }
    for (fd_idx, fd) in msg.fds.iter().enumerate() {
        let want = fd_contents(seq, fd_idx);
        let mut got = vec![0u8; want.len() + 1];
        let n = rustix::io::pread(fd, &mut got, 0).map_err(|e| format!("pread: {e}"))?;
        if got[..n] != want[..] {
            return Err(format!("message {seq}: fd {fd_idx} holds the wrong bytes"));
        }
    }
    Ok(())
}

// --- child roles ----------------------------------------------------------------------------

pub(crate) fn child_main(role: &str, idle: &str) -> TestResult {
    let param: u64 = std::env::var(PARAM_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let capacity: usize = std::env::var(CAP_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 << 10);
    let config = Config::new().capacity(capacity).idle(idle_from(idle));
    if role == "crash-handshake" && param < 3 {
        return stop_in_handshake(param);
    }
    let duplex = sp_shm::adopt(&config).map_err(|e| format!("adopt: {e}"))?;
    let (mut producer, mut consumer, mut control) = duplex.into_parts();
    match role {
        "crash-writer" => {
            let (k, deferred, hold) = (param & 0xFFFF_FFFF, (param >> 32) & 0xFFFF, param >> 48);
            produce(&mut producer, k).map_err(|e| e.to_string())?;
            for seq in k..k + deferred {
                let mut grant = producer
                    .reserve(record_len(seq))
                    .map_err(|e| e.to_string())?;
                let used = write_record(seq, &mut grant);
                grant.commit_deferred(used);
            }
            // Held (never committed) while this process waits to be killed.
            let _grant = if hold == 1 {
                let mut grant = producer
                    .reserve(config.max_payload_bytes())
                    .map_err(|e| e.to_string())?;
                let half = grant.len() / 2;
                grant[..half].fill(0xEE);
                Some(grant)
            } else {
                None
            };
            wait_for_kill(&mut control, b"reached")
        }
        "crash-stream-out" => produce(&mut producer, u64::MAX).map_err(|e| e.to_string()),
        "crash-stream-in" => consume(&mut consumer, u64::MAX),
        "crash-stream-both" => {
            let sender = std::thread::spawn(move || produce(&mut producer, u64::MAX));
            consume(&mut consumer, u64::MAX)?;
            sender
                .join()
                .map_err(|_| "producer panicked")?
                .map_err(|e| e.to_string())
        }
        "crash-holder" => {
            consume(&mut consumer, param - 1)?;
            let grant = consumer.read().map_err(|e| e.to_string())?;
            check_record(param - 1, &grant.to_vec())?;
            wait_for_kill(&mut control, &(param - 1).to_le_bytes())?;
            drop(grant);
            Ok(())
        }
        "crash-fd-sender" => send_fds_forever(&control, &mut consumer),
        "crash-handshake" => wait_for_kill(&mut control, b"ready"),
        _ => Err(format!("unknown role {role}")),
    }
}

/// Follows the handshake by hand up to `step` (0: nothing sent, 1: OFFER sent, 2: the parent's
/// OFFER received, READY not sent), then waits to be killed.
fn stop_in_handshake(step: u64) -> TestResult {
    let end = sp_core::adopt().map_err(|e| e.to_string())?;
    let mut channel = Channel::new(end).map_err(|e| e.to_string())?;
    let mut ring = hostile::manual_ring(Flaw::None)?;
    if step >= 1 {
        hostile::send_offer(&channel, &mut ring)?;
    }
    if step >= 2 {
        let offer = channel.recv_timeout(STEP).map_err(|e| e.to_string())?;
        drop(offer);
    }
    // The parent's READY may still come; take whatever arrives until the end.
    loop {
        match channel.recv() {
            Ok(_) => {}
            Err(sp_core::Error::PeerGone) => return Ok(()),
            Err(err) => return Err(format!("expected to be killed, got {err}")),
        }
    }
}

/// Tells the parent this process reached its point, then waits to be killed.
fn wait_for_kill(control: &mut Channel, reached: &[u8]) -> TestResult {
    control.send(reached, &[]).map_err(|e| e.to_string())?;
    match control.recv() {
        Err(sp_core::Error::PeerGone) => Ok(()),
        other => Err(format!("expected to be killed, got {other:?}")),
    }
}

fn send_fds_forever(control: &Channel, consumer: &mut sp_shm::Consumer) -> TestResult {
    let mut record = [0u8; 256];
    let mut buf = Vec::new();
    for seq in 0.. {
        if is_blob(seq) {
            let len = write_record(seq, &mut record);
            let blob = Blob::from_bytes(&record[..len]).map_err(|e| e.to_string())?;
            blob.send(control).map_err(|e| e.to_string())?;
        } else {
            let memfds = (0..n_fds_for(seq))
                .map(|fd_idx| memfd_with(&fd_contents(seq, fd_idx)))
                .collect::<Result<Vec<OwnedFd>, String>>()?;
            let fds: Vec<BorrowedFd<'_>> = memfds.iter().map(AsFd::as_fd).collect();
            let len = write_record(seq, &mut record);
            control
                .send(&record[..len], &fds)
                .map_err(|e| e.to_string())?;
        }
        if seq % FD_WINDOW == FD_WINDOW - 1 {
            consumer.recv_into(&mut buf).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn memfd_with(contents: &[u8]) -> Result<OwnedFd, String> {
    let fd =
        rustix::fs::memfd_create("crash-fd", MemfdFlags::CLOEXEC).map_err(|e| e.to_string())?;
    let mut written = 0;
    while written < contents.len() {
        written += rustix::io::write(&fd, &contents[written..]).map_err(|e| e.to_string())?;
    }
    Ok(fd)
}

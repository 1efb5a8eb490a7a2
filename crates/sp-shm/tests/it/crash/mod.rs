//! The crash suite: one side of a pair killed with `SIGKILL` at random points, hundreds of times.
//!
//! Each scenario is one trial that runs [`iterations`] rounds (`SP_CRASH_ITERS` per scenario,
//! default [`DEFAULT_ITERS`]; a quarter as many for the parent kills). In the `crash_*` scenarios (`child.rs`, roles in `roles.rs`) a
//! round spawns this binary as a child, lets it reach a point (in the middle of a reservation,
//! after a commit, parked in `poll`, holding a read grant, sending descriptors, or streaming both
//! ways), kills it, and then checks that this side
//!
//! - never hangs (every wait has a bound, and the trial has a watchdog),
//! - receives only whole, checksummed records (or messages, or blobs) in sequence, and then
//!   `PeerGone`,
//! - leaked no descriptor (`/proc/self/fd` before and after the round), and
//! - left no child behind (the child is reaped, and no process in `/proc` has this one as its
//!   parent).
//!
//! The `crash_parent_*` scenarios (`parent.rs`) kill the *parent* of a pair instead: this side
//! starts a child that starts and talks to a grandchild, kills the child, and checks that the
//! grandchild ends on its own with `PeerGone` within a bound, its descriptors all closed, reaped
//! and gone from `/proc`.
//!
//! The kill is triggered by what this side observes, never by a sleep: a random number of
//! records received, a control message the child sends on reaching its point, or a thread seen
//! inside `poll` in `/proc/<pid>/task/<tid>/syscall`. All random choices come from one generator
//! per scenario, seeded from `SP_CRASH_SEED` (or the clock); the seed is printed with every
//! result, so `SP_CRASH_SEED=<seed>` replays a failure.

mod child;
mod parent;
mod roles;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use sp_core::Channel;
use sp_shm::{BLOB_MAGIC, BLOB_MSG_LEN, Blob, Config, Duplex};
use sp_test_support::fds::{fd_diff, memfd_with};
use sp_test_support::procs::children_of_this_process;
use sp_test_support::rng::XorShift;

use crate::cross::{check_record, record_len, write_record};
use crate::{PROMPT, TestResult, child_command, open_fds, spawn_child, trial_with_limit};

pub(crate) use roles::child_main;

const SEED_ENV: &str = "SP_CRASH_SEED";
const ITERS_ENV: &str = "SP_CRASH_ITERS";
const PARAM_ENV: &str = "SP_CRASH_PARAM";
const CAP_ENV: &str = "SP_CRASH_CAP";
/// Rounds per child scenario in the default (CI) configuration (the 6 parent scenarios run a
/// quarter as many): 1200 + 228 kills.
const DEFAULT_ITERS: u64 = 150;
/// The bound on any wait that happens before the kill (the child is alive and working).
const STEP: Duration = Duration::from_secs(10);
/// Messages the fd-sending child sends before it waits for an acknowledgement.
const FD_WINDOW: u64 = 8;

/// What one scenario saw, summed over its rounds.
#[derive(Debug, Default)]
struct Tally {
    kills: u64,
    handshakes: u64,
    records: u64,
    messages: u64,
    /// Grandchildren that ended on their own after their parent was killed.
    orphans: u64,
    fds_leaked: usize,
    children_left: usize,
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
    let mut trials: Vec<Trial> = child::POINTS
        .into_iter()
        .map(|point| {
            let name = format!("crash_{}", point.name());
            trial_with_limit(name.clone(), limit, move || {
                run_rounds(&name, point as u64 + 1, iters, |rng, tally| {
                    child::round(point, rng, tally)
                })
            })
        })
        .collect();
    // Three processes a round: a quarter as many rounds.
    let parent_iters = iters.div_ceil(4);
    trials.extend(parent::POINTS.into_iter().map(|point| {
        let name = format!("crash_parent_{}", point.name());
        trial_with_limit(name.clone(), limit, move || {
            parent::run(point, |round| {
                run_rounds(&name, 0x100 + point as u64, parent_iters, round)
            })
        })
    }));
    trials
}

/// Rounds per scenario: `SP_CRASH_ITERS`, or [`DEFAULT_ITERS`].
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

/// Runs `iters` rounds of scenario `name` (`salt` sets its generator apart from the other
/// scenarios'), each followed by the checks every round shares: no descriptor leaked, no child
/// left behind.
fn run_rounds(
    name: &str,
    salt: u64,
    iters: u64,
    mut round: impl FnMut(&mut XorShift, &mut Tally) -> TestResult,
) -> TestResult {
    let seed = base_seed();
    let mut rng = XorShift::new(seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut tally = Tally::default();
    let started = Instant::now();
    for i in 0..iters {
        let before = open_fds();
        let res = round(&mut rng, &mut tally);
        let after = open_fds();
        tally.fds_leaked += after.keys().filter(|fd| !before.contains_key(fd)).count();
        let children = children_of_this_process();
        tally.children_left += children.len();
        let res = res.and_then(|()| {
            fd_diff(&before, &after)?;
            if !children.is_empty() {
                return Err(format!("children left behind: {children:?}"));
            }
            Ok(())
        });
        res.map_err(|e| format!("{name} round {i}: {e} (replay with {SEED_ENV}={seed})"))?;
    }
    eprintln!(
        "  {name}: {} kills, {} handshakes, {} records and {} messages checked, {} orphans ended on their own, fds leaked {}, children left {}, hangs 0; {SEED_ENV}={seed}; {:.2?}",
        tally.kills,
        tally.handshakes,
        tally.records,
        tally.messages,
        tally.orphans,
        tally.fds_leaked,
        tally.children_left,
        started.elapsed()
    );
    Ok(())
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

/// Sends messages with 1 to 4 memfds, and every fifth a blob, on `control` for ever, waiting for
/// an acknowledgement on `consumer` after every [`FD_WINDOW`]; `sent(seq)` runs after message
/// `seq` went out.
fn send_fds_forever(
    control: &Channel,
    consumer: &mut sp_shm::Consumer,
    mut sent: impl FnMut(u64) -> TestResult,
) -> TestResult {
    let mut record = [0u8; 256];
    let mut buf = Vec::new();
    for seq in 0.. {
        if is_blob(seq) {
            let len = write_record(seq, &mut record);
            let blob = Blob::from_bytes(&record[..len]).map_err(|e| e.to_string())?;
            blob.send(control).map_err(|e| e.to_string())?;
        } else {
            let memfds = (0..n_fds_for(seq))
                .map(|fd_idx| memfd_with("crash-fd", &fd_contents(seq, fd_idx)))
                .collect::<Vec<OwnedFd>>();
            let fds: Vec<BorrowedFd<'_>> = memfds.iter().map(AsFd::as_fd).collect();
            let len = write_record(seq, &mut record);
            control
                .send(&record[..len], &fds)
                .map_err(|e| e.to_string())?;
        }
        sent(seq)?;
        if seq % FD_WINDOW == FD_WINDOW - 1 {
            consumer.recv_into(&mut buf).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

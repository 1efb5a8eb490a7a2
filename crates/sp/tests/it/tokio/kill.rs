//! A child killed with `SIGKILL` while this side awaits it: an `AsyncReceiver::recv` parked on
//! an empty ring, or parked while the child commits values it then never sees taken, and an
//! `AsyncSender::send` parked on a full ring. Each await ends with `Error::PeerGone` within
//! [`PROMPT`] of the kill, and every value the child committed before it is delivered first.
//!
//! The children (roles `burst-on-command` and `fill-then-block`) use the blocking API through
//! `sp::adopt`; they tell the trial where they are through a FIFO (`fifo.rs`) or by being seen
//! in `poll` (`/proc`), never by a sleep.

use std::pin::pin;
use std::time::{Duration, Instant};

use sp::tokio::{AsyncReceiver, AsyncSender};
use sp::{Config, Error, IdleStrategy};
use sp_test_support::future::until_parked;
use sp_test_support::procs::wait_until_thread_in_poll;

use super::{AWAIT_LIMIT, within};
use crate::fifo::{self, FIFO_ENV, Fifo};
use crate::{TestResult, child_command};

/// How soon after the kill the await must have ended.
const PROMPT: Duration = Duration::from_secs(3);
/// The values the child commits after this side parked, in the trials that ask for them: they
/// fit the ring (64 KiB) several times over, so the child never waits for room.
pub(super) const BURST: u64 = 1_000;

fn config(idle: &str) -> Config {
    let idle = match idle {
        "park" => IdleStrategy::park(),
        _ => IdleStrategy::adaptive(),
    };
    Config::new().capacity(64 << 10).idle(idle)
}

/// `recv` is parked (under `idle`), then the child commits `committed` values (none, or
/// [`BURST`]) and is killed before this side polls again: the same await returns the first,
/// the next receives the rest in order, then `PeerGone`, all within [`PROMPT`] of the kill.
pub(super) async fn killed_while_receiving(idle: &str, committed: u64) -> TestResult {
    let fifo = Fifo::new("burst")?;
    let mut cmd = child_command("burst-on-command", "");
    cmd.env(FIFO_ENV, fifo.path());
    let (mut child, mut tx, rx) =
        sp::spawn::<u64, u64>(&mut cmd, &config(idle)).map_err(|e| format!("spawn: {e}"))?;
    let mut rx = AsyncReceiver::new(rx).map_err(|e| e.to_string())?;
    let killed_at;
    let first = {
        let mut recv = pin!(rx.recv());
        if let Some(res) = until_parked(recv.as_mut()).await {
            return Err(format!("a value before any was asked for: {res:?}"));
        }
        if committed > 0 {
            // The ring toward the child has room: this send does not wait.
            tx.send(&committed).map_err(|e| format!("command: {e}"))?;
            fifo.wait_byte(AWAIT_LIMIT)?;
        }
        killed_at = Instant::now();
        child.kill().map_err(|e| e.to_string())?;
        within("the parked recv after the kill", recv).await?
    };
    let mut next = 0;
    let mut res = first;
    let end = loop {
        match res {
            Ok(value) if value == next && next < committed => next += 1,
            other => break other,
        }
        res = within("recv after the kill", rx.recv()).await?;
    };
    let late = killed_at.elapsed();
    let parks = rx.get_mut().stats().parks;
    drop((tx, rx));
    let _ = child.wait();
    if next != committed {
        return Err(format!(
            "{next} of the {committed} values committed before the kill, then {end:?}"
        ));
    }
    if parks == 0 {
        return Err("the receive never parked".into());
    }
    match end {
        Err(Error::PeerGone) if late < PROMPT => Ok(()),
        other => Err(format!(
            "expected PeerGone within {PROMPT:?} of the kill: {other:?} after {late:?}"
        )),
    }
}

/// The child fills its ring toward this side and blocks in `send`; this side fills the other
/// ring, and its `send` is parked (under `idle`) when the child is killed: `PeerGone` within
/// [`PROMPT`]. Then every value the child committed arrives, in order, before `PeerGone`.
pub(super) async fn killed_while_sending(idle: &str) -> TestResult {
    let fifo = Fifo::new("fill")?;
    let mut cmd = child_command("fill-then-block", "");
    cmd.env(FIFO_ENV, fifo.path());
    let (mut child, tx, mut rx) =
        sp::spawn::<u64, u64>(&mut cmd, &config(idle)).map_err(|e| format!("spawn: {e}"))?;
    let mut tx = AsyncSender::new(tx).map_err(|e| e.to_string())?;
    // Past `adopt` (whose last step waits in `poll` for our HELLO): from here the child waits in
    // `poll` only for room in its full ring.
    fifo.wait_byte(AWAIT_LIMIT)?;
    wait_until_thread_in_poll(child.id(), child.id(), AWAIT_LIMIT)?;
    let mut seq = 0u64;
    loop {
        match tx.get_mut().try_send(&seq) {
            Ok(()) => seq += 1,
            Err(err) if err.is_full() => break,
            Err(err) => return Err(format!("filling the ring: {err}")),
        }
    }
    let killed_at;
    let res = {
        let mut send = pin!(tx.send(&seq));
        if let Some(res) = until_parked(send.as_mut()).await {
            return Err(format!("room in a full ring: {res:?}"));
        }
        killed_at = Instant::now();
        child.kill().map_err(|e| e.to_string())?;
        within("the parked send after the kill", send).await?
    };
    let late = killed_at.elapsed();
    let parks = tx.get_mut().stats().parks;
    let _ = child.wait();
    match res {
        Err(Error::PeerGone) if late < PROMPT => {}
        other => {
            return Err(format!(
                "expected PeerGone within {PROMPT:?} of the kill: {other:?} after {late:?}"
            ));
        }
    }
    if parks == 0 {
        return Err("the send never parked".into());
    }
    let mut next = 0u64;
    loop {
        match rx.recv_timeout(AWAIT_LIMIT) {
            Ok(value) if value == next => next += 1,
            Err(err) if err.is_disconnected() && next > 0 => return Ok(()),
            other => return Err(format!("the child's value {next}: {other:?}")),
        }
    }
}

/// The role `burst-on-command`: for each count this side sends, commits that many numbered
/// values, then writes a byte into the FIFO; ends when the parent leaves.
pub(crate) fn burst_child() -> TestResult {
    let (mut tx, mut rx) =
        sp::adopt::<u64, u64>(&config("park")).map_err(|e| format!("adopt: {e}"))?;
    let mut seq = 0u64;
    loop {
        let n = match rx.recv() {
            Ok(n) => n,
            Err(Error::PeerGone) => return Ok(()),
            Err(err) => return Err(format!("command: {err}")),
        };
        for _ in 0..n {
            tx.send(&seq).map_err(|e| format!("send {seq}: {e}"))?;
            seq += 1;
        }
        fifo::signal()?;
    }
}

/// The role `fill-then-block`: writes a byte into the FIFO, then sends numbered values until the
/// ring is full and waits (parked) for room that never comes; never reads.
pub(crate) fn fill_child() -> TestResult {
    let (mut tx, _rx) =
        sp::adopt::<u64, u64>(&config("park")).map_err(|e| format!("adopt: {e}"))?;
    fifo::signal()?;
    let mut seq = 0u64;
    loop {
        match tx.send(&seq) {
            Ok(()) => seq += 1,
            Err(Error::PeerGone) => return Ok(()),
            Err(err) => return Err(format!("send {seq}: {err}")),
        }
    }
}

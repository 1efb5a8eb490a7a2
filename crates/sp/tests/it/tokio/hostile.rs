//! The hostile peer of `hostile.rs` against the async receiver: every scenario, under both
//! runtimes, must give the errors the blocking receiver gives. And the wait for an ATTACH, which
//! happens in the reactor: a peer that announces descriptors and never sends them costs the
//! attachment timeout without holding the thread (another task of a current-thread runtime runs
//! all along), and receives cancelled while the ATTACH is missing lose nothing and take nothing
//! twice once it comes.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use sp::tokio::AsyncReceiver;
use sp::{Config, Error, Receiver, RecvTimeoutError, TryRecvError, Value, Violation};
use sp_test_support::poll_once;
use tokio::runtime::Runtime;

use super::{AWAIT_LIMIT, FLAVOURS, runtime, within};
use crate::hostile::{HostileRx, Receiving};
use crate::types::Rec;
use crate::{TestResult, child_command, reap, trial};

pub(super) fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for flavour in FLAVOURS {
        trials.extend(crate::hostile::trials_for(
            &format!("tokio_{flavour}_"),
            Async(flavour),
        ));
        trials.push(trial(
            &format!("tokio_{flavour}_recv_cancelled_while_attach_missing_takes_the_value_once"),
            move || runtime(flavour).block_on(cancelled_while_attach_missing(Then::Async)),
        ));
    }
    trials.push(trial(
        "tokio_current_thread_recv_cancelled_while_attach_missing_then_blocking_resumes",
        || runtime("current_thread").block_on(cancelled_while_attach_missing(Then::Blocking)),
    ));
    trials.push(trial(
        "tokio_current_thread_missing_attachment_waits_in_the_reactor_other_tasks_run",
        || runtime("current_thread").block_on(missing_attachment_in_the_reactor()),
    ));
    trials
}

/// The hostile child announces descriptors with a value and never sends them (`missing-fds`):
/// the async receive answers `MissingAttachment` after the attachment timeout, as the blocking
/// one does, and meanwhile a ticking task on the same current-thread runtime keeps running: no
/// gap between its ticks (or between the receive's start or end and the nearest tick) comes near
/// the timeout. A receive that blocked its thread would leave one gap as long as the timeout.
async fn missing_attachment_in_the_reactor() -> TestResult {
    const WAIT: Duration = Duration::from_millis(600);
    let config = Config::new().capacity(64 << 10).attachment_timeout(WAIT);
    let (child, tx, rx) =
        sp::spawn::<u8, Rec>(&mut child_command("hostile", "missing-fds"), &config)
            .map_err(|e| format!("spawn: {e}"))?;
    let mut rx = AsyncReceiver::new(rx).map_err(|e| e.to_string())?;
    let first = within("value 0", rx.recv()).await?;
    if !matches!(&first, Ok(rec) if rec.seq == 0) {
        return Err(format!("value 0: {first:?}"));
    }
    let ticks = Arc::new(Mutex::new(Vec::new()));
    let ticker = tokio::spawn({
        let ticks = Arc::clone(&ticks);
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ticks.lock().expect("ticks").push(Instant::now());
            }
        }
    });
    let started = Instant::now();
    let res = within("the announced value", rx.recv()).await?;
    let ended = Instant::now();
    ticker.abort();
    let _ = ticker.await;
    let took = ended - started;
    if !matches!(res, Err(Error::Protocol(Violation::MissingAttachment))) {
        return Err(format!("expected MissingAttachment, got {res:?}"));
    }
    if !(WAIT..WAIT + Duration::from_secs(3)).contains(&took) {
        return Err(format!(
            "MissingAttachment after {took:?}, the bound is {WAIT:?}"
        ));
    }
    let mut times = vec![started];
    times.extend(
        ticks
            .lock()
            .expect("ticks")
            .iter()
            .filter(|t| (started..ended).contains(t)),
    );
    times.push(ended);
    let longest = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    if longest >= WAIT / 2 {
        return Err(format!(
            "the other task did not run for {longest:?} of the {took:?} wait ({} ticks)",
            times.len() - 2
        ));
    }
    // Broken for good, at once, as in the blocking API.
    match poll_once(rx.recv()).await {
        Ok(Err(Error::Protocol(Violation::MissingAttachment))) => {}
        other => return Err(format!("after MissingAttachment: {other:?}")),
    }
    eprintln!(
        "  MissingAttachment after {took:?}; {} ticks of the other task, longest gap {longest:?}",
        times.len() - 2
    );
    drop((tx, rx));
    reap(child)
}

/// The hostile child commits a value announcing one descriptor and holds its ATTACH back
/// (`late-attach`); receives of it are cancelled (polled once, or under a short timeout) while
/// the ATTACH is missing, before and after the record is taken off the ring (which happens once).
/// Then this side lets the child go on: the value arrives once, with its descriptor, then the
/// next value, then nothing; through the async receiver, or through the blocking one it gives
/// back ([`AsyncReceiver::into_inner`]), which resumes the record the async receives kept.
async fn cancelled_while_attach_missing(then: Then) -> TestResult {
    let config = Config::new()
        .capacity(64 << 10)
        .attachment_timeout(Duration::from_secs(10));
    let (child, mut tx, rx) =
        sp::spawn::<u8, Rec>(&mut child_command("hostile", "late-attach"), &config)
            .map_err(|e| format!("spawn: {e}"))?;
    let mut rx = AsyncReceiver::new(rx).map_err(|e| e.to_string())?;
    // Cancelled receives until one has taken the record off the ring (its copy is kept in the
    // receiver), then twenty more.
    let deadline = Instant::now() + AWAIT_LIMIT;
    let mut after_taken = 0;
    for round in 0.. {
        let res = if round % 2 == 0 {
            poll_once(rx.recv_with_fds()).await
        } else {
            tokio::time::timeout(Duration::from_millis(2), rx.recv_with_fds())
                .await
                .map_err(|_| ())
        };
        if let Ok(res) = res {
            return Err(format!("receive {round} without the ATTACH: {res:?}"));
        }
        match rx.get_mut().stats().records {
            0 if Instant::now() < deadline => {}
            0 => return Err("the announcing record never arrived".into()),
            1 if after_taken == 20 => break,
            1 => after_taken += 1,
            n => return Err(format!("{n} records taken off the ring")),
        }
    }
    // The ring toward the child has room: this send does not wait.
    tx.send(&1).map_err(|e| format!("go-ahead: {e}"))?;
    let taken = match then {
        Then::Async => {
            let (value, fds) = within("the announced value", rx.recv_with_fds())
                .await?
                .map_err(|e| format!("the announced value: {e}"))?;
            check_memfd(value.seq, fds)?;
            let next = within("the next value", rx.recv()).await?;
            if !matches!(&next, Ok(rec) if rec.seq == 1) {
                return Err(format!("after the announced value: {next:?}"));
            }
            match poll_once(rx.recv()).await {
                Err(()) => {}
                Ok(res) => return Err(format!("after the last value: {res:?}")),
            }
            let taken = rx.get_mut().stats().records;
            drop(rx);
            taken
        }
        Then::Blocking => {
            let mut rx = rx.into_inner();
            let (value, fds) = rx
                .recv_with_fds_timeout(AWAIT_LIMIT)
                .map_err(|e| format!("the announced value: {e}"))?;
            check_memfd(value.seq, fds)?;
            let next = rx.recv_timeout(AWAIT_LIMIT);
            if !matches!(&next, Ok(rec) if rec.seq == 1) {
                return Err(format!("after the announced value: {next:?}"));
            }
            match rx.try_recv() {
                Err(TryRecvError::Empty) => {}
                other => return Err(format!("after the last value: {other:?}")),
            }
            let taken = rx.stats().records;
            drop(rx);
            taken
        }
    };
    if taken != 2 {
        return Err(format!("{taken} records taken off the ring for 2 values"));
    }
    drop(tx);
    reap(child)
}

/// Which receiver takes the value once the ATTACH comes.
#[derive(Debug, Clone, Copy)]
enum Then {
    Async,
    Blocking,
}

/// Value 0 with the child's one 4 KiB memfd.
fn check_memfd(seq: u64, fds: Vec<OwnedFd>) -> TestResult {
    let sizes: Vec<u64> = fds
        .iter()
        .map(|fd| rustix::fs::fstat(fd).map(|st| st.st_size as u64))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if seq != 0 || sizes != [4096] {
        return Err(format!("value {seq} with descriptors of sizes {sizes:?}"));
    }
    Ok(())
}

/// Receives through [`AsyncReceiver`] on a runtime of the named flavour.
#[derive(Debug, Clone, Copy)]
struct Async(&'static str);

impl Receiving for Async {
    type Rx<T: Value> = AsyncRx<T>;

    fn wrap<T: Value>(self, rx: Receiver<T>) -> Result<AsyncRx<T>, String> {
        let rt = runtime(self.0);
        let rx = {
            let _entered = rt.enter();
            AsyncReceiver::new(rx).map_err(|e| e.to_string())?
        };
        Ok(AsyncRx { rx, rt })
    }
}

/// An async receiver and the runtime it is registered with; each receive is one `block_on`.
struct AsyncRx<T> {
    // Dropped before the runtime, whose reactor it is registered with.
    rx: AsyncReceiver<T>,
    rt: Runtime,
}

impl<T: Value> HostileRx<T> for AsyncRx<T> {
    /// `recv` under `tokio::time::timeout`.
    fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let rx = &mut self.rx;
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, rx.recv()).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(RecvTimeoutError::Broken(err)),
            Err(_) => Err(RecvTimeoutError::Timeout),
        }
    }

    /// One poll of `recv`: `Empty` if it would wait.
    fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let rx = &mut self.rx;
        match self.rt.block_on(sp_test_support::poll_once(rx.recv())) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(TryRecvError::Broken(err)),
            Err(()) => Err(TryRecvError::Empty),
        }
    }
}

//! The async typed channel (`sp::tokio`, feature `tokio`) under both runtimes: values with
//! descriptors and blobs through `send`/`recv`, `Sink` and `Stream`; a `select!` over several
//! receivers; receives cancelled at random under load; children killed while awaited
//! (`kill.rs`); the hostile peer of `hostile.rs` against the async receiver (`hostile.rs`).

mod hostile;
pub(crate) mod kill;

use std::future::poll_fn;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_core::Stream;
use futures_sink::Sink;
use libtest_mimic::Trial;
use sp::tokio::{AsyncReceiver, AsyncSender};
use sp::{Config, Error};
use tokio::runtime::{Builder, Runtime};

use crate::local::{fd_set, read_tag, tagged_file};
use crate::{TestResult, trial};

const FLAVOURS: [&str; 2] = ["current_thread", "multi_thread"];
/// The bound on one await in these trials.
const AWAIT_LIMIT: Duration = Duration::from_secs(5);

pub(crate) fn trials() -> Vec<Trial> {
    // tokio's signal driver opens a socketpair once per process with the first runtime: open it
    // before any trial's descriptor snapshot.
    drop(runtime("current_thread"));
    let mut trials = Vec::new();
    for flavour in FLAVOURS {
        trials.push(trial(
            &format!("tokio_{flavour}_values_fds_and_blobs_through_sink_and_stream"),
            move || runtime(flavour).block_on(values_fds_and_blobs()),
        ));
        trials.push(trial(
            &format!("tokio_{flavour}_select_over_three_receivers_takes_each_value_once"),
            move || runtime(flavour).block_on(select_over_receivers()),
        ));
        trials.push(trial(
            &format!("tokio_{flavour}_typed_recv_cancelled_at_random_loses_and_repeats_nothing"),
            move || runtime(flavour).block_on(recv_cancelled_at_random(false)),
        ));
        trials.push(trial(
            &format!(
                "tokio_{flavour}_typed_recv_into_cancelled_at_random_loses_repeats_and_writes_nothing"
            ),
            move || runtime(flavour).block_on(recv_cancelled_at_random(true)),
        ));
        for idle in ["park", "adaptive"] {
            for (committed, what) in [(0, "empty"), (kill::BURST, "burst")] {
                trials.push(trial(
                    &format!("tokio_{flavour}_recv_parked_{idle}_child_killed_after_{what}_is_peer_gone_after_every_value"),
                    move || runtime(flavour).block_on(kill::killed_while_receiving(idle, committed)),
                ));
            }
            trials.push(trial(
                &format!(
                    "tokio_{flavour}_send_parked_{idle}_on_full_ring_child_killed_is_peer_gone"
                ),
                move || runtime(flavour).block_on(kill::killed_while_sending(idle)),
            ));
        }
    }
    trials.extend(hostile::trials());
    trials
}

fn runtime(flavour: &str) -> Runtime {
    let mut builder = if flavour == "current_thread" {
        Builder::new_current_thread()
    } else {
        let mut b = Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    builder.enable_all().build().expect("tokio runtime")
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(AWAIT_LIMIT, fut)
        .await
        .map_err(|_| format!("{what}: nothing within {AWAIT_LIMIT:?}"))
}

/// Strings (some longer than the ring's largest record, so blobs) with descriptors on some,
/// sent by one task through `send_with_fds` and the `Sink`, received by another through
/// `recv_with_fds` and the `Stream`, which ends when the sender is dropped.
async fn values_fds_and_blobs() -> TestResult {
    const N: u64 = 2_000;
    let config = Config::new().capacity(64 << 10);
    let (tx, rx) = sp::channel::<String>(&config).map_err(|e| e.to_string())?;
    let mut tx = AsyncSender::new(tx).map_err(|e| e.to_string())?;
    let mut rx = AsyncReceiver::new(rx).map_err(|e| e.to_string())?;
    let text = |seq: u64| format!("{seq}:{}", "x".repeat((seq as usize * 37) % (40 << 10)));
    let files: Vec<std::fs::File> = (0..4).map(tagged_file).collect::<Result<_, _>>()?;
    let sender = tokio::spawn(async move {
        for seq in 0..N / 2 {
            let fds: Vec<_> = fd_set(seq).into_iter().map(|k| files[k].as_fd()).collect();
            tx.send_with_fds(&text(seq), &fds).await?;
        }
        for seq in N / 2..N {
            poll_fn(|cx| Pin::new(&mut tx).poll_ready(cx)).await?;
            Pin::new(&mut tx).start_send(text(seq))?;
            poll_fn(|cx| Pin::new(&mut tx).poll_flush(cx)).await?;
        }
        Ok::<_, Error>(())
    });
    for seq in 0..N / 2 {
        let (value, fds) = within("value", rx.recv_with_fds())
            .await?
            .map_err(|e| format!("value {seq}: {e}"))?;
        if value != text(seq) {
            return Err(format!(
                "value {seq}: {} bytes of something else",
                value.len()
            ));
        }
        let tags: Vec<usize> = fds.into_iter().map(read_tag).collect::<Result<_, _>>()?;
        if tags != fd_set(seq) {
            return Err(format!("value {seq}: descriptors {tags:?}"));
        }
    }
    let mut seq = N / 2;
    while let Some(value) = within("stream", poll_fn(|cx| Pin::new(&mut rx).poll_next(cx))).await? {
        let value = value.map_err(|e| format!("stream value {seq}: {e}"))?;
        if value != text(seq) {
            return Err(format!("stream value {seq}: something else"));
        }
        seq += 1;
    }
    sender
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if seq != N {
        return Err(format!("the stream ended after {seq} values"));
    }
    Ok(())
}

/// Three senders on three threads, one task selecting over the three receivers with
/// `tokio::select!`: each value arrives once, in order per sender, and each receiver ends with
/// `PeerGone`.
async fn select_over_receivers() -> TestResult {
    const N: u64 = 20_000;
    let config = Config::new().idle(sp::IdleStrategy::park());
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for k in 0..3u64 {
        let (mut tx, rx) = sp::channel::<(u64, u64)>(&config).map_err(|e| e.to_string())?;
        receivers.push(Some(AsyncReceiver::new(rx).map_err(|e| e.to_string())?));
        senders.push(std::thread::spawn(move || -> Result<(), Error> {
            for seq in 0..N {
                tx.send(&(k, seq))?;
            }
            Ok(())
        }));
    }
    let mut next = [0u64; 3];
    while receivers.iter().any(Option::is_some) {
        let [a, b, c] = receivers.as_mut_slice() else {
            unreachable!("three receivers");
        };
        let (k, res) = within("select", async {
            tokio::select! {
                res = recv(a) => (0, res),
                res = recv(b) => (1, res),
                res = recv(c) => (2, res),
            }
        })
        .await?;
        match res {
            Ok((from, seq)) if from == k as u64 && seq == next[k] => next[k] += 1,
            Ok(other) => return Err(format!("receiver {k}: {other:?}, expected {}", next[k])),
            Err(Error::PeerGone) if next[k] == N => receivers[k] = None,
            Err(err) => return Err(format!("receiver {k}: {err}")),
        }
    }
    for sender in senders {
        sender
            .join()
            .map_err(|_| "sender panicked")?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn recv(slot: &mut Option<AsyncReceiver<(u64, u64)>>) -> sp::Result<(u64, u64)> {
    match slot {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One receive of the cancellation trial: `recv`, or `recv_into` the slot when there is one.
async fn recv_one(rx: &mut AsyncReceiver<u64>, slot: Option<&mut u64>) -> sp::Result<u64> {
    match slot {
        None => rx.recv().await,
        Some(slot) => rx.recv_into(slot).await.map(|()| *slot),
    }
}

/// A blocking sender on another thread sends numbered values in bursts; every async receive is
/// wrapped in a timeout (zero for two in three, else up to 2 ms), so that many are cancelled
/// while they wait; every value must arrive once, in order. With `into`, each receive decodes
/// into one slot, which a cancelled receive must leave as it was.
async fn recv_cancelled_at_random(into: bool) -> TestResult {
    // A debug build (CI's) receives far slower: fewer values, longer gaps, so that the ring is
    // still often empty when a receive starts.
    let (n, burst, gap_us): (u64, u64, u64) = if cfg!(debug_assertions) {
        (30_000, 8, 200)
    } else {
        (1_000_000, 16, 100)
    };
    let config = Config::new().idle(sp::IdleStrategy::park());
    let (mut tx, rx) = sp::channel::<u64>(&config).map_err(|e| e.to_string())?;
    let mut rx = AsyncReceiver::new(rx).map_err(|e| e.to_string())?;
    // Receives cancelled so far. The sender holds each next burst (at most 10 ms) until one more
    // receive has been cancelled, so that cancellations on an empty ring happen however the
    // scheduler shares the cores between the two threads.
    let cancellations = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&cancellations);
    let sender = std::thread::spawn(move || -> Result<(), Error> {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut seq = 0;
        while seq < n {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            for _ in 0..=rng % burst {
                if seq < n {
                    tx.send(&seq)?;
                    seq += 1;
                }
            }
            let before = seen.load(Ordering::Relaxed);
            let gap = Instant::now() + Duration::from_micros((rng >> 8) % gap_us);
            let hold = gap + Duration::from_millis(10);
            while Instant::now() < gap
                || (seen.load(Ordering::Relaxed) == before && Instant::now() < hold)
            {
                std::thread::yield_now();
            }
        }
        Ok(())
    });
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let (mut next, mut cancelled) = (0u64, 0u64);
    let mut slot = u64::MAX;
    let deadline = Instant::now() + Duration::from_secs(25);
    while next < n {
        if Instant::now() > deadline {
            return Err(format!("stuck at value {next}"));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // A third of the receives run under a timer (cancelled on a timer tick, ~1 ms), the rest
        // are polled once and dropped if that poll is pending (cancelled at once).
        let slot_before = slot;
        let receive = recv_one(&mut rx, into.then_some(&mut slot));
        let got = if rng.is_multiple_of(3) {
            tokio::time::timeout(Duration::from_micros(rng % 200), receive)
                .await
                .map_err(|_| ())
        } else {
            sp_test_support::poll_once(receive).await
        };
        match got {
            Ok(Ok(value)) if value == next => next += 1,
            Ok(res) => return Err(format!("expected {next}, got {res:?}")),
            Err(_) if slot != slot_before => {
                return Err(format!("a cancelled receive wrote {slot} into the slot"));
            }
            Err(_) => {
                cancelled += 1;
                cancellations.store(cancelled, Ordering::Relaxed);
            }
        }
    }
    sender
        .join()
        .map_err(|_| "sender panicked")?
        .map_err(|e| e.to_string())?;
    let end = within("end", rx.recv()).await?;
    if !matches!(end, Err(Error::PeerGone)) {
        return Err(format!("after the last value: {end:?}"));
    }
    eprintln!("  {n} values, {cancelled} receives cancelled");
    if cancelled < 100 {
        return Err(format!("only {cancelled} receives were cancelled"));
    }
    Ok(())
}

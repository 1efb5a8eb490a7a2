//! Typed round trips between this process and a child it starts: both encodings under load,
//! values straddling the blob threshold, descriptors with values under load.

use std::os::fd::AsFd;
use std::time::Duration;

use libtest_mimic::Trial;
use sp::{Config, Error, Receiver, Sender, Value};

use crate::local::{fd_set, read_tag, tagged_file};
use crate::types::{Pod, Rec, bytes_for};
use crate::{TestResult, child_command, count, open_fds, reap, trial};

/// The ring of the trials that straddle the threshold: 64 KiB, largest record 8 KiB.
const SMALL_RING: usize = 64 << 10;

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial("cross_serde_round_trip", || {
            round_trip::<Rec>("echo-serde", count(200_000), Rec::new, |v| v.seq)
        }),
        trial("cross_plain_round_trip", || {
            round_trip::<Pod>("echo-plain", count(1_000_000), Pod::new, |v| v.seq)
        }),
        trial("cross_serde_round_trip_into_one_value", || {
            round_trip_into::<Rec>("echo-serde", count(200_000), Rec::new, |v| v.seq)
        }),
        trial("cross_blob_threshold_straddle", blob_threshold_straddle),
        trial("cross_fds_under_load", fds_under_load),
    ]
}

fn config() -> Config {
    Config::new().capacity(SMALL_RING)
}

/// Sends `n` values from one thread while the main thread receives the child's echoes; every echo
/// must be the value sent, in order; then both sides see the other leave.
fn round_trip<T: Value + PartialEq + std::fmt::Debug + 'static>(
    role: &str,
    n: u64,
    make: fn(u64) -> T,
    seq_of: fn(&T) -> u64,
) -> TestResult {
    echoed(role, n, make, seq_of, Receiver::recv)
}

/// As [`round_trip`], receiving every echo into one value with `recv_into` (the child echoes
/// with `recv`): each must equal the value sent, whatever the value held before.
fn round_trip_into<T: Value + PartialEq + Clone + std::fmt::Debug + 'static>(
    role: &str,
    n: u64,
    make: fn(u64) -> T,
    seq_of: fn(&T) -> u64,
) -> TestResult {
    let mut slot = make(u64::MAX);
    echoed(role, n, make, seq_of, move |rx| {
        rx.recv_into(&mut slot)?;
        Ok(slot.clone())
    })
}

/// The body of both round trips; `recv` takes the next echo.
fn echoed<T: Value + PartialEq + std::fmt::Debug + 'static>(
    role: &str,
    n: u64,
    make: fn(u64) -> T,
    seq_of: fn(&T) -> u64,
    mut recv: impl FnMut(&mut Receiver<T>) -> sp::Result<T>,
) -> TestResult {
    let (child, mut tx, mut rx) = sp::spawn::<T, T>(&mut child_command(role, ""), &config())
        .map_err(|e| format!("spawn: {e}"))?;
    let sender = std::thread::spawn(move || -> TestResult {
        for seq in 0..n {
            tx.send(&make(seq))
                .map_err(|e| format!("send {seq}: {e}"))?;
        }
        Ok(())
    });
    for seq in 0..n {
        let got = recv(&mut rx).map_err(|e| format!("recv {seq}: {e}"))?;
        if got != make(seq) {
            return Err(format!("echo {seq}: got value {}", seq_of(&got)));
        }
    }
    sender.join().map_err(|_| "sender panicked")??;
    match recv(&mut rx) {
        Err(Error::PeerGone) => {}
        other => return Err(format!("after the stream: {:?}", other.map(|v| seq_of(&v)))),
    }
    reap(child)
}

/// The child's side of the serde round trip: echoes every value until the parent leaves.
pub(crate) fn echo_serde() -> TestResult {
    let (mut tx, mut rx) = sp::adopt::<Rec, Rec>(&config()).map_err(|e| e.to_string())?;
    echo(&mut tx, &mut rx, |tx, v| tx.send(&v))
}

/// The child's side of the plain round trip: echoes each value, written in place.
pub(crate) fn echo_plain() -> TestResult {
    let (mut tx, mut rx) = sp::adopt::<Pod, Pod>(&config()).map_err(|e| e.to_string())?;
    echo(&mut tx, &mut rx, |tx, v| {
        tx.send_with(|slot| slot.fill(v.seq))
    })
}

/// The child's side of the threshold trial: echoes byte vectors.
pub(crate) fn echo_bytes() -> TestResult {
    let config = config().blob_threshold(threshold_from_env());
    let (mut tx, mut rx) = sp::adopt::<Vec<u8>, Vec<u8>>(&config).map_err(|e| e.to_string())?;
    echo(&mut tx, &mut rx, |tx, v| tx.send(&v))
}

fn echo<T: Value>(
    tx: &mut Sender<T>,
    rx: &mut Receiver<T>,
    send: impl Fn(&mut Sender<T>, T) -> sp::Result<()>,
) -> TestResult {
    loop {
        match rx.recv() {
            Ok(value) => send(tx, value).map_err(|e| format!("echo: {e}"))?,
            Err(Error::PeerGone) => return Ok(()),
            Err(err) => return Err(format!("recv: {err}")),
        }
    }
}

fn threshold_from_env() -> usize {
    std::env::var(crate::ARG_ENV)
        .ok()
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(4096)
}

/// Values whose encodings are just under, at and just over the threshold, and far over it, both
/// ways; each arrives equal.
fn blob_threshold_straddle() -> TestResult {
    let threshold = 4096;
    let config = config().blob_threshold(threshold);
    let (child, mut tx, mut rx) = sp::spawn::<Vec<u8>, Vec<u8>>(
        &mut child_command("echo-bytes", &threshold.to_string()),
        &config,
    )
    .map_err(|e| format!("spawn: {e}"))?;
    // `Vec<u8>` of n bytes: a 2-byte length then the bytes, for 128 <= n < 16384.
    let mut lens: Vec<usize> = (threshold - 6..threshold + 4).collect();
    lens.extend([0, 1, 100_000, 4 << 20]);
    for round in 0..3u64 {
        for (i, &len) in lens.iter().enumerate() {
            let value = bytes_for(round * 100 + i as u64, len);
            tx.send(&value).map_err(|e| format!("send {len}: {e}"))?;
            let echo = rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|e| format!("echo of {len}: {e}"))?;
            if echo != value {
                return Err(format!("echo of {len} bytes differs"));
            }
        }
    }
    let stats = tx.stats();
    drop(tx);
    match rx.recv() {
        Err(Error::PeerGone) => {}
        other => return Err(format!("after the values: {:?}", other.map(|v| v.len()))),
    }
    // Ring bytes: the inline values' encodings plus 24 per blob record.
    let per_round: usize = lens
        .iter()
        .map(|&len| {
            let encoded = len
                + if len < 128 {
                    1
                } else if len < 16384 {
                    2
                } else {
                    3
                };
            if encoded <= threshold { encoded } else { 24 }
        })
        .sum();
    if stats.bytes != 3 * per_round as u64 {
        return Err(format!(
            "ring carried {} bytes, want {}",
            stats.bytes,
            3 * per_round
        ));
    }
    reap(child)
}

/// Values with and without descriptors, sent as fast as the ring takes them while the child
/// echoes each one with the descriptors it got; every descriptor must come with its own value,
/// both ways, and neither process may leak one.
fn fds_under_load() -> TestResult {
    let n = count(50_000);
    let config = config().blob_threshold(2048);
    let (child, mut tx, mut rx) =
        sp::spawn::<Vec<u8>, Vec<u8>>(&mut child_command("fds", &n.to_string()), &config)
            .map_err(|e| format!("spawn: {e}"))?;
    let sender = std::thread::spawn(move || -> TestResult {
        let files: Vec<_> = (0..4).map(tagged_file).collect::<Result<_, _>>()?;
        for seq in 0..n {
            let value = bytes_for(seq, fd_value_len(seq));
            let fds: Vec<_> = fd_set(seq).iter().map(|&i| files[i].as_fd()).collect();
            tx.send_with_fds(&value, &fds)
                .map_err(|e| format!("send {seq}: {e}"))?;
        }
        Ok(())
    });
    for seq in 0..n {
        let (value, fds) = rx.recv_with_fds().map_err(|e| format!("echo {seq}: {e}"))?;
        check_fd_value(seq, &value, fds)?;
    }
    sender.join().map_err(|_| "sender panicked")??;
    match rx.recv() {
        Err(Error::PeerGone) => {}
        other => return Err(format!("after the stream: {:?}", other.map(|v| v.len()))),
    }
    reap(child)
}

/// The length of value `seq` in the descriptor trial: mostly small, every 97th over the blob
/// threshold.
fn fd_value_len(seq: u64) -> usize {
    if seq.is_multiple_of(97) {
        5000
    } else {
        8 + (seq % 50) as usize
    }
}

fn check_fd_value(seq: u64, value: &[u8], fds: Vec<std::os::fd::OwnedFd>) -> TestResult {
    if value != bytes_for(seq, fd_value_len(seq)) {
        return Err(format!("value {seq} differs"));
    }
    let tags = fds
        .into_iter()
        .map(read_tag)
        .collect::<Result<Vec<_>, _>>()?;
    if tags != fd_set(seq) {
        return Err(format!(
            "value {seq}: descriptors {tags:?}, want {:?}",
            fd_set(seq)
        ));
    }
    Ok(())
}

/// The child's side of the descriptor trial: checks each value and its descriptors, echoes both,
/// and checks that its own descriptor table is back where it started.
pub(crate) fn fds_child() -> TestResult {
    let n: u64 = std::env::var(crate::ARG_ENV)
        .ok()
        .and_then(|arg| arg.parse().ok())
        .ok_or("no count")?;
    let config = config().blob_threshold(2048);
    let (mut tx, mut rx) = sp::adopt::<Vec<u8>, Vec<u8>>(&config).map_err(|e| e.to_string())?;
    let before = open_fds();
    for seq in 0..n {
        let (value, fds) = rx.recv_with_fds().map_err(|e| format!("recv {seq}: {e}"))?;
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        tx.send_with_fds(&value, &borrowed)
            .map_err(|e| format!("echo {seq}: {e}"))?;
        check_fd_value(seq, &value, fds)?;
    }
    let after = open_fds();
    if before != after {
        return Err(format!("child fd leak: before {before:?}, after {after:?}"));
    }
    match rx.recv() {
        Err(Error::PeerGone) => Ok(()),
        other => Err(format!("after the stream: {:?}", other.map(|v| v.len()))),
    }
}

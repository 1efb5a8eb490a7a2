//! Trials within one process (`sp::channel`): every operation's would-wait and broken outcomes, the
//! blob threshold, descriptors matched to values.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use sp::{Config, Error, Plain, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};

use crate::types::{Pod, Rec, bytes_for};
use crate::{TestResult, trial};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial("local_round_trip_both_encodings", round_trip_both_encodings),
        trial("local_would_wait_outcomes", would_wait_outcomes),
        trial("local_blob_threshold_straddle", blob_threshold_straddle),
        trial(
            "local_large_values_skip_the_size_pass_and_fall_back",
            large_values_skip_the_size_pass_and_fall_back,
        ),
        trial("local_plain_blob_in_place", plain_blob_in_place),
        trial(
            "local_recv_into_keeps_buffers_across_ring_and_blob_values",
            recv_into_keeps_buffers,
        ),
        trial("local_fds_with_their_values", fds_with_their_values),
        trial(
            "local_too_many_fds_sends_nothing",
            too_many_fds_sends_nothing,
        ),
        trial(
            "local_blob_over_the_limit_sends_nothing",
            blob_over_the_limit_sends_nothing,
        ),
        trial("local_peer_gone_after_drain", peer_gone_after_drain),
        trial(
            "local_receiver_reads_records_in_place",
            receiver_reads_records_in_place,
        ),
    ]
}

/// The receiver of an in-process channel lends records where they lie in the ring (each at its
/// own place, the ring moving on), not from one copy buffer reused for every record (which a
/// receiver from `connect`/`adopt` does); the bytes are the values all the same.
fn receiver_reads_records_in_place() -> TestResult {
    let (mut tx, mut rx) = sp::channel::<Vec<u8>>(&small_ring()).map_err(|e| e.to_string())?;
    let mut places = Vec::new();
    for k in 0..4u64 {
        let value = bytes_for(k, 1000);
        tx.send(&value).map_err(|e| e.to_string())?;
        let (place, same) = rx
            .recv_encoded(|bytes, _| {
                let back: Vec<u8> = postcard::from_bytes(bytes).unwrap_or_default();
                (bytes.as_ptr() as usize, back == value)
            })
            .map_err(|e| e.to_string())?;
        if !same {
            return Err(format!("value {k} differs"));
        }
        places.push(place);
    }
    places.dedup();
    if places.len() != 4 {
        return Err(format!(
            "records lent from {places:x?}: a copy buffer, not the ring"
        ));
    }
    Ok(())
}

fn small_ring() -> Config {
    Config::new().capacity(64 << 10)
}

fn round_trip_both_encodings() -> TestResult {
    let (mut tx, mut rx) = sp::channel::<Rec>(&small_ring()).map_err(|e| e.to_string())?;
    for seq in 0..1000 {
        tx.send(&Rec::new(seq)).map_err(|e| e.to_string())?;
        let got = rx.recv().map_err(|e| e.to_string())?;
        if got != Rec::new(seq) {
            return Err(format!("serde {seq}: {got:?}"));
        }
    }
    let (mut tx, mut rx) = sp::channel::<Pod>(&small_ring()).map_err(|e| e.to_string())?;
    for seq in 0..1000 {
        if seq % 2 == 0 {
            tx.send(&Pod::new(seq)).map_err(|e| e.to_string())?;
        } else {
            tx.send_with(|slot| slot.fill(seq))
                .map_err(|e| e.to_string())?;
        }
        let got = if seq % 3 == 0 {
            rx.recv_in_place(|pod, _| pod.clone())
                .map_err(|e| e.to_string())?
        } else {
            rx.recv().map_err(|e| e.to_string())?
        };
        if got != Pod::new(seq) {
            return Err(format!("plain {seq}: {got:?}"));
        }
    }
    Ok(())
}

/// `try_*` and `*_timeout` report would-wait as `Full`/`Empty`/`Timeout`, and nothing is lost.
fn would_wait_outcomes() -> TestResult {
    let (mut tx, mut rx) = sp::channel::<Rec>(&small_ring()).map_err(|e| e.to_string())?;
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => return Err(format!("empty try_recv: {other:?}")),
    }
    let started = Instant::now();
    match rx.recv_timeout(Duration::from_millis(50)) {
        Err(RecvTimeoutError::Timeout) if started.elapsed() >= Duration::from_millis(50) => {}
        other => return Err(format!("empty recv_timeout: {other:?}")),
    }
    let mut n_sent = 0;
    loop {
        match tx.try_send(&Rec::new(n_sent)) {
            Ok(()) => n_sent += 1,
            Err(TrySendError::Full) => break,
            Err(err) => return Err(format!("try_send: {err}")),
        }
    }
    match tx.send_timeout(&Rec::new(n_sent), Duration::from_millis(50)) {
        Err(SendTimeoutError::Timeout) => {}
        other => return Err(format!("full send_timeout: {other:?}")),
    }
    match tx.try_send_with_fds(&Rec::new(n_sent), &[std::io::stdin().as_fd()]) {
        Err(TrySendError::Full) => {}
        other => return Err(format!("full try_send_with_fds: {other:?}")),
    }
    for seq in 0..n_sent {
        let got = rx.try_recv().map_err(|e| format!("drain {seq}: {e}"))?;
        if got.seq != seq {
            return Err(format!("expected {seq}, got {}", got.seq));
        }
    }
    match rx.try_recv() {
        Err(TryRecvError::Empty) => Ok(()),
        other => Err(format!("after the drain: {other:?}")),
    }
}

/// Values whose encodings straddle the threshold: those up to it go in the ring, longer ones as
/// blobs; all arrive equal. The sender's ring byte count shows which way each went.
fn blob_threshold_straddle() -> TestResult {
    let config = small_ring().blob_threshold(4096);
    let (mut tx, mut rx) = sp::channel::<Vec<u8>>(&config).map_err(|e| e.to_string())?;
    if tx.blob_threshold() != 4096 {
        return Err(format!("threshold {}", tx.blob_threshold()));
    }
    // A `Vec<u8>` of `n` bytes encodes as a 2-byte length and the bytes (for 128 <= n < 16384).
    for len in 4090..4100 {
        let value = bytes_for(len as u64, len);
        let before = tx.stats().bytes;
        tx.send(&value).map_err(|e| e.to_string())?;
        let in_ring = tx.stats().bytes - before;
        let want = if len + 2 <= 4096 { len + 2 } else { 24 };
        if in_ring != want as u64 {
            return Err(format!("{len} bytes: {in_ring} ring bytes, want {want}"));
        }
        if rx.recv().map_err(|e| e.to_string())? != value {
            return Err(format!("{len} bytes: value differs"));
        }
    }
    // Far beyond the ring: 8 MiB through a 64 KiB ring.
    let big = bytes_for(7, 8 << 20);
    tx.send(&big).map_err(|e| e.to_string())?;
    if rx.recv().map_err(|e| e.to_string())? != big {
        return Err("8 MiB value differs".into());
    }
    Ok(())
}

/// `recv_into` decodes into the caller's value: values by the ring and as blobs all arrive equal,
/// and a value that fits the vector's capacity reuses its buffer; the waiting forms leave the
/// value untouched when there is nothing.
fn recv_into_keeps_buffers() -> TestResult {
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Numbers {
        name: String,
        values: Vec<u32>,
    }
    let numbers = |n: u32| Numbers {
        name: format!("numbers-{n}"),
        values: (0..n).map(|i| i.wrapping_mul(2_654_435_761)).collect(),
    };
    let config = small_ring().blob_threshold(4096);
    let (mut tx, mut rx) = sp::channel::<Numbers>(&config).map_err(|e| e.to_string())?;
    let mut got = numbers(0);
    // A blob (40,000 numbers, ~200 KB), then ring values that fit what it left: same buffer.
    for n in [40_000, 10, 700, 3, 40_000, 0, 5] {
        tx.send(&numbers(n)).map_err(|e| e.to_string())?;
        let buffer = got.values.as_ptr();
        let reusable = got.values.capacity() >= n as usize && n > 0;
        rx.recv_into(&mut got)
            .map_err(|e| format!("{n} numbers: {e}"))?;
        if got != numbers(n) {
            return Err(format!("{n} numbers: value differs"));
        }
        if reusable && got.values.as_ptr() != buffer {
            return Err(format!(
                "{n} numbers: a new buffer, though the old one had room"
            ));
        }
    }
    let before = got.clone();
    match rx.try_recv_into(&mut got) {
        Err(sp::TryRecvError::Empty) if got == before => {}
        other => {
            return Err(format!(
                "try_recv_into on nothing: {other:?}, value {got:?}"
            ));
        }
    }
    match rx.recv_into_timeout(&mut got, std::time::Duration::from_millis(20)) {
        Err(sp::RecvTimeoutError::Timeout) if got == before => {}
        other => return Err(format!("recv_into_timeout on nothing: {other:?}")),
    }
    tx.send(&numbers(9)).map_err(|e| e.to_string())?;
    rx.try_recv_into(&mut got).map_err(|e| e.to_string())?;
    if got != numbers(9) {
        return Err("try_recv_into: value differs".into());
    }
    Ok(())
}

/// After a value sent as a blob, the next is encoded straight into a blob of up to one and a half
/// times its size: a value within that bound, one beyond it (the sender falls back to measuring
/// it), one small enough for the ring (it goes there, and the guess is dropped) and a large one
/// again all arrive intact, each by the route its size calls for (counted in ring bytes: a blob
/// costs the ring one 24-byte record).
fn large_values_skip_the_size_pass_and_fall_back() -> TestResult {
    let (mut tx, mut rx) = sp::channel::<Vec<u8>>(&small_ring()).map_err(|e| e.to_string())?;
    let sizes = [
        (64 << 10, true),
        (64 << 10, true),
        ((64 << 10) + (32 << 10) - 64, true),
        (192 << 10, true),
        (100, false),
        (100, false),
        (128 << 10, true),
    ];
    for (seq, (len, as_blob)) in sizes.into_iter().enumerate() {
        let value = bytes_for(seq as u64, len);
        let before = tx.stats().bytes;
        tx.send(&value).map_err(|e| e.to_string())?;
        let in_ring = tx.stats().bytes - before;
        if (in_ring == 24) != as_blob {
            return Err(format!("value {seq} of {len} bytes: {in_ring} ring bytes"));
        }
        if rx.recv().map_err(|e| e.to_string())? != value {
            return Err(format!("value {seq} of {len} bytes differs"));
        }
    }
    Ok(())
}

/// Plain data larger than the threshold is written in place in the blob and read in place from
/// its sealed memory.
fn plain_blob_in_place() -> TestResult {
    type Big = Plain<[u64; 32 << 10]>; // 256 KiB
    let (mut tx, mut rx) = sp::channel::<Big>(&small_ring()).map_err(|e| e.to_string())?;
    for round in 0..4u64 {
        tx.send_with(|big| {
            for (i, word) in big.0.iter_mut().enumerate() {
                *word = round ^ i as u64;
            }
        })
        .map_err(|e| e.to_string())?;
    }
    for round in 0..4u64 {
        let ok = rx
            .recv_in_place(|big, fds| {
                fds.is_empty()
                    && big
                        .0
                        .iter()
                        .enumerate()
                        .all(|(i, &w)| w == round ^ i as u64)
            })
            .map_err(|e| e.to_string())?;
        if !ok {
            return Err(format!("round {round}: contents differ"));
        }
    }
    Ok(())
}

/// Each value gets exactly its own descriptors, in order, including blobs with descriptors.
fn fds_with_their_values() -> TestResult {
    let config = small_ring().blob_threshold(1024);
    let (mut tx, mut rx) = sp::channel::<Vec<u8>>(&config).map_err(|e| e.to_string())?;
    let files: Vec<std::fs::File> = (0..4).map(tagged_file).collect::<Result<_, _>>()?;
    for seq in 0..200u64 {
        let value = bytes_for(seq, if seq % 5 == 0 { 3000 } else { 40 });
        let fds: Vec<_> = fd_set(seq).iter().map(|&i| files[i].as_fd()).collect();
        tx.send_with_fds(&value, &fds).map_err(|e| e.to_string())?;
    }
    for seq in 0..200u64 {
        let (value, fds) = rx.recv_with_fds().map_err(|e| format!("{seq}: {e}"))?;
        if value != bytes_for(seq, value.len()) {
            return Err(format!("{seq}: value differs"));
        }
        let tags = fds
            .into_iter()
            .map(read_tag)
            .collect::<Result<Vec<_>, _>>()?;
        if tags != fd_set(seq) {
            return Err(format!(
                "{seq}: descriptors {tags:?}, want {:?}",
                fd_set(seq)
            ));
        }
    }
    // `recv` on a value with descriptors closes them (the trial's leak check sees it).
    tx.send_with_fds(&vec![1], &[files[0].as_fd()])
        .map_err(|e| e.to_string())?;
    if rx.recv().map_err(|e| e.to_string())? != [1] {
        return Err("value with closed descriptors".into());
    }
    Ok(())
}

/// The descriptors value `seq` carries (indexes into the tagged files; none for some).
pub(crate) fn fd_set(seq: u64) -> Vec<usize> {
    (0..(seq % 4) as usize)
        .map(|k| (seq as usize + k) % 4)
        .collect()
}

/// A memfd holding its tag, so that a received descriptor tells which file it is.
pub(crate) fn tagged_file(tag: usize) -> Result<std::fs::File, String> {
    let fd = rustix::fs::memfd_create("sp-it-tag", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| e.to_string())?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&[tag as u8]).map_err(|e| e.to_string())?;
    Ok(file)
}

/// The tag of a received descriptor, read with `pread` (the file offset is shared with every
/// other copy of the descriptor, in both processes).
pub(crate) fn read_tag(fd: OwnedFd) -> Result<usize, String> {
    let file = std::fs::File::from(fd);
    let mut tag = [0u8; 1];
    file.read_exact_at(&mut tag, 0).map_err(|e| e.to_string())?;
    Ok(usize::from(tag[0]))
}

fn too_many_fds_sends_nothing() -> TestResult {
    let (mut tx, mut rx) = sp::channel::<u32>(&small_ring()).map_err(|e| e.to_string())?;
    let file = tagged_file(0)?;
    let fds = vec![file.as_fd(); sp::MAX_FDS + 1];
    match tx.send_with_fds(&1, &fds) {
        Err(Error::TooManyFds { n_fds, max }) if n_fds == sp::MAX_FDS + 1 && max == sp::MAX_FDS => {
        }
        other => return Err(format!("too many: {other:?}")),
    }
    tx.send_with_fds(&2, &fds[..sp::MAX_FDS])
        .map_err(|e| e.to_string())?;
    let (value, got) = rx.try_recv_with_fds().map_err(|e| e.to_string())?;
    if value != 2 || got.len() != sp::MAX_FDS {
        return Err(format!("got {value} with {} descriptors", got.len()));
    }
    Ok(())
}

/// A value whose blob would exceed `max_blob_len` is refused before anything is sent.
fn blob_over_the_limit_sends_nothing() -> TestResult {
    let config = small_ring().blob_threshold(100).max_blob_len(1000);
    let (mut tx, mut rx) = sp::channel::<Vec<u8>>(&config).map_err(|e| e.to_string())?;
    match tx.send(&vec![7; 2000]) {
        Err(Error::TooLarge {
            len: 2002,
            max: 1000,
        }) => {}
        other => return Err(format!("over the limit: {other:?}")),
    }
    tx.send(&vec![7; 900]).map_err(|e| e.to_string())?;
    match (rx.try_recv().map(|v| v.len()), rx.try_recv()) {
        (Ok(900), Err(TryRecvError::Empty)) => {}
        other => return Err(format!("after the refusal: {other:?}")),
    }
    // After a blob, the next value is encoded straight into one (no length pass first): over the
    // limit it is refused the same way, and nothing of it is sent.
    match tx.send(&vec![8; 3000]) {
        Err(Error::TooLarge {
            len: 3002,
            max: 1000,
        }) => {}
        other => return Err(format!("over the limit after a blob: {other:?}")),
    }
    tx.send(&vec![9; 800]).map_err(|e| e.to_string())?;
    match (rx.try_recv(), rx.try_recv()) {
        (Ok(v), Err(TryRecvError::Empty)) if v == vec![9; 800] => Ok(()),
        other => Err(format!("after the second refusal: {other:?}")),
    }
}

/// Values sent before the sender went are delivered; then `PeerGone`, on every form.
fn peer_gone_after_drain() -> TestResult {
    let (mut tx, mut rx) = sp::channel::<Rec>(&small_ring()).map_err(|e| e.to_string())?;
    for seq in 0..10 {
        tx.send(&Rec::new(seq)).map_err(|e| e.to_string())?;
    }
    drop(tx);
    for seq in 0..10 {
        if rx.recv().map_err(|e| e.to_string())?.seq != seq {
            return Err(format!("value {seq} lost"));
        }
    }
    match rx.recv() {
        Err(Error::PeerGone) => {}
        other => return Err(format!("recv after the end: {other:?}")),
    }
    match rx.try_recv() {
        Err(err) if err.is_disconnected() => {}
        other => return Err(format!("try_recv after the end: {other:?}")),
    }
    match rx.recv_timeout(Duration::from_secs(5)) {
        Err(err) if err.is_disconnected() => Ok(()),
        other => Err(format!("recv_timeout after the end: {other:?}")),
    }
}

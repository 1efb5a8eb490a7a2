//! Streams, kills and blobs across processes: records with sequence numbers and checksums, the
//! trials that use them, and their child roles.

use std::time::{Duration, Instant};

use sp_shm::{Blob, Config, Consumer, Error, Producer};
use sp_test_support::fds::FdTable;
use sp_test_support::procs::wait_until_thread_in_poll;

use crate::{PROMPT, TestResult, child_command, idle_from, open_fds, spawn_child};

pub(crate) const COUNT_ENV: &str = "SP_SHM_IT_COUNT";

pub(crate) fn config_for(idle: &str) -> Config {
    Config::new().capacity(64 << 10).idle(idle_from(idle))
}

fn record_count() -> u64 {
    if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    }
}

// --- records with sequence numbers and checksums -------------------------------------------

/// FNV-1a, 64-bit.
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Record `seq`: `[seq: u64][pattern][fnv of the preceding bytes: u64]`, 16..=256 bytes.
pub(crate) fn write_record(seq: u64, out: &mut [u8]) -> usize {
    let len = record_len(seq);
    out[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, byte) in out[8..len - 8].iter_mut().enumerate() {
        *byte = (seq as u8).wrapping_add(i as u8).wrapping_mul(7);
    }
    let sum = fnv(&out[..len - 8]);
    out[len - 8..len].copy_from_slice(&sum.to_le_bytes());
    len
}

pub(crate) fn record_len(seq: u64) -> usize {
    16 + (seq.wrapping_mul(13) % 241) as usize
}

pub(crate) fn check_record(want_seq: u64, bytes: &[u8]) -> TestResult {
    if bytes.len() != record_len(want_seq) {
        return Err(format!("record {want_seq}: length {}", bytes.len()));
    }
    let seq = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    if seq != want_seq {
        return Err(format!("expected record {want_seq}, got {seq}"));
    }
    let n = bytes.len();
    let sum = u64::from_le_bytes(bytes[n - 8..].try_into().unwrap_or_default());
    if sum != fnv(&bytes[..n - 8]) {
        return Err(format!("record {seq}: checksum mismatch"));
    }
    Ok(())
}

pub(crate) fn produce(producer: &mut Producer, n: u64) -> Result<(), Error> {
    for seq in 0..n {
        let mut grant = producer.reserve(record_len(seq))?;
        let used = write_record(seq, &mut grant);
        grant.commit(used)?;
    }
    Ok(())
}

pub(crate) fn consume(consumer: &mut Consumer, n: u64) -> TestResult {
    let mut buf = Vec::new();
    for seq in 0..n {
        consumer
            .recv_into(&mut buf)
            .map_err(|e| format!("recv {seq}: {e}"))?;
        check_record(seq, &buf)?;
    }
    Ok(())
}

// --- trials -------------------------------------------------------------------------------

/// A million records each way at once, parent and child each producing on one thread and
/// consuming on another; then both see the other leave.
///
/// With `no_membarrier`, the child runs with [`sp_shm::NO_MEMBARRIER_ENV`]: it never calls
/// `membarrier`, so its publications use full fences and its parks re-check every millisecond,
/// while this process keeps the asymmetric fences. The stream must still arrive whole and
/// promptly (a lost wake-up costs at most a millisecond, never a hang), and the child checks that
/// every one of its parks took the re-checking path.
pub(crate) fn stream_both_ways(idle: &str, no_membarrier: bool) -> TestResult {
    let n = if no_membarrier {
        record_count() / 4
    } else {
        record_count()
    };
    let mut cmd = child_command("stream", idle);
    cmd.env(COUNT_ENV, n.to_string());
    if no_membarrier {
        cmd.env(sp_shm::NO_MEMBARRIER_ENV, "1");
    }
    let (mut child, duplex) = spawn_child(&mut cmd, &config_for(idle))?;
    let (mut producer, mut consumer, _control) = duplex.into_parts();
    if no_membarrier && idle == "park" {
        // The child must park at least once (its check), which a stream that keeps both its
        // rings busy need not do: wait until it has started its producer thread (the handshake
        // is over) and its main thread waits in `poll` for the first record (the only wait left
        // there), then send.
        let pid = child.id();
        let deadline = Instant::now() + PROMPT;
        while std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count) < 2 {
            if Instant::now() > deadline {
                return Err(format!(
                    "the child started no producer thread in {PROMPT:?}"
                ));
            }
            std::thread::yield_now();
        }
        wait_until_thread_in_poll(pid, pid, PROMPT)?;
    }
    let sender = std::thread::spawn(move || {
        let res = produce(&mut producer, n);
        (res, producer.stats())
    });
    let got = consume(&mut consumer, n);
    let (sent, stats) = sender.join().map_err(|_| "producer thread panicked")?;
    sent.map_err(|e| format!("send: {e}"))?;
    got?;
    match consumer.read() {
        Err(Error::PeerGone) => {}
        other => return Err(format!("after the stream: {:?}", other.map(|r| r.len()))),
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("child failed: {status}"));
    }
    let cstats = consumer.stats();
    eprintln!(
        "  {idle}: {n} records each way; wake bytes per 1000 records: producer {:.2}, consumer {:.2}; parks {} / {}",
        stats.wakes_sent as f64 * 1000.0 / n as f64,
        cstats.wakes_sent as f64 * 1000.0 / n as f64,
        stats.parks,
        cstats.parks,
    );
    Ok(())
}

/// The child is killed while this side waits for data (parked, or spinning); `PeerGone` follows
/// promptly.
pub(crate) fn consumer_sees_kill(idle: &str) -> TestResult {
    let (mut child, mut duplex) = spawn_child(&mut child_command("idle", idle), &config_for(idle))?;
    let mut buf = Vec::new();
    duplex
        .consumer()
        .recv_into(&mut buf)
        .map_err(|e| format!("ready: {e}"))?;
    let killer = kill_when_waiting(child.id(), idle);
    let res = duplex.consumer().read().map(|r| r.len());
    let killed_at = killer.join().map_err(|_| "killer panicked")??;
    let late = killed_at.elapsed();
    let _ = child.wait();
    let parks = duplex.consumer().stats().parks;
    if (idle == "spin") != (parks == 0) {
        return Err(format!("{idle}: consumer parked {parks} times"));
    }
    match res {
        Err(Error::PeerGone) if late < PROMPT => Ok(()),
        other => Err(format!(
            "expected PeerGone within {PROMPT:?}: {other:?} after {late:?}"
        )),
    }
}

/// The child never reads; this side fills the ring, blocks in `send`, and the child is killed.
pub(crate) fn full_producer_sees_kill(idle: &str) -> TestResult {
    let (mut child, mut duplex) = spawn_child(&mut child_command("idle", idle), &config_for(idle))?;
    let mut buf = Vec::new();
    duplex
        .consumer()
        .recv_into(&mut buf)
        .map_err(|e| format!("ready: {e}"))?;
    let producer = duplex.producer();
    let mut n_sent = 0;
    while producer.try_send(&[7; 1000]).is_ok() {
        n_sent += 1;
    }
    if n_sent == 0 {
        return Err("ring took nothing".into());
    }
    let killer = kill_when_waiting(child.id(), idle);
    let res = duplex.producer().send(&[7; 1000]);
    let killed_at = killer.join().map_err(|_| "killer panicked")??;
    let late = killed_at.elapsed();
    let _ = child.wait();
    match res {
        Err(Error::PeerGone) if late < PROMPT => Ok(()),
        other => Err(format!(
            "expected PeerGone within {PROMPT:?}: {other:?} after {late:?}"
        )),
    }
}

/// Kills `pid` once the calling thread waits: for a parking strategy, once it is inside
/// `poll`/`ppoll`; for spinning, once it has been observed running in its wait loop (any time
/// after this call, since the waiting call follows immediately).
pub(crate) fn kill_when_waiting(
    pid: u32,
    idle: &str,
) -> std::thread::JoinHandle<Result<Instant, String>> {
    let tid = rustix::thread::gettid();
    let parks = idle != "spin";
    std::thread::spawn(move || {
        if parks {
            let tid = tid.as_raw_nonzero().get() as u32;
            wait_until_thread_in_poll(std::process::id(), tid, Duration::from_secs(10))?;
        }
        let pid = rustix::process::Pid::from_raw(pid as i32).ok_or("bad pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)
            .map_err(|e| e.to_string())?;
        Ok(Instant::now())
    })
}

/// The child commits a record, reserves a second and half-writes it, then is killed: only the
/// first record is delivered, then `PeerGone`.
pub(crate) fn writer_killed_mid_record() -> TestResult {
    let (mut child, duplex) = spawn_child(
        &mut child_command("mid-record", "park"),
        &config_for("park"),
    )?;
    let (_producer, mut consumer, mut control) = duplex.into_parts();
    let msg = control
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("holding: {e}"))?;
    if msg.bytes != b"holding" {
        return Err("unexpected control message".into());
    }
    child.kill().map_err(|e| e.to_string())?;
    let _ = child.wait();
    let mut buf = Vec::new();
    consumer
        .recv_into(&mut buf)
        .map_err(|e| format!("first record: {e}"))?;
    if buf != b"before" {
        return Err(format!("first record: {buf:?}"));
    }
    match consumer.read().map(|r| r.to_vec()) {
        Err(Error::PeerGone) => Ok(()),
        other => Err(format!("after the kill: {other:?}")),
    }
}

/// A blob far larger than the ring goes by descriptor; the child checks it and answers with its
/// checksum.
pub(crate) fn blob_zero_copy() -> TestResult {
    let len: usize = if cfg!(debug_assertions) {
        16 << 20
    } else {
        100 << 20
    };
    let (mut child, mut duplex) = spawn_child(
        &mut child_command("blob", "adaptive"),
        &config_for("adaptive"),
    )?;
    let blob = Blob::build(len, |bytes| {
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let word = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    })
    .map_err(|e| e.to_string())?;
    let want = fnv(&blob);
    blob.send(duplex.control()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    duplex
        .consumer()
        .recv_into(&mut buf)
        .map_err(|e| format!("checksum: {e}"))?;
    let got = u64::from_le_bytes(buf.as_slice().try_into().unwrap_or_default());
    drop(duplex);
    let status = child.wait().map_err(|e| e.to_string())?;
    if got != want || !status.success() {
        return Err(format!("checksum {got:#x} != {want:#x} or child {status}"));
    }
    Ok(())
}

// --- child roles --------------------------------------------------------------------------

pub(crate) fn child_stream(idle: &str) -> TestResult {
    let n: u64 = std::env::var(COUNT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or("count")?;
    let inherited = open_fds();
    let duplex = sp_shm::adopt(&config_for(idle)).map_err(|e| format!("adopt: {e}"))?;
    new_fds_cloexec(&inherited)?;
    let (mut producer, mut consumer, _control) = duplex.into_parts();
    let sender = std::thread::spawn(move || {
        let res = produce(&mut producer, n);
        (res, producer.stats())
    });
    consume(&mut consumer, n)?;
    let (sent, pstats) = sender.join().map_err(|_| "producer panicked")?;
    sent.map_err(|e| format!("send: {e}"))?;
    if std::env::var_os(sp_shm::NO_MEMBARRIER_ENV).is_some_and(|v| v == "1") {
        // Every park of this process must have taken the re-checking path.
        let cstats = consumer.stats();
        let parks = pstats.parks + cstats.parks;
        let rechecked = pstats.rechecked_parks + cstats.rechecked_parks;
        if rechecked != parks || (idle == "park" && parks == 0) {
            return Err(format!(
                "without membarrier: {parks} parks, {rechecked} of them re-checking"
            ));
        }
        eprintln!("  child without membarrier: {parks} parks, all re-checking");
    }
    Ok(())
}

/// Every descriptor the handshake left open (the adopted socket, memfds, wake sockets) is
/// close-on-exec, so no grandchild can inherit one and keep a hang-up from being seen.
/// Descriptors this process inherited from its own parent (a test runner's jobserver, say) are
/// not ours to judge, except the adopted socket.
fn new_fds_cloexec(inherited: &FdTable) -> TestResult {
    let adopted: Option<i32> = std::env::var(sp_core::FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    for fd in open_fds().into_keys() {
        if inherited.contains_key(&fd) && Some(fd) != adopted {
            continue;
        }
        if !sp_test_support::fds::cloexec_by_number(fd) {
            return Err(format!("fd {fd} is not close-on-exec"));
        }
    }
    Ok(())
}

pub(crate) fn child_idle(idle: &str) -> TestResult {
    let mut duplex = sp_shm::adopt(&config_for(idle)).map_err(|e| format!("adopt: {e}"))?;
    duplex
        .producer()
        .send(b"ready")
        .map_err(|e| e.to_string())?;
    // Read nothing; wait (for ever) until the parent goes.
    let _ = duplex.control().recv();
    Ok(())
}

pub(crate) fn child_mid_record() -> TestResult {
    let duplex = sp_shm::adopt(&config_for("park")).map_err(|e| format!("adopt: {e}"))?;
    let (mut producer, mut consumer, control) = duplex.into_parts();
    producer.send(b"before").map_err(|e| e.to_string())?;
    let mut grant = producer.reserve(64).map_err(|e| e.to_string())?;
    grant[..32].fill(0xEE);
    control.send(b"holding", &[]).map_err(|e| e.to_string())?;
    let _ = consumer.read().map(|r| r.len());
    grant.commit(64).map_err(|e| e.to_string())
}

pub(crate) fn child_blob() -> TestResult {
    let duplex = sp_shm::adopt(&config_for("adaptive")).map_err(|e| format!("adopt: {e}"))?;
    let (mut producer, mut consumer, mut control) = duplex.into_parts();
    let blob = Blob::recv_timeout(&mut control, Duration::from_secs(20))
        .map_err(|e| format!("blob: {e}"))?;
    producer
        .send(&fnv(&blob).to_le_bytes())
        .map_err(|e| e.to_string())?;
    let _ = consumer.read().map(|r| r.len());
    Ok(())
}

//! Pipelines across real processes: every byte through three stages sibling to sibling, with and
//! without the parent at the ends; a middle stage killed mid-stream ends both neighbours with an
//! error naming it; the parent, which relays a ring's descriptors, cannot write its data; and the
//! stage roles.

#![allow(unsafe_code)] // The relaying parent tries `mmap` and `mprotect` on the data memfd.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use sp::pipeline::{Builder, Stage};
use sp::{Config, Error, Plain};

use crate::{TestResult, child_command, children_of_this_process, count, fifo, trial};

/// Words per chunk: 4 KiB chunks.
const WORDS: usize = 512;
/// What the middle stage XORs every word with.
const MASK: u64 = 0xA5A5_5A5A_F00F_0FF0;
/// How soon both neighbours of a killed stage must have ended.
const PROMPT: Duration = Duration::from_secs(5);
/// The exit code of a stage whose error named stage `n` is `NAMED + n`.
const NAMED: i32 = 10;

type Chunk = Plain<[u64; WORDS]>;

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial("pipeline_every_byte_through_three_stages", three_stages),
        trial("pipeline_fed_and_drained_by_the_parent", fed_and_drained),
        trial("pipeline_middle_stage_killed", middle_stage_killed),
        trial(
            "pipeline_parent_cannot_write_a_sibling_ring",
            parent_cannot_write,
        ),
    ]
}

fn config() -> Config {
    Config::new().capacity(256 << 10)
}

/// Word `i` of chunk `seq` as the first stage writes it.
fn word(seq: u64, i: usize) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

fn stage(role: &str, arg: &str) -> Command {
    child_command(role, arg)
}

/// generate → xor → verify, sibling to sibling; the last stage exits 0 only if every word of
/// every chunk arrived, in order.
fn three_stages() -> TestResult {
    let n = count(20_000).to_string();
    let mut pipeline = Builder::new()
        .stage(stage("stage-gen", &n))
        .stage(stage("stage-xor", ""))
        .stage(stage("stage-verify", &n))
        .spawn(&config())
        .map_err(|e| format!("spawn: {e}"))?;
    pipeline.wait().map_err(|e| e.to_string())?;
    if !children_of_this_process().is_empty() {
        return Err("children left".into());
    }
    Ok(())
}

/// The parent feeds the first stage and drains the last; three XOR stages between (so the data
/// comes back XORed three times).
fn fed_and_drained() -> TestResult {
    let n = count(20_000);
    let (mut pipeline, mut tx, mut rx) = Builder::new()
        .stage(stage("stage-xor", ""))
        .stage(stage("stage-xor", ""))
        .stage(stage("stage-xor", ""))
        .spawn_with_ends::<Chunk, Chunk>(&config())
        .map_err(|e| format!("spawn: {e}"))?;
    let feeder = std::thread::spawn(move || -> TestResult {
        for seq in 0..n {
            tx.send_with(|chunk: &mut Chunk| fill(chunk, seq))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    for seq in 0..n {
        let chunk = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|e| format!("chunk {seq}: {e}"))?;
        for (i, w) in chunk.0.iter().enumerate() {
            if *w != word(seq, i) ^ MASK {
                return Err(format!("chunk {seq} word {i}"));
            }
        }
    }
    feeder.join().map_err(|_| "feeder panicked")??;
    match rx.recv_timeout(Duration::from_secs(20)) {
        Err(err) if err.is_disconnected() => {}
        other => return Err(format!("after the last chunk: {other:?}")),
    }
    pipeline.wait().map_err(|e| e.to_string())
}

/// A middle stage killed mid-stream (after the last stage has verified some chunks): the stage
/// before it (writing) and the stage after it (reading) both end within `PROMPT`, each with an
/// error that names stage 1, and the pipeline's error names it too.
fn middle_stage_killed() -> TestResult {
    let flowing = fifo::Fifo::new("flowing")?;
    let mut last = stage("stage-verify", "0");
    last.env(fifo::FIFO_ENV, flowing.path());
    let mut pipeline = Builder::new()
        .stage(stage("stage-gen", "0"))
        .stage(stage("stage-xor", ""))
        .stage(last)
        .stop_timeout(Duration::from_secs(30))
        .spawn(&config())
        .map_err(|e| format!("spawn: {e}"))?;
    flowing.wait_byte(Duration::from_secs(20))?;
    let victim = pipeline.pid(1).ok_or("pid")?;
    let pid = rustix::process::Pid::from_raw(victim as i32).ok_or("pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).map_err(|e| e.to_string())?;
    let killed = Instant::now();
    let res = pipeline.wait();
    let took = killed.elapsed();
    let statuses = pipeline.statuses().to_vec();
    eprintln!("  ended {took:.2?} after the kill: {statuses:?}");
    match res {
        Err(Error::StageFailed { stage: 1, status }) if status.signal() == Some(9) => {}
        other => return Err(format!("the pipeline's error: {other:?}")),
    }
    let code = |i: usize| statuses[i].and_then(|s| s.code());
    if code(0) != Some(NAMED + 1) || code(2) != Some(NAMED + 1) {
        return Err(format!(
            "the neighbours ended {statuses:?}, not naming stage 1"
        ));
    }
    if took > PROMPT {
        return Err(format!("the neighbours took {took:.2?}"));
    }
    Ok(())
}

/// The parent relays an OFFER between two children by hand, as `Pipeline` does. While it holds
/// the data memfd it tries every way to write it: a writable shared mapping, `write(2)`, a
/// read-only mapping made writable with `mprotect`, a fresh read-write open through
/// `/proc/self/fd`, `ftruncate`. Each fails; then it forwards the OFFER and the consumer checks
/// every byte the producer wrote.
fn parent_cannot_write() -> TestResult {
    let (ours_p, theirs_p) =
        sp::sp_core::pair(sp::sp_core::SocketKind::SeqPacket).map_err(|e| e.to_string())?;
    let (ours_c, theirs_c) =
        sp::sp_core::pair(sp::sp_core::SocketKind::SeqPacket).map_err(|e| e.to_string())?;
    let mut producer = sp::sp_core::spawn(&mut child_command("simplex-producer", ""), theirs_p)
        .map_err(|e| e.to_string())?;
    let mut consumer = sp::sp_core::spawn(&mut child_command("simplex-consumer", ""), theirs_c)
        .map_err(|e| e.to_string())?;
    let mut to_producer = sp::sp_core::Channel::new(ours_p).map_err(|e| e.to_string())?;
    let mut to_consumer = sp::sp_core::Channel::new(ours_c).map_err(|e| e.to_string())?;
    let limit = Duration::from_secs(20);
    let offer = to_producer.recv_timeout(limit).map_err(|e| e.to_string())?;
    let data = offer.fds.get(1).ok_or("no data memfd")?;
    let broken = try_to_write(data);
    let fds: Vec<_> = offer.fds.iter().map(AsFd::as_fd).collect();
    to_consumer
        .send(&offer.bytes, &fds)
        .map_err(|e| e.to_string())?;
    drop(fds);
    drop(offer);
    let ready = to_consumer.recv_timeout(limit).map_err(|e| e.to_string())?;
    to_producer
        .send(&ready.bytes, &[])
        .map_err(|e| e.to_string())?;
    let (p, c) = (producer.wait(), consumer.wait());
    if !broken.is_empty() {
        return Err(format!(
            "the relaying parent could write the data: {broken:?}"
        ));
    }
    let (p, c) = (p.map_err(|e| e.to_string())?, c.map_err(|e| e.to_string())?);
    if !p.success() || !c.success() {
        return Err(format!("producer {p}, consumer {c}"));
    }
    Ok(())
}

/// Every way this process might write the memfd `data`; the ones that worked.
fn try_to_write(data: &OwnedFd) -> Vec<String> {
    let mut broken = Vec::new();
    let len = 4096;
    // SAFETY: a fresh mapping chosen by the kernel (null hint); nothing else refers to it, and it
    // is unmapped at once if it was made.
    let shared_rw = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            data,
            0,
        )
    };
    match shared_rw {
        Err(Errno::PERM) => {}
        Err(err) => broken.push(format!(
            "mmap(PROT_WRITE, MAP_SHARED): {err} (expected EPERM)"
        )),
        Ok(ptr) => {
            broken.push("mmap(PROT_WRITE, MAP_SHARED) succeeded".into());
            // SAFETY: the mapping just made, `len` bytes, not used after this.
            let _ = unsafe { rustix::mm::munmap(ptr, len) };
        }
    }
    if rustix::io::pwrite(data, b"x", 0) != Err(Errno::PERM) {
        broken.push("write(2) did not fail with EPERM".into());
    }
    // SAFETY: as above, a fresh read-only mapping that nothing else refers to.
    match unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ,
            MapFlags::SHARED,
            data,
            0,
        )
    } {
        Ok(ptr) => {
            // SAFETY: `ptr` is the start of the `len`-byte mapping just made; if the protection
            // change succeeded nothing writes through it, and it is unmapped right after.
            let res = unsafe {
                rustix::mm::mprotect(ptr, len, MprotectFlags::READ | MprotectFlags::WRITE)
            };
            if res != Err(Errno::ACCESS) {
                broken.push(format!("mprotect to writable: {res:?} (expected EACCES)"));
            }
            // SAFETY: the mapping just made, not used after this.
            let _ = unsafe { rustix::mm::munmap(ptr, len) };
        }
        Err(err) => broken.push(format!("a read-only mapping failed: {err}")),
    }
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(data));
    // Refusing the open is as good as refusing the write.
    if let Ok(fd) = rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        && rustix::io::pwrite(&fd, b"x", 0) != Err(Errno::PERM)
    {
        broken.push("write(2) through a fresh open did not fail with EPERM".into());
    }
    if rustix::fs::ftruncate(data, 0).is_ok() {
        broken.push("ftruncate succeeded".into());
    }
    broken
}

// --- stage roles --------------------------------------------------------------------------------

fn fill(chunk: &mut Chunk, seq: u64) {
    for (i, w) in chunk.0.iter_mut().enumerate() {
        *w = word(seq, i);
    }
}

/// Exits with `NAMED + n` when `err` names stage `n`, else reports it.
fn end_with(err: Error) -> TestResult {
    if let Error::StageFailed { stage, .. } = err {
        eprintln!("stage: {err}");
        std::process::exit(NAMED + stage as i32);
    }
    Err(err.to_string())
}

/// Writes `n` chunks (`0`: until its output breaks).
pub(crate) fn gen_stage(n: u64) -> TestResult {
    let mut stage: Stage<(), Chunk> = sp::pipeline::join(&config()).map_err(|e| e.to_string())?;
    let mut output = stage.take_output().ok_or("no output")?;
    let mut seq = 0;
    while n == 0 || seq < n {
        if let Err(err) = output.send_with(|chunk: &mut Chunk| fill(chunk, seq)) {
            return end_with(stage.failure(err));
        }
        seq += 1;
    }
    Ok(())
}

/// XORs every word with `MASK`.
pub(crate) fn xor_stage() -> TestResult {
    let mut stage: Stage<Chunk, Chunk> =
        sp::pipeline::join(&config()).map_err(|e| e.to_string())?;
    let (mut input, mut output) = (
        stage.take_input().ok_or("no input")?,
        stage.take_output().ok_or("no output")?,
    );
    loop {
        let res = input.recv_in_place(|chunk: &Chunk, _| {
            output.send_with(|out: &mut Chunk| {
                for (o, w) in out.0.iter_mut().zip(chunk.0.iter()) {
                    *o = w ^ MASK;
                }
            })
        });
        match res {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return end_with(stage.failure(err)),
            Err(Error::PeerGone) => return stage.input_ended().or_else(end_with),
            Err(err) => return Err(err.to_string()),
        }
    }
}

/// Checks `n` chunks (`0`: until its input ends; after 100 chunks it signals the FIFO, if it has
/// one).
pub(crate) fn verify_stage(n: u64) -> TestResult {
    let mut stage: Stage<Chunk, ()> = sp::pipeline::join(&config()).map_err(|e| e.to_string())?;
    let mut input = stage.take_input().ok_or("no input")?;
    let mut seq = 0;
    loop {
        let res = input.recv_in_place(|chunk: &Chunk, _| {
            chunk
                .0
                .iter()
                .enumerate()
                .all(|(i, w)| *w == word(seq, i) ^ MASK)
        });
        match res {
            Ok(true) => seq += 1,
            Ok(false) => return Err(format!("chunk {seq} corrupt")),
            Err(Error::PeerGone) => {
                stage.input_ended().or_else(end_with)?;
                return if n == 0 || seq == n {
                    Ok(())
                } else {
                    Err(format!("{seq} chunks of {n}"))
                };
            }
            Err(err) => return Err(err.to_string()),
        }
        if seq == 100 && std::env::var_os(fifo::FIFO_ENV).is_some() {
            fifo::signal()?;
        }
    }
}

/// Offers a ring to its parent (who relays it) and writes 1000 checked records.
pub(crate) fn simplex_producer() -> TestResult {
    let mut channel = sp::sp_core::Channel::new(sp::sp_core::adopt().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut producer = sp::sp_shm::produce_over(&mut channel, &sp::sp_shm::Config::new())
        .map_err(|e| e.to_string())?;
    for seq in 0..1000u64 {
        let record: Vec<u8> = (0..64).map(|i| word(seq, i) as u8).collect();
        producer.send(&record).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Accepts the relayed ring and checks every record.
pub(crate) fn simplex_consumer() -> TestResult {
    let mut channel = sp::sp_core::Channel::new(sp::sp_core::adopt().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut consumer = sp::sp_shm::consume_over(&mut channel, &sp::sp_shm::Config::new())
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    for seq in 0..1000u64 {
        consumer.recv_into(&mut buf).map_err(|e| e.to_string())?;
        if buf
            .iter()
            .enumerate()
            .any(|(i, b)| *b != word(seq, i) as u8)
        {
            return Err(format!("record {seq} corrupt"));
        }
    }
    match consumer.recv_into(&mut buf) {
        Err(sp::sp_shm::Error::PeerGone) => Ok(()),
        other => Err(format!("after the last record: {other:?}")),
    }
}

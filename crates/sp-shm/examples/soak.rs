//! A long-running soak of the cross-process ring: parent and re-executed child stream records
//! both ways for a set time, with sequence numbers and checksums, while the parent also hands the
//! child a sealed blob (a descriptor) every second. At the end both sides count what moved, what
//! was lost, what was corrupted and which descriptors leaked; any non-zero count fails the run.
//!
//! ```text
//! cargo run --release -p sp-shm --example soak -- --duration 10m --idle adaptive --json
//! cargo run -p sp-shm --example soak -- --duration 60s --idle park
//! ```
//!
//! Each record is `[seq: u64][pattern][fnv-1a of the preceding bytes: u64]`, 16 bytes up to the
//! ring's largest payload; the last record of a direction has kind 1 and carries the number of
//! records sent. The consumer counts a gap in the sequence as lost and a bad length, checksum or
//! a sequence number going backwards as corrupted. Descriptor leaks are `/proc/self/fd` before
//! the ring is set up and after it is gone (parent), and before and after the blobs (child).

use std::collections::BTreeSet;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Parser, ValueEnum};
use sp_core::{Signal, SpawnOptions};
use sp_shm::{Blob, Config, Consumer, Error, IdleStrategy, Producer};

const CHILD_ENV: &str = "SP_SHM_SOAK_CHILD";
const KIND_DATA: u32 = 0;
const KIND_END: u32 = 1;
/// The control message that ends the blob stream.
const DONE: &[u8] = b"done";
/// Longest record the soak writes (the ring's largest payload may be smaller).
const MAX_RECORD: usize = 4096;
/// How long either side waits for the other at the end before it calls the run failed.
const END_LIMIT: Duration = Duration::from_secs(60);

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Soak the cross-process sp-shm ring both ways; fail on any loss, corruption or fd leak"
)]
struct Args {
    /// How long to stream (for example 10m, 90s, 2h).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Idle strategy on both sides.
    #[arg(long, value_enum, default_value_t = Idle::Adaptive)]
    idle: Idle,
    /// Ring capacity in bytes (a power of two, 4096 or more).
    #[arg(long, default_value_t = 1 << 20)]
    capacity: usize,
    /// Also print the result as one JSON line (the last line of output).
    #[arg(long)]
    json: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Idle {
    Spin,
    Adaptive,
    Park,
}

/// What one consumer saw.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    sent: u64,
    received: u64,
    lost: u64,
    corrupted: u64,
}

/// The child's report, sent on the control channel at the end: its consumer's tally (the
/// parent-to-child direction), blobs verified and corrupted, descriptors it leaked.
#[derive(Debug, Default, Clone, Copy)]
struct ChildReport {
    tally: Tally,
    blobs_ok: u64,
    blobs_corrupted: u64,
    fds_leaked: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let res = if std::env::var_os(CHILD_ENV).is_some() {
        child(&args).map(|()| true)
    } else {
        parent(&args)
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("soak: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(args: &Args) -> Config {
    let idle = match args.idle {
        Idle::Spin => IdleStrategy::spin(),
        Idle::Adaptive => IdleStrategy::adaptive(),
        Idle::Park => IdleStrategy::park(),
    };
    Config::new().capacity(args.capacity).idle(idle)
}

fn parent(args: &Args) -> anyhow::Result<bool> {
    let config = config(args);
    let fds_before = open_fds();
    let started = Instant::now();
    let (parent_tally, child_to_parent, report, blobs_sent) = {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(std::env::args_os().skip(1)).env(CHILD_ENV, "1");
        let opts = SpawnOptions::new().parent_death_signal(Signal::KILL);
        let (mut child, duplex) = sp_shm::spawn(&mut cmd, opts, &config).context("spawn child")?;
        let (producer, consumer, mut control) = duplex.into_parts();
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || produce(producer, &stop))
        };
        let receiver = std::thread::spawn(move || consume(consumer));

        let deadline = started + args.duration;
        let mut blobs_sent = 0u64;
        let mut next_progress = started + Duration::from_secs(60);
        while Instant::now() < deadline {
            let blob = Blob::build(blob_len(blobs_sent), |bytes| fill_blob(blobs_sent, bytes))
                .context("build blob")?;
            blob.send(&control).context("send blob")?;
            blobs_sent += 1;
            if Instant::now() >= next_progress {
                eprintln!(
                    "soak: {:.0?} of {:.0?}, {blobs_sent} blobs sent",
                    started.elapsed(),
                    args.duration
                );
                next_progress += Duration::from_secs(60);
            }
            // Pacing for the blob stream only; the rings run flat out on their own threads.
            std::thread::sleep(
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1)),
            );
        }
        control.send(DONE, &[]).context("send done")?;
        stop.store(true, Ordering::Relaxed);
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))?
            .context("parent producer")?;
        let child_to_parent = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))?
            .context("parent consumer")?;
        let msg = control
            .recv_timeout(END_LIMIT)
            .context("the child's report")?;
        let report = decode_report(&msg.bytes)?;
        let mut parent_to_child = report.tally;
        parent_to_child.sent = sent;
        drop(control);
        let status = child.wait()?;
        ensure!(status.success(), "child failed: {status}");
        (parent_to_child, child_to_parent, report, blobs_sent)
    };
    let fds_after = open_fds();
    let parent_leaked = fds_after.difference(&fds_before).count() as u64;

    let elapsed = started.elapsed().as_secs_f64();
    let moved = parent_tally.received + child_to_parent.received + report.blobs_ok;
    let lost = parent_tally.lost
        + child_to_parent.lost
        + (blobs_sent - report.blobs_ok - report.blobs_corrupted);
    let corrupted = parent_tally.corrupted + child_to_parent.corrupted + report.blobs_corrupted;
    let fds_leaked = parent_leaked + report.fds_leaked;
    println!(
        "soak: {elapsed:.1} s, idle {:?}, capacity {} bytes",
        args.idle, args.capacity
    );
    for (name, t) in [
        ("parent -> child", parent_tally),
        ("child -> parent", child_to_parent),
    ] {
        println!(
            "  {name}: sent {}, received {}, lost {}, corrupted {} ({:.2} M records/s)",
            t.sent,
            t.received,
            t.lost,
            t.corrupted,
            t.received as f64 / elapsed / 1e6
        );
    }
    println!(
        "  blobs (one descriptor each): sent {blobs_sent}, verified {}, corrupted {}",
        report.blobs_ok, report.blobs_corrupted
    );
    println!(
        "  messages moved {moved}, lost {lost}, corrupted {corrupted}, fds leaked {fds_leaked} (parent {parent_leaked}, child {})",
        report.fds_leaked
    );
    let ok = lost == 0 && corrupted == 0 && fds_leaked == 0;
    if args.json {
        let line = serde_json::json!({
            "ok": ok,
            "duration_s": elapsed,
            "idle": format!("{:?}", args.idle).to_lowercase(),
            "capacity": args.capacity,
            "messages_moved": moved,
            "lost": lost,
            "corrupted": corrupted,
            "fds_leaked": fds_leaked,
            "parent_to_child": {"sent": parent_tally.sent, "received": parent_tally.received},
            "child_to_parent": {"sent": child_to_parent.sent, "received": child_to_parent.received},
            "blobs": {"sent": blobs_sent, "verified": report.blobs_ok},
        });
        println!("{line}");
    }
    if !ok {
        eprintln!("soak: FAILED: lost {lost}, corrupted {corrupted}, fds leaked {fds_leaked}");
    }
    Ok(ok)
}

fn child(args: &Args) -> anyhow::Result<()> {
    let config = config(args);
    let duplex = sp_shm::adopt(&config).context("adopt")?;
    let (producer, consumer, mut control) = duplex.into_parts();
    let fds_before = open_fds();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || produce(producer, &stop))
    };
    let receiver = std::thread::spawn(move || consume(consumer));
    let mut report = ChildReport::default();
    loop {
        let msg = control.recv().context("control channel")?;
        if msg.bytes == DONE {
            break;
        }
        match Blob::from_message(msg) {
            Ok(blob) if blob_ok(report.blobs_ok + report.blobs_corrupted, &blob) => {
                report.blobs_ok += 1;
            }
            Ok(_) | Err(Error::Refused(_)) => report.blobs_corrupted += 1,
            Err(err) => bail!("blob: {err}"),
        }
    }
    // The parent has stopped its producer; its end record stops our consumer.
    report.tally = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("consumer thread panicked"))?
        .context("child consumer")?;
    stop.store(true, Ordering::Relaxed);
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("producer thread panicked"))?
        .context("child producer")?;
    report.fds_leaked = open_fds().difference(&fds_before).count() as u64;
    control.send(&encode_report(&report), &[])?;
    // Wait for the parent to close, so that it reads the report before this side's hang-up.
    let _ = control.recv_timeout(END_LIMIT);
    Ok(())
}

/// Streams records until `stop`, then an end record with the count; returns the count.
fn produce(mut producer: Producer, stop: &AtomicBool) -> Result<u64, Error> {
    let max = producer.max_payload().min(MAX_RECORD);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let len = record_len(seq, max);
        let mut grant = producer.reserve(len)?;
        write_record(seq, &mut grant[..len]);
        grant.commit(len)?;
        seq += 1;
    }
    let mut grant = producer.reserve(8)?;
    grant.copy_from_slice(&seq.to_le_bytes());
    grant.set_kind(KIND_END)?;
    grant.commit(8)?;
    Ok(seq)
}

/// Receives and checks records until the end record.
fn consume(mut consumer: Consumer) -> Result<Tally, Error> {
    let max = consumer.max_payload().min(MAX_RECORD);
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(max);
    let mut want = 0u64;
    loop {
        let kind = consumer.recv_into(&mut buf)?;
        if kind == KIND_END {
            let sent = buf
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes);
            tally.sent = sent;
            tally.lost += sent.saturating_sub(want);
            return Ok(tally);
        }
        tally.received += 1;
        let Some(seq) = check_record(&buf, max).filter(|_| kind == KIND_DATA) else {
            tally.corrupted += 1;
            want += 1;
            continue;
        };
        if seq < want {
            tally.corrupted += 1;
            continue;
        }
        tally.lost += seq - want;
        want = seq + 1;
    }
}

fn record_len(seq: u64, max: usize) -> usize {
    16 + ((seq.wrapping_mul(0x9e37_79b9) >> 7) as usize % (max - 15)) / 8 * 8
}

fn write_record(seq: u64, out: &mut [u8]) {
    let len = out.len();
    out[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, byte) in out[8..len - 8].iter_mut().enumerate() {
        *byte = (seq as u8).wrapping_add(i as u8).wrapping_mul(31);
    }
    let sum = fnv(&out[..len - 8]);
    out[len - 8..].copy_from_slice(&sum.to_le_bytes());
}

/// The record's sequence number if its length and checksum are right.
fn check_record(bytes: &[u8], max: usize) -> Option<u64> {
    let n = bytes.len();
    if n < 16 {
        return None;
    }
    let seq = u64::from_le_bytes(bytes[..8].try_into().ok()?);
    let sum = u64::from_le_bytes(bytes[n - 8..].try_into().ok()?);
    (n == record_len(seq, max) && sum == fnv(&bytes[..n - 8])).then_some(seq)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn blob_len(idx: u64) -> usize {
    (64 << 10) + (idx as usize % 16) * 4096 + 24
}

fn fill_blob(idx: u64, bytes: &mut [u8]) {
    let n = bytes.len();
    for (i, byte) in bytes[..n - 8].iter_mut().enumerate() {
        *byte = (idx as u8) ^ (i as u8).wrapping_mul(13);
    }
    let sum = fnv(&bytes[..n - 8]);
    bytes[n - 8..].copy_from_slice(&sum.to_le_bytes());
}

fn blob_ok(idx: u64, blob: &[u8]) -> bool {
    let n = blob.len();
    n == blob_len(idx)
        && blob[n - 8..] == fnv(&blob[..n - 8]).to_le_bytes()
        && blob[..n - 8]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (idx as u8) ^ (i as u8).wrapping_mul(13))
}

fn encode_report(report: &ChildReport) -> Vec<u8> {
    [
        report.tally.sent,
        report.tally.received,
        report.tally.lost,
        report.tally.corrupted,
        report.blobs_ok,
        report.blobs_corrupted,
        report.fds_leaked,
    ]
    .iter()
    .flat_map(|v| v.to_le_bytes())
    .collect()
}

fn decode_report(bytes: &[u8]) -> anyhow::Result<ChildReport> {
    ensure!(bytes.len() == 56, "report of {} bytes", bytes.len());
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    Ok(ChildReport {
        tally: Tally {
            sent: word(0),
            received: word(1),
            lost: word(2),
            corrupted: word(3),
        },
        blobs_ok: word(4),
        blobs_corrupted: word(5),
        fds_leaked: word(6),
    })
}

fn open_fds() -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

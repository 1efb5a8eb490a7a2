//! A parent/child pipeline: the parent streams N bytes through an sp-shm ring to a child it
//! spawned, the child verifies every record (sequence number and checksum) and reports back.
//!
//! ```text
//! cargo run --release -p sp-shm --example pipeline -- 10G
//! cargo run --release -p sp-shm --example pipeline -- 2G --record 16Ki --idle park --trusted
//! ```
//!
//! Sizes take decimal suffixes K, M, G (10G = 10^10 bytes) or binary Ki, Mi, Gi. Each record is
//! `[seq: u64][payload][checksum: u64]`, the checksum covering sequence and payload. The child
//! reads each record either by copying it out (the default, safe against any producer) or, with
//! `--trusted`, in place through `ReadGrant::as_slice_trusted`, the documented trust choice for a
//! producer that is known to follow the protocol (here: the parent, running this same code).

#![allow(unsafe_code)] // `--trusted` reads records in place; see `verify_trusted`.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use sp_core::{Signal, SpawnOptions};
use sp_shm::{Config, IdleStrategy};

const CHILD_ENV: &str = "SP_SHM_PIPELINE_CHILD";
const KIND_DATA: u32 = 0;
const KIND_END: u32 = 1;

#[derive(Parser, Debug, Clone)]
#[command(about = "Stream bytes parent -> child through an sp-shm ring, verifying every byte")]
struct Args {
    /// Bytes to stream (suffixes K, M, G are powers of 10; Ki, Mi, Gi powers of 2).
    #[arg(default_value = "10G", value_parser = parse_size)]
    bytes: u64,
    /// Record size in bytes, header words included.
    #[arg(long, default_value = "64Ki", value_parser = parse_size)]
    record: u64,
    /// Ring capacity in bytes (power of two).
    #[arg(long, default_value = "4Mi", value_parser = parse_size)]
    capacity: u64,
    /// Idle strategy on both sides: spin, adaptive or park.
    #[arg(long, default_value = "adaptive")]
    idle: String,
    /// Verify records in place (trusting the producer) instead of copying them out.
    #[arg(long)]
    trusted: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let idle = match args.idle.as_str() {
        "spin" => IdleStrategy::spin(),
        "park" => IdleStrategy::park(),
        "adaptive" => IdleStrategy::adaptive(),
        other => bail!("unknown idle strategy {other}"),
    };
    let record = usize::try_from(args.record)?;
    ensure!(
        record >= 16 && record % 8 == 0,
        "--record must be a multiple of 8, at least 16"
    );
    let config = Config::new()
        .capacity(usize::try_from(args.capacity)?)
        .max_payload(record.max(64).next_multiple_of(8))
        .idle(idle);
    if std::env::var_os(CHILD_ENV).is_some() {
        return child(&config, args.trusted);
    }
    parent(&args, &config, record)
}

fn parent(args: &Args, config: &Config, record: usize) -> anyhow::Result<()> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(std::env::args_os().skip(1)).env(CHILD_ENV, "1");
    let opts = SpawnOptions::new().parent_death_signal(Signal::KILL);
    let (mut child, duplex) = sp_shm::spawn(&mut cmd, opts, config).context("spawn child")?;
    let (mut producer, mut consumer, _control) = duplex.into_parts();

    let n_records = args.bytes.div_ceil(record as u64);
    let started = Instant::now();
    for seq in 0..n_records {
        let len = if seq + 1 == n_records {
            let rest = (args.bytes - seq * record as u64) as usize;
            rest.next_multiple_of(8).max(16)
        } else {
            record
        };
        let mut grant = producer.reserve(len)?;
        fill_record(seq, &mut grant[..len]);
        grant.commit(len)?;
    }
    let mut grant = producer.reserve(8)?;
    grant.copy_from_slice(&n_records.to_le_bytes());
    grant.set_kind(KIND_END)?;
    grant.commit(8)?;

    let mut reply = Vec::new();
    consumer.recv_into(&mut reply).context("child's report")?;
    let elapsed = started.elapsed();
    let status = child.wait()?;
    ensure!(status.success(), "child failed: {status}");
    ensure!(reply.len() == 16, "malformed report");
    let got_records = u64::from_le_bytes(reply[..8].try_into()?);
    let got_bytes = u64::from_le_bytes(reply[8..].try_into()?);
    ensure!(
        got_records == n_records,
        "child verified {got_records} of {n_records} records"
    );
    let stats = producer.stats();
    println!(
        "{} bytes in {n_records} records of {record} B, verified: {:.3} s, {:.2} GB/s \
         ({} idle, ring {} B, {}; producer parks {}, wake bytes sent {})",
        got_bytes,
        elapsed.as_secs_f64(),
        got_bytes as f64 / elapsed.as_secs_f64() / 1e9,
        args.idle,
        args.capacity,
        if args.trusted {
            "in-place reads"
        } else {
            "copy-out reads"
        },
        stats.parks,
        stats.wakes_sent,
    );
    Ok(())
}

fn child(config: &Config, trusted: bool) -> anyhow::Result<()> {
    let duplex = sp_shm::adopt(config).context("handshake")?;
    let (mut producer, mut consumer, _control) = duplex.into_parts();
    let mut buf = Vec::new();
    let mut next_seq = 0u64;
    let mut n_bytes = 0u64;
    loop {
        let rec = consumer.read()?;
        if rec.kind() == KIND_END {
            let mut total = [0u8; 8];
            ensure!(rec.copy_to_slice(&mut total) == 8, "short end record");
            ensure!(
                u64::from_le_bytes(total) == next_seq,
                "record count mismatch"
            );
            break;
        }
        ensure!(
            rec.kind() == KIND_DATA,
            "record {next_seq}: unexpected kind {}",
            rec.kind()
        );
        n_bytes += rec.len() as u64;
        if trusted {
            verify_trusted(&rec, next_seq)?;
        } else {
            buf.resize(rec.len(), 0);
            rec.copy_to_slice(&mut buf);
            verify_record(next_seq, &buf)?;
        }
        next_seq += 1;
    }
    let mut report = [0u8; 16];
    report[..8].copy_from_slice(&next_seq.to_le_bytes());
    report[8..].copy_from_slice(&n_bytes.to_le_bytes());
    producer.send(&report)?;
    Ok(())
}

fn verify_trusted(rec: &sp_shm::ReadGrant<'_>, seq: u64) -> anyhow::Result<()> {
    // SAFETY: the producer is this program's parent process, which writes a record only before
    // committing it and never touches space until the consumer releases it (the sp-shm protocol);
    // this is the trust `as_slice_trusted` asks for.
    let bytes = unsafe { rec.as_slice_trusted() };
    verify_record(seq, bytes)
}

/// Writes record `seq`: sequence, pattern words, checksum of everything before it.
fn fill_record(seq: u64, out: &mut [u8]) {
    let n = out.len();
    out[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, chunk) in out[8..n - 8].chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&pattern_word(seq, i).to_le_bytes());
    }
    let sum = checksum(&out[..n - 8]);
    out[n - 8..].copy_from_slice(&sum.to_le_bytes());
}

fn verify_record(seq: u64, bytes: &[u8]) -> anyhow::Result<()> {
    let n = bytes.len();
    ensure!(
        n >= 16 && n.is_multiple_of(8),
        "record {seq}: bad length {n}"
    );
    let got_seq = u64::from_le_bytes(bytes[..8].try_into()?);
    ensure!(got_seq == seq, "expected record {seq}, got {got_seq}");
    let sum = u64::from_le_bytes(bytes[n - 8..].try_into()?);
    ensure!(
        sum == checksum(&bytes[..n - 8]),
        "record {seq}: checksum mismatch"
    );
    for (i, chunk) in bytes[8..n - 8].chunks_exact(8).enumerate() {
        if u64::from_le_bytes(chunk.try_into()?) != pattern_word(seq, i) {
            bail!("record {seq}: word {i} differs");
        }
    }
    Ok(())
}

fn pattern_word(seq: u64, i: usize) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64)
}

/// A four-lane multiply-rotate hash over 8-byte words (length a multiple of 8).
fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0xff51_afd7_ed55_8ccd;
    let mut lanes = [1u64, 2, 3, 4];
    let mut chunks = bytes.chunks_exact(32);
    for chunk in &mut chunks {
        for (lane, word) in lanes.iter_mut().zip(chunk.chunks_exact(8)) {
            let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
            *lane = (*lane ^ w).wrapping_mul(K).rotate_left(31);
        }
    }
    for word in chunks.remainder().chunks_exact(8) {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        lanes[0] = (lanes[0] ^ w).wrapping_mul(K).rotate_left(31);
    }
    lanes
        .iter()
        .fold(bytes.len() as u64, |h, &l| (h ^ l).wrapping_mul(K))
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let suffixes = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    let (digits, scale) = suffixes
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|d| (d, *scale)))
        .unwrap_or((text, 1.0));
    let value: f64 = digits.parse().map_err(|_| format!("not a size: {text}"))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("not a size: {text}"));
    }
    Ok((value * scale) as u64)
}

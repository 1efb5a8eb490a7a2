//! A pool of worker processes computing a CRC-32 per chunk of a stream, gathered in order and
//! checked against the single-process answer.
//!
//! `cargo run --release -p sp --example parallel_checksum -- 2G` streams 2 GB in 1 MiB chunks to
//! one worker per core; each worker answers its chunk's CRC-32 (`crc32fast`); the parent joins
//! the answers in submission order (`crc32fast::Hasher::combine`) into the stream's CRC-32, then
//! computes the same CRC-32 over the same bytes in this process alone and compares. The example
//! starts itself again as the workers (the `worker` argument).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_bytes::ByteBuf;

/// Parallel CRC-32 of a generated stream, through a pool of worker processes.
#[derive(Debug, Parser)]
struct Args {
    /// Bytes to stream (suffixes K, M, G, Ki, Mi, Gi).
    #[arg(default_value = "2G", value_parser = parse_size)]
    total: u64,
    /// Bytes per chunk.
    #[arg(long, default_value = "1Mi", value_parser = parse_size)]
    chunk: u64,
    /// Worker processes (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("worker") {
        // Each chunk's bytes where they arrived, not decoded into a new buffer.
        sp::pool::serve_bytes(|chunk| (crc32fast::hash(chunk), chunk.len() as u64))?;
        return Ok(());
    }
    let args = Args::parse();
    let chunk = usize::try_from(args.chunk).context("chunk size")?.max(8);
    let n_chunks = args.total.div_ceil(chunk as u64);
    let n_workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    // Rings large enough that a chunk (with its id and length prefix) is one ring record rather
    // than a blob, and a few of them fit.
    let ring = (8 * chunk).next_power_of_two().max(1 << 20);
    let config = sp::PoolConfig::new()
        .max_in_flight(4)
        .channel(sp::Config::new().capacity(ring).max_payload(ring / 4));
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut pool = sp::Pool::<ByteBuf, (u32, u64)>::spawn(
        n_workers,
        move |_| {
            let mut cmd = Command::new(&exe);
            cmd.arg("worker");
            cmd
        },
        &config,
    )?;
    let spawned = started.elapsed();
    let mut combined = crc32fast::Hasher::new();
    let mut next_answer = 0u64;
    let mut per_worker = vec![0u64; n_workers];
    let mut join = |reply: sp::pool::Reply<ByteBuf, (u32, u64)>| -> Result<()> {
        let (crc, len) = reply
            .result
            .map_err(|lost| anyhow::anyhow!("chunk {}: {lost}", reply.id))?;
        if reply.id != next_answer || len != chunk_len(reply.id, chunk, args.total) as u64 {
            bail!("chunk {} answered out of order or short", reply.id);
        }
        combined.combine(&crc32fast::Hasher::new_with_initial_len(crc, len));
        per_worker[reply.worker] += 1;
        next_answer += 1;
        Ok(())
    };
    for index in 0..n_chunks {
        let mut bytes = vec![0u8; chunk_len(index, chunk, args.total)];
        fill(&mut bytes, index);
        pool.submit(ByteBuf::from(bytes)).map_err(|e| e.error)?;
        while let Ok(Some(reply)) = pool.try_recv_in_order() {
            join(reply)?;
        }
    }
    while let Some(reply) = pool.recv_in_order()? {
        join(reply)?;
    }
    let pooled = started.elapsed();
    pool.close()?;
    let crc = combined.finalize();

    let alone = Instant::now();
    let mut hasher = crc32fast::Hasher::new();
    let mut bytes = vec![0u8; chunk];
    for index in 0..n_chunks {
        let len = chunk_len(index, chunk, args.total);
        fill(&mut bytes[..len], index);
        hasher.update(&bytes[..len]);
    }
    let single = hasher.finalize();
    let alone = alone.elapsed();

    let gb = args.total as f64 / 1e9;
    println!(
        "pool of {n_workers} workers (started in {spawned:.2?}): {} chunks of {chunk} B, {gb:.2} GB in \
         {pooled:.2?} ({:.2} GB/s, generating included), chunks per worker {per_worker:?}",
        n_chunks,
        gb / pooled.as_secs_f64(),
    );
    println!(
        "one process: {gb:.2} GB in {alone:.2?} ({:.2} GB/s, generating included)",
        gb / alone.as_secs_f64()
    );
    if crc != single {
        bail!("CRC-32 through the pool {crc:#010x} != single-process {single:#010x}");
    }
    println!(
        "verified: CRC-32 {crc:#010x} through the pool, in order, equals the single-process answer"
    );
    Ok(())
}

/// The length of chunk `index` (the last one may be short).
fn chunk_len(index: u64, chunk: usize, total: u64) -> usize {
    (total - index * chunk as u64).min(chunk as u64) as usize
}

/// Chunk `index`'s bytes: an xorshift stream seeded by the index.
fn fill(bytes: &mut [u8], index: u64) {
    let mut x = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let suffixes = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    let (digits, scale) = suffixes
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|d| (d, *scale)))
        .unwrap_or((text, 1));
    let value: u64 = digits.parse().map_err(|_| format!("not a size: {text}"))?;
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("too large: {text}"))
}

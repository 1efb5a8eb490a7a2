//! A quick cross-process measurement: 64-byte records per second through an sp-shm ring (both
//! sides spinning) against an sp-core stream socketpair (one `write` and one `read` per record),
//! run interleaved A B C A B C, reporting medians and the median ratios.
//!
//! - A, `ring`: one record per call (`send` / `read`): the producer's header store publishes
//!   each record, the consumer publishes its head after each one.
//! - B, `socket`: one `write(2)` and one `read(2)` of 64 bytes per record.
//! - C, `ring-batch`: `send_batch` of 64 records / `for_each_available`: one wake-up check and
//!   one head publication per batch.
//!
//! ```text
//! cargo run --release -p sp-shm --example ring_vs_socket
//! cargo run --release -p sp-shm --example ring_vs_socket -- --rounds 7 --ring-records 8000000
//! ```
//!
//! Both sides touch every record: the parent writes a sequence number into each, the child
//! checks it. Each round is a fresh child process; the rate is records over the time from the
//! first send to the child's acknowledgement of the last record. CPU time is user + system time
//! of both processes over the round (from `/proc/self/stat`, 10 ms resolution), per million
//! records: a spinning side burns its core whether or not records flow.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;
use sp_core::{Signal, SocketKind, SpawnOptions};
use sp_shm::{Config, IdleStrategy};

const CHILD_ENV: &str = "SP_SHM_CMP_CHILD";
const COUNT_ENV: &str = "SP_SHM_CMP_N";
const RECORD: usize = 64;
const BATCH: usize = 64;

#[derive(Parser, Debug)]
#[command(about = "64 B records/s: sp-shm ring (spin) vs sp-core stream socketpair")]
struct Args {
    /// Rounds of each (A B C A B C ...).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Records per ring round.
    #[arg(long, default_value_t = 4_000_000)]
    ring_records: u64,
    /// Records per socket round.
    #[arg(long, default_value_t = 400_000)]
    socket_records: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Ring,
    Socket,
    RingBatch,
}

/// One round's figures.
#[derive(Debug, Clone, Copy)]
struct Round {
    records_per_s: f64,
    cpu_s_per_m: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Ok(kind) = std::env::var(CHILD_ENV) {
        let n: u64 = std::env::var(COUNT_ENV)?.parse()?;
        return match kind.as_str() {
            "ring" => ring_child(n, false),
            "ring-batch" => ring_child(n, true),
            _ => socket_child(n),
        };
    }
    let variants = [Variant::Ring, Variant::Socket, Variant::RingBatch];
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); variants.len()];
    let mut ratios = Vec::new();
    let mut batch_ratios = Vec::new();
    for round in 0..args.rounds {
        for (i, &variant) in variants.iter().enumerate() {
            let res = match variant {
                Variant::Ring => ring_round(args.ring_records, false)?,
                Variant::Socket => socket_round(args.socket_records)?,
                Variant::RingBatch => ring_round(args.ring_records, true)?,
            };
            rounds[i].push(res);
        }
        let [ring, socket, batch] = [0, 1, 2].map(|i| rounds[i][round]);
        ratios.push(ring.records_per_s / socket.records_per_s);
        batch_ratios.push(batch.records_per_s / socket.records_per_s);
        println!(
            "round {round}: ring {:.2} M rec/s, socket {:.3} M rec/s, ring batched {:.2} M rec/s",
            ring.records_per_s / 1e6,
            socket.records_per_s / 1e6,
            batch.records_per_s / 1e6,
        );
    }
    println!("median over {} rounds, {RECORD} B records:", args.rounds);
    for (i, variant) in variants.iter().enumerate() {
        let mut rates: Vec<f64> = rounds[i].iter().map(|r| r.records_per_s).collect();
        let mut cpu: Vec<f64> = rounds[i].iter().map(|r| r.cpu_s_per_m).collect();
        println!(
            "  {variant:?}: {:.2} M rec/s, {:.3} CPU-s per million records (both processes)",
            median(&mut rates) / 1e6,
            median(&mut cpu),
        );
    }
    println!(
        "  median ratio ring/socket {:.1}, ring batched/socket {:.1}",
        median(&mut ratios),
        median(&mut batch_ratios),
    );
    Ok(())
}

fn child_command(kind: &str, n: u64) -> anyhow::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(CHILD_ENV, kind).env(COUNT_ENV, n.to_string());
    Ok(cmd)
}

fn opts() -> SpawnOptions {
    SpawnOptions::new().parent_death_signal(Signal::KILL)
}

fn config() -> Config {
    Config::new().capacity(1 << 20).idle(IdleStrategy::spin())
}

fn ring_round(n: u64, batched: bool) -> anyhow::Result<Round> {
    let kind = if batched { "ring-batch" } else { "ring" };
    let (mut child, duplex) = sp_shm::spawn(&mut child_command(kind, n)?, opts(), &config())
        .context("spawn ring child")?;
    let (mut producer, mut consumer, _control) = duplex.into_parts();
    let mut record = [0u8; RECORD];
    let mut batch = vec![[0u8; RECORD]; BATCH];
    let cpu_before = cpu_seconds()?;
    let started = Instant::now();
    if batched {
        let mut seq = 0;
        while seq < n {
            let len = (n - seq).min(BATCH as u64) as usize;
            for rec in &mut batch[..len] {
                rec[..8].copy_from_slice(&seq.to_le_bytes());
                seq += 1;
            }
            producer.send_batch(&batch[..len])?;
        }
    } else {
        for seq in 0..n {
            record[..8].copy_from_slice(&seq.to_le_bytes());
            producer.send(&record)?;
        }
    }
    let mut ack = Vec::new();
    consumer.recv_into(&mut ack)?;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds()? - cpu_before;
    ensure!(child.wait()?.success(), "ring child failed");
    round(n, elapsed.as_secs_f64(), cpu, &ack)
}

fn ring_child(n: u64, batched: bool) -> anyhow::Result<()> {
    let duplex = sp_shm::adopt(&config())?;
    let (mut producer, mut consumer, _control) = duplex.into_parts();
    let cpu_before = cpu_seconds()?;
    let mut record = [0u8; RECORD];
    let mut seq = 0;
    let mut in_order = true;
    while seq < n {
        if batched {
            let got = consumer.for_each_available(4 * BATCH, |rec| {
                rec.copy_to_slice(&mut record);
                in_order &= record[..8] == seq.to_le_bytes();
                seq += 1;
            })?;
            if got > 0 {
                continue;
            }
        }
        let grant = consumer.read()?;
        ensure!(grant.copy_to_slice(&mut record) == RECORD, "short record");
        in_order &= record[..8] == seq.to_le_bytes();
        seq += 1;
    }
    ensure!(in_order, "records out of order");
    producer.send(&ack(n, cpu_seconds()? - cpu_before))?;
    Ok(())
}

fn socket_round(n: u64) -> anyhow::Result<Round> {
    let (mut ours, theirs) = sp_core::pair(SocketKind::Stream)?;
    let mut child = sp_core::spawn_with(&mut child_command("socket", n)?, theirs, opts())?;
    let mut record = [0u8; RECORD];
    let cpu_before = cpu_seconds()?;
    let started = Instant::now();
    for seq in 0..n {
        record[..8].copy_from_slice(&seq.to_le_bytes());
        ours.write_all(&record)?;
    }
    let mut ack = [0u8; 16];
    ours.read_exact(&mut ack)?;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds()? - cpu_before;
    ensure!(child.wait()?.success(), "socket child failed");
    round(n, elapsed.as_secs_f64(), cpu, &ack)
}

fn socket_child(n: u64) -> anyhow::Result<()> {
    let mut end = sp_core::adopt()?;
    let cpu_before = cpu_seconds()?;
    let mut record = [0u8; RECORD];
    for seq in 0..n {
        end.read_exact(&mut record)?;
        ensure!(
            record[..8] == seq.to_le_bytes(),
            "record {seq} out of order"
        );
    }
    end.write_all(&ack(n, cpu_seconds()? - cpu_before))?;
    Ok(())
}

/// The child's acknowledgement: records seen and its CPU seconds (as f64 bits).
fn ack(n: u64, cpu: f64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&n.to_le_bytes());
    out[8..].copy_from_slice(&cpu.to_bits().to_le_bytes());
    out
}

fn round(n: u64, seconds: f64, parent_cpu: f64, ack: &[u8]) -> anyhow::Result<Round> {
    ensure!(ack.len() == 16, "malformed acknowledgement");
    ensure!(
        ack[..8] == n.to_le_bytes(),
        "child saw a different record count"
    );
    let child_cpu = f64::from_bits(u64::from_le_bytes(ack[8..].try_into()?));
    Ok(Round {
        records_per_s: n as f64 / seconds,
        cpu_s_per_m: (parent_cpu + child_cpu) / (n as f64 / 1e6),
    })
}

/// User + system CPU seconds of this process so far (`/proc/self/stat` fields 14 and 15).
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    // Fields after the command name start at field 3 (state); utime is field 14.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

//! Three processes connected sibling to sibling: generate → transform → verify.
//!
//! `cargo run --release -p sp --example three_stages` streams 10 GB (or the size given) through
//! three stages started by this process, which only relays the rings' descriptors at set-up and
//! then waits: the first stage writes 64 KiB chunks in place into the ring to the second, which
//! XORs every word into the ring to the third, which checks every byte. Each stage prints its
//! throughput; the parent prints the pipeline's. The example starts itself again as the stages
//! (`stage generate|transform|verify`).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sp::pipeline::{Builder, Stage};
use sp::{Config, Error, Plain};

/// Words per chunk: 64 KiB.
const WORDS: usize = 8192;
/// What the transform XORs every word with.
const MASK: u64 = 0x0123_4567_89AB_CDEF;

type Chunk = Plain<[u64; WORDS]>;

/// Three stages, sibling to sibling, every byte verified.
#[derive(Debug, Parser)]
struct Args {
    /// Bytes to stream, rounded up to whole 64 KiB chunks (suffixes K, M, G).
    #[arg(default_value = "10G", value_parser = parse_size)]
    total: u64,
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("stage") {
        let role = args.next().unwrap_or_default();
        let n_chunks: u64 = args.next().unwrap_or_default().parse().context("chunks")?;
        return run_stage(&role, n_chunks);
    }
    let args = Args::parse();
    let chunk = (WORDS * 8) as u64;
    let n_chunks = args.total.div_ceil(chunk);
    let exe = std::env::current_exe()?;
    let stage = |role: &str| {
        let mut cmd = Command::new(&exe);
        cmd.args(["stage", role, &n_chunks.to_string()]);
        cmd
    };
    let started = Instant::now();
    let mut pipeline = Builder::new()
        .stage(stage("generate"))
        .stage(stage("transform"))
        .stage(stage("verify"))
        .spawn(&config())?;
    let set_up = started.elapsed();
    pipeline.wait()?;
    let took = started.elapsed();
    let gb = (n_chunks * chunk) as f64 / 1e9;
    println!(
        "pipeline: {gb:.2} GB through 3 processes sibling to sibling in {took:.2?} ({:.2} GB/s; set-up {set_up:.2?}); \
         every stage exited 0, the last one having verified every byte",
        gb / took.as_secs_f64()
    );
    Ok(())
}

fn config() -> Config {
    // 64 KiB chunks are ring records (the largest record is a quarter of the ring).
    Config::new().capacity(4 << 20).max_payload(1 << 20)
}

/// Word `i` of chunk `seq` as the first stage writes it.
fn word(seq: u64, i: usize) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

fn run_stage(role: &str, n_chunks: u64) -> Result<()> {
    let started = Instant::now();
    let res = match role {
        "generate" => generate(n_chunks),
        "transform" => transform(),
        "verify" => verify(n_chunks),
        other => bail!("unknown stage {other}"),
    };
    let gb = (n_chunks * (WORDS * 8) as u64) as f64 / 1e9;
    let secs = started.elapsed().as_secs_f64();
    match res {
        Ok(()) => {
            println!(
                "  {role:>9}: {gb:.2} GB in {secs:.2} s, {:.2} GB/s",
                gb / secs
            );
            Ok(())
        }
        Err(err) => bail!("{role}: {err}"),
    }
}

fn generate(n_chunks: u64) -> Result<(), Error> {
    let mut stage: Stage<(), Chunk> = sp::pipeline::join(&config())?;
    let mut output = stage.take_output().ok_or(Error::PeerGone)?;
    for seq in 0..n_chunks {
        let res = output.send_with(|chunk: &mut Chunk| {
            for (i, w) in chunk.0.iter_mut().enumerate() {
                *w = word(seq, i);
            }
        });
        res.map_err(|err| stage.failure(err))?;
    }
    Ok(())
}

fn transform() -> Result<(), Error> {
    let mut stage: Stage<Chunk, Chunk> = sp::pipeline::join(&config())?;
    let mut input = stage.take_input().ok_or(Error::PeerGone)?;
    let mut output = stage.take_output().ok_or(Error::PeerGone)?;
    loop {
        let res = input.recv_in_place(|chunk: &Chunk, _| {
            output.send_with(|out: &mut Chunk| {
                for (o, w) in out.0.iter_mut().zip(chunk.0.iter()) {
                    *o = w ^ MASK;
                }
            })
        });
        match res {
            Ok(sent) => sent.map_err(|err| stage.failure(err))?,
            Err(Error::PeerGone) => return stage.input_ended(),
            Err(err) => return Err(err),
        }
    }
}

fn verify(n_chunks: u64) -> Result<(), Error> {
    let mut stage: Stage<Chunk, ()> = sp::pipeline::join(&config())?;
    let mut input = stage.take_input().ok_or(Error::PeerGone)?;
    let mut seq = 0;
    loop {
        let res = input.recv_in_place(|chunk: &Chunk, _| {
            chunk
                .0
                .iter()
                .enumerate()
                .position(|(i, w)| *w != word(seq, i) ^ MASK)
        });
        match res {
            Ok(None) => seq += 1,
            Ok(Some(i)) => {
                return Err(Error::Os(std::io::Error::other(format!(
                    "chunk {seq}, word {i} is wrong"
                ))));
            }
            Err(Error::PeerGone) => break,
            Err(err) => return Err(err),
        }
    }
    stage.input_ended()?;
    if seq != n_chunks {
        return Err(Error::Os(std::io::Error::other(format!(
            "{seq} chunks of {n_chunks} arrived"
        ))));
    }
    Ok(())
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let suffixes = [("K", 1_000u64), ("M", 1_000_000), ("G", 1_000_000_000)];
    let (digits, scale) = suffixes
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|d| (d, *scale)))
        .unwrap_or((text, 1));
    let value: u64 = digits.parse().map_err(|_| format!("not a size: {text}"))?;
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("too large: {text}"))
}

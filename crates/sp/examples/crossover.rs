//! Where a sealed-memfd blob beats the ring: plain values of growing size sent to a child through
//! ring records and as blobs, interleaved (ring, blob, ring, blob, ...), every byte written by the
//! sender and read by the receiver.
//!
//! ```sh
//! cargo run --release -p sp --example crossover
//! ```
//!
//! Each round sends values for about `--millis` and the child answers with a checksum; the table
//! gives values per second each way and the median of the blob/ring ratios of the pairs.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Interleaved pairs per size.
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Roughly how long one round sends, in milliseconds.
    #[arg(long, default_value_t = 200)]
    millis: u64,
    /// Internal: run as the child for values of this many bytes.
    #[arg(long, hide = true)]
    child: Option<usize>,
}

/// A ring large enough for 16 MiB records.
fn config() -> sp::Config {
    sp::Config::new().capacity(64 << 20).max_payload(16 << 20)
}

/// The child's answer to a round: the checksum of its values.
type Round = u64;

macro_rules! sizes {
    ($mac:ident, $($n:literal),+) => { $mac!($($n),+) };
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    macro_rules! dispatch {
        ($($n:literal),+) => {
            if let Some(size) = args.child {
                return match size {
                    $($n => child::<$n>(),)+
                    other => bail!("no size {other}"),
                };
            }
            println!("{:>9} {:>14} {:>14} {:>11}", "size", "ring values/s", "blob values/s", "blob/ring");
            let mut crossover = None;
            $(
                let ratio = measure::<$n>(&args)?;
                if ratio >= 1.0 && crossover.is_none() {
                    crossover = Some($n);
                }
            )+
            match crossover {
                Some(size) => println!("crossover: blobs are at least as fast from {} KiB", size >> 10),
                None => println!("crossover: the ring was faster at every size measured"),
            }
        };
    }
    sizes!(
        dispatch, 4096, 16384, 65536, 131072, 262144, 524288, 1048576, 2097152, 4194304, 8388608,
        16777216
    );
    Ok(())
}

fn measure<const N: usize>(args: &Args) -> anyhow::Result<f64> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--child").arg(N.to_string());
    let (mut child, mut tx, mut rx) =
        sp::spawn::<sp::Plain<[u8; N]>, Round>(&mut cmd, &config()).context("spawn")?;
    // Each round: a header value (u64::MAX, n), then n values; the child answers the checksum.
    // `n` is chosen so that a round lasts about `--millis`.
    let mut per_value = Duration::from_micros(50);
    let (mut ring, mut blob, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..=args.pairs {
        let mut rates = [0.0; 2];
        for (mode, rate) in rates.iter_mut().enumerate() {
            tx.set_blob_threshold(if mode == 0 { usize::MAX } else { 0 });
            let n = (Duration::from_millis(args.millis).as_nanos() / per_value.as_nanos().max(1))
                .clamp(4, 1_000_000) as u64;
            // Untimed: tell the child how many values this round has.
            tx.send_with(|value| {
                value.0[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                value.0[8..16].copy_from_slice(&n.to_le_bytes());
            })?;
            let started = Instant::now();
            for seq in 0..n {
                tx.send_with(|value| {
                    for (i, chunk) in value.0.chunks_exact_mut(8).enumerate() {
                        chunk.copy_from_slice(&(seq ^ i as u64).to_le_bytes());
                    }
                })?;
            }
            let got = rx.recv()?;
            let elapsed = started.elapsed();
            let want = (0..n).fold(0u64, |acc, seq| acc.wrapping_add(checksum_of(seq, N)));
            if got != want {
                bail!("{N} bytes: checksum {got:#x}, want {want:#x}");
            }
            per_value = elapsed / n as u32;
            *rate = n as f64 / elapsed.as_secs_f64();
        }
        if pair > 0 {
            // Pair 0 is the warm-up.
            ring.push(rates[0]);
            blob.push(rates[1]);
            ratios.push(rates[1] / rates[0]);
        }
    }
    drop(tx);
    child.wait()?;
    let ratio = median(&mut ratios);
    println!(
        "{:>6} KiB {:>14.0} {:>14.0} {:>10.2}x",
        N >> 10,
        median(&mut ring),
        median(&mut blob),
        ratio
    );
    Ok(ratio)
}

/// The child: reads every byte of every value in place (from its copy of a ring record, or from
/// the blob's sealed memory) and answers each round with the checksum of its values.
fn child<const N: usize>() -> anyhow::Result<()> {
    let (mut tx, mut rx) = sp::adopt::<Round, sp::Plain<[u8; N]>>(&config())?;
    loop {
        let header = rx.recv_in_place(|value, _| (word(&value.0, 0), word(&value.0, 1)));
        let n = match header {
            Ok((u64::MAX, n)) => n,
            Ok(_) => bail!("expected a round header"),
            Err(sp::Error::PeerGone) => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        let mut sum = 0u64;
        for _ in 0..n {
            sum = sum.wrapping_add(rx.recv_in_place(|value, _| checksum(&value.0))?);
        }
        tx.send(&sum)?;
    }
}

fn word(bytes: &[u8], i: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
    u64::from_le_bytes(word)
}

fn checksum(bytes: &[u8]) -> u64 {
    (0..bytes.len() / 8).fold(0u64, |acc, i| acc.wrapping_add(word(bytes, i)))
}

fn checksum_of(seq: u64, len: usize) -> u64 {
    (0..(len / 8) as u64).fold(0u64, |acc, i| acc.wrapping_add(seq ^ i))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

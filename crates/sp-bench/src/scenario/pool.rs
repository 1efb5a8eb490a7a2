//! `sp-pool-N` and `crossbeam-pool-N`: a parent keeps N workers busy with items of the message
//! size for the round; a worker reads every byte of its item and answers the item's word 0 and
//! the sum of its words, which the parent checks against what it wrote.
//!
//! Each parent writes an item's bytes once, where its transport carries them: the crossbeam
//! parent into a buffer it then moves to a worker (buffers come back with the answers and are
//! reused), the sp parent straight into the worker's ring ([`Generated`], an item whose encoding
//! writes the bytes; the pool keeps only its sequence number and size).

#![allow(unsafe_code)] // The worker trusts its parent: `sp::pool::serve_bytes_trusted`.

use std::cell::Cell;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use sp::{DecodeError, EncodeError, Encoding, Value};

use super::{IN_FLIGHT, SCENARIO_ARG, sample};
use crate::error::{Error, Result};
use crate::payload::{fill, sum};
use crate::spec::{RunSpec, Sample};

/// The sp pool's channel: rings of four items at least, so that an item is one record. The pool
/// chooses its idle strategy by core count; `SP_BENCH_POOL_IDLE=park|adaptive|spin` overrides it
/// (to compare strategies on a shared machine, docs/benchmarks.md).
fn sp_config(size: usize) -> sp::PoolConfig {
    let ring = (8 * (size + 64)).next_power_of_two().max(256 << 10);
    let mut config = sp::PoolConfig::new();
    if let Ok(idle) = std::env::var("SP_BENCH_POOL_IDLE") {
        config = config.idle(match idle.as_str() {
            "park" => sp::IdleStrategy::park(),
            "spin" => sp::IdleStrategy::spin(),
            _ => sp::IdleStrategy::adaptive(),
        });
    }
    config
        .max_in_flight(IN_FLIGHT)
        .channel(sp::Config::new().capacity(ring).max_payload(ring / 4))
}

pub(super) fn measure_sp(spec: &RunSpec, exe: &Path) -> Result<Sample> {
    let exe = exe.to_owned();
    let mut pool = sp::Pool::<Generated, (u64, u64)>::spawn(
        spec.transport.workers(),
        move |_| {
            let mut cmd = Command::new(&exe);
            cmd.args([SCENARIO_ARG, "pool-worker"])
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            cmd
        },
        &sp_config(spec.size),
    )?;
    let mut res = Ok((0, Duration::ZERO));
    for duration in [spec.warmup, spec.duration] {
        res = sp_round(&mut pool, spec.size, duration);
        if res.is_err() {
            break;
        }
    }
    pool.close()?;
    let (n, elapsed) = res?;
    Ok(sample(spec, n, elapsed))
}

/// One round: submit for `duration`, then take the last answers; items answered and the time.
fn sp_round(
    pool: &mut sp::Pool<Generated, (u64, u64)>,
    size: usize,
    duration: Duration,
) -> Result<(u64, Duration)> {
    let mut n = 0u64;
    // The item comes back with its answer: what the worker saw must be what the parent wrote.
    let mut check = |reply: sp::pool::Reply<Generated, (u64, u64)>| -> Result<()> {
        let got = reply
            .result
            .map_err(|lost| Error::Child(format!("pool worker: {lost}")))?;
        let item = reply
            .item
            .ok_or(Error::Child("an answer without its item".into()))?;
        if got != (item.seq, item.total.get()) {
            return Err(Error::Corrupt(format!("item {}: answer {got:?}", reply.id)));
        }
        n += 1;
        Ok(())
    };
    let started = Instant::now();
    let mut seq = 0u64;
    while started.elapsed() < duration {
        // The answers already there first, as the crossbeam parent takes its buffers back.
        loop {
            match pool.try_recv() {
                Ok(Some(reply)) => check(reply)?,
                Ok(None) | Err(sp::TryRecvError::Empty) => break,
                Err(err) => {
                    return Err(err
                        .into_broken()
                        .map_or(Error::Child("pool".into()), Error::Sp));
                }
            }
        }
        let mut item = Generated::new(seq, size);
        loop {
            match pool.try_submit(item) {
                Ok(_) => break,
                Err(err) if err.is_full() => {
                    item = err.item;
                    let reply = pool.recv()?.ok_or(Error::Child("no answer".into()))?;
                    check(reply)?;
                }
                Err(err) => {
                    return Err(err
                        .error
                        .into_broken()
                        .map_or(Error::Child("full".into()), Error::Sp));
                }
            }
        }
        seq += 1;
    }
    while let Some(reply) = pool.recv()? {
        check(reply)?;
    }
    Ok((n, started.elapsed()))
}

/// An sp pool item: `size` bytes of [`fill`] for `seq`, written by its encoding straight into
/// the ring slot the pool reserved for it. On the wire it is a byte buffer (postcard: the length
/// as a LEB128 varint, then the bytes), which the worker reads as one (`serve_bytes`), so the
/// HELLO names postcard. `total` is [`fill`]'s sum, kept when the item is written.
#[derive(Debug)]
pub(super) struct Generated {
    seq: u64,
    size: usize,
    total: Cell<u64>,
}

impl Generated {
    fn new(seq: u64, size: usize) -> Self {
        Self {
            seq,
            size,
            total: Cell::new(0),
        }
    }

    /// The length prefix postcard gives a byte buffer of `size` bytes.
    fn prefix(&self) -> ([u8; 10], usize) {
        let (mut out, mut n, mut left) = ([0u8; 10], 0, self.size as u64);
        loop {
            out[n] = (left & 0x7f) as u8;
            left >>= 7;
            n += 1;
            if left == 0 {
                return (out, n);
            }
            out[n - 1] |= 0x80;
        }
    }
}

impl Value for Generated {
    const ENCODING: Encoding = Encoding::Postcard;

    fn encode(&self, out: &mut [u8]) -> std::result::Result<usize, EncodeError> {
        let (prefix, n) = self.prefix();
        let Some(dst) = out.get_mut(..n + self.size) else {
            return Err(EncodeError::BufferFull);
        };
        let (len, bytes) = dst.split_at_mut(n);
        len.copy_from_slice(&prefix[..n]);
        self.total.set(fill(bytes, self.seq));
        Ok(n + self.size)
    }

    fn encoded_len(&self) -> std::result::Result<usize, EncodeError> {
        Ok(self.prefix().1 + self.size)
    }

    /// A buffer of bytes as the worker would take it (the parent never decodes an item).
    fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let buf = ByteBuf::decode(bytes)?;
        let (seq, total) = sum(&buf);
        Ok(Self {
            seq,
            size: buf.len(),
            total: Cell::new(total),
        })
    }
}

/// The sp pool's worker: reads each item in the parent's ring itself (`serve_bytes_trusted`),
/// as a crossbeam worker reads the buffer it was handed; it trusts the parent, which started it,
/// as those threads share its memory. (With `serve_bytes`, which copies each item out first,
/// docs/benchmarks.md gives the figures.)
pub(super) fn worker() -> Result<()> {
    // SAFETY: this worker's pool is the sp-bench parent that started it, an sp `Pool`, which
    // never writes the ring space of an item the worker has not released.
    unsafe { sp::pool::serve_bytes_trusted(sum)? };
    Ok(())
}

/// The same work on threads: items go to the workers through one bounded crossbeam channel
/// (each worker takes the next item when it is free), answers come back through another with the
/// item's buffer, which the parent reuses.
pub(super) fn measure_crossbeam(spec: &RunSpec) -> Result<Sample> {
    let n_workers = spec.transport.workers();
    let (item_tx, item_rx) = crossbeam_channel::bounded::<(u64, Vec<u8>)>(IN_FLIGHT * n_workers);
    let (answer_tx, answer_rx) = crossbeam_channel::unbounded::<(u64, (u64, u64), Vec<u8>)>();
    let workers: Vec<_> = (0..n_workers)
        .map(|_| {
            let (item_rx, answer_tx) = (item_rx.clone(), answer_tx.clone());
            std::thread::spawn(move || {
                for (id, item) in item_rx {
                    if answer_tx.send((id, sum(&item), item)).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop((item_rx, answer_tx));
    let limit = spec.limit();
    let mut res = Ok((0, Duration::ZERO));
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut seq = 0u64;
    for duration in [spec.warmup, spec.duration] {
        let mut expected = std::collections::HashMap::new();
        let mut n = 0u64;
        let mut take = |(id, got, buf): (u64, (u64, u64), Vec<u8>),
                        expected: &mut std::collections::HashMap<u64, (u64, u64)>,
                        spare: &mut Vec<Vec<u8>>|
         -> Result<()> {
            if expected.remove(&id) != Some(got) {
                return Err(Error::Corrupt(format!("item {id}: answer {got:?}")));
            }
            spare.push(buf);
            n += 1;
            Ok(())
        };
        let started = Instant::now();
        let round = (|| -> Result<()> {
            while started.elapsed() < duration {
                // As the sp pool's round: the answers already there first.
                while let Ok(answer) = answer_rx.try_recv() {
                    take(answer, &mut expected, &mut spare)?;
                }
                let mut item = spare.pop().unwrap_or_else(|| vec![0u8; spec.size]);
                let total = fill(&mut item, seq);
                expected.insert(seq, (seq, total));
                let mut msg = (seq, item);
                loop {
                    match item_tx.try_send(msg) {
                        Ok(()) => break,
                        Err(crossbeam_channel::TrySendError::Full(back)) => {
                            msg = back;
                            let answer = answer_rx
                                .recv_timeout(limit)
                                .map_err(|_| Error::TimedOut("a crossbeam worker"))?;
                            take(answer, &mut expected, &mut spare)?;
                        }
                        Err(_) => return Err(Error::Child("a worker thread is gone".into())),
                    }
                }
                seq += 1;
            }
            while !expected.is_empty() {
                let answer = answer_rx
                    .recv_timeout(limit)
                    .map_err(|_| Error::TimedOut("a crossbeam worker"))?;
                take(answer, &mut expected, &mut spare)?;
            }
            Ok(())
        })();
        res = round.map(|()| (n, started.elapsed()));
        if res.is_err() {
            break;
        }
    }
    drop(item_tx);
    for worker in workers {
        let _ = worker.join();
    }
    let (n, elapsed) = res?;
    Ok(sample(spec, n, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker reads a `Generated` as a byte buffer: its bytes must be postcard's for a
    /// `ByteBuf` of the same contents, at every length prefix size.
    #[test]
    fn generated_encodes_as_a_byte_buffer() {
        for size in [0, 1, 64, 127, 128, 16_383, 16_384, 65_536] {
            let item = Generated::new(7, size);
            let mut ours = vec![0u8; size + 16];
            let n = item.encode(&mut ours).unwrap();
            assert_eq!(n, item.encoded_len().unwrap());
            let mut bytes = vec![0u8; size];
            let total = fill(&mut bytes, 7);
            let mut theirs = vec![0u8; size + 16];
            let m = ByteBuf::from(bytes).encode(&mut theirs).unwrap();
            assert_eq!(ours[..n], theirs[..m], "size {size}");
            assert_eq!(item.total.get(), total);
            assert_eq!(
                item.encode(&mut ours[..n - 1]),
                Err(EncodeError::BufferFull)
            );
            let back = Generated::decode(&ours[..n]).unwrap();
            assert_eq!((back.size, back.total.get()), (size, total));
        }
    }
}

//! `sp-pool-N` and `crossbeam-pool-N`: a parent keeps N workers busy with items of the message
//! size for the round; a worker reads every byte of its item and answers the item's word 0 and
//! the sum of its words, which the parent checks against what it wrote.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

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
    let mut pool = sp::Pool::<ByteBuf, (u64, u64)>::spawn(
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
    pool: &mut sp::Pool<ByteBuf, (u64, u64)>,
    size: usize,
    duration: Duration,
) -> Result<(u64, Duration)> {
    let mut expected = std::collections::HashMap::new();
    // Buffers of answered items, handed back by the pool and reused, as the crossbeam pool does.
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut n = 0u64;
    let mut check = |reply: sp::pool::Reply<ByteBuf, (u64, u64)>,
                     expected: &mut std::collections::HashMap<u64, (u64, u64)>,
                     spare: &mut Vec<Vec<u8>>|
     -> Result<()> {
        spare.extend(reply.item.map(ByteBuf::into_vec));
        let got = reply
            .result
            .map_err(|lost| Error::Child(format!("pool worker: {lost}")))?;
        if expected.remove(&reply.id) != Some(got) {
            return Err(Error::Corrupt(format!("item {}: answer {got:?}", reply.id)));
        }
        n += 1;
        Ok(())
    };
    let started = Instant::now();
    let mut seq = 0u64;
    while started.elapsed() < duration {
        // The answers already there first: their buffers are the next items' (otherwise, while
        // the workers keep up, answers pile up in the pool and every item is a new buffer).
        loop {
            match pool.try_recv() {
                Ok(Some(reply)) => check(reply, &mut expected, &mut spare)?,
                Ok(None) | Err(sp::TryRecvError::Empty) => break,
                Err(err) => {
                    return Err(err
                        .into_broken()
                        .map_or(Error::Child("pool".into()), Error::Sp));
                }
            }
        }
        let mut item = spare.pop().unwrap_or_else(|| vec![0u8; size]);
        let total = fill(&mut item, seq);
        let mut item = ByteBuf::from(item);
        loop {
            match pool.try_submit(item) {
                Ok(id) => {
                    expected.insert(id, (seq, total));
                    break;
                }
                Err(err) if err.is_full() => {
                    item = err.item;
                    let reply = pool.recv()?.ok_or(Error::Child("no answer".into()))?;
                    check(reply, &mut expected, &mut spare)?;
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
        check(reply, &mut expected, &mut spare)?;
    }
    Ok((n, started.elapsed()))
}

/// The sp pool's worker: reads each item where it arrived (`serve_bytes`), as a crossbeam
/// worker reads the buffer it was handed.
pub(super) fn worker() -> Result<()> {
    sp::pool::serve_bytes(sum)?;
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

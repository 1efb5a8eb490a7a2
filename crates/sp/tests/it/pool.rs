//! `Pool` across real processes: 64 workers on 2 cores busy then idle, workers killed at random
//! under load, backpressure from stalled workers, shutdown without zombies, answers in
//! submission order; and the worker roles.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use sp::pool::Reply;
use sp::{Error, IdleStrategy, Pool, PoolConfig};

use crate::{TestResult, child_command, children_of_this_process, fifo, trial};

/// How long one wait for answers may take at most.
const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial("pool_64_workers_busy_then_idle", sixty_four_busy_then_idle),
        trial(
            "pool_workers_killed_at_random_nothing_lost_or_duplicated",
            killed_at_random,
        ),
        trial("pool_backpressure_when_workers_stall", backpressure),
        trial("pool_shutdown_no_zombie", shutdown_no_zombie),
        trial("pool_answers_in_submission_order", in_submission_order),
        trial(
            "pool_serve_bytes_lends_ring_and_blob_items_refuses_others",
            || serve_bytes_items("pool-bytes"),
        ),
        trial(
            "pool_serve_bytes_trusted_reads_ring_items_in_place_refuses_others",
            || serve_bytes_items("pool-bytes-trusted"),
        ),
        trial(
            "pool_items_written_in_the_ring_reach_bytes_workers",
            items_written_in_the_ring,
        ),
    ]
}

/// The work of the `pool-worker` role: a value every answer is checked against.
pub(crate) fn work(n: u64) -> u64 {
    // A loop of up to a few thousand steps, so that answers come back out of order.
    let mut x = n;
    for _ in 0..(n % 7) * 500 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    }
    x ^ n.rotate_left(17)
}

fn start(n_workers: usize, role: &str, config: &PoolConfig) -> Result<Pool<u64, u64>, String> {
    let role = role.to_owned();
    Pool::spawn(n_workers, move |_| child_command(&role, ""), config)
        .map_err(|e| format!("spawn: {e}"))
}

fn check(reply: &Reply<u64, u64>, submitted: &BTreeMap<u64, u64>) -> TestResult {
    let item = submitted
        .get(&reply.id)
        .ok_or(format!("unknown id {}", reply.id))?;
    // An answered item comes back beside its result; a lost one only in `Lost`.
    match (&reply.result, reply.item) {
        (Ok(_), Some(back)) if back != *item => {
            return Err(format!("item {}: handed back as {back}", reply.id));
        }
        (Ok(_), None) => return Err(format!("item {}: answered, not handed back", reply.id)),
        (Err(_), Some(_)) => return Err(format!("item {}: lost and handed back", reply.id)),
        _ => {}
    }
    match &reply.result {
        Ok(out) if *out == work(*item) => Ok(()),
        Ok(out) => Err(format!("item {}: wrong answer {out}", reply.id)),
        Err(lost) if lost.item == *item => Ok(()),
        Err(lost) => Err(format!(
            "item {}: lost item {} differs",
            reply.id, lost.item
        )),
    }
}

/// CPU time (user + system) of a process, from /proc/<pid>/stat, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').ok_or("stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).ok_or("utime")?;
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).ok_or("stime")?;
    Ok(utime + stime)
}

/// 64 workers on this 2-core machine: they park (the pool chose so from the core count), all
/// 64 do work, and then the idle pool (parent and workers) uses next to no CPU for a second.
fn sixty_four_busy_then_idle() -> TestResult {
    let started = Instant::now();
    let mut pool = start(64, "pool-worker", &PoolConfig::new().max_in_flight(4))?;
    eprintln!("  64 workers up in {:.2?}", started.elapsed());
    if pool.idle_strategy() != IdleStrategy::park() {
        return Err(format!("idle strategy {:?}", pool.idle_strategy()));
    }
    let mut submitted = BTreeMap::new();
    let mut workers_seen = [false; 64];
    for n in 0..64 * 16 {
        let id = pool.submit(n).map_err(|e| e.to_string())?;
        submitted.insert(id, n);
    }
    while let Some(reply) = pool.recv_timeout(WAIT).map_err(|e| e.to_string())? {
        check(&reply, &submitted)?;
        if reply.result.is_err() {
            return Err(format!("item {} lost", reply.id));
        }
        workers_seen[reply.worker] = true;
    }
    if workers_seen.iter().any(|seen| !seen) {
        return Err("a worker got no item".into());
    }
    // Idle: every worker is parked in its receive, the parent does nothing. (This sleep is the
    // measurement window, not a synchronisation.)
    let pids: Vec<u32> = (0..64).filter_map(|i| pool.pid(i)).collect();
    let me = std::process::id();
    let before: u64 = pids
        .iter()
        .chain([&me])
        .map(|&p| cpu_ticks(p))
        .sum::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(1));
    let after: u64 = pids
        .iter()
        .chain([&me])
        .map(|&p| cpu_ticks(p))
        .sum::<Result<_, _>>()?;
    let ticks = after - before;
    eprintln!("  idle second: {ticks} clock ticks over 65 processes");
    // A tick is 10 ms: more than 2 ticks in a second across 65 processes is not idle.
    if ticks > 2 {
        return Err(format!(
            "the idle pool used {ticks} ticks of CPU in a second"
        ));
    }
    let statuses = pool.close().map_err(|e| e.to_string())?;
    if statuses.len() != 64 || statuses.iter().any(|(_, s)| !s.success()) {
        return Err(format!("workers ended {statuses:?}"));
    }
    Ok(())
}

/// Eight workers under load; one is killed at random every so often (and replaced, `respawn`).
/// Every item is answered exactly once: a result, or the item back from the worker that died
/// with it; lost items are submitted again until every item has its result.
fn killed_at_random() -> TestResult {
    let config = PoolConfig::new().max_in_flight(8).respawn(true);
    let mut pool = start(8, "pool-worker", &config)?;
    let mut ledger = Ledger::default();
    let n_items = crate::count(4000);
    let mut n_kills = 0;
    let mut seed: u64 = 0x5eed;
    let mut next = 0;
    while ledger.done.len() < n_items as usize {
        // Submit a burst, then kill a random worker while it holds items, then take answers (all
        // of them once everything is submitted).
        for _ in 0..64 {
            if next < n_items {
                let id = pool.submit(next).map_err(|e| e.to_string())?;
                ledger.submitted.insert(id, next);
                next += 1;
            }
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        if n_kills < 6
            && let Some(pid) = pool.pid((seed >> 33) as usize % 8)
        {
            kill(pid)?;
            n_kills += 1;
        }
        let mut budget = if next < n_items { 48 } else { usize::MAX };
        while budget > 0 {
            budget -= 1;
            let Some(reply) = pool.recv_timeout(WAIT).map_err(|e| e.to_string())? else {
                break;
            };
            ledger.take(&mut pool, reply)?;
        }
    }
    if let Some((id, n)) = ledger.answered.iter().find(|(_, n)| **n != 1) {
        return Err(format!("id {id} answered {n} times"));
    }
    if ledger.answered.len() != ledger.submitted.len() {
        return Err(format!(
            "{} ids submitted, {} answered",
            ledger.submitted.len(),
            ledger.answered.len()
        ));
    }
    eprintln!(
        "  {n_kills} workers killed, {} items handed back and done again",
        ledger.n_lost
    );
    if n_kills == 0 || ledger.n_lost == 0 {
        return Err(format!(
            "{n_kills} kills, {} lost: the trial proved nothing",
            ledger.n_lost
        ));
    }
    pool.close().map_err(|e| e.to_string())?;
    Ok(())
}

/// What `killed_at_random` has submitted and been answered.
#[derive(Default)]
struct Ledger {
    /// Every id submitted, with its item.
    submitted: BTreeMap<u64, u64>,
    /// How many answers each id got.
    answered: BTreeMap<u64, u32>,
    /// Each item's result.
    done: BTreeMap<u64, u64>,
    n_lost: u64,
}

impl Ledger {
    /// Checks an answer; an item handed back is submitted again.
    fn take(&mut self, pool: &mut Pool<u64, u64>, reply: Reply<u64, u64>) -> TestResult {
        check(&reply, &self.submitted)?;
        *self.answered.entry(reply.id).or_default() += 1;
        match reply.result {
            Ok(out) => {
                let item = self.submitted[&reply.id];
                if self.done.insert(item, out).is_some() {
                    return Err(format!("item {item} done twice"));
                }
            }
            Err(lost) => {
                self.n_lost += 1;
                if lost.status.success() {
                    return Err(format!("a lost item's worker ended {}", lost.status));
                }
                let id = pool.submit(lost.item).map_err(|e| e.to_string())?;
                self.submitted.insert(id, lost.item);
            }
        }
        Ok(())
    }
}

/// Two workers that stall on their first item hold at most `max_in_flight` items each; then
/// `try_submit` is `Full` and `submit_timeout` times out, handing the item back. Released, they
/// answer everything.
fn backpressure() -> TestResult {
    let fifo = fifo::Fifo::new("stall")?;
    let config = PoolConfig::new().max_in_flight(3);
    let path = fifo.path().to_owned();
    let mut pool: Pool<u64, u64> = Pool::spawn(
        2,
        move |_| {
            let mut cmd = child_command("pool-stall", "");
            cmd.env(fifo::FIFO_ENV, &path);
            cmd
        },
        &config,
    )
    .map_err(|e| e.to_string())?;
    let mut submitted = BTreeMap::new();
    for n in 0..6 {
        let id = pool
            .try_submit(n)
            .map_err(|e| format!("item {n} refused: {e}"))?;
        submitted.insert(id, n);
    }
    match pool.try_submit(6) {
        Err(err) if err.is_full() && err.item == 6 => {}
        other => return Err(format!("a seventh item: {:?}", other.map_err(|e| e.error))),
    }
    let started = Instant::now();
    match pool.submit_timeout(7, Duration::from_millis(200)) {
        Err(err) if err.is_timeout() && err.item == 7 => {}
        other => return Err(format!("an eighth item: {:?}", other.map_err(|e| e.error))),
    }
    if started.elapsed() < Duration::from_millis(200) {
        return Err(format!("timed out after {:.2?}", started.elapsed()));
    }
    fifo.release(2)?;
    let id = pool.submit(6).map_err(|e| e.to_string())?;
    submitted.insert(id, 6);
    let mut n = 0;
    while let Some(reply) = pool
        .recv_in_order_timeout(WAIT)
        .map_err(|e| e.to_string())?
    {
        check(&reply, &submitted)?;
        if reply.id != n || reply.result.is_err() {
            return Err(format!("answer {n}: {reply:?}"));
        }
        n += 1;
    }
    if n != 7 {
        return Err(format!("{n} answers"));
    }
    pool.close().map_err(|e| e.to_string())?;
    Ok(())
}

/// Closing reaps every worker (no child of this process left, in /proc), a worker that will not
/// exit is killed after the stop timeout, and dropping a pool with items in flight reaps too.
fn shutdown_no_zombie() -> TestResult {
    let mut pool = start(4, "pool-worker", &PoolConfig::new())?;
    for n in 0..32 {
        pool.submit(n).map_err(|e| e.to_string())?;
    }
    drop(pool);
    let left = children_of_this_process();
    if !left.is_empty() {
        return Err(format!("after drop, children left: {left:?}"));
    }
    let config = PoolConfig::new().stop_timeout(Duration::from_millis(300));
    let mut pool = start(3, "pool-stubborn", &config)?;
    pool.submit(1).map_err(|e| e.to_string())?;
    let reply = pool.recv_timeout(WAIT).map_err(|e| e.to_string())?;
    if !matches!(reply, Some(Reply { result: Ok(_), .. })) {
        return Err(format!("{reply:?}"));
    }
    let started = Instant::now();
    let statuses = pool.close().map_err(|e| e.to_string())?;
    if started.elapsed() > Duration::from_secs(3) {
        return Err(format!("close took {:.2?}", started.elapsed()));
    }
    use std::os::unix::process::ExitStatusExt;
    if statuses.len() != 3 || statuses.iter().any(|(_, s)| s.signal() != Some(9)) {
        return Err(format!("stubborn workers ended {statuses:?}"));
    }
    let left = children_of_this_process();
    if !left.is_empty() {
        return Err(format!("after close, children left: {left:?}"));
    }
    Ok(())
}

/// Answers come back out of order (the work differs per item) but `recv_in_order` hands them
/// out by id; `recv` hands out whatever came first.
fn in_submission_order() -> TestResult {
    let mut pool = start(3, "pool-worker", &PoolConfig::new())?;
    let mut submitted = BTreeMap::new();
    let n = crate::count(600);
    for item in 0..n {
        let id = pool.submit(item).map_err(|e| e.to_string())?;
        submitted.insert(id, item);
    }
    for want in 0..n / 2 {
        let reply = pool
            .recv_in_order_timeout(WAIT)
            .map_err(|e| e.to_string())?
            .ok_or("ran out")?;
        check(&reply, &submitted)?;
        if reply.id != want {
            return Err(format!("answer {} in place of {want}", reply.id));
        }
    }
    let mut rest = Vec::new();
    while let Some(reply) = pool.recv_timeout(WAIT).map_err(|e| e.to_string())? {
        check(&reply, &submitted)?;
        rest.push(reply.id);
    }
    rest.sort_unstable();
    if rest != (n / 2..n).collect::<Vec<_>>() {
        return Err("the second half came back incomplete".into());
    }
    match pool.try_recv() {
        Ok(None) => {}
        other => return Err(format!("nothing outstanding, yet {other:?}")),
    }
    pool.close().map_err(|e| e.to_string())?;
    Ok(())
}

/// What a `pool-bytes` worker answers for an item: its length and a position-weighted sum.
fn bytes_answer(bytes: &[u8]) -> (u64, u64) {
    let sum = bytes.iter().enumerate().fold(0u64, |acc, (i, &b)| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b) ^ i as u64)
    });
    (bytes.len() as u64, sum)
}

/// `serve_bytes` workers (`serve_bytes_trusted` ones with `role` `pool-bytes-trusted`) answer
/// `ByteBuf` items of every size (empty, in the ring, and over the blob threshold, so lent from a
/// blob), and `String` items, which postcard encodes the same way; a pool whose items are not
/// byte buffers loses its items to a decode error, reported, not a hang or a wrong answer.
fn serve_bytes_items(role: &'static str) -> TestResult {
    use serde_bytes::ByteBuf;
    let config = PoolConfig::new().channel(sp::Config::new().blob_threshold(4096));
    let mut pool = Pool::<ByteBuf, (u64, u64)>::spawn(2, |_| child_command(role, ""), &config)
        .map_err(|e| format!("spawn: {e}"))?;
    let sizes = [0usize, 1, 7, 100, 4000, 4096, 5000, 65_536, 1 << 20, 3];
    let mut want = BTreeMap::new();
    for (k, &len) in sizes.iter().cycle().take(60).enumerate() {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + k) as u8).collect();
        let id = pool
            .submit(ByteBuf::from(bytes.clone()))
            .map_err(|e| e.to_string())?;
        want.insert(id, bytes_answer(&bytes));
    }
    while let Some(reply) = pool.recv_timeout(WAIT).map_err(|e| e.to_string())? {
        let got = reply.result.map_err(|lost| format!("lost: {lost}"))?;
        if want.remove(&reply.id) != Some(got) {
            return Err(format!("item {}: answer {got:?}", reply.id));
        }
    }
    if !want.is_empty() {
        return Err(format!("{} items unanswered", want.len()));
    }
    pool.close().map_err(|e| e.to_string())?;

    let mut pool = Pool::<String, (u64, u64)>::spawn(1, |_| child_command(role, ""), &config)
        .map_err(|e| format!("spawn: {e}"))?;
    let text = "sp lends the bytes ".repeat(500);
    pool.submit(text.clone()).map_err(|e| e.to_string())?;
    let reply = pool.recv_timeout(WAIT).map_err(|e| e.to_string())?;
    match reply {
        Some(Reply {
            result: Ok(got), ..
        }) if got == bytes_answer(text.as_bytes()) => {}
        other => return Err(format!("string item: {other:?}")),
    }
    pool.close().map_err(|e| e.to_string())?;

    // A `u64` item is a varint, not a length and bytes: the worker ends with a decode error.
    let mut pool =
        Pool::<u64, (u64, u64)>::spawn(1, |_| child_command(role, ""), &PoolConfig::new())
            .map_err(|e| format!("spawn: {e}"))?;
    pool.submit(300).map_err(|e| e.to_string())?;
    match pool.recv_timeout(WAIT).map_err(|e| e.to_string())? {
        Some(Reply {
            result: Err(lost),
            item: None,
            ..
        }) if lost.item == 300 => {}
        other => return Err(format!("u64 item to a bytes worker: {other:?}")),
    }
    let _ = pool.close();
    Ok(())
}

/// An item that is a recipe: its encoding writes `len` bytes made from `seed` straight into the
/// ring slot, as a byte buffer's (postcard: the length as a varint, then the bytes).
#[derive(Debug, PartialEq)]
struct Recipe {
    seed: u64,
    len: usize,
}

impl Recipe {
    fn byte(&self, i: usize) -> u8 {
        (i as u64).wrapping_mul(7).wrapping_add(self.seed) as u8
    }

    fn prefix(&self) -> ([u8; 10], usize) {
        let mut prefix = [0u8; 10];
        let n = postcard::to_slice(&(self.len as u64), &mut prefix).map_or(0, |used| used.len());
        (prefix, n)
    }
}

impl sp::Value for Recipe {
    const ENCODING: sp::Encoding = sp::Encoding::Postcard;

    fn encode(&self, out: &mut [u8]) -> Result<usize, sp::EncodeError> {
        let (prefix, n) = self.prefix();
        let Some(dst) = out.get_mut(..n + self.len) else {
            return Err(sp::EncodeError::BufferFull);
        };
        dst[..n].copy_from_slice(&prefix[..n]);
        for (i, byte) in dst[n..].iter_mut().enumerate() {
            *byte = self.byte(i);
        }
        Ok(n + self.len)
    }

    fn encoded_len(&self) -> Result<usize, sp::EncodeError> {
        Ok(self.prefix().1 + self.len)
    }

    /// A recipe cannot be read back from its bytes (and the pool never decodes its items).
    fn decode(_: &[u8]) -> Result<Self, sp::DecodeError> {
        Err(sp::DecodeError::Unsupported)
    }
}

/// Items whose encoding writes their bytes in the ring (and over the blob threshold, in a blob)
/// reach `serve_bytes` workers, trusted or not, as the bytes they wrote; each reply hands back
/// its recipe.
fn items_written_in_the_ring() -> TestResult {
    let config = PoolConfig::new().channel(sp::Config::new().blob_threshold(8192));
    for role in ["pool-bytes", "pool-bytes-trusted"] {
        let mut pool = Pool::<Recipe, (u64, u64)>::spawn(2, |_| child_command(role, ""), &config)
            .map_err(|e| format!("spawn: {e}"))?;
        let mut want = BTreeMap::new();
        for seed in 0..40u64 {
            let recipe = Recipe {
                seed,
                len: [0, 1, 127, 128, 5000, 16_384, 100_000][seed as usize % 7],
            };
            let bytes: Vec<u8> = (0..recipe.len).map(|i| recipe.byte(i)).collect();
            let id = pool.submit(recipe).map_err(|e| e.to_string())?;
            want.insert(id, (seed, bytes_answer(&bytes)));
        }
        while let Some(reply) = pool.recv_timeout(WAIT).map_err(|e| e.to_string())? {
            let got = reply
                .result
                .map_err(|lost| format!("{role}: lost: {lost}"))?;
            let seed = reply.item.as_ref().map(|r| r.seed);
            if want.remove(&reply.id).map(|(s, a)| (Some(s), a)) != Some((seed, got)) {
                return Err(format!("{role}: item {}: {got:?} for {seed:?}", reply.id));
            }
        }
        if !want.is_empty() {
            return Err(format!("{role}: {} items unanswered", want.len()));
        }
        pool.close().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn kill(pid: u32) -> TestResult {
    let pid = rustix::process::Pid::from_raw(pid as i32).ok_or("pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).map_err(|e| e.to_string())
}

// --- worker roles -------------------------------------------------------------------------------

pub(crate) fn worker() -> TestResult {
    sp::pool::serve(work).map_err(|e| e.to_string())
}

/// Answers byte-buffer items through `serve_bytes`.
pub(crate) fn bytes_worker() -> TestResult {
    sp::pool::serve_bytes(bytes_answer).map_err(|e| e.to_string())
}

/// Answers byte-buffer items through `serve_bytes_trusted`, reading them in the pool's ring.
#[allow(unsafe_code)] // The worker's opt-in to trust its pool.
pub(crate) fn trusted_bytes_worker() -> TestResult {
    // SAFETY: the pool is this test's, an sp `Pool`, which never writes the ring space of an
    // item this worker has not released.
    unsafe { sp::pool::serve_bytes_trusted(bytes_answer) }.map_err(|e| e.to_string())
}

/// Stalls on its first item until the test writes a byte into the FIFO.
pub(crate) fn stall_worker() -> TestResult {
    let mut first = true;
    let res = sp::pool::serve(|n: u64| {
        if first {
            first = false;
            if let Err(err) = fifo::wait_for_release() {
                eprintln!("pool-stall: {err}");
                std::process::exit(2);
            }
        }
        work(n)
    });
    res.map_err(|e| e.to_string())
}

/// Answers, and when the pool closes, does not exit.
pub(crate) fn stubborn_worker() -> TestResult {
    match sp::pool::serve(work) {
        Ok(()) | Err(Error::PeerGone) => loop {
            std::thread::park();
        },
        Err(err) => Err(err.to_string()),
    }
}

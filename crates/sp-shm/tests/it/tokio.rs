//! The async producer and consumer (`sp_shm::tokio`, feature `tokio`) against real child
//! processes, under both runtimes: streams both ways, a parked ping-pong that hangs (and fails)
//! on one lost wake-up, a peer killed while awaited, no CPU while idle, and receives cancelled at
//! random under load.

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use sp_shm::tokio::{AsyncConsumer, AsyncProducer};
use sp_shm::{Error, TrySendError};
use sp_test_support::future::until_parked;
use tokio::runtime::{Builder, Runtime};

use crate::cross::{COUNT_ENV, check_record, config_for, record_len, write_record};
use crate::{PROMPT, TestResult, child_command, spawn_child, trial};
use sp_test_support::rng::XorShift;

const FLAVOURS: [&str; 2] = ["current_thread", "multi_thread"];
/// The bound on one awaited record in these trials.
const AWAIT_LIMIT: Duration = Duration::from_secs(5);

pub(crate) fn trials() -> Vec<Trial> {
    // tokio's signal driver opens a socketpair once per process, with the first runtime: open it
    // before any trial's descriptor snapshot.
    drop(runtime("current_thread"));
    let mut trials = Vec::new();
    for flavour in FLAVOURS {
        for idle in ["adaptive", "park"] {
            trials.push(trial(
                format!("tokio_{flavour}_stream_both_ways_{idle}"),
                move || runtime(flavour).block_on(stream_both_ways(idle, false)),
            ));
            trials.push(trial(
                format!("tokio_{flavour}_consumer_sees_kill_while_awaiting_{idle}"),
                move || runtime(flavour).block_on(consumer_sees_kill(idle)),
            ));
        }
        trials.push(trial(
            format!("tokio_{flavour}_stream_both_ways_read_many_park"),
            move || runtime(flavour).block_on(stream_both_ways("park", true)),
        ));
        for idle in ["adaptive", "park"] {
            trials.push(trial(
                format!("tokio_{flavour}_stream_both_ways_try_first_{idle}"),
                move || runtime(flavour).block_on(stream_try_first(idle)),
            ));
        }
        trials.push(trial(
            format!("tokio_{flavour}_try_send_disarms_a_dropped_wait"),
            move || runtime(flavour).block_on(try_send_disarms_a_dropped_wait()),
        ));
        trials.push(trial(
            format!("tokio_{flavour}_full_producer_sees_kill_while_awaiting"),
            move || runtime(flavour).block_on(full_producer_sees_kill()),
        ));
        trials.push(trial(
            format!("tokio_{flavour}_ping_pong_parked_loses_no_wakeup"),
            move || runtime(flavour).block_on(ping_pong(false)),
        ));
        trials.push(trial(
            format!("tokio_{flavour}_idle_consumer_and_full_producer_cost_no_cpu"),
            move || runtime(flavour).block_on(idle_costs_no_cpu()),
        ));
        for idle in ["adaptive", "park"] {
            trials.push(trial(
                format!(
                    "tokio_{flavour}_recv_cancelled_at_random_loses_and_repeats_nothing_{idle}"
                ),
                move || runtime(flavour).block_on(recv_cancelled_at_random(idle)),
            ));
        }
    }
    trials.push(trial(
        "tokio_ping_pong_parked_child_without_membarrier",
        || runtime("current_thread").block_on(ping_pong(true)),
    ));
    trials.push(trial("tokio_first_wait_parks_and_later_ones_spin", || {
        runtime("current_thread").block_on(first_wait_parks())
    }));
    trials
}

/// As the blocking consumer's: with a strategy that spins without end before it would park, only
/// the first wait (before any record) parks.
async fn first_wait_parks() -> TestResult {
    let config = sp_shm::Config::new()
        .capacity(64 << 10)
        .idle(sp_shm::IdleStrategy::new(u32::MAX, 0, true));
    let (mut tx, rx) = sp_shm::channel(&config).map_err(|e| e.to_string())?;
    let mut rx = AsyncConsumer::new(rx).map_err(|e| e.to_string())?;
    let producer = std::thread::spawn(move || {
        for record in [b"first", b"later"] {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(record).map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(tx)
    });
    let mut buf = Vec::new();
    within("the first record", rx.recv_into(&mut buf))
        .await?
        .map_err(|e| e.to_string())?;
    if buf != b"first" || rx.get_ref().stats().parks != 1 {
        return Err(format!("first wait: {buf:?}, {:?}", rx.get_ref().stats()));
    }
    within("the second record", rx.recv_into(&mut buf))
        .await?
        .map_err(|e| e.to_string())?;
    if buf != b"later" || rx.get_ref().stats().parks != 1 {
        return Err(format!("second wait parked: {:?}", rx.get_ref().stats()));
    }
    drop(producer.join().map_err(|_| "producer panicked")??);
    Ok(())
}

fn runtime(flavour: &str) -> Runtime {
    let mut builder = if flavour == "current_thread" {
        Builder::new_current_thread()
    } else {
        let mut b = Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    builder.enable_all().build().expect("tokio runtime")
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(AWAIT_LIMIT, fut)
        .await
        .map_err(|_| format!("{what}: nothing within {AWAIT_LIMIT:?}"))
}

fn record_count() -> u64 {
    if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    }
}

/// A child streams records each way with the blocking calls (role `stream`); this side sends and
/// receives with the async ones, each in its own task. With `many`, this side receives with
/// `read_many_with`, up to a random 1 to 64 records per await.
async fn stream_both_ways(idle: &str, many: bool) -> TestResult {
    let n = record_count();
    let mut cmd = child_command("stream", idle);
    cmd.env(COUNT_ENV, n.to_string());
    let (mut child, duplex) = spawn_child(&mut cmd, &config_for(idle))?;
    let (producer, consumer, _control) = duplex.into_parts();
    let mut tx = AsyncProducer::new(producer).map_err(|e| e.to_string())?;
    let mut rx = AsyncConsumer::new(consumer).map_err(|e| e.to_string())?;
    let sender = tokio::spawn(async move {
        for seq in 0..n {
            tx.reserve_with(record_len(seq), |mut grant| {
                let used = write_record(seq, &mut grant);
                grant.commit(used)
            })
            .await??;
        }
        Ok::<_, Error>(tx)
    });
    let mut buf = Vec::new();
    if many {
        let (mut seq, mut rng, mut awaits) = (0, XorShift::new(0x5eed), 0u64);
        while seq < n {
            let max = 1 + rng.below(64) as usize;
            let mut res = Ok(());
            let got = within(
                "records",
                rx.read_many_with(max, |rec| {
                    if res.is_ok() {
                        buf.clear();
                        buf.resize(rec.len(), 0);
                        rec.copy_to_slice(&mut buf);
                        res = check_record(seq, &buf);
                        seq += 1;
                    }
                }),
            )
            .await?
            .map_err(|e| format!("recv at {seq}: {e}"))?;
            res?;
            if got == 0 || got > max {
                return Err(format!("read_many_with({max}) took {got} records"));
            }
            awaits += 1;
        }
        eprintln!("  {n} records in {awaits} awaits");
    } else {
        for seq in 0..n {
            within("record", rx.recv_into(&mut buf))
                .await?
                .map_err(|e| format!("recv {seq}: {e}"))?;
            check_record(seq, &buf)?;
        }
    }
    let tx = sender
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("send: {e}"))?;
    let res = within("end", rx.recv_into(&mut buf)).await?;
    if !matches!(res, Err(Error::PeerGone)) {
        return Err(format!("after the stream: {res:?}"));
    }
    let (pstats, cstats) = (tx.get_ref().stats(), rx.get_ref().stats());
    drop(tx);
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("child: {status}"));
    }
    eprintln!(
        "  {idle}: {n} records each way; parks: producer {}, consumer {}; wake bytes sent: producer {}, consumer {}",
        pstats.parks, cstats.parks, pstats.wakes_sent, cstats.wakes_sent
    );
    Ok(())
}

/// A child streams records each way with the blocking calls (role `stream`); this side sends
/// each record with the synchronous fast path (`try_reserve`, or `try_send` for every third)
/// and awaits room (`reserve_with`, `send`) only when that says `Full`, while another task
/// receives. The ring fills now and then, so the sender moves between the fast path and a wait
/// (armed, under `park`) again and again.
async fn stream_try_first(idle: &str) -> TestResult {
    let n = record_count();
    let mut cmd = child_command("stream", idle);
    cmd.env(COUNT_ENV, n.to_string());
    let (mut child, duplex) = spawn_child(&mut cmd, &config_for(idle))?;
    let (producer, consumer, _control) = duplex.into_parts();
    let mut tx = AsyncProducer::new(producer).map_err(|e| e.to_string())?;
    let mut rx = AsyncConsumer::new(consumer).map_err(|e| e.to_string())?;
    let sender = tokio::spawn(async move {
        let (mut out, mut fast) = (vec![0; 256], 0u64);
        for seq in 0..n {
            let len = record_len(seq);
            let tried = if seq % 3 == 0 {
                let used = write_record(seq, &mut out[..len]);
                match tx.try_send(&out[..used]) {
                    Ok(()) => {
                        fast += 1;
                        Ok(())
                    }
                    Err(TrySendError::Full) => tx.send(&out[..used]).await,
                    Err(TrySendError::Broken(err)) => Err(err),
                }
            } else {
                match tx.try_reserve(len) {
                    Ok(mut grant) => {
                        let used = write_record(seq, &mut grant);
                        fast += 1;
                        grant.commit(used)
                    }
                    Err(TrySendError::Full) => {
                        tx.reserve_with(len, |mut grant| {
                            let used = write_record(seq, &mut grant);
                            grant.commit(used)
                        })
                        .await?
                    }
                    Err(TrySendError::Broken(err)) => Err(err),
                }
            };
            tried?;
        }
        Ok::<_, Error>((tx, fast))
    });
    let mut buf = Vec::new();
    for seq in 0..n {
        within("record", rx.recv_into(&mut buf))
            .await?
            .map_err(|e| format!("recv {seq}: {e}"))?;
        check_record(seq, &buf)?;
    }
    let (tx, fast) = sender
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("send: {e}"))?;
    let res = within("end", rx.recv_into(&mut buf)).await?;
    if !matches!(res, Err(Error::PeerGone)) {
        return Err(format!("after the stream: {res:?}"));
    }
    let pstats = tx.get_ref().stats();
    drop(tx);
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("child: {status}"));
    }
    eprintln!(
        "  {idle}: {n} records each way, {fast} found room at once; producer parks {}",
        pstats.parks
    );
    if fast == 0 {
        return Err("the fast path never found room".into());
    }
    Ok(())
}

/// In one process, no peer process needed: a send awaiting room in a full ring is dropped
/// while armed (its waiting flag set); `try_send` then finds the ring still full and disarms,
/// so the consumer, making room, finds no flag and sends no wake-up byte. Then `try_send` finds
/// that room.
async fn try_send_disarms_a_dropped_wait() -> TestResult {
    let config = config_for("park");
    let (tx, rx) = sp_shm::channel(&config).map_err(|e| e.to_string())?;
    let (mut tx, mut rx) = (
        AsyncProducer::new(tx).map_err(|e| e.to_string())?,
        AsyncConsumer::new(rx).map_err(|e| e.to_string())?,
    );
    let record = [7u8; 1000];
    while tx.try_send(&record).is_ok() {}
    {
        let mut send = pin!(tx.send(&record));
        if let Some(res) = until_parked(send.as_mut()).await {
            return Err(format!("room in a full ring: {res:?}"));
        }
    }
    if tx.get_ref().stats().parks != 1 {
        return Err(format!("{} parks", tx.get_ref().stats().parks));
    }
    match tx.try_send(&record) {
        Err(TrySendError::Full) => {}
        other => return Err(format!("a full ring, then: {other:?}")),
    }
    // Two records: one would leave room for a record, not for the padding to the ring's end.
    let mut buf = Vec::new();
    for _ in 0..2 {
        within("a record", rx.recv_into(&mut buf))
            .await?
            .map_err(|e| e.to_string())?;
    }
    rx.get_mut().flush().map_err(|e| e.to_string())?;
    let woken = rx.get_ref().stats().wakes_sent;
    if woken != 0 {
        return Err(format!("{woken} wake-up bytes to a disarmed producer"));
    }
    tx.try_send(&record)
        .map_err(|e| format!("room after a read: {e}"))?;
    Ok(())
}

/// The child (role `idle`) sends one record and then never writes; this side awaits the next
/// record until the await is parked in the reactor, kills the child, and must see `PeerGone`
/// promptly.
async fn consumer_sees_kill(idle: &str) -> TestResult {
    let (mut child, duplex) = spawn_child(&mut child_command("idle", idle), &config_for(idle))?;
    let (_producer, consumer, _control) = duplex.into_parts();
    let mut rx = AsyncConsumer::new(consumer).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    within("ready", rx.recv_into(&mut buf))
        .await?
        .map_err(|e| format!("ready: {e}"))?;
    let killed_at;
    let res = {
        let mut recv = pin!(rx.recv_into(&mut buf));
        if let Some(res) = until_parked(recv.as_mut()).await {
            return Err(format!("a record from an idle peer: {res:?}"));
        }
        killed_at = Instant::now();
        child.kill().map_err(|e| e.to_string())?;
        within("after the kill", recv).await?
    };
    let late = killed_at.elapsed();
    let _ = child.wait();
    if rx.get_ref().stats().parks == 0 {
        return Err("the consumer never parked".into());
    }
    match res {
        Err(Error::PeerGone) if late < PROMPT => Ok(()),
        other => Err(format!(
            "expected PeerGone within {PROMPT:?}: {other:?} after {late:?}"
        )),
    }
}

/// The child never reads; this side fills the ring, awaits room until parked, and the child is
/// killed: `PeerGone` promptly.
async fn full_producer_sees_kill() -> TestResult {
    let (mut child, duplex) = spawn_child(&mut child_command("idle", "park"), &config_for("park"))?;
    let (producer, consumer, _control) = duplex.into_parts();
    let mut rx = AsyncConsumer::new(consumer).map_err(|e| e.to_string())?;
    let mut tx = AsyncProducer::new(producer).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    within("ready", rx.recv_into(&mut buf))
        .await?
        .map_err(|e| e.to_string())?;
    while tx.try_send(&[7; 1000]).is_ok() {}
    let mut send = pin!(tx.send(&[7; 1000]));
    if let Some(res) = until_parked(send.as_mut()).await {
        return Err(format!("room in a full ring: {res:?}"));
    }
    let killed_at = Instant::now();
    child.kill().map_err(|e| e.to_string())?;
    let res = within("after the kill", send).await?;
    let late = killed_at.elapsed();
    let _ = child.wait();
    match res {
        Err(Error::PeerGone) if late < PROMPT => Ok(()),
        other => Err(format!(
            "expected PeerGone within {PROMPT:?}: {other:?} after {late:?}"
        )),
    }
}

/// `CLOCK_PROCESS_CPUTIME_ID`: CPU time of every thread of this process.
fn process_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A consumer whose producer never writes, and a producer whose consumer never reads, each await
/// for a second (under the adaptive strategy: they spin and yield first, then park); the whole
/// process may use at most 50 ms of CPU meanwhile (a busy loop would use the second).
async fn idle_costs_no_cpu() -> TestResult {
    let config = config_for("adaptive");
    let (mut child, duplex) = spawn_child(&mut child_command("idle", "adaptive"), &config)?;
    let (producer, consumer, _control) = duplex.into_parts();
    let mut rx = AsyncConsumer::new(consumer).map_err(|e| e.to_string())?;
    let mut tx = AsyncProducer::new(producer).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    within("ready", rx.recv_into(&mut buf))
        .await?
        .map_err(|e| e.to_string())?;
    while tx.try_send(&[7; 1000]).is_ok() {}
    let (cpu0, t0) = (process_cpu(), Instant::now());
    let idle = Duration::from_secs(1);
    let (recv, send) = tokio::join!(
        tokio::time::timeout(idle, rx.recv_into(&mut buf)),
        tokio::time::timeout(idle, tx.send(&[7; 1000])),
    );
    let (cpu, wall) = (process_cpu() - cpu0, t0.elapsed());
    child.kill().map_err(|e| e.to_string())?;
    let _ = child.wait();
    if recv.is_ok() || send.is_ok() {
        return Err(format!("an idle peer answered: {recv:?} {send:?}"));
    }
    eprintln!("  {wall:.2?} awaiting: {cpu:?} of CPU");
    if cpu > Duration::from_millis(50) {
        return Err(format!("{cpu:?} of CPU while awaiting for {wall:?}"));
    }
    Ok(())
}

/// A parked ping-pong: the child (role `tokio_echo`, async, `IdleStrategy::park`) echoes every
/// record; this side (also parking at once) sends one and awaits the echo, many times. Every
/// wait on either side parks, so every record needs a wake-up byte; one lost wake-up leaves both
/// sides asleep and the await runs into its bound.
async fn ping_pong(child_without_membarrier: bool) -> TestResult {
    let n: u64 = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    let mut cmd = child_command("tokio_echo", "park");
    cmd.env(COUNT_ENV, n.to_string());
    if child_without_membarrier {
        cmd.env(sp_shm::NO_MEMBARRIER_ENV, "1");
    }
    let (mut child, duplex) = spawn_child(&mut cmd, &config_for("park"))?;
    let (producer, consumer, _control) = duplex.into_parts();
    let mut tx = AsyncProducer::new(producer).map_err(|e| e.to_string())?;
    let mut rx = AsyncConsumer::new(consumer).map_err(|e| e.to_string())?;
    let mut out = vec![0; 256];
    let mut buf = Vec::new();
    for seq in 0..n {
        let used = write_record(seq, &mut out);
        within("send", tx.send(&out[..used]))
            .await?
            .map_err(|e| e.to_string())?;
        within(&format!("echo {seq}"), rx.recv_into(&mut buf))
            .await?
            .map_err(|e| format!("echo {seq}: {e}"))?;
        check_record(seq, &buf)?;
    }
    let parks = rx.get_ref().stats().parks;
    drop((tx, rx));
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("child: {status}"));
    }
    eprintln!("  {n} round trips, {parks} parks of this side");
    if parks < n / 2 {
        return Err(format!("only {parks} parks in {n} round trips"));
    }
    Ok(())
}

/// The child role `tokio_echo`: echoes `COUNT_ENV` records with the async calls under a
/// current-thread runtime, waiting by the idle strategy it was given; with
/// [`NO_MEMBARRIER_ENV`](sp_shm::NO_MEMBARRIER_ENV), checks that its parks re-checked on a timer.
pub(crate) fn child_tokio_echo(idle: &str) -> TestResult {
    let n: u64 = std::env::var(COUNT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or("count")?;
    let duplex = sp_shm::adopt(&config_for(idle)).map_err(|e| format!("adopt: {e}"))?;
    let (producer, consumer, _control) = duplex.into_parts();
    runtime("current_thread").block_on(async {
        let mut tx = AsyncProducer::new(producer).map_err(|e| e.to_string())?;
        let mut rx = AsyncConsumer::new(consumer).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        for seq in 0..n {
            within("record", rx.recv_into(&mut buf))
                .await?
                .map_err(|e| format!("recv {seq}: {e}"))?;
            within("echo", tx.send(&buf))
                .await?
                .map_err(|e| e.to_string())?;
        }
        if std::env::var_os(sp_shm::NO_MEMBARRIER_ENV).is_some_and(|v| v == "1") {
            let stats = rx.get_ref().stats();
            if stats.parks == 0 || stats.rechecked_parks != stats.parks {
                return Err(format!(
                    "without membarrier: {} parks, {} re-checking",
                    stats.parks, stats.rechecked_parks
                ));
            }
        }
        // Until the parent has read the last echo and left.
        let end = within("end", rx.recv_into(&mut buf)).await?;
        match end {
            Err(Error::PeerGone) => Ok(()),
            other => Err(format!("after the last record: {other:?}")),
        }
    })
}

/// A child producer (role `bursts`, blocking) commits `COUNT_ENV` records in bursts of 1 to 8
/// with gaps of up to 200 µs (after one burst in eight in an optimised build); this side wraps every receive in a timeout (zero for two in three,
/// so that a receive that has to wait is cancelled at its first poll, else up to 2 ms, cancelled
/// from the reactor) and must see every record exactly once, in order. Parking at once, the
/// receives are cancelled while armed (waiting flag set, the wake socket registered); adaptive,
/// mostly while they spin or yield.
async fn recv_cancelled_at_random(idle: &str) -> TestResult {
    // Millions in an optimised build; a debug build (CI's) is about ten times slower.
    let n: u64 = if cfg!(debug_assertions) {
        30_000
    } else {
        3_000_000
    };
    let mut cmd = child_command("bursts", "adaptive");
    cmd.env(COUNT_ENV, n.to_string());
    let (mut child, duplex) = spawn_child(&mut cmd, &config_for(idle))?;
    let (_producer, consumer, _control) = duplex.into_parts();
    let mut rx = AsyncConsumer::new(consumer).map_err(|e| e.to_string())?;
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut buf = Vec::new();
    let (mut next, mut cancelled) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(25);
    while next < n {
        if Instant::now() > deadline {
            return Err(format!("stuck at record {next}"));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // A third of the receives run under a timer (cancelled on a timer tick, ~1 ms), the rest
        // are polled once and dropped if that poll is pending (cancelled at once).
        let got = if rng.is_multiple_of(3) {
            tokio::time::timeout(Duration::from_micros(rng % 200), rx.recv_into(&mut buf))
                .await
                .map_err(|_| ())
        } else {
            sp_test_support::poll_once(rx.recv_into(&mut buf)).await
        };
        match got {
            Ok(res) => {
                res.map_err(|e| format!("recv {next}: {e}"))?;
                // The sequence number and length (the checksum too, now and then: a debug build
                // computes it slowly, and a slow receiver would seldom find the ring empty).
                let seq = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
                if seq != next || buf.len() != record_len(next) {
                    return Err(format!(
                        "expected record {next}, got {seq} ({} bytes)",
                        buf.len()
                    ));
                }
                if next % 64 == 0 {
                    check_record(next, &buf)?;
                }
                next += 1;
            }
            Err(_) => cancelled += 1,
        }
    }
    let end = within("end", rx.recv_into(&mut buf)).await?;
    let status = child.wait().map_err(|e| e.to_string())?;
    if !matches!(end, Err(Error::PeerGone)) || !status.success() {
        return Err(format!("after the last record: {end:?}, child {status}"));
    }
    eprintln!("  {n} records, {cancelled} receives cancelled");
    if cancelled < 100 {
        return Err(format!("only {cancelled} receives were cancelled"));
    }
    Ok(())
}

/// The child role `bursts`: see [`recv_cancelled_at_random`].
pub(crate) fn child_bursts() -> TestResult {
    let n: u64 = std::env::var(COUNT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or("count")?;
    let duplex = sp_shm::adopt(&config_for("adaptive")).map_err(|e| format!("adopt: {e}"))?;
    let (mut producer, _consumer, _control) = duplex.into_parts();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut seq = 0;
    while seq < n {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        for _ in 0..=rng % 8 {
            if seq == n {
                break;
            }
            let mut grant = producer
                .reserve(record_len(seq))
                .map_err(|e| e.to_string())?;
            let used = write_record(seq, &mut grant);
            grant.commit(used).map_err(|e| e.to_string())?;
            seq += 1;
        }
        // A gap after every burst in a debug build; after one in eight in an optimised one,
        // whose millions of records would otherwise take a minute of gaps (still ~80 000).
        if cfg!(debug_assertions) || (rng >> 40).is_multiple_of(8) {
            let gap = Instant::now() + Duration::from_micros((rng >> 8) % 200);
            while Instant::now() < gap {
                std::hint::spin_loop();
            }
        }
    }
    Ok(())
}

//! Faults: a remote killed mid-stream (either side), a remote stopped (its host silent: the
//! lease), a slow remote (backpressure in bounded memory), a restarted remote (resumed when
//! asked), no remote at all.

use std::os::unix::process::ExitStatusExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use sp_zenoh::{Error, OnLoss};

use crate::items::{Checker, Item, Sizes};
use crate::roles::{Block, block};
use crate::streams::{options, produce};
use crate::{
    TestResult, count, expect_err, free_port, open_session, reap, report_value, spawn_child, trial,
};

/// How soon after a remote's death its gateway must end (zenoh sees the TCP connection close).
const DEATH_BOUND: Duration = Duration::from_secs(5);

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial(
            "killed_subscriber_ends_the_publisher_within_a_bound",
            killed_sink,
        ),
        trial(
            "killed_publisher_ends_the_subscriber_within_a_bound",
            killed_source,
        ),
        trial("stopped_remote_is_gone_within_the_lease", stopped_sink),
        trial(
            "slow_remote_holds_the_sender_back_in_bounded_memory",
            slow_sink,
        ),
        trial("restarted_subscriber_is_resumed_when_asked", restarted_sink),
        trial(
            "restarted_publisher_is_resumed_when_asked",
            restarted_source,
        ),
        trial(
            "no_remote_ends_both_gateways_within_their_timeout",
            no_remote,
        ),
    ]
}

/// A producer that sends (nearly) forever, so that only the fault can end the stream.
const ENDLESS: u64 = 1 << 40;

fn killed_sink() -> TestResult {
    let port = free_port();
    let session = open_session(Some(port), &[], None);
    let mut child = spawn_child(
        "sink",
        &format!("connect={port} key=it/kill die_after=2000 expect=end"),
    );
    let (tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let gateway =
        sp_zenoh::publish(&session, "it/kill", rx, &options()).map_err(|e| e.to_string())?;
    let producer = produce(tx, 0, ENDLESS, Sizes::Mixed);
    let status = child.wait()?;
    let died = Instant::now();
    if status.signal() != Some(9) {
        return Err(format!("the sink was to die of SIGKILL: {status}"));
    }
    expect_err(gateway.join(), |err| {
        matches!(err, Error::RemoteGone { .. })
    })?;
    // The local producer is not left blocked: the gateway dropped its receiver.
    match producer.join().expect("producer") {
        Err((_, sp::Error::PeerGone)) => {}
        other => return Err(format!("producer: {other:?}")),
    }
    let took = died.elapsed();
    if took > DEATH_BOUND {
        return Err(format!("the death was noticed after {took:?}"));
    }
    eprintln!("  noticed {took:?} after the sink died");
    Ok(())
}

fn killed_source() -> TestResult {
    let port = free_port();
    let session = open_session(Some(port), &[], None);
    let (tx, mut rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let gateway =
        sp_zenoh::subscribe(&session, "it/killsrc", tx, &options()).map_err(|e| e.to_string())?;
    let mut child = spawn_child(
        "source",
        &format!("connect={port} key=it/killsrc n={ENDLESS} die_after=3000"),
    );
    let mut checker = Checker::new(Sizes::Mixed, false);
    checker.drain(&mut rx, "receive")?;
    let ended = Instant::now();
    let status = child.wait()?;
    if status.signal() != Some(9) {
        return Err(format!("the source was to die of SIGKILL: {status}"));
    }
    if checker.n_values > 3000 || checker.first_seq.unwrap_or(0) != 0 {
        return Err(format!(
            "{} values from {:?}: more than were sent",
            checker.n_values, checker.first_seq
        ));
    }
    expect_err(gateway.join(), |err| {
        matches!(err, Error::RemoteGone { .. })
    })?;
    eprintln!(
        "  {} values in sequence, then the end ({:?} to join)",
        checker.n_values,
        ended.elapsed()
    );
    Ok(())
}

/// SIGSTOP: the process stays, its TCP connection stays open, it just stops answering, as a
/// host that vanished from the network would. zenoh's lease (1 s here) bounds the wait.
fn stopped_sink() -> TestResult {
    let port = free_port();
    let lease = 1000;
    let session = open_session(Some(port), &[], Some(lease));
    let child = spawn_child(
        "sink",
        &format!("connect={port} lease={lease} key=it/stop expect=end"),
    );
    let (mut tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let gateway =
        sp_zenoh::publish(&session, "it/stop", rx, &options()).map_err(|e| e.to_string())?;
    let (flowing_tx, flowing_rx) = mpsc::channel();
    let producer = std::thread::spawn(move || {
        for seq in 0..ENDLESS {
            tx.send(&crate::items::item(0, seq, Sizes::Mixed))?;
            if seq == 2000 {
                let _ = flowing_tx.send(());
            }
        }
        Ok::<(), sp::Error>(())
    });
    let res = flowing_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the stream never flowed".to_string())
        .and_then(|()| {
            rustix::process::kill_process(child.pid(), rustix::process::Signal::STOP)
                .map_err(|e| e.to_string())
        });
    let stopped = Instant::now();
    res?;
    let joined = gateway.join();
    let took = stopped.elapsed();
    drop(child);
    expect_err(joined, |err| matches!(err, Error::RemoteGone { .. }))?;
    match producer.join().expect("producer") {
        Err(sp::Error::PeerGone) => {}
        other => return Err(format!("producer: {other:?}")),
    }
    if took > Duration::from_millis(4 * lease) {
        return Err(format!("a silent remote was noticed after {took:?}"));
    }
    eprintln!("  noticed {took:?} after the sink stopped (lease {lease} ms)");
    Ok(())
}

/// This process's resident set, from `/proc/self/status`, in bytes.
fn rss() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or("no VmRSS")?;
    Ok(kib << 10)
}

/// The sink takes 1.5 ms per 64 KiB value. The producer must be held back (it cannot finish much
/// sooner than the sink does), nothing may be dropped (the sink checks every value), and this
/// process's memory must stay far below what it sent.
fn slow_sink() -> TestResult {
    let n: u64 = 2000;
    let per_value = Duration::from_micros(1500);
    let port = free_port();
    let session = open_session(Some(port), &[], None);
    let child = spawn_child(
        "slow-sink",
        &format!(
            "connect={port} key=it/slow n={n} slow_us={}",
            per_value.as_micros()
        ),
    );
    let (mut tx, rx) = sp::channel::<Block>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let gateway =
        sp_zenoh::publish(&session, "it/slow", rx, &options()).map_err(|e| e.to_string())?;
    let before = rss()?;
    let started = Instant::now();
    let producer = std::thread::spawn(move || {
        for seq in 0..n {
            tx.send(&block(seq))?;
        }
        Ok::<(), sp::Error>(())
    });
    let mut peak = before;
    while !producer.is_finished() {
        peak = peak.max(rss()?);
        std::thread::sleep(Duration::from_millis(10));
    }
    let produced_in = started.elapsed();
    producer
        .join()
        .expect("producer")
        .map_err(|e| format!("send: {e}"))?;
    let summary = gateway.join().map_err(|e| format!("gateway: {e}"))?;
    let report = reap(child)?;
    let sent = n * (64 << 10);
    let grew = peak.saturating_sub(before);
    eprintln!(
        "  {} MiB sent in {produced_in:?}; resident set grew by {} KiB",
        sent >> 20,
        grew >> 10
    );
    if report_value(&report, "records")? != n || summary.records != n {
        return Err(format!("gateway {summary:?}, sink {report}"));
    }
    // Between the producer and the sink: two 1 MiB rings, zenoh's queue, the socket buffers;
    // a few hundred values at most, so the producer finishes at most that much sooner.
    let held_back = per_value * (n as u32 - 400);
    if produced_in < held_back {
        return Err(format!(
            "the producer finished in {produced_in:?}, sooner than the sink could take it ({held_back:?})"
        ));
    }
    if grew > 32 << 20 {
        return Err(format!("the resident set grew by {grew} bytes"));
    }
    Ok(())
}

fn restarted_sink() -> TestResult {
    // Far more than the rings and sockets between the two hold, so that the first sink dies
    // with the stream still flowing (a sink confirms the end once everything is in its ring).
    let n = count(100_000);
    let port = free_port();
    let session = open_session(Some(port), &[], None);
    let first = spawn_child(
        "sink",
        &format!("connect={port} key=it/resume die_after=3000 expect=end"),
    );
    let (tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let resume = OnLoss::Resume {
        within: Duration::from_secs(20),
    };
    let gateway = sp_zenoh::publish(&session, "it/resume", rx, &options().on_loss(resume))
        .map_err(|e| e.to_string())?;
    let producer = produce(tx, 2, n, Sizes::Mixed);
    let out = first.output()?;
    if out.status.signal() != Some(9) {
        return Err(format!("the first sink was to die: {}", out.status));
    }
    let second = spawn_child(
        "sink",
        &format!("connect={port} key=it/resume n={n} expect=end"),
    );
    let summary = gateway.join().map_err(|e| format!("gateway: {e}"))?;
    producer
        .join()
        .expect("producer")
        .map_err(|(i, e)| format!("send {i}: {e}"))?;
    let report = reap(second)?;
    let (records, first_seq) = (
        report_value(&report, "records")?,
        report_value(&report, "first")?,
    );
    if summary.resumes != 1 || first_seq < 3000 || records + first_seq != n {
        return Err(format!("gateway {summary:?}, second sink {report}"));
    }
    eprintln!("  the second sink took values {first_seq}..{n}");
    Ok(())
}

fn restarted_source() -> TestResult {
    let port = free_port();
    let session = open_session(Some(port), &[], None);
    let (tx, mut rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let resume = OnLoss::Resume {
        within: Duration::from_secs(20),
    };
    let gateway = sp_zenoh::subscribe(&session, "it/resrc", tx, &options().on_loss(resume))
        .map_err(|e| e.to_string())?;
    let first = spawn_child(
        "source",
        &format!("connect={port} key=it/resrc stream=1 n={ENDLESS} die_after=2000"),
    );
    let second_n = count(5000);
    // The second source starts once the first is dead.
    let restarter = std::thread::spawn(move || {
        let out = first.output()?;
        if out.status.signal() != Some(9) {
            return Err(format!("the first source was to die: {}", out.status));
        }
        reap(spawn_child(
            "source",
            &format!("connect={port} key=it/resrc stream=2 n={second_n}"),
        ))
    });
    let mut checker = Checker::new(Sizes::Mixed, false);
    checker.drain(&mut rx, "receive")?;
    restarter.join().expect("restarter")?;
    let summary = gateway.join().map_err(|e| format!("gateway: {e}"))?;
    let streams: Vec<_> = checker.starts.iter().map(|&(stream, _)| stream).collect();
    if summary.resumes != 1 || checker.starts != [(1, 0), (2, 0)] {
        return Err(format!(
            "gateway {summary:?}, streams {streams:?} from {:?}",
            checker.starts
        ));
    }
    eprintln!("  {} values from two sources", checker.n_values);
    Ok(())
}

fn no_remote() -> TestResult {
    let session = open_session(Some(free_port()), &[], None);
    let quick = options().connect_timeout(Duration::from_millis(300));
    let (_tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let publisher =
        sp_zenoh::publish(&session, "it/nobody", rx, &quick).map_err(|e| e.to_string())?;
    let (tx, mut local_rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let subscriber =
        sp_zenoh::subscribe(&session, "it/nobody-else", tx, &quick).map_err(|e| e.to_string())?;
    expect_err(publisher.join(), |err| {
        matches!(err, Error::NoRemote { .. })
    })?;
    expect_err(subscriber.join(), |err| {
        matches!(err, Error::NoRemote { .. })
    })?;
    // The local receiver sees its sender gone.
    match local_rx.recv() {
        Err(sp::Error::PeerGone) => Ok(()),
        other => Err(format!("local receiver: {other:?}")),
    }
}

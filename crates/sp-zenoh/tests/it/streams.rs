//! Streams that end cleanly: two processes each way, three processes through a remote stage, and
//! a long run whose every record is sequence-checked.

use std::time::Duration;

use libtest_mimic::Trial;
use sp_zenoh::Options;

use crate::items::{Checker, Item, Sizes, item};
use crate::{TestResult, count, free_port, open_session, reap, report_value, spawn_child, trial};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial("two_processes_parent_publishes_values_and_blobs", || {
            parent_publishes(count(20_000))
        }),
        trial("two_processes_child_publishes_long_run_in_sequence", || {
            child_publishes(count(1_000_000))
        }),
        trial("three_processes_through_a_remote_stage", three_processes),
    ]
}

pub(crate) fn options() -> Options {
    Options::new().connect_timeout(Duration::from_secs(20))
}

/// Sends `n` values of `stream` into `tx` from a thread; the number sent before an error.
pub(crate) fn produce(
    mut tx: sp::Sender<Item>,
    stream: u32,
    n: u64,
    sizes: Sizes,
) -> std::thread::JoinHandle<Result<u64, (u64, sp::Error)>> {
    std::thread::spawn(move || {
        for seq in 0..n {
            tx.send(&item(stream, seq, sizes)).map_err(|e| (seq, e))?;
        }
        Ok(n)
    })
}

fn parent_publishes(n: u64) -> TestResult {
    let port = free_port();
    let session = open_session(Some(port), &[], None);
    let child = spawn_child(
        "sink",
        &format!("connect={port} key=it/two n={n} expect=end"),
    );
    let (tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let gateway =
        sp_zenoh::publish(&session, "it/two", rx, &options()).map_err(|e| e.to_string())?;
    let producer = produce(tx, 7, n, Sizes::Mixed);
    let summary = gateway.join().map_err(|e| format!("gateway: {e}"))?;
    let sent = producer
        .join()
        .expect("producer")
        .map_err(|(i, e)| format!("send {i}: {e}"))?;
    let report = reap(child)?;
    if summary.records != n || sent != n || report_value(&report, "records")? != n {
        return Err(format!("{n} values: gateway {summary:?}, sink {report}"));
    }
    eprintln!(
        "  {n} values ({} blobs) in {} samples",
        n / crate::items::BLOB_EVERY,
        summary.samples
    );
    Ok(())
}

fn child_publishes(n: u64) -> TestResult {
    let port = free_port();
    let session = open_session(Some(port), &[], None);
    let (tx, mut rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let gateway =
        sp_zenoh::subscribe(&session, "it/long", tx, &options()).map_err(|e| e.to_string())?;
    let child = spawn_child(
        "source",
        &format!("connect={port} key=it/long n={n} stream=3 sizes=small"),
    );
    let mut checker = Checker::new(Sizes::Small, false);
    checker.drain(&mut rx, "receive")?;
    let summary = gateway.join().map_err(|e| format!("gateway: {e}"))?;
    let report = reap(child)?;
    if checker.n_values != n || checker.first_seq != Some(0) || summary.records != n {
        return Err(format!(
            "{} values from {:?} (gateway {summary:?}), {n} sent",
            checker.n_values, checker.first_seq
        ));
    }
    if report_value(&report, "records")? != n {
        return Err(format!("the source reports {report}"));
    }
    eprintln!("  {n} values in {} samples", summary.samples);
    Ok(())
}

/// The parent publishes `it/in`; a child transforms it to `it/out`; another child checks it.
/// Each child reaches the others only through zenoh.
fn three_processes() -> TestResult {
    let n = count(10_000);
    let (p0, p1) = (free_port(), free_port());
    let session = open_session(Some(p0), &[], None);
    let stage = spawn_child(
        "stage",
        &format!("listen={p1} connect={p0} key_in=it/in key_out=it/out"),
    );
    let sink = spawn_child(
        "sink",
        &format!("connect={p0},{p1} key=it/out n={n} transformed=1 expect=end"),
    );
    let (tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let gateway =
        sp_zenoh::publish(&session, "it/in", rx, &options()).map_err(|e| e.to_string())?;
    let producer = produce(tx, 1, n, Sizes::Mixed);
    let summary = gateway.join().map_err(|e| format!("gateway: {e}"))?;
    producer
        .join()
        .expect("producer")
        .map_err(|(i, e)| format!("send {i}: {e}"))?;
    let stage_report = reap(stage)?;
    let sink_report = reap(sink)?;
    if summary.records != n
        || report_value(&stage_report, "records")? != n
        || report_value(&sink_report, "records")? != n
    {
        return Err(format!(
            "{n} values: gateway {summary:?}, stage {stage_report}, sink {sink_report}"
        ));
    }
    Ok(())
}

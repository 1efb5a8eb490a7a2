//! Handovers: a restarted remote whose token reaches the gateway while the old remote's token is
//! still alive (zenoh has not yet reported the old one's loss), which `OnLoss::Resume` resumes
//! once the old one goes, with nothing lost or delivered twice; and the refusal when both stay.
//!
//! And what a new subscriber may meet around a handover: a stale token of an ended publisher
//! (with the `done` of its stream), not taken; samples put before the publisher found it,
//! passed over.
//!
//! The order is forced, not hoped for: the old remote (a child) holds after its share of the
//! stream; the new one (another child) declares its gateway's token, then a `<key>/ready` token
//! on the same session, which reaches this process after the gateway's token; only then is the
//! old child killed (SIGKILL, as a crash), and only after this side showed that it holds its
//! stream with two remote tokens alive: a publishing gateway's ring fills and stays full for
//! 200 ms, a subscribing gateway delivers nothing of the new stream for 200 ms. (A gateway
//! without the handover refuses at its first look, well within those 200 ms.)

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use libtest_mimic::Trial;
use sp::{RecvTimeoutError, SendTimeoutError, TrySendError};
use sp_zenoh::{Error, OnLoss, Violation};
use zenoh::Wait;

use crate::items::{Checker, Item, Sizes, item};
use crate::refusals::{pair, postcard_bytes, sample, wait_matched};
use crate::streams::options;
use crate::{
    TestResult, count, expect_err, free_port, open_session, reap, report_value, spawn_child,
    spawn_holding, trial,
};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial(
            "subscriber_restarted_before_the_old_one_is_gone_is_resumed",
            restarted_sink,
        ),
        trial(
            "publisher_restarted_before_the_old_one_is_gone_is_resumed",
            restarted_source,
        ),
        trial(
            "a_second_subscriber_that_stays_is_refused_after_the_handover_grace",
            second_sink_stays,
        ),
        trial(
            "a_stale_token_of_an_ended_publisher_is_not_taken",
            stale_publisher,
        ),
        trial(
            "samples_put_before_the_publisher_found_this_subscriber_are_passed_over",
            samples_before_first,
        ),
    ]
}

/// The old remote's share of the stream.
const OLD_SHARE: u64 = 1000;
/// How long the trials require a gateway to hold its stream with two remote tokens alive.
const HOLD: Duration = Duration::from_millis(200);

fn resume() -> sp_zenoh::Options {
    options().on_loss(OnLoss::Resume {
        within: Duration::from_secs(20),
    })
}

/// Watches for the token `<key>/ready` (declared by a child with `ready=1`).
struct Ready(zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>);

impl Ready {
    fn watch(session: &zenoh::Session, key: &str) -> Result<Self, String> {
        session
            .liveliness()
            .declare_subscriber(format!("{key}/ready"))
            .history(true)
            .wait()
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// Waits (at most 30 s) for the token.
    fn wait(&self) -> TestResult {
        match self.0.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("no ready token within 30 s".into()),
            Err(err) => Err(err.to_string()),
        }
    }
}

/// Watches for subscribing gateways' tokens to go (`<key>/_sp/sub/...`, docs/protocol.md).
struct Gone(zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>);

impl Gone {
    fn watch(session: &zenoh::Session, key: &str) -> Result<Self, String> {
        session
            .liveliness()
            .declare_subscriber(format!("{key}/_sp/sub/**"))
            .wait()
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// Waits (at most 30 s in all) until `n` tokens have gone.
    fn wait(&self, n: usize) -> TestResult {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut gone = 0;
        while gone < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.0.recv_timeout(left) {
                Ok(Some(sample)) if sample.kind() == zenoh::sample::SampleKind::Delete => gone += 1,
                Ok(Some(_)) => {}
                Ok(None) => return Err(format!("{gone} of {n} tokens gone within 30 s")),
                Err(err) => return Err(err.to_string()),
            }
        }
        Ok(())
    }
}

/// Sends values `0..n` of stream `stream` and waits for the old sink, started with
/// `hold_after=n`, to say it has them all and holds.
fn feed_until_held(
    tx: &mut sp::Sender<Item>,
    old: &mut crate::Kid,
    stream: u32,
    n: u64,
) -> TestResult {
    for seq in 0..n {
        tx.send(&item(stream, seq, Sizes::Mixed))
            .map_err(|e| format!("send {seq}: {e}"))?;
    }
    match old.read_line()?.as_str() {
        "held" => Ok(()),
        said => Err(format!("the old sink said {said:?}")),
    }
}

/// This process publishes; the subscriber restarts. The old sink takes `OLD_SHARE` values and
/// holds; the new one declares itself; this side fills its ring (the gateway takes nothing
/// while two subscribers are alive: it neither fails nor sends to both); the old sink dies; the
/// gateway goes on with the new one from the next value.
fn restarted_sink() -> TestResult {
    let key = "it/handover-sink";
    let n = OLD_SHARE + count(20_000);
    let port = free_port();
    let session = open_session(Some(port), &[], None);
    let ready = Ready::watch(&session, key)?;
    let mut old = spawn_holding(
        "sink",
        &format!("connect={port} key={key} hold_after={OLD_SHARE} expect=end"),
    );
    let (mut tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let gateway = sp_zenoh::publish(&session, key, rx, &resume()).map_err(|e| e.to_string())?;
    // The old sink has every value so far: the gateway is idle, waiting on its ring.
    feed_until_held(&mut tx, &mut old, 5, OLD_SHARE)?;
    let new = spawn_child(
        "sink",
        &format!("connect={port} key={key} n={n} ready=1 expect=end"),
    );
    ready.wait()?;
    // Both subscribers' tokens are in the gateway's view now. Fill the ring; then it must stay
    // full: the gateway takes at most one batch before it looks at its remote, and then holds.
    let mut seq = OLD_SHARE;
    let ended = |err: sp::Error, gateway: sp_zenoh::Gateway| {
        format!(
            "the gateway ended with two subscribers alive ({err}): {:?}",
            gateway.join()
        )
    };
    loop {
        match tx.try_send(&item(5, seq, Sizes::Mixed)) {
            Ok(()) => seq += 1,
            Err(TrySendError::Full) => break,
            Err(TrySendError::Broken(err)) => return Err(ended(err, gateway)),
        }
    }
    loop {
        match tx.send_timeout(&item(5, seq, Sizes::Mixed), HOLD) {
            Ok(()) if seq + 1 < n => seq += 1,
            Ok(()) => return Err("the gateway kept sending with two subscribers alive".into()),
            Err(SendTimeoutError::Timeout) => break,
            Err(SendTimeoutError::Broken(err)) => return Err(ended(err, gateway)),
        }
    }
    let status = old.kill()?;
    if status.signal() != Some(9) {
        return Err(format!("the old sink was to die of SIGKILL: {status}"));
    }
    for seq in seq..n {
        if let Err(err) = tx.send(&item(5, seq, Sizes::Mixed)) {
            return Err(format!("send {seq}: {err}; gateway: {:?}", gateway.join()));
        }
    }
    drop(tx);
    let summary = gateway.join().map_err(|e| format!("gateway: {e}"))?;
    let report = reap(new)?;
    let (records, first) = (
        report_value(&report, "records")?,
        report_value(&report, "first")?,
    );
    // Nothing lost, nothing twice: the old sink had 0..OLD_SHARE, the new one the rest.
    if summary.resumes != 1 || summary.records != n || first != OLD_SHARE || records != n - first {
        return Err(format!("gateway {summary:?}, new sink {report}"));
    }
    eprintln!("  the new sink took values {first}..{n}");
    Ok(())
}

/// This process subscribes; the publisher restarts. The old source sends `OLD_SHARE` values and
/// holds; the new one declares itself and starts sending; this side delivers nothing of the new
/// stream while the old publisher's token is alive (it neither fails nor mixes the streams); the
/// old source dies; the new stream follows from its start.
fn restarted_source() -> TestResult {
    let key = "it/handover-source";
    let new_n = count(20_000);
    let port = free_port();
    let session = open_session(Some(port), &[], None);
    let ready = Ready::watch(&session, key)?;
    let (tx, mut rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let gateway = sp_zenoh::subscribe(&session, key, tx, &resume()).map_err(|e| e.to_string())?;
    let mut old = spawn_holding(
        "source",
        &format!(
            "connect={port} key={key} stream=1 n={} hold_after={OLD_SHARE}",
            2 * OLD_SHARE
        ),
    );
    let mut checker = Checker::new(Sizes::Mixed, false);
    while checker.n_values < OLD_SHARE {
        let value = rx.recv().map_err(|e| format!("old stream: {e}"))?;
        checker.check(&value)?;
    }
    // The old source has sent everything it will: its gateway is idle.
    let new = spawn_child(
        "source",
        &format!("connect={port} key={key} stream=2 n={new_n} ready=1"),
    );
    ready.wait()?;
    match rx.recv_timeout(HOLD) {
        Err(RecvTimeoutError::Timeout) => {}
        Ok(value) => {
            return Err(format!(
                "value {} of stream {} delivered with two publishers alive",
                value.seq, value.stream
            ));
        }
        Err(RecvTimeoutError::Broken(err)) => {
            return Err(format!(
                "the gateway ended with two publishers alive ({err}): {:?}",
                gateway.join()
            ));
        }
    }
    let status = old.kill()?;
    if status.signal() != Some(9) {
        return Err(format!("the old source was to die of SIGKILL: {status}"));
    }
    checker.drain(&mut rx, "receive")?;
    let summary = gateway.join().map_err(|e| format!("gateway: {e}"))?;
    let report = reap(new)?;
    if summary.resumes != 1
        || checker.starts != [(1, 0), (2, 0)]
        || checker.n_values != OLD_SHARE + new_n
        || report_value(&report, "records")? != new_n
    {
        return Err(format!(
            "gateway {summary:?}, {} values from {:?}, new source {report}",
            checker.n_values, checker.starts
        ));
    }
    eprintln!("  {} values from two sources", checker.n_values);
    Ok(())
}

/// Two subscribers that both stay: with `OnLoss::Resume` the publisher holds for the handover
/// grace, then refuses the second one; nothing reaches it.
fn second_sink_stays() -> TestResult {
    let key = "it/handover-stays";
    let port = free_port();
    let session = open_session(Some(port), &[], None);
    let ready = Ready::watch(&session, key)?;
    let gone = Gone::watch(&session, key)?;
    let mut old = spawn_holding(
        "sink",
        &format!("connect={port} key={key} hold_after=10 expect=end"),
    );
    let grace = Duration::from_secs(1);
    let (mut tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let gateway = sp_zenoh::publish(&session, key, rx, &resume().handover(grace))
        .map_err(|e| e.to_string())?;
    feed_until_held(&mut tx, &mut old, 6, 10)?;
    // The second sink expects nothing: its publisher goes (refused it) before sending it a value.
    let second = spawn_child(
        "sink",
        &format!("connect={port} key={key} ready=1 expect=gone"),
    );
    ready.wait()?;
    let seen = std::time::Instant::now();
    tx.send(&item(6, 10, Sizes::Mixed))
        .map_err(|e| format!("send 10: {e}"))?;
    expect_err(gateway.join(), |err| {
        matches!(err, Error::Protocol(Violation::SecondRemote { .. }))
    })?;
    let took = seen.elapsed();
    // The grace starts when the gateway looks, at most a moment before this side saw the token.
    if took < grace / 2 || took > grace * 4 {
        return Err(format!(
            "refused {took:?} after the second sink, grace {grace:?}"
        ));
    }
    let report = reap(second)?;
    if report_value(&report, "records")? != 0 {
        return Err(format!("the second sink got values: {report}"));
    }
    old.kill()?;
    // Both sinks' tokens gone: zenoh has seen both connections close.
    gone.wait(2)?;
    eprintln!("  refused {took:?} after the second sink appeared");
    Ok(())
}

/// The tokens an ended publisher can leave for a moment: its own, and the `done` of its stream
/// (declared by hand here, so that they stay). A subscriber that has seen both neither takes it
/// as its publisher nor counts it as a second one: it receives the real publisher's stream, with
/// `OnLoss::End`.
///
/// The order is forced: the subscriber gateway declares its token after its token watcher, so
/// once this side sees that token, tokens declared here reach the watcher live, in order: the
/// `done`, then the stale publisher's token, then the real publisher's.
fn stale_publisher() -> TestResult {
    let key = "it/stale";
    let port = free_port();
    let a = open_session(Some(port), &[], None);
    let b = open_session(None, &[port], None);
    let subscribers = a
        .liveliness()
        .declare_subscriber(format!("{key}/_sp/sub/**"))
        .wait()
        .map_err(|e| e.to_string())?;
    let (remote_tx, mut remote_rx) =
        sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let subscriber =
        sp_zenoh::subscribe(&b, key, remote_tx, &options()).map_err(|e| e.to_string())?;
    match subscribers.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(_)) => {}
        Ok(None) => return Err("the subscriber's token did not come within 30 s".into()),
        Err(err) => return Err(err.to_string()),
    }
    let stale = |role: &str| {
        a.liveliness()
            .declare_token(format!("{key}/_sp/{role}/00001234/postcard"))
            .wait()
            .map_err(|e| e.to_string())
    };
    let _done_token = stale("done")?;
    let _pub_token = stale("pub")?;
    let (mut tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let publisher = sp_zenoh::publish(&a, key, rx, &options()).map_err(|e| e.to_string())?;
    for seq in 0..10 {
        tx.send(&item(7, seq, Sizes::Mixed))
            .map_err(|e| format!("send {seq}: {e}"))?;
    }
    let mut checker = Checker::new(Sizes::Mixed, false);
    while checker.n_values < 10 {
        let value = remote_rx.recv().map_err(|e| format!("receive: {e}"))?;
        checker.check(&value)?;
    }
    // The subscriber has seen every token by now: it must still be running (a subscriber that
    // took the stale token for a publisher refuses the real one as a second), before the END.
    match remote_rx.recv_timeout(HOLD) {
        Err(RecvTimeoutError::Timeout) => {}
        Ok(value) => return Err(format!("value {} more than was sent", value.seq)),
        Err(RecvTimeoutError::Broken(err)) => {
            return Err(format!(
                "the subscriber ended before the stream did ({err}): {:?}",
                subscriber.join()
            ));
        }
    }
    drop(tx);
    checker.drain(&mut remote_rx, "receive")?;
    let summary = subscriber.join().map_err(|e| format!("subscriber: {e}"))?;
    publisher.join().map_err(|e| format!("publisher: {e}"))?;
    if summary.records != 10 || checker.starts != [(7, 0)] {
        return Err(format!(
            "subscriber {summary:?}, starts {:?}",
            checker.starts
        ));
    }
    Ok(())
}

/// A publisher written by hand puts, as a publisher that has just found this subscriber while
/// its samples to the old one were still going out would: a sample of records 3 and 4 without
/// FIRST (meant for the old subscriber), then FIRST at 5, then 6, then END at 7. The subscriber
/// passes over the first, delivers 5 and 6 in sequence, and ends cleanly. A sample without FIRST
/// after the stream started is still checked: the hostile-publisher trial's lost and duplicated
/// records are `Sequence` violations.
fn samples_before_first() -> TestResult {
    let key = "it/before-first";
    let (a, b) = pair();
    let (tx, mut rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    // This publisher's token stays until the trial ends: no lingering for it to go.
    let quick_end = options().linger(Duration::ZERO);
    let gateway = sp_zenoh::subscribe(&b, key, tx, &quick_end).map_err(|e| e.to_string())?;
    // Epoch 0xabcd: the one `sample` writes.
    let _token = a
        .liveliness()
        .declare_token(format!("{key}/_sp/pub/0000abcd/postcard"))
        .wait()
        .map_err(|e| e.to_string())?;
    let publisher = a
        .declare_publisher(key)
        .congestion_control(zenoh::qos::CongestionControl::Block)
        .wait()
        .map_err(|e| e.to_string())?;
    wait_matched(&publisher)?;
    let value = |seq| postcard_bytes(&item(0, seq, Sizes::Small));
    let (v3, v4, v5, v6) = (value(3), value(4), value(5), value(6));
    const RECORDS: u8 = 1;
    const END: u8 = 2;
    const FIRST: u8 = 1;
    for bytes in [
        sample(3, RECORDS, 0, &[&v3, &v4]),
        sample(5, RECORDS, FIRST, &[&v5]),
        sample(6, RECORDS, 0, &[&v6]),
        sample(7, END, 0, &[]),
    ] {
        publisher.put(bytes).wait().map_err(|e| e.to_string())?;
    }
    let mut got = Vec::new();
    loop {
        match rx.recv() {
            Ok(value) => got.push(value),
            Err(sp::Error::PeerGone) => break,
            Err(err) => return Err(format!("receive: {err}")),
        }
    }
    let summary = gateway.join().map_err(|e| format!("gateway: {e}"))?;
    if got != [item(0, 5, Sizes::Small), item(0, 6, Sizes::Small)] || summary.records != 2 {
        let seqs: Vec<u64> = got.iter().map(|value| value.seq).collect();
        return Err(format!("delivered {seqs:?}, gateway {summary:?}"));
    }
    Ok(())
}

//! What a gateway refuses: values with descriptors and values over its limit (before anything of
//! them is sent), a remote whose type is encoded otherwise, a second publisher on a key, and
//! samples that break the protocol (a hand-written zenoh publisher: bad headers, cut records, a
//! record lost or duplicated).

use std::os::fd::AsFd;
use std::time::Duration;

use libtest_mimic::Trial;
use sp_zenoh::{Error, Refusal, Violation};
use zenoh::Wait;

use crate::items::{Item, Sizes, item};
use crate::streams::options;
use crate::{
    TestResult, expect_err, free_port, open_session, reap, report_value, spawn_child, trial,
};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial(
            "values_with_descriptors_are_refused_before_they_are_sent",
            descriptors,
        ),
        trial(
            "values_over_the_limit_are_refused_before_they_are_sent",
            too_large,
        ),
        trial(
            "encodings_that_differ_are_refused_before_any_value",
            encodings,
        ),
        trial("a_second_publisher_on_a_key_is_refused", second_publisher),
        trial("samples_that_break_the_protocol_are_refused", hostile),
    ]
}

/// Five values, then one with a descriptor: the remote sink gets exactly the five.
fn descriptors() -> TestResult {
    let port = free_port();
    let session = open_session(Some(port), &[], None);
    let child = spawn_child("sink", &format!("connect={port} key=it/fds expect=failed"));
    let (mut tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let gateway =
        sp_zenoh::publish(&session, "it/fds", rx, &options()).map_err(|e| e.to_string())?;
    for seq in 0..5 {
        tx.send(&item(0, seq, Sizes::Mixed))
            .map_err(|e| e.to_string())?;
    }
    let file = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    tx.send_with_fds(&item(0, 5, Sizes::Mixed), &[file.as_fd()])
        .map_err(|e| e.to_string())?;
    tx.send(&item(0, 6, Sizes::Mixed))
        .map_err(|e| e.to_string())?;
    expect_err(gateway.join(), |err| {
        matches!(err, Error::CannotCross(Refusal::Descriptors { n_fds: 1 }))
    })?;
    let report = reap(child)?;
    if report_value(&report, "records")? != 5 {
        return Err(format!("the sink got {report}"));
    }
    Ok(())
}

/// A second session of this process stands in for the remote (the refusals do not depend on it).
pub(crate) fn pair() -> (zenoh::Session, zenoh::Session) {
    let port = free_port();
    let a = open_session(Some(port), &[], None);
    let b = open_session(None, &[port], None);
    (a, b)
}

fn too_large() -> TestResult {
    let (a, b) = pair();
    let (mut tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let (remote_tx, mut remote_rx) =
        sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let limit = 1000;
    let publisher = sp_zenoh::publish(&a, "it/large", rx, &options().max_value_len(limit))
        .map_err(|e| e.to_string())?;
    let subscriber =
        sp_zenoh::subscribe(&b, "it/large", remote_tx, &options()).map_err(|e| e.to_string())?;
    // Values grow by 37 bytes each: the first over the limit ends the gateway.
    let mut fitting = None;
    for seq in 0..40 {
        let value = item(0, seq, Sizes::Mixed);
        if fitting.is_none() && postcard_len(&value) > limit {
            fitting = Some(seq);
        }
        tx.send(&value).map_err(|e| e.to_string())?;
    }
    let fitting = fitting.ok_or("no value over the limit")?;
    expect_err(publisher.join(), |err| {
        matches!(err, Error::CannotCross(Refusal::TooLarge { max: 1000, .. }))
    })?;
    let mut got = 0;
    while let Ok(value) = remote_rx.recv() {
        if value != item(0, got, Sizes::Mixed) {
            return Err(format!("value {got} differs"));
        }
        got += 1;
    }
    expect_err(subscriber.join(), |err| {
        matches!(err, Error::RemoteFailed { .. })
    })?;
    if got != fitting {
        return Err(format!("{got} values arrived; {fitting} fit"));
    }
    Ok(())
}

fn postcard_len(value: &Item) -> usize {
    use sp::Value;
    value.encoded_len().unwrap_or(usize::MAX)
}

/// Each side refuses a remote token of another encoding before anything is sent; two real
/// gateways of different types refuse each other and deliver nothing.
fn encodings() -> TestResult {
    let differ = |err: &Error| matches!(err, Error::Protocol(Violation::Encoding { .. }));
    let (a, b) = pair();
    // Each part on its own key: the real gateway of one part leaves a liveliness token that the
    // other side sees vanish only after a while, and on a shared key the next part's gateway
    // could take it for its remote (same encoding: no refusal, then `RemoteGone`).
    let plain_token = |key: &str, role: &str| format!("{key}/_sp/{role}/00001234/plain-64");
    // A publisher of postcard values and a subscriber of 64-byte plain data.
    let token = b
        .liveliness()
        .declare_token(plain_token("it/types", "sub"))
        .wait()
        .map_err(|e| e.to_string())?;
    let (_tx, rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let publisher = sp_zenoh::publish(&a, "it/types", rx, &options()).map_err(|e| e.to_string())?;
    expect_err(publisher.join(), differ)?;
    drop(token);
    // A subscriber of postcard values and a publisher of plain data.
    let token = a
        .liveliness()
        .declare_token(plain_token("it/types1", "pub"))
        .wait()
        .map_err(|e| e.to_string())?;
    let (tx, _rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let subscriber =
        sp_zenoh::subscribe(&b, "it/types1", tx, &options()).map_err(|e| e.to_string())?;
    expect_err(subscriber.join(), differ)?;
    drop(token);
    // Two real gateways: whichever sees the other first refuses it; the other may see it go
    // first (and then finds nobody). Nothing is delivered.
    let quick = options().connect_timeout(Duration::from_secs(2));
    let (mut tx, rx) =
        sp::channel::<sp::Plain<[u8; 64]>>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let (remote_tx, mut remote_rx) =
        sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let publisher = sp_zenoh::publish(&a, "it/types2", rx, &quick).map_err(|e| e.to_string())?;
    let subscriber =
        sp_zenoh::subscribe(&b, "it/types2", remote_tx, &quick).map_err(|e| e.to_string())?;
    tx.send(&sp::Plain([1; 64])).map_err(|e| e.to_string())?;
    let outcomes = [publisher.join(), subscriber.join()];
    if !outcomes.iter().any(|res| res.as_ref().is_err_and(differ))
        || !outcomes.iter().all(|res| {
            res.as_ref()
                .is_err_and(|err| differ(err) || matches!(err, Error::NoRemote { .. }))
        })
    {
        return Err(format!("outcomes {outcomes:?}"));
    }
    match remote_rx.recv() {
        Err(sp::Error::PeerGone) => Ok(()),
        other => Err(format!("the remote received {other:?}")),
    }
}

fn second_publisher() -> TestResult {
    let (a, b) = pair();
    let (_tx1, rx1) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let (_tx2, rx2) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    let (remote_tx, _remote_rx) =
        sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
    // Short: a publisher that never saw the subscriber (it refused the pair first) gives up.
    let quick = options().connect_timeout(Duration::from_secs(1));
    let first = sp_zenoh::publish(&a, "it/two-pubs", rx1, &quick).map_err(|e| e.to_string())?;
    let second = sp_zenoh::publish(&a, "it/two-pubs", rx2, &quick).map_err(|e| e.to_string())?;
    let subscriber =
        sp_zenoh::subscribe(&b, "it/two-pubs", remote_tx, &options()).map_err(|e| e.to_string())?;
    expect_err(subscriber.join(), |err| {
        matches!(err, Error::Protocol(Violation::SecondRemote { .. }))
    })?;
    // With the subscriber gone, the publishers end too (or found it first and lost it).
    for publisher in [first, second] {
        expect_err(publisher.join(), |err| {
            matches!(err, Error::RemoteGone { .. } | Error::NoRemote { .. })
        })?;
    }
    Ok(())
}

/// A sample: the 16-byte header, then length-prefixed records (docs/protocol.md).
pub(crate) fn sample(seq: u64, kind: u8, flags: u8, records: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&0xabcd_u32.to_le_bytes());
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(records.len() as u16).to_le_bytes());
    for record in records {
        out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        out.extend_from_slice(record);
    }
    out
}

fn hostile() -> TestResult {
    let value = |seq| -> Vec<u8> { postcard_bytes(&item(0, seq, Sizes::Small)) };
    let (v0, v1, v2) = (value(0), value(1), value(2));
    let mut cut = sample(1, 1, 0, &[&v1]);
    cut.truncate(cut.len() - 1);
    type Case = (&'static str, Vec<u8>, fn(&Violation) -> bool);
    let cases: Vec<Case> = vec![
        ("a lost record", sample(2, 1, 0, &[&v2]), |v| {
            matches!(
                v,
                Violation::Sequence {
                    expected: 1,
                    got: 2
                }
            )
        }),
        ("a duplicated record", sample(0, 1, 0, &[&v0]), |v| {
            matches!(
                v,
                Violation::Sequence {
                    expected: 1,
                    got: 0
                }
            )
        }),
        ("a short sample", vec![0; 9], |v| {
            matches!(v, Violation::ShortSample { len: 9 })
        }),
        ("an unknown kind", sample(1, 7, 0, &[&v1]), |v| {
            matches!(v, Violation::BadHeader { kind: 7, .. })
        }),
        ("a cut record", cut, |v| {
            matches!(v, Violation::RecordOverrun { .. })
        }),
    ];
    for (what, bad, expected) in cases {
        eprintln!("  {what}");
        let (a, b) = pair();
        let (tx, mut rx) = sp::channel::<Item>(&sp::Config::new()).map_err(|e| e.to_string())?;
        let gateway =
            sp_zenoh::subscribe(&b, "it/hostile", tx, &options()).map_err(|e| e.to_string())?;
        let _token = a
            .liveliness()
            .declare_token("it/hostile/_sp/pub/0000abcd/postcard")
            .wait()
            .map_err(|e| e.to_string())?;
        let publisher = a
            .declare_publisher("it/hostile")
            .congestion_control(zenoh::qos::CongestionControl::Block)
            .wait()
            .map_err(|e| e.to_string())?;
        wait_matched(&publisher)?;
        for bytes in [sample(0, 1, 0, &[&v0]), bad] {
            publisher.put(bytes).wait().map_err(|e| e.to_string())?;
        }
        expect_err(
            gateway.join(),
            |err| matches!(err, Error::Protocol(v) if expected(v)),
        )?;
        // The good record before the bad one was delivered, and nothing after it.
        if rx.recv().map_err(|e| e.to_string())? != item(0, 0, Sizes::Small) {
            return Err("the first value differs".into());
        }
        if !matches!(rx.recv(), Err(sp::Error::PeerGone)) {
            return Err(format!("{what}: more than the good value arrived"));
        }
    }
    Ok(())
}

pub(crate) fn postcard_bytes(value: &Item) -> Vec<u8> {
    use sp::Value;
    let mut out = vec![0; value.encoded_len().unwrap_or(0)];
    let _ = value.encode(&mut out);
    out
}

/// Waits (at most 10 s) until zenoh reports a subscriber for `publisher`.
pub(crate) fn wait_matched(publisher: &zenoh::pubsub::Publisher<'_>) -> TestResult {
    let listener = publisher
        .matching_listener()
        .wait()
        .map_err(|e| e.to_string())?;
    if publisher
        .matching_status()
        .wait()
        .map_err(|e| e.to_string())?
        .matching()
    {
        return Ok(());
    }
    loop {
        match listener.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(status)) if status.matching() => return Ok(()),
            Ok(Some(_)) => {}
            Ok(None) => return Err("no subscriber matched within 10 s".into()),
            Err(err) => return Err(err.to_string()),
        }
    }
}

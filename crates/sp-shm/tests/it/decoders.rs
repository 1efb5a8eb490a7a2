//! Property tests of every sp-shm decoder a peer can reach, run through the real socket path:
//! OFFER and READY (through `Duplex::connect` against a peer that sends arbitrary messages with
//! arbitrary descriptors) and BLOB (through `Blob::recv`). Each answers with an error that names
//! the cause, never panics, and closes every descriptor it does not keep (the trial harness
//! compares `/proc/self/fd` before and after).
//!
//! The cases come from proptest's `TestRunner` (this binary has no libtest harness); set
//! `PROPTEST_CASES` to run more.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use libtest_mimic::Trial;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use sp_core::{Channel, SocketKind};
use sp_shm::{BLOB_MAGIC, Blob, Config, Duplex, Error, READY_MAGIC};

use sp_test_support::fds::FdKind;
use sp_test_support::shm::{self, Flaw, Ring};

use crate::hostile::{CAPACITY, MAX_PAYLOAD};
use crate::{TestResult, trial};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial("offer_decoder_arbitrary_messages_and_fds", offer_decoder),
        trial("ready_decoder_arbitrary_messages", ready_decoder),
        trial("blob_decoder_arbitrary_messages_and_fds", blob_decoder),
    ]
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run<S: Strategy>(
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> TestResult {
    let mut runner = TestRunner::new(RunnerConfig {
        cases: cases(default_cases),
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    runner.run(&strategy, test).map_err(|e| e.to_string())
}

fn fd_kind() -> impl Strategy<Value = FdKind> {
    let size = prop_oneof![Just(0u64), Just(4096), Just(8192), 1u64..20_000];
    prop_oneof![
        size.clone().prop_map(FdKind::SealedMemfd),
        size.clone().prop_map(FdKind::FutureWriteMemfd),
        size.prop_map(FdKind::UnsealedMemfd),
        Just(FdKind::Pipe),
        Just(FdKind::SeqPacket),
        Just(FdKind::Stream),
    ]
}

/// A message: a valid one with a few bytes changed, or arbitrary bytes.
fn message(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len();
    prop_oneof![
        proptest::collection::vec((0..n, any::<u8>()), 0..4).prop_map(move |edits| {
            let mut bytes = valid.clone();
            for (at, byte) in edits {
                bytes[at] = byte;
            }
            bytes
        }),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

/// A valid OFFER, from the independent peer's reading of the protocol document.
fn valid_offer(capacity: u64, max_payload: u64) -> Vec<u8> {
    shm::offer_bytes(capacity, max_payload).to_vec()
}

fn config() -> Config {
    Config::new()
        .capacity(4096)
        .handshake_timeout(Duration::from_secs(5))
}

/// A peer sends an arbitrary OFFER (bytes, and 0 to 4 descriptors of any kind) and a READY; the
/// real handshake must refuse it with a reason (or, if it happens to be valid, accept it).
fn offer_decoder() -> TestResult {
    let strategy = (
        message(valid_offer(4096, 1024)),
        proptest::collection::vec(fd_kind(), 0..5),
    );
    run(256, strategy, |(bytes, kinds)| {
        let (peer, ours) = Channel::pair(SocketKind::SeqPacket).expect("pair");
        let fds: Vec<OwnedFd> = kinds.iter().map(|&k| k.make()).collect();
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        if peer.send(&bytes, &borrowed).is_err() {
            return Ok(());
        }
        peer.send(&ready(0), &[]).expect("send READY");
        drop(fds);
        match Duplex::connect(ours, &config()) {
            // A refusal names the check that failed. A control memfd sealed against writing
            // passes every check but cannot be mapped writable: `mmap` says so (EPERM).
            Err(Error::Refused(_) | Error::Os(_)) | Ok(_) => Ok(()),
            Err(err) => Err(TestCaseError::fail(format!("{err}"))),
        }
    })
}

fn ready(status: u32) -> Vec<u8> {
    shm::ready_bytes(status).to_vec()
}

/// A peer sends a valid OFFER, then an arbitrary READY (with 0 to 2 descriptors): the handshake
/// succeeds only for the exact READY with status 0, and otherwise says the peer rejected it.
fn ready_decoder() -> TestResult {
    let strategy = (
        message(ready(0)),
        proptest::collection::vec(fd_kind(), 0..3),
    );
    run(128, strategy, |(bytes, kinds)| {
        let (mut peer, ours) = Channel::pair(SocketKind::SeqPacket).expect("pair");
        let mut ring = Ring::new(CAPACITY, MAX_PAYLOAD, Flaw::None).map_err(TestCaseError::fail)?;
        ring.send_offer(&peer).map_err(TestCaseError::fail)?;
        let fds: Vec<OwnedFd> = kinds.iter().map(|&k| k.make()).collect();
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        if peer.send(&bytes, &borrowed).is_err() {
            return Ok(());
        }
        drop(fds);
        let res = Duplex::connect(ours, &config());
        // Our offer to the peer must have gone out whole.
        let offer = peer.recv_timeout(Duration::from_secs(5)).expect("offer");
        prop_assert_eq!(offer.fds.len(), 3);
        // Bytes 12..16 are reserved and not checked.
        let exact = bytes.len() == 16
            && bytes[..8] == READY_MAGIC
            && bytes[8..12] == [0; 4]
            && kinds.is_empty();
        match res {
            Ok(_) => prop_assert!(exact, "accepted READY {:?} with {} fds", bytes, kinds.len()),
            Err(Error::Rejected(_)) => prop_assert!(!exact),
            Err(err) => prop_assert!(false, "unexpected {err}"),
        }
        Ok(())
    })
}

fn valid_blob_msg(len: u64) -> Vec<u8> {
    let mut out = BLOB_MAGIC.to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out
}

/// Arbitrary BLOB messages with 0 to 3 descriptors of any kind: a blob is accepted only when the
/// message is exact and its one descriptor a sealed memfd of exactly the declared size.
fn blob_decoder() -> TestResult {
    let strategy = (
        message(valid_blob_msg(4096)),
        proptest::collection::vec(fd_kind(), 0..4),
    );
    run(256, strategy, |(bytes, kinds)| {
        let (peer, mut ours) = Channel::pair(SocketKind::SeqPacket).expect("pair");
        let fds: Vec<OwnedFd> = kinds.iter().map(|&k| k.make()).collect();
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        if peer.send(&bytes, &borrowed).is_err() {
            return Ok(());
        }
        drop(fds);
        match Blob::recv_timeout(&mut ours, Duration::from_secs(5)) {
            Ok(blob) => {
                let declared = u64::from_le_bytes(bytes[8..16].try_into().expect("16 bytes"));
                prop_assert!(bytes[..8] == BLOB_MAGIC && bytes.len() == 16);
                prop_assert!(matches!(kinds[..], [FdKind::SealedMemfd(size)] if size == declared));
                prop_assert_eq!(blob.len() as u64, declared);
            }
            Err(sp_shm::RecvTimeoutError::Broken(Error::Refused(_))) => {}
            Err(err) => prop_assert!(false, "unexpected {err}"),
        }
        Ok(())
    })
}

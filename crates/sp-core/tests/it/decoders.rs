//! Property tests of the frame decoder through the real receive path: a hostile peer writes
//! arbitrary records (valid frames with a few bytes changed, or noise) with 0 to 4 descriptors
//! attached, and a `Channel` receives them. Every result is a whole message whose descriptors
//! match its header, or an error naming the cause; nothing panics or waits, and every descriptor
//! that arrived is closed (counted by name after each case).
//!
//! The cases come from proptest's `TestRunner` (this binary has no libtest harness); set
//! `PROPTEST_CASES` to run more.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use libtest_mimic::Trial;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use sp_core::{Channel, Error, HEADER_LEN, MAX_FDS, SocketKind, TryRecvError};

use crate::messages::MSG_KINDS;
use crate::pairs::kind_name;
use crate::{TestResult, count_fds_to, memfd_with, trial};
use sp_test_support::frame::{MAGIC, VERSION, header, send_raw};

const FD_NAME: &str = "sp-it-decoder";

pub fn trials() -> Vec<Trial> {
    MSG_KINDS
        .into_iter()
        .map(|kind| {
            trial(
                format!(
                    "proptest_{}_arbitrary_records_with_fds_give_whole_messages_or_errors_and_close_every_fd",
                    kind_name(kind)
                ),
                move || arbitrary_records(kind),
            )
        })
        .collect()
}

/// One record a hostile peer writes: its bytes and how many descriptors go with it.
#[derive(Debug, Clone)]
struct Record {
    bytes: Vec<u8>,
    n_fds: usize,
}

fn record() -> impl Strategy<Value = Record> {
    let payload = proptest::collection::vec(any::<u8>(), 0..40);
    let valid = (payload.clone(), 0usize..4).prop_map(|(payload, n_fds)| {
        let mut bytes = header(MAGIC, VERSION, n_fds as u8, payload.len() as u32).to_vec();
        bytes.extend_from_slice(&payload);
        Record { bytes, n_fds }
    });
    prop_oneof![
        valid.clone(),
        (
            valid,
            proptest::collection::vec((0usize..HEADER_LEN, any::<u8>()), 1..3)
        )
            .prop_map(|(mut rec, edits)| {
                for (at, byte) in edits {
                    rec.bytes[at] = byte;
                }
                rec
            }),
        (payload, 0usize..4).prop_map(|(bytes, n_fds)| Record { bytes, n_fds }),
    ]
}

/// What a valid frame in `bytes` declares: `(n_fds, n_bytes)`.
fn parse(bytes: &[u8]) -> Option<(usize, usize)> {
    let h = bytes.first_chunk::<HEADER_LEN>()?;
    if u16::from_le_bytes([h[0], h[1]]) != MAGIC
        || h[2] != VERSION
        || h[8..].iter().any(|&b| b != 0)
        || usize::from(h[3]) > MAX_FDS
    {
        return None;
    }
    Some((
        usize::from(h[3]),
        u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize,
    ))
}

fn arbitrary_records(kind: SocketKind) -> TestResult {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let strategy = proptest::collection::vec(record(), 1..24);
    runner
        .run(&strategy, |records| one_session(kind, &records))
        .map_err(|e| format!("{}: {e}", kind_name(kind)).into())
}

fn one_session(kind: SocketKind, records: &[Record]) -> Result<(), TestCaseError> {
    let memfd = memfd_with(FD_NAME, b"d");
    {
        let (raw, rx) = sp_core::pair(kind).expect("pair");
        let mut rx = Channel::new(rx).expect("channel");
        for rec in records {
            if rec.bytes.is_empty() && (kind == SocketKind::Stream || rec.n_fds > 0) {
                // A stream cannot carry an empty write, nor descriptors without a byte.
                continue;
            }
            let fds: Vec<BorrowedFd<'_>> = vec![memfd.as_fd(); rec.n_fds];
            send_raw(&raw, &rec.bytes, &fds).expect("sendmsg");
            if !drain(kind, &mut rx, rec)? {
                break;
            }
        }
    }
    drop(memfd);
    prop_assert_eq!(
        count_fds_to(FD_NAME),
        0,
        "a received descriptor was left open"
    );
    Ok(())
}

/// Receives what the channel can make of the input so far; `false` once the channel is done
/// (a poisoned stream). An empty seqpacket record is `Malformed`, never end of file: the sender
/// is still there.
fn drain(kind: SocketKind, rx: &mut Channel, rec: &Record) -> Result<bool, TestCaseError> {
    for _ in 0..64 {
        match rx.try_recv() {
            Ok(msg) => {
                if kind == SocketKind::SeqPacket {
                    // One record, one message: it must be exactly the valid frame that was sent.
                    let (n_fds, n_bytes) = parse(&rec.bytes).ok_or_else(|| {
                        TestCaseError::fail(format!("accepted a malformed record {rec:?}"))
                    })?;
                    prop_assert_eq!(msg.fds.len(), n_fds);
                    prop_assert_eq!(n_fds, rec.n_fds);
                    prop_assert_eq!(msg.bytes.len(), n_bytes);
                    prop_assert_eq!(&msg.bytes[..], &rec.bytes[HEADER_LEN..]);
                }
                let _: Vec<OwnedFd> = msg.fds;
            }
            Err(TryRecvError::Empty) => return Ok(true),
            Err(TryRecvError::Broken(Error::Poisoned)) => {
                prop_assert!(kind == SocketKind::Stream);
                return Ok(false);
            }
            Err(TryRecvError::Broken(
                Error::Malformed(_)
                | Error::FdCountMismatch { .. }
                | Error::FdsTruncated { .. }
                | Error::TooLarge { .. },
            )) => {}
            Err(err) => prop_assert!(false, "unexpected {err:?}"),
        }
    }
    Err(TestCaseError::fail(
        "the receiver keeps returning results without new input",
    ))
}

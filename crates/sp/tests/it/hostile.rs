//! A hostile peer written from `docs/protocol.md`, "sp typed records": it runs the sp-shm
//! handshake and the HELLO like an honest child, then writes well-formed ring records whose
//! contents break the typed protocol (bad postcard bytes, bad plain-data bit patterns, announced
//! descriptors that never come, blobs that are not sealed memfds, ...). Each must reach the parent
//! as an error value, promptly, with nothing leaked; decode errors leave the stream usable.
//!
//! The trials are generic over the receiving side ([`Receiving`]): the blocking [`Receiver`] here,
//! the async one in `tokio/hostile.rs`, so that both must answer every scenario alike.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use rustix::fs::{MemfdFlags, SealFlags};
use sp::wire::{ATTACH_BLOB, ATTACH_MAGIC, HELLO_LEN, KIND_BLOB, KIND_VALUE, KIND_VALUE_FDS};
use sp::{Config, DecodeError, Error, Receiver, RefuseReason, Value, Violation};
use zerocopy::IntoBytes;

use crate::types::{Pod, Rec};
use crate::{TestResult, child_command, reap, trial};

/// How long the parent waits for announced descriptors in these trials.
const ATTACH_WAIT: Duration = Duration::from_millis(300);

/// What the parent expects from one receive.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Value(u64),
    Decode(DecodeError),
    Protocol(Violation),
    /// `Error::TooLarge` (a blob over this side's limit: refused, and the stream goes on).
    TooLarge,
}

/// A way to receive: the blocking receiver, or a wrapper that receives through another API.
pub(crate) trait Receiving: Copy + Send + 'static {
    type Rx<T: Value>: HostileRx<T>;

    /// Wraps the receiver that `sp::spawn` returned.
    fn wrap<T: Value>(self, rx: Receiver<T>) -> Result<Self::Rx<T>, String>;
}

/// The receives the hostile trials make.
pub(crate) trait HostileRx<T> {
    fn recv_timeout(&mut self, timeout: Duration) -> Result<T, sp::RecvTimeoutError>;
    /// A receive that does not wait for the ring: `Empty` when no value is there now.
    fn try_recv(&mut self) -> Result<T, sp::TryRecvError>;
}

/// The blocking receiver itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocking;

impl Receiving for Blocking {
    type Rx<T: Value> = Receiver<T>;

    fn wrap<T: Value>(self, rx: Receiver<T>) -> Result<Receiver<T>, String> {
        Ok(rx)
    }
}

impl<T: Value> HostileRx<T> for Receiver<T> {
    fn recv_timeout(&mut self, timeout: Duration) -> Result<T, sp::RecvTimeoutError> {
        Receiver::recv_timeout(self, timeout)
    }

    fn try_recv(&mut self) -> Result<T, sp::TryRecvError> {
        Receiver::try_recv(self)
    }
}

pub(crate) fn trials() -> Vec<Trial> {
    trials_for("", Blocking)
}

/// Every scenario against `via`, each trial named `{prefix}hostile_{scenario}`.
pub(crate) fn trials_for(prefix: &str, via: impl Receiving) -> Vec<Trial> {
    use Want::*;
    let serde_cases: Vec<(&str, Vec<Want>)> = vec![
        (
            "bad-postcard",
            vec![
                Value(0),
                Decode(DecodeError::BadVarint),
                Decode(DecodeError::TrailingBytes { n: 1 }),
                Decode(DecodeError::BadUtf8),
                Decode(DecodeError::UnexpectedEnd),
                Value(2),
            ],
        ),
        (
            "missing-fds",
            vec![Value(0), Protocol(Violation::MissingAttachment)],
        ),
        (
            "unsealed-blob",
            vec![Protocol(Violation::BadBlob(RefuseReason::MissingSeals))],
        ),
        (
            "short-blob",
            vec![Protocol(Violation::BadBlob(RefuseReason::SizeMismatch))],
        ),
        (
            "pipe-blob",
            vec![Protocol(Violation::BadBlob(RefuseReason::NotAFile))],
        ),
        ("mismatch", vec![Protocol(Violation::AttachmentMismatch)]),
        ("fd-count-lie", vec![Protocol(Violation::BadAttachment)]),
        ("garbage-attach", vec![Protocol(Violation::BadAttachment)]),
        (
            "bad-seq",
            vec![Protocol(Violation::Sequence {
                expected: 0,
                got: 3,
            })],
        ),
        (
            "unknown-kind",
            vec![Value(0), Protocol(Violation::UnknownKind(0))],
        ),
        ("huge-blob", vec![TooLarge, Value(1)]),
    ];
    let mut trials: Vec<Trial> = serde_cases
        .into_iter()
        .map(|(scenario, wants)| {
            trial(
                &format!("{prefix}hostile_{}", scenario.replace('-', "_")),
                move || against::<Rec>(via, scenario, &wants, |v| v.seq),
            )
        })
        .collect();
    trials.push(trial(&format!("{prefix}hostile_bad_plain"), move || {
        let wants = [
            Value(0),
            Decode(DecodeError::InvalidBitPattern),
            Decode(DecodeError::InvalidBitPattern),
            Decode(DecodeError::Size { len: 63, want: 64 }),
            Value(3),
            Decode(DecodeError::InvalidBitPattern),
            Value(5),
        ];
        against::<Pod>(via, "bad-plain", &wants, |v| v.seq)
    }));
    trials
}

/// Starts the hostile child with `scenario` and checks each receive against `wants`; after a
/// protocol violation, the next receive must report it again (the receiver stays broken).
fn against<T: Value + std::fmt::Debug>(
    via: impl Receiving,
    scenario: &str,
    wants: &[Want],
    seq_of: fn(&T) -> u64,
) -> TestResult {
    let config = Config::new()
        .capacity(64 << 10)
        .attachment_timeout(ATTACH_WAIT);
    let (child, tx, rx) = sp::spawn::<u8, T>(&mut child_command("hostile", scenario), &config)
        .map_err(|e| format!("spawn: {e}"))?;
    let mut rx = via.wrap(rx)?;
    for (i, want) in wants.iter().enumerate() {
        let started = Instant::now();
        let got = rx.recv_timeout(Duration::from_secs(10));
        let took = started.elapsed();
        let ok = match (want, &got) {
            (Want::Value(seq), Ok(value)) => seq_of(value) == *seq,
            (Want::Decode(want), Err(err)) => {
                matches!(broken(err), Some(Error::Decode(got)) if got == want)
            }
            (Want::Protocol(want), Err(err)) => {
                matches!(broken(err), Some(Error::Protocol(got)) if got == want)
            }
            (Want::TooLarge, Err(err)) => matches!(broken(err), Some(Error::TooLarge { .. })),
            _ => false,
        };
        if !ok {
            return Err(format!("receive {i}: want {want:?}, got {got:?}"));
        }
        if *want == Want::Protocol(Violation::MissingAttachment)
            && !(ATTACH_WAIT..ATTACH_WAIT + Duration::from_secs(3)).contains(&took)
        {
            return Err(format!("missing attachment reported after {took:?}"));
        }
        if let Want::Protocol(violation) = want {
            // Broken for good, and at once.
            match rx.try_recv() {
                Err(sp::TryRecvError::Broken(Error::Protocol(again))) if again == *violation => {}
                other => return Err(format!("after {violation:?}: {other:?}")),
            }
        }
    }
    if !wants.iter().any(|w| matches!(w, Want::Protocol(_))) {
        match rx.try_recv() {
            Err(sp::TryRecvError::Empty) => {}
            other => return Err(format!("after the scenario: {other:?}")),
        }
    }
    drop((tx, rx));
    reap(child)
}

/// The broken error of a receive, if it is one.
fn broken(err: &sp::RecvTimeoutError) -> Option<&Error> {
    match err {
        sp::RecvTimeoutError::Broken(err) => Some(err),
        sp::RecvTimeoutError::Timeout => None,
    }
}

// --- the child ----------------------------------------------------------------------------------

/// Runs `scenario`, then waits for the parent to hang up.
pub(crate) fn child(scenario: &str) -> TestResult {
    let ring = sp::sp_shm::Config::new().capacity(64 << 10);
    let duplex = sp::sp_shm::adopt(&ring).map_err(|e| e.to_string())?;
    let (mut producer, mut consumer, mut control) = duplex.into_parts();
    // HELLO: mirror the parent's, so that it finds our types compatible with its own.
    let theirs = control
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    if theirs.bytes.len() != HELLO_LEN {
        return Err("parent's HELLO".into());
    }
    let mut ours = theirs.bytes.clone();
    ours[16..20].copy_from_slice(&theirs.bytes[20..24]);
    ours[20..24].copy_from_slice(&theirs.bytes[16..20]);
    ours[24..32].copy_from_slice(&theirs.bytes[32..40]);
    ours[32..40].copy_from_slice(&theirs.bytes[24..32]);
    control.send(&ours, &[]).map_err(|e| e.to_string())?;

    let mut record = |kind: u32, bytes: &[u8]| -> TestResult {
        let mut grant = producer.reserve(bytes.len()).map_err(|e| e.to_string())?;
        grant.copy_from_slice(bytes);
        grant.set_kind(kind).map_err(|e| e.to_string())?;
        grant.commit(bytes.len()).map_err(|e| e.to_string())
    };
    let attach = |seq: u64, n_fds: u32, blob: Option<u64>, fds: &[BorrowedFd<'_>]| -> TestResult {
        control
            .send(&attach_bytes(seq, n_fds, blob), fds)
            .map_err(|e| e.to_string())
    };
    match scenario {
        "bad-postcard" => {
            record(KIND_VALUE, &encode(&Rec::new(0)))?;
            record(KIND_VALUE, &[0xFF; 12])?;
            let mut trailing = encode(&Rec::new(1));
            trailing.push(0);
            record(KIND_VALUE, &trailing)?;
            // seq 2, a name of two bytes that are not UTF-8, no values.
            record(KIND_VALUE, &[2, 2, 0xC3, 0x28, 0])?;
            // seq 3, an empty name, and a `Vec<u32>` that claims 2^32 - 1 elements.
            record(KIND_VALUE, &[3, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])?;
            record(KIND_VALUE, &encode(&Rec::new(2)))?;
        }
        "bad-plain" => {
            record(KIND_VALUE, Pod::new(0).as_bytes())?;
            let mut bad = Pod::new(1).as_bytes().to_vec();
            bad[8] = 7; // no such `Side`
            record(KIND_VALUE, &bad)?;
            let mut bad = Pod::new(2).as_bytes().to_vec();
            bad[9] = 2; // a bool of 2
            record(KIND_VALUE, &bad)?;
            record(KIND_VALUE, &Pod::new(3).as_bytes()[..63])?;
            record(KIND_VALUE, Pod::new(3).as_bytes())?;
            let mut bad = Pod::new(4).as_bytes().to_vec();
            bad[8] = 0xFF;
            record(KIND_VALUE, &bad)?;
            record(KIND_VALUE, Pod::new(5).as_bytes())?;
        }
        "missing-fds" => {
            record(KIND_VALUE, &encode(&Rec::new(0)))?;
            record(KIND_VALUE_FDS, &with_prefix(0, 1, &encode(&Rec::new(1))))?;
        }
        "unsealed-blob" => {
            let fd = memfd(4096, SealFlags::empty())?;
            attach(0, 0, Some(4096), &[fd.as_fd()])?;
            record(KIND_BLOB, &blob_record(0, 0, 4096))?;
        }
        "short-blob" => {
            let seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL;
            let fd = memfd(4096, seals)?;
            attach(0, 0, Some(8192), &[fd.as_fd()])?;
            record(KIND_BLOB, &blob_record(0, 0, 8192))?;
        }
        "pipe-blob" => {
            let (read_end, _write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| e.to_string())?;
            attach(0, 0, Some(16), &[read_end.as_fd()])?;
            record(KIND_BLOB, &blob_record(0, 0, 16))?;
        }
        "mismatch" => {
            let stdin = std::io::stdin();
            attach(0, 2, None, &[stdin.as_fd(), stdin.as_fd()])?;
            record(KIND_VALUE_FDS, &with_prefix(0, 1, &encode(&Rec::new(0))))?;
        }
        "fd-count-lie" => {
            let stdin = std::io::stdin();
            attach(0, 1, None, &[stdin.as_fd(), stdin.as_fd()])?;
            record(KIND_VALUE_FDS, &with_prefix(0, 1, &encode(&Rec::new(0))))?;
        }
        "garbage-attach" => {
            control
                .send(b"not an attach", &[std::io::stdin().as_fd()])
                .map_err(|e| e.to_string())?;
            record(KIND_VALUE_FDS, &with_prefix(0, 1, &encode(&Rec::new(0))))?;
        }
        "bad-seq" => {
            attach(3, 1, None, &[std::io::stdin().as_fd()])?;
            record(KIND_VALUE_FDS, &with_prefix(3, 1, &encode(&Rec::new(0))))?;
        }
        "huge-blob" => {
            // A blob of 2^40 bytes is announced (its memfd is 4 KiB): over the parent's limit, so
            // refused before any check of the memfd; the next value arrives.
            let seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL;
            let fd = memfd(4096, seals)?;
            attach(0, 0, Some(1 << 40), &[fd.as_fd()])?;
            record(KIND_BLOB, &blob_record(0, 0, 1 << 40))?;
            record(KIND_VALUE, &encode(&Rec::new(1)))?;
        }
        "late-attach" => {
            // The parent's async receives of this value are cancelled while its ATTACH is
            // missing; the parent sends one value when it is done with that, and then the
            // ATTACH comes, and a plain value after it.
            let fd = memfd(4096, SealFlags::empty())?;
            record(KIND_VALUE_FDS, &with_prefix(0, 1, &encode(&Rec::new(0))))?;
            drop(
                consumer
                    .read_timeout(Duration::from_secs(10))
                    .map_err(|e| format!("the parent's go-ahead: {e}"))?,
            );
            attach(0, 1, None, &[fd.as_fd()])?;
            record(KIND_VALUE, &encode(&Rec::new(1)))?;
        }
        "unknown-kind" => {
            record(KIND_VALUE, &encode(&Rec::new(0)))?;
            record(0, &encode(&Rec::new(1)))?;
        }
        other => return Err(format!("unknown scenario {other}")),
    }
    // Stay until the parent has seen everything and hangs up.
    match control.recv_timeout(Duration::from_secs(30)) {
        Err(err) if err.is_disconnected() => Ok(()),
        other => Err(format!("waiting for the parent to leave: {other:?}")),
    }
}

fn encode<T: Value>(value: &T) -> Vec<u8> {
    let mut out = vec![0; value.encoded_len().unwrap_or(0)];
    let n = value.encode(&mut out).unwrap_or(0);
    out.truncate(n);
    out
}

fn with_prefix(seq: u64, n_fds: u32, encoding: &[u8]) -> Vec<u8> {
    let mut out = seq.to_le_bytes().to_vec();
    out.extend_from_slice(&n_fds.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(encoding);
    out
}

fn blob_record(seq: u64, n_fds: u32, len: u64) -> Vec<u8> {
    let mut out = with_prefix(seq, n_fds, &[]);
    out.extend_from_slice(&len.to_le_bytes());
    out
}

fn attach_bytes(seq: u64, n_fds: u32, blob: Option<u64>) -> Vec<u8> {
    let mut out = ATTACH_MAGIC.to_vec();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&n_fds.to_le_bytes());
    out.extend_from_slice(&(if blob.is_some() { ATTACH_BLOB } else { 0 }).to_le_bytes());
    out.extend_from_slice(&blob.unwrap_or(0).to_le_bytes());
    out
}

fn memfd(len: u64, seals: SealFlags) -> Result<OwnedFd, String> {
    let fd = rustix::fs::memfd_create(
        "sp-it-hostile",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| e.to_string())?;
    rustix::fs::ftruncate(&fd, len).map_err(|e| e.to_string())?;
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).map_err(|e| e.to_string())?;
    }
    Ok(fd)
}

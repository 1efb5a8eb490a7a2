//! Trials with a hostile peer: raw frames written with `sendmsg(2)` on a plain `End` by the
//! independent peer (`sp_test_support::frame`: the documented 16-byte header, magic `0x5350` LE,
//! version 2, `n_fds`, `n_bytes` LE, 8 reserved zero bytes), against a `Channel` on the other
//! end. The receiver must answer with an error, close every descriptor that arrived (checked by
//! name while the channel is still alive), never panic, and on a seqpacket pair keep working.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use libtest_mimic::Trial;
use sp_core::{Channel, End, Error, HEADER_LEN, MAX_FDS, Malformed, SocketKind, TryRecvError};
use sp_test_support::frame::{MAGIC, VERSION, frame, header, send_raw};

use crate::messages::MSG_KINDS;
use crate::pairs::kind_name;
use crate::{RecvWithin, TestResult, XorShift, count_fds_to, memfd_with, read_all_at_0, trial};

pub fn trials() -> Vec<Trial> {
    let mut trials = trials_for::<Channel>("");
    for kind in MSG_KINDS {
        let k = kind_name(kind);
        trials.push(trial(
            format!("hostile_{k}_random_garbage_records_never_panic_or_leak"),
            move || garbage(kind),
        ));
    }
    trials
}

/// The trials that end in a receive, against the receiver `R` (the blocking channel here, the
/// async one in `tokio.rs`): `prefix` goes in front of each name.
pub fn trials_for<R: HostileRx + 'static>(prefix: &'static str) -> Vec<Trial> {
    let mut trials = Vec::new();
    for kind in MSG_KINDS {
        let k = kind_name(kind);
        trials.extend([
            trial(
                format!("{prefix}hostile_{k}_one_fd_declared_two_attached_is_fd_count_mismatch_all_closed"),
                move || fd_count_mismatch::<R>(kind, 1, 2),
            ),
            trial(
                format!(
                    "{prefix}hostile_{k}_two_fds_declared_one_attached_is_fd_count_mismatch_all_closed"
                ),
                move || fd_count_mismatch::<R>(kind, 2, 1),
            ),
            trial(
                format!("{prefix}hostile_{k}_one_fd_declared_none_attached_is_fd_count_mismatch"),
                move || fd_count_mismatch::<R>(kind, 1, 0),
            ),
            trial(
                format!("{prefix}hostile_{k}_100_fds_attached_is_fds_truncated_all_closed"),
                move || fds_truncated::<R>(kind),
            ),
            trial(
                format!("{prefix}hostile_{k}_bad_magic_is_malformed_fds_closed"),
                move || malformed::<R>(kind, Bad::Magic),
            ),
            trial(
                format!("{prefix}hostile_{k}_bad_version_is_malformed_fds_closed"),
                move || malformed::<R>(kind, Bad::Version),
            ),
            trial(
                format!("{prefix}hostile_{k}_reserved_bytes_not_zero_is_malformed_fds_closed"),
                move || malformed::<R>(kind, Bad::Reserved),
            ),
            trial(
                format!("{prefix}hostile_{k}_n_fds_over_max_declared_is_malformed"),
                move || malformed::<R>(kind, Bad::TooManyDeclared),
            ),
        ]);
    }
    trials.extend([
        trial(
            format!("{prefix}hostile_seqpacket_record_shorter_than_header_is_malformed"),
            || malformed::<R>(SocketKind::SeqPacket, Bad::Short),
        ),
        trial(
            format!("{prefix}hostile_seqpacket_payload_length_differs_from_header_is_malformed"),
            || malformed::<R>(SocketKind::SeqPacket, Bad::LengthMismatch),
        ),
        trial(
            format!("{prefix}hostile_seqpacket_empty_record_is_malformed_not_peer_gone_and_the_channel_goes_on"),
            seqpacket_empty_record::<R>,
        ),
        trial(
            format!("{prefix}hostile_stream_4_gib_length_declared_is_message_too_large_without_waiting"),
            stream_huge_length::<R>,
        ),
        trial(
            format!("{prefix}hostile_stream_frame_cut_short_by_eof_is_peer_gone_fds_closed"),
            stream_cut_short::<R>,
        ),
    ]);
    trials
}

/// A receiver the hostile trials attack: a channel over `end` whose receives are bounded by
/// `RECV_LIMIT` ([`RecvWithin`]) and which can be asked without waiting.
pub trait HostileRx: RecvWithin + Sized {
    fn over(end: End) -> Self;
    fn try_recv(&mut self) -> Result<sp_core::Message, TryRecvError>;
}

impl HostileRx for Channel {
    fn over(end: End) -> Self {
        Channel::new(end).expect("a seqpacket or stream end")
    }

    fn try_recv(&mut self) -> Result<sp_core::Message, TryRecvError> {
        Channel::try_recv(self)
    }
}

/// An empty seqpacket record reads like end of file in `recvmsg` (zero bytes); the receiver
/// tells them apart by the peer still being connected: `Malformed`, then the next good message;
/// only when the peer really closes, `PeerGone`.
fn seqpacket_empty_record<R: HostileRx>() -> TestResult {
    let (raw, mut rx) = hostile_pair::<R>(SocketKind::SeqPacket)?;
    send_raw(&raw, &[], &[])?;
    send_raw(&raw, &frame(0, b"after"), &[])?;
    let res = rx.recv_within();
    assert!(
        matches!(res, Err(Error::Malformed(Malformed::EmptyRecord))),
        "{res:?}"
    );
    assert_eq!(rx.recv_within()?.bytes, b"after");
    // An empty record with nothing after it, still connected: the same.
    send_raw(&raw, &[], &[])?;
    let res = rx.recv_within();
    assert!(
        matches!(res, Err(Error::Malformed(Malformed::EmptyRecord))),
        "{res:?}"
    );
    drop(raw);
    assert!(matches!(rx.recv_within(), Err(Error::PeerGone)));
    // A peer that sends an empty record, then a good one, then leaves: the good one still
    // arrives before `PeerGone`.
    let (raw, mut rx) = hostile_pair::<R>(SocketKind::SeqPacket)?;
    send_raw(&raw, &[], &[])?;
    send_raw(&raw, &frame(0, b"last words"), &[])?;
    drop(raw);
    let res = rx.recv_within();
    assert!(
        matches!(res, Err(Error::Malformed(Malformed::EmptyRecord))),
        "{res:?}"
    );
    assert_eq!(rx.recv_within()?.bytes, b"last words");
    assert!(matches!(rx.recv_within(), Err(Error::PeerGone)));
    Ok(())
}

/// A raw end for the hostile peer and a channel for the receiver.
fn hostile_pair<R: HostileRx>(kind: SocketKind) -> sp_core::Result<(End, R)> {
    let (raw, rx) = sp_core::pair(kind)?;
    Ok((raw, R::over(rx)))
}

/// After an error: a seqpacket channel delivers the next good message, a stream channel refuses.
fn check_after_error<R: HostileRx>(kind: SocketKind, raw: &End, rx: &mut R) -> TestResult {
    let good = memfd_with("sp-it-good", b"good fd");
    send_raw(raw, &frame(1, b"good"), &[good.as_fd()])?;
    drop(good);
    match kind {
        SocketKind::SeqPacket => {
            let msg = rx.recv_within()?;
            assert_eq!(msg.bytes, b"good");
            assert_eq!(msg.fds.len(), 1);
            assert_eq!(read_all_at_0(&msg.fds[0]), b"good fd");
        }
        _ => {
            let res = rx.recv_within();
            assert!(matches!(res, Err(Error::Poisoned)), "got {res:?}");
            assert!(matches!(
                rx.try_recv(),
                Err(TryRecvError::Broken(Error::Poisoned))
            ));
        }
    }
    Ok(())
}

fn fd_count_mismatch<R: HostileRx>(
    kind: SocketKind,
    declared: usize,
    attached: usize,
) -> TestResult {
    let (raw, mut rx) = hostile_pair::<R>(kind)?;
    let memfds: Vec<OwnedFd> = (0..attached)
        .map(|_| memfd_with("sp-it-mismatch", b"m"))
        .collect();
    let borrowed: Vec<BorrowedFd<'_>> = memfds.iter().map(AsFd::as_fd).collect();
    send_raw(&raw, &frame(declared as u8, b"abcd"), &borrowed)?;
    drop(memfds);
    let res = rx.recv_within();
    match res {
        Err(Error::FdCountMismatch {
            declared: d,
            received: r,
        }) => {
            assert_eq!((d, r), (declared, attached));
        }
        other => panic!("expected FdCountMismatch, got {other:?}"),
    }
    assert_eq!(
        count_fds_to("sp-it-mismatch"),
        0,
        "every arrived fd must be closed"
    );
    check_after_error(kind, &raw, &mut rx)
}

fn fds_truncated<R: HostileRx>(kind: SocketKind) -> TestResult {
    let (raw, mut rx) = hostile_pair::<R>(kind)?;
    let memfd = memfd_with("sp-it-truncated", b"t");
    let fds = vec![memfd.as_fd(); 100];
    // The header claims all of them; the receiver's control buffer holds exactly MAX_FDS.
    send_raw(&raw, &frame(100, b"lots"), &fds)?;
    drop(fds);
    drop(memfd);
    match rx.recv_within() {
        Err(Error::FdsTruncated { declared, received }) => {
            assert_eq!(
                received, MAX_FDS,
                "the control buffer holds exactly MAX_FDS"
            );
            // The count the header declared, even though it is over MAX_FDS.
            assert_eq!(declared, 100);
        }
        other => panic!("expected FdsTruncated, got {other:?}"),
    }
    assert_eq!(
        count_fds_to("sp-it-truncated"),
        0,
        "every arrived fd must be closed"
    );
    check_after_error(kind, &raw, &mut rx)
}

#[derive(Clone, Copy, Debug)]
enum Bad {
    Magic,
    Version,
    Reserved,
    TooManyDeclared,
    Short,
    LengthMismatch,
}

fn malformed<R: HostileRx>(kind: SocketKind, bad: Bad) -> TestResult {
    let (raw, mut rx) = hostile_pair::<R>(kind)?;
    let memfd = memfd_with("sp-it-malformed", b"x");
    let bytes = match bad {
        Bad::Magic => {
            let mut f = header(0x5053, VERSION, 1, 4).to_vec();
            f.extend_from_slice(b"data");
            f
        }
        // Version 1, whose 8-byte header an old peer would send (here padded to the new length,
        // so that only the version is wrong).
        Bad::Version => {
            let mut f = header(MAGIC, 1, 1, 4).to_vec();
            f.extend_from_slice(b"data");
            f
        }
        Bad::Reserved => {
            let mut f = header(MAGIC, VERSION, 1, 4).to_vec();
            f[9] = 0xab;
            f.extend_from_slice(b"data");
            f
        }
        Bad::TooManyDeclared => frame(MAX_FDS as u8 + 1, b"data"),
        Bad::Short => header(MAGIC, VERSION, 1, 0)[..5].to_vec(),
        Bad::LengthMismatch => {
            let mut f = header(MAGIC, VERSION, 1, 10).to_vec();
            f.extend_from_slice(b"only 7!");
            f
        }
    };
    send_raw(&raw, &bytes, &[memfd.as_fd()])?;
    drop(memfd);
    let want = match bad {
        Bad::Magic => Malformed::BadMagic { found: 0x5053 },
        Bad::Version => Malformed::BadVersion { found: 1 },
        Bad::Reserved => Malformed::BadReserved { found: 0xab00 },
        Bad::TooManyDeclared => Malformed::TooManyFdsDeclared {
            declared: MAX_FDS + 1,
        },
        Bad::Short => Malformed::ShortFrame { len: 5 },
        Bad::LengthMismatch => Malformed::LengthMismatch {
            declared: 10,
            received: 7,
        },
    };
    let res = rx.recv_within();
    assert!(
        matches!(res, Err(Error::Malformed(cause)) if cause == want),
        "{bad:?}: got {res:?}, expected Malformed({want:?})"
    );
    assert_eq!(
        count_fds_to("sp-it-malformed"),
        0,
        "{bad:?}: the attached fd must be closed"
    );
    check_after_error(kind, &raw, &mut rx)
}

fn stream_huge_length<R: HostileRx>() -> TestResult {
    let (raw, mut rx) = hostile_pair::<R>(SocketKind::Stream)?;
    send_raw(&raw, &header(MAGIC, VERSION, 0, u32::MAX), &[])?;
    // The receiver must reject the header at once, not wait for (or allocate) 4 GiB.
    let res = rx.recv_within();
    match res {
        Err(Error::TooLarge { len, max }) => {
            assert_eq!(len, u32::MAX as usize);
            assert_eq!(max, sp_core::DEFAULT_MAX_MESSAGE_LEN);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(
        rx.try_recv(),
        Err(TryRecvError::Broken(Error::Poisoned))
    ));
    Ok(())
}

fn stream_cut_short<R: HostileRx>() -> TestResult {
    let (raw, mut rx) = hostile_pair::<R>(SocketKind::Stream)?;
    let memfd = memfd_with("sp-it-cut-short", b"c");
    let mut f = header(MAGIC, VERSION, 1, 100).to_vec();
    f.extend_from_slice(b"ten bytes!");
    send_raw(&raw, &f, &[memfd.as_fd()])?;
    drop(memfd);
    drop(raw);
    let res = rx.recv_within();
    assert!(matches!(res, Err(Error::PeerGone)), "got {res:?}");
    assert_eq!(
        count_fds_to("sp-it-cut-short"),
        0,
        "the half frame's fd must be closed"
    );
    Ok(())
}

/// A few hundred random records, some valid, some nearly valid, some noise, some with descriptors.
/// Whatever the receiver makes of them, it returns (no panic, no hang) and closes every descriptor.
/// The generator is seeded deterministically; set `SP_IT_SEED` to try other seeds.
fn garbage(kind: SocketKind) -> TestResult {
    let seed = std::env::var("SP_IT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0000 + kind_name(kind).len() as u64);
    let mut rng = XorShift::new(seed);
    let memfd = memfd_with("sp-it-garbage", b"g");
    let (mut raw, mut rx) = hostile_pair::<Channel>(kind)?;
    let (mut n_ok, mut n_err, mut n_sessions) = (0usize, 0usize, 1usize);
    for _ in 0..400 {
        let n_payload = rng.below(48) as usize;
        let mut payload = vec![0u8; n_payload];
        rng.fill(&mut payload);
        let n_fds = if rng.below(4) == 0 {
            1 + rng.below(3) as usize
        } else {
            0
        };
        let record = match rng.below(4) {
            // A valid frame.
            0 => frame(n_fds as u8, &payload),
            // A frame header with random counts.
            1 => {
                let mut f =
                    header(MAGIC, VERSION, rng.below(5) as u8, rng.below(64) as u32).to_vec();
                f.extend_from_slice(&payload);
                f
            }
            // A frame with a random header byte flipped.
            2 => {
                let mut f = frame(n_fds as u8, &payload);
                let idx = rng.below(HEADER_LEN as u64) as usize;
                f[idx] ^= 1 << rng.below(8);
                f
            }
            // Noise.
            _ => payload,
        };
        let fds = vec![memfd.as_fd(); n_fds];
        if record.is_empty() && kind == SocketKind::Stream {
            // A stream cannot carry an empty write (and descriptors need a data byte).
            continue;
        }
        send_raw(&raw, &record, &fds)?;
        // Drain whatever the receiver can make of it so far.
        for round in 0.. {
            assert!(
                round < 1000,
                "receiver keeps returning results without new input"
            );
            match rx.try_recv() {
                Ok(msg) => {
                    n_ok += 1;
                    for fd in &msg.fds {
                        crate::assert_cloexec(fd);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Broken(Error::Poisoned)) => {
                    // A stream gives up after a framing error; start a new session.
                    n_err += 1;
                    n_sessions += 1;
                    (raw, rx) = hostile_pair::<Channel>(kind)?;
                    break;
                }
                Err(TryRecvError::Broken(
                    Error::Malformed(_)
                    | Error::FdCountMismatch { .. }
                    | Error::FdsTruncated { .. }
                    | Error::TooLarge { .. },
                )) => n_err += 1,
                Err(other) => panic!("seed {seed}: unexpected error from garbage: {other:?}"),
            }
        }
    }
    drop((raw, rx));
    drop(memfd);
    assert!(
        n_ok > 0 && n_err > 0 && (kind == SocketKind::SeqPacket || n_sessions > 1),
        "seed {seed}: ok {n_ok}, errors {n_err}, sessions {n_sessions}: the generator missed a path"
    );
    assert_eq!(count_fds_to("sp-it-garbage"), 0, "seed {seed}");
    Ok(())
}

//! Trials for `Channel`: bytes plus descriptors over seqpacket and stream pairs, and every limit
//! a sender or receiver enforces.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use libtest_mimic::Trial;
use sp_core::{Channel, Error, MAX_FDS, RecvTimeoutError, SocketKind, TryRecvError};

use crate::pairs::kind_name;
use crate::{
    RECV_LIMIT, RecvWithin, TestResult, assert_cloexec, count_fds_to, memfd_with, read_all_at_0,
    timed, trial,
};

pub const MSG_KINDS: [SocketKind; 2] = [SocketKind::SeqPacket, SocketKind::Stream];

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for kind in MSG_KINDS {
        let k = kind_name(kind);
        trials.extend([
            trial(
                format!("msg_{k}_bytes_and_fds_round_trip_fds_cloexec_and_usable"),
                move || round_trip(kind),
            ),
            trial(
                format!("msg_{k}_empty_payload_is_an_empty_message_not_eof"),
                move || empty_payload(kind),
            ),
            trial(
                format!("msg_{k}_messages_sent_before_the_peer_closed_with_ours_unread_arrive"),
                move || last_words(kind),
            ),
            trial(
                format!("msg_{k}_back_to_back_frames_each_get_exactly_their_own_fds"),
                move || back_to_back(kind),
            ),
            trial(
                format!("msg_{k}_64_fds_pass_65_fds_are_too_many_and_nothing_is_sent"),
                move || too_many_fds(kind),
            ),
            trial(
                format!("msg_{k}_payload_over_channel_max_refused_before_sending"),
                move || over_channel_max(kind),
            ),
            trial(
                format!("msg_{k}_receiver_with_smaller_max_rejects_message_and_closes_its_fds"),
                move || receiver_smaller_max(kind),
            ),
            trial(
                format!("msg_{k}_send_after_peer_dropped_is_peer_gone"),
                move || send_after_peer_dropped(kind),
            ),
            trial(
                format!("msg_{k}_recv_after_peer_dropped_is_peer_gone"),
                move || recv_after_peer_dropped(kind),
            ),
            trial(
                format!("msg_{k}_recv_timeout_is_timed_out_within_bound"),
                move || recv_timeout(kind),
            ),
            trial(
                format!("msg_{k}_try_recv_on_empty_is_would_block"),
                move || try_recv_empty(kind),
            ),
            trial(
                format!("msg_{k}_into_end_hands_back_the_socket_only_when_nothing_is_buffered"),
                move || into_end(kind),
            ),
            trial(
                format!("msg_{k}_recv_into_reuses_the_buffer_replaces_fds_keeps_them_while_waiting_empties_on_error"),
                move || recv_into(kind),
            ),
        ]);
    }
    trials
}

/// A pattern that makes a misplaced or missing byte visible.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn round_trip(kind: SocketKind) -> TestResult {
    let (a, mut b) = Channel::pair(kind)?;
    assert_cloexec(&a);
    assert_cloexec(&b);
    let memfd = memfd_with("sp-it-round-trip", b"contents of the memfd");
    let (pipe_read, pipe_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    a.send(b"two fds", &[memfd.as_fd(), pipe_read.as_fd()])?;
    drop(pipe_read);
    let msg = b.recv_within()?;
    assert_eq!(msg.bytes, b"two fds");
    assert_eq!(msg.fds.len(), 2);
    for fd in &msg.fds {
        assert_cloexec(fd);
    }
    assert_eq!(read_all_at_0(&msg.fds[0]), b"contents of the memfd");
    rustix::io::write(&pipe_write, b"through the pipe")?;
    let mut buf = [0u8; 32];
    let n = rustix::io::read(&msg.fds[1], &mut buf)?;
    assert_eq!(&buf[..n], b"through the pipe");
    // Replies go the other way on the same channel.
    b.send(b"reply", &[])?;
    let mut a = a;
    let reply = a.recv_within()?;
    assert_eq!(reply.bytes, b"reply");
    assert!(reply.fds.is_empty());
    Ok(())
}

/// `recv_into` over one `Message`: each payload replaces the last in the same allocation while it
/// fits, each message's descriptors replace the last ones (which are closed: the trial's fd-leak
/// check and the count below see it), nothing to read yet leaves the message as it was, and an
/// error leaves it empty.
fn recv_into(kind: SocketKind) -> TestResult {
    let (a, mut b) = Channel::pair(kind)?;
    let mut msg = sp_core::Message::default();
    msg.bytes.reserve(4096);
    let buffer = msg.bytes.as_ptr();
    let open = || count_fds_to("sp-it-recv-into");
    let memfds: Vec<OwnedFd> = (0..3)
        .map(|i| memfd_with("sp-it-recv-into", format!("memfd {i}").as_bytes()))
        .collect();
    a.send(&[1; 1000], &[memfds[0].as_fd(), memfds[1].as_fd()])?;
    a.send(b"second", &[memfds[2].as_fd()])?;
    a.send(b"", &[])?;
    drop(memfds);
    assert_eq!(open(), 0);
    b.recv_into_within(&mut msg)?;
    assert_eq!(msg.bytes, [1; 1000]);
    assert_eq!(msg.fds.len(), 2);
    assert_eq!(read_all_at_0(&msg.fds[1]), b"memfd 1");
    assert_eq!(open(), 2);
    b.recv_into_within(&mut msg)?;
    assert_eq!(msg.bytes, b"second");
    assert_eq!(msg.fds.len(), 1);
    assert_eq!(read_all_at_0(&msg.fds[0]), b"memfd 2");
    assert_eq!(open(), 1, "the first message's fds were not closed");
    b.recv_into(&mut msg)?;
    assert!(msg.bytes.is_empty() && msg.fds.is_empty());
    assert_eq!(
        msg.bytes.as_ptr(),
        buffer,
        "the payload buffer was reallocated"
    );
    assert_eq!(open(), 0);
    // Nothing to read yet leaves the message as it was: its payload, and its descriptors open.
    let memfd = memfd_with("sp-it-recv-into", b"kept");
    a.send(b"x", &[memfd.as_fd()])?;
    drop(memfd);
    b.recv_into_within(&mut msg)?;
    assert!(matches!(
        b.try_recv_into(&mut msg),
        Err(TryRecvError::Empty)
    ));
    let res = b.recv_into_timeout(&mut msg, Duration::from_millis(10));
    assert!(matches!(res, Err(RecvTimeoutError::Timeout)), "{res:?}");
    assert_eq!(msg.bytes, b"x");
    assert_eq!(read_all_at_0(&msg.fds[0]), b"kept");
    msg.fds.clear();
    // A refused message with a descriptor: the message stays empty and the descriptor is closed
    // (at once on a seqpacket pair; with the poisoned receiver on a stream pair).
    let (a, b) = Channel::pair(kind)?;
    let mut b = b.with_max_message_len(16);
    let memfd = memfd_with("sp-it-recv-into", b"refused");
    a.send(&[2; 64], &[memfd.as_fd()])?;
    drop(memfd);
    msg.bytes.extend_from_slice(b"stale");
    let res = b.recv_into_within(&mut msg);
    assert!(matches!(res, Err(Error::TooLarge { .. })), "{res:?}");
    assert!(msg.bytes.is_empty() && msg.fds.is_empty());
    drop(b);
    assert_eq!(open(), 0);
    Ok(())
}

fn empty_payload(kind: SocketKind) -> TestResult {
    let (a, mut b) = Channel::pair(kind)?;
    a.send(b"", &[])?;
    let memfd = memfd_with("sp-it-empty", b"x");
    a.send(b"", &[memfd.as_fd()])?;
    a.send(b"after", &[])?;
    let msg = b.recv_within()?;
    assert!(msg.bytes.is_empty() && msg.fds.is_empty());
    let msg = b.recv_within()?;
    assert!(msg.bytes.is_empty());
    assert_eq!(msg.fds.len(), 1);
    assert_eq!(read_all_at_0(&msg.fds[0]), b"x");
    assert_eq!(b.recv_within()?.bytes, b"after");
    Ok(())
}

/// Frames with descriptors sent before the receiver reads anything. On a stream pair the first
/// frame is larger than the receiver's 64 KiB read chunk, so a later `recvmsg` returns the tail of
/// that frame together with the start of the next frame and the next frame's descriptors; the
/// receiver must still give each message exactly the descriptors sent with it.
fn back_to_back(kind: SocketKind) -> TestResult {
    let (a, mut b) = Channel::pair(kind)?;
    let sizes_and_fds: [(usize, usize); 6] =
        [(70_000, 1), (3, 2), (0, 0), (10, 3), (20_000, 1), (1, 0)];
    let mut sent = Vec::new();
    for (i, &(n_bytes, n_fds)) in sizes_and_fds.iter().enumerate() {
        let bytes = pattern(n_bytes, i as u8);
        let memfds: Vec<OwnedFd> = (0..n_fds)
            .map(|j| memfd_with("sp-it-b2b", format!("frame {i} fd {j}").as_bytes()))
            .collect();
        let borrowed: Vec<BorrowedFd<'_>> = memfds.iter().map(AsFd::as_fd).collect();
        a.send(&bytes, &borrowed)?;
        sent.push(bytes);
    }
    assert_eq!(count_fds_to("sp-it-b2b"), 0, "the sender keeps no copies");
    for (i, bytes) in sent.iter().enumerate() {
        let msg = b.recv_within()?;
        assert_eq!(msg.bytes.len(), bytes.len(), "length of frame {i}");
        assert!(msg.bytes == *bytes, "payload of frame {i} differs");
        let contents: Vec<String> = msg
            .fds
            .iter()
            .map(|fd| String::from_utf8_lossy(&read_all_at_0(fd)).into_owned())
            .collect();
        let expected: Vec<String> = (0..sizes_and_fds[i].1)
            .map(|j| format!("frame {i} fd {j}"))
            .collect();
        assert_eq!(contents, expected, "descriptors of frame {i}");
    }
    assert!(matches!(b.try_recv(), Err(TryRecvError::Empty)));
    Ok(())
}

fn too_many_fds(kind: SocketKind) -> TestResult {
    let (a, mut b) = Channel::pair(kind)?;
    let memfd = memfd_with("sp-it-many", b"m");
    let fds = vec![memfd.as_fd(); MAX_FDS + 1];
    match a.send(b"too many", &fds) {
        Err(Error::TooManyFds { n_fds, max }) => {
            assert_eq!((n_fds, max), (MAX_FDS + 1, MAX_FDS));
        }
        other => panic!("expected TooManyFds, got {other:?}"),
    }
    assert!(
        matches!(b.try_recv(), Err(TryRecvError::Empty)),
        "nothing may have been sent"
    );
    // Exactly MAX_FDS is allowed, and each arrives as its own descriptor.
    a.send(b"just enough", &fds[..MAX_FDS])?;
    let msg = b.recv_within()?;
    assert_eq!(msg.fds.len(), MAX_FDS);
    assert_eq!(count_fds_to("sp-it-many"), MAX_FDS + 1);
    drop(msg);
    assert_eq!(count_fds_to("sp-it-many"), 1);
    Ok(())
}

fn over_channel_max(kind: SocketKind) -> TestResult {
    let (a, b) = Channel::pair(kind)?;
    let a = a.with_max_message_len(100);
    let mut b = b.with_max_message_len(100);
    match a.send(&[7u8; 101], &[]) {
        Err(Error::TooLarge { len, max }) => assert_eq!((len, max), (101, 100)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(
        matches!(b.try_recv(), Err(TryRecvError::Empty)),
        "nothing may have been sent"
    );
    a.send(&[7u8; 100], &[])?;
    assert_eq!(b.recv_within()?.bytes, [7u8; 100]);
    Ok(())
}

fn receiver_smaller_max(kind: SocketKind) -> TestResult {
    let (a, b) = Channel::pair(kind)?;
    let mut b = b.with_max_message_len(16);
    let memfd = memfd_with("sp-it-small-max", b"s");
    a.send(&[1u8; 17], &[memfd.as_fd()])?;
    a.send(b"fits", &[memfd.as_fd()])?;
    drop(memfd);
    match b.recv_within() {
        Err(Error::TooLarge { len, max }) => assert_eq!((len, max), (17, 16)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    match kind {
        SocketKind::SeqPacket => {
            // The record and its descriptor are gone; the channel carries on.
            assert_eq!(
                count_fds_to("sp-it-small-max"),
                0,
                "the dropped message's fd was closed"
            );
            let msg = b.recv_within()?;
            assert_eq!(msg.bytes, b"fits");
            assert_eq!(read_all_at_0(&msg.fds[0]), b"s");
        }
        _ => {
            // A stream cannot skip the frame safely: it refuses from now on.
            assert!(matches!(b.recv_within(), Err(Error::Poisoned)));
            assert!(matches!(
                b.try_recv(),
                Err(TryRecvError::Broken(Error::Poisoned))
            ));
            assert_eq!(count_fds_to("sp-it-small-max"), 0, "queued fds were closed");
        }
    }
    Ok(())
}

fn send_after_peer_dropped(kind: SocketKind) -> TestResult {
    // Rust's runtime ignores SIGPIPE in this process; `sigpipe_*` trials in children.rs repeat
    // this with SIGPIPE at its default action, where a missing MSG_NOSIGNAL would kill the child.
    let (a, b) = Channel::pair(kind)?;
    drop(b);
    let memfd = memfd_with("sp-it-peer-gone", b"p");
    assert!(matches!(
        a.send(b"hello?", &[memfd.as_fd()]),
        Err(Error::PeerGone)
    ));
    assert!(matches!(a.send(b"", &[]), Err(Error::PeerGone)));
    Ok(())
}

fn recv_after_peer_dropped(kind: SocketKind) -> TestResult {
    let (a, mut b) = Channel::pair(kind)?;
    a.send(b"last", &[])?;
    drop(a);
    assert_eq!(
        b.recv_within()?.bytes,
        b"last",
        "queued messages come first"
    );
    assert!(matches!(b.recv_within(), Err(Error::PeerGone)));
    let res = b.try_recv();
    assert!(
        matches!(res, Err(ref e) if e.is_disconnected()),
        "end of file stays end of file: {res:?}"
    );
    assert!(matches!(b.recv(), Err(Error::PeerGone)));
    Ok(())
}

fn recv_timeout(kind: SocketKind) -> TestResult {
    let (_a, mut b) = Channel::pair(kind)?;
    let timeout = Duration::from_millis(100);
    let (res, elapsed) = timed(|| b.recv_timeout(timeout));
    assert!(matches!(res, Err(RecvTimeoutError::Timeout)), "got {res:?}");
    assert!(
        elapsed >= timeout,
        "returned after {elapsed:?}, before the timeout"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "returned after {elapsed:?}"
    );
    Ok(())
}

fn try_recv_empty(kind: SocketKind) -> TestResult {
    let (a, mut b) = Channel::pair(kind)?;
    let (res, elapsed) = timed(|| b.try_recv());
    assert!(matches!(res, Err(TryRecvError::Empty)), "got {res:?}");
    assert!(elapsed < Duration::from_secs(1));
    a.send(b"now", &[])?;
    // try_recv does not wait, so wait for readiness first.
    assert!(
        wait_readable(&b, RECV_LIMIT),
        "the message never became readable"
    );
    assert_eq!(b.try_recv()?.bytes, b"now");
    assert!(matches!(b.try_recv(), Err(TryRecvError::Empty)));
    Ok(())
}

/// `poll(POLLIN)` on `fd` for at most `timeout`.
pub fn wait_readable(fd: impl AsFd, timeout: Duration) -> bool {
    let timeout = rustix::event::Timespec::try_from(timeout).expect("timeout fits a timespec");
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    rustix::event::poll(&mut fds, Some(&timeout)).expect("poll") == 1
}

fn into_end(kind: SocketKind) -> TestResult {
    let (a, mut b) = Channel::pair(kind)?;
    if kind == SocketKind::Stream {
        // Two small frames arrive in one read; after the first is handed out the second is
        // buffered, and giving the socket back would lose it.
        a.send(b"first", &[])?;
        a.send(b"second", &[])?;
        assert_eq!(b.recv_within()?.bytes, b"first");
        let mut b_back = match b.into_end() {
            Err(channel) => *channel,
            Ok(_) => panic!("into_end must refuse while a frame is buffered"),
        };
        assert_eq!(b_back.recv_within()?.bytes, b"second");
        b = b_back;
    }
    let mut a_end = a
        .into_end()
        .map_err(|_| "an idle channel gives its end back")?;
    assert_cloexec(&a_end);
    let b_end = b
        .into_end()
        .map_err(|_| "an idle channel gives its end back")?;
    b_end.set_read_timeout(Some(RECV_LIMIT))?;
    a_end.write_all(b"raw")?;
    let mut buf = [0u8; 3];
    std::io::Read::read_exact(&mut &b_end, &mut buf)?;
    assert_eq!(&buf, b"raw");
    Ok(())
}

/// The peer sends two messages and closes while one of ours sits unread in its queue. The kernel
/// then reports `ECONNRESET` to us (on seqpacket ahead of the queued messages); both messages
/// must still arrive, then `PeerGone`. The same holds for plain reads on an `End`.
fn last_words(kind: SocketKind) -> TestResult {
    let (mut a, b) = Channel::pair(kind)?;
    a.send(b"never read", &[])?;
    b.send(b"last", &[])?;
    b.send(b"words", &[])?;
    drop(b);
    assert_eq!(a.recv_within()?.bytes, b"last");
    assert_eq!(a.recv_within()?.bytes, b"words");
    assert!(matches!(a.recv_within(), Err(Error::PeerGone)));

    let (mut x, y) = sp_core::pair(kind)?;
    x.write_all(b"never read")?;
    (&y).write_all(b"bye")?;
    drop(y);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut x, &mut got)?;
    assert_eq!(got, b"bye");
    Ok(())
}

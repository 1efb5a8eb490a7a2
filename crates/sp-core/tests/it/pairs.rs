//! Trials for `pair`, `PairOptions` and `End`: flags from birth, I/O, half-close, timeouts,
//! readiness, buffer sizes, conversions and peer credentials.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use libtest_mimic::Trial;
use sp_core::{Channel, End, Error, PairOptions, SocketKind, pair};

use crate::{TestResult, assert_cloexec, is_nonblocking, timed, trial};

pub const ALL_KINDS: [SocketKind; 3] = [
    SocketKind::Stream,
    SocketKind::SeqPacket,
    SocketKind::Datagram,
];

pub fn kind_name(kind: SocketKind) -> &'static str {
    match kind {
        SocketKind::Stream => "stream",
        SocketKind::SeqPacket => "seqpacket",
        SocketKind::Datagram => "datagram",
    }
}

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for kind in ALL_KINDS {
        let k = kind_name(kind);
        trials.extend([
            trial(
                format!("pair_{k}_both_fds_cloexec_and_nonblocking_option_sets_o_nonblock"),
                move || flags_from_birth(kind),
            ),
            trial(
                format!("pair_{k}_line_written_on_one_end_is_read_line_on_the_other"),
                move || line_round_trip(kind),
            ),
            trial(
                format!("pair_{k}_read_timeout_fails_with_would_block_within_bound"),
                move || read_timeout(kind),
            ),
            trial(
                format!("pair_{k}_wait_readable_false_on_timeout_true_after_write"),
                move || wait_readable(kind),
            ),
            trial(
                format!("pair_{k}_send_and_recv_buffer_sizes_set_and_get"),
                move || buffer_sizes(kind),
            ),
            trial(
                format!("pair_{k}_ownedfd_round_trip_raw_fd_and_cloexec_try_clone"),
                move || conversions(kind),
            ),
            trial(
                format!("pair_{k}_peer_credentials_report_this_process_on_both_ends"),
                move || peer_credentials(kind),
            ),
        ]);
    }
    for kind in [SocketKind::Stream, SocketKind::SeqPacket] {
        let k = kind_name(kind);
        trials.push(trial(
            format!("pair_{k}_shutdown_write_gives_peer_eof_and_peer_can_still_write_back"),
            move || half_close(kind),
        ));
        trials.push(trial(
            format!("pair_{k}_poll_readable_tells_data_from_hang_up"),
            move || poll_readable(kind),
        ));
    }
    trials.extend([
        trial(
            "pair_datagram_shutdown_write_gives_peer_no_eof_so_channel_refuses_datagram",
            datagram_no_eof,
        ),
        trial(
            "end_zero_read_timeout_is_rejected_not_taken_as_no_timeout",
            zero_timeout_rejected,
        ),
        trial(
            "channel_new_on_non_socket_is_not_a_socket",
            channel_on_non_socket,
        ),
    ]);
    trials
}

fn flags_from_birth(kind: SocketKind) -> TestResult {
    for nonblocking in [false, true] {
        let (a, b) = PairOptions::new(kind).nonblocking(nonblocking).create()?;
        for end in [&a, &b] {
            assert_cloexec(end);
            assert_eq!(
                is_nonblocking(end),
                nonblocking,
                "O_NONBLOCK on fd {} of a {kind:?} pair created with nonblocking({nonblocking})",
                end.as_raw_fd()
            );
            assert_eq!(end.kind()?, kind);
        }
        if nonblocking {
            // The flag is real: a read on an empty socket returns at once.
            let err = (&a).read(&mut [0u8; 8]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
            // And set_nonblocking switches it back off.
            a.set_nonblocking(false)?;
            assert!(!is_nonblocking(&a));
        }
    }
    let (a, b) = pair(kind)?;
    assert_cloexec(&a);
    assert_cloexec(&b);
    assert!(
        !is_nonblocking(&a) && !is_nonblocking(&b),
        "pair() must be blocking"
    );
    Ok(())
}

fn line_round_trip(kind: SocketKind) -> TestResult {
    let (mut a, b) = pair(kind)?;
    b.set_read_timeout(Some(crate::RECV_LIMIT))?;
    writeln!(a, "Hello from sock1!")?;
    let mut line = String::new();
    let mut reader = BufReader::new(b);
    reader.read_line(&mut line)?;
    assert_eq!(line, "Hello from sock1!\n");
    // The other direction, through `&End`.
    let b = reader.into_inner();
    a.set_read_timeout(Some(crate::RECV_LIMIT))?;
    (&b).write_all(b"and back\n")?;
    let mut line = String::new();
    BufReader::new(&a).read_line(&mut line)?;
    assert_eq!(line, "and back\n");
    Ok(())
}

fn half_close(kind: SocketKind) -> TestResult {
    let (mut a, mut b) = pair(kind)?;
    a.set_read_timeout(Some(crate::RECV_LIMIT))?;
    b.set_read_timeout(Some(crate::RECV_LIMIT))?;
    a.write_all(b"last words\n")?;
    a.shutdown(Shutdown::Write)?;
    let mut line = String::new();
    let mut reader = BufReader::new(&b);
    reader.read_line(&mut line)?;
    assert_eq!(line, "last words\n");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest)?; // returns only at end of file
    assert!(rest.is_empty());
    assert_eq!(b.read(&mut [0u8; 4])?, 0, "EOF must stay EOF");
    // The half-closed end can still read what the peer writes back.
    b.write_all(b"reply\n")?;
    let mut line = String::new();
    BufReader::new(&a).read_line(&mut line)?;
    assert_eq!(line, "reply\n");
    // And a write on the shut-down half fails with EPIPE, not SIGPIPE.
    let err = a.write(b"x").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    Ok(())
}

/// `unix_shutdown` tells the peer only for stream and seqpacket sockets: a datagram reader never
/// learns that its peer is gone, which is why `Channel` refuses datagram pairs.
fn poll_readable(kind: SocketKind) -> TestResult {
    let (mut a, b) = pair(kind)?;
    let soon = || Some(std::time::Instant::now() + Duration::from_millis(50));
    assert_eq!(b.poll_readable(soon())?, None, "nothing written yet");
    a.write_all(b"x")?;
    let ready = b.poll_readable(soon())?.expect("a byte is waiting");
    assert!(ready.is_readable() && !ready.is_hung_up());
    drop(a);
    let ready = b.poll_readable(soon())?.expect("the peer hung up");
    assert!(ready.is_hung_up(), "{ready:?}");
    assert!(
        ready.is_readable(),
        "the byte sent before the hang-up is still there"
    );
    Ok(())
}

fn datagram_no_eof() -> TestResult {
    let (a, b) = pair(SocketKind::Datagram)?;
    a.shutdown(Shutdown::Write)?;
    assert!(!b.wait_readable(Some(Duration::from_millis(50)))?);
    assert!(matches!(Channel::new(b), Err(Error::WrongSocketKind)));
    assert!(matches!(
        Channel::pair(SocketKind::Datagram),
        Err(Error::WrongSocketKind)
    ));
    Ok(())
}

fn read_timeout(kind: SocketKind) -> TestResult {
    let (_a, mut b) = pair(kind)?;
    let timeout = Duration::from_millis(50);
    b.set_read_timeout(Some(timeout))?;
    let got = b.read_timeout()?.expect("a read timeout was set");
    // The kernel keeps the timeout in jiffies, so it may come back rounded up a little.
    assert!(
        got >= timeout && got < timeout + Duration::from_millis(20),
        "read_timeout() = {got:?}"
    );
    let (res, elapsed) = timed(|| b.read(&mut [0u8; 16]));
    let err = res.expect_err("nothing was written, the read must time out");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "unexpected error {err:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(40),
        "timed out too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "timed out too late: {elapsed:?}"
    );
    b.set_read_timeout(None)?;
    assert_eq!(b.read_timeout()?, None);
    b.set_write_timeout(Some(timeout))?;
    assert!(b.write_timeout()?.is_some());
    Ok(())
}

fn zero_timeout_rejected() -> TestResult {
    let (a, _b) = pair(SocketKind::Stream)?;
    let err = a.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let err = a.set_write_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    Ok(())
}

fn wait_readable(kind: SocketKind) -> TestResult {
    let (mut a, b) = pair(kind)?;
    let (ready, elapsed) = timed(|| b.wait_readable(Some(Duration::from_millis(30))));
    assert!(!ready?, "nothing was written yet");
    assert!(
        elapsed >= Duration::from_millis(25),
        "returned too early: {elapsed:?}"
    );
    assert!(
        a.wait_writable(Some(crate::RECV_LIMIT))?,
        "an empty socket is writable"
    );
    a.write_all(b"x")?;
    assert!(b.wait_readable(Some(crate::RECV_LIMIT))?);
    assert!(
        b.wait_readable(None)?,
        "data is pending, an unbounded wait returns at once"
    );
    Ok(())
}

fn buffer_sizes(kind: SocketKind) -> TestResult {
    let (a, _b) = pair(kind)?;
    let wanted = 64 * 1024;
    a.set_send_buffer_size(wanted)?;
    a.set_recv_buffer_size(wanted)?;
    // Linux doubles the value for bookkeeping overhead (socket(7)); it may also cap it at
    // net.core.[rw]mem_max, which is far above 64 KiB on any default system.
    let snd = a.send_buffer_size()?;
    let rcv = a.recv_buffer_size()?;
    assert!(snd >= wanted, "SO_SNDBUF {snd} < {wanted}");
    assert!(rcv >= wanted, "SO_RCVBUF {rcv} < {wanted}");
    assert!(
        snd <= 2 * wanted && rcv <= 2 * wanted,
        "snd {snd}, rcv {rcv}"
    );
    a.set_send_buffer_size(2 * wanted)?;
    assert!(
        a.send_buffer_size()? > snd,
        "a larger SO_SNDBUF must read back larger"
    );
    Ok(())
}

fn conversions(kind: SocketKind) -> TestResult {
    let (a, b) = pair(kind)?;
    let raw = a.as_raw_fd();
    assert_eq!(a.as_fd().as_raw_fd(), raw);
    let owned = OwnedFd::from(a);
    assert_eq!(
        owned.as_raw_fd(),
        raw,
        "End -> OwnedFd keeps the descriptor"
    );
    let mut a = End::from(owned);
    assert_eq!(a.as_raw_fd(), raw, "OwnedFd -> End keeps the descriptor");
    assert_eq!(a.kind()?, kind);

    let clone = b.try_clone()?;
    assert_ne!(clone.as_raw_fd(), b.as_raw_fd());
    assert_cloexec(&clone);
    // The clone is the same socket: what it receives is gone for the original.
    b.set_read_timeout(Some(crate::RECV_LIMIT))?;
    a.write_all(b"one")?;
    let mut buf = [0u8; 3];
    (&clone).read_exact(&mut buf)?;
    assert_eq!(&buf, b"one");
    assert!(!b.wait_readable(Some(Duration::from_millis(1)))?);
    drop(clone);
    // Dropping the clone does not close the original.
    a.write_all(b"two")?;
    (&b).read_exact(&mut buf)?;
    assert_eq!(&buf, b"two");
    Ok(())
}

fn peer_credentials(kind: SocketKind) -> TestResult {
    let (a, b) = pair(kind)?;
    let me = rustix::process::getpid().as_raw_nonzero().get() as u32;
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    for end in [&a, &b] {
        let cred = end.peer_credentials()?;
        assert_eq!(cred.pid, me);
        assert_eq!(cred.uid, uid);
        assert_eq!(cred.gid, gid);
    }
    Ok(())
}

fn channel_on_non_socket() -> TestResult {
    let memfd = crate::memfd_with("sp-it-not-a-socket", b"");
    assert!(matches!(
        Channel::new(End::from(memfd)),
        Err(Error::NotASocket)
    ));
    Ok(())
}

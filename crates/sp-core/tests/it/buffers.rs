//! Trials for what the socket buffer does to messages: a seqpacket record over the send buffer,
//! multi-MiB stream frames with a concurrent reader, one sender shared by threads, non-blocking
//! sends into a full buffer, and a stream frame that arrives in parts.

use std::os::fd::AsFd;
use std::time::Duration;

use libtest_mimic::Trial;
use sp_core::{Channel, Error, RecvTimeoutError, SocketKind, TryRecvError, TrySendError};

use crate::messages::pattern;
use crate::{RecvWithin, TestResult, count_fds_to, memfd_with, read_all_at_0, timed, trial};

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "msg_seqpacket_record_over_send_buffer_is_message_too_large_with_limit_below_sndbuf",
            seqpacket_over_sndbuf,
        ),
        trial(
            "msg_stream_multi_mib_message_with_concurrent_reader_arrives_intact",
            stream_multi_mib,
        ),
        trial(
            "msg_split_sender_shared_by_threads_keeps_stream_frames_whole",
            stream_senders_do_not_interleave,
        ),
        trial(
            "msg_stream_nonblocking_sender_finishes_a_frame_larger_than_the_socket_buffer",
            stream_nonblocking_big_frame,
        ),
        trial(
            "msg_seqpacket_nonblocking_full_buffer_is_would_block_and_sends_nothing_partial",
            seqpacket_nonblocking_full,
        ),
        trial(
            "msg_stream_partial_frame_survives_timeout_and_try_recv_then_completes",
            stream_partial_frame,
        ),
    ]
}

fn seqpacket_over_sndbuf() -> TestResult {
    let (a, b) = Channel::pair(SocketKind::SeqPacket)?;
    let a = a.with_max_message_len(8 << 20);
    let mut b = b.with_max_message_len(8 << 20);
    let sndbuf = rustix::net::sockopt::socket_send_buffer_size(&a)?;
    let big = vec![5u8; sndbuf * 2];
    let (res, elapsed) = timed(|| a.send(&big, &[]));
    let limit = match res {
        Err(Error::TooLarge { len, max }) => {
            assert_eq!(len, big.len());
            max
        }
        other => panic!("expected TooLarge, got {other:?}"),
    };
    assert!(
        limit < sndbuf,
        "limit {limit} must be below SO_SNDBUF {sndbuf}"
    );
    assert!(elapsed < Duration::from_secs(2), "send took {elapsed:?}");
    assert!(
        matches!(b.try_recv(), Err(TryRecvError::Empty)),
        "nothing may have been sent"
    );
    // The reported limit is the real one: one byte more is refused, exactly that size goes through.
    assert!(matches!(
        a.send(&big[..limit + 1], &[]),
        Err(Error::TooLarge { .. })
    ));
    a.send(&big[..limit], &[])?;
    assert_eq!(b.recv_within()?.bytes.len(), limit);
    Ok(())
}

fn stream_multi_mib() -> TestResult {
    let (a, b) = Channel::pair(SocketKind::Stream)?;
    let a = a.with_max_message_len(8 << 20);
    let mut b = b.with_max_message_len(8 << 20);
    let sndbuf = rustix::net::sockopt::socket_send_buffer_size(&a)?;
    let big = pattern(6 << 20, 3);
    assert!(big.len() > 4 * sndbuf);
    let memfd = memfd_with("sp-it-big", b"big");
    std::thread::scope(|s| -> TestResult {
        let reader = s.spawn(move || b.recv_timeout(Duration::from_secs(20)));
        a.send(&big, &[memfd.as_fd()])?;
        let msg = reader.join().expect("reader thread")?;
        assert_eq!(msg.bytes.len(), big.len());
        assert!(msg.bytes == big, "payload differs");
        assert_eq!(msg.fds.len(), 1);
        assert_eq!(read_all_at_0(&msg.fds[0]), b"big");
        Ok(())
    })
}

fn stream_senders_do_not_interleave() -> TestResult {
    let (a, b) = Channel::pair(SocketKind::Stream)?;
    let (tx, _rx) = a.split();
    let mut b = b;
    let n_threads = 4;
    let n_msgs = 20;
    std::thread::scope(|s| -> TestResult {
        for t in 0..n_threads {
            let tx = &tx;
            s.spawn(move || {
                for i in 0..n_msgs {
                    let payload = pattern(100_000 + t * 1000 + i, t as u8);
                    tx.send(&payload, &[]).expect("send");
                }
            });
        }
        for _ in 0..n_threads * n_msgs {
            let msg = b.recv_within()?;
            let t = (msg.bytes.len() - 100_000) / 1000;
            assert!(
                msg.bytes == pattern(msg.bytes.len(), t as u8),
                "interleaved frame"
            );
        }
        Ok(())
    })
}

fn stream_nonblocking_big_frame() -> TestResult {
    let (a, b) = sp_core::PairOptions::new(SocketKind::Stream)
        .nonblocking(true)
        .create()?;
    let a = Channel::new(a)?.with_max_message_len(4 << 20);
    let mut b = Channel::new(b)?.with_max_message_len(4 << 20);
    let big = pattern(3 << 20, 9);
    std::thread::scope(|s| -> TestResult {
        // The receiver is non-blocking too: recv_timeout polls before each read.
        let reader = s.spawn(move || b.recv_timeout(Duration::from_secs(20)));
        // The first sendmsg takes what fits; send then waits for room and finishes the frame
        // instead of returning WouldBlock halfway.
        a.send(&big, &[])?;
        let msg = reader.join().expect("reader thread")?;
        assert!(msg.bytes == big, "payload differs");
        Ok(())
    })
}

fn seqpacket_nonblocking_full() -> TestResult {
    let (a, b) = sp_core::PairOptions::new(SocketKind::SeqPacket)
        .nonblocking(true)
        .create()?;
    let (a, mut b) = (Channel::new(a)?, Channel::new(b)?);
    let mut n_sent = 0usize;
    loop {
        assert!(n_sent < 100_000, "the send buffer never filled");
        match a.try_send(&pattern(1000, n_sent as u8), &[]) {
            Ok(()) => n_sent += 1,
            Err(TrySendError::Full) => break,
            Err(err) => return Err(err.into()),
        }
    }
    assert!(n_sent > 0);
    for i in 0..n_sent {
        let msg = b.recv_within()?;
        assert!(msg.bytes == pattern(1000, i as u8), "message {i} differs");
    }
    assert!(
        matches!(b.try_recv(), Err(TryRecvError::Empty)),
        "the refused send left nothing behind"
    );
    a.send(b"room again", &[])?;
    assert_eq!(b.recv_within()?.bytes, b"room again");
    Ok(())
}

fn stream_partial_frame() -> TestResult {
    use sp_test_support::frame::{MAGIC, VERSION, header, send_raw};
    let (raw, b) = sp_core::pair(SocketKind::Stream)?;
    let mut b = Channel::new(b)?;
    let memfd = memfd_with("sp-it-partial", b"partial");
    let mut first = header(MAGIC, VERSION, 1, 10).to_vec();
    first.extend_from_slice(b"0123");
    send_raw(&raw, &first, &[memfd.as_fd()])?;
    drop(memfd);
    assert!(matches!(b.try_recv(), Err(TryRecvError::Empty)));
    let (res, elapsed) = timed(|| b.recv_timeout(Duration::from_millis(50)));
    assert!(matches!(res, Err(RecvTimeoutError::Timeout)), "got {res:?}");
    assert!(elapsed < Duration::from_secs(2));
    // The descriptor that came with the first half is held for the frame, not lost or closed.
    assert_eq!(count_fds_to("sp-it-partial"), 1);
    send_raw(&raw, b"456789", &[])?;
    let msg = b.recv_within()?;
    assert_eq!(msg.bytes, b"0123456789");
    assert_eq!(msg.fds.len(), 1);
    assert_eq!(read_all_at_0(&msg.fds[0]), b"partial");
    Ok(())
}

//! Arbitrary records with 0 to 3 descriptors, on a seqpacket or a stream pair, received by an
//! sp-core `Channel`: whole messages or named errors, never a panic.

#![no_main]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use libfuzzer_sys::fuzz_target;
use sp_core::{Channel, Error, SocketKind, TryRecvError};
use sp_fuzz::Input;

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input(bytes);
    let kind = if input.u8() & 1 == 0 {
        SocketKind::SeqPacket
    } else {
        SocketKind::Stream
    };
    let (raw, rx) = sp_core::pair(kind).expect("pair");
    let mut rx = Channel::new(rx).expect("channel");
    while !input.is_empty() {
        let len = usize::from(input.u8() % 64);
        let n_fds = usize::from(input.u8() % 4);
        let record = input.bytes(len);
        if record.is_empty() && (kind == SocketKind::Stream || n_fds > 0) {
            continue;
        }
        let fds: Vec<OwnedFd> = (0..n_fds).map(|i| sp_fuzz::any_fd(i as u8)).collect();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        if sp_test_support::frame::send_raw(&raw, &record, &borrowed).is_err() {
            return;
        }
        loop {
            match rx.try_recv() {
                Ok(msg) => assert!(msg.fds.len() <= sp_core::MAX_FDS),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Broken(Error::Poisoned | Error::PeerGone)) => return,
                Err(TryRecvError::Broken(
                    Error::Malformed(_)
                    | Error::FdCountMismatch { .. }
                    | Error::FdsTruncated { .. }
                    | Error::TooLarge { .. },
                )) => {}
                Err(err) => panic!("unexpected {err:?}"),
            }
        }
    }
});

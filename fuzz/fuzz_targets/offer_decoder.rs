//! An arbitrary OFFER (bytes and descriptor kinds) and READY, answered by the real handshake: a
//! refusal with a reason, never a panic.

#![no_main]

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sp_core::{Channel, SocketKind};
use sp_fuzz::Input;
use sp_shm::{Config, Duplex, Error};

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input(bytes);
    let n_fds = usize::from(input.u8() % 5);
    let fds: Vec<OwnedFd> = (0..n_fds).map(|_| sp_fuzz::any_fd(input.u8())).collect();
    let ready_len = usize::from(input.u8() % 24);
    let ready = input.bytes(ready_len);
    let offer = input.bytes(64);
    let (peer, ours) = Channel::pair(SocketKind::SeqPacket).expect("pair");
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    if peer.send(&offer, &borrowed).is_err() || peer.send(&ready, &[]).is_err() {
        return;
    }
    drop(fds);
    let config = Config::new()
        .capacity(4096)
        .handshake_timeout(Duration::from_millis(100));
    match Duplex::connect(ours, &config) {
        Ok(_) | Err(Error::Refused(_) | Error::Rejected(_) | Error::Os(_)) => {}
        Err(err) => panic!("unexpected {err}"),
    }
});

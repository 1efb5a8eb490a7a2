//! Shared pieces of the fuzz targets: the workspace's independent peer (`sp-test-support`,
//! written from `docs/protocol.md`) set up against `sp_shm::Duplex::connect` so that the fuzzer
//! can then break it, descriptors of every kind, and a byte reader for the input.

use std::time::Duration;

use sp_core::{Channel, End, SocketKind};
use sp_test_support::fds::FdKind;
use sp_test_support::shm::{self, Flaw, PeerRing, Ring, Words};

pub use sp_test_support::shm::{PADDING, header};

/// Capacity of the peer's ring.
pub const CAPACITY: u64 = 4096;
/// Largest payload of the peer's ring.
pub const MAX_PAYLOAD: u64 = 1024;

/// Reads the fuzzer's bytes as numbers; zeros once they run out.
#[derive(Debug)]
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// The next 8 bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.u8()))
    }

    /// The next `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }

    /// Whether input remains.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A shared mapping the fuzzer may write any word of.
#[derive(Debug, Clone, Copy)]
pub struct AnyWord<'a>(&'a Words);

impl AnyWord<'_> {
    /// Stores `value` at word `idx` (modulo the mapping's size), atomically.
    pub fn poke(self, idx: usize, value: u64) {
        self.0.store((idx * 8) % self.0.len(), value);
    }
}

/// A descriptor of a kind chosen by `selector`: sealed, future-write-sealed or unsealed memfds of
/// several sizes, a pipe, or sockets.
pub fn any_fd(selector: u8) -> std::os::fd::OwnedFd {
    FdKind::from_selector(selector).make()
}

/// The hand-made side of a handshake: its own ring (which the sp side consumes) and the sp
/// side's ring (whose control block it may overwrite).
#[derive(Debug)]
pub struct Peer {
    ring: Ring,
    theirs: PeerRing,
    _socket: End,
}

impl Peer {
    /// Control block of the peer's ring.
    pub fn ctrl(&self) -> AnyWord<'_> {
        AnyWord(self.ring.ctrl())
    }

    /// Data area of the peer's ring.
    pub fn data(&self) -> AnyWord<'_> {
        AnyWord(self.ring.data())
    }

    /// Control block of the ring the sp side produces into.
    pub fn their_ctrl(&self) -> AnyWord<'_> {
        AnyWord(self.theirs.ctrl())
    }
}

/// Runs a handshake between the independent peer and `sp_shm::Duplex::connect`, in one thread:
/// the peer's OFFER and READY are queued in the socket before `connect` starts.
pub fn connect() -> (Peer, sp_shm::Duplex) {
    let step = Duration::from_secs(5);
    let (socket, ours) = sp_core::pair(SocketKind::SeqPacket).expect("pair");
    let mut ring = Ring::new(CAPACITY, MAX_PAYLOAD, Flaw::None).expect("the peer's ring");
    ring.send_offer(&socket).expect("send the offer");
    shm::send_ready(&socket, 0).expect("send READY");
    let ours = Channel::new(ours).expect("a seqpacket channel");
    let duplex = sp_shm::Duplex::connect(ours, &sp_shm::Config::new().capacity(4096))
        .expect("handshake with a valid peer");
    let theirs = shm::recv_offer(&socket, step).expect("the sp side's offer");
    let status = shm::recv_ready(&socket, step).expect("the sp side's READY");
    assert_eq!(status, 0, "the sp side refused the peer's offer");
    (
        Peer {
            ring,
            theirs,
            _socket: socket,
        },
        duplex,
    )
}

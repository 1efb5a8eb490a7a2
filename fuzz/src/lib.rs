//! Shared pieces of the fuzz targets: a hand-made peer that follows `docs/protocol.md` (so the
//! fuzzer can then break it), descriptors of every kind, and a byte reader for the input.

#![allow(unsafe_code)] // The hand-made peer writes arbitrary words into shared mappings.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};
use sp_core::{Channel, End, SocketKind};

/// Capacity of the peer's ring.
pub const CAPACITY: u64 = 4096;
/// Largest payload of the peer's ring.
pub const MAX_PAYLOAD: u64 = 1024;
const CTRL_SIZE: usize = 4096;
/// Protocol version 2: records are published by their header words, not by a tail index.
const VERSION: u32 = 2;
/// The layout word: 128-byte lines, a one-page control block.
const LAYOUT: u32 = 128 | (1 << 16);
/// The commit bit of a header word (in the `len` half): a nonzero word without it is corrupt.
pub const COMMITTED: u32 = 1 << 31;
/// The kind of a padding record.
pub const PADDING: u32 = u32::MAX;

/// A committed header word: `len | COMMITTED` in the low half, `kind` in the high half.
pub fn header(len: u32, kind: u32) -> u64 {
    u64::from(len | COMMITTED) | (u64::from(kind) << 32)
}

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
#[derive(Debug)]
pub struct Words(MmapRaw);

impl Words {
    /// Maps `len` bytes of `fd` shared and writable.
    pub fn map(fd: &OwnedFd, len: usize) -> std::io::Result<Self> {
        MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .map(Self)
    }

    /// Stores `value` at word `idx` (modulo the mapping's size), atomically.
    pub fn poke(&self, idx: usize, value: u64) {
        let off = (idx * 8) % self.0.len();
        // SAFETY: `off` is 8-aligned and `off + 8 <= len` (the length is a multiple of 8 and the
        // mapping page-aligned); an atomic store is defined while another party accesses the word.
        let word = unsafe { AtomicU64::from_ptr(self.0.as_mut_ptr().add(off).cast::<u64>()) };
        word.store(value, Ordering::Release);
    }
}

fn memfd(name: &str, size: u64, flags: MemfdFlags) -> OwnedFd {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | flags).expect("memfd_create");
    rustix::fs::ftruncate(&fd, size).expect("ftruncate");
    fd
}

/// A descriptor of a kind chosen by `selector`: sealed, future-write-sealed or unsealed memfds of
/// several sizes, a pipe, or sockets.
pub fn any_fd(selector: u8) -> OwnedFd {
    let base = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
    let size = [0, 8, 4096, 8192, 65536][usize::from(selector >> 4) % 5];
    let sealed = |seals: SealFlags| {
        let fd = memfd("fuzz", size, MemfdFlags::ALLOW_SEALING);
        if !seals.is_empty() {
            rustix::fs::fcntl_add_seals(&fd, seals).expect("seals");
        }
        fd
    };
    match selector % 6 {
        0 => sealed(base | SealFlags::WRITE),
        1 => sealed(base | SealFlags::FUTURE_WRITE),
        2 => sealed(SealFlags::empty()),
        3 => {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .expect("pipe")
                .0
        }
        4 => OwnedFd::from(sp_core::pair(SocketKind::SeqPacket).expect("pair").0),
        _ => OwnedFd::from(sp_core::pair(SocketKind::Stream).expect("pair").0),
    }
}

/// The hand-made side of a handshake: its own ring (which the sp side consumes) and the sp
/// side's ring's control block (whose head it may overwrite).
#[derive(Debug)]
pub struct Peer {
    /// Control block of the peer's ring.
    pub ctrl: Words,
    /// Data area of the peer's ring.
    pub data: Words,
    /// Control block of the ring the sp side produces into.
    pub their_ctrl: Words,
    _wake: End,
    _their_wake: OwnedFd,
    _channel: Channel,
}

/// Runs a handshake between a hand-made peer and `sp_shm::Duplex::connect`, in one thread: the
/// peer's OFFER and READY are queued in the socket before `connect` starts.
pub fn connect() -> (Peer, sp_shm::Duplex) {
    let (mut peer_channel, ours) = Channel::pair(SocketKind::SeqPacket).expect("pair");
    let ctrl_fd = memfd("fuzz-ctrl", CTRL_SIZE as u64, MemfdFlags::ALLOW_SEALING);
    let ctrl = Words::map(&ctrl_fd, CTRL_SIZE).expect("map ctrl");
    ctrl.poke(0, u64::from_le_bytes(*b"SPSHMCTL"));
    ctrl.poke(1, u64::from(VERSION) | (u64::from(LAYOUT) << 32));
    ctrl.poke(2, CAPACITY);
    ctrl.poke(3, MAX_PAYLOAD);
    let base = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
    rustix::fs::fcntl_add_seals(&ctrl_fd, base).expect("seal ctrl");
    let data_fd = memfd("fuzz-data", CAPACITY, MemfdFlags::ALLOW_SEALING);
    let data = Words::map(&data_fd, CAPACITY as usize).expect("map data");
    rustix::fs::fcntl_add_seals(&data_fd, base | SealFlags::FUTURE_WRITE).expect("seal data");
    let (wake, their_wake) = sp_core::pair(SocketKind::SeqPacket).expect("wake pair");
    wake.set_nonblocking(true).expect("nonblocking");

    let mut offer = Vec::with_capacity(40);
    offer.extend_from_slice(b"SPSHMOFR");
    offer.extend_from_slice(&VERSION.to_le_bytes());
    offer.extend_from_slice(&LAYOUT.to_le_bytes());
    offer.extend_from_slice(&CAPACITY.to_le_bytes());
    offer.extend_from_slice(&MAX_PAYLOAD.to_le_bytes());
    offer.extend_from_slice(&(CTRL_SIZE as u64).to_le_bytes());
    peer_channel
        .send(
            &offer,
            &[ctrl_fd.as_fd(), data_fd.as_fd(), their_wake.as_fd()],
        )
        .expect("send offer");
    drop(their_wake);
    let mut ready = b"SPSHMRDY".to_vec();
    ready.extend_from_slice(&[0; 8]);
    peer_channel.send(&ready, &[]).expect("send ready");

    let duplex = sp_shm::Duplex::connect(ours, &sp_shm::Config::new().capacity(4096))
        .expect("handshake with a valid peer");
    let msg = peer_channel.recv().expect("the sp side's offer");
    let [their_ctrl_fd, _data, their_wake]: [OwnedFd; 3] =
        msg.fds.try_into().expect("three descriptors");
    let their_ctrl = Words::map(&their_ctrl_fd, CTRL_SIZE).expect("map their ctrl");
    let _ready = peer_channel.recv().expect("the sp side's READY");
    (
        Peer {
            ctrl,
            data,
            their_ctrl,
            _wake: wake,
            _their_wake: their_wake,
            _channel: peer_channel,
        },
        duplex,
    )
}

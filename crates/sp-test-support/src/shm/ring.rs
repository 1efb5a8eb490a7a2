//! A ring made by hand, as the protocol document's "Memory files" and "Control block" describe:
//! two sealed memfds and a wake socketpair, offered to the other side, which consumes it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::{CTRL_MAGIC, CTRL_SIZE, LAYOUT, OFFER_LEN, VERSION, Words, offer_bytes};
use crate::frame;

/// What is wrong with a hand-made ring; each must make the receiver refuse the offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Nothing: a ring as the document describes it.
    None,
    /// The data memfd has no seals.
    Unsealed,
    /// The data memfd is half the offered capacity.
    Short,
    /// The data memfd lacks `F_SEAL_FUTURE_WRITE`.
    Writable,
    /// The data descriptor is the read end of a pipe.
    Pipe,
    /// The data descriptor is an unlinked regular file on disk (no seals possible).
    DiskFile,
    /// The data descriptor is a memfd created without `MFD_ALLOW_SEALING`.
    NotSealable,
    /// The control descriptor is a Unix socket.
    SocketCtrl,
    /// The wake descriptor is a memfd, not a socket.
    MemfdWake,
    /// The control memfd holds 2048 bytes instead of 4096.
    ShortCtrl,
}

/// A ring this peer produces into: its control block and data area mapped read-write, the
/// producer's end of the wake socketpair, and the consumer's end until it is offered.
#[derive(Debug)]
pub struct Ring {
    capacity: u64,
    max_payload: u64,
    ctrl: OwnedFd,
    data: OwnedFd,
    wake: OwnedFd,
    wake_theirs: Option<OwnedFd>,
    ctrl_words: Words,
    data_words: Words,
}

impl Ring {
    /// Creates a ring of `capacity` bytes for payloads of at most `max_payload`, with `flaw`:
    /// both memfds `MFD_CLOEXEC | MFD_ALLOW_SEALING`, the control block's first words written,
    /// the data area mapped before `F_SEAL_FUTURE_WRITE`, every descriptor close-on-exec.
    ///
    /// # Errors
    /// A failed system call, in words.
    pub fn new(capacity: u64, max_payload: u64, flaw: Flaw) -> Result<Self, String> {
        let ctrl = memfd("sp-test-peer-ctrl", CTRL_SIZE as u64)?;
        if flaw == Flaw::ShortCtrl {
            // Shrunk and sealed before anything is mapped; the rest of the ring is sound (its
            // mapping of a good control block stays, for the accessors).
            rustix::fs::ftruncate(&ctrl, CTRL_SIZE as u64 / 2).map_err(os("ftruncate"))?;
            rustix::fs::fcntl_add_seals(&ctrl, base_seals()).map_err(os("seal"))?;
            let ring = Self::new(capacity, max_payload, Flaw::None)?;
            return Ok(Self { ctrl, ..ring });
        }
        let ctrl_words = Words::map(&ctrl, CTRL_SIZE).map_err(os("map the control block"))?;
        ctrl_words.store(0, u64::from_le_bytes(CTRL_MAGIC));
        ctrl_words.store(8, u64::from(VERSION) | (u64::from(LAYOUT) << 32));
        ctrl_words.store(16, capacity);
        ctrl_words.store(24, max_payload);
        rustix::fs::fcntl_add_seals(&ctrl, base_seals()).map_err(os("seal the control block"))?;

        let data_size = if flaw == Flaw::Short {
            capacity / 2
        } else {
            capacity
        };
        let data = memfd("sp-test-peer-data", data_size)?;
        let data_words = Words::map(&data, data_size as usize).map_err(os("map the data area"))?;
        let seals = match flaw {
            Flaw::Writable => base_seals(),
            Flaw::Unsealed => SealFlags::empty(),
            _ => base_seals() | SealFlags::FUTURE_WRITE,
        };
        if !seals.is_empty() {
            rustix::fs::fcntl_add_seals(&data, seals).map_err(os("seal the data area"))?;
        }
        let (wake, wake_theirs) = socketpair(SocketType::SEQPACKET)?;
        let mut ring = Self {
            capacity,
            max_payload,
            ctrl,
            data,
            wake,
            wake_theirs: Some(wake_theirs),
            ctrl_words,
            data_words,
        };
        match flaw {
            Flaw::Pipe => {
                let (read, _write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                    .map_err(os("pipe"))?;
                ring.data = read;
            }
            Flaw::DiskFile => ring.data = crate::fds::disk_file(capacity)?,
            Flaw::NotSealable => {
                let fd = rustix::fs::memfd_create("sp-test-peer-unsealable", MemfdFlags::CLOEXEC)
                    .map_err(os("memfd_create"))?;
                rustix::fs::ftruncate(&fd, capacity).map_err(os("ftruncate"))?;
                ring.data = fd;
            }
            Flaw::SocketCtrl => ring.ctrl = socketpair(SocketType::STREAM)?.0,
            Flaw::MemfdWake => ring.wake_theirs = Some(memfd("sp-test-peer-wake", 4096)?),
            _ => {}
        }
        Ok(ring)
    }

    /// The data area's size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The largest payload of a record.
    pub fn max_payload(&self) -> u64 {
        self.max_payload
    }

    /// The control block, mapped read-write (the consumer writes `head` and its waiting flag
    /// here).
    pub fn ctrl(&self) -> &Words {
        &self.ctrl_words
    }

    /// The data area, mapped read-write.
    pub fn data(&self) -> &Words {
        &self.data_words
    }

    /// The producer's end of the wake socketpair (a wake-up is one byte sent on it).
    pub fn wake(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// This ring's OFFER.
    pub fn offer(&self) -> [u8; OFFER_LEN] {
        offer_bytes(self.capacity, self.max_payload)
    }

    /// Sends the OFFER with its three descriptors (control memfd, data memfd, the consumer's
    /// wake end) as one frame on `socket`, then closes this side's copy of the consumer's wake
    /// end, so that the consumer holds the only one.
    ///
    /// # Errors
    /// The offer was sent already, or the send failed.
    pub fn send_offer(&mut self, socket: impl AsFd) -> Result<(), String> {
        let theirs = self
            .wake_theirs
            .take()
            .ok_or("the offer was sent already")?;
        frame::send(
            socket,
            &self.offer(),
            &[self.ctrl.as_fd(), self.data.as_fd(), theirs.as_fd()],
        )
        .map_err(|e| format!("send the offer: {e}"))
    }
}

/// A sealable, close-on-exec memfd of `size` bytes.
fn memfd(name: &str, size: u64) -> Result<OwnedFd, String> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(os("memfd_create"))?;
    rustix::fs::ftruncate(&fd, size).map_err(os("ftruncate"))?;
    Ok(fd)
}

/// The seals both memfds need: no shrinking, no growing, no more seals.
fn base_seals() -> SealFlags {
    SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL
}

/// A connected `AF_UNIX` pair of `kind`, close-on-exec.
fn socketpair(kind: SocketType) -> Result<(OwnedFd, OwnedFd), String> {
    rustix::net::socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)
        .map_err(os("socketpair"))
}

/// Names a failed system call.
fn os<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |err| format!("{what}: {err}")
}

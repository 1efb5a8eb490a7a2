//! The handshake from the protocol document's "Handshake": receive the other side's OFFER and map
//! its control block, and READY both ways. (Sending this peer's own OFFER is
//! [`super::Ring::send_offer`].)

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use super::ready_bytes;
use super::{CTRL_SIZE, LAYOUT, OFFER_LEN, OFFER_MAGIC, READY_LEN, READY_MAGIC, VERSION, Words};
use crate::frame;

/// The other side's ring, which this peer consumes: its descriptors and its control block,
/// mapped read-write (where a consumer stores `head` and its waiting flag).
#[derive(Debug)]
pub struct PeerRing {
    capacity: u64,
    max_payload: u64,
    ctrl: OwnedFd,
    data: OwnedFd,
    _wake: OwnedFd,
    ctrl_words: Words,
}

impl PeerRing {
    /// The capacity its OFFER declared.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The largest payload its OFFER declared.
    pub fn max_payload(&self) -> u64 {
        self.max_payload
    }

    /// Its control block.
    pub fn ctrl(&self) -> &Words {
        &self.ctrl_words
    }

    /// Its control memfd.
    pub fn ctrl_fd(&self) -> BorrowedFd<'_> {
        self.ctrl.as_fd()
    }

    /// Its data memfd (which a consumer may map only read-only).
    pub fn data_fd(&self) -> BorrowedFd<'_> {
        self.data.as_fd()
    }
}

/// Receives the other side's OFFER (within `timeout`): 40 bytes with the magic, version 2, the
/// layout word and a 4096-byte control block, and three descriptors; maps its control block.
///
/// # Errors
/// Nothing arrived, or what arrived is not such an OFFER.
pub fn recv_offer(socket: impl AsFd, timeout: Duration) -> Result<PeerRing, String> {
    let msg = frame::recv(socket, timeout).map_err(|e| format!("receive the offer: {e}"))?;
    let b = &msg.bytes;
    if b.len() != OFFER_LEN || b[0..8] != OFFER_MAGIC {
        return Err(format!("not an offer: {b:02x?}"));
    }
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    let layout = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"));
    if version != VERSION || layout != LAYOUT || word(32) != CTRL_SIZE as u64 {
        return Err(format!("an offer of version {version}, layout {layout:#x}"));
    }
    let [ctrl, data, wake]: [OwnedFd; 3] = msg
        .fds
        .try_into()
        .map_err(|fds: Vec<OwnedFd>| format!("an offer with {} descriptors", fds.len()))?;
    let ctrl_words =
        Words::map(&ctrl, CTRL_SIZE).map_err(|e| format!("map their control block: {e}"))?;
    Ok(PeerRing {
        capacity: word(16),
        max_payload: word(24),
        ctrl,
        data,
        _wake: wake,
        ctrl_words,
    })
}

/// Sends READY with `status` (0 accepts).
///
/// # Errors
/// The send failed.
pub fn send_ready(socket: impl AsFd, status: u32) -> Result<(), String> {
    frame::send(socket, &ready_bytes(status), &[]).map_err(|e| format!("send READY: {e}"))
}

/// Receives the other side's READY (within `timeout`) and returns its status.
///
/// # Errors
/// Nothing arrived, or what arrived is not a READY.
pub fn recv_ready(socket: impl AsFd, timeout: Duration) -> Result<u32, String> {
    let msg = frame::recv(socket, timeout).map_err(|e| format!("receive READY: {e}"))?;
    let b = &msg.bytes;
    if b.len() != READY_LEN || b[0..8] != READY_MAGIC || !msg.fds.is_empty() {
        return Err(format!("not a READY: {b:02x?} with {} fds", msg.fds.len()));
    }
    Ok(u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")))
}

/// Sends READY accepting the other side's offer, then requires its READY to accept ours.
///
/// # Errors
/// As [`send_ready`] and [`recv_ready`], or the other side refused (its code is named).
pub fn exchange_ready(socket: impl AsFd, timeout: Duration) -> Result<(), String> {
    let socket = socket.as_fd();
    send_ready(socket, 0)?;
    match recv_ready(socket, timeout)? {
        0 => Ok(()),
        code => Err(format!("the peer refused our offer with code {code}")),
    }
}

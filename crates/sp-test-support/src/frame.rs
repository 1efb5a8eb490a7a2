//! sp-core frames written and read by hand, from `docs/protocol.md`, "sp-core frames": a 16-byte
//! header (magic `0x5350`, version 2, `n_fds`, `n_bytes`, little-endian, 8 reserved zero bytes)
//! and the payload, sent
//! with one `sendmsg(2)` carrying the descriptors as `SCM_RIGHTS`.
//!
//! [`send_raw`] sends any bytes with any descriptors, so a hostile peer can break every rule;
//! [`send`] and [`recv`] speak the frame as the document says, on a seqpacket socket (one
//! record per frame), for the hand-made sp-shm peer's handshake.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The frame magic, `0x5350` as a little-endian `u16` (bytes `0x50 0x53`).
pub const MAGIC: u16 = 0x5350;
/// The frame version.
pub const VERSION: u8 = 2;
/// Bytes of frame header.
pub const HEADER_LEN: usize = 16;
/// The most descriptors one frame may carry, and what a receiver's control buffer holds.
pub const MAX_FDS: usize = 64;
/// The largest payload [`recv`] takes (sp-core's default maximum, 1 MiB).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// A frame header with the given fields, whatever they are.
pub fn header(magic: u16, version: u8, n_fds: u8, n_bytes: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&magic.to_le_bytes());
    h[2] = version;
    h[3] = n_fds;
    h[4..8].copy_from_slice(&n_bytes.to_le_bytes());
    h
}

/// A valid frame: the header declaring `n_fds` descriptors and `payload`'s length, then
/// `payload`.
pub fn frame(n_fds: u8, payload: &[u8]) -> Vec<u8> {
    let n_bytes = u32::try_from(payload.len()).expect("a payload under 4 GiB");
    let mut out = header(MAGIC, VERSION, n_fds, n_bytes).to_vec();
    out.extend_from_slice(payload);
    out
}

/// One `sendmsg(2)` of `bytes` with `fds` attached as `SCM_RIGHTS` (with `MSG_NOSIGNAL`), as a
/// hostile peer would: nothing is checked.
///
/// # Errors
/// `sendmsg`'s error.
pub fn send_raw(socket: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<usize> {
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(
            cmsg.push(SendAncillaryMessage::ScmRights(fds)),
            "cmsg buffer too small"
        );
    }
    Ok(rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut cmsg,
        SendFlags::NOSIGNAL,
    )?)
}

/// Sends `payload` with `fds` as one frame on a seqpacket socket.
///
/// # Errors
/// More than [`MAX_FDS`] descriptors, a short send, or `sendmsg`'s error.
pub fn send(socket: impl AsFd, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), String> {
    let n_fds = u8::try_from(fds.len())
        .ok()
        .filter(|&n| usize::from(n) <= MAX_FDS)
        .ok_or_else(|| format!("{} descriptors in one frame", fds.len()))?;
    let bytes = frame(n_fds, payload);
    let sent = send_raw(socket, &bytes, fds).map_err(|e| format!("sendmsg: {e}"))?;
    if sent == bytes.len() {
        Ok(())
    } else {
        Err(format!("sent {sent} of {} bytes", bytes.len()))
    }
}

/// A frame [`recv`] took: its payload and the descriptors that came with it (close-on-exec).
#[derive(Debug)]
pub struct Frame {
    /// The payload, without the header.
    pub bytes: Vec<u8>,
    /// The descriptors, as many as the header declared.
    pub fds: Vec<OwnedFd>,
}

/// Why [`recv`] returned no frame.
#[derive(Debug)]
pub enum RecvError {
    /// End of file: the peer closed its end (everything it sent has been read).
    PeerGone,
    /// Nothing arrived within the time given.
    Timeout,
    /// A record that is not a valid frame (the descriptors that came with it are closed).
    Malformed(String),
    /// A system call failed.
    Os(Errno),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerGone => f.write_str("the peer is gone"),
            Self::Timeout => f.write_str("no frame in time"),
            Self::Malformed(why) => write!(f, "malformed frame: {why}"),
            Self::Os(errno) => write!(f, "recvmsg: {errno}"),
        }
    }
}

impl std::error::Error for RecvError {}

/// Receives one frame from a seqpacket socket, waiting at most `timeout`, as the protocol
/// document's "Receiving" says: `recvmsg` with `MSG_CMSG_CLOEXEC` and `MSG_TRUNC` into a control
/// buffer for [`MAX_FDS`] descriptors; `ECONNRESET` means "read again"; a zero-length result is end
/// of file (an honest sp-core peer never sends an empty record); then the header's checks.
///
/// # Errors
/// [`RecvError`].
pub fn recv(socket: impl AsFd, timeout: Duration) -> Result<Frame, RecvError> {
    let socket = socket.as_fd();
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; HEADER_LEN + MAX_PAYLOAD];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
        let mut pfd = [PollFd::new(&socket, PollFlags::IN)];
        match rustix::event::poll(&mut pfd, Some(&wait)) {
            Ok(0) if left.is_zero() => return Err(RecvError::Timeout),
            Ok(0) | Err(Errno::INTR) => continue,
            Ok(_) => {}
            Err(errno) => return Err(RecvError::Os(errno)),
        }
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let res = rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut buf)],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT | RecvFlags::TRUNC,
        );
        let msg = match res {
            Ok(msg) => msg,
            Err(Errno::AGAIN | Errno::INTR | Errno::CONNRESET) => continue,
            Err(errno) => return Err(RecvError::Os(errno)),
        };
        let mut fds = Vec::new();
        for message in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if msg.bytes == 0 && fds.is_empty() {
            return Err(RecvError::PeerGone);
        }
        return check(&buf, msg.bytes, msg.flags, fds);
    }
}

/// The checks of a received record of `len` bytes (in `buf`, unless truncated) and its `fds`.
fn check(
    buf: &[u8],
    len: usize,
    flags: ReturnFlags,
    fds: Vec<OwnedFd>,
) -> Result<Frame, RecvError> {
    let bad = |why: String| Err(RecvError::Malformed(why));
    if flags.contains(ReturnFlags::CTRUNC) {
        return bad(format!("descriptors truncated ({} arrived)", fds.len()));
    }
    if flags.contains(ReturnFlags::TRUNC) || len > buf.len() {
        return bad(format!("a record of {len} bytes"));
    }
    let Some(h) = buf[..len].first_chunk::<HEADER_LEN>() else {
        return bad(format!(
            "a record of {len} bytes is shorter than the header"
        ));
    };
    let magic = u16::from_le_bytes([h[0], h[1]]);
    let n_fds = usize::from(h[3]);
    let n_bytes = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if magic != MAGIC || h[2] != VERSION || h[8..].iter().any(|&b| b != 0) || n_fds > MAX_FDS {
        return bad(format!("header {h:02x?}"));
    }
    if n_bytes != len - HEADER_LEN || fds.len() != n_fds {
        return bad(format!(
            "{n_bytes} bytes and {n_fds} descriptors declared, {} and {} received",
            len - HEADER_LEN,
            fds.len()
        ));
    }
    Ok(Frame {
        bytes: buf[HEADER_LEN..len].to_vec(),
        fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/protocol.md, "Header": the payload `hi` with one descriptor.
    #[test]
    fn frame_is_the_documents_example() {
        assert_eq!(
            frame(1, b"hi"),
            [
                0x50, 0x53, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x68, 0x69
            ]
        );
    }

    #[test]
    fn check_takes_a_valid_frame_and_refuses_each_broken_field() {
        let ok = |bytes: &[u8]| check(bytes, bytes.len(), ReturnFlags::empty(), Vec::new());
        assert_eq!(ok(&frame(0, b"abc")).expect("valid").bytes, b"abc");
        let mut bad_magic = frame(0, b"abc");
        bad_magic[0] ^= 1;
        let mut bad_version = frame(0, b"abc");
        bad_version[2] = 1;
        let mut bad_reserved = frame(0, b"abc");
        bad_reserved[12] = 1;
        let mut long = frame(0, b"abc");
        long[4] = 4;
        for bytes in [
            bad_magic,
            bad_version,
            bad_reserved,
            long,
            frame(1, b"abc"),
            header(MAGIC, VERSION, 65, 0).to_vec(),
            frame(0, b"abc")[..5].to_vec(),
        ] {
            assert!(
                matches!(ok(&bytes), Err(RecvError::Malformed(_))),
                "{bytes:02x?}"
            );
        }
    }
}

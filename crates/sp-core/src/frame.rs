//! The frame: the 16-byte header in front of every message's payload, and its encoder and parser.
//!
//! | offset | size | field                                                          |
//! |--------|------|----------------------------------------------------------------|
//! | 0      | 2    | [`FRAME_MAGIC`] `0x5350`, little-endian (bytes `0x50 0x53`)      |
//! | 2      | 1    | [`FRAME_VERSION`], 2                                           |
//! | 3      | 1    | `n_fds`: descriptors sent with the frame, 0 to [`MAX_FDS`]     |
//! | 4      | 4    | `n_bytes`: payload length, little-endian `u32`                 |
//! | 8      | 8    | reserved, zero                                                 |
//!
//! Why 16 bytes: the kernel copies a seqpacket record into the receiver's buffers with `rep movsb`,
//! which some CPUs (this project's AMD EPYC hosts) run many times slower when the destination
//! lies 1 to 31 bytes past the source modulo a page (docs/benchmarks.md, "`memcpy` at a bad
//! distance"). A large record's data starts on a page boundary in the kernel, and glibc places
//! every large allocation 16 bytes past one, so a payload at offset 16 of the record lands at the
//! same distance as the buffer it is received into: zero. At offset 8 it was 8, in the slow band.
//!
//! docs/protocol.md ("sp-core frames") specifies the rest: how a frame travels on a seqpacket and
//! on a stream pair, and every check a receiver makes.

use crate::error::Malformed;

/// The most file descriptors one message may carry (`n_fds` in the frame header).
///
/// Well under the kernel's `SCM_MAX_FD` (253). A sender asking to send more gets
/// [`Error::TooManyFds`](crate::Error::TooManyFds) and nothing is sent; split the descriptors
/// over several messages. The receiver's buffer for control data holds exactly this many
/// (`CMSG_SPACE(64 × 4)` = 272 bytes), so when a peer attaches more the kernel truncates the
/// control data (`MSG_CTRUNC`) and the receive is
/// [`Error::FdsTruncated`](crate::Error::FdsTruncated) with `received: 64`, every descriptor that
/// arrived closed. A header that declares more than this while at most this many are attached is
/// [`Malformed::TooManyFdsDeclared`].
pub const MAX_FDS: usize = 64;

/// Bytes of frame header in front of every payload: the magic (2), the version (1), `n_fds` (1),
/// `n_bytes` (4) and 8 reserved zero bytes, in that order.
pub const HEADER_LEN: usize = 16;

/// The first two bytes of every frame header, little-endian (`0x50`, `0x53` on the wire). A
/// header with anything else is [`Malformed::BadMagic`].
pub const FRAME_MAGIC: u16 = 0x5350;

/// The frame format's version, byte 2 of every header. A receiver accepts only this value;
/// anything else is [`Malformed::BadVersion`]. (Version 1 had an 8-byte header.)
pub const FRAME_VERSION: u8 = 2;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Descriptors sent with the frame.
    pub(crate) n_fds: usize,
    /// Payload length in bytes.
    pub(crate) n_bytes: usize,
}

/// The header's bytes. The caller keeps `n_fds <= MAX_FDS` and `n_bytes <= u32::MAX`.
pub(crate) fn encode_header(header: Header) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..2].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    out[2] = FRAME_VERSION;
    // Both fit: n_fds <= MAX_FDS < 256 and n_bytes <= max_len <= u32::MAX, checked by the caller.
    out[3] = header.n_fds as u8;
    out[4..8].copy_from_slice(&(header.n_bytes as u32).to_le_bytes());
    // Bytes 8..16 stay zero (reserved).
    out
}

/// The header at the front of `bytes` with its magic and version checked, its counts not yet:
/// `(n_fds, n_bytes)`.
fn raw_header(bytes: &[u8]) -> Result<(usize, usize), Malformed> {
    let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(Malformed::ShortFrame { len: bytes.len() });
    };
    let magic = u16::from_le_bytes([head[0], head[1]]);
    if magic != FRAME_MAGIC {
        return Err(Malformed::BadMagic { found: magic });
    }
    if head[2] != FRAME_VERSION {
        return Err(Malformed::BadVersion { found: head[2] });
    }
    let reserved = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
    if reserved != 0 {
        return Err(Malformed::BadReserved { found: reserved });
    }
    let n_bytes = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    Ok((usize::from(head[3]), n_bytes))
}

/// The descriptor count a frame header declares, even when it is over [`MAX_FDS`] (for the
/// error report of a truncated frame); `None` unless `bytes` starts with our magic and version.
pub(crate) fn declared_fds(bytes: &[u8]) -> Option<usize> {
    raw_header(bytes).ok().map(|(n_fds, _)| n_fds)
}

/// Parses the header at the front of `bytes` (which may hold more than a header).
// Invariant: nothing from the wire is used before it is checked here (and `n_bytes` against the
// channel's maximum by the receiver); a bad header is a `Malformed` value, never a panic.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header, Malformed> {
    let (n_fds, n_bytes) = raw_header(bytes)?;
    if n_fds > MAX_FDS {
        return Err(Malformed::TooManyFdsDeclared { declared: n_fds });
    }
    Ok(Header { n_fds, n_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            n_fds: 3,
            n_bytes: 70_000,
        };
        assert_eq!(decode_header(&encode_header(h)), Ok(h));
    }

    #[test]
    fn header_rejects_garbage() {
        assert_eq!(
            decode_header(&[0; 4]),
            Err(Malformed::ShortFrame { len: 4 })
        );
        assert_eq!(
            decode_header(&[0; 8]),
            Err(Malformed::ShortFrame { len: 8 })
        );
        assert_eq!(
            decode_header(&[0; 16]),
            Err(Malformed::BadMagic { found: 0 })
        );
        let mut h = encode_header(Header {
            n_fds: 0,
            n_bytes: 0,
        });
        h[2] = 9;
        assert_eq!(decode_header(&h), Err(Malformed::BadVersion { found: 9 }));
        // A version 1 header (8 bytes, then the payload) is refused by its version.
        h[2] = 1;
        assert_eq!(decode_header(&h), Err(Malformed::BadVersion { found: 1 }));
        let mut h = encode_header(Header {
            n_fds: 0,
            n_bytes: 0,
        });
        h[15] = 1;
        assert_eq!(
            decode_header(&h),
            Err(Malformed::BadReserved { found: 1 << 56 })
        );
        let mut h = encode_header(Header {
            n_fds: 0,
            n_bytes: 0,
        });
        h[3] = 200;
        assert_eq!(
            decode_header(&h),
            Err(Malformed::TooManyFdsDeclared { declared: 200 })
        );
        assert_eq!(declared_fds(&h), Some(200));
    }

    proptest::proptest! {
        /// Any bytes: a header that decodes has the magic, version 2, zero reserved bytes and at
        /// most `MAX_FDS` descriptors, and re-encodes to the same 16 bytes; anything else is
        /// `Malformed`.
        #[test]
        fn header_decoder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32)) {
            if let Ok(h) = decode_header(&bytes) {
                proptest::prop_assert!(h.n_fds <= MAX_FDS);
                proptest::prop_assert_eq!(&encode_header(h)[..], &bytes[..HEADER_LEN]);
            }
        }
    }
}

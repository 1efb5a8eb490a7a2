//! The bytes of the typed protocol: ring record kinds and prefixes, and the ATTACH and HELLO
//! control messages. `docs/protocol.md`, "sp typed records", is the specification; this module is
//! its one implementation (its constants are public for peers written from the document), and
//! every decoder here checks every field it reads.

use crate::error::{HelloMismatch, Violation};
use crate::value::Encoding;

/// A record whose payload is the value's encoding and nothing else.
pub const KIND_VALUE: u32 = 0x5354_0001;
/// A record with a 16-byte prefix (sequence number, descriptor count) before the encoding; the
/// descriptors come in an ATTACH message on the control channel.
pub const KIND_VALUE_FDS: u32 = 0x5354_0002;
/// A record of 24 bytes (sequence number, descriptor count, blob length); the encoding is in a
/// sealed memfd that comes, with the descriptors, in an ATTACH message.
pub const KIND_BLOB: u32 = 0x5354_0003;

/// Length of a [`KIND_VALUE_FDS`] record's prefix.
pub const FDS_PREFIX_LEN: usize = 16;
/// Length of a [`KIND_BLOB`] record's payload.
pub const BLOB_RECORD_LEN: usize = 24;

/// First 8 bytes of an ATTACH control message.
pub const ATTACH_MAGIC: [u8; 8] = *b"SPATTACH";
/// Length of an ATTACH message.
pub const ATTACH_LEN: usize = 32;
/// ATTACH flag: the first descriptor is the blob holding the value's encoding.
pub const ATTACH_BLOB: u32 = 1;

/// First 8 bytes of a HELLO control message.
pub const HELLO_MAGIC: [u8; 8] = *b"SPTYHELO";
/// Length of a HELLO message.
pub const HELLO_LEN: usize = 40;
/// The version of the typed protocol this crate speaks.
pub const VERSION: u32 = 1;

/// The most descriptors one value carries: one message of sp-core carries at most
/// [`sp_core::MAX_FDS`], and a blob's memfd may need one of them.
pub const MAX_FDS: usize = sp_core::MAX_FDS - 1;

/// What a record says is attached to it on the control channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Announce {
    pub(crate) seq: u64,
    pub(crate) n_fds: u32,
    /// The blob's length, if the value is in a blob.
    pub(crate) blob: Option<u64>,
}

pub(crate) fn encode_fds_prefix(seq: u64, n_fds: u32, out: &mut [u8]) {
    out[0..8].copy_from_slice(&seq.to_le_bytes());
    out[8..12].copy_from_slice(&n_fds.to_le_bytes());
    out[12..16].copy_from_slice(&0u32.to_le_bytes());
}

pub(crate) fn encode_blob_record(seq: u64, n_fds: u32, len: u64, out: &mut [u8]) {
    encode_fds_prefix(seq, n_fds, out);
    out[16..24].copy_from_slice(&len.to_le_bytes());
}

/// Reads the prefix of a [`KIND_VALUE_FDS`] or [`KIND_BLOB`] record.
pub(crate) fn decode_announce(kind: u32, payload: &[u8]) -> Result<Announce, Violation> {
    let bad = Violation::BadPrefix {
        kind,
        len: payload.len(),
    };
    let (need, blob) = match kind {
        KIND_VALUE_FDS => (FDS_PREFIX_LEN, false),
        KIND_BLOB => (BLOB_RECORD_LEN, true),
        other => return Err(Violation::UnknownKind(other)),
    };
    if payload.len() < need || (blob && payload.len() != need) {
        return Err(bad);
    }
    let seq = u64_at(payload, 0);
    let n_fds = u32_at(payload, 8);
    if u32_at(payload, 12) != 0 || n_fds as usize > MAX_FDS || (!blob && n_fds == 0) {
        return Err(bad);
    }
    Ok(Announce {
        seq,
        n_fds,
        blob: blob.then(|| u64_at(payload, 16)),
    })
}

pub(crate) fn encode_attach(announce: Announce) -> [u8; ATTACH_LEN] {
    let mut out = [0u8; ATTACH_LEN];
    out[0..8].copy_from_slice(&ATTACH_MAGIC);
    out[8..16].copy_from_slice(&announce.seq.to_le_bytes());
    out[16..20].copy_from_slice(&announce.n_fds.to_le_bytes());
    let flags = if announce.blob.is_some() {
        ATTACH_BLOB
    } else {
        0
    };
    out[20..24].copy_from_slice(&flags.to_le_bytes());
    out[24..32].copy_from_slice(&announce.blob.unwrap_or(0).to_le_bytes());
    out
}

/// Parses an ATTACH and checks it against the record that announced it and the number of
/// descriptors that came with it.
pub(crate) fn check_attach(
    bytes: &[u8],
    n_arrived: usize,
    want: Announce,
) -> Result<(), Violation> {
    if bytes.len() != ATTACH_LEN || bytes[0..8] != ATTACH_MAGIC {
        return Err(Violation::BadAttachment);
    }
    let seq = u64_at(bytes, 8);
    let n_fds = u32_at(bytes, 16);
    let flags = u32_at(bytes, 20);
    let blob_len = u64_at(bytes, 24);
    if flags & !ATTACH_BLOB != 0 || (flags == 0 && blob_len != 0) {
        return Err(Violation::BadAttachment);
    }
    let is_blob = flags & ATTACH_BLOB != 0;
    if n_arrived != n_fds as usize + usize::from(is_blob) {
        return Err(Violation::BadAttachment);
    }
    if seq != want.seq {
        return Err(Violation::Sequence {
            expected: want.seq,
            got: seq,
        });
    }
    let got = Announce {
        seq,
        n_fds,
        blob: is_blob.then_some(blob_len),
    };
    if got != want {
        return Err(Violation::AttachmentMismatch);
    }
    Ok(())
}

/// The two directions' encodings, as one side sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) sends: Encoding,
    pub(crate) receives: Encoding,
}

pub(crate) fn encode_hello(hello: Hello) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[0..8].copy_from_slice(&HELLO_MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let (send_tag, send_size) = encoding_words(hello.sends);
    let (recv_tag, recv_size) = encoding_words(hello.receives);
    out[16..20].copy_from_slice(&send_tag.to_le_bytes());
    out[20..24].copy_from_slice(&recv_tag.to_le_bytes());
    out[24..32].copy_from_slice(&send_size.to_le_bytes());
    out[32..40].copy_from_slice(&recv_size.to_le_bytes());
    out
}

/// Checks the peer's HELLO against this side's: what the peer sends must be what this side
/// receives, and the other way round. A custom encoding on either side is not compared.
pub(crate) fn check_hello(bytes: &[u8], ours: Hello) -> Result<(), HelloMismatch> {
    if bytes.len() != HELLO_LEN || bytes[0..8] != HELLO_MAGIC {
        return Err(HelloMismatch::NotHello);
    }
    let version = u32_at(bytes, 8);
    if version != VERSION || u32_at(bytes, 12) != 0 {
        return Err(HelloMismatch::Version(version));
    }
    let peer_sends = (u32_at(bytes, 16), u64_at(bytes, 24));
    let peer_receives = (u32_at(bytes, 20), u64_at(bytes, 32));
    if !compatible(peer_sends, encoding_words(ours.receives))
        || !compatible(peer_receives, encoding_words(ours.sends))
    {
        return Err(HelloMismatch::Encoding);
    }
    Ok(())
}

const TAG_CUSTOM: u32 = 0;
const TAG_POSTCARD: u32 = 1;
const TAG_PLAIN: u32 = 2;

fn encoding_words(encoding: Encoding) -> (u32, u64) {
    match encoding {
        Encoding::Custom => (TAG_CUSTOM, 0),
        Encoding::Postcard => (TAG_POSTCARD, 0),
        Encoding::Plain { size } => (TAG_PLAIN, size as u64),
    }
}

fn compatible(a: (u32, u64), b: (u32, u64)) -> bool {
    a.0 == TAG_CUSTOM || b.0 == TAG_CUSTOM || a == b
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn announce_round_trips() {
        let mut rec = [0u8; BLOB_RECORD_LEN];
        encode_blob_record(9, 2, 4 << 20, &mut rec);
        let a = decode_announce(KIND_BLOB, &rec).unwrap();
        assert_eq!(
            a,
            Announce {
                seq: 9,
                n_fds: 2,
                blob: Some(4 << 20)
            }
        );
        check_attach(&encode_attach(a), 3, a).unwrap();
        assert_eq!(
            check_attach(&encode_attach(a), 2, a),
            Err(Violation::BadAttachment)
        );
        let other = Announce { seq: 10, ..a };
        assert_eq!(
            check_attach(&encode_attach(other), 3, a),
            Err(Violation::Sequence {
                expected: 9,
                got: 10
            })
        );
        let other = Announce { blob: Some(1), ..a };
        assert_eq!(
            check_attach(&encode_attach(other), 3, a),
            Err(Violation::AttachmentMismatch)
        );
    }

    #[test]
    fn fds_prefix_needs_descriptors() {
        let mut rec = [0u8; FDS_PREFIX_LEN + 3];
        encode_fds_prefix(0, 0, &mut rec);
        assert!(decode_announce(KIND_VALUE_FDS, &rec).is_err());
        encode_fds_prefix(0, MAX_FDS as u32 + 1, &mut rec);
        assert!(decode_announce(KIND_VALUE_FDS, &rec).is_err());
        encode_fds_prefix(0, 1, &mut rec);
        assert!(decode_announce(KIND_VALUE_FDS, &rec).is_ok());
        assert!(decode_announce(KIND_VALUE_FDS, &rec[..15]).is_err());
    }

    #[test]
    fn hello_compares_encodings() {
        let ours = Hello {
            sends: Encoding::Postcard,
            receives: Encoding::Plain { size: 64 },
        };
        let peer = Hello {
            sends: Encoding::Plain { size: 64 },
            receives: Encoding::Postcard,
        };
        check_hello(&encode_hello(peer), ours).unwrap();
        let wrong = Hello {
            sends: Encoding::Plain { size: 32 },
            ..peer
        };
        assert_eq!(
            check_hello(&encode_hello(wrong), ours),
            Err(HelloMismatch::Encoding)
        );
        let custom = Hello {
            sends: Encoding::Custom,
            ..peer
        };
        check_hello(&encode_hello(custom), ours).unwrap();
        let mut v2 = encode_hello(peer);
        v2[8] = 2;
        assert_eq!(check_hello(&v2, ours), Err(HelloMismatch::Version(2)));
        assert_eq!(check_hello(&v2[..39], ours), Err(HelloMismatch::NotHello));
    }

    proptest! {
        #[test]
        fn decoders_take_any_bytes(kind: u32, bytes in proptest::collection::vec(any::<u8>(), 0..48), n in 0usize..70) {
            let _ = decode_announce(kind, &bytes);
            let want = Announce { seq: 0, n_fds: 1, blob: None };
            let _ = check_attach(&bytes, n, want);
            let _ = check_hello(&bytes, Hello { sends: Encoding::Postcard, receives: Encoding::Postcard });
        }
    }
}

//! The gateway's bytes on zenoh: one sample carries a header and one or more records, each the
//! sp encoding of a value exactly as the local ring held it; liveliness tokens name each side
//! and the encoding it carries. `docs/protocol.md`, "sp-zenoh samples", is the specification.
//!
//! Everything from the network is untrusted: every length is checked against what is left of
//! the sample before it is used, and a sample that breaks a rule is a [`Violation`].

use sp::Encoding;

use crate::error::Violation;

/// The header of every sample: 16 bytes, little-endian.
pub(crate) const HEADER_LEN: usize = 16;
/// Each record's length prefix.
pub(crate) const LEN_PREFIX: usize = 4;
/// A sample of records (at least one).
pub(crate) const KIND_RECORDS: u8 = 1;
/// The end of the stream: every record before it was sent; no record follows.
pub(crate) const KIND_END: u8 = 2;
/// The publishing gateway failed (a value it could not send, its local channel broken): every
/// record before it was sent, the stream is incomplete, and no record follows.
pub(crate) const KIND_ABORT: u8 = 3;
/// Flag: the first sample sent after the publisher found this subscriber (at the start, or after
/// it resumed towards a new one), so its sequence number need not be 0.
pub(crate) const FLAG_FIRST: u8 = 1;

/// A sample's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The sequence number of the sample's first record (for END and ABORT: of the record that
    /// would have come next, so the count of records sent).
    pub(crate) seq: u64,
    /// The publisher's stream: a number it draws when it starts.
    pub(crate) epoch: u32,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    /// Records in the sample (zero for END and ABORT).
    pub(crate) n_records: u16,
}

impl Header {
    pub(crate) fn encode(self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..12].copy_from_slice(&self.epoch.to_le_bytes());
        out[12] = self.kind;
        out[13] = self.flags;
        out[14..16].copy_from_slice(&self.n_records.to_le_bytes());
    }

    /// Reads and checks the header at the start of a sample.
    pub(crate) fn decode(sample: &mut impl Source) -> Result<Self, Violation> {
        let total = sample.remaining();
        if total < HEADER_LEN {
            return Err(Violation::ShortSample { len: total });
        }
        let mut bytes = [0; HEADER_LEN];
        sample.read(&mut bytes);
        let header = Self {
            seq: u64::from_le_bytes(bytes[0..8].try_into().unwrap_or_default()),
            epoch: u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default()),
            kind: bytes[12],
            flags: bytes[13],
            n_records: u16::from_le_bytes(bytes[14..16].try_into().unwrap_or_default()),
        };
        let well_formed = match header.kind {
            KIND_RECORDS => header.n_records > 0,
            KIND_END | KIND_ABORT => header.n_records == 0 && total == HEADER_LEN,
            _ => false,
        };
        if !well_formed || header.flags & !FLAG_FIRST != 0 {
            return Err(Violation::BadHeader {
                kind: header.kind,
                flags: header.flags,
                n_records: header.n_records,
            });
        }
        Ok(header)
    }
}

/// The bytes of a sample, read front to back: a slice, or zenoh's reader over a payload that
/// may be in pieces (a large sample arrives in fragments), so that a record goes from the
/// network buffers to its destination in one copy.
pub(crate) trait Source {
    /// The bytes not read yet.
    fn remaining(&self) -> usize;
    /// Reads exactly `out.len()` bytes; callers never ask for more than [`remaining`](Self::remaining).
    fn read(&mut self, out: &mut [u8]);
}

impl Source for &[u8] {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn read(&mut self, out: &mut [u8]) {
        let (head, rest) = self.split_at(out.len().min(self.len()));
        out[..head.len()].copy_from_slice(head);
        *self = rest;
    }
}

impl Source for zenoh::bytes::ZBytesReader<'_> {
    fn remaining(&self) -> usize {
        zenoh::bytes::ZBytesReader::remaining(self)
    }

    fn read(&mut self, out: &mut [u8]) {
        // Cannot fail for a length within `remaining`; were it to, the record would hold zeros
        // and its receiver would refuse it as a decode error.
        let _ = std::io::Read::read_exact(self, out);
    }
}

/// The records after a RECORDS header: each record's length, checked against what is left of
/// the sample, then its bytes.
pub(crate) struct Records<S> {
    src: S,
    left: u16,
}

impl<S: Source> Records<S> {
    /// `src` just after the header.
    pub(crate) fn new(src: S, header: Header) -> Self {
        Self {
            src,
            left: header.n_records,
        }
    }

    /// The next record's length (read its bytes with [`read`](Self::read)); `Ok(None)` after the
    /// last, with nothing left over.
    pub(crate) fn next_len(&mut self) -> Result<Option<usize>, Violation> {
        let rest = self.src.remaining();
        if self.left == 0 {
            if rest > 0 {
                return Err(Violation::TrailingBytes { n: rest });
            }
            return Ok(None);
        }
        if rest < LEN_PREFIX {
            return Err(Violation::RecordOverrun {
                len: None,
                left: rest,
            });
        }
        let mut prefix = [0; LEN_PREFIX];
        self.src.read(&mut prefix);
        let len = u32::from_le_bytes(prefix) as usize;
        let left = self.src.remaining();
        if len > left {
            return Err(Violation::RecordOverrun {
                len: Some(len),
                left,
            });
        }
        self.left -= 1;
        Ok(Some(len))
    }

    /// Reads the record whose length [`next_len`](Self::next_len) gave into `out` (exactly that
    /// long).
    pub(crate) fn read(&mut self, out: &mut [u8]) {
        self.src.read(out);
    }
}

/// The encoding a side carries, as it appears in its liveliness token: `postcard`, `plain-N`
/// or `custom`.
pub(crate) fn encoding_chunk(encoding: Encoding) -> String {
    match encoding {
        Encoding::Postcard => "postcard".to_owned(),
        Encoding::Plain { size } => format!("plain-{size}"),
        Encoding::Custom => "custom".to_owned(),
    }
}

/// Whether two sides' encoding chunks agree: equal, or either is `custom` (a hand-written
/// encoding, not compared, as sp's HELLO does).
pub(crate) fn encodings_agree(ours: &str, theirs: &str) -> bool {
    ours == theirs || ours == "custom" || theirs == "custom"
}

/// Which side a liveliness token announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A publishing gateway (`publish`).
    Pub,
    /// A subscribing gateway (`subscribe`).
    Sub,
    /// A subscribing gateway that received the last sample (END or ABORT) of the epoch in the
    /// token.
    Done,
}

impl Role {
    fn chunk(self) -> &'static str {
        match self {
            Self::Pub => "pub",
            Self::Sub => "sub",
            Self::Done => "done",
        }
    }
}

/// The token key `<key>/_sp/<role>/<id>/<encoding>` (`id` as 8 hex digits).
pub(crate) fn token_key(key: &str, role: Role, id: u32, encoding: &str) -> String {
    format!("{key}/_sp/{}/{id:08x}/{encoding}", role.chunk())
}

/// The key expression that matches every gateway token under `key`, of any role.
pub(crate) fn tokens_pattern(key: &str) -> String {
    format!("{key}/_sp/*/*/*")
}

/// A token key of `role` under `key`, parsed: its id and encoding chunk.
pub(crate) fn parse_token<'a>(token: &'a str, key: &str, role: Role) -> Option<(u32, &'a str)> {
    let rest = token.strip_prefix(key)?.strip_prefix("/_sp/")?;
    let rest = rest.strip_prefix(role.chunk())?.strip_prefix('/')?;
    let (id, encoding) = rest.split_once('/')?;
    if id.len() != 8 || encoding.contains('/') {
        return None;
    }
    Some((u32::from_str_radix(id, 16).ok()?, encoding))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(header: Header, records: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0; HEADER_LEN];
        header.encode(&mut out);
        for record in records {
            out.extend_from_slice(&(record.len() as u32).to_le_bytes());
            out.extend_from_slice(record);
        }
        out
    }

    fn records(n_records: u16) -> Header {
        Header {
            seq: 41,
            epoch: 0xdead_beef,
            kind: KIND_RECORDS,
            flags: FLAG_FIRST,
            n_records,
        }
    }

    /// Every record of a sample, or the first violation.
    fn parse(bytes: &[u8]) -> Result<(Header, Vec<Vec<u8>>), Violation> {
        let mut src = bytes;
        let header = Header::decode(&mut src)?;
        let mut records = Records::new(src, header);
        let mut out = Vec::new();
        if header.kind != KIND_RECORDS {
            return Ok((header, out));
        }
        while let Some(len) = records.next_len()? {
            let mut record = vec![0; len];
            records.read(&mut record);
            out.push(record);
        }
        Ok((header, out))
    }

    #[test]
    fn samples_round_trip() {
        let bytes = sample(records(3), &[b"one", b"", b"three"]);
        let (header, got) = parse(&bytes).unwrap();
        assert_eq!(header, records(3));
        assert_eq!(got, [&b"one"[..], b"", b"three"]);
    }

    #[test]
    fn bad_samples_are_violations() {
        assert_eq!(parse(&[0; 15]), Err(Violation::ShortSample { len: 15 }));
        for header in [
            Header {
                kind: 9,
                ..records(1)
            },
            Header {
                flags: 2,
                ..records(1)
            },
            records(0),
            Header {
                kind: KIND_END,
                ..records(1)
            },
        ] {
            let bytes = sample(header, &[]);
            assert!(matches!(parse(&bytes), Err(Violation::BadHeader { .. })));
        }
        // An END with bytes after it.
        let mut end = sample(
            Header {
                kind: KIND_END,
                n_records: 0,
                ..records(0)
            },
            &[],
        );
        assert!(parse(&end).is_ok());
        end.push(0);
        assert!(parse(&end).is_err());
        // A length past the end, a cut prefix, bytes after the last record.
        let mut long = sample(records(1), &[b"abc"]);
        long[HEADER_LEN] = 4;
        assert_eq!(
            parse(&long),
            Err(Violation::RecordOverrun {
                len: Some(4),
                left: 3
            })
        );
        let cut = sample(records(2), &[b"abc"]);
        assert_eq!(
            parse(&cut),
            Err(Violation::RecordOverrun { len: None, left: 0 })
        );
        let mut extra = sample(records(1), &[b"abc"]);
        extra.push(1);
        assert_eq!(parse(&extra), Err(Violation::TrailingBytes { n: 1 }));
    }

    #[test]
    fn tokens_name_role_id_and_encoding() {
        let enc = encoding_chunk(Encoding::Plain { size: 64 });
        let token = token_key("demo/stage", Role::Sub, 0xab, &enc);
        assert_eq!(token, "demo/stage/_sp/sub/000000ab/plain-64");
        assert_eq!(
            parse_token(&token, "demo/stage", Role::Sub),
            Some((0xab, "plain-64"))
        );
        assert_eq!(parse_token(&token, "demo/stage", Role::Pub), None);
        assert_eq!(parse_token(&token, "demo", Role::Sub), None);
        assert!(encodings_agree("postcard", "postcard"));
        assert!(encodings_agree("custom", "plain-8"));
        assert!(!encodings_agree("postcard", "plain-8"));
    }
}

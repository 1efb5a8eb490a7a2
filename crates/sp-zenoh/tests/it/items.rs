//! The values the trials send: a serde struct whose every byte follows from its sequence number
//! and stream, sizes that vary from empty to a blob, and the check a receiver makes.

use serde::{Deserialize, Serialize};

/// Every `BLOB_EVERY`th value is larger than sp's largest ring record (128 KiB by default), so
/// it goes through each local ring as a blob.
pub(crate) const BLOB_EVERY: u64 = 997;
const BLOB_LEN: usize = 300 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) stream: u32,
    pub(crate) seq: u64,
    pub(crate) data: Vec<u8>,
}

/// How large the values of a trial are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Sizes {
    /// Up to 1500 bytes, and every [`BLOB_EVERY`]th a 300 KiB blob.
    #[default]
    Mixed,
    /// Under 64 bytes.
    Small,
    /// 64 KiB each.
    Big,
}

impl Sizes {
    pub(crate) fn from_name(name: &str) -> Self {
        match name {
            "small" => Self::Small,
            "big" => Self::Big,
            _ => Self::Mixed,
        }
    }
}

/// The value `seq` of `stream`.
pub(crate) fn item(stream: u32, seq: u64, sizes: Sizes) -> Item {
    let len = match sizes {
        Sizes::Small => (seq % 48) as usize,
        Sizes::Big => 64 << 10,
        Sizes::Mixed if seq % BLOB_EVERY == BLOB_EVERY - 1 => BLOB_LEN,
        Sizes::Mixed => ((seq * 37) % 1500) as usize,
    };
    Item {
        stream,
        seq,
        data: pattern(stream, seq, len),
    }
}

fn pattern(stream: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut x = seq
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(u64::from(stream));
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The remote stage's transformation: every byte incremented, the sequence kept.
pub(crate) fn transform(item: &Item) -> Item {
    Item {
        stream: item.stream,
        seq: item.seq,
        data: item.data.iter().map(|b| b.wrapping_add(1)).collect(),
    }
}

/// Checks values as they arrive: each must be the next of its stream, byte for byte.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    /// The stream and sequence number expected next, once the first value set them.
    next: Option<(u32, u64)>,
    pub(crate) n_values: u64,
    pub(crate) first_seq: Option<u64>,
    /// The first sequence number of each stream seen.
    pub(crate) starts: Vec<(u32, u64)>,
    pub(crate) sizes: Sizes,
    pub(crate) transformed: bool,
}

impl Checker {
    pub(crate) fn new(sizes: Sizes, transformed: bool) -> Self {
        Self {
            sizes,
            transformed,
            ..Self::default()
        }
    }

    /// Checks every value `rx` delivers until the peer is gone (`PeerGone`); any other receive
    /// error is named after `what`.
    pub(crate) fn drain(&mut self, rx: &mut sp::Receiver<Item>, what: &str) -> Result<(), String> {
        loop {
            match rx.recv() {
                Ok(value) => self.check(&value)?,
                Err(sp::Error::PeerGone) => return Ok(()),
                Err(err) => return Err(format!("{what}: {err}")),
            }
        }
    }

    /// Checks `got`; the first value of a stream may start anywhere (a resumed stream starts
    /// where the publisher was), every later one must follow it.
    pub(crate) fn check(&mut self, got: &Item) -> Result<(), String> {
        match self.next {
            Some((stream, seq)) if stream == got.stream && seq != got.seq => {
                return Err(format!(
                    "stream {stream}: value {} where {seq} was expected",
                    got.seq
                ));
            }
            Some((stream, _)) if stream == got.stream => {}
            _ => {
                self.first_seq.get_or_insert(got.seq);
                self.starts.push((got.stream, got.seq));
            }
        }
        let mut want = item(got.stream, got.seq, self.sizes);
        if self.transformed {
            want = transform(&want);
        }
        if *got != want {
            return Err(format!(
                "value {} of stream {}: {} bytes differ from the {} expected",
                got.seq,
                got.stream,
                got.data.len(),
                want.data.len()
            ));
        }
        self.next = Some((got.stream, got.seq + 1));
        self.n_values += 1;
        Ok(())
    }
}

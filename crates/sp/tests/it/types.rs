//! The value types the trials send, and how each side builds and checks them from a sequence
//! number.

use serde::{Deserialize, Serialize};
use zerocopy::{FromZeros, Immutable, IntoBytes, KnownLayout};

/// A serde value: a number, a 16-character string and eight numbers, all derived from `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rec {
    pub(crate) seq: u64,
    pub(crate) name: String,
    pub(crate) values: Vec<u32>,
}

impl Rec {
    pub(crate) fn new(seq: u64) -> Self {
        Self {
            seq,
            name: format!("rec-{seq:012}"),
            values: (0..8)
                .map(|i| (seq as u32).wrapping_mul(31).wrapping_add(i))
                .collect(),
        }
    }
}

/// A plain value of 64 bytes, with an enum and a bool that zerocopy validates on receipt.
#[derive(Debug, Clone, PartialEq, Eq, FromZeros, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub(crate) struct Pod {
    pub(crate) seq: u64,
    pub(crate) side: Side,
    pub(crate) flag: bool,
    pub(crate) pad: [u8; 6],
    pub(crate) words: [u64; 6],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, FromZeros, IntoBytes, KnownLayout, Immutable)]
#[repr(u8)]
pub(crate) enum Side {
    None = 0,
    Buy = 1,
    Sell = 2,
}

sp::plain_data!(Pod);

impl Pod {
    pub(crate) fn new(seq: u64) -> Self {
        let mut pod = Self::new_zeroed();
        pod.fill(seq);
        pod
    }

    /// Writes the value for `seq` over `self` (what `send_with` does in place).
    pub(crate) fn fill(&mut self, seq: u64) {
        self.seq = seq;
        self.side = match seq % 3 {
            0 => Side::None,
            1 => Side::Buy,
            _ => Side::Sell,
        };
        self.flag = seq.is_multiple_of(3);
        for (i, word) in self.words.iter_mut().enumerate() {
            *word = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64;
        }
    }
}

/// The bytes of value `seq` of length `len`.
pub(crate) fn bytes_for(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as u8).wrapping_add((i as u8).wrapping_mul(13)))
        .collect()
}

//! What every benchmark message carries: a sequence number and a pattern, written in full by the
//! sender and read in full by the receiver.
//!
//! A message is a run of little-endian `u64` words (a tail shorter than a word is filled byte by
//! byte). Word 0 is the sequence number, with [`LAST`] set on the final message of a round. Word
//! `i > 0` is `seq * K ^ i`, so no two messages carry the same bytes and a receiver that skipped a
//! message, or read stale bytes, would fail the sequence check or the checksum. Both sides sum every
//! word they wrote or read (wrapping); the driver compares the two sums at the end of each round.
//! Filling and summing are simple loops the compiler vectorises, so their cost is that of touching
//! the memory once, which is what a real user of the transport would pay as well.

use crate::error::{Error, Result};

/// Set in word 0 of the final message of a round.
pub(crate) const LAST: u64 = 1 << 63;

/// The smallest message: one word for the sequence number.
pub(crate) const MIN_SIZE: usize = 8;

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// The sending side of a round: numbers messages and sums what it wrote.
#[derive(Debug, Default)]
pub(crate) struct Generator {
    seq: u64,
    /// Wrapping sum of every word written.
    pub(crate) checksum: u64,
    /// Messages written.
    pub(crate) n_msgs: u64,
}

/// The receiving side of a round: checks the sequence and length and sums what it read.
#[derive(Debug)]
pub(crate) struct Verifier {
    size: usize,
    next_seq: u64,
    /// Wrapping sum of every word read.
    pub(crate) checksum: u64,
    /// Messages read.
    pub(crate) n_msgs: u64,
    /// Whether the last message read carried [`LAST`].
    pub(crate) saw_last: bool,
}

impl Generator {
    /// Writes message number `self.n_msgs` over all of `buf`, flagged [`LAST`] if `last`.
    pub(crate) fn fill(&mut self, buf: &mut [u8], last: bool) {
        let seq = self.seq | if last { LAST } else { 0 };
        self.checksum = self.checksum.wrapping_add(fill(buf, seq));
        self.seq += 1;
        self.n_msgs += 1;
    }
}

impl Verifier {
    /// A verifier for messages of exactly `size` bytes.
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            next_seq: 0,
            checksum: 0,
            n_msgs: 0,
            saw_last: false,
        }
    }

    /// Reads all of `buf`: its length, its sequence number and its words.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a wrong length or an out-of-order sequence number.
    pub(crate) fn check(&mut self, buf: &[u8]) -> Result<()> {
        if buf.len() != self.size {
            return Err(Error::Corrupt(format!(
                "message {} has {} bytes, expected {}",
                self.next_seq,
                buf.len(),
                self.size
            )));
        }
        let (word0, sum) = sum(buf);
        let seq = word0 & !LAST;
        if seq != self.next_seq {
            return Err(Error::Corrupt(format!(
                "message {seq} arrived where {} was expected",
                self.next_seq
            )));
        }
        self.next_seq += 1;
        self.n_msgs += 1;
        self.checksum = self.checksum.wrapping_add(sum);
        self.saw_last = word0 & LAST != 0;
        Ok(())
    }
}

/// Writes the message with word 0 = `seq` over all of `buf`; returns the sum of what it wrote.
pub(crate) fn fill(buf: &mut [u8], seq: u64) -> u64 {
    let base = (seq & !LAST).wrapping_mul(K);
    let mut words = buf.chunks_exact_mut(8);
    let mut total = 0u64;
    for (i, word) in (&mut words).enumerate() {
        let value = if i == 0 { seq } else { base ^ i as u64 };
        word.copy_from_slice(&value.to_le_bytes());
        total = total.wrapping_add(value);
    }
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte = (base as u8) ^ i as u8;
        total = total.wrapping_add(u64::from(*byte));
    }
    total
}

/// Reads every byte of `buf`: returns word 0 and the sum over the words (and the tail's bytes).
pub(crate) fn sum(buf: &[u8]) -> (u64, u64) {
    let mut words = buf.chunks_exact(8);
    let mut total = 0u64;
    for word in &mut words {
        let bytes: [u8; 8] = word.try_into().unwrap_or([0; 8]);
        total = total.wrapping_add(u64::from_le_bytes(bytes));
    }
    for byte in words.remainder() {
        total = total.wrapping_add(u64::from(*byte));
    }
    let word0 = buf
        .first_chunk::<8>()
        .map_or(u64::MAX, |w| u64::from_le_bytes(*w));
    (word0, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_sum_matches_sender_sum() {
        for size in [8, 13, 64, 1024, 4099] {
            let mut generator = Generator::default();
            let mut verifier = Verifier::new(size);
            let mut buf = vec![0; size];
            for i in 0..5 {
                generator.fill(&mut buf, i == 4);
                verifier.check(&buf).unwrap();
            }
            assert_eq!(generator.checksum, verifier.checksum);
            assert_eq!(verifier.n_msgs, 5);
            assert!(verifier.saw_last);
        }
    }

    #[test]
    fn skipped_or_stale_message_is_caught() {
        let mut generator = Generator::default();
        let mut verifier = Verifier::new(64);
        let mut buf = vec![0; 64];
        generator.fill(&mut buf, false);
        verifier.check(&buf).unwrap();
        // The same bytes again: a stale read.
        assert!(matches!(verifier.check(&buf), Err(Error::Corrupt(_))));
        // A short message.
        assert!(matches!(verifier.check(&buf[..32]), Err(Error::Corrupt(_))));
    }

    #[test]
    fn one_flipped_byte_changes_the_sum() {
        let mut buf = vec![0; 256];
        let sent = fill(&mut buf, 7);
        buf[100] ^= 1;
        assert_ne!(sum(&buf).1, sent);
    }
}

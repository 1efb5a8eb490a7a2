//! An sp-shm peer written from `docs/protocol.md` (version 2), byte by byte, without sp-shm: the
//! constants of the control block, the header word and the handshake messages; a ring made by
//! hand ([`Ring`], optionally with a [`Flaw`] the other side must refuse); the handshake steps
//! ([`Ring::send_offer`], [`recv_offer`], [`send_ready`], [`recv_ready`]); and a producer that
//! commits records by the document's rules ([`HandProducer`]) into memory it can also scribble
//! on.
//!
//! Everything is a plain function of the document, so that a test that passes against sp-shm
//! shows sp-shm agrees with the document, not merely with itself.

mod handshake;
mod producer;
mod ring;
mod words;

pub use handshake::{PeerRing, exchange_ready, recv_offer, recv_ready, send_ready};
pub use producer::HandProducer;
pub use ring::{Flaw, Ring};
pub use words::Words;

/// The protocol version, in the control block and the OFFER.
pub const VERSION: u32 = 2;
/// The layout word: 128-byte lines (low 16 bits), a control file of one 4096-byte page.
pub const LAYOUT: u32 = 128 | (1 << 16);
/// The size of a control memfd.
pub const CTRL_SIZE: usize = 4096;
/// The control block's magic, `SPSHMCTL`, at offset 0.
pub const CTRL_MAGIC: [u8; 8] = *b"SPSHMCTL";
/// The OFFER's magic.
pub const OFFER_MAGIC: [u8; 8] = *b"SPSHMOFR";
/// The READY's magic.
pub const READY_MAGIC: [u8; 8] = *b"SPSHMRDY";
/// Bytes of an OFFER.
pub const OFFER_LEN: usize = 40;
/// Bytes of a READY.
pub const READY_LEN: usize = 16;

/// Control block offset of version 1's tail line; reserved in version 2: nobody reads or writes
/// it.
pub const RESERVED: usize = 128;
/// Control block offset of the consumer's published head.
pub const HEAD: usize = 256;
/// Control block offset of the consumer's waiting flag.
pub const CONSUMER_WAITING: usize = 384;
/// Control block offset of the producer's waiting flag.
pub const PRODUCER_WAITING: usize = 512;

/// The commit bit of a header word (bit 31, in the `len` half): set in every header, so a header
/// word is never zero; a non-zero word without it is corrupt.
pub const COMMITTED: u64 = 1 << 31;
/// The kind of a padding record.
pub const PADDING: u32 = u32::MAX;

/// A committed header word: `len | COMMITTED` in the low half, `kind` in the high half.
///
/// # Panics
/// If `len` does not fit below the commit bit.
pub fn header(len: u64, kind: u32) -> u64 {
    assert!(len < COMMITTED, "a record length of {len}");
    len | COMMITTED | (u64::from(kind) << 32)
}

/// An OFFER for a ring of `capacity` bytes whose records carry at most `max_payload`.
pub fn offer_bytes(capacity: u64, max_payload: u64) -> [u8; OFFER_LEN] {
    let mut out = [0u8; OFFER_LEN];
    out[0..8].copy_from_slice(&OFFER_MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&LAYOUT.to_le_bytes());
    out[16..24].copy_from_slice(&capacity.to_le_bytes());
    out[24..32].copy_from_slice(&max_payload.to_le_bytes());
    out[32..40].copy_from_slice(&(CTRL_SIZE as u64).to_le_bytes());
    out
}

/// A READY with `status` (0 accepts; otherwise a refusal code).
pub fn ready_bytes(status: u32) -> [u8; READY_LEN] {
    let mut out = [0u8; READY_LEN];
    out[0..8].copy_from_slice(&READY_MAGIC);
    out[8..12].copy_from_slice(&status.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/protocol.md, "Records": `len = 1, kind = 2` is the bytes `01 00 00 80 02 00 00 00`.
    #[test]
    fn header_word_is_the_documents_example() {
        assert_eq!(header(1, 2).to_le_bytes(), [1, 0, 0, 0x80, 2, 0, 0, 0]);
    }

    /// docs/protocol.md, "Control block": the magic as a u64 and the layout word.
    #[test]
    fn control_block_words_are_the_documents() {
        assert_eq!(u64::from_le_bytes(CTRL_MAGIC), 0x4C54_434D_4853_5053);
        assert_eq!(LAYOUT, 0x0001_0080);
        assert_eq!(
            (RESERVED, HEAD, CONSUMER_WAITING, PRODUCER_WAITING),
            (128, 256, 384, 512)
        );
    }

    /// docs/protocol.md, "OFFER" and "READY": field by field.
    #[test]
    fn offer_and_ready_are_laid_out_as_the_document_says() {
        let offer = offer_bytes(1 << 16, 1024);
        assert_eq!(&offer[0..8], b"SPSHMOFR");
        assert_eq!(offer[8..12], 2u32.to_le_bytes());
        assert_eq!(offer[12..16], 0x0001_0080u32.to_le_bytes());
        assert_eq!(offer[16..24], (1u64 << 16).to_le_bytes());
        assert_eq!(offer[24..32], 1024u64.to_le_bytes());
        assert_eq!(offer[32..40], 4096u64.to_le_bytes());
        let ready = ready_bytes(0xFFFF);
        assert_eq!(&ready[0..8], b"SPSHMRDY");
        assert_eq!(ready[8..12], 0xFFFFu32.to_le_bytes());
        assert_eq!(ready[12..16], [0; 4]);
    }
}

//! Where a value's encoding goes ([`Sink`]): [`Out`], the start of a slice (a ring slot);
//! [`Pieces`], a scratch buffer handed on piece by piece (a blob's memfd, written as the encoding
//! is produced); and [`Count`], nowhere (the size pass).
//!
//! [`Out`] and [`Pieces`] write a varint in place when ten bytes are at hand, and copy runs of
//! bytes (strings, byte buffers) with [`sp_core::copy_bytes`] (`memcpy` of a long run into a ring
//! slot can otherwise hit `rep movsb`'s slow case, see there).

use postcard::{Error, Result};

/// The bytes [`Pieces`] gathers before handing them on: each piece is one `write(2)` to a blob,
/// so larger pieces make fewer calls; small enough to stay in the core's cache.
pub(super) const PIECE: usize = 128 << 10;

/// The longest varint (a `u64`'s, and a length's).
const VARINT_MAX: usize = 10;

/// Where the [encoder](super::encoder) writes.
pub(super) trait Sink {
    /// What the sink gives when the encoding is done.
    type Output;

    /// Appends one byte.
    fn push(&mut self, byte: u8) -> Result<()>;

    /// Appends `bytes`.
    fn extend(&mut self, bytes: &[u8]) -> Result<()>;

    /// Appends `v` as a varint: seven bits a byte, least significant first, the top bit set on
    /// every byte but the last.
    fn varint(&mut self, v: u64) -> Result<()>;

    /// Ends the encoding.
    fn finish(self) -> Result<Self::Output>;
}

/// Writes `v` as a varint at the start of `dst`; returns its length.
#[inline(always)]
fn put_varint(dst: &mut [u8; VARINT_MAX], mut v: u64) -> usize {
    let mut i = 0;
    // At most nine rounds: each takes seven of the 64 bits.
    while v >= 0x80 {
        dst[i] = v as u8 | 0x80;
        v >>= 7;
        i += 1;
    }
    dst[i] = v as u8;
    i + 1
}

/// Writes `v` as a varint at `buf[*used..]` and advances `used`, if ten bytes are there (`used`
/// never passes the end of `buf`); whether it did.
#[inline(always)]
fn put_varint_at(buf: &mut [u8], used: &mut usize, v: u64) -> bool {
    match buf[*used..].first_chunk_mut::<VARINT_MAX>() {
        Some(dst) => {
            *used += put_varint(dst, v);
            true
        }
        None => false,
    }
}

/// Appends `v` as a varint through `extend`: the path for a sink with fewer than ten bytes left
/// before it must flush or fail.
#[cold]
fn varint_through(sink: &mut impl Sink, v: u64) -> Result<()> {
    let mut buf = [0; VARINT_MAX];
    let n = put_varint(&mut buf, v);
    sink.extend(&buf[..n])
}

/// The encoding written into the start of a slice, as `postcard::to_slice` writes it; the output
/// is its length.
pub(super) struct Out<'a> {
    buf: &'a mut [u8],
    used: usize,
}

impl<'a> Out<'a> {
    pub(super) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, used: 0 }
    }
}

impl Sink for Out<'_> {
    type Output = usize;

    #[inline(always)]
    fn push(&mut self, byte: u8) -> Result<()> {
        let slot = self
            .buf
            .get_mut(self.used)
            .ok_or(Error::SerializeBufferFull)?;
        *slot = byte;
        self.used += 1;
        Ok(())
    }

    #[inline(always)]
    fn extend(&mut self, bytes: &[u8]) -> Result<()> {
        let end = self.used.saturating_add(bytes.len());
        let dst = self
            .buf
            .get_mut(self.used..end)
            .ok_or(Error::SerializeBufferFull)?;
        sp_core::copy_bytes(dst, bytes);
        self.used = end;
        Ok(())
    }

    #[inline(always)]
    fn varint(&mut self, v: u64) -> Result<()> {
        if put_varint_at(self.buf, &mut self.used, v) {
            Ok(())
        } else {
            varint_through(self, v)
        }
    }

    fn finish(self) -> Result<usize> {
        Ok(self.used)
    }
}

/// The encoding gathered in `buf` and handed to `sink` whenever `buf` is full (and at the end); a
/// run longer than `buf` goes to `sink` directly. The output is the number of bytes handed over.
/// A sink that refuses a piece (returns `false`) ends the encoding with `SerializeBufferFull`.
pub(super) struct Pieces<'a> {
    buf: &'a mut [u8],
    used: usize,
    sink: &'a mut dyn FnMut(&[u8]) -> bool,
    /// Bytes handed to `sink` so far.
    sent: usize,
}

impl<'a> Pieces<'a> {
    /// `buf` must not be empty.
    pub(super) fn new(buf: &'a mut [u8], sink: &'a mut dyn FnMut(&[u8]) -> bool) -> Self {
        debug_assert!(!buf.is_empty());
        Self {
            buf,
            used: 0,
            sink,
            sent: 0,
        }
    }

    /// Hands `bytes` to the sink.
    fn hand_on(sink: &mut dyn FnMut(&[u8]) -> bool, sent: &mut usize, bytes: &[u8]) -> Result<()> {
        if !sink(bytes) {
            return Err(Error::SerializeBufferFull);
        }
        *sent += bytes.len();
        Ok(())
    }

    /// Hands what `buf` holds to the sink.
    #[cold]
    fn flush(&mut self) -> Result<()> {
        if self.used > 0 {
            Self::hand_on(self.sink, &mut self.sent, &self.buf[..self.used])?;
            self.used = 0;
        }
        Ok(())
    }
}

impl Sink for Pieces<'_> {
    type Output = usize;

    #[inline(always)]
    fn push(&mut self, byte: u8) -> Result<()> {
        if self.used == self.buf.len() {
            self.flush()?;
        }
        self.buf[self.used] = byte;
        self.used += 1;
        Ok(())
    }

    #[inline(always)]
    fn extend(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.buf.len() - self.used {
            self.flush()?;
            if bytes.len() > self.buf.len() {
                return Self::hand_on(self.sink, &mut self.sent, bytes);
            }
        }
        let end = self.used + bytes.len();
        sp_core::copy_bytes(&mut self.buf[self.used..end], bytes);
        self.used = end;
        Ok(())
    }

    #[inline(always)]
    fn varint(&mut self, v: u64) -> Result<()> {
        if put_varint_at(self.buf, &mut self.used, v) {
            Ok(())
        } else {
            varint_through(self, v)
        }
    }

    fn finish(mut self) -> Result<usize> {
        self.flush()?;
        Ok(self.sent)
    }
}

/// Counts the bytes of the encoding and writes none.
#[derive(Default)]
pub(super) struct Count(usize);

impl Sink for Count {
    type Output = usize;

    #[inline(always)]
    fn push(&mut self, _byte: u8) -> Result<()> {
        self.0 += 1;
        Ok(())
    }

    #[inline(always)]
    fn extend(&mut self, bytes: &[u8]) -> Result<()> {
        self.0 += bytes.len();
        Ok(())
    }

    #[inline(always)]
    fn varint(&mut self, v: u64) -> Result<()> {
        // Seven bits a byte, at least one byte.
        self.0 += (u64::BITS - (v | 1).leading_zeros()).div_ceil(7) as usize;
        Ok(())
    }

    fn finish(self) -> Result<usize> {
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::encoder::encode;

    /// Everything a sink was handed, and the size of each piece.
    fn gathered(buf_len: usize, value: &impl serde::Serialize) -> (Vec<u8>, Vec<usize>) {
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        let mut sink = |piece: &[u8]| {
            all.extend_from_slice(piece);
            sizes.push(piece.len());
            true
        };
        let mut buf = vec![0u8; buf_len];
        let n = encode(value, Pieces::new(&mut buf, &mut sink)).unwrap();
        assert_eq!(n, all.len());
        (all, sizes)
    }

    #[test]
    fn pieces_hand_on_exactly_what_postcard_writes_whatever_the_buffer() {
        let value = (
            7u64,
            "a string".to_string(),
            vec![u32::MAX; 100],
            serde_bytes::ByteBuf::from(vec![9u8; 300]),
            -5i64,
        );
        let mut out = vec![0u8; 4096];
        let whole = postcard::to_slice(&value, &mut out).unwrap();
        for buf_len in [1, 2, 9, 10, 11, 64, 299, 300, 301, 4096] {
            let (all, sizes) = gathered(buf_len, &value);
            assert_eq!(&all[..], &whole[..], "buffer of {buf_len}");
            // Only a run longer than the buffer is handed on whole (every varint fits from 10).
            if buf_len >= VARINT_MAX {
                assert!(sizes.iter().all(|&n| n <= buf_len || n == 300), "{sizes:?}");
            }
        }
    }

    #[test]
    fn a_refused_piece_ends_the_encoding() {
        let mut calls = 0;
        let mut sink = |_: &[u8]| {
            calls += 1;
            calls < 3
        };
        let mut buf = [0u8; 16];
        let got = encode(&vec![1u64 << 60; 100], Pieces::new(&mut buf, &mut sink));
        assert_eq!(got, Err(postcard::Error::SerializeBufferFull));
        assert_eq!(calls, 3);
    }
}

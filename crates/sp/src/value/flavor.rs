//! Where postcard writes a value: [`Out`], the start of a slice (a ring slot), and [`Pieces`], a
//! scratch buffer handed on piece by piece (a blob's memfd, written as the encoding is produced).
//!
//! Both copy runs of bytes (strings, byte buffers) with [`sp_core::copy_bytes`] (`memcpy` of a
//! long run into a ring slot can otherwise hit `rep movsb`'s slow case, see there) and varints
//! byte by byte ([`copy_short`]).

/// The bytes [`Pieces`] gathers before handing them on: each piece is one `write(2)` to a blob,
/// so larger pieces make fewer calls; small enough to stay in the core's cache.
pub(super) const PIECE: usize = 128 << 10;

/// The longest varint postcard writes for the integers up to `u64` (and for lengths): the runs
/// copied byte by byte.
const VARINT_MAX: usize = 10;

/// Copies `bytes` into `dst` (of the same length).
///
/// postcard hands over each integer as a varint it has just built byte by byte in a stack
/// buffer. Copied with loads wider than a byte, those loads wait for the byte stores to retire
/// (store forwarding fails), twice per integer; byte loads forward. Unrolled, with no call:
/// inlined into the serializer (`inline(always)`, which the generic code of another crate does
/// not otherwise get).
#[inline(always)]
fn copy_short(dst: &mut [u8], bytes: &[u8]) {
    if bytes.len() <= VARINT_MAX {
        for i in 0..VARINT_MAX {
            if i < bytes.len() {
                dst[i] = bytes[i];
            }
        }
    } else {
        sp_core::copy_bytes(dst, bytes);
    }
}

/// postcard's output into the start of a slice, as `postcard::to_slice` writes it.
pub(super) struct Out<'a> {
    buf: &'a mut [u8],
    used: usize,
}

impl<'a> Out<'a> {
    pub(super) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, used: 0 }
    }
}

impl postcard::ser_flavors::Flavor for Out<'_> {
    type Output = usize;

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        let slot = self
            .buf
            .get_mut(self.used)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        *slot = byte;
        self.used += 1;
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        let end = self.used.saturating_add(bytes.len());
        let dst = self
            .buf
            .get_mut(self.used..end)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        copy_short(dst, bytes);
        self.used = end;
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.used)
    }
}

/// postcard's output gathered in `buf` and handed to `sink` whenever `buf` is full (and at the
/// end); a run longer than `buf` goes to `sink` directly. The output is the number of bytes
/// handed over. A sink that refuses a piece (returns `false`) ends the encoding with
/// `SerializeBufferFull`.
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
    fn hand_on(
        sink: &mut dyn FnMut(&[u8]) -> bool,
        sent: &mut usize,
        bytes: &[u8],
    ) -> postcard::Result<()> {
        if !sink(bytes) {
            return Err(postcard::Error::SerializeBufferFull);
        }
        *sent += bytes.len();
        Ok(())
    }

    /// Hands what `buf` holds to the sink.
    #[cold]
    fn flush(&mut self) -> postcard::Result<()> {
        if self.used > 0 {
            Self::hand_on(self.sink, &mut self.sent, &self.buf[..self.used])?;
            self.used = 0;
        }
        Ok(())
    }
}

impl postcard::ser_flavors::Flavor for Pieces<'_> {
    type Output = usize;

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        if self.used == self.buf.len() {
            self.flush()?;
        }
        self.buf[self.used] = byte;
        self.used += 1;
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() > self.buf.len() - self.used {
            self.flush()?;
            if bytes.len() > self.buf.len() {
                return Self::hand_on(self.sink, &mut self.sent, bytes);
            }
        }
        let end = self.used + bytes.len();
        copy_short(&mut self.buf[self.used..end], bytes);
        self.used = end;
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<usize> {
        self.flush()?;
        Ok(self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let n = postcard::serialize_with_flavor(value, Pieces::new(&mut buf, &mut sink)).unwrap();
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
        let got = postcard::serialize_with_flavor(
            &vec![1u64 << 60; 100],
            Pieces::new(&mut buf, &mut sink),
        );
        assert_eq!(got, Err(postcard::Error::SerializeBufferFull));
        assert_eq!(calls, 3);
    }
}

//! Copying payloads in pieces small enough that `memcpy` never takes them with `rep movsb` (why:
//! [`copy_bytes`]). Buffers of one size allocated one after the other sit at the slow distance,
//! as do a page-aligned mapping and an allocation glibc maps 16 bytes past a page boundary.

/// The largest piece handed to `memcpy` at once. Measured here (docs/benchmarks.md): copies of
/// 2 KiB ran at full speed at every distance, copies of 4 KiB and more did not.
pub(crate) const PIECE: usize = 2048;

/// Copies `src` into `dst` as `dst.copy_from_slice(src)` does, in pieces of at most 2 KiB: each
/// piece is copied by `memcpy`'s vector loop, never by `rep movsb`, which glibc (2.36 here) uses
/// for larger copies and which on AMD Zen runs over ten times slower when the destination lies 1
/// to 31 bytes ahead of the source modulo a page (glibc bug 30994). At other distances the pieces
/// were as fast as one `memcpy` at every size measured here. sp copies payloads with it.
///
/// # Panics
/// If the two lengths differ, as `<[u8]>::copy_from_slice` does.
///
/// # Examples
/// ```
/// let src = vec![7u8; 100_000];
/// let mut dst = vec![0u8; 100_000];
/// sp_core::copy_bytes(&mut dst, &src);
/// assert_eq!(dst, src);
/// ```
#[inline]
pub fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_bytes: lengths differ");
    let n = src.len();
    if n <= 16 {
        copy_short(dst, src);
        return;
    }
    if n <= PIECE {
        dst.copy_from_slice(src);
        return;
    }
    for (dst, src) in dst.chunks_mut(PIECE).zip(src.chunks(PIECE)) {
        dst.copy_from_slice(src);
    }
}

/// Copies up to 16 bytes with loads and stores of fixed size (two that overlap when the length
/// is not a power of two), not a call of `memcpy`: a serializer's short fields arrive a few
/// bytes at a time, and a call per field costs more than the copy.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..].copy_from_slice(&src[n - 4..]);
    } else if n > 0 {
        // 1 to 3 bytes: the first, the middle and the last cover them.
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
}

/// Appends `src` to `dst` as `dst.extend_from_slice(src)` does: one reservation, then pieces of
/// at most 2 KiB (see [`copy_bytes`]).
///
/// # Examples
/// ```
/// let mut v = b"head ".to_vec();
/// sp_core::extend_bytes(&mut v, &[1u8; 5000]);
/// assert_eq!(v.len(), 5005);
/// ```
#[inline]
pub fn extend_bytes(dst: &mut Vec<u8>, src: &[u8]) {
    dst.reserve(src.len());
    for piece in src.chunks(PIECE) {
        dst.extend_from_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_byte_at_every_piece_boundary() {
        let lens = (0..=40).chain([PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 5]);
        for len in lens {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut dst = vec![0u8; len];
            copy_bytes(&mut dst, &src);
            assert_eq!(dst, src);
            let mut v = vec![9u8; 3];
            extend_bytes(&mut v, &src);
            assert_eq!(&v[..3], &[9, 9, 9]);
            assert_eq!(&v[3..], &src[..]);
        }
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn lengths_must_match() {
        copy_bytes(&mut [0u8; 3], &[1u8; 4]);
    }
}

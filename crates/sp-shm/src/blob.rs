//! Immutable blobs of any size handed over by descriptor: zero-copy for data larger than a ring.
//!
//! The sender fills an anonymous memfd (through a mapping it then unmaps, [`Blob::build`], or
//! with `write(2)`, [`BlobWriter`]) and seals it `WRITE | SHRINK | GROW | SEAL`
//! (`F_SEAL_WRITE` is refused while any writable shared mapping exists, so after it succeeds
//! nobody, the sender included, can change the bytes again). The memfd travels by `SCM_RIGHTS`
//! in a 16-byte BLOB message on the control channel. The receiver checks the seals and the size
//! against the message and maps it read-only. Because the bytes are immutable, a blob derefs to a
//! plain `&[u8]` with no trust assumption: the pattern of shmem-ipc and Wayland's `wl_shm` pools,
//! made immutable.

#![allow(unsafe_code)] // Maps a sealed memfd; `memmap2::MmapOptions::map` is unsafe.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use memmap2::{Mmap, MmapOptions};
use rustix::fs::SealFlags;
use sp_core::{Channel, Message};

use crate::error::{Error, RefuseReason, Result};
use crate::region::{self, BASE_SEALS};

/// First 8 bytes of a BLOB message.
pub const BLOB_MAGIC: [u8; 8] = *b"SPSHMBLB";
/// Length of a BLOB message in bytes.
pub const BLOB_MSG_LEN: usize = 16;
/// The seals a blob must carry.
const BLOB_SEALS: SealFlags = BASE_SEALS.union(SealFlags::WRITE);

/// A blob whose bytes are appended with `write(2)` as they are produced (an encoder's output,
/// in pieces), then sealed by [`finish`](Self::finish).
///
/// Cheaper than [`Blob::build`] for large blobs: `write` allocates the memfd's pages without
/// clearing them first (each is written whole) and sets up no page tables, where a mapping
/// costs a fault or a cleared page per page and a `munmap`. The writer holds no mapping, so the
/// seals go on at once. Dropped unfinished, it closes the memfd and nothing is left.
///
/// # Examples
/// ```
/// let mut writer = sp_shm::BlobWriter::new()?;
/// writer.append(b"in ")?;
/// writer.append(b"pieces")?;
/// assert_eq!(&*writer.finish()?, b"in pieces");
/// # Ok::<(), sp_shm::Error>(())
/// ```
#[derive(Debug)]
pub struct BlobWriter {
    fd: OwnedFd,
    len: u64,
    /// Where bytes at a slow distance are staged ([`slow_distance`]); empty until needed.
    bounce: Vec<u8>,
}

/// A page: a memfd's pages lie at file offsets that are multiples of it.
const PAGE: usize = 4096;

/// The most bytes staged in the bounce buffer at once.
const BOUNCE: usize = 64 << 10;

/// Whether the kernel's copy of `write(2)` from `src` to file offset `offset` runs at the slow
/// distance: the destination 1 to 31 bytes ahead of the source modulo a page, where `rep movsb`
/// (which the kernel copies with too) runs over ten times slower on AMD Zen (see
/// [`sp_core::copy_bytes`]; `write` of 1 MiB into a memfd from a source 8 bytes short of a page
/// boundary, measured here: 3.0 GB/s, against 12.5–14.7 at the other distances tried). A
/// page-cache page is page-aligned, so the destination's place in its page is the offset's.
fn slow_distance(offset: u64, src: *const u8) -> bool {
    let distance = (offset as usize).wrapping_sub(src as usize) % PAGE;
    (1..32).contains(&distance)
}

impl BlobWriter {
    /// `memfd_create(2)`: an empty blob to append to.
    ///
    /// # Errors
    /// When descriptors run out.
    pub fn new() -> Result<Self> {
        Ok(Self {
            fd: region::create_memfd("sp-shm-blob", 0, false)?,
            len: 0,
            bounce: Vec::new(),
        })
    }

    /// `write(2)`: appends `bytes`. Bytes that would be copied at the slow distance (longer than
    /// 2 KiB, which every distance copies fast) are first copied in pieces by
    /// [`sp_core::copy_bytes`] to a place at distance zero.
    ///
    /// # Errors
    /// When memory runs out (`ENOSPC`, `ENOMEM`, or the file size limit); the writer is then
    /// of no further use.
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() <= 2048 || !slow_distance(self.len, bytes.as_ptr()) {
            return write_all(&self.fd, &mut self.len, bytes);
        }
        if self.bounce.is_empty() {
            self.bounce = vec![0; BOUNCE + PAGE];
        }
        for piece in bytes.chunks(BOUNCE) {
            // The place in the bounce buffer that lies where the piece lands in its page.
            let at = (self.len as usize).wrapping_sub(self.bounce.as_ptr() as usize) % PAGE;
            let staged = &mut self.bounce[at..at + piece.len()];
            sp_core::copy_bytes(staged, piece);
            write_all(&self.fd, &mut self.len, staged)?;
        }
        Ok(())
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Seals the memfd (`WRITE | SHRINK | GROW | SEAL`) and maps it read-only: the blob.
    ///
    /// # Errors
    /// When sealing or mapping fails.
    pub fn finish(self) -> Result<Blob> {
        region::add_seals(&self.fd, BLOB_SEALS)?;
        let len =
            usize::try_from(self.len).map_err(|_| Error::Refused(RefuseReason::SizeMismatch))?;
        Blob::map(self.fd, len, false)
    }
}

/// Writes all of `bytes` at the end of the memfd `fd`, `len` bytes long so far.
fn write_all(fd: &OwnedFd, len: &mut u64, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        // The memfd is its writer's alone and nothing else moves its offset: every write lands
        // at the end of what was written before.
        let n = rustix::io::retry_on_intr(|| rustix::io::write(fd, bytes))?;
        if n == 0 {
            // Not for a memfd with room; a loop that made no progress would never end.
            return Err(rustix::io::Errno::NOSPC.into());
        }
        *len += n as u64;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// A sealed, immutable, read-only mapped memfd.
///
/// # Examples
/// ```
/// let (a, mut b) = sp_core::Channel::pair(sp_core::SocketKind::SeqPacket)?;
/// let blob = sp_shm::Blob::build(1 << 20, |bytes| bytes.fill(7))?;
/// blob.send(&a)?;
/// let got = sp_shm::Blob::recv(&mut b)?;
/// assert_eq!(got.len(), 1 << 20);
/// assert!(got.iter().all(|&byte| byte == 7));
/// # Ok::<(), sp_shm::Error>(())
/// ```
#[derive(Debug)]
pub struct Blob {
    fd: OwnedFd,
    map: Option<Mmap>,
    len: usize,
}

impl Blob {
    /// A blob holding a copy of `bytes`.
    ///
    /// # Errors
    /// When memory or descriptors run out.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut writer = BlobWriter::new()?;
        writer.append(bytes)?;
        writer.finish()
    }

    /// `memfd_create(2)`, `mmap(2)`, `munmap(2)`, then `fcntl(F_ADD_SEALS)` with
    /// `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`: a blob of `len` bytes filled in
    /// place by `fill` (zero-initialised), then made immutable.
    ///
    /// # Errors
    /// When memory or descriptors run out.
    ///
    /// # References
    /// [memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html),
    /// [fcntl(2) file sealing](https://man7.org/linux/man-pages/man2/fcntl.2.html)
    #[doc(alias = "F_SEAL_WRITE")]
    pub fn build(len: usize, fill: impl FnOnce(&mut [u8])) -> Result<Self> {
        Self::build_up_to(len, |bytes| {
            fill(bytes);
            bytes.len()
        })
    }

    /// As [`build`](Self::build), for a length known only once the bytes are written: `fill`
    /// gets `max_len` zeroed bytes and returns how many it used; the memfd is cut to that
    /// length (`ftruncate(2)`, before the seals forbid it), then sealed. Saves a pass over a
    /// value whose encoded size is costly to compute in advance. A return above `max_len` is
    /// taken as `max_len`.
    ///
    /// # Errors
    /// When memory or descriptors run out.
    pub fn build_up_to(max_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<Self> {
        let fd = region::create_memfd("sp-shm-blob", max_len, false)?;
        let len = if max_len > 0 {
            // SAFETY: the memfd is ours alone and not yet sealed or shared; nobody else can
            // resize or write it while this private writable mapping lives. Populated: the pages
            // are allocated in one system call instead of one fault each while `fill` writes.
            let mut map = unsafe { MmapOptions::new().len(max_len).populate().map_mut(&fd)? };
            let len = fill(&mut map).min(max_len);
            // `F_SEAL_WRITE` fails with EBUSY while a writable shared mapping exists.
            drop(map);
            len
        } else {
            // Nothing to write, but `fill` runs, as it does for a non-empty blob.
            fill(&mut []);
            0
        };
        if len < max_len {
            rustix::fs::ftruncate(&fd, len as u64)?;
        }
        region::add_seals(&fd, BLOB_SEALS)?;
        Self::map(fd, len, false)
    }

    /// Checks a received memfd (seals `WRITE | SHRINK | GROW | SEAL`, exactly `len` bytes) and
    /// maps it read-only.
    ///
    /// # Errors
    /// [`Error::Refused`] when a check fails.
    pub fn from_fd(fd: OwnedFd, len: u64) -> Result<Self> {
        region::check_memfd(&fd, BLOB_SEALS, len)?;
        let len = usize::try_from(len).map_err(|_| Error::Refused(RefuseReason::SizeMismatch))?;
        Self::map(fd, len, true)
    }

    /// Maps the sealed memfd read-only; `populate` for a received blob, which its reader reads
    /// whole (its pages mapped by one system call instead of one fault each), not for a built
    /// one, which its sender usually only sends: mapping its pages again would be work done for
    /// nothing on every blob.
    fn map(fd: OwnedFd, len: usize, populate: bool) -> Result<Self> {
        let map = if len == 0 {
            None
        } else {
            let mut options = MmapOptions::new();
            options.len(len);
            if populate {
                options.populate();
            }
            // SAFETY: the memfd is sealed against writes, shrinking and growing (checked or
            // applied by the callers), so its `len` bytes can neither change nor disappear while
            // mapped: a `&[u8]` over them is sound.
            Some(unsafe { options.map(&fd)? })
        };
        Ok(Self { fd, map, len })
    }

    /// `sendmsg(2)` with `SCM_RIGHTS`: sends the blob's descriptor in a BLOB message.
    ///
    /// # Errors
    /// As [`sp_core::Channel::send`].
    pub fn send(&self, channel: &Channel) -> Result<()> {
        let mut msg = [0u8; BLOB_MSG_LEN];
        msg[0..8].copy_from_slice(&BLOB_MAGIC);
        msg[8..16].copy_from_slice(&(self.len as u64).to_le_bytes());
        channel.send(&msg, &[self.fd.as_fd()])?;
        Ok(())
    }

    /// Receives a BLOB message and checks its memfd.
    ///
    /// # Errors
    /// [`Error::Refused`] for a message that is not a blob or a memfd that fails the checks;
    /// otherwise as [`sp_core::Channel::recv`].
    pub fn recv(channel: &mut Channel) -> Result<Self> {
        Self::from_message(channel.recv()?)
    }

    /// As [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`](sp_core::RecvTimeoutError::Timeout); otherwise `Broken` as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(
        channel: &mut Channel,
        timeout: Duration,
    ) -> Result<Self, crate::RecvTimeoutError> {
        let msg = channel
            .recv_timeout(timeout)
            .map_err(|err| err.map_broken(Error::from))?;
        Ok(Self::from_message(msg)?)
    }

    /// Parses a BLOB message received by other means.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn from_message(msg: Message) -> Result<Self> {
        let Message { bytes, fds } = msg;
        if bytes.len() != BLOB_MSG_LEN || bytes[0..8] != BLOB_MAGIC {
            return Err(Error::Refused(RefuseReason::BadMagic));
        }
        let Ok::<[OwnedFd; 1], _>([fd]) = fds.try_into() else {
            return Err(Error::Refused(RefuseReason::WrongFdCount));
        };
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[8..16]);
        Self::from_fd(fd, u64::from_le_bytes(len))
    }

    /// The blob's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl std::ops::Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsFd for Blob {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_is_immutable() {
        let blob = Blob::from_bytes(b"immutable").unwrap();
        assert_eq!(&*blob, b"immutable");
        assert!(rustix::fs::ftruncate(&blob, 0).is_err());
        assert!(rustix::io::pwrite(&blob, b"X", 0).is_err());
        assert!(
            memmap2::MmapOptions::new()
                .len(9)
                .map_raw(std::os::fd::AsRawFd::as_raw_fd(&blob.fd))
                .is_err()
        );
    }

    #[test]
    fn a_blob_built_up_to_a_bound_is_cut_to_what_was_written_then_sealed() {
        let blob = Blob::build_up_to(1 << 20, |bytes| {
            bytes[..5].copy_from_slice(b"short");
            5
        })
        .unwrap();
        assert_eq!(&*blob, b"short");
        let stat = rustix::fs::fstat(&blob).unwrap();
        assert_eq!(stat.st_size, 5);
        assert!(rustix::fs::ftruncate(&blob, 0).is_err());
        assert!(rustix::io::pwrite(&blob, b"X", 0).is_err());
        // A checked receiver takes it at its real length.
        let fd = rustix::io::fcntl_dupfd_cloexec(&blob, 0).unwrap();
        assert_eq!(&*Blob::from_fd(fd, 5).unwrap(), b"short");
        // A claim past the bound is the bound.
        assert_eq!(Blob::build_up_to(16, |_| 100).unwrap().len(), 16);
        assert!(Blob::build_up_to(0, |_| 7).unwrap().is_empty());
    }

    #[test]
    fn a_written_blob_holds_its_pieces_in_order_and_is_sealed() {
        let mut writer = BlobWriter::new().unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        writer.append(b"head").unwrap();
        writer.append(&big).unwrap();
        writer.append(&[]).unwrap();
        writer.append(b"tail").unwrap();
        assert_eq!(writer.len(), 4 + 300_000 + 4);
        let blob = writer.finish().unwrap();
        assert_eq!(&blob[..4], b"head");
        assert_eq!(&blob[4..300_004], &big[..]);
        assert_eq!(&blob[300_004..], b"tail");
        assert!(rustix::fs::ftruncate(&blob, 0).is_err());
        assert!(rustix::io::pwrite(&blob, b"X", 0).is_err());
        let fd = rustix::io::fcntl_dupfd_cloexec(&blob, 0).unwrap();
        assert_eq!(Blob::from_fd(fd, 300_008).unwrap().len(), 300_008);
        assert!(BlobWriter::new().unwrap().finish().unwrap().is_empty());
    }

    #[test]
    fn bytes_at_the_slow_distance_are_written_whole_and_in_order() {
        assert!(slow_distance(0, (PAGE - 8) as *const u8));
        assert!(slow_distance(5, (PAGE - 3) as *const u8));
        assert!(!slow_distance(0, PAGE as *const u8));
        assert!(!slow_distance(0, 16 as *const u8));
        let src: Vec<u8> = (0..(3 * BOUNCE + 3 * PAGE) as u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let mut writer = BlobWriter::new().unwrap();
        let mut want = Vec::new();
        for (head, skip) in [(0, 8), (3, 20), (4095, 1)] {
            writer.append(&src[..head]).unwrap();
            want.extend_from_slice(&src[..head]);
            // A source `skip` bytes short of where the file's end lies in its page.
            let base = src.as_ptr() as usize;
            let from = (writer.len() as usize + PAGE - skip - base % PAGE) % PAGE;
            let piece = &src[from..from + BOUNCE + 1000];
            assert!(slow_distance(writer.len(), piece.as_ptr()));
            writer.append(piece).unwrap();
            want.extend_from_slice(piece);
        }
        assert_eq!(writer.len(), want.len() as u64);
        assert_eq!(&*writer.finish().unwrap(), &want[..]);
    }

    #[test]
    fn unsealed_blob_is_refused() {
        let fd = region::create_memfd("t", 4096, false).unwrap();
        assert!(matches!(
            Blob::from_fd(fd, 4096),
            Err(Error::Refused(RefuseReason::MissingSeals))
        ));
    }

    #[test]
    fn empty_blob_round_trips() {
        let (a, mut b) = Channel::pair(sp_core::SocketKind::SeqPacket).unwrap();
        Blob::from_bytes(&[]).unwrap().send(&a).unwrap();
        assert!(Blob::recv(&mut b).unwrap().is_empty());
    }
}

//! Sealed anonymous shared memory: `memfd_create`, `ftruncate`, seals, checks and mappings.
//!
//! The recipe is shmem-ipc's `mem.rs` and Wayland's `wl_shm`: the creator makes an anonymous memfd
//! (`MFD_CLOEXEC | MFD_ALLOW_SEALING`; nothing is named in `/dev/shm`, so nothing leaks after a
//! crash), sizes it, seals it against shrinking and growing (so no mapping can ever fault with
//! `SIGBUS`) and only then hands it over. The receiver trusts nothing: it checks the file type,
//! the seals and the exact size before it maps anything, and maps exactly that size.
//!
//! Mappings are `memmap2::MmapRaw`, which never hands out references into the mapping, only raw
//! pointers: the right type for memory another process can write.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{FileType, MemfdFlags, SealFlags};

use crate::error::{Error, RefuseReason, Result};

/// Seals every shared memfd carries: it cannot shrink, grow, or gain or lose seals.
pub(crate) const BASE_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING [| MFD_HUGETLB])` + `ftruncate(size)`.
///
/// With `huge`, tries a hugetlbfs memfd first and falls back to normal pages if the kernel or the
/// size refuses it.
pub(crate) fn create_memfd(name: &str, size: usize, huge: bool) -> Result<OwnedFd> {
    if huge && let Ok(fd) = create_with(name, size, MemfdFlags::HUGETLB) {
        return Ok(fd);
    }
    create_with(name, size, MemfdFlags::empty())
}

fn create_with(name: &str, size: usize, extra: MemfdFlags) -> Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(
        name,
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING | extra,
    )?;
    rustix::fs::ftruncate(&fd, size as u64)?;
    Ok(fd)
}

/// `fcntl(F_ADD_SEALS)`.
pub(crate) fn add_seals(fd: impl AsFd, seals: SealFlags) -> Result<()> {
    Ok(rustix::fs::fcntl_add_seals(fd, seals)?)
}

/// Checks a received memfd: a regular file, carrying at least `seals`, exactly `size` bytes long.
pub(crate) fn check_memfd(fd: impl AsFd, seals: SealFlags, size: u64) -> Result<()> {
    let fd = fd.as_fd();
    let stat = rustix::fs::fstat(fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(Error::Refused(RefuseReason::NotAFile));
    }
    let have =
        rustix::fs::fcntl_get_seals(fd).map_err(|_| Error::Refused(RefuseReason::MissingSeals))?;
    if !have.contains(seals) {
        return Err(Error::Refused(RefuseReason::MissingSeals));
    }
    if u64::try_from(stat.st_size).ok() != Some(size) {
        return Err(Error::Refused(RefuseReason::SizeMismatch));
    }
    Ok(())
}

/// Maps `len` bytes of `fd` shared and writable (`MAP_SHARED`, `PROT_READ | PROT_WRITE`).
pub(crate) fn map_rw(fd: &OwnedFd, len: usize, populate: bool) -> Result<MmapRaw> {
    Ok(map_options(len, populate).map_raw(fd.as_raw_fd())?)
}

/// Maps `len` bytes of `fd` shared and read-only (`MAP_SHARED`, `PROT_READ`).
pub(crate) fn map_ro(fd: &OwnedFd, len: usize, populate: bool) -> Result<MmapRaw> {
    Ok(map_options(len, populate).map_raw_read_only(fd.as_raw_fd())?)
}

/// `len` bytes from offset 0, prefaulted (`MAP_POPULATE`) if asked.
fn map_options(len: usize, populate: bool) -> MmapOptions {
    let mut opts = MmapOptions::new();
    opts.len(len);
    if populate {
        opts.populate();
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_is_cloexec_and_sealable() {
        let fd = create_memfd("t", 4096, false).unwrap();
        let flags = rustix::io::fcntl_getfd(&fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        add_seals(&fd, BASE_SEALS).unwrap();
        check_memfd(&fd, BASE_SEALS, 4096).unwrap();
        assert!(rustix::fs::ftruncate(&fd, 8192).is_err());
        assert!(rustix::fs::ftruncate(&fd, 0).is_err());
    }

    #[test]
    fn unsealed_or_wrong_size_is_refused() {
        let fd = create_memfd("t", 4096, false).unwrap();
        assert!(matches!(
            check_memfd(&fd, BASE_SEALS, 4096),
            Err(Error::Refused(RefuseReason::MissingSeals))
        ));
        add_seals(&fd, BASE_SEALS).unwrap();
        assert!(matches!(
            check_memfd(&fd, BASE_SEALS, 8192),
            Err(Error::Refused(RefuseReason::SizeMismatch))
        ));
    }

    #[test]
    fn future_write_seal_blocks_new_writable_mappings() {
        let fd = create_memfd("t", 4096, false).unwrap();
        let rw = map_rw(&fd, 4096, true).unwrap();
        add_seals(&fd, BASE_SEALS | SealFlags::FUTURE_WRITE).unwrap();
        assert!(map_rw(&fd, 4096, false).is_err());
        assert!(map_ro(&fd, 4096, false).is_ok());
        drop(rw);
    }

    #[test]
    fn huge_pages_fall_back() {
        // Most machines have no huge pages reserved; the fallback must still give a memfd.
        let fd = create_memfd("t", 2 << 20, true).unwrap();
        check_memfd(&fd, SealFlags::empty(), 2 << 20).unwrap();
    }
}

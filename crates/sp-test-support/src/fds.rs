//! Descriptors: this process's table read from `/proc/self/fd` (the leak guard compares two
//! readings), their flags, and descriptors of every kind a hostile peer might hand over.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::io::FdFlags;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// A reading of a descriptor table: number to `readlink` target.
pub type FdTable = BTreeMap<RawFd, String>;

/// This process's open descriptors, read from `/proc/self/fd` (without the descriptor used to
/// read the directory).
pub fn open_fds() -> FdTable {
    let dir_fd = rustix::fs::open(
        "/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open /proc/self/fd");
    let own = dir_fd.as_raw_fd();
    let mut dir = rustix::fs::Dir::new(dir_fd).expect("read /proc/self/fd");
    let mut fds = BTreeMap::new();
    while let Some(entry) = dir.read() {
        let entry = entry.expect("read a /proc/self/fd entry");
        let Ok(n) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        if n == own {
            continue;
        }
        let target = match std::fs::read_link(format!("/proc/self/fd/{n}")) {
            Ok(path) => path.display().to_string(),
            Err(err) => format!("<readlink failed: {err}>"),
        };
        fds.insert(n, target);
    }
    fds
}

/// Fails listing every descriptor that was opened, closed or replaced between two readings.
pub fn fd_diff(before: &FdTable, after: &FdTable) -> Result<(), String> {
    let mut problems = Vec::new();
    for (fd, target) in after {
        match before.get(fd) {
            None => problems.push(format!("leaked fd {fd} -> {target}")),
            Some(old) if old != target => {
                problems.push(format!("fd {fd} changed from {old} to {target}"));
            }
            Some(_) => {}
        }
    }
    for (fd, target) in before {
        if !after.contains_key(fd) {
            problems.push(format!("closed fd {fd} -> {target} (it was open before)"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "descriptor table changed:\n  {}",
            problems.join("\n  ")
        ))
    }
}

/// How many open descriptors of this process have a `readlink` target containing `needle`.
pub fn count_fds_to(needle: &str) -> usize {
    open_fds().values().filter(|t| t.contains(needle)).count()
}

/// Asserts that `fd` has `FD_CLOEXEC` set.
#[track_caller]
pub fn assert_cloexec(fd: impl AsFd) {
    let fd = fd.as_fd();
    let flags = rustix::io::fcntl_getfd(fd).expect("fcntl(F_GETFD)");
    assert!(
        flags.contains(FdFlags::CLOEXEC),
        "fd {} is not close-on-exec (flags {flags:?})",
        fd.as_raw_fd()
    );
}

/// Whether descriptor number `fd` of this process has `O_CLOEXEC`, read from
/// `/proc/self/fdinfo` (for descriptors a crate keeps private, such as a bridge's stop pipe).
pub fn cloexec_by_number(fd: RawFd) -> bool {
    const O_CLOEXEC: u32 = 0o2_000_000;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("read fdinfo");
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .expect("fdinfo has a flags line");
    u32::from_str_radix(flags.trim(), 8).expect("octal flags") & O_CLOEXEC != 0
}

/// Whether `O_NONBLOCK` is set on `fd`.
pub fn is_nonblocking(fd: impl AsFd) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .expect("fcntl(F_GETFL)")
        .contains(OFlags::NONBLOCK)
}

/// A memfd (close-on-exec) named `name` holding `contents`, positioned after them.
pub fn memfd_with(name: &str, contents: &[u8]) -> OwnedFd {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC).expect("memfd_create");
    let mut written = 0;
    while written < contents.len() {
        written += rustix::io::write(&fd, &contents[written..]).expect("write memfd");
    }
    fd
}

/// Everything in the file behind `fd`, read from offset 0 (`pread`, so the shared offset of a
/// descriptor the sender also holds does not matter).
pub fn read_all_at_0(fd: impl AsFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = rustix::io::pread(&fd, &mut buf, out.len() as u64).expect("pread");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// An unlinked regular file of `size` bytes in the temporary directory (a file that can never be
/// sealed).
///
/// # Errors
/// The file could not be created or sized.
pub fn disk_file(size: u64) -> Result<OwnedFd, String> {
    static N_FILES: AtomicU64 = AtomicU64::new(0);
    let n = N_FILES.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("sp-test-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = std::fs::remove_file(&path);
    file.set_len(size).map_err(|e| e.to_string())?;
    Ok(OwnedFd::from(file))
}

/// The kinds of descriptor a hostile peer hands over where a sealed memfd is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// A memfd of this size sealed `WRITE | SHRINK | GROW | SEAL` (what a blob must be).
    SealedMemfd(u64),
    /// A memfd of this size sealed `FUTURE_WRITE | SHRINK | GROW | SEAL` (a ring's data area).
    FutureWriteMemfd(u64),
    /// A sealable memfd of this size without seals.
    UnsealedMemfd(u64),
    /// The read end of a pipe.
    Pipe,
    /// One end of a seqpacket socketpair.
    SeqPacket,
    /// One end of a stream socketpair.
    Stream,
}

impl FdKind {
    /// A kind chosen by one byte of fuzzer input: the low bits pick the kind, the high bits the
    /// size of a memfd (0, 8, 4096, 8192 or 65536 bytes).
    pub fn from_selector(selector: u8) -> Self {
        let size = [0, 8, 4096, 8192, 65536][usize::from(selector >> 4) % 5];
        match selector % 6 {
            0 => Self::SealedMemfd(size),
            1 => Self::FutureWriteMemfd(size),
            2 => Self::UnsealedMemfd(size),
            3 => Self::Pipe,
            4 => Self::SeqPacket,
            _ => Self::Stream,
        }
    }

    /// A new descriptor of this kind, close-on-exec (the other end of a pipe or pair is closed).
    pub fn make(self) -> OwnedFd {
        let memfd = |size: u64, seals: SealFlags| {
            let fd = rustix::fs::memfd_create(
                "sp-test-fd-kind",
                MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
            )
            .expect("memfd_create");
            rustix::fs::ftruncate(&fd, size).expect("ftruncate");
            if !seals.is_empty() {
                rustix::fs::fcntl_add_seals(&fd, seals).expect("add seals");
            }
            fd
        };
        let base = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
        let socket = |kind| {
            rustix::net::socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)
                .expect("socketpair")
                .0
        };
        match self {
            Self::SealedMemfd(size) => memfd(size, base | SealFlags::WRITE),
            Self::FutureWriteMemfd(size) => memfd(size, base | SealFlags::FUTURE_WRITE),
            Self::UnsealedMemfd(size) => memfd(size, SealFlags::empty()),
            Self::Pipe => {
                rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                    .expect("pipe")
                    .0
            }
            Self::SeqPacket => socket(SocketType::SEQPACKET),
            Self::Stream => socket(SocketType::STREAM),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Other tests of this binary may open descriptors meanwhile, so only the lines about this
    /// test's memfd are checked.
    #[test]
    fn fd_diff_names_a_leaked_and_a_closed_descriptor() {
        let before = open_fds();
        let memfd = memfd_with("sp-test-fd-diff", b"x");
        let during = open_fds();
        let leaked = fd_diff(&before, &during).expect_err("a new descriptor");
        assert!(
            leaked
                .lines()
                .any(|l| l.contains("leaked fd") && l.contains("sp-test-fd-diff")),
            "{leaked}"
        );
        drop(memfd);
        let closed = fd_diff(&during, &open_fds()).expect_err("a closed descriptor");
        assert!(
            closed
                .lines()
                .any(|l| l.contains("closed fd") && l.contains("sp-test-fd-diff")),
            "{closed}"
        );
        assert_eq!(count_fds_to("sp-test-fd-diff"), 0);
    }
}

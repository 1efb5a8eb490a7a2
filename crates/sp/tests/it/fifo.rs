//! A named pipe through which a trial and its children signal each other without sleeping: a
//! child blocks reading it until the trial writes (`release`), or writes a byte the trial waits
//! for (`wait_byte`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};

use crate::TestResult;

/// The environment variable that gives a child the FIFO's path.
pub(crate) const FIFO_ENV: &str = "SP_IT_FIFO";

/// A FIFO in the temporary directory, held open read-write by the trial (so that a child's open
/// never blocks, in either direction), removed when dropped.
pub(crate) struct Fifo {
    path: PathBuf,
    fd: OwnedFd,
}

impl Fifo {
    pub(crate) fn new(name: &str) -> Result<Self, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sp-it-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        rustix::fs::mkfifoat(rustix::fs::CWD, &path, Mode::RUSR | Mode::WUSR)
            .map_err(|e| format!("mkfifo: {e}"))?;
        let fd = rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("open fifo: {e}"))?;
        Ok(Self { path, fd })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `n` bytes: `n` children blocked in [`wait_for_release`] go on.
    pub(crate) fn release(&self, n: usize) -> TestResult {
        rustix::io::write(&self.fd, &vec![1u8; n]).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Waits at most `limit` for a child to write a byte, and takes it.
    pub(crate) fn wait_byte(&self, limit: Duration) -> TestResult {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let timeout = Timespec::try_from(limit).map_err(|e| e.to_string())?;
        if rustix::event::poll(&mut fds, Some(&timeout)).map_err(|e| e.to_string())? == 0 {
            return Err(format!("no byte from the child within {limit:?}"));
        }
        let mut byte = [0u8];
        rustix::io::read(&self.fd, &mut byte).map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn child_fifo(flags: OFlags) -> Result<OwnedFd, String> {
    let path = std::env::var(FIFO_ENV).map_err(|_| "no fifo".to_string())?;
    rustix::fs::open(&path, flags | OFlags::CLOEXEC, Mode::empty()).map_err(|e| e.to_string())
}

/// In a child: blocks until the trial writes a byte into the FIFO.
pub(crate) fn wait_for_release() -> TestResult {
    let fd = child_fifo(OFlags::RDONLY)?;
    let mut byte = [0u8];
    match rustix::io::read(&fd, &mut byte) {
        Ok(1) => Ok(()),
        other => Err(format!("fifo read: {other:?}")),
    }
}

/// In a child: writes one byte for the trial.
pub(crate) fn signal() -> TestResult {
    let fd = child_fifo(OFlags::WRONLY)?;
    rustix::io::write(&fd, &[1]).map_err(|e| e.to_string())?;
    Ok(())
}

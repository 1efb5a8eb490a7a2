//! Starting a child process that holds the other end of a pair, and adopting that end in the child.
//!
//! The parent calls [`spawn`] with a `std::process::Command` and the end meant for the child. The
//! end stays close-on-exec in the parent the whole time; only in the forked child, between `fork`
//! and `exec`, is the flag cleared on that one descriptor, so no other child started concurrently
//! by another thread can inherit it. The child finds the descriptor's number in the environment
//! variable [`FD_ENV`] and calls [`adopt`], which removes the variable again (in a single-threaded
//! process) so that the child's own children do not look for an end that is not theirs. The
//! parent's copy of the child's end is closed as soon as `spawn` returns, so when the child dies
//! the parent reads end of file (the hang that ipc-channel #281 describes cannot happen).

#![allow(unsafe_code)] // `pre_exec`, taking ownership of the inherited descriptor number, and
// removing `FD_ENV` from the environment.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{self, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use rustix::fs::FileType;
use rustix::io::{Errno, FdFlags};
use rustix::net::AddressFamily;
use rustix::process::{Pid, PidfdFlags, Signal};

use crate::end::End;
use crate::error::{Error, Result};
use crate::handover::{self, RENDEZVOUS_ENV, Rendezvous};

/// The environment variable through which a child learns the number of its inherited end.
pub const FD_ENV: &str = "SP_CORE_FD";

/// Options for [`spawn_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnOptions {
    parent_death_signal: Option<Signal>,
    /// `Some(timeout)`: hand the end over after `exec` (see [`Self::hand_over_after_exec`]).
    handover: Option<Duration>,
}

/// A child process started by [`spawn`]: the `std::process::Child` plus, where the kernel has
/// one (Linux 5.3+), a pidfd that refers to this process and no other.
#[derive(Debug)]
pub struct Child {
    child: process::Child,
    pidfd: Option<OwnedFd>,
}

impl SpawnOptions {
    /// Default options: no parent-death signal.
    pub fn new() -> Self {
        Self::default()
    }

    /// `prctl(PR_SET_PDEATHSIG)`: the child receives `signal` when the parent dies. If the parent
    /// is already gone by the time the child sets this up, the child exits at once with status 1.
    ///
    /// The kernel sends the signal when the *thread* that spawned the child exits, not only the
    /// whole process; spawn from a long-lived thread.
    pub fn parent_death_signal(mut self, signal: Signal) -> Self {
        self.parent_death_signal = Some(signal);
        self
    }

    /// Hands the end over after `exec`, through a one-time socket, instead of letting the child
    /// inherit it; [`spawn_with`] then returns once the child has called [`adopt`], and fails
    /// with [`Error::Handover`] (having killed and reaped the child) if the child exits first or
    /// `timeout` passes.
    ///
    /// Why: inheriting needs a step in the child between `fork` and `exec` (clearing
    /// close-on-exec on that one descriptor), and `std` starts a `Command` with such a step by
    /// `fork`, whose cost grows with this process's memory (its page tables are copied and its
    /// pages are copy-on-write until the child execs). Without the step, `std` can use
    /// `posix_spawn` (unless other settings, such as a uid, need `fork`), which shares the
    /// parent's memory until the exec instead. docs/benchmarks.md has the figures.
    ///
    /// The child learns the socket's name from [`RENDEZVOUS_ENV`](crate::RENDEZVOUS_ENV); the
    /// parent gives the end only to a connection from the child's pid, and the child takes one
    /// only from its parent (docs/security.md). The child needs the abstract Unix-socket
    /// namespace of the parent's network namespace, so a child moved to another network
    /// namespace cannot use this.
    ///
    /// With a [parent-death signal](Self::parent_death_signal) the child sets the signal itself
    /// in [`adopt`] (the handover message names it) and then checks that its parent is still the
    /// process that handed the end over; between `exec` and `adopt` it has none. A `Command` that
    /// already carries a pre-exec step of its own is still started by `fork`.
    ///
    /// The tokio spawn (`sp_core::tokio::spawn_with`, feature `tokio`) must not block its runtime
    /// and always lets the child inherit its end: it ignores this option.
    pub fn hand_over_after_exec(mut self, timeout: Duration) -> Self {
        self.handover = Some(timeout);
        self
    }

    /// The timeout of [`Self::hand_over_after_exec`], if the end is handed over after `exec`.
    pub fn handover_timeout(&self) -> Option<Duration> {
        self.handover
    }
}

/// Starts `cmd` as a child that inherits `end`; see [`spawn_with`].
///
/// # Errors
/// As [`spawn_with`].
///
/// # Examples
/// ```no_run
/// let (mut parent_end, child_end) = sp_core::pair(sp_core::SocketKind::Stream)?;
/// let mut child = sp_core::spawn(&mut std::process::Command::new("my-worker"), child_end)?;
/// // ... talk over parent_end; when the child exits, reads on parent_end see end of file.
/// child.wait()?;
/// # Ok::<(), sp_core::Error>(())
/// ```
pub fn spawn(cmd: &mut Command, end: End) -> Result<Child> {
    spawn_with(cmd, end, SpawnOptions::new())
}

/// `fork` + `exec` through `Command::spawn`, passing `end` to the child at the number named by
/// [`FD_ENV`].
///
/// `end` is consumed: the parent's copy is closed when this returns, whether the spawn succeeded
/// or not, so the parent will see end of file when the child exits.
///
/// `cmd` keeps the environment variable and the pre-exec step that hands over this end; use a
/// fresh `Command` for every spawn. (A reused one still hands over only the new end: the step left
/// by an earlier spawn does nothing.)
///
/// # Errors
/// [`Error::Os`] with the error of `Command::spawn`, which includes a failure of the child-side
/// set-up (`fcntl`, `prctl`), or with `EMFILE` when the end must be moved off a standard
/// descriptor and no descriptor is free.
pub fn spawn_with(cmd: &mut Command, end: End, opts: SpawnOptions) -> Result<Child> {
    let Some(timeout) = opts.handover else {
        let child = spawn_via(cmd, |cmd| cmd, Command::spawn, end, opts)?;
        let pidfd = pidfd_of(child.id());
        return Ok(Child { child, pidfd });
    };
    let rendezvous = Rendezvous::bind()?;
    cmd.env_remove(FD_ENV)
        .env(RENDEZVOUS_ENV, rendezvous.name());
    let mut child = cmd.spawn()?;
    let pidfd = pidfd_of(child.id());
    match rendezvous.hand_over(
        end,
        &mut child,
        pidfd.as_ref(),
        timeout,
        opts.parent_death_signal,
    ) {
        Ok(()) => Ok(Child { child, pidfd }),
        Err(err) => {
            // Invariant: a failed spawn leaves no child behind, running or unreaped.
            let _ = child.kill();
            let _ = child.wait();
            Err(err)
        }
    }
}

/// The body of [`spawn_with`] for any command type that lends its `std::process::Command`
/// (`as_std`) and spawns through `spawn` (`tokio::process::Command` as well as the std one).
pub(crate) fn spawn_via<Cmd, C>(
    cmd: &mut Cmd,
    as_std: impl Fn(&mut Cmd) -> &mut Command,
    spawn: impl FnOnce(&mut Cmd) -> io::Result<C>,
    end: End,
    opts: SpawnOptions,
) -> Result<C> {
    // Keep the end clear of the standard descriptors, which `Command` rewires in the child.
    let end = if end.as_raw_fd() <= 2 {
        End::from(rustix::io::fcntl_dupfd_cloexec(&end, 3)?)
    } else {
        end
    };
    let parent_pid = rustix::process::getpid();
    as_std(cmd)
        .env_remove(RENDEZVOUS_ENV)
        .env(FD_ENV, end.as_raw_fd().to_string());
    // Invariant: the pre-exec step knows the end's number only during this spawn. A `Command`
    // keeps its pre-exec steps, so spawning it again would run this step again: on this number,
    // closed by then or reused by a descriptor that would then leak into that child. The slot
    // holds the number until `cmd.spawn()` returns and -1 after; the forked child sees the value
    // it had at `fork`. (This is the one raw descriptor number sp-core keeps anywhere, see
    // docs/architecture.md.)
    let fd_slot = Arc::new(AtomicI32::new(end.as_raw_fd()));
    let fd_slot_in_child = Arc::clone(&fd_slot);
    // SAFETY: the closure runs in the forked child before `exec`, where only async-signal-safe
    // calls are allowed. It calls only raw system calls through rustix (`fcntl`, `prctl`,
    // `getppid`), allocates nothing and takes no lock. The number in the slot is open in the
    // child because `fork` copied the parent's table while `end` (moved into this function) was
    // still open, and it is read only while this spawn runs.
    unsafe {
        as_std(cmd).pre_exec(move || {
            let child_fd: RawFd = fd_slot_in_child.load(Ordering::Relaxed);
            if child_fd < 0 {
                return Ok(());
            }
            // SAFETY: `child_fd` is open in this freshly forked child (see above) and is used only
            // for the duration of this closure.
            let fd = BorrowedFd::borrow_raw(child_fd);
            rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
            if let Some(signal) = opts.parent_death_signal {
                rustix::process::set_parent_process_death_signal(Some(signal))?;
                // The parent may have died before the prctl took effect.
                if rustix::process::getppid() != Some(parent_pid) {
                    // No allocation between fork and exec: an errno alone (ESRCH: the parent
                    // process is gone) is all `Command::spawn` reports from this step anyway.
                    return Err(Errno::SRCH.into());
                }
            }
            Ok(())
        });
    }
    let res = spawn(cmd);
    // Same thread as the fork inside `spawn`: program order is all the ordering needed.
    fd_slot.store(-1, Ordering::Relaxed);
    // Invariant: the parent never keeps the child's end; it is closed here, spawned or not.
    drop(end);
    Ok(res?)
}

/// `pidfd_open(2)` for a child just spawned, if the kernel has pidfds.
pub(crate) fn pidfd_of(pid: u32) -> Option<OwnedFd> {
    Pid::from_raw(pid as i32)
        .and_then(|pid| rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok())
}

/// Invariant: set by the first `adopt` that gets past the environment checks; only that call
/// turns the inherited number into an `OwnedFd`.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// In a child started by [`spawn`]: takes ownership of the inherited end.
///
/// Reads the descriptor number from [`FD_ENV`], checks that it is open and a Unix-domain socket,
/// marks it close-on-exec again (so grandchildren do not inherit it) and returns it. Only the first
/// call can succeed; later calls return [`Error::NoInheritedEnd`].
///
/// On success it also removes [`FD_ENV`] from this process's environment, so that programs this
/// child starts do not find a number that no longer names their end (it is close-on-exec now: in
/// a grandchild that number is closed, or some other descriptor). It does so only when this is the
/// only thread of the process, because changing the environment while another thread may read it
/// is undefined behaviour (see `std::env::remove_var`); adopt first thing in `main`. With other
/// threads running the variable stays: remove it from the commands you start
/// (`cmd.env_remove(sp_core::FD_ENV)`). A child started through [`spawn`] gets its own end's
/// number in the variable either way.
///
/// # Errors
/// [`Error::NoInheritedEnd`] when the variable is missing, malformed or already adopted;
/// [`Error::NotASocket`] when the descriptor is closed, not a socket, or not `AF_UNIX`.
pub fn adopt() -> Result<End> {
    let Ok(value) = std::env::var(FD_ENV) else {
        return adopt_handed_over();
    };
    let raw: RawFd = value.trim().parse().map_err(|_| Error::NoInheritedEnd)?;
    if raw < 0 {
        return Err(Error::NoInheritedEnd);
    }
    if ADOPTED.swap(true, Ordering::AcqRel) {
        return Err(Error::NoInheritedEnd);
    }
    // SAFETY: the descriptor is only borrowed for the checks below; a closed number makes
    // `fstat` fail with EBADF, which is handled, and no ownership is taken yet.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    check_unix_socket(borrowed)?;
    rustix::io::fcntl_setfd(borrowed, FdFlags::CLOEXEC)?;
    // SAFETY: `raw` is an open Unix socket (checked above) that the parent placed here for this
    // process; `ADOPTED` guarantees that this is the only place that ever takes ownership of it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    forget_fd_env();
    Ok(End::from(fd))
}

/// [`adopt`] for an end handed over after `exec`: connects to the socket [`RENDEZVOUS_ENV`]
/// names and receives the end.
fn adopt_handed_over() -> Result<End> {
    let name = std::env::var(RENDEZVOUS_ENV).map_err(|_| Error::NoInheritedEnd)?;
    if ADOPTED.swap(true, Ordering::AcqRel) {
        return Err(Error::NoInheritedEnd);
    }
    let end = handover::take(&name)?;
    forget_fd_env();
    Ok(end)
}

/// Removes [`FD_ENV`] from the environment if this is the process's only thread; returns whether
/// it did.
fn forget_fd_env() -> bool {
    if !single_threaded() {
        return false;
    }
    // SAFETY: `remove_var` is safe in a single-threaded program: this thread is the only one
    // (checked just above), and only it could start another.
    unsafe {
        std::env::remove_var(FD_ENV);
        std::env::remove_var(RENDEZVOUS_ENV);
    }
    true
}

/// Whether this process has exactly one thread (one entry in `/proc/self/task`); `false` when
/// that cannot be read. (A directory listing, not `Threads:` in `/proc/self/status`: the kernel
/// builds the whole status text, memory counters and all, for that one line; this runs on every
/// child's path to its first message.)
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

pub(crate) fn check_unix_socket(fd: BorrowedFd<'_>) -> Result<()> {
    let stat = match rustix::fs::fstat(fd) {
        Ok(stat) => stat,
        Err(Errno::BADF) => return Err(Error::NotASocket),
        Err(err) => return Err(err.into()),
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
        return Err(Error::NotASocket);
    }
    if rustix::net::sockopt::socket_domain(fd)? != AddressFamily::UNIX {
        return Err(Error::NotASocket);
    }
    Ok(())
}

impl Child {
    /// The child's process id, as the spawn reported it.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// A pidfd for the child (`pidfd_open(2)`), if the kernel provides them. It becomes readable
    /// when the child exits and cannot be confused with a later process that reuses the pid.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// Waits for the child to exit.
    ///
    /// # Errors
    /// As `std::process::Child::wait`.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait()
    }

    /// Returns the exit status if the child has exited.
    ///
    /// # Errors
    /// As `std::process::Child::try_wait`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends `SIGKILL` to the child.
    ///
    /// # Errors
    /// As `std::process::Child::kill`.
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()
    }

    /// The underlying `std::process::Child` (for its stdio handles, say).
    pub fn as_std_mut(&mut self) -> &mut process::Child {
        &mut self.child
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Error`'s message for a missing end spells the variable out (so that errors depend on no
    /// other module); it must be this one.
    #[test]
    fn no_inherited_end_names_fd_env() {
        assert!(Error::NoInheritedEnd.to_string().contains(FD_ENV));
    }
}

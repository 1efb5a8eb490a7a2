//! Handing a child its end after `exec`, through a one-time rendezvous socket, so that the child
//! can be started by `posix_spawn` instead of `fork`.
//!
//! Why: `std::process::Command` starts a child with a pre-exec step by `fork` + `exec`, and
//! `fork` copies this process's page tables and makes its memory copy-on-write until the child
//! execs: the cost grows with the parent's memory. A `Command` without one can go through
//! `posix_spawn` (`clone` with `CLONE_VM | CLONE_VFORK`: no copy, the memory shared until the
//! exec), unless other settings (a uid, say) need `fork`. Clearing
//! close-on-exec on the end needs a step in the child between `fork` and `exec`; this module
//! avoids the step by not inheriting the end at all.
//!
//! The parent binds a `SOCK_SEQPACKET` listener under a fresh random name in the abstract Unix
//! namespace (no file, gone when the descriptor closes), names it in [`RENDEZVOUS_ENV`], spawns,
//! and accepts until a connection from the child's pid arrives (`SO_PEERCRED`); it sends the end
//! over that connection with `SCM_RIGHTS` and closes the listener. The child connects, checks
//! that the listener belongs to its parent (`SO_PEERCRED` against `getppid`), and receives.
//!
//! Invariants:
//! - The end goes only to a connection whose peer is the spawned child's pid, which cannot be
//!   reused while the parent has not reaped the child. A connection from any other process is
//!   closed unanswered and the parent goes on waiting, to its deadline.
//! - The child takes an end only from its own parent's listener, so nobody who learns the name
//!   can hand it a different socket.
//! - Every descriptor here is close-on-exec from birth (listener, accepted and connecting
//!   sockets, and the end as it arrives, by `MSG_CMSG_CLOEXEC`).
//!
//! The message is one sp-core frame (docs/protocol.md, "Handing the end over after exec").

use std::os::fd::{AsFd, OwnedFd};
use std::process;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use rustix::process::Signal;

use crate::channel::Channel;
use crate::end::End;
use crate::error::{Error, Handover, RecvTimeoutError, Result};

/// The environment variable that names the rendezvous socket of a child whose end is handed over
/// after `exec` (see [`SpawnOptions::hand_over_after_exec`](crate::SpawnOptions::hand_over_after_exec)).
pub const RENDEZVOUS_ENV: &str = "SP_CORE_RENDEZVOUS";

/// The first bytes of the handover message.
const MAGIC: [u8; 8] = *b"SPHANDOV";
/// Version of the handover message.
const VERSION: u32 = 1;
/// Length of the handover message: magic, version, parent-death signal (0: none).
const MESSAGE_LEN: usize = 16;
/// Random bytes in a rendezvous name (written as hex after [`NAME_PREFIX`]).
const NAME_RANDOM_LEN: usize = 16;
/// The abstract-namespace names this module binds start with this.
const NAME_PREFIX: &str = "sp-core-";
/// How long a child waits for the message once its parent accepted the connection (the parent
/// sends it right after accepting).
const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the parent looks at the child when the kernel has no pidfd to wait on.
const CHILD_CHECK_PERIOD: Duration = Duration::from_millis(20);

/// The parent's listener for one child.
pub(crate) struct Rendezvous {
    listener: OwnedFd,
    name: String,
}

impl Rendezvous {
    /// Binds a listener under a fresh random name.
    pub(crate) fn bind() -> Result<Self> {
        // A name is 128 random bits; a clash with a live name is retried, a few times.
        for _ in 0..4 {
            let mut random = [0u8; NAME_RANDOM_LEN];
            rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())?;
            let name: String = std::iter::once(NAME_PREFIX.to_owned())
                .chain(random.iter().map(|byte| format!("{byte:02x}")))
                .collect();
            let listener = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                None,
            )?;
            match rustix::net::bind(
                &listener,
                &SocketAddrUnix::new_abstract_name(name.as_bytes())?,
            ) {
                Ok(()) => {}
                Err(Errno::ADDRINUSE) => continue,
                Err(err) => return Err(err.into()),
            }
            rustix::net::listen(&listener, 4)?;
            return Ok(Self { listener, name });
        }
        Err(Errno::ADDRINUSE.into())
    }

    /// The name to put in [`RENDEZVOUS_ENV`].
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Waits for `child` to connect and sends it `end`. Ends with [`Handover::TimedOut`] once
    /// `timeout` has passed and with [`Handover::ChildExited`] when the child exits first; `end`
    /// is closed here either way.
    pub(crate) fn hand_over(
        self,
        end: End,
        child: &mut process::Child,
        pidfd: Option<&OwnedFd>,
        timeout: Duration,
        death_signal: Option<Signal>,
    ) -> Result<()> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC) {
                Ok(conn) => {
                    let peer = rustix::net::sockopt::socket_peercred(&conn)?;
                    if peer.pid.as_raw_nonzero().get() as u32 == child.id() {
                        return send(conn, &end, death_signal);
                    }
                    // Not the child: closed unanswered (see the invariants above). The checks
                    // below still run, so a stream of strangers cannot hold this past the
                    // deadline.
                    drop(conn);
                }
                Err(Errno::AGAIN | Errno::INTR | Errno::CONNABORTED) => {}
                Err(err) => return Err(err.into()),
            }
            if child.try_wait()?.is_some() {
                return Err(Error::Handover(Handover::ChildExited));
            }
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Err(Error::Handover(Handover::TimedOut));
            }
            self.wait(pidfd, left)?;
        }
    }

    /// Sleeps until the listener has a connection, the child exits (its pidfd is readable), or
    /// `left` passes; without a pidfd, at most [`CHILD_CHECK_PERIOD`].
    fn wait(&self, pidfd: Option<&OwnedFd>, left: Duration) -> Result<()> {
        let left = match pidfd {
            Some(_) => left,
            None => left.min(CHILD_CHECK_PERIOD),
        };
        // Beyond what a timespec holds is no limit.
        let timeout = Timespec::try_from(left).ok();
        let listener = PollFd::new(&self.listener, PollFlags::IN);
        let result = match pidfd {
            Some(pidfd) => rustix::event::poll(
                &mut [listener, PollFd::new(pidfd, PollFlags::IN)],
                timeout.as_ref(),
            ),
            None => rustix::event::poll(&mut [listener], timeout.as_ref()),
        };
        match result {
            Ok(_) | Err(Errno::INTR) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

/// Sends the handover message with `end` over the accepted connection.
fn send(conn: OwnedFd, end: &End, death_signal: Option<Signal>) -> Result<()> {
    let mut msg = [0u8; MESSAGE_LEN];
    msg[0..8].copy_from_slice(&MAGIC);
    msg[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let signal = death_signal.map_or(0, |signal| signal.as_raw());
    msg[12..16].copy_from_slice(&signal.to_le_bytes());
    Channel::new(End::from(conn))?.send(&msg, &[end.as_fd()])
}

/// In the child: connects to the parent's rendezvous `name` and takes the end it sends.
///
/// Sets the parent-death signal the message names (`PR_SET_PDEATHSIG`), then checks that the
/// parent is still the process that handed the end over.
pub(crate) fn take(name: &str) -> Result<End> {
    if !name.starts_with(NAME_PREFIX) || name.len() != NAME_PREFIX.len() + 2 * NAME_RANDOM_LEN {
        return Err(Error::NoInheritedEnd);
    }
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    match rustix::net::connect(&sock, &SocketAddrUnix::new_abstract_name(name.as_bytes())?) {
        Ok(()) => {}
        // Nobody listens under that name: the parent is gone or gave up.
        Err(Errno::CONNREFUSED | Errno::NOENT) => return Err(Error::Handover(Handover::NotParent)),
        Err(err) => return Err(err.into()),
    }
    let parent = rustix::net::sockopt::socket_peercred(&sock)?.pid;
    if rustix::process::getppid() != Some(parent) {
        return Err(Error::Handover(Handover::NotParent));
    }
    let mut channel = Channel::new(End::from(sock))?;
    let msg = channel
        .recv_timeout(RECV_TIMEOUT)
        .map_err(|err| match err {
            RecvTimeoutError::Timeout => Error::Handover(Handover::TimedOut),
            RecvTimeoutError::Broken(err) => err,
        })?;
    let (bytes, mut fds) = (msg.bytes, msg.fds);
    let Ok(bytes) = <[u8; MESSAGE_LEN]>::try_from(bytes.as_slice()) else {
        return Err(Error::Handover(Handover::BadMessage));
    };
    if bytes[0..8] != MAGIC || bytes[8..12] != VERSION.to_le_bytes() || fds.len() != 1 {
        return Err(Error::Handover(Handover::BadMessage));
    }
    let end = End::from(fds.remove(0));
    crate::child::check_unix_socket(end.as_fd())?;
    let raw_signal = i32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if raw_signal != 0 {
        let signal =
            Signal::from_named_raw(raw_signal).ok_or(Error::Handover(Handover::BadMessage))?;
        rustix::process::set_parent_process_death_signal(Some(signal))?;
        // The parent may have died between the check above and the prctl.
        if rustix::process::getppid() != Some(parent) {
            return Err(Error::Handover(Handover::NotParent));
        }
    }
    Ok(end)
}

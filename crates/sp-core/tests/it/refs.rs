//! A trial for `ETOOMANYREFS`: the kernel refuses to queue descriptors from a user who already has
//! more in flight than the sender's `RLIMIT_NOFILE` soft limit (`too_many_unix_fds` in
//! `net/unix/af_unix.c`: `user->unix_inflight > rlimit(RLIMIT_NOFILE)`, checked before the new
//! ones are counted; every descriptor passed counts, not only sockets). Root and holders of
//! `CAP_SYS_RESOURCE` or `CAP_SYS_ADMIN` are exempt, so the child drops to a user id of its own
//! (unused by any other process, so nobody else's descriptors in flight are counted) before it
//! sends.
//!
//! With the limit at [`LIMIT`] and [`PER_MESSAGE`] descriptors a message, the sends before the
//! refused one leave `0, 8, 16, 24, 32` in flight, none over 32: exactly five succeed and the
//! sixth is refused. Once the parent has received them, nothing is in flight and a send succeeds
//! again.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{ExitCode, Stdio};

use libtest_mimic::Trial;
use rustix::io::Errno;
use rustix::process::{Resource, Rlimit};
use sp_core::{Channel, Error, SocketKind, TryRecvError};

use crate::{RecvWithin, TestResult, memfd_with, open_fds, role_command, spawn_command, trial};

/// The child's `RLIMIT_NOFILE` soft limit while it sends.
const LIMIT: usize = 32;
/// Descriptors attached to each message (copies of one memfd).
const PER_MESSAGE: usize = 8;
/// Messages the kernel queues before it refuses: sends while at most `LIMIT` are in flight.
const ACCEPTED: usize = LIMIT / PER_MESSAGE + 1;

pub fn trials() -> Vec<Trial> {
    vec![trial(
        "refs_unprivileged_child_over_rlimit_nofile_in_flight_gets_etoomanyrefs_nothing_sent_or_leaked",
        too_many_refs,
    )]
}

fn too_many_refs() -> TestResult {
    let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    let mut cmd = role_command("too_many_refs");
    cmd.stdout(Stdio::piped());
    let mut child = spawn_command(&mut cmd, theirs)?;
    let mut channel = Channel::new(mine)?;
    // Nothing is read here until the child has been refused (it says so on its stdout): a
    // receive would take descriptors out of flight and let more sends through.
    let stdout = child.as_std_mut().stdout.take().ok_or("no stdout pipe")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    assert_eq!(
        line.trim(),
        format!("sent {ACCEPTED}, then ETOOMANYREFS; descriptor table unchanged"),
    );
    // The accepted messages arrive whole; the refused one was never queued.
    for idx in 0..ACCEPTED {
        let msg = channel.recv_within()?;
        assert_eq!(msg.bytes, b"refs", "message {idx}");
        assert_eq!(msg.fds.len(), PER_MESSAGE, "message {idx}");
    }
    let res = channel.try_recv();
    assert!(matches!(res, Err(TryRecvError::Empty)), "{res:?}");
    // Nothing of the child's is in flight now, so the same send goes through.
    channel.send(b"drained", &[])?;
    let again = channel.recv_within()?;
    assert_eq!(again.bytes, b"again");
    assert_eq!(again.fds.len(), PER_MESSAGE);
    drop(again);
    let res = channel.recv_within();
    assert!(matches!(res, Err(Error::PeerGone)), "{res:?}");
    let status = child.wait()?;
    assert!(status.success(), "child: {status}");
    Ok(())
}

/// Child: drops to a user of its own, lowers `RLIMIT_NOFILE` to [`LIMIT`], sends messages of
/// [`PER_MESSAGE`] descriptors until one is refused, checks the error and its descriptor table,
/// reports; after the parent says it drained the socket, sends one more such message.
pub fn role_too_many_refs() -> ExitCode {
    let run = || -> Result<(), String> {
        let end = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
        let mut channel = Channel::new(end).map_err(|e| e.to_string())?;
        drop_privileges()?;
        let hard = rustix::process::getrlimit(Resource::Nofile).maximum;
        rustix::process::setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(LIMIT as u64),
                maximum: hard,
            },
        )
        .map_err(|e| format!("setrlimit: {e}"))?;
        let memfd = memfd_with("sp-it-refs", b"r");
        let fds: Vec<BorrowedFd<'_>> = vec![memfd.as_fd(); PER_MESSAGE];
        let before = open_fds();
        let mut n_sent = 0;
        let refused = loop {
            if n_sent > 100 {
                return Err("the kernel never refused".into());
            }
            match channel.send(b"refs", &fds) {
                Ok(()) => n_sent += 1,
                Err(err) => break err,
            }
        };
        match &refused {
            Error::Os(err) if err.raw_os_error() == Some(Errno::TOOMANYREFS.raw_os_error()) => {}
            other => {
                return Err(format!(
                    "after {n_sent} sends: expected ETOOMANYREFS, got {other:?}"
                ));
            }
        }
        if n_sent != ACCEPTED {
            return Err(format!("{n_sent} sends were accepted, expected {ACCEPTED}"));
        }
        let after = open_fds();
        if before != after {
            return Err(format!("descriptor table changed: {before:?} -> {after:?}"));
        }
        let mut stdout = std::io::stdout();
        writeln!(
            stdout,
            "sent {n_sent}, then ETOOMANYREFS; descriptor table unchanged"
        )
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("report: {e}"))?;
        let drained = channel
            .recv_timeout(crate::RECV_LIMIT)
            .map_err(|e| format!("waiting for the parent: {e}"))?;
        if drained.bytes != b"drained" {
            return Err(format!("unexpected {:?}", drained.bytes));
        }
        channel
            .send(b"again", &fds)
            .map_err(|e| format!("send after the parent drained: {e}"))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("child role too_many_refs failed: {why}");
            ExitCode::FAILURE
        }
    }
}

/// As root: no supplementary groups, then a group and user id of this process's own (well above
/// any system or login range, derived from the pid), which drops every capability. Anyone else
/// already lacks the exemption.
fn drop_privileges() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let id = 0x6000_0000 + rustix::process::getpid().as_raw_nonzero().get() as u32;
    rustix::thread::set_thread_groups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    rustix::thread::set_thread_gid(rustix::process::Gid::from_raw(id))
        .map_err(|e| format!("setgid: {e}"))?;
    rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(id))
        .map_err(|e| format!("setuid: {e}"))?;
    if rustix::process::geteuid().is_root() {
        return Err("still root".into());
    }
    Ok(())
}

//! The roles this binary plays when re-executed as a child (`SP_IT_ROLE`): `run_role` dispatches
//! every role of the integration binary, the ones of `children.rs` defined here and the others in
//! the modules whose trials use them.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{ExitCode, Stdio};

use rustix::process::{Resource, Rlimit};
use sp_core::{Channel, Error, SocketKind, pair};
use sp_test_support::frame;

use crate::{RECV_LIMIT, RecvWithin, memfd_with, open_fds, spawn_role};

/// Runs the role named by `SP_IT_ROLE`; the exit code is the outcome.
pub fn run_role(role: &str) -> ExitCode {
    let res = match role {
        "write_line" => role_write_line(),
        "exit_now" => Ok(()),
        "check_adopted" => role_check_adopted(),
        "spawn_from_fd_0" => role_spawn_from_fd_0(),
        "adopt_outcome" => return role_adopt_outcome(),
        "ready_then_block" => role_ready_then_block(),
        "emfile" => role_emfile(),
        "pdeath_parent" => role_pdeath_parent(),
        "park_forever" => loop {
            std::thread::park();
        },
        "list_fds" => role_list_fds(),
        "partial_frame_then_block" => role_partial_frame_then_block(),
        "sigpipe_not_raised" => role_sigpipe_not_raised(),
        "sigpipe_control" => role_sigpipe_control(),
        "send_sizes" => return crate::sizes::role_send_sizes(),
        "fill_until_full" => return crate::waiting::role_fill_until_full(),
        "raw_fds_peer" => return crate::max_fds::role_raw_fds_peer(),
        "adopt_then_plain_grandchild" => return crate::inherit::role_adopt_then_plain_grandchild(),
        "report_fd_env" => return crate::inherit::role_report_fd_env(),
        "adopt_with_a_second_thread" => return crate::inherit::role_adopt_with_a_second_thread(),
        "too_many_refs" => return crate::refs::role_too_many_refs(),
        "stranger_then_adopt" => return crate::handover::role_stranger_then_adopt(),
        "pdeath_parent_handover" => return crate::handover::role_pdeath_parent_handover(),
        "adopt_then_park" => return crate::handover::role_adopt_then_park(),
        #[cfg(feature = "tokio")]
        "tokio_echo" => crate::tokio::role_tokio_echo(),
        other => Err(format!("unknown role {other:?}")),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("child role {role} failed: {why}");
            ExitCode::FAILURE
        }
    }
}

type RoleResult = Result<(), String>;

fn adopt_channel() -> Result<Channel, String> {
    let end = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
    Channel::new(end).map_err(|e| format!("Channel::new: {e}"))
}

fn role_write_line() -> RoleResult {
    let mut end = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
    end.write_all(b"Message from child process\n")
        .map_err(|e| e.to_string())
}

/// Holds an end on descriptor 0 (where a program with stdin closed gets its next socket) and
/// hands it to a grandchild whose stdin is `/dev/null`. `spawn_with` must move the end off 0
/// before `Command` rewires the standard descriptors; otherwise `SP_CORE_FD=0` names `/dev/null`
/// in the grandchild, `adopt` fails and no line arrives.
fn role_spawn_from_fd_0() -> RoleResult {
    let (mut ours, theirs) = pair(SocketKind::Stream).map_err(|e| e.to_string())?;
    rustix::stdio::dup2_stdin(&theirs).map_err(|e| format!("dup2: {e}"))?;
    drop(theirs);
    let on_zero = low_fd::take_fd_0();
    if on_zero.as_raw_fd() != 0 {
        return Err("the end is not on descriptor 0".into());
    }
    let mut cmd = crate::role_command("write_line");
    cmd.stdin(Stdio::null());
    let opts = sp_core::SpawnOptions::new().parent_death_signal(rustix::process::Signal::KILL);
    let mut grandchild = sp_core::spawn_with(&mut cmd, on_zero, opts).map_err(|e| e.to_string())?;
    ours.set_read_timeout(Some(RECV_LIMIT))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&mut ours)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let status = grandchild.wait().map_err(|e| e.to_string())?;
    if line != "Message from child process\n" || !status.success() {
        return Err(format!(
            "grandchild wrote {line:?} and exited with {status}"
        ));
    }
    Ok(())
}

#[allow(unsafe_code)] // Owning descriptor 0 needs `from_raw_fd`.
mod low_fd {
    use std::os::fd::{FromRawFd, OwnedFd};

    use sp_core::End;

    /// Takes ownership of descriptor 0 as an `End`.
    pub fn take_fd_0() -> End {
        // SAFETY: the caller has just made descriptor 0 a copy of a socket with `dup2`; nothing
        // else in this single-threaded child role owns or closes it (std's `Stdin` borrows 0 only
        // when used, and the role never uses it).
        End::from(unsafe { OwnedFd::from_raw_fd(0) })
    }
}

fn role_check_adopted() -> RoleResult {
    let end = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
    let mut problems = Vec::new();
    match rustix::io::fcntl_getfd(&end) {
        Ok(flags) if flags.contains(rustix::io::FdFlags::CLOEXEC) => {}
        other => problems.push(format!("adopted end is not close-on-exec: {other:?}")),
    }
    match rustix::fs::fstat(&end) {
        Ok(stat)
            if rustix::fs::FileType::from_raw_mode(stat.st_mode)
                == rustix::fs::FileType::Socket => {}
        other => problems.push(format!("adopted end is not a socket: {other:?}")),
    }
    match end.kind() {
        Ok(SocketKind::SeqPacket) => {}
        other => problems.push(format!("adopted end has kind {other:?}, not seqpacket")),
    }
    match sp_core::adopt() {
        Err(Error::NoInheritedEnd) => {}
        other => problems.push(format!("second adopt gave {other:?}, not NoInheritedEnd")),
    }
    // SO_PEERCRED on a socketpair names the process that created the pair, for both ends: in the
    // child it reports the parent, not the peer process's own pid.
    let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32);
    match end.peer_credentials() {
        Ok(cred) if Some(cred.pid) == parent => {}
        other => problems.push(format!("peer_credentials {other:?}, parent is {parent:?}")),
    }
    let report = if problems.is_empty() {
        "ok".to_owned()
    } else {
        problems.join("; ")
    };
    let channel = Channel::new(end).map_err(|e| e.to_string())?;
    channel
        .send(report.as_bytes(), &[])
        .map_err(|e| e.to_string())
}

/// Reports every descriptor this child has besides stdio and its adopted end, as
/// "fd target" lines ("none" when there are none).
fn role_list_fds() -> RoleResult {
    let end = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
    let own = end.as_raw_fd();
    let others: Vec<String> = open_fds()
        .into_iter()
        .filter(|(fd, _)| *fd > 2 && *fd != own)
        .map(|(fd, target)| format!("{fd} {target}"))
        .collect();
    let report = if others.is_empty() {
        "none".to_owned()
    } else {
        others.join("\n")
    };
    let channel = Channel::new(end).map_err(|e| e.to_string())?;
    channel
        .send(report.as_bytes(), &[])
        .map_err(|e| e.to_string())
}

/// Writes the first part of a stream frame, with its descriptor, then waits to be killed.
fn role_partial_frame_then_block() -> RoleResult {
    let end = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
    let memfd = memfd_with("sp-it-child-partial", b"partial");
    let mut bytes = frame::header(frame::MAGIC, frame::VERSION, 1, 100).to_vec();
    bytes.extend_from_slice(b"ten bytes!");
    frame::send_raw(&end, &bytes, &[memfd.as_fd()]).map_err(|e| e.to_string())?;
    loop {
        std::thread::park();
    }
}

pub const ADOPT_OK: u8 = 10;
pub const ADOPT_NOT_A_SOCKET: u8 = 11;
pub const ADOPT_NO_INHERITED_END: u8 = 12;
const ADOPT_OTHER: u8 = 13;

fn role_adopt_outcome() -> ExitCode {
    ExitCode::from(match sp_core::adopt() {
        Ok(_) => ADOPT_OK,
        Err(Error::NotASocket) => ADOPT_NOT_A_SOCKET,
        Err(Error::NoInheritedEnd) => ADOPT_NO_INHERITED_END,
        Err(err) => {
            eprintln!("adopt: {err:?}");
            ADOPT_OTHER
        }
    })
}

fn role_ready_then_block() -> RoleResult {
    let mut channel = adopt_channel()?;
    channel.send(b"ready", &[]).map_err(|e| e.to_string())?;
    // Blocks until the parent closes its end or kills this process.
    match channel.recv() {
        Err(Error::PeerGone) => Ok(()),
        other => Err(format!("expected PeerGone, got {other:?}")),
    }
}

/// Lowers `RLIMIT_NOFILE` so that exactly two more descriptors fit, then receives a message
/// carrying five: the kernel installs two, drops the rest and sets `MSG_CTRUNC`.
fn role_emfile() -> RoleResult {
    let mut channel = adopt_channel()?;
    let before = open_fds();
    // RLIMIT_NOFILE bounds descriptor *numbers*: find the limit below which exactly two are free.
    let mut free = 0;
    let mut limit = 0;
    while free < 2 {
        if !before.contains_key(&limit) {
            free += 1;
        }
        limit += 1;
    }
    let old = rustix::process::getrlimit(Resource::Nofile);
    rustix::process::setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(limit as u64),
            maximum: old.maximum,
        },
    )
    .map_err(|e| format!("setrlimit: {e}"))?;
    channel.send(b"ready", &[]).map_err(|e| e.to_string())?;
    let first = channel.recv_within();
    rustix::process::setrlimit(Resource::Nofile, old).map_err(|e| format!("restore: {e}"))?;
    let first = match first {
        Err(Error::FdLimit { declared, received }) => {
            format!("FdLimit declared={declared} received={received}")
        }
        other => format!("{other:?}"),
    };
    let after = open_fds();
    let unchanged = match crate::fd_diff(&before, &after) {
        Ok(()) => "fds unchanged".to_owned(),
        Err(why) => why,
    };
    let second = match channel.recv_within() {
        Ok(msg) => format!("second ok with {} fd", msg.fds.len()),
        Err(Error::Poisoned) => "second Poisoned".to_owned(),
        Err(err) => format!("second {err:?}"),
    };
    let report = format!("{first}; {unchanged}; {second}");
    channel
        .send(report.as_bytes(), &[])
        .map_err(|e| e.to_string())
}

/// Spawns a grandchild that only a signal can end, with `PR_SET_PDEATHSIG` = `SIGKILL`, tells the
/// test its pid, and exits when the test says so.
fn role_pdeath_parent() -> RoleResult {
    pdeath_parent(|end| spawn_role("park_forever", end))
}

/// The `pdeath_parent` roles: adopts, starts a grandchild that must die with this process through
/// `spawn`, reports its pid, and exits when told.
pub fn pdeath_parent_with(
    spawn: impl FnOnce(sp_core::End) -> sp_core::Result<sp_core::Child>,
) -> ExitCode {
    match pdeath_parent(spawn) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("child role pdeath_parent failed: {why}");
            ExitCode::FAILURE
        }
    }
}

fn pdeath_parent(
    spawn: impl FnOnce(sp_core::End) -> sp_core::Result<sp_core::Child>,
) -> RoleResult {
    let mut channel = adopt_channel()?;
    let (_ours, theirs) = pair(SocketKind::Stream).map_err(|e| e.to_string())?;
    let grandchild = spawn(theirs).map_err(|e| format!("spawn: {e}"))?;
    channel
        .send(grandchild.id().to_string().as_bytes(), &[])
        .map_err(|e| e.to_string())?;
    match channel.recv_within() {
        Ok(msg) if msg.bytes == b"exit" => Ok(()),
        other => Err(format!("expected \"exit\", got {other:?}")),
    }
}

#[allow(unsafe_code)] // std has no safe way to restore a signal's default action.
mod sigpipe {
    unsafe extern "C" {
        /// `signal(2)` from the C library that std already links.
        fn signal(signum: i32, handler: usize) -> usize;
    }

    /// `signal(SIGPIPE, SIG_DFL)`: Rust's runtime ignores SIGPIPE; undo that so a write to a gone
    /// peer without `MSG_NOSIGNAL` would kill this process.
    pub fn restore_default() {
        const SIG_DFL: usize = 0;
        const SIG_ERR: usize = usize::MAX;
        // SAFETY: `signal` is called with a valid signal number and SIG_DFL, which installs no
        // handler code; this runs at the start of a single-threaded child role, so no other thread
        // observes the disposition change.
        let old = unsafe { signal(rustix::process::Signal::PIPE.as_raw(), SIG_DFL) };
        assert_ne!(old, SIG_ERR, "signal(SIGPIPE, SIG_DFL) failed");
    }
}

/// Whether SIGPIPE is ignored in this process (`SigIgn` in /proc/self/status).
fn sigpipe_ignored() -> Result<bool, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .ok_or("no SigIgn line")?;
    let mask = u64::from_str_radix(mask.trim(), 16).map_err(|e| e.to_string())?;
    Ok(mask & (1 << (rustix::process::Signal::PIPE.as_raw() - 1)) != 0)
}

fn role_sigpipe_not_raised() -> RoleResult {
    sigpipe::restore_default();
    if sigpipe_ignored()? {
        return Err("SIGPIPE is still ignored".into());
    }
    for kind in [SocketKind::SeqPacket, SocketKind::Stream] {
        let (a, b) = Channel::pair(kind).map_err(|e| e.to_string())?;
        drop(b);
        match a.send(b"anyone?", &[]) {
            Err(Error::PeerGone) => {}
            other => return Err(format!("{kind:?} send: {other:?}")),
        }
        let (mut a, b) = pair(kind).map_err(|e| e.to_string())?;
        drop(b);
        match a.write(b"x") {
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
            other => return Err(format!("{kind:?} End::write: {other:?}")),
        }
        match a.write_vectored(&[io::IoSlice::new(b"x")]) {
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
            other => return Err(format!("{kind:?} End::write_vectored: {other:?}")),
        }
    }
    Ok(())
}

fn role_sigpipe_control() -> RoleResult {
    sigpipe::restore_default();
    let (a, b) = pair(SocketKind::Stream).map_err(|e| e.to_string())?;
    drop(b);
    // No MSG_NOSIGNAL: the kernel raises SIGPIPE, which now kills this process. (Linux raises it
    // only for AF_UNIX *stream* sends; a seqpacket send to a gone peer fails with EPIPE and no
    // signal whatever the flags, so only the stream half of the other trial can catch a missing
    // MSG_NOSIGNAL.)
    let res = rustix::net::send(&a, b"x", rustix::net::SendFlags::empty());
    Err(format!("survived a send without MSG_NOSIGNAL: {res:?}"))
}

//! Trials with real child processes (this binary re-executed with `SP_IT_ROLE`); the roles those
//! children play are in `roles.rs`.

use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use rustix::process::{Pid, PidfdFlags};
use sp_core::{Channel, Error, FD_ENV, RecvTimeoutError, SocketKind, pair};

use crate::pairs::kind_name;
use crate::roles::{ADOPT_NO_INHERITED_END, ADOPT_NOT_A_SOCKET, ADOPT_OK};
use crate::{
    RECV_LIMIT, RecvWithin, TestResult, assert_cloexec, count_fds_to, memfd_with, open_fds,
    role_command, spawn_role, trial,
};

pub fn trials() -> Vec<Trial> {
    let mut trials = vec![
        trial(
            "child_writes_line_parent_reads_it_then_eof_and_child_exits_0",
            child_writes_line,
        ),
        trial(
            "spawn_closes_the_parents_copy_of_the_child_end",
            spawn_closes_parent_copy,
        ),
        trial(
            "child_exiting_at_once_gives_parents_blocking_recv_peer_gone",
            child_exits_at_once,
        ),
        trial(
            "child_adopted_end_is_cloexec_socket_second_adopt_fails_peercred_is_parent",
            child_checks_adopted_end,
        ),
        trial(
            "adopt_with_fd_env_pointing_at_dev_null_is_not_a_socket",
            || adopt_outcome(AdoptEnv::DevNull, ADOPT_NOT_A_SOCKET),
        ),
        trial(
            "adopt_with_fd_env_naming_a_closed_fd_is_not_a_socket",
            || adopt_outcome(AdoptEnv::Closed, ADOPT_NOT_A_SOCKET),
        ),
        trial("adopt_with_fd_env_missing_is_no_inherited_end", || {
            adopt_outcome(AdoptEnv::Missing, ADOPT_NO_INHERITED_END)
        }),
        trial("adopt_with_fd_env_not_a_number_is_no_inherited_end", || {
            adopt_outcome(AdoptEnv::Garbage, ADOPT_NO_INHERITED_END)
        }),
        trial(
            "adopt_of_an_inherited_af_inet_socket_is_not_a_socket",
            adopt_inet_socket,
        ),
        trial(
            "adopt_of_the_end_passed_by_spawn_succeeds",
            adopt_spawned_end,
        ),
        trial(
            "spawn_moves_an_end_on_fd_0_clear_of_a_rewired_stdin",
            spawn_from_fd_0,
        ),
        trial(
            "child_inherits_only_its_own_end_not_the_parents_other_fds",
            child_inherits_only_its_end,
        ),
        trial(
            "spawn_with_a_reused_command_passes_only_the_new_end",
            spawn_reusing_command,
        ),
        trial(
            "spawn_of_a_missing_program_fails_and_closes_the_child_end",
            spawn_missing_program,
        ),
        trial(
            "child_pidfd_is_cloexec_and_becomes_readable_after_exit",
            child_pidfd,
        ),
        trial(
            "child_killed_mid_frame_gives_peer_gone_not_a_partial_message_and_closes_its_fd",
            child_killed_mid_frame,
        ),
        trial(
            "child_sigkill_wakes_parent_blocked_in_recv_with_peer_gone_within_5s",
            peer_death_wakes_blocked_recv,
        ),
        trial(
            "parent_death_signal_kills_grandchild_when_its_parent_exits",
            parent_death_signal,
        ),
        trial(
            "send_to_gone_peer_is_peer_gone_not_sigpipe_in_child_with_default_sigpipe",
            sigpipe_not_raised,
        ),
        trial(
            "control_plain_send_to_gone_peer_raises_sigpipe_in_child_with_default_sigpipe",
            sigpipe_control,
        ),
    ];
    for kind in [SocketKind::SeqPacket, SocketKind::Stream] {
        let k = kind_name(kind);
        trials.push(trial(
            format!("emfile_{k}_child_at_rlimit_nofile_gets_fd_limit_and_fd_set_unchanged"),
            move || emfile(kind),
        ));
    }
    trials
}

fn child_writes_line() -> TestResult {
    let (parent_end, child_end) = pair(SocketKind::Stream)?;
    let mut child = spawn_role("write_line", child_end)?;
    parent_end.set_read_timeout(Some(RECV_LIMIT))?;
    let mut reader = BufReader::new(parent_end);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    assert_eq!(line, "Message from child process\n");
    line.clear();
    assert_eq!(
        reader.read_line(&mut line)?,
        0,
        "then end of file, got {line:?}"
    );
    let status = child.wait()?;
    assert!(status.success(), "child exited with {status}");
    Ok(())
}

fn spawn_closes_parent_copy() -> TestResult {
    let (parent_end, child_end) = pair(SocketKind::SeqPacket)?;
    let raw = child_end.as_raw_fd();
    let target = std::fs::read_link(format!("/proc/self/fd/{raw}"))?
        .display()
        .to_string();
    assert!(target.starts_with("socket:["), "{target}");
    let mut child = spawn_role("ready_then_block", child_end)?;
    // Right after spawn returns, before anything else happens: the number is closed or reused.
    let now = open_fds();
    assert_ne!(
        now.get(&raw),
        Some(&target),
        "fd {raw} still holds the child's end"
    );
    assert_eq!(
        count_fds_to(&target),
        0,
        "no descriptor in the parent refers to the child's end"
    );
    let mut channel = Channel::new(parent_end)?;
    assert_eq!(channel.recv_within()?.bytes, b"ready");
    drop(channel);
    let status = child.wait()?;
    assert!(status.success(), "child exited with {status}");
    Ok(())
}

/// Runs `f` on a helper thread and waits at most `limit` for its result.
fn on_thread<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let res = rx
        .recv_timeout(limit)
        .map_err(|e| format!("helper thread: {e}"))?;
    handle.join().map_err(|_| "helper thread panicked")?;
    Ok(res)
}

fn child_exits_at_once() -> TestResult {
    for kind in [SocketKind::SeqPacket, SocketKind::Stream] {
        let (parent_end, child_end) = pair(kind)?;
        let mut child = spawn_role("exit_now", child_end)?;
        let mut channel = Channel::new(parent_end)?;
        // A blocking recv without a timeout: it must end when the child's copy closes.
        let res = on_thread(RECV_LIMIT, move || channel.recv())?;
        assert!(matches!(res, Err(Error::PeerGone)), "{kind:?}: got {res:?}");
        assert!(child.wait()?.success());
    }
    Ok(())
}

fn child_checks_adopted_end() -> TestResult {
    let (parent_end, child_end) = pair(SocketKind::SeqPacket)?;
    let mut child = spawn_role("check_adopted", child_end)?;
    // SO_PEERCRED names the pair's creator, this process, even though the peer is now the child.
    let me = rustix::process::getpid().as_raw_nonzero().get() as u32;
    assert_eq!(parent_end.peer_credentials()?.pid, me);
    assert_ne!(child.id(), me);
    let mut channel = Channel::new(parent_end)?;
    let report = channel.recv_within()?;
    assert_eq!(String::from_utf8_lossy(&report.bytes), "ok");
    let status = child.wait()?;
    assert!(status.success(), "child exited with {status}");
    Ok(())
}

fn spawn_from_fd_0() -> TestResult {
    let (_parent_end, child_end) = pair(SocketKind::Stream)?;
    let mut child = spawn_role("spawn_from_fd_0", child_end)?;
    let status = child.wait()?;
    assert!(status.success(), "the role failed: {status}");
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum AdoptEnv {
    DevNull,
    Closed,
    Missing,
    Garbage,
}

/// Children started with a plain `Command`, so no end is passed; the exit code says what
/// `adopt()` returned.
fn adopt_outcome(env: AdoptEnv, expected: u8) -> TestResult {
    let mut cmd = role_command("adopt_outcome");
    cmd.stdin(Stdio::null());
    match env {
        AdoptEnv::DevNull => cmd.env(FD_ENV, "0"),
        AdoptEnv::Closed => cmd.env(FD_ENV, "987"),
        AdoptEnv::Missing => cmd.env_remove(FD_ENV),
        AdoptEnv::Garbage => cmd.env(FD_ENV, "abc"),
    };
    let status = cmd.status()?;
    assert_eq!(
        status.code(),
        Some(i32::from(expected)),
        "{env:?}: child exited with {status}"
    );
    Ok(())
}

fn poll_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    crate::messages::wait_readable(fd, timeout)
}

fn child_pidfd() -> TestResult {
    let (parent_end, child_end) = pair(SocketKind::SeqPacket)?;
    let mut child = spawn_role("ready_then_block", child_end)?;
    let mut channel = Channel::new(parent_end)?;
    assert_eq!(channel.recv_within()?.bytes, b"ready");
    let pidfd = child.pidfd().ok_or("no pidfd (Linux 5.3+ provides one)")?;
    assert_cloexec(pidfd);
    assert!(
        !poll_readable(pidfd, Duration::ZERO),
        "the child is still running"
    );
    // Closing our end makes the child's recv return PeerGone, and it exits.
    drop(channel);
    let pidfd = child.pidfd().expect("still there");
    assert!(
        poll_readable(pidfd, RECV_LIMIT),
        "pidfd not readable after the child exited"
    );
    let status = child.wait()?;
    assert!(status.success(), "child exited with {status}");
    Ok(())
}

/// The state letter from `/proc/<pid>/stat`, or `None` when the process is gone.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may contain spaces and parentheses, so split at the last ')'.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

fn peer_death_wakes_blocked_recv() -> TestResult {
    let (parent_end, child_end) = pair(SocketKind::SeqPacket)?;
    let mut child = spawn_role("ready_then_block", child_end)?;
    let mut channel = Channel::new(parent_end)?;
    assert_eq!(channel.recv_within()?.bytes, b"ready");
    let (tid_tx, tid_rx) = mpsc::channel();
    let (res_tx, res_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let _ = tid_tx.send(rustix::thread::gettid().as_raw_nonzero().get());
        let res = channel.recv();
        let _ = res_tx.send((res, Instant::now()));
    });
    let tid = tid_rx.recv_timeout(RECV_LIMIT)?;
    // Make the "blocked in recv" part real: wait (bounded) until the reader thread sleeps in the
    // kernel. Killing earlier would still have to give PeerGone, so this only sharpens the test.
    let deadline = Instant::now() + RECV_LIMIT;
    while std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap_or(0)..].starts_with(") S"))
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "reader thread never blocked");
        std::thread::yield_now();
    }
    let killed_at = Instant::now();
    child.kill()?;
    let (res, woke_at) = res_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "recv() still blocked 5 s after the peer was killed")?;
    reader.join().map_err(|_| "reader panicked")?;
    assert!(matches!(res, Err(Error::PeerGone)), "got {res:?}");
    let latency = woke_at.duration_since(killed_at);
    assert!(latency < Duration::from_secs(5), "woke after {latency:?}");
    let status = child.wait()?;
    assert_eq!(
        status.signal(),
        Some(rustix::process::Signal::KILL.as_raw())
    );
    Ok(())
}

fn parent_death_signal() -> TestResult {
    parent_death_signal_via("pdeath_parent")
}

/// A child A playing `role` starts a grandchild B with a death signal; when A exits, B must die.
pub fn parent_death_signal_via(role: &str) -> TestResult {
    let (parent_end, child_end) = pair(SocketKind::SeqPacket)?;
    let mut child_a = spawn_role(role, child_end)?;
    let mut channel = Channel::new(parent_end)?;
    let msg = channel.recv_within()?;
    let pid_b: i32 = String::from_utf8_lossy(&msg.bytes).parse()?;
    // A pidfd pins the identity of B, so a reused pid cannot fool the check below.
    let pidfd_b: OwnedFd =
        rustix::process::pidfd_open(Pid::from_raw(pid_b).ok_or("pid 0")?, PidfdFlags::empty())?;
    assert_cloexec(&pidfd_b);
    let ppid_line = std::fs::read_to_string(format!("/proc/{pid_b}/status"))?
        .lines()
        .find(|l| l.starts_with("PPid:"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert_eq!(
        ppid_line.split_whitespace().nth(1),
        Some(child_a.id().to_string().as_str()),
        "B's parent is A"
    );
    assert!(
        !poll_readable(pidfd_b.as_fd(), Duration::ZERO),
        "B is alive while A lives"
    );
    channel.send(b"exit", &[])?;
    let status = child_a.wait()?;
    assert!(status.success(), "A exited with {status}");
    let start = Instant::now();
    if !poll_readable(pidfd_b.as_fd(), RECV_LIMIT) {
        let _ = rustix::process::pidfd_send_signal(&pidfd_b, rustix::process::Signal::KILL);
        return Err(format!(
            "grandchild {pid_b} still alive {:?} after its parent exited",
            start.elapsed()
        )
        .into());
    }
    // Exited: the entry is gone, or a zombie until its new parent reaps it.
    let state = proc_state(pid_b);
    assert!(
        matches!(state, None | Some('Z' | 'X')),
        "grandchild state {state:?}"
    );
    Ok(())
}

fn sigpipe_not_raised() -> TestResult {
    let status = role_command("sigpipe_not_raised").status()?;
    assert_eq!(status.signal(), None, "child killed by signal: {status}");
    assert!(status.success(), "child exited with {status}");
    Ok(())
}

fn sigpipe_control() -> TestResult {
    let status = role_command("sigpipe_control").status()?;
    assert_eq!(
        status.signal(),
        Some(rustix::process::Signal::PIPE.as_raw()),
        "the control child must die of SIGPIPE, else the other trial proves nothing: {status}"
    );
    Ok(())
}

fn emfile(kind: SocketKind) -> TestResult {
    let (parent_end, child_end) = pair(kind)?;
    let mut child = spawn_role("emfile", child_end)?;
    let mut channel = Channel::new(parent_end)?;
    assert_eq!(channel.recv_within()?.bytes, b"ready");
    let memfds: Vec<OwnedFd> = (0..5).map(|i| memfd_with("sp-it-emfile", &[i])).collect();
    let borrowed: Vec<BorrowedFd<'_>> = memfds.iter().map(AsFd::as_fd).collect();
    channel.send(b"five fds", &borrowed)?;
    channel.send(b"one fd", &borrowed[..1])?;
    drop(borrowed);
    drop(memfds);
    let report = channel.recv_within()?;
    let report = String::from_utf8_lossy(&report.bytes);
    let parts: Vec<&str> = report.split("; ").collect();
    let [first, fds, second] = parts[..] else {
        panic!("unexpected report {report:?}");
    };
    // Two descriptors fit under the lowered limit; the kernel dropped the other three. Both kinds
    // report the count the frame's header declared (on a stream, read from the header that
    // arrived with the descriptors).
    assert_eq!(first, "FdLimit declared=5 received=2", "report {report:?}");
    assert_eq!(fds, "fds unchanged", "report {report:?}");
    let expected_second = match kind {
        SocketKind::SeqPacket => "second ok with 1 fd",
        _ => "second Poisoned",
    };
    assert_eq!(second, expected_second, "report {report:?}");
    let status = child.wait()?;
    assert!(status.success(), "child exited with {status}");
    Ok(())
}

fn adopt_inet_socket() -> TestResult {
    let inet = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // `End::from` trusts its caller; `adopt` in the child is what checks.
    let mut child = spawn_role("adopt_outcome", sp_core::End::from(inet))?;
    let status = child.wait()?;
    assert_eq!(
        status.code(),
        Some(i32::from(ADOPT_NOT_A_SOCKET)),
        "child exited with {status}"
    );
    Ok(())
}

fn adopt_spawned_end() -> TestResult {
    let (_parent_end, child_end) = pair(SocketKind::Stream)?;
    let mut child = spawn_role("adopt_outcome", child_end)?;
    let status = child.wait()?;
    assert_eq!(
        status.code(),
        Some(i32::from(ADOPT_OK)),
        "child exited with {status}"
    );
    Ok(())
}

/// Descriptors this process lets children inherit (no `O_CLOEXEC`), for example ones the test
/// runner itself passed down; a child may legitimately have those too.
fn inheritable_fds() -> std::collections::BTreeMap<std::os::fd::RawFd, String> {
    open_fds()
        .into_iter()
        .filter(|(fd, _)| *fd > 2 && !crate::cloexec_by_number(*fd))
        .collect()
}

/// Checks a `list_fds` report: everything the child has beyond stdio and its end must be
/// something this process deliberately lets children inherit.
pub fn check_child_fds(report: &[u8]) -> TestResult {
    let report = String::from_utf8_lossy(report);
    if report == "none" {
        return Ok(());
    }
    let allowed = inheritable_fds();
    let leaked: Vec<&str> = report
        .lines()
        .filter(|line| {
            let (fd, target) = line.split_once(' ').unwrap_or((line, ""));
            fd.parse()
                .ok()
                .and_then(|fd| allowed.get(&fd))
                .map(String::as_str)
                != Some(target)
        })
        .collect();
    if leaked.is_empty() {
        Ok(())
    } else {
        Err(format!("the child inherited descriptors it must not have: {leaked:?}").into())
    }
}

fn child_inherits_only_its_end() -> TestResult {
    // Descriptors of every kind the crate creates, open in the parent while it spawns.
    let (_other_a, _other_b) = Channel::pair(SocketKind::SeqPacket)?;
    let (_stream_a, _stream_b) = pair(SocketKind::Stream)?;
    let _memfd = memfd_with("sp-it-not-inherited", b"");
    let (parent_end, child_end) = pair(SocketKind::SeqPacket)?;
    let mut child = spawn_role("list_fds", child_end)?;
    let mut channel = Channel::new(parent_end)?;
    let report = channel.recv_within()?;
    check_child_fds(&report.bytes)?;
    assert!(child.wait()?.success());
    Ok(())
}

/// `std::process::Command` may be spawned more than once; `spawn_with` registers a `pre_exec`
/// step on it each time, and a step left from an earlier spawn must not act on the descriptor
/// number that the earlier end had (by now closed, or reused by something else).
fn spawn_reusing_command() -> TestResult {
    let mut cmd = role_command("list_fds");
    let opts = sp_core::SpawnOptions::new().parent_death_signal(rustix::process::Signal::KILL);
    let mut spacers = Vec::new();
    for round in 0..3 {
        // Shift the numbers so each end lands on a different one, and the earlier end's number
        // is taken by this round's parent end.
        spacers.push(memfd_with("sp-it-spacer", b""));
        let (parent_end, child_end) = pair(SocketKind::SeqPacket)?;
        let mut child = sp_core::spawn_with(&mut cmd, child_end, opts)
            .map_err(|e| format!("round {round}: spawn with a reused Command failed: {e}"))?;
        let mut channel = Channel::new(parent_end)?;
        let report = channel.recv_within()?;
        check_child_fds(&report.bytes)
            .map_err(|e| format!("round {round}: {}", e.message().unwrap_or_default()))?;
        assert!(child.wait()?.success());
    }
    Ok(())
}

fn spawn_missing_program() -> TestResult {
    let (parent_end, child_end) = pair(SocketKind::SeqPacket)?;
    let target = std::fs::read_link(format!("/proc/self/fd/{}", child_end.as_raw_fd()))?
        .display()
        .to_string();
    let err = sp_core::spawn(
        &mut std::process::Command::new("/nonexistent/sp-it-program"),
        child_end,
    )
    .expect_err("the program does not exist");
    match &err {
        Error::Os(os) => assert_eq!(os.kind(), io::ErrorKind::NotFound, "{err}"),
        other => panic!("expected Os(NotFound), got {other:?}"),
    }
    assert_eq!(
        count_fds_to(&target),
        0,
        "the child end must be closed after a failed spawn"
    );
    let mut channel = Channel::new(parent_end)?;
    assert!(matches!(channel.recv_within(), Err(Error::PeerGone)));
    Ok(())
}

fn child_killed_mid_frame() -> TestResult {
    let (parent_end, child_end) = pair(SocketKind::Stream)?;
    let mut child = spawn_role("partial_frame_then_block", child_end)?;
    let mut channel = Channel::new(parent_end)?;
    assert!(
        poll_readable(channel.as_fd(), RECV_LIMIT),
        "the child wrote nothing"
    );
    let res = channel.recv_timeout(Duration::from_millis(50));
    assert!(
        matches!(res, Err(RecvTimeoutError::Timeout)),
        "a partial frame is no message: {res:?}"
    );
    assert_eq!(
        count_fds_to("sp-it-child-partial"),
        1,
        "the frame's fd is held for it"
    );
    child.kill()?;
    let res = channel.recv_within();
    assert!(matches!(res, Err(Error::PeerGone)), "got {res:?}");
    assert_eq!(
        count_fds_to("sp-it-child-partial"),
        0,
        "the unfinished frame's fd was closed"
    );
    let status = child.wait()?;
    assert_eq!(
        status.signal(),
        Some(rustix::process::Signal::KILL.as_raw())
    );
    Ok(())
}

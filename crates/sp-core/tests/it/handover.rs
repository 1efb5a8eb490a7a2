//! Trials for an end handed over after `exec` (`SpawnOptions::hand_over_after_exec`): the child
//! is started without a pre-exec step and takes its end from a one-time rendezvous socket. The
//! same guarantees as inheriting (only its end, close-on-exec, the variable gone, a death signal)
//! and the handover's own: a child that exits or never adopts is an error within the bound, a
//! process other than the child gets nothing, and a child takes an end only from its parent.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use libtest_mimic::Trial;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use sp_core::{Channel, End, Error, Handover, RENDEZVOUS_ENV, Signal, SocketKind, SpawnOptions};
use sp_test_support::procs::children_of_this_process;

use crate::{RECV_LIMIT, RecvWithin, TestResult, role_command, timed, trial};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("handover_child_holds_only_its_end", || {
            let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
            let mut child = spawn_handed(&mut role_command("list_fds"), theirs, RECV_LIMIT)?;
            let report = Channel::new(mine)?.recv_within()?;
            crate::children::check_child_fds(&report.bytes)?;
            assert!(child.wait()?.success());
            Ok(())
        }),
        trial(
            "handover_adopted_end_is_cloexec_seqpacket_from_the_parent",
            || {
                let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
                let mut child =
                    spawn_handed(&mut role_command("check_adopted"), theirs, RECV_LIMIT)?;
                let report = Channel::new(mine)?.recv_within()?;
                assert_eq!(String::from_utf8_lossy(&report.bytes), "ok");
                assert!(child.wait()?.success());
                Ok(())
            },
        ),
        trial(
            "handover_child_passes_no_variable_to_a_plain_grandchild",
            || {
                let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
                let mut cmd = role_command("adopt_then_plain_grandchild");
                let mut child = spawn_handed(&mut cmd, theirs, RECV_LIMIT)?;
                let report = Channel::new(mine)?.recv_within()?;
                assert_eq!(
                    String::from_utf8_lossy(&report.bytes),
                    "child: absent; grandchild: absent, adopt: NoInheritedEnd"
                );
                assert!(child.wait()?.success());
                Ok(())
            },
        ),
        trial("handover_child_that_exits_first_is_child_exited", || {
            let (_mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
            let (res, took) =
                timed(|| spawn_handed(&mut role_command("exit_now"), theirs, RECV_LIMIT));
            assert!(
                matches!(res, Err(Error::Handover(Handover::ChildExited))),
                "got {res:?}"
            );
            assert!(took < RECV_LIMIT, "noticed after {took:?}");
            assert_eq!(children_of_this_process(), Vec::<u32>::new());
            Ok(())
        }),
        trial(
            "handover_child_that_never_adopts_times_out_and_is_reaped",
            || {
                let (_mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
                let timeout = Duration::from_millis(300);
                let (res, took) =
                    timed(|| spawn_handed(&mut role_command("park_forever"), theirs, timeout));
                assert!(
                    matches!(res, Err(Error::Handover(Handover::TimedOut))),
                    "got {res:?}"
                );
                assert!(
                    took >= timeout && took < RECV_LIMIT,
                    "gave up after {took:?}"
                );
                // Killed and reaped: no child left, running or zombie.
                assert_eq!(children_of_this_process(), Vec::<u32>::new());
                Ok(())
            },
        ),
        trial(
            "handover_refuses_a_stranger_and_the_stranger_refuses_it",
            || {
                let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
                let mut child =
                    spawn_handed(&mut role_command("stranger_then_adopt"), theirs, RECV_LIMIT)?;
                let report = Channel::new(mine)?.recv_within()?;
                assert_eq!(
                    String::from_utf8_lossy(&report.bytes),
                    "grandchild: Handover(NotParent)"
                );
                assert!(child.wait()?.success());
                Ok(())
            },
        ),
        trial(
            "handover_message_without_a_descriptor_is_bad_message",
            || fake_parent(&|conn| Channel::new(End::from(conn))?.send(&message(1), &[])),
        ),
        trial(
            "handover_message_with_a_wrong_version_is_bad_message",
            || {
                let (_a, b) = sp_core::pair(SocketKind::SeqPacket)?;
                fake_parent(&|conn| Channel::new(End::from(conn))?.send(&message(2), &[b.as_fd()]))
            },
        ),
        trial(
            "handover_death_signal_is_set_by_the_child_and_kills_it_with_its_parent",
            || crate::children::parent_death_signal_via("pdeath_parent_handover"),
        ),
    ]
}

/// Spawns `cmd` with its end handed over after `exec` and a death signal, as sp does.
pub fn spawn_handed(
    cmd: &mut Command,
    end: End,
    timeout: Duration,
) -> sp_core::Result<sp_core::Child> {
    let opts = SpawnOptions::new()
        .parent_death_signal(Signal::KILL)
        .hand_over_after_exec(timeout);
    sp_core::spawn_with(cmd, end, opts)
}

/// A handover message as the parent sends it, with `version` (1 is the real one) and no signal.
fn message(version: u32) -> Vec<u8> {
    let mut msg = b"SPHANDOV".to_vec();
    msg.extend_from_slice(&version.to_le_bytes());
    msg.extend_from_slice(&0i32.to_le_bytes());
    msg
}

/// Plays a parent that hands over something wrong (`send`, on the accepted connection): this
/// process listens under a rendezvous name and starts a plain child (no sp-core spawn) that
/// adopts; the child must say `Handover(BadMessage)`.
fn fake_parent(send: &dyn Fn(OwnedFd) -> sp_core::Result<()>) -> TestResult {
    let mut random = [0u8; 16];
    rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())?;
    let name = format!("sp-core-{:032x}", u128::from_le_bytes(random));
    let listener = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(
        &listener,
        &SocketAddrUnix::new_abstract_name(name.as_bytes())?,
    )?;
    rustix::net::listen(&listener, 1)?;
    let mut child = role_command("report_fd_env")
        .env(RENDEZVOUS_ENV, &name)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut fds = [rustix::event::PollFd::new(
        &listener,
        rustix::event::PollFlags::IN,
    )];
    let limit = rustix::event::Timespec::try_from(RECV_LIMIT)?;
    let ready = rustix::event::poll(&mut fds, Some(&limit))?;
    assert_eq!(ready, 1, "the child did not connect within {RECV_LIMIT:?}");
    let conn = rustix::net::accept_with(&listener, SocketFlags::CLOEXEC)?;
    send(conn)?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    assert!(child.wait()?.success());
    assert_eq!(line.trim(), "present, adopt: Handover(BadMessage)");
    Ok(())
}

/// Child: before adopting, starts a plain grandchild that tries to take this child's end from
/// the rendezvous (it inherited the variable); then adopts and reports what the grandchild got.
pub fn role_stranger_then_adopt() -> ExitCode {
    let run = || -> Result<(), String> {
        let out = role_command("report_fd_env")
            .output()
            .map_err(|e| format!("grandchild: {e}"))?;
        let said = String::from_utf8_lossy(&out.stdout);
        let got = said
            .trim()
            .strip_prefix("present, adopt: ")
            .ok_or_else(|| format!("grandchild said {said:?}"))?
            .to_owned();
        let end = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
        Channel::new(end)
            .and_then(|channel| channel.send(format!("grandchild: {got}").as_bytes(), &[]))
            .map_err(|e| e.to_string())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("stranger_then_adopt: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Child: as `pdeath_parent`, with the grandchild's end handed over after `exec`.
pub fn role_pdeath_parent_handover() -> ExitCode {
    crate::roles::pdeath_parent_with(|end| {
        spawn_handed(&mut role_command("adopt_then_park"), end, RECV_LIMIT)
    })
}

/// Grandchild: adopts, then parks until killed.
pub fn role_adopt_then_park() -> ExitCode {
    let _end = sp_core::adopt();
    loop {
        std::thread::park();
    }
}

//! Trials for what a child passes on: after `adopt`, a plain grandchild (started with
//! `std::process::Command`, no sp-core end) must not see `SP_CORE_FD`, and cannot adopt; a child
//! that already runs another thread keeps the variable, because removing it then is not sound.

use std::io::{BufRead, BufReader};
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;

use libtest_mimic::Trial;
use sp_core::{Channel, Error, FD_ENV, RENDEZVOUS_ENV, SocketKind};

use crate::{RecvWithin, TestResult, role_command, spawn_role, trial};

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "inherit_child_adopts_then_starts_a_plain_grandchild_that_sees_no_sp_core_fd_and_cannot_adopt",
            || {
                child_reports(
                    "adopt_then_plain_grandchild",
                    "child: absent; grandchild: absent, adopt: NoInheritedEnd",
                )
            },
        ),
        trial(
            "inherit_child_running_a_second_thread_keeps_sp_core_fd_after_adopt",
            || child_reports("adopt_with_a_second_thread", "child: present"),
        ),
    ]
}

fn child_reports(role: &str, want: &str) -> TestResult {
    let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    let mut child = spawn_role(role, theirs)?;
    let mut channel = Channel::new(mine)?;
    let report = channel.recv_within()?;
    assert_eq!(String::from_utf8_lossy(&report.bytes), want);
    let status = child.wait()?;
    assert!(status.success(), "child: {status}");
    Ok(())
}

/// `present` or `absent`: whether `SP_CORE_FD` or `SP_CORE_RENDEZVOUS` is in this process's
/// environment.
fn fd_env_state() -> &'static str {
    if std::env::var_os(FD_ENV).is_some() || std::env::var_os(RENDEZVOUS_ENV).is_some() {
        "present"
    } else {
        "absent"
    }
}

fn report(channel: &Channel, text: &str) -> Result<(), String> {
    channel
        .send(text.as_bytes(), &[])
        .map_err(|e| format!("report: {e}"))
}

fn exit_code(role: &str, res: Result<(), String>) -> ExitCode {
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("child role {role} failed: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Child: adopts (alone in its process), then starts this binary as a plain grandchild playing
/// `report_fd_env` and forwards what it printed.
pub fn role_adopt_then_plain_grandchild() -> ExitCode {
    let run = || -> Result<(), String> {
        let end = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
        let channel = Channel::new(end).map_err(|e| e.to_string())?;
        let here = fd_env_state();
        let mut grandchild = role_command("report_fd_env")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn grandchild: {e}"))?;
        let stdout = grandchild.stdout.take().ok_or("no stdout pipe")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let status = grandchild.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("grandchild: {status}"));
        }
        report(
            &channel,
            &format!("child: {here}; grandchild: {}", line.trim()),
        )
    };
    exit_code("adopt_then_plain_grandchild", run())
}

/// Grandchild: prints whether it sees `SP_CORE_FD` and what `adopt` gives it.
pub fn role_report_fd_env() -> ExitCode {
    let seen = fd_env_state();
    let adopted = match sp_core::adopt() {
        Ok(_) => "Ok".to_owned(),
        Err(Error::NoInheritedEnd) => "NoInheritedEnd".to_owned(),
        Err(err) => format!("{err:?}"),
    };
    println!("{seen}, adopt: {adopted}");
    ExitCode::SUCCESS
}

/// Child: starts a thread that waits, then adopts; reports whether the variable is still there.
pub fn role_adopt_with_a_second_thread() -> ExitCode {
    let run = || -> Result<(), String> {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let waiter = std::thread::spawn(move || {
            let _ = stop_rx.recv();
        });
        let adopted = sp_core::adopt().map_err(|e| format!("adopt: {e}"));
        let here = fd_env_state();
        drop(stop_tx);
        waiter.join().map_err(|_| "the waiting thread panicked")?;
        let channel = Channel::new(adopted?).map_err(|e| e.to_string())?;
        report(&channel, &format!("child: {here}"))
    };
    exit_code("adopt_with_a_second_thread", run())
}

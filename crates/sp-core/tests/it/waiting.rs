//! Trials for the waiting forms across processes: a child fills a non-blocking seqpacket socket
//! with `try_send` until it is `Full`, sees `send_timeout` give `Timeout` with nothing sent, and
//! then blocks in `send` (which waits for room even on a non-blocking socket) until the parent
//! drains it.

use std::io::{BufRead, BufReader, Write};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use sp_core::{Channel, End, Error, SendTimeoutError, SocketKind, TrySendError};

use crate::messages::pattern;
use crate::{RecvWithin, TestResult, role_command, spawn_command, trial};

/// How long the child's `send_timeout` waits on its full socket.
const SEND_TIMEOUT: Duration = Duration::from_millis(50);

pub fn trials() -> Vec<Trial> {
    vec![trial(
        "waiting_child_fills_nonblocking_seqpacket_try_send_full_send_timeout_times_out_send_waits_for_room",
        fill_until_full,
    )]
}

fn fill_until_full() -> TestResult {
    let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    let mut cmd = role_command("fill_until_full");
    cmd.stdout(Stdio::piped());
    let mut child = spawn_command(&mut cmd, theirs)?;
    let mut channel = Channel::new(mine)?;
    // The child says how many messages the socket took before it was full; until then nothing
    // is read here, so the buffer really fills.
    let stdout = child.as_std_mut().stdout.take().ok_or("no stdout pipe")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let n_sent: usize = line
        .trim()
        .strip_prefix("full ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("child reported {line:?}"))?;
    assert!(n_sent > 0);
    for idx in 0..n_sent {
        let msg = channel.recv_within()?;
        assert!(
            msg.bytes == pattern(1000, idx as u8),
            "message {idx} differs"
        );
    }
    // The timed-out send left nothing; the blocking one arrived once there was room.
    assert_eq!(channel.recv_within()?.bytes, b"after full");
    let res = channel.recv_within();
    assert!(matches!(res, Err(Error::PeerGone)), "{res:?}");
    let status = child.wait()?;
    assert!(status.success(), "child: {status}");
    Ok(())
}

/// Child: see the module doc. Prints `full N` on stdout once `try_send` is `Full`.
pub fn role_fill_until_full() -> ExitCode {
    let run = || -> Result<(), String> {
        let end: End = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
        end.set_nonblocking(true).map_err(|e| e.to_string())?;
        let channel = Channel::new(end).map_err(|e| e.to_string())?;
        let mut n_sent = 0usize;
        loop {
            if n_sent >= 100_000 {
                return Err("the send buffer never filled".into());
            }
            match channel.try_send(&pattern(1000, n_sent as u8), &[]) {
                Ok(()) => n_sent += 1,
                Err(TrySendError::Full) => break,
                Err(err) => return Err(format!("try_send: {err:?}")),
            }
        }
        let start = Instant::now();
        match channel.send_timeout(b"late", &[], SEND_TIMEOUT) {
            Err(SendTimeoutError::Timeout) => {}
            other => return Err(format!("send_timeout on a full socket: {other:?}")),
        }
        let waited = start.elapsed();
        if waited < SEND_TIMEOUT {
            return Err(format!("send_timeout returned after {waited:?}"));
        }
        let mut stdout = std::io::stdout();
        writeln!(stdout, "full {n_sent}").map_err(|e| e.to_string())?;
        stdout.flush().map_err(|e| e.to_string())?;
        channel
            .send(b"after full", &[])
            .map_err(|e| format!("blocking send on a non-blocking socket: {e}"))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("child role fill_until_full failed: {why}");
            ExitCode::FAILURE
        }
    }
}

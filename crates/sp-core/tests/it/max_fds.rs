//! Trials for the descriptor cap on the receiving side: a raw peer in a child process attaches
//! 64, 65, 66 or 100 descriptors to one frame with `sendmsg(2)` (its header declaring as many).
//! 64 arrive whole; more are cut by the kernel at exactly `MAX_FDS`, which is `FdsTruncated`
//! with everything that arrived closed.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;

use libtest_mimic::Trial;
use sp_core::{Channel, End, Error, FRAME_MAGIC, FRAME_VERSION, MAX_FDS, SocketKind};

use crate::pairs::kind_name;
use crate::{
    RecvWithin, TestResult, assert_cloexec, count_fds_to, memfd_with, read_all_at_0, role_command,
    spawn_command, trial,
};
use sp_test_support::frame::{header, send_raw};

const N_FDS_ENV: &str = "SP_IT_N_FDS";

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for kind in [SocketKind::SeqPacket, SocketKind::Stream] {
        let k = kind_name(kind);
        for n_fds in [MAX_FDS, MAX_FDS + 1, MAX_FDS + 2, 100] {
            let outcome = if n_fds <= MAX_FDS {
                "arrive_whole"
            } else {
                "are_fds_truncated_at_64_all_closed"
            };
            trials.push(trial(
                format!("max_fds_{k}_raw_peer_child_attaches_{n_fds}_fds_they_{outcome}"),
                move || raw_peer_fds(kind, n_fds),
            ));
        }
    }
    trials
}

fn raw_peer_fds(kind: SocketKind, n_fds: usize) -> TestResult {
    let (mine, theirs) = sp_core::pair(kind)?;
    let mut cmd = role_command("raw_fds_peer");
    cmd.env(N_FDS_ENV, n_fds.to_string());
    let mut child = spawn_command(&mut cmd, theirs)?;
    let mut channel = Channel::new(mine)?;
    let res = channel.recv_within();
    if n_fds <= MAX_FDS {
        let msg = res?;
        assert_eq!(msg.bytes, b"many fds");
        assert_eq!(msg.fds.len(), n_fds);
        for fd in &msg.fds {
            assert_cloexec(fd);
        }
        assert_eq!(read_all_at_0(&msg.fds[n_fds - 1]), b"many");
    } else {
        match res {
            Err(Error::FdsTruncated { declared, received }) => {
                assert_eq!((declared, received), (n_fds, MAX_FDS));
            }
            other => panic!("expected FdsTruncated, got {other:?}"),
        }
    }
    assert_eq!(
        count_fds_to("sp-it-max-fds-many"),
        0,
        "every descriptor of the first frame is closed (or was dropped with its message)"
    );
    // The frame after it: a seqpacket channel goes on; a stream cannot match descriptors to
    // frames after a truncation and refuses.
    let next = channel.recv_within();
    if kind == SocketKind::SeqPacket || n_fds <= MAX_FDS {
        let msg = next?;
        assert_eq!(msg.bytes, b"after");
        assert_eq!(read_all_at_0(&msg.fds[0]), b"after");
    } else {
        assert!(matches!(next, Err(Error::Poisoned)), "{next:?}");
    }
    // The child waits for this end to close, so none of its frames meets a closed socket.
    drop(channel);
    let status = child.wait()?;
    assert!(status.success(), "child: {status}");
    Ok(())
}

/// Child: one frame declaring and carrying `SP_IT_N_FDS` descriptors (one memfd, repeated), then
/// (where the parent reads it) one frame with one descriptor, both with raw `sendmsg`; then waits
/// for end of file.
pub fn role_raw_fds_peer() -> ExitCode {
    let run = || -> Result<(), String> {
        let n_fds: usize = std::env::var(N_FDS_ENV)
            .map_err(|e| e.to_string())?
            .parse()
            .map_err(|e| format!("{N_FDS_ENV}: {e}"))?;
        let mut end: End = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
        let many = memfd_with("sp-it-max-fds-many", b"many");
        let fds: Vec<BorrowedFd<'_>> = vec![many.as_fd(); n_fds];
        let mut frame = header(FRAME_MAGIC, FRAME_VERSION, n_fds as u8, 8).to_vec();
        frame.extend_from_slice(b"many fds");
        send_raw(&end, &frame, &fds).map_err(|e| format!("sendmsg of {n_fds} fds: {e}"))?;
        // A stream receiver gives up after a truncation and may close before a second frame
        // would reach it; it is sent only where it is read.
        if end.kind().map_err(|e| e.to_string())? == SocketKind::SeqPacket || n_fds <= MAX_FDS {
            let after = memfd_with("sp-it-max-fds-after", b"after");
            let mut frame = header(FRAME_MAGIC, FRAME_VERSION, 1, 5).to_vec();
            frame.extend_from_slice(b"after");
            send_raw(&end, &frame, &[after.as_fd()]).map_err(|e| format!("sendmsg: {e}"))?;
        }
        let mut rest = Vec::new();
        end.read_to_end(&mut rest).map_err(|e| e.to_string())?;
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("child role raw_fds_peer failed: {why}");
            ExitCode::FAILURE
        }
    }
}

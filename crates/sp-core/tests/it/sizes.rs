//! Trials for receiving into one reused `Message` from a real child: payloads that grow, shrink
//! and repeat, small frames (sent whole with `send`) and large ones (`sendmsg` of header and
//! payload), with and without descriptors, each delivered byte for byte.

use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;

use libtest_mimic::Trial;
use sp_core::{Channel, End, Error, Message, SocketKind};

use crate::messages::pattern;
use crate::pairs::kind_name;
use crate::{RecvWithin, TestResult, memfd_with, read_all_at_0, role_command, trial};

/// The channel's largest payload in these trials: one seqpacket record of it fits the default
/// send buffer (212,992 bytes here, less the kernel's 32-byte overhead and the frame header).
const MAX_LEN: usize = 200_000;

/// Payload sizes, in the order the child sends them: empty, small (under the whole-frame copy
/// limit), on both sides of that limit, growing, shrinking, repeated, and the largest allowed.
const SIZES: [usize; 18] = [
    0, 1, 100, 504, 505, 5000, 5000, 64, MAX_LEN, MAX_LEN, 17, 199_999, 1, 0, 65_536, 65_535,
    65_537, 3,
];

/// Every third message carries a memfd whose contents name the message.
fn has_fd(idx: usize) -> bool {
    idx % 3 == 2
}

pub fn trials() -> Vec<Trial> {
    [SocketKind::SeqPacket, SocketKind::Stream]
        .into_iter()
        .map(|kind| {
            let k = kind_name(kind);
            trial(
                format!("sizes_{k}_child_sends_growing_and_shrinking_payloads_recv_into_one_message_gets_every_byte"),
                move || sizes_from_child(kind),
            )
        })
        .collect()
}

fn sizes_from_child(kind: SocketKind) -> TestResult {
    let (mine, theirs) = sp_core::pair(kind)?;
    let mut cmd = role_command("send_sizes");
    cmd.env("SP_IT_KIND", kind_name(kind));
    let mut child = sp_core::spawn_with(
        &mut cmd,
        theirs,
        sp_core::SpawnOptions::new().parent_death_signal(sp_core::Signal::KILL),
    )?;
    let mut channel = Channel::new(mine)?.with_max_message_len(MAX_LEN);
    let mut msg = Message::default();
    for (idx, &size) in SIZES.iter().enumerate() {
        channel.recv_into_within(&mut msg)?;
        if msg.bytes != pattern(size, idx as u8) {
            return Err(format!(
                "message {idx}: {} bytes arrived, expected {size} of its pattern",
                msg.bytes.len()
            )
            .into());
        }
        let want_fds = usize::from(has_fd(idx));
        assert_eq!(msg.fds.len(), want_fds, "message {idx}");
        if has_fd(idx) {
            assert_eq!(
                read_all_at_0(&msg.fds[0]),
                format!("message {idx}").as_bytes()
            );
        }
    }
    let res = channel.recv_into_within(&mut msg);
    assert!(matches!(res, Err(Error::PeerGone)), "{res:?}");
    let status = child.wait()?;
    assert!(status.success(), "child: {status}");
    Ok(())
}

/// Child: sends [`SIZES`] in order over the adopted end, then exits.
pub fn role_send_sizes() -> ExitCode {
    let run = || -> Result<(), String> {
        let kind = std::env::var("SP_IT_KIND").map_err(|e| e.to_string())?;
        let end: End = sp_core::adopt().map_err(|e| format!("adopt: {e}"))?;
        let channel = Channel::new(end)
            .map_err(|e| format!("Channel::new: {e}"))?
            .with_max_message_len(MAX_LEN);
        for (idx, &size) in SIZES.iter().enumerate() {
            let memfd: Option<OwnedFd> =
                has_fd(idx).then(|| memfd_with("sp-it-sizes", format!("message {idx}").as_bytes()));
            let fds: Vec<_> = memfd.iter().map(AsFd::as_fd).collect();
            channel
                .send(&pattern(size, idx as u8), &fds)
                .map_err(|e| format!("{kind} send {idx} ({size} bytes): {e}"))?;
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("child role send_sizes failed: {why}");
            ExitCode::FAILURE
        }
    }
}

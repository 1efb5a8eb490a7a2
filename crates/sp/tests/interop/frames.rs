//! sp-core frames ("sp-core frames"): the peer echoes every frame with its descriptors.

use std::os::fd::{AsFd, BorrowedFd};
use std::thread;

use sp::sp_core::{self, Channel, Signal, SocketKind, SpawnOptions};

use crate::{Report, Rng, STEP_LIMIT, Watchdog, assert_success, inode, memfd_pool, peer_command};

fn frames_echo(kind: SocketKind, n_frames: usize, largest: usize, seed: u64) {
    let Some(_serial) = crate::begin() else {
        return;
    };
    let (parent_end, child_end) = sp_core::pair(kind).unwrap();
    let opts = SpawnOptions::new().parent_death_signal(Signal::KILL);
    let mut child = sp_core::spawn_with(&mut peer_command(&["frames"]), child_end, opts).unwrap();
    let _watchdog = Watchdog::start("frames", child.id());
    let (sender, receiver) = Channel::new(parent_end).unwrap().split();

    let pool = memfd_pool(sp_core::MAX_FDS);
    let pool_inodes: Vec<u64> = pool.iter().map(|fd| inode(fd.as_fd())).collect();
    let mut rng = Rng(seed);
    let sizes = [0, 1, 7, 8, 9, 100, 4095, 4096, 65_536, largest];
    let fd_counts = [0, 1, 2, 3, 5, sp_core::MAX_FDS];
    let plan: Vec<(Vec<u8>, usize, usize)> = (0..n_frames)
        .map(|i| {
            let n = if i < sizes.len() {
                sizes[i]
            } else {
                rng.below(2048) as usize
            };
            let n_fds = fd_counts[i % fd_counts.len()];
            let first_fd = rng.below((pool.len() - n_fds + 1) as u64) as usize;
            (rng.bytes(n), n_fds, first_fd)
        })
        .collect();

    let (mut n_bytes, mut n_fds_total) = (0, 0);
    thread::scope(|scope| {
        // One thread sends every frame while this one reads the echoes, so that several frames
        // are in flight (on a stream several frames' bytes and descriptors share one read).
        scope.spawn(|| {
            for (payload, n_fds, first_fd) in &plan {
                let fds: Vec<BorrowedFd<'_>> = pool[*first_fd..first_fd + n_fds]
                    .iter()
                    .map(|fd| fd.as_fd())
                    .collect();
                sender.send(payload, &fds).unwrap();
            }
        });
        // Owned here, so that a failed check closes our end while unwinding (see shm_echo).
        let mut receiver = receiver;
        for (i, (payload, n_fds, first_fd)) in plan.iter().enumerate() {
            let msg = match receiver.recv_timeout(STEP_LIMIT) {
                Ok(msg) => msg,
                Err(e) => panic!("frame {i}: {e}"),
            };
            assert!(
                msg.bytes == *payload,
                "frame {i}: {} bytes differ",
                payload.len()
            );
            let inodes: Vec<u64> = msg.fds.iter().map(|fd| inode(fd.as_fd())).collect();
            assert_eq!(
                inodes,
                pool_inodes[*first_fd..first_fd + n_fds],
                "frame {i}: descriptors"
            );
            n_bytes += payload.len() as u64;
            n_fds_total += *n_fds as u64;
        }
    });
    // Closing our end is the peer's end of file; it then reports and exits 0.
    drop(sender);
    let report = Report::read(child.as_std_mut());
    assert_success(child.wait().unwrap());
    assert_eq!(report.get("records"), n_frames as u64);
    assert_eq!(report.get("bytes"), n_bytes);
    assert_eq!(report.get("fds"), n_fds_total);
}

#[test]
fn python_peer_echoes_seqpacket_frames_with_descriptors() {
    // A seqpacket record is bounded by the send buffer (about 208 KiB by default).
    frames_echo(SocketKind::SeqPacket, 400, 150_000, 1);
}

#[test]
fn python_peer_echoes_stream_frames_with_descriptors() {
    frames_echo(SocketKind::Stream, 400, sp_core::DEFAULT_MAX_MESSAGE_LEN, 2);
}

//! Shared-memory attacks and descriptor exhaustion: hand-overs that must be refused (descriptors
//! that are not memfds, lack seals, are too short, or could still be written), and a receiver at
//! its `RLIMIT_NOFILE` in the middle of a handshake or a blob receive.

#![allow(unsafe_code)] // Keeps a writable shared mapping of a would-be blob alive.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use libtest_mimic::Trial;
use memmap2::MmapOptions;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::process::{Pid, Resource, Rlimit};
use sp_core::{Channel, Message, Signal, SocketKind, SpawnOptions};
use sp_shm::{BLOB_MAGIC, Blob, Config, Error, RefuseReason};

use sp_test_support::fds::disk_file;
use sp_test_support::shm::{self, Flaw, Ring};

use crate::hostile::{self, CAPACITY, MAX_PAYLOAD};
use crate::{TestResult, child_command, open_fds, spawn_child, trial};

const STEP: Duration = Duration::from_secs(10);

pub(crate) fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (name, role, reason) in [
        (
            "offer_with_a_pipe_for_data_refused",
            "bad-offer-pipe",
            RefuseReason::NotAFile,
        ),
        (
            "offer_with_a_disk_file_for_data_refused",
            "bad-offer-disk-file",
            RefuseReason::MissingSeals,
        ),
        (
            "offer_with_an_unsealable_memfd_refused",
            "bad-offer-not-sealable",
            RefuseReason::MissingSeals,
        ),
        (
            "offer_with_a_socket_for_control_refused",
            "bad-offer-socket-ctrl",
            RefuseReason::NotAFile,
        ),
        (
            "offer_with_a_memfd_for_wake_refused",
            "bad-offer-memfd-wake",
            RefuseReason::BadWakeSocket,
        ),
        (
            "offer_with_a_short_control_memfd_refused",
            "bad-offer-short-ctrl",
            RefuseReason::SizeMismatch,
        ),
    ] {
        trials.push(trial(name, move || {
            hostile::bad_offer_refused(role, reason)
        }));
    }
    trials.extend([
        trial("blob_without_write_seal_refused", blob_without_write_seal),
        trial(
            "blob_with_writable_shared_mapping_refused",
            blob_with_writable_mapping,
        ),
        trial("blob_too_short_or_too_long_refused", blob_wrong_size),
        trial("blob_not_a_memfd_refused", blob_not_a_memfd),
        trial("blob_message_malformed_refused", blob_malformed),
        trial(
            "handshake_at_fd_limit_is_fd_limit_and_leaks_nothing",
            handshake_at_fd_limit,
        ),
        trial(
            "blob_at_fd_limit_is_fd_limit_then_channel_works",
            blob_at_fd_limit,
        ),
    ]);
    trials
}

// --- blobs ----------------------------------------------------------------------------------

fn memfd(name: &str, size: u64, sealable: bool) -> Result<OwnedFd, String> {
    let flags = if sealable {
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING
    } else {
        MemfdFlags::CLOEXEC
    };
    let fd = rustix::fs::memfd_create(name, flags).map_err(|e| e.to_string())?;
    rustix::fs::ftruncate(&fd, size).map_err(|e| e.to_string())?;
    Ok(fd)
}

fn blob_msg(len: u64) -> [u8; 16] {
    let mut msg = [0u8; 16];
    msg[..8].copy_from_slice(&BLOB_MAGIC);
    msg[8..].copy_from_slice(&len.to_le_bytes());
    msg
}

/// Sends a BLOB message with `fds` over a fresh pair and returns what the receiver makes of it.
fn send_and_receive(bytes: &[u8], fds: &[&OwnedFd]) -> Result<sp_shm::Result<Blob>, String> {
    let (a, mut b) = Channel::pair(SocketKind::SeqPacket).map_err(|e| e.to_string())?;
    let fds: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    a.send(bytes, &fds).map_err(|e| e.to_string())?;
    match Blob::recv_timeout(&mut b, STEP) {
        Ok(blob) => Ok(Ok(blob)),
        Err(sp_shm::RecvTimeoutError::Broken(err)) => Ok(Err(err)),
        Err(sp_shm::RecvTimeoutError::Timeout) => Err("no BLOB message within a step".into()),
    }
}

fn expect_refused(res: sp_shm::Result<Blob>, want: RefuseReason, what: &str) -> TestResult {
    match res {
        Err(Error::Refused(why)) if why == want => Ok(()),
        Err(err) => Err(format!("{what}: expected Refused({want:?}), got {err}")),
        Ok(blob) => Err(format!("{what}: accepted a blob of {} bytes", blob.len())),
    }
}

const BASE: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// Shrink, grow and seal seals but no `F_SEAL_WRITE`: the sender could still write the bytes.
fn blob_without_write_seal() -> TestResult {
    let fd = memfd("blob-no-write-seal", 4096, true)?;
    rustix::fs::fcntl_add_seals(&fd, BASE).map_err(|e| e.to_string())?;
    expect_refused(
        send_and_receive(&blob_msg(4096), &[&fd])?,
        RefuseReason::MissingSeals,
        "no F_SEAL_WRITE",
    )
}

/// The sender keeps a writable shared mapping, so `F_SEAL_WRITE` is impossible (`EBUSY`); it
/// seals what it can (`F_SEAL_FUTURE_WRITE` leaves its own mapping writable) and sends. The
/// receiver refuses it, and the sender can indeed still change the bytes.
fn blob_with_writable_mapping() -> TestResult {
    let fd = memfd("blob-writable-map", 4096, true)?;
    // SAFETY: a fresh memfd of 4096 bytes, private to this test until sent; the mapping is only
    // written through below, while no other reference to its bytes exists in this process.
    let mut map =
        unsafe { MmapOptions::new().len(4096).map_mut(&fd) }.map_err(|e| e.to_string())?;
    match rustix::fs::fcntl_add_seals(&fd, SealFlags::WRITE) {
        Err(rustix::io::Errno::BUSY) => {}
        other => return Err(format!("F_SEAL_WRITE with a writable mapping: {other:?}")),
    }
    rustix::fs::fcntl_add_seals(&fd, BASE | SealFlags::FUTURE_WRITE).map_err(|e| e.to_string())?;
    map[0] = 1;
    expect_refused(
        send_and_receive(&blob_msg(4096), &[&fd])?,
        RefuseReason::MissingSeals,
        "writable shared mapping",
    )
}

/// A sealed memfd whose size differs from the message: shorter (reading past its end would
/// raise `SIGBUS`) or longer.
fn blob_wrong_size() -> TestResult {
    let fd = memfd("blob-size", 4096, true)?;
    rustix::fs::fcntl_add_seals(&fd, BASE | SealFlags::WRITE).map_err(|e| e.to_string())?;
    for (declared, what) in [
        (8192, "memfd shorter than declared"),
        (1 << 40, "declared 1 TiB"),
        (u64::MAX, "declared u64::MAX"),
        (100, "memfd longer than declared"),
        (0, "declared empty"),
    ] {
        expect_refused(
            send_and_receive(&blob_msg(declared), &[&fd])?,
            RefuseReason::SizeMismatch,
            what,
        )?;
    }
    Ok(())
}

/// A pipe, a socket, a disk file and a memfd that cannot be sealed, each offered as a blob.
fn blob_not_a_memfd() -> TestResult {
    let (pipe_r, _pipe_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| e.to_string())?;
    expect_refused(
        send_and_receive(&blob_msg(0), &[&pipe_r])?,
        RefuseReason::NotAFile,
        "pipe",
    )?;
    let (sock, _other) = sp_core::pair(SocketKind::Stream).map_err(|e| e.to_string())?;
    let sock = OwnedFd::from(sock);
    expect_refused(
        send_and_receive(&blob_msg(0), &[&sock])?,
        RefuseReason::NotAFile,
        "socket",
    )?;
    let unsealable = memfd("blob-unsealable", 4096, false)?;
    expect_refused(
        send_and_receive(&blob_msg(4096), &[&unsealable])?,
        RefuseReason::MissingSeals,
        "memfd without MFD_ALLOW_SEALING",
    )?;
    let file = disk_file(4096)?;
    expect_refused(
        send_and_receive(&blob_msg(4096), &[&file])?,
        RefuseReason::MissingSeals,
        "disk file",
    )
}

/// Wrong length, magic or descriptor count.
fn blob_malformed() -> TestResult {
    let good = Blob::from_bytes(b"0123456789").map_err(|e| e.to_string())?;
    let fd = good
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    let msg = blob_msg(10);
    let mut bad_magic = msg;
    bad_magic[0] ^= 1;
    for (bytes, fds, want, what) in [
        (&msg[..15], 1, RefuseReason::BadMagic, "15-byte message"),
        (&bad_magic[..], 1, RefuseReason::BadMagic, "bad magic"),
        (&msg[..], 0, RefuseReason::WrongFdCount, "no descriptor"),
        (&msg[..], 2, RefuseReason::WrongFdCount, "two descriptors"),
    ] {
        let fds: Vec<&OwnedFd> = std::iter::repeat_n(&fd, fds).collect();
        expect_refused(send_and_receive(bytes, &fds)?, want, what)?;
    }
    let ok = send_and_receive(&msg, &[&fd])?.map_err(|e| format!("good blob: {e}"))?;
    if &*ok != b"0123456789" {
        return Err("good blob: wrong bytes".into());
    }
    Ok(())
}

// --- descriptor exhaustion ------------------------------------------------------------------

/// The lowest `RLIMIT_NOFILE` under which exactly `n_free` descriptor numbers are free, given
/// the numbers in use.
fn limit_leaving(in_use: &std::collections::BTreeSet<i32>, n_free: usize) -> u64 {
    let mut free = 0;
    let mut limit = 0;
    loop {
        if !in_use.contains(&limit) {
            if free == n_free {
                return limit as u64;
            }
            free += 1;
        }
        limit += 1;
    }
}

fn fd_numbers(pid: &str) -> std::collections::BTreeSet<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The child runs the real handshake (`sp_shm::adopt`); this side plays the peer by hand. Once
/// the child has sent its offer and closed its copies of the offered descriptors (seen in
/// `/proc/<pid>/fd`), this side lowers the child's `RLIMIT_NOFILE` (`prlimit(2)`) so that one
/// descriptor number is free, and sends a valid OFFER with three descriptors. The kernel installs
/// one, drops two and sets `MSG_CTRUNC`: the child's handshake fails with `FdLimit`, refuses
/// with the local-error status, and its descriptor table is as before the handshake (the child
/// checks and exits 0 only then).
fn handshake_at_fd_limit() -> TestResult {
    let (ours, theirs) = sp_core::pair(SocketKind::SeqPacket).map_err(|e| e.to_string())?;
    let mut child = sp_core::spawn_with(
        &mut child_command("attack-handshake-emfile", "park"),
        theirs,
        SpawnOptions::new().parent_death_signal(Signal::KILL),
    )
    .map_err(|e| e.to_string())?;
    let res = (|| {
        let mut channel = Channel::new(ours).map_err(|e| e.to_string())?;
        let offer = channel
            .recv_timeout(STEP)
            .map_err(|e| format!("child's offer: {e}"))?;
        if offer.fds.len() != 3 {
            return Err("child's offer lacks its descriptors".into());
        }
        drop(offer);
        let pid = child.id().to_string();
        let deadline = std::time::Instant::now() + STEP;
        // The child closes its copies of the offered memfds right after sending.
        loop {
            let links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map_err(|e| e.to_string())?
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.display().to_string())
                .collect();
            if !links.iter().any(|l| l.contains("memfd:sp-shm-")) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("child kept its offered memfds: {links:?}"));
            }
            std::thread::yield_now();
        }
        let limit = limit_leaving(&fd_numbers(&pid), 1);
        // The child inherited this process's limits; keep the hard one.
        let maximum = rustix::process::getrlimit(Resource::Nofile).maximum;
        rustix::process::prlimit(
            Pid::from_raw(child.id() as i32),
            Resource::Nofile,
            Rlimit {
                current: Some(limit),
                maximum,
            },
        )
        .map_err(|e| format!("prlimit: {e}"))?;
        let mut ring = Ring::new(CAPACITY, MAX_PAYLOAD, Flaw::None)?;
        ring.send_offer(&channel)?;
        // The child refuses the offer it could not receive whole with the local-error status.
        let ready = channel
            .recv_timeout(STEP)
            .map_err(|e| format!("child's READY: {e}"))?;
        if ready.bytes != shm::ready_bytes(0xFFFF) || !ready.fds.is_empty() {
            return Err(format!("child's READY: {:?}", ready.bytes));
        }
        Ok(())
    })();
    let status = child.wait().map_err(|e| e.to_string())?;
    res.map_err(|e| format!("{e}; child: {status}"))?;
    if !status.success() {
        return Err(format!("child: {status} (see its stderr)"));
    }
    Ok(())
}

/// After a normal handshake the child lowers its own `RLIMIT_NOFILE` so that no descriptor number
/// is free, and receives a blob: `FdLimit`, nothing leaked; with the limit restored, the next blob
/// on the same channel arrives whole.
fn blob_at_fd_limit() -> TestResult {
    let config = Config::new().capacity(64 << 10);
    let (mut child, mut duplex) =
        spawn_child(&mut child_command("attack-blob-emfile", "park"), &config)?;
    let res = (|| {
        let control = duplex.control();
        let ready = control
            .recv_timeout(STEP)
            .map_err(|e| format!("ready: {e}"))?;
        if ready.bytes != b"ready" {
            return Err("unexpected message".into());
        }
        for fill in [1u8, 2] {
            Blob::build(1 << 16, |bytes| bytes.fill(fill))
                .and_then(|blob| blob.send(control))
                .map_err(|e| format!("blob {fill}: {e}"))?;
        }
        let report = control
            .recv_timeout(STEP)
            .map_err(|e| format!("report: {e}"))?;
        let report = String::from_utf8_lossy(&report.bytes).into_owned();
        if report != "ok" {
            return Err(format!("child: {report}"));
        }
        Ok(())
    })();
    drop(duplex);
    let status = child.wait().map_err(|e| e.to_string())?;
    res?;
    if !status.success() {
        return Err(format!("child: {status}"));
    }
    Ok(())
}

// --- child roles ----------------------------------------------------------------------------

pub(crate) fn child_main(role: &str) -> TestResult {
    match role {
        "attack-handshake-emfile" => child_handshake_emfile(),
        "attack-blob-emfile" => child_blob_emfile(),
        _ => Err(format!("unknown role {role}")),
    }
}

fn child_handshake_emfile() -> TestResult {
    let before = open_fds();
    let adopted: i32 = std::env::var(sp_core::FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or("no adopted descriptor")?;
    let old = rustix::process::getrlimit(Resource::Nofile);
    let res = sp_shm::adopt(&Config::new().capacity(64 << 10));
    rustix::process::setrlimit(Resource::Nofile, old).map_err(|e| format!("restore: {e}"))?;
    match res {
        Err(Error::Channel(sp_core::Error::FdLimit {
            declared: 3,
            received: 1,
        })) => {}
        other => return Err(format!("expected FdLimit 3/1, got {:?}", other.map(|_| ()))),
    }
    let mut want = before;
    want.remove(&adopted);
    let after = open_fds();
    if after != want {
        return Err(format!("fds before {want:?}, after {after:?}"));
    }
    Ok(())
}

fn child_blob_emfile() -> TestResult {
    let mut duplex =
        sp_shm::adopt(&Config::new().capacity(64 << 10)).map_err(|e| format!("adopt: {e}"))?;
    let control = duplex.control();
    let before = open_fds();
    let in_use: std::collections::BTreeSet<i32> = before.keys().copied().collect();
    let old = rustix::process::getrlimit(Resource::Nofile);
    rustix::process::setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(limit_leaving(&in_use, 0)),
            maximum: old.maximum,
        },
    )
    .map_err(|e| format!("setrlimit: {e}"))?;
    control
        .send(b"ready", &[])
        .map_err(|e| format!("ready: {e}"))?;
    let first = Blob::recv_timeout(control, STEP);
    rustix::process::setrlimit(Resource::Nofile, old).map_err(|e| format!("restore: {e}"))?;
    let mut report = match first {
        Err(sp_shm::RecvTimeoutError::Broken(Error::Channel(sp_core::Error::FdLimit {
            declared: 1,
            received: 0,
        }))) => String::new(),
        other => format!(
            "first blob: expected FdLimit 1/0, got {:?}; ",
            other.map(|b| b.len())
        ),
    };
    let after = open_fds();
    if after != before {
        report += &format!("fds before {before:?}, after {after:?}; ");
    }
    match Blob::recv_timeout(control, STEP) {
        Ok(blob) if blob.len() == 1 << 16 && blob.iter().all(|&b| b == 2) => {}
        Ok(_) => report += "second blob: wrong bytes; ",
        Err(err) => report += &format!("second blob: {err}; "),
    }
    if report.is_empty() {
        report = "ok".into();
    }
    control
        .send(report.as_bytes(), &[])
        .map_err(|e| e.to_string())?;
    // Wait for the parent to close.
    let _: Result<Message, _> = control.recv_timeout(STEP);
    Ok(())
}

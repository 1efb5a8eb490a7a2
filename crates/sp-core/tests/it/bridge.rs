//! Trials for `Receiver::into_crossbeam` and `Bridge`.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, select};
use libtest_mimic::Trial;
use sp_core::{Channel, Error, SocketKind, pair};

use crate::messages::MSG_KINDS;
use crate::pairs::kind_name;
use crate::{
    RECV_LIMIT, RecvWithin, TestResult, assert_cloexec, memfd_with, open_fds, read_all_at_0,
    spawn_role, trial,
};

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for kind in MSG_KINDS {
        let k = kind_name(kind);
        trials.push(trial(
            format!("bridge_{k}_select_receives_ipc_and_local_messages"),
            move || select_both(kind),
        ));
    }
    trials.extend([
        trial(
            "bridge_peer_death_yields_peer_gone_then_disconnects",
            peer_death,
        ),
        trial(
            "bridge_seqpacket_forwards_a_bad_message_as_error_and_keeps_running",
            forwards_errors,
        ),
        trial(
            "bridge_drop_while_reader_blocked_handing_over_returns_promptly_and_closes_fds",
            drop_while_handing_over,
        ),
        trial(
            "bridge_drop_while_reader_blocked_in_poll_returns_promptly_without_fd_or_thread_leak",
            drop_while_blocked,
        ),
    ]);
    trials
}

fn select_both(kind: SocketKind) -> TestResult {
    let (a, b) = Channel::pair(kind)?;
    let (_b_tx, b_rx) = b.split();
    let bridge = b_rx.into_crossbeam(4)?;
    let (local_tx, local_rx) = crossbeam_channel::unbounded::<u32>();
    let memfd = memfd_with("sp-it-bridge", b"bridged");
    local_tx.send(7)?;
    a.send(b"ping", &[memfd.as_fd()])?;
    a.send(b"pong", &[])?;
    let (mut ipc, mut local) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + RECV_LIMIT;
    while ipc.len() < 2 || local.is_empty() {
        select! {
            recv(bridge.receiver()) -> msg => ipc.push(msg??),
            recv(local_rx) -> n => local.push(n?),
            default(deadline.saturating_duration_since(Instant::now())) => {
                let (n_ipc, n_local) = (ipc.len(), local.len());
                return Err(format!("timed out with {n_ipc} ipc and {n_local} local messages").into());
            }
        }
    }
    assert_eq!(local, [7]);
    assert_eq!(ipc[0].bytes, b"ping");
    assert_eq!(ipc[0].fds.len(), 1);
    assert_cloexec(&ipc[0].fds[0]);
    assert_eq!(read_all_at_0(&ipc[0].fds[0]), b"bridged");
    assert_eq!(ipc[1].bytes, b"pong");
    Ok(())
}

fn peer_death() -> TestResult {
    let (parent_end, child_end) = pair(SocketKind::SeqPacket)?;
    let mut child = spawn_role("ready_then_block", child_end)?;
    let mut channel = Channel::new(parent_end)?;
    assert_eq!(channel.recv_within()?.bytes, b"ready");
    let (_tx, rx) = channel.split();
    let bridge = rx.into_crossbeam(1)?;
    child.kill()?;
    match bridge.receiver().recv_timeout(RECV_LIMIT) {
        Ok(Err(Error::PeerGone)) => {}
        other => panic!("expected Ok(Err(PeerGone)), got {other:?}"),
    }
    match bridge.receiver().recv_timeout(RECV_LIMIT) {
        Err(RecvTimeoutError::Disconnected) => {}
        other => panic!("expected the bridge to disconnect, got {other:?}"),
    }
    drop(bridge);
    wait_no_bridge_threads()?;
    child.wait()?;
    Ok(())
}

/// How many threads of this process are named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .count()
}

/// Waits (bounded) until no bridge reader thread is left. `Bridge::drop` joins the thread, but
/// the kernel removes its /proc/self/task entry a moment later (the joiner is woken from the
/// exiting thread's `mm_release`, before `release_task`), so a short wait is allowed.
fn wait_no_bridge_threads() -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(2);
    while threads_named(BRIDGE_THREAD) != 0 {
        if Instant::now() >= deadline {
            return Err("a bridge reader thread is still running".into());
        }
        std::thread::yield_now();
    }
    Ok(())
}

const BRIDGE_THREAD: &str = "sp-core-bridge";

/// Whether a thread named `name` sleeps in the kernel (state `S`).
fn thread_sleeping(name: &str) -> bool {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(Result::ok)
        .any(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            comm.trim_end() == name && stat[stat.rfind(')').unwrap_or(0)..].starts_with(") S")
        })
}

fn drop_while_blocked() -> TestResult {
    wait_no_bridge_threads()?;
    let fds_before = open_fds();
    let (a, b) = Channel::pair(SocketKind::SeqPacket)?;
    let (b_tx, b_rx) = b.split();
    let bridge = b_rx.into_crossbeam(1)?;
    // The bridge's private stop pipe is born close-on-exec too.
    let fds_now = open_fds();
    let pipe_fds: Vec<_> = fds_now
        .iter()
        .filter(|(fd, target)| !fds_before.contains_key(fd) && target.starts_with("pipe:"))
        .map(|(fd, _)| *fd)
        .collect();
    assert_eq!(pipe_fds.len(), 2, "the stop pipe's two ends: {fds_now:?}");
    for fd in pipe_fds {
        assert!(
            crate::cloexec_by_number(fd),
            "stop pipe fd {fd} is not close-on-exec"
        );
    }
    // Wait (bounded) until the reader thread is asleep in poll, so the drop has to wake it.
    let deadline = Instant::now() + RECV_LIMIT;
    while !thread_sleeping(BRIDGE_THREAD) {
        assert!(Instant::now() < deadline, "bridge thread never blocked");
        std::thread::yield_now();
    }
    assert_eq!(
        threads_named(BRIDGE_THREAD),
        1,
        "the bridge runs one reader thread"
    );
    let start = Instant::now();
    drop(bridge);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "dropping the bridge took {took:?}"
    );
    drop(a);
    drop(b_tx);
    crate::fd_diff(&fds_before, &open_fds())?;
    wait_no_bridge_threads()
}

fn forwards_errors() -> TestResult {
    use sp_test_support::frame::{MAGIC, VERSION, header, send_raw};
    let (raw, b) = pair(SocketKind::SeqPacket)?;
    let (_b_tx, b_rx) = Channel::new(b)?.split();
    let bridge = b_rx.into_crossbeam(4)?;
    let memfd = memfd_with("sp-it-bridge-bad", b"bad");
    let mut bad = header(MAGIC, VERSION, 1, 3).to_vec();
    bad.extend_from_slice(b"bad");
    send_raw(&raw, &bad, &[memfd.as_fd(), memfd.as_fd()])?;
    drop(memfd);
    match bridge.receiver().recv_timeout(RECV_LIMIT) {
        Ok(Err(Error::FdCountMismatch {
            declared: 1,
            received: 2,
        })) => {}
        other => panic!("expected Ok(Err(FdCountMismatch)), got {other:?}"),
    }
    assert_eq!(
        crate::count_fds_to("sp-it-bridge-bad"),
        0,
        "the bad message's fds were closed"
    );
    let mut good = header(MAGIC, VERSION, 0, 4).to_vec();
    good.extend_from_slice(b"good");
    send_raw(&raw, &good, &[])?;
    match bridge.receiver().recv_timeout(RECV_LIMIT) {
        Ok(Ok(msg)) => assert_eq!(msg.bytes, b"good"),
        other => panic!("expected the next message, got {other:?}"),
    }
    drop(bridge);
    wait_no_bridge_threads()
}

fn drop_while_handing_over() -> TestResult {
    wait_no_bridge_threads()?;
    let (a, b) = Channel::pair(SocketKind::SeqPacket)?;
    let memfd = memfd_with("sp-it-bridge-full", b"full");
    for _ in 0..3 {
        a.send(b"queued", &[memfd.as_fd()])?;
    }
    drop(memfd);
    let (_b_tx, b_rx) = b.split();
    let bridge = b_rx.into_crossbeam(1)?;
    // The first message fills the crossbeam channel; the reader then blocks handing over the
    // second. Wait (bounded) for that state.
    let deadline = Instant::now() + RECV_LIMIT;
    while bridge.receiver().is_empty() || !thread_sleeping(BRIDGE_THREAD) {
        assert!(Instant::now() < deadline, "bridge thread never blocked");
        std::thread::yield_now();
    }
    let start = Instant::now();
    drop(bridge);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "dropping the bridge took {took:?}"
    );
    // The message in the crossbeam channel, the one being handed over and the one still in the
    // socket: all their descriptors are closed.
    assert_eq!(crate::count_fds_to("sp-it-bridge-full"), 0);
    drop(a);
    wait_no_bridge_threads()
}

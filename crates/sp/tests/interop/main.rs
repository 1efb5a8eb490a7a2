//! Interoperability with an sp peer written in another language from docs/protocol.md alone:
//! `interop/python/peer.py` (Python 3.11, standard library only), started as a real child
//! process through the public API (`sp_core::spawn_with`, `sp_shm::spawn`, `sp::spawn`).
//!
//! Each trial streams records of varied sizes both ways (the peer echoes them), checks every
//! byte, kind and descriptor, checks the peer's own account of what it saw and its exit status,
//! and has a time bound (a watchdog kills the peer and fails the binary). This is its own test
//! binary, not a trial of `tests/it`, because the peer and this file were written without
//! reading the implementation or its tests (issue 10).
//!
//! Without `python3` on `PATH` every trial prints why and returns; CI has Python 3.11.

use std::io::{Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

mod frames;
mod shm;
mod typed;

/// The interop trials run one at a time: each keeps two processes busy on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Starts a trial: waits for the previous one to end, and returns `None` (after saying why)
/// when `python3` is not installed.
pub(crate) fn begin() -> Option<MutexGuard<'static, ()>> {
    let serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let version = python3()?;
    eprintln!("peer: {}", version.trim());
    Some(serial)
}

/// Generous bound for one trial in a debug build on a loaded machine; a hang fails, not stalls.
pub(crate) const TRIAL_LIMIT: Duration = Duration::from_secs(120);
/// Bound for one receive: the peer is slow (Python), but never this slow.
pub(crate) const STEP_LIMIT: Duration = Duration::from_secs(30);

fn peer_script() -> String {
    format!(
        "{}/../../interop/python/peer.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `Some(version)` when `python3` runs; `None` (after saying so) when it is not installed.
fn python3() -> Option<String> {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into()),
        Ok(out) => panic!("python3 --version failed: {out:?}"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Straight to the descriptor: libtest shows captured output only for failures.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: python3 is not on PATH, so the Python interop peer cannot run"
            );
            None
        }
        Err(e) => panic!("python3 could not be started: {e}"),
    }
}

pub(crate) fn peer_command(args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    // -B: no __pycache__ left in the source tree.
    cmd.arg("-B")
        .arg(peer_script())
        .args(args)
        .stdout(Stdio::piped());
    cmd
}

/// Kills the peer and exits the test binary if the trial is not over within `TRIAL_LIMIT`.
pub(crate) struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watchdog {
    pub(crate) fn start(name: &'static str, pid: u32) -> Self {
        let (done, over) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = over.recv_timeout(TRIAL_LIMIT) {
                // Straight to the descriptor: libtest's capture would lose it at exit.
                let _ = writeln!(
                    std::io::stderr(),
                    "{name}: not finished within {TRIAL_LIMIT:?}; killing peer {pid}"
                );
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                std::process::exit(101);
            }
        });
        Self {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The peer's summary line, as `key=value` pairs.
pub(crate) struct Report(Vec<(String, String)>);

impl Report {
    pub(crate) fn read(child: &mut std::process::Child) -> Self {
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("stdout piped")
            .read_to_string(&mut out)
            .unwrap();
        let line = out
            .lines()
            .find(|line| line.starts_with("interop-peer "))
            .unwrap_or_else(|| panic!("no summary line from the peer in {out:?}"));
        eprintln!("{line}");
        let pairs = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self(pairs)
    }

    pub(crate) fn text(&self, key: &str) -> &str {
        match self.0.iter().find(|(k, _)| k == key) {
            Some((_, v)) => v,
            None => panic!("no {key} in the peer's report"),
        }
    }

    pub(crate) fn get(&self, key: &str) -> u64 {
        let v = self.text(key);
        v.parse()
            .unwrap_or_else(|_| panic!("{key}={v} is not a number"))
    }
}

pub(crate) fn assert_success(status: ExitStatus) {
    assert!(status.success(), "the Python peer failed: {status}");
}

/// splitmix64: a fixed seed per trial, so a failure replays exactly.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Memfds of distinct inodes, to check that descriptors come back as the same files.
pub(crate) fn memfd_pool(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|i| {
            rustix::fs::memfd_create(format!("interop-{i}"), rustix::fs::MemfdFlags::CLOEXEC)
                .unwrap()
        })
        .collect()
}

pub(crate) fn inode(fd: BorrowedFd<'_>) -> u64 {
    std::fs::File::from(fd.try_clone_to_owned().unwrap())
        .metadata()
        .unwrap()
        .ino()
}

//! Integration tests for sp-core: one binary that runs every trial and, re-executed with
//! [`ROLE_ENV`] set, plays the child processes the trials need.
//!
//! Every trial runs on the main thread, one at a time (`--test-threads` is forced to 1), inside
//! [`guarded`]: the set of open descriptors must be the same before and after, and a watchdog ends
//! the whole run if a trial takes longer than [`TRIAL_LIMIT`], so a hang fails instead of stalling
//! CI. Running on the main thread also matters for `PR_SET_PDEATHSIG`, which fires when the
//! *thread* that spawned a child exits.

// An integration-test crate has no public API: these lints are about documenting and exporting one.
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

mod bridge;
mod children;
mod decoders;
mod hostile;
mod inherit;
mod max_fds;
mod messages;
mod pairs;
mod refs;
mod roles;
mod sizes;
#[cfg(feature = "tokio")]
mod tokio;
mod waiting;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use rustix::fs::{Mode, OFlags};
use rustix::io::FdFlags;
use sp_core::{Channel, End, Error, Message, Receiver, RecvTimeoutError, Signal, SpawnOptions};

/// Set in a re-executed child: the name of the role it plays (see `roles::run_role`).
pub const ROLE_ENV: &str = "SP_IT_ROLE";
/// The longest a trial may run before the watchdog ends the run.
pub const TRIAL_LIMIT: Duration = Duration::from_secs(30);
/// The bound on a single receive in a trial: far above what any of them needs, far below
/// [`TRIAL_LIMIT`].
pub const RECV_LIMIT: Duration = Duration::from_secs(10);

pub type TestResult = Result<(), Failed>;

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        return roles::run_role(&role);
    }
    let mut args = Arguments::from_args();
    // The descriptor-leak check reads the whole process's descriptor table, so trials must not
    // overlap.
    args.test_threads = Some(1);
    let trials: Vec<Trial> = [
        pairs::trials(),
        messages::trials(),
        hostile::trials(),
        children::trials(),
        bridge::trials(),
        decoders::trials(),
        sizes::trials(),
        max_fds::trials(),
        inherit::trials(),
        refs::trials(),
        waiting::trials(),
        #[cfg(feature = "tokio")]
        tokio::trials(),
    ]
    .into_iter()
    .flatten()
    .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// A trial whose body runs under the descriptor-leak check and the watchdog.
pub fn trial(name: impl Into<String>, body: impl FnOnce() -> TestResult + Send + 'static) -> Trial {
    let name = name.into();
    let guard_name = name.clone();
    Trial::test(name, move || guarded(&guard_name, body))
}

/// Runs `body` with the watchdog armed, then fails if the descriptor table changed.
fn guarded(name: &str, body: impl FnOnce() -> TestResult) -> TestResult {
    let before = open_fds();
    watchdog()
        .send(Watch::Start(name.to_owned()))
        .expect("watchdog thread is alive");
    // Disarm the watchdog even if the body panics (libtest-mimic catches the panic).
    let _disarm = Disarm;
    body()?;
    let after = open_fds();
    fd_diff(&before, &after)
}

enum Watch {
    Start(String),
    Done,
}

struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        let _ = watchdog().send(Watch::Done);
    }
}

/// The watchdog thread's inbox, started on first use.
fn watchdog() -> std::sync::MutexGuard<'static, mpsc::Sender<Watch>> {
    static WATCHDOG: OnceLock<Mutex<mpsc::Sender<Watch>>> = OnceLock::new();
    WATCHDOG
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("it-watchdog".into())
                .spawn(move || watch(&rx))
                .expect("spawn watchdog thread");
            Mutex::new(tx)
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn watch(rx: &mpsc::Receiver<Watch>) {
    while let Ok(msg) = rx.recv() {
        let Watch::Start(name) = msg else { continue };
        match rx.recv_timeout(TRIAL_LIMIT) {
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                println!("test {name} timed out after {}s", TRIAL_LIMIT.as_secs());
                eprintln!("test {name} timed out after {}s", TRIAL_LIMIT.as_secs());
                std::process::exit(101);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// This process's open descriptors, number to `readlink` target, read from `/proc/self/fd`
/// (without the descriptor used to read the directory).
pub fn open_fds() -> BTreeMap<RawFd, String> {
    let dir_fd = rustix::fs::open(
        "/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open /proc/self/fd");
    let own = dir_fd.as_raw_fd();
    let mut dir = rustix::fs::Dir::new(dir_fd).expect("read /proc/self/fd");
    let mut fds = BTreeMap::new();
    while let Some(entry) = dir.read() {
        let entry = entry.expect("read /proc/self/fd entry");
        let Ok(n) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        if n == own {
            continue;
        }
        let target = match std::fs::read_link(format!("/proc/self/fd/{n}")) {
            Ok(path) => path.display().to_string(),
            Err(err) => format!("<readlink failed: {err}>"),
        };
        fds.insert(n, target);
    }
    fds
}

/// Fails listing every descriptor that was opened, closed or replaced between two snapshots.
pub fn fd_diff(before: &BTreeMap<RawFd, String>, after: &BTreeMap<RawFd, String>) -> TestResult {
    let mut problems = Vec::new();
    for (fd, target) in after {
        match before.get(fd) {
            None => problems.push(format!("leaked fd {fd} -> {target}")),
            Some(old) if old != target => {
                problems.push(format!("fd {fd} changed from {old} to {target}"));
            }
            Some(_) => {}
        }
    }
    for (fd, target) in before {
        if !after.contains_key(fd) {
            problems.push(format!("closed fd {fd} -> {target} (it was open before)"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("descriptor table changed:\n  {}", problems.join("\n  ")).into())
    }
}

/// How many open descriptors of this process have a `readlink` target containing `needle`.
pub fn count_fds_to(needle: &str) -> usize {
    open_fds().values().filter(|t| t.contains(needle)).count()
}

/// Asserts that `fd` has `FD_CLOEXEC` set.
#[track_caller]
pub fn assert_cloexec(fd: impl AsFd) {
    let fd = fd.as_fd();
    let flags = rustix::io::fcntl_getfd(fd).expect("fcntl(F_GETFD)");
    assert!(
        flags.contains(FdFlags::CLOEXEC),
        "fd {} is not close-on-exec (flags {flags:?})",
        fd.as_raw_fd()
    );
}

/// Whether descriptor number `fd` of this process has `O_CLOEXEC`, read from
/// `/proc/self/fdinfo` (for descriptors the crate keeps private, such as the bridge's stop pipe).
pub fn cloexec_by_number(fd: RawFd) -> bool {
    const O_CLOEXEC: u32 = 0o2_000_000;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("read fdinfo");
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .expect("fdinfo has a flags line");
    u32::from_str_radix(flags.trim(), 8).expect("octal flags") & O_CLOEXEC != 0
}

/// Whether `O_NONBLOCK` is set on `fd`.
pub fn is_nonblocking(fd: impl AsFd) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .expect("fcntl(F_GETFL)")
        .contains(OFlags::NONBLOCK)
}

/// A memfd (close-on-exec) named `name` holding `contents`, positioned at the start.
pub fn memfd_with(name: &str, contents: &[u8]) -> OwnedFd {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC).expect("memfd_create");
    let mut written = 0;
    while written < contents.len() {
        written += rustix::io::write(&fd, &contents[written..]).expect("write memfd");
    }
    fd
}

/// Everything in the file behind `fd`, read from offset 0 (`pread`, so the shared offset of a
/// descriptor the sender also holds does not matter).
pub fn read_all_at_0(fd: impl AsFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = rustix::io::pread(&fd, &mut buf, out.len() as u64).expect("pread");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The test binary as a command that plays `role` when started.
pub fn role_command(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.env(ROLE_ENV, role);
    cmd
}

/// Starts the test binary as a child playing `role` and holding `end`; the child dies with this
/// process (`PR_SET_PDEATHSIG` = `SIGKILL`).
pub fn spawn_role(role: &str, end: End) -> sp_core::Result<sp_core::Child> {
    sp_core::spawn_with(
        &mut role_command(role),
        end,
        SpawnOptions::new().parent_death_signal(Signal::KILL),
    )
}

/// Receives within [`RECV_LIMIT`]: the message, or the error that broke the receive. Every
/// trial's message is on its way long before the limit, so running out of time panics (which
/// fails the trial).
pub trait RecvWithin {
    /// `recv_timeout(RECV_LIMIT)` with `Timeout` a panic.
    fn recv_within(&mut self) -> Result<Message, Error>;
    /// `recv_into_timeout(msg, RECV_LIMIT)` with `Timeout` a panic.
    fn recv_into_within(&mut self, msg: &mut Message) -> Result<(), Error>;
}

fn broken(err: RecvTimeoutError) -> Error {
    match err {
        RecvTimeoutError::Broken(err) => err,
        RecvTimeoutError::Timeout => panic!("no message within {RECV_LIMIT:?}"),
    }
}

impl RecvWithin for Receiver {
    fn recv_within(&mut self) -> Result<Message, Error> {
        self.recv_timeout(RECV_LIMIT).map_err(broken)
    }

    fn recv_into_within(&mut self, msg: &mut Message) -> Result<(), Error> {
        self.recv_into_timeout(msg, RECV_LIMIT).map_err(broken)
    }
}

impl RecvWithin for Channel {
    fn recv_within(&mut self) -> Result<Message, Error> {
        self.receiver().recv_within()
    }

    fn recv_into_within(&mut self, msg: &mut Message) -> Result<(), Error> {
        self.receiver().recv_into_within(msg)
    }
}

/// Runs `f` and returns its result with how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let res = f();
    (res, start.elapsed())
}

/// A small deterministic generator (xorshift64*) for the garbage tests.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            *byte = self.next_u64() as u8;
        }
    }
}

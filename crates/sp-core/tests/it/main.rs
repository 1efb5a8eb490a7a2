//! Integration tests for sp-core: one binary that runs every trial and, re-executed in a role
//! (`sp_test_support::role`), plays the child processes the trials need.
//!
//! The harness is the workspace's one (`sp-test-support`): every trial runs on the main thread,
//! one at a time, under the descriptor-leak guard (the descriptor table must be the same before
//! and after) and the watchdog, which ends the whole run if a trial takes longer than its limit,
//! so a hang fails instead of stalling CI. Running on the main thread also matters for
//! `PR_SET_PDEATHSIG`, which fires when the *thread* that spawned a child exits.

// An integration-test crate has no public API: these lints are about documenting and exporting one.
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

mod bridge;
mod buffers;
mod children;
mod decoders;
mod handover;
mod hostile;
mod inherit;
mod max_fds;
mod messages;
mod pairs;
mod peer;
mod refs;
mod roles;
mod sizes;
#[cfg(feature = "tokio")]
mod tokio;
mod waiting;

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use sp_core::{Channel, End, Error, Message, Receiver, RecvTimeoutError, Signal, SpawnOptions};
pub use sp_test_support::fds::{
    assert_cloexec, cloexec_by_number, count_fds_to, fd_diff, is_nonblocking, memfd_with, open_fds,
    read_all_at_0,
};
pub use sp_test_support::rng::XorShift;
pub use sp_test_support::role::ROLE_ENV;

/// The bound on a single receive in a trial: far above what any of them needs, far below the
/// watchdog's limit.
pub const RECV_LIMIT: Duration = Duration::from_secs(10);

/// sp-core's trials end in `?` on sp-core and I/O errors, which libtest-mimic's `Failed` takes
/// (the harness accepts it beside its own `TestResult`, whose text errors convert into it).
pub type TestResult = Result<(), Failed>;

fn main() -> ExitCode {
    sp_test_support::main(
        |role| roles::run_role(&role.name),
        || {
            [
                pairs::trials(),
                messages::trials(),
                buffers::trials(),
                hostile::trials(),
                children::trials(),
                bridge::trials(),
                decoders::trials(),
                sizes::trials(),
                max_fds::trials(),
                inherit::trials(),
                handover::trials(),
                refs::trials(),
                waiting::trials(),
                peer::trials(),
                #[cfg(feature = "tokio")]
                tokio::trials(),
            ]
            .into_iter()
            .flatten()
            .collect()
        },
    )
}

/// A trial whose body runs under the descriptor-leak guard and the watchdog.
pub fn trial(name: impl Into<String>, body: impl FnOnce() -> TestResult + Send + 'static) -> Trial {
    sp_test_support::trial(name, body)
}

/// The test binary as a command that plays `role` when started.
pub fn role_command(role: &str) -> Command {
    sp_test_support::role::command(role, "")
}

/// Starts the test binary as a child playing `role` and holding `end`; the child dies with this
/// process (`PR_SET_PDEATHSIG` = `SIGKILL`).
pub fn spawn_role(role: &str, end: End) -> sp_core::Result<sp_core::Child> {
    spawn_command(&mut role_command(role), end)
}

/// As [`spawn_role`], for a role's command the trial has adjusted (environment, stdout).
pub fn spawn_command(cmd: &mut Command, end: End) -> sp_core::Result<sp_core::Child> {
    sp_core::spawn_with(
        cmd,
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

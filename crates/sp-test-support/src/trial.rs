//! The trial runner: libtest-mimic with one trial at a time, each under a watchdog and the
//! descriptor-leak guard; or, in a re-executed child, the role it was started for.

use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard, OnceLock, mpsc};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};

use crate::fds::{fd_diff, open_fds};
use crate::role::Role;

/// The watchdog's limit for a trial made with [`trial`].
pub const DEFAULT_TRIAL_LIMIT: Duration = Duration::from_secs(30);

/// The exit code of a run that the watchdog ended (libtest's code for failed tests).
pub const TIMEOUT_EXIT_CODE: i32 = 101;

/// Runs the binary: when it was started as a child in a role ([`Role::current`]), `run_role`
/// plays it and its exit code ends the process; otherwise the trials `trials` returns run
/// through libtest-mimic, one at a time on the main thread.
///
/// One at a time because the descriptor-leak guard reads the whole process's descriptor table,
/// so trials must not overlap; on the main thread because `PR_SET_PDEATHSIG` fires when the
/// thread that spawned a child exits.
pub fn main(
    run_role: impl FnOnce(&Role) -> ExitCode,
    trials: impl FnOnce() -> Vec<Trial>,
) -> ExitCode {
    if let Some(role) = Role::current() {
        return run_role(&role);
    }
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    libtest_mimic::run(&args, trials()).exit_code()
}

/// A trial whose body runs under the watchdog (with [`DEFAULT_TRIAL_LIMIT`]) and the
/// descriptor-leak guard.
pub fn trial<E: Into<Failed>>(
    name: impl Into<String>,
    body: impl FnOnce() -> Result<(), E> + Send + 'static,
) -> Trial {
    trial_with_limit(name, DEFAULT_TRIAL_LIMIT, body)
}

/// As [`trial`], with the watchdog set to `limit` (for trials whose length is configurable).
pub fn trial_with_limit<E: Into<Failed>>(
    name: impl Into<String>,
    limit: Duration,
    body: impl FnOnce() -> Result<(), E> + Send + 'static,
) -> Trial {
    let name = name.into();
    let guard_name = name.clone();
    Trial::test(name, move || guarded(&guard_name, limit, body))
}

/// Runs `body` with the watchdog armed, then fails if the descriptor table changed. A body that
/// fails is reported as it is; the table is compared only after a body that passed.
fn guarded<E: Into<Failed>>(
    name: &str,
    limit: Duration,
    body: impl FnOnce() -> Result<(), E>,
) -> Result<(), Failed> {
    let before = open_fds();
    watchdog()
        .send(Watch::Start {
            name: name.to_owned(),
            limit,
        })
        .expect("the watchdog thread is alive");
    // Disarm the watchdog even if the body panics (libtest-mimic catches the panic).
    let _disarm = Disarm;
    body().map_err(Into::into)?;
    fd_diff(&before, &open_fds()).map_err(Failed::from)
}

enum Watch {
    Start { name: String, limit: Duration },
    Done,
}

struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        let _ = watchdog().send(Watch::Done);
    }
}

/// The watchdog thread's inbox; the thread starts on first use and lives as long as the process.
fn watchdog() -> MutexGuard<'static, mpsc::Sender<Watch>> {
    static WATCHDOG: OnceLock<Mutex<mpsc::Sender<Watch>>> = OnceLock::new();
    WATCHDOG
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("sp-test-watchdog".into())
                .spawn(move || watch(&rx))
                .expect("spawn the watchdog thread");
            Mutex::new(tx)
        })
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits for each trial's `Done` up to its limit; past it, names the trial on stdout (where
/// libtest's report goes) and stderr, and ends the run.
fn watch(rx: &mpsc::Receiver<Watch>) {
    while let Ok(msg) = rx.recv() {
        let Watch::Start { name, limit } = msg else {
            continue;
        };
        match rx.recv_timeout(limit) {
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let msg =
                    format!("test {name} timed out after {limit:?}: the watchdog ends the run");
                println!("{msg}");
                eprintln!("{msg}");
                std::process::exit(TIMEOUT_EXIT_CODE);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

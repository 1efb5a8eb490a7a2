//! Tests of sp across real processes: this binary re-executes itself as the child process.
//!
//! With `SP_IT_ROLE` set, `main` runs that child role and exits with its status; otherwise it
//! runs the trials through libtest-mimic, one at a time (`test_threads = 1`), each under a
//! watchdog that fails the whole run after its time limit and with a check that no file
//! descriptor leaked (`/proc/self/fd` before and after). Children get `PR_SET_PDEATHSIG(SIGKILL)`
//! (sp's default). Nothing sleeps to synchronise.

mod cross;
mod fifo;
mod hostile;
mod local;
mod pipeline;
mod pool;
mod select;
#[cfg(feature = "tokio")]
mod tokio;
mod types;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};

const ROLE_ENV: &str = "SP_IT_ROLE";
/// A role's parameter (a scenario name, a count).
const ARG_ENV: &str = "SP_IT_ARG";
const TRIAL_LIMIT: Duration = Duration::from_secs(60);

type TestResult = Result<(), String>;

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        let arg = std::env::var(ARG_ENV).unwrap_or_default();
        let res = match role.as_str() {
            "echo-serde" => cross::echo_serde(),
            "echo-plain" => cross::echo_plain(),
            "echo-bytes" => cross::echo_bytes(),
            "fds" => cross::fds_child(),
            "hostile" => hostile::child(&arg),
            "stream" => arg
                .parse()
                .map_err(|_| "count".to_string())
                .and_then(select::stream_child),
            "pong" => arg
                .parse()
                .map_err(|_| "index".to_string())
                .and_then(select::pong_child),
            "pool-worker" => pool::worker(),
            "pool-stall" => pool::stall_worker(),
            "pool-stubborn" => pool::stubborn_worker(),
            "stage-gen" => arg
                .parse()
                .map_err(|_| "count".to_string())
                .and_then(pipeline::gen_stage),
            "stage-xor" => pipeline::xor_stage(),
            "stage-verify" => arg
                .parse()
                .map_err(|_| "count".to_string())
                .and_then(pipeline::verify_stage),
            "simplex-producer" => pipeline::simplex_producer(),
            "simplex-consumer" => pipeline::simplex_consumer(),
            other => Err(format!("unknown role {other}")),
        };
        if let Err(err) = &res {
            eprintln!("child {role} {arg}: {err}");
        }
        std::process::exit(i32::from(res.is_err()));
    }
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let mut trials = Vec::new();
    trials.extend(local::trials());
    trials.extend(cross::trials());
    trials.extend(hostile::trials());
    trials.extend(select::trials());
    trials.extend(pool::trials());
    trials.extend(pipeline::trials());
    #[cfg(feature = "tokio")]
    trials.extend(tokio::trials());
    libtest_mimic::run(&args, trials).exit();
}

/// A trial run under a watchdog and a descriptor-leak check.
fn trial(name: &str, f: impl FnOnce() -> TestResult + Send + 'static) -> Trial {
    let name_owned = name.to_owned();
    Trial::test(name, move || {
        let before = open_fds();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let watchdog_name = name_owned.clone();
        let watchdog = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(TRIAL_LIMIT) {
                eprintln!("watchdog: {watchdog_name} ran longer than {TRIAL_LIMIT:?}; failing");
                std::process::exit(3);
            }
        });
        let started = Instant::now();
        let res = f();
        drop(done_tx);
        let _ = watchdog.join();
        eprintln!("{name_owned}: {:.2?}", started.elapsed());
        res.map_err(Failed::from)?;
        let after = open_fds();
        if before != after {
            return Err(format!("fd leak: before {before:?}, after {after:?}").into());
        }
        Ok(())
    })
}

fn open_fds() -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The processes whose parent is this one (zombies included), from /proc.
fn children_of_this_process() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // After the command name (in parentheses): state, then the parent's pid.
                    let rest = stat.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(me)
        })
        .collect()
}

fn child_command(role: &str, arg: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.env(ROLE_ENV, role).env(ARG_ENV, arg);
    cmd
}

/// Waits for the child and requires a clean exit.
fn reap(mut child: sp::Child) -> TestResult {
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("child failed: {status}"));
    }
    Ok(())
}

/// How many values the streaming trials send: fewer in a debug build.
fn count(release: u64) -> u64 {
    if cfg!(debug_assertions) {
        release / 5
    } else {
        release
    }
}

//! Tests of sp across real processes: this binary re-executes itself as the child process.
//!
//! The harness is the workspace's one (`sp-test-support`): started in a role, `main` plays that
//! child role and exits with its status; otherwise it runs the trials one at a time, each under
//! the watchdog, which fails the whole run after the trial's time limit, and the descriptor-leak
//! guard (`/proc/self/fd` before and after). Children get `PR_SET_PDEATHSIG(SIGKILL)` (sp's
//! default). Nothing sleeps to synchronise.

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

use std::process::ExitCode;
use std::time::Duration;

use libtest_mimic::Trial;
pub(crate) use sp_test_support::TestResult;
pub(crate) use sp_test_support::fds::open_fds;
pub(crate) use sp_test_support::procs::children_of_this_process;
/// A role's parameter (a scenario name, a count).
pub(crate) use sp_test_support::role::ROLE_ARG_ENV as ARG_ENV;
pub(crate) use sp_test_support::role::command as child_command;

const TRIAL_LIMIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    sp_test_support::main(
        |role| {
            let arg = role.arg.as_str();
            let res = match role.name.as_str() {
                "echo-serde" => cross::echo_serde(),
                "echo-plain" => cross::echo_plain(),
                "echo-bytes" => cross::echo_bytes(),
                "fds" => cross::fds_child(),
                "hostile" => hostile::child(arg),
                "stream" => arg
                    .parse()
                    .map_err(|_| "count".to_string())
                    .and_then(select::stream_child),
                "pong" => arg
                    .parse()
                    .map_err(|_| "index".to_string())
                    .and_then(select::pong_child),
                "pool-worker" => pool::worker(),
                "pool-bytes" => pool::bytes_worker(),
                "pool-bytes-trusted" => pool::trusted_bytes_worker(),
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
                #[cfg(feature = "tokio")]
                "burst-on-command" => tokio::kill::burst_child(),
                #[cfg(feature = "tokio")]
                "fill-then-block" => tokio::kill::fill_child(),
                other => Err(format!("unknown role {other}")),
            };
            role.exit(res)
        },
        || {
            let mut trials = Vec::new();
            trials.extend(local::trials());
            trials.extend(cross::trials());
            trials.extend(hostile::trials());
            trials.extend(select::trials());
            trials.extend(pool::trials());
            trials.extend(pipeline::trials());
            #[cfg(feature = "tokio")]
            trials.extend(tokio::trials());
            trials
        },
    )
}

/// A trial run under the watchdog (with this binary's limit) and the descriptor-leak guard.
fn trial(name: &str, f: impl FnOnce() -> TestResult + Send + 'static) -> Trial {
    sp_test_support::trial_with_limit(name, TRIAL_LIMIT, f)
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

//! Cross-process tests of sp-shm: this binary re-executes itself as the child process.
//!
//! The harness is the workspace's one (`sp-test-support`): started in a role (its parameter is
//! the idle strategy), `main` plays that child role and exits with its status; otherwise it runs
//! the trials one at a time, each under the watchdog, which fails the whole run after the
//! trial's limit, and the descriptor-leak guard (`/proc/self/fd` before and after). Children get
//! `PR_SET_PDEATHSIG(SIGKILL)`. Nothing sleeps to synchronise: kill tests wait until the parked
//! thread is inside `poll`, as `/proc/<pid>/task/<tid>/syscall` shows.
//!
//! The hand-written peer the hostile trials play is the workspace's independent one
//! (`sp_test_support::shm`, written from `docs/protocol.md`).

#[cfg(not(sp_loom))]
mod attacks;
#[cfg(not(sp_loom))]
mod crash;
#[cfg(not(sp_loom))]
mod cross;
#[cfg(not(sp_loom))]
mod decoders;
#[cfg(not(sp_loom))]
mod hostile;
#[cfg(not(sp_loom))]
mod hostile_child;
#[cfg(all(feature = "tokio", not(sp_loom)))]
mod tokio;

#[cfg(not(sp_loom))]
pub(crate) use harness::*;

#[cfg(not(sp_loom))]
fn main() -> std::process::ExitCode {
    sp_test_support::main(harness::child_main, harness::trials)
}

// The loom build compiles only the ring's protocol; these tests need the real set-up.
#[cfg(sp_loom)]
fn main() {}

/// The trial list, the role dispatch and what every module of the binary shares.
#[cfg(not(sp_loom))]
mod harness {
    use std::process::{Command, ExitCode};
    use std::time::Duration;

    use libtest_mimic::Trial;
    use sp_core::{Signal, SpawnOptions};
    use sp_shm::{Config, Duplex, IdleStrategy, RefuseReason};
    pub(crate) use sp_test_support::fds::open_fds;
    pub(crate) use sp_test_support::role::Role;
    pub(crate) use sp_test_support::{TestResult, trial, trial_with_limit};

    use crate::{attacks, crash, cross, decoders, hostile, hostile_child};

    /// How soon a side must report a killed peer.
    pub(crate) const PROMPT: Duration = Duration::from_secs(3);

    pub(crate) fn trials() -> Vec<Trial> {
        let mut trials = Vec::new();
        for idle in ["spin", "adaptive", "park"] {
            trials.push(trial(format!("stream_both_ways_{idle}"), move || {
                cross::stream_both_ways(idle, false)
            }));
            trials.push(trial(format!("consumer_sees_kill_{idle}"), move || {
                cross::consumer_sees_kill(idle)
            }));
            trials.push(trial(
                format!("full_producer_sees_kill_{idle}"),
                move || cross::full_producer_sees_kill(idle),
            ));
        }
        for idle in ["adaptive", "park"] {
            trials.push(trial(
                format!("stream_both_ways_child_without_membarrier_{idle}"),
                move || cross::stream_both_ways(idle, true),
            ));
        }
        trials.push(trial(
            "writer_killed_mid_record",
            cross::writer_killed_mid_record,
        ));
        trials.push(trial(
            "hostile_peer_control_block",
            hostile::hostile_peer_control_block,
        ));
        trials.push(trial(
            "hostile_peer_garbage_many_seeds",
            hostile::hostile_peer_garbage_many_seeds,
        ));
        trials.push(trial("seals_stop_the_peer", hostile::seals_stop_the_peer));
        trials.push(trial("unsealed_memfd_refused", || {
            hostile::bad_offer_refused("bad-offer-unsealed", RefuseReason::MissingSeals)
        }));
        trials.push(trial("short_memfd_refused", || {
            hostile::bad_offer_refused("bad-offer-short", RefuseReason::SizeMismatch)
        }));
        trials.push(trial("no_future_write_seal_refused", || {
            hostile::bad_offer_refused("bad-offer-writable", RefuseReason::MissingSeals)
        }));
        trials.push(trial("blob_zero_copy", cross::blob_zero_copy));
        trials.extend(crash::trials());
        trials.extend(attacks::trials());
        trials.extend(decoders::trials());
        #[cfg(feature = "tokio")]
        trials.extend(crate::tokio::trials());
        trials
    }

    /// Plays the child role `role` (its parameter is the idle strategy).
    pub(crate) fn child_main(role: &Role) -> ExitCode {
        let idle = role.arg.as_str();
        let res = match role.name.as_str() {
            "stream" => cross::child_stream(idle),
            "idle" => cross::child_idle(idle),
            "mid-record" => cross::child_mid_record(),
            "blob" => cross::child_blob(),
            #[cfg(feature = "tokio")]
            "tokio_echo" => crate::tokio::child_tokio_echo(idle),
            #[cfg(feature = "tokio")]
            "bursts" => crate::tokio::child_bursts(),
            "hostile" => hostile_child::child_hostile(),
            "seal-probe" => hostile_child::child_seal_probe(),
            other if other.starts_with("bad-offer-") => hostile_child::child_bad_offer(other),
            other if other.starts_with("crash-") => crash::child_main(other, idle),
            other if other.starts_with("attack-") => attacks::child_main(other),
            other => Err(format!("unknown role {other}")),
        };
        role.exit(res)
    }

    pub(crate) fn idle_from(name: &str) -> IdleStrategy {
        match name {
            "spin" => IdleStrategy::spin(),
            "park" => IdleStrategy::park(),
            _ => IdleStrategy::adaptive(),
        }
    }

    /// This binary as a child playing `role` with idle strategy `idle`.
    pub(crate) fn child_command(role: &str, idle: &str) -> Command {
        sp_test_support::role::command(role, idle)
    }

    /// Starts `cmd` with `PR_SET_PDEATHSIG(SIGKILL)` and runs the handshake with it.
    pub(crate) fn spawn_child(
        cmd: &mut Command,
        config: &Config,
    ) -> Result<(sp_core::Child, Duplex), String> {
        let opts = SpawnOptions::new().parent_death_signal(Signal::KILL);
        sp_shm::spawn(cmd, opts, config).map_err(|e| format!("spawn: {e}"))
    }
}

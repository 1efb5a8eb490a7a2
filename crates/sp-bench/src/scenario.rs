//! Scenarios: measurements that are not one link between two processes, each run against the
//! partner it is compared with (in interleaved pairs, as every other cell is with the socketpair
//! baseline):
//!
//! - `sp-pool-N` against `crossbeam-pool-N` (`pool.rs`): a parent hands items of the message size
//!   to N workers, each of which reads every byte and answers its sum; worker processes of an
//!   [`sp::Pool`] against threads fed by crossbeam channels. Message rate is items answered per
//!   second; throughput is item bytes per second.
//! - `sp-pipeline` against `sp-pipeline-relayed` (`pipeline.rs`): three stages (generate, pass
//!   on, check), connected sibling to sibling, or each connected to the parent, which relays.
//! - `sp-start` against `spawn-pipe` (`start.rs`): from starting a child to the first value from
//!   it, 100 times; the median is the metric `startup_p50`.
//!
//! The children are this executable, started with [`SCENARIO_ARG`] and a role. Scenario processes
//! and threads are not pinned: the driver unpins itself for the measurement (a child inherits its
//! mask) and pins itself again after.

mod pipeline;
mod pool;
mod start;

use std::path::Path;
use std::time::Duration;

use crate::cpu;
use crate::error::{Error, Result};
use crate::spec::{RunSpec, Sample};
use crate::transport::Transport;
use crate::watchdog::{Victim, Watchdog};

/// The first argument that makes the sp-bench binary play a scenario's child; the second is the
/// role, the rest its arguments.
pub const SCENARIO_ARG: &str = "__sp-bench-scenario";

/// Items (or messages) a scenario keeps in flight per worker or link.
const IN_FLIGHT: usize = 16;

/// Runs one scenario measurement (a warm-up round, then the measured one, where the scenario has
/// rounds).
pub(crate) fn measure(spec: &RunSpec, exe: &Path) -> Result<Sample> {
    let dog = Watchdog::arm(spec.limit(), Victim::None, spec.describe());
    cpu::unpin_current_thread();
    let res = match spec.transport {
        Transport::SpPool1 | Transport::SpPool2 => pool::measure_sp(spec, exe),
        Transport::CrossbeamPool1 | Transport::CrossbeamPool2 => pool::measure_crossbeam(spec),
        Transport::SpPipeline => pipeline::measure(spec, exe, false),
        Transport::SpPipelineRelayed => pipeline::measure(spec, exe, true),
        Transport::SpStart => start::measure(spec, exe, true),
        Transport::SpawnPipe => start::measure(spec, exe, false),
        other => Err(Error::Unsupported(format!(
            "{} is not a scenario",
            other.name()
        ))),
    };
    if spec.pin {
        cpu::pin_current_thread(cpu::DRIVER_CPU);
    }
    dog.disarm();
    res
}

/// A scenario's child: call from `main` when the first argument is [`SCENARIO_ARG`], with the
/// arguments after it.
///
/// # Errors
/// When the role fails; it has printed why.
pub fn child_main(args: &[String]) -> Result<()> {
    cpu::unpin_current_thread();
    let role = args.first().map(String::as_str).unwrap_or_default();
    let arg = |i: usize| -> Result<u64> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| Error::Child(format!("{role}: argument {i}")))
    };
    match role {
        "pool-worker" => pool::worker(),
        "start-sp" => start::child_sp(),
        "start-pipe" => start::child_pipe(),
        "stage" => pipeline::stage(
            args.get(1).map(String::as_str).unwrap_or_default(),
            arg(2)? as usize,
            Duration::from_nanos(arg(3)?),
            args.get(4).map(String::as_str).unwrap_or_default(),
            args.get(5).map(String::as_str),
        ),
        other => Err(Error::Child(format!("unknown scenario role {other:?}"))),
    }
}

/// A sample of `n_msgs` messages over `elapsed` (throughput scenarios).
fn sample(spec: &RunSpec, n_msgs: u64, elapsed: Duration) -> Sample {
    Sample {
        spec: spec.clone(),
        n_msgs,
        elapsed_ns: elapsed.as_nanos() as u64,
        cpu_driver_ns: 0,
        cpu_peer_ns: 0,
        latency: None,
        wake_bytes: None,
        parks: None,
        startup_ns: None,
    }
}

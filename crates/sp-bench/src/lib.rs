//! sp-bench: measures sp's transports, the kernel's, other IPC crates' and the machine's limits
//! between two real processes pinned to two cores.
//!
//! The `sp-bench` binary (and `cargo xtask bench`, which builds and runs it) is the front end; this
//! library holds the measuring logic, so the tests can drive it too:
//!
//! - [`plan`]: which cells (transport × size × mode) to run, each as interleaved pairs with the
//!   socketpair-stream baseline;
//! - [`measure`]: one measurement, in a child process started from the same executable (or in two
//!   threads for the ceilings), bounded by a watchdog;
//! - [`report`]: the results file, the table, the comparison with a saved baseline;
//! - [`size`]: message sizes as the command line and the table write them;
//! - [`chart`]: the SVG chart.
//!
//! Every message is written in full by the sender and read in full by the receiver, which checks
//! its sequence number; both sides' checksums are compared after every round (see `payload.rs`).

mod ceiling;
pub mod chart;
mod cpu;
mod error;
mod payload;
pub mod plan;
pub mod report;
mod round;
mod run;
mod scenario;
pub mod size;
mod spec;
pub mod stats;
mod transport;
mod watchdog;

pub use ceiling::probe;
pub use cpu::{available_cpus, can_pin};
pub use error::{Error, Result};
pub use round::timer_overhead_ns;
pub use run::{PEER_ARG, measure, peer_main};
pub use scenario::{SCENARIO_ARG, child_main as scenario_main};
pub use spec::{Mode, Percentiles, RunSpec, Sample};
pub use transport::{BASELINE, Placement, Transport};

/// Pins the calling thread to the driver's core (CPU 0) when [`can_pin`]; call it once at the
/// start of the benchmark, before any measurement.
pub fn pin_driver() {
    if can_pin() {
        cpu::pin_current_thread(cpu::DRIVER_CPU);
    }
}

/// Removes files a peer crate may have left in /tmp or /dev/shm after a killed measurement.
/// Only names this harness chose (or the peer derived from them) are touched.
pub fn cleanup_peer_files() {
    #[cfg(feature = "peers")]
    transport::cleanup_peer_files();
}

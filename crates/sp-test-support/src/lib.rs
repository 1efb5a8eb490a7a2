//! The one test harness of the sp workspace, and an independent peer written from
//! `docs/protocol.md`. Unpublished; every crate uses it as a dev-dependency only, and `fuzz/` by
//! path.
//!
//! The harness (used by the integration binaries of sp-core, sp-shm, sp and sp-zenoh; the
//! `harness` feature, on by default):
//!
//! - [`main`] runs a binary's trials through libtest-mimic, one at a time on the main thread, or,
//!   when the binary was started as a child in a [`role`], plays that role instead. Running on the
//!   main thread matters for `PR_SET_PDEATHSIG`, which fires when the *thread* that spawned a
//!   child exits.
//! - [`trial`] and [`trial_with_limit`] wrap a trial's body in the watchdog (a trial that runs
//!   past its limit ends the whole run with [`TIMEOUT_EXIT_CODE`]) and the descriptor-leak guard
//!   (`/proc/self/fd` before and after, [`fds::fd_diff`]).
//! - [`fds`] and [`procs`] read `/proc`: descriptor tables and flags, child processes and
//!   zombies, a thread seen waiting in `poll`; [`rng::XorShift`] is the deterministic generator
//!   of the randomised trials; [`future`] polls the async trials' futures by hand (once, or until
//!   they wait in the reactor).
//!
//! The peer ([`frame`] and [`shm`]) follows the protocol document byte by byte and depends on
//! nothing of sp-core or sp-shm: raw `sendmsg`/`recvmsg` of sp-core frames, memfds sealed and
//! mapped by hand, header words stored with the orderings the document names. Tests use it to
//! check the crates against the document, and to break the protocol in ways the crates would
//! never produce (a hostile producer, flawed offers, garbage frames); `fuzz/` uses the same peer.

pub mod fds;
pub mod frame;
pub mod future;
pub mod procs;
pub mod rng;
pub mod role;
pub mod shm;
#[cfg(feature = "harness")]
mod trial;

/// What a trial, a role or a check returns: `Ok`, or why it failed, in words.
///
/// The harness also takes trial bodies whose error is libtest-mimic's `Failed` (any error
/// converts into it with `?`); sp-core's trials are written that way.
pub type TestResult = Result<(), String>;

#[cfg(feature = "harness")]
pub use trial::{DEFAULT_TRIAL_LIMIT, TIMEOUT_EXIT_CODE, main, trial, trial_with_limit};

pub use future::poll_once;

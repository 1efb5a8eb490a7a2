//! Cross-process tests of sp-shm: this binary re-executes itself as the child process.
//!
//! With `SP_SHM_IT_ROLE` set, `main` runs that child role and exits with its status; otherwise
//! it runs the trials through libtest-mimic, one at a time (`test_threads = 1`), each under a
//! watchdog that fails the whole run after [`TRIAL_LIMIT`] and with a check that no file
//! descriptor leaked (`/proc/self/fd` before and after). Children get `PR_SET_PDEATHSIG(SIGKILL)`.
//! Nothing sleeps to synchronise: kill tests wait until the parked thread is inside `poll`, as
//! `/proc/self/task/<tid>/syscall` shows.

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
#[cfg(all(feature = "tokio", not(sp_loom)))]
mod tokio;

fn main() {
    // The loom build compiles only the ring's protocol; these tests need the real set-up.
    #[cfg(not(sp_loom))]
    cross::main();
}

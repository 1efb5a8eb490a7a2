//! The synchronisation shim: every atomic and fence of the ring protocol comes from here, so a
//! `--cfg sp_loom` build can swap in loom's model-checked versions (the pattern of tokio's
//! `src/loom` and crossbeam's `primitive` module), and the asymmetric fences live here.
//!
//! The data area's accesses are in `ring/area.rs`, which has a loom form of its own.

#[cfg(sp_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(sp_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Whether this process is registered for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, so that a peer's
/// [`heavy_fence`] orders this process's memory accesses and [`light_fence`] may be a compiler
/// barrier only.
#[cfg(not(sp_loom))]
static ASYMMETRIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `membarrier` is switched off for this process by [`NO_MEMBARRIER_ENV`].
#[cfg(not(sp_loom))]
static NO_MEMBARRIER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// With this environment variable set to `1` when a process first sets up a ring side, that
/// process never calls `membarrier(2)`: its publications use `fence(SeqCst)`, and its parked
/// sides re-check every millisecond. This is the path taken where the kernel or a seccomp filter
/// refuses `membarrier`; the switch exists to test it and for programs that must not have their
/// CPUs interrupted by a peer's `MEMBARRIER_CMD_GLOBAL_EXPEDITED`.
pub const NO_MEMBARRIER_ENV: &str = "SP_SHM_NO_MEMBARRIER";

/// `membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)`, once per process: from then on a
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` in any process runs a full memory barrier on
/// every CPU that is running one of this process's threads. Called before a ring side is used.
/// Where the kernel or a seccomp filter refuses it, [`light_fence`] stays a full fence.
#[cfg(not(sp_loom))]
pub(crate) fn register_asymmetric_fences() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let off = std::env::var_os(NO_MEMBARRIER_ENV).is_some_and(|v| v == "1");
        let registered = !off
            && rustix::thread::membarrier(
                rustix::thread::MembarrierCommand::RegisterGlobalExpedited,
            )
            .is_ok();
        NO_MEMBARRIER.store(off, std::sync::atomic::Ordering::Relaxed);
        ASYMMETRIC.store(registered, std::sync::atomic::Ordering::Relaxed);
    });
}

#[cfg(sp_loom)]
pub(crate) fn register_asymmetric_fences() {}

/// The fast side of the asymmetric Dekker fence, issued by a side after it publishes its position
/// and before it loads the other side's waiting flag (once per publication, so at saturation).
///
/// With this process registered (see [`register_asymmetric_fences`]) it is a compiler barrier:
/// the parking side's [`heavy_fence`] interrupts this thread wherever it is and runs a full barrier
/// there, which orders our store before our load as a `fence(SeqCst)` would. This is the
/// `membarrier(2)` pattern of liburcu and the man page's example; it halves the cost of a
/// one-record publication on x86 (measured: ring_vs_socket, about 18 → 40 M records/s). Without
/// registration it is `fence(SeqCst)`.
#[cfg(not(sp_loom))]
#[inline]
pub(crate) fn light_fence() {
    if ASYMMETRIC.load(std::sync::atomic::Ordering::Relaxed) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The slow side of the asymmetric fence, issued by a side that is about to park, after it sets
/// its waiting flag and before its re-check: `fence(SeqCst)`, then
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`. Returns `false` if the `membarrier` call failed:
/// the peer may then have skipped its full fence, and the caller must not rely on being woken
/// (it re-checks on a short timeout instead). Also `false`, without the call, when
/// [`NO_MEMBARRIER_ENV`] switched `membarrier` off.
#[cfg(not(sp_loom))]
pub(crate) fn heavy_fence() -> bool {
    fence(Ordering::SeqCst);
    !NO_MEMBARRIER.load(std::sync::atomic::Ordering::Relaxed)
        && rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited).is_ok()
}

/// loom has no `membarrier`: the model checks the symmetric protocol, both fences `SeqCst`.
#[cfg(sp_loom)]
pub(crate) fn light_fence() {
    fence(Ordering::SeqCst);
}

/// loom has no `membarrier`: the model checks the symmetric protocol, both fences `SeqCst`.
#[cfg(sp_loom)]
pub(crate) fn heavy_fence() -> bool {
    fence(Ordering::SeqCst);
    true
}

//! The transports under test, and [`Link`], one side's view of a connection the harness drives.
//!
//! Every cross-process transport is set up the same way: the driver (parent) calls [`offer`], which
//! creates the resources and returns what the child needs (a string and some descriptors, sent over
//! the sp-core control channel); the child passes them to [`accept`]. Each side then holds a
//! `Box<dyn Link>`. A `Link` sends a message whose bytes a closure writes (in place, for transports
//! that lend out their buffers) and receives a message whose bytes a closure reads (in place where
//! the transport allows it), so every transport is driven by the same loops in `run.rs`.

use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};
use sp_shm::IdleStrategy;

pub use catalog::{BASELINE, Placement, Transport};

use crate::error::{Error, Result};

mod catalog;
mod fd;
mod msg;
#[cfg(feature = "zenoh")]
mod over_zenoh;
#[cfg(feature = "peers")]
mod peers;
mod ref_ring;
mod shm;
#[cfg(feature = "tokio")]
mod tokio;
pub(crate) mod typed;

/// Fills a message in place.
pub(crate) type Fill<'a> = dyn FnMut(&mut [u8]) + 'a;
/// Reads a received message in place.
pub(crate) type Check<'a> = dyn FnMut(&[u8]) -> Result<()> + 'a;

/// One side of a duplex connection under test. Messages have a fixed size per run.
pub(crate) trait Link {
    /// Sends one message, whose bytes `fill` writes (all of them).
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()>;
    /// Receives one message and hands its bytes to `check`, blocking (or spinning, for the spin
    /// strategies) until one arrives.
    fn recv(&mut self, check: &mut Check<'_>) -> Result<()>;
    /// What this side's idle strategy has done so far (wake-up bytes written, parks), for
    /// transports that count it.
    fn idle_counts(&self) -> Option<IdleCounts> {
        None
    }
    /// Messages per call in throughput mode: above 1, the throughput loops use
    /// [`send_batch`](Self::send_batch) and [`recv_batch`](Self::recv_batch).
    fn batch_len(&self) -> usize {
        1
    }
    /// Sends `n` messages (`n <= batch_len()`), calling `fill` exactly once for each, in order.
    fn send_batch(&mut self, n: usize, fill: &mut Fill<'_>) -> Result<()> {
        for _ in 0..n {
            self.send(fill)?;
        }
        Ok(())
    }
    /// Receives at least one message and at most `max`, handing each to `check` in order, as
    /// [`recv`](Self::recv) waits; returns how many.
    fn recv_batch(&mut self, max: usize, check: &mut Check<'_>) -> Result<usize> {
        debug_assert!(max >= 1);
        self.recv(check)?;
        Ok(1)
    }
}

/// Counts of one side's waiting, cumulative since the link was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdleCounts {
    /// Bytes written to wake the peer.
    pub(crate) wake_bytes: u64,
    /// Times this side parked (slept in `poll`) waiting for the peer.
    pub(crate) parks: u64,
}

impl IdleCounts {
    /// A ring link's counts: both of its rings' sides (one wake byte per wake-up, either way).
    pub(crate) fn of_rings(producer: sp_shm::Stats, consumer: sp_shm::Stats) -> Self {
        Self {
            wake_bytes: producer.wakes_sent + consumer.wakes_sent,
            parks: producer.parks + consumer.parks,
        }
    }

    /// What happened between `earlier` and `self`.
    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            wake_bytes: self.wake_bytes.saturating_sub(earlier.wake_bytes),
            parks: self.parks.saturating_sub(earlier.parks),
        }
    }

    /// Both sides' counts together.
    pub(crate) fn plus(self, other: Self) -> Self {
        Self {
            wake_bytes: self.wake_bytes + other.wake_bytes,
            parks: self.parks + other.parks,
        }
    }
}

/// What the driver hands the child to set up its side, and how the driver finishes its own.
pub(crate) struct Offer {
    /// Transport-specific text for the child (a service name, a path), empty if none.
    pub(crate) extra: String,
    /// Descriptors for the child; the driver's copies are closed once they have been sent.
    pub(crate) fds: Vec<OwnedFd>,
    /// Completes the driver's side after the child has been told (it may wait for the child).
    pub(crate) finish: Box<dyn FnOnce() -> Result<Box<dyn Link>>>,
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer")
            .field("extra", &self.extra)
            .field("n_fds", &self.fds.len())
            .finish_non_exhaustive()
    }
}

/// Driver side: creates the transport for messages of `size` bytes, for round trips if `latency`
/// (a peer crate may be configured differently for each, as its own benchmarks are).
///
/// # Errors
/// Whatever creating the resources reports; [`Error::Unsupported`] for an in-process ceiling.
#[cfg_attr(not(feature = "peers"), allow(unused_variables))] // `latency` is for the peers.
pub(crate) fn offer(transport: Transport, size: usize, latency: bool) -> Result<Offer> {
    match transport {
        Transport::Pipe => fd::offer_pipe(size),
        Transport::SocketpairStream => fd::offer_stream(size),
        Transport::Seqpacket => fd::offer_seqpacket(size, None),
        Transport::Seqpacket4m => fd::offer_seqpacket(size, Some(4 << 20)),
        Transport::SpCore => msg::offer(size),
        Transport::SpShmSpin => shm::offer_ring(size, IdleStrategy::spin()),
        Transport::SpShmAdaptive => shm::offer_ring(size, IdleStrategy::adaptive()),
        Transport::SpShmPark => shm::offer_ring(size, IdleStrategy::park()),
        Transport::SpShmBatch => shm::offer_ring_batched(size),
        Transport::SpShmBlob => shm::offer_blob(size),
        #[cfg(feature = "tokio")]
        Transport::SpShmAsync => tokio::offer_ring(size, IdleStrategy::adaptive()),
        #[cfg(feature = "tokio")]
        Transport::SpShmAsyncPark => tokio::offer_ring(size, IdleStrategy::park()),
        #[cfg(feature = "tokio")]
        Transport::TokioUds => tokio::offer_uds(size),
        #[cfg(feature = "zenoh")]
        Transport::Zenoh => over_zenoh::offer(size, false),
        #[cfg(feature = "zenoh")]
        Transport::SpZenoh => over_zenoh::offer(size, true),
        Transport::RefRing => ref_ring::offer(size),
        Transport::SpTypedPod => typed::offer(size, true),
        Transport::SpTypedSerde => typed::offer(size, false),
        #[cfg(feature = "peers")]
        Transport::IpcChannelTyped => peers::typed::offer_ipc(size),
        #[cfg(feature = "peers")]
        Transport::Iceoryx2Typed => peers::typed::offer_iceoryx2(size),
        #[cfg(feature = "peers")]
        Transport::IpcChannel => peers::ipc_channel::offer(size, false),
        #[cfg(feature = "peers")]
        Transport::IpcChannelShm => peers::ipc_channel::offer(size, true),
        #[cfg(feature = "peers")]
        Transport::Iceoryx2 => peers::iceoryx2::offer(size, latency),
        #[cfg(feature = "peers")]
        Transport::Ipmpsc => peers::ipmpsc::offer(size),
        other => Err(Error::Unsupported(format!(
            "{} does not run across processes in this build",
            other.name()
        ))),
    }
}

/// Child side: sets up its end from what [`offer`] produced.
///
/// # Errors
/// Whatever opening the resources reports.
#[cfg_attr(not(feature = "peers"), allow(unused_variables))] // `latency`, `extra`: the peers'.
pub(crate) fn accept(
    transport: Transport,
    size: usize,
    latency: bool,
    extra: &str,
    fds: Vec<OwnedFd>,
) -> Result<Box<dyn Link>> {
    match transport {
        Transport::Pipe | Transport::SocketpairStream => fd::accept_stream(size, fds),
        Transport::Seqpacket | Transport::Seqpacket4m => fd::accept_seqpacket(size, fds),
        Transport::SpCore => msg::accept(size, fds),
        Transport::SpShmSpin => shm::accept_ring(size, IdleStrategy::spin(), fds),
        Transport::SpShmAdaptive => shm::accept_ring(size, IdleStrategy::adaptive(), fds),
        Transport::SpShmPark => shm::accept_ring(size, IdleStrategy::park(), fds),
        Transport::SpShmBatch => shm::accept_ring_batched(size, fds),
        Transport::SpShmBlob => shm::accept_blob(size, fds),
        #[cfg(feature = "tokio")]
        Transport::SpShmAsync => tokio::accept_ring(size, IdleStrategy::adaptive(), fds),
        #[cfg(feature = "tokio")]
        Transport::SpShmAsyncPark => tokio::accept_ring(size, IdleStrategy::park(), fds),
        #[cfg(feature = "tokio")]
        Transport::TokioUds => tokio::accept_uds(size, fds),
        #[cfg(feature = "zenoh")]
        Transport::Zenoh => over_zenoh::accept(size, false, extra),
        #[cfg(feature = "zenoh")]
        Transport::SpZenoh => over_zenoh::accept(size, true, extra),
        Transport::RefRing => ref_ring::accept(size, fds),
        Transport::SpTypedPod => typed::accept(size, true, fds),
        Transport::SpTypedSerde => typed::accept(size, false, fds),
        #[cfg(feature = "peers")]
        Transport::IpcChannelTyped => peers::typed::accept_ipc(size, extra),
        #[cfg(feature = "peers")]
        Transport::Iceoryx2Typed => peers::typed::accept_iceoryx2(size, extra),
        #[cfg(feature = "peers")]
        Transport::IpcChannel => peers::ipc_channel::accept(size, extra, false),
        #[cfg(feature = "peers")]
        Transport::IpcChannelShm => peers::ipc_channel::accept(size, extra, true),
        #[cfg(feature = "peers")]
        Transport::Iceoryx2 => peers::iceoryx2::accept(size, latency, extra),
        #[cfg(feature = "peers")]
        Transport::Ipmpsc => peers::ipmpsc::accept(size, extra),
        other => Err(Error::Unsupported(format!(
            "{} does not run across processes in this build",
            other.name()
        ))),
    }
}

/// Removes what peer crates may have left in /tmp and /dev/shm (names this harness chose).
#[cfg(feature = "peers")]
pub(crate) fn cleanup_peer_files() {
    peers::cleanup();
}

/// Takes exactly `n` descriptors from what the driver sent.
pub(crate) fn take_fds<const N: usize>(fds: Vec<OwnedFd>) -> Result<[OwnedFd; N]> {
    let n_fds = fds.len();
    fds.try_into()
        .map_err(|_| Error::Child(format!("expected {N} descriptors, got {n_fds}")))
}

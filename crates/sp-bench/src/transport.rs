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

use crate::error::{Error, Result};

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

/// A transport (or a ceiling) the harness can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Two pipes (one per direction), `read`/`write` of whole messages.
    Pipe,
    /// A `SOCK_STREAM` socketpair: the baseline every other transport is compared with.
    SocketpairStream,
    /// A `SOCK_SEQPACKET` socketpair with the kernel's default buffers; a message larger than one
    /// record can carry is sent as several records.
    Seqpacket,
    /// A `SOCK_SEQPACKET` socketpair with 4 MiB send and receive buffers.
    Seqpacket4m,
    /// sp-core [`Channel`](sp_core::Channel) messages over a seqpacket pair.
    SpCore,
    /// The sp-shm ring, both sides spinning while they wait (the spin path).
    SpShmSpin,
    /// The sp-shm ring with the adaptive idle strategy: spin, yield, then park.
    SpShmAdaptive,
    /// The sp-shm ring, parking at once (the parked-wake path).
    SpShmPark,
    /// The sp-shm ring (adaptive) driven in batches: `send_batch` and `for_each_available` of up
    /// to 64 messages per call (throughput only).
    SpShmBatch,
    /// sp-shm blobs: one sealed memfd per message, sent over a seqpacket channel.
    SpShmBlob,
    /// The sp-shm ring (adaptive) under a current-thread tokio runtime on each side (feature
    /// `tokio`).
    SpShmAsync,
    /// The same, parking at once: the parked-wake path through the reactor (feature `tokio`).
    SpShmAsyncPark,
    /// tokio's `UnixStream` with length-prefixed frames, current-thread runtimes (feature
    /// `tokio`).
    TokioUds,
    /// sp typed channel of a 64-byte plain struct, written in place and read from a validated copy.
    SpTypedPod,
    /// sp typed channel of a serde struct (postcard; blobs above the ring's largest record).
    SpTypedSerde,
    /// zenoh's own publisher and subscriber over TCP on localhost (feature `zenoh`).
    Zenoh,
    /// The same stream as typed sp values through the sp-zenoh gateways: a ring, a publishing
    /// gateway, zenoh over TCP on localhost, a subscribing gateway, a ring (feature `zenoh`;
    /// measured against `zenoh`).
    SpZenoh,
    /// ipc-channel's bytes channel (peer).
    IpcChannel,
    /// ipc-channel's `IpcSharedMemory`, one region per message (peer).
    IpcChannelShm,
    /// ipc-channel's `IpcSender<T>` of the serde struct of `sp-typed-serde` (peer).
    IpcChannelTyped,
    /// iceoryx2 publish-subscribe, the receiver reading samples in place (peer).
    Iceoryx2,
    /// iceoryx2 publish-subscribe of the plain struct of `sp-typed-pod` as a typed sample (peer).
    Iceoryx2Typed,
    /// ipmpsc's shared ring, the receiver reading in place (peer).
    Ipmpsc,
    /// Scenario: an [`sp::Pool`] of one worker process, each item read whole and answered.
    SpPool1,
    /// Scenario: an [`sp::Pool`] of two worker processes.
    SpPool2,
    /// Scenario: the same work on one worker thread fed through crossbeam channels.
    CrossbeamPool1,
    /// Scenario: the same work on two worker threads.
    CrossbeamPool2,
    /// Scenario: three stages (generate, pass on, check) connected sibling to sibling.
    SpPipeline,
    /// Scenario: the same three stages, each connected to the parent, which relays.
    SpPipelineRelayed,
    /// Scenario: from `sp::spawn` to the first value received, 100 starts.
    SpStart,
    /// Scenario: from `Command::spawn` to the first line read from the child's stdout pipe.
    SpawnPipe,
    /// Ceiling: a plain fixed-slot ring between the two processes, spinning; the limit the sp-shm
    /// ring rows are compared with.
    RefRing,
    /// Ceiling: a crossbeam channel between two threads of one process (buffers passed by pointer).
    Crossbeam,
    /// Ceiling: `memcpy` of one message on one thread (throughput only).
    Memcpy,
    /// Ceiling: one cache line bounced between two cores (round-trip latency only).
    Pingpong,
}

/// Whether a transport's sides live in two processes, two threads, or one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Driver and peer are two processes.
    TwoProcesses,
    /// Driver and peer are two threads of the benchmark process.
    TwoThreads,
    /// One thread measures on its own.
    OneThread,
    /// A scenario that starts its own processes or threads (`scenario.rs`).
    Scenario,
}

/// The transport every other one is compared with, in interleaved pairs.
pub const BASELINE: Transport = Transport::SocketpairStream;

impl Transport {
    /// Every transport, in the order the table lists them.
    pub const ALL: [Self; 35] = [
        Self::Pipe,
        Self::SocketpairStream,
        Self::Seqpacket,
        Self::Seqpacket4m,
        Self::SpCore,
        Self::SpShmSpin,
        Self::SpShmAdaptive,
        Self::SpShmPark,
        Self::SpShmBatch,
        Self::SpShmBlob,
        Self::SpShmAsync,
        Self::SpShmAsyncPark,
        Self::TokioUds,
        Self::SpTypedPod,
        Self::SpTypedSerde,
        Self::Zenoh,
        Self::SpZenoh,
        Self::IpcChannel,
        Self::IpcChannelShm,
        Self::IpcChannelTyped,
        Self::Iceoryx2,
        Self::Iceoryx2Typed,
        Self::Ipmpsc,
        Self::SpPool1,
        Self::CrossbeamPool1,
        Self::SpPool2,
        Self::CrossbeamPool2,
        Self::SpPipeline,
        Self::SpPipelineRelayed,
        Self::SpStart,
        Self::SpawnPipe,
        Self::RefRing,
        Self::Crossbeam,
        Self::Memcpy,
        Self::Pingpong,
    ];

    /// The name used on the command line, in the table and in the results file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pipe => "pipe",
            Self::SocketpairStream => "socketpair-stream",
            Self::Seqpacket => "seqpacket",
            Self::Seqpacket4m => "seqpacket-4m",
            Self::SpCore => "sp-core",
            Self::SpShmSpin => "sp-shm-spin",
            Self::SpShmAdaptive => "sp-shm-adaptive",
            Self::SpShmPark => "sp-shm-park",
            Self::SpShmBatch => "sp-shm-batch",
            Self::SpShmBlob => "sp-shm-blob",
            Self::SpShmAsync => "sp-shm-async",
            Self::SpShmAsyncPark => "sp-shm-async-park",
            Self::TokioUds => "tokio-uds",
            Self::SpTypedPod => "sp-typed-pod",
            Self::SpTypedSerde => "sp-typed-serde",
            Self::Zenoh => "zenoh",
            Self::SpZenoh => "sp-zenoh",
            Self::IpcChannel => "ipc-channel",
            Self::IpcChannelShm => "ipc-channel-shm",
            Self::IpcChannelTyped => "ipc-channel-typed",
            Self::Iceoryx2 => "iceoryx2",
            Self::Iceoryx2Typed => "iceoryx2-typed",
            Self::Ipmpsc => "ipmpsc",
            Self::SpPool1 => "sp-pool-1",
            Self::SpPool2 => "sp-pool-2",
            Self::CrossbeamPool1 => "crossbeam-pool-1",
            Self::CrossbeamPool2 => "crossbeam-pool-2",
            Self::SpPipeline => "sp-pipeline",
            Self::SpPipelineRelayed => "sp-pipeline-relayed",
            Self::SpStart => "sp-start",
            Self::SpawnPipe => "spawn-pipe",
            Self::RefRing => "ref-ring",
            Self::Crossbeam => "crossbeam",
            Self::Memcpy => "memcpy",
            Self::Pingpong => "pingpong",
        }
    }

    /// The transport with this [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Where the two sides run.
    pub fn placement(self) -> Placement {
        match self {
            Self::Crossbeam | Self::Pingpong => Placement::TwoThreads,
            Self::Memcpy => Placement::OneThread,
            _ if self.is_scenario() => Placement::Scenario,
            _ => Placement::TwoProcesses,
        }
    }

    /// Whether this is a scenario (`scenario.rs`): not one link between two processes.
    pub fn is_scenario(self) -> bool {
        matches!(
            self,
            Self::SpPool1
                | Self::SpPool2
                | Self::CrossbeamPool1
                | Self::CrossbeamPool2
                | Self::SpPipeline
                | Self::SpPipelineRelayed
                | Self::SpStart
                | Self::SpawnPipe
        )
    }

    /// The transport this one is measured against in interleaved pairs: the socketpair baseline,
    /// or for a scenario its partner (`crossbeam-pool-N` for `sp-pool-N`, `sp-pipeline-relayed`
    /// for `sp-pipeline`, `spawn-pipe` for `sp-start`). A partner is paired with itself.
    pub fn partner(self) -> Self {
        match self {
            Self::SpPool1 => Self::CrossbeamPool1,
            Self::SpPool2 => Self::CrossbeamPool2,
            Self::SpPipeline => Self::SpPipelineRelayed,
            Self::SpStart => Self::SpawnPipe,
            Self::SpZenoh => Self::Zenoh,
            Self::Zenoh
            | Self::CrossbeamPool1
            | Self::CrossbeamPool2
            | Self::SpPipelineRelayed
            | Self::SpawnPipe => self,
            _ => BASELINE,
        }
    }

    /// The transport this one's speed target names, measured in the same repetitions as a third
    /// run (baseline, rival, transport), so that the comparison is a median of interleaved pairs
    /// rather than of two cells measured seconds apart, while the machine's cross-core speed
    /// drifts between them. Throughput: the sp-shm ring rows against `ref-ring`, the async ring
    /// and the typed plain-data channel against `sp-shm-adaptive`, typed serde values against
    /// `ipc-channel-typed`, sp-core messages against `seqpacket` (`seqpacket-4m` from 1 MiB).
    /// Round trips: the parked async ring against `tokio-uds`.
    pub fn rival(self, size: usize, latency: bool) -> Option<Self> {
        let rival = match (self, latency) {
            (Self::SpCore, false) if size >= 1 << 20 => Self::Seqpacket4m,
            (Self::SpCore, false) => Self::Seqpacket,
            (Self::SpShmSpin | Self::SpShmAdaptive | Self::SpShmPark | Self::SpShmBatch, false) => {
                Self::RefRing
            }
            (Self::SpShmAsync | Self::SpTypedPod, false) => Self::SpShmAdaptive,
            (Self::SpTypedSerde, false) => Self::IpcChannelTyped,
            (Self::SpShmAsyncPark, true) => Self::TokioUds,
            _ => return None,
        };
        Some(rival)
    }

    /// Worker processes or threads of a pool scenario.
    pub fn workers(self) -> usize {
        match self {
            Self::SpPool2 | Self::CrossbeamPool2 => 2,
            _ => 1,
        }
    }

    /// Whether this is a ceiling (a machine limit) rather than an IPC transport.
    pub fn is_ceiling(self) -> bool {
        matches!(
            self,
            Self::RefRing | Self::Crossbeam | Self::Memcpy | Self::Pingpong
        )
    }

    /// Whether this is the sp-shm ring under one of its idle strategies: the rows whose
    /// throughput limit is [`RefRing`](Self::RefRing) rather than memcpy.
    pub fn is_ring(self) -> bool {
        matches!(
            self,
            Self::SpShmSpin | Self::SpShmAdaptive | Self::SpShmPark | Self::SpShmBatch
        )
    }

    /// Whether this is one of the other IPC crates sp is compared with.
    pub fn is_peer(self) -> bool {
        matches!(
            self,
            Self::IpcChannel
                | Self::IpcChannelShm
                | Self::IpcChannelTyped
                | Self::Iceoryx2
                | Self::Iceoryx2Typed
                | Self::Ipmpsc
        )
    }

    /// Whether the transport is run at sizes above 1 MiB (the blob sizes of `--full`): the
    /// shared-memory transports and the ceilings. Socket and pipe transports stop at 1 MiB (the
    /// baseline still runs beside each cell).
    pub fn runs_large(self) -> bool {
        matches!(
            self,
            Self::SpShmSpin
                | Self::SpShmAdaptive
                | Self::SpShmPark
                | Self::SpShmBatch
                | Self::SpShmBlob
                | Self::SpTypedSerde
                | Self::IpcChannelTyped
                | Self::IpcChannelShm
                | Self::Iceoryx2
                | Self::Ipmpsc
                | Self::RefRing
                | Self::Crossbeam
                | Self::Memcpy
        )
    }

    /// Whether the transport keeps a core busy while it waits (so it needs a core per side).
    pub fn spins(self) -> bool {
        matches!(
            self,
            Self::SpShmSpin | Self::Iceoryx2 | Self::Iceoryx2Typed | Self::RefRing | Self::Pingpong
        )
    }

    /// Why this transport cannot be measured in this build or on this machine, if it cannot.
    pub fn unavailable(self) -> Option<String> {
        if self.is_peer() && !cfg!(feature = "peers") {
            return Some("built without the `peers` feature".to_owned());
        }
        if matches!(
            self,
            Self::SpShmAsync | Self::SpShmAsyncPark | Self::TokioUds
        ) && !cfg!(feature = "tokio")
        {
            return Some("built without the `tokio` feature".to_owned());
        }
        if matches!(self, Self::Zenoh | Self::SpZenoh) && !cfg!(feature = "zenoh") {
            return Some("built without the `zenoh` feature".to_owned());
        }
        if self.spins() && !crate::cpu::can_pin() {
            return Some("spins while waiting and needs two cores".to_owned());
        }
        None
    }

    /// Whether the transport carries messages of `size` bytes (the typed transports carry their
    /// types' sizes only).
    pub fn carries(self, size: usize) -> bool {
        match self {
            Self::SpTypedPod | Self::Iceoryx2Typed => typed::carries(true, size),
            Self::SpTypedSerde | Self::IpcChannelTyped => typed::carries(false, size),
            Self::SpPool1 | Self::SpPool2 | Self::CrossbeamPool1 | Self::CrossbeamPool2 => {
                size == 64 || size == 64 << 10
            }
            Self::SpPipeline | Self::SpPipelineRelayed => size == 64 << 10,
            Self::SpStart | Self::SpawnPipe => size == 64,
            _ => true,
        }
    }

    /// Whether the transport measures throughput (`true`) and round trips (`latency`).
    pub fn measures(self, latency: bool) -> bool {
        match self {
            // A batch's round trip is one message each way: the adaptive ring's.
            Self::Memcpy | Self::SpShmBatch => !latency,
            Self::Pingpong | Self::SpStart | Self::SpawnPipe => latency,
            _ if self.is_scenario() => !latency,
            _ => true,
        }
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

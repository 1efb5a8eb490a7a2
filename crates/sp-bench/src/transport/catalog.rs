//! The catalogue of transports: each one's name, where its two sides run, what it is compared
//! with (the baseline, a scenario's partner, the rival its target names) and which cells it
//! takes part in. How a transport is set up and driven is in `transport.rs` ([`offer`](super::offer),
//! [`accept`](super::accept), [`Link`](super::Link)).

use serde::{Deserialize, Serialize};

use super::typed;

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

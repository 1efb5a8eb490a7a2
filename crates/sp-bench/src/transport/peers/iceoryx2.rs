//! iceoryx2: publish-subscribe of `[u8]` slices, one service per direction. The sender loans a
//! sample (iceoryx2 zero-initialises `loan_slice`) and writes the message in place; the receiver
//! polls `receive()` with a spin loop and reads the sample in place. Nodes use their own file prefix
//! and root directory, so what a killed measurement leaves behind can be removed.
//!
//! The driver creates both services and its own ports before the child is told their names. When
//! the two processes created their ports of one service at the same time, iceoryx2 0.10.0
//! sometimes delivered the samples after the 16th into a connection the subscriber did not read
//! (samples lost despite `RetryUntilDelivered`; docs/benchmarks.md, "Known issues").
//!
//! Each mode gets the configuration iceoryx2 uses for it:
//!
//! - round trips: its own publish-subscribe latency benchmark's (`benchmarks/publish-subscribe`
//!   in its repository): history 0, a subscriber buffer of 1, safe overflow on (a new sample
//!   replaces an unread one), busy polling; the two processes are pinned like every measurement.
//!   In a ping-pong at most one sample is in flight, so nothing is ever overwritten.
//! - throughput: lossless streaming, which safe overflow would break (it drops unread samples):
//!   safe overflow off, the publisher's `RetryUntilDelivered` backpressure, a subscriber buffer
//!   of up to 16 samples ([`stream_buffer_len`]), history 0.

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use super::{peer_error, spin_for, unique_name};
use crate::error::{Error, Result};
use crate::transport::{Check, Fill, Link, Offer};

/// Prefix of the files iceoryx2 creates for this harness in /dev/shm, followed by the driver's pid.
pub(super) const FILE_PREFIX: &str = "spbench_iox2_";

/// iceoryx2's root directory for this harness (services, nodes) is /tmp/ROOT_PREFIX + the
/// driver's pid.
pub(super) const ROOT_PREFIX: &str = "sp-bench-iceoryx2-";

struct Iceoryx2Link {
    publisher: Publisher<ipc::Service, [u8], ()>,
    subscriber: Subscriber<ipc::Service, [u8], ()>,
    size: usize,
    // Dropped last: the ports above belong to it.
    _node: Node<ipc::Service>,
}

/// Driver side: the driver's pid and the service names go to the child as `pid\ndown\nup`.
///
/// The driver creates both services and its ports before the child is told their names, so the
/// two processes never create ports of the same service at the same time (see the module docs).
pub(in crate::transport) fn offer(size: usize, latency: bool) -> Result<Offer> {
    let pid = std::process::id();
    let base = unique_name("iox2");
    let down = format!("{base}/down");
    let up = format!("{base}/up");
    let link = Iceoryx2Link::open(size, latency, pid, &down, &up)?;
    let extra = format!("{pid}\n{down}\n{up}");
    Ok(Offer {
        extra,
        fds: Vec::new(),
        finish: Box::new(move || Ok(Box::new(link) as _)),
    })
}

/// Child side: the same services, the other way round.
pub(in crate::transport) fn accept(
    size: usize,
    latency: bool,
    extra: &str,
) -> Result<Box<dyn Link>> {
    let mut lines = extra.lines();
    let (Some(pid), Some(down), Some(up)) = (lines.next(), lines.next(), lines.next()) else {
        return Err(Error::Child(
            "iceoryx2: expected a pid and two service names".into(),
        ));
    };
    let pid = pid
        .parse()
        .map_err(|_| Error::Child("iceoryx2: bad pid".into()))?;
    Ok(Box::new(Iceoryx2Link::open(size, latency, pid, up, down)?))
}

/// iceoryx2's configuration with this harness's file prefix and root directory for `pid`.
pub(super) fn config(pid: u32) -> Result<Config> {
    let mut config = Config::default();
    let prefix = format!("{FILE_PREFIX}{pid}_");
    config.global.prefix = FileName::new(prefix.as_bytes()).map_err(peer_error)?;
    let root = format!("/tmp/{ROOT_PREFIX}{pid}/");
    config
        .global
        .set_root_path(&Path::new(root.as_bytes()).map_err(peer_error)?);
    Ok(config)
}

/// Samples in flight per direction when streaming: enough to stream, bounded in memory for large
/// messages (at most 8 MiB of them, at least 2, at most 16).
pub(super) fn stream_buffer_len(size: usize) -> usize {
    ((8 << 20) / size.max(1)).clamp(2, 16)
}

impl Iceoryx2Link {
    fn open(size: usize, latency: bool, pid: u32, send_on: &str, receive_on: &str) -> Result<Self> {
        set_log_level(LogLevel::Error);
        // Round trips: the latency benchmark's buffer of 1 with safe overflow; streams: lossless.
        let (buffer, safe_overflow) = if latency {
            (1, true)
        } else {
            (stream_buffer_len(size), false)
        };
        let node = NodeBuilder::new()
            .config(&config(pid)?)
            .create::<ipc::Service>()
            .map_err(peer_error)?;
        let open = |name: &str| {
            node.service_builder(&ServiceName::new(name).map_err(peer_error)?)
                .publish_subscribe::<[u8]>()
                .max_publishers(1)
                .max_subscribers(1)
                .history_size(0)
                .subscriber_max_buffer_size(buffer)
                .enable_safe_overflow(safe_overflow)
                .open_or_create()
                .map_err(peer_error)
        };
        let out = open(send_on)?;
        let inbound = open(receive_on)?;
        let publisher = out.publisher_builder().initial_max_slice_len(size);
        let publisher = if latency {
            publisher
        } else {
            publisher.backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        };
        let publisher = publisher.create().map_err(peer_error)?;
        let subscriber = inbound
            .subscriber_builder()
            .buffer_size(buffer)
            .create()
            .map_err(peer_error)?;
        Ok(Self {
            publisher,
            subscriber,
            size,
            _node: node,
        })
    }
}

impl Link for Iceoryx2Link {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        let mut sample = self.publisher.loan_slice(self.size).map_err(peer_error)?;
        fill(sample.payload_mut());
        sample.send().map_err(peer_error)?;
        Ok(())
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let sample = spin_for(|| self.subscriber.receive().map_err(peer_error))?;
        check(sample.payload())
    }
}

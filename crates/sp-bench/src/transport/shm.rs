//! sp-shm: the shared-memory ring under each idle strategy, and blobs handed over by memfd.
//!
//! Ring: each side runs [`Duplex::connect`] over a seqpacket channel the driver created, so each
//! produces into a ring of its own and consumes the other's. The sender reserves a record and
//! writes the message in place; the receiver reads it in place.
//!
//! Reading in place uses [`ReadGrant::as_slice_trusted`](sp_shm::ReadGrant::as_slice_trusted):
//! the producer is the other half of this benchmark, a well-behaved sp-shm producer that writes
//! only space the consumer has released, which is the trust that function asks for. An
//! application that cannot trust its peer copies out instead (`copy_to_slice`).
//!
//! Blob: the sender builds a sealed memfd of the message size per message, writes the message into
//! it, and sends it over the control channel; the receiver checks the seals and reads the
//! read-only mapping in place (a plain `&[u8]` is sound: the bytes are sealed against writes).

#![allow(unsafe_code)] // `ReadGrant::as_slice_trusted`, see above.

use std::os::fd::OwnedFd;
use std::time::Duration;

use sp_core::{Channel, End, SocketKind};
use sp_shm::{Blob, Config, Consumer, Duplex, IdleStrategy, Producer};

use crate::error::Result;
use crate::transport::{Check, Fill, Link, Offer, take_fds};

/// How long a ring or blob wait may last before the side reports its peer as stuck.
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Record header bytes in the ring (sp-shm's `{len, kind}`).
const RECORD_HEADER: usize = 8;

#[derive(Debug)]
struct RingLink {
    producer: Producer,
    consumer: Consumer,
    size: usize,
    // Kept open: the rings' set-up channel, idle once the handshake is done.
    _control: Channel,
}

#[derive(Debug)]
struct BlobLink {
    channel: Channel,
    size: usize,
}

/// The ring's data-area bytes for messages of `size` bytes: room for at least four records,
/// 1 MiB or more, a power of two. The `ref-ring` yardstick sizes its slots from it.
pub(super) fn ring_capacity(size: usize) -> usize {
    (4 * (size.next_multiple_of(8) + RECORD_HEADER))
        .max(1 << 20)
        .next_power_of_two()
}

/// The ring geometry for messages of `size` bytes (see [`ring_capacity`]).
pub(super) fn ring_config(size: usize, idle: IdleStrategy) -> Config {
    let max_payload = size.next_multiple_of(8);
    Config::new()
        .capacity(ring_capacity(size))
        .max_payload(max_payload)
        .idle(idle)
        .handshake_timeout(WAIT_LIMIT)
}

/// Driver side of a ring pair: the child gets one end of a fresh seqpacket pair and both sides
/// run the handshake.
pub(super) fn offer_ring(size: usize, idle: IdleStrategy) -> Result<Offer> {
    let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    Ok(Offer {
        extra: String::new(),
        fds: vec![theirs.into()],
        finish: Box::new(move || Ok(Box::new(RingLink::connect(mine, size, idle)?) as _)),
    })
}

/// Child side of a ring pair.
pub(super) fn accept_ring(
    size: usize,
    idle: IdleStrategy,
    fds: Vec<OwnedFd>,
) -> Result<Box<dyn Link>> {
    let [fd] = take_fds(fds)?;
    Ok(Box::new(RingLink::connect(End::from(fd), size, idle)?))
}

/// Driver side of the blob transport: a seqpacket channel for the BLOB messages.
pub(super) fn offer_blob(size: usize) -> Result<Offer> {
    let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    Ok(Offer {
        extra: String::new(),
        fds: vec![theirs.into()],
        finish: Box::new(move || {
            Ok(Box::new(BlobLink {
                channel: Channel::new(mine)?,
                size,
            }) as _)
        }),
    })
}

/// Child side of the blob transport.
pub(super) fn accept_blob(size: usize, fds: Vec<OwnedFd>) -> Result<Box<dyn Link>> {
    let [fd] = take_fds(fds)?;
    Ok(Box::new(BlobLink {
        channel: Channel::new(End::from(fd))?,
        size,
    }))
}

impl RingLink {
    fn connect(end: End, size: usize, idle: IdleStrategy) -> Result<Self> {
        let duplex = Duplex::connect(Channel::new(end)?, &ring_config(size, idle))?;
        let (producer, consumer, control) = duplex.into_parts();
        Ok(Self {
            producer,
            consumer,
            size,
            _control: control,
        })
    }
}

impl Link for RingLink {
    // Untimed, like the socket transports' blocking `read`/`write`: the measurement's watchdog
    // bounds both (it kills the child, and a hang-up ends any wait), and a wait with a deadline
    // would arm a kernel timer on every park that the sockets do not pay.
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        let mut grant = self.producer.reserve(self.size)?;
        fill(&mut grant);
        grant.commit(self.size)?;
        Ok(())
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let grant = self.consumer.read()?;
        // SAFETY: the producer is the other half of this benchmark, an sp-shm producer that
        // writes only space this consumer has released; the grant keeps this record unreleased
        // while the slice lives (see the module documentation).
        let bytes = unsafe { grant.as_slice_trusted() };
        check(bytes)
    }

    fn wake_bytes(&self) -> Option<u64> {
        // One byte per wake-up, in either direction.
        Some(self.producer.stats().wakes_sent + self.consumer.stats().wakes_sent)
    }
}

impl Link for BlobLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        let blob = Blob::build(self.size, |bytes| fill(bytes))?;
        blob.send(&self.channel)?;
        Ok(())
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let blob = Blob::recv_timeout(&mut self.channel, WAIT_LIMIT)?;
        check(&blob)
    }
}

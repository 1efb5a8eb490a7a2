//! sp-shm: the shared-memory ring under each idle strategy, and blobs handed over by memfd.
//!
//! Ring: each side runs [`Duplex::connect`] over a seqpacket channel the driver created, so each
//! produces into a ring of its own and consumes the other's. The sender reserves a record and
//! writes the message in place; the receiver copies a record of up to [`COPY_OUT_MAX`] out and
//! releases it before the check (as ref-ring does), and reads a larger one in place.
//!
//! Reading in place uses [`ReadGrant::as_slice_trusted`](sp_shm::ReadGrant::as_slice_trusted):
//! the producer is the other half of this benchmark, a well-behaved sp-shm producer that writes
//! only space the consumer has released, which is the trust that function asks for. An
//! application that cannot trust its peer copies out instead (`copy_to_slice`).
//!
//! Batched ring (`sp-shm-batch`): the adaptive ring, with the throughput loops sending up to
//! [`BATCH`] messages per call: the sender reserves and fills each in place and commits it with
//! [`WriteGrant::commit_deferred`](sp_shm::WriteGrant::commit_deferred), then makes one check for
//! a parked consumer ([`Producer::flush`]); the receiver waits for the first with
//! [`Consumer::read`], then takes up to `BATCH - 1` more with
//! [`Consumer::for_each_available`], all read in place, and publishes its head once. These are the
//! ring's batched forms for in-place records; `send_batch` and `recv_batch` are the same with a
//! copy in and a copy out. Batches are smaller for large messages, so that one is at most half the
//! ring.
//!
//! Blob: the sender builds a sealed memfd of the message size per message, writes the message into
//! it, and sends it over the control channel; the receiver checks the seals and reads the
//! read-only mapping in place (a plain `&[u8]` is sound: the bytes are sealed against writes).

#![allow(unsafe_code)] // `ReadGrant::as_slice_trusted`, see above.

use std::os::fd::OwnedFd;
use std::time::Duration;

use sp_core::{Channel, End, SocketKind};
use sp_shm::{Blob, Config, Consumer, Duplex, IdleStrategy, Producer};

use crate::error::{Error, Result};
use crate::transport::{Check, Fill, IdleCounts, Link, Offer, take_fds};

/// How long a ring or blob wait may last before the side reports its peer as stuck.
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Record header bytes in the ring (sp-shm's `{len, kind}`).
const RECORD_HEADER: usize = 8;

/// Most messages per call of the batched ring.
pub(super) const BATCH: usize = 64;

#[derive(Debug)]
struct RingLink {
    producer: Producer,
    consumer: Consumer,
    size: usize,
    /// Messages per throughput call: 1, or [`batch_len`] for the batched ring.
    batch: usize,
    /// The copy a small record is read into (see `recv`).
    buf: Vec<u8>,
    // Kept open: the rings' set-up channel, idle once the handshake is done.
    _control: Channel,
}

#[derive(Debug)]
struct BlobLink {
    channel: Channel,
    size: usize,
}

/// The largest record the ring rows copy out before checking it (see `RingLink::recv`).
const COPY_OUT_MAX: usize = 4096;

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

/// Messages per call of the batched ring: [`BATCH`], fewer when that many would fill more than
/// half the ring (at least 1).
pub(super) fn batch_len(size: usize) -> usize {
    (ring_capacity(size) / 2 / (size.next_multiple_of(8) + RECORD_HEADER)).clamp(1, BATCH)
}

/// Driver side of a ring pair: the child gets one end of a fresh seqpacket pair and both sides
/// run the handshake.
pub(super) fn offer_ring(size: usize, idle: IdleStrategy) -> Result<Offer> {
    offer_ring_with(size, idle, 1)
}

/// Child side of a ring pair.
pub(super) fn accept_ring(
    size: usize,
    idle: IdleStrategy,
    fds: Vec<OwnedFd>,
) -> Result<Box<dyn Link>> {
    let [fd] = take_fds(fds)?;
    Ok(Box::new(RingLink::connect(End::from(fd), size, idle, 1)?))
}

/// Driver side of the batched ring (adaptive idle strategy).
pub(super) fn offer_ring_batched(size: usize) -> Result<Offer> {
    offer_ring_with(size, IdleStrategy::adaptive(), batch_len(size))
}

/// Child side of the batched ring.
pub(super) fn accept_ring_batched(size: usize, fds: Vec<OwnedFd>) -> Result<Box<dyn Link>> {
    let [fd] = take_fds(fds)?;
    let batch = batch_len(size);
    Ok(Box::new(RingLink::connect(
        End::from(fd),
        size,
        IdleStrategy::adaptive(),
        batch,
    )?))
}

fn offer_ring_with(size: usize, idle: IdleStrategy, batch: usize) -> Result<Offer> {
    let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    Ok(Offer {
        extra: String::new(),
        fds: vec![theirs.into()],
        finish: Box::new(move || Ok(Box::new(RingLink::connect(mine, size, idle, batch)?) as _)),
    })
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
    fn connect(end: End, size: usize, idle: IdleStrategy, batch: usize) -> Result<Self> {
        let duplex = Duplex::connect(Channel::new(end)?, &ring_config(size, idle))?;
        let (producer, consumer, control) = duplex.into_parts();
        Ok(Self {
            producer,
            consumer,
            size,
            batch,
            buf: vec![0; size],
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
        // Up to a page, copy out, release, then check, as ref-ring does: the head is published
        // before the check rather than after it, so a full ring's producer waits less. Larger
        // records are checked in place, where a copy would cost more than it frees.
        if self.size <= COPY_OUT_MAX {
            let grant = self.consumer.read()?;
            if grant.len() > self.buf.len() {
                // Shorter records reach the check, which reports their length; a longer one
                // would be cut to fit the copy.
                return Err(Error::Corrupt(format!(
                    "a record of {} bytes, expected {}",
                    grant.len(),
                    self.size
                )));
            }
            let n = grant.copy_to_slice(&mut self.buf);
            drop(grant);
            return check(&self.buf[..n]);
        }
        let grant = self.consumer.read()?;
        // SAFETY: the producer is the other half of this benchmark, an sp-shm producer that
        // writes only space this consumer has released; the grant keeps this record unreleased
        // while the slice lives (see the module documentation).
        let bytes = unsafe { grant.as_slice_trusted() };
        check(bytes)
    }

    fn idle_counts(&self) -> Option<IdleCounts> {
        Some(IdleCounts::of_rings(
            self.producer.stats(),
            self.consumer.stats(),
        ))
    }

    fn batch_len(&self) -> usize {
        self.batch
    }

    fn send_batch(&mut self, n: usize, fill: &mut Fill<'_>) -> Result<()> {
        // In place, each record committed without the check for a parked consumer, then one
        // check for the whole batch.
        for _ in 0..n {
            let mut grant = self.producer.reserve(self.size)?;
            fill(&mut grant);
            grant.commit_deferred(self.size);
        }
        self.producer.flush()?;
        Ok(())
    }

    fn recv_batch(&mut self, max: usize, check: &mut Check<'_>) -> Result<usize> {
        self.recv(check)?;
        let size = self.size;
        let mut res = Ok(());
        // In place, as `recv` reads; the head is published once for the batch.
        let n_more = self
            .consumer
            .for_each_available(max.saturating_sub(1), |rec| {
                if res.is_err() {
                    return;
                }
                res = if rec.len() == size {
                    // SAFETY: as in `recv`: the producer is the other half of this benchmark,
                    // which writes only space this consumer has released.
                    check(unsafe { rec.as_slice_trusted() })
                } else {
                    Err(Error::Corrupt(format!(
                        "a record of {} bytes, expected {size}",
                        rec.len()
                    )))
                };
            })?;
        res?;
        Ok(1 + n_more)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_64_or_half_a_ring() {
        assert_eq!(batch_len(64), BATCH);
        assert_eq!(batch_len(1 << 10), BATCH);
        // 1 MiB ring, records of 64 KiB + 8: 7 in half of it.
        assert_eq!(batch_len(64 << 10), 7);
        assert_eq!(batch_len(1 << 20), 3);
        assert_eq!(batch_len(16 << 20), 3);
        for size in [8, 100, 4096, 1 << 18, 1 << 22] {
            let n = batch_len(size);
            assert!((1..=BATCH).contains(&n));
            assert!(n * (size.next_multiple_of(8) + RECORD_HEADER) <= ring_capacity(size) / 2);
        }
    }
}

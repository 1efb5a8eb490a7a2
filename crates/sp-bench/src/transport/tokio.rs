//! Async transports (feature `tokio`): the sp-shm ring under a current-thread tokio runtime on
//! each side (`sp-shm-async`, adaptive; `sp-shm-async-park`, parking at once: the parked-wake
//! path), and tokio's `UnixStream` with length-prefixed frames (`tokio-uds`, what an async user
//! writes today).
//!
//! The harness drives a `Link` one call at a time; each call is one `block_on` of the async
//! operations. In throughput mode the calls carry a batch ([`batch_len`](super::shm::batch_len)
//! messages, the same for every transport here), and the ring rows do what the blocking ring's
//! rows do with a batch: the sender takes room for each record with the synchronous fast path
//! (`try_reserve`; it awaits `reserve_with` only when the ring is full), commits it without the
//! check for a parked consumer and checks once at the end (`flush`); the receiver awaits
//! records and takes every one that is there in one poll (`read_many_with`, the async
//! `for_each_available`), publishing the head once. tokio-uds awaits each frame.
//! The driver always sends whole batches, so the receiver takes exactly `max` messages per call.
//!
//! Ring records are read in place through
//! [`ReadGrantRef::as_slice_trusted`](sp_shm::ReadGrantRef::as_slice_trusted), as the blocking
//! ring's rows are (the producer is the other half of this benchmark).

#![allow(unsafe_code)] // `ReadGrant::as_slice_trusted`, see above.

use std::os::fd::OwnedFd;

use sp_core::{Channel, End, SocketKind};
use sp_shm::tokio::{AsyncConsumer, AsyncProducer};
use sp_shm::{Duplex, IdleStrategy, TrySendError, WriteGrant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::runtime::Runtime;

use super::shm::{batch_len, ring_config};
use crate::error::{Error, Result};
use crate::transport::{Check, Fill, IdleCounts, Link, Offer, take_fds};

struct AsyncRingLink {
    // Dropped before the runtime whose reactor they are registered with.
    producer: AsyncProducer,
    consumer: AsyncConsumer,
    _control: Channel,
    rt: Runtime,
    size: usize,
    batch: usize,
}

struct UdsLink {
    stream: UnixStream,
    rt: Runtime,
    buf: Vec<u8>,
    batch: usize,
}

fn runtime() -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Driver side of the async ring.
pub(super) fn offer_ring(size: usize, idle: IdleStrategy) -> Result<Offer> {
    let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    Ok(Offer {
        extra: String::new(),
        fds: vec![theirs.into()],
        finish: Box::new(move || Ok(Box::new(AsyncRingLink::connect(mine, size, idle)?) as _)),
    })
}

/// Child side of the async ring.
pub(super) fn accept_ring(
    size: usize,
    idle: IdleStrategy,
    fds: Vec<OwnedFd>,
) -> Result<Box<dyn Link>> {
    let [fd] = take_fds(fds)?;
    Ok(Box::new(AsyncRingLink::connect(End::from(fd), size, idle)?))
}

/// Driver side of tokio-uds: a stream socketpair, one end for the child.
pub(super) fn offer_uds(size: usize) -> Result<Offer> {
    let (mine, theirs) = sp_core::pair(SocketKind::Stream)?;
    Ok(Offer {
        extra: String::new(),
        fds: vec![theirs.into()],
        finish: Box::new(move || Ok(Box::new(UdsLink::new(mine, size)?) as _)),
    })
}

/// Child side of tokio-uds.
pub(super) fn accept_uds(size: usize, fds: Vec<OwnedFd>) -> Result<Box<dyn Link>> {
    let [fd] = take_fds(fds)?;
    Ok(Box::new(UdsLink::new(End::from(fd), size)?))
}

impl AsyncRingLink {
    fn connect(end: End, size: usize, idle: IdleStrategy) -> Result<Self> {
        let duplex = Duplex::connect(Channel::new(end)?, &ring_config(size, idle))?;
        let (producer, consumer, control) = duplex.into_parts();
        let rt = runtime()?;
        let (producer, consumer) = {
            let _entered = rt.enter();
            (AsyncProducer::new(producer)?, AsyncConsumer::new(consumer)?)
        };
        Ok(Self {
            producer,
            consumer,
            _control: control,
            rt,
            size,
            batch: batch_len(size),
        })
    }
}

impl Link for AsyncRingLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        self.send_batch(1, fill)
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        self.recv_batch(1, check).map(|_| ())
    }

    fn idle_counts(&self) -> Option<IdleCounts> {
        Some(IdleCounts::of_rings(
            self.producer.get_ref().stats(),
            self.consumer.get_ref().stats(),
        ))
    }

    fn batch_len(&self) -> usize {
        self.batch
    }

    fn send_batch(&mut self, n: usize, fill: &mut Fill<'_>) -> Result<()> {
        let (producer, size) = (&mut self.producer, self.size);
        self.rt.block_on(async {
            // As the blocking ring's batch: each record committed without the check for a
            // parked consumer, then one check for the whole batch.
            // Room is tried for first, without a future; only a full ring is awaited.
            let mut write = |mut grant: WriteGrant<'_>| {
                fill(&mut grant);
                grant.commit_deferred(size);
            };
            for _ in 0..n {
                match producer.try_reserve(size) {
                    Ok(grant) => write(grant),
                    Err(TrySendError::Full) => producer.reserve_with(size, &mut write).await?,
                    Err(TrySendError::Broken(err)) => return Err(err.into()),
                }
            }
            producer.flush()?;
            Ok(())
        })
    }

    fn recv_batch(&mut self, max: usize, check: &mut Check<'_>) -> Result<usize> {
        let (consumer, size) = (&mut self.consumer, self.size);
        self.rt.block_on(async {
            // As the blocking ring's batch: every record that is there, in place, the head
            // published once; awaiting whenever none is (the driver sends exactly `max`).
            let mut taken = 0;
            let mut res = Ok(());
            while taken < max && res.is_ok() {
                taken += consumer
                    .read_many_with(max - taken, |rec| {
                        if res.is_err() {
                            return;
                        }
                        res = if rec.len() == size {
                            // SAFETY: the producer is the other half of this benchmark, an
                            // sp-shm producer that writes only space this consumer has
                            // released; the slice lives only while `f` holds the record.
                            check(unsafe { rec.as_slice_trusted() })
                        } else {
                            Err(Error::Corrupt(format!(
                                "a record of {} bytes, expected {size}",
                                rec.len()
                            )))
                        };
                    })
                    .await?;
            }
            res.map(|()| max)
        })
    }
}

impl UdsLink {
    fn new(end: End, size: usize) -> Result<Self> {
        end.set_nonblocking(true)?;
        let rt = runtime()?;
        let stream = {
            let _entered = rt.enter();
            UnixStream::from_std(std::os::unix::net::UnixStream::from(OwnedFd::from(end)))?
        };
        Ok(Self {
            stream,
            rt,
            buf: vec![0; size + 4],
            batch: batch_len(size),
        })
    }
}

impl Link for UdsLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        self.send_batch(1, fill)
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        self.recv_batch(1, check).map(|_| ())
    }

    fn batch_len(&self) -> usize {
        self.batch
    }

    fn send_batch(&mut self, n: usize, fill: &mut Fill<'_>) -> Result<()> {
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        self.rt.block_on(async {
            for _ in 0..n {
                let len = buf.len() - 4;
                buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
                fill(&mut buf[4..]);
                stream.write_all(buf).await?;
            }
            Ok(())
        })
    }

    fn recv_batch(&mut self, max: usize, check: &mut Check<'_>) -> Result<usize> {
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        self.rt.block_on(async {
            for _ in 0..max {
                let mut len = [0u8; 4];
                stream.read_exact(&mut len).await?;
                let len = u32::from_le_bytes(len) as usize;
                if len != buf.len() - 4 {
                    return Err(Error::Corrupt(format!("a frame of {len} bytes")));
                }
                stream.read_exact(&mut buf[4..]).await?;
                check(&buf[4..])?;
            }
            Ok(max)
        })
    }
}

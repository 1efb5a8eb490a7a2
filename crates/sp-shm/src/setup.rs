//! Creating a ring's memory as its producer, and accepting a ring's memory as its consumer.
//!
//! The producer owns both memfds of the ring it writes: a small *control* memfd (positions and
//! waiting flags, writable by both sides, sealed `SHRINK | GROW | SEAL`) and the *data* memfd,
//! which it maps read-write and then seals `FUTURE_WRITE | SHRINK | GROW | SEAL`, so the consumer
//! can map it read-only and nothing else. The producer also creates the ring's wake socketpair
//! and hands one end over. The consumer checks everything before it maps anything (Wayland's
//! `wl_shm` and shmem-ipc's `mem.rs` do the same checks).

#![allow(unsafe_code)] // Casts the start of a mapping to the control block and the data area.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use memmap2::MmapRaw;
use rustix::fs::SealFlags;
use sp_core::{End, SocketKind};

use crate::config::Config;
use crate::error::{Error, RefuseReason, Result};
use crate::layout::{self, CTRL_SIZE, ControlBlock};
use crate::region::{self, BASE_SEALS};
use crate::ring::{Consumer, DataArea, Producer, ReadOnly, ReadWrite, Shared};
use crate::sync::Ordering;
use crate::wake::WakeSocket;

/// Everything a consumer needs to attach to a ring: what the handshake sends.
#[derive(Debug)]
pub(crate) struct RingOffer {
    pub(crate) ctrl: OwnedFd,
    pub(crate) data: OwnedFd,
    pub(crate) wake: End,
    pub(crate) capacity: u64,
    pub(crate) max_payload: u64,
}

/// Creates a producer and its ring in this process, plus the offer for the consumer.
pub(crate) fn create_producer(config: &Config) -> Result<(Producer, RingOffer)> {
    config.check()?;
    let capacity = config.capacity;
    let max_payload = config.max_payload_bytes();

    let ctrl_fd = region::create_memfd("sp-shm-ctrl", CTRL_SIZE, false)?;
    let ctrl_map = region::map_rw(&ctrl_fd, CTRL_SIZE, config.populate)?;
    let ctrl = ctrl_ptr(&ctrl_map)?;
    {
        // SAFETY: `ctrl` points at the start of a live, page-aligned, writable mapping of
        // CTRL_SIZE >= size_of::<ControlBlock>() bytes; the block is atomics only.
        let block = unsafe { ctrl.as_ref() };
        block.magic.store(layout::CTRL_MAGIC, Ordering::Relaxed);
        block
            .version_layout
            .store(layout::version_layout(), Ordering::Relaxed);
        block.capacity.store(capacity as u64, Ordering::Relaxed);
        block
            .max_payload
            .store(max_payload as u64, Ordering::Relaxed);
    }
    region::add_seals(&ctrl_fd, BASE_SEALS)?;

    let (data_fd, data_map) = create_data(capacity, config)?;

    let (ours, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    let wake = WakeSocket::new(ours)?;
    // SAFETY: `create_data` maps the data memfd read-write; `data_map` moves into `Shared`.
    let data = unsafe { data_area::<ReadWrite>(&data_map, capacity)? };
    // SAFETY: `ctrl` points at the start of the control mapping moved into `Shared` here.
    let shared = unsafe { Shared::new(ctrl, data, (ctrl_map, data_map)) };
    let producer = Producer::from_parts(shared, capacity as u64, max_payload, wake, config.idle);
    let offer = RingOffer {
        ctrl: ctrl_fd,
        data: data_fd,
        wake: theirs,
        capacity: capacity as u64,
        max_payload: max_payload as u64,
    };
    Ok((producer, offer))
}

/// The data memfd, mapped read-write and then sealed against writable mappings by anyone else.
fn create_data(capacity: usize, config: &Config) -> Result<(OwnedFd, MmapRaw)> {
    let attempt = |huge: bool| -> Result<(OwnedFd, MmapRaw)> {
        let fd = region::create_memfd("sp-shm-data", capacity, huge)?;
        let map = region::map_rw(&fd, capacity, config.populate || huge)?;
        region::add_seals(&fd, BASE_SEALS | SealFlags::FUTURE_WRITE)?;
        Ok((fd, map))
    };
    if config.huge_pages {
        // Huge pages need a reservation (`vm.nr_hugepages`) and a multiple-of-2-MiB size;
        // without them fall back to normal pages.
        if let Ok(res) = attempt(true) {
            return Ok(res);
        }
    }
    attempt(false)
}

/// Checks a ring offer and attaches a consumer to it.
pub(crate) fn accept_consumer(offer: RingOffer, config: &Config) -> Result<Consumer> {
    let RingOffer {
        ctrl: ctrl_fd,
        data: data_fd,
        wake,
        capacity,
        max_payload,
    } = offer;
    if layout::check_geometry(capacity, max_payload).is_err() {
        return Err(Error::Refused(
            if capacity.is_power_of_two()
                && (layout::MIN_CAPACITY as u64..=layout::MAX_CAPACITY as u64).contains(&capacity)
            {
                RefuseReason::BadMaxPayload
            } else {
                RefuseReason::BadCapacity
            },
        ));
    }
    if capacity > config.accept_capacity as u64 {
        return Err(Error::Refused(RefuseReason::BadCapacity));
    }
    region::check_memfd(&ctrl_fd, BASE_SEALS, CTRL_SIZE as u64)?;
    region::check_memfd(&data_fd, BASE_SEALS | SealFlags::FUTURE_WRITE, capacity)?;
    // Both: a seqpacket socket of another family (SCTP, say) would pass the type check alone.
    if wake.kind().ok() != Some(SocketKind::SeqPacket)
        || rustix::net::sockopt::socket_domain(&wake).ok() != Some(rustix::net::AddressFamily::UNIX)
    {
        return Err(Error::Refused(RefuseReason::BadWakeSocket));
    }
    let wake = WakeSocket::new(wake)?;

    let ctrl_map = region::map_rw(&ctrl_fd, CTRL_SIZE, config.populate)?;
    let ctrl = ctrl_ptr(&ctrl_map)?;
    {
        // SAFETY: as in `create_producer`; the peer may write the block concurrently, which is
        // fine for atomics. Each header word is loaded once.
        let block = unsafe { ctrl.as_ref() };
        let header = [
            block.magic.load(Ordering::Relaxed),
            block.version_layout.load(Ordering::Relaxed),
            block.capacity.load(Ordering::Relaxed),
            block.max_payload.load(Ordering::Relaxed),
        ];
        if header
            != [
                layout::CTRL_MAGIC,
                layout::version_layout(),
                capacity,
                max_payload,
            ]
        {
            return Err(Error::Refused(RefuseReason::HeaderMismatch));
        }
    }
    let data_map = region::map_ro(&data_fd, capacity as usize, config.populate)?;
    // SAFETY: a read-only view of a read-only mapping; `data_map` moves into `Shared`.
    let data = unsafe { data_area::<ReadOnly>(&data_map, capacity as usize)? };
    // SAFETY: `ctrl` points at the start of the control mapping moved into `Shared` here.
    let shared = unsafe { Shared::new(ctrl, data, (ctrl_map, data_map)) };
    Ok(Consumer::from_parts(
        shared,
        capacity,
        max_payload as usize,
        wake,
        config.idle,
        config.publish_every,
    ))
}

/// `memfd_create(2)` + `fcntl(F_ADD_SEALS)` + `mmap(2)`: a producer and a consumer of one ring,
/// both in this process (for tests, threads, and measuring), with the same memfds, seals, checks
/// and read-only mapping as across processes.
///
/// # Errors
/// [`Error::InvalidConfig`] for a bad geometry; [`Error::Os`] when memory or descriptors run out.
///
/// # Examples
/// ```
/// let (mut tx, mut rx) = sp_shm::channel(&sp_shm::Config::new().capacity(64 << 10))?;
/// tx.send(b"hello")?;
/// let mut buf = Vec::new();
/// rx.recv_into(&mut buf)?;
/// assert_eq!(buf, b"hello");
/// # Ok::<(), sp_shm::Error>(())
/// ```
///
/// # References
/// [memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html),
/// [fcntl(2) file sealing](https://man7.org/linux/man-pages/man2/fcntl.2.html)
#[doc(alias = "memfd_create")]
pub fn channel(config: &Config) -> Result<(Producer, Consumer)> {
    let (producer, offer) = create_producer(config)?;
    let consumer = accept_consumer(offer, config)?;
    Ok((producer, consumer))
}

fn ctrl_ptr(map: &MmapRaw) -> Result<NonNull<ControlBlock>> {
    // A successful `mmap` never returns null and its start is page-aligned.
    NonNull::new(map.as_mut_ptr().cast::<ControlBlock>())
        .ok_or_else(|| Error::Os(std::io::Error::other("mmap returned null")))
}

/// The data area over `map`.
///
/// # Safety
/// `map` is writable if `A` is `ReadWrite`, and the caller moves it into the `Shared` that owns
/// the returned area.
unsafe fn data_area<A>(map: &MmapRaw, capacity: usize) -> Result<DataArea<A>> {
    debug_assert!(map.len() >= capacity);
    let base = NonNull::new(map.as_mut_ptr())
        .ok_or_else(|| Error::Os(std::io::Error::other("mmap returned null")))?;
    // SAFETY: the mapping is page-aligned and `capacity` bytes long (a power of two of at least
    // 4096, `check_geometry`) and readable; writability and lifetime are this function's
    // contract.
    Ok(unsafe { DataArea::new(base, capacity) })
}

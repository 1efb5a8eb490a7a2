//! ipmpsc: a shared ring per direction (a file in /dev/shm the driver creates and removes), the
//! sender serialising with bincode (bytes as one length-prefixed block) and the receiver reading
//! in place through a `ZeroCopyContext`, as its README recommends for speed. Both wait untimed
//! (`send`, `recv`), as its examples do: its timed forms arm a timed condition-variable wait, a
//! kernel timer per wait that the untimed forms do not pay. The measurement's watchdog bounds
//! them (it kills the child; the driver gives up 5 s later).

use ipmpsc::{Receiver, Sender, SharedRingBuffer};
use serde::{Serialize, Serializer};

use super::{peer_error, unique_name};
use crate::error::{Error, Result};
use crate::transport::{Check, Fill, Link, Offer};

/// Bytes serialised as one block (`serialize_bytes`), not element by element as `&[u8]` would be.
struct RawBytes<'a>(&'a [u8]);

struct IpmpscLink {
    tx: Sender,
    rx: Receiver,
    buf: Vec<u8>,
    /// Files to remove when the link is dropped (the driver's side).
    owned_paths: Vec<String>,
}

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Room for a few messages of `size` bytes, and at least 1 MiB.
fn capacity(size: usize) -> Result<u32> {
    let n_bytes = (size + 64).saturating_mul(4).max(1 << 20);
    u32::try_from(n_bytes).map_err(|_| Error::Unsupported("message too large for ipmpsc".into()))
}

/// Driver side: creates both rings; their paths go to the child as `down\nup`.
pub(in crate::transport) fn offer(size: usize) -> Result<Offer> {
    let capacity = capacity(size)?;
    let down = format!("/dev/shm/{}", unique_name("ipmpsc-down"));
    let up = format!("/dev/shm/{}", unique_name("ipmpsc-up"));
    let down_ring = SharedRingBuffer::create(&down, capacity).map_err(peer_error)?;
    let up_ring = SharedRingBuffer::create(&up, capacity).map_err(peer_error)?;
    let extra = format!("{down}\n{up}");
    Ok(Offer {
        extra,
        fds: Vec::new(),
        finish: Box::new(move || {
            Ok(Box::new(IpmpscLink {
                tx: Sender::new(down_ring),
                rx: Receiver::new(up_ring),
                buf: vec![0; size],
                owned_paths: vec![down, up],
            }) as _)
        }),
    })
}

/// Child side: opens both rings.
pub(in crate::transport) fn accept(size: usize, paths: &str) -> Result<Box<dyn Link>> {
    let (down, up) = paths
        .split_once('\n')
        .ok_or_else(|| Error::Child("ipmpsc: expected two paths".into()))?;
    let down_ring = SharedRingBuffer::open(down).map_err(peer_error)?;
    let up_ring = SharedRingBuffer::open(up).map_err(peer_error)?;
    Ok(Box::new(IpmpscLink {
        tx: Sender::new(up_ring),
        rx: Receiver::new(down_ring),
        buf: vec![0; size],
        owned_paths: Vec::new(),
    }))
}

impl Link for IpmpscLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        fill(&mut self.buf);
        self.tx.send(&RawBytes(&self.buf)).map_err(peer_error)
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let mut ctx = self.rx.zero_copy_context();
        let bytes: &[u8] = ctx.recv().map_err(peer_error)?;
        check(bytes)
    }
}

impl Drop for IpmpscLink {
    fn drop(&mut self) {
        for path in &self.owned_paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

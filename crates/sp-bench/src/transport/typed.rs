//! sp's typed channel: plain data written in place and received as a validated copy (`sp-typed-pod`),
//! and a serde struct encoded with postcard (`sp-typed-serde`; values over the ring's largest record
//! go as blobs).
//!
//! The harness fills and checks bytes; the typed transports carry those bytes as typed values, so
//! that every field is written by the sender and checked by the receiver:
//!
//! - [`Pod`] is the 64-byte message itself (the sequence number and seven words), written in place
//!   in the ring slot (`send_with`) and received as a validated copy (`recv`), the receive an
//!   application that does not trust its peer uses; the check reads the copy after the record is
//!   released, as ref-ring's does. (Reading in place after `Receiver::trust_peer` measured no
//!   faster, and kept the check's verdict on the stack across the record's release: reloaded with
//!   loads wider than the stores that wrote it, it waited for the published head to drain.)
//! - [`Rec`] carries a message of `size` bytes as a struct: word 0 is `seq`, the next 16 bytes the
//!   16 characters of `name` (one `char` per byte), the rest `values` as little-endian `u32`s (10
//!   of them at 64 B; at 56 B the struct of the issue, with 8). The sender builds the struct from
//!   the filled bytes and the receiver turns it back into bytes for the check; the peer crate's
//!   typed transport (`ipc-channel-typed`) does the same conversions. Both sides reuse one value:
//!   the sender rebuilds it in place, the receiver decodes into it (`recv_into`); ipc-channel has
//!   no such receive and allocates a new value for each message.

use std::os::fd::OwnedFd;
use std::time::Duration;

#[cfg(feature = "peers")]
use iceoryx2::prelude::ZeroCopySend;
use serde::{Deserialize, Serialize};
use sp::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
use sp_core::{Channel, End, SocketKind};

use crate::error::{Error, Result};
use crate::transport::{Check, Fill, IdleCounts, Link, Offer, take_fds};

/// The plain value: the harness's 64-byte message.
#[derive(Debug, Clone, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[zerocopy(crate = "sp::zerocopy")]
#[cfg_attr(feature = "peers", derive(ZeroCopySend))]
#[repr(C)]
pub(crate) struct Pod {
    seq: u64,
    words: [u64; 7],
}

sp::plain_data!(Pod);

/// The serde value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Rec {
    seq: u64,
    name: String,
    values: Vec<u32>,
}

/// Bytes of a [`Rec`] message before `values`: the sequence number and the name.
const REC_HEAD: usize = 8 + 16;

/// Whether a typed transport carries messages of `size` bytes.
pub(crate) fn carries(pod: bool, size: usize) -> bool {
    if pod {
        size == size_of::<Pod>()
    } else {
        size >= REC_HEAD && (size - REC_HEAD).is_multiple_of(4)
    }
}

impl Rec {
    /// Overwrites `self` with the message in `bytes` (reusing its allocations).
    pub(crate) fn set_from(&mut self, bytes: &[u8]) {
        self.seq = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
        self.name.clear();
        self.name
            .extend(bytes[8..REC_HEAD].iter().map(|&b| char::from(b)));
        self.values.clear();
        self.values.extend(
            bytes[REC_HEAD..]
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes(w.try_into().unwrap_or_default())),
        );
    }

    /// Writes the message back into `out` (exactly the message's length).
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the struct cannot be a message of `out.len()` bytes.
    pub(crate) fn write_to(&self, out: &mut [u8]) -> Result<()> {
        let n_chars = self.name.chars().count();
        if n_chars != 16 || REC_HEAD + 4 * self.values.len() != out.len() {
            return Err(Error::Corrupt(format!(
                "value {}: {n_chars} characters and {} numbers for {} bytes",
                self.seq,
                self.values.len(),
                out.len()
            )));
        }
        out[..8].copy_from_slice(&self.seq.to_le_bytes());
        for (dst, c) in out[8..REC_HEAD].iter_mut().zip(self.name.chars()) {
            *dst = u8::try_from(c)
                .map_err(|_| Error::Corrupt(format!("value {}: character {c:?}", self.seq)))?;
        }
        for (dst, v) in out[REC_HEAD..].chunks_exact_mut(4).zip(&self.values) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }
}

#[derive(Debug)]
struct PodLink {
    tx: sp::Sender<Pod>,
    rx: sp::Receiver<Pod>,
}

#[derive(Debug)]
struct RecLink {
    tx: sp::Sender<Rec>,
    rx: sp::Receiver<Rec>,
    /// The value sent, rebuilt in place from each message.
    value: Rec,
    /// The value received into (`recv_into`: its string and vector are reused).
    received: Rec,
    buf: Vec<u8>,
}

/// How long set-up may take.
const SETUP_LIMIT: Duration = Duration::from_secs(10);

/// sp's defaults (1 MiB ring, 128 KiB largest record, adaptive waiting): a 4 MiB value goes as a
/// blob.
fn config() -> sp::Config {
    sp::Config::new().handshake_timeout(SETUP_LIMIT)
}

/// Driver side: the child gets one end of a fresh seqpacket pair and both sides connect.
pub(super) fn offer(size: usize, pod: bool) -> Result<Offer> {
    check_size(size, pod)?;
    let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    Ok(Offer {
        extra: String::new(),
        fds: vec![theirs.into()],
        finish: Box::new(move || link(mine, size, pod)),
    })
}

/// Child side.
pub(super) fn accept(size: usize, pod: bool, fds: Vec<OwnedFd>) -> Result<Box<dyn Link>> {
    check_size(size, pod)?;
    let [fd] = take_fds(fds)?;
    link(End::from(fd), size, pod)
}

fn check_size(size: usize, pod: bool) -> Result<()> {
    if carries(pod, size) {
        return Ok(());
    }
    Err(Error::Unsupported(if pod {
        format!("sp-typed-pod carries 64-byte values only, not {size} B")
    } else {
        format!("sp-typed-serde needs 24 + 4n bytes, not {size}")
    }))
}

fn link(end: End, size: usize, pod: bool) -> Result<Box<dyn Link>> {
    let channel = Channel::new(end)?;
    if pod {
        let (tx, rx) = sp::connect::<Pod, Pod>(channel, &config())?;
        Ok(Box::new(PodLink { tx, rx }))
    } else {
        let (tx, rx) = sp::connect::<Rec, Rec>(channel, &config())?;
        Ok(Box::new(RecLink {
            tx,
            rx,
            value: Rec::default(),
            received: Rec::default(),
            buf: vec![0; size],
        }))
    }
}

impl Link for PodLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        Ok(self.tx.send_with(|pod| fill(pod.as_mut_bytes()))?)
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        // A validated copy, checked after the record is released (as ref-ring checks its copy),
        // with the check in tail position: its verdict is written straight into our return slot.
        let pod = self.rx.recv()?;
        check(pod.as_bytes())
    }

    fn idle_counts(&self) -> Option<IdleCounts> {
        Some(IdleCounts::of_rings(self.tx.stats(), self.rx.stats()))
    }
}

impl Link for RecLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        fill(&mut self.buf);
        self.value.set_from(&self.buf);
        Ok(self.tx.send(&self.value)?)
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        self.rx.recv_into(&mut self.received)?;
        self.received.write_to(&mut self.buf)?;
        check(&self.buf)
    }

    fn idle_counts(&self) -> Option<IdleCounts> {
        Some(IdleCounts::of_rings(self.tx.stats(), self.rx.stats()))
    }
}

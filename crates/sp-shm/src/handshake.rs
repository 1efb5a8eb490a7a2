//! Setting up a duplex pair of rings over an sp-core socket: offers, checks, READY, spawning.
//!
//! One sp-core seqpacket socketpair carries the whole set-up. Each side creates the ring it will
//! produce into and sends an OFFER (40 bytes) with three descriptors: the control memfd, the data
//! memfd and one end of the ring's private wake socketpair. Each side checks the offer it
//! receives (length, magic, version, layout, geometry, descriptor count, seals, sizes, control
//! block header, wake socket type), attaches a consumer, and answers READY with status 0 or the
//! code of the reason it refused. Afterwards the socketpair stays open as a control channel (for
//! blobs, or the application's own messages); the rings never use it. `docs/protocol.md` gives
//! the exact bytes.
//!
//! The wake socketpairs are how "one socketpair carries a duplex pair of rings" is realised
//! without a shared wake channel: a Producer and a Consumer used on different threads each own
//! their wake end, so neither can consume the other's wake bytes, and `POLLHUP` on either means
//! the peer process is gone.

use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;

use sp_core::{Channel, End, Message, RecvTimeoutError, SocketKind, SpawnOptions};

use crate::config::Config;
use crate::error::{Error, RefuseReason, Result};
use crate::layout::{self, CTRL_SIZE};
use crate::ring::{Consumer, Producer};
use crate::setup::{RingOffer, accept_consumer, create_producer};

/// First 8 bytes of an OFFER message.
pub const OFFER_MAGIC: [u8; 8] = *b"SPSHMOFR";
/// First 8 bytes of a READY message.
pub const READY_MAGIC: [u8; 8] = *b"SPSHMRDY";
/// Length of an OFFER message in bytes.
pub const OFFER_LEN: usize = 40;
/// Length of a READY message in bytes.
pub const READY_LEN: usize = 16;
/// The status a READY carries when the refusal was not a protocol check (out of memory, say).
pub(crate) const STATUS_LOCAL_ERROR: u32 = 0xFFFF;

/// Both directions between two processes: the ring this side produces into, the ring it
/// consumes from, and the control channel that set them up.
///
/// # Examples
/// ```
/// let (a, b) = sp_core::Channel::pair(sp_core::SocketKind::SeqPacket)?;
/// let config = sp_shm::Config::new().capacity(64 << 10);
/// let peer = std::thread::spawn(move || sp_shm::Duplex::connect(b, &config));
/// let mut here = sp_shm::Duplex::connect(a, &sp_shm::Config::new())?;
/// let mut there = peer.join().unwrap()?;
/// here.producer().send(b"ping")?;
/// let mut buf = Vec::new();
/// there.consumer().recv_into(&mut buf)?;
/// assert_eq!(buf, b"ping");
/// # Ok::<(), sp_shm::Error>(())
/// ```
#[derive(Debug)]
pub struct Duplex {
    producer: Producer,
    consumer: Consumer,
    control: Channel,
}

impl Duplex {
    /// Runs the handshake over `channel` (any connected sp-core seqpacket or stream channel):
    /// offers this side's ring, accepts the peer's, exchanges READY.
    ///
    /// # Errors
    /// [`Error::Refused`] if the peer's offer fails a check (the peer is told why);
    /// [`Error::Rejected`] if the peer refused ours; [`Error::HandshakeTimedOut`] if a step takes longer
    /// than [`Config::handshake_timeout`]; [`Error::PeerGone`] if the peer closed the socket.
    pub fn connect(channel: Channel, config: &Config) -> Result<Self> {
        Self::connect_with_greeting(channel, config, None)
    }

    /// As [`Self::connect`], and sends `greeting` (one message without descriptors, for the
    /// layer above) right after this side's READY, before waiting for the peer's READY: a layer
    /// whose first step is to send spares the peer one wait. A peer that refused this side's OFFER
    /// never reads it.
    ///
    /// # Errors
    /// As [`Self::connect`].
    pub fn connect_with_greeting(
        mut channel: Channel,
        config: &Config,
        greeting: Option<&[u8]>,
    ) -> Result<Self> {
        let producer = Self::offer(&mut channel, config)?;
        Self::complete(channel, producer, config, greeting)
    }

    /// The first half of [`Self::connect`]: creates this side's ring and sends its OFFER.
    fn offer(channel: &mut Channel, config: &Config) -> Result<Producer> {
        let (producer, offer) = create_producer(config)?;
        channel.send(
            &encode_offer(&offer),
            &[offer.ctrl.as_fd(), offer.data.as_fd(), offer.wake.as_fd()],
        )?;
        // Our copy of the peer's wake end must go now: POLLHUP means "peer gone" only when the
        // peer holds the last copy.
        drop(offer);
        Ok(producer)
    }

    /// The second half of [`Self::connect_with_greeting`]: accepts the peer's OFFER and exchanges
    /// READY (sending `greeting` after this side's).
    fn complete(
        mut channel: Channel,
        producer: Producer,
        config: &Config,
        greeting: Option<&[u8]>,
    ) -> Result<Self> {
        let msg = match channel.recv_timeout(config.handshake_timeout) {
            Ok(msg) => msg,
            Err(err) => {
                // The offer could not be received whole (descriptors dropped at our
                // RLIMIT_NOFILE, a wrong count, a bad frame, or no offer in time): refuse it like
                // any other, so the peer learns why rather than seeing only a hang-up.
                let status = match &err {
                    RecvTimeoutError::Broken(sp_core::Error::PeerGone) => None,
                    RecvTimeoutError::Broken(
                        sp_core::Error::FdCountMismatch { .. }
                        | sp_core::Error::FdsTruncated { .. },
                    ) => Some(RefuseReason::WrongFdCount.code()),
                    _ => Some(STATUS_LOCAL_ERROR),
                };
                if let Some(status) = status {
                    // Best effort: the peer may be gone already.
                    let _ = channel.send(&encode_ready(status), &[]);
                }
                return Err(handshake_error(err));
            }
        };
        let consumer = match decode_offer(msg).and_then(|offer| accept_consumer(offer, config)) {
            Ok(consumer) => consumer,
            Err(err) => {
                let status = match &err {
                    Error::Refused(why) => why.code(),
                    _ => STATUS_LOCAL_ERROR,
                };
                // Best effort: the peer may be gone already.
                let _ = channel.send(&encode_ready(status), &[]);
                return Err(err);
            }
        };
        // If the peer refused our offer it has sent its READY and closed, so our READY may find
        // the socket gone: read the peer's READY anyway, it says why.
        let sent = channel
            .send(&encode_ready(0), &[])
            .and_then(|()| match greeting {
                Some(greeting) => channel.send(greeting, &[]),
                None => Ok(()),
            });
        let reply = channel
            .recv_timeout(config.handshake_timeout)
            .map_err(handshake_error)?;
        match decode_ready(&reply)? {
            0 if sent.is_err() => Err(Error::PeerGone),
            0 => Ok(Self {
                producer,
                consumer,
                control: channel,
            }),
            code => Err(Error::Rejected(RefuseReason::from_code(code))),
        }
    }

    /// The ring this side writes.
    pub fn producer(&mut self) -> &mut Producer {
        &mut self.producer
    }

    /// The ring this side reads.
    pub fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// The control channel the rings were set up over (for blobs and application messages).
    pub fn control(&mut self) -> &mut Channel {
        &mut self.control
    }

    /// Splits into parts that can move to different threads.
    pub fn into_parts(self) -> (Producer, Consumer, Channel) {
        (self.producer, self.consumer, self.control)
    }
}

/// `socketpair(2)` + a child (through [`sp_core::spawn_with`], so `opts` decides whether the end
/// is inherited or handed over after exec): starts `cmd` as a child holding the other end of a
/// fresh seqpacket pair and runs the handshake with it (the child calls [`adopt`]). This side's
/// OFFER is sent before the child starts and waits in the socket meanwhile.
///
/// The parent's copy of the child's end is closed before the handshake, so the child's death is
/// seen as `PeerGone`. If the handshake fails the child is killed and reaped.
///
/// # Errors
/// As `Command::spawn` and [`Duplex::connect`].
///
/// # Examples
/// ```no_run
/// use sp_core::{Signal, SpawnOptions};
/// let opts = SpawnOptions::new().parent_death_signal(Signal::KILL);
/// let config = sp_shm::Config::new();
/// let (mut child, mut duplex) =
///     sp_shm::spawn(&mut std::process::Command::new("my-worker"), opts, &config)?;
/// duplex.producer().send(b"work")?;
/// drop(duplex);
/// child.wait()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spawn(
    cmd: &mut Command,
    opts: SpawnOptions,
    config: &Config,
) -> Result<(sp_core::Child, Duplex)> {
    spawn_with_greeting(cmd, opts, config, None)
}

/// [`spawn`], sending `greeting` as [`Duplex::connect_with_greeting`] does.
///
/// # Errors
/// As [`spawn`].
pub fn spawn_with_greeting(
    cmd: &mut Command,
    opts: SpawnOptions,
    config: &Config,
    greeting: Option<&[u8]>,
) -> Result<(sp_core::Child, Duplex)> {
    let (ours, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    let mut channel = Channel::new(ours)?;
    // The OFFER waits in the socket while the child starts: the ring's set-up is off the path
    // from spawning to the child's first record.
    let producer = Duplex::offer(&mut channel, config)?;
    let mut child = sp_core::spawn_with(cmd, theirs, opts)?;
    match Duplex::complete(channel, producer, config, greeting) {
        Ok(duplex) => Ok((child, duplex)),
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(err)
        }
    }
}

/// In a child started by [`spawn`]: adopts the inherited socket and runs the handshake.
///
/// # Errors
/// As [`sp_core::adopt`] and [`Duplex::connect`].
pub fn adopt(config: &Config) -> Result<Duplex> {
    adopt_with_greeting(config, None)
}

/// [`adopt`], sending `greeting` as [`Duplex::connect_with_greeting`] does.
///
/// # Errors
/// As [`adopt`].
pub fn adopt_with_greeting(config: &Config, greeting: Option<&[u8]>) -> Result<Duplex> {
    let end = sp_core::adopt()?;
    Duplex::connect_with_greeting(Channel::new(end)?, config, greeting)
}

pub(crate) fn encode_offer(offer: &RingOffer) -> [u8; OFFER_LEN] {
    let mut out = [0u8; OFFER_LEN];
    out[0..8].copy_from_slice(&OFFER_MAGIC);
    out[8..12].copy_from_slice(&layout::VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&layout::LAYOUT.to_le_bytes());
    out[16..24].copy_from_slice(&offer.capacity.to_le_bytes());
    out[24..32].copy_from_slice(&offer.max_payload.to_le_bytes());
    out[32..40].copy_from_slice(&(CTRL_SIZE as u64).to_le_bytes());
    out
}

/// Parses an OFFER; the descriptors are closed on any error.
pub(crate) fn decode_offer(msg: Message) -> Result<RingOffer> {
    let Message { bytes, fds } = msg;
    let refuse = |why| Err(Error::Refused(why));
    let Ok(bytes) = <[u8; OFFER_LEN]>::try_from(bytes.as_slice()) else {
        return refuse(RefuseReason::BadMagic);
    };
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    if bytes[0..8] != OFFER_MAGIC {
        return refuse(RefuseReason::BadMagic);
    }
    if u32_at(8) != layout::VERSION {
        return refuse(RefuseReason::BadVersion);
    }
    if u32_at(12) != layout::LAYOUT || u64_at(32) != CTRL_SIZE as u64 {
        return refuse(RefuseReason::BadLayout);
    }
    let Ok::<[OwnedFd; 3], _>([ctrl, data, wake]) = fds.try_into() else {
        return refuse(RefuseReason::WrongFdCount);
    };
    Ok(RingOffer {
        ctrl,
        data,
        wake: End::from(wake),
        capacity: u64_at(16),
        max_payload: u64_at(24),
    })
}

/// A handshake step that did not arrive in time is [`Error::HandshakeTimedOut`].
pub(crate) fn handshake_error(err: RecvTimeoutError) -> Error {
    match err {
        RecvTimeoutError::Timeout => Error::HandshakeTimedOut,
        RecvTimeoutError::Broken(err) => err.into(),
    }
}

pub(crate) fn encode_ready(status: u32) -> [u8; READY_LEN] {
    let mut out = [0u8; READY_LEN];
    out[0..8].copy_from_slice(&READY_MAGIC);
    out[8..12].copy_from_slice(&status.to_le_bytes());
    out
}

pub(crate) fn decode_ready(msg: &Message) -> Result<u32> {
    if msg.bytes.len() != READY_LEN || msg.bytes[0..8] != READY_MAGIC || !msg.fds.is_empty() {
        return Err(Error::Rejected(RefuseReason::BadMagic));
    }
    let mut status = [0u8; 4];
    status.copy_from_slice(&msg.bytes[8..12]);
    Ok(u32::from_le_bytes(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_msg(bytes: &[u8], n_fds: usize) -> Message {
        let fds = (0..n_fds)
            .map(|_| crate::region::create_memfd("t", 4096, false).unwrap())
            .collect();
        Message {
            bytes: bytes.to_vec(),
            fds,
        }
    }

    #[test]
    fn offer_checks_magic_version_layout_and_fd_count() {
        let (_, offer) = create_producer(&Config::new().capacity(4096).max_payload(512)).unwrap();
        let good = encode_offer(&offer);
        assert!(decode_offer(offer_msg(&good, 3)).is_ok());
        let check =
            |bytes: &[u8], n_fds, want: RefuseReason| match decode_offer(offer_msg(bytes, n_fds)) {
                Err(Error::Refused(why)) => assert_eq!(why, want),
                other => panic!("expected {want:?}, got {other:?}"),
            };
        check(&good[..39], 3, RefuseReason::BadMagic);
        let mut bad = good;
        bad[0] = b'X';
        check(&bad, 3, RefuseReason::BadMagic);
        for version in [1, 3] {
            // Version 1 (tail-index publication) and a future version are both refused.
            let mut bad = good;
            bad[8] = version;
            check(&bad, 3, RefuseReason::BadVersion);
        }
        let mut bad = good;
        bad[12] = 64;
        check(&bad, 3, RefuseReason::BadLayout);
        check(&good, 2, RefuseReason::WrongFdCount);
        check(&good, 4, RefuseReason::WrongFdCount);
    }

    #[test]
    fn connect_over_a_stream_pair() {
        let (a, b) = Channel::pair(SocketKind::Stream).unwrap();
        let config = Config::new().capacity(8192);
        let peer = std::thread::spawn(move || Duplex::connect(b, &Config::new()));
        let mut here = Duplex::connect(a, &config).unwrap();
        let mut there = peer.join().unwrap().unwrap();
        assert_eq!(here.producer().capacity(), 8192);
        assert_eq!(there.consumer().capacity(), 8192);
        assert_eq!(there.producer().capacity(), 1 << 20);
        there.producer().send(b"pong").unwrap();
        assert_eq!(here.consumer().read().unwrap().to_vec(), b"pong");
        drop(there);
        assert!(matches!(here.consumer().read(), Err(Error::PeerGone)));
    }

    #[test]
    fn handshake_times_out_on_a_silent_peer() {
        let (a, _b) = Channel::pair(SocketKind::SeqPacket).unwrap();
        let config = Config::new().handshake_timeout(std::time::Duration::from_millis(20));
        assert!(matches!(
            Duplex::connect(a, &config),
            Err(Error::HandshakeTimedOut)
        ));
    }

    proptest::proptest! {
        /// Whatever bytes and however many descriptors arrive, the decoder returns an offer or
        /// `Refused`, never panics, and closes what it does not keep.
        #[test]
        fn offer_decoder_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            n_fds in 0usize..5,
            keep_magic: bool,
        ) {
            let mut bytes = bytes;
            if keep_magic && bytes.len() >= 8 {
                bytes[..8].copy_from_slice(&OFFER_MAGIC);
            }
            match decode_offer(offer_msg(&bytes, n_fds)) {
                Ok(_offer) => proptest::prop_assert_eq!(bytes.len(), OFFER_LEN),
                Err(Error::Refused(_)) => {}
                Err(err) => proptest::prop_assert!(false, "unexpected {}", err),
            }
        }
    }

    /// An OFFER frame that declares 3 descriptors but carries 2 fails in sp-core; the handshake
    /// still answers READY with the descriptor-count code before it gives up.
    #[test]
    fn offer_missing_descriptors_is_answered_with_ready() {
        let (raw, ours) = sp_core::pair(SocketKind::SeqPacket).unwrap();
        let mut frame = vec![0x50, 0x53, sp_core::FRAME_VERSION, 3];
        frame.extend_from_slice(&(OFFER_LEN as u32).to_le_bytes());
        frame.extend_from_slice(&[0; 8]);
        frame.extend_from_slice(&[0; OFFER_LEN]);
        let memfds: Vec<OwnedFd> = (0..2)
            .map(|_| crate::region::create_memfd("t", 4096, false).unwrap())
            .collect();
        let fds: Vec<_> = memfds.iter().map(AsFd::as_fd).collect();
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut cmsg = rustix::net::SendAncillaryBuffer::new(&mut space);
        assert!(cmsg.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(
            &raw,
            &[std::io::IoSlice::new(&frame)],
            &mut cmsg,
            rustix::net::SendFlags::NOSIGNAL,
        )
        .unwrap();
        let res = Duplex::connect(Channel::new(ours).unwrap(), &Config::new().capacity(4096));
        assert!(
            matches!(
                res,
                Err(Error::Channel(sp_core::Error::FdCountMismatch {
                    declared: 3,
                    received: 2
                }))
            ),
            "{res:?}"
        );
        let mut peer = Channel::new(raw).unwrap();
        assert_eq!(peer.recv().unwrap().fds.len(), 3);
        let ready = peer.recv().unwrap();
        assert_eq!(ready.bytes, encode_ready(RefuseReason::WrongFdCount.code()));
    }

    /// A peer offering a ring larger than this side accepts is refused before anything is mapped,
    /// and told why.
    #[test]
    fn offer_above_accepted_capacity_is_refused() {
        let (a, b) = sp_core::pair(SocketKind::SeqPacket).unwrap();
        let big = Config::new().capacity(1 << 20);
        let small = Config::new().capacity(4096).accept_capacity_up_to(64 << 10);
        let peer = std::thread::spawn(move || Duplex::connect(Channel::new(a).unwrap(), &big));
        let here = Duplex::connect(Channel::new(b).unwrap(), &small);
        assert!(
            matches!(here, Err(Error::Refused(RefuseReason::BadCapacity))),
            "{here:?}"
        );
        let there = peer.join().unwrap();
        assert!(
            matches!(there, Err(Error::Rejected(RefuseReason::BadCapacity))),
            "{there:?}"
        );
    }

    #[test]
    fn ready_round_trips() {
        let msg = Message {
            bytes: encode_ready(7).to_vec(),
            fds: Vec::new(),
        };
        assert_eq!(decode_ready(&msg).unwrap(), 7);
    }
}

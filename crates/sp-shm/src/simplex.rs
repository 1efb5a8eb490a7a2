//! Handing over one ring, one way: the producer offers it, the consumer accepts it, and the
//! OFFER and READY messages may travel through a third process that relays them.
//!
//! The duplex handshake (`handshake.rs`) makes each side offer the ring it produces into, so a
//! side that only reads must still create a ring of its own. This is the hand-over of a single
//! ring, in two messages with the duplex handshake's bytes (`docs/protocol.md`, "Handshake",
//! "One-way hand-over"):
//!
//! 1. The producer creates its ring ([`offer_ring`]): the data memfd is mapped read-write by the
//!    producer and then sealed `F_SEAL_FUTURE_WRITE`, so from this point on no other process can
//!    map it writable or `write(2)` to it, whoever holds the descriptor. It gets the OFFER as an
//!    sp-core [`Message`] (40 bytes and 3 descriptors) and a [`PendingProducer`].
//! 2. The OFFER travels over any sp-core channel: straight to the consumer, or to a parent that
//!    forwards it unchanged to a sibling and closes its own copies.
//! 3. The consumer checks it and attaches ([`accept_ring`]), exactly as the duplex handshake
//!    checks an offer, and answers a READY (status 0 or the code of the refusal), which travels
//!    back the same way.
//! 4. The producer reads the READY ([`PendingProducer::finish`]): its [`Producer`], or
//!    [`Error::Rejected`] with the consumer's reason.
//!
//! [`produce_over`] and [`consume_over`] run both steps of one side over a channel, with the
//! handshake's time limit.
//!
//! The wake socketpair's consumer end travels in the OFFER; the producer closes its copy as soon
//! as the OFFER is sent (dropping the message does that), and a relay must close its copy after
//! forwarding, because a hang-up is seen only when the last copy of the peer's end is closed.

use std::os::fd::AsFd;

use sp_core::{Channel, Message, RecvTimeoutError};

use crate::config::Config;
use crate::error::{Error, RefuseReason, Result};
use crate::handshake::{
    STATUS_LOCAL_ERROR, decode_offer, decode_ready, encode_offer, encode_ready, handshake_error,
};
use crate::ring::{Consumer, Producer};
use crate::setup::{accept_consumer, create_producer};

/// A ring this side produces into, offered and waiting for its consumer's READY.
///
/// The producer is complete, but nothing should be written before the consumer has accepted:
/// a refused ring is dropped by [`finish`](Self::finish).
#[derive(Debug)]
pub struct PendingProducer {
    producer: Producer,
}

impl PendingProducer {
    /// Reads the consumer's READY: the producer if it accepted the ring.
    ///
    /// # Errors
    /// [`Error::Rejected`] with the consumer's reason; [`Error::Rejected`] with
    /// [`RefuseReason::BadMagic`] for a message that is not a READY.
    pub fn finish(self, ready: &Message) -> Result<Producer> {
        match decode_ready(ready)? {
            0 => Ok(self.producer),
            code => Err(Error::Rejected(RefuseReason::from_code(code))),
        }
    }
}

/// `memfd_create(2)` + `mmap(2)` + `fcntl(F_ADD_SEALS)`: creates a ring to produce into and its
/// OFFER message (40 bytes and three descriptors: the control memfd, the data memfd, the
/// consumer's end of the wake socketpair).
///
/// Send the message over any sp-core channel and drop it (which closes this process's copies of
/// its descriptors); pass the consumer's READY to [`PendingProducer::finish`].
///
/// # Errors
/// [`Error::InvalidConfig`] for a bad geometry; [`Error::Os`] when memory or descriptors run out.
///
/// # Examples
/// ```
/// let config = sp_shm::Config::new().capacity(64 << 10);
/// let (pending, offer) = sp_shm::offer_ring(&config)?;
/// // ... the OFFER may travel through any number of processes ...
/// let (consumer, ready) = sp_shm::accept_ring(offer, &config);
/// let mut consumer = consumer?;
/// let mut producer = pending.finish(&ready)?;
/// producer.send(b"one way")?;
/// assert_eq!(consumer.read()?.to_vec(), b"one way");
/// # Ok::<(), sp_shm::Error>(())
/// ```
///
/// # References
/// [memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html),
/// [fcntl(2) file sealing](https://man7.org/linux/man-pages/man2/fcntl.2.html)
pub fn offer_ring(config: &Config) -> Result<(PendingProducer, Message)> {
    let (producer, offer) = create_producer(config)?;
    let bytes = encode_offer(&offer).to_vec();
    let fds = vec![offer.ctrl, offer.data, offer.wake.into()];
    Ok((PendingProducer { producer }, Message { bytes, fds }))
}

/// Checks an OFFER (length, magic, version, layout, geometry, exactly three descriptors, seals,
/// sizes, control block header, wake socket type) and attaches a consumer to the ring. Returns
/// the consumer, or why the offer was refused, together with the READY to send back either way
/// (status 0, or the refusal's code).
///
/// Every descriptor of the offer that is not kept is closed before this returns.
///
/// # Errors
/// [`Error::Refused`] for an offer that fails a check; [`Error::Os`] when mapping fails.
pub fn accept_ring(offer: Message, config: &Config) -> (Result<Consumer>, Message) {
    let res = decode_offer(offer).and_then(|offer| accept_consumer(offer, config));
    let status = match &res {
        Ok(_) => 0,
        Err(err) => refusal_status(err),
    };
    (res, ready_message(status))
}

/// The READY that refuses an OFFER which could not be received whole: code 6 (descriptor count)
/// when sp-core reports the frame's descriptors missing or truncated, the local-error code
/// otherwise. Send it back so the producer learns why, rather than seeing only a hang-up.
pub fn refusal_for(err: &sp_core::Error) -> Message {
    let status = match err {
        sp_core::Error::FdCountMismatch { .. } | sp_core::Error::FdsTruncated { .. } => {
            RefuseReason::WrongFdCount.code()
        }
        _ => STATUS_LOCAL_ERROR,
    };
    ready_message(status)
}

/// Offers a ring over `channel` and waits for the READY, each step within
/// [`Config::handshake_timeout`]. The channel may lead to the consumer or to a process that
/// relays the messages to it.
///
/// # Errors
/// As [`offer_ring`] and [`PendingProducer::finish`]; [`Error::HandshakeTimedOut`] if no READY
/// came in time; [`Error::PeerGone`] if the channel closed.
pub fn produce_over(channel: &mut Channel, config: &Config) -> Result<Producer> {
    let (pending, offer) = offer_ring(config)?;
    let fds: Vec<_> = offer.fds.iter().map(AsFd::as_fd).collect();
    channel.send(&offer.bytes, &fds)?;
    drop(fds);
    // Our copy of the consumer's wake end must go now (see the module docs).
    drop(offer);
    let ready = channel
        .recv_timeout(config.handshake_timeout)
        .map_err(handshake_error)?;
    pending.finish(&ready)
}

/// Receives an OFFER over `channel` (within [`Config::handshake_timeout`]), accepts it and
/// answers READY; an offer that fails a check, or that cannot be received whole, is answered
/// with the refusal's code.
///
/// # Errors
/// As [`accept_ring`]; [`Error::HandshakeTimedOut`] if no OFFER came in time; [`Error::Channel`]
/// with sp-core's error when the offer could not be received whole.
pub fn consume_over(channel: &mut Channel, config: &Config) -> Result<Consumer> {
    let offer = match channel.recv_timeout(config.handshake_timeout) {
        Ok(offer) => offer,
        Err(err) => {
            match &err {
                RecvTimeoutError::Broken(sp_core::Error::PeerGone) => {}
                RecvTimeoutError::Broken(err) => {
                    // Best effort: the producer may be gone already.
                    let _ = channel.send(&refusal_for(err).bytes, &[]);
                }
                RecvTimeoutError::Timeout => {
                    let _ = channel.send(&ready_message(STATUS_LOCAL_ERROR).bytes, &[]);
                }
            }
            return Err(handshake_error(err));
        }
    };
    let (res, ready) = accept_ring(offer, config);
    let sent = channel.send(&ready.bytes, &[]);
    let consumer = res?;
    sent?;
    Ok(consumer)
}

/// The READY status for an offer that `accept_ring` could not accept.
fn refusal_status(err: &Error) -> u32 {
    match err {
        Error::Refused(why) => why.code(),
        _ => STATUS_LOCAL_ERROR,
    }
}

fn ready_message(status: u32) -> Message {
    Message {
        bytes: encode_ready(status).to_vec(),
        fds: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use sp_core::SocketKind;

    use super::*;
    use crate::handshake::READY_LEN;

    fn config() -> Config {
        Config::new().capacity(16 << 10)
    }

    #[test]
    fn offer_accept_finish_moves_records_one_way() {
        let (pending, offer) = offer_ring(&config()).unwrap();
        assert_eq!(offer.fds.len(), 3);
        let (consumer, ready) = accept_ring(offer, &Config::new());
        let mut consumer = consumer.unwrap();
        assert_eq!(decode_ready(&ready).unwrap(), 0);
        let mut producer = pending.finish(&ready).unwrap();
        for i in 0u32..1000 {
            producer.send(&i.to_le_bytes()).unwrap();
            assert_eq!(consumer.read().unwrap().to_vec(), i.to_le_bytes());
        }
        drop(producer);
        assert!(matches!(consumer.read(), Err(Error::PeerGone)));
    }

    /// A refused offer is answered with the reason's code, and the producer learns it.
    #[test]
    fn a_refusal_travels_back_in_the_ready() {
        let (pending, offer) = offer_ring(&Config::new().capacity(1 << 20)).unwrap();
        let small = Config::new().accept_capacity_up_to(64 << 10);
        let (consumer, ready) = accept_ring(offer, &small);
        assert!(matches!(
            consumer,
            Err(Error::Refused(RefuseReason::BadCapacity))
        ));
        assert!(matches!(
            pending.finish(&ready),
            Err(Error::Rejected(RefuseReason::BadCapacity))
        ));
    }

    #[test]
    fn an_offer_with_a_descriptor_missing_is_refused_and_closed() {
        let (_pending, mut offer) = offer_ring(&config()).unwrap();
        let dropped: OwnedFd = offer.fds.pop().unwrap();
        drop(dropped);
        let (consumer, ready) = accept_ring(offer, &config());
        assert!(matches!(
            consumer,
            Err(Error::Refused(RefuseReason::WrongFdCount))
        ));
        assert_eq!(
            decode_ready(&ready).unwrap(),
            RefuseReason::WrongFdCount.code()
        );
    }

    #[test]
    fn a_message_that_is_not_a_ready_is_rejected() {
        let (pending, _offer) = offer_ring(&config()).unwrap();
        let not_ready = Message {
            bytes: vec![0; READY_LEN],
            fds: Vec::new(),
        };
        assert!(matches!(
            pending.finish(&not_ready),
            Err(Error::Rejected(RefuseReason::BadMagic))
        ));
    }

    /// The OFFER and READY pass through a relay (a third party holding two channels) unchanged;
    /// the relay drops its copies, so the consumer still sees the producer's hang-up.
    #[test]
    fn produce_and_consume_through_a_relay() {
        let (mut producer_end, mut relay_a) = Channel::pair(SocketKind::SeqPacket).unwrap();
        let (mut relay_b, mut consumer_end) = Channel::pair(SocketKind::SeqPacket).unwrap();
        let producer = std::thread::spawn(move || produce_over(&mut producer_end, &config()));
        let consumer = std::thread::spawn(move || consume_over(&mut consumer_end, &config()));
        let offer = relay_a.recv().unwrap();
        let fds: Vec<_> = offer.fds.iter().map(AsFd::as_fd).collect();
        relay_b.send(&offer.bytes, &fds).unwrap();
        drop(fds);
        drop(offer);
        let ready = relay_b.recv().unwrap();
        relay_a.send(&ready.bytes, &[]).unwrap();
        let mut producer = producer.join().unwrap().unwrap();
        let mut consumer = consumer.join().unwrap().unwrap();
        producer.send(b"relayed").unwrap();
        assert_eq!(consumer.read().unwrap().to_vec(), b"relayed");
        drop(producer);
        assert!(matches!(consumer.read(), Err(Error::PeerGone)));
    }

    #[test]
    fn consume_over_times_out_and_says_so() {
        let (mut a, mut b) = Channel::pair(SocketKind::SeqPacket).unwrap();
        let config = config().handshake_timeout(std::time::Duration::from_millis(20));
        assert!(matches!(
            consume_over(&mut a, &config),
            Err(Error::HandshakeTimedOut)
        ));
        let ready = b.recv().unwrap();
        assert_eq!(decode_ready(&ready).unwrap(), STATUS_LOCAL_ERROR);
    }
}

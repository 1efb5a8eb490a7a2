//! The publishing gateway: a local [`sp::Receiver`]'s records, as they are, into zenoh samples
//! on a key.
//!
//! # The loop
//!
//! 1. Wait (at most [`Options::connect_timeout`]) until exactly one subscribing gateway's token
//!    is alive on the key, its encoding agrees with `T`'s, and zenoh reports the publisher as
//!    matched. Nothing is sent before: a sample without a subscriber would be dropped.
//! 2. Take a record from the ring ([`sp::Receiver::recv_encoded_timeout`]), then every record
//!    already waiting, up to [`Options::batch_bytes`]; a record with descriptors or over
//!    [`Options::max_value_len`] ends the gateway with [`Error::CannotCross`], after the records
//!    before it were sent and before anything of it was.
//! 3. Put them in one sample with `CongestionControl::Block`: when the remote is slow, zenoh's
//!    queue fills, `put` blocks, the ring fills and the local producer blocks. Memory stays
//!    bounded by the ring, zenoh's queue and the socket buffers.
//! 4. When the local producer ends (`PeerGone` after its last record), put an END sample and
//!    wait until the subscriber confirms it (its `Done` token: everything is in its local ring)
//!    or disappears. When this side fails (a refused value, a broken local channel), the same
//!    with an ABORT sample, so that the subscriber delivers every record before it and ends
//!    with [`Error::RemoteFailed`].
//!
//! Between records, and every [`CHECK_PERIOD`] while the ring is idle, the loop looks at the
//! remote's token; a lost remote ends the gateway or, with [`OnLoss::Resume`], waits for a new
//! one and goes on (the sample in hand is sent to the new one, flagged FIRST).
//!
//! # Handover
//!
//! A second subscriber's token while the current one's is alive is
//! [`Violation::SecondRemote`] at once, unless the caller asked for [`OnLoss::Resume`]: then it
//! may be the restarted remote, which zenoh can report before it reports the old one gone (the
//! old connection is still being torn down, or the old host is silent and its lease runs). The
//! gateway then sends nothing, since every sample on the key reaches both, and waits at most
//! [`Options::handover`] for one of the two tokens to go. The old one going is a loss, resumed
//! as above; the new one going leaves things as they were; both staying is `SecondRemote`. A
//! token that is gone is never a second remote: the current one's loss and a new one's arrival
//! between two looks is a loss (`RemoteGone`, or a resume), whichever zenoh reported first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sp::{RecvTimeoutError, TryRecvError, Value};
use zenoh::Wait;
use zenoh::qos::CongestionControl;

use crate::error::{Error, Refusal, Result, Violation};
use crate::gateway::{CHECK_PERIOD, Counters, Gateway, Halt, random_id};
use crate::options::{OnLoss, Options};
use crate::watch::{Tokens, Watch, earliest};
use crate::wire::{
    self, FLAG_FIRST, HEADER_LEN, Header, KIND_ABORT, KIND_END, KIND_RECORDS, LEN_PREFIX, Role,
};

/// Starts a gateway that publishes every value `rx` receives on `key`, for one subscribing
/// gateway ([`subscribe`](crate::subscribe)) on the same key, wherever it is.
///
/// The bytes on the wire are each value's sp encoding, as the ring held it (a value that came
/// as a blob is sent as its bytes); nothing is decoded or encoded again. A value sent with
/// descriptors cannot cross: the gateway ends with [`Error::CannotCross`] before anything of it
/// is sent. When the local sender is dropped (and everything it sent has been published), the
/// gateway sends the end of the stream and ends once the subscriber has it.
///
/// # Errors
/// [`Error::Zenoh`] if `key` is not a plain key expression (no wildcards) or a declaration
/// fails. Errors of the running gateway come from [`Gateway::join`].
///
/// # Examples
/// ```no_run
/// let session = zenoh::open(sp_zenoh::peer_config(&[], &["tcp/10.0.0.2:7447"])?)
///     .wait()?;
/// # use zenoh::Wait;
/// let (mut tx, rx) = sp::channel::<String>(&sp::Config::new())?;
/// let gateway = sp_zenoh::publish(&session, "demo/lines", rx, &sp_zenoh::Options::new())?;
/// tx.send(&"to another host".to_string())?;
/// drop(tx); // the end of the stream
/// gateway.join()?;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
pub fn publish<T: Value + 'static>(
    session: &zenoh::Session,
    key: &str,
    rx: sp::Receiver<T>,
    options: &Options,
) -> Result<Gateway> {
    publish_with(session, key, rx, options, || true)
}

/// As [`publish`], asking `clean_end` whether the stream ended cleanly when `rx` reports its
/// sender gone (after every record it sent was published): `true` sends the END, `false` an
/// ABORT, which the subscriber reports as [`Error::RemoteFailed`] after delivering every record
/// before it. For a relay that learns elsewhere whether its source failed (a pipeline stage asks
/// the parent: [`sp::pipeline::Stage::input_ended`]).
///
/// # Errors
/// As [`publish`].
pub fn publish_with<T: Value + 'static>(
    session: &zenoh::Session,
    key: &str,
    rx: sp::Receiver<T>,
    options: &Options,
    clean_end: impl FnOnce() -> bool + Send + 'static,
) -> Result<Gateway> {
    check_key(key)?;
    let watch = Arc::new(Watch::default());
    let epoch = random_id();
    let encoding = wire::encoding_chunk(T::ENCODING);
    let publisher = session
        .declare_publisher(key.to_owned())
        .congestion_control(CongestionControl::Block)
        .wait()?;
    let matched = publisher.matching_status().wait()?.matching();
    watch.update(|seen| seen.matched |= matched);
    let on_match = Arc::clone(&watch);
    let matching = publisher
        .matching_listener()
        .callback(move |status| on_match.update(|seen| seen.matched = status.matching()))
        .wait()?;
    let tokens = watch.declare(session, key, (Role::Pub, epoch, &encoding), Role::Sub)?;
    let mut outbound = Outbound {
        key: key.to_owned(),
        rx,
        _matching: matching,
        publisher,
        _tokens: tokens,
        watch: Arc::clone(&watch),
        epoch,
        encoding,
        options: options.clone(),
        clean_end: Some(Box::new(clean_end)),
        seq: 0,
        counters: Counters::default(),
        remote: None,
        generation: 0,
        first: true,
    };
    Gateway::start(key, watch, move || {
        let res = outbound.run();
        let summary = outbound.counters.summary();
        match res {
            Ok(()) | Err(Halt::Stop) => Ok(summary),
            Err(Halt::Fail(err)) => Err(err),
        }
    })
}

/// Refuses a key that zenoh cannot parse or that is not a single key (a gateway connects one
/// publisher to one subscriber, and its tokens live under the key).
pub(crate) fn check_key(key: &str) -> Result<()> {
    let parsed = zenoh::key_expr::KeyExpr::try_from(key)?;
    if parsed.is_wild() || key.split('/').any(|chunk| chunk == "_sp") {
        return Err(Error::Zenoh(
            format!("{key}: a gateway needs a key without wildcards or `_sp` chunks").into(),
        ));
    }
    Ok(())
}

struct Outbound<T> {
    key: String,
    rx: sp::Receiver<T>,
    /// Declared on `publisher`, so dropped before it.
    _matching: zenoh::matching::MatchingListener<()>,
    publisher: zenoh::pubsub::Publisher<'static>,
    _tokens: Tokens,
    watch: Arc<Watch>,
    epoch: u32,
    encoding: String,
    options: Options,
    /// Asked once, at the local end, whether it is a clean one.
    clean_end: Option<Box<dyn FnOnce() -> bool + Send>>,
    /// The sequence number of the next record.
    seq: u64,
    counters: Counters,
    /// The subscribing gateway's token id, once found.
    remote: Option<u32>,
    /// The [`Watch::generation`] last looked at.
    generation: u64,
    /// The next sample is the first to this remote.
    first: bool,
}

/// What [`Outbound::find_remote`] saw.
enum Found {
    /// Exactly one subscriber, ready: its token id.
    One(u32),
    /// Two subscribers at once.
    Two,
}

/// A sample being filled: the header's room, then length-prefixed records.
struct Batch {
    bytes: Vec<u8>,
    n_records: u16,
}

impl Batch {
    fn new() -> Self {
        Self {
            bytes: vec![0; HEADER_LEN],
            n_records: 0,
        }
    }

    /// Adds a record unless it cannot cross; the descriptors are closed either way.
    fn push(
        &mut self,
        bytes: &[u8],
        fds: Vec<std::os::fd::OwnedFd>,
        max: usize,
    ) -> Result<(), Refusal> {
        if !fds.is_empty() {
            return Err(Refusal::Descriptors { n_fds: fds.len() });
        }
        if bytes.len() > max || u32::try_from(bytes.len()).is_err() {
            return Err(Refusal::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        self.bytes.reserve(LEN_PREFIX + bytes.len());
        self.bytes
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(bytes);
        self.n_records += 1;
        Ok(())
    }

    fn has_room(&self, batch_bytes: usize) -> bool {
        self.n_records < u16::MAX && self.bytes.len() - HEADER_LEN < batch_bytes
    }

    fn record_bytes(&self) -> u64 {
        (self.bytes.len() - HEADER_LEN - LEN_PREFIX * usize::from(self.n_records)) as u64
    }
}

impl<T: Value> Outbound<T> {
    fn run(&mut self) -> Result<(), Halt> {
        self.find_remote(self.options.connect_timeout)?;
        match self.forward() {
            Ok(()) => {
                let clean = self.clean_end.take().is_none_or(|clean_end| clean_end());
                self.finish(if clean { KIND_END } else { KIND_ABORT })
            }
            Err(Halt::Fail(err @ (Error::CannotCross(_) | Error::Local(_)))) => {
                // This side failed, the remote did not: tell it, after everything sent before.
                self.finish(KIND_ABORT)?;
                Err(err.into())
            }
            Err(halt) => Err(halt),
        }
    }

    /// Forwards records until the local producer ends (`Ok`) or something fails.
    fn forward(&mut self) -> Result<(), Halt> {
        loop {
            self.check_remote()?;
            let mut batch = Batch::new();
            let max = self.options.max_value_len;
            let taken = self
                .rx
                .recv_encoded_timeout(|bytes, fds| batch.push(bytes, fds, max), CHECK_PERIOD);
            match taken {
                Ok(Ok(())) => {}
                Ok(Err(refusal)) => return Err(Error::CannotCross(refusal).into()),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Broken(sp::Error::PeerGone)) => return Ok(()),
                Err(RecvTimeoutError::Broken(err)) => return Err(Error::Local(err).into()),
            }
            let mut last = None;
            while batch.has_room(self.options.batch_bytes) {
                match self
                    .rx
                    .try_recv_encoded(|bytes, fds| batch.push(bytes, fds, max))
                {
                    Ok(Ok(())) => {}
                    Ok(Err(refusal)) => {
                        last = Some(Err(Error::CannotCross(refusal).into()));
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Broken(sp::Error::PeerGone)) => {
                        last = Some(Ok(()));
                        break;
                    }
                    Err(TryRecvError::Broken(err)) => {
                        last = Some(Err(Error::Local(err).into()));
                        break;
                    }
                }
            }
            self.put_records(batch)?;
            if let Some(last) = last {
                return last;
            }
        }
    }

    /// Puts one sample of records, after making sure the remote is still there.
    fn put_records(&mut self, mut batch: Batch) -> Result<(), Halt> {
        self.check_remote()?;
        let header = Header {
            seq: self.seq,
            epoch: self.epoch,
            kind: KIND_RECORDS,
            flags: if self.first { FLAG_FIRST } else { 0 },
            n_records: batch.n_records,
        };
        header.encode(&mut batch.bytes[..HEADER_LEN]);
        let (n_records, n_bytes) = (u64::from(batch.n_records), batch.record_bytes());
        self.publisher.put(batch.bytes).wait()?;
        self.first = false;
        self.seq += n_records;
        self.counters.add_sample(n_records, n_bytes);
        Ok(())
    }

    /// Everything the local producer sent is published: the last sample (END, or ABORT if this
    /// side failed), then wait until the subscriber confirms it (or goes). The last sample goes
    /// in order after the records, on the data path; a token that went away could overtake them.
    fn finish(&mut self, kind: u8) -> Result<(), Halt> {
        loop {
            self.check_remote()?;
            let mut last = vec![0; HEADER_LEN];
            Header {
                seq: self.seq,
                epoch: self.epoch,
                kind,
                flags: if self.first { FLAG_FIRST } else { 0 },
                n_records: 0,
            }
            .encode(&mut last);
            self.publisher.put(last).wait()?;
            self.first = false;
            let (epoch, remote) = (self.epoch, self.remote);
            let confirmed = self.watch.wait_until(None, |seen| {
                if seen.done.contains(&epoch) {
                    Some(Ok(()))
                } else if seen.stop {
                    Some(Err(Halt::Stop))
                } else if remote.is_none_or(|id| !seen.alive.contains_key(&id)) {
                    // Lost before it confirmed: `check_remote` decides what that means.
                    Some(Ok(()))
                } else {
                    None
                }
            });
            if self.watch.lock().done.contains(&epoch) {
                return Ok(());
            }
            if let Some(Err(halt)) = confirmed {
                return Err(halt);
            }
        }
    }

    /// Looks at the remote's token if anything changed: a stop request, a second remote (a
    /// handover, with [`OnLoss::Resume`]), or the loss of this one (ended, or resumed from, per
    /// [`Options::on_loss`]).
    fn check_remote(&mut self) -> Result<(), Halt> {
        let generation = self.watch.generation();
        if generation == self.generation {
            return Ok(());
        }
        self.generation = generation;
        let second = {
            let seen = self.watch.lock();
            if seen.stop {
                return Err(Halt::Stop);
            }
            self.second_remote(&seen.alive)
        };
        if let Some(token) = second {
            self.hand_over(token)?;
        }
        let lost = {
            let seen = self.watch.lock();
            self.remote.is_none_or(|id| !seen.alive.contains_key(&id))
        };
        if !lost {
            return Ok(());
        }
        match self.options.on_loss {
            OnLoss::End => Err(Error::RemoteGone {
                key: self.key.clone(),
                records: self.counters.records(),
            }
            .into()),
            OnLoss::Resume { within } => {
                self.counters.add_resume();
                self.remote = None;
                self.find_remote(within)
            }
        }
    }

    /// A second subscriber's token (`token`) is alive beside this gateway's remote. With
    /// [`OnLoss::End`] that is [`Violation::SecondRemote`]. With [`OnLoss::Resume`] it may be a
    /// restarted remote that zenoh reports before the old one's loss: nothing is sent (a sample
    /// would reach both) until one of the two goes, within [`Options::handover`]; `Ok` once
    /// only one is left (the caller then sees whether it is the old one).
    fn hand_over(&mut self, token: String) -> Result<(), Halt> {
        let Some(grace) = self.options.handover_grace() else {
            return Err(Error::Protocol(Violation::SecondRemote { token }).into());
        };
        let deadline = Instant::now().checked_add(grace);
        let outcome = self.watch.wait_until(deadline, |seen| {
            if seen.stop {
                Some(Err(Halt::Stop))
            } else if self.second_remote(&seen.alive).is_none() {
                Some(Ok(()))
            } else {
                None
            }
        });
        self.generation = self.watch.generation();
        match outcome {
            Some(res) => res,
            None => {
                let token = self
                    .second_remote(&self.watch.lock().alive)
                    .unwrap_or(token);
                Err(Error::Protocol(Violation::SecondRemote { token }).into())
            }
        }
    }

    /// The token of a subscribing gateway other than the one this gateway sends to, while that
    /// one is alive (once it is gone, a new one is a loss and a new remote, not a second one),
    /// or, before it has one, of the second of two; `None` if there is none.
    fn second_remote(&self, alive: &BTreeMap<u32, String>) -> Option<String> {
        let mut others = alive.iter().filter(|(id, _)| Some(**id) != self.remote);
        let (id, encoding) = match self.remote {
            Some(current) if !alive.contains_key(&current) => return None,
            Some(_) => others.next()?,
            None if alive.len() > 1 => others.nth(1)?,
            None => return None,
        };
        Some(wire::token_key(&self.key, Role::Sub, *id, encoding))
    }

    /// Waits at most `timeout` for exactly one subscribing gateway with an agreeing encoding,
    /// matched by zenoh. Two subscribers end it with [`Violation::SecondRemote`] at once, or
    /// with [`OnLoss::Resume`] once two have been alive for [`Options::handover`] (one may be
    /// the stale token of a gateway that ended or died, about to go).
    fn find_remote(&mut self, timeout: Duration) -> Result<(), Halt> {
        let deadline = Instant::now().checked_add(timeout);
        let grace = self.options.handover_grace();
        let ours = self.encoding.clone();
        // When two subscribers were first seen together (reset when fewer are).
        let mut two_since: Option<Instant> = None;
        let id = loop {
            let until = two_since.map_or(deadline, |since| {
                earliest(deadline, grace.and_then(|grace| since.checked_add(grace)))
            });
            let waiting_out_two = two_since.is_some();
            let found = self.watch.wait_until(until, |seen| {
                if seen.stop {
                    return Some(Err(Halt::Stop));
                }
                if let Some(token) = self.second_remote(&seen.alive) {
                    return match grace {
                        None => Some(Err(
                            Error::Protocol(Violation::SecondRemote { token }).into()
                        )),
                        Some(_) if waiting_out_two => None,
                        Some(_) => Some(Ok(Found::Two)),
                    };
                }
                let (id, theirs) = seen.alive.iter().next()?;
                if !wire::encodings_agree(&ours, theirs) {
                    let theirs = theirs.clone();
                    return Some(Err(Error::Protocol(Violation::Encoding {
                        ours: ours.clone(),
                        theirs,
                    })
                    .into()));
                }
                seen.matched.then_some(Ok(Found::One(*id)))
            });
            match found {
                Some(Ok(Found::One(id))) => break id,
                Some(Ok(Found::Two)) => two_since = Some(Instant::now()),
                Some(Err(halt)) => return Err(halt),
                None => {
                    // A deadline passed: the handover grace with two still alive, or the wait.
                    let second = self.second_remote(&self.watch.lock().alive);
                    match second {
                        Some(token) => {
                            return Err(Error::Protocol(Violation::SecondRemote { token }).into());
                        }
                        None if deadline.is_some_and(|d| Instant::now() >= d) => {
                            return Err(Error::NoRemote {
                                key: self.key.clone(),
                                waited: timeout,
                            }
                            .into());
                        }
                        None => two_since = None,
                    }
                }
            }
        };
        self.remote = Some(id);
        self.first = true;
        self.generation = self.watch.generation();
        Ok(())
    }
}

//! The subscribing gateway: zenoh samples on a key, checked and unpacked into a local
//! [`sp::Sender`], record by record, as they are.
//!
//! # Two paths
//!
//! - **Data**, on zenoh's receiving thread: a callback per sample checks the header (the
//!   stream's epoch, the sequence number: loss or duplication is a [`Violation::Sequence`]), and
//!   writes each record from zenoh's buffers straight into the local ring
//!   ([`sp::Sender::send_encoded_held_timeout`]: one copy, even of a sample that arrived in
//!   fragments), then wakes the local receiver once for the whole sample
//!   ([`sp::Sender::flush`]) rather than once per record. When the local ring is full the
//!   callback waits (waking the receiver first), so zenoh stops reading the connection and the
//!   publisher's `put` blocks: backpressure to the far producer, with nothing dropped and
//!   nothing queued without bound.
//!   The wait looks at a stop request every [`CHECK_PERIOD`].
//! - **Supervision**, on the gateway's thread: the publisher's token (encoding, appearance,
//!   loss), the end of the data path, the deadlines ([`Options::connect_timeout`], a resume's
//!   window, [`Options::linger`], a handover's grace).
//!
//! # Handover
//!
//! With [`OnLoss::Resume`], a restarted publisher's token and first sample can come before zenoh
//! reports the old publisher gone. The supervisor then waits at most [`Options::handover`] for
//! one of the two tokens to go (both staying is [`Violation::SecondRemote`]), and the data
//! callback holds the new stream's first sample as long (so zenoh stops reading that connection
//! and the new publisher's `put`s block): the old token going makes it a loss and a resume, the
//! new stream starting at its FIRST sample. With [`OnLoss::End`] either is refused at once. A
//! publisher whose stream a subscriber confirmed ended (its `done` token) is about to go: its
//! token is neither taken as the remote nor counted as a second one.
//!
//! A sample of a stream this gateway has not started, without FIRST and not at 0, was put before
//! its publisher found this gateway, for the subscriber it had then (every sample on the key
//! reaches every subscriber): it is not delivered. The publisher's FIRST sample to this gateway
//! follows it, under reliable delivery, and starts this gateway's share of the stream.
//!
//! When the gateway ends, for any reason, the local sender is dropped, so the local receiver
//! reads every record delivered and then `PeerGone`; [`Gateway::join`] says whether the stream
//! ended cleanly.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sp::{SendTimeoutError, Value};
use zenoh::Wait;
use zenoh::sample::Sample;

use crate::error::{Error, Result, Violation};
use crate::gateway::{CHECK_PERIOD, Counters, Gateway, Halt, random_id};
use crate::options::{OnLoss, Options};
use crate::publish::check_key;
use crate::watch::{DataEnd, Seen, Watch, earliest};
use crate::wire::{self, FLAG_FIRST, Header, KIND_ABORT, KIND_END, Records, Role, Source};

/// Starts a gateway that receives the values a publishing gateway ([`publish`](crate::publish))
/// sends on `key` and sends each into `tx`, as it came (the sp encoding, checked by the final
/// receiver when it decodes).
///
/// # Errors
/// [`Error::Zenoh`] if `key` is not a plain key expression or a declaration fails. Errors of
/// the running gateway come from [`Gateway::join`].
///
/// # Examples
/// ```no_run
/// # use zenoh::Wait;
/// let session = zenoh::open(sp_zenoh::peer_config(&["tcp/0.0.0.0:7447"], &[])?).wait()?;
/// let (tx, mut rx) = sp::channel::<String>(&sp::Config::new())?;
/// let gateway = sp_zenoh::subscribe(&session, "demo/lines", tx, &sp_zenoh::Options::new())?;
/// while let Ok(line) = rx.recv() {
///     println!("{line}");
/// }
/// gateway.join()?; // Ok: the publisher ended the stream
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
pub fn subscribe<T: Value + 'static>(
    session: &zenoh::Session,
    key: &str,
    tx: sp::Sender<T>,
    options: &Options,
) -> Result<Gateway> {
    check_key(key)?;
    let watch = Arc::new(Watch::default());
    let counters = Arc::new(Counters::default());
    let inbound = Arc::new(Mutex::new(Inbound {
        tx: Some(tx),
        stream: None,
        counters: Arc::clone(&counters),
        watch: Arc::clone(&watch),
        handover: options.handover_grace(),
    }));
    let data = Arc::clone(&inbound);
    // The data subscriber first, then the token: a publisher that sees the token (and zenoh's
    // match) sends nothing that this subscriber misses.
    let subscriber = session
        .declare_subscriber(key.to_owned())
        .callback(move |sample: Sample| on_sample(&data, &sample))
        .wait()?;
    let own_id = random_id();
    let encoding = wire::encoding_chunk(T::ENCODING);
    let tokens = match watch.declare(session, key, (Role::Sub, own_id, &encoding), Role::Pub) {
        Ok(tokens) => tokens,
        Err(err) => {
            drop(subscriber);
            close(&inbound);
            return Err(err);
        }
    };
    let mut supervisor = Supervisor {
        key: key.to_owned(),
        session: session.clone(),
        watch: Arc::clone(&watch),
        encoding,
        options: options.clone(),
        counters,
        current: None,
    };
    Gateway::start(key, watch, move || {
        let res = supervisor.run();
        // Whatever ended it: no sample is taken any more (one waiting for a handover gives up),
        // and the local receiver sees the end.
        supervisor.watch.update(|seen| seen.ended = true);
        drop(subscriber);
        close(&inbound);
        drop(tokens);
        let summary = supervisor.counters.summary();
        match res {
            Ok(()) | Err(Halt::Stop) => Ok(summary),
            Err(Halt::Fail(err)) => Err(err),
        }
    })
}

/// The data path's state, owned by the sample callback (the supervisor takes the sender at the
/// end).
struct Inbound<T> {
    /// `None` once the data path has ended.
    tx: Option<sp::Sender<T>>,
    /// The stream being received: its epoch and the next sequence number.
    stream: Option<(u32, u64)>,
    counters: Arc<Counters>,
    watch: Arc<Watch>,
    /// [`Options::handover_grace`]: how long a sample of a new stream waits for the current
    /// one's publisher to go.
    handover: Option<Duration>,
}

/// What one sample did to the data path.
enum Step {
    Continue,
    /// The END of this epoch's stream.
    Ended(u32),
    /// The ABORT of this epoch's stream.
    Aborted(u32),
    /// A stop request came while a record waited for room.
    Stopped,
}

fn lock<T>(inbound: &Mutex<Inbound<T>>) -> MutexGuard<'_, Inbound<T>> {
    // A panic inside `take_sample` leaves at worst a stream position that no longer matters:
    // the gateway ends on it anyway.
    inbound
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Drops the local sender (the local receiver reads the end after the last record).
fn close<T>(inbound: &Mutex<Inbound<T>>) {
    let tx = lock(inbound).tx.take();
    drop(tx);
}

/// zenoh's callback for every data sample on the key.
fn on_sample<T: Value>(inbound: &Mutex<Inbound<T>>, sample: &Sample) {
    let mut inbound = lock(inbound);
    if inbound.tx.is_none() {
        return;
    }
    let step = inbound.take_sample(sample.payload().reader());
    // The sample's records went in with their wake-ups held: one for all of them.
    let flushed = inbound.tx.as_mut().map_or(Ok(()), sp::Sender::flush);
    let step = match (step, flushed) {
        (Ok(_), Err(err)) => Err(Error::Local(err)),
        (step, _) => step,
    };
    let end = match step {
        Ok(Step::Continue) | Ok(Step::Stopped) => return,
        Ok(Step::Ended(epoch)) => DataEnd::Ended(epoch),
        Ok(Step::Aborted(epoch)) => DataEnd::Aborted(epoch),
        Err(err) => DataEnd::Failed(err),
    };
    inbound.tx = None;
    inbound.watch.update(|seen| seen.data_end = Some(end));
}

impl<T: Value> Inbound<T> {
    fn take_sample(&mut self, mut sample: impl Source) -> Result<Step> {
        let header = Header::decode(&mut sample).map_err(Error::Protocol)?;
        let first = header.flags & FLAG_FIRST != 0;
        let next = match self.stream {
            Some((epoch, next)) if epoch == header.epoch => {
                if first {
                    // The publisher lost this gateway and found it again: it goes on from
                    // where it is, and the records in between are gone.
                    header.seq
                } else {
                    next
                }
            }
            // A new stream starts with FIRST (or at 0). A sample of it without FIRST further on
            // was put before its publisher found this gateway, for the subscriber it had then
            // (it reaches every subscriber on the key): not this gateway's to deliver. The
            // publisher's FIRST sample to this gateway follows, and says where its share begins.
            _ if !first && header.seq != 0 => return Ok(Step::Continue),
            current => {
                if let Some((epoch, _)) = current
                    && !self.stream_gone(epoch)
                {
                    return Err(Error::Protocol(Violation::OtherStream {
                        current: epoch,
                        other: header.epoch,
                    }));
                }
                header.seq
            }
        };
        if header.seq != next {
            return Err(Error::Protocol(Violation::Sequence {
                expected: next,
                got: header.seq,
            }));
        }
        self.stream = Some((header.epoch, next));
        match header.kind {
            KIND_END => return Ok(Step::Ended(header.epoch)),
            KIND_ABORT => return Ok(Step::Aborted(header.epoch)),
            _ => {}
        }
        let mut records = Records::new(sample, header);
        let (mut n_records, mut n_bytes) = (0, 0);
        let res = loop {
            let Some(len) = records.next_len().map_err(Error::Protocol)? else {
                break Ok(Step::Continue);
            };
            if !self.deliver(len, &mut records)? {
                break Ok(Step::Stopped);
            }
            n_records += 1;
            n_bytes += len as u64;
            self.stream = Some((header.epoch, next + n_records));
        };
        self.counters.add_sample(n_records, n_bytes);
        res
    }

    /// Whether the publisher of the stream of `epoch` is gone. With [`OnLoss::Resume`], a new
    /// stream's first sample may come before zenoh reports the old publisher gone: it waits at
    /// most the handover grace for that (zenoh then stops reading the new publisher's
    /// connection, and its `put`s block).
    fn stream_gone(&self, epoch: u32) -> bool {
        if let Some(grace) = self.handover {
            self.watch
                .wait_until(Instant::now().checked_add(grace), |seen| {
                    (seen.stop || seen.ended || !seen.alive.contains_key(&epoch)).then_some(())
                });
        }
        !self.watch.lock().alive.contains_key(&epoch)
    }

    /// Sends the next record, `len` bytes, from `records` straight into the local ring (one
    /// copy), waiting for room; `false` if the gateway was asked to stop meanwhile. The local
    /// receiver is woken once the sample is in (`on_sample`), or by a wait for room.
    fn deliver(&mut self, len: usize, records: &mut Records<impl Source>) -> Result<bool> {
        let Some(tx) = self.tx.as_mut() else {
            return Ok(false);
        };
        loop {
            match tx.send_encoded_held_timeout(len, |slot| records.read(slot), CHECK_PERIOD) {
                Ok(()) => return Ok(true),
                Err(SendTimeoutError::Timeout) => {
                    if self.watch.lock().stop {
                        return Ok(false);
                    }
                }
                Err(SendTimeoutError::Broken(err)) => return Err(Error::Local(err)),
            }
        }
    }
}

/// The gateway's own thread: watches the publisher's token and the data path.
struct Supervisor {
    key: String,
    session: zenoh::Session,
    watch: Arc<Watch>,
    encoding: String,
    options: Options,
    counters: Arc<Counters>,
    /// The publisher whose stream this gateway receives (its epoch), once its token is seen.
    current: Option<u32>,
}

/// What the supervisor woke up for.
enum Event {
    Stop,
    Connected(u32),
    Lost,
    /// A second publisher's token (with [`OnLoss::Resume`]: perhaps a restarted publisher that
    /// zenoh reports before the old one's loss).
    Second(String),
    DataEnd(DataEnd),
    Refused(Violation),
}

impl Supervisor {
    fn run(&mut self) -> Result<(), Halt> {
        let grace = self.options.handover_grace();
        let mut window = self.options.connect_timeout;
        let mut deadline = Instant::now().checked_add(window);
        // With two publishers alive: until when the gateway waits for one of them to go (`None`
        // inside: no end, for a grace too long to add to the clock).
        let mut handover: Option<Option<Instant>> = None;
        loop {
            let current = self.current;
            let ours = &self.encoding;
            let key = &self.key;
            let waiting_out_two = handover.is_some();
            let until = handover.map_or(deadline, |end| earliest(deadline, end));
            let event = self.watch.wait_until(until, |seen| {
                if seen.stop {
                    return Some(Event::Stop);
                }
                if let Some(end) = seen.data_end.take() {
                    return Some(Event::DataEnd(end));
                }
                for theirs in seen.alive.values() {
                    if !wire::encodings_agree(ours, theirs) {
                        return Some(Event::Refused(Violation::Encoding {
                            ours: ours.clone(),
                            theirs: theirs.clone(),
                        }));
                    }
                }
                if current.is_some_and(|epoch| !seen.alive.contains_key(&epoch)) {
                    return Some(Event::Lost);
                }
                if let Some(token) = second_publisher(key, current, seen) {
                    return (!waiting_out_two).then_some(Event::Second(token));
                }
                match current {
                    Some(_) => None,
                    None => candidates(seen)
                        .next()
                        .map(|(epoch, _)| Event::Connected(epoch)),
                }
            });
            match event {
                None => {
                    // A deadline passed: the handover grace with two publishers still alive, or
                    // the wait for one.
                    if let Some(token) = second_publisher(key, current, &self.watch.lock()) {
                        return Err(Error::Protocol(Violation::SecondRemote { token }).into());
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::NoRemote {
                            key: self.key.clone(),
                            waited: window,
                        }
                        .into());
                    }
                    handover = None;
                }
                Some(Event::Stop) => return Err(Halt::Stop),
                Some(Event::Refused(violation)) => return Err(Error::Protocol(violation).into()),
                Some(Event::Second(token)) => match grace {
                    None => {
                        return Err(Error::Protocol(Violation::SecondRemote { token }).into());
                    }
                    Some(grace) => handover = Some(Instant::now().checked_add(grace)),
                },
                Some(Event::DataEnd(DataEnd::Ended(epoch))) => return self.confirm(epoch),
                Some(Event::DataEnd(DataEnd::Aborted(epoch))) => {
                    self.confirm(epoch)?;
                    return Err(Error::RemoteFailed {
                        key: self.key.clone(),
                        records: self.counters.records(),
                    }
                    .into());
                }
                Some(Event::DataEnd(DataEnd::Failed(err))) => return Err(err.into()),
                Some(Event::Connected(epoch)) => {
                    self.current = Some(epoch);
                    deadline = None;
                    handover = None;
                }
                Some(Event::Lost) => match self.options.on_loss {
                    OnLoss::End => {
                        return Err(Error::RemoteGone {
                            key: self.key.clone(),
                            records: self.counters.records(),
                        }
                        .into());
                    }
                    OnLoss::Resume { within } => {
                        self.counters.add_resume();
                        self.current = None;
                        window = within;
                        deadline = Instant::now().checked_add(within);
                        handover = None;
                    }
                },
            }
        }
    }

    /// The stream of `epoch` ended (END or ABORT) and everything in it was delivered (the local
    /// sender is already dropped): say so with a `Done` token, and linger until the publisher
    /// has seen it (its token goes) or [`Options::linger`] passes.
    fn confirm(&mut self, epoch: u32) -> Result<(), Halt> {
        let done = self
            .session
            .liveliness()
            .declare_token(wire::token_key(
                &self.key,
                Role::Done,
                epoch,
                &self.encoding,
            ))
            .wait()?;
        let deadline = Instant::now().checked_add(self.options.linger);
        self.watch.wait_until(deadline, |seen| {
            (seen.stop || !seen.alive.contains_key(&epoch)).then_some(())
        });
        drop(done);
        Ok(())
    }
}

/// The publishers this gateway may take as its remote: the alive ones, less those whose stream
/// a subscriber has confirmed ended (`done`): a publisher that ended is about to go, and its
/// token is not a new stream.
fn candidates(seen: &Seen) -> impl Iterator<Item = (u32, &String)> {
    seen.alive
        .iter()
        .filter(|(epoch, _)| !seen.done.contains(epoch))
        .map(|(epoch, encoding)| (*epoch, encoding))
}

/// The token of a publisher other than `current` (or, without one, of the second of two), if
/// any.
fn second_publisher(key: &str, current: Option<u32>, seen: &Seen) -> Option<String> {
    let mut others = candidates(seen).filter(|(epoch, _)| Some(*epoch) != current);
    let (epoch, encoding) = match current {
        Some(_) => others.next()?,
        None => others.nth(1)?,
    };
    Some(wire::token_key(key, Role::Pub, epoch, encoding))
}

//! The subscribing gateway: zenoh samples on a key, checked and unpacked into a local
//! [`sp::Sender`], record by record, as they are.
//!
//! # Two paths
//!
//! - **Data**, on zenoh's receiving thread: a callback per sample checks the header (the
//!   stream's epoch, the sequence number: loss or duplication is a [`Violation::Sequence`]), and
//!   writes each record from zenoh's buffers straight into the local ring
//!   ([`sp::Sender::send_encoded_with_timeout`]: one copy, even of a sample that arrived in
//!   fragments). When the local ring is full the
//!   callback waits, so zenoh stops reading the connection and the publisher's `put` blocks:
//!   backpressure to the far producer, with nothing dropped and nothing queued without bound.
//!   The wait looks at a stop request every [`CHECK_PERIOD`].
//! - **Supervision**, on the gateway's thread: the publisher's token (encoding, appearance,
//!   loss), the end of the data path, the deadlines ([`Options::connect_timeout`], a resume's
//!   window, [`Options::linger`]).
//!
//! When the gateway ends, for any reason, the local sender is dropped, so the local receiver
//! reads every record delivered and then `PeerGone`; [`Gateway::join`] says whether the stream
//! ended cleanly.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use sp::{SendTimeoutError, Value};
use zenoh::Wait;
use zenoh::sample::Sample;

use crate::error::{Error, Result, Violation};
use crate::gateway::{CHECK_PERIOD, Counters, Gateway, Halt, random_id};
use crate::options::{OnLoss, Options};
use crate::publish::check_key;
use crate::watch::{DataEnd, Watch};
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
        // Whatever ended it: no sample is taken any more, and the local receiver sees the end.
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
    let end = match inbound.take_sample(sample.payload().reader()) {
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
            current => {
                if let Some((epoch, _)) = current
                    && self.watch.lock().alive.contains_key(&epoch)
                {
                    return Err(Error::Protocol(Violation::OtherStream {
                        current: epoch,
                        other: header.epoch,
                    }));
                }
                if first { header.seq } else { 0 }
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

    /// Sends the next record, `len` bytes, from `records` straight into the local ring (one
    /// copy), waiting for room; `false` if the gateway was asked to stop meanwhile.
    fn deliver(&mut self, len: usize, records: &mut Records<impl Source>) -> Result<bool> {
        let Some(tx) = self.tx.as_mut() else {
            return Ok(false);
        };
        loop {
            match tx.send_encoded_with_timeout(len, |slot| records.read(slot), CHECK_PERIOD) {
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
    DataEnd(DataEnd),
    Refused(Violation),
}

impl Supervisor {
    fn run(&mut self) -> Result<(), Halt> {
        let mut window = self.options.connect_timeout;
        let mut deadline = Instant::now().checked_add(window);
        loop {
            let current = self.current;
            let ours = &self.encoding;
            let key = &self.key;
            let event = self.watch.wait_until(deadline, |seen| {
                if seen.stop {
                    return Some(Event::Stop);
                }
                if let Some(end) = seen.data_end.take() {
                    return Some(Event::DataEnd(end));
                }
                for (epoch, theirs) in &seen.alive {
                    if !wire::encodings_agree(ours, theirs) {
                        return Some(Event::Refused(Violation::Encoding {
                            ours: ours.clone(),
                            theirs: theirs.clone(),
                        }));
                    }
                    if current.is_some_and(|c| c != *epoch) {
                        let token = wire::token_key(key, Role::Pub, *epoch, theirs);
                        return Some(Event::Refused(Violation::SecondRemote { token }));
                    }
                }
                match current {
                    Some(epoch) if !seen.alive.contains_key(&epoch) => Some(Event::Lost),
                    Some(_) => None,
                    None if seen.alive.len() > 1 => {
                        let (epoch, theirs) = seen.alive.iter().nth(1)?;
                        let token = wire::token_key(key, Role::Pub, *epoch, theirs);
                        Some(Event::Refused(Violation::SecondRemote { token }))
                    }
                    None => seen
                        .alive
                        .keys()
                        .next()
                        .map(|epoch| Event::Connected(*epoch)),
                }
            });
            match event {
                None => {
                    return Err(Error::NoRemote {
                        key: self.key.clone(),
                        waited: window,
                    }
                    .into());
                }
                Some(Event::Stop) => return Err(Halt::Stop),
                Some(Event::Refused(violation)) => return Err(Error::Protocol(violation).into()),
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

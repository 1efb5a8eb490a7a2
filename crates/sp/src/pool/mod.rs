//! A pool of worker processes: N children of one command, each holding a typed duplex; items go
//! to the least-occupied worker, results come back in completion order or in submission order,
//! and a worker that dies hands its unfinished items back.
//!
//! # How it works
//!
//! - **Items in envelopes.** Each item gets an id (`0, 1, 2, ...` in submission order) and
//!   travels as `(id, item)` (an envelope: `docs/protocol.md`, "sp pools"); the worker answers `(id, result)`. The
//!   pool keeps each item, moved in (no `Clone` needed), until its result arrives, so that a
//!   worker's death hands back exactly the items it had not answered.
//!   An item type may write its bytes where they travel: its [`Value::encode`] runs on the
//!   ring slot reserved for it, so an item that is a recipe (a file range, a sequence number)
//!   whose encoding produces a byte buffer's bytes (postcard: the length as a varint, then the
//!   bytes) reaches a [`serve_bytes`] worker with no copy in the parent, and the pool keeps only
//!   the recipe. With [`serve_bytes_trusted`] the worker reads it in the ring too.
//! - **Choosing a worker.** [`Pool::submit`] gives the item to the live worker with the fewest
//!   items in flight, among those below [`PoolConfig::max_in_flight`] whose ring took the last
//!   item (a full ring marks the worker full until it answers). When every worker is full it
//!   waits for an answer, which frees a place (backpressure); `try_submit` and
//!   `submit_timeout` bound that wait. A full ring always has items in flight, so waiting for
//!   an answer is enough: the parent never blocks on a worker's ring while that worker may be
//!   blocked on the parent's.
//! - **Gathering.** Waiting for answers is one [`crate::Select`] over every live
//!   worker's result ring (no thread per worker); answers that arrive while `submit` waits are
//!   kept for `recv`. [`Pool::recv`] hands out answers in the order they arrived,
//!   [`Pool::recv_in_order`] in submission order (holding back later ones).
//! - **A worker that dies** shows as `PeerGone` on its rings. The pool first takes every answer
//!   the worker committed before it died (they are delivered before `PeerGone`), reaps it (at most
//!   [`PoolConfig::stop_timeout`], then `SIGKILL`), and turns each item still in flight into a
//!   [`Lost`] reply naming the worker's exit status. A worker that breaks the protocol (an answer
//!   that does not decode, or for an id it does not hold) is killed and handled the same way,
//!   with the cause. The other workers go on; with [`PoolConfig::respawn`] a new worker takes the
//!   dead one's index at once, or later through [`Pool::respawn`].
//! - **Closing** ([`Pool::close`], or dropping the pool) closes every ring, waits for every
//!   worker at most [`PoolConfig::stop_timeout`], kills the rest and reaps them all: no zombie,
//!   no descriptor left.
//! - **Idle.** With more workers than cores the pool and its workers park at once instead of
//!   spinning a while first ([`idle_for`]).

mod config;
mod envelope;
mod gather;
mod reply;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use sp_core::{Child, SocketKind};
use sp_shm::IdleStrategy;

pub use config::{PoolConfig, WORKER_ENV, idle_for};
pub use reply::{Lost, Reply, SubmitError};
pub use worker::{
    serve, serve_bytes, serve_bytes_trusted, serve_bytes_with, serve_with, worker_index,
};

use crate::error::{
    Error, Fail, RecvTimeoutError, Result, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::limit::Limit;
use crate::receiver::Receiver;
use crate::sender::Sender;
use crate::value::Value;
use config::WorkerSetup;
use envelope::Envelope;

/// A pool of worker processes that answer items of type `In` with results of type `Out`.
///
/// The workers are started from one command each ([`Pool::spawn`]) and call
/// [`pool::serve`](serve). Not `Sync`; one thread submits and gathers.
///
/// # Examples
/// ```no_run
/// // The worker (my-worker): `sp::pool::serve(|text: String| text.len())`
/// let mut pool = sp::Pool::<String, usize>::spawn(
///     4,
///     |_| std::process::Command::new("my-worker"),
///     &sp::PoolConfig::new(),
/// )?;
/// for word in ["a", "bb", "ccc"] {
///     pool.submit(word.to_string()).map_err(|e| e.error)?;
/// }
/// while let Some(reply) = pool.recv_in_order()? {
///     println!("item {}: {:?}", reply.id, reply.result.map_err(|lost| lost.item));
/// }
/// pool.close()?;
/// # Ok::<(), sp::Error>(())
/// ```
pub struct Pool<In: Value, Out: Value> {
    /// `None` for a worker that went down and was not replaced.
    workers: Vec<Option<Worker<In, Out>>>,
    command: Box<dyn FnMut(usize) -> Command + Send>,
    config: PoolConfig,
    /// The channel settings of every worker, with the idle strategy chosen.
    channel: crate::Config,
    idle: IdleStrategy,
    next_id: u64,
    /// Every id submitted and not yet handed out: in flight, or answered and waiting.
    outstanding: BTreeMap<u64, Option<Reply<In, Out>>>,
    /// Answered ids in the order their answers arrived (ids handed out by `recv_in_order` are
    /// skipped when met).
    arrivals: VecDeque<u64>,
}

struct Worker<In: Value, Out: Value> {
    child: Child,
    items: Sender<Envelope<In>>,
    results: Receiver<Envelope<Out>>,
    /// The items this worker holds, oldest first.
    in_flight: VecDeque<(u64, In)>,
    /// Its ring refused the last item; cleared by its next answer.
    full: bool,
}

impl<In: Value + 'static, Out: Value + 'static> Pool<In, Out> {
    /// Starts `n_workers` workers, worker `i` from `command(i)` (the pool adds [`WORKER_ENV`] and
    /// the channel's inherited socket), and connects to each. The processes are started first and
    /// then connected one by one, so their start-up overlaps.
    ///
    /// # Errors
    /// As [`spawn`](crate::spawn) for any worker; then every worker started so far is killed and
    /// reaped. `InvalidInput` ([`Error::Os`]) for zero workers.
    pub fn spawn(
        n_workers: usize,
        command: impl FnMut(usize) -> Command + Send + 'static,
        config: &PoolConfig,
    ) -> Result<Self> {
        if n_workers == 0 {
            return Err(Error::Os(std::io::ErrorKind::InvalidInput.into()));
        }
        let idle = config.idle_strategy(n_workers);
        let mut pool = Self {
            workers: Vec::with_capacity(n_workers),
            command: Box::new(command),
            channel: config.channel.clone().idle(idle),
            config: config.clone(),
            idle,
            next_id: 0,
            outstanding: BTreeMap::new(),
            arrivals: VecDeque::new(),
        };
        let mut started = Vec::with_capacity(n_workers);
        for index in 0..n_workers {
            match pool.start(index) {
                Ok(child) => started.push(child),
                Err(err) => {
                    for (mut child, _) in started {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return Err(err);
                }
            }
        }
        let mut res = Ok(());
        for (mut child, channel) in started {
            if res.is_err() {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            match crate::connect::<Envelope<In>, Envelope<Out>>(channel, &pool.channel) {
                Ok((items, results)) => pool.workers.push(Some(Worker::new(child, items, results))),
                Err(err) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    res = Err(err);
                }
            }
        }
        // On error, dropping the pool closes and reaps the workers already connected.
        res.map(|()| pool)
    }

    /// Submits `item`, waiting while every worker is full; returns the item's id.
    ///
    /// # Errors
    /// [`Error::PeerGone`] when no worker is left; errors of `epoll`. The item is handed back.
    pub fn submit(&mut self, item: In) -> Result<u64, SubmitError<In>> {
        self.submit_inner(item, Limit::Forever)
            .map_err(|(item, fail)| SubmitError {
                item,
                error: forever(fail),
            })
    }

    /// Submits `item` if a worker has room now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when every worker is full; otherwise as [`submit`](Self::submit).
    pub fn try_submit(&mut self, item: In) -> Result<u64, SubmitError<In, TrySendError>> {
        self.submit_inner(item, Limit::Now)
            .map_err(|(item, fail)| SubmitError {
                item,
                error: match fail {
                    Fail::Wait => TrySendError::Full,
                    Fail::Broken(err) => TrySendError::Broken(err),
                },
            })
    }

    /// Submits `item`, waiting at most `timeout` for a worker with room.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`]; otherwise as [`submit`](Self::submit).
    pub fn submit_timeout(
        &mut self,
        item: In,
        timeout: Duration,
    ) -> Result<u64, SubmitError<In, SendTimeoutError>> {
        self.submit_inner(item, Limit::after(timeout))
            .map_err(|(item, fail)| SubmitError {
                item,
                error: match fail {
                    Fail::Wait => SendTimeoutError::Timeout,
                    Fail::Broken(err) => SendTimeoutError::Broken(err),
                },
            })
    }

    /// The next answer, in the order answers arrive; `None` when every submitted item has been
    /// answered and handed out.
    ///
    /// # Errors
    /// Errors of `epoll`; a worker's failure is never an error here (its items come back as
    /// [`Lost`]).
    pub fn recv(&mut self) -> Result<Option<Reply<In, Out>>> {
        self.recv_inner(Limit::Forever, false).map_err(forever)
    }

    /// The next answer in arrival order, if there is one now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] while items are in flight and none is answered; otherwise as
    /// [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Option<Reply<In, Out>>, TryRecvError> {
        self.recv_inner(Limit::Now, false).map_err(try_recv_error)
    }

    /// The next answer in arrival order, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`]; otherwise as [`recv`](Self::recv).
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Reply<In, Out>>, RecvTimeoutError> {
        self.recv_inner(Limit::after(timeout), false)
            .map_err(recv_timeout_error)
    }

    /// The answer to the oldest item not yet handed out (submission order); later answers wait
    /// in the pool until their turn. `None` when every item has been handed out.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_in_order(&mut self) -> Result<Option<Reply<In, Out>>> {
        self.recv_inner(Limit::Forever, true).map_err(forever)
    }

    /// As [`recv_in_order`](Self::recv_in_order), if the oldest item is answered now.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_in_order(&mut self) -> Result<Option<Reply<In, Out>>, TryRecvError> {
        self.recv_inner(Limit::Now, true).map_err(try_recv_error)
    }

    /// As [`recv_in_order`](Self::recv_in_order), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_in_order_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Reply<In, Out>>, RecvTimeoutError> {
        self.recv_inner(Limit::after(timeout), true)
            .map_err(recv_timeout_error)
    }

    /// Starts a new worker at `index` if the one there went down (and was not replaced).
    ///
    /// # Errors
    /// As [`spawn`](crate::spawn); `InvalidInput` for an index that is live or out of range.
    pub fn respawn(&mut self, index: usize) -> Result<()> {
        if !matches!(self.workers.get(index), Some(None)) {
            return Err(Error::Os(std::io::ErrorKind::InvalidInput.into()));
        }
        let (mut child, channel) = self.start(index)?;
        match crate::connect::<Envelope<In>, Envelope<Out>>(channel, &self.channel) {
            Ok((items, results)) => {
                self.workers[index] = Some(Worker::new(child, items, results));
                Ok(())
            }
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(err)
            }
        }
    }

    /// Closes every ring, waits for every worker to exit (at most
    /// [`PoolConfig::stop_timeout`], then kills the rest) and reaps them. Answers not yet handed
    /// out are dropped: gather them first. Returns each live worker's index and exit status.
    ///
    /// # Errors
    /// Only if waiting for a child fails (`waitpid`).
    pub fn close(mut self) -> Result<Vec<(usize, ExitStatus)>> {
        shut_down_workers(&mut self.workers, self.config.stop_timeout)
            .into_iter()
            .map(|(index, status)| Ok((index, status?)))
            .collect()
    }

    /// How many workers are live.
    pub fn live_workers(&self) -> usize {
        self.workers.iter().flatten().count()
    }

    /// How many items were submitted and not yet handed out (in flight or answered).
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// The process id of worker `index`, if it is live.
    pub fn pid(&self, index: usize) -> Option<u32> {
        Some(self.workers.get(index)?.as_ref()?.child.id())
    }

    /// The idle strategy the pool and its workers use.
    pub fn idle_strategy(&self) -> IdleStrategy {
        self.idle
    }

    /// Starts the process of worker `index`; the parent's end of its socket.
    fn start(&mut self, index: usize) -> Result<(Child, sp_core::Channel)> {
        let setup = WorkerSetup {
            index,
            idle: self.idle,
            capacity: self.channel.ring_config().capacity_bytes(),
            max_payload: self.channel.ring_config().max_payload_bytes(),
        };
        let mut cmd = (self.command)(index);
        cmd.env(WORKER_ENV, setup.encode());
        let (ours, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
        let child = sp_core::spawn_with(&mut cmd, theirs, self.channel.spawn)?;
        match sp_core::Channel::new(ours) {
            Ok(channel) => Ok((child, channel)),
            Err(err) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                Err(err.into())
            }
        }
    }

    fn submit_inner(&mut self, item: In, limit: Limit) -> Result<u64, (In, Fail)> {
        let id = self.next_id;
        let mut envelope = Envelope { id, value: item };
        let max = self.config.max_in_flight;
        loop {
            let pick = self
                .workers
                .iter()
                .enumerate()
                .filter_map(|(index, w)| {
                    let w = w.as_ref()?;
                    // A full ring always has items in flight whose answers will clear the mark.
                    let open = w.in_flight.len() < max && (!w.full || w.in_flight.is_empty());
                    open.then_some((w.in_flight.len(), index))
                })
                .min();
            let Some((_, index)) = pick else {
                if let Err(fail) = self.gather(limit) {
                    return Err((envelope.value, fail));
                }
                continue;
            };
            let Some(worker) = self.workers[index].as_mut() else {
                continue;
            };
            match worker.items.try_send(&envelope) {
                Ok(()) => {
                    worker.in_flight.push_back((id, envelope.value));
                    self.outstanding.insert(id, None);
                    self.next_id += 1;
                    return Ok(id);
                }
                Err(TrySendError::Full) => worker.full = true,
                Err(TrySendError::Broken(err)) => self.worker_failed(index, err),
            }
            // Keep the item for the next attempt.
            envelope = Envelope {
                id,
                value: envelope.value,
            };
        }
    }
}

impl<In: Value, Out: Value> Worker<In, Out> {
    fn new(child: Child, items: Sender<Envelope<In>>, results: Receiver<Envelope<Out>>) -> Self {
        Self {
            child,
            items,
            results,
            in_flight: VecDeque::new(),
            full: false,
        }
    }
}

impl<In: Value, Out: Value> Drop for Pool<In, Out> {
    fn drop(&mut self) {
        if self.workers.iter().any(Option::is_some) {
            shut_down_workers(&mut self.workers, self.config.stop_timeout);
        }
    }
}

impl<In: Value, Out: Value> fmt::Debug for Pool<In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers.len())
            .field("live", &self.workers.iter().flatten().count())
            .field("outstanding", &self.outstanding.len())
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

/// Closes every worker's rings (dropping both halves: the worker's next receive or send reports
/// `PeerGone` and `serve` returns), then waits for them all until `stop_timeout` has passed,
/// kills the rest and reaps every one. Each worker's index and status.
fn shut_down_workers<In: Value, Out: Value>(
    workers: &mut [Option<Worker<In, Out>>],
    stop_timeout: Duration,
) -> Vec<(usize, std::io::Result<ExitStatus>)> {
    let (indexes, mut children): (Vec<usize>, Vec<Child>) = workers
        .iter_mut()
        .enumerate()
        .filter_map(|(index, w)| Some((index, w.take()?.child)))
        .unzip();
    let mut refs: Vec<&mut Child> = children.iter_mut().collect();
    let statuses = crate::reap::reap_all(&mut refs, Instant::now() + stop_timeout);
    indexes.into_iter().zip(statuses).collect()
}

/// The status of a child that could not be waited for (never expected: the pool reaps only its
/// own children): "killed by `SIGKILL`".
fn killed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(9)
}

fn forever(fail: Fail) -> Error {
    match fail {
        Fail::Broken(err) => err,
        Fail::Wait => Error::Os(std::io::ErrorKind::WouldBlock.into()),
    }
}

fn try_recv_error(fail: Fail) -> TryRecvError {
    match fail {
        Fail::Wait => TryRecvError::Empty,
        Fail::Broken(err) => TryRecvError::Broken(err),
    }
}

fn recv_timeout_error(fail: Fail) -> RecvTimeoutError {
    match fail {
        Fail::Wait => RecvTimeoutError::Timeout,
        Fail::Broken(err) => RecvTimeoutError::Broken(err),
    }
}

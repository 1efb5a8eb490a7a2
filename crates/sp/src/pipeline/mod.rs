//! Pipelines of processes connected sibling to sibling: the ring from stage A to stage B is
//! written by A and read by B, with no copy or hop through the parent, which relays the
//! descriptors at set-up and then supervises.
//!
//! # Set-up (`docs/protocol.md`, "sp pipelines")
//!
//! 1. The parent starts every stage (each with an sp-core seqpacket channel to the parent) and
//!    makes one seqpacket socketpair per link, for the link's typed control messages (ATTACH,
//!    HELLO). It sends each stage a STAGE message (its index, the number of stages, which links
//!    it has) with its ends of those pairs, and closes its own copies.
//! 2. Each stage with an output creates the ring it produces into and sends the OFFER (sp-shm's
//!    one-way hand-over, [`sp_shm::offer_ring`]) to the parent, which forwards it unchanged to the
//!    next stage and closes its copies of the descriptors. The next stage accepts it and answers
//!    READY, which the parent forwards back.
//! 3. Neighbours exchange HELLOs over their link's socket (the types must agree), and each stage
//!    reports UP. When every stage is UP, [`Builder::spawn`] returns.
//!
//! When the parent feeds the first stage or drains the last, it is simply the producer or the
//! consumer of that link, and answers or offers without relaying.
//!
//! # Supervision
//!
//! A supervisor thread in the parent waits on every stage's pidfd. When a stage ends, it is
//! reaped and every other running stage is told (EXIT, with the first failure so far), so that a
//! stage whose ring reports `PeerGone` learns why ([`Stage::input_ended`], [`Stage::failure`]).
//! A stage whose neighbour died sees `PeerGone` on that ring (its wake socket hangs up), so
//! upstream and downstream end by themselves; whatever still runs
//! [`stop_timeout`](Builder::stop_timeout) after the first failure is killed.
//! [`Pipeline::wait`] returns once every stage has been reaped, with an error naming the first
//! stage that failed and its exit status.
//!
//! # Who can write what
//!
//! The parent holds each ring's descriptors for a moment while it forwards them. It cannot write
//! a ring's data: the producer sealed the data memfd `F_SEAL_FUTURE_WRITE` right after mapping it
//! and before offering it, so `write(2)`, a new writable shared mapping and `mprotect` to
//! writable all fail for every other holder (`docs/security.md`, "Sibling rings").

mod stage;
mod supervisor;
mod wire;

use std::os::fd::AsFd;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use sp_core::{Channel, Child, Message, SocketKind};
use sp_shm::IdleStrategy;

pub use stage::{Stage, join};

use crate::config::Config;
use crate::connect::{one_way_receiver, one_way_sender, receiver_over, send_hello, sender_over};
use crate::error::{Error, Result, Violation};
use crate::receiver::Receiver;
use crate::sender::Sender;
use crate::value::Value;
use supervisor::Supervisor;
use wire::{HAS_INPUT, HAS_OUTPUT, StageSetup};

/// The stages of a pipeline, before they are started.
///
/// # Examples
/// ```no_run
/// use std::process::Command;
/// // Each stage calls `sp::pipeline::join::<In, Out>(&config)`.
/// let config = sp::Config::new();
/// let mut pipeline = sp::pipeline::Builder::new()
///     .stage(Command::new("decode"))
///     .stage(Command::new("transform"))
///     .stage(Command::new("encode"))
///     .spawn(&config)?;
/// pipeline.wait()?; // an error names the first stage that failed
/// # Ok::<(), sp::Error>(())
/// ```
#[derive(Debug)]
pub struct Builder {
    commands: Vec<Command>,
    stop_timeout: Duration,
    idle: Option<IdleStrategy>,
}

/// A running pipeline: its stages' processes and the thread that supervises them. Dropping it
/// kills every stage still running and reaps them all.
#[derive(Debug)]
pub struct Pipeline {
    pids: Vec<u32>,
    supervisor: Supervisor,
    statuses: Vec<Option<ExitStatus>>,
}

impl Builder {
    /// No stages yet; 5 s for the other stages to end after one fails.
    pub fn new() -> Self {
        Self {
            commands: Vec::new(),
            stop_timeout: Duration::from_secs(5),
            idle: None,
        }
    }

    /// Adds a stage after the others.
    #[must_use]
    pub fn stage(mut self, command: Command) -> Self {
        self.commands.push(command);
        self
    }

    /// How long the stages still running may take to end after one has failed, before they are
    /// killed.
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// How every stage (and the parent's ends) waits, instead of the choice by core count:
    /// [`IdleStrategy::adaptive`] while each process on the data path (every stage, plus the
    /// parent when it feeds and drains) can have a core of its own, otherwise
    /// [`IdleStrategy::park`] (see [`pool::idle_for`](crate::pool::idle_for)).
    #[must_use]
    pub fn idle(mut self, strategy: IdleStrategy) -> Self {
        self.idle = Some(strategy);
        self
    }

    /// Starts the stages and connects each to the next; the first stage has no input and the
    /// last no output (they are on their own).
    ///
    /// # Errors
    /// `InvalidInput` ([`Error::Os`]) without stages; as [`spawn`](crate::spawn) for any stage;
    /// [`Error::StageFailed`] for a stage that ended during set-up; [`Error::Shm`] with
    /// `HandshakeTimedOut` when the set-up took longer than [`Config::handshake_timeout`]. Every
    /// stage started is killed and reaped on error.
    pub fn spawn(self, config: &Config) -> Result<Pipeline> {
        let (pipeline, _) = self.spawn_inner::<(), ()>(config, false)?;
        Ok(pipeline)
    }

    /// As [`spawn`](Self::spawn), with the parent feeding the first stage (`In`) and draining the
    /// last (`Out`).
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn); [`Error::Protocol`] with a HELLO violation when the first
    /// stage's `In` or the last stage's `Out` differ from these.
    pub fn spawn_with_ends<In: Value, Out: Value>(
        self,
        config: &Config,
    ) -> Result<(Pipeline, Sender<In>, Receiver<Out>)> {
        let (pipeline, (tx, rx)) = self.spawn_inner::<In, Out>(config, true)?;
        match (tx, rx) {
            (Some(tx), Some(rx)) => Ok((pipeline, tx, rx)),
            _ => Err(Error::Protocol(Violation::BadSetup)),
        }
    }

    fn spawn_inner<In: Value, Out: Value>(
        self,
        config: &Config,
        ends: bool,
    ) -> Result<(Pipeline, Ends<In, Out>)> {
        let n = self.commands.len();
        if n == 0 {
            return Err(Error::Os(std::io::ErrorKind::InvalidInput.into()));
        }
        // Adaptive only while every process on the data path (the stages, and the parent when
        // it is at both ends) has a core of its own: `idle_for` counts them as workers.
        let idle = self
            .idle
            .unwrap_or_else(|| crate::pool::idle_for(n + usize::from(ends)));
        let config = &config.clone().idle(idle);
        let mut children = Vec::with_capacity(n);
        let mut channels = Vec::with_capacity(n);
        for mut command in self.commands {
            let started = sp_core::pair(SocketKind::SeqPacket).and_then(|(ours, theirs)| {
                let child = sp_core::spawn_with(&mut command, theirs, config.spawn)?;
                Ok((child, ours))
            });
            match started.and_then(|(child, ours)| Ok((child, Channel::new(ours)?))) {
                Ok((child, channel)) => {
                    children.push(child);
                    channels.push(channel);
                }
                Err(err) => {
                    kill_all(&mut children);
                    return Err(err.into());
                }
            }
        }
        match connect::<In, Out>(&mut children, &mut channels, config, ends) {
            Ok((tx, rx)) => {
                let pids = children.iter().map(Child::id).collect();
                let supervisor = Supervisor::start(children, channels, self.stop_timeout)?;
                Ok((
                    Pipeline {
                        pids,
                        supervisor,
                        statuses: vec![None; n],
                    },
                    (tx, rx),
                ))
            }
            Err(err) => {
                kill_all(&mut children);
                Err(err)
            }
        }
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    /// How many stages there are.
    pub fn n_stages(&self) -> usize {
        self.pids.len()
    }

    /// The process id of stage `index`.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.pids.get(index).copied()
    }

    /// Waits until every stage has ended and been reaped (after a failure, those still running
    /// [`stop_timeout`](Builder::stop_timeout) later are killed).
    ///
    /// # Errors
    /// [`Error::StageFailed`] naming the first stage that failed (a non-zero exit or a signal)
    /// and its status.
    pub fn wait(&mut self) -> Result<()> {
        let outcome = self.supervisor.join();
        self.finish(outcome)
    }

    /// Kills every stage still running and reaps them all.
    ///
    /// # Errors
    /// As [`wait`](Self::wait): the stages killed here count as failed.
    pub fn kill(&mut self) -> Result<()> {
        let outcome = self.supervisor.kill();
        self.finish(outcome)
    }

    /// How each stage ended (after [`wait`](Self::wait) or [`kill`](Self::kill)).
    pub fn statuses(&self) -> &[Option<ExitStatus>] {
        &self.statuses
    }

    fn finish(&mut self, outcome: Option<supervisor::Outcome>) -> Result<()> {
        let Some(outcome) = outcome else {
            // Waited for already.
            return match self
                .statuses
                .iter()
                .enumerate()
                .find_map(|(stage, s)| s.filter(|s| !s.success()).map(|status| (stage, status)))
            {
                Some((stage, status)) => Err(Error::StageFailed { stage, status }),
                None => Ok(()),
            };
        };
        self.statuses = outcome.statuses;
        match outcome.first_failure {
            Some((stage, status)) => Err(Error::StageFailed { stage, status }),
            None => Ok(()),
        }
    }
}

type Ends<In, Out> = (Option<Sender<In>>, Option<Receiver<Out>>);

/// Steps 1 to 3 of the set-up (see the module docs), with the parent's own ends if `ends`.
fn connect<In: Value, Out: Value>(
    children: &mut [Child],
    channels: &mut [Channel],
    config: &Config,
    ends: bool,
) -> Result<Ends<In, Out>> {
    let n = channels.len();
    // Link k runs from stage k - 1 (the parent for k = 0) to stage k (the parent for k = n).
    let mut producer_ends = Vec::with_capacity(n + 1);
    let mut consumer_ends = Vec::with_capacity(n + 1);
    for k in 0..=n {
        if (k == 0 || k == n) && !ends {
            producer_ends.push(None);
            consumer_ends.push(None);
            continue;
        }
        let (a, b) = Channel::pair(SocketKind::SeqPacket)?;
        producer_ends.push(Some(a));
        consumer_ends.push(Some(b));
    }
    for (index, channel) in channels.iter().enumerate() {
        let input = consumer_ends[index].take();
        let output = producer_ends[index + 1].take();
        let flags = if input.is_some() { HAS_INPUT } else { 0 }
            | if output.is_some() { HAS_OUTPUT } else { 0 };
        let setup = StageSetup {
            index: index as u32,
            n_stages: n as u32,
            flags,
            idle: config.ring_config().idle_strategy(),
        };
        let fds: Vec<_> = input.iter().chain(&output).map(AsFd::as_fd).collect();
        channel.send(&wire::encode_stage(setup), &fds)?;
        // `input` and `output`, the stage's ends, are closed here: the stage holds the only
        // copies now.
    }
    let feed = producer_ends[0].take();
    let drain = consumer_ends[n].take();
    let mut pending_feed = None;
    if let Some(control) = &feed {
        let (ring, offer) = sp_shm::offer_ring(&config.ring)?;
        forward(&channels[0], offer)?;
        pending_feed = Some(ring);
        send_hello(control, one_way_sender::<In>())?;
    }
    if let Some(control) = &drain {
        send_hello(control, one_way_receiver::<Out>())?;
    }
    let mut feed_producer = None;
    let mut drain_consumer = None;
    let mut up = vec![false; n];
    let deadline = Instant::now() + config.setup_limit();
    while up.iter().any(|u| !u)
        || pending_feed.is_some()
        || (drain.is_some() && drain_consumer.is_none())
    {
        // A stage that is UP sends nothing more during set-up; its channel's next news (an end
        // of file when it has already finished its work) is the supervisor's.
        let index = wait_readable(channels, &up, deadline)?;
        let msg = match channels[index].try_recv() {
            Ok(msg) => msg,
            Err(sp_core::TryRecvError::Empty) => continue,
            Err(sp_core::TryRecvError::Broken(sp_core::Error::PeerGone)) => {
                let status = crate::reap::reap(&mut children[index], config.setup_limit())?;
                return Err(Error::StageFailed {
                    stage: index,
                    status,
                });
            }
            Err(sp_core::TryRecvError::Broken(err)) => return Err(err.into()),
        };
        if msg.bytes.starts_with(&sp_shm::OFFER_MAGIC) {
            // Stage `index` offers its output ring.
            if index + 1 < n {
                forward(&channels[index + 1], msg)?;
            } else if drain.is_some() && drain_consumer.is_none() {
                let (res, ready) = sp_shm::accept_ring(msg, &config.ring);
                forward(&channels[index], ready)?;
                drain_consumer = Some(res?);
            } else {
                return Err(Error::Protocol(Violation::BadSetup));
            }
        } else if msg.bytes.starts_with(&sp_shm::READY_MAGIC) {
            // Stage `index` answers the offer of its input ring.
            if index > 0 {
                forward(&channels[index - 1], msg)?;
            } else if let Some(ring) = pending_feed.take() {
                feed_producer = Some(ring.finish(&msg)?);
            } else {
                return Err(Error::Protocol(Violation::BadSetup));
            }
        } else if let Some(status) = wire::decode_up(&msg.bytes) {
            if status != wire::UP_OK || up[index] {
                // The stage has said why on its own stderr; here it is named by its exit.
                let status = crate::reap::reap(&mut children[index], config.setup_limit())?;
                return Err(Error::StageFailed {
                    stage: index,
                    status,
                });
            }
            up[index] = true;
        } else {
            return Err(Error::Protocol(Violation::BadSetup));
        }
    }
    let tx = match (feed_producer, feed) {
        (Some(producer), Some(control)) => Some(sender_over(producer, control, config)?),
        _ => None,
    };
    let rx = match (drain_consumer, drain) {
        (Some(consumer), Some(control)) => Some(receiver_over(consumer, control, config)?),
        _ => None,
    };
    Ok((tx, rx))
}

/// Sends `msg` on, bytes and descriptors; this process's copies of the descriptors are closed
/// when `msg` is dropped here.
fn forward(channel: &Channel, msg: Message) -> Result<()> {
    let fds: Vec<_> = msg.fds.iter().map(AsFd::as_fd).collect();
    channel.send(&msg.bytes, &fds)?;
    Ok(())
}

/// `poll(2)` on the channels of the stages not yet UP until one is readable (a message or a
/// hang-up).
fn wait_readable(channels: &[Channel], up: &[bool], deadline: Instant) -> Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Shm(sp_shm::Error::HandshakeTimedOut));
        }
        let indexes: Vec<usize> = (0..channels.len()).filter(|i| !up[*i]).collect();
        let mut fds: Vec<PollFd<'_>> = indexes
            .iter()
            .map(|i| PollFd::from_borrowed_fd(channels[*i].as_fd(), PollFlags::IN))
            .collect();
        let timeout =
            Timespec::try_from(left).map_err(|_| Error::Os(rustix::io::Errno::INVAL.into()))?;
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(Error::Os(err.into())),
        }
        if let Some(at) = fds.iter().position(|fd| !fd.revents().is_empty()) {
            return Ok(indexes[at]);
        }
    }
}

fn kill_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        let _ = child.kill();
    }
    for child in children.iter_mut() {
        let _ = child.wait();
    }
}

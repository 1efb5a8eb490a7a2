//! A stage's side of a pipeline: take the channel to the parent, offer the output ring, accept
//! the input ring (both relayed by the parent), check the neighbours' types, report UP; later,
//! learn from the parent how the other stages ended.

use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use sp_core::Channel;

use crate::config::Config;
use crate::connect::{one_way_receiver, one_way_sender, receiver_over, send_hello, sender_over};
use crate::error::{Error, Result, Violation};
use crate::pipeline::wire::{self, Exit, HAS_INPUT, HAS_OUTPUT, StageSetup};
use crate::receiver::Receiver;
use crate::sender::Sender;
use crate::value::Value;

/// One stage of a [`Pipeline`](crate::Pipeline), in the stage's own process: it reads `In` from
/// the stage before it and writes `Out` to the stage after it, over rings shared with those
/// siblings directly.
///
/// The first stage has no input unless the parent feeds it, the last no output unless the parent
/// drains it ([`input`](Self::input) and [`output`](Self::output) are `None` then).
#[derive(Debug)]
pub struct Stage<In: Value, Out: Value> {
    index: usize,
    n_stages: usize,
    input: Option<Receiver<In>>,
    output: Option<Sender<Out>>,
    parent: Channel,
    /// How each other stage ended, as the parent reported it.
    exits: Vec<Option<ExitStatus>>,
    first_failure: Option<(usize, ExitStatus)>,
    end_timeout: Duration,
}

/// In a stage started by a [`Pipeline`](crate::Pipeline): takes the channel to the parent and
/// sets up this stage's rings with its neighbours. `In` is what the stage reads (use `()` for a
/// first stage that the parent does not feed), `Out` what it writes (`()` for an undrained last
/// stage).
///
/// The stage waits as the pipeline chose ([`Builder::idle`](crate::pipeline::Builder::idle)):
/// that replaces `config`'s idle strategy.
///
/// Each neighbour's types are checked at set-up (a HELLO over the link's control socket, as in
/// [`connect`](crate::connect)): the values this stage writes must be encoded as its successor's
/// `In` expects.
///
/// # Errors
/// As [`adopt`](crate::adopt); [`Error::Protocol`] with [`Violation::BadSetup`] for a set-up
/// message out of turn. The parent is told that this stage failed.
///
/// # Examples
/// ```no_run
/// // A middle stage that doubles every number.
/// let mut stage = sp::pipeline::join::<u64, u64>(&sp::Config::new())?;
/// let (mut input, mut output) = (stage.take_input().unwrap(), stage.take_output().unwrap());
/// loop {
///     match input.recv() {
///         Ok(n) => output.send(&(2 * n)).map_err(|err| stage.failure(err))?,
///         Err(sp::Error::PeerGone) => break stage.input_ended(),
///         Err(err) => break Err(err),
///     }
/// }?;
/// # Ok::<(), sp::Error>(())
/// ```
pub fn join<In: Value, Out: Value>(config: &Config) -> Result<Stage<In, Out>> {
    let mut parent = Channel::new(sp_core::adopt()?)?;
    match link(&mut parent, config) {
        Ok((setup, input, output)) => {
            parent.send(&wire::encode_up(wire::UP_OK), &[])?;
            let n_stages = setup.n_stages as usize;
            Ok(Stage {
                index: setup.index as usize,
                n_stages,
                input,
                output,
                parent,
                exits: vec![None; n_stages],
                first_failure: None,
                end_timeout: config.setup_limit(),
            })
        }
        Err(err) => {
            let status = match &err {
                Error::Shm(_) => wire::UP_RING,
                Error::Protocol(Violation::Hello(_)) => wire::UP_HELLO,
                _ => wire::UP_OTHER,
            };
            // Best effort: the parent may be gone.
            let _ = parent.send(&wire::encode_up(status), &[]);
            Err(err)
        }
    }
}

type Links<In, Out> = (StageSetup, Option<Receiver<In>>, Option<Sender<Out>>);

/// The set-up of one stage: STAGE, the output's OFFER, the input's OFFER and the output's READY
/// in whatever order the parent relays them, then the HELLOs.
fn link<In: Value, Out: Value>(parent: &mut Channel, config: &Config) -> Result<Links<In, Out>> {
    let msg = parent
        .recv_timeout(config.setup_limit())
        .map_err(setup_error)?;
    let setup = wire::decode_stage(&msg.bytes, msg.fds.len()).map_err(Error::Protocol)?;
    let config = &config.clone().idle(setup.idle);
    let mut fds = msg.fds.into_iter();
    let in_control = take_channel(&mut fds, setup.flags & HAS_INPUT != 0)?;
    let out_control = take_channel(&mut fds, setup.flags & HAS_OUTPUT != 0)?;
    let mut pending = None;
    if out_control.is_some() {
        let (ring, offer) = sp_shm::offer_ring(&config.ring)?;
        let fds: Vec<_> = offer.fds.iter().map(AsFd::as_fd).collect();
        parent.send(&offer.bytes, &fds)?;
        pending = Some(ring);
        // `offer` (our copies of its descriptors, the consumer's wake end among them) is dropped
        // here.
    }
    if let Some(control) = &out_control {
        send_hello(control, one_way_sender::<Out>())?;
    }
    if let Some(control) = &in_control {
        send_hello(control, one_way_receiver::<In>())?;
    }
    let mut consumer = None;
    let mut producer = None;
    let deadline = Instant::now() + config.setup_limit();
    while (in_control.is_some() && consumer.is_none()) || pending.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = parent.recv_timeout(left).map_err(setup_error)?;
        if msg.bytes.starts_with(&sp_shm::OFFER_MAGIC) && in_control.is_some() && consumer.is_none()
        {
            let (res, ready) = sp_shm::accept_ring(msg, &config.ring);
            // Best effort before reporting a refusal: the producer learns why.
            let sent = parent.send(&ready.bytes, &[]);
            consumer = Some(res?);
            sent?;
        } else if msg.bytes.starts_with(&sp_shm::READY_MAGIC)
            && let Some(ring) = pending.take()
        {
            producer = Some(ring.finish(&msg)?);
        } else {
            return Err(Error::Protocol(Violation::BadSetup));
        }
    }
    let input = match (consumer, in_control) {
        (Some(consumer), Some(control)) => Some(receiver_over(consumer, control, config)?),
        _ => None,
    };
    let output = match (producer, out_control) {
        (Some(producer), Some(control)) => Some(sender_over(producer, control, config)?),
        _ => None,
    };
    Ok((setup, input, output))
}

impl<In: Value, Out: Value> Stage<In, Out> {
    /// This stage's index, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many stages the pipeline has.
    pub fn n_stages(&self) -> usize {
        self.n_stages
    }

    /// The ring from the previous stage (or from the parent), if there is one.
    pub fn input(&mut self) -> Option<&mut Receiver<In>> {
        self.input.as_mut()
    }

    /// The ring to the next stage (or to the parent), if there is one.
    pub fn output(&mut self) -> Option<&mut Sender<Out>> {
        self.output.as_mut()
    }

    /// Takes the input, to use it apart from the stage (on another thread, say).
    pub fn take_input(&mut self) -> Option<Receiver<In>> {
        self.input.take()
    }

    /// Takes the output, to use it apart from the stage.
    pub fn take_output(&mut self) -> Option<Sender<Out>> {
        self.output.take()
    }

    /// After the input reported [`Error::PeerGone`]: whether that is the end of the stream.
    /// Waits (at most the set-up time limit, [`Config::handshake_timeout`]) for the parent's
    /// word on how the previous stage ended.
    ///
    /// # Errors
    /// [`Error::StageFailed`] naming the first stage of the pipeline that failed, if any did
    /// (the previous one, or one further up whose failure ended it); [`Error::PeerGone`] if the
    /// parent's word did not come in time.
    pub fn input_ended(&mut self) -> Result<()> {
        if self.index == 0 {
            // Fed by the parent: it closed the ring.
            return Ok(());
        }
        let upstream = self.index - 1;
        self.wait_for(|stage| stage.exits[upstream].is_some() || stage.first_failure.is_some());
        if let Some((stage, status)) = self.first_failure {
            return Err(Error::StageFailed { stage, status });
        }
        match self.exits[upstream] {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(Error::StageFailed {
                stage: upstream,
                status,
            }),
            None => Err(Error::PeerGone),
        }
    }

    /// Explains `err`, an error of this stage's input or output: for [`Error::PeerGone`], waits
    /// (at most the set-up time limit) for the parent's word of a failed stage and returns
    /// [`Error::StageFailed`] naming the first one; any other error, or no word in time, is
    /// returned as it is.
    pub fn failure(&mut self, err: Error) -> Error {
        if !matches!(err, Error::PeerGone) {
            return err;
        }
        self.wait_for(|stage| stage.first_failure.is_some());
        match self.first_failure {
            Some((stage, status)) => Error::StageFailed { stage, status },
            None => err,
        }
    }

    /// How stage `index` ended, if the parent has said so (see [`input_ended`](Self::input_ended)).
    pub fn stage_status(&mut self, index: usize) -> Option<ExitStatus> {
        self.take_notices(Duration::ZERO);
        self.exits.get(index).copied().flatten()
    }

    /// Reads the parent's EXIT messages until `done` or the time limit.
    fn wait_for(&mut self, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + self.end_timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.take_notices(left) {
                return;
            }
        }
    }

    /// Takes the EXIT messages the parent has sent, waiting at most `limit` for the first;
    /// whether one came.
    fn take_notices(&mut self, limit: Duration) -> bool {
        let mut got = false;
        let mut wait = limit;
        loop {
            let Ok(msg) = self.parent.recv_timeout(wait) else {
                return got;
            };
            wait = Duration::ZERO;
            let Ok(Exit {
                stage,
                status,
                first_failure,
            }) = wire::decode_exit(&msg.bytes)
            else {
                continue;
            };
            got = true;
            if let Some(slot) = self.exits.get_mut(stage as usize) {
                *slot = Some(status);
            }
            if self.first_failure.is_none() {
                self.first_failure = first_failure.map(|(stage, status)| (stage as usize, status));
            }
        }
    }
}

/// The next descriptor as a channel, if `present`.
fn take_channel(fds: &mut impl Iterator<Item = OwnedFd>, present: bool) -> Result<Option<Channel>> {
    if !present {
        return Ok(None);
    }
    let fd = fds.next().ok_or(Error::Protocol(Violation::BadSetup))?;
    let end = sp_core::End::from(fd);
    if end.kind().ok() != Some(sp_core::SocketKind::SeqPacket) {
        return Err(Error::Protocol(Violation::BadSetup));
    }
    Ok(Some(Channel::new(end)?))
}

fn setup_error(err: sp_core::RecvTimeoutError) -> Error {
    match err {
        sp_core::RecvTimeoutError::Timeout => Error::Shm(sp_shm::Error::HandshakeTimedOut),
        sp_core::RecvTimeoutError::Broken(err) => err.into(),
    }
}

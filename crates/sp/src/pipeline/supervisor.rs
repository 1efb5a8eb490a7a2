//! The parent's supervisor thread: it waits on every stage's pidfd, reaps each stage as it ends,
//! tells the others (EXIT, with the first failure so far), and once a stage has failed, kills
//! whatever is still running after the stop timeout.
//!
//! One thread for the whole pipeline, so that the stages hear of a failure while the parent's
//! own thread is busy feeding or draining them.

use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitStatus;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use sp_core::{Channel, Child};

use crate::pipeline::wire::{self, Exit};

/// How often a stage without a pidfd (Linux before 5.3) is looked at.
const NO_PIDFD_POLL: Duration = Duration::from_millis(5);

/// How the stages ended: each one's status (in order), and the first that failed.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) statuses: Vec<Option<ExitStatus>>,
    pub(crate) first_failure: Option<(usize, ExitStatus)>,
}

/// The running supervisor: dropping `stop` (the write end of a pipe) makes it kill every stage
/// and return.
#[derive(Debug)]
pub(crate) struct Supervisor {
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<Outcome>>,
}

impl Supervisor {
    pub(crate) fn start(
        children: Vec<Child>,
        channels: Vec<Channel>,
        stop_timeout: Duration,
    ) -> std::io::Result<Self> {
        let (stop_rx, stop_tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(std::io::Error::from)?;
        let thread = std::thread::Builder::new()
            .name("sp-pipeline".into())
            .spawn(move || supervise(children, channels, stop_rx, stop_timeout))?;
        Ok(Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Waits until every stage has ended and been reaped.
    pub(crate) fn join(&mut self) -> Option<Outcome> {
        self.thread.take()?.join().ok()
    }

    /// Kills every stage still running, then waits for the thread.
    pub(crate) fn kill(&mut self) -> Option<Outcome> {
        self.stop = None;
        self.join()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.kill();
    }
}

fn supervise(
    mut children: Vec<Child>,
    channels: Vec<Channel>,
    stop: OwnedFd,
    stop_timeout: Duration,
) -> Outcome {
    let n = children.len();
    let mut outcome = Outcome {
        statuses: vec![None; n],
        first_failure: None,
    };
    let mut failed_at: Option<Instant> = None;
    let mut stopping = false;
    loop {
        for (index, child) in children.iter_mut().enumerate() {
            if outcome.statuses[index].is_some() {
                continue;
            }
            let status = match child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) if stopping => {
                    let _ = child.kill();
                    match child.wait() {
                        Ok(status) => status,
                        Err(_) => continue,
                    }
                }
                Ok(None) => continue,
                // Not our child any more (never expected): count it as killed.
                Err(_) => killed(),
            };
            outcome.statuses[index] = Some(status);
            if !status.success() && outcome.first_failure.is_none() {
                outcome.first_failure = Some((index, status));
                failed_at = Some(Instant::now());
            }
            let exit = Exit {
                stage: index as u32,
                status,
                first_failure: outcome
                    .first_failure
                    .map(|(stage, status)| (stage as u32, status)),
            };
            for (other, channel) in channels.iter().enumerate() {
                if other != index && outcome.statuses[other].is_none() {
                    // Best effort: a stage that has just ended cannot be told.
                    let _ = channel.try_send(&wire::encode_exit(exit), &[]);
                }
            }
        }
        if outcome.statuses.iter().all(Option::is_some) {
            return outcome;
        }
        if stopping {
            continue;
        }
        let mut timeout =
            failed_at.map(|at| (at + stop_timeout).saturating_duration_since(Instant::now()));
        if timeout.is_some_and(|left| left.is_zero()) {
            stopping = true;
            continue;
        }
        let mut fds = vec![PollFd::from_borrowed_fd(stop.as_fd(), PollFlags::IN)];
        for (child, status) in children.iter().zip(&outcome.statuses) {
            if status.is_some() {
                continue;
            }
            match child.pidfd() {
                Some(fd) => fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN)),
                None => timeout = Some(timeout.map_or(NO_PIDFD_POLL, |t| t.min(NO_PIDFD_POLL))),
            }
        }
        let timeout = timeout.and_then(|t| Timespec::try_from(t).ok());
        let _ = rustix::event::poll(&mut fds, timeout.as_ref());
        // The pipe reads as ready (end of file) once the pipeline drops its end.
        if fds[0].revents().intersects(PollFlags::IN | PollFlags::HUP) {
            stopping = true;
        }
    }
}

fn killed() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(9)
}

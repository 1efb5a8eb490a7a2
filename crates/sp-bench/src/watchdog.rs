//! A bound on every measurement: past its deadline the child is killed, and if the driver is still
//! stuck a few seconds later, the whole benchmark exits with an error instead of hanging.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};
use rustix::process::{Pid, Signal};

/// How long the driver gets, after the child was killed, to notice and return an error.
const GRACE: Duration = Duration::from_secs(5);

/// An armed watchdog; [`disarm`](Self::disarm) it when the measurement is over.
#[derive(Debug)]
pub(crate) struct Watchdog {
    stop: Option<Sender<()>>,
    fired: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The process a watchdog kills: by pidfd when the kernel has them, else by pid.
#[derive(Debug)]
pub(crate) enum Victim {
    /// A pidfd (immune to pid reuse).
    Pidfd(OwnedFd),
    /// A bare pid.
    Pid(u32),
    /// Nothing to kill (an in-process measurement): only the exit after the grace period.
    None,
}

impl Watchdog {
    /// Starts a watchdog that fires after `limit`; `what` names the measurement in the message.
    pub(crate) fn arm(limit: Duration, victim: Victim, what: String) -> Self {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let fired = Arc::new(AtomicBool::new(false));
        let fired2 = Arc::clone(&fired);
        let thread = std::thread::Builder::new()
            .name("sp-bench-watchdog".into())
            .spawn(move || {
                if stopped.recv_timeout(limit) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
                fired2.store(true, Ordering::SeqCst);
                match &victim {
                    Victim::Pidfd(fd) => {
                        let _ = rustix::process::pidfd_send_signal(fd, Signal::KILL);
                    }
                    Victim::Pid(pid) => {
                        if let Some(pid) = Pid::from_raw(*pid as i32) {
                            let _ = rustix::process::kill_process(pid, Signal::KILL);
                        }
                    }
                    Victim::None => {}
                }
                if stopped.recv_timeout(GRACE) == Err(RecvTimeoutError::Timeout) {
                    eprintln!("sp-bench: {what} hung past its time limit ({limit:?}); giving up");
                    std::process::exit(3);
                }
            })
            .ok();
        Self {
            stop: Some(stop),
            fired,
            thread,
        }
    }

    /// Whether the deadline passed (so an error the driver saw was caused by the kill).
    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Stops the watchdog; returns whether it had fired.
    pub(crate) fn disarm(mut self) -> bool {
        self.stop_thread();
        self.fired()
    }

    fn stop_thread(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

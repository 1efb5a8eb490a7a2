//! Waiting for child processes with a bound: `poll(2)` on their pidfds until a deadline, then
//! `SIGKILL` and `waitpid` for those still running, so that no child is left a zombie and no wait
//! lasts longer than the caller allowed (plus the kernel's time to deliver `SIGKILL`).

use std::io;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use sp_core::Child;

/// Without a pidfd (Linux before 5.3) a child is looked at this often.
const NO_PIDFD_POLL: Duration = Duration::from_millis(5);

/// Waits for every child until `deadline`, then kills the ones still running and reaps them.
/// Returns each child's status, in order.
pub(crate) fn reap_all(
    children: &mut [&mut Child],
    deadline: Instant,
) -> Vec<io::Result<ExitStatus>> {
    let mut done: Vec<Option<io::Result<ExitStatus>>> = children.iter().map(|_| None).collect();
    loop {
        for (child, slot) in children.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match child.try_wait() {
                    Ok(Some(status)) => *slot = Some(Ok(status)),
                    Ok(None) => {}
                    Err(err) => *slot = Some(Err(err)),
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if done.iter().all(Option::is_some) || left.is_zero() {
            break;
        }
        wait_any(children, &done, left);
    }
    for (child, slot) in children.iter_mut().zip(done.iter_mut()) {
        if slot.is_none() {
            // Past the deadline: a child that is already gone makes `kill` fail, and `wait`
            // still reaps it.
            let _ = child.kill();
            *slot = Some(child.wait());
        }
    }
    done.into_iter()
        .map(|slot| slot.unwrap_or_else(|| Err(io::ErrorKind::Other.into())))
        .collect()
}

/// Waits for one child with a bound (see [`reap_all`]).
pub(crate) fn reap(child: &mut Child, within: Duration) -> io::Result<ExitStatus> {
    let deadline = Instant::now() + within;
    reap_all(&mut [child], deadline)
        .pop()
        .unwrap_or_else(|| Err(io::ErrorKind::Other.into()))
}

/// `poll(2)` on the pidfds of the children not yet reaped, for at most `left`.
fn wait_any(children: &[&mut Child], done: &[Option<io::Result<ExitStatus>>], left: Duration) {
    let mut fds = Vec::new();
    let mut without_pidfd = false;
    for (child, slot) in children.iter().zip(done) {
        if slot.is_some() {
            continue;
        }
        match child.pidfd() {
            Some(fd) => fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN)),
            None => without_pidfd = true,
        }
    }
    let left = if without_pidfd {
        left.min(NO_PIDFD_POLL)
    } else {
        left
    };
    let timeout = Timespec::try_from(left).unwrap_or(Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    });
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(_) | Err(Errno::INTR) => {}
        // `poll` on a few pidfds does not fail otherwise; if it does, the next round's
        // `try_wait` and the deadline still bound the wait.
        Err(_) => std::thread::yield_now(),
    }
}

//! Processes, as `/proc` shows them: children and zombies, a thread seen waiting in `poll` (the
//! observation crash trials kill on, never a sleep), and a grandchild watched through a pidfd
//! once its parent is gone.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

/// Processes whose parent is `parent` (zombies included), from `/proc/<pid>/stat`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Processes whose parent is this process (zombies included).
pub fn children_of_this_process() -> Vec<u32> {
    children_of(std::process::id())
}

/// The state letter of process `pid` (`R`, `S`, `Z` for a zombie, ...), or `None` once it has
/// been reaped (no `/proc/<pid>`).
pub fn process_state(pid: u32) -> Option<char> {
    stat_fields(pid).map(|(state, _)| state)
}

/// The state letter and the parent of process `pid`, or `None` once it has been reaped.
pub fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    stat_fields(pid)
}

/// The state and parent of `pid` from `/proc/<pid>/stat`: "pid (comm) state ppid ...", where the
/// command may hold spaces and parentheses, so the fields are counted from the last `)`.
fn stat_fields(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether thread `tid` of process `pid` is inside `poll`/`ppoll` now, from
/// `/proc/<pid>/task/<tid>/syscall` (x86-64: 7 = poll, 271 = ppoll; aarch64: 73 = ppoll).
pub fn thread_in_poll(pid: u32, tid: u32) -> bool {
    let syscall =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).unwrap_or_default();
    let nr = syscall.split_whitespace().next().unwrap_or("");
    ["7", "271", "73"].contains(&nr)
}

/// Waits until thread `tid` of process `pid` is inside `poll`/`ppoll`, for at most `bound`.
pub fn wait_until_thread_in_poll(pid: u32, tid: u32, bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    while !thread_in_poll(pid, tid) {
        if Instant::now() > deadline {
            let syscall = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
                .unwrap_or_default();
            return Err(format!(
                "thread {tid} of process {pid} never waited in poll within {bound:?} \
                 (syscall: {syscall:?})"
            ));
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// While alive, this process is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a descendant
/// whose parent dies becomes this process's child, so it can reap it and read its exit status.
/// Dropping it clears the attribute again.
#[derive(Debug)]
pub struct Subreaper(());

impl Subreaper {
    /// Makes this process a child subreaper.
    ///
    /// # Errors
    /// The `prctl` error.
    pub fn set() -> Result<Self, String> {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
        Ok(Self(()))
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        let _ = rustix::process::set_child_subreaper(None);
    }
}

/// A descendant of this process that is not (yet) its child, watched through a pidfd, which
/// names this process and no other even after its number is reused. With a [`Subreaper`] in
/// place it becomes this process's child when its own parent dies, and [`Self::reap`] collects it.
#[derive(Debug)]
pub struct Descendant {
    pid: u32,
    pidfd: OwnedFd,
    reaped: bool,
}

impl Descendant {
    /// Opens a pidfd for process `pid`.
    ///
    /// # Errors
    /// `pidfd_open`'s error (the process no longer exists, or the kernel is older than 5.3).
    pub fn open(pid: u32) -> Result<Self, String> {
        let raw = Pid::from_raw(pid as i32).ok_or_else(|| format!("bad pid {pid}"))?;
        let pidfd = rustix::process::pidfd_open(raw, PidfdFlags::empty())
            .map_err(|e| format!("pidfd_open({pid}): {e}"))?;
        Ok(Self {
            pid,
            pidfd,
            reaped: false,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until it has ended (the pidfd turns readable when it exits), until `deadline`;
    /// whether it did.
    pub fn ended_by(&self, deadline: Instant) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            });
            let mut pfd = [PollFd::new(&self.pidfd, PollFlags::IN)];
            match rustix::event::poll(&mut pfd, Some(&timeout)) {
                Ok(0) if left.is_zero() => return false,
                Ok(0) | Err(rustix::io::Errno::INTR) => {}
                Ok(_) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Reaps it (it must have ended and be this process's child by now) and returns its exit
    /// status: `Ok(code)` for an exit, `Err` naming the signal that killed it or the error.
    ///
    /// # Errors
    /// It was killed by a signal, or `waitpid` failed (for example because it is not this
    /// process's child).
    pub fn reap(&mut self) -> Result<i32, String> {
        let pid = Pid::from_raw(self.pid as i32).ok_or("bad pid")?;
        let (_, status) = rustix::process::waitpid(Some(pid), WaitOptions::empty())
            .map_err(|e| format!("waitpid({}): {e}", self.pid))?
            .ok_or("waitpid returned no status")?;
        self.reaped = true;
        match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => Ok(code),
            (None, Some(signal)) => Err(format!("process {} died of signal {signal}", self.pid)),
            _ => Err(format!("process {} ended with {status:?}", self.pid)),
        }
    }
}

impl Drop for Descendant {
    /// Kills it (through the pidfd, so never another process with its number) and reaps it if it
    /// is this process's child; a failing trial leaves no process running.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL);
        if self.ended_by(Instant::now() + Duration::from_secs(5))
            && let Some(pid) = Pid::from_raw(self.pid as i32)
        {
            // ECHILD if its parent is still alive and will reap it.
            let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
        }
    }
}

//! The other IPC crates sp is compared with (feature `peers`), each set up the way its own
//! documentation shows, and the clean-up of the files two of them leave behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

pub(super) mod iceoryx2;
pub(super) mod ipc_channel;
pub(super) mod ipmpsc;
pub(super) mod typed;

/// Prefix of every file name this harness gives a peer crate (in /dev/shm and /tmp).
const FILE_PREFIX: &str = "sp-bench-";

/// How long a receiver that polls waits for a message before it reports the peer as gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(10);

/// A name unique to this process and measurement, for services and files.
fn unique_name(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{FILE_PREFIX}{}-{what}-{n}", std::process::id())
}

fn peer_error(err: impl std::fmt::Debug) -> Error {
    Error::Peer(format!("{err:?}"))
}

/// Spins (with `spin_loop`) on `poll` until it yields a value, for at most [`SILENCE_LIMIT`].
fn spin_for<T>(mut poll: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let mut spins = 0u32;
    let mut since: Option<Instant> = None;
    loop {
        if let Some(value) = poll()? {
            return Ok(value);
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024)
            && since.get_or_insert_with(Instant::now).elapsed() > SILENCE_LIMIT
        {
            return Err(Error::TimedOut("no message from the peer"));
        }
    }
}

/// Removes files under /dev/shm and /tmp whose names this harness chose (`sp-bench-PID-*`, and
/// iceoryx2's `spbench_iox2_PID_*` files and `sp-bench-iceoryx2-PID` root), for this process and
/// for processes that no longer exist; files of another running benchmark are left alone.
pub(super) fn cleanup() {
    let me = std::process::id();
    for dir in ["/dev/shm", "/tmp"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(pid) = owner_pid(&name) else {
                continue;
            };
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            if pid == me || !alive {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
}

/// The pid in a file name this harness chose, if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    [FILE_PREFIX, iceoryx2::FILE_PREFIX, iceoryx2::ROOT_PREFIX]
        .iter()
        .filter_map(|prefix| name.strip_prefix(prefix))
        .find_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_harness_names_have_an_owner() {
        assert_eq!(owner_pid("sp-bench-123-ipmpsc-down-0"), Some(123));
        assert_eq!(owner_pid("spbench_iox2_77_abc"), Some(77));
        assert_eq!(owner_pid("sp-bench-iceoryx2-9"), Some(9));
        assert_eq!(owner_pid("iox2_123"), None);
        assert_eq!(owner_pid("sp-bench-x"), None);
    }
}

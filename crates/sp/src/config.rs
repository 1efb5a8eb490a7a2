//! Settings of a typed channel: the ring underneath, when a value goes as a blob, how long a
//! receiver waits for announced descriptors, and how the child is started.

use std::time::Duration;

use sp_core::{Signal, SpawnOptions};
use sp_shm::IdleStrategy;

/// Settings for [`spawn`](crate::spawn), [`adopt`](crate::adopt) and [`channel`](crate::channel).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let config = sp::Config::new()
///     .capacity(4 << 20)
///     .blob_threshold(64 << 10)
///     .attachment_timeout(Duration::from_millis(100));
/// assert_eq!(config.ring_config().capacity_bytes(), 4 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) ring: sp_shm::Config,
    pub(crate) blob_threshold: Option<usize>,
    pub(crate) max_blob_len: u64,
    pub(crate) attachment_timeout: Duration,
    pub(crate) spawn: SpawnOptions,
}

impl Config {
    /// Defaults: sp-shm's ring defaults (1 MiB, largest record 128 KiB, adaptive waiting) except
    /// that the rings are not pre-faulted (`populate(false)`: a start pays no page faults for 2 MiB
    /// up front, each page faults once on first use instead), values larger than the largest
    /// record go as blobs, blobs up to 4 GiB, 1 s for announced descriptors, 10 s for each step of
    /// setting up, children get `SIGKILL` when the thread that spawned them exits, and a child's
    /// end is handed over after `exec` within that 10 s ([`SpawnOptions::hand_over_after_exec`]:
    /// the child is started by `posix_spawn`, not by `fork`, whose cost grows with the parent's
    /// memory).
    pub fn new() -> Self {
        let setup_step = Duration::from_secs(10);
        Self {
            ring: sp_shm::Config::new()
                .populate(false)
                .handshake_timeout(setup_step),
            blob_threshold: None,
            max_blob_len: 4 << 30,
            attachment_timeout: Duration::from_secs(1),
            spawn: SpawnOptions::new()
                .parent_death_signal(Signal::KILL)
                .hand_over_after_exec(setup_step),
        }
    }

    /// The ring this side produces into, with every sp-shm setting. Its handshake timeout is the
    /// time limit for every step of setting up (see [`handshake_timeout`](Self::handshake_timeout)).
    #[must_use]
    pub fn ring(mut self, ring: sp_shm::Config) -> Self {
        let limit = ring.handshake_limit();
        self.ring = ring;
        self.handshake_timeout(limit)
    }

    /// The ring's capacity in bytes (see [`sp_shm::Config::capacity`]).
    #[must_use]
    pub fn capacity(mut self, n_bytes: usize) -> Self {
        self.ring = self.ring.capacity(n_bytes);
        self
    }

    /// The ring's largest record payload in bytes (see [`sp_shm::Config::max_payload`]).
    #[must_use]
    pub fn max_payload(mut self, n_bytes: usize) -> Self {
        self.ring = self.ring.max_payload(n_bytes);
        self
    }

    /// How this side waits for its peer (see [`sp_shm::IdleStrategy`]).
    #[must_use]
    pub fn idle(mut self, strategy: IdleStrategy) -> Self {
        self.ring = self.ring.idle(strategy);
        self
    }

    /// A value whose encoding (with its record prefix) is longer than this many bytes goes as a
    /// sealed-memfd blob instead of a ring record. Default, and upper bound: the ring's largest
    /// record payload. Blobs cost a memfd, a mapping and a control message each, and win only for
    /// large values; `docs/benchmarks.md` has the measured crossover.
    #[must_use]
    pub fn blob_threshold(mut self, n_bytes: usize) -> Self {
        self.blob_threshold = Some(n_bytes);
        self
    }

    /// The largest blob this side sends or accepts (default 4 GiB). A larger value is
    /// [`Error::TooLarge`](crate::Error::TooLarge) at the sender; a larger blob from the peer is
    /// refused before it is mapped.
    #[must_use]
    pub fn max_blob_len(mut self, n_bytes: u64) -> Self {
        self.max_blob_len = n_bytes;
        self
    }

    /// How long a receiver waits for the descriptors or blob a record announced (default 1 s). An
    /// sp sender always sends them before the record, so they are already queued; the wait bounds
    /// what a broken or hostile peer can cost.
    #[must_use]
    pub fn attachment_timeout(mut self, timeout: Duration) -> Self {
        self.attachment_timeout = timeout;
        self
    }

    /// Time limit for each step of setting up (handing the child its end, the ring handshake,
    /// the HELLO; default 10 s). It is kept in one place, the ring's settings
    /// ([`sp_shm::Config::handshake_limit`]).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.ring = self.ring.handshake_timeout(timeout);
        if self.spawn.handover_timeout().is_some() {
            self.spawn = self.spawn.hand_over_after_exec(timeout);
        }
        self
    }

    /// How [`spawn`](crate::spawn) starts the child (default: parent-death signal `SIGKILL`, the
    /// end handed over after `exec` within the handshake timeout). The hand-over's own timeout,
    /// if `opts` hands the end over, is the one it carries.
    #[must_use]
    pub fn spawn_options(mut self, opts: SpawnOptions) -> Self {
        self.spawn = opts;
        self
    }

    /// The time limit for each step of setting up.
    pub(crate) fn setup_limit(&self) -> Duration {
        self.ring.handshake_limit()
    }

    /// The sp-shm settings of the ring.
    pub fn ring_config(&self) -> &sp_shm::Config {
        &self.ring
    }

    /// The blob threshold for a ring whose largest payload is `max_payload`.
    pub(crate) fn threshold_for(&self, max_payload: usize) -> usize {
        self.blob_threshold.unwrap_or(max_payload).min(max_payload)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_limit_is_kept_in_one_place() {
        let (one, two) = (Duration::from_secs(1), Duration::from_secs(2));
        // The ring's settings given last bring their limit with them...
        let config = Config::new()
            .handshake_timeout(one)
            .ring(sp_shm::Config::new().handshake_timeout(two));
        assert_eq!(config.setup_limit(), two);
        assert_eq!(config.spawn.handover_timeout(), Some(two));
        // ...and a limit given last applies to the ring's handshake and the hand-over too.
        let config = Config::new()
            .ring(sp_shm::Config::new())
            .handshake_timeout(one);
        assert_eq!(config.ring_config().handshake_limit(), one);
        assert_eq!(config.spawn.handover_timeout(), Some(one));
        // A spawn that lets the child inherit its end keeps doing so.
        let config = Config::new()
            .spawn_options(SpawnOptions::new())
            .handshake_timeout(two);
        assert_eq!(config.spawn.handover_timeout(), None);
        assert_eq!(config.setup_limit(), two);
    }
}

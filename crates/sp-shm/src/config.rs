//! How a side sets up its rings: capacity, largest record, pages, idle strategy, batching.

use std::time::Duration;

use crate::idle::IdleStrategy;
use crate::layout;

/// Settings for the ring a side produces into and for how it waits.
///
/// Each process chooses the geometry of the ring it *produces* into (capacity, largest payload,
/// huge pages); the consumer accepts any geometry the protocol allows. The idle strategy, the
/// consumer's publication batch and the handshake time limit are local.
///
/// # Examples
/// ```
/// use sp_shm::{Config, IdleStrategy};
/// let config = Config::new()
///     .capacity(4 << 20)
///     .max_payload(64 << 10)
///     .idle(IdleStrategy::spin());
/// assert_eq!(config.capacity_bytes(), 4 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) capacity: usize,
    pub(crate) max_payload: Option<usize>,
    pub(crate) huge_pages: bool,
    pub(crate) populate: bool,
    pub(crate) idle: IdleStrategy,
    pub(crate) publish_every: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) accept_capacity: usize,
}

impl Config {
    /// Defaults: 1 MiB ring, largest payload capacity / 8, normal pages, `MAP_POPULATE`,
    /// [`IdleStrategy::adaptive`], consumer publishes its head after every record, 10 s handshake.
    pub fn new() -> Self {
        Self {
            capacity: 1 << 20,
            max_payload: None,
            huge_pages: false,
            populate: true,
            idle: IdleStrategy::adaptive(),
            publish_every: 0,
            handshake_timeout: Duration::from_secs(10),
            accept_capacity: DEFAULT_ACCEPT_CAPACITY,
        }
    }

    /// Data-area size in bytes: a power of two from 4 KiB to 4 GiB.
    #[must_use]
    pub fn capacity(mut self, n_bytes: usize) -> Self {
        self.capacity = n_bytes;
        self
    }

    /// Largest record payload in bytes: a multiple of 8, at most capacity / 4 (default
    /// capacity / 8).
    #[must_use]
    pub fn max_payload(mut self, n_bytes: usize) -> Self {
        self.max_payload = Some(n_bytes);
        self
    }

    /// Back the data area with huge pages (`MFD_HUGETLB`) when the kernel has them reserved;
    /// falls back to normal pages otherwise.
    #[must_use]
    pub fn huge_pages(mut self, yes: bool) -> Self {
        self.huge_pages = yes;
        self
    }

    /// Prefault mappings with `MAP_POPULATE` (default on).
    #[must_use]
    pub fn populate(mut self, yes: bool) -> Self {
        self.populate = yes;
        self
    }

    /// How this side waits for its peer.
    #[must_use]
    pub fn idle(mut self, strategy: IdleStrategy) -> Self {
        self.idle = strategy;
        self
    }

    /// The consumer publishes its head only once this many bytes have been released (or the
    /// ring is empty, or at [`Consumer::flush`](crate::Consumer::flush) or the end of a batch).
    /// Default 0: after every record. Larger values save a store and a flag check per record, but freed space
    /// reaches the producer later; do not use it if the consumer may stop reading while the
    /// producer waits for space.
    #[must_use]
    pub fn publish_every(mut self, n_bytes: usize) -> Self {
        self.publish_every = n_bytes;
        self
    }

    /// Time limit for each step of the handshake (default 10 s).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The largest ring this side accepts from its peer, in bytes (default 256 MiB). A larger
    /// offer is refused with [`RefuseReason::BadCapacity`](crate::RefuseReason::BadCapacity)
    /// before anything is mapped, so a hostile peer cannot make this process map and prefault
    /// gigabytes.
    #[must_use]
    pub fn accept_capacity_up_to(mut self, n_bytes: usize) -> Self {
        self.accept_capacity = n_bytes;
        self
    }

    /// The time limit for each step of the handshake.
    pub fn handshake_limit(&self) -> Duration {
        self.handshake_timeout
    }

    /// The configured capacity in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity
    }

    /// How this side waits for its peer.
    pub fn idle_strategy(&self) -> IdleStrategy {
        self.idle
    }

    /// The largest payload in bytes, after applying the default.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload
            .unwrap_or((self.capacity / 8).max(layout::ALIGN))
    }

    pub(crate) fn check(&self) -> crate::Result<()> {
        layout::check_geometry(self.capacity as u64, self.max_payload_bytes() as u64)
            .map_err(crate::Error::InvalidConfig)
    }
}

/// The default of [`Config::accept_capacity_up_to`]: 256 MiB.
const DEFAULT_ACCEPT_CAPACITY: usize = 256 << 20;

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

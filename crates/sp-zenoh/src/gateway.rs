//! [`Gateway`], the handle of a running gateway, and [`Summary`], what it did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::watch::Watch;

/// How often a gateway waiting on its local channel looks at its remote side and at a request to
/// stop. A remote that disappears while nothing is flowing is noticed within this period of
/// zenoh reporting it.
pub(crate) const CHECK_PERIOD: std::time::Duration = std::time::Duration::from_millis(50);

/// A running gateway ([`publish`](crate::publish) or [`subscribe`](crate::subscribe)).
///
/// It runs on its own until its stream ends: [`join`](Self::join) waits for that and says how it
/// ended; [`stop`](Self::stop) ends it now. Dropping the handle stops the gateway too (and waits
/// for its thread).
#[derive(Debug)]
pub struct Gateway {
    key: String,
    watch: Arc<Watch>,
    thread: Option<JoinHandle<Result<Summary>>>,
}

/// What a gateway did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records forwarded (published, or delivered into the local sender), in sequence.
    pub records: u64,
    /// Their encoded bytes.
    pub bytes: u64,
    /// zenoh samples that carried them.
    pub samples: u64,
    /// Losses of the remote side survived with [`OnLoss::Resume`](crate::OnLoss::Resume).
    pub resumes: u32,
}

/// A gateway's counters, shared between the thread that forwards and the one that reports.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    samples: AtomicU64,
    resumes: AtomicU64,
}

impl Counters {
    /// One sample of `n_records` records and `n_bytes` encoded bytes went through.
    pub(crate) fn add_sample(&self, n_records: u64, n_bytes: u64) {
        self.records.fetch_add(n_records, Ordering::Relaxed);
        self.bytes.fetch_add(n_bytes, Ordering::Relaxed);
        self.samples.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_resume(&self) {
        self.resumes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    pub(crate) fn summary(&self) -> Summary {
        Summary {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
            resumes: u32::try_from(self.resumes.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
        }
    }
}

/// How a gateway's loop stopped before its stream ended.
#[derive(Debug)]
pub(crate) enum Halt {
    /// [`Gateway::stop`] (or the handle was dropped).
    Stop,
    Fail(Error),
}

impl From<Error> for Halt {
    fn from(err: Error) -> Self {
        Self::Fail(err)
    }
}

impl From<zenoh::Error> for Halt {
    fn from(err: zenoh::Error) -> Self {
        Self::Fail(Error::Zenoh(err))
    }
}

impl Gateway {
    pub(crate) fn start(
        key: &str,
        watch: Arc<Watch>,
        run: impl FnOnce() -> Result<Summary> + Send + 'static,
    ) -> Result<Self> {
        let thread = std::thread::Builder::new()
            .name(format!("sp-zenoh {key}"))
            .spawn(run)
            .map_err(|err| Error::Local(err.into()))?;
        Ok(Self {
            key: key.to_owned(),
            watch,
            thread: Some(thread),
        })
    }

    /// The key this gateway serves.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether the gateway has ended ([`join`](Self::join) then returns at once).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the gateway to end: `Ok` when its stream ended cleanly (or it was stopped),
    /// else the reason.
    ///
    /// This wait is bounded by the stream, not by a clock: a gateway ends when its local side
    /// ends, when its remote side ends or disappears (noticed within zenoh's lease), or when it is
    /// refused something; a slow remote makes it wait as long as the remote takes.
    ///
    /// # Errors
    /// Every [`Error`] variant names one way a gateway ends badly.
    pub fn join(mut self) -> Result<Summary> {
        self.join_thread()
    }

    /// Ends the gateway now and waits for it (at most about 50 ms of its own, or
    /// as long as a zenoh `put` that is blocked by a slow remote takes): `Ok` if it was running
    /// or ended cleanly. The remote side sees this side disappear.
    ///
    /// # Errors
    /// As [`join`](Self::join), if the gateway had already ended badly.
    pub fn stop(mut self) -> Result<Summary> {
        self.watch.stop();
        self.join_thread()
    }

    fn join_thread(&mut self) -> Result<Summary> {
        let Some(thread) = self.thread.take() else {
            return Ok(Summary::default());
        };
        match thread.join() {
            Ok(res) => res,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.watch.stop();
            let _ = thread.join();
        }
    }
}

/// A random 32-bit number: a publisher's epoch, a subscriber's token id. Two gateways that draw
/// the same number on one key could take each other's samples for their own; the odds are
/// 2^-32 per pair.
pub(crate) fn random_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    // `RandomState` is seeded from the operating system's randomness once per process; hashing a
    // counter and the time gives a fresh number per call.
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let hash = hasher.finish();
    (hash ^ (hash >> 32)) as u32
}

//! What a gateway knows of its remote side, from zenoh liveliness tokens: which remote gateways
//! are alive on the key (and the encoding each carries), which have confirmed the end of a
//! stream, whether a publisher matches a subscriber, and whether the gateway was asked to stop.
//!
//! zenoh's callbacks write it (each holds the lock only to update a field) and the gateway's
//! own thread waits on it with a deadline. A remote's token disappears when its session
//! undeclares it, when its process dies (the TCP connection closes), or when its host stops
//! answering for zenoh's lease (`transport/link/tx/lease`, 10 s by default): that is the bound
//! on how long a lost remote goes unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use zenoh::Wait;
use zenoh::liveliness::LivelinessToken;
use zenoh::pubsub::Subscriber;
use zenoh::sample::{Sample, SampleKind};

use crate::error::{Error, Result};
use crate::wire::{self, Role};

/// The shared view, and the condition variable its waiters sleep on.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    seen: Mutex<Seen>,
    changed: Condvar,
    /// Bumped on every change, so that a loop can notice one with a relaxed load per sample.
    generation: AtomicU64,
}

/// The remote side as the tokens show it.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Remote gateways alive on the key: their id (a publisher's epoch) and encoding chunk.
    pub(crate) alive: BTreeMap<u32, String>,
    /// `Done` tokens seen: the epochs whose END a subscriber confirmed.
    pub(crate) done: BTreeSet<u32>,
    /// Publisher only: zenoh's matching status (a subscriber on the key is reachable).
    pub(crate) matched: bool,
    /// The gateway was asked to stop.
    pub(crate) stop: bool,
    /// Subscriber only: how the data path ended, set by the sample callback.
    pub(crate) data_end: Option<DataEnd>,
    /// Subscriber only: the supervisor has ended, so the data path waits for nothing more.
    pub(crate) ended: bool,
}

/// How a subscribing gateway's data path ended.
#[derive(Debug)]
pub(crate) enum DataEnd {
    /// The END of this epoch's stream: every record was delivered.
    Ended(u32),
    /// The ABORT of this epoch's stream: every record sent was delivered, the publisher failed.
    Aborted(u32),
    /// The data path failed (a violation, the local receiver gone).
    Failed(Error),
}

/// The earlier of two deadlines, where `None` is never.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The liveliness declarations that feed a [`Watch`]; undeclared when dropped.
#[derive(Debug)]
pub(crate) struct Tokens {
    _own: LivelinessToken,
    _watcher: Subscriber<()>,
}

impl Watch {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Seen> {
        // A panic in a zenoh callback while it held the lock leaves nothing half-written (each
        // holder sets one field), so a poisoned lock is still a consistent view.
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the view under the lock and wakes every waiter.
    pub(crate) fn update(&self, f: impl FnOnce(&mut Seen)) {
        let mut seen = self.lock();
        f(&mut seen);
        self.generation.fetch_add(1, Ordering::Release);
        drop(seen);
        self.changed.notify_all();
    }

    /// The number of changes so far.
    pub(crate) fn generation(&self) -> u64 {
        // Pairs with the Release increment in `update`: a changed number means `seen` changed.
        self.generation.load(Ordering::Acquire)
    }

    /// Waits until `ready` says so (returning its answer) or `deadline` passes (`None`).
    pub(crate) fn wait_until<R>(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&mut Seen) -> Option<R>,
    ) -> Option<R> {
        let mut seen = self.lock();
        loop {
            if let Some(res) = ready(&mut seen) {
                return Some(res);
            }
            seen = match deadline {
                None => self
                    .changed
                    .wait(seen)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    self.changed
                        .wait_timeout(seen, left)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
    }

    /// Asks the gateway to stop.
    pub(crate) fn stop(&self) {
        self.update(|seen| seen.stop = true);
    }

    /// Declares this gateway's token (`own`, of role `own_role`, id `own_id`) and watches the
    /// tokens of `remote_role` and `Done` under `key`.
    pub(crate) fn declare(
        self: &Arc<Self>,
        session: &zenoh::Session,
        key: &str,
        own: (Role, u32, &str),
        remote_role: Role,
    ) -> Result<Tokens> {
        let watch = Arc::clone(self);
        let owned_key = key.to_owned();
        // `history`: tokens declared before this subscriber are reported too.
        let watcher = session
            .liveliness()
            .declare_subscriber(wire::tokens_pattern(key))
            .history(true)
            .callback(move |sample: Sample| watch.on_token(&owned_key, remote_role, &sample))
            .wait()?;
        let own = session
            .liveliness()
            .declare_token(wire::token_key(key, own.0, own.1, own.2))
            .wait()?;
        Ok(Tokens {
            _own: own,
            _watcher: watcher,
        })
    }

    fn on_token(&self, key: &str, remote_role: Role, sample: &Sample) {
        let token = sample.key_expr().as_str();
        let alive = sample.kind() == SampleKind::Put;
        if let Some((id, encoding)) = wire::parse_token(token, key, remote_role) {
            self.update(|seen| {
                if alive {
                    seen.alive.insert(id, encoding.to_owned());
                } else {
                    seen.alive.remove(&id);
                }
            });
        } else if let Some((epoch, _)) = wire::parse_token(token, key, Role::Done)
            && alive
        {
            self.update(|seen| {
                seen.done.insert(epoch);
            });
        }
    }
}

//! The worker's side of a pool: adopt the channel the pool set up, then answer each item with the
//! result of a function, until the pool closes the channel.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pool::config::{WORKER_ENV, WorkerSetup};
use crate::pool::envelope::Envelope;
use crate::value::Value;

/// In a worker started by a [`Pool`](crate::Pool): answers every item with `work(item)`, in the
/// order they come, until the pool closes the channel (then it returns `Ok(())`, and the worker
/// should exit). Uses the ring sizes and idle strategy the pool chose ([`WORKER_ENV`]; sp's
/// defaults when the variable is absent).
///
/// A worker is a few lines:
///
/// ```no_run
/// fn main() -> Result<(), sp::Error> {
///     // The pool is a `Pool<String, usize>`: it sends strings, gets their lengths back.
///     sp::pool::serve(|text: String| text.len())
/// }
/// ```
///
/// # Errors
/// As [`adopt`](crate::adopt) while connecting; afterwards [`Error::Decode`] or
/// [`Error::Protocol`] if the pool's records are not items of type `In` (the pool sees this worker
/// exit and reports its items), and the errors of the ring.
pub fn serve<In: Value, Out: Value>(work: impl FnMut(In) -> Out) -> Result<()> {
    let config = setup().map_or_else(Config::new, |setup| setup.config());
    serve_with(&config, work)
}

/// As [`serve`], with this side's channel settings (ring geometry, idle strategy) given rather
/// than read from [`WORKER_ENV`].
///
/// # Errors
/// As [`serve`].
pub fn serve_with<In: Value, Out: Value>(
    config: &Config,
    mut work: impl FnMut(In) -> Out,
) -> Result<()> {
    let (mut results, mut items) = crate::adopt::<Envelope<Out>, Envelope<In>>(config)?;
    loop {
        let item: Envelope<In> = match items.recv() {
            Ok(item) => item,
            Err(Error::PeerGone) => return Ok(()),
            Err(err) => return Err(err),
        };
        let result = Envelope {
            id: item.id,
            value: work(item.value),
        };
        match results.send(&result) {
            Ok(()) => {}
            Err(Error::PeerGone) => return Ok(()),
            Err(err) => return Err(err),
        }
    }
}

/// In a worker started by a [`Pool`](crate::Pool): its index in the pool (a respawned worker
/// gets the index of the one it replaces).
pub fn worker_index() -> Option<usize> {
    setup().map(|setup| setup.index)
}

fn setup() -> Option<WorkerSetup> {
    WorkerSetup::decode(&std::env::var(WORKER_ENV).ok()?)
}

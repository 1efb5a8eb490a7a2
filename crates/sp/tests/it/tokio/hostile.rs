//! The hostile peer of `hostile.rs` against the async receiver: every scenario, under both
//! runtimes, must give the errors the blocking receiver gives.

use std::time::Duration;

use sp::tokio::AsyncReceiver;
use sp::{Receiver, RecvTimeoutError, TryRecvError, Value};
use tokio::runtime::Runtime;

use super::runtime;
use crate::hostile::{HostileRx, Receiving};

/// Receives through [`AsyncReceiver`] on a runtime of the named flavour.
#[derive(Debug, Clone, Copy)]
pub(super) struct Async(pub(super) &'static str);

impl Receiving for Async {
    type Rx<T: Value> = AsyncRx<T>;

    fn wrap<T: Value>(self, rx: Receiver<T>) -> Result<AsyncRx<T>, String> {
        let rt = runtime(self.0);
        let rx = {
            let _entered = rt.enter();
            AsyncReceiver::new(rx).map_err(|e| e.to_string())?
        };
        Ok(AsyncRx { rx, rt })
    }
}

/// An async receiver and the runtime it is registered with; each receive is one `block_on`.
pub(super) struct AsyncRx<T> {
    // Dropped before the runtime, whose reactor it is registered with.
    rx: AsyncReceiver<T>,
    rt: Runtime,
}

impl<T: Value> HostileRx<T> for AsyncRx<T> {
    /// `recv` under `tokio::time::timeout`.
    fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let rx = &mut self.rx;
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, rx.recv()).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(RecvTimeoutError::Broken(err)),
            Err(_) => Err(RecvTimeoutError::Timeout),
        }
    }

    /// One poll of `recv`: `Empty` if it would wait.
    fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let rx = &mut self.rx;
        match self.rt.block_on(sp_test_support::poll_once(rx.recv())) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(TryRecvError::Broken(err)),
            Err(()) => Err(TryRecvError::Empty),
        }
    }
}

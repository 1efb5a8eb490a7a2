//! ipc-channel: its bytes channel, and its `IpcSharedMemory` (one new region per message).
//!
//! Set-up follows ipc-channel's bootstrap: the driver opens an `IpcOneShotServer` and passes its
//! name; the child creates both channels, keeps its halves and sends the driver's halves through
//! the server.

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
    IpcSharedMemory,
};
use serde::{Deserialize, Serialize};

use super::peer_error;
use crate::error::Result;
use crate::transport::{Check, Fill, Link, Offer};

/// The halves the child sends to the driver.
#[derive(Debug, Serialize, Deserialize)]
enum Halves {
    Bytes(IpcBytesSender, IpcBytesReceiver),
    Shm(IpcSender<IpcSharedMemory>, IpcReceiver<IpcSharedMemory>),
}

#[derive(Debug)]
struct BytesLink {
    tx: IpcBytesSender,
    rx: IpcBytesReceiver,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct ShmLink {
    tx: IpcSender<IpcSharedMemory>,
    rx: IpcReceiver<IpcSharedMemory>,
    buf: Vec<u8>,
}

/// Driver side: a one-shot server whose name goes to the child.
pub(in crate::transport) fn offer(size: usize, shm: bool) -> Result<Offer> {
    let (server, name) = IpcOneShotServer::<Halves>::new()?;
    Ok(Offer {
        extra: name,
        fds: Vec::new(),
        finish: Box::new(move || {
            let (_, halves) = server.accept().map_err(peer_error)?;
            Ok(into_link(halves, size, shm))
        }),
    })
}

/// Child side: creates both channels and sends the driver its halves.
pub(in crate::transport) fn accept(size: usize, name: &str, shm: bool) -> Result<Box<dyn Link>> {
    let bootstrap = IpcSender::<Halves>::connect(name.to_owned())?;
    let (mine, theirs) = if shm {
        let (down_tx, down_rx) = ipc::channel::<IpcSharedMemory>()?;
        let (up_tx, up_rx) = ipc::channel::<IpcSharedMemory>()?;
        (Halves::Shm(up_tx, down_rx), Halves::Shm(down_tx, up_rx))
    } else {
        let (down_tx, down_rx) = ipc::bytes_channel()?;
        let (up_tx, up_rx) = ipc::bytes_channel()?;
        (Halves::Bytes(up_tx, down_rx), Halves::Bytes(down_tx, up_rx))
    };
    bootstrap.send(theirs).map_err(peer_error)?;
    Ok(into_link(mine, size, shm))
}

fn into_link(halves: Halves, size: usize, _shm: bool) -> Box<dyn Link> {
    let buf = vec![0; size];
    match halves {
        Halves::Bytes(tx, rx) => Box::new(BytesLink { tx, rx, buf }),
        Halves::Shm(tx, rx) => Box::new(ShmLink { tx, rx, buf }),
    }
}

impl Link for BytesLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        fill(&mut self.buf);
        Ok(self.tx.send(&self.buf)?)
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let bytes = self.rx.recv().map_err(peer_error)?;
        check(&bytes)
    }
}

impl Link for ShmLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        // `IpcSharedMemory` is immutable once made: the message is written to a private buffer
        // and copied into a new region, which is how ipc-channel users send it.
        fill(&mut self.buf);
        let region = IpcSharedMemory::from_bytes(&self.buf);
        self.tx.send(region).map_err(peer_error)
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let region = self.rx.recv().map_err(peer_error)?;
        check(&region)
    }
}

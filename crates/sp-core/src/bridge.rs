//! A bridge from a message [`Receiver`] to a `crossbeam_channel::Receiver`, so IPC messages can be
//! `select!`ed together with in-process channels.
//!
//! A reader thread waits in `poll` on two descriptors: the socket and the read end of a private
//! stop pipe. Dropping the [`Bridge`] closes the write end of that pipe, which wakes the thread at
//! once; it then exits and the drop joins it. The thread also ends when the peer goes away (after
//! forwarding [`Error::PeerGone`]), on a receive error that ends the channel, or when every
//! crossbeam receiver has been dropped.

use std::os::fd::OwnedFd;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver as CbReceiver, Sender as CbSender, select};
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::pipe::PipeFlags;

use crate::error::{Error, Result, TryRecvError};
use crate::receiver::{Message, Receiver};

/// Owns the reader thread that feeds [`Bridge::receiver`]; dropping it stops and joins the thread.
///
/// # Examples
/// ```
/// use crossbeam_channel::select;
/// let (a, b) = sp_core::Channel::pair(sp_core::SocketKind::SeqPacket)?;
/// let (_tx, rx) = b.split();
/// let bridge = rx.into_crossbeam(16)?;
/// let (local_tx, local_rx) = crossbeam_channel::unbounded::<u32>();
/// a.send(b"ping", &[])?;
/// select! {
///     recv(bridge.receiver()) -> msg => assert_eq!(msg.unwrap()?.bytes, b"ping"),
///     recv(local_rx) -> _ => unreachable!(),
/// }
/// # drop(local_tx);
/// # Ok::<(), sp_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Bridge {
    rx: CbReceiver<Result<Message>>,
    stop_tx: Option<(OwnedFd, CbSender<()>)>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Turns this receiver into a [`crossbeam_channel::Receiver`] fed by a reader thread; see
    /// [`Bridge`].
    ///
    /// # Errors
    /// When the stop pipe or the thread cannot be created.
    pub fn into_crossbeam(self, capacity: usize) -> Result<Bridge> {
        Bridge::start(self, capacity)
    }
}

impl Bridge {
    fn start(receiver: Receiver, capacity: usize) -> Result<Self> {
        let (stop_read, stop_write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
        let (cb_stop_tx, cb_stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let thread = std::thread::Builder::new()
            .name("sp-core-bridge".into())
            .spawn(move || pump(receiver, &tx, &stop_read, &cb_stop_rx))?;
        Ok(Self {
            rx,
            stop_tx: Some((stop_write, cb_stop_tx)),
            thread: Some(thread),
        })
    }

    /// The crossbeam receiver: each item is a message, or the error that ended the stream (after
    /// which the channel is disconnected).
    pub fn receiver(&self) -> &CbReceiver<Result<Message>> {
        &self.rx
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Closing the pipe's write end wakes a `poll`; dropping the crossbeam sender wakes a
        // blocked hand-over.
        drop(self.stop_tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reader thread: receive, forward, until told to stop or the channel ends.
fn pump(
    mut receiver: Receiver,
    tx: &CbSender<Result<Message>>,
    stop: &OwnedFd,
    stop_rx: &CbReceiver<()>,
) {
    loop {
        // Drain every complete message first: a stream receiver may hold several frames.
        let item = match receiver.try_recv() {
            Ok(msg) => Ok(msg),
            Err(TryRecvError::Empty) => match wait(&receiver, stop) {
                Ok(true) => continue,
                Ok(false) => return,
                Err(err) => Err(err),
            },
            Err(TryRecvError::Broken(err)) => Err(err),
        };
        let ends = match &item {
            Ok(_) => false,
            Err(Error::FdCountMismatch { .. } | Error::TooLarge { .. }) => false,
            Err(Error::FdsTruncated { .. } | Error::FdLimit { .. } | Error::Malformed(_)) => false,
            Err(_) => true,
        };
        select! {
            send(tx, item) -> res => if res.is_err() { return },
            recv(stop_rx) -> _ => return,
        }
        if ends {
            return;
        }
    }
}

/// Waits until the socket is readable (`true`) or the stop pipe closes (`false`).
fn wait(receiver: &Receiver, stop: &OwnedFd) -> Result<bool> {
    loop {
        let mut fds = [
            PollFd::from_borrowed_fd(receiver.fd(), PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {
                if !fds[1].revents().is_empty() {
                    return Ok(false);
                }
                if !fds[0].revents().is_empty() {
                    return Ok(true);
                }
            }
            Err(Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

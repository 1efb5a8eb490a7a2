//! A record that announces an attachment (descriptors, a blob), from the moment it is taken off
//! the ring to the moment its ATTACH is matched: two steps, so that a receive which may not wait
//! (the async receiver's) leaves the record in the receiver and a later receive resumes it.
//!
//! 1. [`start_awaiting`](Receiver::start_awaiting): the record, already copied into
//!    `scratch[..len]` and released, is decoded as an announcement and checked against the
//!    sequence number expected; it becomes the receiver's [`Awaiting`], with a deadline of the
//!    attachment timeout from now.
//! 2. [`finish_awaiting`](Receiver::finish_awaiting): the ATTACH from the control socket, checked
//!    against the announcement, completes it. [`AttachWait::Block`] waits for it until the
//!    deadline (the blocking API, `Select`); [`AttachWait::Resume`] only looks, and when it is not
//!    there yet and the deadline has not passed, keeps the record for the next call.
//!
//! Either way a missing ATTACH costs at most the attachment timeout, counted once from the moment
//! the record was taken, however many receives were cancelled in between; then the receiver
//! answers [`Violation::MissingAttachment`] for good.

use std::os::fd::OwnedFd;

use sp_shm::Blob;

use super::{Body, Fetched, Receiver};
use crate::error::{Error, Fail, Result, Violation};
use crate::limit::Limit;
use crate::wire::{self, Announce, FDS_PREFIX_LEN, KIND_BLOB, KIND_VALUE_FDS};

/// A record taken off the ring and copied into `scratch[..len]` whose ATTACH has not been matched.
#[derive(Debug, Clone, Copy)]
pub(super) struct Awaiting {
    kind: u32,
    len: usize,
    announce: Announce,
    /// The attachment timeout from the moment the record was taken.
    limit: Limit,
}

/// How a receive waits for the ATTACH of the record it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttachWait {
    /// In this call, until the record's deadline.
    Block,
    /// Not at all: an ATTACH that is not there yet (deadline not passed) is [`Fail::Wait`], and the
    /// record stays in the receiver for the next call.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    Resume,
}

/// What one look at the control socket gave.
enum Got {
    Attach,
    Nothing,
    Broken(sp_core::Error),
}

impl<T> Receiver<T> {
    /// Step 1: `scratch[..len]` holds a record of `kind` other than a plain value; checks its
    /// announcement and keeps it as the record awaiting its ATTACH.
    pub(super) fn start_awaiting(&mut self, kind: u32, len: usize) -> Result<()> {
        debug_assert!(self.awaiting.is_none());
        let announce =
            wire::decode_announce(kind, self.scratch.bytes(0, len)).map_err(Error::Protocol)?;
        if announce.seq != self.seq {
            return Err(Error::Protocol(Violation::Sequence {
                expected: self.seq,
                got: announce.seq,
            }));
        }
        self.awaiting = Some(Awaiting {
            kind,
            len,
            announce,
            limit: Limit::after(self.attachment_timeout),
        });
        Ok(())
    }

    /// When a record taken off the ring awaits its ATTACH: how long it may still wait
    /// ([`Limit::Until`] its deadline, or [`Limit::Forever`] for a timeout too long for the clock).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn attach_limit(&self) -> Option<Limit> {
        self.awaiting.map(|awaiting| awaiting.limit)
    }

    /// Step 2: the ATTACH of the awaiting record, checked; the record's body and descriptors.
    /// Every outcome but [`Fail::Wait`] (only with [`AttachWait::Resume`]) ends the awaiting.
    pub(super) fn finish_awaiting(&mut self, wait: AttachWait) -> Result<Fetched, Fail> {
        let Some(awaiting) = self.awaiting.take() else {
            debug_assert!(false, "finish_awaiting with no record awaiting");
            return Err(Fail::Wait);
        };
        let limit = match wait {
            AttachWait::Block => awaiting.limit,
            AttachWait::Resume => Limit::Now,
        };
        match self.look(limit) {
            Got::Attach => {}
            Got::Nothing => {
                let expired = awaiting
                    .limit
                    .remaining()
                    .is_some_and(|left| left.is_zero());
                if wait == AttachWait::Resume && !expired {
                    self.awaiting = Some(awaiting);
                    return Err(Fail::Wait);
                }
                return Err(Error::Protocol(Violation::MissingAttachment).into());
            }
            Got::Broken(sp_core::Error::PeerGone) => {
                return Err(Error::Protocol(Violation::MissingAttachment).into());
            }
            Got::Broken(
                sp_core::Error::FdCountMismatch { .. }
                | sp_core::Error::FdsTruncated { .. }
                | sp_core::Error::Malformed(_)
                | sp_core::Error::TooLarge { .. },
            ) => return Err(Error::Protocol(Violation::BadAttachment).into()),
            Got::Broken(err @ sp_core::Error::FdLimit { .. }) => {
                // This process's own limit: the ATTACH was consumed (its descriptors closed), so
                // the next record still finds its own; only this value is lost.
                self.seq += 1;
                return Err(Error::from(err).into());
            }
            Got::Broken(other) => return Err(Error::from(other).into()),
        }
        wire::check_attach(&self.msg.bytes, self.msg.fds.len(), awaiting.announce)
            .map_err(Error::Protocol)?;
        self.seq += 1;
        let fds = std::mem::take(&mut self.msg.fds);
        Ok(self.body(awaiting, fds)?)
    }

    /// One receive of the next control message into `msg`, waiting per `limit`.
    fn look(&mut self, limit: Limit) -> Got {
        let res = match limit.remaining() {
            None => self.control.recv_into(&mut self.msg).map_err(Some),
            Some(left) if left.is_zero() => {
                self.control
                    .try_recv_into(&mut self.msg)
                    .map_err(|err| match err {
                        sp_core::TryRecvError::Empty => None,
                        sp_core::TryRecvError::Broken(err) => Some(err),
                    })
            }
            Some(left) => self
                .control
                .recv_into_timeout(&mut self.msg, left)
                .map_err(|err| match err {
                    sp_core::RecvTimeoutError::Timeout => None,
                    sp_core::RecvTimeoutError::Broken(err) => Some(err),
                }),
        };
        match res {
            Ok(()) => Got::Attach,
            Err(None) => Got::Nothing,
            Err(Some(err)) => Got::Broken(err),
        }
    }

    /// The completed record: its encoding (after the descriptor prefix, or in the blob, whose
    /// memfd is checked and mapped) and its other descriptors.
    fn body(&self, awaiting: Awaiting, mut fds: Vec<OwnedFd>) -> Result<Fetched> {
        let Awaiting {
            kind,
            len,
            announce,
            ..
        } = awaiting;
        let Some(blob_len) = announce.blob else {
            debug_assert_eq!(kind, KIND_VALUE_FDS);
            return Ok(Fetched {
                body: Body::Scratch {
                    start: FDS_PREFIX_LEN,
                    len: len - FDS_PREFIX_LEN,
                },
                fds,
            });
        };
        debug_assert_eq!(kind, KIND_BLOB);
        // `check_attach` made sure the blob's memfd came first.
        let blob_fd = fds.remove(0);
        if blob_len > self.max_blob_len {
            return Err(Error::TooLarge {
                len: usize::try_from(blob_len).unwrap_or(usize::MAX),
                max: usize::try_from(self.max_blob_len).unwrap_or(usize::MAX),
            });
        }
        let blob = Blob::from_fd(blob_fd, blob_len).map_err(|err| match err {
            sp_shm::Error::Refused(why) => Error::Protocol(Violation::BadBlob(why)),
            other => other.into(),
        })?;
        Ok(Fetched {
            body: Body::Blob(blob),
            fds,
        })
    }
}

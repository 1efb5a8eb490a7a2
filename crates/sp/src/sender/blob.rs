//! Values sent as blobs: a postcard value written to a fresh memfd as it is encoded
//! (`BlobWriter`), any other filled in place through a mapping (`Blob::build`); sealed, then
//! announced by an ATTACH carrying the memfd and committed as a BLOB record.

use std::os::fd::{AsFd, BorrowedFd};

use sp_shm::{Blob, BlobWriter, WriteGrant};

use super::{Control, Sender, reserve};
use crate::error::{EncodeError, Error, Fail};
use crate::limit::Limit;
use crate::value::Value;
use crate::wire::{self, Announce, BLOB_RECORD_LEN};

impl<T: Value> Sender<T> {
    /// Encodes `value` into a blob as the encoding is produced (`write(2)` to the memfd in
    /// pieces) and sends it. Unless `always`, `Ok(false)`, with nothing sent, if the encoding is
    /// short enough for a ring record after all (the value goes the usual way then).
    pub(super) fn send_blob_in_pieces(
        &mut self,
        value: &T,
        fds: &[BorrowedFd<'_>],
        limit: Limit,
        always: bool,
    ) -> Result<bool, Fail> {
        // The record first: a try that finds no room must not have built a blob for nothing.
        let grant = reserve(&mut self.producer, &mut self.wanted, BLOB_RECORD_LEN, limit)?;
        let mut writer = BlobWriter::new().map_err(Error::from)?;
        let max = self.max_blob_len;
        let mut failed = None;
        let mut sink = |piece: &[u8]| {
            if writer.len() + piece.len() as u64 > max {
                return false;
            }
            writer
                .append(piece)
                .map_err(|err| failed = Some(err))
                .is_ok()
        };
        let encoded = value.encode_in_pieces(&mut self.scratch, &mut sink);
        if let Some(err) = failed {
            return Err(Error::from(err).into());
        }
        let len = match encoded {
            Ok(len) => len,
            Err(EncodeError::BufferFull) => {
                // Over `max_blob_len`: the length pass, on this error path only, names the length.
                let len = value.encoded_len().map_err(Error::Encode)?;
                self.check_blob_len(len)?;
                return Err(Error::Encode(EncodeError::Other).into());
            }
            Err(err) => return Err(Error::Encode(err).into()),
        };
        self.last_was_blob = always || len > self.threshold;
        if !self.last_was_blob {
            return Ok(false);
        }
        let blob = writer.finish().map_err(Error::from)?;
        announce_blob(grant, blob, fds, &self.control, &mut self.seq, limit)?;
        Ok(true)
    }

    /// [`Error::TooLarge`] for a blob of `len` bytes over [`Config::max_blob_len`].
    pub(super) fn check_blob_len(&self, len: usize) -> Result<(), Fail> {
        if len as u64 > self.max_blob_len {
            return Err(Error::TooLarge {
                len,
                max: usize::try_from(self.max_blob_len).unwrap_or(usize::MAX),
            }
            .into());
        }
        Ok(())
    }

    /// Sends a value of `len` encoded bytes as a blob that `fill` writes.
    pub(super) fn send_blob(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), EncodeError>,
        fds: &[BorrowedFd<'_>],
        limit: Limit,
    ) -> Result<(), Fail> {
        self.check_blob_len(len)?;
        // The record first: a try that finds no room must not have built a blob for nothing.
        let grant = reserve(&mut self.producer, &mut self.wanted, BLOB_RECORD_LEN, limit)?;
        let mut filled = Ok(());
        let blob = Blob::build(len, |bytes| filled = fill(bytes)).map_err(Error::from)?;
        filled.map_err(Error::Encode)?;
        announce_blob(grant, blob, fds, &self.control, &mut self.seq, limit)
    }
}

/// Sends the ATTACH with `blob`'s memfd (and `fds`), then commits the reserved record that
/// announces it.
fn announce_blob(
    mut grant: WriteGrant<'_>,
    blob: Blob,
    fds: &[BorrowedFd<'_>],
    control: &Control,
    seq: &mut u64,
    limit: Limit,
) -> Result<(), Fail> {
    let len = blob.len() as u64;
    let announce = Announce {
        seq: *seq,
        n_fds: fds.len() as u32,
        blob: Some(len),
    };
    let mut all_fds = Vec::with_capacity(fds.len() + 1);
    all_fds.push(blob.as_fd());
    all_fds.extend_from_slice(fds);
    control.send(&wire::encode_attach(announce), &all_fds, limit)?;
    *seq += 1;
    wire::encode_blob_record(announce.seq, announce.n_fds, len, &mut grant);
    grant.set_kind(wire::KIND_BLOB)?;
    grant.commit(BLOB_RECORD_LEN)?;
    Ok(())
}

//! The reading side: finding and validating the record at the head, releasing it, publishing
//! the head and waking a parked producer.

use std::time::{Duration, Instant};

use super::area::{Payload, ReadOnly, Shared};
use super::wait::{Limit, RecordWait, WaitError, wait_for, wake_if_waiting};
use super::{Stats, corrupt};
use crate::error::{Corruption, Error, RecvTimeoutError, Result, TryRecvError};
use crate::idle::IdleStrategy;
use crate::layout::{self, HEADER_LEN, PADDING, Slot};
use crate::sync::Ordering;
use crate::wake::{WakeSocket, deadline_after};

mod grant;
pub use grant::{ReadGrant, ReadGrantRef};

/// The reading side of a ring.
///
/// `Send`, not `Sync`. After the producer's process dies the consumer still delivers every
/// record the producer committed, then reports [`Error::PeerGone`].
#[derive(Debug)]
pub struct Consumer {
    pub(super) shared: Shared<ReadOnly>,
    pub(super) capacity: u64,
    pub(super) max_payload: usize,
    /// Authoritative head: bytes released, published or not.
    pub(super) head: u64,
    /// The record `poll_record` found last, which a grant borrows and releasing advances past.
    pub(super) current: Record,
    head_published: u64,
    /// Where a record taken on the fast path may end at the latest: the end of the head's lap
    /// (no padding to skip, no hang-up check due) and the read-ahead limit
    /// (`head_published + capacity - 8`). Recomputed on the slow path and on every publication.
    fast_end: u64,
    publish_every: u64,
    pub(super) wake: WakeSocket,
    pub(super) idle: IdleStrategy,
    pub(super) stats: Stats,
    /// A wait saw the producer's process hang up: deliver what is left, then `PeerGone`.
    pub(super) peer_gone: bool,
}

/// A validated record: its payload (inside the data area) and kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    pub(super) payload: Payload,
    kind: u32,
}

/// What `Consumer::check_slow` found at the head.
#[derive(Debug, Clone, Copy)]
enum SlowPath {
    /// No record yet.
    Empty,
    /// A valid record; `fast_end` now admits it.
    Validated,
    /// A padding record, skipped: the head is at offset 0.
    SkippedPadding,
}

impl Consumer {
    pub(crate) fn from_parts(
        shared: Shared<ReadOnly>,
        capacity: u64,
        max_payload: usize,
        wake: WakeSocket,
        idle: IdleStrategy,
        publish_every: usize,
    ) -> Self {
        crate::sync::register_asymmetric_fences();
        Self {
            shared,
            capacity,
            max_payload,
            head: 0,
            current: Record {
                payload: Payload::EMPTY,
                kind: 0,
            },
            head_published: 0,
            fast_end: 0,
            publish_every: publish_every as u64,
            wake,
            idle,
            stats: Stats::default(),
            peer_gone: false,
        }
    }

    /// Waits for the next record and borrows it in place.
    ///
    /// # Errors
    /// [`Error::PeerGone`] once the producer's process is gone and every record it committed has
    /// been delivered; [`Error::Corrupt`] for a bad record header.
    #[inline(always)]
    pub fn read(&mut self) -> Result<ReadGrant<'_>> {
        self.wait_record(Limit::Forever)
            .map_err(WaitError::forever)?;
        Ok(ReadGrant { consumer: self })
    }

    /// Borrows the next record if one is committed.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`](sp_core::TryRecvError::Empty) when none is (or `Broken` with
    /// [`Error::PeerGone`] once a wait has seen the producer go and everything was delivered);
    /// otherwise `Broken` as [`read`](Self::read).
    #[inline(always)]
    pub fn try_read(&mut self) -> Result<ReadGrant<'_>, TryRecvError> {
        if self.poll_record()? {
            Ok(ReadGrant { consumer: self })
        } else {
            Err(self.empty())
        }
    }

    /// Waits at most `timeout` for the next record.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`](sp_core::RecvTimeoutError::Timeout); otherwise `Broken` as
    /// [`read`](Self::read).
    #[inline(always)]
    pub fn read_timeout(&mut self, timeout: Duration) -> Result<ReadGrant<'_>, RecvTimeoutError> {
        self.wait_record(Limit::After(timeout))
            .map_err(WaitError::into_recv)?;
        Ok(ReadGrant { consumer: self })
    }

    /// Waits for the next record and copies its payload into `buf` (replacing its contents);
    /// returns the record's kind.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<u32> {
        let grant = self.read()?;
        Ok(grant.copy_into_vec(buf))
    }

    /// Copies the next record into `buf` if one is committed; returns its kind.
    ///
    /// # Errors
    /// As [`try_read`](Self::try_read).
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<u32, TryRecvError> {
        let grant = self.try_read()?;
        Ok(grant.copy_into_vec(buf))
    }

    /// Copies the next record into `buf`, waiting at most `timeout`; returns its kind.
    ///
    /// # Errors
    /// As [`read_timeout`](Self::read_timeout).
    pub fn recv_into_timeout(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<u32, RecvTimeoutError> {
        let grant = self.read_timeout(timeout)?;
        Ok(grant.copy_into_vec(buf))
    }

    /// Copies up to `max` committed records into `out` (appending), publishing the head once;
    /// returns how many.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`](sp_core::TryRecvError::Empty) if there was none; otherwise as
    /// [`try_read`](Self::try_read).
    pub fn try_recv_batch(
        &mut self,
        out: &mut Vec<Vec<u8>>,
        max: usize,
    ) -> Result<usize, TryRecvError> {
        let n = self.drain_into(out, max)?;
        if n == 0 && max > 0 {
            return Err(self.empty());
        }
        Ok(n)
    }

    /// Waits for at least one record, then copies up to `max` into `out` (appending),
    /// publishing the head once; returns how many.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn recv_batch(&mut self, out: &mut Vec<Vec<u8>>, max: usize) -> Result<usize> {
        self.recv_batch_until(out, max, None)
            .map_err(WaitError::forever)
    }

    /// As [`recv_batch`](Self::recv_batch), waiting at most `timeout` for the first record.
    ///
    /// # Errors
    /// As [`read_timeout`](Self::read_timeout).
    pub fn recv_batch_timeout(
        &mut self,
        out: &mut Vec<Vec<u8>>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        self.recv_batch_until(out, max, deadline_after(timeout))
            .map_err(WaitError::into_recv)
    }

    fn recv_batch_until(
        &mut self,
        out: &mut Vec<Vec<u8>>,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<usize, WaitError> {
        if max == 0 {
            return Ok(0);
        }
        self.wait_record(Limit::Until(deadline))?;
        out.push(self.copy_current());
        self.advance();
        let n = 1 + self.drain_into(out, max - 1)?;
        self.publish()?;
        Ok(n)
    }

    /// Calls `f` on up to `max` committed records in place, publishing the head once; returns
    /// how many. Does not wait.
    ///
    /// # Errors
    /// As [`read`](Self::read): finding none returns `Ok(0)`.
    pub fn for_each_available(
        &mut self,
        max: usize,
        mut f: impl FnMut(&ReadGrantRef<'_>),
    ) -> Result<usize> {
        let mut n = 0;
        while n < max && self.poll_record()? {
            f(&ReadGrantRef {
                data: &self.shared.data,
                rec: self.current,
            });
            self.advance();
            n += 1;
        }
        self.publish()?;
        Ok(n)
    }

    /// As [`for_each_available`](Self::for_each_available), but finding no record is
    /// [`TryRecvError::Empty`](sp_core::TryRecvError::Empty), or `Broken(PeerGone)` once the
    /// producer is gone and every record it committed has been taken.
    ///
    /// # Errors
    /// As [`try_read`](Self::try_read).
    pub fn try_for_each_available(
        &mut self,
        max: usize,
        f: impl FnMut(&ReadGrantRef<'_>),
    ) -> Result<usize, TryRecvError> {
        match self.for_each_available(max, f)? {
            0 if max > 0 => Err(self.empty()),
            n => Ok(n),
        }
    }

    /// Publishes the head now (records released but not yet published under
    /// [`Config::publish_every`](crate::Config::publish_every)).
    ///
    /// # Errors
    /// [`Error::PeerGone`] if a wake-up could not be delivered because the peer is gone.
    pub fn flush(&mut self) -> Result<()> {
        self.publish()
    }

    /// `poll(2)` with a zero timeout: whether the producer's process has gone (records it
    /// committed may still be waiting to be read).
    ///
    /// # Errors
    /// Only if `poll` fails.
    pub fn peer_gone(&self) -> Result<bool> {
        Ok(self.peer_gone || self.wake.hung_up()?)
    }

    /// The data area's size in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The largest payload one record can carry.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// This side's counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The idle strategy of the wait that starts now, blocking (`wait.rs`) or async
    /// (`crate::tokio`): this side's own, except that until the first record it parks at once if
    /// it parks at all. A peer that was just started may share this core (see `idle.rs`), and
    /// spinning there holds it off until it blocks or exits; a parked consumer is woken by the
    /// first record's wake-up byte.
    pub(crate) fn wait_strategy(&self) -> IdleStrategy {
        if self.stats.records == 0 && self.idle.parks() {
            IdleStrategy::park()
        } else {
            self.idle
        }
    }

    /// What a non-blocking call reports when no record is committed, after publishing the head
    /// (a side that may go on to wait must not hold back space): `Empty`, or `PeerGone` once a
    /// wait has seen the producer's process hang up.
    fn empty(&mut self) -> TryRecvError {
        if let Err(err) = self.publish() {
            return err.into();
        }
        if self.peer_gone {
            TryRecvError::Broken(Error::PeerGone)
        } else {
            TryRecvError::Empty
        }
    }

    fn drain_into(&mut self, out: &mut Vec<Vec<u8>>, max: usize) -> Result<usize> {
        let mut n = 0;
        while n < max && self.poll_record()? {
            out.push(self.copy_current());
            self.advance();
            n += 1;
        }
        Ok(n)
    }

    /// The payload of the current record, copied.
    fn copy_current(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.current.payload.len()];
        self.shared.data.copy_out(self.current.payload, &mut bytes);
        bytes
    }

    /// Makes the next committed record, validated, the `current` one, if there is one; skips
    /// padding.
    ///
    /// The record is made here, inline, from a header word that passed the fast path's checks;
    /// the out-of-line slow path never returns one (through memory it would be reloaded with
    /// loads wider than the stores that wrote it, which stalls). It validates the word in full,
    /// skips padding and moves `fast_end`, and the loop loads the header again.
    #[inline]
    pub(super) fn poll_record(&mut self) -> Result<bool> {
        let mut validated = false;
        loop {
            let header = self.shared.data.word_at(self.head);
            // SYNC: (B) Acquire pairs with the producer's Release store of this header in
            // `Producer::finish`: the payload and the zeroed slot after it are visible below.
            let word = self.shared.data.load_header(header);
            // The fast path takes a committed record that is not padding, not longer than the
            // largest payload, and ends by `fast_end` (inside this lap and the read-ahead limit).
            let len = (word as u32 & !layout::COMMITTED) as usize;
            let kind = (word >> 32) as u32;
            if word as u32 & layout::COMMITTED != 0
                && kind != PADDING
                && len <= self.max_payload
                && self.head + layout::record_size(len) as u64 <= self.fast_end
                && let Some(payload) = self.shared.data.payload(header, len)
            {
                self.current = Record { payload, kind };
                return Ok(true);
            }
            match self.check_slow(word, validated)? {
                SlowPath::Empty => return Ok(false),
                SlowPath::Validated => validated = true,
                SlowPath::SkippedPadding => {}
            }
        }
    }

    /// Every check on the header word `word` at the head, for what the fast path did not take:
    /// empty, invalid, padding (skipped), too long, past the end, past the read-ahead limit;
    /// a hang-up check once a lap; `fast_end` recomputed so that the next load of a valid
    /// record takes the fast path. A header that validates twice in one `poll_record` changed
    /// under it after being committed, which only a broken producer does.
    #[inline(never)]
    fn check_slow(&mut self, word: u64, validated: bool) -> Result<SlowPath> {
        let header = self.shared.data.word_at(self.head);
        let to_end = self.capacity - header.offset() as u64;
        let (len, kind) = match layout::decode_header(word) {
            Slot::Empty => return Ok(SlowPath::Empty),
            Slot::Invalid => return Err(corrupt(Corruption::NotAHeader, word)),
            Slot::Header(len, kind) => (len, kind),
        };
        // A producer writes only space it knows is free: its cached head is at most the head
        // we published, so nothing it commits ends past `head_published + capacity - 8`. This
        // bounds how far a peer can lead us: without it, a data area full of valid headers
        // would be an endless supply of records (and, with publication stopped once the peer
        // is gone, see `publish`, a dead peer's leftovers are at most one ring).
        let limit = self.head_published + self.capacity - HEADER_LEN as u64;
        if kind == PADDING {
            // Padding at offset 0 is never needed (every record fits a whole ring), so padding
            // is followed by a real record: `poll_record` comes here at most twice per record.
            if header.offset() == 0 || u64::from(len) != to_end - HEADER_LEN as u64 {
                return Err(corrupt(Corruption::BadPadding, word));
            }
            if self.head + to_end > limit {
                return Err(corrupt(Corruption::BeyondTheProducer, word));
            }
            self.head += to_end;
            return Ok(SlowPath::SkippedPadding);
        }
        let len = len as usize;
        if len > self.max_payload {
            return Err(corrupt(Corruption::TooLong, word));
        }
        if self.shared.data.payload(header, len).is_none() {
            return Err(corrupt(Corruption::PastTheEnd, word));
        }
        if self.head + layout::record_size(len) as u64 > limit {
            return Err(corrupt(Corruption::BeyondTheProducer, word));
        }
        if validated {
            return Err(corrupt(Corruption::HeaderChanged, word));
        }
        if header.offset() == 0 && !self.peer_gone && self.wake.hung_up()? {
            // Once a lap, look for a hang-up even if records keep coming: a dead peer's ring
            // may hold a cycle of valid headers that would otherwise never run out.
            self.peer_gone = true;
        }
        self.set_fast_end();
        Ok(SlowPath::Validated)
    }

    /// `fast_end` for the head's lap and the head last published. The first record of a lap
    /// always takes the slow path: `fast_end` is at most the end of the previous lap.
    #[inline]
    fn set_fast_end(&mut self) {
        let lap_end = (self.head | (self.capacity - 1)) + 1;
        self.fast_end = lap_end.min(self.head_published + self.capacity - HEADER_LEN as u64);
    }

    /// Releases the current record privately.
    #[inline]
    fn advance(&mut self) {
        let len = self.current.payload.len();
        self.head += layout::record_size(len) as u64;
        self.stats.records += 1;
        self.stats.bytes += len as u64;
    }

    /// Releases the current record; publishes once `publish_every` bytes are pending.
    #[inline]
    fn release(&mut self) {
        self.advance();
        if self.head - self.head_published > self.publish_every {
            // A failure here means the producer is gone; the next wait reports it.
            let _ = self.publish_head();
        }
    }

    /// Publishes the head, if it moved, and wakes the producer if it is parked.
    #[inline]
    pub(super) fn publish(&mut self) -> Result<()> {
        if self.head == self.head_published {
            return Ok(());
        }
        self.publish_head()
    }

    /// Stores the head and wakes the producer if it is parked. Once the producer is gone nothing
    /// is published: nobody reads the head, and the frozen `head_published` caps what is left to
    /// drain at one ring (see `poll_record`). `fast_end` is not moved here: it only grows with
    /// the published head, and the slow path recomputes it when a record reaches it.
    #[inline]
    fn publish_head(&mut self) -> Result<()> {
        if self.peer_gone {
            return Ok(());
        }
        let ctrl = self.shared.ctrl();
        // SYNC: (C) Release pairs with the producer's Acquire load of the head in
        // `Producer::reload_head`: our reads of the released records happen before its writes.
        ctrl.head.word.store(self.head, Ordering::Release);
        self.head_published = self.head;
        self.stats.publications += 1;
        wake_if_waiting(&ctrl.producer_waiting.word, &self.wake, &mut self.stats)
    }

    /// A record now (as `current`), or wait for one; the first attempt is inlined (see
    /// `Producer::wait_claim`).
    #[inline]
    fn wait_record(&mut self, limit: Limit) -> Result<(), WaitError> {
        if self.poll_record()? {
            Ok(())
        } else {
            self.wait_record_slow(limit)
        }
    }

    #[cold]
    #[inline(never)]
    fn wait_record_slow(&mut self, limit: Limit) -> Result<(), WaitError> {
        wait_for(&mut RecordWait { consumer: self }, limit)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.publish();
    }
}

//! Values as their encodings: receiving a record's bytes without decoding them, and sending bytes
//! that already are a value's encoding without encoding anything.
//!
//! This is what a relay needs (a gateway that carries a typed stream to another host, say): the
//! bytes it forwards are exactly the bytes [`Value::encode`] wrote and [`Value::decode`] will read,
//! so nothing is decoded and encoded again on the way. A value that went through the ring as a
//! blob is handed out as its bytes like any other (a blob is only bytes once it is mapped), and
//! [`Sender::send_encoded`] turns bytes over the blob threshold into a blob again.
//!
//! Nothing here checks that the bytes are a valid `T`: the receiver that finally decodes them
//! does, as it checks everything a peer sends ([`Error::Decode`](crate::Error::Decode) for bytes
//! that are not a `T`, and the stream goes on).

use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::error::{
    Error, Fail, RecvTimeoutError, Result, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::limit::Limit;
use crate::receiver::{AttachWait, Receiver};
use crate::sender::{Sender, Wake};
use crate::value::Value;

impl<T: Value> Receiver<T> {
    /// Waits for the next value and lends its encoding (the bytes [`Value::decode`] would read)
    /// and the descriptors sent with it to `f`, without decoding it. A value that came as a blob
    /// is lent from the blob's sealed memory.
    ///
    /// # Errors
    /// [`Error::PeerGone`] once the peer is gone and every value it sent has been handed out;
    /// [`Error::Protocol`] when the peer broke the protocol (every later call too).
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = sp::channel::<String>(&sp::Config::new())?;
    /// tx.send(&"relayed".to_string())?;
    /// let bytes = rx.recv_encoded(|bytes, _fds| bytes.to_vec())?;
    /// // postcard: the length, then the UTF-8 bytes.
    /// assert_eq!(bytes, b"\x07relayed");
    /// # Ok::<(), sp::Error>(())
    /// ```
    pub fn recv_encoded<R>(&mut self, f: impl FnOnce(&[u8], Vec<OwnedFd>) -> R) -> Result<R> {
        self.take(Limit::Forever, AttachWait::Block, f)
    }

    /// As [`recv_encoded`](Self::recv_encoded), if a value is there.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`](sp_core::TryRecvError::Empty) when there is none; otherwise as
    /// [`recv_encoded`](Self::recv_encoded).
    pub fn try_recv_encoded<R>(
        &mut self,
        f: impl FnOnce(&[u8], Vec<OwnedFd>) -> R,
    ) -> Result<R, TryRecvError> {
        self.take(Limit::Now, AttachWait::Block, f)
    }

    /// As [`recv_encoded`](Self::recv_encoded), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`](sp_core::RecvTimeoutError::Timeout); otherwise as
    /// [`recv_encoded`](Self::recv_encoded).
    pub fn recv_encoded_timeout<R>(
        &mut self,
        f: impl FnOnce(&[u8], Vec<OwnedFd>) -> R,
        timeout: Duration,
    ) -> Result<R, RecvTimeoutError> {
        self.take(Limit::after(timeout), AttachWait::Block, f)
    }
}

impl<T: Value> Sender<T> {
    /// Sends `bytes`, which must be the encoding of a `T` (as [`Receiver::recv_encoded`] hands
    /// it out, or [`Value::encode`] writes it), waiting for room as long as it takes. It goes
    /// into the ring as it is, or as a blob above the blob threshold, exactly like a value with
    /// that encoding.
    ///
    /// The bytes are not checked: bytes that are not a `T` reach the receiver, which reports
    /// [`Error::Decode`](crate::Error::Decode) for them and goes on with the next value.
    ///
    /// # Errors
    /// [`Error::PeerGone`] if the peer is gone; [`Error::TooLarge`] for a blob over
    /// [`Config::max_blob_len`](crate::Config::max_blob_len). Nothing was sent on error.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = sp::channel::<String>(&sp::Config::new())?;
    /// tx.send_encoded(b"\x05hello")?;
    /// assert_eq!(rx.recv()?, "hello");
    /// # Ok::<(), sp::Error>(())
    /// ```
    pub fn send_encoded(&mut self, bytes: &[u8]) -> Result<()> {
        self.send_filled(
            bytes.len(),
            |out| out.copy_from_slice(bytes),
            Limit::Forever,
            Wake::Now,
        )
        .map_err(|fail| match fail {
            Fail::Broken(err) => err,
            Fail::Wait => Error::Os(std::io::ErrorKind::WouldBlock.into()),
        })
    }

    /// As [`send_encoded`](Self::send_encoded), if the ring has room now.
    ///
    /// # Errors
    /// [`TrySendError::Full`](sp_core::TrySendError::Full) when it has not (nothing was sent);
    /// otherwise as [`send_encoded`](Self::send_encoded).
    pub fn try_send_encoded(&mut self, bytes: &[u8]) -> Result<(), TrySendError> {
        self.send_filled(
            bytes.len(),
            |out| out.copy_from_slice(bytes),
            Limit::Now,
            Wake::Now,
        )
        .map_err(|fail| waited(fail, TrySendError::Full))
    }

    /// As [`send_encoded`](Self::send_encoded), waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`](sp_core::SendTimeoutError::Timeout) (nothing was sent);
    /// otherwise as [`send_encoded`](Self::send_encoded).
    pub fn send_encoded_timeout(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        self.send_filled_within(
            bytes.len(),
            |out| out.copy_from_slice(bytes),
            timeout,
            Wake::Now,
        )
    }
}

impl<T: Value> Sender<T> {
    /// Sends a value whose encoding, `len` bytes, `fill` writes in place: straight into the
    /// reserved ring slot (or, above the blob threshold, into the blob's memory). No copy is
    /// made; the bytes must be the encoding of a `T`, as for
    /// [`send_encoded`](Self::send_encoded).
    ///
    /// # Errors
    /// As [`send_encoded`](Self::send_encoded); `fill` is not called on error.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = sp::channel::<sp::Plain<[u8; 4]>>(&sp::Config::new())?;
    /// tx.send_encoded_with(4, |slot| slot.copy_from_slice(b"abcd"))?;
    /// assert_eq!(rx.recv()?.0, *b"abcd");
    /// # Ok::<(), sp::Error>(())
    /// ```
    pub fn send_encoded_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        self.send_filled(len, fill, Limit::Forever, Wake::Now)
            .map_err(|fail| match fail {
                Fail::Broken(err) => err,
                Fail::Wait => Error::Os(std::io::ErrorKind::WouldBlock.into()),
            })
    }

    /// As [`send_encoded_with`](Self::send_encoded_with), waiting at most `timeout` for room.
    /// `fill` is called once if the value is sent and not at all otherwise, so the caller can
    /// try again with the same `fill`.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`](sp_core::SendTimeoutError::Timeout) (nothing was sent);
    /// otherwise as [`send_encoded`](Self::send_encoded).
    pub fn send_encoded_with_timeout(
        &mut self,
        len: usize,
        mut fill: impl FnMut(&mut [u8]),
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        self.send_filled_within(len, &mut fill, timeout, Wake::Now)
    }

    /// As [`send_encoded_with_timeout`](Self::send_encoded_with_timeout), but a receiver parked
    /// in a wait is not woken for this value yet: the next [`flush`](Self::flush), the next
    /// send that wakes, or this sender's next wait for room wakes it for every value held back
    /// (a receiver that is not parked sees the value at once). A relay that unpacks a batch of
    /// values sends them this way and flushes once, so that its receiver wakes once per batch
    /// rather than once per value. If nothing is sent (no room in time), the values held back
    /// are flushed before this returns.
    ///
    /// # Errors
    /// As [`send_encoded_with_timeout`](Self::send_encoded_with_timeout).
    ///
    /// # Examples
    /// ```
    /// # use std::time::Duration;
    /// let (mut tx, mut rx) = sp::channel::<sp::Plain<[u8; 2]>>(&sp::Config::new())?;
    /// for pair in [*b"ab", *b"cd"] {
    ///     tx.send_encoded_held_timeout(2, |slot| slot.copy_from_slice(&pair), Duration::ZERO)?;
    /// }
    /// tx.flush()?; // one wake-up for both, if the receiver was parked
    /// assert_eq!(rx.recv()?.0, *b"ab");
    /// assert_eq!(rx.recv()?.0, *b"cd");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_encoded_held_timeout(
        &mut self,
        len: usize,
        mut fill: impl FnMut(&mut [u8]),
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        self.send_filled_within(len, &mut fill, timeout, Wake::Held)
    }

    /// The `*_timeout` sends: `send_filled` within `timeout`, its "would wait" as `Timeout`.
    fn send_filled_within(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        timeout: Duration,
        wake: Wake,
    ) -> Result<(), SendTimeoutError> {
        self.send_filled(len, fill, Limit::after(timeout), wake)
            .map_err(|fail| waited(fail, SendTimeoutError::Timeout))
    }
}

/// The operation's own error for a failure: `wait` for a "would wait", else its broken form.
fn waited<E: From<Error>>(fail: Fail, wait: E) -> E {
    match fail {
        Fail::Wait => wait,
        Fail::Broken(err) => E::from(err),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::thread;
    use std::time::Duration;

    use crate::{Config, IdleStrategy, Plain, channel};

    /// Long enough for a reader on an empty ring to park. A reader that has not parked yet needs
    /// no wake-up, so the held-wake-up tests cannot fail for want of it; they only stop proving
    /// that the flush is what woke it.
    const PARK_TIME: Duration = Duration::from_millis(100);
    /// How long the held-wake-up tests' reader waits for a value: far past [`WOKEN_WITHIN`], so
    /// that only a wake-up (not its own deadline) brings it back in time.
    const READER_LIMIT: Duration = Duration::from_secs(60);
    /// The bound on being woken.
    const WOKEN_WITHIN: Duration = Duration::from_secs(5);

    #[test]
    fn encodings_relay_between_channels_unchanged() {
        let config = Config::new();
        let (mut tx, mut rx) = channel::<(u32, String)>(&config).unwrap();
        let (mut relay_tx, mut relay_rx) = channel::<(u32, String)>(&config).unwrap();
        for i in 0..100 {
            tx.send(&(i, format!("value {i}"))).unwrap();
        }
        for _ in 0..100 {
            rx.recv_encoded(|bytes, fds| {
                assert!(fds.is_empty());
                relay_tx.send_encoded(bytes).unwrap();
            })
            .unwrap();
        }
        for i in 0..100 {
            assert_eq!(relay_rx.recv().unwrap(), (i, format!("value {i}")));
        }
        assert!(relay_rx.try_recv_encoded(|_, _| ()).unwrap_err().is_empty());
    }

    #[test]
    fn a_blob_is_lent_as_bytes_and_sent_as_a_blob_again() {
        let config = Config::new().blob_threshold(1024);
        let (mut tx, mut rx) = channel::<Plain<[u64; 1024]>>(&config).unwrap();
        let (mut relay_tx, mut relay_rx) = channel::<Plain<[u64; 1024]>>(&config).unwrap();
        let value = Plain(std::array::from_fn::<u64, 1024, _>(|i| i as u64 * 3));
        tx.send(&value).unwrap();
        let len = rx
            .recv_encoded(|bytes, _| {
                relay_tx.send_encoded(bytes).unwrap();
                bytes.len()
            })
            .unwrap();
        assert_eq!(len, 8 * 1024);
        assert_eq!(relay_rx.recv().unwrap(), value);
        // It went as a blob: the ring carried one 24-byte BLOB record.
        assert_eq!(relay_tx.stats().bytes, 24);
    }

    #[test]
    fn an_encoding_written_in_place_arrives_as_the_value() {
        let config = Config::new().blob_threshold(1024);
        let (mut tx, mut rx) = channel::<Plain<[u8; 4096]>>(&config).unwrap();
        // Above the threshold: written into the blob's memory.
        tx.send_encoded_with(4096, |slot| slot.fill(9)).unwrap();
        let mut calls = 0;
        tx.send_encoded_with_timeout(
            4096,
            |slot| {
                calls += 1;
                slot.fill(8);
            },
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(calls, 1);
        assert_eq!(rx.recv().unwrap(), Plain([9; 4096]));
        assert_eq!(rx.recv().unwrap(), Plain([8; 4096]));
    }

    #[test]
    fn descriptors_are_lent_with_the_encoding() {
        let (mut tx, mut rx) = channel::<u8>(&Config::new()).unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        tx.send_with_fds(&7, &[file.as_fd()]).unwrap();
        let (bytes, n_fds) = rx.recv_encoded(|b, fds| (b.to_vec(), fds.len())).unwrap();
        assert_eq!((bytes.as_slice(), n_fds), (&[7u8][..], 1));
    }

    #[test]
    fn held_values_wake_a_parked_receiver_once_at_the_flush() {
        let config = Config::new().idle(IdleStrategy::park());
        let (mut tx, mut rx) = channel::<Plain<[u8; 4]>>(&config).unwrap();
        let (done, got) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let values = (0..3)
                .map(|_| rx.recv_timeout(READER_LIMIT).map(|v| v.0[0]))
                .collect::<Result<Vec<u8>, _>>();
            let _ = done.send(values.map_err(|err| err.to_string()));
        });
        thread::sleep(PARK_TIME);
        for i in 0..3 {
            tx.send_encoded_held_timeout(4, |slot| slot.fill(i), Duration::ZERO)
                .unwrap();
        }
        assert_eq!(tx.stats().wakes_sent, 0, "a held value woke the receiver");
        tx.flush().unwrap();
        assert!(tx.stats().wakes_sent <= 1);
        // Without the flush's wake-up the parked reader would sleep until its own limit.
        let values = got
            .recv_timeout(WOKEN_WITHIN)
            .expect("the flush did not wake the reader");
        assert_eq!(values.unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn a_held_send_that_finds_no_room_wakes_the_receiver_first() {
        let config = Config::new()
            .idle(IdleStrategy::park())
            .capacity(4096)
            .max_payload(512);
        let (mut tx, mut rx) = channel::<Plain<[u8; 64]>>(&config).unwrap();
        let (done, got) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let first = rx.recv_timeout(READER_LIMIT).map(|v| v.0[0]);
            let _ = done.send((first.map_err(|err| err.to_string()), rx));
        });
        thread::sleep(PARK_TIME);
        let mut sent = 0u8;
        let full = loop {
            match tx.send_encoded_held_timeout(64, |slot| slot.fill(sent), Duration::ZERO) {
                Ok(()) => sent += 1,
                Err(err) => break err,
            }
        };
        assert!(full.is_timeout());
        assert!(sent > 1);
        // No flush here: the send that found the ring full woke the reader for what it holds.
        let (first, mut rx) = got
            .recv_timeout(WOKEN_WITHIN)
            .expect("the full ring did not wake the reader");
        assert_eq!(first.unwrap(), 0);
        for i in 1..sent {
            assert_eq!(rx.try_recv().unwrap().0, [i; 64]);
        }
    }

    #[test]
    fn bytes_that_are_not_a_value_reach_the_receiver_as_a_decode_error() {
        let (mut tx, mut rx) = channel::<Plain<u64>>(&Config::new()).unwrap();
        tx.send_encoded(&[1, 2, 3]).unwrap();
        tx.send(&Plain(9)).unwrap();
        assert!(matches!(rx.recv(), Err(crate::Error::Decode(_))));
        assert_eq!(rx.recv().unwrap(), Plain(9));
        let full = channel::<Plain<u64>>(&Config::new().capacity(4096).max_payload(512));
        let (mut tx, _rx) = full.unwrap();
        let res = loop {
            match tx.try_send_encoded(&[0; 8]) {
                Ok(()) => {}
                Err(err) => break err,
            }
        };
        assert!(res.is_full());
    }
}

//! loom models of the ring: publication by header (no torn, stale or lost record) and park/wake
//! (no lost wake-up), run over the real `Producer`/`Consumer` code through the `sync` shim.
//!
//! The data area is one loom atomic per 8-byte word, written and read Relaxed except for the
//! header words (Release / Acquire), so loom lets a read that is not ordered after its write
//! return an older value, and the byte checks below fail (a torn or stale record). Wake-ups go
//! through a mutex-and-condvar model of the wake socket; if a wake-up were lost, every thread
//! would end up blocked and loom reports a deadlock.
//!
//! Run: `RUSTFLAGS="--cfg sp_loom" LOOM_MAX_PREEMPTIONS=5 cargo test -p sp-shm --release --lib loom`

use loom::thread;

use crate::error::{Error, TryRecvError};
use crate::ring::{WaitPrep, model_pair};

/// Small geometry: 8-byte payloads take 16-byte slots and each record also needs the 8 bytes
/// after it free (the zeroed next slot), so a 32-byte ring holds one such record with room to
/// spare but not two: the second waits for the consumer, and the third wraps.
const CAPACITY: u64 = 32;
const MAX_PAYLOAD: usize = 8;

#[test]
fn loom_publication_no_torn_or_lost_record() {
    loom::model(|| {
        let (mut tx, mut rx) = model_pair(64, MAX_PAYLOAD);
        let producer = thread::spawn(move || {
            for i in 1..=2u8 {
                tx.try_send(&[i; 8]).unwrap();
            }
        });
        let mut next = 1u8;
        while next <= 2 {
            match rx.try_read() {
                Ok(rec) => {
                    assert_eq!(rec.to_vec(), [next; 8]);
                    next += 1;
                }
                Err(TryRecvError::Empty) => thread::yield_now(),
                Err(err) => panic!("unexpected {err}"),
            }
        }
        producer.join().unwrap();
    });
}

/// Records of 0, 8 and 8 bytes take 8, 16 and 16 bytes: the third does not fit the last 8
/// bytes, so the producer writes a padding record and wraps.
#[test]
fn loom_padding_and_wrap() {
    loom::model(|| {
        let (mut tx, mut rx) = model_pair(CAPACITY, MAX_PAYLOAD);
        let producer = thread::spawn(move || {
            tx.send(&[]).unwrap();
            tx.send(&[1; 8]).unwrap();
            tx.send(&[2; 8]).unwrap();
        });
        assert!(rx.read().unwrap().is_empty());
        assert_eq!(rx.read().unwrap().to_vec(), [1; 8]);
        assert_eq!(rx.read().unwrap().to_vec(), [2; 8]);
        producer.join().unwrap();
    });
}

/// The zeroed next slot: after the wrap, the slot after the record at offset 0 still holds the
/// second record's payload from the first lap, and that payload is a valid header word (an empty
/// committed record). The consumer must see the zero the producer stored there before publishing
/// the record, never the stale word: if the zeroing were missing, or ordered after the header's
/// Release store, loom lets `try_read` return a phantom empty record. (The third record ends
/// exactly at the end of the data area, so the fourth wraps without padding, whose own Release
/// store would otherwise order the zeroing too.)
#[test]
fn loom_stale_payload_never_read_as_header() {
    const PHANTOM: [u8; 8] = [0, 0, 0, 0x80, 0, 0, 0, 0]; // `encode_header(0, 0)`, little-endian
    loom::model(|| {
        let (mut tx, mut rx) = model_pair(CAPACITY, MAX_PAYLOAD);
        let producer = thread::spawn(move || {
            tx.send(&[]).unwrap(); // offset 0, 8 bytes
            tx.send(&PHANTOM).unwrap(); // offset 8, 16 bytes: payload at 16..24
            tx.send(&[]).unwrap(); // offset 24, 8 bytes: ends at the end of the area
            tx.send(&[2; 8]).unwrap(); // offset 0 again, 16 bytes: next slot at 16
        });
        assert!(rx.read().unwrap().is_empty());
        assert_eq!(rx.read().unwrap().to_vec(), PHANTOM);
        assert!(rx.read().unwrap().is_empty());
        assert_eq!(rx.read().unwrap().to_vec(), [2; 8]);
        // Nothing more: `Empty`, or `PeerGone` if the producer has already finished and dropped
        // its side. Never a phantom record.
        assert!(matches!(
            rx.try_read(),
            Err(TryRecvError::Empty | TryRecvError::Broken(Error::PeerGone))
        ));
        producer.join().unwrap();
    });
}

#[test]
fn loom_park_wake_no_lost_wakeup() {
    loom::model(|| {
        let (mut tx, mut rx) = model_pair(CAPACITY, MAX_PAYLOAD);
        let producer = thread::spawn(move || {
            // From the second record on, each needs space the consumer frees: the producer may
            // park too.
            for i in 1..=3u8 {
                tx.send(&[i; 8]).unwrap();
            }
        });
        for i in 1..=3u8 {
            assert_eq!(rx.read().unwrap().to_vec(), [i; 8]);
        }
        producer.join().unwrap();
    });
}

#[test]
fn loom_hang_up_after_commit_delivers_then_peer_gone() {
    loom::model(|| {
        let (mut tx, mut rx) = model_pair(CAPACITY, MAX_PAYLOAD);
        let producer = thread::spawn(move || {
            tx.send(&[7; 8]).unwrap();
            drop(tx);
        });
        assert_eq!(rx.read().unwrap().to_vec(), [7; 8]);
        assert!(matches!(rx.read(), Err(Error::PeerGone)));
        producer.join().unwrap();
    });
}

/// The park protocol for a caller that sleeps outside sp-shm (`prepare_wait`, sleep on the wake
/// socket, `finish_wait`): a consumer that only ever sleeps that way still gets every record. A
/// lost wake-up leaves it asleep with the producer done, which loom reports as a deadlock.
#[test]
fn loom_external_wait_no_lost_wakeup() {
    loom::model(|| {
        let (mut tx, mut rx) = model_pair(CAPACITY, MAX_PAYLOAD);
        let producer = thread::spawn(move || {
            for i in 1..=2u8 {
                tx.send(&[i; 8]).unwrap();
            }
            // Keep the producer alive until the consumer is done: a hang-up would wake it too
            // and hide a lost wake-up.
            tx
        });
        let mut next = 1u8;
        while next <= 2 {
            let res = rx.try_read().map(|rec| rec.to_vec());
            match res {
                Ok(bytes) => {
                    assert_eq!(bytes, [next; 8]);
                    next += 1;
                }
                Err(TryRecvError::Empty) => {
                    if let WaitPrep::Armed { .. } = rx.prepare_wait().unwrap() {
                        rx.sleep_on_wake().unwrap();
                        rx.finish_wait().unwrap();
                    }
                }
                Err(err) => panic!("unexpected {err}"),
            }
        }
        drop(producer.join().unwrap());
    });
}

/// The external park as an async wait leaves it when its future is dropped while armed
/// (`sp_shm::tokio`): armed, disarmed without sleeping (`finish_wait`), then armed again and
/// asleep. A wake-up byte the producer sent for the first arming is drained by the disarm, so
/// only the second arming's re-check or its own byte can wake the consumer: if either could be
/// missed, loom reports the consumer asleep with the producer done (a deadlock).
#[test]
fn loom_cancelled_external_wait_no_lost_wakeup() {
    loom::model(|| {
        let (mut tx, mut rx) = model_pair(CAPACITY, MAX_PAYLOAD);
        let producer = thread::spawn(move || {
            tx.send(&[1; 8]).unwrap();
            tx
        });
        loop {
            let res = rx.try_read().map(|rec| rec.to_vec());
            match res {
                Ok(bytes) => {
                    assert_eq!(bytes, [1; 8]);
                    break;
                }
                Err(TryRecvError::Empty) => {
                    if let WaitPrep::Armed { .. } = rx.prepare_wait().unwrap() {
                        // The dropped future's disarm, then the next call's wait.
                        rx.finish_wait().unwrap();
                        if let WaitPrep::Armed { .. } = rx.prepare_wait().unwrap() {
                            rx.sleep_on_wake().unwrap();
                            rx.finish_wait().unwrap();
                        }
                    }
                }
                Err(err) => panic!("unexpected {err}"),
            }
        }
        drop(producer.join().unwrap());
    });
}

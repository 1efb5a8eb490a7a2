//! loom models of the ring: index publication (no torn or lost record) and park/wake (no lost
//! wake-up), run over the real `Producer`/`Consumer` code through the `sync` shim.
//!
//! The data area is one loom cell per byte, so loom fails the model if the consumer can read a
//! record's bytes without the producer's writes happening before (a torn record). Wake-ups go
//! through a mutex-and-condvar model of the wake socket; if a wake-up were lost, every thread
//! would end up blocked and loom reports a deadlock.
//!
//! Run: `RUSTFLAGS="--cfg sp_loom" LOOM_MAX_PREEMPTIONS=5 cargo test -p sp-shm --release --lib loom`

use loom::thread;

use crate::error::Error;
use crate::ring::model_pair;

/// Small geometry: 8-byte payloads take 16-byte slots, so a 32-byte ring holds two records and
/// the third wraps.
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
                Err(Error::Empty) => thread::yield_now(),
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

#[test]
fn loom_park_wake_no_lost_wakeup() {
    loom::model(|| {
        let (mut tx, mut rx) = model_pair(CAPACITY, MAX_PAYLOAD);
        let producer = thread::spawn(move || {
            // The third record needs space the consumer frees: the producer may park too.
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

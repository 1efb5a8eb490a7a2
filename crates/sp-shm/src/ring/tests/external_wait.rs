//! The park protocol for callers that sleep elsewhere (`prepare_wait`, `wake_fd`,
//! `finish_wait`): no wake-up lost, no byte sent to a side that did not arm, and a hang-up seen
//! through the wake socket.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use sp_core::End;

use super::*;

/// `poll(2)` on a wake socket for at most `limit`: whether it became readable (a byte or a
/// hang-up).
fn readable_within(fd: BorrowedFd<'_>, limit: Duration) -> bool {
    let end = End::from(fd.try_clone_to_owned().unwrap());
    end.poll_readable(Some(Instant::now() + limit))
        .unwrap()
        .is_some()
}

#[test]
fn consumer_armed_on_an_empty_ring_is_woken_by_the_next_record() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    assert!(matches!(rx.prepare_wait().unwrap(), WaitPrep::Armed { .. }));
    let flag = || rx_flag(&rx);
    assert_eq!(flag(), 1);
    assert!(!readable_within(rx.wake_fd(), Duration::ZERO));
    tx.send(b"wake").unwrap();
    assert_eq!(tx.stats().wakes_sent, 1);
    assert!(readable_within(rx.wake_fd(), Duration::from_secs(5)));
    rx.finish_wait().unwrap();
    assert_eq!(rx_flag(&rx), 0);
    assert!(
        !readable_within(rx.wake_fd(), Duration::ZERO),
        "tokens drained"
    );
    assert_eq!(rx.try_read().unwrap().to_vec(), b"wake");
    // Not armed: the next record sends no byte.
    tx.send(b"quiet").unwrap();
    assert_eq!(tx.stats().wakes_sent, 1);
}

#[test]
fn consumer_with_a_record_waiting_is_ready_and_not_armed() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    tx.send(b"here").unwrap();
    assert_eq!(rx.prepare_wait().unwrap(), WaitPrep::Ready);
    assert_eq!(rx_flag(&rx), 0);
    assert_eq!(rx.try_read().unwrap().to_vec(), b"here");
}

#[test]
fn producer_armed_on_a_full_ring_is_woken_when_space_is_released() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    while tx.try_send(&[1; 512]).is_ok() {}
    assert!(matches!(
        tx.prepare_wait(512).unwrap(),
        WaitPrep::Armed { .. }
    ));
    assert!(!readable_within(tx.wake_fd(), Duration::ZERO));
    drop(rx.try_read().unwrap());
    assert!(readable_within(tx.wake_fd(), Duration::from_secs(5)));
    tx.finish_wait().unwrap();
    // One record freed is not room enough here (the next one needs padding to the end first).
    drop(rx.try_read().unwrap());
    tx.try_send(&[2; 512]).unwrap();
    assert!(matches!(
        tx.prepare_wait(MAX_PAYLOAD + 8),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn hang_up_wakes_an_armed_consumer_which_drains_then_reports_peer_gone() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    tx.send(b"one").unwrap();
    assert_eq!(rx.try_read().unwrap().to_vec(), b"one");
    assert!(matches!(rx.prepare_wait().unwrap(), WaitPrep::Armed { .. }));
    // The producer commits without waking (deferred), then its process "dies".
    tx.try_reserve(3).unwrap().commit_deferred(3);
    drop(tx);
    assert!(readable_within(rx.wake_fd(), Duration::from_secs(5)));
    rx.finish_wait().unwrap();
    assert_eq!(rx.try_read().unwrap().len(), 3);
    assert!(matches!(
        rx.try_read(),
        Err(TryRecvError::Broken(Error::PeerGone))
    ));
    assert_eq!(rx.prepare_wait().unwrap(), WaitPrep::Ready);
}

#[test]
fn hang_up_ends_an_armed_producer() {
    let (mut tx, rx) = channel(&small()).unwrap();
    while tx.try_send(&[1; 512]).is_ok() {}
    assert!(matches!(
        tx.prepare_wait(512).unwrap(),
        WaitPrep::Armed { .. }
    ));
    drop(rx);
    assert!(readable_within(tx.wake_fd(), Duration::from_secs(5)));
    tx.finish_wait().unwrap();
    assert!(matches!(
        tx.try_send(&[1; 512]),
        Err(TrySendError::Broken(Error::PeerGone))
    ));
    assert_eq!(tx.prepare_wait(512).unwrap(), WaitPrep::Ready);
}

/// A consumer that only ever sleeps outside sp-shm, in `poll` on the wake socket with a long
/// limit, against a producer that sends in bursts with gaps: every record arrives, and a lost
/// wake-up would leave the consumer asleep for the whole limit, which fails the test.
#[test]
fn outside_sleeper_loses_no_wake_up_under_load() {
    let n: u32 = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let (mut tx, mut rx) = channel(&small().idle(IdleStrategy::park())).unwrap();
    let producer = std::thread::spawn(move || {
        let mut state = 0x9E37_79B9_7F4A_7C15;
        for i in 0..n {
            tx.send(&i.to_le_bytes()).unwrap();
            if next_random(&mut state).is_multiple_of(64) {
                // A gap, so that the consumer runs dry and arms.
                for _ in 0..next_random(&mut state) % 2000 {
                    std::hint::spin_loop();
                }
            }
        }
    });
    within_bound(move || {
        let mut next = 0u32;
        let mut sleeps = 0u64;
        while next < n {
            let res = rx.try_read().map(|rec| {
                let mut word = [0; 4];
                rec.copy_to_slice(&mut word);
                u32::from_le_bytes(word)
            });
            match res {
                Ok(seq) => {
                    assert_eq!(seq, next);
                    next += 1;
                }
                Err(TryRecvError::Empty) => {
                    if let WaitPrep::Armed { recheck } = rx.prepare_wait().unwrap() {
                        let limit = recheck.unwrap_or(Duration::from_secs(10));
                        let woke = readable_within(rx.wake_fd(), limit);
                        assert!(woke || recheck.is_some(), "asleep 10 s: a lost wake-up");
                        rx.finish_wait().unwrap();
                        sleeps += 1;
                    }
                }
                Err(err) => panic!("{err}"),
            }
        }
        assert!(
            sleeps > 0,
            "the consumer never slept: the test tested nothing"
        );
        assert!(matches!(rx.read(), Err(Error::PeerGone)));
    });
    producer.join().unwrap();
}

fn rx_flag(rx: &Consumer) -> u64 {
    rx.shared
        .ctrl()
        .consumer_waiting
        .word
        .load(Ordering::Relaxed)
}

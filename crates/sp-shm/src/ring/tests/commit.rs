//! The producer's commit protocol: the zeroed slot after every record, and stale header-like
//! words never read past the tail.
use super::*;

/// After every commit the slot at the producer's tail is zero, whatever the data area held
/// before: the producer zeroes the slot after a record before it publishes the record's header.
#[test]
fn producer_zeroes_the_slot_after_each_record() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    fill_stale(&tx);
    assert_eq!(tail_slot(&tx), 0);
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
    let mut buf = Vec::new();
    let mut wrapped = 0;
    for round in 0..400usize {
        let len = (round * 97) % (MAX_PAYLOAD + 1);
        let bytes = stale_payload(len, round as u8);
        let before = tx.tail;
        if round % 3 == 0 {
            let mut grant = tx.try_reserve(len).unwrap();
            grant.copy_from_slice(&bytes);
            grant.commit(len).unwrap();
        } else {
            tx.try_send(&bytes).unwrap();
        }
        // A record placed at offset 0 after padding: the padding's slot was the tail slot.
        wrapped += usize::from(tx.tail - before > record_size(len) as u64);
        assert_eq!(
            tail_slot(&tx),
            0,
            "round {round}: the slot after the record"
        );
        rx.try_recv_into(&mut buf).unwrap();
        assert_eq!(buf, bytes, "round {round}");
        assert!(
            matches!(rx.try_read(), Err(TryRecvError::Empty)),
            "round {round}"
        );
    }
    assert!(wrapped > 10 && tx.tail > 20 * CAPACITY as u64);
}

/// Stale words that look like committed headers fill the data area and a quarter of every
/// payload, and the ring wraps many times with bursts that fill it to random levels and drains
/// that empty it to random levels: the consumer delivers exactly the model's records and finds
/// the ring empty exactly when the model is, so no stale word past the tail is ever read.
#[test]
fn stale_headers_are_never_read_past_the_tail() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    fill_stale(&tx);
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let mut state = 0x9e37_79b9_7f4a_7c15;
    let mut buf = Vec::new();
    let (mut n_full, mut n_empty) = (0, 0);
    while tx.tail < 100 * CAPACITY as u64 {
        for _ in 0..next_random(&mut state) % 12 {
            let r = next_random(&mut state);
            let len = if r & 1 == 0 {
                (r >> 8) as usize % 64
            } else {
                (r >> 8) as usize % (MAX_PAYLOAD + 1)
            };
            let bytes = payload(len, (r >> 40) as u8);
            match tx.try_send(&bytes) {
                Ok(()) => model.push_back(bytes),
                Err(TrySendError::Full) => {
                    n_full += 1;
                    break;
                }
                Err(err) => panic!("send: {err}"),
            }
            assert_eq!(tail_slot(&tx), 0);
        }
        for _ in 0..next_random(&mut state) % 12 {
            match rx.try_recv_into(&mut buf) {
                Ok(_) => assert_eq!(Some(&buf), model.front(), "at tail {}", tx.tail),
                Err(TryRecvError::Empty) => {
                    assert!(model.is_empty(), "{} records lost", model.len());
                    n_empty += 1;
                    break;
                }
                Err(err) => panic!("read: {err}"),
            }
            model.pop_front();
        }
    }
    while let Some(want) = model.pop_front() {
        assert_eq!(rx.try_read().unwrap().to_vec(), want);
    }
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
    assert!(
        n_full > 10 && n_empty > 10,
        "full {n_full} times, empty {n_empty} times"
    );
}

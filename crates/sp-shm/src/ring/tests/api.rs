//! The public calls of both sides over a real in-process region: sends, grants, batches,
//! deferred commits, peer death, and threads streaming in every idle strategy.
use super::*;

#[test]
fn halves_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Producer>();
    assert_send::<Consumer>();
    assert_send::<crate::Duplex>();
}

#[test]
fn batch_timeouts() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    let mut out = Vec::new();
    assert!(matches!(
        rx.recv_batch_timeout(&mut out, 4, Duration::from_millis(5)),
        Err(RecvTimeoutError::Timeout)
    ));
    let records = vec![vec![3u8; 1000]; 6];
    assert!(matches!(
        tx.send_batch_timeout(&records, Duration::from_millis(5)),
        Err(SendTimeoutError::Timeout)
    ));
    assert_eq!(
        rx.recv_batch_timeout(&mut out, 10, Duration::from_secs(5))
            .unwrap(),
        4
    );
}

#[test]
fn huge_pages_opt_in_falls_back() {
    let config = Config::new().capacity(2 << 20).huge_pages(true);
    let (mut tx, mut rx) = channel(&config).unwrap();
    tx.send(b"big pages or not").unwrap();
    assert_eq!(rx.read().unwrap().to_vec(), b"big pages or not");
}

#[test]
fn send_then_recv() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    tx.send(b"hello").unwrap();
    tx.send(b"").unwrap();
    let mut buf = Vec::new();
    assert_eq!(rx.recv_into(&mut buf).unwrap(), 0);
    assert_eq!(buf, b"hello");
    rx.recv_into(&mut buf).unwrap();
    assert!(buf.is_empty());
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
}

#[test]
#[allow(unsafe_code)] // `as_slice_trusted`: this test is the producer.
fn reserve_commit_in_place_with_kind() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    let mut grant = tx.reserve(100).unwrap();
    assert_eq!(grant.len(), 100);
    grant[..3].copy_from_slice(b"abc");
    grant.set_kind(9).unwrap();
    assert!(matches!(grant.set_kind(u32::MAX), Err(Error::ReservedKind)));
    grant.commit(3).unwrap();
    let rec = rx.read().unwrap();
    assert_eq!(rec.kind(), 9);
    assert_eq!(rec.to_vec(), b"abc");
    // SAFETY: the producer is this test and writes nothing while the slice lives.
    assert_eq!(unsafe { rec.as_slice_trusted() }, b"abc");
}

#[test]
fn abandoned_grant_is_invisible() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    let mut grant = tx.reserve(10).unwrap();
    grant.fill(0xAA);
    let _abandoned = grant;
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
    tx.send(b"next").unwrap();
    assert_eq!(rx.read().unwrap().to_vec(), b"next");
}

#[test]
fn too_large_and_full() {
    let (mut tx, _rx) = channel(&small()).unwrap();
    assert!(matches!(
        tx.try_send(&[0; 1025]),
        Err(TrySendError::Broken(Error::TooLarge {
            len: 1025,
            max: 1024
        }))
    ));
    let mut n = 0;
    while tx.try_send(&[1; 1000]).is_ok() {
        n += 1;
    }
    assert_eq!(n, 4096 / 1008);
    assert!(matches!(tx.try_send(&[1; 1000]), Err(TrySendError::Full)));
    assert!(matches!(
        tx.send_timeout(&[1; 1000], Duration::from_millis(10)),
        Err(SendTimeoutError::Timeout)
    ));
}

/// The slot after a record must be free too: with exactly a record's slot free (and not the 8
/// bytes after it), the producer says `Full` instead of zeroing the header of the oldest unread
/// record; 8 bytes less fits, and the oldest record is still read whole.
#[test]
fn a_record_needs_its_slot_and_the_next_header_free() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    // Three records of 1,024 bytes each (8 + 1,016): 1,024 bytes free at offset 3,072.
    for i in 0..3u8 {
        tx.try_send(&[i; 1016]).unwrap();
    }
    assert!(matches!(tx.try_send(&[9; 1016]), Err(TrySendError::Full)));
    tx.try_send(&[3; 1008]).unwrap();
    for i in 0..3u8 {
        assert_eq!(rx.try_read().unwrap().to_vec(), [i; 1016]);
    }
    assert_eq!(rx.try_read().unwrap().to_vec(), [3; 1008]);
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
}

#[test]
fn wraps_with_padding() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    let mut buf = Vec::new();
    for round in 0..100u32 {
        let len = 100 + (round as usize * 37) % 900;
        let bytes = pattern(len, round as u8);
        tx.send(&bytes).unwrap();
        rx.recv_into(&mut buf).unwrap();
        assert_eq!(buf, bytes);
    }
}

#[test]
fn batches_publish_once() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    let records: Vec<Vec<u8>> = (0..20).map(|i| pattern(i * 3, i as u8)).collect();
    let before = tx.stats().publications;
    assert_eq!(tx.try_send_batch(&records).unwrap(), 20);
    assert_eq!(tx.stats().publications, before + 1);
    let mut out = Vec::new();
    assert_eq!(rx.recv_batch(&mut out, 100).unwrap(), 20);
    assert_eq!(out, records);
    assert_eq!(rx.stats().publications, 1);
}

/// A deferred commit is visible at once (its header publishes it); only the check for a parked
/// consumer waits for the next publishing call, which then sends one wake-up.
#[test]
fn deferred_commit_is_visible_at_once_and_wakes_on_flush() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    // As a consumer about to park would.
    rx.shared
        .ctrl()
        .consumer_waiting
        .word
        .store(1, Ordering::Relaxed);
    tx.try_reserve(4).unwrap().commit_deferred(4);
    tx.try_reserve(5).unwrap().commit_deferred(5);
    assert_eq!(tx.stats().wakes_sent, 0);
    assert_eq!(rx.try_read().unwrap().len(), 4);
    assert_eq!(rx.try_read().unwrap().len(), 5);
    tx.flush().unwrap();
    assert_eq!(tx.stats().wakes_sent, 1);
    assert_eq!(
        rx.shared
            .ctrl()
            .consumer_waiting
            .word
            .load(Ordering::Relaxed),
        0
    );
    tx.flush().unwrap();
    assert_eq!(
        tx.stats().wakes_sent,
        1,
        "a flush with nothing new woke again"
    );
}

#[test]
fn for_each_available_copies_in_place() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    tx.send_batch(&[b"a".as_slice(), b"bb", b"ccc"]).unwrap();
    let mut seen = Vec::new();
    let n = rx
        .for_each_available(10, |rec| seen.push(rec.to_vec()))
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(seen, [b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]);
}

#[test]
fn consumer_drains_then_reports_peer_gone() {
    let (mut tx, mut rx) = channel(&small().idle(IdleStrategy::park())).unwrap();
    tx.send(b"last words").unwrap();
    drop(tx);
    assert_eq!(rx.read().unwrap().to_vec(), b"last words");
    assert!(matches!(rx.read(), Err(Error::PeerGone)));
    assert!(matches!(
        rx.try_read(),
        Err(TryRecvError::Broken(Error::PeerGone))
    ));
}

#[test]
fn producer_blocked_on_full_sees_peer_gone() {
    for idle in [
        IdleStrategy::spin(),
        IdleStrategy::adaptive(),
        IdleStrategy::park(),
    ] {
        let (mut tx, rx) = channel(&small().idle(idle)).unwrap();
        while tx.try_send(&[0; 512]).is_ok() {}
        let t = std::thread::spawn(move || tx.send(&[0; 512]));
        drop(rx);
        assert!(
            matches!(t.join().unwrap(), Err(Error::PeerGone)),
            "{idle:?}"
        );
    }
}

#[test]
fn threads_stream_in_order_for_each_strategy() {
    for idle in [
        IdleStrategy::spin(),
        IdleStrategy::adaptive(),
        IdleStrategy::park(),
    ] {
        let config = small().idle(idle);
        let (mut tx, mut rx) = channel(&config).unwrap();
        let n: u32 = if cfg!(debug_assertions) {
            20_000
        } else {
            200_000
        };
        let producer = std::thread::spawn(move || {
            for i in 0..n {
                let len = (i as usize * 7) % 200;
                let mut grant = tx.reserve(len + 4).unwrap();
                grant[..4].copy_from_slice(&i.to_le_bytes());
                grant[4..].copy_from_slice(&pattern(len, i as u8));
                grant.commit(len + 4).unwrap();
            }
            tx.stats()
        });
        // Bounded: a record the ring lost would leave `recv_into` waiting for ever.
        within_bound(move || {
            let mut buf = Vec::new();
            for i in 0..n {
                rx.recv_into(&mut buf).unwrap();
                assert_eq!(buf[..4], i.to_le_bytes());
                assert_eq!(buf[4..], pattern((i as usize * 7) % 200, i as u8));
            }
            assert!(matches!(rx.read(), Err(Error::PeerGone)));
        });
        let stats = producer.join().unwrap();
        assert_eq!(stats.records, u64::from(n));
    }
}

/// The first wait of a consumer parks at once (a peer just started may share this core); once
/// a record has arrived, the strategy's spin applies again.
#[test]
fn the_first_wait_parks_and_later_ones_spin() {
    // Spin without end, then park: only the first wait can park.
    let config = small().idle(IdleStrategy::new(u32::MAX, 0, true));
    let (mut tx, mut rx) = channel(&config).unwrap();
    let producer = std::thread::spawn(move || {
        for record in [b"first", b"later"] {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(record).unwrap();
        }
        tx
    });
    assert_eq!(rx.read().unwrap().to_vec(), b"first");
    assert_eq!(rx.stats().parks, 1);
    assert_eq!(rx.read().unwrap().to_vec(), b"later");
    assert_eq!(rx.stats().parks, 1, "the second wait spun");
    drop(producer.join().unwrap());
}

//! Unit and property tests of the ring over an in-process region (the same memfds, seals and
//! read-only mapping as across processes), including a differential test against a
//! `VecDeque<Vec<u8>>` model and a hostile control block.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::setup::channel;

fn small() -> Config {
    Config::new().capacity(4096).max_payload(1024)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

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
        Err(Error::TimedOut)
    ));
    let records = vec![vec![3u8; 1000]; 6];
    assert!(matches!(
        tx.send_batch_timeout(&records, Duration::from_millis(5)),
        Err(Error::TimedOut)
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
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
}

#[test]
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
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
    tx.send(b"next").unwrap();
    assert_eq!(rx.read().unwrap().to_vec(), b"next");
}

#[test]
fn too_large_and_full() {
    let (mut tx, _rx) = channel(&small()).unwrap();
    assert!(matches!(
        tx.try_send(&[0; 1025]),
        Err(Error::TooLarge {
            n_bytes: 1025,
            max: 1024
        })
    ));
    let mut n = 0;
    while tx.try_send(&[1; 1000]).is_ok() {
        n += 1;
    }
    assert_eq!(n, 4096 / 1008);
    assert!(matches!(tx.try_send(&[1; 1000]), Err(Error::Full)));
    assert!(matches!(
        tx.send_timeout(&[1; 1000], Duration::from_millis(10)),
        Err(Error::TimedOut)
    ));
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

#[test]
fn deferred_commits_appear_on_flush() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    tx.reserve(4).unwrap().commit_deferred(4);
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
    tx.flush().unwrap();
    assert_eq!(rx.try_read().unwrap().len(), 4);
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
    assert!(matches!(rx.try_read(), Err(Error::PeerGone)));
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
        let mut buf = Vec::new();
        for i in 0..n {
            rx.recv_into(&mut buf).unwrap();
            assert_eq!(buf[..4], i.to_le_bytes());
            assert_eq!(buf[4..], pattern((i as usize * 7) % 200, i as u8));
        }
        assert!(matches!(rx.read(), Err(Error::PeerGone)));
        let stats = producer.join().unwrap();
        assert_eq!(stats.records, u64::from(n));
    }
}

// --- hostile control block and data -------------------------------------------------------

#[test]
fn hostile_tail_is_corrupt() {
    for bad_tail in [u64::MAX, 4096 + 8, 3, 1 << 40] {
        let (_tx, mut rx) = channel(&small()).unwrap();
        rx.shared
            .ctrl()
            .tail
            .word
            .store(bad_tail, Ordering::Release);
        assert!(
            matches!(rx.try_read(), Err(Error::Corrupt { .. })),
            "{bad_tail}"
        );
    }
}

#[test]
fn hostile_tail_backwards_is_corrupt() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    tx.send(&[1; 64]).unwrap();
    tx.send(&[1; 64]).unwrap();
    drop(rx.try_read().unwrap());
    drop(rx.try_read().unwrap());
    rx.shared.ctrl().tail.word.store(8, Ordering::Release);
    assert!(matches!(rx.try_read(), Err(Error::Corrupt { .. })));
}

#[test]
fn hostile_headers_are_corrupt() {
    let bad_headers = [
        layout::encode_header(2000, 0),      // longer than max payload
        layout::encode_header(1024, 0),      // fits max payload, passes the tail
        layout::encode_header(100, PADDING), // padding not reaching the end
    ];
    for header in bad_headers {
        let (tx, mut rx) = channel(&small()).unwrap();
        // SAFETY: offset 0 is 8-aligned and in bounds; the consumer is not reading.
        unsafe { tx.shared.data.store_u64(0, header) };
        rx.shared.ctrl().tail.word.store(64, Ordering::Release);
        assert!(
            matches!(rx.try_read(), Err(Error::Corrupt { .. })),
            "{header:#x}"
        );
    }
}

#[test]
fn hostile_head_is_corrupt() {
    let (mut tx, rx) = channel(&small()).unwrap();
    while tx.try_send(&[0; 512]).is_ok() {}
    for bad_head in [u64::MAX, 1 << 20, 5] {
        rx.shared
            .ctrl()
            .head
            .word
            .store(bad_head, Ordering::Release);
        assert!(
            matches!(tx.try_send(&[0; 512]), Err(Error::Corrupt { .. })),
            "{bad_head}"
        );
    }
}

#[test]
fn hostile_waiting_flag_costs_only_wake_bytes() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    for _ in 0..10 {
        rx.shared
            .ctrl()
            .consumer_waiting
            .word
            .store(1, Ordering::Relaxed);
        tx.send(b"x").unwrap();
    }
    assert_eq!(tx.stats().wakes_sent, 10);
    let mut out = Vec::new();
    assert_eq!(rx.try_recv_batch(&mut out, 100).unwrap(), 10);
}

// --- differential property test -------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Send(usize, u8),
    Reserve {
        len: usize,
        used: usize,
        seed: u8,
        how: u8,
    },
    Flush,
    Read,
    Batch(usize),
    SendBatch(Vec<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..=1024, any::<u8>()).prop_map(|(len, seed)| Op::Send(len, seed)),
        (0usize..=1024, 0usize..=1100, any::<u8>(), 0u8..3).prop_map(|(len, used, seed, how)| {
            Op::Reserve {
                len,
                used,
                seed,
                how,
            }
        }),
        Just(Op::Flush),
        Just(Op::Read),
        Just(Op::Read),
        (0usize..8).prop_map(Op::Batch),
        proptest::collection::vec(0usize..300, 0..8).prop_map(Op::SendBatch),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(debug_assertions) { 64 } else { 256 }))]

    #[test]
    fn ring_matches_vecdeque_model(ops in proptest::collection::vec(op(), 1..300)) {
        let (mut tx, mut rx) = channel(&small()).unwrap();
        let mut published: VecDeque<Vec<u8>> = VecDeque::new();
        let mut deferred: Vec<Vec<u8>> = Vec::new();
        for op in ops {
            match op {
                Op::Send(len, seed) => {
                    let bytes = pattern(len, seed);
                    match tx.try_send(&bytes) {
                        Ok(()) => {
                            published.extend(deferred.drain(..));
                            published.push_back(bytes);
                        }
                        Err(Error::Full) => {}
                        Err(err) => prop_assert!(false, "send: {err}"),
                    }
                }
                Op::Reserve { len, used, seed, how } => {
                    let Ok(mut grant) = tx.try_reserve(len) else { continue };
                    let bytes = pattern(len, seed);
                    grant.copy_from_slice(&bytes);
                    let kept = bytes[..used.min(len)].to_vec();
                    match how {
                        0 => { let _abandoned = grant; }
                        1 => {
                            grant.commit(used).unwrap();
                            published.extend(deferred.drain(..));
                            published.push_back(kept);
                        }
                        _ => {
                            grant.commit_deferred(used);
                            deferred.push(kept);
                        }
                    }
                }
                Op::Flush => {
                    tx.flush().unwrap();
                    published.extend(deferred.drain(..));
                }
                Op::Read => match rx.try_read() {
                    Ok(rec) => prop_assert_eq!(Some(rec.to_vec()), published.pop_front()),
                    Err(Error::Empty) => prop_assert!(published.is_empty()),
                    Err(err) => prop_assert!(false, "read: {err}"),
                },
                Op::Batch(max) => {
                    let mut out = Vec::new();
                    match rx.try_recv_batch(&mut out, max) {
                        Ok(n) => {
                            prop_assert_eq!(n, out.len());
                            for got in out {
                                prop_assert_eq!(Some(got), published.pop_front());
                            }
                        }
                        Err(Error::Empty) => prop_assert!(published.is_empty() || max == 0),
                        Err(err) => prop_assert!(false, "batch: {err}"),
                    }
                }
                Op::SendBatch(lens) => {
                    let records: Vec<Vec<u8>> =
                        lens.iter().map(|&len| pattern(len, len as u8)).collect();
                    match tx.try_send_batch(&records) {
                        Ok(n) => {
                            published.extend(deferred.drain(..));
                            published.extend(records.into_iter().take(n));
                        }
                        Err(Error::Full) => published.extend(deferred.drain(..)),
                        Err(err) => prop_assert!(false, "send batch: {err}"),
                    }
                }
            }
        }
        tx.flush().unwrap();
        published.extend(deferred.drain(..));
        while let Some(want) = published.pop_front() {
            prop_assert_eq!(rx.try_read().unwrap().to_vec(), want);
        }
        prop_assert!(matches!(rx.try_read(), Err(Error::Empty)));
    }

    /// Whatever the control block and data area hold, the consumer returns in-bounds records or
    /// `Corrupt`, and never panics.
    #[test]
    fn consumer_survives_arbitrary_shared_memory(
        words in proptest::collection::vec(any::<u64>(), 512),
        tails in proptest::collection::vec(any::<u64>(), 1..20),
    ) {
        let (tx, mut rx) = channel(&small()).unwrap();
        for (i, word) in words.iter().enumerate() {
            // SAFETY: 512 words fill the 4096-byte data area exactly; nobody reads concurrently.
            unsafe { tx.shared.data.store_u64(i * 8, *word) };
        }
        for tail in tails {
            // Small tails are more interesting than random 64-bit ones.
            let tail = if tail & 1 == 0 { tail % 8192 } else { tail };
            rx.shared.ctrl().tail.word.store(tail, Ordering::Release);
            for _ in 0..8 {
                match rx.try_read() {
                    Ok(rec) => {
                        prop_assert!(rec.len() <= rx_max(&rec));
                        let _ = rec.to_vec();
                    }
                    Err(Error::Empty | Error::Corrupt { .. }) => break,
                    Err(err) => prop_assert!(false, "unexpected {err}"),
                }
            }
        }
    }
}

fn rx_max(rec: &ReadGrant<'_>) -> usize {
    rec.consumer.max_payload
}

// --- hostile image that changes between calls ---------------------------------------------

/// One step of the hostile-image property test: the peer rewrites a word, or this process calls
/// into its producer or consumer.
#[derive(Debug, Clone)]
enum Step {
    /// Any word of the control block's first 640 bytes (atomically).
    CtrlWord(usize, u64),
    /// Any word of the data area.
    DataWord(usize, u64),
    /// A plausible record header (small length, maybe padding) at a data word.
    Header(usize, u32, bool),
    /// A header at the consumer's next read position (length up to past the capacity).
    HeaderAtHead(u32, bool),
    /// A plausible tail: a multiple of 8 near the current range.
    Tail(u64),
    /// A tail this many words ahead of the consumer's head.
    TailAhead(u64),
    /// A plausible head.
    Head(u64),
    Read,
    ReadTimeout,
    Batch(usize),
    ForEach(usize),
    Send(usize),
    Reserve(usize, usize),
    SendBatch(Vec<usize>),
    Flush,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..80, any::<u64>()).prop_map(|(i, v)| Step::CtrlWord(i, v)),
        (0usize..512, any::<u64>()).prop_map(|(i, v)| Step::DataWord(i, v)),
        (0usize..512, 0u32..1100, any::<bool>())
            .prop_map(|(i, len, pad)| Step::Header(i, len, pad)),
        (0u32..4200, any::<bool>()).prop_map(|(len, pad)| Step::HeaderAtHead(len, pad)),
        (0u64..1200).prop_map(|t| Step::Tail(t * 8)),
        (0u64..600).prop_map(Step::TailAhead),
        (0u64..1200).prop_map(|h| Step::Head(h * 8)),
        Just(Step::Read),
        Just(Step::Read),
        Just(Step::ReadTimeout),
        (0usize..6).prop_map(Step::Batch),
        (0usize..6).prop_map(Step::ForEach),
        (0usize..1100).prop_map(Step::Send),
        (0usize..1100, 0usize..1200).prop_map(|(n, used)| Step::Reserve(n, used)),
        proptest::collection::vec(0usize..400, 0..5).prop_map(Step::SendBatch),
        Just(Step::Flush),
    ]
}

/// The control block as 80 atomic words, for the hostile writes.
fn ctrl_word(shared: &Shared, i: usize) -> &AtomicU64 {
    assert!(i < std::mem::size_of::<ControlBlock>() / 8);
    let base = std::ptr::from_ref(shared.ctrl()).cast::<AtomicU64>();
    // SAFETY: the control block is 640 bytes of `#[repr(C)]` atomics and padding inside a
    // 4096-byte writable mapping that `shared` keeps alive; word `i < 80` lies inside it, is
    // 8-aligned, and is only ever accessed atomically.
    unsafe { &*base.add(i) }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(debug_assertions) { 512 } else { 4096 }))]

    /// A peer that rewrites any control word, data word or record header between our calls:
    /// the consumer returns only records inside the ring (copy-out of exactly their length) or
    /// `Empty`/`Corrupt`, the producer `Ok`, `Full`, `TooLarge` or `Corrupt`; nothing panics
    /// (the debug build also checks every data-area access against the mapping), and every call
    /// returns without waiting past its zero timeout.
    #[test]
    fn both_sides_survive_an_image_changing_between_calls(
        steps in proptest::collection::vec(step(), 1..300),
    ) {
        let (mut tx, mut rx) = channel(&small().idle(IdleStrategy::spin())).unwrap();
        let max = rx.max_payload;
        for step in steps {
            match step {
                Step::CtrlWord(i, v) => ctrl_word(&rx.shared, i).store(v, Ordering::Relaxed),
                // SAFETY: word `i < 512` of the 4096-byte data area; this test is the only
                // writer and no read is in progress between calls.
                Step::DataWord(i, v) => unsafe { tx.shared.data.store_u64(i * 8, v) },
                Step::Header(i, len, pad) => {
                    let kind = if pad { PADDING } else { 0 };
                    // SAFETY: as for `DataWord`.
                    unsafe { tx.shared.data.store_u64(i * 8, layout::encode_header(len, kind)) };
                }
                Step::HeaderAtHead(len, pad) => {
                    let kind = if pad { PADDING } else { 7 };
                    let at = (rx.head & (rx.capacity - 1)) as usize;
                    // SAFETY: as for `DataWord`; `head` is 8-aligned, so `at + 8 <= 4096`.
                    unsafe { tx.shared.data.store_u64(at, layout::encode_header(len, kind)) };
                }
                Step::Tail(t) => rx.shared.ctrl().tail.word.store(t, Ordering::Release),
                Step::TailAhead(n) => {
                    let tail = rx.head + n * 8;
                    rx.shared.ctrl().tail.word.store(tail, Ordering::Release);
                }
                Step::Head(h) => rx.shared.ctrl().head.word.store(h, Ordering::Release),
                Step::Read => match rx.try_read() {
                    Ok(rec) => {
                        prop_assert!(rec.len() <= max);
                        prop_assert_eq!(rec.to_vec().len(), rec.len());
                    }
                    Err(Error::Empty | Error::Corrupt { .. }) => {}
                    Err(err) => prop_assert!(false, "read: {err}"),
                },
                Step::ReadTimeout => match rx.read_timeout(Duration::ZERO) {
                    Ok(rec) => {
                        let mut buf = [0u8; 2048];
                        prop_assert_eq!(rec.copy_to_slice(&mut buf), rec.len());
                    }
                    Err(Error::TimedOut | Error::Corrupt { .. }) => {}
                    Err(err) => prop_assert!(false, "read_timeout: {err}"),
                },
                Step::Batch(n) => {
                    let mut out = Vec::new();
                    match rx.try_recv_batch(&mut out, n) {
                        Ok(got) => {
                            prop_assert_eq!(got, out.len());
                            prop_assert!(out.iter().all(|r| r.len() <= max));
                        }
                        Err(Error::Empty | Error::Corrupt { .. }) => {}
                        Err(err) => prop_assert!(false, "batch: {err}"),
                    }
                }
                Step::ForEach(n) => {
                    let mut lens = Vec::new();
                    match rx.for_each_available(n, |rec| lens.push((rec.len(), rec.to_vec().len()))) {
                        Ok(got) => {
                            prop_assert_eq!(got, lens.len());
                            prop_assert!(lens.iter().all(|&(len, copied)| len <= max && len == copied));
                        }
                        Err(Error::Corrupt { .. }) => {}
                        Err(err) => prop_assert!(false, "for_each: {err}"),
                    }
                }
                Step::Send(n) => match tx.send_timeout(&pattern(n, 1), Duration::ZERO) {
                    Ok(()) | Err(Error::TimedOut | Error::TooLarge { .. } | Error::Corrupt { .. }) => {}
                    Err(err) => prop_assert!(false, "send: {err}"),
                },
                Step::Reserve(n, used) => match tx.try_reserve(n) {
                    Ok(mut grant) => {
                        prop_assert_eq!(grant.len(), n);
                        grant.fill(0xAB);
                        match grant.commit(used) {
                            Ok(()) => {}
                            Err(err) => prop_assert!(false, "commit: {err}"),
                        }
                    }
                    Err(Error::Full | Error::TooLarge { .. } | Error::Corrupt { .. }) => {}
                    Err(err) => prop_assert!(false, "reserve: {err}"),
                },
                Step::SendBatch(lens) => {
                    let records: Vec<Vec<u8>> = lens.iter().map(|&n| pattern(n, 2)).collect();
                    match tx.try_send_batch(&records) {
                        Ok(n) => prop_assert!(n <= records.len()),
                        Err(Error::Full | Error::Corrupt { .. }) => {}
                        Err(err) => prop_assert!(false, "send batch: {err}"),
                    }
                }
                Step::Flush => {
                    // A hostile consumer may have set the waiting flag; the wake byte goes to
                    // our own consumer's socket, which is alive.
                    prop_assert!(tx.flush().is_ok());
                    prop_assert!(rx.flush().is_ok());
                }
            }
        }
    }
}

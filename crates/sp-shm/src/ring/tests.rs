//! Unit and property tests of the ring over an in-process region (the same memfds, seals and
//! read-only mapping as across processes): a differential test against a `VecDeque<Vec<u8>>`
//! model over a data area full of stale words that look like committed headers, and a hostile
//! peer that writes header words, payload and control words (protocol version 2: a record is
//! published by its header word; the control block's line at offset 128 is reserved).

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::layout::{COMMITTED, encode_header, record_size};
use crate::setup::channel;

const CAPACITY: usize = 4096;
const MAX_PAYLOAD: usize = 1024;
/// The control block's word at offset 128: version 1's tail index, reserved in version 2.
const RESERVED_WORD: usize = 128 / 8;

fn small() -> Config {
    Config::new().capacity(CAPACITY).max_payload(MAX_PAYLOAD)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Words that look like committed headers (records of 8, 0, 16 and the largest payload, and a
/// padding record that is exact at offset 2048): what earlier laps leave in the data area.
fn stale_word(i: usize) -> u64 {
    match i % 5 {
        0 => encode_header(8, 0),
        1 => encode_header(0, 7),
        2 => encode_header(16, 1),
        3 => encode_header(MAX_PAYLOAD as u32, 0),
        _ => encode_header((CAPACITY - 2048 - 8) as u32, PADDING),
    }
}

/// A payload made of header-like words: once a lap has passed it is stale data that the
/// consumer must never mistake for a header.
fn stale_payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len.div_ceil(8))
        .flat_map(|k| stale_word(k + usize::from(seed)).to_le_bytes())
        .take(len)
        .collect()
}

/// A quarter of the payloads are header-like words, the rest a byte pattern.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    if seed.is_multiple_of(4) {
        stale_payload(len, seed)
    } else {
        pattern(len, seed)
    }
}

/// Stores `word` at byte `off` of the data area through the producer's writable mapping
/// (Relaxed), as a hostile or hand-written producer process can at any time.
fn poke(tx: &Producer, off: usize, word: u64) {
    assert!(off.is_multiple_of(8) && off + 8 <= tx.capacity as usize);
    // SAFETY: `off` is 8-aligned and `off + 8 <= capacity` (asserted above), and
    // `tx.shared.data` is the producer's writable mapping of the data area. The store is atomic,
    // so it is defined even while the consumer loads the same word.
    unsafe { tx.shared.data.store_u64(off, word) };
}

/// As [`poke`], with Release: how a producer publishes a header word.
fn poke_release(tx: &Producer, off: usize, word: u64) {
    assert!(off.is_multiple_of(8) && off + 8 <= tx.capacity as usize);
    // SAFETY: as in `poke`: in bounds, aligned, writable, atomic.
    unsafe { tx.shared.data.store_u64_release(off, word) };
}

/// Loads the word at byte `off` of the data area.
fn peek(tx: &Producer, off: usize) -> u64 {
    assert!(off.is_multiple_of(8) && off + 8 <= tx.capacity as usize);
    // SAFETY: `off` is 8-aligned and `off + 8 <= capacity` (asserted above); an atomic load of
    // the producer's own mapping.
    unsafe { tx.shared.data.load_u64(off) }
}

/// The word in the slot at the producer's tail, which the producer keeps zero.
fn tail_slot(tx: &Producer) -> u64 {
    peek(tx, (tx.tail & (tx.capacity - 1)) as usize)
}

/// The data-area offset of the consumer's next header.
fn head_offset(rx: &Consumer) -> usize {
    (rx.head & (rx.capacity - 1)) as usize
}

/// Moves both sides of an empty ring to byte position `target` (8-aligned) with real records,
/// each read as soon as it is sent. Afterwards the slot at `target` is zero and everything else
/// holds old records.
fn advance_to(tx: &mut Producer, rx: &mut Consumer, target: u64) {
    assert!(target.is_multiple_of(8) && tx.tail == rx.head && rx.head <= target);
    while rx.head < target {
        let to_end = tx.capacity - (rx.head & (tx.capacity - 1));
        let gap = (target - rx.head).min(to_end).min(8 + MAX_PAYLOAD as u64);
        let len = gap as usize - 8;
        tx.try_send(&vec![0xEE; len]).unwrap();
        assert_eq!(rx.try_read().unwrap().len(), len);
    }
    assert_eq!((tx.tail, rx.head), (target, target));
    assert_eq!(tail_slot(tx), 0);
}

/// Fills the data area with stale header-like words, except the slot at the producer's tail
/// (which a fresh ring has zero): every third word is a padding header exact for its offset.
fn fill_stale(tx: &Producer) {
    let tail_at = (tx.tail & (tx.capacity - 1)) as usize;
    for off in (0..CAPACITY).step_by(8).filter(|&off| off != tail_at) {
        let word = if off.is_multiple_of(24) {
            encode_header((CAPACITY - off - 8) as u32, PADDING)
        } else {
            stale_word(off / 8)
        };
        poke(tx, off, word);
    }
}

/// Runs `f` on its own thread and waits for it at most 20 s (a bounded wait, not a sleep): a
/// call that never returns fails the test instead of hanging it.
fn within_bound<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result
        .recv_timeout(Duration::from_secs(20))
        .expect("did not return within 20 s (an endless loop?), or panicked")
}

/// `try_read` must return `Corrupt` naming exactly `word`.
fn assert_corrupt(rx: &mut Consumer, word: u64) {
    match rx.try_read() {
        Err(Error::Corrupt { value, .. }) => assert_eq!(value, word, "{word:#x}"),
        Ok(rec) => panic!("{word:#x}: read a record of {} bytes", rec.len()),
        Err(err) => panic!("{word:#x}: {err}"),
    }
}

/// xorshift64*, for the long deterministic runs.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
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
    assert!(matches!(tx.try_send(&[9; 1016]), Err(Error::Full)));
    tx.try_send(&[3; 1008]).unwrap();
    for i in 0..3u8 {
        assert_eq!(rx.try_read().unwrap().to_vec(), [i; 1016]);
    }
    assert_eq!(rx.try_read().unwrap().to_vec(), [3; 1008]);
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
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

// --- the producer's commit protocol ---------------------------------------------------------

/// After every commit the slot at the producer's tail is zero, whatever the data area held
/// before: the producer zeroes the slot after a record before it publishes the record's header.
#[test]
fn producer_zeroes_the_slot_after_each_record() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    fill_stale(&tx);
    assert_eq!(tail_slot(&tx), 0);
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
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
        assert!(matches!(rx.try_read(), Err(Error::Empty)), "round {round}");
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
                Err(Error::Full) => {
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
                Err(Error::Empty) => {
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
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
    assert!(
        n_full > 10 && n_empty > 10,
        "full {n_full} times, empty {n_empty} times"
    );
}

// --- hostile header words -------------------------------------------------------------------

/// A nonzero word without the commit bit at the consumer's head is `Corrupt`, at the start,
/// mid-ring, in the last slot and after laps; the words include every version-1 header shape.
/// The word is checked afresh on every call: zero again, the ring is merely empty, and the
/// producer's next record reads normally.
#[test]
fn header_without_commit_bit_is_corrupt() {
    let words = [
        8,                                 // version 1: an 8-byte record of kind 0
        5 | (7 << 32),                     // version 1: kind 7
        (u64::from(PADDING) << 32) | 4088, // version 1: padding
        1 << 32,                           // a kind and no length
        u64::from(!COMMITTED),             // every length bit
        !u64::from(COMMITTED),             // every bit but the commit bit
        1 << 63,                           // the top bit only
    ];
    for start in [0, 72, 4088, 3 * 4096 + 1000] {
        let (mut tx, mut rx) = channel(&small()).unwrap();
        advance_to(&mut tx, &mut rx, start);
        let at = head_offset(&rx);
        for word in words {
            assert!(matches!(rx.try_read(), Err(Error::Empty)));
            poke_release(&tx, at, word);
            assert_corrupt(&mut rx, word);
            assert!(matches!(
                rx.read_timeout(Duration::ZERO),
                Err(Error::Corrupt { .. })
            ));
            assert_eq!(rx.head, start, "{word:#x} moved the head");
            poke(&tx, at, 0);
        }
        tx.try_send(b"after").unwrap();
        assert_eq!(rx.try_read().unwrap().to_vec(), b"after");
    }
}

/// Padding at offset 0 would cover the whole ring and send the consumer back to offset 0 for
/// ever: it is `Corrupt`, and so is the end of any chain of exact padding records (one at every
/// other offset here), after at most one lap. Every read call runs under a bound, so a consumer
/// that looped would fail this test rather than hang it.
#[test]
fn padding_at_offset_zero_is_corrupt_and_terminates() {
    let whole = encode_header((CAPACITY - 8) as u32, PADDING);
    for start in [0u64, 8, 2048, 4088, 4096 + 512] {
        let (mut tx, mut rx) = channel(&small()).unwrap();
        advance_to(&mut tx, &mut rx, start);
        for off in (8..CAPACITY).step_by(8) {
            poke(
                &tx,
                off,
                encode_header((CAPACITY - off - 8) as u32, PADDING),
            );
        }
        poke_release(&tx, 0, whole);
        let (rx, results) = within_bound(move || {
            let mut out = Vec::new();
            let results = [
                rx.try_read().map(|rec| rec.len()),
                rx.read_timeout(Duration::ZERO).map(|rec| rec.len()),
                rx.read().map(|rec| rec.len()),
                rx.try_recv_batch(&mut out, 8),
                rx.recv_batch(&mut out, 8),
                rx.for_each_available(8, |_| {}),
            ];
            (rx, results)
        });
        for res in results {
            assert!(
                matches!(res, Err(Error::Corrupt { value, .. }) if value == whole),
                "from {start}: {res:?}"
            );
        }
        assert_eq!(rx.head, start.next_multiple_of(CAPACITY as u64));
        drop(tx);
    }
}

/// A padding record must reach exactly to the end of the data area; any other length is
/// `Corrupt` and leaves the head where it was. The exact length is skipped, and the record at
/// offset 0 is read next.
#[test]
fn padding_not_reaching_the_end_is_corrupt() {
    for start in [8u64, 16, 72, 2048, 4080, 4088, 4096 + 1000] {
        let at = start as usize % CAPACITY;
        let exact = CAPACITY - at - 8;
        let lens = [
            0,
            8,
            100,
            exact.wrapping_sub(8),
            exact + 8,
            exact + 16,
            CAPACITY - 8,
            CAPACITY,
            (1 << 31) - 1,
        ];
        for len in lens
            .into_iter()
            .filter(|&len| len != exact && len < 1 << 31)
        {
            let (mut tx, mut rx) = channel(&small()).unwrap();
            advance_to(&mut tx, &mut rx, start);
            let word = encode_header(len as u32, PADDING);
            poke_release(&tx, at, word);
            assert_corrupt(&mut rx, word);
            assert_eq!(rx.head, start, "len {len}");
        }
        if at < 24 {
            // No room for the record at offset 0 below the padding's header.
            continue;
        }
        let (mut tx, mut rx) = channel(&small()).unwrap();
        advance_to(&mut tx, &mut rx, start);
        // A hand-made record at offset 0, then the padding before it, as the producer orders them.
        poke(&tx, 8, u64::from_le_bytes(*b"wrapped!"));
        poke(&tx, 16, 0);
        poke_release(&tx, 0, encode_header(8, 4));
        poke_release(&tx, at, encode_header(exact as u32, PADDING));
        let rec = rx.try_read().unwrap();
        assert_eq!((rec.len(), rec.kind()), (8, 4));
        assert_eq!(rec.to_vec(), b"wrapped!");
        drop(rec);
        assert_eq!(rx.head, start.next_multiple_of(CAPACITY as u64) + 16);
        assert!(matches!(rx.try_read(), Err(Error::Empty)));
    }
}

/// A length above the largest payload is `Corrupt`, wherever the head is; the largest payload
/// itself is a record.
#[test]
fn record_longer_than_max_payload_is_corrupt() {
    for start in [0u64, 8, 2048, 4096 + 8] {
        for len in [MAX_PAYLOAD + 1, 2000, CAPACITY - 8, CAPACITY, (1 << 31) - 1] {
            let (mut tx, mut rx) = channel(&small()).unwrap();
            advance_to(&mut tx, &mut rx, start);
            let word = encode_header(len as u32, 0);
            poke_release(&tx, head_offset(&rx), word);
            assert_corrupt(&mut rx, word);
            assert_eq!(rx.head, start);
        }
        let (mut tx, mut rx) = channel(&small()).unwrap();
        advance_to(&mut tx, &mut rx, start);
        poke_release(&tx, head_offset(&rx), encode_header(MAX_PAYLOAD as u32, 3));
        let rec = rx.try_read().unwrap();
        assert_eq!((rec.len(), rec.kind()), (MAX_PAYLOAD, 3));
        assert_eq!(rec.to_vec().len(), MAX_PAYLOAD);
    }
}

/// A record whose slot would pass the end of the data area is `Corrupt` (a record never
/// straddles the end); one that ends exactly at the end is read.
#[test]
fn record_past_the_end_of_the_data_area_is_corrupt() {
    for to_end in [8usize, 16, 64, 1000] {
        let start = (2 * CAPACITY - to_end) as u64;
        let (mut tx, mut rx) = channel(&small()).unwrap();
        advance_to(&mut tx, &mut rx, start);
        poke_release(&tx, head_offset(&rx), encode_header((to_end - 8) as u32, 2));
        let rec = rx.try_read().unwrap();
        assert_eq!((rec.len(), rec.kind()), (to_end - 8, 2));
        assert_eq!(rec.to_vec().len(), to_end - 8);
        drop(rec);
        assert_eq!(rx.head, 2 * CAPACITY as u64);
        let lens = [to_end - 7, to_end - 1, to_end, to_end + 100, MAX_PAYLOAD];
        for len in lens.into_iter().filter(|&len| len <= MAX_PAYLOAD) {
            assert!(record_size(len) > to_end);
            let (mut tx, mut rx) = channel(&small()).unwrap();
            advance_to(&mut tx, &mut rx, start);
            let word = encode_header(len as u32, 0);
            poke_release(&tx, head_offset(&rx), word);
            assert_corrupt(&mut rx, word);
            assert_eq!(rx.head, start, "len {len}");
        }
    }
}

/// A record appears when its header does, not before: a hand-written producer writes the
/// payload (nothing to read yet), zeroes the next slot, then stores the header with Release;
/// the consumer reads the record and stops at the zeroed slot. Single-threaded, so this checks
/// the steps, not their ordering between cores; the loom models check that.
#[test]
fn record_appears_with_its_header() {
    let (tx, mut rx) = channel(&small()).unwrap();
    poke(&tx, 16, encode_header(8, 0));
    poke(&tx, 8, u64::from_le_bytes(*b"handmade"));
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
    poke(&tx, 16, 0);
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
    poke_release(&tx, 0, encode_header(8, 3));
    let rec = rx.try_read().unwrap();
    assert_eq!((rec.len(), rec.kind()), (8, 3));
    assert_eq!(rec.to_vec(), b"handmade");
    drop(rec);
    assert_eq!(rx.head, 16);
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
}

/// The header at the head changes between calls: each call acts on the word it loads then, and
/// a grant keeps the length and kind it validated even if the header is rewritten under it.
#[test]
fn header_changing_between_calls() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    tx.try_send(b"abc").unwrap();
    {
        let rec = rx.try_read().unwrap();
        poke_release(&tx, 0, encode_header(MAX_PAYLOAD as u32, 9));
        assert_eq!((rec.len(), rec.kind()), (3, 0));
        assert_eq!(rec.to_vec(), b"abc");
        let mut buf = [0u8; 2048];
        assert_eq!(rec.copy_to_slice(&mut buf), 3);
    }
    assert_eq!(rx.head, 16);
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
    poke_release(&tx, 16, 5);
    assert_corrupt(&mut rx, 5);
    let too_long = encode_header(2000, 0);
    poke_release(&tx, 16, too_long);
    assert_corrupt(&mut rx, too_long);
    poke_release(&tx, 16, 0);
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
    poke(&tx, 24, u64::from_le_bytes(*b"late\0\0\0\0"));
    poke_release(&tx, 16, encode_header(4, 1));
    let rec = rx.try_read().unwrap();
    assert_eq!((rec.len(), rec.kind()), (4, 1));
    assert_eq!(rec.to_vec(), b"late");
    drop(rec);
    assert_eq!(rx.head, 32);
    assert!(matches!(rx.try_read(), Err(Error::Empty)));
}

/// A peer that fills the data area with valid headers (here, an empty record in every slot)
/// offers an endless supply of records; the consumer takes at most what a producer could have
/// written beyond the head it published, then says `Corrupt`. Every read form terminates, and
/// once the producer's process is gone the leftovers end in `PeerGone` or `Corrupt`, never an
/// endless stream.
#[test]
fn a_ring_full_of_valid_headers_is_not_an_endless_supply() {
    let empty = encode_header(0, 0);
    let fill = |tx: &Producer| {
        for off in (0..CAPACITY).step_by(8) {
            poke(tx, off, empty);
        }
    };
    // One batch call with no limit of its own.
    let (tx, mut rx) = channel(&small()).unwrap();
    fill(&tx);
    let (n, res) = within_bound(move || {
        let mut n = 0usize;
        let res = rx.for_each_available(usize::MAX, |_| n += 1);
        (n, res)
    });
    assert!(matches!(res, Err(Error::Corrupt { .. })), "{res:?}");
    assert!(n < CAPACITY / 8, "{n} records");
    let (tx2, mut rx2) = channel(&small()).unwrap();
    fill(&tx2);
    let mut out = Vec::new();
    let res = rx2.try_recv_batch(&mut out, usize::MAX);
    assert!(matches!(res, Err(Error::Corrupt { .. })), "{res:?}");
    assert!(out.len() < CAPACITY / 8);
    // One record at a time, the head published after each: the producer's process leaves.
    let (tx3, mut rx3) = channel(&small()).unwrap();
    fill(&tx3);
    drop(tx3);
    let (n, last) = within_bound(move || {
        let mut n = 0usize;
        loop {
            match rx3.read() {
                Ok(rec) => {
                    assert!(rec.is_empty());
                    n += 1;
                }
                Err(err) => return (n, err),
            }
        }
    });
    assert!(
        matches!(last, Error::PeerGone | Error::Corrupt { .. }),
        "{last:?}"
    );
    assert!(n <= 2 * CAPACITY / 8, "{n} records from a dead peer");
    drop((tx, tx2));
}

// --- hostile control block ------------------------------------------------------------------

/// Version 1's tail index at offset 128 is reserved: the producer never writes it, and the
/// consumer never reads it, whatever a peer stores there (a tail far ahead, behind, unaligned).
#[test]
fn reserved_line_is_ignored() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    let reserved = |rx: &Consumer| ctrl_word(&rx.shared, RESERVED_WORD).load(Ordering::Relaxed);
    let mut buf = Vec::new();
    for round in 0..100u32 {
        let bytes = pattern((round as usize * 37) % 1000, round as u8);
        tx.try_send(&bytes).unwrap();
        assert_eq!(reserved(&rx), 0, "the producer wrote offset 128");
        rx.try_recv_into(&mut buf).unwrap();
        assert_eq!(buf, bytes);
    }
    let junk = [u64::MAX, tx.tail + 64, tx.tail - 8, tx.tail + 3, 1 << 40, 0];
    for (round, word) in junk.into_iter().enumerate() {
        ctrl_word(&rx.shared, RESERVED_WORD).store(word, Ordering::Release);
        assert!(matches!(rx.try_read(), Err(Error::Empty)), "{word:#x}");
        let records: Vec<Vec<u8>> = (0..3).map(|i| pattern(100 * i, round as u8)).collect();
        assert_eq!(tx.try_send_batch(&records).unwrap(), 3);
        for want in &records {
            rx.try_recv_into(&mut buf).unwrap();
            assert_eq!(&buf, want, "{word:#x}");
        }
        assert!(matches!(rx.try_read(), Err(Error::Empty)), "{word:#x}");
        assert_eq!(reserved(&rx), word);
    }
}

#[test]
fn hostile_head_is_corrupt() {
    let (mut tx, mut rx) = channel(&small()).unwrap();
    // A valid head the producer has loaded, so that going backwards is checked on its own.
    while tx.try_send(&[0; 512]).is_ok() {}
    drop(rx.try_read().unwrap());
    // 448 + 8 bytes fit exactly before the end, but with the next slot need more than the cached
    // head allows: the producer reloads the head (520).
    tx.try_send(&[0; 448]).unwrap();
    assert_eq!(tx.head_cache, 520);
    while tx.try_send(&[0; 512]).is_ok() {}
    let beyond = tx.tail + 8;
    for bad_head in [512, u64::MAX, 1 << 20, 5, beyond] {
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

    /// The ring against a `VecDeque` model, over a data area that starts full of stale
    /// header-like words and with a quarter of the payloads made of such words: every committed
    /// record (deferred ones too: the header publishes) is read once, in order, and nothing
    /// else; after every operation the slot at the producer's tail is zero.
    #[test]
    fn ring_matches_vecdeque_model(ops in proptest::collection::vec(op(), 1..300)) {
        let (mut tx, mut rx) = channel(&small()).unwrap();
        fill_stale(&tx);
        let mut published: VecDeque<Vec<u8>> = VecDeque::new();
        for op in ops {
            match op {
                Op::Send(len, seed) => {
                    let bytes = payload(len, seed);
                    match tx.try_send(&bytes) {
                        Ok(()) => published.push_back(bytes),
                        Err(Error::Full) => {}
                        Err(err) => prop_assert!(false, "send: {err}"),
                    }
                }
                Op::Reserve { len, used, seed, how } => {
                    let Ok(mut grant) = tx.try_reserve(len) else { continue };
                    let bytes = payload(len, seed);
                    grant.copy_from_slice(&bytes);
                    let kept = bytes[..used.min(len)].to_vec();
                    match how {
                        // Abandoned: its header-like payload stays behind as garbage.
                        0 => { let _abandoned = grant; }
                        1 => {
                            grant.commit(used).unwrap();
                            published.push_back(kept);
                        }
                        _ => {
                            grant.commit_deferred(used);
                            published.push_back(kept);
                        }
                    }
                }
                Op::Flush => tx.flush().unwrap(),
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
                        lens.iter().map(|&len| payload(len, len as u8)).collect();
                    match tx.try_send_batch(&records) {
                        Ok(n) => published.extend(records.into_iter().take(n)),
                        Err(Error::Full) => {}
                        Err(err) => prop_assert!(false, "send batch: {err}"),
                    }
                }
            }
            prop_assert_eq!(tail_slot(&tx), 0);
        }
        while let Some(want) = published.pop_front() {
            prop_assert_eq!(rx.try_read().unwrap().to_vec(), want);
        }
        prop_assert!(matches!(rx.try_read(), Err(Error::Empty)));
    }
}

// --- arbitrary shared memory ----------------------------------------------------------------

/// One word a hostile producer stores in the data area.
#[derive(Debug, Clone)]
enum Word {
    Raw(u64),
    Zero,
    /// A committed header: `(len, kind)`.
    Header(u32, u32),
    /// A header without the commit bit (version 1's encoding).
    Uncommitted(u32, u32),
    /// A padding header this many slots off the exact length for its offset.
    PaddingHere(i8),
}

fn word() -> impl Strategy<Value = Word> {
    let kind = prop_oneof![Just(0u32), Just(PADDING), any::<u32>()];
    prop_oneof![
        1 => any::<u64>().prop_map(Word::Raw),
        1 => Just(Word::Zero),
        3 => (0u32..1100, kind).prop_map(|(len, kind)| Word::Header(len, kind)),
        1 => (0u32..1100, any::<u32>()).prop_map(|(len, kind)| Word::Uncommitted(len, kind)),
        2 => (-2i8..=2).prop_map(Word::PaddingHere),
    ]
}

/// The 64-bit value of `word` stored at byte `off`.
fn word_at(word: &Word, off: usize) -> u64 {
    match *word {
        Word::Raw(value) => value,
        Word::Zero => 0,
        Word::Header(len, kind) => encode_header(len, kind),
        Word::Uncommitted(len, kind) => u64::from(len & !COMMITTED) | (u64::from(kind) << 32),
        Word::PaddingHere(delta) => {
            let len = (CAPACITY - off - 8) as i64 + i64::from(delta) * 8;
            encode_header(len.max(0) as u32, PADDING)
        }
    }
}

/// A record the consumer returned lies inside the data area and the largest payload, and
/// copies out exactly its length.
fn check_grant(rec: &ReadGrant<'_>) -> Result<(), TestCaseError> {
    prop_assert!(rec.len() <= MAX_PAYLOAD, "{} bytes", rec.len());
    prop_assert!(rec.rec.offset + record_size(rec.len()) <= CAPACITY);
    prop_assert_eq!(rec.to_vec().len(), rec.len());
    let mut buf = [0u8; 2048];
    prop_assert_eq!(rec.copy_to_slice(&mut buf), rec.len());
    Ok(())
}

proptest! {
    // A case that never returns costs `within_bound`'s 20 s: bound the shrinking too.
    #![proptest_config(ProptestConfig {
        max_shrink_time: 60_000,
        ..ProptestConfig::with_cases(if cfg!(debug_assertions) { 256 } else { 1024 })
    })]

    /// Whatever the data area and the control block hold, wherever the consumer's head is,
    /// every call returns (under a bound) either a record inside the ring or `Empty`/`Corrupt`,
    /// and never panics. Chains of valid-looking records can go round the ring for ever, so the
    /// test stops after 2000 of them.
    #[test]
    fn consumer_survives_arbitrary_shared_memory(
        start in 0u64..1536,
        words in proptest::collection::vec(word(), CAPACITY / 8),
        ctrl in proptest::collection::vec((0usize..80, any::<u64>()), 0..16),
    ) {
        let (mut tx, mut rx) = channel(&small()).unwrap();
        advance_to(&mut tx, &mut rx, start * 8);
        for (i, word) in words.iter().enumerate() {
            poke(&tx, i * 8, word_at(word, i * 8));
        }
        for (i, value) in ctrl {
            ctrl_word(&rx.shared, i).store(value, Ordering::Relaxed);
        }
        within_bound(move || {
            for _ in 0..2000 {
                match rx.try_read() {
                    Ok(rec) => check_grant(&rec)?,
                    Err(Error::Empty | Error::Corrupt { .. }) => break,
                    Err(err) => prop_assert!(false, "unexpected {err}"),
                }
            }
            Ok(())
        })?;
        // The producer lives until here: a wake-up the consumer sends must find it.
        drop(tx);
    }
}

// --- hostile image that changes between calls ---------------------------------------------

/// One step of the hostile-image property test: the peer rewrites a word, or this process calls
/// into its producer or consumer.
#[derive(Debug, Clone)]
enum Step {
    /// Any word of the control block's first 640 bytes (atomically).
    CtrlWord(usize, u64),
    /// The reserved line at offset 128 (version 1's tail).
    Reserved(u64),
    /// The consumer-waiting (`true`) or producer-waiting line.
    Waiting(bool, u64),
    /// Any word of the data area.
    DataWord(usize, u64),
    /// A committed header (small length, maybe padding) at a data word.
    Header(usize, u32, bool),
    /// A committed header at the consumer's next read position (length up to past the
    /// capacity).
    HeaderAtHead(u32, bool),
    /// Any word at the consumer's next read position: zero, uncommitted, anything.
    WordAtHead(u64),
    /// Padding at the consumer's next read position, this many slots off the exact length.
    PaddingAtHead(i8),
    /// A hand-written record at the consumer's next read position: payload, next slot zeroed,
    /// header with Release.
    RecordAtHead(u32, u32),
    /// A committed header in the slot the producer keeps zero: the consumer runs past the
    /// producer's tail, and then publishes a head beyond it.
    HeaderAtTail(u32),
    /// A plausible head.
    Head(u64),
    /// A head this many slots from the producer's tail (behind it, at it or beyond it).
    HeadNearTail(i16),
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
    let at_head = prop_oneof![
        any::<u64>(),
        Just(0u64),
        (0u64..4200, any::<u32>()).prop_map(|(len, kind)| len | (u64::from(kind) << 32)),
    ];
    prop_oneof![
        (0usize..80, any::<u64>()).prop_map(|(i, v)| Step::CtrlWord(i, v)),
        any::<u64>().prop_map(Step::Reserved),
        (
            any::<bool>(),
            prop_oneof![Just(0u64), Just(1), any::<u64>()]
        )
            .prop_map(|(consumer, v)| Step::Waiting(consumer, v)),
        (0usize..512, any::<u64>()).prop_map(|(i, v)| Step::DataWord(i, v)),
        (0usize..512, 0u32..1100, any::<bool>())
            .prop_map(|(i, len, pad)| Step::Header(i, len, pad)),
        (0u32..4200, any::<bool>()).prop_map(|(len, pad)| Step::HeaderAtHead(len, pad)),
        at_head.prop_map(Step::WordAtHead),
        (-2i8..=2).prop_map(Step::PaddingAtHead),
        (0u32..1100, any::<u32>()).prop_map(|(len, kind)| Step::RecordAtHead(len, kind)),
        (0u32..1100).prop_map(Step::HeaderAtTail),
        (0u64..1200).prop_map(|h| Step::Head(h * 8)),
        (-600i16..4).prop_map(Step::HeadNearTail),
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

/// Applies `steps`; see `both_sides_survive_an_image_changing_between_calls`.
fn run_steps(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let (mut tx, mut rx) = channel(&small().idle(IdleStrategy::spin())).unwrap();
    for step in steps {
        let at_head = head_offset(&rx);
        match step {
            Step::CtrlWord(i, v) => ctrl_word(&rx.shared, i).store(v, Ordering::Relaxed),
            Step::Reserved(v) => ctrl_word(&rx.shared, RESERVED_WORD).store(v, Ordering::Relaxed),
            Step::Waiting(consumer, v) => {
                let ctrl = rx.shared.ctrl();
                let line = if consumer {
                    &ctrl.consumer_waiting
                } else {
                    &ctrl.producer_waiting
                };
                line.word.store(v, Ordering::Relaxed);
            }
            Step::DataWord(i, v) => poke(&tx, i * 8, v),
            Step::Header(i, len, pad) => {
                let kind = if pad { PADDING } else { 0 };
                poke(&tx, i * 8, encode_header(len, kind));
            }
            Step::HeaderAtHead(len, pad) => {
                let kind = if pad { PADDING } else { 7 };
                poke_release(&tx, at_head, encode_header(len, kind));
            }
            Step::WordAtHead(v) => poke_release(&tx, at_head, v),
            Step::PaddingAtHead(delta) => {
                let len = (CAPACITY - at_head - 8) as i64 + i64::from(delta) * 8;
                poke_release(&tx, at_head, encode_header(len.max(0) as u32, PADDING));
            }
            Step::RecordAtHead(len, kind) => {
                let size = record_size(len as usize);
                for (k, off) in (at_head + 8..at_head + size).step_by(8).enumerate() {
                    poke(&tx, off % CAPACITY, stale_word(k));
                }
                poke(&tx, (at_head + size) % CAPACITY, 0);
                poke_release(&tx, at_head, encode_header(len, kind));
            }
            Step::HeaderAtTail(len) => {
                let at = (tx.tail & (tx.capacity - 1)) as usize;
                poke_release(&tx, at, encode_header(len, 0));
            }
            Step::Head(h) => rx.shared.ctrl().head.word.store(h, Ordering::Release),
            Step::HeadNearTail(delta) => {
                let h = tx.tail.saturating_add_signed(i64::from(delta) * 8);
                rx.shared.ctrl().head.word.store(h, Ordering::Release);
            }
            Step::Read => match rx.try_read() {
                Ok(rec) => check_grant(&rec)?,
                Err(Error::Empty | Error::Corrupt { .. }) => {}
                Err(err) => prop_assert!(false, "read: {err}"),
            },
            Step::ReadTimeout => match rx.read_timeout(Duration::ZERO) {
                Ok(rec) => check_grant(&rec)?,
                Err(Error::TimedOut | Error::Corrupt { .. }) => {}
                Err(err) => prop_assert!(false, "read_timeout: {err}"),
            },
            Step::Batch(n) => {
                let mut out = Vec::new();
                match rx.try_recv_batch(&mut out, n) {
                    Ok(got) => {
                        prop_assert_eq!(got, out.len());
                        prop_assert!(out.iter().all(|r| r.len() <= MAX_PAYLOAD));
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
                        prop_assert!(
                            lens.iter()
                                .all(|&(len, copied)| len <= MAX_PAYLOAD && len == copied)
                        );
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
                let records: Vec<Vec<u8>> = lens.iter().map(|&n| stale_payload(n, 2)).collect();
                match tx.try_send_batch(&records) {
                    Ok(n) => prop_assert!(n <= records.len()),
                    Err(Error::Full | Error::Corrupt { .. }) => {}
                    Err(err) => prop_assert!(false, "send batch: {err}"),
                }
            }
            Step::Flush => {
                // A hostile peer may have set either waiting flag; the wake byte goes to our
                // own other side's socket, which is alive.
                prop_assert!(tx.flush().is_ok());
                prop_assert!(rx.flush().is_ok());
            }
        }
    }
    Ok(())
}

proptest! {
    // A case that never returns costs `within_bound`'s 20 s: bound the shrinking too.
    #![proptest_config(ProptestConfig {
        max_shrink_time: 60_000,
        ..ProptestConfig::with_cases(if cfg!(debug_assertions) { 512 } else { 4096 })
    })]

    /// A peer that rewrites any control word (the head, the waiting flags, the reserved line),
    /// any data word or any header (at the consumer's head, at the producer's tail, anywhere)
    /// between our calls: the consumer returns only records inside the ring and the largest
    /// payload (copy-out of exactly their length) or `Empty`/`Corrupt`, the producer `Ok`,
    /// `Full`, `TooLarge` or `Corrupt`; nothing panics (the debug build also checks every
    /// data-area access against the mapping), every call returns without waiting past its zero
    /// timeout, and the whole case returns under a bound.
    #[test]
    fn both_sides_survive_an_image_changing_between_calls(
        steps in proptest::collection::vec(step(), 1..300),
    ) {
        within_bound(move || run_steps(steps))?;
    }
}

//! A hostile producer writing header words and control words: each bad value is `Corrupt`,
//! nothing loops or reads outside the ring.
use super::*;

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
            assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
            poke_release(&tx, at, word);
            assert_corrupt(&mut rx, Corruption::NotAHeader, word);
            assert!(matches!(
                rx.read_timeout(Duration::ZERO),
                Err(RecvTimeoutError::Broken(Error::Corrupt { .. }))
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
            // Every form must break with `Corrupt`, never merely find nothing.
            let results = [
                rx.try_read()
                    .map(|rec| rec.len())
                    .map_err(|err| err.into_broken()),
                rx.read_timeout(Duration::ZERO)
                    .map(|rec| rec.len())
                    .map_err(|err| err.into_broken()),
                rx.read().map(|rec| rec.len()).map_err(Some),
                rx.try_recv_batch(&mut out, 8)
                    .map_err(|err| err.into_broken()),
                rx.recv_batch(&mut out, 8).map_err(Some),
                rx.for_each_available(8, |_| {}).map_err(Some),
            ];
            (rx, results)
        });
        for res in results {
            assert!(
                matches!(res, Err(Some(Error::Corrupt { value, .. })) if value == whole),
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
            assert_corrupt(&mut rx, Corruption::BadPadding, word);
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
        assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
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
            assert_corrupt(&mut rx, Corruption::TooLong, word);
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
            assert_corrupt(&mut rx, Corruption::PastTheEnd, word);
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
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
    poke(&tx, 16, 0);
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
    poke_release(&tx, 0, encode_header(8, 3));
    let rec = rx.try_read().unwrap();
    assert_eq!((rec.len(), rec.kind()), (8, 3));
    assert_eq!(rec.to_vec(), b"handmade");
    drop(rec);
    assert_eq!(rx.head, 16);
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
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
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
    poke_release(&tx, 16, 5);
    assert_corrupt(&mut rx, Corruption::NotAHeader, 5);
    let too_long = encode_header(2000, 0);
    poke_release(&tx, 16, too_long);
    assert_corrupt(&mut rx, Corruption::TooLong, too_long);
    poke_release(&tx, 16, 0);
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
    poke(&tx, 24, u64::from_le_bytes(*b"late\0\0\0\0"));
    poke_release(&tx, 16, encode_header(4, 1));
    let rec = rx.try_read().unwrap();
    assert_eq!((rec.len(), rec.kind()), (4, 1));
    assert_eq!(rec.to_vec(), b"late");
    drop(rec);
    assert_eq!(rx.head, 32);
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
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
    assert!(
        matches!(res, Err(TryRecvError::Broken(Error::Corrupt { .. }))),
        "{res:?}"
    );
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
        assert!(
            matches!(rx.try_read(), Err(TryRecvError::Empty)),
            "{word:#x}"
        );
        let records: Vec<Vec<u8>> = (0..3).map(|i| pattern(100 * i, round as u8)).collect();
        assert_eq!(tx.try_send_batch(&records).unwrap(), 3);
        for want in &records {
            rx.try_recv_into(&mut buf).unwrap();
            assert_eq!(&buf, want, "{word:#x}");
        }
        assert!(
            matches!(rx.try_read(), Err(TryRecvError::Empty)),
            "{word:#x}"
        );
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
            matches!(
                tx.try_send(&[0; 512]),
                Err(TrySendError::Broken(Error::Corrupt { .. }))
            ),
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

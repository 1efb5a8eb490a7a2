//! Arbitrary shared memory, fixed or rewritten between calls: both sides return only valid
//! records or errors.
use super::*;

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
    prop_assert!(
        rec.consumer.current.payload.header().offset() + record_size(rec.len()) <= CAPACITY
    );
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
                    Err(TryRecvError::Empty | TryRecvError::Broken(Error::Corrupt { .. })) => break,
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
                Err(TryRecvError::Empty | TryRecvError::Broken(Error::Corrupt { .. })) => {}
                Err(err) => prop_assert!(false, "read: {err}"),
            },
            Step::ReadTimeout => match rx.read_timeout(Duration::ZERO) {
                Ok(rec) => check_grant(&rec)?,
                Err(
                    RecvTimeoutError::Timeout | RecvTimeoutError::Broken(Error::Corrupt { .. }),
                ) => {}
                Err(err) => prop_assert!(false, "read_timeout: {err}"),
            },
            Step::Batch(n) => {
                let mut out = Vec::new();
                match rx.try_recv_batch(&mut out, n) {
                    Ok(got) => {
                        prop_assert_eq!(got, out.len());
                        prop_assert!(out.iter().all(|r| r.len() <= MAX_PAYLOAD));
                    }
                    Err(TryRecvError::Empty | TryRecvError::Broken(Error::Corrupt { .. })) => {}
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
                Ok(())
                | Err(
                    SendTimeoutError::Timeout
                    | SendTimeoutError::Broken(Error::TooLarge { .. } | Error::Corrupt { .. }),
                ) => {}
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
                Err(
                    TrySendError::Full
                    | TrySendError::Broken(Error::TooLarge { .. } | Error::Corrupt { .. }),
                ) => {}
                Err(err) => prop_assert!(false, "reserve: {err}"),
            },
            Step::SendBatch(lens) => {
                let records: Vec<Vec<u8>> = lens.iter().map(|&n| stale_payload(n, 2)).collect();
                match tx.try_send_batch(&records) {
                    Ok(n) => prop_assert!(n <= records.len()),
                    Err(TrySendError::Full | TrySendError::Broken(Error::Corrupt { .. })) => {}
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

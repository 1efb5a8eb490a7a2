//! The differential property test: the ring against a `VecDeque<Vec<u8>>` model.
use super::*;

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
                        Err(TrySendError::Full) => {}
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
                    Err(TryRecvError::Empty) => prop_assert!(published.is_empty()),
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
                        Err(TryRecvError::Empty) => prop_assert!(published.is_empty() || max == 0),
                        Err(err) => prop_assert!(false, "batch: {err}"),
                    }
                }
                Op::SendBatch(lens) => {
                    let records: Vec<Vec<u8>> =
                        lens.iter().map(|&len| payload(len, len as u8)).collect();
                    match tx.try_send_batch(&records) {
                        Ok(n) => published.extend(records.into_iter().take(n)),
                        Err(TrySendError::Full) => {}
                        Err(err) => prop_assert!(false, "send batch: {err}"),
                    }
                }
            }
            prop_assert_eq!(tail_slot(&tx), 0);
        }
        while let Some(want) = published.pop_front() {
            prop_assert_eq!(rx.try_read().unwrap().to_vec(), want);
        }
        prop_assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));
    }
}

//! The independent peer (sp-test-support) rewrites any word of its ring (control block and data area) and the head of
//! ours between our calls; our consumer and producer must return only in-bounds records or
//! errors, and never panic or fault. Protocol version 2: a record is published by its header
//! word (commit bit set), so the interesting words are headers; the control block's word at
//! offset 128 (version 1's tail) is reserved and must be ignored.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sp_fuzz::{Input, MAX_PAYLOAD, PADDING};
use sp_shm::{Error, TryRecvError, TrySendError};

fuzz_target!(|bytes: &[u8]| {
    let (peer, mut duplex) = sp_fuzz::connect();
    let mut input = Input(bytes);
    let mut buf = [0u8; 2048];
    while !input.is_empty() {
        match input.u8() % 8 {
            // Control words of the peer's ring: header, reserved (v1's tail), head, flags (80
            // words).
            0 => peer.ctrl().poke(usize::from(input.u8()) % 80, input.u64()),
            1 => peer.data().poke(
                usize::from(input.u8()) * 2 + usize::from(input.u8() & 1),
                input.u64(),
            ),
            2 => peer.their_ctrl().poke(32, input.u64()),
            // A committed header (a record of up to 2040 bytes, or padding) at any data word:
            // random words rarely carry the commit bit.
            3 => {
                let idx = usize::from(input.u8()) * 2 + usize::from(input.u8() & 1);
                let len = u64::from(input.u8()) * 8;
                let kind = if input.u8() & 1 == 0 { 0 } else { PADDING };
                peer.data().poke(idx, sp_fuzz::header(len, kind));
            }
            4 => match duplex.consumer().try_read() {
                Ok(rec) => {
                    assert!(rec.len() as u64 <= MAX_PAYLOAD);
                    assert_eq!(rec.copy_to_slice(&mut buf), rec.len());
                }
                Err(
                    TryRecvError::Empty
                    | TryRecvError::Broken(Error::Corrupt { .. } | Error::PeerGone),
                ) => {}
                Err(err) => panic!("consumer: {err}"),
            },
            5 => {
                let mut out = Vec::new();
                match duplex
                    .consumer()
                    .try_recv_batch(&mut out, usize::from(input.u8() % 8))
                {
                    Ok(n) => {
                        assert!(n == out.len() && out.iter().all(|r| r.len() as u64 <= MAX_PAYLOAD))
                    }
                    Err(
                        TryRecvError::Empty
                        | TryRecvError::Broken(Error::Corrupt { .. } | Error::PeerGone),
                    ) => {}
                    Err(err) => panic!("batch: {err}"),
                }
            }
            6 => {
                let n = usize::from(input.u8()) * 4;
                match duplex.producer().try_send(&buf[..n.min(buf.len())]) {
                    Ok(())
                    | Err(
                        TrySendError::Full
                        | TrySendError::Broken(
                            Error::TooLarge { .. } | Error::Corrupt { .. } | Error::PeerGone,
                        ),
                    ) => {}
                    Err(err) => panic!("producer: {err}"),
                }
            }
            _ => {
                let _ = duplex.consumer().for_each_available(4, |rec| {
                    assert!(rec.len() as u64 <= MAX_PAYLOAD);
                    let _ = rec.to_vec();
                });
            }
        }
    }
});

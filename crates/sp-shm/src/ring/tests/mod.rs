//! Unit and property tests of the ring over an in-process region (the same memfds, seals and
//! read-only mapping as across processes): a differential test against a `VecDeque<Vec<u8>>`
//! model over a data area full of stale words that look like committed headers, and a hostile
//! peer that writes header words, payload and control words (protocol version 2: a record is
//! published by its header word; the control block's line at offset 128 is reserved).

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;

use super::area::Shared;
use super::*;
use crate::config::Config;
use crate::error::{
    Corruption, Error, RecvTimeoutError, Result, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::idle::IdleStrategy;
use crate::layout::{COMMITTED, PADDING, encode_header, record_size};
use crate::setup::channel;
use crate::sync::{AtomicU64, Ordering};

mod api;
mod commit;
mod external_wait;
mod hostile;
mod images;
mod model;

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
    tx.shared
        .data
        .store_word(tx.shared.data.word_at(off as u64), word);
}

/// As [`poke`], with Release: how a producer publishes a header word.
fn poke_release(tx: &Producer, off: usize, word: u64) {
    assert!(off.is_multiple_of(8) && off + 8 <= tx.capacity as usize);
    tx.shared
        .data
        .store_header(tx.shared.data.word_at(off as u64), word);
}

/// The word in the slot at the producer's tail, which the producer keeps zero.
fn tail_slot(tx: &Producer) -> u64 {
    tx.shared.data.load_word(tx.tail_slot())
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

/// `try_read` must return `Corrupt` for `cause`, naming exactly `word`.
fn assert_corrupt(rx: &mut Consumer, cause: Corruption, word: u64) {
    match rx.try_read() {
        Err(TryRecvError::Broken(Error::Corrupt {
            cause: found,
            value,
        })) => {
            assert_eq!((found, value), (cause, word), "{word:#x}");
        }
        Ok(rec) => panic!("{word:#x}: read a record of {} bytes", rec.len()),
        Err(err) => panic!("{word:#x}: {err}"),
    }
}

/// The control block as 80 atomic words, for the hostile writes.
fn ctrl_word<A>(shared: &Shared<A>, i: usize) -> &AtomicU64 {
    shared.ctrl_word(i)
}

/// xorshift64*, for the long deterministic runs.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

//! The hostile child: the workspace's independent peer (`sp_test_support::shm`) runs the
//! handshake by `docs/protocol.md` and then breaks the protocol (see `hostile.rs` for the trials
//! this side runs against it).

#![allow(unsafe_code)] // The seal probe tries `mprotect` on a read-only mapping.

use std::os::fd::AsRawFd;
use std::time::Duration;

use memmap2::MmapOptions;
use rustix::fs::SealFlags;
use sp_core::End;
use sp_test_support::frame;
use sp_test_support::rng::XorShift;
use sp_test_support::shm::{
    self, COMMITTED, CONSUMER_WAITING, CTRL_SIZE, Flaw, HEAD, HandProducer, PADDING,
    PRODUCER_WAITING, RESERVED, Ring, header,
};

use crate::TestResult;
use crate::hostile::{
    CAPACITY, CLEAN_KIND, CLEAN_REPORT, DEFAULT_SEED, DIRTY_KIND, LEVEL_ENV, MAX_PAYLOAD, SEED_ENV,
    clean_payload, hostile_steps, scrub,
};

/// The bound on each handshake step.
const STEP: Duration = Duration::from_secs(10);

/// Takes this child's end of the socket (`SP_CORE_FD`).
fn adopt() -> Result<End, String> {
    sp_core::adopt().map_err(|e| format!("adopt: {e}"))
}

pub(crate) fn child_hostile() -> TestResult {
    let end = adopt()?;
    let mut mine = Ring::new(CAPACITY, MAX_PAYLOAD, Flaw::None)?;
    mine.send_offer(&end)?;
    let peer = shm::recv_offer(&end, STEP)?;
    shm::exchange_ready(&end, STEP)?;
    let data_map = mine.data();
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut rng = XorShift::new(env(SEED_ENV, DEFAULT_SEED));
    let level = env(LEVEL_ENV, 0);
    let n_steps = hostile_steps();
    let report = |n_clean: u64| {
        let mut msg = CLEAN_REPORT.to_vec();
        msg.extend_from_slice(&n_clean.to_le_bytes());
        frame::send(&end, &msg, &[]).map_err(|e| format!("report: {e}"))
    };
    // Mostly well-formed records, so the consumer gets far, mixed with garbage.
    let mut writer = HandProducer::new(&mine);
    // Clean records first. Once the parent's consumer has released `gate` bytes (its published
    // head), so that it reads some records however late it starts, the child stops writing clean
    // records; once the consumer has released every one of them, so that garbage cannot damage
    // one, the child reports how many it wrote and starts on the garbage, and keeps going until
    // it has written some (or a hard cap of steps).
    let gate = (rng.next_u64() % (4 * CAPACITY)) & !7;
    let (mut n_clean, mut draining, mut dirty, mut frozen) = (0u64, false, false, false);
    let mut n_garbage = 0u64;
    let mut step = 0u64;
    while step < n_steps || (level > 0 && n_garbage < 16 && step < 100 * n_steps) {
        step += 1;
        let r = rng.next_u64();
        let v = rng.next_u64();
        let plausible = (v % (2 * CAPACITY)) & !7;
        let data_off = ((v as usize) % CAPACITY as usize) & !7;
        if level > 0 && !dirty {
            let head = mine.ctrl().load(HEAD);
            draining = head >= gate;
            if draining && head == writer.tail {
                report(n_clean)?;
                dirty = true;
            }
        }
        let garbage = dirty && rng.next_u64().is_multiple_of(256 >> level);
        n_garbage += u64::from(garbage && matches!(r % 64, 32..=40 | 62..=63));
        match r % 64 {
            0..=30 if !dirty && !draining => {
                n_clean += u64::from(writer.commit(&clean_payload(n_clean), CLEAN_KIND));
            }
            0..=30 if dirty && !frozen => {
                let len = (v % 200) as usize;
                let bytes: Vec<u8> = if r & 64 == 0 {
                    (0..len).map(|i| (i as u8) ^ (r >> 8) as u8).collect()
                } else {
                    // Header-like words, stale once a lap has passed.
                    header(8, 0)
                        .to_le_bytes()
                        .into_iter()
                        .cycle()
                        .take(len)
                        .collect()
                };
                writer.commit(&bytes, DIRTY_KIND);
            }
            // Garbage in the data area, at `level` >= 1. At the tail: a random word, a header
            // without the commit bit, or a committed header of random length (maybe past the
            // largest payload or the end); the tail then moves on as if it were a record, and
            // the slot at the new tail is zeroed or left stale.
            32..=35 if garbage => {
                let word = match r >> 8 & 3 {
                    0 => scrub(v),
                    1 => (v % 2048) | 8,
                    _ => header(v % 2048, (v >> 32) as u32 % 4),
                };
                data_map.store(writer.tail_offset(), word);
                writer.tail += 8 + (rng.next_u64() % 64) * 8 * (r >> 10 & 1);
                if r >> 11 & 1 == 0 {
                    data_map.store(writer.tail_offset(), 0);
                }
            }
            // A padding record at the tail that does not reach the end.
            36 if garbage => {
                let to_end = CAPACITY - writer.tail % CAPACITY;
                let len = (to_end - 8) ^ (8 << (v % 4));
                data_map.store(writer.tail_offset(), header(len % COMMITTED, PADDING));
                writer.tail += to_end;
            }
            // Padding over the whole ring at offset 0, reached through exact padding at the tail
            // (or at once if the tail is at offset 0): the consumer must not go round for ever.
            // The child stops writing records, so nothing covers it up.
            37 if garbage => {
                data_map.store(0, header(CAPACITY - 8, PADDING));
                let off = writer.tail_offset();
                if off != 0 {
                    data_map.store(off, header(CAPACITY - off as u64 - 8, PADDING));
                }
                frozen = true;
            }
            // Payload (or anything else) changed under the reader's feet.
            38..=40 if garbage => data_map.store(data_off, scrub(v)),
            41..=45 => peer
                .ctrl()
                .store(HEAD, if r & 64 == 0 { v } else { plausible }),
            46..=48 => peer
                .ctrl()
                .store(CONSUMER_WAITING + (r as usize & 1) * 128, v),
            49..=50 => mine
                .ctrl()
                .store(PRODUCER_WAITING - (r as usize & 1) * 128, v),
            51..=55 => {
                let _ = rustix::net::send(
                    mine.wake(),
                    &[1],
                    rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
                );
            }
            // The reserved lines (version 1's tails) of both rings: garbage or plausible tails,
            // which nobody may read.
            56..=58 => peer.ctrl().store(RESERVED, v),
            59..=61 => mine.ctrl().store(
                RESERVED,
                if r & 64 == 0 {
                    v
                } else {
                    writer.tail + plausible
                },
            ),
            // A version-1 header (no commit bit) at the tail.
            62..=63 if garbage => {
                let word = ((v % 2048) | 8) | (u64::from((v >> 32) as u32 % 4) << 32);
                data_map.store(writer.tail_offset(), word);
                writer.tail += (8 + v % 200).next_multiple_of(8);
            }
            _ => {}
        }
    }
    if !dirty {
        report(n_clean)?;
    }
    Ok(())
}

pub(crate) fn child_seal_probe() -> TestResult {
    let end = adopt()?;
    let mut mine = Ring::new(CAPACITY, MAX_PAYLOAD, Flaw::None)?;
    mine.send_offer(&end)?;
    let peer = shm::recv_offer(&end, STEP)?;
    let mut broken = Vec::new();
    for (name, fd, size) in [
        ("ctrl", peer.ctrl_fd(), CTRL_SIZE as u64),
        ("data", peer.data_fd(), CAPACITY),
    ] {
        if rustix::fs::ftruncate(fd, 0).is_ok() {
            broken.push(format!("{name}: shrink"));
        }
        if rustix::fs::ftruncate(fd, size * 2).is_ok() {
            broken.push(format!("{name}: grow"));
        }
        if rustix::fs::fcntl_add_seals(fd, SealFlags::WRITE).is_ok() {
            broken.push(format!("{name}: seals not sealed"));
        }
    }
    if rustix::io::pwrite(peer.data_fd(), b"x", 0).is_ok() {
        broken.push("data: write(2)".into());
    }
    if MmapOptions::new()
        .len(CAPACITY as usize)
        .map_raw(peer.data_fd().as_raw_fd())
        .is_ok()
    {
        broken.push("data: writable mapping".into());
    }
    let ro = MmapOptions::new()
        .len(CAPACITY as usize)
        .map_raw_read_only(peer.data_fd().as_raw_fd())
        .map_err(|e| format!("read-only mapping: {e}"))?;
    // SAFETY: `ro` is a live mapping of exactly this range; if mprotect wrongly succeeded the
    // mapping would only gain write permission, which nothing here uses.
    let upgraded = unsafe {
        rustix::mm::mprotect(
            ro.as_mut_ptr().cast(),
            ro.len(),
            rustix::mm::MprotectFlags::READ | rustix::mm::MprotectFlags::WRITE,
        )
    };
    if upgraded.is_ok() {
        broken.push("data: mprotect to writable".into());
    }
    shm::exchange_ready(&end, STEP)?;
    if broken.is_empty() {
        Ok(())
    } else {
        Err(broken.join(", "))
    }
}

pub(crate) fn child_bad_offer(role: &str) -> TestResult {
    let flaw = match role {
        "bad-offer-unsealed" => Flaw::Unsealed,
        "bad-offer-short" => Flaw::Short,
        "bad-offer-pipe" => Flaw::Pipe,
        "bad-offer-disk-file" => Flaw::DiskFile,
        "bad-offer-not-sealable" => Flaw::NotSealable,
        "bad-offer-socket-ctrl" => Flaw::SocketCtrl,
        "bad-offer-memfd-wake" => Flaw::MemfdWake,
        "bad-offer-short-ctrl" => Flaw::ShortCtrl,
        _ => Flaw::Writable,
    };
    let end = adopt()?;
    let mut mine = Ring::new(CAPACITY, MAX_PAYLOAD, flaw)?;
    mine.send_offer(&end)?;
    // Read until the parent closes (it refuses, then kills this process).
    while frame::recv(&end, Duration::from_secs(20)).is_ok() {}
    Ok(())
}

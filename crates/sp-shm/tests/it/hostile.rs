//! Hand-written peers that follow `docs/protocol.md` byte by byte, and then break it: scribble on
//! the control block and the record headers, probe the seals, or offer memory that must be
//! refused.
//!
//! Protocol version 2: a record is published by its header word (the commit bit set in the low
//! half), stored with Release after the payload and after the zeroing of the next header slot.
//! The control block's line at offset 128 (version 1's tail index) is reserved and ignored.

#![allow(unsafe_code)] // The hostile child writes arbitrary words into shared mappings.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};
use sp_core::{Channel, End, SocketKind};
use sp_shm::{Config, Error, IdleStrategy, RefuseReason};

use crate::cross::{TestResult, child_command, spawn_child};

const CAPACITY: u64 = 4096;
const MAX_PAYLOAD: u64 = 1024;
const CTRL_SIZE: usize = 4096;
/// The protocol version in the control block and the OFFER.
const VERSION: u32 = 2;
/// The layout word: 128-byte lines, a one-page control block.
const LAYOUT: u32 = 128 | (1 << 16);
/// Version 1's tail index; reserved in version 2: nobody reads or writes it.
const RESERVED: usize = 128;
const HEAD: usize = 256;
const CONSUMER_WAITING: usize = 384;
const PRODUCER_WAITING: usize = 512;
/// The commit bit of a header word (in the `len` half).
const COMMITTED: u64 = 1 << 31;
/// The kind of a padding record.
const PADDING: u32 = u32::MAX;
/// The kind of the hostile child's clean records: those it commits before it writes any
/// garbage into its data area. No garbage word carries it (see [`scrub`]).
const CLEAN_KIND: u32 = 0xC1EA_0002;
/// The kind of the well-formed records it commits once garbage has begun.
const DIRTY_KIND: u32 = 1;

/// A committed header word: `len | COMMITTED` in the low half, `kind` in the high half.
fn header(len: u64, kind: u32) -> u64 {
    assert!(len < COMMITTED);
    len | COMMITTED | (u64::from(kind) << 32)
}

/// A garbage word that cannot pass for a clean record's header.
fn scrub(word: u64) -> u64 {
    if (word >> 32) as u32 == CLEAN_KIND {
        word ^ (1 << 32)
    } else {
        word
    }
}

/// The length of clean record `seq`.
fn clean_len(seq: u64) -> usize {
    (seq.wrapping_mul(37) % 200) as usize
}

/// The payload of clean record `seq`, so that the parent can check it byte for byte. Every other
/// word is a committed header (of an 8-byte record): once a lap has passed it is stale, and a
/// consumer that took it for the next header would deliver a record that was never sent.
fn clean_payload(seq: u64) -> Vec<u8> {
    (0..clean_len(seq).div_ceil(8) as u64)
        .flat_map(|k| {
            let word = if k % 2 == 1 {
                header(8, 0)
            } else {
                seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k
            };
            word.to_le_bytes()
        })
        .take(clean_len(seq))
        .collect()
}

/// What is wrong with a hand-made ring's data memfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flaw {
    None,
    Unsealed,
    Short,
    Writable,
    /// The data descriptor is the read end of a pipe.
    Pipe,
    /// The data descriptor is an unlinked regular file on disk (no seals possible).
    DiskFile,
    /// The data descriptor is a memfd created without `MFD_ALLOW_SEALING`.
    NotSealable,
    /// The control descriptor is a Unix socket.
    SocketCtrl,
    /// The wake descriptor is a memfd, not a socket.
    MemfdWake,
    /// The control memfd holds 2048 bytes instead of 4096.
    ShortCtrl,
}

/// A ring made by hand, as the protocol document describes.
pub(crate) struct ManualRing {
    ctrl: OwnedFd,
    data: OwnedFd,
    wake_ours: End,
    wake_theirs: Option<End>,
    ctrl_map: MmapRaw,
    data_map: Option<MmapRaw>,
}

/// The parent's ring, as a hand-written consumer sees it.
struct PeerRing {
    ctrl: OwnedFd,
    data: OwnedFd,
    _wake: End,
    ctrl_map: MmapRaw,
}

fn memfd(name: &str, size: u64) -> Result<OwnedFd, String> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(|e| e.to_string())?;
    rustix::fs::ftruncate(&fd, size).map_err(|e| e.to_string())?;
    Ok(fd)
}

fn base_seals() -> SealFlags {
    SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL
}

/// Stores `value` at byte `offset` of a mapping.
fn poke(map: &MmapRaw, offset: usize, value: u64) {
    assert!(offset.is_multiple_of(8) && offset + 8 <= map.len());
    // SAFETY: in bounds and aligned (checked above; mappings are page-aligned); an atomic store
    // is defined even while the other process accesses the word.
    let word = unsafe { AtomicU64::from_ptr(map.as_mut_ptr().add(offset).cast::<u64>()) };
    word.store(value, Ordering::Release);
}

/// Loads the word at byte `offset` of a mapping.
fn peek(map: &MmapRaw, offset: usize) -> u64 {
    assert!(offset.is_multiple_of(8) && offset + 8 <= map.len());
    // SAFETY: as in `poke`.
    let word = unsafe { AtomicU64::from_ptr(map.as_mut_ptr().add(offset).cast::<u64>()) };
    word.load(Ordering::Acquire)
}

pub(crate) fn manual_ring(flaw: Flaw) -> Result<ManualRing, String> {
    let ctrl = memfd("manual-ctrl", CTRL_SIZE as u64)?;
    let ctrl_map = MmapOptions::new()
        .len(CTRL_SIZE)
        .map_raw(ctrl.as_raw_fd())
        .map_err(|e| e.to_string())?;
    if flaw == Flaw::ShortCtrl {
        // Shrink before sealing; the mapping above is not touched past 2048 bytes here.
        drop(ctrl_map);
        rustix::fs::ftruncate(&ctrl, CTRL_SIZE as u64 / 2).map_err(|e| e.to_string())?;
        rustix::fs::fcntl_add_seals(&ctrl, base_seals()).map_err(|e| e.to_string())?;
        let ring = manual_ring(Flaw::None)?;
        return Ok(ManualRing { ctrl, ..ring });
    }
    poke(&ctrl_map, 0, u64::from_le_bytes(*b"SPSHMCTL"));
    poke(&ctrl_map, 8, u64::from(VERSION) | (u64::from(LAYOUT) << 32));
    poke(&ctrl_map, 16, CAPACITY);
    poke(&ctrl_map, 24, MAX_PAYLOAD);
    rustix::fs::fcntl_add_seals(&ctrl, base_seals()).map_err(|e| e.to_string())?;

    let data_size = if flaw == Flaw::Short {
        CAPACITY / 2
    } else {
        CAPACITY
    };
    let data = memfd("manual-data", data_size)?;
    let data_map = MmapOptions::new()
        .len(data_size as usize)
        .map_raw(data.as_raw_fd())
        .map_err(|e| e.to_string())?;
    let seals = match flaw {
        Flaw::Writable => base_seals(),
        Flaw::Unsealed => SealFlags::empty(),
        _ => base_seals() | SealFlags::FUTURE_WRITE,
    };
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&data, seals).map_err(|e| e.to_string())?;
    }
    let (wake_ours, wake_theirs) =
        sp_core::pair(SocketKind::SeqPacket).map_err(|e| e.to_string())?;
    wake_ours.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut ring = ManualRing {
        ctrl,
        data,
        wake_ours,
        wake_theirs: Some(wake_theirs),
        ctrl_map,
        data_map: Some(data_map),
    };
    match flaw {
        Flaw::Pipe => {
            let (read, _write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| e.to_string())?;
            ring.data = read;
        }
        Flaw::DiskFile => ring.data = disk_file(CAPACITY)?,
        Flaw::NotSealable => {
            let fd = rustix::fs::memfd_create("manual-unsealable", MemfdFlags::CLOEXEC)
                .map_err(|e| e.to_string())?;
            rustix::fs::ftruncate(&fd, CAPACITY).map_err(|e| e.to_string())?;
            ring.data = fd;
        }
        Flaw::SocketCtrl => {
            let (a, _b) = sp_core::pair(SocketKind::Stream).map_err(|e| e.to_string())?;
            ring.ctrl = OwnedFd::from(a);
        }
        Flaw::MemfdWake => {
            let fd = memfd("manual-wake", 4096)?;
            ring.wake_theirs = Some(End::from(fd));
        }
        _ => {}
    }
    Ok(ring)
}

/// An unlinked regular file of `size` bytes in the temporary directory.
pub(crate) fn disk_file(size: u64) -> Result<OwnedFd, String> {
    let path = std::env::temp_dir().join(format!("sp-shm-it-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = std::fs::remove_file(&path);
    file.set_len(size).map_err(|e| e.to_string())?;
    Ok(OwnedFd::from(file))
}

fn offer_bytes() -> [u8; 40] {
    let mut out = [0u8; 40];
    out[0..8].copy_from_slice(b"SPSHMOFR");
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&LAYOUT.to_le_bytes());
    out[16..24].copy_from_slice(&CAPACITY.to_le_bytes());
    out[24..32].copy_from_slice(&MAX_PAYLOAD.to_le_bytes());
    out[32..40].copy_from_slice(&(CTRL_SIZE as u64).to_le_bytes());
    out
}

pub(crate) fn ready_bytes(status: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0..8].copy_from_slice(b"SPSHMRDY");
    out[8..12].copy_from_slice(&status.to_le_bytes());
    out
}

pub(crate) fn send_offer(channel: &Channel, ring: &mut ManualRing) -> Result<(), String> {
    let theirs = ring.wake_theirs.take().ok_or("offer sent twice")?;
    channel
        .send(
            &offer_bytes(),
            &[ring.ctrl.as_fd(), ring.data.as_fd(), theirs.as_fd()],
        )
        .map_err(|e| format!("send offer: {e}"))
}

fn recv_offer(channel: &mut Channel) -> Result<PeerRing, String> {
    let msg = channel
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("recv offer: {e}"))?;
    if msg.bytes.len() != 40 || &msg.bytes[0..8] != b"SPSHMOFR" {
        return Err("not an offer".into());
    }
    let [ctrl, data, wake]: [OwnedFd; 3] = msg.fds.try_into().map_err(|_| "fd count")?;
    let ctrl_map = MmapOptions::new()
        .len(CTRL_SIZE)
        .map_raw(ctrl.as_raw_fd())
        .map_err(|e| e.to_string())?;
    Ok(PeerRing {
        ctrl,
        data,
        _wake: End::from(wake),
        ctrl_map,
    })
}

fn exchange_ready(channel: &mut Channel) -> Result<(), String> {
    channel
        .send(&ready_bytes(0), &[])
        .map_err(|e| e.to_string())?;
    let reply = channel
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("ready: {e}"))?;
    if reply.bytes != ready_bytes(0) {
        return Err(format!("peer refused: {:?}", reply.bytes));
    }
    Ok(())
}

fn adopt_channel() -> Result<Channel, String> {
    let end = sp_core::adopt().map_err(|e| e.to_string())?;
    Channel::new(end).map_err(|e| e.to_string())
}

/// xorshift64*: deterministic, dependency-free randomness for the hostile child.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

// --- trials ---------------------------------------------------------------------------------

/// The child writes arbitrary and plausible values into both control blocks (the heads, the
/// waiting flags, the reserved line at offset 128) but only well-formed records into its data
/// area: the parent's consumer delivers every one of them byte for byte, in order, then
/// `PeerGone`; its producer ends in `Ok`, `Corrupt` or `PeerGone`. Both terminate.
pub(crate) fn hostile_peer_control_block() -> TestResult {
    let ending = hostile_round(DEFAULT_SEED, 0)?;
    eprintln!("  {ending}");
    if ending.corrupt || ending.n_records != ending.n_clean || ending.n_clean == 0 {
        return Err(format!(
            "without garbage in the data area every record is clean and the round ends in \
             PeerGone: {ending}"
        ));
    }
    Ok(())
}

/// As [`hostile_peer_control_block`] over many seeds (`SP_HOSTILE_SEEDS`, default 40, from
/// `SP_HOSTILE_SEED`), and once the parent has read every clean record, garbage in the data
/// area: headers without the commit bit, random or too long, padding of the wrong length or at
/// offset 0, payload changed under the reader's feet. The clean records still arrive exactly; no
/// signal kills this process, every record is in bounds, and the garbage is reported as
/// `Corrupt`.
pub(crate) fn hostile_peer_garbage_many_seeds() -> TestResult {
    let n_seeds: u64 = std::env::var("SP_HOSTILE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let base: u64 = std::env::var("SP_HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (mut n_corrupt, mut n_records, mut n_clean) = (0u64, 0u64, 0u64);
    for seed in base..base + n_seeds {
        let ending = hostile_round(seed, 1 + seed % 3)
            .map_err(|e| format!("SP_HOSTILE_SEED={seed}: {e}"))?;
        n_corrupt += u64::from(ending.corrupt);
        n_records += ending.n_records;
        n_clean += ending.n_clean;
    }
    eprintln!(
        "  {n_seeds} seeds ({} or more hostile steps each); {n_records} records read, {n_clean} of them clean and exact; {n_corrupt} rounds ended in Corrupt",
        hostile_steps()
    );
    if n_corrupt < n_seeds / 2 {
        return Err(format!(
            "only {n_corrupt} of {n_seeds} rounds reported Corrupt: the garbage missed"
        ));
    }
    if n_clean == 0 {
        return Err("no clean record was read in any round".into());
    }
    Ok(())
}

const SEED_ENV: &str = "SP_SHM_IT_SEED";
const LEVEL_ENV: &str = "SP_SHM_IT_LEVEL";
const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// The child's report of how many clean records it committed: this tag, then the count (u64 LE).
const CLEAN_REPORT: &[u8; 8] = b"CLEANREC";

/// How one hostile round ended.
struct Ending {
    corrupt: bool,
    n_records: u64,
    /// Clean records read, each checked byte for byte; as many as the child committed.
    n_clean: u64,
    text: String,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn hostile_steps() -> u64 {
    if cfg!(debug_assertions) {
        100_000
    } else {
        400_000
    }
}

/// One hostile child with `seed`; `level` 0 writes only well-formed records into the data area,
/// 1..=3 add garbage once the clean records have been read, more often at higher levels.
fn hostile_round(seed: u64, level: u64) -> Result<Ending, String> {
    let config = Config::new()
        .capacity(CAPACITY as usize)
        .max_payload(MAX_PAYLOAD as usize)
        .idle(IdleStrategy::adaptive());
    let mut cmd = child_command("hostile", "adaptive");
    cmd.env(SEED_ENV, seed.to_string())
        .env(LEVEL_ENV, level.to_string());
    let (mut child, duplex) = spawn_child(&mut cmd, &config)?;
    let (mut producer, mut consumer, mut control) = duplex.into_parts();
    let sender = std::thread::spawn(move || {
        let mut n_sent = 0u64;
        loop {
            match producer.send(&[0x5A; 700]) {
                Ok(()) => n_sent += 1,
                Err(Error::Corrupt { .. } | Error::PeerGone) => return Ok(n_sent),
                Err(err) => return Err(format!("producer: {err}")),
            }
        }
    });
    let max = consumer.max_payload();
    let (mut n_ok, mut n_clean) = (0u64, 0u64);
    // Clean records come first, all of them; the first other record ends the clean stretch.
    let mut clean_stretch = true;
    let mut buf = vec![0u8; max + 64];
    // A bound of our own on top of the consumer's: a garbage image can chain stale records
    // through older laps, and the consumer stops such a chain only at one ring past the head it
    // published (every record here publishes), so cap the run instead of trusting the watchdog.
    let res = loop {
        if n_ok > 1_000_000 {
            break Err(format!("{n_ok} records and no end"));
        }
        match consumer.read() {
            Ok(rec) => {
                if rec.len() > max {
                    break Err(format!("record of {} bytes > {max}", rec.len()));
                }
                let bytes = rec.to_vec();
                if rec.copy_to_slice(&mut buf) != rec.len() || bytes.len() != rec.len() {
                    break Err("copy-out length differs from the record".into());
                }
                n_ok += 1;
                if clean_stretch && rec.kind() == CLEAN_KIND {
                    if bytes != clean_payload(n_clean) {
                        break Err(format!(
                            "clean record {n_clean}: {} bytes differ from the {} sent",
                            bytes.len(),
                            clean_len(n_clean)
                        ));
                    }
                    n_clean += 1;
                } else {
                    clean_stretch = false;
                }
            }
            Err(err @ (Error::Corrupt { .. } | Error::PeerGone)) => break Ok(err),
            Err(err) => break Err(format!("consumer: {err}")),
        }
    };
    // Whatever happened, end the child before joining the sender, which waits for it.
    let _ = child.kill();
    let status = child.wait().map_err(|e| e.to_string())?;
    let n_sent = sender.join().map_err(|_| "sender panicked")??;
    let ending = res.map_err(|e| format!("{e}; child {status}"))?;
    // The child reported its count before it wrote any garbage (or at its end), so the report
    // is waiting in the socket whichever way the round ended, unless the round ended (and the
    // child was killed) before any garbage: a clean record broken or lost.
    let report = control.recv_timeout(Duration::from_secs(10)).map_err(|e| {
        format!(
            "no report of the clean records ({e}): the consumer read {n_ok} records \
                 ({n_clean} clean) then {ending} before any garbage; child {status}"
        )
    })?;
    let n_committed = match report.bytes.split_first_chunk::<8>() {
        Some((tag, count)) if tag == CLEAN_REPORT && count.len() == 8 => {
            u64::from_le_bytes(count.try_into().map_err(|_| "report")?)
        }
        _ => return Err(format!("not a report: {:?}", report.bytes)),
    };
    if n_clean != n_committed {
        return Err(format!(
            "the child committed {n_committed} clean records, {n_clean} arrived intact \
             (then {ending}; child {status})"
        ));
    }
    Ok(Ending {
        corrupt: matches!(ending, Error::Corrupt { .. }),
        n_records: n_ok,
        n_clean,
        text: format!(
            "consumer: {n_ok} records ({n_clean} clean) then {ending}; producer: {n_sent} sends; child {status}"
        ),
    })
}

/// The child tries to resize, write and remap the parent's memfds; every attempt must fail.
pub(crate) fn seals_stop_the_peer() -> TestResult {
    let config = Config::new().capacity(CAPACITY as usize);
    let (mut child, duplex) = spawn_child(&mut child_command("seal-probe", "park"), &config)?;
    let status = child.wait().map_err(|e| e.to_string())?;
    drop(duplex);
    if status.success() {
        Ok(())
    } else {
        Err(format!("seal probe failed: {status}"))
    }
}

/// The child offers a flawed ring; the parent's handshake refuses it with `reason`.
pub(crate) fn bad_offer_refused(role: &str, reason: RefuseReason) -> TestResult {
    let config = Config::new().capacity(CAPACITY as usize);
    match spawn_child(&mut child_command(role, "park"), &config) {
        Err(msg) if msg.contains(&Error::Refused(reason).to_string()) => Ok(()),
        Err(msg) => Err(format!("wrong error: {msg}")),
        Ok(_) => Err("flawed offer accepted".into()),
    }
}

// --- child roles ----------------------------------------------------------------------------

/// The child's producer for its own ring, written by hand from `docs/protocol.md`.
struct HandProducer<'a> {
    data: &'a MmapRaw,
    ctrl: &'a MmapRaw,
    /// Bytes committed (the hand-kept tail; the slot at it is zero while the child keeps to the
    /// protocol).
    tail: u64,
}

impl HandProducer<'_> {
    /// Commits one record if it fits (it needs its slot, any padding, and the 8 bytes after it):
    /// the payload words, then zero in the next header slot, then the header with Release, and
    /// if the record wraps to offset 0, the padding header after the record's. Returns whether
    /// the record was written.
    fn commit(&mut self, payload: &[u8], kind: u32) -> bool {
        let head = peek(self.ctrl, HEAD);
        let size = (8 + payload.len() as u64).next_multiple_of(8);
        let off = self.tail % CAPACITY;
        let pad = if off + size > CAPACITY {
            CAPACITY - off
        } else {
            0
        };
        if self.tail.wrapping_add(pad + size + 8).wrapping_sub(head) > CAPACITY {
            return false;
        }
        let at = if pad > 0 { 0 } else { off as usize };
        for (k, chunk) in payload.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            poke(self.data, at + 8 + 8 * k, u64::from_le_bytes(word));
        }
        poke(self.data, ((at as u64 + size) % CAPACITY) as usize, 0);
        poke(self.data, at, header(payload.len() as u64, kind));
        if pad > 0 {
            poke(self.data, off as usize, header(pad - 8, PADDING));
        }
        self.tail += pad + size;
        true
    }

    /// The data-area offset of the hand-kept tail.
    fn tail_offset(&self) -> usize {
        (self.tail % CAPACITY) as usize
    }
}

pub(crate) fn child_hostile() -> TestResult {
    let mut channel = adopt_channel()?;
    let mut mine = manual_ring(Flaw::None)?;
    send_offer(&channel, &mut mine)?;
    let peer = recv_offer(&mut channel)?;
    exchange_ready(&mut channel)?;
    let data_map = mine.data_map.take().ok_or("no data map")?;
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut rng = Rng(env(SEED_ENV, DEFAULT_SEED) | 1);
    let level = env(LEVEL_ENV, 0);
    let n_steps = hostile_steps();
    let report = |channel: &Channel, n_clean: u64| {
        let mut msg = CLEAN_REPORT.to_vec();
        msg.extend_from_slice(&n_clean.to_le_bytes());
        channel.send(&msg, &[]).map_err(|e| format!("report: {e}"))
    };
    // Mostly well-formed records, so the consumer gets far, mixed with garbage.
    let mut writer = HandProducer {
        data: &data_map,
        ctrl: &mine.ctrl_map,
        tail: 0,
    };
    // Clean records first. Once the parent's consumer has released `gate` bytes (its published
    // head), so that it reads some records however late it starts, the child stops writing clean
    // records; once the consumer has released every one of them, so that garbage cannot damage
    // one, the child reports how many it wrote and starts on the garbage, and keeps going until
    // it has written some (or a hard cap of steps).
    let gate = (rng.next() % (4 * CAPACITY)) & !7;
    let (mut n_clean, mut draining, mut dirty, mut frozen) = (0u64, false, false, false);
    let mut n_garbage = 0u64;
    let mut step = 0u64;
    while step < n_steps || (level > 0 && n_garbage < 16 && step < 100 * n_steps) {
        step += 1;
        let r = rng.next();
        let v = rng.next();
        let plausible = (v % (2 * CAPACITY)) & !7;
        let data_off = ((v as usize) % CAPACITY as usize) & !7;
        if level > 0 && !dirty {
            let head = peek(&mine.ctrl_map, HEAD);
            draining = head >= gate;
            if draining && head == writer.tail {
                report(&channel, n_clean)?;
                dirty = true;
            }
        }
        let garbage = dirty && rng.next().is_multiple_of(256 >> level);
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
                poke(&data_map, writer.tail_offset(), word);
                writer.tail += 8 + (rng.next() % 64) * 8 * (r >> 10 & 1);
                if r >> 11 & 1 == 0 {
                    poke(&data_map, writer.tail_offset(), 0);
                }
            }
            // A padding record at the tail that does not reach the end.
            36 if garbage => {
                let to_end = CAPACITY - writer.tail % CAPACITY;
                let len = (to_end - 8) ^ (8 << (v % 4));
                poke(
                    &data_map,
                    writer.tail_offset(),
                    header(len % COMMITTED, PADDING),
                );
                writer.tail += to_end;
            }
            // Padding over the whole ring at offset 0, reached through exact padding at the tail
            // (or at once if the tail is at offset 0): the consumer must not go round for ever.
            // The child stops writing records, so nothing covers it up.
            37 if garbage => {
                poke(&data_map, 0, header(CAPACITY - 8, PADDING));
                let off = writer.tail_offset();
                if off != 0 {
                    poke(&data_map, off, header(CAPACITY - off as u64 - 8, PADDING));
                }
                frozen = true;
            }
            // Payload (or anything else) changed under the reader's feet.
            38..=40 if garbage => poke(&data_map, data_off, scrub(v)),
            41..=45 => poke(
                &peer.ctrl_map,
                HEAD,
                if r & 64 == 0 { v } else { plausible },
            ),
            46..=48 => poke(&peer.ctrl_map, CONSUMER_WAITING + (r as usize & 1) * 128, v),
            49..=50 => poke(&mine.ctrl_map, PRODUCER_WAITING - (r as usize & 1) * 128, v),
            51..=55 => {
                let _ = rustix::net::send(
                    &mine.wake_ours,
                    &[1],
                    rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
                );
            }
            // The reserved lines (version 1's tails) of both rings: garbage or plausible tails,
            // which nobody may read.
            56..=58 => poke(&peer.ctrl_map, RESERVED, v),
            59..=61 => poke(
                &mine.ctrl_map,
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
                poke(&data_map, writer.tail_offset(), word);
                writer.tail += (8 + v % 200).next_multiple_of(8);
            }
            _ => {}
        }
    }
    if !dirty {
        report(&channel, n_clean)?;
    }
    Ok(())
}

pub(crate) fn child_seal_probe() -> TestResult {
    let mut channel = adopt_channel()?;
    let mut mine = manual_ring(Flaw::None)?;
    send_offer(&channel, &mut mine)?;
    let peer = recv_offer(&mut channel)?;
    let mut broken = Vec::new();
    for (name, fd, size) in [
        ("ctrl", &peer.ctrl, CTRL_SIZE as u64),
        ("data", &peer.data, CAPACITY),
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
    if rustix::io::pwrite(&peer.data, b"x", 0).is_ok() {
        broken.push("data: write(2)".into());
    }
    if MmapOptions::new()
        .len(CAPACITY as usize)
        .map_raw(peer.data.as_raw_fd())
        .is_ok()
    {
        broken.push("data: writable mapping".into());
    }
    let ro = MmapOptions::new()
        .len(CAPACITY as usize)
        .map_raw_read_only(peer.data.as_raw_fd())
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
    exchange_ready(&mut channel)?;
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
    let mut channel = adopt_channel()?;
    let mut mine = manual_ring(flaw)?;
    send_offer(&channel, &mut mine)?;
    // Read until the parent closes (it refuses, then kills this process).
    while channel.recv_timeout(Duration::from_secs(20)).is_ok() {}
    Ok(())
}

//! The hostile peer's trials, this side: the child (`hostile_child.rs`) is the workspace's
//! independent peer (`sp_test_support::shm`, which follows `docs/protocol.md` byte by byte), and
//! then breaks the protocol: it scribbles on the control blocks and the record headers, probes
//! the seals, or offers memory that must be refused.
//!
//! Protocol version 2: a record is published by its header word (the commit bit set in the low
//! half), stored with Release after the payload and after the zeroing of the next header slot.
//! The control block's line at offset 128 (version 1's tail index) is reserved and ignored.

use std::time::Duration;

use sp_shm::{Config, Error, IdleStrategy, RefuseReason};
use sp_test_support::shm::header;

use crate::{TestResult, child_command, spawn_child};

/// The hand-made ring's capacity (the child's choice, as any peer's).
pub(crate) const CAPACITY: u64 = 4096;
/// The hand-made ring's largest payload.
pub(crate) const MAX_PAYLOAD: u64 = 1024;
/// The kind of the hostile child's clean records: those it commits before it writes any
/// garbage into its data area. No garbage word carries it (see [`scrub`]).
pub(crate) const CLEAN_KIND: u32 = 0xC1EA_0002;
/// The kind of the well-formed records it commits once garbage has begun.
pub(crate) const DIRTY_KIND: u32 = 1;
pub(crate) const SEED_ENV: &str = "SP_SHM_IT_SEED";
pub(crate) const LEVEL_ENV: &str = "SP_SHM_IT_LEVEL";
pub(crate) const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// The child's report of how many clean records it committed: this tag, then the count (u64 LE).
pub(crate) const CLEAN_REPORT: &[u8; 8] = b"CLEANREC";

/// A garbage word that cannot pass for a clean record's header.
pub(crate) fn scrub(word: u64) -> u64 {
    if (word >> 32) as u32 == CLEAN_KIND {
        word ^ (1 << 32)
    } else {
        word
    }
}

/// The length of clean record `seq`.
pub(crate) fn clean_len(seq: u64) -> usize {
    (seq.wrapping_mul(37) % 200) as usize
}

/// The payload of clean record `seq`, so that the parent can check it byte for byte. Every other
/// word is a committed header (of an 8-byte record): once a lap has passed it is stale, and a
/// consumer that took it for the next header would deliver a record that was never sent.
pub(crate) fn clean_payload(seq: u64) -> Vec<u8> {
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

pub(crate) fn hostile_steps() -> u64 {
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

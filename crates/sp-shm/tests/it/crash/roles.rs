//! The crash suite's child roles: each reaches its point, says so (or is seen parked), and waits
//! to be killed (see `child.rs` for this side's checks). The parent-kill roles are in
//! `parent.rs`.

use std::time::Duration;

use sp_core::Channel;
use sp_shm::Config;
use sp_test_support::frame::{self, RecvError};
use sp_test_support::shm::{self, Flaw, Ring};

use super::{CAP_ENV, PARAM_ENV, STEP, parent, send_fds_forever};
use crate::cross::{check_record, consume, produce, record_len, write_record};
use crate::hostile::{CAPACITY, MAX_PAYLOAD};
use crate::{TestResult, idle_from};

/// A numeric parameter from the environment, or `default`.
pub(super) fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Plays crash role `role` with idle strategy `idle`.
pub(crate) fn child_main(role: &str, idle: &str) -> TestResult {
    let param: u64 = env_number(PARAM_ENV, 0);
    let capacity: usize = env_number(CAP_ENV, 64 << 10);
    let config = Config::new().capacity(capacity).idle(idle_from(idle));
    match role {
        "crash-parent" => return parent::parent_role(idle, &config, param),
        "crash-orphan" => return parent::orphan_role(&config, param),
        _ => {}
    }
    if role == "crash-handshake" && param < 3 {
        return stop_in_handshake(param);
    }
    let duplex = sp_shm::adopt(&config).map_err(|e| format!("adopt: {e}"))?;
    let (mut producer, mut consumer, mut control) = duplex.into_parts();
    match role {
        "crash-writer" => {
            let (k, deferred, hold) = (param & 0xFFFF_FFFF, (param >> 32) & 0xFFFF, param >> 48);
            produce(&mut producer, k).map_err(|e| e.to_string())?;
            for seq in k..k + deferred {
                let mut grant = producer
                    .reserve(record_len(seq))
                    .map_err(|e| e.to_string())?;
                let used = write_record(seq, &mut grant);
                grant.commit_deferred(used);
            }
            // Held (never committed) while this process waits to be killed.
            let _grant = if hold == 1 {
                let mut grant = producer
                    .reserve(config.max_payload_bytes())
                    .map_err(|e| e.to_string())?;
                let half = grant.len() / 2;
                grant[..half].fill(0xEE);
                Some(grant)
            } else {
                None
            };
            wait_for_kill(&mut control, b"reached")
        }
        "crash-stream-out" => produce(&mut producer, u64::MAX).map_err(|e| e.to_string()),
        "crash-stream-in" => consume(&mut consumer, u64::MAX),
        "crash-stream-both" => {
            let sender = std::thread::spawn(move || produce(&mut producer, u64::MAX));
            consume(&mut consumer, u64::MAX)?;
            sender
                .join()
                .map_err(|_| "producer panicked")?
                .map_err(|e| e.to_string())
        }
        "crash-holder" => {
            consume(&mut consumer, param - 1)?;
            let grant = consumer.read().map_err(|e| e.to_string())?;
            check_record(param - 1, &grant.to_vec())?;
            wait_for_kill(&mut control, &(param - 1).to_le_bytes())?;
            drop(grant);
            Ok(())
        }
        "crash-fd-sender" => send_fds_forever(&control, &mut consumer, |_| Ok(())),
        "crash-handshake" => wait_for_kill(&mut control, b"ready"),
        _ => Err(format!("unknown role {role}")),
    }
}

/// Follows the handshake by hand up to `step` (0: nothing sent, 1: OFFER sent, 2: the parent's
/// OFFER received, READY not sent), then waits to be killed.
fn stop_in_handshake(step: u64) -> TestResult {
    let end = sp_core::adopt().map_err(|e| e.to_string())?;
    let mut ring = Ring::new(CAPACITY, MAX_PAYLOAD, Flaw::None)?;
    if step >= 1 {
        ring.send_offer(&end)?;
    }
    if step >= 2 {
        drop(shm::recv_offer(&end, STEP)?);
    }
    // The parent's READY may still come; take whatever arrives until the end.
    loop {
        match frame::recv(&end, Duration::from_secs(30)) {
            Ok(_) => {}
            Err(RecvError::PeerGone) => return Ok(()),
            Err(err) => return Err(format!("expected to be killed, got {err}")),
        }
    }
}

/// Tells the parent this process reached its point, then waits to be killed.
pub(super) fn wait_for_kill(control: &mut Channel, reached: &[u8]) -> TestResult {
    control.send(reached, &[]).map_err(|e| e.to_string())?;
    match control.recv() {
        Err(sp_core::Error::PeerGone) => Ok(()),
        other => Err(format!("expected to be killed, got {other:?}")),
    }
}

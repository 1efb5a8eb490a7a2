//! The pipeline's set-up and supervision messages between the parent and each stage, over the
//! stage's sp-core channel (`docs/protocol.md`, "sp pipelines"). The rings' OFFER and READY
//! travel on the same channel, unchanged, and are told apart by their magic.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use sp_shm::IdleStrategy;

use crate::error::Violation;

/// First 8 bytes of a STAGE message (parent to stage, first on the channel).
pub(crate) const STAGE_MAGIC: [u8; 8] = *b"SPPLSTGE";
/// First 8 bytes of an UP message (stage to parent, after its links are set up).
pub(crate) const UP_MAGIC: [u8; 8] = *b"SPPLSTUP";
/// First 8 bytes of an EXIT message (parent to stage, when a stage's process has ended).
pub(crate) const EXIT_MAGIC: [u8; 8] = *b"SPPLEXIT";
pub(crate) const STAGE_LEN: usize = 40;
pub(crate) const UP_LEN: usize = 16;
pub(crate) const EXIT_LEN: usize = 24;
/// The version of the pipeline messages.
pub(crate) const VERSION: u32 = 1;
/// STAGE flag: the stage has an input (its first descriptor is the input link's control end).
pub(crate) const HAS_INPUT: u32 = 1;
/// STAGE flag: the stage has an output (its last descriptor is the output link's control end).
pub(crate) const HAS_OUTPUT: u32 = 2;
/// EXIT: no stage has failed yet.
const NO_FAILURE: u32 = u32::MAX;

/// UP status: the stage's links are set up.
pub(crate) const UP_OK: u32 = 0;
/// UP status: a ring was refused or rejected.
pub(crate) const UP_RING: u32 = 1;
/// UP status: a HELLO disagreed (the neighbours' types differ).
pub(crate) const UP_HELLO: u32 = 2;
/// UP status: any other failure.
pub(crate) const UP_OTHER: u32 = 3;

/// What a stage is told first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StageSetup {
    pub(crate) index: u32,
    pub(crate) n_stages: u32,
    pub(crate) flags: u32,
    /// How the stage waits (chosen by the parent from the number of processes and cores).
    pub(crate) idle: IdleStrategy,
}

/// A stage's end, as the parent reports it to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exit {
    pub(crate) stage: u32,
    pub(crate) status: ExitStatus,
    /// The first stage that failed so far, and how.
    pub(crate) first_failure: Option<(u32, ExitStatus)>,
}

impl StageSetup {
    pub(crate) fn n_fds(&self) -> usize {
        usize::from(self.flags & HAS_INPUT != 0) + usize::from(self.flags & HAS_OUTPUT != 0)
    }
}

pub(crate) fn encode_stage(setup: StageSetup) -> [u8; STAGE_LEN] {
    let mut out = [0u8; STAGE_LEN];
    out[0..8].copy_from_slice(&STAGE_MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&setup.index.to_le_bytes());
    out[16..20].copy_from_slice(&setup.n_stages.to_le_bytes());
    out[20..24].copy_from_slice(&setup.flags.to_le_bytes());
    out[24..28].copy_from_slice(&setup.idle.spins().to_le_bytes());
    out[28..32].copy_from_slice(&setup.idle.yields().to_le_bytes());
    out[32..36].copy_from_slice(&u32::from(setup.idle.parks()).to_le_bytes());
    out
}

pub(crate) fn decode_stage(bytes: &[u8], n_fds: usize) -> Result<StageSetup, Violation> {
    if bytes.len() != STAGE_LEN || bytes[0..8] != STAGE_MAGIC || u32_at(bytes, 8) != VERSION {
        return Err(Violation::BadSetup);
    }
    let park = u32_at(bytes, 32);
    if park > 1 || u32_at(bytes, 36) != 0 {
        return Err(Violation::BadSetup);
    }
    let setup = StageSetup {
        index: u32_at(bytes, 12),
        n_stages: u32_at(bytes, 16),
        flags: u32_at(bytes, 20),
        idle: IdleStrategy::new(u32_at(bytes, 24), u32_at(bytes, 28), park == 1),
    };
    if setup.index >= setup.n_stages
        || setup.flags & !(HAS_INPUT | HAS_OUTPUT) != 0
        || setup.n_fds() != n_fds
    {
        return Err(Violation::BadSetup);
    }
    Ok(setup)
}

pub(crate) fn encode_up(status: u32) -> [u8; UP_LEN] {
    let mut out = [0u8; UP_LEN];
    out[0..8].copy_from_slice(&UP_MAGIC);
    out[8..12].copy_from_slice(&status.to_le_bytes());
    out
}

/// The status of an UP message; `None` if it is not one.
pub(crate) fn decode_up(bytes: &[u8]) -> Option<u32> {
    (bytes.len() == UP_LEN && bytes[0..8] == UP_MAGIC && u32_at(bytes, 12) == 0)
        .then(|| u32_at(bytes, 8))
}

pub(crate) fn encode_exit(exit: Exit) -> [u8; EXIT_LEN] {
    let mut out = [0u8; EXIT_LEN];
    out[0..8].copy_from_slice(&EXIT_MAGIC);
    out[8..12].copy_from_slice(&exit.stage.to_le_bytes());
    out[12..16].copy_from_slice(&exit.status.into_raw().to_le_bytes());
    let (first, first_status) = match exit.first_failure {
        Some((stage, status)) => (stage, status.into_raw()),
        None => (NO_FAILURE, 0),
    };
    out[16..20].copy_from_slice(&first.to_le_bytes());
    out[20..24].copy_from_slice(&first_status.to_le_bytes());
    out
}

pub(crate) fn decode_exit(bytes: &[u8]) -> Result<Exit, Violation> {
    if bytes.len() != EXIT_LEN || bytes[0..8] != EXIT_MAGIC {
        return Err(Violation::BadSetup);
    }
    let raw = |at| ExitStatus::from_raw(u32_at(bytes, at) as i32);
    let first = u32_at(bytes, 16);
    Ok(Exit {
        stage: u32_at(bytes, 8),
        status: raw(12),
        first_failure: (first != NO_FAILURE).then(|| (first, raw(20))),
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_refuse_garbage() {
        let setup = StageSetup {
            index: 1,
            n_stages: 3,
            flags: HAS_INPUT | HAS_OUTPUT,
            idle: IdleStrategy::new(3, 2, true),
        };
        assert_eq!(decode_stage(&encode_stage(setup), 2), Ok(setup));
        assert_eq!(
            decode_stage(&encode_stage(setup), 1),
            Err(Violation::BadSetup)
        );
        let past_the_end = StageSetup { index: 3, ..setup };
        assert!(decode_stage(&encode_stage(past_the_end), 2).is_err());
        assert_eq!(decode_up(&encode_up(UP_HELLO)), Some(UP_HELLO));
        assert_eq!(decode_up(&encode_stage(setup)), None);
        let exit = Exit {
            stage: 2,
            status: ExitStatus::from_raw(9),
            first_failure: Some((1, ExitStatus::from_raw(256))),
        };
        assert_eq!(decode_exit(&encode_exit(exit)), Ok(exit));
        let clean = Exit {
            first_failure: None,
            ..exit
        };
        assert_eq!(decode_exit(&encode_exit(clean)), Ok(clean));
    }

    proptest::proptest! {
        #[test]
        fn decoders_take_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), n in 0usize..4) {
            let _ = decode_stage(&bytes, n);
            let _ = decode_up(&bytes);
            let _ = decode_exit(&bytes);
        }
    }
}

//! A pool item or result on the wire: the id the pool assigned, then the value's own encoding.
//!
//! The record's payload is `id` (8 bytes, little-endian) followed by exactly the bytes the
//! value's [`Value`] impl writes (`docs/protocol.md`, "sp pools"). Both sides of a pool use
//! `Envelope<T>`, so their HELLO compares `T`'s encoding.

use crate::error::{DecodeError, EncodeError};
use crate::value::{Encoding, Value};

/// Length of the id before the value.
pub(crate) const ID_LEN: usize = 8;

/// A value with the id of the item it belongs to.
#[derive(Debug)]
pub(crate) struct Envelope<T> {
    pub(crate) id: u64,
    pub(crate) value: T,
}

impl<T: Value> Value for Envelope<T> {
    const ENCODING: Encoding = T::ENCODING;

    #[inline]
    fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let Some((id, rest)) = out.split_at_mut_checked(ID_LEN) else {
            return Err(EncodeError::BufferFull);
        };
        id.copy_from_slice(&self.id.to_le_bytes());
        Ok(ID_LEN + self.value.encode(rest)?)
    }

    fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(ID_LEN + self.value.encoded_len()?)
    }

    #[inline]
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let Some((id, rest)) = bytes.split_first_chunk::<ID_LEN>() else {
            return Err(DecodeError::UnexpectedEnd);
        };
        Ok(Self {
            id: u64::from_le_bytes(*id),
            value: T::decode(rest)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_its_length() {
        let env = Envelope {
            id: 0x0102_0304_0506_0708,
            value: "item".to_string(),
        };
        let mut buf = [0u8; 32];
        let n = env.encode(&mut buf).unwrap();
        assert_eq!(n, env.encoded_len().unwrap());
        assert_eq!(buf[..8], 0x0102_0304_0506_0708u64.to_le_bytes());
        let back = Envelope::<String>::decode(&buf[..n]).unwrap();
        assert_eq!((back.id, back.value.as_str()), (env.id, "item"));
        assert_eq!(env.encode(&mut buf[..4]), Err(EncodeError::BufferFull));
        assert_eq!(env.encode(&mut buf[..9]), Err(EncodeError::BufferFull));
        assert_eq!(
            Envelope::<String>::decode(&buf[..7]).unwrap_err(),
            DecodeError::UnexpectedEnd
        );
    }
}

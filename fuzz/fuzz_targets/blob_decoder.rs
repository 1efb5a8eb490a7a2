//! Arbitrary BLOB messages with arbitrary descriptors: only an exact message with one sealed
//! memfd of the declared size is accepted; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sp_core::Message;
use sp_fuzz::Input;
use sp_shm::{Blob, Error};

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input(bytes);
    let n_fds = usize::from(input.u8() % 4);
    let fds = (0..n_fds).map(|_| sp_fuzz::any_fd(input.u8())).collect();
    let len = usize::from(input.u8() % 24);
    let msg = Message {
        bytes: input.bytes(len),
        fds,
    };
    match Blob::from_message(msg) {
        Ok(blob) => assert!(blob.len() <= 65536),
        Err(Error::Refused(_)) => {}
        Err(err) => panic!("unexpected {err}"),
    }
});

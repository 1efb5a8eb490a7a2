//! sp typed records ("sp typed records"): plain 64-byte values as VALUE, VALUE_FDS and BLOB
//! records with their ATTACH messages and HELLO; the peer echoes each with the same kind.

use std::os::fd::{AsFd, BorrowedFd};
use std::thread;

use sp::sp_shm::IdleStrategy;

use crate::{Report, STEP_LIMIT, Watchdog, assert_success, inode, memfd_pool, peer_command};

type Value64 = sp::Plain<[u64; 8]>;

#[test]
fn python_peer_echoes_typed_plain_values_with_descriptors_and_blobs() {
    let Some(_serial) = crate::begin() else {
        return;
    };
    const N_VALUES: u64 = 2000;
    let config = sp::Config::new()
        .capacity(4096)
        .idle(IdleStrategy::adaptive());
    let mut cmd = peer_command(&["typed", "--capacity", "4096", "--value-size", "64"]);
    let (mut child, mut tx, rx) = sp::spawn::<Value64, Value64>(&mut cmd, &config).unwrap();
    let _watchdog = Watchdog::start("typed", child.id());
    let pool = memfd_pool(8);
    let pool_inodes: Vec<u64> = pool.iter().map(|fd| inode(fd.as_fd())).collect();
    let ring_threshold = tx.blob_threshold();

    // Value i: VALUE, VALUE_FDS (i % 3 == 1: 1 + i % 8 descriptors) or, every fifth, a BLOB
    // (the threshold is lowered under the 64-byte value), with or without descriptors.
    let value = |i: u64| sp::Plain(std::array::from_fn(|w| i * 8 + w as u64));
    let n_fds = |i: u64| if i % 3 == 1 { 1 + (i % 8) as usize } else { 0 };
    let is_blob = |i: u64| i.is_multiple_of(5);
    let (mut values, mut value_fds, mut blobs, mut fds_total) = (0, 0, 0, 0);
    for i in 0..N_VALUES {
        fds_total += n_fds(i);
        if is_blob(i) {
            blobs += 1;
        } else if n_fds(i) == 0 {
            values += 1;
        } else {
            value_fds += 1;
        }
    }
    thread::scope(|scope| {
        let sender = scope.spawn(|| {
            for i in 0..N_VALUES {
                tx.set_blob_threshold(if is_blob(i) { 32 } else { ring_threshold });
                let fds: Vec<BorrowedFd<'_>> =
                    pool[..n_fds(i)].iter().map(|fd| fd.as_fd()).collect();
                if let Err(e) = tx.send_with_fds_timeout(&value(i), &fds, STEP_LIMIT) {
                    panic!("value {i}: {e}");
                }
            }
            drop(tx);
        });
        let mut rx = rx; // owned here, see shm_echo
        for i in 0..N_VALUES {
            let (got, fds) = match rx.recv_with_fds_timeout(STEP_LIMIT) {
                Ok(v) => v,
                Err(e) => panic!("value {i}: {e}"),
            };
            assert_eq!(got.0, value(i).0, "value {i}");
            let inodes: Vec<u64> = fds.iter().map(|fd| inode(fd.as_fd())).collect();
            assert_eq!(inodes, pool_inodes[..n_fds(i)], "value {i}: descriptors");
        }
        match rx.recv_timeout(STEP_LIMIT) {
            Err(e) if e.is_disconnected() => {}
            other => panic!("after the last value: {:?}", other.map(|v| v.0)),
        }
        sender.join().unwrap();
    });
    let report = Report::read(child.as_std_mut());
    assert_success(child.wait().unwrap());
    assert_eq!(report.get("records"), N_VALUES);
    assert_eq!(report.get("values"), values);
    assert_eq!(report.get("value_fds"), value_fds);
    assert_eq!(report.get("blobs"), blobs);
    assert_eq!(report.get("fds"), fds_total as u64);
}

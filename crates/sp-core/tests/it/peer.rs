//! The independent peer's frames (`sp_test_support::frame`, written from docs/protocol.md)
//! against sp-core's `Channel`: the two readings of the document agree on the constants and on
//! frames in both directions, so the other suites can trust the peer's handshake to be the
//! document's and not a copy of sp-core's.

use std::os::fd::AsFd;
use std::time::Duration;

use libtest_mimic::Trial;
use sp_core::{Channel, SocketKind};
use sp_test_support::frame::{self, RecvError};

use crate::{RecvWithin, TestResult, memfd_with, read_all_at_0, trial};

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "independent_peer_frame_constants_match_sp_core",
            constants_match,
        ),
        trial(
            "independent_peer_frames_round_trip_with_a_channel_both_ways_then_peer_gone",
            round_trip,
        ),
    ]
}

fn constants_match() -> TestResult {
    assert_eq!(frame::MAGIC, sp_core::FRAME_MAGIC);
    assert_eq!(frame::VERSION, sp_core::FRAME_VERSION);
    assert_eq!(frame::HEADER_LEN, sp_core::HEADER_LEN);
    assert_eq!(frame::MAX_FDS, sp_core::MAX_FDS);
    assert_eq!(frame::MAX_PAYLOAD, sp_core::DEFAULT_MAX_MESSAGE_LEN);
    Ok(())
}

/// The peer sends a frame with two descriptors and an empty one; the channel receives both.
/// The channel answers with a descriptor; the peer receives it whole. With nothing sent the
/// peer's receive times out; once the channel is gone it reports `PeerGone`.
fn round_trip() -> TestResult {
    let (peer, ours) = sp_core::pair(SocketKind::SeqPacket)?;
    let mut channel = Channel::new(ours)?;
    let a = memfd_with("sp-it-peer-a", b"first");
    let b = memfd_with("sp-it-peer-b", b"second");
    frame::send(&peer, b"two fds", &[a.as_fd(), b.as_fd()])?;
    frame::send(&peer, b"", &[])?;
    drop((a, b));
    let msg = channel.recv_within()?;
    assert_eq!(msg.bytes, b"two fds");
    let contents: Vec<Vec<u8>> = msg.fds.iter().map(read_all_at_0).collect();
    assert_eq!(contents, [b"first".to_vec(), b"second".to_vec()]);
    let msg = channel.recv_within()?;
    assert!(msg.bytes.is_empty() && msg.fds.is_empty());

    let c = memfd_with("sp-it-peer-c", b"answer");
    channel.send(b"back", &[c.as_fd()])?;
    drop(c);
    let got = frame::recv(&peer, Duration::from_secs(10))?;
    assert_eq!(got.bytes, b"back");
    assert_eq!(got.fds.len(), 1);
    assert_eq!(read_all_at_0(&got.fds[0]), b"answer");
    sp_test_support::fds::assert_cloexec(&got.fds[0]);

    assert!(matches!(
        frame::recv(&peer, Duration::from_millis(20)),
        Err(RecvError::Timeout)
    ));
    drop(channel);
    match frame::recv(&peer, Duration::from_secs(10)) {
        Err(RecvError::PeerGone) => Ok(()),
        other => Err(format!("after the channel closed: {other:?}").into()),
    }
}

//! The sp-shm duplex ("Handshake" to "Wake-ups and liveness", "Blobs"): the peer echoes every
//! ring record with its kind, through a ring it created, sealed and offered itself.

use std::thread;

use sp::sp_core::{self, Channel, Signal, SocketKind, SpawnOptions};
use sp::sp_shm::{self, Blob, IdleStrategy};

use crate::{Report, Rng, STEP_LIMIT, Watchdog, assert_success, peer_command};

/// How many records of `sizes` need padding, and how many end exactly at the end of the data
/// area, in a ring of `capacity` ("Records": positions depend on the sizes alone).
fn wraps(capacity: u64, sizes: impl Iterator<Item = usize>) -> (u64, u64) {
    let (mut tail, mut padded, mut exact) = (0u64, 0, 0);
    for n in sizes {
        let size = (8 + n as u64).next_multiple_of(8);
        let to_end = capacity - tail % capacity;
        if size > to_end {
            tail += to_end;
            padded += 1;
        }
        tail += size;
        exact += u64::from(tail % capacity == 0);
    }
    (padded, exact)
}

struct ShmTrial {
    socket: SocketKind,
    idle: IdleStrategy,
    python_spins: u32,
    n_records: usize,
    seed: u64,
}

fn shm_echo(trial: &ShmTrial) {
    let Some(_serial) = crate::begin() else {
        return;
    };
    const OUR_CAPACITY: usize = 4096;
    const PEER_CAPACITY: usize = 8192;
    const MAX_PAYLOAD: usize = 1024;
    let config = sp_shm::Config::new()
        .capacity(OUR_CAPACITY)
        .max_payload(MAX_PAYLOAD)
        .idle(trial.idle);
    let spins = trial.python_spins.to_string();
    let mut cmd = peer_command(&[
        "shm",
        "--capacity",
        &PEER_CAPACITY.to_string(),
        "--max-payload",
        &MAX_PAYLOAD.to_string(),
        "--spins",
        &spins,
    ]);
    let opts = SpawnOptions::new().parent_death_signal(Signal::KILL);
    let (mut child, mut duplex) = match trial.socket {
        // sp_shm::spawn: always a seqpacket pair.
        SocketKind::SeqPacket => sp_shm::spawn(&mut cmd, opts, &config).unwrap(),
        // The handshake over a stream pair: OFFER's descriptors ride with its first byte.
        _ => {
            let (parent_end, child_end) = sp_core::pair(trial.socket).unwrap();
            let child = sp_core::spawn_with(&mut cmd, child_end, opts).unwrap();
            let channel = Channel::new(parent_end).unwrap();
            (child, sp_shm::Duplex::connect(channel, &config).unwrap())
        }
    };
    let _watchdog = Watchdog::start("shm", child.id());

    // "Blobs", both ways: the peer checks ours and sends the bytes back reversed in its own.
    let mut rng = Rng(trial.seed);
    let blob_bytes = rng.bytes(100_003);
    Blob::from_bytes(&blob_bytes)
        .unwrap()
        .send(duplex.control())
        .unwrap();
    let back = Blob::recv_timeout(duplex.control(), STEP_LIMIT).unwrap();
    assert!(
        back.iter().eq(blob_bytes.iter().rev()),
        "the peer's blob differs"
    );

    // Every size from 0 to the largest payload is likely; the first few are the edges.
    let edges = [0, 1, 8, MAX_PAYLOAD, MAX_PAYLOAD - 1, MAX_PAYLOAD - 8];
    let plan: Vec<(u32, Vec<u8>)> = (0..trial.n_records)
        .map(|i| {
            let n = edges
                .get(i)
                .copied()
                .unwrap_or_else(|| rng.below(MAX_PAYLOAD as u64 + 1) as usize);
            let kind = match rng.below(4) {
                0 => 0,
                1 => u32::MAX - 1,
                _ => rng.next() as u32 & 0x7FFF_FFFF,
            };
            (kind, rng.bytes(n))
        })
        .collect();
    let sizes = || plan.iter().map(|(_, p)| p.len());
    let (ours_padded, ours_exact) = wraps(OUR_CAPACITY as u64, sizes());
    let (peer_padded, peer_exact) = wraps(PEER_CAPACITY as u64, sizes());
    assert!(
        ours_padded > 10 && peer_padded > 10,
        "the plan must wrap both rings with padding"
    );
    eprintln!(
        "padding records: ours {ours_padded}, the peer's {peer_padded}; records ending at the \
         end of the area: ours {ours_exact}, the peer's {peer_exact}"
    );

    let (mut producer, consumer, _control) = duplex.into_parts();
    let stats = thread::scope(|scope| {
        // Owned here, so that a failed check drops it while unwinding: the peer then sees the
        // hang-up and our sending thread a PeerGone, instead of both waiting for the watchdog.
        let mut consumer = consumer;
        let mut buf = Vec::new();
        let sender = scope.spawn(|| {
            for (kind, payload) in &plan {
                let mut grant = match producer.reserve_timeout(payload.len(), STEP_LIMIT) {
                    Ok(grant) => grant,
                    Err(e) => panic!("reserving for a record: {e}"),
                };
                grant.set_kind(*kind).unwrap();
                grant.copy_from_slice(payload);
                grant.commit(payload.len()).unwrap();
            }
            let stats = producer.stats();
            // Our producer's end closes: the peer drains the ring, then sees the hang-up.
            drop(producer);
            stats
        });
        for (i, (kind, payload)) in plan.iter().enumerate() {
            let got = match consumer.recv_into_timeout(&mut buf, STEP_LIMIT) {
                Ok(kind) => kind,
                Err(e) => panic!("record {i}: {e}"),
            };
            assert_eq!(got, *kind, "record {i}: kind");
            assert!(
                buf == *payload,
                "record {i}: {} bytes differ",
                payload.len()
            );
        }
        // The peer exits once it has echoed everything: then our consumer sees PeerGone.
        match consumer.recv_into_timeout(&mut buf, STEP_LIMIT) {
            Err(e) if e.is_disconnected() => {}
            other => panic!("after the last record: {other:?}"),
        }
        let producer_stats = sender.join().unwrap();
        (producer_stats, consumer.stats())
    });
    let report = Report::read(child.as_std_mut());
    assert_success(child.wait().unwrap());
    let n_bytes: usize = sizes().sum();
    assert_eq!(report.get("records"), plan.len() as u64);
    assert_eq!(report.get("bytes"), n_bytes as u64);
    assert_eq!(report.get("blob"), blob_bytes.len() as u64);
    let (producer_stats, consumer_stats) = stats;
    eprintln!("ours: producer {producer_stats:?}, consumer {consumer_stats:?}");
    if trial.python_spins == 0 {
        // The peer parks whenever its ring is empty, so our producer had to wake it, and our
        // parked consumer needed its tokens: both halves of the waiting protocol ran.
        assert!(report.get("consumer_parks") > 0, "the peer never parked");
        assert!(
            producer_stats.wakes_sent > 0,
            "the peer's waiting flag was never seen"
        );
    }
    if trial.idle != IdleStrategy::park() {
        return; // a spinning side may never need to park
    }
    assert!(consumer_stats.parks > 0, "our consumer never parked");
    assert!(
        report.get("tokens_to_consumer") > 0,
        "the peer never woke our consumer"
    );
}

#[test]
fn python_peer_echoes_ring_records_both_parked() {
    shm_echo(&ShmTrial {
        socket: SocketKind::SeqPacket,
        idle: IdleStrategy::park(),
        python_spins: 0,
        n_records: 3000,
        seed: 3,
    });
}

#[test]
fn python_peer_echoes_ring_records_adaptive() {
    let trial = ShmTrial {
        socket: SocketKind::SeqPacket,
        idle: IdleStrategy::adaptive(),
        python_spins: 200,
        n_records: 6000,
        seed: 4,
    };
    shm_echo(&trial);
}

#[test]
fn python_peer_echoes_ring_records_over_a_stream_pair() {
    shm_echo(&ShmTrial {
        socket: SocketKind::Stream,
        idle: IdleStrategy::adaptive(),
        python_spins: 200,
        n_records: 2000,
        seed: 5,
    });
}

#[test]
fn python_producer_sees_our_consumer_go() {
    let Some(_serial) = crate::begin() else {
        return;
    };
    let config = sp_shm::Config::new()
        .capacity(4096)
        .max_payload(1024)
        .idle(IdleStrategy::park());
    let mut cmd = peer_command(&["shm", "--capacity", "4096", "--max-payload", "1024"]);
    let opts = SpawnOptions::new().parent_death_signal(Signal::KILL);
    let (mut child, mut duplex) = sp_shm::spawn(&mut cmd, opts, &config).unwrap();
    let _watchdog = Watchdog::start("hang-up", child.id());
    Blob::from_bytes(b"x")
        .unwrap()
        .send(duplex.control())
        .unwrap();
    Blob::recv_timeout(duplex.control(), STEP_LIMIT).unwrap();
    let (mut producer, consumer, _control) = duplex.into_parts();
    // We never read: the peer's ring fills, it parks as a producer, and our consumer's end
    // closing must wake it with a hang-up (its exit status 3 says it saw exactly that).
    drop(consumer);
    let record = [7u8; 1000];
    let mut sent = 0;
    loop {
        match producer.send_timeout(&record, STEP_LIMIT) {
            Ok(()) => sent += 1,
            Err(e) if e.is_disconnected() => break,
            Err(e) => panic!("after {sent} records: {e}"),
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "the peer's status: {status}");
}

/// Runs the handshake with the peer through `Duplex::connect` (not `sp_shm::spawn`, which kills
/// a child whose handshake failed), expecting it to fail; returns our error and the peer's report.
fn refused_handshake(config: &sp_shm::Config, peer_args: &[&str]) -> (sp_shm::Error, Report) {
    let (parent_end, child_end) = sp_core::pair(SocketKind::SeqPacket).unwrap();
    let opts = SpawnOptions::new().parent_death_signal(Signal::KILL);
    let mut child = sp_core::spawn_with(&mut peer_command(peer_args), child_end, opts).unwrap();
    let _watchdog = Watchdog::start("refusal", child.id());
    let channel = Channel::new(parent_end).unwrap();
    let err = match sp_shm::Duplex::connect(channel, config) {
        Ok(_) => panic!("the handshake succeeded"),
        Err(e) => e,
    };
    let report = Report::read(child.as_std_mut());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "the peer's status: {status}");
    (err, report)
}

#[test]
fn python_peer_refuses_a_ring_above_its_limit_and_reads_our_refusal() {
    let Some(_serial) = crate::begin() else {
        return;
    };
    // The peer accepts at most 16 KiB; we offer 64 KiB: it answers READY with code 4.
    let config = sp_shm::Config::new().capacity(64 << 10);
    let (err, report) = refused_handshake(&config, &["shm", "--accept-capacity-up-to", "16384"]);
    assert!(
        matches!(
            err,
            sp_shm::Error::Rejected(sp_shm::RefuseReason::BadCapacity)
        ),
        "our error: {err:?}"
    );
    assert_eq!(report.text("handshake"), "refused");
    assert_eq!(report.get("code"), 4);

    // We accept at most 64 KiB; the peer offers 1 MiB: it must read our READY with code 4
    // (a refusing side closes at once, so its READY may come after an ECONNRESET).
    let config = sp_shm::Config::new()
        .capacity(4096)
        .accept_capacity_up_to(64 << 10);
    let (err, report) = refused_handshake(&config, &["shm", "--capacity", "1048576"]);
    assert!(
        matches!(
            err,
            sp_shm::Error::Refused(sp_shm::RefuseReason::BadCapacity)
        ),
        "our error: {err:?}"
    );
    assert_eq!(report.text("handshake"), "rejected");
    assert_eq!(report.get("code"), 4);
}

//! Integration test of sp-bench: every transport, run for a few milliseconds across two real
//! processes (or two threads for the ceilings), with every message checked.

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sp_bench::{Error, Mode, RunSpec, Transport};

/// The sp-bench binary, which plays the child side.
fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sp-bench"))
}

fn spec(transport: Transport, size: usize, mode: Mode) -> RunSpec {
    RunSpec::new(
        transport,
        size,
        mode,
        Duration::from_millis(5),
        Duration::from_millis(15),
    )
}

/// Held by every test that runs a transport that spins, so that they never run beside each other
/// (two spinning pairs on two cores would starve each other).
static SPINNERS: Mutex<()> = Mutex::new(());

/// One test, so that the transports that spin never run beside each other.
#[test]
fn every_transport_moves_checked_messages_across_processes() {
    let _spinners = SPINNERS.lock().unwrap_or_else(PoisonError::into_inner);
    // This test's thread is the driver: on its own core, as in the benchmark, so that the
    // transports that spin never share a core with their peer.
    sp_bench::pin_driver();
    for transport in Transport::ALL {
        // 256 KiB does not fit one default seqpacket record: exercises the split and the raised
        // sp-core buffers.
        for size in [64, 256 << 10] {
            for mode in [Mode::Throughput, Mode::Latency] {
                let spec = spec(transport, size, mode);
                match sp_bench::measure(&spec, exe()) {
                    Ok(sample) => {
                        assert!(sample.n_msgs > 0, "{spec:?}: no messages");
                        assert!(sample.elapsed_ns > 0);
                        if mode == Mode::Latency && transport.is_scenario() {
                            // The start-up scenarios: the median time to a first value.
                            let startup = sample.startup_ns.expect("start-up has its median");
                            assert!(startup > 0.0, "{spec:?}");
                        } else if mode == Mode::Latency {
                            let latency = sample.latency.expect("latency mode has percentiles");
                            assert!(latency.p50 > 0.0 && latency.p50 <= latency.p999);
                        } else {
                            assert!(sample.bytes_per_s() > 0.0);
                        }
                    }
                    Err(Error::Unsupported(why)) => {
                        let expected = transport.unavailable().is_some()
                            || !transport.measures(mode == Mode::Latency)
                            || !transport.carries(size);
                        assert!(expected, "{spec:?} unexpectedly unsupported: {why}");
                    }
                    Err(err) => panic!("{spec:?}: {err}"),
                }
            }
        }
    }
    sp_bench::cleanup_peer_files();
}

/// The ref-ring yardstick moves checked messages both ways at sizes that fill a slot exactly, that
/// leave a slot's tail unused (1001 B: slots round up to 8), and that give it only a few slots.
#[test]
fn the_ref_ring_moves_checked_messages_across_processes() {
    if Transport::RefRing.unavailable().is_some() {
        // It spins: a one-core machine cannot run it (the first test checks that it says so).
        return;
    }
    let _spinners = SPINNERS.lock().unwrap_or_else(PoisonError::into_inner);
    sp_bench::pin_driver();
    for size in [8, 64, 1001, 4096, 1 << 20] {
        for mode in [Mode::Throughput, Mode::Latency] {
            let mut spec = spec(Transport::RefRing, size, mode);
            if size == 4096 {
                spec.duration = Duration::from_millis(100);
            }
            let sample =
                sp_bench::measure(&spec, exe()).unwrap_or_else(|err| panic!("{spec:?}: {err}"));
            assert!(sample.n_msgs > 0, "{spec:?}");
            // 4 KiB messages get 256 slots: more messages than that and the ring has wrapped,
            // every message still checked.
            if mode == Mode::Throughput && size == 4096 {
                assert!(sample.n_msgs > 256, "{spec:?}: {} messages", sample.n_msgs);
            }
        }
    }
}

#[test]
fn a_wrong_size_is_refused_before_anything_starts() {
    let spec = spec(Transport::Pipe, 4, Mode::Throughput);
    assert!(matches!(
        sp_bench::measure(&spec, exe()),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn a_missing_child_executable_fails_instead_of_hanging() {
    let spec = spec(Transport::SocketpairStream, 64, Mode::Throughput);
    let res = sp_bench::measure(&spec, Path::new("/nonexistent/sp-bench"));
    assert!(res.is_err());
}

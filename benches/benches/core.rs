//! Criterion benches of sp-core's in-process hot paths: one descriptor sent and received over a
//! seqpacket channel, and a message round trip between the two ends of a channel pair.

use std::hint::black_box;
use std::os::fd::AsFd;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sp_core::{Channel, SocketKind};

fn fd_send_recv(c: &mut Criterion) {
    let (tx, mut rx) = Channel::pair(SocketKind::SeqPacket).expect("channel pair");
    let file = std::fs::File::open("/dev/null").expect("open /dev/null");
    let mut group = c.benchmark_group("sp-core");
    group.throughput(Throughput::Elements(1));
    group.bench_function("seqpacket send+recv, 1 fd", |b| {
        b.iter(|| {
            tx.send(b"fd", &[file.as_fd()]).expect("send");
            let msg = rx.recv().expect("recv");
            // Dropping the message closes the received descriptor, as a real receiver would.
            black_box(msg.fds.len())
        });
    });
    group.finish();
}

fn message_round_trip(c: &mut Criterion) {
    let (mut a, mut b) = Channel::pair(SocketKind::SeqPacket).expect("channel pair");
    let mut group = c.benchmark_group("sp-core");
    for size in [64usize, 4096] {
        let payload = vec![0x5a; size];
        group.throughput(Throughput::Bytes(2 * size as u64));
        group.bench_function(format!("seqpacket round trip, {size} B"), |bench| {
            bench.iter(|| {
                a.send(&payload, &[]).expect("send");
                let msg = b.recv().expect("recv");
                b.send(&msg.bytes, &[]).expect("echo");
                black_box(a.recv().expect("recv echo").bytes.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fd_send_recv, message_round_trip);
criterion_main!(benches);

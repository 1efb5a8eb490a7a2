//! Criterion bench of the sp-shm ring's hot path on one thread: reserve, write, commit, read,
//! release, with the producer and the consumer of one ring in this process (`sp_shm::channel`).
//! Nothing waits: every record is read right after it is committed.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sp_shm::{Config, IdleStrategy};

fn reserve_commit_read_release(c: &mut Criterion) {
    let config = Config::new()
        .capacity(1 << 20)
        .max_payload(64 << 10)
        .idle(IdleStrategy::spin());
    let (mut tx, mut rx) = sp_shm::channel(&config).expect("ring");
    let mut group = c.benchmark_group("sp-shm ring, one thread");
    for size in [64usize, 4096, 64 << 10] {
        let payload = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("reserve+commit+read+release, {size} B"), |b| {
            b.iter(|| {
                let mut grant = tx.try_reserve(size).expect("reserve");
                grant.copy_from_slice(&payload);
                grant.commit(size).expect("commit");
                let record = rx.try_read().expect("read");
                black_box(record.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, reserve_commit_read_release);
criterion_main!(benches);

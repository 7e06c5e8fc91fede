//! Micro-benchmarks of the ring, two threads of one process:
//! - `copy`: the producer copies B-byte blocks into slots, the consumer
//!   releases them unread, on heap and on real memfd segments, beside a
//!   single-thread `memcpy` of the same bytes;
//! - `empty_blocks`: zero-length commits, i.e. the per-block cost of the
//!   protocol itself.
//!
//! Each measurement first checks that every block arrived, then times a
//! barrier-synchronised run with `iter_custom`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shmover_ring::{
    Consumer, Direction, Geometry, HeapSegment, Producer, Segment, ShmSegment, Wait, FLAG_EOS,
};

const SLOTS: u32 = 32;

/// Moves `blocks` blocks of `block` bytes through a ring on `seg` from a
/// producer thread to this thread; returns the elapsed time and the number
/// of blocks the consumer saw.
fn transfer<S: Segment + 'static>(seg: Arc<S>, block: usize, blocks: u64) -> (Duration, u64) {
    let src = vec![0xA5u8; block];
    let mut tx = Producer::new(Arc::clone(&seg));
    let mut rx = Consumer::new(seg);
    let barrier = Arc::new(Barrier::new(2));
    let b2 = Arc::clone(&barrier);
    let producer = std::thread::spawn(move || {
        b2.wait();
        for i in 0..blocks {
            let mut slot = tx.reserve(&Wait::forever()).expect("reserve");
            slot.as_mut_slice()[..block].copy_from_slice(&src);
            let flags = if i + 1 == blocks { FLAG_EOS } else { 0 };
            slot.commit(block, flags, 0).expect("commit");
        }
    });
    barrier.wait();
    let t0 = Instant::now();
    let mut seen = 0;
    loop {
        let lease = rx.next(&Wait::forever()).expect("next");
        seen += 1;
        if lease.is_end() {
            break;
        }
    }
    let elapsed = t0.elapsed();
    producer.join().expect("producer thread");
    (elapsed, seen)
}

fn heap(block: usize) -> Arc<HeapSegment> {
    Arc::new(HeapSegment::new(
        Geometry::new(SLOTS, block as u32).unwrap(),
    ))
}

fn shm(block: usize) -> Arc<ShmSegment> {
    Arc::new(
        ShmSegment::create(
            Geometry::new(SLOTS, block as u32).unwrap(),
            Direction::ToMover,
        )
        .unwrap(),
    )
}

fn copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("copy");
    g.sample_size(10);
    for block in [64 << 10, 1 << 20] {
        let blocks = ((256u64 << 20) / block as u64).max(1);
        g.throughput(Throughput::Bytes(blocks * block as u64));
        // Correctness before timing.
        assert_eq!(transfer(heap(block), block, blocks).1, blocks);
        assert_eq!(transfer(shm(block), block, blocks).1, blocks);
        g.bench_with_input(BenchmarkId::new("heap_ring", block), &block, |b, &block| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| transfer(heap(block), block, blocks).0)
                    .sum()
            })
        });
        g.bench_with_input(
            BenchmarkId::new("memfd_ring", block),
            &block,
            |b, &block| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| transfer(shm(block), block, blocks).0)
                        .sum()
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("memcpy", block), &block, |b, &block| {
            let src = vec![0xA5u8; block];
            let mut dst = vec![0u8; block * SLOTS as usize];
            b.iter(|| {
                for i in 0..blocks as usize {
                    let at = (i % SLOTS as usize) * block;
                    dst[at..at + block].copy_from_slice(&src);
                    black_box(&mut dst);
                }
            })
        });
    }
    g.finish();
}

fn empty_blocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("empty_blocks");
    g.sample_size(10);
    let blocks = 1u64 << 20;
    g.throughput(Throughput::Elements(blocks));
    g.bench_function("memfd_ring", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let seg = shm(4096);
                    let mut tx = Producer::new(Arc::clone(&seg));
                    let mut rx = Consumer::new(seg);
                    let t0 = Instant::now();
                    let producer = std::thread::spawn(move || {
                        for i in 0..blocks {
                            let flags = if i + 1 == blocks { FLAG_EOS } else { 0 };
                            tx.reserve(&Wait::forever())
                                .unwrap()
                                .commit(0, flags, 0)
                                .unwrap();
                        }
                    });
                    while !rx.next(&Wait::forever()).unwrap().is_end() {}
                    producer.join().unwrap();
                    t0.elapsed()
                })
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, copy, empty_blocks);
criterion_main!(benches);

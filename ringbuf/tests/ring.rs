//! Public behaviour of the ring on heap and memfd segments within one
//! process (the cross-process and hostile-peer tests are in `/tests`).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmover_ring::{
    AttachError, Consumer, Direction, Error, Geometry, GeometryError, HeapSegment, Producer,
    Segment, ShmSegment, Wait, FLAG_CRC, FLAG_EOS,
};

fn heap(slots: u32) -> Arc<HeapSegment> {
    Arc::new(HeapSegment::new(Geometry::new(slots, 4096).unwrap()))
}

/// A cheap checksum for the tests (the ring does not interpret `crc`).
fn sum_of(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ u32::from(x)).wrapping_mul(0x0100_0193)
    })
}

/// Stress: a producer thread streams numbered blocks; the consumer holds
/// up to `hold` leases and releases them in reverse order.
fn stream_with_reordered_release<S: Segment + 'static>(seg: Arc<S>, blocks: u64, hold: usize) {
    let mut tx = Producer::new(Arc::clone(&seg));
    let mut rx = Consumer::new(seg);
    let producer = std::thread::spawn(move || {
        for i in 0..blocks {
            let mut slot = tx.reserve(&Wait::timeout(Duration::from_secs(30))).unwrap();
            let len = (i % 4000) as usize + 8;
            let buf = slot.as_mut_slice();
            buf[..8].copy_from_slice(&i.to_le_bytes());
            buf[8..len].fill(i as u8);
            let crc = sum_of(&buf[..len]);
            slot.commit(len, FLAG_CRC, crc).unwrap();
        }
        tx.finish(&Wait::timeout(Duration::from_secs(30))).unwrap();
    });
    let mut held = Vec::new();
    let mut expect = 0u64;
    loop {
        let lease = rx.next(&Wait::timeout(Duration::from_secs(30))).unwrap();
        if lease.is_end() {
            break;
        }
        assert_eq!(u64::from_le_bytes(lease[..8].try_into().unwrap()), expect);
        assert_eq!(lease.len(), (expect % 4000) as usize + 8);
        assert!(lease[8..].iter().all(|&b| b == expect as u8));
        assert_eq!(lease.crc(), Some(sum_of(&lease)));
        expect += 1;
        held.push(lease);
        if held.len() == hold {
            while let Some(l) = held.pop() {
                drop(l);
            }
        }
    }
    assert_eq!(expect, blocks);
    drop(held);
    producer.join().unwrap();
}

#[test]
fn blocks_arrive_in_order_when_leases_are_released_out_of_order_on_heap() {
    let blocks = if cfg!(miri) { 50 } else { 20_000 };
    stream_with_reordered_release(heap(8), blocks, 5);
}

#[test]
fn blocks_arrive_in_order_when_leases_are_released_out_of_order_on_memfd() {
    let seg = ShmSegment::create(Geometry::new(8, 4096).unwrap(), Direction::ToMover).unwrap();
    stream_with_reordered_release(Arc::new(seg), 20_000, 7);
}

#[test]
fn leases_released_on_other_threads_free_their_slots() {
    let seg = heap(4);
    let mut tx = Producer::new(Arc::clone(&seg));
    let mut rx = Consumer::new(seg);
    for round in 0..3u32 {
        for _ in 0..4 {
            tx.reserve(&Wait::forever())
                .unwrap()
                .commit(0, FLAG_CRC, round)
                .unwrap();
        }
        let leases: Vec<_> = (0..4).map(|_| rx.next(&Wait::forever()).unwrap()).collect();
        assert!(leases.iter().all(|l| l.crc() == Some(round)));
        assert_eq!(
            tx.reserve(&Wait::timeout(Duration::from_millis(10)))
                .unwrap_err(),
            Error::Timeout
        );
        std::thread::spawn(move || drop(leases)).join().unwrap();
    }
}

/// Commits a slot of `len` bytes, each `fill`.
fn put(tx: &mut Producer<Arc<HeapSegment>>, len: usize, fill: u8, flags: u32) {
    let mut slot = tx.reserve(&Wait::forever()).unwrap();
    slot.as_mut_slice()[..len].fill(fill);
    slot.commit(len, flags, u32::from(fill)).unwrap();
}

#[test]
fn a_run_takes_full_neighbours_and_stops_where_the_bytes_stop_being_contiguous() {
    const S: usize = 4096;
    let seg = heap(8);
    let mut tx = Producer::new(Arc::clone(&seg));
    let mut rx = Consumer::new(seg);
    // Slots 0-2 full, 3 short, 4 full, 5 full with a CRC, 6-7 full.
    for (i, (len, flags)) in [
        (S, 0),
        (S, 0),
        (S, 0),
        (100, 0),
        (S, 0),
        (S, FLAG_CRC),
        (S, 0),
        (S, 0),
    ]
    .into_iter()
    .enumerate()
    {
        put(&mut tx, len, i as u8, flags);
    }
    let expect_bytes = |fills: &[(u8, usize)]| -> Vec<u8> {
        fills
            .iter()
            .flat_map(|&(f, n)| std::iter::repeat_n(f, n))
            .collect()
    };
    // Up to the short slot, which ends the run (it is included).
    let a = rx.next_run(&Wait::forever(), 8).unwrap();
    assert_eq!((a.seq(), a.slots(), a.len()), (0, 4, 3 * S + 100));
    assert_eq!(
        &a[..],
        &expect_bytes(&[(0, S), (1, S), (2, S), (3, 100)])[..]
    );
    assert_eq!(a.crc(), None);
    // Slot 4 alone: slot 5's CRC speaks for slot 5 only.
    let b = rx.next_run(&Wait::forever(), 8).unwrap();
    assert_eq!((b.seq(), b.slots(), b.len()), (4, 1, S));
    let c = rx.next_run(&Wait::forever(), 8).unwrap();
    assert_eq!((c.seq(), c.slots(), c.crc()), (5, 1, Some(5)));
    // A run never asks for more than `max_slots`.
    let d = rx.next_run(&Wait::forever(), 1).unwrap();
    assert_eq!((d.seq(), d.slots()), (6, 1));
    let e = rx.try_next_run(8).unwrap().unwrap();
    assert_eq!((e.seq(), e.slots()), (7, 1));
    // Nothing committed: no lease, and the ring is full until a run goes.
    assert!(rx.try_next_run(8).unwrap().is_none());
    let no_room = Wait::timeout(Duration::from_millis(10));
    assert_eq!(tx.reserve(&no_room).unwrap_err(), Error::Timeout);
    // Releasing the first run frees its four slots, and only then.
    drop((b, c, d, e));
    assert_eq!(tx.reserve(&no_room).unwrap_err(), Error::Timeout);
    drop(a);
    for i in 0..3u8 {
        put(&mut tx, S, 10 + i, 0);
    }
    put(&mut tx, 9, 13, FLAG_EOS);
    assert_eq!(tx.reserve(&no_room).unwrap_err(), Error::Finished);
    // Seq 8 to 11 are slots 0 to 3 again; the end-of-stream slot is the
    // run's last.
    let f = rx.next_run(&Wait::forever(), 8).unwrap();
    assert_eq!((f.seq(), f.slots(), f.len()), (8, 4, 3 * S + 9));
    assert!(f.is_end());
    assert_eq!(
        &f[..],
        &expect_bytes(&[(10, S), (11, S), (12, S), (13, 9)])[..]
    );
    assert_eq!(
        rx.next_run(&Wait::forever(), 8).unwrap_err(),
        Error::Finished
    );
}

#[test]
fn a_run_does_not_cross_the_end_of_the_ring() {
    let seg = heap(4);
    let mut tx = Producer::new(Arc::clone(&seg));
    let mut rx = Consumer::new(seg);
    for i in 0..3 {
        put(&mut tx, 4096, i, 0);
    }
    drop(rx.next_run(&Wait::forever(), 2).unwrap());
    for i in 3..5 {
        put(&mut tx, 4096, i, 0);
    }
    // Slots 2 and 3 and then (seq 4) slot 0 again: two leases.
    let a = rx.next_run(&Wait::forever(), 8).unwrap();
    assert_eq!((a.seq(), a.slots()), (2, 2));
    let b = rx.next_run(&Wait::forever(), 8).unwrap();
    assert_eq!((b.seq(), b.slots()), (4, 1));
    assert!(b.iter().all(|&x| x == 4));
}

#[test]
fn a_run_ends_before_a_neighbour_rewritten_after_its_commit_and_the_next_call_reports_it() {
    let seg = heap(8);
    let mut tx = Producer::new(Arc::clone(&seg));
    let mut rx = Consumer::new(Arc::clone(&seg));
    for i in 0..4 {
        put(&mut tx, 4096, i, 0);
    }
    // A hostile producer rewrites slot 2's descriptor after committing it.
    seg.descriptors()[2].len.store(4097, Ordering::Relaxed);
    let a = rx.next_run(&Wait::forever(), 8).unwrap();
    assert_eq!((a.seq(), a.slots()), (0, 2));
    match rx.next_run(&Wait::forever(), 8) {
        Err(Error::Corrupt(c)) => assert!(c.to_string().contains("4097"), "{c}"),
        other => panic!("expected corruption, got {other:?}"),
    }
    // And stays poisoned.
    assert!(matches!(rx.try_next_run(8), Err(Error::Corrupt(_))));
}

/// Stress: a producer streams numbered bytes in slots that are mostly full,
/// some short, some with a CRC, while the consumer takes runs of up to 5
/// and releases them out of order; the bytes come out whole and in order.
#[test]
fn runs_carry_every_byte_in_order_under_a_racing_producer() {
    const S: usize = 4096;
    let blocks = if cfg!(miri) { 60 } else { 20_000u64 };
    let seg = ShmSegment::create(Geometry::new(16, S as u32).unwrap(), Direction::ToMover).unwrap();
    let seg = Arc::new(seg);
    let mut tx = Producer::new(Arc::clone(&seg));
    let mut rx = Consumer::new(seg);
    let len_of = |i: u64| if i % 7 == 3 { (i % 300) as usize } else { S };
    let byte_at = |pos: u64| (pos.wrapping_mul(0x9e37_79b9) >> 11) as u8;
    let producer = std::thread::spawn(move || {
        let mut pos = 0u64;
        for i in 0..blocks {
            let len = len_of(i);
            let mut slot = tx.reserve(&Wait::timeout(Duration::from_secs(30))).unwrap();
            for b in &mut slot.as_mut_slice()[..len] {
                *b = byte_at(pos);
                pos += 1;
            }
            let flags = if i % 11 == 5 { FLAG_CRC } else { 0 };
            slot.commit(len, flags, i as u32).unwrap();
        }
        tx.finish(&Wait::timeout(Duration::from_secs(30))).unwrap();
    });
    let (mut pos, mut slots, mut multi) = (0u64, 0u64, 0u32);
    let mut held = Vec::new();
    loop {
        let lease = rx
            .next_run(&Wait::timeout(Duration::from_secs(30)), 5)
            .unwrap();
        assert_eq!(lease.seq(), slots);
        assert!((1..=5).contains(&lease.slots()));
        if let Some(crc) = lease.crc() {
            assert_eq!((lease.slots(), u64::from(crc) % 11), (1, 5));
        }
        for &b in lease.iter() {
            assert_eq!(b, byte_at(pos), "byte {pos}");
            pos += 1;
        }
        slots += u64::from(lease.slots());
        multi += u32::from(lease.slots() > 1);
        let end = lease.is_end();
        held.push(lease);
        if held.len() == 3 || end {
            let last = held.len() - 1;
            held.swap(0, last.min(2));
            held.clear();
        }
        if end {
            break;
        }
    }
    let total: u64 = (0..blocks).map(|i| len_of(i) as u64).sum();
    assert_eq!((pos, slots), (total, blocks + 1));
    assert!(multi > 0, "no lease took more than one slot");
    producer.join().unwrap();
}

#[test]
fn a_write_run_reserves_free_neighbours_and_commits_them_one_by_one() {
    const S: usize = 4096;
    let seg = heap(8);
    let mut tx = Producer::new(Arc::clone(&seg));
    let mut rx = Consumer::new(seg);
    for i in 0..3 {
        put(&mut tx, S, i, 0);
    }
    // Five slots are free, up to the end of the ring; the run asks for more.
    let mut run = tx.reserve_run(&Wait::forever(), 1, 16).unwrap();
    assert_eq!(run.slots(), 5);
    assert_eq!(run.as_mut_slice().len(), 5 * S);
    for (k, b) in run.as_mut_slice().chunks_mut(S).enumerate() {
        b.fill(10 + k as u8);
    }
    run.commit_slot(S, 0, 0).unwrap();
    // What is left of the run no longer covers the committed slot.
    assert_eq!(run.slots(), 4);
    assert!(run.as_mut_slice()[..S].iter().all(|&b| b == 11));
    run.commit_slot(100, FLAG_CRC, 7).unwrap();
    let leases: Vec<_> = (0..5).map(|_| rx.next(&Wait::forever()).unwrap()).collect();
    assert_eq!(leases[3].len(), S);
    assert!(leases[3].iter().all(|&b| b == 10));
    assert_eq!((leases[4].len(), leases[4].crc()), (100, Some(7)));
    assert!(leases[4].iter().all(|&b| b == 11));
    // The three slots left of the run stay reserved: the next reservation
    // starts with them, and there is no room beyond the end of the ring.
    assert_eq!(tx.reserve_run(&Wait::forever(), 1, 16).unwrap().slots(), 3);
    for i in 0..3 {
        put(&mut tx, S, 20 + i, 0);
    }
    // The ring is full: nothing until a lease goes, then exactly that much.
    let no_room = Wait::timeout(Duration::from_millis(10));
    assert_eq!(tx.reserve_run(&no_room, 1, 4).unwrap_err(), Error::Timeout);
    drop(leases);
    assert_eq!(tx.reserve_run(&Wait::forever(), 1, 16).unwrap().slots(), 5);
}

#[test]
fn a_write_run_waits_until_its_minimum_is_free() {
    let seg = heap(8);
    let mut tx = Producer::new(Arc::clone(&seg));
    let mut rx = Consumer::new(Arc::clone(&seg));
    for i in 0..8 {
        put(&mut tx, 4096, i, 0);
    }
    let mut leases: Vec<_> = (0..8).map(|_| rx.next(&Wait::forever()).unwrap()).collect();
    let short = Wait::timeout(Duration::from_millis(10));
    // Two slots free: not the three asked for.
    leases.drain(..2);
    assert_eq!(tx.reserve_run(&short, 3, 8).unwrap_err(), Error::Timeout);
    assert_eq!(tx.reserve_run(&short, 1, 8).unwrap().slots(), 2);
    // Freed on another thread once the run is asleep waiting for them (its
    // waiting flag is up): it wakes with them.
    let later = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while seg.control().producer.waiting.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline, "the run never went to sleep");
            std::thread::yield_now();
        }
        leases.drain(..3);
        leases
    });
    let run = tx.reserve_run(&Wait::timeout(Duration::from_secs(30)), 4, 8);
    // Woken by the release that makes four free; the third may or may not
    // have landed by the time it looks.
    let got = run.unwrap().slots();
    assert!((4..=5).contains(&got), "{got} slots");
    let held = later.join().unwrap();
    // A minimum beyond half the ring asks for half: with three slots still
    // leased this returns the five free ones instead of waiting for ever.
    assert_eq!(
        tx.reserve_run(&Wait::forever(), 100, 100).unwrap().slots(),
        5
    );
    drop(held);
    assert_eq!(
        tx.reserve_run(&Wait::forever(), 100, 100).unwrap().slots(),
        8
    );
}

#[test]
fn a_full_ring_times_out_at_the_deadline() {
    let seg = heap(2);
    let mut sut = Producer::new(Arc::clone(&seg));
    let _rx = Consumer::new(seg);
    for _ in 0..2 {
        sut.reserve(&Wait::forever())
            .unwrap()
            .commit(1, 0, 0)
            .unwrap();
    }
    let err = sut
        .reserve(&Wait::timeout(Duration::from_millis(50)))
        .unwrap_err();
    assert_eq!(err, Error::Timeout);
}

#[test]
fn an_empty_ring_reports_peer_gone_when_the_liveness_check_fails() {
    let seg = heap(2);
    let _tx = Producer::new(Arc::clone(&seg));
    let mut sut = Consumer::new(seg);
    let alive = || false;
    let wait = Wait::timeout(Duration::from_secs(30)).alive(&alive);
    assert_eq!(sut.next(&wait).unwrap_err(), Error::PeerGone);
}

#[test]
fn a_producer_rejects_out_of_order_and_oversized_commits() {
    let seg = heap(2);
    let mut sut = Producer::new(Arc::clone(&seg));
    let _rx = Consumer::new(seg);
    assert_eq!(sut.commit_raw(1, 0, 0), Err(Error::OutOfOrder));
    sut.reserve_raw(&Wait::forever()).unwrap();
    assert_eq!(
        sut.commit_raw(4097, 0, 0),
        Err(Error::TooLong {
            len: 4097,
            max: 4096
        })
    );
    assert_eq!(sut.commit_raw(1, 0x40, 0), Err(Error::BadFlags(0x40)));
    sut.commit_raw(1, FLAG_EOS, 0).unwrap();
    assert_eq!(sut.reserve(&Wait::forever()).unwrap_err(), Error::Finished);
}

#[test]
fn after_the_end_of_stream_the_consumer_says_finished() {
    let seg = heap(2);
    let mut tx = Producer::new(Arc::clone(&seg));
    let mut sut = Consumer::new(seg);
    tx.finish(&Wait::forever()).unwrap();
    assert!(sut.next(&Wait::forever()).unwrap().is_end());
    assert_eq!(sut.next(&Wait::forever()).unwrap_err(), Error::Finished);
}

fn dup3(seg: &ShmSegment) -> [OwnedFd; 3] {
    seg.fds().map(|f| f.try_clone_to_owned().unwrap())
}

#[test]
fn attach_accepts_the_segment_the_mover_created() {
    let creator = ShmSegment::create(Geometry::new(4, 8192).unwrap(), Direction::ToMover).unwrap();
    let [m, d, s] = dup3(&creator);
    // SAFETY: descriptors of our own segment.
    let sut = unsafe { ShmSegment::attach(m, d, s, Direction::ToMover) }.unwrap();
    assert_eq!(sut.geometry(), Geometry::new(4, 8192).unwrap());
    // Bytes written through one mapping are read through the other.
    let mut tx = Producer::new(sut);
    let mut rx = Consumer::new(creator);
    let mut slot = tx.reserve(&Wait::forever()).unwrap();
    slot.as_mut_slice()[..3].copy_from_slice(b"abc");
    slot.commit(3, 0, 0).unwrap();
    assert_eq!(&*rx.next(&Wait::forever()).unwrap(), b"abc");
}

#[test]
fn a_recycled_segment_starts_a_new_stream_in_either_direction() {
    let geometry = Geometry::new(4, 4096).unwrap();
    let mut creator = ShmSegment::create(geometry, Direction::ToMover).unwrap();
    // Two laps and an end of stream, then both sides detach.
    {
        let [m, d, s] = dup3(&creator);
        // SAFETY: descriptors of our own segment.
        let client = unsafe { ShmSegment::attach(m, d, s, Direction::ToMover) }.unwrap();
        let mut tx = Producer::new(client);
        let shared = Arc::new(creator);
        let mut rx = Consumer::new(Arc::clone(&shared));
        for i in 0..9u8 {
            let mut slot = tx.reserve(&Wait::forever()).unwrap();
            slot.as_mut_slice()[0] = i;
            slot.commit(1, 0, 0).unwrap();
            assert_eq!(&*rx.next(&Wait::forever()).unwrap(), &[i]);
        }
        tx.finish(&Wait::forever()).unwrap();
        assert!(rx.next(&Wait::forever()).unwrap().is_end());
        drop((tx, rx));
        creator = Arc::try_unwrap(shared).unwrap();
    }
    // The last client rewrites the geometry in the header: 2 x 8 KiB has
    // the same data offset and size as 4 x 4 KiB, so an attach accepts it,
    // and a client believing it would put slots where the mover does not
    // read them.
    let lie = Geometry::new(2, 8192).unwrap();
    assert_eq!(lie.total_size(), geometry.total_size());
    {
        let [m, _, _] = dup3(&creator);
        write_header(&std::fs::File::from(m), &lie.header(Direction::ToMover));
    }
    let creator = creator.recycle(Direction::FromMover).unwrap();
    let ctl = creator.control();
    for line in [&ctl.producer, &ctl.consumer] {
        assert_eq!(line.counter.load(Ordering::Relaxed), 0);
        assert_eq!(line.closed.load(Ordering::Relaxed), 0);
        assert_eq!(line.waiting.load(Ordering::Relaxed), 0);
    }
    assert!(creator
        .descriptors()
        .iter()
        .all(|d| d.len.load(Ordering::Relaxed) == 0 && d.flags.load(Ordering::Relaxed) == 0));
    let [m, d, s] = dup3(&creator);
    // The header now says restore: a backup attach is refused, a restore
    // attach works and the mover produces into it from slot 0.
    let [m2, d2, s2] = dup3(&creator);
    // SAFETY: descriptors of our own segment.
    let err = unsafe { ShmSegment::attach(m2, d2, s2, Direction::ToMover) }.unwrap_err();
    assert!(matches!(err, AttachError::BadDirection(2)), "{err}");
    // SAFETY: descriptors of our own segment.
    let client = unsafe { ShmSegment::attach(m, d, s, Direction::FromMover) }.unwrap();
    assert_eq!(
        client.geometry(),
        geometry,
        "the header kept the last client's lie"
    );
    let mut tx = Producer::new(creator);
    let mut rx = Consumer::new(client);
    let mut slot = tx.reserve(&Wait::forever()).unwrap();
    slot.as_mut_slice()[..2].copy_from_slice(b"ok");
    slot.commit(2, FLAG_EOS, 0).unwrap();
    let lease = rx.next(&Wait::forever()).unwrap();
    assert_eq!((&*lease, lease.is_end()), (&b"ok"[..], true));
}

#[test]
fn attach_refuses_the_wrong_direction() {
    let creator =
        ShmSegment::create(Geometry::new(4, 4096).unwrap(), Direction::FromMover).unwrap();
    let [m, d, s] = dup3(&creator);
    // SAFETY: descriptors of our own segment.
    let err = unsafe { ShmSegment::attach(m, d, s, Direction::ToMover) }.unwrap_err();
    assert!(matches!(err, AttachError::BadDirection(2)), "{err}");
}

fn memfd(sealable: bool) -> std::fs::File {
    use std::os::fd::FromRawFd;
    let flags = if sealable { libc::MFD_ALLOW_SEALING } else { 0 };
    // SAFETY: a valid C string and flags.
    let fd = unsafe { libc::memfd_create(c"test".as_ptr(), flags) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor nobody else owns.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

fn raw_memfd(size: u64, seal: bool) -> std::fs::File {
    let f = memfd(seal);
    f.set_len(size).unwrap();
    if seal {
        seal_size(&f);
    }
    f
}

/// Seals a memfd against shrinking and growing, as the mover does.
fn seal_size(f: &std::fs::File) {
    // SAFETY: F_ADD_SEALS on our own memfd with constant flags.
    let rc = unsafe {
        libc::fcntl(
            f.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        )
    };
    assert_eq!(rc, 0);
}

fn bells() -> (OwnedFd, OwnedFd) {
    let a = shmover_ring::EventFd::new().unwrap();
    let b = shmover_ring::EventFd::new().unwrap();
    (
        a.as_fd().try_clone_to_owned().unwrap(),
        b.as_fd().try_clone_to_owned().unwrap(),
    )
}

#[test]
fn attach_refuses_an_unsealed_memfd() {
    let (d, s) = bells();
    let fd = raw_memfd(1 << 20, false).into();
    // SAFETY: our own descriptors.
    let err = unsafe { ShmSegment::attach(fd, d, s, Direction::ToMover) }.unwrap_err();
    assert!(matches!(err, AttachError::NotSealed { .. }), "{err}");
}

#[test]
fn attach_refuses_garbage_where_the_header_should_be() {
    let (d, s) = bells();
    let fd = raw_memfd(1 << 20, true).into();
    // SAFETY: our own descriptors; the memfd is all zeros.
    let err = unsafe { ShmSegment::attach(fd, d, s, Direction::ToMover) }.unwrap_err();
    assert!(matches!(err, AttachError::BadMagic(0)), "{err}");
}

#[test]
fn attach_refuses_a_header_that_claims_more_than_the_memfd_holds() {
    let g = Geometry::new(4, 4096).unwrap();
    let file = raw_memfd(g.total_size() as u64 - 4096, true);
    write_header(&file, &g.header(Direction::ToMover));
    let (d, s) = bells();
    // SAFETY: our own descriptors.
    let err = unsafe { ShmSegment::attach(file.into(), d, s, Direction::ToMover) }.unwrap_err();
    assert!(
        matches!(err, AttachError::SizeMismatch { expected, actual } if expected == g.total_size() as u64 && actual == expected - 4096),
        "{err}"
    );
}

/// Writes `header` at offset 0 of `file`, as a (possibly lying) creator does.
fn write_header(file: &std::fs::File, header: &shmover_ring::SegmentHeader) {
    // SAFETY: SegmentHeader is 128 bytes of plain integers with no padding.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (header as *const shmover_ring::SegmentHeader).cast::<u8>(),
            128,
        )
    };
    std::os::unix::fs::FileExt::write_all_at(file, bytes, 0).unwrap();
}

#[test]
fn attach_refuses_a_ring_over_the_size_limit_before_mapping_it() {
    // 32 slots of 64 MiB: 2 GiB of slots, in a memfd of exactly the size the
    // header claims (sparse: nothing is touched unless attach maps it).
    let (count, size) = (32u32, shmover_ring::MAX_SLOT_SIZE);
    let data_offset = 4096 + u64::from(count) * 16;
    let data_offset = data_offset.div_ceil(4096) * 4096;
    let total = data_offset + u64::from(count) * u64::from(size);
    let file = raw_memfd(total, true);
    let mut header = Geometry::new(2, 4096).unwrap().header(Direction::ToMover);
    header.slot_count = count;
    header.slot_size = size;
    header.data_offset = data_offset;
    header.total_size = total;
    write_header(&file, &header);
    let (d, s) = bells();
    // SAFETY: our own descriptors.
    let err = unsafe { ShmSegment::attach(file.into(), d, s, Direction::ToMover) }.unwrap_err();
    assert!(
        matches!(
            err,
            AttachError::BadGeometry(GeometryError::RingTooLarge(n)) if n == 2 << 30
        ),
        "{err}"
    );
    assert!(err.to_string().contains("over the limit"), "{err}");
}

#[test]
fn segments_are_anonymous_memfds_not_files_in_dev_shm() {
    let sut = ShmSegment::create(Geometry::new(4, 4096).unwrap(), Direction::ToMover).unwrap();
    let link = std::fs::read_link(format!("/proc/self/fd/{}", sut.fds()[0].as_raw_fd())).unwrap();
    assert!(
        link.to_string_lossy().starts_with("/memfd:shmover-ring"),
        "{}",
        link.display()
    );
    // What this process maps, not what /dev/shm lists (other processes on
    // the machine may come and go there).
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(maps.contains("/memfd:shmover-ring"), "{maps}");
    assert!(!maps.contains("/dev/shm/"), "{maps}");
}

/// A segment the creator made, with one of its doorbells swapped for `bell`.
fn attach_with_data_bell(bell: OwnedFd) -> Result<ShmSegment, AttachError> {
    let creator = ShmSegment::create(Geometry::new(4, 4096).unwrap(), Direction::ToMover).unwrap();
    let [m, _, s] = dup3(&creator);
    // SAFETY: descriptors of our own segment, and a descriptor we made.
    unsafe { ShmSegment::attach(m, bell, s, Direction::ToMover) }
}

#[test]
fn attach_refuses_a_doorbell_that_is_not_an_eventfd() {
    // A pipe whose reader is gone would raise SIGPIPE at the first ring; a
    // socket or a file could block or busy-loop the waiter.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    use std::os::fd::FromRawFd;
    // SAFETY: fresh descriptors nobody else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(r);
    let err = attach_with_data_bell(w).unwrap_err();
    assert!(err.to_string().contains("must be an eventfd"), "{err}");
    let file: OwnedFd = memfd(false).into();
    let err = attach_with_data_bell(file).unwrap_err();
    assert!(err.to_string().contains("must be an eventfd"), "{err}");
    // The real thing is accepted.
    let (d, _) = bells();
    attach_with_data_bell(d).unwrap();
}

#[test]
fn a_peer_that_makes_a_doorbell_blocking_cannot_park_our_ring() {
    // The peer holds the same open file: it clears O_NONBLOCK and fills the
    // counter to its maximum, where a blocking write(1) would sleep until
    // someone reads.
    let bell = shmover_ring::EventFd::new().unwrap();
    let peer = bell.as_fd().try_clone_to_owned().unwrap();
    let fd = peer.as_raw_fd();
    let clear_nonblock = move || {
        // SAFETY: F_GETFL/F_SETFL on a descriptor this test owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK), 0);
        }
    };
    clear_nonblock();
    let max: u64 = u64::MAX - 1;
    // SAFETY: writes the 8 bytes of a live u64.
    let n = unsafe { libc::write(fd, (&max as *const u64).cast(), 8) };
    assert_eq!(n, 8);
    // SAFETY: F_GETFL on a descriptor this test owns.
    let blocking = move || unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_NONBLOCK == 0;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let ringer = std::thread::spawn(move || {
        // A counter at its maximum already wakes the waiter: no write.
        bell.notify();
        let skipped = blocking();
        // The wait drains the counter without a blocking read.
        bell.wait_timeout(Some(Duration::from_millis(1))).unwrap();
        // Below the maximum, a ring restores the flag, then writes.
        bell.notify();
        let restored = !blocking();
        // The peer clears it again; the wait drains with RWF_NOWAIT.
        clear_nonblock();
        bell.wait_timeout(Some(Duration::from_millis(1))).unwrap();
        let drained_blocking = blocking();
        bell.wait_timeout(Some(Duration::from_millis(1))).unwrap();
        done_tx.send((skipped, restored, drained_blocking)).unwrap();
    });
    // Not a timing assertion: a parked thread never answers at all.
    let (skipped, restored, drained_blocking) = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("notify or wait blocked on a doorbell the peer made blocking");
    ringer.join().unwrap();
    assert!(
        skipped,
        "a ring on a full counter wrote (or touched the flag)"
    );
    assert!(restored, "a ring did not restore O_NONBLOCK before writing");
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    assert_eq!(ready, 0, "counter not drained");
    // Kernels before 5.12 refuse RWF_NOWAIT on an eventfd; the drain then
    // falls back to restoring the flag and a non-blocking read.
    let mut buf = 0u64;
    let iov = libc::iovec {
        iov_base: (&mut buf as *mut u64).cast(),
        iov_len: 8,
    };
    // SAFETY: one iovec over a live u64; the counter is 0, so EAGAIN.
    let n = unsafe { libc::preadv2(fd, &iov, 1, -1, libc::RWF_NOWAIT) };
    let nowait = n >= 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
    assert_eq!(drained_blocking, nowait, "RWF_NOWAIT support: {nowait}");
}

#[test]
fn attach_refuses_a_sealed_hugetlb_memfd() {
    // Sealed against shrinking and growing, yet the peer could punch its
    // pages out of a small huge-page pool: only tmpfs memory is taken.
    use std::os::fd::FromRawFd;
    // SAFETY: a valid C string and flags.
    let fd = unsafe {
        libc::memfd_create(
            c"test-huge".as_ptr(),
            libc::MFD_ALLOW_SEALING | libc::MFD_HUGETLB,
        )
    };
    if fd < 0 {
        eprintln!("skipped: this kernel makes no hugetlb memfd");
        return;
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    let _ = file.set_len(2 << 20);
    seal_size(&file);
    let (d, s) = bells();
    // SAFETY: our own descriptors.
    let err = unsafe { ShmSegment::attach(file.into(), d, s, Direction::ToMover) }.unwrap_err();
    assert!(err.to_string().contains("not shared memory"), "{err}");
}

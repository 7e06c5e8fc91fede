//! Loom models of the ring protocol on a heap segment: publication order,
//! the arm/fence/re-check sleep, out-of-order release and detach. A lost
//! wake-up shows up here as a loom deadlock.
//!
//! Run with: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p shmover-ring --lib --release`

use std::sync::Arc;

use crate::{Consumer, Error, Geometry, HeapSegment, Producer, Wait, FLAG_CRC};

fn two_slot_ring() -> Arc<HeapSegment> {
    Arc::new(HeapSegment::new(Geometry::new(2, 4096).unwrap()))
}

#[test]
fn every_commit_reaches_the_consumer_in_order_through_a_full_ring() {
    loom::model(|| {
        let seg = two_slot_ring();
        let mut tx = Producer::new(Arc::clone(&seg));
        let mut rx = Consumer::new(seg);
        let producer = loom::thread::spawn(move || {
            for i in 0..3u32 {
                let mut slot = tx.reserve(&Wait::forever()).unwrap();
                slot.as_mut_slice()[0] = i as u8;
                slot.commit(1, FLAG_CRC, 100 + i).unwrap();
            }
            tx.finish(&Wait::forever()).unwrap();
        });
        for i in 0..3u32 {
            let lease = rx.next(&Wait::forever()).unwrap();
            // The crc field is an atomic loom tracks: seeing the value the
            // producer stored proves the head's Release/Acquire orders it.
            assert_eq!(lease.crc(), Some(100 + i));
            assert_eq!(lease.as_slice(), &[i as u8]);
        }
        assert!(rx.next(&Wait::forever()).unwrap().is_end());
        assert_eq!(rx.next(&Wait::forever()).unwrap_err(), Error::Finished);
        producer.join().unwrap();
    });
}

#[test]
fn runs_see_every_commit_in_order_and_free_the_ring_for_a_waiting_producer() {
    loom::model(|| {
        let seg = two_slot_ring();
        let mut tx = Producer::new(Arc::clone(&seg));
        let mut rx = Consumer::new(seg);
        let producer = loom::thread::spawn(move || {
            for i in 0..3u8 {
                let mut slot = tx.reserve(&Wait::forever()).unwrap();
                slot.as_mut_slice()[0] = i;
                // Full slots, so a run may take neighbours.
                slot.commit(4096, 0, 0).unwrap();
            }
            tx.finish(&Wait::forever()).unwrap();
        });
        // However the commits interleave with the runs, the slots come out
        // once each, in order, and the end comes last.
        let mut next = 0u8;
        loop {
            let run = rx.next_run(&Wait::forever(), 2).unwrap();
            assert_eq!(run.seq(), u64::from(next));
            for k in 0..run.slots() as usize {
                if next < 3 {
                    assert_eq!(run[k * 4096], next);
                }
                next += 1;
            }
            if run.is_end() {
                break;
            }
        }
        assert_eq!(next, 4);
        assert_eq!(rx.next(&Wait::forever()).unwrap_err(), Error::Finished);
        producer.join().unwrap();
    });
}

#[test]
fn releasing_out_of_order_frees_slots_only_in_order() {
    loom::model(|| {
        let seg = two_slot_ring();
        let mut tx = Producer::new(Arc::clone(&seg));
        let mut rx = Consumer::new(seg);
        let producer = loom::thread::spawn(move || {
            for i in 0..3u32 {
                let slot = tx.reserve(&Wait::forever()).unwrap();
                slot.commit(0, FLAG_CRC, i).unwrap();
            }
        });
        let first = rx.next(&Wait::forever()).unwrap();
        let second = rx.next(&Wait::forever()).unwrap();
        // Releasing the second slot must not let the producer reuse the
        // first: the third commit lands only after `first` is dropped.
        drop(second);
        assert_eq!(first.crc(), Some(0));
        drop(first);
        let third = rx.next(&Wait::forever()).unwrap();
        assert_eq!(third.crc(), Some(2));
        drop(third);
        producer.join().unwrap();
    });
}

#[test]
fn a_consumer_waiting_on_a_producer_that_detaches_gets_peer_gone() {
    loom::model(|| {
        let seg = two_slot_ring();
        let mut tx = Producer::new(Arc::clone(&seg));
        let mut rx = Consumer::new(seg);
        let producer = loom::thread::spawn(move || {
            let slot = tx.reserve(&Wait::forever()).unwrap();
            slot.commit(0, FLAG_CRC, 7).unwrap();
            drop(tx);
        });
        // The committed slot is never lost to the detach ...
        assert_eq!(rx.next(&Wait::forever()).unwrap().crc(), Some(7));
        // ... and then the consumer does not hang.
        assert_eq!(rx.next(&Wait::forever()).unwrap_err(), Error::PeerGone);
        producer.join().unwrap();
    });
}

#[test]
fn a_producer_waiting_for_room_on_a_consumer_that_detaches_gets_peer_gone() {
    loom::model(|| {
        let seg = two_slot_ring();
        let mut tx = Producer::new(Arc::clone(&seg));
        let rx = Consumer::new(seg);
        let consumer = loom::thread::spawn(move || drop(rx));
        for _ in 0..2 {
            tx.reserve(&Wait::forever())
                .unwrap()
                .commit(0, 0, 0)
                .unwrap();
        }
        assert_eq!(tx.reserve(&Wait::forever()).unwrap_err(), Error::PeerGone);
        consumer.join().unwrap();
    });
}

#[test]
fn a_batching_consumer_holding_leases_is_woken_by_a_full_ring() {
    loom::model(|| {
        let seg = Arc::new(HeapSegment::new(Geometry::new(4, 4096).unwrap()));
        let mut tx = Producer::new(Arc::clone(&seg));
        let mut rx = Consumer::new(seg);
        // Asks for all four slots; but it holds two leases while it waits
        // for the third, so only two more fit. If the ask ignored the
        // leases, the producer would block on a full ring without waking
        // us, and loom would report the deadlock.
        rx.set_wake_batch(4);
        let producer = loom::thread::spawn(move || {
            for i in 0..4u32 {
                let slot = tx.reserve(&Wait::forever()).unwrap();
                slot.commit(0, FLAG_CRC, i).unwrap();
            }
            tx.finish(&Wait::forever()).unwrap();
        });
        let held = [
            rx.next(&Wait::forever()).unwrap(),
            rx.next(&Wait::forever()).unwrap(),
        ];
        let third = rx.next(&Wait::forever()).unwrap();
        assert_eq!(third.crc(), Some(2));
        drop(held);
        drop(third);
        assert_eq!(rx.next(&Wait::forever()).unwrap().crc(), Some(3));
        assert!(rx.next(&Wait::forever()).unwrap().is_end());
        producer.join().unwrap();
    });
}

#[test]
fn a_batching_producer_on_a_full_ring_is_woken_when_the_batch_is_free() {
    loom::model(|| {
        let seg = Arc::new(HeapSegment::new(Geometry::new(4, 4096).unwrap()));
        let mut tx = Producer::new(Arc::clone(&seg));
        let mut rx = Consumer::new(seg);
        // Waits for two free slots once the ring is full; the consumer
        // frees them one at a time, so only the second release may wake it,
        // and it must.
        tx.set_wake_batch(2);
        let producer = loom::thread::spawn(move || {
            for i in 0..6u32 {
                let slot = tx.reserve(&Wait::forever()).unwrap();
                slot.commit(0, FLAG_CRC, i).unwrap();
            }
        });
        for i in 0..6u32 {
            assert_eq!(rx.next(&Wait::forever()).unwrap().crc(), Some(i));
        }
        producer.join().unwrap();
    });
}

#[test]
fn both_sides_batching_move_every_slot_in_whole_batches() {
    loom::model(|| {
        let seg = Arc::new(HeapSegment::new(Geometry::new(4, 4096).unwrap()));
        let mut tx = Producer::new(Arc::clone(&seg));
        let mut rx = Consumer::new(seg);
        // As in production (client and mover each batch a quarter of the
        // ring; here half of four slots): the producer waits for two free
        // slots, the consumer for two committed ones. With whole batches
        // neither may need its batch timeout (which loom's bell never
        // fires) to make progress.
        tx.set_wake_batch(2);
        rx.set_wake_batch(2);
        let producer = loom::thread::spawn(move || {
            for i in 0..6u32 {
                let slot = tx.reserve(&Wait::forever()).unwrap();
                slot.commit(0, FLAG_CRC, i).unwrap();
            }
        });
        for i in 0..6u32 {
            assert_eq!(rx.next(&Wait::forever()).unwrap().crc(), Some(i));
        }
        producer.join().unwrap();
    });
}

#[test]
fn a_run_reserved_whole_waits_for_room_and_is_seen_in_order() {
    loom::model(|| {
        let seg = Arc::new(HeapSegment::new(Geometry::new(4, 4096).unwrap()));
        let mut tx = Producer::new(Arc::clone(&seg));
        let mut rx = Consumer::new(seg);
        // The restore's direct reads: runs of two slots, each waiting until
        // both are free, committed one by one.
        let producer = loom::thread::spawn(move || {
            for r in 0..3u32 {
                let mut run = tx.reserve_run(&Wait::forever(), 2, 2).unwrap();
                run.commit_slot(0, FLAG_CRC, 2 * r).unwrap();
                run.commit_slot(0, FLAG_CRC, 2 * r + 1).unwrap();
            }
        });
        for i in 0..6u32 {
            assert_eq!(rx.next(&Wait::forever()).unwrap().crc(), Some(i));
        }
        producer.join().unwrap();
    });
}

//! A separate process maps a real segment and writes what an honest peer
//! never would. The Rust side must return `Corrupt` (and keep returning it),
//! never read outside the segment, never panic.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::time::Duration;

use shmover_ring::{Consumer, Corruption, Direction, Error, Geometry, Producer, ShmSegment, Wait};
use shmover_tools::{fdpass::send_fds, ringxfer::spawn_and_accept, workspace_binary};

const SLOTS: u32 = 4;
const SLOT: u32 = 4096;

struct Peer {
    child: Child,
    sock: UnixStream,
}

impl Peer {
    fn start(mode: &str, kind: &str, seg: &ShmSegment) -> Self {
        let exe = workspace_binary("ring-producer").expect("ring-producer is built");
        let (child, sock, _) =
            spawn_and_accept(&exe, &[mode.into(), kind.into()], Duration::from_secs(30))
                .expect("hostile peer starts");
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        send_fds(&sock, &seg.fds()).expect("send fds");
        Self { child, sock }
    }

    /// Waits for the peer's "look now".
    fn await_step(&mut self) {
        let mut b = [0u8; 1];
        self.sock.read_exact(&mut b).expect("hostile peer signals");
    }

    fn next_step(&mut self) {
        self.sock.write_all(b"g").expect("signal hostile peer");
    }

    fn finish(mut self) {
        let _ = self.sock.write_all(b"q");
        let status = self.child.wait().expect("reap hostile peer");
        assert!(status.success(), "hostile peer failed: {status}");
    }
}

fn short() -> Wait<'static> {
    Wait::timeout(Duration::from_millis(500))
}

fn consumer_against(kind: &str) -> (Consumer<ShmSegment>, Peer) {
    let seg = ShmSegment::create(Geometry::new(SLOTS, SLOT).unwrap(), Direction::ToMover).unwrap();
    let peer = Peer::start("hostile", kind, &seg);
    (Consumer::new(seg), peer)
}

#[test]
fn a_head_more_than_a_ring_ahead_is_corrupt() {
    let (mut sut, mut peer) = consumer_against("head-ahead");
    peer.await_step();
    let want = Error::Corrupt(Corruption::HeadTooFarAhead { head: 9, tail: 0 });
    assert_eq!(sut.next(&short()).unwrap_err(), want);
    // Poisoned: the same answer again, without touching the ring.
    assert_eq!(sut.next(&short()).unwrap_err(), want);
    peer.finish();
}

#[test]
fn a_head_that_goes_back_is_corrupt() {
    let (mut sut, mut peer) = consumer_against("head-back");
    peer.await_step();
    for _ in 0..2 {
        assert_eq!(sut.next(&short()).expect("honest slot").len(), 16);
    }
    peer.next_step();
    peer.await_step();
    assert_eq!(
        sut.next(&short()).unwrap_err(),
        Error::Corrupt(Corruption::HeadWentBack { seen: 2, now: 1 })
    );
    peer.finish();
}

#[test]
fn a_length_above_the_slot_size_is_corrupt() {
    let (mut sut, mut peer) = consumer_against("slot-length");
    peer.await_step();
    assert_eq!(
        sut.next(&short()).unwrap_err(),
        Error::Corrupt(Corruption::SlotLength {
            len: SLOT + 1,
            slot_size: SLOT
        })
    );
    peer.finish();
}

#[test]
fn unknown_flags_are_corrupt() {
    let (mut sut, mut peer) = consumer_against("slot-flags");
    peer.await_step();
    assert_eq!(
        sut.next(&short()).unwrap_err(),
        Error::Corrupt(Corruption::SlotFlags(0x80))
    );
    peer.finish();
}

#[test]
fn random_bytes_over_counters_and_descriptors_never_escape_the_segment() {
    for seed in 1..=24 {
        let (mut sut, mut peer) = consumer_against(&format!("scribble:{seed}"));
        peer.await_step();
        let mut outcomes = Vec::new();
        for _ in 0..(2 * SLOTS + 2) {
            match sut.next(&Wait::timeout(Duration::from_millis(20))) {
                Ok(lease) => {
                    assert!(lease.len() <= SLOT as usize, "seed {seed}: lease too long");
                    // Touch every byte: a wild pointer would fault here.
                    let sum: u64 = lease.iter().map(|&b| u64::from(b)).sum();
                    std::hint::black_box(sum);
                    outcomes.push("ok");
                }
                Err(Error::Corrupt(_)) => {
                    outcomes.push("corrupt");
                    break;
                }
                Err(Error::Timeout | Error::Finished | Error::PeerGone) => {
                    outcomes.push("stop");
                    break;
                }
                Err(e) => panic!("seed {seed}: unexpected {e}"),
            }
        }
        // A random 64-bit head is never within a ring of our tail (the seeds
        // are fixed), so every run must end in `Corrupt`, not be accepted.
        assert_eq!(
            outcomes.last(),
            Some(&"corrupt"),
            "seed {seed}: {outcomes:?}"
        );
        peer.finish();
    }
}

fn producer_against(kind: &str) -> (Producer<ShmSegment>, Peer) {
    let seg =
        ShmSegment::create(Geometry::new(SLOTS, SLOT).unwrap(), Direction::FromMover).unwrap();
    let peer = Peer::start("hostile-consumer", kind, &seg);
    (Producer::new(seg), peer)
}

fn fill(sut: &mut Producer<ShmSegment>, n: u32) {
    for _ in 0..n {
        sut.reserve(&short())
            .expect("room")
            .commit(8, 0, 0)
            .expect("commit");
    }
}

#[test]
fn a_tail_ahead_of_the_head_is_corrupt_for_the_producer() {
    let (mut sut, mut peer) = producer_against("tail-ahead");
    peer.await_step();
    fill(&mut sut, SLOTS);
    let want = Error::Corrupt(Corruption::TailAhead { tail: 9, head: 4 });
    assert_eq!(sut.reserve(&short()).unwrap_err(), want);
    assert_eq!(sut.reserve(&short()).unwrap_err(), want);
    peer.finish();
}

#[test]
fn a_tail_that_goes_back_is_corrupt_for_the_producer() {
    let (mut sut, mut peer) = producer_against("tail-back");
    peer.await_step();
    fill(&mut sut, SLOTS + 1); // the fifth fits because the tail said 1
    peer.next_step();
    peer.await_step();
    assert_eq!(
        sut.reserve(&short()).unwrap_err(),
        Error::Corrupt(Corruption::TailWentBack { seen: 1, now: 0 })
    );
    peer.finish();
}

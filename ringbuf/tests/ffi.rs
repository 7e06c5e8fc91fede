//! The producer's C ABI, called as C would call it.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::ptr;

use shmover_ring::ffi::*;
use shmover_ring::{Consumer, Direction, Geometry, ShmSegment, Wait};

fn last_error() -> String {
    // SAFETY: the library returns a valid, NUL-terminated string.
    unsafe { CStr::from_ptr(shmring_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A segment and a producer handle attached to duplicates of its fds.
fn attached(liveness_fd: i32) -> (ShmSegment, *mut ShmringProducer) {
    let seg = ShmSegment::create(Geometry::new(4, 4096).unwrap(), Direction::ToMover).unwrap();
    let [m, d, s] = seg
        .fds()
        .map(|f| f.try_clone_to_owned().unwrap().into_raw_fd());
    let mut p = ptr::null_mut();
    // SAFETY: fresh descriptors handed over; `p` is a valid out pointer.
    let rc = unsafe { shmring_producer_attach(m, d, s, liveness_fd, &mut p) };
    assert_eq!(rc, SHMRING_OK, "{}", last_error());
    (seg, p)
}

#[test]
fn attach_with_a_bad_descriptor_is_invalid_not_a_crash() {
    let mut p = ptr::null_mut();
    // SAFETY: negative fds are rejected before use.
    let rc = unsafe { shmring_producer_attach(-1, -1, -1, -1, &mut p) };
    assert_eq!(rc, SHMRING_ERR_INVALID);
    assert!(p.is_null());
    assert!(last_error().contains("bad argument"));
}

#[test]
fn commit_before_reserve_is_a_call_order_error() {
    let (_seg, p) = attached(-1);
    // SAFETY: a live handle.
    let rc = unsafe { shmring_producer_commit(p, 1, 0, 0) };
    assert_eq!(rc, SHMRING_ERR_ORDER);
    assert!(last_error().contains("out of order"), "{}", last_error());
    // SAFETY: a live handle, detached once.
    unsafe { shmring_producer_detach(p) };
}

#[test]
fn null_handles_and_outputs_are_refused() {
    let (_seg, p) = attached(-1);
    let mut cap = 0usize;
    let mut buf = ptr::null_mut();
    // SAFETY: null arguments are checked before use.
    unsafe {
        assert_eq!(
            shmring_producer_reserve(ptr::null_mut(), 0, &mut buf, &mut cap),
            SHMRING_ERR_INVALID
        );
        assert_eq!(
            shmring_producer_reserve(p, 0, ptr::null_mut(), &mut cap),
            SHMRING_ERR_INVALID
        );
        assert_eq!(
            shmring_producer_commit(ptr::null_mut(), 0, 0, 0),
            SHMRING_ERR_INVALID
        );
        assert_eq!(
            shmring_producer_finish(ptr::null_mut(), 0),
            SHMRING_ERR_INVALID
        );
        assert_eq!(shmring_producer_slot_size(ptr::null()), 0);
        shmring_producer_detach(ptr::null_mut());
        shmring_producer_detach(p);
    }
}

#[test]
fn blocks_written_through_the_c_abi_reach_the_consumer() {
    let (seg, p) = attached(-1);
    let mut rx = Consumer::new(seg);
    let mut buf = ptr::null_mut();
    let mut cap = 0usize;
    // SAFETY: a live handle and valid outputs; the slot is `cap` bytes.
    unsafe {
        assert_eq!(
            shmring_producer_reserve(p, 1000, &mut buf, &mut cap),
            SHMRING_OK
        );
        assert_eq!(cap, 4096);
        ptr::copy_nonoverlapping(b"block".as_ptr(), buf.cast::<u8>(), 5);
        assert_eq!(shmring_producer_commit(p, 5, 0, 0), SHMRING_OK);
        assert_eq!(shmring_producer_commit(p, 5, 0x80, 0), SHMRING_ERR_ORDER);
        assert_eq!(
            shmring_producer_reserve(p, 1000, &mut buf, &mut cap),
            SHMRING_OK
        );
        assert_eq!(shmring_producer_commit(p, 5000, 0, 0), SHMRING_ERR_INVALID);
        assert_eq!(shmring_producer_finish(p, 1000), SHMRING_OK);
        assert_eq!(shmring_producer_finish(p, 1000), SHMRING_ERR_FINISHED);
        shmring_producer_detach(p);
    }
    assert_eq!(&*rx.next(&Wait::forever()).unwrap(), b"block");
    assert!(rx.next(&Wait::forever()).unwrap().is_end());
}

#[test]
fn a_full_ring_whose_control_socket_hangs_up_ends_in_peer_gone() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (seg, p) = attached(ours.as_raw_fd());
    let _rx = Consumer::new(seg); // alive, but never reads
    let mut buf = ptr::null_mut();
    let mut cap = 0usize;
    // SAFETY: a live handle and valid outputs.
    unsafe {
        for _ in 0..4 {
            assert_eq!(
                shmring_producer_reserve(p, 1000, &mut buf, &mut cap),
                SHMRING_OK
            );
            assert_eq!(shmring_producer_commit(p, 1, 0, 0), SHMRING_OK);
        }
        drop(theirs); // the mover's end of the control socket goes away
                      // No deadline: only the liveness check can end this wait.
        assert_eq!(
            shmring_producer_reserve(p, -1, &mut buf, &mut cap),
            SHMRING_ERR_PEER_GONE
        );
        shmring_producer_detach(p);
    }
}

#[test]
fn every_status_has_a_name() {
    for code in 0..=9 {
        // SAFETY: static strings.
        let s = unsafe { CStr::from_ptr(shmring_status_str(code)) };
        assert_ne!(s.to_str().unwrap(), "unknown status", "code {code}");
    }
}

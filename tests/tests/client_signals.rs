//! The client inside a process that receives signals (databases use them):
//! an interrupted wait for the mover is resumed, not reported as a broken
//! connection. In its own test binary, as it sets a process-wide timer.

use std::collections::BTreeMap;

use shmover_client::ClientKind;
use shmover_tests::MoverProcess;

extern "C" fn on_alarm(_: libc::c_int) {}

/// Delivers SIGALRM every `usec` microseconds, with a handler installed
/// without SA_RESTART, so blocking calls return EINTR.
fn alarm_every(usec: libc::suseconds_t) {
    // SAFETY: a zeroed sigaction with a valid handler and no flags; the
    // handler does nothing, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()), 0);
        let t = libc::timeval {
            tv_sec: 0,
            tv_usec: usec,
        };
        let it = libc::itimerval {
            it_interval: t,
            it_value: t,
        };
        assert_eq!(
            libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()),
            0
        );
    }
}

#[test]
fn requests_survive_a_storm_of_signals() {
    let m = MoverProcess::start(&["--store", "memory://"]);
    let mut c = m.client(ClientKind::Generic);
    alarm_every(300);
    for i in 0..200 {
        c.ping().unwrap_or_else(|e| panic!("ping {i}: {e}"));
        c.list("", 0).unwrap_or_else(|e| panic!("list {i}: {e}"));
    }
    c.open_write("under-signals", 64 << 10, 0, &BTreeMap::new())
        .unwrap();
    c.write_all(&vec![5u8; 8 << 20]).unwrap();
    assert_eq!(c.commit().unwrap().size, 8 << 20);
    alarm_every(0);
}

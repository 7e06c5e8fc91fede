//! The client inside a process that receives signals (databases use them):
//! an interrupted wait for the mover is resumed, not reported as a broken
//! connection. In its own test binary, as it installs a process-wide
//! signal handler.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use shmover_client::ClientKind;
use shmover_tests::MoverProcess;

/// Signals the handler has taken.
static DELIVERED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    // An atomic add is async-signal-safe.
    DELIVERED.fetch_add(1, Relaxed);
}

/// SIGALRM sent to one thread every `usec` microseconds, with a handler
/// installed without SA_RESTART, so its blocking calls return EINTR. (A
/// process-wide timer would leave the kernel free to pick any thread, and
/// it prefers the main one, where the test harness waits.)
struct Storm {
    stop: Arc<AtomicBool>,
    sender: Option<std::thread::JoinHandle<()>>,
}

impl Storm {
    fn at_this_thread(usec: u64) -> Storm {
        // SAFETY: a zeroed sigaction with a valid handler and no flags; the
        // handler only adds to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_alarm as *const () as usize;
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()), 0);
        }
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let sender = std::thread::spawn(move || {
            while !flag.load(Relaxed) {
                // SAFETY: `target` is the test thread, which outlives this
                // one (the storm is stopped and joined before it returns).
                unsafe { libc::pthread_kill(target, libc::SIGALRM) };
                std::thread::sleep(std::time::Duration::from_micros(usec));
            }
        });
        Storm {
            stop,
            sender: Some(sender),
        }
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.sender.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn requests_survive_a_storm_of_signals() {
    let m = MoverProcess::start(&["--store", "memory://"]);
    let mut c = m.client(ClientKind::Generic);
    let storm = Storm::at_this_thread(300);
    for i in 0..200 {
        c.ping().unwrap_or_else(|e| panic!("ping {i}: {e}"));
        c.list("", 0).unwrap_or_else(|e| panic!("list {i}: {e}"));
    }
    c.open_write("under-signals", 64 << 10, 0, &BTreeMap::new())
        .unwrap();
    c.write_all(&vec![5u8; 8 << 20]).unwrap();
    assert_eq!(c.commit().unwrap().size, 8 << 20);
    drop(storm);
    // The storm reached this thread: the calls above ran under it.
    assert!(
        DELIVERED.load(Relaxed) > 100,
        "{} signals",
        DELIVERED.load(Relaxed)
    );
}

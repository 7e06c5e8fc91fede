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

/// One test at a time: each counts the signals delivered while it runs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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

#[test]
fn a_silent_mover_times_out_however_often_signals_interrupt_the_wait() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A mover that takes the connection and never answers. Each signal
    // interrupts the client's read; the client used to read again with the
    // socket's whole timeout, so under signals more frequent than the
    // timeout the wait never ended. It must end with TIMEOUT.
    let path = shmover_tools::unique_socket_path("silent");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let silent = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut &s, &mut rest);
    });
    let storm = Storm::at_this_thread(300);
    // A guard against the old behaviour hanging the test: after a minute
    // the storm stops, and the wait ends by its timeout at last.
    let stop = Arc::clone(&storm.stop);
    let guard = std::thread::spawn(move || {
        for _ in 0..600 {
            if stop.load(Relaxed) {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        stop.store(true, Relaxed);
        true
    });
    let before = DELIVERED.load(Relaxed);
    let got = shmover_client::Client::connect(&shmover_client::Options {
        socket: path.clone(),
        timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    });
    let during = DELIVERED.load(Relaxed) - before;
    drop(storm);
    let guard_stopped_it = guard.join().unwrap();
    let Err(err) = got else {
        panic!("a mover that never answers was connected to")
    };
    assert_eq!(err.code, shmover_client::code::TIMEOUT, "{err:?}");
    assert!(
        !guard_stopped_it,
        "the wait ended only once the signals stopped ({during} signals)"
    );
    assert!(during > 0, "no signal arrived during the wait");
    silent.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

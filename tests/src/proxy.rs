//! A TCP proxy on loopback that cuts connections: each connection is cut
//! (both directions shut down at once) after it has carried `cut_after`
//! bytes, until `cuts` connections have been cut; later connections pass
//! untouched. It shows that a transfer survives a broken network path.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

/// A running proxy; it stops accepting when dropped.
#[derive(Debug)]
pub struct CutProxy {
    addr: SocketAddr,
    cut: Arc<AtomicU32>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    /// Proxies to `upstream`, cutting the first `cuts` connections after
    /// `cut_after` bytes each (both directions counted together).
    pub fn start(upstream: SocketAddr, cut_after: u64, cuts: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (Arc::clone(&cut), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(SeqCst) {
                    return;
                }
                let Ok(down) = conn else { continue };
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                let carried = Arc::new(AtomicU64::new(0));
                for (from, to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    let (carried, c) = (Arc::clone(&carried), Arc::clone(&c));
                    std::thread::spawn(move || pump(from, to, &carried, cut_after, &c, cuts));
                }
            }
        });
        Self { addr, cut, stop }
    }

    /// Where to connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u32 {
        self.cut.load(SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` until either side ends, or until the connection
/// has carried `cut_after` bytes (then shuts both sockets down).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    carried: &AtomicU64,
    cut_after: u64,
    cut: &AtomicU32,
    cuts: u32,
) {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let total = carried.fetch_add(n as u64, SeqCst) + n as u64;
        // Exactly one direction sees the connection cross the limit.
        let crossed = total >= cut_after && total - (n as u64) < cut_after;
        if crossed
            && cut
                .fetch_update(SeqCst, SeqCst, |c| (c < cuts).then_some(c + 1))
                .is_ok()
        {
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

//! A TCP proxy on loopback that cuts connections: a connection is cut (both
//! directions shut down at once) when one direction of it has carried
//! `cut_after` bytes. Each direction has its own budget of cuts, so a test
//! knows which transfer is cut however far the other side had acknowledged:
//! uploads travel client to server, restores server to client. Once a
//! direction's budget is spent its connections pass untouched. It shows
//! that a transfer survives a broken network path.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;

/// A running proxy; it stops accepting when dropped.
#[derive(Debug)]
pub struct CutProxy {
    addr: SocketAddr,
    cut: [Arc<AtomicU32>; 2],
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    /// Proxies to `upstream`. A connection is cut once `cut_after` bytes
    /// have gone client to server on it, for the first `up_cuts` such
    /// connections; likewise server to client for `down_cuts`.
    pub fn start(upstream: SocketAddr, cut_after: u64, up_cuts: u32, down_cuts: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let cut = [Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0))];
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (cut.clone(), Arc::clone(&stop));
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
                let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
                    continue;
                };
                for (from, to, c, cuts) in [
                    (down2, up2, Arc::clone(&c[0]), up_cuts),
                    (up, down, Arc::clone(&c[1]), down_cuts),
                ] {
                    std::thread::spawn(move || pump(from, to, cut_after, &c, cuts));
                }
            }
        });
        Self { addr, cut, stop }
    }

    /// Where to connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections cut so far, as (client to server, server to client).
    pub fn cuts(&self) -> (u32, u32) {
        (self.cut[0].load(SeqCst), self.cut[1].load(SeqCst))
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` until either side ends, or until this direction
/// has carried `cut_after` bytes while `cut` is under `cuts` (then shuts
/// both sockets down).
fn pump(mut from: TcpStream, mut to: TcpStream, cut_after: u64, cut: &AtomicU32, cuts: u32) {
    let mut buf = vec![0u8; 256 << 10];
    let mut carried = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        carried += n as u64;
        let crossed = carried >= cut_after && carried - (n as u64) < cut_after;
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

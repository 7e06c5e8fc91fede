//! Who is at the other end of a Unix socket, beyond what `SO_PEERCRED`
//! tells: the supplementary groups, which a service checks against the
//! groups it allows (a database user's backup group is rarely its primary
//! one: Oracle's `backupdba` is a secondary group of `oracle`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `SO_PEERGROUPS` (Linux 4.13): the asm-generic value, which the
/// architectures listed share; elsewhere unknown.
const SO_PEERGROUPS: Option<libc::c_int> = if cfg!(all(
    target_os = "linux",
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
)) {
    Some(59)
} else {
    None
};

/// The supplementary groups the peer of the connected Unix socket `fd`
/// had when it connected, as the kernel recorded them (not read from
/// `/proc`, whose pid another process may have taken since). Where the
/// option is unknown, an `Unsupported` error: callers fall back to the
/// primary group.
pub fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    /// `NGROUPS_MAX` on Linux.
    const MOST: usize = 65_536;
    let Some(option) = SO_PEERGROUPS else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_PEERGROUPS is not known on this platform",
        ));
    };
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = (groups.len() * GID) as libc::socklen_t;
        // SAFETY: `groups` is valid for writes of `len` bytes and `len` is a
        // live socklen_t; the kernel writes at most `len` bytes and stores
        // the length it wrote (or, with ERANGE, the length it needs).
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let len = len as usize;
        if rc == 0 {
            groups.truncate(len.min(groups.len() * GID) / GID);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        let need = len.div_ceil(GID);
        if err.raw_os_error() == Some(libc::ERANGE) && need > groups.len() && need <= MOST {
            groups.resize(need, 0);
            continue;
        }
        return Err(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_peer_of_a_socket_pair_has_this_process_groups() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut got = peer_groups(a.as_fd()).unwrap();
        let mut want: Vec<u32> = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .unwrap()
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}

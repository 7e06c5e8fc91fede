//! Where things live by default, shared by the mover and its clients.
//!
//! - data dir: `$XDG_DATA_HOME/shmover`, else `$HOME/.local/share/shmover`,
//!   else `/var/lib/shmover` (a service user without a home);
//! - socket: `$MOVER_SOCKET`, else `<data dir>/run/mover.sock`;
//! - store: `file://<data dir>/store`.

use std::path::PathBuf;

/// The per-user default data directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("shmover");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/shmover");
    }
    PathBuf::from("/var/lib/shmover")
}

/// The socket under a data directory.
pub fn socket_in(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("run").join("mover.sock")
}

/// The socket a client uses when given none: `$MOVER_SOCKET`, else the
/// default data directory's.
pub fn default_socket() -> PathBuf {
    match std::env::var_os("MOVER_SOCKET").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => socket_in(&default_data_dir()),
    }
}

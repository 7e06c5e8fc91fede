//! The mover's configuration: one TOML file, every key overridable by an
//! environment variable and a flag (flag > environment > file > default).
//!
//! | key | flag | environment | default |
//! |---|---|---|---|
//! | `data_dir` | `--data-dir` | `MOVER_DATA_DIR` | `$XDG_DATA_HOME/shmover` or `~/.local/share/shmover` |
//! | `socket` | `--socket` | `MOVER_SOCKET` | `<data_dir>/run/mover.sock` |
//! | `store` | `--store` | `MOVER_STORE` | `file://<data_dir>/store` |
//! | `allow_uids` | `--allow-uids` | `MOVER_ALLOW_UIDS` | the mover's own uid and root |
//! | `allow_gids` | `--allow-gids` | `MOVER_ALLOW_GIDS` | none |
//! | `memory_limit` | `--memory-limit` | `MOVER_MEMORY_LIMIT` | 1 GiB |
//! | `slot_size` | `--slot-size` | `MOVER_SLOT_SIZE` | 1 MiB (restores; backups use the client's block size) |
//! | `ring_size` | `--ring-size` | `MOVER_RING_SIZE` | 64 MiB per stream |
//! | `ring_memory` | `--ring-memory` | `MOVER_RING_MEMORY` | 512 MiB for all rings together |
//! | `part_size` | `--part-size` | `MOVER_PART_SIZE` | 16 MiB, doubling every 1,000 parts |
//! | `max_inflight_parts` | `--max-inflight-parts` | `MOVER_MAX_INFLIGHT_PARTS` | 4 |
//! | `max_streams` | `--max-streams` | `MOVER_MAX_STREAMS` | 256 |
//! | `max_connections` | `--max-connections` | `MOVER_MAX_CONNECTIONS` | 1024 |
//! | `catalog_cache` | `--catalog-cache` | `MOVER_CATALOG_CACHE` | 32 MiB of manifests kept for listings (0: none) |
//! | `metrics_listen` | `--metrics-listen` | `MOVER_METRICS_LISTEN` | off |
//! | `log` | `--log` | `MOVER_LOG` | `info` |
//! | `retry_max` | | `MOVER_RETRY_MAX` | 25 |
//! | `retry_deadline_secs` | | `MOVER_RETRY_DEADLINE_SECS` | 180 |
//! | `hello_timeout_secs` | | `MOVER_HELLO_TIMEOUT_SECS` | 10 (a connection that sends no Hello in this time is closed) |
//! | `direct_io` | | `MOVER_DIRECT_IO` | true (a `file://` store writes backups, and reads restores into the rings, with `O_DIRECT`, past the page cache) |
//! | `peer_listen` | `--peer-listen` | `MOVER_PEER_LISTEN` | off (serve the peer gRPC service on this address) |
//! | `forward` | `--forward` | `MOVER_FORWARD` | none (peer URLs; when set, the mover keeps nothing itself and forwards to the first healthy peer) |
//! | `tls_cert`, `tls_key` | `--tls-cert`, `--tls-key` | `MOVER_TLS_CERT`, `MOVER_TLS_KEY` | none (PEM: the peer port's identity, and the client identity towards peers) |
//! | `tls_ca` | `--tls-ca` | `MOVER_TLS_CA` | none (PEM: the CA that signs peer certificates; on the peer port it requires client certificates) |
//! | `token_file` | `--token-file` | `MOVER_TOKEN_FILE` | none (a bearer token: required from peers, sent to peers) |
//! | `insecure_plaintext` | `--insecure-plaintext` | `MOVER_INSECURE_PLAINTEXT` | false (allow peer traffic without TLS) |
//! | `peer_timeout_secs` | `--peer-timeout` | `MOVER_PEER_TIMEOUT` | 30 (how long a peer may stay unreachable before an object fails) |
//! | `peer_stall_secs` | `--peer-stall` | `MOVER_PEER_STALL` | 120 (how long a reachable peer may leave a request unanswered: a call's reply, a read's next chunk, the acknowledgement of a part sent, before the object fails and the peer is passed over) |
//! | `[s3]` `endpoint`, `region`, `access_key_id`, `secret_access_key`, `session_token`, `allow_http` | | the usual `AWS_*` | from the environment |

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

/// What the TOML file may say. Unknown keys are an error, so typos show.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub store: Option<String>,
    pub allow_uids: Option<Vec<u32>>,
    pub allow_gids: Option<Vec<u32>>,
    pub memory_limit: Option<u64>,
    pub slot_size: Option<u64>,
    pub ring_size: Option<u64>,
    pub ring_memory: Option<u64>,
    pub part_size: Option<u64>,
    pub max_inflight_parts: Option<usize>,
    pub max_streams: Option<usize>,
    pub max_connections: Option<usize>,
    pub catalog_cache: Option<u64>,
    pub metrics_listen: Option<String>,
    pub log: Option<String>,
    pub retry_max: Option<usize>,
    pub retry_deadline_secs: Option<u64>,
    pub hello_timeout_secs: Option<u64>,
    pub direct_io: Option<bool>,
    pub s3: Option<S3Config>,
    pub peer_listen: Option<String>,
    pub forward: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub insecure_plaintext: Option<bool>,
    pub peer_timeout_secs: Option<u64>,
    pub peer_stall_secs: Option<u64>,
}

/// S3 settings; anything unset comes from the `AWS_*` environment.
#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub allow_http: Option<bool>,
}

/// Secrets never reach a log line, even through `{:?}`.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "(hidden)");
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Flags and environment of `mover serve` (clap fills both).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "MOVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the default socket and store.
    #[arg(long, env = "MOVER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Control socket path.
    #[arg(long, env = "MOVER_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Store URL: file:///dir, memory://, s3://bucket/prefix.
    #[arg(long, env = "MOVER_STORE")]
    pub store: Option<String>,
    /// Peer uids allowed to connect (comma separated).
    #[arg(long, env = "MOVER_ALLOW_UIDS", value_delimiter = ',')]
    pub allow_uids: Option<Vec<u32>>,
    /// Peer gids allowed to connect (comma separated).
    #[arg(long, env = "MOVER_ALLOW_GIDS", value_delimiter = ',')]
    pub allow_gids: Option<Vec<u32>>,
    /// Bytes of in-flight data allowed outside the rings (e.g. 1G).
    #[arg(long, env = "MOVER_MEMORY_LIMIT", value_parser = parse_size)]
    pub memory_limit: Option<u64>,
    /// Slot size of restore rings (e.g. 1M).
    #[arg(long, env = "MOVER_SLOT_SIZE", value_parser = parse_size)]
    pub slot_size: Option<u64>,
    /// Shared memory per stream ring (e.g. 64M).
    #[arg(long, env = "MOVER_RING_SIZE", value_parser = parse_size)]
    pub ring_size: Option<u64>,
    /// Shared memory for all rings together (e.g. 512M): with many streams
    /// open, each ring is smaller than ring_size.
    #[arg(long, env = "MOVER_RING_MEMORY", value_parser = parse_size)]
    pub ring_memory: Option<u64>,
    /// First multipart part size (e.g. 16M).
    #[arg(long, env = "MOVER_PART_SIZE", value_parser = parse_size)]
    pub part_size: Option<u64>,
    /// Parts uploaded at once per stream.
    #[arg(long, env = "MOVER_MAX_INFLIGHT_PARTS")]
    pub max_inflight_parts: Option<usize>,
    /// Streams open at once, all clients together; more are refused.
    #[arg(long, env = "MOVER_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Connections open at once, all clients together; more are answered
    /// with an error and closed.
    #[arg(long, env = "MOVER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Bytes of parsed manifests kept between listings (e.g. 32M; 0 keeps
    /// none), so a listing reads from the store only the manifests it has
    /// not seen.
    #[arg(long, env = "MOVER_CATALOG_CACHE", value_parser = parse_size)]
    pub catalog_cache: Option<u64>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9187).
    #[arg(long, env = "MOVER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Log filter (tracing's EnvFilter syntax), e.g. info or shmover_mover=debug.
    #[arg(long, env = "MOVER_LOG")]
    pub log: Option<String>,
    /// Serve the peer gRPC service on this address (e.g. 0.0.0.0:7443).
    #[arg(long, env = "MOVER_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    /// Forward to these peer movers (https://host:port, comma separated)
    /// instead of keeping objects in a store of our own.
    #[arg(long, env = "MOVER_FORWARD", value_delimiter = ',')]
    pub forward: Option<Vec<String>>,
    /// PEM certificate chain of this mover on the peer port (and towards
    /// peers, for mTLS).
    #[arg(long, env = "MOVER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "MOVER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA of the peers: verifies peer servers, and on --peer-listen
    /// requires client certificates signed by it.
    #[arg(long, env = "MOVER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// File holding the bearer token peers must present (and that this
    /// mover presents to peers).
    #[arg(long, env = "MOVER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Allow peer traffic without TLS (loopback tests, benchmarks).
    #[arg(long, env = "MOVER_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// Seconds a peer may stay unreachable before the object fails.
    #[arg(long, env = "MOVER_PEER_TIMEOUT")]
    pub peer_timeout: Option<u64>,
    /// Seconds a reachable peer may leave a request unanswered (its store
    /// hung) before the object fails and the peer is passed over.
    #[arg(long, env = "MOVER_PEER_STALL")]
    pub peer_stall: Option<u64>,
}

/// The `store` of a forwarding mover: this prefix, then the peer URLs.
pub const FORWARD_SCHEME: &str = "forward:";

/// The peer settings, resolved and checked.
#[derive(Debug, Clone, Default)]
pub struct PeerConfig {
    pub listen: Option<std::net::SocketAddr>,
    pub forward: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// The token itself, read from `token_file` (never logged).
    pub token: Option<Secret>,
    pub timeout: Duration,
    /// How long a reachable peer may leave a request unanswered.
    pub stall: Duration,
}

/// A string that `{:?}` does not print.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(hidden)")
    }
}

impl PeerConfig {
    fn resolve(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let listen = match args.peer_listen.clone().or(file.peer_listen.clone()) {
            Some(a) => Some(a.parse().with_context(|| format!("peer address {a:?}"))?),
            None => None,
        };
        let forward: Vec<String> = args
            .forward
            .clone()
            .or(file.forward.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        let pick = |a: &Option<PathBuf>, f: &Option<PathBuf>| a.clone().or(f.clone());
        let tls_cert = pick(&args.tls_cert, &file.tls_cert);
        let tls_key = pick(&args.tls_key, &file.tls_key);
        let tls_ca = pick(&args.tls_ca, &file.tls_ca);
        let token = match pick(&args.token_file, &file.token_file) {
            Some(p) => Some(Secret(read_token(&p)?)),
            None => None,
        };
        let insecure_plaintext = args.insecure_plaintext || file.insecure_plaintext == Some(true);
        let timeout = Duration::from_secs(
            args.peer_timeout
                .or(file.peer_timeout_secs)
                .unwrap_or(30)
                .max(1),
        );
        let stall = Duration::from_secs(
            args.peer_stall
                .or(file.peer_stall_secs)
                .unwrap_or(120)
                .max(1),
        );
        if tls_cert.is_some() != tls_key.is_some() {
            bail!("tls_cert and tls_key go together: give both or neither");
        }
        if let Some(key) = &tls_key {
            refuse_readable_by_all(key, "TLS private key")?;
        }
        if listen.is_some() {
            if tls_cert.is_none() && !insecure_plaintext {
                bail!(
                    "the peer port needs TLS: give --tls-cert and --tls-key \
                     (or --insecure-plaintext, for tests on loopback only)"
                );
            }
            let mtls = tls_ca.is_some() && tls_cert.is_some();
            if token.is_none() && !mtls {
                bail!(
                    "the peer port needs authentication: --token-file, or --tls-ca \
                     with --tls-cert/--tls-key for client certificates"
                );
            }
        }
        for url in &forward {
            match url.split_once("://").map(|(s, _)| s) {
                Some("https") => {}
                Some("http") if insecure_plaintext => {}
                Some("http") => bail!(
                    "peer {url} is plaintext: use https:// (or --insecure-plaintext, \
                     for tests on loopback only)"
                ),
                _ => bail!("peer {url:?} is not an https:// URL"),
            }
        }
        Ok(Self {
            listen,
            forward,
            tls_cert,
            tls_key,
            tls_ca,
            token,
            timeout,
            stall,
        })
    }
}

/// Reads a bearer token: one line, not empty, not readable by others.
fn read_token(path: &Path) -> anyhow::Result<String> {
    refuse_readable_by_all(path, "token file")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!(
            "token file {} must hold one token on one line",
            path.display()
        );
    }
    Ok(token.to_string())
}

pub use shmover_client::units::parse_size;

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub store: String,
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
    pub memory_limit: u64,
    pub slot_size: u32,
    pub ring_size: u64,
    pub ring_memory: u64,
    pub part_size: u64,
    pub max_inflight_parts: usize,
    pub max_streams: usize,
    pub max_connections: usize,
    pub catalog_cache: u64,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub log: String,
    pub retry_max: usize,
    pub retry_deadline: Duration,
    /// How long a new connection may take to send its Hello.
    pub hello_timeout: Duration,
    pub direct_io: bool,
    pub s3: S3Config,
    pub peer: PeerConfig,
}

fn env_parse<T: std::str::FromStr>(key: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{key}={v:?} is not valid")),
        _ => Ok(None),
    }
}

impl Config {
    /// Merges flags (with their environment variables), the file and the
    /// defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let peer = PeerConfig::resolve(args, &file)?;
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(shmover_client::paths::default_data_dir);
        let socket = args
            .socket
            .clone()
            .or(file.socket)
            .unwrap_or_else(|| shmover_client::paths::socket_in(&data_dir));
        let store = match (args.store.clone().or(file.store), peer.forward.is_empty()) {
            (Some(_), false) => bail!(
                "store and forward exclude each other: a forwarding mover keeps its \
                 objects on its peers"
            ),
            (Some(s), true) => s,
            (None, true) => format!("file://{}", data_dir.join("store").display()),
            (None, false) => format!("{FORWARD_SCHEME}{}", peer.forward.join(",")),
        };
        let own_uid = nix::unistd::getuid().as_raw();
        let mut allow_uids = args
            .allow_uids
            .clone()
            .or(file.allow_uids)
            .unwrap_or_else(|| vec![own_uid, 0]);
        allow_uids.sort_unstable();
        allow_uids.dedup();
        let allow_gids = args
            .allow_gids
            .clone()
            .or(file.allow_gids)
            .unwrap_or_default();
        let memory_limit = args.memory_limit.or(file.memory_limit).unwrap_or(1 << 30);
        let slot_size = args.slot_size.or(file.slot_size).unwrap_or(1 << 20);
        let ring_size = args.ring_size.or(file.ring_size).unwrap_or(64 << 20);
        let ring_memory = args.ring_memory.or(file.ring_memory).unwrap_or(512 << 20);
        let part_size = args.part_size.or(file.part_size).unwrap_or(16 << 20);
        let max_inflight_parts = args
            .max_inflight_parts
            .or(file.max_inflight_parts)
            .unwrap_or(4);
        let max_streams = args.max_streams.or(file.max_streams).unwrap_or(256).max(1);
        let max_connections = args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(1024)
            .max(1);
        let catalog_cache = args
            .catalog_cache
            .or(file.catalog_cache)
            .unwrap_or(32 << 20);
        let metrics_listen = match args.metrics_listen.clone().or(file.metrics_listen) {
            Some(a) => Some(
                a.parse()
                    .with_context(|| format!("metrics address {a:?}"))?,
            ),
            None => None,
        };
        let log = args
            .log
            .clone()
            .or(file.log)
            .unwrap_or_else(|| "info".into());
        let retry_max = env_parse("MOVER_RETRY_MAX")?
            .or(file.retry_max)
            .unwrap_or(25);
        let retry_deadline = Duration::from_secs(
            env_parse("MOVER_RETRY_DEADLINE_SECS")?
                .or(file.retry_deadline_secs)
                .unwrap_or(180),
        );
        let hello_timeout = Duration::from_secs(
            env_parse("MOVER_HELLO_TIMEOUT_SECS")?
                .or(file.hello_timeout_secs)
                .unwrap_or(10)
                .max(1),
        );
        let direct_io = env_parse("MOVER_DIRECT_IO")?
            .or(file.direct_io)
            .unwrap_or(true);
        if slot_size == 0
            || !slot_size.is_multiple_of(4096)
            || slot_size > u64::from(shmover_ring::MAX_SLOT_SIZE)
        {
            bail!("slot_size {slot_size} must be a multiple of 4096 up to 64 MiB");
        }
        if ring_size < 2 * slot_size {
            bail!("ring_size {ring_size} must hold at least two slots of {slot_size}");
        }
        if ring_size > shmover_ring::MAX_RING_BYTES {
            // Every client maps its ring whole and refuses a larger one.
            bail!(
                "ring_size {ring_size} is over the limit of {} bytes per ring",
                shmover_ring::MAX_RING_BYTES
            );
        }
        if part_size < 5 << 20 {
            bail!("part_size {part_size} is below the 5 MiB minimum of S3 multipart uploads");
        }
        if max_inflight_parts == 0 {
            bail!("max_inflight_parts must be at least 1");
        }
        if memory_limit < part_size {
            bail!("memory_limit {memory_limit} must hold at least one part of {part_size}");
        }
        Ok(Self {
            peer,
            data_dir,
            socket,
            store,
            allow_uids,
            allow_gids,
            memory_limit,
            slot_size: slot_size as u32,
            ring_size,
            ring_memory,
            part_size,
            max_inflight_parts,
            max_streams,
            max_connections,
            catalog_cache,
            metrics_listen,
            log,
            retry_max,
            retry_deadline,
            hello_timeout,
            direct_io,
            s3: file.s3.unwrap_or_default(),
        })
    }
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
    let secrets = file
        .s3
        .as_ref()
        .is_some_and(|s| s.secret_access_key.is_some() || s.session_token.is_some());
    if secrets {
        refuse_readable_by_all(path, "config file holding S3 secrets")?;
    }
    Ok(file)
}

/// Fails if every user may read `path` (a secret's file).
fn refuse_readable_by_all(path: &Path, what: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        bail!(
            "{what} {} is readable by every user; chmod 600 it",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("mover-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mover.toml");
        std::fs::write(
            &file,
            "store = \"memory://\"\npart_size = 8388608\nsocket = \"/tmp/from-file.sock\"\n[s3]\nregion = \"eu-west-1\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            socket: Some("/tmp/from-flag.sock".into()),
            data_dir: Some(dir.clone()),
            ..Default::default()
        };
        let sut = Config::resolve(&args).unwrap();
        assert_eq!(sut.socket, PathBuf::from("/tmp/from-flag.sock"));
        assert_eq!(sut.store, "memory://");
        assert_eq!(sut.part_size, 8 << 20);
        assert_eq!(sut.s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(sut.ring_size, 64 << 20);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_readable_by_every_user_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let chmod = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        // A config file with an S3 secret: refused at 0644, taken at 0600;
        // one without secrets may be read by all.
        let file = dir.path().join("mover.toml");
        std::fs::write(&file, "[s3]\nsecret_access_key = \"very-secret\"\n").unwrap();
        chmod(&file, 0o644);
        let args = |config: &Path| ServeArgs {
            config: Some(config.to_path_buf()),
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let err = Config::resolve(&args(&file)).unwrap_err().to_string();
        assert!(
            err.contains("holding S3 secrets") && err.contains("readable by every user"),
            "{err}"
        );
        chmod(&file, 0o600);
        Config::resolve(&args(&file)).unwrap();
        let plain = dir.path().join("plain.toml");
        std::fs::write(&plain, "[s3]\nregion = \"eu-west-1\"\n").unwrap();
        chmod(&plain, 0o644);
        Config::resolve(&args(&plain)).unwrap();
        // A token file and a TLS key, the same.
        let token = dir.path().join("token");
        std::fs::write(&token, "t0ken\n").unwrap();
        chmod(&token, 0o644);
        let err = read_token(&token).unwrap_err().to_string();
        assert!(
            err.contains("token file") && err.contains("readable by every user"),
            "{err}"
        );
        chmod(&token, 0o600);
        assert_eq!(read_token(&token).unwrap(), "t0ken");
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "not checked here").unwrap();
        chmod(&key, 0o644);
        let with_key = ServeArgs {
            tls_cert: Some(dir.path().join("cert.pem")),
            tls_key: Some(key.clone()),
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let err = Config::resolve(&with_key).unwrap_err().to_string();
        assert!(
            err.contains("TLS private key") && err.contains("readable by every user"),
            "{err}"
        );
    }

    #[test]
    fn s3_secrets_do_not_appear_in_debug_output() {
        let c = S3Config {
            secret_access_key: Some("very-secret-key".into()),
            session_token: Some("very-secret-token".into()),
            access_key_id: Some("AKIDEXAMPLE".into()),
            ..Default::default()
        };
        let text = format!("{c:?}");
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("AKIDEXAMPLE"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error() {
        let dir = std::env::temp_dir().join(format!("mover-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mover.toml");
        std::fs::write(&file, "stroe = \"memory://\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        let err = format!("{:#}", Config::resolve(&args).unwrap_err());
        assert!(err.contains("stroe"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ring_size_over_a_gibibyte_is_refused() {
        let args = ServeArgs {
            data_dir: Some("/srv/shmover".into()),
            ring_size: Some(2 << 30),
            ..Default::default()
        };
        let err = format!("{:#}", Config::resolve(&args).unwrap_err());
        assert!(
            err.contains("ring_size 2147483648 is over the limit"),
            "{err}"
        );
        let args = ServeArgs {
            ring_size: Some(1 << 30),
            ..args
        };
        assert_eq!(Config::resolve(&args).unwrap().ring_size, 1 << 30);
    }

    #[test]
    fn the_default_store_lives_under_the_data_dir() {
        let args = ServeArgs {
            data_dir: Some("/srv/shmover".into()),
            ..Default::default()
        };
        let sut = Config::resolve(&args).unwrap();
        assert_eq!(sut.store, "file:///srv/shmover/store");
        assert_eq!(sut.socket, PathBuf::from("/srv/shmover/run/mover.sock"));
        assert!(sut.allow_uids.contains(&0));
    }
}

//! An S3-compatible server on loopback, in-process, for tests.
//!
//! [`S3Server::start`] serves `s3s-fs` (an S3 server over a directory) on
//! `127.0.0.1:<free port>` from a tokio runtime on a background thread, with
//! static SigV4 credentials and one bucket already created. Nothing is
//! installed or downloaded at run time. Dropping the server stops it and
//! removes its directory.
//!
//! What `s3s-fs` 0.14 serves, as `object_store` uses it: PutObject (with
//! `If-None-Match: *`, so `PutMode::Create` works), GetObject (with ranges),
//! HeadObject, DeleteObject and DeleteObjects, ListObjectsV2 (prefix,
//! delimiter, continuation), multipart uploads, and CopyObject. The
//! conditional checks are check-then-write, not atomic against a racing
//! writer of the same key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use std::{fs, io};

use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use crate::http::HttpThread;

/// The bucket every server starts with.
pub const BUCKET: &str = "shmover-test";
/// The region clients should sign for (the server accepts any).
pub const REGION: &str = "us-east-1";
/// The static access key the server accepts.
pub const ACCESS_KEY_ID: &str = "shmover-test-access-key";
/// The static secret key the server accepts.
pub const SECRET_ACCESS_KEY: &str = "shmover-test-secret-key";

/// A running S3-compatible server on loopback; stopped, and its directory
/// removed, on drop.
#[derive(Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:PORT`, path-style (no virtual-hosted buckets).
    pub endpoint: String,
    /// The bucket that exists from the start.
    pub bucket: String,
    /// The region to sign requests for.
    pub region: String,
    /// The only access key the server accepts.
    pub access_key_id: String,
    /// The secret key for `access_key_id`.
    pub secret_access_key: String,
    root: PathBuf,
    /// Taken (stopped) on drop before the directory is removed.
    server: Option<HttpThread>,
}

impl S3Server {
    /// Starts a server over a new temporary directory, with the bucket
    /// [`BUCKET`] created. It accepts connections as soon as this returns.
    pub fn start() -> io::Result<S3Server> {
        let root = unique_temp_dir()?;
        match Self::start_in(root.clone()) {
            Ok(server) => Ok(server),
            Err(e) => {
                let _ = fs::remove_dir_all(&root);
                Err(e)
            }
        }
    }

    fn start_in(root: PathBuf) -> io::Result<S3Server> {
        // An s3s-fs bucket is a directory under its root.
        fs::create_dir(root.join(BUCKET))?;
        let fs = s3s_fs::FileSystem::new(&root)
            .map_err(|e| io::Error::other(format!("s3s-fs over {}: {e:?}", root.display())))?;
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY_ID, SECRET_ACCESS_KEY));
            b.build()
        };

        let server = HttpThread::start("s3-server", service)?;
        Ok(S3Server {
            endpoint: format!("http://{}", server.addr()),
            bucket: BUCKET.to_owned(),
            region: REGION.to_owned(),
            access_key_id: ACCESS_KEY_ID.to_owned(),
            secret_access_key: SECRET_ACCESS_KEY.to_owned(),
            root,
            server: Some(server),
        })
    }

    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").addr()
    }

    /// The directory the server stores everything in (removed on drop).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the bucket's objects: object `a/b` is the file
    /// `bucket_dir()/a/b`. Tests may read or damage objects through it.
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.join(&self.bucket)
    }

    /// `s3://BUCKET/PREFIX` (or `s3://BUCKET` for an empty prefix), as given
    /// to `mover serve --store`.
    pub fn store_url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        }
    }

    /// The `AWS_*` variables that point an S3 client (the AWS SDKs,
    /// `object_store`'s `AmazonS3Builder::from_env`) at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_REGION", self.region.as_str()),
            ("AWS_DEFAULT_REGION", self.region.as_str()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Points a child process at this server: removes every `AWS_*`
    /// variable it would inherit (a developer's profile or session token
    /// must not leak in) and sets [`S3Server::env`].
    pub fn configure<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A new, empty directory under the system's temporary directory.
fn unique_temp_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("shmover-s3-{}-{n}-{nanos:08x}", std::process::id()));
        match fs::create_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            r => return r.map(|()| dir),
        }
    }
}

//! The test S3 server (`shmover_tests::S3Server`) is a real S3 endpoint for
//! `object_store`, the client the mover uses: objects round-trip, multipart
//! uploads assemble in order, listing honours prefixes and delimiters,
//! deletes stick, missing keys are `NotFound`, create-only puts are
//! refused on existing keys, and credentials are checked.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig,
};
use shmover_tests::S3Server;

const MIB: usize = 1 << 20;

/// Few, quick retries: a broken server fails the test in seconds.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
    }
}

fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(60))
}

fn client_with_secret(server: &S3Server, secret: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        // First: ClientOptions replaces every client setting, allow_http too.
        .with_client_options(client_options())
        .with_endpoint(&server.endpoint)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_bucket_name(&server.bucket)
        .with_region(&server.region)
        .with_access_key_id(&server.access_key_id)
        .with_secret_access_key(secret)
        .with_retry(retry())
        .build()
        .expect("the S3 client builds")
}

fn client(server: &S3Server) -> AmazonS3 {
    client_with_secret(server, &server.secret_access_key)
}

/// Held for reading while a test starts a server (which binds a port), and
/// for writing by the test that checks a dropped server's port refuses
/// connections: no other server here may be handed that port meanwhile.
static PORTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn start() -> S3Server {
    let _bind = PORTS.read().unwrap_or_else(|e| e.into_inner());
    S3Server::start().expect("the S3 server starts")
}

/// `len` bytes that differ from part to part and from offset to offset, so
/// a part stored twice, dropped or out of order cannot go unnoticed.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

async fn keys_under(store: &AmazonS3, prefix: &str) -> BTreeSet<String> {
    store
        .list(Some(&Path::from(prefix)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("listing succeeds")
}

#[tokio::test]
async fn a_small_object_put_is_read_back_byte_for_byte() {
    let server = start();
    let store = client(&server);
    let path = Path::from("backups/db1/small.bin");
    let body = b"one small backup block".to_vec();

    store
        .put(&path, PutPayload::from(body.clone()))
        .await
        .expect("put succeeds");

    let got = store.get(&path).await.expect("get succeeds");
    assert_eq!(got.meta.size, body.len() as u64);
    assert_eq!(got.bytes().await.expect("body is read"), body);
    assert_eq!(
        std::fs::read(server.bucket_dir().join("backups/db1/small.bin")).unwrap(),
        body,
        "the object is the file at its key under the bucket directory"
    );
}

#[tokio::test]
async fn a_multipart_upload_of_three_5_mib_parts_and_a_short_tail_reads_back_intact() {
    let server = start();
    let store = client(&server);
    let path = Path::from("backups/db1/large.bin");
    let parts: Vec<Vec<u8>> = vec![
        pattern(1, 5 * MIB),
        pattern(2, 5 * MIB),
        pattern(3, 5 * MIB + 4096),
        pattern(4, 12_345),
    ];

    let mut upload = store
        .put_multipart(&path)
        .await
        .expect("the multipart upload is created");
    for part in &parts {
        upload
            .put_part(PutPayload::from(part.clone()))
            .await
            .expect("the part is uploaded");
    }
    upload.complete().await.expect("the upload completes");

    let expected = parts.concat();
    let meta = store.head(&path).await.expect("head succeeds");
    assert_eq!(meta.size, expected.len() as u64);
    let got = store
        .get(&path)
        .await
        .expect("get succeeds")
        .bytes()
        .await
        .expect("body is read");
    assert!(got == expected, "the object is the parts in order");

    let range = store
        .get_range(&path, (5 * MIB as u64 - 10)..(5 * MIB as u64 + 10))
        .await
        .expect("a ranged get across a part boundary succeeds");
    assert_eq!(range, expected[5 * MIB - 10..5 * MIB + 10]);
}

#[tokio::test]
async fn an_aborted_multipart_upload_leaves_no_object() {
    let server = start();
    let store = client(&server);
    let path = Path::from("backups/db1/aborted.bin");

    let mut upload = store.put_multipart(&path).await.expect("created");
    upload
        .put_part(PutPayload::from(pattern(9, 5 * MIB)))
        .await
        .expect("the part is uploaded");
    upload.abort().await.expect("the upload aborts");

    let err = store.head(&path).await.expect_err("nothing was stored");
    assert!(
        matches!(err, object_store::Error::NotFound { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn listing_by_prefix_returns_exactly_the_keys_under_it() {
    let server = start();
    let store = client(&server);
    for key in ["db1/a", "db1/b", "db1/sub/c", "db10/x", "db2/y"] {
        store
            .put(&Path::from(key), PutPayload::from(key.as_bytes().to_vec()))
            .await
            .expect("put succeeds");
    }

    assert_eq!(
        keys_under(&store, "db1").await,
        BTreeSet::from(["db1/a".into(), "db1/b".into(), "db1/sub/c".into()]),
        "object_store prefixes are whole path segments: db10/ is not under db1"
    );

    let listed = store
        .list_with_delimiter(Some(&Path::from("db1")))
        .await
        .expect("delimited listing succeeds");
    let objects: Vec<String> = listed
        .objects
        .iter()
        .map(|m| m.location.to_string())
        .collect();
    let dirs: Vec<String> = listed
        .common_prefixes
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(objects, ["db1/a", "db1/b"]);
    assert_eq!(dirs, ["db1/sub"]);
    let sizes: Vec<u64> = listed.objects.iter().map(|m| m.size).collect();
    assert_eq!(sizes, [5, 5]);
}

#[tokio::test]
async fn listing_pages_through_more_keys_than_one_response_holds() {
    let server = start();
    let store = client(&server);
    // ListObjectsV2 returns at most 1000 keys a page: 1003 need two pages.
    let expected: BTreeSet<String> = (0..1003).map(|i| format!("many/{i:04}")).collect();
    // Written straight into the bucket directory: 1003 PUTs would be slow.
    std::fs::create_dir(server.bucket_dir().join("many")).unwrap();
    for key in &expected {
        std::fs::write(server.bucket_dir().join(key), b"x").unwrap();
    }

    assert_eq!(keys_under(&store, "many").await, expected);
}

#[tokio::test]
async fn a_deleted_object_is_gone_and_deleting_it_again_succeeds() {
    let server = start();
    let store = client(&server);
    let doomed = Path::from("db1/doomed");
    let kept = Path::from("db1/kept");
    store
        .put(&doomed, PutPayload::from_static(b"x"))
        .await
        .unwrap();
    store
        .put(&kept, PutPayload::from_static(b"y"))
        .await
        .unwrap();

    store.delete(&doomed).await.expect("delete succeeds");

    let err = store.get(&doomed).await.expect_err("the object is gone");
    assert!(
        matches!(err, object_store::Error::NotFound { .. }),
        "{err:?}"
    );
    assert_eq!(
        keys_under(&store, "db1").await,
        BTreeSet::from(["db1/kept".into()])
    );
    // S3's DeleteObject is idempotent.
    store
        .delete(&doomed)
        .await
        .expect("deleting a missing key succeeds");
}

#[tokio::test]
async fn a_bulk_delete_removes_every_listed_key() {
    let server = start();
    let store = client(&server);
    for key in ["bulk/1", "bulk/2", "bulk/3"] {
        store
            .put(&Path::from(key), PutPayload::from_static(b"z"))
            .await
            .unwrap();
    }

    // delete_stream sends DeleteObjects (POST ?delete) in batches.
    let locations = store.list(Some(&Path::from("bulk"))).map_ok(|m| m.location);
    let deleted: Vec<Path> = store
        .delete_stream(Box::pin(locations))
        .try_collect()
        .await
        .expect("bulk delete succeeds");

    assert_eq!(deleted.len(), 3);
    assert!(keys_under(&store, "bulk").await.is_empty());
}

#[tokio::test]
async fn head_and_get_of_a_missing_key_are_not_found() {
    let server = start();
    let store = client(&server);
    let missing = Path::from("db1/never-written");

    let err = store.head(&missing).await.expect_err("head fails");
    assert!(
        matches!(err, object_store::Error::NotFound { .. }),
        "{err:?}"
    );
    let err = store.get(&missing).await.expect_err("get fails");
    assert!(
        matches!(err, object_store::Error::NotFound { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_create_only_put_on_an_existing_key_is_already_exists_and_keeps_the_old_bytes() {
    let server = start();
    let store = client(&server);
    let path = Path::from("db1/manifest");

    // object_store sends `If-None-Match: *`; s3s-fs answers 412 Precondition
    // Failed when the key exists, which object_store maps to AlreadyExists.
    store
        .put_opts(
            &path,
            PutPayload::from_static(b"first"),
            PutMode::Create.into(),
        )
        .await
        .expect("creating a new key succeeds");
    let err = store
        .put_opts(
            &path,
            PutPayload::from_static(b"second"),
            PutMode::Create.into(),
        )
        .await
        .expect_err("creating an existing key fails");

    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "{err:?}"
    );
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"first");
}

#[tokio::test]
async fn a_client_with_the_wrong_secret_is_refused() {
    let server = start();
    let store = client_with_secret(&server, "not-the-secret");

    let err = store
        .put(&Path::from("db1/x"), PutPayload::from_static(b"x"))
        .await
        .expect_err("the signature does not match");

    // s3s answers 403 SignatureDoesNotMatch.
    assert!(
        matches!(err, object_store::Error::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(!server.bucket_dir().join("db1/x").exists());
}

#[tokio::test]
async fn the_exported_environment_configures_an_object_store_client() {
    let server = start();
    // What AmazonS3Builder::from_env does with each AWS_* variable, without
    // touching this process's environment.
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&server.bucket)
        .with_retry(retry())
        .with_client_options(client_options());
    for (key, value) in server.env() {
        let key: AmazonS3ConfigKey = key
            .to_ascii_lowercase()
            .parse()
            .unwrap_or_else(|e| panic!("{key} is an object_store setting: {e}"));
        builder = builder.with_config(key, value);
    }
    let store = builder.build().expect("the S3 client builds");

    let path = Path::from("env/check");
    store
        .put(&path, PutPayload::from_static(b"via env"))
        .await
        .expect("put succeeds");
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"via env");
    assert_eq!(server.store_url("/env/"), "s3://shmover-test/env");
}

#[test]
fn a_dropped_server_refuses_connections_and_leaves_no_directory() {
    let server = start();
    let addr = server.addr();
    let root = server.root().to_owned();
    assert!(root.join(&server.bucket).is_dir());
    std::net::TcpStream::connect(addr).expect("the server accepts connections");

    let _freed_port = PORTS.write().unwrap_or_else(|e| e.into_inner());
    drop(server);

    assert!(!root.exists(), "{} was removed", root.display());
    let err = std::net::TcpStream::connect(addr).expect_err("nothing listens any more");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn two_servers_run_side_by_side_on_different_ports_and_directories() {
    let a = start();
    let b = start();
    assert_ne!(a.endpoint, b.endpoint);
    assert_ne!(a.root(), b.root());
    assert!(a.endpoint.starts_with("http://127.0.0.1:"));
}

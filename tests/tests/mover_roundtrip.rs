//! Backups through the mover and back, on every store, through the real
//! client library and shared-memory rings.

use std::collections::BTreeMap;

use shmover_client::{code, Client, ClientKind};
use shmover_tests::mover::{files_under, Pattern, ScratchDir};
use shmover_tests::{MoverProcess, S3Server};

const MIB: u64 = 1 << 20;

/// Backs up `size` bytes of stream `s` as `name` in `block`-byte blocks,
/// filling each slot in place.
fn backup(
    c: &mut Client,
    pat: &Pattern,
    s: u64,
    name: &str,
    size: u64,
    block: usize,
) -> shmover_client::ObjectInfo {
    let mut meta = BTreeMap::new();
    meta.insert("stream".to_string(), s.to_string());
    c.open_write(name, block, size, &meta).unwrap();
    let mut off = 0;
    while off < size {
        let slot = c.reserve().unwrap();
        let n = (size - off).min(block as u64) as usize;
        pat.fill(s, off, &mut slot[..n]);
        c.commit_block(n).unwrap();
        off += n as u64;
    }
    c.commit().unwrap()
}

/// Restores `name` and checks every byte against stream `s`.
fn restore_and_check(c: &mut Client, pat: &Pattern, s: u64, name: &str, size: u64) {
    assert_eq!(c.open_read(name, 0).unwrap(), size);
    let mut off = 0;
    while let Some(block) = c.next_block().unwrap() {
        assert!(
            pat.check(s, off, block),
            "{name}: bytes differ at offset {off}"
        );
        off += block.len() as u64;
    }
    c.close_read().unwrap();
    assert_eq!(off, size, "{name}: restored length");
}

fn round_trip(m: &MoverProcess) {
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    let size = 40 * MIB + 12_345;
    let info = backup(&mut c, &pat, 1, "db/piece-1", size, 1 << 20);
    assert_eq!(info.size, size);
    assert_eq!(info.name, "db/piece-1");
    let stat = c.stat("db/piece-1").unwrap();
    assert_eq!(stat.size, size);
    assert_eq!(stat.crc32c, info.crc32c);
    assert_eq!(stat.block_size, 1 << 20);
    assert_eq!(stat.metadata.get("stream").map(String::as_str), Some("1"));
    restore_and_check(&mut c, &pat, 1, "db/piece-1", size);
    // A second object, smaller blocks; listing is newest first.
    backup(&mut c, &pat, 2, "db/piece-2", 3 * MIB, 64 << 10);
    let names: Vec<String> = c
        .list("db/", 0)
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["db/piece-2", "db/piece-1"]);
    assert_eq!(c.list("db/piece-1", 0).unwrap().len(), 1);
    assert!(c.list("other", 0).unwrap().is_empty());
    restore_and_check(&mut c, &pat, 2, "db/piece-2", 3 * MIB);
    // An empty object round-trips too.
    c.open_write("db/empty", 4096, 0, &BTreeMap::new()).unwrap();
    assert_eq!(c.commit().unwrap().size, 0);
    restore_and_check(&mut c, &pat, 0, "db/empty", 0);
    c.delete("db/piece-1").unwrap();
    assert_eq!(c.stat("db/piece-1").unwrap_err().code, code::NOT_FOUND);
    assert_eq!(c.delete("db/piece-1").unwrap_err().code, code::NOT_FOUND);
}

#[test]
fn objects_round_trip_on_the_local_directory_store() {
    let m = MoverProcess::start(&[]);
    round_trip(&m);
    // Only finished objects and their manifests remain: no staging files.
    let files = files_under(&m.store_dir());
    assert!(
        files
            .iter()
            .all(|f| f.ends_with(".data") || f.ends_with(".manifest")),
        "{files:?}"
    );
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".manifest")).count(),
        2,
        "{files:?}"
    );
    let manifest =
        std::fs::read_to_string(m.store_dir().join("catalog/generic/db/piece-2.manifest")).unwrap();
    let json: serde_like::Value = serde_like::parse(&manifest);
    assert_eq!(json.get("size"), Some("3145728"));
    assert_eq!(json.get("block_size"), Some("65536"));
}

#[test]
fn objects_round_trip_on_the_memory_store() {
    let m = MoverProcess::start(&["--store", "memory://"]);
    round_trip(&m);
    assert!(files_under(&m.store_dir()).is_empty());
}

#[test]
fn objects_round_trip_on_an_s3_compatible_server() {
    let s3 = S3Server::start().unwrap();
    let url = s3.store_url("backups/node1");
    let m = MoverProcess::start_with(&["--store", &url, "--part-size", "5M"], |cmd| {
        s3.configure(cmd);
    });
    round_trip(&m);
    // The bytes really are in the bucket, under the prefix.
    let files = files_under(&s3.bucket_dir());
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("backups/node1/catalog/generic/db/piece-2.manifest")),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("backups/node1/data/generic/db/piece-2.")),
        "{files:?}"
    );
    // A second mover on the same bucket sees the same catalog.
    let other = MoverProcess::start_with(&["--store", &url], |cmd| {
        s3.configure(cmd);
    });
    let mut c = other.client(ClientKind::Generic);
    let names: Vec<String> = c.list("", 0).unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["db/empty", "db/piece-2"]);
    restore_and_check(&mut c, &Pattern::default(), 2, "db/piece-2", 3 * MIB);
}

#[test]
fn sixteen_concurrent_streams_of_256_mib_round_trip() {
    // 4 GiB stored at once: on the memory filesystem, which a build
    // machine has room for when its disk may not.
    let store = ScratchDir::in_memory("sixteen");
    let m = MoverProcess::start(&["--store", &store.store_url()]);
    let size = 256 * MIB;
    std::thread::scope(|scope| {
        for s in 0..16u64 {
            let m = &m;
            scope.spawn(move || {
                let pat = Pattern::default();
                let mut c = m.client(ClientKind::Sbt);
                let name = format!("load/stream-{s:02}");
                assert_eq!(backup(&mut c, &pat, s, &name, size, 1 << 20).size, size);
            });
        }
    });
    std::thread::scope(|scope| {
        for s in 0..16u64 {
            let m = &m;
            scope.spawn(move || {
                let pat = Pattern::default();
                let mut c = m.client(ClientKind::Sbt);
                restore_and_check(&mut c, &pat, s, &format!("load/stream-{s:02}"), size);
            });
        }
    });
    let mut c = m.client(ClientKind::Sbt);
    assert_eq!(c.list("load/", 0).unwrap().len(), 16);
    let files = files_under(store.path());
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("data/sbt/load/stream-15.")),
        "{files:?}"
    );
}

#[test]
fn names_live_in_one_namespace_per_client_kind() {
    let m = MoverProcess::start(&["--store", "memory://"]);
    let pat = Pattern::default();
    let mut sbt = m.client(ClientKind::Sbt);
    backup(&mut sbt, &pat, 3, "same/name", MIB, 1 << 20);
    let mut backint = m.client(ClientKind::Backint);
    assert_eq!(backint.stat("same/name").unwrap_err().code, code::NOT_FOUND);
    backup(&mut backint, &pat, 4, "same/name", 2 * MIB, 1 << 20);
    assert_eq!(sbt.stat("same/name").unwrap().size, MIB);
    assert_eq!(backint.stat("same/name").unwrap().size, 2 * MIB);
}

#[test]
fn an_existing_name_cannot_be_written_again() {
    let m = MoverProcess::start(&[]);
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Sbt);
    backup(&mut c, &pat, 5, "dup", MIB, 1 << 20);
    let e = c
        .open_write("dup", 1 << 20, 0, &BTreeMap::new())
        .unwrap_err();
    assert_eq!(e.code, code::ALREADY_EXISTS);
    assert!(e.message.contains("dup"), "{}", e.message);
    // Two writers at once: the second is refused at open.
    let mut a = m.client(ClientKind::Sbt);
    let mut b = m.client(ClientKind::Sbt);
    a.open_write("race", 1 << 20, 0, &BTreeMap::new()).unwrap();
    assert_eq!(
        b.open_write("race", 1 << 20, 0, &BTreeMap::new())
            .unwrap_err()
            .code,
        code::ALREADY_EXISTS
    );
    a.write_all(b"first").unwrap();
    assert_eq!(a.commit().unwrap().size, 5);
    restore_bytes(&mut b, "race", b"first");
}

fn restore_bytes(c: &mut Client, name: &str, want: &[u8]) {
    c.open_read(name, 0).unwrap();
    let mut got = Vec::new();
    while let Some(b) = c.next_block().unwrap() {
        got.extend_from_slice(b);
    }
    c.close_read().unwrap();
    assert_eq!(got, want);
}

#[test]
fn an_aborted_backup_leaves_nothing_behind() {
    let m = MoverProcess::start(&[]);
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    c.open_write("aborted", 1 << 20, 0, &BTreeMap::new())
        .unwrap();
    for i in 0..20 {
        let slot = c.reserve().unwrap();
        pat.fill(9, i * MIB, &mut slot[..MIB as usize]);
        c.commit_block(MIB as usize).unwrap();
    }
    c.abort("test").unwrap();
    assert_eq!(c.stat("aborted").unwrap_err().code, code::NOT_FOUND);
    assert!(c.list("", 0).unwrap().is_empty());
    assert!(
        files_under(&m.store_dir()).is_empty(),
        "{:?}",
        files_under(&m.store_dir())
    );
    // The connection is usable for the next backup.
    backup(&mut c, &pat, 9, "after-abort", MIB, 1 << 20);
}

#[test]
fn bad_names_are_refused_before_anything_is_stored() {
    let m = MoverProcess::start(&[]);
    let mut c = m.client(ClientKind::Generic);
    let long = "n".repeat(1025);
    for name in [
        "",
        "a/../b",
        "..",
        "/abs",
        "a//b",
        "trail/",
        "nul\0byte",
        "ctl\nline",
        long.as_str(),
    ] {
        let e = c.open_write(name, 4096, 0, &BTreeMap::new()).unwrap_err();
        assert_eq!(e.code, 4, "{name:?}: {}", e.message);
        assert_eq!(c.stat(name).unwrap_err().code, 4, "{name:?}");
    }
    assert!(files_under(&m.store_dir()).is_empty());
    c.ping().unwrap();
}

#[test]
fn a_stored_object_that_was_altered_fails_its_restore() {
    let m = MoverProcess::start(&[]);
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    backup(&mut c, &pat, 6, "victim", 3 * MIB, 1 << 20);
    let data = files_under(&m.store_dir())
        .into_iter()
        .find(|f| f.ends_with(".data"))
        .unwrap();
    let path = m.store_dir().join(data);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2 * MIB as usize + 17] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    c.open_read("victim", 0).unwrap();
    let err = loop {
        match c.next_block() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("an altered object restored cleanly"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code, code::CHECKSUM, "{}", err.message);
    assert!(err.message.contains("victim"), "{}", err.message);
}

#[test]
fn a_truncated_stored_object_is_refused_before_any_byte_is_restored() {
    let m = MoverProcess::start(&[]);
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    backup(&mut c, &pat, 8, "short", 3 * MIB, 1 << 20);
    let data = files_under(&m.store_dir())
        .into_iter()
        .find(|f| f.ends_with(".data"))
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.store_dir().join(data))
        .unwrap();
    f.set_len(MIB + 5).unwrap();
    drop(f);
    let mut blocks = 0;
    let err = match c.open_read("short", 0) {
        Err(e) => e,
        Ok(_) => loop {
            match c.next_block() {
                Ok(Some(_)) => blocks += 1,
                Ok(None) => panic!("a truncated object restored cleanly"),
                Err(e) => break e,
            }
        },
    };
    assert_eq!(blocks, 0, "blocks of a truncated object reached the client");
    assert_eq!(err.code, code::CHECKSUM, "{}", err.message);
    assert!(
        err.message.contains("short")
            && err.message.contains("1048581 bytes")
            && err.message.contains(&(3 * MIB).to_string()),
        "{}",
        err.message
    );
}

#[test]
fn metrics_count_the_bytes_moved() {
    let m = MoverProcess::start(&["--metrics-listen", "127.0.0.1:0", "--store", "memory://"]);
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    backup(&mut c, &pat, 7, "metered", 5 * MIB, 1 << 20);
    restore_and_check(&mut c, &pat, 7, "metered", 5 * MIB);
    let metrics = m.metrics();
    let value = |name: &str| -> u64 {
        *metrics
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing: {metrics:?}")) as u64
    };
    assert_eq!(value("shmover_bytes_in_total"), 5 * MIB);
    assert_eq!(value("shmover_bytes_out_total"), 5 * MIB);
    assert_eq!(value("shmover_objects_committed_total"), 1);
    assert!(value("shmover_part_upload_seconds_count") >= 1);
    assert_eq!(value("shmover_streams_open"), 0);
}

/// Just enough JSON field reading for the manifest check, without a JSON
/// dependency in the tests.
mod serde_like {
    pub struct Value(String);
    pub fn parse(s: &str) -> Value {
        Value(s.to_string())
    }
    impl Value {
        pub fn get(&self, key: &str) -> Option<&str> {
            let at = self.0.find(&format!("\"{key}\":"))? + key.len() + 3;
            let rest = self.0[at..].trim_start();
            let end = rest.find([',', '\n', '}'])?;
            Some(rest[..end].trim().trim_matches('"'))
        }
    }
}

#[test]
fn every_abort_is_answered_ok_and_leaves_the_connection_usable() {
    // Regression: the client used to detach its ring before sending Abort,
    // and the mover's "peer gone" error raced the Abort's reply.
    let m = MoverProcess::start(&["--store", "memory://"]);
    let mut c = m.client(ClientKind::Generic);
    for i in 0..60 {
        c.open_write(&format!("abort-{i}"), 64 << 10, 0, &BTreeMap::new())
            .unwrap();
        c.write_all(&vec![i as u8; (i % 5) * 70_000]).unwrap();
        c.abort("test").unwrap_or_else(|e| panic!("abort {i}: {e}"));
    }
    assert!(c.list("", 0).unwrap().is_empty());
    c.ping().unwrap();
}

#[test]
fn a_slot_offers_exactly_the_block_size_even_when_pages_round_it_up() {
    let m = MoverProcess::start(&["--store", "memory://"]);
    let mut c = m.client(ClientKind::Generic);
    c.open_write("odd-block", 300_000, 0, &BTreeMap::new())
        .unwrap();
    assert_eq!(c.reserve().unwrap().len(), 300_000);
    assert_eq!(
        c.commit_block(300_001).unwrap_err().code,
        code::INVALID_ARGUMENT
    );
    c.commit_block(300_000).unwrap();
    let info = c.commit().unwrap();
    assert_eq!((info.size, info.block_size), (300_000, 300_000));
}

#[test]
fn a_restore_closed_early_is_answered_ok() {
    let m = MoverProcess::start(&["--store", "memory://", "--ring-size", "2M"]);
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    backup(&mut c, &pat, 11, "partial-read", 20 * MIB, 1 << 20);
    for _ in 0..20 {
        c.open_read("partial-read", 256 << 10).unwrap();
        assert!(c.next_block().unwrap().is_some());
        c.close_read().unwrap();
    }
    restore_and_check(&mut c, &pat, 11, "partial-read", 20 * MIB);
}

/// Blocks much smaller than the slots (a pipe read of 64 KiB into 1 MiB
/// slots): a part must not wait for more slots than the ring has.
fn small_commits_round_trip(m: &MoverProcess) {
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Backint);
    let size = 40 * MIB;
    c.open_write("small-commits", 1 << 20, 0, &BTreeMap::new())
        .unwrap();
    let mut off = 0;
    while off < size {
        let slot = c.reserve().unwrap();
        pat.fill(12, off, &mut slot[..64 << 10]);
        c.commit_block(64 << 10).unwrap();
        off += 64 << 10;
    }
    assert_eq!(c.commit().unwrap().size, size);
    restore_and_check(&mut c, &pat, 12, "small-commits", size);
}

#[test]
fn blocks_far_smaller_than_their_slots_do_not_stall_a_backup_on_the_local_store() {
    // Regression: a 16 MiB part of 64 KiB leases needs 256 slots; the ring
    // has 64, so the backup stalled until the client timed out.
    small_commits_round_trip(&MoverProcess::start(&[]));
}

#[test]
fn blocks_far_smaller_than_their_slots_do_not_stall_a_backup_on_s3() {
    let s3 = S3Server::start().unwrap();
    let url = s3.store_url("small");
    let m = MoverProcess::start_with(&["--store", &url], |cmd| {
        s3.configure(cmd);
    });
    small_commits_round_trip(&m);
}

#[test]
fn names_with_percent_signs_round_trip_and_delete() {
    // Regression: the manifest's data key was encoded a second time when
    // read back, so objects whose names held '%' could not be restored.
    let m = MoverProcess::start(&[]);
    let mut c = m.client(ClientKind::Backint);
    for name in ["SID/%2Fusr/sap/x/1", "100%/done", "a%25b"] {
        c.open_write(name, 4096, 0, &BTreeMap::new()).unwrap();
        c.write_all(name.as_bytes()).unwrap();
        c.commit().unwrap();
        restore_bytes(&mut c, name, name.as_bytes());
        c.delete(name).unwrap();
        assert_eq!(c.stat(name).unwrap_err().code, code::NOT_FOUND);
    }
    assert!(
        files_under(&m.store_dir()).is_empty(),
        "{:?}",
        files_under(&m.store_dir())
    );
}

#[test]
fn rings_shrink_so_that_many_streams_share_ring_memory() {
    let m = MoverProcess::start(&[
        "--store",
        "memory://",
        "--ring-size",
        "8M",
        "--ring-memory",
        "16M",
    ]);
    let mut clients: Vec<Client> = (0..3).map(|_| m.client(ClientKind::Generic)).collect();
    let mut slots = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        c.open_write(&format!("ring-{i}"), 1 << 20, 0, &BTreeMap::new())
            .unwrap();
        slots.push(c.ring_geometry().unwrap());
    }
    // 8 MiB for the first; then half of what is left of 16 MiB, 4 MiB at least.
    assert_eq!(slots, [(8, 1 << 20), (4, 1 << 20), (4, 1 << 20)]);
    for c in &mut clients {
        c.write_all(&[1u8; 3 << 20]).unwrap();
        c.commit().unwrap();
    }
    // Closed streams give their share back, or keep their ring for the
    // next stream of their user: the largest comes back.
    let c = &mut clients[0];
    c.open_write("ring-again", 1 << 20, 0, &BTreeMap::new())
        .unwrap();
    assert_eq!(c.ring_geometry(), Some((8, 1 << 20)));
    c.abort("done").unwrap();
}

#[test]
fn s3_credentials_never_appear_in_the_mover_log() {
    let s3 = S3Server::start().unwrap();
    let url = s3.store_url("secrets");
    let m = MoverProcess::start_with(&["--store", &url, "--log", "debug"], |cmd| {
        s3.configure(cmd);
    });
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    backup(&mut c, &pat, 21, "logged", 6 * MIB, 1 << 20);
    restore_and_check(&mut c, &pat, 21, "logged", 6 * MIB);
    assert_eq!(c.stat("missing").unwrap_err().code, code::NOT_FOUND);
    let log = m.log();
    assert!(log.contains("mover ready"), "{log}");
    assert!(log.contains(" DEBUG "), "not a debug-level log:\n{log}");
    assert!(
        !log.contains(&s3.secret_access_key),
        "the secret key is in the log"
    );
}

#[test]
fn an_object_larger_than_memory_limit_restores_from_a_store_that_returns_it_whole() {
    // Regression: the in-memory store returns an object as one chunk, whose
    // memory permits exceeded the whole memory_limit; the restore waited
    // for ever (until the client's timeout).
    let m = MoverProcess::start(&[
        "--store",
        "memory://",
        "--part-size",
        "5M",
        "--memory-limit",
        "6M",
    ]);
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    backup(&mut c, &pat, 31, "bigger-than-memory", 20 * MIB, 1 << 20);
    restore_and_check(&mut c, &pat, 31, "bigger-than-memory", 20 * MIB);
}

#[test]
fn the_ring_of_a_finished_stream_carries_the_next_stream_of_its_user_intact() {
    let m = MoverProcess::start(&["--metrics-listen", "127.0.0.1:0"]);
    let reused = || m.metrics()["shmover_rings_reused_total"];
    let pat = Pattern::default();
    let mut c = m.client(ClientKind::Generic);
    // Pieces one after another on one connection, as an RMAN channel
    // writes them: the first makes a ring, the others reuse it.
    let size = |s: u64| 5 * MIB + s * 4097;
    for s in 1..=3 {
        backup(
            &mut c,
            &pat,
            s,
            &format!("reuse/piece-{s}"),
            size(s),
            1 << 20,
        );
    }
    assert_eq!(reused(), 2.0);
    // Another connection of the same user restores them through the same
    // memory, now the other way round; every byte is the piece's own.
    let mut d = m.client(ClientKind::Generic);
    for s in 1..=3 {
        restore_and_check(&mut d, &pat, s, &format!("reuse/piece-{s}"), size(s));
    }
    assert_eq!(reused(), 5.0);
    // A restore closed after one block leaves nothing behind for the next.
    assert_eq!(d.open_read("reuse/piece-2", 0).unwrap(), size(2));
    assert!(d.next_block().unwrap().is_some());
    d.close_read().unwrap();
    restore_and_check(&mut d, &pat, 1, "reuse/piece-1", size(1));
    backup(&mut c, &pat, 4, "reuse/piece-4", size(4), 1 << 20);
    restore_and_check(&mut c, &pat, 4, "reuse/piece-4", size(4));
    // Another block size needs other slots: a ring of its own.
    let before = reused();
    backup(&mut c, &pat, 5, "reuse/small", MIB + 1, 64 << 10);
    assert_eq!(reused(), before);
    // A backup the client aborts gives nothing back; the next is whole.
    c.open_write("reuse/aborted", 1 << 20, 0, &BTreeMap::new())
        .unwrap();
    let slot = c.reserve().unwrap();
    slot[..4].copy_from_slice(b"junk");
    c.commit_block(4).unwrap();
    c.abort("test").unwrap();
    backup(&mut c, &pat, 6, "reuse/piece-6", size(6), 1 << 20);
    restore_and_check(&mut d, &pat, 6, "reuse/piece-6", size(6));
    assert!(c.stat("reuse/aborted").is_err());
}

#[test]
fn metadata_too_large_for_a_listing_page_is_refused_at_open() {
    // One object whose listing entry could not fit a page would fail every
    // listing that reaches it (sbtinfo2, BACKINT inquiries, `mover ls`).
    let m = MoverProcess::start(&["--store", "memory://"]);
    let mut c = m.client(ClientKind::Generic);
    let big = BTreeMap::from([("note".to_string(), "x".repeat(900 << 10))]);
    let err = c.open_write("meta/big", 4096, 0, &big).unwrap_err();
    assert_eq!(err.code, code::INVALID_ARGUMENT, "{err:?}");
    assert!(err.message.contains("bytes of metadata"), "{err:?}");
    // At the limit it is taken, and listed with its metadata whole.
    let most = BTreeMap::from([("k".to_string(), "v".repeat((64 << 10) - 1))]);
    c.open_write("meta/most", 4096, 0, &most).unwrap();
    c.write_all(b"abc").unwrap();
    c.commit().unwrap();
    let listed = c.list("meta/", 0).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].metadata, most);
}

#[test]
fn a_listing_larger_than_one_frame_arrives_whole_in_pages() {
    // HANA keeps a version of its catalog per log backup (about 100 a day)
    // and asks for all of them at recovery: the answer outgrows the 1 MiB
    // frame, so it comes in pages.
    let m = MoverProcess::start(&["--store", "memory://"]);
    let mut c = m.client(ClientKind::Generic);
    let meta = BTreeMap::from([("note".to_string(), "x".repeat(2000))]);
    let n = 700; // about 1.4 MiB of listing
    for i in 0..n {
        c.open_write(&format!("many/obj-{i:04}"), 4096, 0, &meta)
            .unwrap();
        c.write_all(&[i as u8; 10]).unwrap();
        c.commit().unwrap();
    }
    let all = c.list("many/", 0).unwrap();
    assert_eq!(all.len(), n);
    let names: std::collections::BTreeSet<&str> = all.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names.len(), n, "an entry came twice");
    assert!(
        all.windows(2)
            .all(|w| w[0].created_unix_ms > w[1].created_unix_ms
                || (w[0].created_unix_ms == w[1].created_unix_ms && w[0].name < w[1].name)),
        "not newest first, then by name"
    );
    assert!(all.iter().all(|o| o.metadata == meta));
    // A limit that spans pages.
    let some = c.list("many/", 650).unwrap();
    assert_eq!(some[..], all[..650]);

    // A protocol-1 client, which reads one reply per request, gets the old
    // error rather than a list silently cut at a page.
    use shmover_proto::{request, response, v1};
    use std::io::{Read, Write};
    let mut raw = std::os::unix::net::UnixStream::connect(&m.socket).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    for body in [
        request::Body::Hello(v1::Hello {
            min_version: 1,
            max_version: 1,
            kind: ClientKind::Generic as i32,
            pid: std::process::id(),
            label: "protocol 1".into(),
        }),
        request::Body::List(v1::List {
            prefix: "many/".into(),
            ..Default::default()
        }),
    ] {
        raw.write_all(&shmover_proto::request_frame(body)).unwrap();
    }
    let (mut buf, mut replies) = (Vec::new(), Vec::new());
    let mut tmp = [0u8; 65536];
    while replies.len() < 2 {
        match shmover_proto::decode_response(&buf).unwrap() {
            Some((body, used)) => {
                replies.push(body);
                buf.drain(..used);
            }
            None => {
                let n = raw.read(&mut tmp).unwrap();
                assert!(n > 0, "the mover closed the connection");
                buf.extend_from_slice(&tmp[..n]);
            }
        }
    }
    assert!(
        matches!(&replies[0], response::Body::Hello(h) if h.version == 1),
        "{:?}",
        replies[0]
    );
    assert!(
        matches!(&replies[1], response::Body::Error(e)
            if e.code == shmover_proto::ErrorCode::Resource as i32
                && e.message.contains("exceed one frame")),
        "{:?}",
        replies[1]
    );
}

/// Backs up `name` holding `len` bytes of `byte`, with metadata `gen`.
fn small_object(c: &mut Client, name: &str, len: usize, byte: u8, gen: &str) {
    let meta = BTreeMap::from([("gen".to_string(), gen.to_string())]);
    c.open_write(name, 4096, 0, &meta).unwrap();
    c.write_all(&vec![byte; len]).unwrap();
    c.commit().unwrap();
}

/// The mover's listing counters: manifests read from the store, and taken
/// from its cache.
fn listing_counters(m: &MoverProcess) -> (f64, f64) {
    let all = m.metrics();
    (
        all["shmover_catalog_manifest_reads_total"],
        all["shmover_catalog_manifest_cache_hits_total"],
    )
}

#[test]
fn listing_on_s3_reads_each_manifest_once_and_sees_a_name_backed_up_again() {
    // HANA asks for the same listing at every #NULL inquiry and every page
    // of a long answer; on S3 each manifest read is a GET. A manifest read
    // once is kept while the bucket's listing shows it unchanged.
    use shmover_tests::faultproxy::{Fault, FaultProxy};
    let s3 = S3Server::start().unwrap();
    let proxy = FaultProxy::start(s3.addr(), vec![Fault::Pass]).unwrap();
    let url = s3.store_url("listing");
    let endpoint = proxy.endpoint();
    let start = |cache: &str| {
        MoverProcess::start_with(
            &[
                "--store",
                &url,
                "--metrics-listen",
                "127.0.0.1:0",
                "--catalog-cache",
                cache,
            ],
            |cmd| {
                s3.configure(cmd);
                cmd.env("AWS_ENDPOINT", &endpoint)
                    .env("AWS_ENDPOINT_URL", &endpoint);
            },
        )
    };
    let m = start("32M");
    let mut c = m.client(ClientKind::Generic);
    let n = 40;
    for i in 0..n {
        small_object(
            &mut c,
            &format!("logs/log_backup_{i:03}"),
            100 + i,
            i as u8,
            "1",
        );
    }
    // Unrelated backups under another prefix are listed by the store but
    // never read.
    small_object(&mut c, "other/x", 10, 0, "1");

    let before = (listing_counters(&m), proxy.requests());
    let first = c.list("logs/", 0).unwrap();
    let after_first = (listing_counters(&m), proxy.requests());
    assert_eq!(first.len(), n);
    assert_eq!(
        after_first.0 .0 - before.0 .0,
        n as f64,
        "manifests read by the first listing"
    );
    assert!(
        after_first.1 - before.1 >= n as u64,
        "the first listing's GETs reached S3"
    );

    let second = c.list("logs/", 0).unwrap();
    let after_second = (listing_counters(&m), proxy.requests());
    assert_eq!(second, first);
    assert_eq!(
        after_second.0 .0, after_first.0 .0,
        "the second listing read a manifest again"
    );
    assert_eq!(after_second.0 .1 - after_first.0 .1, n as f64, "cache hits");
    assert!(
        after_second.1 - after_first.1 <= 2,
        "the second listing sent {} requests to S3; one LIST is enough",
        after_second.1 - after_first.1
    );

    // Another mover sharing the bucket deletes a backup and backs the name
    // up again: this mover reads the new manifest and does not serve the
    // old one from its cache.
    let other = start("32M");
    let mut oc = other.client(ClientKind::Generic);
    oc.delete("logs/log_backup_007").unwrap();
    assert_eq!(c.list("logs/", 0).unwrap().len(), n - 1);
    small_object(&mut oc, "logs/log_backup_007", 5000, 0xEE, "2");
    drop(oc);
    drop(other);
    let third = c.list("logs/", 0).unwrap();
    let after_third = listing_counters(&m);
    assert_eq!(third.len(), n);
    let again = third
        .iter()
        .find(|o| o.name == "logs/log_backup_007")
        .unwrap();
    assert_eq!((again.size, again.metadata["gen"].as_str()), (5000, "2"));
    assert_eq!(
        third[0].name, "logs/log_backup_007",
        "the newest comes first"
    );
    assert_eq!(
        after_third.0 - after_second.0 .0,
        1.0,
        "only the new manifest is read"
    );
    let mut buf = Vec::new();
    assert_eq!(c.open_read("logs/log_backup_007", 0).unwrap(), 5000);
    while let Some(b) = c.next_block().unwrap() {
        buf.extend_from_slice(b);
    }
    c.close_read().unwrap();
    assert_eq!(buf, vec![0xEE; 5000]);
    drop(c);
    drop(m);

    // The control: a mover with no cache reads every manifest each time,
    // and a new mover over the same bucket lists the same catalog.
    let m = start("0");
    let mut c = m.client(ClientKind::Generic);
    let before = listing_counters(&m);
    assert_eq!(c.list("logs/", 0).unwrap(), third);
    assert_eq!(c.list("logs/", 0).unwrap(), third);
    let after = listing_counters(&m);
    assert_eq!(after.0 - before.0, 2.0 * n as f64);
    assert_eq!(after.1, before.1);
}

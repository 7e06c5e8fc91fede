//! Cross-node: movers that forward to peer movers over gRPC (Oracle RAC,
//! HANA scale-out), two and three movers on loopback, real TCP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::RwLock;

use shmover_client::{Client, ClientKind};
use shmover_tests::drivers::{hana_driver, run_driver, sbt_driver};
use shmover_tests::faultproxy::{Fault, FaultProxy};
use shmover_tests::mover::{files_under, temp_dir, Pattern};
use shmover_tests::objects::{backup, restore_and_check};
use shmover_tests::proxy::CutProxy;
use shmover_tests::{MoverProcess, S3Server};

const MIB: u64 = 1 << 20;

/// A file only its owner reads, holding `text`.
fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Held for reading while a test binds a port, and for writing by a test
/// that kills a peer and needs its freed port to stay free: a port the
/// kernel hands to another test's mover meanwhile would answer in the dead
/// peer's place.
static PORTS: RwLock<()> = RwLock::new(());

/// Starts a mover while no test holds a dead peer's port.
fn start(args: &[&str]) -> MoverProcess {
    let _bind = PORTS.read().unwrap_or_else(|e| e.into_inner());
    MoverProcess::start(args)
}

/// A mover that serves peers in plaintext with a bearer token.
fn receiver(token: &Path) -> MoverProcess {
    start(&[
        "--peer-listen",
        "127.0.0.1:0",
        "--insecure-plaintext",
        "--token-file",
        token.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
    ])
}

/// A mover that forwards to `peers` (host:port) with `token`.
fn forwarder(peers: &[String], token: &Path, extra: &[&str]) -> MoverProcess {
    let urls: Vec<String> = peers.iter().map(|a| format!("http://{a}")).collect();
    let forward = urls.join(",");
    let mut args = vec![
        "--forward",
        &forward,
        "--insecure-plaintext",
        "--token-file",
        token.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    start(&args)
}

fn names(c: &mut Client) -> Vec<String> {
    c.list("", 0).unwrap().into_iter().map(|i| i.name).collect()
}

#[test]
fn a_forwarding_mover_keeps_everything_on_its_peer() {
    let dir = temp_dir("peer-basic");
    let token = secret_file(&dir, "token", "t0ken-for-tests\n");
    let r = receiver(&token);
    let f = forwarder(&[r.peer_addr()], &token, &[]);
    let pat = Pattern::default();
    let mut c = f.client(ClientKind::Generic);
    let crc = backup(&mut c, &pat, 1, "rac/piece-1", 40 * MIB + 4321, 1 << 20)
        .unwrap()
        .crc32c;
    backup(&mut c, &pat, 2, "rac/piece-2", 3 * MIB, 64 << 10).unwrap();
    c.open_write("rac/empty", 4096, 0, &BTreeMap::new())
        .unwrap();
    assert_eq!(c.commit().unwrap().size, 0);
    // The catalog answers through the peer, and the peer holds it all.
    assert_eq!(names(&mut c), ["rac/empty", "rac/piece-2", "rac/piece-1"]);
    let stat = c.stat("rac/piece-1").unwrap();
    assert_eq!((stat.size, stat.crc32c), (40 * MIB + 4321, crc));
    let mut on_peer = r.client(ClientKind::Generic);
    assert_eq!(names(&mut on_peer), names(&mut c));
    assert!(
        !f.store_dir().exists(),
        "the forwarding mover stored something itself"
    );
    restore_and_check(&mut c, &pat, 1, "rac/piece-1", 40 * MIB + 4321);
    restore_and_check(&mut c, &pat, 2, "rac/piece-2", 3 * MIB);
    restore_and_check(&mut c, &pat, 0, "rac/empty", 0);
    // Delete through the forwarder: gone on the peer, data and manifest.
    for n in ["rac/piece-1", "rac/piece-2", "rac/empty"] {
        c.delete(n).unwrap();
    }
    assert!(names(&mut on_peer).is_empty());
    assert!(
        files_under(&r.store_dir()).is_empty(),
        "{:?}",
        files_under(&r.store_dir())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_peer_whose_store_returns_whole_objects_sends_them_in_chunks() {
    // The in-memory store yields an object as one piece; the peer must cut
    // it below the gRPC message limit.
    let dir = temp_dir("peer-memory");
    let token = secret_file(&dir, "token", "memory-t0ken");
    let r = start(&[
        "--store",
        "memory://",
        "--peer-listen",
        "127.0.0.1:0",
        "--insecure-plaintext",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let f = forwarder(&[r.peer_addr()], &token, &[]);
    let pat = Pattern::default();
    let mut c = f.client(ClientKind::Generic);
    backup(&mut c, &pat, 9, "mem/piece", 24 * MIB + 1, 1 << 20).unwrap();
    restore_and_check(&mut c, &pat, 9, "mem/piece", 24 * MIB + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_sbt_library_and_hdbbackint_work_through_a_forwarding_mover() {
    let dir = temp_dir("peer-hosts");
    let token = secret_file(&dir, "token", "another-t0ken");
    let r = receiver(&token);
    let f = forwarder(&[r.peer_addr()], &token, &[]);
    let mut sbt = sbt_driver(&f.socket);
    sbt.args(["--channels", "2"]);
    // 104 to 106 checks with 2 channels (random-calls varies by a few).
    run_driver(sbt, 99);
    run_driver(hana_driver(&f.socket), 54);
    // Both drivers delete what they made; the peer saw it all go.
    let mut on_peer = r.client(ClientKind::Generic);
    assert!(on_peer.list("", 0).unwrap().is_empty());
    assert!(f.log().contains("backup committed"), "{}", f.log());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_upload_and_a_restore_resume_after_the_connection_is_cut() {
    let dir = temp_dir("peer-cut");
    let token = secret_file(&dir, "token", "cut-t0ken");
    let r = receiver(&token);
    // A connection is cut once 40 MiB (parts are 16 MiB) have gone one
    // way: twice toward the peer (the upload; each resume restarts from
    // the last part the peer acknowledged, at most 40 MiB in, so 56 MiB
    // or more remain for the second cut) and once back (the restore).
    let proxy = {
        let _bind = PORTS.read().unwrap_or_else(|e| e.into_inner());
        CutProxy::start(r.peer_addr().parse().unwrap(), 40 * MIB, 2, 1)
    };
    let f = forwarder(
        &[proxy.addr().to_string()],
        &token,
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let pat = Pattern::default();
    let size = 96 * MIB + 777;
    let mut c = f.client(ClientKind::Generic);
    let crc = backup(&mut c, &pat, 7, "cut/piece", size, 1 << 20)
        .unwrap()
        .crc32c;
    restore_and_check(&mut c, &pat, 7, "cut/piece", size);
    assert_eq!(proxy.cuts(), (2, 1));
    let log = f.log();
    assert!(log.contains("resuming an upload"), "{log}");
    assert!(log.contains("read from peer broke; resuming"), "{log}");
    // Two upload resumes and one read resume; every byte counted once each
    // way at least (resent chunks count again).
    let fm = f.metrics();
    assert!(fm["shmover_peer_resumes_total"] >= 3.0, "{fm:?}");
    assert!(fm["shmover_peer_bytes_sent_total"] >= size as f64, "{fm:?}");
    assert!(
        fm["shmover_peer_bytes_received_total"] >= size as f64,
        "{fm:?}"
    );
    let rm = r.metrics();
    assert!(
        rm["shmover_peer_bytes_received_total"] >= size as f64,
        "{rm:?}"
    );
    assert!(rm["shmover_peer_bytes_sent_total"] >= size as f64, "{rm:?}");
    // The peer's copy is byte-identical: the peer restores it itself.
    let mut on_peer = r.client(ClientKind::Generic);
    assert_eq!(on_peer.stat("cut/piece").unwrap().crc32c, crc);
    restore_and_check(&mut on_peer, &pat, 7, "cut/piece", size);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dead_peer_fails_the_object_and_the_next_object_goes_to_the_next_peer() {
    let dir = temp_dir("peer-dead");
    let token = secret_file(&dir, "token", "dead-t0ken");
    let mut a = receiver(&token);
    let b = receiver(&token);
    let f = forwarder(
        &[a.peer_addr(), b.peer_addr()],
        &token,
        &["--peer-timeout", "3"],
    );
    let pat = Pattern::default();
    let mut c = f.client(ClientKind::Generic);
    // Half an object reaches the first peer, then it dies. Its port stays
    // free until the test ends: no other test here binds one meanwhile.
    let _dead_port = PORTS.write().unwrap_or_else(|e| e.into_inner());
    c.open_write("dead/piece", 1 << 20, 0, &BTreeMap::new())
        .unwrap();
    let mut failed = None;
    for i in 0..256u64 {
        if i == 24 {
            a.kill();
        }
        let r = c.reserve().map(|slot| pat.fill(3, i << 20, slot));
        if let Err(e) = r.and_then(|()| c.commit_block(1 << 20)) {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.or_else(|| c.commit().err());
    let e = failed.expect("the object failed");
    assert!(e.message.contains("dead/piece"), "{e:?}");
    drop(c);
    // Nothing of it is visible; the next object goes to the second peer.
    let mut c = f.client(ClientKind::Generic);
    assert!(c.stat("dead/piece").is_err());
    backup(&mut c, &pat, 4, "dead/next", 20 * MIB, 1 << 20).unwrap();
    let mut on_b = b.client(ClientKind::Generic);
    assert_eq!(names(&mut on_b), ["dead/next"]);
    restore_and_check(&mut c, &pat, 4, "dead/next", 20 * MIB);
    assert!(f.log().contains("unreachable"), "{}", f.log());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_peer_whose_store_stops_answering_fails_the_object_and_is_passed_over() {
    // The first peer keeps its objects on S3 behind a proxy that, once
    // switched, takes requests and never answers: the peer stays reachable
    // and its HTTP/2 layer answers pings, but nothing it is asked to store
    // or list is ever answered.
    let dir = temp_dir("peer-hung");
    let token = secret_file(&dir, "token", "hung-t0ken");
    let s3 = S3Server::start().unwrap();
    let proxy = FaultProxy::start(s3.addr(), vec![Fault::Pass]).unwrap();
    let (url, endpoint) = (s3.store_url("hung"), proxy.endpoint());
    let a = {
        let _bind = PORTS.read().unwrap_or_else(|e| e.into_inner());
        MoverProcess::start_with(
            &[
                "--store",
                &url,
                "--peer-listen",
                "127.0.0.1:0",
                "--insecure-plaintext",
                "--token-file",
                token.to_str().unwrap(),
            ],
            |cmd| {
                s3.configure(cmd);
                cmd.env("AWS_ENDPOINT", &endpoint)
                    .env("AWS_ENDPOINT_URL", &endpoint);
            },
        )
    };
    let b = receiver(&token);
    let peers = [a.peer_addr(), b.peer_addr()];
    let quick = [
        "--peer-timeout",
        "3",
        "--peer-stall",
        "3",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let f = forwarder(&peers, &token, &quick);
    let pat = Pattern::default();
    let mut c = f.client(ClientKind::Generic);
    backup(&mut c, &pat, 1, "hung/first", 12 * MIB, 1 << 20).unwrap();
    // Half-way through the next object, the first peer's store stops
    // answering. The object fails (no hang), naming itself.
    c.open_write("hung/piece", 1 << 20, 0, &BTreeMap::new())
        .unwrap();
    let mut failed = None;
    for i in 0..1024u64 {
        if i == 24 {
            proxy.set_hung(true);
        }
        let r = c.reserve().map(|slot| pat.fill(2, i << 20, slot));
        if let Err(e) = r.and_then(|()| c.commit_block(1 << 20)) {
            failed = Some(e);
            break;
        }
    }
    let e = failed
        .or_else(|| c.commit().err())
        .expect("the object failed");
    assert!(e.message.contains("hung/piece"), "{e:?}");
    drop(c);
    assert!(f.log().contains("peer stopped answering"), "{}", f.log());
    assert!(f.metrics()["shmover_peer_failovers_total"] >= 1.0);
    // The first peer is passed over: the next object goes to the second.
    let mut c = f.client(ClientKind::Generic);
    backup(&mut c, &pat, 3, "hung/next", 20 * MIB, 1 << 20).unwrap();
    restore_and_check(&mut c, &pat, 3, "hung/next", 20 * MIB);
    let mut on_b = b.client(ClientKind::Generic);
    assert_eq!(names(&mut on_b), ["hung/next"]);
    // A forwarding mover that has not seen the first peer fail asks it
    // first, gets no answer to its listing, and lists the second.
    let f2 = forwarder(&peers, &token, &quick);
    let mut c2 = f2.client(ClientKind::Generic);
    assert_eq!(names(&mut c2), ["hung/next"]);
    restore_and_check(&mut c2, &pat, 3, "hung/next", 20 * MIB);
    assert!(f2.log().contains("no answer from the peer"), "{}", f2.log());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn restores_nobody_reads_do_not_hold_up_other_objects_on_the_same_peer() {
    // A restore whose database reads nothing (stuck, or slow) fills its
    // ring, then its HTTP/2 stream's window. Streams that share one
    // connection share its window too: such restores must not stop the
    // bytes of every other object to and from the same peer.
    let dir = temp_dir("peer-window");
    let token = secret_file(&dir, "token", "window-t0ken");
    let r = receiver(&token);
    let f = forwarder(&[r.peer_addr()], &token, &["--ring-size", "8M"]);
    let pat = Pattern::default();
    let mut c = f.client(ClientKind::Generic);
    let big = 64 * MIB;
    for s in 0..3u64 {
        backup(&mut c, &pat, s, &format!("window/big{s}"), big, 1 << 20).unwrap();
    }
    let stuck: Vec<Client> = (0..3u64)
        .map(|s| {
            let mut rc = f.client(ClientKind::Generic);
            assert_eq!(rc.open_read(&format!("window/big{s}"), 0).unwrap(), big);
            rc
        })
        .collect();
    // Wait until the peer has sent all it can to the restores.
    let sent = || r.metrics()["shmover_peer_bytes_sent_total"];
    let mut last = -1.0;
    for _ in 0..120 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = sent();
        if now == last {
            break;
        }
        last = now;
    }
    // Another object goes up and another comes back meanwhile.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut other = f.client(ClientKind::Generic);
    std::thread::spawn(move || {
        let pat = Pattern::default();
        let r = backup(&mut other, &pat, 7, "window/small", 24 * MIB, 1 << 20);
        if r.is_ok() {
            restore_and_check(&mut other, &pat, 7, "window/small", 24 * MIB);
        }
        let _ = tx.send(r.map(|_| ()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("another object is held up by restores nobody reads"),
    }
    // The stuck restores still deliver every byte once read.
    for (s, mut rc) in stuck.into_iter().enumerate() {
        let mut off = 0;
        while let Some(block) = rc.next_block().unwrap() {
            assert!(pat.check(s as u64, off, block), "restore {s} at {off}");
            off += block.len() as u64;
        }
        rc.close_read().unwrap();
        assert_eq!(off, big);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One `Write` stream sent whole to a plaintext peer with `token`: the
/// peer's replies, up to and including the first error.
fn raw_write(
    addr: &str,
    token: &str,
    msgs: Vec<shmover_proto::peer::write_request::Msg>,
) -> (Vec<shmover_proto::peer::WriteReply>, Option<tonic::Status>) {
    use shmover_proto::peer::{peer_client::PeerClient, WriteRequest};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = PeerClient::new(channel).max_decoding_message_size(16 << 20);
        let out = msgs.into_iter().map(|m| WriteRequest { msg: Some(m) });
        let mut req = tonic::Request::new(futures::stream::iter(out));
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let mut replies = match c.write(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut got = Vec::new();
        loop {
            match replies.message().await {
                Ok(Some(r)) => got.push(r),
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e)),
            }
        }
    })
}

#[test]
fn a_peer_reserves_each_part_against_its_memory_limit_and_refuses_parts_that_lie() {
    use shmover_proto::peer::{write_request::Msg, Chunk, WriteFinish, WriteOpen};
    use tonic::Code;
    let dir = temp_dir("peer-memory");
    let token = secret_file(&dir, "token", "memory-t0ken");
    let r = start(&[
        "--peer-listen",
        "127.0.0.1:0",
        "--insecure-plaintext",
        "--token-file",
        token.to_str().unwrap(),
        "--memory-limit",
        "40M",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let open = |id: &str, path: &str| {
        Msg::Open(WriteOpen {
            upload_id: format!("{id:0>32}"),
            path: path.to_string(),
        })
    };
    let chunk = |offset: u64, len: usize, part_end: bool, part_size: u64| {
        Msg::Chunk(Chunk {
            offset,
            data: vec![7u8; len].into(),
            part_end,
            part_size,
        })
    };
    let refused = |msgs, code: Code, says: &str| {
        let (replies, e) = raw_write(&r.peer_addr(), "memory-t0ken", msgs);
        let e = e.expect("the peer refused");
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(says), "{e:?}");
        // Nothing was acknowledged beyond the open.
        assert!(replies.iter().all(|r| r.durable == 0), "{replies:?}");
    };
    // A part that does not say how large it is.
    refused(
        vec![open("1", "data/raw/a"), chunk(0, 1 << 20, true, 0)],
        Code::InvalidArgument,
        "must give the part's size",
    );
    // A part larger than the whole memory budget.
    refused(
        vec![open("2", "data/raw/b"), chunk(0, 1 << 20, false, 64 << 20)],
        Code::ResourceExhausted,
        "memory limit",
    );
    // Chunks past the declared size, and a part that ends short of it.
    refused(
        vec![
            open("3", "data/raw/c"),
            chunk(0, 1 << 20, false, 1 << 20),
            chunk(1 << 20, 1, true, 0),
        ],
        Code::InvalidArgument,
        "declared size",
    );
    refused(
        vec![open("4", "data/raw/d"), chunk(0, 1 << 20, true, 2 << 20)],
        Code::InvalidArgument,
        "it declared",
    );
    // A part that says its size honestly is stored and acknowledged.
    let (replies, e) = raw_write(
        &r.peer_addr(),
        "memory-t0ken",
        vec![
            open("5", "data/raw/e"),
            chunk(0, 1 << 20, false, 3 << 20),
            chunk(1 << 20, 2 << 20, true, 0),
            Msg::Finish(WriteFinish { size: 3 << 20 }),
        ],
    );
    assert!(e.is_none(), "{e:?}");
    let last = replies.last().expect("replies");
    assert!(last.completed && last.durable == 3 << 20, "{replies:?}");
    // A sender that leaves half-way through a part of 30 MiB (a forwarding
    // mover that gave up, or died): the part is dropped with its memory.
    // The old peer kept the 30 MiB reserved for the 15 minutes it keeps an
    // idle session, and the next part of 20 MiB waited all that time.
    let (replies, e) = raw_write(
        &r.peer_addr(),
        "memory-t0ken",
        vec![open("6", "data/raw/f"), chunk(0, 1 << 20, false, 30 << 20)],
    );
    assert!(e.is_none() && replies.len() == 1, "{replies:?} {e:?}");
    let addr = r.peer_addr();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut msgs = vec![open("7", "data/raw/g")];
        for i in 0..5u64 {
            msgs.push(chunk(
                i << 22,
                4 << 20,
                i == 4,
                if i == 0 { 20 << 20 } else { 0 },
            ));
        }
        msgs.push(Msg::Finish(WriteFinish { size: 20 << 20 }));
        let _ = done_tx.send(raw_write(&addr, "memory-t0ken", msgs));
    });
    let (replies, e) = done_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a 20 MiB part waited for memory a departed sender still held");
    assert!(e.is_none(), "{e:?}");
    assert!(
        replies
            .last()
            .is_some_and(|l| l.completed && l.durable == 20 << 20),
        "{replies:?}"
    );
    // Six objects at once through a forwarding mover, 16 MiB parts, into
    // a peer whose budget holds two such parts: each waits its turn for
    // memory, none holds any while it waits, and all of them land.
    let f = forwarder(&[r.peer_addr()], &token, &["--part-size", "16M"]);
    let size = 48 * MIB;
    let workers: Vec<_> = (0..6u64)
        .map(|s| {
            let mut c = f.client(ClientKind::Generic);
            std::thread::spawn(move || {
                let pat = Pattern::default();
                backup(&mut c, &pat, s, &format!("memory/{s}"), size, 1 << 20).unwrap();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let waited = r.metrics()["shmover_memory_waits_total"];
    assert!(waited >= 1.0, "no part waited for the peer's memory");
    println!("parts that waited for the peer's memory: {waited}");
    let pat = Pattern::default();
    let mut c = f.client(ClientKind::Generic);
    for s in 0..6u64 {
        restore_and_check(&mut c, &pat, s, &format!("memory/{s}"), size);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA, and certificates it signs for `localhost` (server) and a client.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "shmover test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        (
            secret_file(dir, &format!("{name}.pem"), &cert.pem()),
            secret_file(dir, &format!("{name}.key"), &key.serialize_pem()),
        )
    };
    let server = leaf("server", ExtendedKeyUsagePurpose::ServerAuth);
    let client = leaf("client", ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: secret_file(dir, "ca.pem", &ca_cert.pem()),
        server,
        client,
    }
}

/// `mover serve` that is expected to refuse to start: its stderr.
fn refused_start(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(shmover_tools::workspace_binary("mover").unwrap())
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("refused"))
        .args(args)
        .env_remove("MOVER_STORE")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the mover started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Tries to back up a small object through `f`; the error, if any.
fn try_backup(f: &MoverProcess, name: &str) -> Option<String> {
    let mut c = f.client(ClientKind::Generic);
    let r = (|| {
        c.open_write(name, 1 << 20, 0, &BTreeMap::new())?;
        let slot = c.reserve()?;
        slot[..4096].fill(7);
        c.commit_block(4096)?;
        c.commit()
    })();
    r.err().map(|e| e.message)
}

#[test]
fn the_peer_port_requires_tls_and_refuses_wrong_credentials() {
    let dir = temp_dir("peer-tls");
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let token = secret_file(&dir, "token", "right-t0ken");
    let wrong = secret_file(&dir, "wrong", "wrong-t0ken");
    let pki = pki(&dir);
    // No TLS without --insecure-plaintext; no port without authentication.
    let err = refused_start(
        &dir,
        &["--peer-listen", "127.0.0.1:0", "--token-file", &s(&token)],
    );
    assert!(err.contains("needs TLS"), "{err}");
    let err = refused_start(
        &dir,
        &[
            "--peer-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &s(&pki.server.0),
            "--tls-key",
            &s(&pki.server.1),
        ],
    );
    assert!(err.contains("needs authentication"), "{err}");
    let err = refused_start(&dir, &["--forward", "http://127.0.0.1:1"]);
    assert!(err.contains("plaintext"), "{err}");
    // mTLS and a token, both required.
    let r = start(&[
        "--peer-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &s(&pki.server.0),
        "--tls-key",
        &s(&pki.server.1),
        "--tls-ca",
        &s(&pki.ca),
        "--token-file",
        &s(&token),
        "--log",
        "debug",
    ]);
    let port = r.peer_addr().rsplit(':').next().unwrap().to_string();
    let https = format!("https://localhost:{port}");
    let forward_to = |url: &str, tok: &PathBuf, cert: bool| {
        let mut args = vec![
            "--forward".to_string(),
            url.to_string(),
            "--tls-ca".into(),
            s(&pki.ca),
            "--token-file".into(),
            s(tok),
            "--peer-timeout".into(),
            "2".into(),
            "--log".into(),
            "debug".into(),
        ];
        if cert {
            args.extend(["--tls-cert".into(), s(&pki.client.0)]);
            args.extend(["--tls-key".into(), s(&pki.client.1)]);
        }
        if url.starts_with("http:") {
            args.push("--insecure-plaintext".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        start(&args)
    };
    let good = forward_to(&https, &token, true);
    assert_eq!(try_backup(&good, "tls/ok"), None);
    let mut c = good.client(ClientKind::Generic);
    assert_eq!(c.stat("tls/ok").unwrap().size, 4096);
    let refused = |f: MoverProcess, name: &str, why: &str| {
        let err = try_backup(&f, name).expect("refused");
        assert!(err.contains(why), "{err}\n{}", f.log());
    };
    refused(
        forward_to(&https, &wrong, true),
        "tls/wrong-token",
        "bearer token",
    );
    // Without a client certificate, or without TLS, the connection itself
    // fails; the object fails once the peer timeout has passed.
    refused(forward_to(&https, &token, false), "tls/no-cert", &https);
    let plain = format!("http://127.0.0.1:{port}");
    refused(forward_to(&plain, &token, true), "tls/plain", &plain);
    // Only the good object reached the peer.
    let mut on_peer = r.client(ClientKind::Generic);
    assert_eq!(names(&mut on_peer), ["tls/ok"]);
    // Neither side ever logs a token, even at debug level.
    for log in [r.log(), good.log()] {
        assert!(log.contains(" DEBUG "), "not a debug-level log:\n{log}");
        assert!(
            !log.contains("right-t0ken") && !log.contains("wrong-t0ken"),
            "{log}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_python_grpcio_client_can_stat_and_list() {
    let dir = temp_dir("peer-python");
    let token = secret_file(&dir, "token", "py-t0ken");
    let wrong = secret_file(&dir, "wrong", "not-the-t0ken");
    let r = receiver(&token);
    let pat = Pattern::default();
    let mut c = r.client(ClientKind::Generic);
    backup(&mut c, &pat, 5, "py/piece", 5 * MIB + 3, 1 << 20).unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grpc-venv");
    let out = Command::new("bash")
        .arg(here.join("python/ensure_grpc_env.sh"))
        .arg(&venv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "could not install grpcio from PyPI:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let python = stdout.lines().last().unwrap().trim().to_string();
    let client = |tok: &Path, args: &[&str]| {
        let out = Command::new(&python)
            .arg(here.join("python/peer_client.py"))
            .arg("--proto-root")
            .arg(here.join("../proto/proto"))
            .arg("--out")
            .arg(dir.join("stubs"))
            .args(["--addr", &r.peer_addr(), "--token-file"])
            .arg(tok)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The catalog entry and the data object, as listed by grpcio.
    let (code, listed, err) = client(&token, &["list", "data"]);
    assert_eq!(code, Some(0), "{err}");
    let data_path = listed
        .split('"')
        .skip_while(|w| *w != "path")
        .nth(2)
        .unwrap_or_else(|| panic!("no path in {listed}"))
        .to_string();
    assert!(data_path.starts_with("data/generic/py/piece."), "{listed}");
    assert!(
        listed.contains(&format!("\"size\": {}", 5 * MIB + 3)),
        "{listed}"
    );
    let (code, stat, err) = client(&token, &["stat", &data_path]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        stat.contains(&format!("\"size\": {}", 5 * MIB + 3)),
        "{stat}"
    );
    let (code, listed, err) = client(&token, &["list", "catalog"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        listed.contains("catalog/generic/py/piece.manifest"),
        "{listed}"
    );
    // Wrong token, missing object: gRPC status codes.
    let (code, _, err) = client(&wrong, &["list", "data"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.starts_with("error: UNAUTHENTICATED"), "{err}");
    let (code, _, err) = client(&token, &["stat", "data/generic/none"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.starts_with("error: NOT_FOUND"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// How [`FakePeer`] answers a write.
#[derive(Clone, Copy)]
enum Answer {
    /// Says it holds nothing, again and again, and never more: alive,
    /// answering, and getting nowhere.
    Repeats,
    /// Says it holds a terabyte once the first chunk arrives.
    Overclaims,
    /// Answers the open (holding nothing), then ends the stream: a peer
    /// that fails every write the same way.
    HangsUp,
}

/// A peer written to the peer protocol that misbehaves in one way
/// ([`Answer`]): what a buggy or hostile mover on another node would do,
/// which a real mover cannot be made to do. Served on loopback TCP by a
/// thread of its own; every other call is refused or finds nothing.
struct FakePeer {
    addr: String,
    _runtime: std::thread::JoinHandle<()>,
}

type Replies<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

fn replies<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<Result<T, tonic::Status>>,
) -> Replies<T> {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|r| (r, rx))
    }))
}

#[tonic::async_trait]
impl shmover_proto::peer::peer_server::Peer for Answer {
    type WriteStream = Replies<shmover_proto::peer::WriteReply>;
    type ReadStream = Replies<shmover_proto::peer::ReadReply>;
    type ListStream = Replies<shmover_proto::peer::ListReply>;

    async fn write(
        &self,
        req: tonic::Request<tonic::Streaming<shmover_proto::peer::WriteRequest>>,
    ) -> Result<tonic::Response<Self::WriteStream>, tonic::Status> {
        use shmover_proto::peer::{write_request::Msg, WriteReply};
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let answer = *self;
        tokio::spawn(async move {
            let holds = |durable| {
                Ok(WriteReply {
                    durable,
                    ..Default::default()
                })
            };
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(m)) => {
                            let reply = match (answer, m.msg) {
                                (_, Some(Msg::Open(_))) | (Answer::Repeats, _) => holds(0),
                                (Answer::Overclaims, _) => holds(1 << 40),
                                (Answer::HangsUp, _) => return,
                            };
                            if tx.send(reply).await.is_err() {
                                return;
                            }
                            if matches!(answer, Answer::HangsUp) {
                                return;
                            }
                        }
                        _ => return,
                    },
                    _ = tick.tick(), if matches!(answer, Answer::Repeats) => {
                        if tx.send(holds(0)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(tonic::Response::new(replies(rx)))
    }

    async fn read(
        &self,
        _: tonic::Request<shmover_proto::peer::ReadRequest>,
    ) -> Result<tonic::Response<Self::ReadStream>, tonic::Status> {
        Err(tonic::Status::not_found("the fake peer holds nothing"))
    }
    async fn put(
        &self,
        _: tonic::Request<shmover_proto::peer::PutRequest>,
    ) -> Result<tonic::Response<shmover_proto::peer::PutReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("the fake peer stores nothing"))
    }
    async fn stat(
        &self,
        _: tonic::Request<shmover_proto::peer::StatRequest>,
    ) -> Result<tonic::Response<shmover_proto::peer::ObjectMeta>, tonic::Status> {
        Err(tonic::Status::not_found("the fake peer holds nothing"))
    }
    async fn list(
        &self,
        _: tonic::Request<shmover_proto::peer::ListRequest>,
    ) -> Result<tonic::Response<Self::ListStream>, tonic::Status> {
        let (_, rx) = tokio::sync::mpsc::channel(1);
        Ok(tonic::Response::new(replies(rx)))
    }
    async fn list_delimited(
        &self,
        _: tonic::Request<shmover_proto::peer::ListRequest>,
    ) -> Result<tonic::Response<shmover_proto::peer::ListDelimitedReply>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
    async fn delete(
        &self,
        _: tonic::Request<shmover_proto::peer::DeleteRequest>,
    ) -> Result<tonic::Response<shmover_proto::peer::DeleteReply>, tonic::Status> {
        Err(tonic::Status::not_found("the fake peer holds nothing"))
    }
}

impl FakePeer {
    fn start(answer: Answer) -> FakePeer {
        let listener = {
            let _bind = PORTS.read().unwrap_or_else(|e| e.into_inner());
            std::net::TcpListener::bind("127.0.0.1:0").unwrap()
        };
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let _ = tonic::transport::Server::builder()
                    .serve_with_incoming(
                        shmover_proto::peer::peer_server::PeerServer::new(answer)
                            .max_decoding_message_size(64 << 20),
                        incoming,
                    )
                    .await;
            });
        });
        FakePeer {
            addr,
            _runtime: runtime,
        }
    }
}

/// Backs up `name` (8 MiB) through `f`, expecting it to fail; the error.
fn failed_backup(f: &MoverProcess, name: &str) -> shmover_client::Error {
    let pat = Pattern::default();
    let mut c = f.client(ClientKind::Generic);
    match backup(&mut c, &pat, 1, name, 8 * MIB, 1 << 20) {
        Ok(_) => panic!("{name} was reported saved on a peer that holds nothing"),
        Err(e) => e,
    }
}

#[test]
fn a_peer_that_answers_without_ever_holding_more_is_given_up_after_the_stall_time() {
    // The peer answers every 200 ms, always "I hold 0 bytes". Replies
    // that acknowledge nothing new must not restart the stall clock: the
    // old forwarder restarted it on every reply and waited for good.
    let dir = temp_dir("peer-repeats");
    let token = secret_file(&dir, "token", "rep3ats");
    let peer = FakePeer::start(Answer::Repeats);
    let f = forwarder(
        std::slice::from_ref(&peer.addr),
        &token,
        &["--peer-timeout", "3", "--peer-stall", "2"],
    );
    let e = failed_backup(&f, "repeats/piece");
    assert!(
        e.message.contains("no answer from the peer in 2 s"),
        "{e:?}"
    );
    assert!(f.log().contains("peer stopped answering"), "{}", f.log());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_peer_that_claims_bytes_it_was_never_sent_fails_the_object_as_data_loss() {
    // Believing the claim would release ring slots whose bytes the peer
    // never had, and report the backup saved.
    let dir = temp_dir("peer-overclaims");
    let token = secret_file(&dir, "token", "0verclaims");
    let peer = FakePeer::start(Answer::Overclaims);
    let f = forwarder(
        std::slice::from_ref(&peer.addr),
        &token,
        &["--peer-timeout", "3"],
    );
    let e = failed_backup(&f, "overclaims/piece");
    assert!(
        e.message
            .contains("the peer acknowledged 1099511627776 bytes"),
        "{e:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_peer_that_hangs_up_on_every_write_fails_the_object_after_the_peer_timeout() {
    // Each connection gets its first reply, so the forwarder used to count
    // it as a success and reconnect for good, the backup never ending.
    let dir = temp_dir("peer-hangs-up");
    let token = secret_file(&dir, "token", "hangs-up");
    let peer = FakePeer::start(Answer::HangsUp);
    let f = forwarder(
        std::slice::from_ref(&peer.addr),
        &token,
        &["--peer-timeout", "3"],
    );
    let e = failed_backup(&f, "hangs-up/piece");
    assert!(
        e.message
            .contains("unreachable for 3 s: the peer closed the stream"),
        "{e:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

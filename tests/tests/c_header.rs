//! `shim-c/include/shmring.h` must describe the same layout, constants and
//! functions as the Rust ring. A C program built here prints what the header
//! says; the test compares it with the Rust definitions.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use shmover_ring::{ffi, Control, CounterLine, SegmentHeader, SlotDesc};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const PROBE: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include "shmring.h"
#define P(name, v) printf("%s %llu\n", name, (unsigned long long)(v))
int main(void) {
    P("MAGIC", SHMRING_MAGIC); P("VERSION", SHMRING_VERSION); P("PAGE", SHMRING_PAGE);
    P("CONTROL_OFFSET", SHMRING_CONTROL_OFFSET); P("DESC_OFFSET", SHMRING_DESC_OFFSET);
    P("MAX_SLOT_COUNT", SHMRING_MAX_SLOT_COUNT); P("MAX_SLOT_SIZE", SHMRING_MAX_SLOT_SIZE);
    P("MAX_RING_BYTES", SHMRING_MAX_RING_BYTES);
    P("FLAG_EOS", SHMRING_FLAG_EOS); P("FLAG_CRC", SHMRING_FLAG_CRC);
    P("DIR_TO_MOVER", SHMRING_DIR_TO_MOVER); P("DIR_FROM_MOVER", SHMRING_DIR_FROM_MOVER);
    P("sizeof header", sizeof(shmring_header_t));
    P("header.magic", offsetof(shmring_header_t, magic));
    P("header.version", offsetof(shmring_header_t, version));
    P("header.direction", offsetof(shmring_header_t, direction));
    P("header.slot_count", offsetof(shmring_header_t, slot_count));
    P("header.slot_size", offsetof(shmring_header_t, slot_size));
    P("header.desc_offset", offsetof(shmring_header_t, desc_offset));
    P("header.data_offset", offsetof(shmring_header_t, data_offset));
    P("header.total_size", offsetof(shmring_header_t, total_size));
    P("sizeof line", sizeof(shmring_counter_line_t));
    P("alignof line", _Alignof(shmring_counter_line_t));
    P("line.counter", offsetof(shmring_counter_line_t, counter));
    P("line.waiting", offsetof(shmring_counter_line_t, waiting));
    P("line.closed", offsetof(shmring_counter_line_t, closed));
    P("line.wake_at", offsetof(shmring_counter_line_t, wake_at));
    P("sizeof control", sizeof(shmring_control_t));
    P("control.consumer", offsetof(shmring_control_t, consumer));
    P("sizeof desc", sizeof(shmring_desc_t));
    P("desc.len", offsetof(shmring_desc_t, len));
    P("desc.flags", offsetof(shmring_desc_t, flags));
    P("desc.crc", offsetof(shmring_desc_t, crc));
    P("OK", SHMRING_OK); P("ERR_INVALID", SHMRING_ERR_INVALID);
    P("ERR_TIMEOUT", SHMRING_ERR_TIMEOUT); P("ERR_PEER_GONE", SHMRING_ERR_PEER_GONE);
    P("ERR_CORRUPT", SHMRING_ERR_CORRUPT); P("ERR_FINISHED", SHMRING_ERR_FINISHED);
    P("ERR_ORDER", SHMRING_ERR_ORDER); P("ERR_SEGMENT", SHMRING_ERR_SEGMENT);
    P("ERR_IO", SHMRING_ERR_IO); P("ERR_INTERNAL", SHMRING_ERR_INTERNAL);
    return 0;
}
"#;

fn header_says() -> BTreeMap<String, u64> {
    probe("ring", PROBE)
}

/// Compiles and runs a C program that prints `name value` lines.
fn probe(tag: &str, program: &str) -> BTreeMap<String, u64> {
    let dir = std::env::temp_dir().join(format!("shmover-hdr-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("probe.c");
    let exe = dir.join("probe");
    std::fs::write(&src, program).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(workspace().join("shim-c/include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("a C compiler");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn the_c_header_matches_the_rust_layout_and_constants() {
    let c = header_says();
    let rust: Vec<(&str, u64)> = vec![
        ("MAGIC", shmover_ring::MAGIC),
        ("VERSION", shmover_ring::VERSION.into()),
        ("PAGE", shmover_ring::PAGE as u64),
        ("CONTROL_OFFSET", shmover_ring::CONTROL_OFFSET as u64),
        ("DESC_OFFSET", shmover_ring::DESC_OFFSET as u64),
        ("MAX_SLOT_COUNT", shmover_ring::MAX_SLOT_COUNT.into()),
        ("MAX_SLOT_SIZE", shmover_ring::MAX_SLOT_SIZE.into()),
        ("MAX_RING_BYTES", shmover_ring::MAX_RING_BYTES),
        ("FLAG_EOS", shmover_ring::FLAG_EOS.into()),
        ("FLAG_CRC", shmover_ring::FLAG_CRC.into()),
        ("DIR_TO_MOVER", shmover_ring::Direction::ToMover as u64),
        ("DIR_FROM_MOVER", shmover_ring::Direction::FromMover as u64),
        ("sizeof header", size_of::<SegmentHeader>() as u64),
        ("header.magic", offset_of!(SegmentHeader, magic) as u64),
        ("header.version", offset_of!(SegmentHeader, version) as u64),
        (
            "header.direction",
            offset_of!(SegmentHeader, direction) as u64,
        ),
        (
            "header.slot_count",
            offset_of!(SegmentHeader, slot_count) as u64,
        ),
        (
            "header.slot_size",
            offset_of!(SegmentHeader, slot_size) as u64,
        ),
        (
            "header.desc_offset",
            offset_of!(SegmentHeader, desc_offset) as u64,
        ),
        (
            "header.data_offset",
            offset_of!(SegmentHeader, data_offset) as u64,
        ),
        (
            "header.total_size",
            offset_of!(SegmentHeader, total_size) as u64,
        ),
        ("sizeof line", size_of::<CounterLine>() as u64),
        ("alignof line", std::mem::align_of::<CounterLine>() as u64),
        ("line.counter", offset_of!(CounterLine, counter) as u64),
        ("line.waiting", offset_of!(CounterLine, waiting) as u64),
        ("line.closed", offset_of!(CounterLine, closed) as u64),
        ("line.wake_at", offset_of!(CounterLine, wake_at) as u64),
        ("sizeof control", size_of::<Control>() as u64),
        ("control.consumer", offset_of!(Control, consumer) as u64),
        ("sizeof desc", size_of::<SlotDesc>() as u64),
        ("desc.len", offset_of!(SlotDesc, len) as u64),
        ("desc.flags", offset_of!(SlotDesc, flags) as u64),
        ("desc.crc", offset_of!(SlotDesc, crc) as u64),
        ("OK", ffi::SHMRING_OK as u64),
        ("ERR_INVALID", ffi::SHMRING_ERR_INVALID as u64),
        ("ERR_TIMEOUT", ffi::SHMRING_ERR_TIMEOUT as u64),
        ("ERR_PEER_GONE", ffi::SHMRING_ERR_PEER_GONE as u64),
        ("ERR_CORRUPT", ffi::SHMRING_ERR_CORRUPT as u64),
        ("ERR_FINISHED", ffi::SHMRING_ERR_FINISHED as u64),
        ("ERR_ORDER", ffi::SHMRING_ERR_ORDER as u64),
        ("ERR_SEGMENT", ffi::SHMRING_ERR_SEGMENT as u64),
        ("ERR_IO", ffi::SHMRING_ERR_IO as u64),
        ("ERR_INTERNAL", ffi::SHMRING_ERR_INTERNAL as u64),
    ];
    for (name, value) in &rust {
        assert_eq!(
            c.get(*name),
            Some(value),
            "{name}: header and Rust disagree"
        );
    }
    assert_eq!(
        c.len(),
        rust.len(),
        "the probe prints something the test does not check"
    );
}

/// Names of the functions following `marker` (`extern "C" fn `).
fn functions(text: &str, marker: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let i = l.find(marker)?;
            let rest = &l[i + marker.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest[name.len()..].starts_with('(').then_some(name)
        })
        .collect()
}

fn declared_in(header: &str, prefix: &str) -> Vec<String> {
    let mut declared: Vec<String> = header
        .lines()
        .filter(|l| !l.trim_start().starts_with('*') && !l.trim_start().starts_with("/*"))
        .flat_map(|l| {
            l.match_indices(prefix)
                .filter_map(|(start, _)| {
                    let name: String = l[start..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    l[start + name.len()..].starts_with('(').then_some(name)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    declared.sort();
    declared
}

fn check_functions(header: &str, rust: &str, prefix: &str) {
    let root = workspace();
    let header = std::fs::read_to_string(root.join(header)).unwrap();
    let rust = std::fs::read_to_string(root.join(rust)).unwrap();
    let declared = declared_in(&header, prefix);
    let mut exported: Vec<String> = functions(&rust, "extern \"C\" fn ")
        .into_iter()
        .filter(|f| f.starts_with(prefix))
        .collect();
    exported.sort();
    assert!(exported.len() >= 8, "found {exported:?}");
    assert_eq!(declared, exported);
}

#[test]
fn every_exported_ring_function_is_declared_in_its_header_and_no_other() {
    check_functions("shim-c/include/shmring.h", "ringbuf/src/ffi.rs", "shmring_");
}

#[test]
fn every_exported_client_function_is_declared_in_its_header_and_no_other() {
    check_functions(
        "shim-c/include/shmover_client.h",
        "mover/client/src/ffi.rs",
        "shmover_",
    );
}

const CLIENT_PROBE: &str = r#"
#include <stdio.h>
#include "shmover_client.h"
#define P(name, v) printf("%s %lld\n", name, (long long)(v))
int main(void) {
    P("KIND_GENERIC", SHMOVER_KIND_GENERIC); P("KIND_SBT", SHMOVER_KIND_SBT);
    P("KIND_BACKINT", SHMOVER_KIND_BACKINT); P("OK", SHMOVER_OK); P("END", SHMOVER_END);
    P("BAD_FRAME", SHMOVER_ERR_BAD_FRAME); P("UNSUPPORTED_VERSION", SHMOVER_ERR_UNSUPPORTED_VERSION);
    P("NOT_ALLOWED", SHMOVER_ERR_NOT_ALLOWED); P("BAD_NAME", SHMOVER_ERR_BAD_NAME);
    P("NOT_FOUND", SHMOVER_ERR_NOT_FOUND); P("ALREADY_EXISTS", SHMOVER_ERR_ALREADY_EXISTS);
    P("WRONG_STATE", SHMOVER_ERR_WRONG_STATE); P("STORE", SHMOVER_ERR_STORE);
    P("RING", SHMOVER_ERR_RING); P("RESOURCE", SHMOVER_ERR_RESOURCE);
    P("INVALID_ARGUMENT", SHMOVER_ERR_INVALID_ARGUMENT); P("CHECKSUM", SHMOVER_ERR_CHECKSUM);
    P("SIZE_MISMATCH", SHMOVER_ERR_SIZE_MISMATCH); P("INTERNAL", SHMOVER_ERR_INTERNAL);
    P("UNREACHABLE", SHMOVER_ERR_UNREACHABLE); P("DISCONNECTED", SHMOVER_ERR_DISCONNECTED);
    P("PROTOCOL", SHMOVER_ERR_PROTOCOL); P("TIMEOUT", SHMOVER_ERR_TIMEOUT); P("IO", SHMOVER_ERR_IO);
    return 0;
}
"#;

#[test]
fn the_client_header_constants_match_the_protocol_and_the_library() {
    use shmover_client::{code, ffi as cffi};
    use shmover_proto::{ClientKind, ErrorCode};
    let c = probe("client", CLIENT_PROBE);
    let rust: Vec<(&str, i64)> = vec![
        ("KIND_GENERIC", ClientKind::Generic as i64),
        ("KIND_SBT", ClientKind::Sbt as i64),
        ("KIND_BACKINT", ClientKind::Backint as i64),
        ("OK", cffi::SHMOVER_OK as i64),
        ("END", cffi::SHMOVER_END as i64),
        ("BAD_FRAME", ErrorCode::BadFrame as i64),
        ("UNSUPPORTED_VERSION", ErrorCode::UnsupportedVersion as i64),
        ("NOT_ALLOWED", ErrorCode::NotAllowed as i64),
        ("BAD_NAME", ErrorCode::BadName as i64),
        ("NOT_FOUND", ErrorCode::NotFound as i64),
        ("ALREADY_EXISTS", ErrorCode::AlreadyExists as i64),
        ("WRONG_STATE", ErrorCode::WrongState as i64),
        ("STORE", ErrorCode::Store as i64),
        ("RING", ErrorCode::Ring as i64),
        ("RESOURCE", ErrorCode::Resource as i64),
        ("INVALID_ARGUMENT", ErrorCode::InvalidArgument as i64),
        ("CHECKSUM", ErrorCode::Checksum as i64),
        ("SIZE_MISMATCH", ErrorCode::SizeMismatch as i64),
        ("INTERNAL", ErrorCode::Internal as i64),
        ("UNREACHABLE", code::UNREACHABLE as i64),
        ("DISCONNECTED", code::DISCONNECTED as i64),
        ("PROTOCOL", code::PROTOCOL as i64),
        ("TIMEOUT", code::TIMEOUT as i64),
        ("IO", code::IO as i64),
    ];
    for (name, value) in &rust {
        assert_eq!(
            c.get(*name).copied(),
            Some(*value as u64),
            "{name}: header and Rust disagree"
        );
    }
    assert_eq!(c.len(), rust.len());
    assert_eq!(
        cffi::SHMOVER_ERR_INTERNAL as i64,
        ErrorCode::Internal as i64
    );
}

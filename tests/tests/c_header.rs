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
    let dir = std::env::temp_dir().join(format!("shmover-hdr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("probe.c");
    let exe = dir.join("probe");
    std::fs::write(&src, PROBE).unwrap();
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

/// Names of `shmring_*` functions, in declaration order.
fn functions(text: &str, marker: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let i = l.find(marker)?;
            let rest = &l[i + marker.len()..];
            let start = rest.find("shmring_")?;
            let name: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest[start + name.len()..].starts_with('(').then_some(name)
        })
        .collect()
}

#[test]
fn every_exported_function_is_declared_in_the_header_and_no_other() {
    let root = workspace();
    let header = std::fs::read_to_string(root.join("shim-c/include/shmring.h")).unwrap();
    let rust = std::fs::read_to_string(root.join("ringbuf/src/ffi.rs")).unwrap();
    let mut declared: Vec<String> = header
        .lines()
        .filter(|l| !l.trim_start().starts_with('*') && !l.trim_start().starts_with("/*"))
        .filter_map(|l| {
            let start = l.find("shmring_")?;
            let name: String = l[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            l[start + name.len()..].starts_with('(').then_some(name)
        })
        .collect();
    let mut exported = functions(&rust, "extern \"C\" fn ");
    declared.sort();
    exported.sort();
    assert!(exported.len() >= 8, "found {exported:?}");
    assert_eq!(declared, exported);
}

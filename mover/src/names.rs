//! Object names: validation, and the store keys they map to.
//!
//! A name is 1 to 1024 bytes of UTF-8, segments separated by `/`. Refused:
//! NUL and other control characters, empty segments (so no leading,
//! trailing or doubled `/`), and `.` or `..` segments, so that no name can
//! climb out of its namespace. Each client kind has its own namespace.
//!
//! Keys: the manifest of `name` is `catalog/<kind>/<name>.manifest`; its
//! data is `data/<kind>/<name>.<unique id>.data`, so that a second writer
//! of the same name never overwrites committed bytes (the manifest, created
//! with "create if absent", decides who wins). Every key in `catalog/` ends
//! in `.manifest`, so the catalog is a plain listing.

use object_store::path::{Path, PathPart};
use shmover_proto::ClientKind;

/// Longest name accepted, in bytes.
pub const MAX_NAME: usize = 1024;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("the name is empty")]
    Empty,
    /// Longer than [`MAX_NAME`] bytes.
    #[error("the name is {0} bytes long; the limit is 1024")]
    TooLong(usize),
    /// A NUL or another control character.
    #[error("the name contains a control character (byte {0:#04x})")]
    Control(u8),
    /// An empty, `.` or `..` segment.
    #[error("the name has an empty, '.' or '..' segment")]
    BadSegment,
}

/// Checks a name against the rules above.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong(name.len()));
    }
    if let Some(b) = name.bytes().find(|b| *b < 0x20 || *b == 0x7f) {
        return Err(NameError::Control(b));
    }
    if name
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(NameError::BadSegment);
    }
    Ok(())
}

/// The namespace folder of a client kind.
pub fn namespace(kind: ClientKind) -> &'static str {
    match kind {
        ClientKind::Sbt => "sbt",
        ClientKind::Backint => "backint",
        ClientKind::Generic | ClientKind::Unspecified => "generic",
    }
}

fn key(root: &str, kind: ClientKind, name: &str, suffix: &str) -> Path {
    let segs: Vec<&str> = name.split('/').collect();
    let last = segs.len() - 1;
    let mut parts: Vec<PathPart<'static>> = vec![
        PathPart::from(root.to_string()),
        PathPart::from(namespace(kind).to_string()),
    ];
    for (i, s) in segs.iter().enumerate() {
        if i == last {
            parts.push(PathPart::from(format!("{s}{suffix}")));
        } else {
            parts.push(PathPart::from(s.to_string()));
        }
    }
    Path::from_iter(parts)
}

/// The manifest key of a (validated) name.
pub fn manifest_key(kind: ClientKind, name: &str) -> Path {
    key("catalog", kind, name, ".manifest")
}

/// A fresh data key for a (validated) name.
pub fn data_key(kind: ClientKind, name: &str, unique: &str) -> Path {
    key("data", kind, name, &format!(".{unique}.data"))
}

/// The listing prefix (a directory) and the key prefix string for names
/// starting with `prefix`.
pub fn catalog_prefix(kind: ClientKind, prefix: &str) -> (Path, String) {
    let base = Path::from_iter([PathPart::from("catalog"), PathPart::from(namespace(kind))]);
    if prefix.is_empty() {
        let s = format!("{base}/");
        return (base, s);
    }
    let segs: Vec<&str> = prefix.split('/').collect();
    let (dirs, last) = segs.split_at(segs.len() - 1);
    let mut dir = base;
    for d in dirs.iter().filter(|d| !d.is_empty()) {
        dir = dir.join(PathPart::from(d.to_string()));
    }
    let last = last[0];
    let full = if last.is_empty() {
        format!("{dir}/")
    } else {
        format!("{dir}/{}", PathPart::from(last.to_string()).as_ref())
    };
    (dir, full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_with_slashes_are_accepted() {
        for n in [
            "a",
            "db1/piece_1_1",
            "/x".trim_start_matches('/'),
            "with space/and'quote",
            "üñí/çødé",
        ] {
            assert_eq!(validate(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn names_that_could_escape_or_confuse_are_refused() {
        assert_eq!(validate(""), Err(NameError::Empty));
        assert_eq!(validate(&"x".repeat(1025)), Err(NameError::TooLong(1025)));
        assert_eq!(validate(&"x".repeat(1024)), Ok(()));
        assert_eq!(validate("a\0b"), Err(NameError::Control(0)));
        assert_eq!(validate("a\nb"), Err(NameError::Control(b'\n')));
        for n in [
            "..", "a/../b", "../a", "a/..", ".", "a/./b", "/a", "a/", "a//b",
        ] {
            assert_eq!(validate(n), Err(NameError::BadSegment), "{n}");
        }
    }

    #[test]
    fn kinds_have_separate_namespaces() {
        assert_ne!(
            manifest_key(ClientKind::Sbt, "x"),
            manifest_key(ClientKind::Backint, "x")
        );
        assert_eq!(
            manifest_key(ClientKind::Sbt, "d/x").as_ref(),
            "catalog/sbt/d/x.manifest"
        );
        assert_eq!(
            data_key(ClientKind::Generic, "d/x", "u1").as_ref(),
            "data/generic/d/x.u1.data"
        );
    }

    #[test]
    fn a_name_and_a_name_below_it_do_not_collide() {
        // "x" and "x/y" must both be storable: "x" is never a directory key.
        let a = manifest_key(ClientKind::Generic, "x");
        let b = manifest_key(ClientKind::Generic, "x/y");
        assert!(!b.as_ref().starts_with(&format!("{}/", a.as_ref())));
    }

    #[test]
    fn prefixes_map_to_a_directory_and_a_key_prefix() {
        let (dir, s) = catalog_prefix(ClientKind::Sbt, "db1/pi");
        assert_eq!(dir.as_ref(), "catalog/sbt/db1");
        assert_eq!(s, "catalog/sbt/db1/pi");
        let (dir, s) = catalog_prefix(ClientKind::Sbt, "");
        assert_eq!(dir.as_ref(), "catalog/sbt");
        assert_eq!(s, "catalog/sbt/");
        assert!(manifest_key(ClientKind::Sbt, "db1/piece")
            .as_ref()
            .starts_with("catalog/sbt/db1/pi"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any string is either refused, or maps to keys that stay in
            /// its kind's namespace, survive a parse, and keep the name's
            /// segments (no escape with `..`, no lost or merged segment).
            #[test]
            fn accepted_names_stay_in_their_namespace(
                name in prop_oneof![
                    ".{0,64}",
                    "[a-z./%\\\\ ]{0,24}",
                    proptest::collection::vec("(\\.|\\.\\.|[a-z%]{0,3})", 0..6).prop_map(|v| v.join("/")),
                ]
            ) {
                if validate(&name).is_ok() {
                    for (key, root) in [
                        (manifest_key(ClientKind::Sbt, &name), "catalog/sbt/"),
                        (data_key(ClientKind::Sbt, &name, "u1"), "data/sbt/"),
                    ] {
                        prop_assert!(key.as_ref().starts_with(root), "{} for {:?}", key, name);
                        let again = Path::parse(key.as_ref()).unwrap();
                        prop_assert_eq!(&again, &key);
                        // root (2 segments) + one per name segment
                        prop_assert_eq!(key.parts().count(), 2 + name.split('/').count());
                        prop_assert!(key.parts().all(|p| p.as_ref() != ".." && p.as_ref() != "."));
                    }
                } else {
                    let bad = name.is_empty()
                        || name.len() > MAX_NAME
                        || name.bytes().any(|b| b < 0x20 || b == 0x7f)
                        || name.split('/').any(|s| s.is_empty() || s == "." || s == "..");
                    prop_assert!(bad, "{:?} was refused", name);
                }
            }
        }
    }
}

//! The content-addressed spec store.

#![allow(clippy::unwrap_used)]

use fluxrig_iso8583::bundled::BUNDLED;
use fluxrig_iso8583::store::{SpecStore, StoreError};

#[test]
fn import_is_idempotent_and_listing_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpecStore::new(dir.path());
    assert!(store.list().unwrap().is_empty());
    let (name, yaml) = BUNDLED[0];
    let a = store.import(name, yaml).unwrap();
    let b = store.import(name, yaml).unwrap();
    assert_eq!(a.hash, b.hash);
    assert_eq!(
        a.path,
        dir.path()
            .join("specs/sha256")
            .join(format!("{}.yaml", a.hash.to_hex()))
    );
    // Reformatted (comments stripped) is the same spec.
    let stripped: String =
        yaml.lines()
            .filter(|l| !l.starts_with('#'))
            .fold(String::new(), |mut s, l| {
                s.push_str(l);
                s.push('\n');
                s
            });
    assert_eq!(store.import("x", &stripped).unwrap().hash, a.hash);
    for (n, y) in &BUNDLED[1..] {
        store.import(n, y).unwrap();
    }
    let all = store.list().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(store.find(name).unwrap().hash(), a.hash);
    assert_eq!(store.find(&a.hash.to_hex()[..10]).unwrap().hash(), a.hash);
    assert!(matches!(store.find("nope"), Err(StoreError::NotFound(_))));
}

#[test]
fn a_tampered_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpecStore::new(dir.path());
    let (name, yaml) = BUNDLED[0];
    let s = store.import(name, yaml).unwrap();
    let changed = yaml.replace("max: 19", "max: 18");
    std::fs::write(&s.path, changed).unwrap();
    match store.load(&s.hash) {
        Err(StoreError::HashMismatch { expected, .. }) => assert_eq!(expected, s.hash),
        other => panic!("{other:?}"),
    }
    assert!(store.list().is_err());
}

#[test]
fn invalid_specs_are_not_imported() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpecStore::new(dir.path());
    let e = store.import("bad.yaml", "sdl: 2\n").unwrap_err();
    assert!(e.to_string().starts_with("bad.yaml:"), "{e}");
    assert!(store.list().unwrap().is_empty());
}

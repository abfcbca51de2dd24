//! Replays, on stable, every fuzz seed (tests/fuzz/corpus/TARGET/) and every kept crash or
//! hand-made hostile input (tests/data/fuzz/TARGET/) through the fuzz targets' own entry points
//! and invariants (tests/fuzz/src/lib.rs).

#[path = "fuzz/src/lib.rs"]
mod invariants;

use std::path::{Path, PathBuf};

const ROOTS: [&str; 2] = ["tests/fuzz/corpus", "tests/data/fuzz"];

/// The inputs of `target` under both roots; at least one under each.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for root in ROOTS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(root)
            .join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        assert!(!files.is_empty(), "no inputs in {}", dir.display());
        files.sort();
        all.extend(files);
    }
    all
}

/// Runs every input of `target`, naming each one that panics.
fn replay(target: &str, check: fn(&[u8])) {
    let failed: Vec<String> = inputs(target)
        .into_iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("readable input");
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "invariants broken by {failed:#?}");
}

#[test]
fn every_input_dir_is_a_known_target() {
    for root in ROOTS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(root);
        for entry in std::fs::read_dir(&dir).expect("input root") {
            let name = entry.expect("directory entry").file_name();
            assert!(
                ["stratum_ethproxy", "stratum_nicehash", "http_body"]
                    .contains(&name.to_string_lossy().as_ref()),
                "{}: no replay for {name:?}",
                dir.display()
            );
        }
    }
}

#[test]
fn stratum_ethproxy() {
    replay("stratum_ethproxy", invariants::stratum_ethproxy);
}

#[test]
fn stratum_nicehash() {
    replay("stratum_nicehash", invariants::stratum_nicehash);
}

#[test]
fn http_body() {
    replay("http_body", invariants::http_body);
}

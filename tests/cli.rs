//! The engine's CLI contract: `hash` JSON output, `dag` files, and one-line errors with status 2.

mod common;

use std::process::Command;

use common::json_of;

fn dagproxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dagproxy"))
}

const HEADER: &str = "0xc9149cc0386e689d789a1c2f3d5d169a61a6218ed30e74414dc736e442ef3d1f";

#[test]
fn hash_prints_the_contract_json_in_both_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    for mode in ["light", "full"] {
        let v = json_of(
            dagproxy()
                .args([
                    "hash",
                    "--chain",
                    "test",
                    "--block",
                    "0",
                    "--header-hash",
                    HEADER,
                ])
                .args([
                    "--nonce",
                    "0x0000000000000000",
                    "--mode",
                    mode,
                    "--data-dir",
                ])
                .arg(dir.path()),
        );
        assert_eq!(v["epoch"], 0);
        assert_eq!(v["cache_size"], 1024);
        assert_eq!(v["dataset_size"], 32768);
        assert_eq!(v["seed_hash"], format!("0x{}", "0".repeat(64)));
        assert_eq!(
            v["mix_digest"],
            "0xe4073cffaef931d37117cefd9afd27ea0f1cad6a981dd2605c4a1ac97c519800"
        );
        assert_eq!(
            v["result"],
            "0xd3539235ee2e6f8db665c0a72169f55b7f6c605712330b778ec3944f0eb5a557"
        );
    }
}

#[test]
fn hash_on_classic_after_activation_reports_etchash_epoch() {
    let v = json_of(
        dagproxy()
            .args([
                "hash",
                "--chain",
                "classic",
                "--block",
                "11700000",
                "--header-hash",
                HEADER,
            ])
            .args(["--nonce", "0x0000000000000001"]),
    );
    assert_eq!(v["epoch"], 195);
}

#[test]
fn dag_writes_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = json_of(
        dagproxy()
            .args(["dag", "--chain", "test", "--block", "30000", "--data-dir"])
            .arg(dir.path()),
    );
    let path = v["path"].as_str().expect("path");
    assert_eq!(std::fs::metadata(path).expect("file").len(), 64 + 32768);
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let cases: [&[&str]; 5] = [
        &[
            "hash",
            "--chain",
            "nope",
            "--header-hash",
            HEADER,
            "--nonce",
            "0x0000000000000000",
        ],
        &[
            "hash",
            "--chain",
            "test",
            "--header-hash",
            "0x1234",
            "--nonce",
            "0x0000000000000000",
        ],
        &[
            "hash",
            "--chain",
            "test",
            "--header-hash",
            HEADER,
            "--nonce",
            "0x00zz000000000000",
        ],
        &[
            "hash",
            "--chain",
            "test",
            "--block",
            "-1",
            "--header-hash",
            HEADER,
            "--nonce",
            "0x00",
        ],
        &["frobnicate"],
    ];
    for args in cases {
        let out = dagproxy().args(args).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

/// `bench cpu --json`: both engines measured on the same dataset, agreeing, with ratios and
/// the memory ceiling (the test chain's 32 KiB dataset keeps it to a fraction of a second).
#[test]
fn bench_cpu_reports_both_engines_and_the_memory_ceiling() {
    let v = json_of(
        dagproxy()
            .args(["bench", "cpu", "--chain", "test", "--block", "0"])
            .args(["--seconds", "0.05", "--json"]),
    );
    for part in ["ours", "ethash_crate", "ratio"] {
        for rate in ["light_per_core", "full_per_core", "dataset_items_per_core"] {
            let x = v[part][rate].as_f64().unwrap_or(0.0);
            assert!(x > 0.0, "{part}.{rate} in {v}");
        }
    }
    assert_eq!(v["outputs_agree"], serde_json::json!(true), "{v}");
    assert_eq!(v["dataset_size"], serde_json::json!(32 * 1024), "{v}");
    let ceiling = v["full_memory_ceiling_per_core"].as_f64().unwrap_or(0.0);
    let full = v["ours"]["full_per_core"].as_f64().unwrap_or(0.0);
    let fraction = v["full_fraction_of_ceiling"].as_f64().unwrap_or(0.0);
    assert!(ceiling > 0.0, "{v}");
    assert!((fraction - full / ceiling).abs() < 1e-9, "{v}");
}

//! The verifier's CLI contract: `verify` JSON lines in order with an error line for a bad line,
//! on every backend; `auto` without an OpenCL driver falls back to the CPU with one log line and
//! `opencl` fails clearly; `devices` and `bench verify` print their JSON.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use dagproxy::bench::inputs;
use dagproxy::ethash::{hashimoto, ChainSpec, LightCache};
use dagproxy::hexutil::{nonce_hex, to_hex};
use serde_json::Value;

fn dagproxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dagproxy"))
}

fn run_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("writes");
    child.wait_with_output().expect("runs")
}

fn has_opencl() -> bool {
    #[cfg(feature = "opencl")]
    match dagproxy::verify::opencl::platform_count() {
        Ok(_) => return true,
        Err(e) => eprintln!("skipping the OpenCL backend: {e}"),
    }
    false
}

#[test]
fn verify_answers_each_line_in_order_on_every_backend() {
    let ins = inputs(40, 1);
    let cache = LightCache::new(ChainSpec::test().epoch_info(30_000));
    let mut stdin = String::new();
    let mut want: Vec<Value> = Vec::new();
    for (k, i) in ins.iter().enumerate() {
        stdin += &format!(
            "{{\"header_hash\":\"{}\",\"nonce\":\"{}\"}}\n",
            to_hex(&i.header_hash),
            nonce_hex(i.nonce)
        );
        let o = hashimoto(&cache, i);
        want.push(
            serde_json::json!({"mix_digest": to_hex(&o.mix_digest), "result": to_hex(&o.result)}),
        );
        if k == 10 {
            stdin += "not json\n";
            want.push(Value::Null);
        }
        if k == 20 {
            stdin += "{\"header_hash\":\"0x12\",\"nonce\":\"0x0000000000000001\"}\n";
            want.push(Value::Null);
        }
    }
    let mut kinds = vec!["cpu", "cpu-light"];
    if has_opencl() {
        kinds.push("opencl");
    }
    for kind in kinds {
        let mut cmd = dagproxy();
        cmd.args([
            "verify",
            "--chain",
            "test",
            "--block",
            "30001",
            "--verifier",
            kind,
        ]);
        let out = run_with_stdin(cmd, &stdin);
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = String::from_utf8(out.stdout)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("each output line is JSON"))
            .collect();
        assert_eq!(lines.len(), want.len(), "{kind}");
        for (k, (got, want)) in lines.iter().zip(&want).enumerate() {
            if want.is_null() {
                assert!(got["error"].is_string(), "{kind} line {k}: {got}");
            } else {
                assert_eq!(got, want, "{kind} line {k}");
            }
        }
    }
}

#[test]
fn without_an_opencl_driver_auto_uses_the_cpu_and_opencl_fails() {
    let empty = tempfile::tempdir().expect("tempdir");
    let line = format!(
        "{{\"header_hash\":\"{}\",\"nonce\":\"0x0000000000000000\"}}\n",
        to_hex(&[0u8; 32])
    );
    let mut cmd = dagproxy();
    cmd.env("OCL_ICD_VENDORS", empty.path()).args([
        "verify",
        "--chain",
        "test",
        "--verifier",
        "auto",
    ]);
    let out = run_with_stdin(cmd, &line);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("verifying on the CPU"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["mix_digest"].is_string(), "{v}");

    let mut cmd = dagproxy();
    cmd.env("OCL_ICD_VENDORS", empty.path()).args([
        "verify",
        "--chain",
        "test",
        "--verifier",
        "opencl",
    ]);
    let out = run_with_stdin(cmd, &line);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no OpenCL platform"), "{err}");

    let out = dagproxy()
        .env("OCL_ICD_VENDORS", empty.path())
        .args(["devices", "--json"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["devices"], serde_json::json!([]));
    assert!(v["error"].is_string(), "{v}");
}

#[test]
fn devices_lists_the_opencl_device() {
    if !has_opencl() {
        return;
    }
    let out = dagproxy()
        .args(["devices", "--json"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let d = &v["devices"][0];
    assert!(
        d["name"].is_string() && d["max_alloc"].as_u64() > Some(0),
        "{v}"
    );
    assert!(d["global_mem"].as_u64() >= d["max_alloc"].as_u64(), "{v}");
}

#[test]
fn bench_verify_prints_its_report() {
    let mut kinds = vec!["cpu"];
    if has_opencl() {
        kinds.push("opencl");
    }
    for kind in kinds {
        let v: Value = common::json_of(
            dagproxy()
                .args(["bench", "verify", "--chain", "test", "--verifier", kind])
                .args(["--seconds", "0.05", "--max-batch", "64", "--json"]),
        );
        assert!(v["backend"].as_str().expect("backend").starts_with(kind));
        assert!(v["dag_seconds"].as_f64().is_some(), "{v}");
        let b = v["batches"].as_array().expect("batches");
        assert_eq!(b.len(), 2, "{v}");
        assert!(b[1]["verifications_per_s"].as_f64() > Some(0.0));
        assert!(b[1]["p99_ms"].as_f64() >= b[1]["p50_ms"].as_f64());
    }
}

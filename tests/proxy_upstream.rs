//! Upstream handling: failover between two dev chains, "Work not ready" when sick, and the
//! `dagproxy proxy` command's one-line config errors.

mod common;
mod proxy_support;

use std::time::Duration;

use dagproxy::ethash::{ChainSpec, SizeRule};
use dagproxy::hexutil::to_hex;
use proxy_support::{test_config, Devnet, TestProxy, HARD_BLOCK};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_next_healthy_node() {
    let a = Devnet::start(HARD_BLOCK).await;
    let b = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&a, &b], &redis), redis).await;
    let mut c = proxy.client().await;
    c.login().await;
    assert_eq!(c.wait_work().await[0], to_hex(&a.handle.work().header));
    a.stop.cancel();
    // The next health check switches to b and its header is pushed to the session.
    let want = json!(to_hex(&b.handle.work().header));
    let mut switched = false;
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_secs(3), c.read()).await {
            Ok(Some(push)) if push["result"][0] == want => {
                switched = true;
                break;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    assert!(switched, "work from the backup node");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sick_proxy_answers_work_not_ready() {
    let a = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let mut config = test_config(&[&a], &redis);
    config.proxy.max_fails = 5;
    let proxy = TestProxy::start(config, redis).await;
    let mut c = proxy.client().await;
    a.stop.cancel();
    let mut reply = json!(null);
    for _ in 0..100 {
        reply = c.call("eth_getWork", json!([])).await;
        if reply.get("error").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        reply["error"],
        json!({"code": 0, "message": "Work not ready"})
    );
    proxy.stop().await;
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "name = \"x\"\n[proxy.stratum]\nmaxConn = \"many\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dagproxy"))
        .args(["proxy", "--config"])
        .arg(&path)
        .output()
        .expect("run dagproxy");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("proxy.stratum.maxConn"), "{err}");

    std::fs::write(&path, "[[upstream]]\nurl = \"ftp://x\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dagproxy"))
        .args(["proxy", "--config"])
        .arg(&path)
        .output()
        .expect("run dagproxy");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream.url"));

    std::fs::write(&path, "[metrics]\nlisten = \"nonsense\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dagproxy"))
        .args(["proxy", "--config"])
        .arg(&path)
        .output()
        .expect("run dagproxy");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("metrics.listen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_from_another_chain_is_refused() {
    // Etchash-style epochs: at block 90,000 the node's seed is the 2nd, the test preset's the 3rd.
    let alt = ChainSpec::custom("alt", 30_000, Some((60_000, 60_000)), SizeRule::Test);
    let node = Devnet::start_chain(alt, 90_000, HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::spawn(test_config(&[&node], &redis), redis).await;
    let mut c = proxy.client().await;
    // Several refresh intervals pass; no work from the wrong DAG is ever handed out.
    for _ in 0..10 {
        let r = c.call("eth_getWork", json!([])).await;
        assert_eq!(
            r["error"],
            json!({"code": 0, "message": "Work not ready"}),
            "{r}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    proxy.stop().await;
}

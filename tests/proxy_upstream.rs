//! Upstream handling: failover between two dev chains and back to the recovered first one,
//! "Work not ready" while the only node is down and work again once it is back, and the
//! `dagproxy proxy` command's one-line config errors.

mod common;
mod proxy_support;

use std::time::{Duration, Instant};

use dagproxy::ethash::{ChainSpec, SizeRule};
use dagproxy::hexutil::to_hex;
use proxy_support::{test_config, Client, Devnet, TestProxy, HARD_BLOCK};
use serde_json::{json, Value};

/// Reads job pushes until one carries `header`; how long that took, or `None` after `limit`.
async fn until_pushed(c: &mut Client, header: [u8; 32], limit: Duration) -> Option<Duration> {
    let want = json!(to_hex(&header));
    let started = Instant::now();
    while started.elapsed() < limit {
        match tokio::time::timeout(Duration::from_millis(500), c.read()).await {
            Ok(Some(push)) if push["result"][0] == want => return Some(started.elapsed()),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_next_healthy_node_and_back() {
    let mut a = Devnet::start(HARD_BLOCK).await;
    let b = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&a, &b], &redis), redis).await;
    let mut c = proxy.client().await;
    c.login().await;
    assert_eq!(c.wait_work().await[0], to_hex(&a.handle.work().header));
    // The first health check after the kill (every 100 ms) switches to b, and b's work is
    // pushed to the session. The bound is loose on purpose: a busy CI box, not the proxy,
    // sets how late a 100 ms tick can run.
    a.kill().await;
    let took = until_pushed(&mut c, b.handle.work().header, Duration::from_secs(10)).await;
    let took = took.expect("work from the backup node");
    assert!(took < Duration::from_secs(5), "failover took {took:?}");
    // a comes back: after 5 good health checks it is healthy again, and as the first node
    // in the list it is current again.
    a.restart().await;
    let back = until_pushed(&mut c, a.handle.work().header, Duration::from_secs(10)).await;
    back.expect("work from the recovered primary");
    let r = c.call("eth_getWork", json!([])).await;
    assert_eq!(r["result"][0], json!(to_hex(&a.handle.work().header)));
    proxy.stop().await;
}

/// Polls `eth_getWork` until `done` accepts the reply (or 5 s pass); the last reply.
async fn poll_work(c: &mut Client, done: impl Fn(&Value) -> bool) -> Value {
    let mut reply = json!(null);
    for _ in 0..250 {
        reply = c.call("eth_getWork", json!([])).await;
        if done(&reply) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sick_proxy_answers_work_not_ready_until_the_node_is_back() {
    let mut a = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let mut config = test_config(&[&a], &redis);
    config.proxy.max_fails = 5;
    let proxy = TestProxy::start(config, redis).await;
    let mut c = proxy.client().await;
    a.kill().await;
    let reply = poll_work(&mut c, |r| !r["error"].is_null()).await;
    assert_eq!(
        reply["error"],
        json!({"code": 0, "message": "Work not ready"})
    );
    // The node comes back: the next good refresh clears the failures and work resumes.
    a.restart().await;
    let reply = poll_work(&mut c, |r| r["result"].is_array()).await;
    assert_eq!(
        reply["result"][0],
        json!(to_hex(&a.handle.work().header)),
        "{reply}"
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

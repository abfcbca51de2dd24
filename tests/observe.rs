//! The observability endpoints against a real proxy, dev chain and redis-server: `/health`
//! flips to ready when a template arrives, `/metrics` counts shares by verdict, sessions and
//! Redis errors, `/stats` has its fields.

mod common;
mod proxy_support;

use std::collections::HashMap;
use std::time::Duration;

use dagproxy::devnet::{self, DevnetConfig};
use dagproxy::ethash::{ChainSpec, U256};
use proxy_support::{grind, test_config, Devnet, Quality, TestProxy, HARD_BLOCK};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url)
        .await
        .expect("observability server answers");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

/// `name{labels}` → value for every sample line.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line is `name value`");
            (k.to_string(), v.parse().expect("numeric value"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_stats_follow_the_proxy() {
    // The node's port is reserved but nobody serves it yet: the proxy has no template.
    let node = TcpListener::bind("127.0.0.1:0").await.expect("bind node");
    let node_url = format!("http://{}/", node.local_addr().expect("addr"));
    let placeholder = Devnet::start(HARD_BLOCK).await;
    placeholder.stop.cancel();
    let redis = common::RedisServer::start();
    let mut config = test_config(&[&placeholder], &redis);
    config.upstream[0].url = node_url;
    config.upstream[0].timeout = dagproxy::config::Dur(Duration::from_millis(200));
    let proxy = TestProxy::spawn(config, redis).await;
    let base = format!("http://{}", proxy.metrics);

    let (status, body) = get(&format!("{base}/health")).await;
    assert_eq!(status, 503, "{body}");
    let reason: Value = serde_json::from_str(&body).expect("JSON reason");
    assert_eq!(reason["reason"], json!("no block template yet"), "{body}");
    let (_, stats) = get(&format!("{base}/stats")).await;
    let stats: Value = serde_json::from_str(&stats).expect("stats JSON");
    assert_eq!(stats["height"], Value::Null);
    assert_eq!(stats["ready"], json!(false));

    // The node comes up: health turns ready.
    let stop = CancellationToken::new();
    let (dev, _task) = devnet::spawn(
        node,
        DevnetConfig {
            chain: ChainSpec::test(),
            difficulty: U256::from(HARD_BLOCK),
            block_time: Duration::ZERO,
            start_block: 1,
        },
        stop.clone(),
    )
    .expect("devnet");
    let mut healthy = (0, String::new());
    for _ in 0..200 {
        healthy = get(&format!("{base}/health")).await;
        if healthy.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(healthy.0, 200, "{}", healthy.1);

    // One valid and one low-difficulty share over Stratum.
    let mut c = proxy.client().await;
    c.login().await;
    c.wait_work().await;
    let work = dev.work();
    let valid = grind(work.number, work.header, HARD_BLOCK, Quality::Share, 0);
    let r = c.call("eth_submitWork", json!(valid)).await;
    assert_eq!(r["result"], json!(true), "{r}");
    let low = grind(work.number, work.header, HARD_BLOCK, Quality::Low, 0);
    let r = c.call("eth_submitWork", json!(low)).await;
    assert_eq!(r["result"], json!(false), "{r}");

    let (status, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let m = samples(&text);
    let at = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} missing in\n{text}"));
    assert_eq!(at("dagproxy_shares_total{verdict=\"valid\"}"), 1.0);
    assert_eq!(at("dagproxy_shares_total{verdict=\"low_difficulty\"}"), 1.0);
    assert_eq!(at("dagproxy_shares_total{verdict=\"stale\"}"), 0.0);
    assert_eq!(at("dagproxy_blocks_found_total"), 0.0);
    assert_eq!(at("dagproxy_stratum_sessions{dialect=\"ethproxy\"}"), 1.0);
    assert_eq!(
        at("dagproxy_stratum_sessions{dialect=\"ethereumstratum\"}"),
        0.0
    );
    // cpu-light holds no dataset: the light path, nothing generated.
    assert_eq!(at("dagproxy_dag_progress{epoch=\"0\"}"), 0.0);
    assert_eq!(at("dagproxy_template_height"), work.number as f64);
    assert_eq!(at("dagproxy_template_difficulty"), HARD_BLOCK as f64);
    assert_eq!(at("dagproxy_verifier_ready"), 1.0);
    assert_eq!(at("dagproxy_sick"), 0.0);
    assert_eq!(at("dagproxy_upstream_failures"), 0.0);
    assert_eq!(at("dagproxy_redis_write_errors_total"), 0.0);
    let redis_info = format!(
        "dagproxy_redis_info{{addr=\"127.0.0.1:{}\"}}",
        proxy.redis.port
    );
    assert_eq!(at(&redis_info), 1.0);
    // Only a store that asks sentinels for its master has their failure gauge.
    assert!(!text.contains("dagproxy_redis_sentinel_failed_lookups"));
    // One valid share written in one round trip; both shares timed to their verdict.
    assert_eq!(at("dagproxy_redis_write_batch_size_sum"), 1.0);
    assert_eq!(at("dagproxy_redis_write_seconds_count"), 1.0);
    assert!(at("dagproxy_redis_write_seconds_sum") > 0.0);
    assert_eq!(at("dagproxy_share_seconds_count"), 2.0);
    assert_eq!(at("dagproxy_share_seconds_bucket{le=\"+Inf\"}"), 2.0);
    // Both shares were hashed, in one or two batches of at most two.
    assert_eq!(at("dagproxy_verify_batch_size_sum"), 2.0);
    assert_eq!(
        at("dagproxy_verify_batch_size_bucket{le=\"2\"}"),
        at("dagproxy_verify_batch_size_count")
    );
    assert_eq!(
        at("dagproxy_verify_batch_seconds_count"),
        at("dagproxy_verify_batch_size_count")
    );
    assert!(at("dagproxy_verify_batch_seconds_bucket{le=\"+Inf\"}") >= 1.0);
    assert_eq!(
        at("dagproxy_verifier_info{backend=\"cpu-light\",device=\"host\"}"),
        1.0
    );
    assert!(
        m.keys()
            .any(|k| k.starts_with("dagproxy_upstream_info{name=\"dev0\"")),
        "{text}"
    );
    assert!(
        m.keys()
            .any(|k| k.starts_with("dagproxy_dag_epoch{epoch=\"0\"")),
        "{text}"
    );

    let (_, stats) = get(&format!("{base}/stats")).await;
    let stats: Value = serde_json::from_str(&stats).expect("stats JSON");
    assert_eq!(stats["height"], json!(work.number));
    assert_eq!(stats["difficulty"], json!(HARD_BLOCK.to_string()));
    assert_eq!(stats["upstream"], json!("dev0"));
    assert_eq!(stats["backend"], json!("cpu-light"));
    assert_eq!(stats["sessions"], json!(1));
    assert_eq!(stats["sessionsByDialect"]["ethproxy"], json!(1));
    assert_eq!(stats["shares"]["valid"], json!(1));
    assert_eq!(stats["shares"]["low_difficulty"], json!(1));
    assert_eq!(stats["ready"], json!(true));
    assert!(stats["uptime"].is_u64(), "{stats}");

    // Redis goes away: the next valid share is refused and counted as a Redis error.
    let mut proxy = proxy;
    proxy.redis.kill();
    let next = grind(work.number, work.header, HARD_BLOCK, Quality::Share, 1);
    let r = c.call("eth_submitWork", json!(next)).await;
    assert!(r.get("error").is_some(), "{r}");
    let m = samples(&get(&format!("{base}/metrics")).await.1);
    assert_eq!(m.get("dagproxy_redis_write_errors_total"), Some(&1.0));
    assert_eq!(
        m.get("dagproxy_shares_total{verdict=\"storage_down\"}"),
        Some(&1.0)
    );

    // The session closes: the gauge follows.
    drop(c);
    let mut sessions = f64::NAN;
    for _ in 0..200 {
        sessions = samples(&get(&format!("{base}/metrics")).await.1)
            ["dagproxy_stratum_sessions{dialect=\"ethproxy\"}"];
        if sessions == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(sessions, 0.0);
    proxy.stop().await;
    stop.cancel();
}

/// stderr of `dagproxy [args] verify` over empty stdin, with `env` set.
fn verify_logs(args: &[&str], env: Option<&str>) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dagproxy"));
    cmd.args(args)
        .args(["verify", "--chain", "test", "--verifier", "cpu-light"])
        .env_remove("DAGPROXY_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null());
    if let Some(v) = env {
        cmd.env("DAGPROXY_LOG_FORMAT", v);
    }
    let out = cmd.output().expect("run dagproxy");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stderr).expect("utf-8 logs")
}

#[test]
fn logs_are_json_lines_when_asked() {
    for (args, env) in [
        (&["--log-format", "json"][..], None),
        (&[][..], Some("json")),
    ] {
        let logs = verify_logs(args, env);
        assert!(!logs.trim().is_empty(), "no log lines");
        for line in logs.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(v["level"], json!("INFO"), "{line}");
            assert!(v["fields"]["message"].is_string(), "{line}");
        }
    }
    let text = verify_logs(&[], None);
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "{text}"
    );
    assert!(text.contains("INFO"), "{text}");
}

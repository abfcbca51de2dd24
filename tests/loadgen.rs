//! The load generator against a small Stratum pool in this file that verifies every share with
//! the engine and stores it with the real storage module in a real redis-server: the report's
//! counts and its Redis check (nothing lost, nothing double counted) are right, and a pool that
//! acknowledges shares it never stored is caught. Then EthereumStratum/1.0.0 and mixed-dialect
//! load against the real proxy.

mod common;
mod proxy_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dagproxy::ethash::target::{target_from_difficulty, target_hex};
use dagproxy::ethash::{hashimoto, ChainSpec, LightCache, PowInput, U256};
use dagproxy::hexutil::{parse_h256, parse_nonce, to_hex};
use dagproxy::loadgen::{self, LoadDialect, LoadgenConfig};
use dagproxy::storage::{RedisStore, ShareRecord, WriteOutcome};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SHARE_DIFF: u64 = 20;

/// Serves Stratum until dropped; `skip_store_every`: acknowledge every n-th valid share
/// without storing it (a broken pool).
async fn harness_pool(
    listener: TcpListener,
    store: RedisStore,
    skip_store_every: u64,
    unstored: Arc<AtomicU64>,
) {
    let info = ChainSpec::test().epoch_info(0);
    let cache = Arc::new(LightCache::new(info));
    let header = [0x33u8; 32];
    let target = target_from_difficulty(U256::from(SHARE_DIFF)).expect("target");
    let counter = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let (store, cache, counter, unstored) = (
            store.clone(),
            cache.clone(),
            counter.clone(),
            unstored.clone(),
        );
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut lines = BufReader::new(r).lines();
            let mut login = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let req: Value = serde_json::from_str(&line).expect("json");
                let id = req["id"].clone();
                let reply = match req["method"].as_str() {
                    Some("eth_submitLogin") => {
                        login = req["params"][0].as_str().expect("login").to_string();
                        json!({"id": id, "result": true})
                    }
                    Some("eth_getWork") => json!({"id": id, "result":
                        [to_hex(&header), to_hex(&info.seed), target_hex(target)]}),
                    Some("eth_submitWork") => {
                        let p: Vec<&str> = req["params"]
                            .as_array()
                            .expect("params")
                            .iter()
                            .map(|v| v.as_str().expect("str"))
                            .collect();
                        let nonce = parse_nonce(p[0]).expect("nonce");
                        let h = parse_h256(p[1], "h").expect("h");
                        let mix = parse_h256(p[2], "m").expect("m");
                        let out = hashimoto(
                            &*cache,
                            &PowInput {
                                header_hash: h,
                                nonce,
                            },
                        );
                        if h != header
                            || out.mix_digest != mix
                            || U256::from_be_bytes(out.result) > target
                        {
                            json!({"id": id, "result": false})
                        } else {
                            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                            let share = ShareRecord {
                                login: login.clone(),
                                worker: "lg".into(),
                                nonce: p[0].into(),
                                pow_hash: p[1].into(),
                                mix_digest: p[2].into(),
                                difficulty: SHARE_DIFF,
                                height: 1,
                            };
                            if skip_store_every > 0 && n % skip_store_every == 0 {
                                if store.pow_exists(&share).await.expect("redis") {
                                    json!({"id": id, "result": null,
                                           "error": {"code": 22, "message": "Duplicate share"}})
                                } else {
                                    unstored.fetch_add(1, Ordering::Relaxed);
                                    json!({"id": id, "result": true})
                                }
                            } else {
                                match store.write_share(&share).await.expect("redis") {
                                    WriteOutcome::Stored => json!({"id": id, "result": true}),
                                    WriteOutcome::Duplicate => json!({"id": id, "result": null,
                                        "error": {"code": 22, "message": "Duplicate share"}}),
                                }
                            }
                        }
                    }
                    _ => json!({"id": id, "result": null,
                                "error": {"code": -3, "message": "Method not found"}}),
                };
                if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn setup(r: &common::RedisServer, skip: u64) -> (String, Arc<AtomicU64>) {
    let store = RedisStore::connect(&r.url(), "eth", Duration::from_secs(3600))
        .await
        .expect("redis");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let unstored = Arc::new(AtomicU64::new(0));
    tokio::spawn(harness_pool(listener, store, skip, unstored.clone()));
    (addr, unstored)
}

fn cfg(addr: String, r: &common::RedisServer, rate: Option<f64>, invalid: f64) -> LoadgenConfig {
    LoadgenConfig {
        stratum: addr,
        redis: r.url(),
        prefix: "eth".into(),
        connections: 8,
        duration: Duration::from_millis(1500),
        rate,
        invalid,
        chain: ChainSpec::test(),
        dialect: LoadDialect::EthProxy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_with_invalid_shares_reports_nothing_lost() {
    let r = common::RedisServer::start();
    let (addr, _) = setup(&r, 0).await;
    let rep = loadgen::run(cfg(addr, &r, Some(400.0), 0.3), CancellationToken::new())
        .await
        .expect("loadgen");
    assert!(rep.acknowledged > 50, "{rep:?}");
    assert_eq!(rep.found_in_redis, rep.acknowledged, "{rep:?}");
    assert_eq!(rep.lost, 0);
    assert_eq!(rep.double_counted, 0);
    assert_eq!(rep.hashrate_members, rep.acknowledged);
    assert_eq!(
        rep.round_shares,
        (rep.acknowledged * SHARE_DIFF).to_string()
    );
    assert_eq!(rep.share_difficulty, SHARE_DIFF.to_string());
    assert!(rep.invalid_sent > 10, "{rep:?}");
    assert_eq!(rep.invalid_accepted, 0, "{rep:?}");
    assert_eq!(rep.valid_rejected, 0, "{rep:?}");
    assert_eq!(rep.replies, rep.sent);
    assert!(rep.p50_ms > 0.0 && rep.p99_ms >= rep.p50_ms);
    assert_eq!(rep.connections, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_catches_a_pool_that_acks_unstored_shares() {
    let r = common::RedisServer::start();
    let (addr, unstored) = setup(&r, 10).await;
    let rep = loadgen::run(cfg(addr, &r, None, 0.0), CancellationToken::new())
        .await
        .expect("loadgen");
    let skipped = unstored.load(Ordering::Relaxed);
    assert!(skipped > 0, "{rep:?}");
    assert_eq!(rep.lost, skipped, "{rep:?}");
    assert_eq!(rep.found_in_redis + skipped, rep.acknowledged);
    assert_eq!(rep.double_counted, 0);
}

/// The proxy (CPU light verifier, share difficulty 4) on a dev chain that finds no blocks.
async fn real_proxy() -> (proxy_support::Devnet, proxy_support::TestProxy) {
    use proxy_support::{test_config, Devnet, TestProxy};
    let dev = Devnet::start(u64::MAX).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    (dev, proxy)
}

fn proxy_cfg(
    proxy: &proxy_support::TestProxy,
    dialect: LoadDialect,
    rate: Option<f64>,
    invalid: f64,
) -> LoadgenConfig {
    LoadgenConfig {
        stratum: proxy.stratum.to_string(),
        redis: proxy.redis.url(),
        prefix: "eth".into(),
        connections: 8,
        duration: Duration::from_millis(1500),
        rate,
        invalid,
        chain: ChainSpec::test(),
        dialect,
    }
}

/// What must hold for any run against the real proxy.
fn assert_clean(rep: &loadgen::LoadReport) {
    eprintln!("{}", serde_json::to_string(rep).expect("json"));
    assert!(rep.acknowledged > 0, "{rep:?}");
    assert_eq!(rep.found_in_redis, rep.acknowledged, "{rep:?}");
    assert_eq!(rep.lost, 0, "{rep:?}");
    assert_eq!(rep.double_counted, 0, "{rep:?}");
    assert_eq!(rep.invalid_accepted, 0, "{rep:?}");
    assert_eq!(rep.valid_rejected, 0, "{rep:?}");
    assert_eq!(rep.unanswered, 0, "{rep:?}");
    assert_eq!(rep.hashrate_members, rep.acknowledged, "{rep:?}");
    let diff = proxy_support::SHARE_DIFF;
    assert_eq!(rep.share_difficulty, diff.to_string(), "{rep:?}");
    assert_eq!(rep.round_shares, (rep.acknowledged * diff).to_string());
    assert_eq!(
        rep.acknowledged_ethproxy + rep.acknowledged_ethereumstratum,
        rep.acknowledged
    );
    // One steal figure per latency window, where /proc/stat has one.
    if std::path::Path::new("/proc/stat").exists() {
        assert_eq!(
            rep.host_steal_pct_by_10s.len(),
            rep.p99_ms_by_10s.len(),
            "{rep:?}"
        );
    }
    assert!(
        rep.host_steal_pct_by_10s
            .iter()
            .all(|p| (0.0..=100.0).contains(p)),
        "{rep:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereumstratum_load_against_the_proxy() {
    let (_dev, proxy) = real_proxy().await;
    // Open loop with low-difficulty, duplicate and unknown-job submissions.
    let cfg = proxy_cfg(&proxy, LoadDialect::EthereumStratum, Some(300.0), 0.3);
    let rep = loadgen::run(cfg, CancellationToken::new())
        .await
        .expect("loadgen");
    assert_clean(&rep);
    assert_eq!(rep.acknowledged_ethproxy, 0, "{rep:?}");
    assert_eq!(rep.ethereumstratum_connections, 8, "{rep:?}");
    assert_eq!(rep.dialect, "ethereumstratum");
    assert!(rep.invalid_sent > 10, "{rep:?}");
    assert_eq!(rep.replies, rep.sent, "{rep:?}");
    // The proxy saw each kind of bad submission, and nothing else.
    let text = reqwest::get(format!("http://{}/metrics", proxy.metrics))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let verdict = |v: &str| {
        let key = format!("dagproxy_shares_total{{verdict=\"{v}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{key} in\n{text}"))
    };
    let (low, dup, stale) = (
        verdict("low_difficulty"),
        verdict("duplicate"),
        verdict("stale"),
    );
    assert!(low > 0 && dup > 0 && stale > 0, "{low} {dup} {stale}");
    assert_eq!(low + dup + stale, rep.invalid_sent, "{rep:?}");
    assert_eq!(verdict("valid"), rep.acknowledged);
    // Closed loop.
    let cfg = proxy_cfg(&proxy, LoadDialect::EthereumStratum, None, 0.0);
    let rep = loadgen::run(cfg, CancellationToken::new())
        .await
        .expect("loadgen");
    assert_clean(&rep);
    assert_eq!(rep.acknowledged_ethproxy, 0, "{rep:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_dialect_load_against_the_proxy() {
    let (_dev, proxy) = real_proxy().await;
    let cfg = proxy_cfg(&proxy, LoadDialect::Mixed, Some(300.0), 0.3);
    let rep = loadgen::run(cfg, CancellationToken::new())
        .await
        .expect("loadgen");
    assert_clean(&rep);
    assert_eq!(
        (rep.ethproxy_connections, rep.ethereumstratum_connections),
        (4, 4)
    );
    assert!(rep.acknowledged_ethproxy > 0, "{rep:?}");
    assert!(rep.acknowledged_ethereumstratum > 0, "{rep:?}");
    assert!(rep.invalid_sent > 10, "{rep:?}");
    let cfg = proxy_cfg(&proxy, LoadDialect::Mixed, None, 0.0);
    let rep = loadgen::run(cfg, CancellationToken::new())
        .await
        .expect("loadgen");
    assert_clean(&rep);
    assert!(rep.acknowledged_ethproxy > 0, "{rep:?}");
    assert!(rep.acknowledged_ethereumstratum > 0, "{rep:?}");
    proxy.stop().await;
}

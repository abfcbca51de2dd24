//! Vardiff through a real Stratum session, dev chain and Redis: a fast miner's difficulty
//! doubles with the next job (the pushed job carries the new target), shares are checked against
//! the target their job was issued with and credited in Redis at its difficulty.

mod common;
mod proxy_support;

use std::collections::HashMap;
use std::time::Duration;

use dagproxy::config::Dur;
use dagproxy::ethash::target::{target_from_difficulty, target_hex};
use dagproxy::ethash::{hashimoto, ChainSpec, LightCache, PowInput, U256};
use dagproxy::hexutil::{nonce_hex, to_hex};
use proxy_support::{grind, test_config, Devnet, Quality, TestProxy, HARD_BLOCK, LOGIN};
use redis::Commands;
use serde_json::json;

fn target(d: u64) -> U256 {
    target_from_difficulty(U256::from(d)).expect("target")
}

/// A solution whose result meets difficulty `lo` but (if `hi` > lo) not `hi`; nonces from
/// 2^20 up, away from those `grind` finds.
fn grind_between(height: u64, header: [u8; 32], lo: u64, hi: u64) -> [String; 3] {
    let cache = LightCache::new(ChainSpec::test().epoch_info(height));
    for nonce in 1u64 << 20.. {
        let out = hashimoto(
            &cache,
            &PowInput {
                header_hash: header,
                nonce,
            },
        );
        let v = U256::from_be_bytes(out.result);
        if v <= target(lo) && (hi <= lo || v > target(hi)) && v > target(HARD_BLOCK) {
            return [nonce_hex(nonce), to_hex(&header), to_hex(&out.mix_digest)];
        }
    }
    unreachable!()
}

fn credited(proxy: &TestProxy) -> i64 {
    let round: HashMap<String, i64> = proxy
        .redis
        .con()
        .hgetall("eth:shares:roundCurrent")
        .expect("round");
    round.get(LOGIN).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_miner_gets_a_doubled_target_with_the_next_job() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let mut config = test_config(&[&dev], &redis);
    let v = &mut config.proxy.stratum.vardiff;
    v.enabled = true;
    v.target_time = Dur(Duration::from_secs(10));
    v.retarget_time = Dur(Duration::from_millis(50));
    v.min_diff = 2;
    v.max_diff = 64;
    let proxy = TestProxy::start(config, redis).await;
    let mut c = proxy.client().await;
    c.login().await;
    let work = c.wait_work().await;
    assert_eq!(work[2], target_hex(target(4)), "starts at proxy.difficulty");
    let w1 = dev.handle.work();
    for skip in 0..3 {
        let share = grind(w1.number, w1.header, HARD_BLOCK, Quality::Share, skip);
        let r = c.call("eth_submitWork", json!(share)).await;
        assert_eq!(r["result"], json!(true), "{r}");
    }
    assert_eq!(credited(&proxy), 12);
    // Same header again: same target, whatever the rate.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(c.wait_work().await[2], target_hex(target(4)));

    // 3 shares in ~0.1 s against one per 10 s: the next job doubles (at most) the difficulty.
    dev.handle.advance();
    let push = c.read().await.expect("a job push");
    assert_eq!(push["id"], json!(0));
    let w2 = dev.handle.work();
    assert_eq!(push["result"][0], json!(to_hex(&w2.header)));
    assert_eq!(push["result"][2], json!(target_hex(target(8))));

    // New job: a share meeting 4 but not 8 is low; one meeting 8 is credited 8.
    let low = grind_between(w2.number, w2.header, 4, 8);
    let r = c.call("eth_submitWork", json!(low)).await;
    assert_eq!(r["result"], json!(false), "{r}");
    let good = grind_between(w2.number, w2.header, 8, 0);
    let r = c.call("eth_submitWork", json!(good)).await;
    assert_eq!(r["result"], json!(true), "{r}");
    assert_eq!(credited(&proxy), 20);
    // The previous job (still in the stale window) keeps its difficulty: credited 4.
    let old = grind_between(w1.number, w1.header, 4, 8);
    let r = c.call("eth_submitWork", json!(old)).await;
    assert_eq!(r["result"], json!(true), "{r}");
    assert_eq!(credited(&proxy), 24);
    let hashrate: Vec<String> = proxy
        .redis
        .con()
        .zrange(format!("eth:hashrate:{LOGIN}"), 0, -1)
        .expect("zrange");
    let mut diffs: Vec<&str> = hashrate
        .iter()
        .filter_map(|m| m.split(':').next())
        .collect();
    diffs.sort_unstable();
    assert_eq!(diffs, ["4", "4", "4", "4", "8"]);
    proxy.stop().await;
}

//! A full EthereumStratum/1.0.0 (NiceHash) session against the proxy, a real Redis and dev
//! chain: subscribe, authorize, difficulty and job, then valid, duplicate, low, unknown-job and
//! block-finding submits, with the nonce built from the session's extranonce.

mod common;
mod proxy_support;

use std::collections::HashMap;
use std::time::Duration;

use dagproxy::ethash::target::target_from_difficulty;
use dagproxy::ethash::{hashimoto, ChainSpec, LightCache, PowInput, U256};
use dagproxy::hexutil::nonce_hex;
use dagproxy::proxy::{self, Listeners};
use dagproxy::stratum::nicehash::from_nicehash;
use proxy_support::{
    header_of, test_config, Client, Devnet, TestProxy, HARD_BLOCK, LOGIN, SHARE_DIFF,
};
use redis::Commands;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BLOCK_DIFF: u64 = 16;

/// The first nonce with this extranonce whose result is in `(hi_target, lo_target]`, counting
/// the miner part from `from`.
fn grind(height: u64, header: [u8; 32], extranonce: u64, from: u64, want_block: bool) -> u64 {
    let cache = LightCache::new(ChainSpec::test().epoch_info(height));
    let share = target_from_difficulty(U256::from(SHARE_DIFF)).expect("target");
    let block = target_from_difficulty(U256::from(BLOCK_DIFF)).expect("target");
    for part in from.. {
        let nonce = (extranonce << 48) | part;
        let out = hashimoto(
            &cache,
            &PowInput {
                header_hash: header,
                nonce,
            },
        );
        let v = U256::from_be_bytes(out.result);
        let hit = if want_block {
            v <= block
        } else {
            v <= share && v > block
        };
        if hit {
            return part;
        }
    }
    unreachable!()
}

/// The first nonce with a result above the share target.
fn grind_low(height: u64, header: [u8; 32], extranonce: u64) -> u64 {
    let cache = LightCache::new(ChainSpec::test().epoch_info(height));
    let share = target_from_difficulty(U256::from(SHARE_DIFF)).expect("target");
    (0u64..)
        .find(|part| {
            let out = hashimoto(
                &cache,
                &PowInput {
                    header_hash: header,
                    nonce: (extranonce << 48) | part,
                },
            );
            U256::from_be_bytes(out.result) > share
        })
        .expect("some nonce is low")
}

async fn call(c: &mut Client, id: u64, method: &str, params: Value) -> Value {
    let line = json!({"id": id, "method": method, "params": params});
    c.send_raw(format!("{line}\n").as_bytes()).await;
    loop {
        let v = c.read().await.expect("connection open");
        if v["id"] == json!(id) {
            return v;
        }
        assert!(v["id"].is_null(), "unexpected {v}");
    }
}

async fn notification(c: &mut Client, method: &str) -> Value {
    loop {
        let v = c.read().await.expect("connection open");
        if v["method"] == json!(method) {
            return v["params"].clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_session_with_valid_duplicate_stale_low_and_block() {
    let dev = Devnet::start(BLOCK_DIFF).await;
    let redis = common::RedisServer::start();
    let config = test_config(&[&dev], &redis);
    let bind = || TcpListener::bind("127.0.0.1:0");
    let (stratum, http, nh) = (
        bind().await.expect("bind"),
        bind().await.expect("bind"),
        bind().await.expect("bind"),
    );
    let nh_addr = nh.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(proxy::run(
        Listeners {
            stratum: Some(stratum),
            http: Some(http),
            nicehash: Some(nh),
            metrics: None,
        },
        config.check().expect("valid"),
        shutdown.clone(),
    ));

    let mut c = Client::connect(nh_addr).await;
    let r = call(
        &mut c,
        1,
        "mining.subscribe",
        json!(["test/1.0", "EthereumStratum/1.0.0"]),
    )
    .await;
    assert_eq!(r["result"][0][0], json!("mining.notify"));
    let en_hex = r["result"][1].as_str().expect("extranonce").to_string();
    assert_eq!(en_hex.len(), 4);
    let en = u64::from_str_radix(&en_hex, 16).expect("hex");
    let r = call(&mut c, 2, "mining.extranonce.subscribe", json!([])).await;
    assert_eq!(r["result"], json!(true));
    // A second session gets another extranonce.
    let mut other = Client::connect(nh_addr).await;
    let r2 = call(&mut other, 1, "mining.subscribe", json!([])).await;
    assert_ne!(r2["result"][1], json!(en_hex));

    // Authorize until the proxy has work (the first template may still be on its way).
    let mut job = None;
    for attempt in 0..100u64 {
        let r = call(
            &mut c,
            10 + attempt,
            "mining.authorize",
            json!([format!("{LOGIN}.rig1"), "x"]),
        )
        .await;
        assert_eq!(r["result"], json!(true), "{r}");
        let d = notification(&mut c, "mining.set_difficulty").await;
        // NiceHash units: SHARE_DIFF hashes are SHARE_DIFF / 2^32.
        let nh = d[0].as_f64().expect("number");
        assert!(
            (nh * 4_294_967_296.0 - SHARE_DIFF as f64).abs() < 1e-6,
            "{d}"
        );
        assert_eq!(from_nicehash(nh), Some(SHARE_DIFF));
        if dev.handle.height() > 0 {
            let n = tokio::time::timeout(
                Duration::from_millis(500),
                notification(&mut c, "mining.notify"),
            )
            .await;
            if let Ok(n) = n {
                job = Some(n);
                break;
            }
        }
    }
    let job = job.expect("a job");
    let w = dev.handle.work();
    let bare = |h: &[u8; 32]| hex::encode(h);
    assert_eq!(job[1], json!(bare(&w.seed)));
    assert_eq!(job[2], json!(bare(&w.header)));
    assert_eq!(job[3], json!(true));
    let job_id = job[0].as_str().expect("job id").to_string();
    let header = header_of(&format!("0x{}", bare(&w.header)));
    let part = |p: u64| format!("{p:012x}");

    let submit = |id: u64, job: &str, p: u64| (id, json!([format!("{LOGIN}.rig1"), job, part(p)]));
    let s = grind(w.number, header, en, 0, false);
    let (id, params) = submit(100, &job_id, s);
    let r = call(&mut c, id, "mining.submit", params.clone()).await;
    assert_eq!(r, json!({"id": 100, "result": true, "error": null}));
    let mut con = redis.con();
    let round: HashMap<String, i64> = con.hgetall("eth:shares:roundCurrent").expect("round");
    assert_eq!(round.get(LOGIN), Some(&(SHARE_DIFF as i64)));
    let rates: Vec<String> = con
        .zrange(format!("eth:hashrate:{LOGIN}"), 0, -1)
        .expect("zrange");
    assert!(
        rates[0].starts_with(&format!("{SHARE_DIFF}:rig1:")),
        "{rates:?}"
    );
    let pow: Vec<String> = con.zrange("eth:pow", 0, -1).expect("pow");
    assert!(
        pow[0].starts_with(&format!("{}:", nonce_hex((en << 48) | s))),
        "{pow:?}"
    );

    let r = call(&mut c, 101, "mining.submit", params).await;
    assert_eq!(r["error"][0], json!(22), "duplicate: {r}");
    let (id, params) = submit(102, "0000beef", s + 1);
    let r = call(&mut c, id, "mining.submit", params).await;
    assert_eq!(r["error"][0], json!(21), "unknown job is stale: {r}");
    let (id, params) = submit(103, &job_id, grind_low(w.number, header, en));
    let r = call(&mut c, id, "mining.submit", params).await;
    assert_eq!(r["error"][0], json!(23), "low: {r}");
    let r = call(&mut c, 104, "mining.submit", json!([LOGIN, &job_id, "12"])).await;
    assert_eq!(r["error"][0], json!(20), "short nonce: {r}");

    // A block: the node gets it, Redis records it, a new job follows.
    let b = grind(w.number, header, en, 0, true);
    let (id, params) = submit(105, &job_id, b);
    let r = call(&mut c, id, "mining.submit", params).await;
    assert_eq!(r["result"], json!(true), "{r}");
    let accepted = dev.handle.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].nonce, (en << 48) | b);
    let candidates: Vec<String> = con.zrange("eth:blocks:candidates", 0, -1).expect("zrange");
    assert_eq!(candidates.len(), 1);
    assert!(
        candidates[0].starts_with(&nonce_hex((en << 48) | b)),
        "{candidates:?}"
    );
    let next = notification(&mut c, "mining.notify").await;
    assert_ne!(next[0], json!(job_id));
    assert_eq!(next[2], json!(bare(&dev.handle.work().header)));

    // Three more heights: the first job's header leaves the template window, so its id,
    // still known to the session, is stale too.
    for _ in 0..3 {
        dev.handle.advance();
        notification(&mut c, "mining.notify").await;
    }
    let late = grind(w.number, header, en, s + 1, false);
    let (id, params) = submit(106, &job_id, late);
    let r = call(&mut c, id, "mining.submit", params).await;
    assert_eq!(r["error"][0], json!(21), "expired job is stale: {r}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .expect("task")
        .expect("clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detected_from_the_first_message_on_the_ethproxy_port() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    // An EthProxy session on the same port is unaffected.
    let mut eth = proxy.client().await;
    eth.login().await;
    let mut c = proxy.client().await;
    let r = call(
        &mut c,
        1,
        "mining.subscribe",
        json!(["test/1.0", "EthereumStratum/1.0.0"]),
    )
    .await;
    assert_eq!(r["result"][0][2], json!("EthereumStratum/1.0.0"));
    let en = u64::from_str_radix(r["result"][1].as_str().expect("extranonce"), 16).expect("hex");
    let mut c2 = proxy.client().await;
    let r2 = call(&mut c2, 1, "mining.subscribe", json!([])).await;
    assert_ne!(r2["result"][1], r["result"][1], "extranonces are unique");
    let r = call(&mut c, 2, "mining.authorize", json!([LOGIN, "x"])).await;
    assert_eq!(r["result"], json!(true));
    let job = notification(&mut c, "mining.notify").await;
    let w = dev.handle.work();
    assert_eq!(job[2], json!(hex::encode(w.header)));
    let part = grind(w.number, w.header, en, 0, false);
    let r = call(
        &mut c,
        3,
        "mining.submit",
        json!([LOGIN, job[0], format!("{part:012x}")]),
    )
    .await;
    assert_eq!(r["result"], json!(true), "{r}");
    // EthProxy methods are not NiceHash ones.
    let r = call(&mut c, 4, "eth_getWork", json!([])).await;
    assert_eq!(r["error"][0], json!(-3));
    let w2 = eth.wait_work().await;
    assert_eq!(w2[0], dagproxy::hexutil::to_hex(&w.header));
    proxy.stop().await;
}

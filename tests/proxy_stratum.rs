//! The proxy over Stratum against a real redis-server and dev chain: login, work, every share
//! verdict, the Redis keys of a valid share, block found, job pushes, bad lines, Redis outage.

mod common;
mod proxy_support;

use std::collections::HashMap;
use std::time::Duration;

use dagproxy::ethash::target::{target_from_difficulty, target_hex};
use dagproxy::ethash::U256;
use dagproxy::hexutil::to_hex;
use proxy_support::{
    grind, header_of, test_config, Devnet, Quality, TestProxy, HARD_BLOCK, LOGIN, SHARE_DIFF,
};
use redis::Commands;
use serde_json::json;

fn code(v: &serde_json::Value) -> i64 {
    v["error"]["code"].as_i64().expect("an error reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_flow_writes_every_key_and_answers_every_verdict() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    let mut c = proxy.client().await;

    let r = c
        .call("eth_submitWork", json!(["0x00", "0x00", "0x00"]))
        .await;
    assert_eq!(
        (code(&r), r["error"]["message"].as_str()),
        (25, Some("Not subscribed"))
    );
    let r = c.call("eth_submitLogin", json!(["0x1234"])).await;
    assert_eq!(r["error"]["message"], "Invalid login");
    let r = c.call("eth_submitLogin", json!([])).await;
    assert_eq!(r["error"]["message"], "Invalid params");
    c.login().await;

    let work = c.wait_work().await;
    let devwork = dev.handle.work();
    assert_eq!(work[0], to_hex(&devwork.header));
    assert_eq!(work[1], to_hex(&devwork.seed));
    let share_target = target_from_difficulty(U256::from(SHARE_DIFF)).expect("target");
    assert_eq!(work[2], target_hex(share_target));
    let height = devwork.number;

    // A valid share with the request's worker field.
    let [n, h, m] = grind(height, devwork.header, HARD_BLOCK, Quality::Share, 0);
    let line = json!({"id": 50, "jsonrpc": "2.0", "method": "eth_submitWork",
                      "params": [n, h, m], "worker": "rig1"});
    c.send_raw(format!("{line}\n").as_bytes()).await;
    let r = c.reply(50).await;
    assert_eq!(r, json!({"id": 50, "jsonrpc": "2.0", "result": true}));

    let mut con = proxy.redis.con();
    let round: HashMap<String, i64> = con.hgetall("eth:shares:roundCurrent").expect("round");
    assert_eq!(
        round,
        HashMap::from([(LOGIN.to_string(), SHARE_DIFF as i64)])
    );
    let round_shares: i64 = con.hget("eth:stats", "roundShares").expect("stats");
    assert_eq!(round_shares, SHARE_DIFF as i64);
    let hashrate: Vec<String> = con.zrange("eth:hashrate", 0, -1).expect("hashrate");
    assert_eq!(hashrate.len(), 1);
    assert!(
        hashrate[0].starts_with(&format!("{SHARE_DIFF}:{LOGIN}:rig1:")),
        "{hashrate:?}"
    );
    let mine: Vec<String> = con
        .zrange(format!("eth:hashrate:{LOGIN}"), 0, -1)
        .expect("zrange");
    assert_eq!(mine.len(), 1);
    assert!(
        mine[0].starts_with(&format!("{SHARE_DIFF}:rig1:")),
        "{mine:?}"
    );
    let ttl: i64 = con.ttl(format!("eth:hashrate:{LOGIN}")).expect("ttl");
    assert!(ttl > 3 * 3600 - 60 && ttl <= 3 * 3600, "ttl {ttl}");
    let last: i64 = con
        .hget(format!("eth:miners:{LOGIN}"), "lastShare")
        .expect("lastShare");
    assert!(last > 1_700_000_000);
    let pow: Vec<(String, f64)> = con.zrange_withscores("eth:pow", 0, -1).expect("pow");
    let pow: Vec<(String, f64)> = pow.into_iter().map(|(m, s)| (m, s.floor())).collect();
    assert_eq!(pow, vec![(format!("{n}:{h}:{m}"), height as f64)]);

    // The same share again.
    let r = c.call("eth_submitWork", json!([n, h, m])).await;
    assert_eq!(
        (code(&r), r["error"]["message"].as_str()),
        (22, Some("Duplicate share"))
    );
    // Wrong mix, low difficulty, stale header: a plain false.
    let mut bad_mix = header_of(&m);
    bad_mix[0] ^= 1;
    let r = c
        .call("eth_submitWork", json!([n, h, to_hex(&bad_mix)]))
        .await;
    assert_eq!(r["result"], json!(false), "{r}");
    let [ln, lh, lm] = grind(height, devwork.header, HARD_BLOCK, Quality::Low, 0);
    let r = c.call("eth_submitWork", json!([ln, lh, lm])).await;
    assert_eq!(r["result"], json!(false), "{r}");
    let stale = [0x5a; 32];
    let [sn, sh, sm] = grind(height, stale, HARD_BLOCK, Quality::Share, 0);
    let r = c.call("eth_submitWork", json!([sn, sh, sm])).await;
    assert_eq!(r["result"], json!(false), "{r}");
    // Malformed params.
    let r = c
        .call(
            "eth_submitWork",
            json!([n, h.to_uppercase().replace("0X", "0x"), m]),
        )
        .await;
    assert_eq!(
        (code(&r), r["error"]["message"].as_str()),
        (-1, Some("Malformed PoW result"))
    );
    let r = c.call("eth_submitWork", json!([n, h])).await;
    assert_eq!(r["error"]["message"], "Invalid params");
    // Other methods.
    let r = c.call("eth_submitHashrate", json!(["0x1", "0x2"])).await;
    assert_eq!(r["result"], json!(true));
    let r = c.call("mining.subscribe", json!([])).await;
    assert_eq!(
        (code(&r), r["error"]["message"].as_str()),
        (-3, Some("Method not found"))
    );

    // Nothing but the one valid share was counted.
    let round: i64 = con.hget("eth:shares:roundCurrent", LOGIN).expect("round");
    assert_eq!(round, SHARE_DIFF as i64);
    // WriteNodeState runs on its interval.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let nodes: HashMap<String, String> = con.hgetall("eth:nodes").expect("nodes");
    assert_eq!(nodes.get("main:height"), Some(&height.to_string()));
    assert_eq!(nodes.get("main:difficulty"), Some(&HARD_BLOCK.to_string()));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_is_submitted_to_the_node_and_recorded_as_candidate() {
    const BLOCK_DIFF: u64 = 16;
    let dev = Devnet::start(BLOCK_DIFF).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    let mut c = proxy.client().await;
    c.login().await;
    let w = dev.handle.work();
    let height = w.number;
    // One plain share first: it belongs to the round the block closes.
    let share = grind(height, w.header, BLOCK_DIFF, Quality::Share, 0);
    assert_eq!(
        c.call("eth_submitWork", json!(share)).await["result"],
        json!(true)
    );
    let [n, h, m] = grind(height, w.header, BLOCK_DIFF, Quality::Block, 0);
    let r = c.call("eth_submitWork", json!([n, h, m])).await;
    assert_eq!(r["result"], json!(true), "{r}");

    let accepted = dev.handle.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(dagproxy::hexutil::nonce_hex(accepted[0].nonce), n);
    assert_eq!(accepted[0].number, height);

    let mut con = proxy.redis.con();
    let candidates: Vec<(String, f64)> = con
        .zrange_withscores("eth:blocks:candidates", 0, -1)
        .expect("candidates");
    assert_eq!(candidates.len(), 1);
    let (member, score) = &candidates[0];
    assert_eq!(*score, height as f64);
    let parts: Vec<&str> = member.split(':').collect();
    // nonce:powHash:mixDigest:ts:roundDiff:totalShares
    assert_eq!(&parts[..3], &[n.as_str(), h.as_str(), m.as_str()]);
    assert_eq!(parts[4], BLOCK_DIFF.to_string());
    assert_eq!(parts[5], (2 * SHARE_DIFF).to_string());
    let round: HashMap<String, i64> = con
        .hgetall(format!("eth:shares:round{height}:{n}"))
        .expect("round");
    assert_eq!(
        round,
        HashMap::from([(LOGIN.to_string(), 2 * SHARE_DIFF as i64)])
    );
    let exists: bool = con.exists("eth:shares:roundCurrent").expect("exists");
    assert!(!exists, "roundCurrent renamed");
    let finders: f64 = con.zscore("eth:finders", LOGIN).expect("finders");
    assert_eq!(finders, 1.0);

    // The template moves on at once: the next getWork is the next height's header.
    let mut next = c.wait_work().await;
    for _ in 0..100 {
        if next[0] != h {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        next = c.wait_work().await;
    }
    assert_eq!(next[0], to_hex(&dev.handle.work().header));
    assert_eq!(dev.handle.height(), height + 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_template_is_pushed_to_logged_in_sessions() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    let mut c = proxy.client().await;
    c.login().await;
    let first = c.wait_work().await;
    dev.handle.advance();
    let push = c.read().await.expect("a push");
    assert_eq!(push["id"], json!(0));
    assert_eq!(push["jsonrpc"], "2.0");
    let job = push["result"].as_array().expect("job");
    assert_ne!(job[0], json!(first[0]));
    assert_eq!(job[0], json!(to_hex(&dev.handle.work().header)));
    assert_eq!(job[2], json!(first[2]));
    // The previous height's header is still accepted.
    let w_old = header_of(&first[0]);
    let share = grind(
        dev.handle.height() - 1,
        w_old,
        HARD_BLOCK,
        Quality::Share,
        0,
    );
    assert_eq!(
        c.call("eth_submitWork", json!(share)).await["result"],
        json!(true)
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_lines_get_errors_and_the_session_survives() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    let mut c = proxy.client().await;
    c.login().await;
    c.send_raw(b"{this is not json\n").await;
    let r = c.read().await.expect("reply");
    assert_eq!(
        r["error"],
        json!({"code": -1, "message": "Malformed request"})
    );
    c.send_raw(b"{\"id\":9,\"params\":[]}\n").await;
    let r = c.read().await.expect("reply");
    assert_eq!(
        (r["id"].clone(), r["error"]["message"].clone()),
        (json!(9), json!("Malformed request"))
    );
    let long = format!(
        "{{\"id\":1,\"method\":\"eth_getWork\",\"pad\":\"{}\"}}\n",
        "x".repeat(5000)
    );
    c.send_raw(long.as_bytes()).await;
    let r = c.read().await.expect("reply");
    assert_eq!(
        r["error"],
        json!({"code": -1, "message": "Request too large"})
    );
    c.send_raw(b"\xff\xfe not utf-8\n").await;
    let r = c.read().await.expect("reply");
    assert_eq!(
        r["error"],
        json!({"code": -1, "message": "Malformed request"})
    );
    c.send_raw(b"\n\n").await;
    // Still logged in, still served.
    let w = dev.handle.work();
    let share = grind(w.number, w.header, HARD_BLOCK, Quality::Share, 0);
    let r = c.call("eth_submitWork", json!(share)).await;
    assert_eq!(r["result"], json!(true), "{r}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_no_share_is_acknowledged() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let port = redis.port;
    let mut proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    let mut c = proxy.client().await;
    c.login().await;
    let w = dev.handle.work();
    proxy.redis.kill();
    let share = grind(w.number, w.header, HARD_BLOCK, Quality::Share, 0);
    let r = c.call("eth_submitWork", json!(share)).await;
    assert_ne!(r["result"], json!(true), "{r}");
    assert_eq!(r["error"]["code"], json!(-1), "{r}");
    // Back up on the same port: the same share is stored now (it never was before).
    proxy.redis = common::RedisServer::start_on(port);
    let mut stored = false;
    for _ in 0..50 {
        let r = c.call("eth_submitWork", json!(share)).await;
        if r["result"] == json!(true) {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored, "share stored once Redis is back");
    let mut con = proxy.redis.con();
    let round: i64 = con.hget("eth:shares:roundCurrent", LOGIN).expect("round");
    assert_eq!(round, SHARE_DIFF as i64);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_and_acknowledges_exactly_the_stored_shares() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    let mut c = proxy.client().await;
    c.login().await;
    let w = dev.handle.work();
    let mut burst = String::new();
    for i in 0..20u64 {
        let share = grind(w.number, w.header, HARD_BLOCK, Quality::Share, i);
        let line =
            json!({"id": 100 + i, "jsonrpc": "2.0", "method": "eth_submitWork", "params": share});
        burst.push_str(&format!("{line}\n"));
    }
    c.send_raw(burst.as_bytes()).await;
    // Let the first shares in, then stop while the rest are queued or in flight.
    let first = c.read().await.expect("first reply");
    assert_eq!(first["result"], json!(true), "{first}");
    proxy.shutdown.cancel();
    let mut acked = 1;
    while let Some(r) = c.read().await {
        assert_eq!(r["result"], json!(true), "{r}");
        acked += 1;
    }
    let redis = proxy.stop().await;
    let mut con = redis.con();
    let round: i64 = con.hget("eth:shares:roundCurrent", LOGIN).expect("round");
    assert_eq!(round, acked * SHARE_DIFF as i64, "{acked} acknowledged");
}

/// A client that got a slot: logs in, retrying while an earlier connection still holds it.
async fn connect_with_slot(proxy: &TestProxy) -> proxy_support::Client {
    for _ in 0..100 {
        let mut c = proxy.client().await;
        c.send_raw(
            format!(
                "{}\n",
                json!({"id": 1, "method": "eth_submitLogin", "params": [LOGIN]})
            )
            .as_bytes(),
        )
        .await;
        if let Some(r) = c.read().await {
            assert_eq!(r["result"], json!(true), "{r}");
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no connection slot freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_and_idle_timeout() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let mut config = test_config(&[&dev], &redis);
    config.proxy.stratum.max_conn = 1;
    config.proxy.stratum.timeout = dagproxy::config::Dur(Duration::from_millis(400));
    let proxy = TestProxy::start(config, redis).await;
    let mut a = connect_with_slot(&proxy).await;
    // The only slot is taken: a second connection is closed at once.
    let mut b = proxy.client().await;
    b.send_raw(b"{\"id\":1,\"method\":\"eth_getWork\"}\n").await;
    assert!(b.read().await.is_none(), "over the cap");
    // A silent connection is closed after the idle timeout, which frees the slot.
    assert!(a.read().await.is_none(), "idle connection closed");
    let mut c = connect_with_slot(&proxy).await;
    assert!(c.call("eth_getWork", json!([])).await["result"].is_array());
    proxy.stop().await;
}

/// Requests sent back to back are checked together but answered in the order they were sent,
/// whatever their kind; a duplicate within the burst is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    let mut c = proxy.client().await;
    c.login().await;
    c.wait_work().await;
    let w = dev.handle.work();
    let shares = proxy_support::grind_many(w.number, w.header, HARD_BLOCK, 40);
    let mut burst = String::new();
    let mut expect = Vec::new();
    for (i, share) in shares.iter().enumerate() {
        let id = 1000 + i as u64;
        let req = match i {
            // A getWork, an unknown method and a duplicate of share 0 between the shares.
            10 => json!({"id": id, "jsonrpc": "2.0", "method": "eth_getWork", "params": []}),
            20 => json!({"id": id, "jsonrpc": "2.0", "method": "eth_bogus", "params": []}),
            30 => json!({"id": id, "jsonrpc": "2.0", "method": "eth_submitWork",
                         "params": shares[0]}),
            _ => json!({"id": id, "jsonrpc": "2.0", "method": "eth_submitWork", "params": share}),
        };
        expect.push((id, i));
        burst.push_str(&format!("{req}\n"));
    }
    c.send_raw(burst.as_bytes()).await;
    let mut got = Vec::new();
    while got.len() < expect.len() {
        let r = c.read().await.expect("reply");
        if r["id"] == json!(0) {
            continue; // a job push
        }
        got.push(r);
    }
    for ((id, i), r) in expect.iter().zip(&got) {
        assert_eq!(r["id"], json!(id), "replies out of order: {r}");
        match i {
            10 => assert_eq!(r["result"][0], json!(to_hex(&w.header)), "{r}"),
            20 => assert_eq!(code(r), -3, "{r}"),
            30 => assert_eq!(code(r), 22, "duplicate: {r}"),
            _ => assert_eq!(r["result"], json!(true), "{r}"),
        }
    }
    let mut con = proxy.redis.con();
    let round: i64 = con.hget("eth:shares:roundCurrent", LOGIN).expect("round");
    assert_eq!(round, 37 * SHARE_DIFF as i64);
    proxy.stop().await;
}

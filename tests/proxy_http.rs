//! HTTP getwork against a real proxy, Redis and dev chain: routes, methods, share submission
//! with the path's worker, size limits.

mod common;
mod proxy_support;

use dagproxy::hexutil::to_hex;
use proxy_support::{
    grind, test_config, Devnet, Quality, TestProxy, HARD_BLOCK, LOGIN, SHARE_DIFF,
};
use redis::Commands;
use serde_json::{json, Value};

async fn post(url: &str, body: String) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .body(body)
        .send()
        .await
        .expect("http request");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

async fn rpc(url: &str, method: &str, params: Value) -> Value {
    let body = json!({"id": 1, "jsonrpc": "2.0", "method": method, "params": params}).to_string();
    let (status, text) = post(url, body).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(text.trim()).expect("json reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getwork_submit_and_limits_over_http() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    let base = format!("http://{}", proxy.http);
    let url = format!("{base}/{}/rig2", LOGIN.to_uppercase().replace("0X", "0x"));

    let r = rpc(&url, "eth_getWork", json!([])).await;
    let w = dev.handle.work();
    assert_eq!(r["result"][0], json!(to_hex(&w.header)));
    assert_eq!(r["result"][1], json!(to_hex(&w.seed)));

    let r = rpc(&url, "eth_getBlockByNumber", json!(["pending", false])).await;
    assert_eq!(
        r["result"],
        json!({"number": format!("{:#x}", w.number), "difficulty": format!("{SHARE_DIFF:#x}")})
    );

    let share = grind(w.number, w.header, HARD_BLOCK, Quality::Share, 0);
    let r = rpc(&url, "eth_submitWork", json!(share)).await;
    assert_eq!(r, json!({"id": 1, "jsonrpc": "2.0", "result": true}));
    let r = rpc(&url, "eth_submitWork", json!(share)).await;
    assert_eq!(r["error"]["code"], json!(22));
    let r = rpc(&url, "eth_submitWork", Value::Null).await;
    assert_eq!(r["error"]["message"], json!("Malformed request"));
    let r = rpc(&url, "eth_submitHashrate", json!(["0x1", "0x2"])).await;
    assert_eq!(r["result"], json!(true));
    let r = rpc(&url, "eth_sign", json!([])).await;
    assert_eq!(
        r["error"],
        json!({"code": -3, "message": "Method not found"})
    );

    // The login was lower-cased and the worker came from the path.
    let mut con = proxy.redis.con();
    let mine: Vec<String> = con
        .zrange(format!("eth:hashrate:{LOGIN}"), 0, -1)
        .expect("zrange");
    assert_eq!(mine.len(), 1);
    assert!(
        mine[0].starts_with(&format!("{SHARE_DIFF}:rig2:")),
        "{mine:?}"
    );

    // Without a worker in the path the share is worker "0".
    let share2 = grind(w.number, w.header, HARD_BLOCK, Quality::Share, 1);
    let r = rpc(&format!("{base}/{LOGIN}"), "eth_submitWork", json!(share2)).await;
    assert_eq!(r["result"], json!(true));
    let all: Vec<String> = con.zrange("eth:hashrate", 0, -1).expect("zrange");
    assert!(
        all.iter()
            .any(|m| m.starts_with(&format!("{SHARE_DIFF}:{LOGIN}:0:"))),
        "{all:?}"
    );

    // Routes and limits as open-ethereum-pool.
    let (status, _) = post(&format!("{base}/0x1234"), "{}".into()).await;
    assert_eq!(status, 404);
    let (status, _) = post(&format!("{base}/{LOGIN}/waytoolongworker"), "{}".into()).await;
    assert_eq!(status, 404);
    let get = reqwest::get(&url).await.expect("get");
    assert_eq!(get.status().as_u16(), 405);
    let (status, text) = post(&url, "x".repeat(300)).await;
    assert_eq!((status, text.trim()), (417, "Request too large"));
    let (status, text) = post(&url, "{not json".into()).await;
    assert_eq!(status, 200);
    let r: Value = serde_json::from_str(text.trim()).expect("json");
    assert_eq!(r["error"]["message"], json!("Malformed request"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blacklisted_login_is_refused_on_both_front_ends() {
    const BANNED: &str = "0x00000000000000000000000000000000000000bb";
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let _: () = redis::Commands::sadd(&mut redis.con(), "eth:blacklist", BANNED).expect("sadd");
    let proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    let mut c = proxy.client().await;
    let r = c.call("eth_submitLogin", json!([BANNED])).await;
    assert_eq!(
        r["error"],
        json!({"code": -1, "message": "You are blacklisted"})
    );
    // Not logged in: submits are refused.
    let r = c
        .call("eth_submitWork", json!(["0x00", "0x00", "0x00"]))
        .await;
    assert_eq!(r["error"]["code"], json!(25));
    let r = rpc(
        &format!("http://{}/{BANNED}", proxy.http),
        "eth_getWork",
        json!([]),
    )
    .await;
    assert_eq!(r["error"]["message"], json!("You are blacklisted"));
    c.login().await;
    proxy.stop().await;
}

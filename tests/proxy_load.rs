//! Many Stratum connections submitting pipelined valid shares at once: every one is answered
//! `true` and stored exactly once (the batched writer under load). Prints the rate it saw
//! (informational only; this machine is shared and noisy).

mod common;
mod proxy_support;

use std::collections::HashMap;
use std::time::Instant;

use proxy_support::{grind_many, test_config, Devnet, TestProxy, HARD_BLOCK, SHARE_DIFF};
use redis::Commands;
use serde_json::json;

const CONNECTIONS: usize = 32;
const SHARES_PER_CONNECTION: usize = 100;
/// Requests in flight per connection.
const WINDOW: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pipelined_shares_are_all_stored_once() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(test_config(&[&dev], &redis), redis).await;
    let w = dev.handle.work();
    let shares = grind_many(
        w.number,
        w.header,
        HARD_BLOCK,
        CONNECTIONS * SHARES_PER_CONNECTION,
    );

    let mut clients = Vec::new();
    // One miner per connection, as in a pool (one login's shares share Redis members).
    let login = |k: usize| format!("0x{k:040x}");
    for k in 0..CONNECTIONS {
        let mut c = proxy.client().await;
        c.login_as(&login(k)).await;
        clients.push(c);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (k, mut c) in clients.into_iter().enumerate() {
        let mine: Vec<[String; 3]> =
            shares[k * SHARES_PER_CONNECTION..(k + 1) * SHARES_PER_CONNECTION].to_vec();
        tasks.push(tokio::spawn(async move {
            let mut acked = 0;
            for window in mine.chunks(WINDOW) {
                let mut burst = String::new();
                for (i, s) in window.iter().enumerate() {
                    let line = json!({"id": 1000 + i, "method": "eth_submitWork", "params": s});
                    burst.push_str(&format!("{line}\n"));
                }
                c.send_raw(burst.as_bytes()).await;
                for i in 0..window.len() {
                    let r = c.reply(1000 + i as u64).await;
                    assert_eq!(r["result"], json!(true), "{r}");
                    acked += 1;
                }
            }
            acked
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await.expect("client task");
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{total} valid shares over {CONNECTIONS} connections in {secs:.3} s: {:.0} shares/s",
        total as f64 / secs
    );
    assert_eq!(total, (CONNECTIONS * SHARES_PER_CONNECTION) as u64);
    let mut con = proxy.redis.con();
    let round: HashMap<String, i64> = con.hgetall("eth:shares:roundCurrent").expect("round");
    assert_eq!(round.len(), CONNECTIONS);
    for k in 0..CONNECTIONS {
        assert_eq!(
            round[&login(k)],
            (SHARES_PER_CONNECTION as u64 * SHARE_DIFF) as i64
        );
    }
    let pow: u64 = con.zcard("eth:pow").expect("pow");
    assert_eq!(pow, total);
    proxy.stop().await;
}

//! The policy server through real sockets: bans after the invalid-share ratio and the malformed
//! limit (Stratum and HTTP), ban expiry, the connection limit with its grace period, and the
//! black/whitelists reloaded from a real Redis.

mod common;
mod proxy_support;

use std::time::Duration;

use dagproxy::config::{Config, Dur};
use proxy_support::{grind, test_config, Client, Devnet, Quality, TestProxy, HARD_BLOCK, LOGIN};
use redis::Commands;
use serde_json::{json, Value};

/// A test config with banning on (2 s bans) and checks every 4 shares.
fn banning(dev: &Devnet, redis: &common::RedisServer) -> Config {
    let mut c = test_config(&[dev], redis);
    let p = &mut c.proxy.policy;
    p.banning.enabled = true;
    p.banning.timeout = 2;
    p.banning.check_threshold = 4;
    p.banning.invalid_percent = 50.0;
    p.banning.malformed_limit = 3;
    c
}

/// Whether a new Stratum connection is served (a refused one is closed at once).
async fn served(proxy: &TestProxy) -> bool {
    let mut c = proxy.client().await;
    c.send_raw(b"{\"id\":1,\"method\":\"eth_getWork\",\"params\":[]}\n")
        .await;
    c.read().await.is_some()
}

async fn http_status(proxy: &TestProxy, body: String) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{}/{LOGIN}", proxy.http))
        .body(body)
        .send()
        .await
        .expect("http request")
        .status()
        .as_u16()
}

fn get_work() -> String {
    json!({"id": 1, "jsonrpc": "2.0", "method": "eth_getWork", "params": []}).to_string()
}

/// A share of the given quality for the dev chain's current work.
fn share(dev: &Devnet, q: Quality, skip: u64) -> Value {
    let w = dev.handle.work();
    json!(grind(w.number, w.header, HARD_BLOCK, q, skip))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ratio_bans_until_the_ban_expires() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(banning(&dev, &redis), redis).await;
    let mut c = proxy.client().await;
    c.login().await;
    let r = c
        .call("eth_submitWork", share(&dev, Quality::Share, 0))
        .await;
    assert_eq!(r["result"], json!(true), "{r}");
    for skip in 0..2 {
        let r = c
            .call("eth_submitWork", share(&dev, Quality::Low, skip))
            .await;
        assert_eq!(r["result"], json!(false), "{r}");
        assert!(r.get("error").is_none(), "{r}");
    }
    // 4th share: 3 invalid / 1 valid >= 50%: code 23, banned, connection closed.
    let r = c.call("eth_submitWork", share(&dev, Quality::Low, 2)).await;
    assert_eq!(r["error"], json!({"code": 23, "message": "Invalid share"}));
    assert!(c.read().await.is_none(), "closed after the ban");
    assert!(!served(&proxy).await, "refused at connect");
    assert_eq!(http_status(&proxy, get_work()).await, 403);
    // The 2 s ban expires.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(served(&proxy).await);
    assert_eq!(http_status(&proxy, get_work()).await, 200);
    proxy.stop().await;
}

/// A temporary ipset set, destroyed when dropped.
struct IpSet(String);

impl IpSet {
    fn create() -> Self {
        let set = IpSet(format!("dagproxy-test-{}", std::process::id()));
        let out = set.run(&["create", &set.0, "hash:ip", "timeout", "0", "-exist"]);
        assert!(
            out.status.success(),
            "ipset create (needs root and the ipset command): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        set
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("ipset")
            .args(args)
            .output()
            .expect("the ipset command runs")
    }

    /// The timeout left on `ip` in the set, if it is there.
    fn timeout_of(&self, ip: &str) -> Option<u64> {
        let out = self.run(&["list", &self.0]);
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let rest = l.strip_prefix(ip)?.strip_prefix(" timeout ")?;
            rest.trim().parse().ok()
        })
    }
}

impl Drop for IpSet {
    fn drop(&mut self) {
        let _ = self.run(&["destroy", &self.0]);
    }
}

/// A ban through the real `ipset` command, as a firewall rule would use it. It changes the
/// host's netfilter state (a set of its own, removed afterwards), so it runs on demand, as root:
/// `cargo test --test policy -- --ignored ipset`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and the ipset command: cargo test --test policy -- --ignored ipset"]
async fn an_invalid_ratio_ban_adds_the_ip_to_the_ipset_set() {
    let set = IpSet::create();
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let mut config = banning(&dev, &redis);
    config.proxy.policy.banning.ipset = set.0.clone();
    config.proxy.policy.banning.timeout = 600;
    let proxy = TestProxy::start(config, redis).await;
    let mut c = proxy.client().await;
    c.login().await;
    assert_eq!(set.timeout_of("127.0.0.1"), None);
    for skip in 0..4 {
        let _ = c
            .call("eth_submitWork", share(&dev, Quality::Low, skip))
            .await;
    }
    assert!(c.read().await.is_none(), "closed after the ban");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let left = loop {
        if let Some(t) = set.timeout_of("127.0.0.1") {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "not added to the set");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!((590..=600).contains(&left), "timeout left {left}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_on_both_front_ends_reach_the_limit() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(banning(&dev, &redis), redis).await;
    let mut c = proxy.client().await;
    c.send_raw(b"{nope\n").await;
    let r = c.read().await.expect("reply");
    assert_eq!(r["error"]["message"], json!("Malformed request"));
    let r = c.call("eth_sign", json!([])).await;
    assert_eq!(r["error"]["code"], json!(-3));
    assert!(
        served(&proxy).await,
        "two malformed requests: not yet banned"
    );
    // Third: a body over limitBodySize (256 bytes) over HTTP.
    let big = format!(
        "{{\"id\":1,\"method\":\"eth_getWork\",\"params\":[\"{}\"]}}",
        "a".repeat(400)
    );
    assert_eq!(http_status(&proxy, big).await, 417);
    assert_eq!(http_status(&proxy, get_work()).await, 403);
    assert!(!served(&proxy).await);
    // The open connection is closed at its next request, after the reply.
    c.send_raw(b"{\"id\":9,\"method\":\"eth_getWork\"}\n").await;
    let r = c.read().await.expect("the reply before the close");
    assert_eq!(r["id"], json!(9));
    assert!(c.read().await.is_none());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_lines_count_as_malformed() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let mut config = banning(&dev, &redis);
    config.proxy.stratum.max_line_length = 128;
    let proxy = TestProxy::start(config, redis).await;
    let mut c = proxy.client().await;
    for _ in 0..2 {
        c.send_raw(format!("{}\n", "x".repeat(300)).as_bytes())
            .await;
        let r = c.read().await.expect("reply");
        assert_eq!(r["error"]["message"], json!("Request too large"));
    }
    c.login().await;
    c.send_raw(format!("{}\n", "x".repeat(300)).as_bytes())
        .await;
    // The third is answered and the connection closed. The rest of the long line is still
    // unread then: the proxy's lingering close keeps that from resetting away the reply.
    let r = c.read().await.expect("the reply before the close");
    assert_eq!(r["error"]["message"], json!("Request too large"));
    assert!(c.read().await.is_none(), "then the connection is closed");
    assert!(!served(&proxy).await);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_after_grace_and_limit_jump() {
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let mut config = test_config(&[&dev], &redis);
    let l = &mut config.proxy.policy.limits;
    l.enabled = true;
    l.limit = 2;
    l.limit_jump = 2;
    l.grace = Dur(Duration::from_secs(3));
    let proxy = TestProxy::start(config, redis).await;
    let started = tokio::time::Instant::now();
    // Within grace: no limit.
    let mut within = Vec::new();
    for _ in 0..5 {
        let mut c = proxy.client().await;
        c.wait_work().await;
        within.push(c);
    }
    assert!(started.elapsed() < Duration::from_secs(2), "grace not over");
    drop(within);
    tokio::time::sleep_until(started + Duration::from_millis(3200)).await;
    let mut first = proxy.client().await;
    first.wait_work().await;
    assert!(served(&proxy).await, "second connection");
    assert!(
        !served(&proxy).await,
        "third connection: over the limit (budget -1)"
    );
    // A valid share earns limitJump (2) connections: budget 1, one more connection.
    first.login().await;
    let r = first
        .call("eth_submitWork", share(&dev, Quality::Share, 0))
        .await;
    assert_eq!(r["result"], json!(true), "{r}");
    assert!(served(&proxy).await);
    assert!(!served(&proxy).await);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_and_whitelists_reload_from_redis() {
    const BANNED: &str = "0x00000000000000000000000000000000000000bb";
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let mut con = redis.con();
    let _: () = con.sadd("eth:whitelist", "127.0.0.1").expect("sadd");
    let mut config = banning(&dev, &redis);
    config.proxy.policy.refresh_interval = Dur(Duration::from_millis(100));
    let proxy = TestProxy::start(config, redis).await;
    let mut c = proxy.client().await;
    c.login_as(BANNED).await;
    // Blacklisted while running: refused, but the whitelisted IP is not banned.
    let _: () = con.sadd("eth:blacklist", BANNED).expect("sadd");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = c.call("eth_submitLogin", json!([BANNED])).await;
    assert_eq!(
        r["error"],
        json!({"code": -1, "message": "You are blacklisted"})
    );
    // Nor does the malformed limit ban it.
    for _ in 0..4 {
        let r = c.call("eth_sign", json!([])).await;
        assert_eq!(r["error"]["code"], json!(-3));
    }
    // Three low-difficulty shares and a valid one: the ratio trips, the miner is told, but
    // the whitelisted IP stays.
    c.login().await;
    for skip in 0..3 {
        let r = c
            .call("eth_submitWork", share(&dev, Quality::Low, skip))
            .await;
        assert_eq!(r["result"], json!(false), "{r}");
    }
    let r = c
        .call("eth_submitWork", share(&dev, Quality::Share, 0))
        .await;
    assert_eq!(
        r["error"],
        json!({"code": -1, "message": "High rate of invalid shares"})
    );
    assert!(served(&proxy).await);
    // Off the whitelist: the blacklisted login now bans the IP.
    let _: () = con.srem("eth:whitelist", "127.0.0.1").expect("srem");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut c = Client::connect(proxy.stratum).await;
    let r = c.call("eth_submitLogin", json!([BANNED])).await;
    assert_eq!(r["error"]["message"], json!("You are blacklisted"));
    assert!(c.read().await.is_none(), "closed");
    assert!(!served(&proxy).await);
    proxy.stop().await;
}

/// A miner that keeps sending while the proxy bans it still reads every reply, then a clean
/// end of stream: a close with its input unread would be a reset, which can discard replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_miner_that_keeps_sending_reads_its_replies_then_eof() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dev = Devnet::start(HARD_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = TestProxy::start(banning(&dev, &redis), redis).await;
    for round in 0..5 {
        // Bans are per IP: each round is a miner of its own loopback address.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        let ip = std::net::Ipv4Addr::new(127, 0, 0, 2 + round);
        socket.bind((ip, 0).into()).expect("bind");
        let stream = socket.connect(proxy.stratum).await.expect("connect");
        let (mut r, mut w) = stream.into_split();
        // The 3rd malformed line bans; the miner goes on writing (about 24 KiB) meanwhile.
        let writer = tokio::spawn(async move {
            for _ in 0..400 {
                if w.write_all(b"{nope, still sending}\n{nope}\n")
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut got)).await;
        let read = read.expect("closed in time");
        assert!(read.is_ok(), "round {round}: closed by a reset: {read:?}");
        let replies: Vec<Value> = String::from_utf8_lossy(&got)
            .lines()
            .map(|l| serde_json::from_str(l).expect("reply is JSON"))
            .collect();
        assert!(
            replies.len() >= 3,
            "round {round}: {} replies",
            replies.len()
        );
        for v in &replies {
            assert_eq!(v["error"]["message"], json!("Malformed request"), "{v}");
        }
        writer.abort();
    }
    proxy.stop().await;
}

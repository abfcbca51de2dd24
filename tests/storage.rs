//! The Redis schema against a real redis-server: every key and member open-ethereum-pool's
//! WriteShare / WriteBlock / WriteNodeState write, dedup, batches, prefix, pow sweep, outages.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dagproxy::ethash::U256;
use dagproxy::storage::{BlockRecord, RedisStore, ShareRecord, StorageError, WriteOutcome};
use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::Commands;

const LOGIN: &str = "0xb85150eb365e7df0941f0cf08235f987ba91506a";
const LOGIN2: &str = "0x00000000000000000000000000000000000000aa";
const HOUR3: Duration = Duration::from_secs(3 * 3600);

fn share(login: &str, worker: &str, nonce: u64, height: u64, diff: u64) -> ShareRecord {
    ShareRecord {
        login: login.to_string(),
        worker: worker.to_string(),
        nonce: format!("0x{nonce:016x}"),
        pow_hash: format!("0x{:064x}", height * 1000 + 7),
        mix_digest: format!("0x{:064x}", nonce ^ 0xabcdef),
        difficulty: diff,
        height,
    }
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

async fn store(r: &common::RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(&r.url(), prefix, HOUR3)
        .await
        .expect("connect")
}

fn zset(con: &mut redis::Connection, key: &str) -> Vec<(String, f64)> {
    con.zrange_withscores(key, 0, -1).expect("zrange")
}

#[tokio::test]
async fn write_share_writes_every_key_of_open_ethereum_pool() {
    let r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    let s = share(LOGIN, "rig1", 0x1122, 100, 2_000_000_000);
    let before = now_s();
    assert_eq!(
        st.write_share(&s).await.expect("write"),
        WriteOutcome::Stored
    );
    let after = now_s();
    let mut con = r.con();

    // pow: member nonce:powHash:mixDigest, score height (plus a fraction below one that grows
    // with time, so new members land at the zset's recent end).
    let pow = zset(&mut con, "eth:pow");
    assert_eq!(pow.len(), 1);
    assert_eq!(
        pow[0].0,
        format!("{}:{}:{}", s.nonce, s.pow_hash, s.mix_digest)
    );
    assert_eq!(pow[0].1.floor(), 100.0, "{pow:?}");
    // shares:roundCurrent login → diff.
    let round: HashMap<String, i64> = con.hgetall("eth:shares:roundCurrent").expect("round");
    assert_eq!(round, HashMap::from([(LOGIN.to_string(), 2_000_000_000)]));
    // hashrate: diff:login:id:ms scored by seconds.
    let hr = zset(&mut con, "eth:hashrate");
    assert_eq!(hr.len(), 1);
    let parts: Vec<&str> = hr[0].0.split(':').collect();
    assert_eq!(&parts[..3], &["2000000000", LOGIN, "rig1"]);
    let ms: i64 = parts[3].parse().expect("ms");
    let ts = hr[0].1 as i64;
    assert_eq!(ts, ms / 1000);
    assert!((before..=after).contains(&ts));
    // hashrate:<login>: diff:id:ms with the same ms, same score, expiring in 3 h.
    let hrl = zset(&mut con, &format!("eth:hashrate:{LOGIN}"));
    assert_eq!(hrl, vec![(format!("2000000000:rig1:{ms}"), ts as f64)]);
    let ttl: i64 = con.ttl(format!("eth:hashrate:{LOGIN}")).expect("ttl");
    assert!(ttl > 3 * 3600 - 5 && ttl <= 3 * 3600, "ttl {ttl}");
    // miners:<login> lastShare, stats roundShares.
    let last: i64 = con
        .hget(format!("eth:miners:{LOGIN}"), "lastShare")
        .expect("lastShare");
    assert_eq!(last, ts);
    let round_shares: i64 = con.hget("eth:stats", "roundShares").expect("roundShares");
    assert_eq!(round_shares, 2_000_000_000);

    // Nothing else was created.
    let mut keys: Vec<String> = con.keys("*").expect("keys");
    keys.sort();
    let mut want = vec![
        "eth:hashrate".to_string(),
        format!("eth:hashrate:{LOGIN}"),
        "eth:miners:".to_string() + LOGIN,
        "eth:pow".to_string(),
        "eth:shares:roundCurrent".to_string(),
        "eth:stats".to_string(),
    ];
    want.sort();
    assert_eq!(keys, want);

    assert!(st.pow_exists(&s).await.expect("exists"));
    assert!(!st
        .pow_exists(&share(LOGIN, "rig1", 0x9999, 100, 1))
        .await
        .expect("exists"));
}

#[tokio::test]
async fn duplicate_is_reported_and_not_counted_twice() {
    let r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    let s = share(LOGIN, "0", 5, 50, 1000);
    assert_eq!(st.write_share(&s).await.expect("1"), WriteOutcome::Stored);
    assert_eq!(
        st.write_share(&s).await.expect("2"),
        WriteOutcome::Duplicate
    );
    // Same nonce and header but another mix is a different pow triple (open-ethereum-pool).
    let mut other_mix = s.clone();
    other_mix.mix_digest = format!("0x{:064x}", 1);
    assert_eq!(
        st.write_share(&other_mix).await.expect("3"),
        WriteOutcome::Stored
    );
    let mut con = r.con();
    let round: i64 = con.hget("eth:shares:roundCurrent", LOGIN).expect("round");
    assert_eq!(round, 2000);
    let stats: i64 = con.hget("eth:stats", "roundShares").expect("stats");
    assert_eq!(stats, 2000);
    assert_eq!(zset(&mut con, "eth:hashrate").len(), 2);
    assert_eq!(zset(&mut con, "eth:pow").len(), 2);
    // A duplicate block is refused too, and writes nothing.
    let b = BlockRecord {
        height: 50,
        round_difficulty: U256::from(1_000_000u64),
    };
    assert_eq!(
        st.write_block(&s, &b).await.expect("dup block"),
        WriteOutcome::Duplicate
    );
    let exists: bool = con.exists("eth:blocks:candidates").expect("exists");
    assert!(!exists);
    let round_after: i64 = con.hget("eth:shares:roundCurrent", LOGIN).expect("round");
    assert_eq!(round_after, 2000);
}

#[tokio::test]
async fn batch_dedups_inside_and_against_earlier_and_keeps_order() {
    let r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    let earlier = share(LOGIN, "a", 1, 200, 10);
    assert_eq!(
        st.write_share(&earlier).await.expect("earlier"),
        WriteOutcome::Stored
    );

    let mut batch = Vec::new();
    let mut expect = Vec::new();
    for i in 0..500u64 {
        let login = if i % 2 == 0 { LOGIN } else { LOGIN2 };
        batch.push(share(login, "a", 1000 + i, 200, 10));
        expect.push(WriteOutcome::Stored);
    }
    batch.insert(10, batch[3].clone()); // duplicate inside the batch
    expect.insert(10, WriteOutcome::Duplicate);
    batch.insert(0, earlier.clone()); // duplicate of an earlier write
    expect.insert(0, WriteOutcome::Duplicate);
    batch.push(batch[1].clone());
    expect.push(WriteOutcome::Duplicate);

    let got = st.write_shares(&batch).await.expect("batch");
    assert_eq!(got, expect);
    assert!(st.write_shares(&[]).await.expect("empty").is_empty());

    let mut con = r.con();
    let round: HashMap<String, i64> = con.hgetall("eth:shares:roundCurrent").expect("round");
    assert_eq!(round[LOGIN], 10 + 250 * 10);
    assert_eq!(round[LOGIN2], 250 * 10);
    let stats: i64 = con.hget("eth:stats", "roundShares").expect("stats");
    assert_eq!(stats, 501 * 10);
    // Same worker, same diff, same millisecond: every stored share still has its own hashrate
    // member (open-ethereum-pool would overwrite them), so hashrate sums stay right.
    assert_eq!(zset(&mut con, "eth:hashrate").len(), 501);
    assert_eq!(zset(&mut con, &format!("eth:hashrate:{LOGIN}")).len(), 251);
    assert_eq!(zset(&mut con, &format!("eth:hashrate:{LOGIN2}")).len(), 250);
    assert_eq!(zset(&mut con, "eth:pow").len(), 501);
}

#[tokio::test]
async fn hashrate_members_stay_unique_when_earlier_batches_used_the_milliseconds() {
    let r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    let mut con = r.con();
    // Members an earlier batch of the same worker would have written over the next 5 s.
    let now_ms = now_s() * 1000;
    let taken: Vec<(i64, String)> = (now_ms - 1000..now_ms + 5000)
        .map(|m| (1, format!("10:{LOGIN}:a:{m}")))
        .collect();
    let _: () = con.zadd_multiple("eth:hashrate", &taken).expect("seed");

    let batch: Vec<ShareRecord> = (0..20)
        .map(|i| share(LOGIN, "a", 50 + i, 300, 10))
        .collect();
    let got = st.write_shares(&batch).await.expect("batch");
    assert_eq!(got, vec![WriteOutcome::Stored; 20]);
    let all = zset(&mut con, "eth:hashrate");
    assert_eq!(all.len(), taken.len() + 20);
    // Each per-login member diff:id:ms names a global member the batch added (not a seeded one).
    let seeded: std::collections::HashSet<&str> = taken.iter().map(|(_, m)| m.as_str()).collect();
    let per_login = zset(&mut con, &format!("eth:hashrate:{LOGIN}"));
    assert_eq!(per_login.len(), 20);
    for (m, _) in &per_login {
        let ms = m.rsplit(':').next().expect("ms");
        let global = format!("10:{LOGIN}:a:{ms}");
        assert!(!seeded.contains(global.as_str()), "{global} was seeded");
        assert!(all.iter().any(|(g, _)| *g == global), "{global} missing");
    }
    let round: i64 = con.hget("eth:shares:roundCurrent", LOGIN).expect("round");
    assert_eq!(round, 200);
}

#[tokio::test]
async fn batch_across_a_height_change_sweeps_in_order() {
    let r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    let old = share(LOGIN, "a", 1, 100, 10);
    assert_eq!(
        st.write_share(&old).await.expect("old"),
        WriteOutcome::Stored
    );
    // Height 105 keeps height 100 (bound 97), so the old share is still a duplicate; then
    // height 120 (bound 112) sweeps both lower heights, as writing one by one would.
    let batch = vec![
        share(LOGIN, "a", 2, 105, 10),
        old.clone(),
        share(LOGIN2, "b", 3, 120, 10),
        share(LOGIN2, "b", 3, 120, 10),
    ];
    let got = st.write_shares(&batch).await.expect("batch");
    use WriteOutcome::{Duplicate, Stored};
    assert_eq!(got, vec![Stored, Duplicate, Stored, Duplicate]);
    let mut con = r.con();
    let pow = zset(&mut con, "eth:pow");
    assert_eq!(pow.len(), 1, "{pow:?}");
    assert_eq!(pow[0].1.floor(), 120.0);
    let round: HashMap<String, i64> = con.hgetall("eth:shares:roundCurrent").expect("round");
    assert_eq!(
        round,
        HashMap::from([(LOGIN.into(), 20), (LOGIN2.into(), 10)])
    );
    let stats: i64 = con.hget("eth:stats", "roundShares").expect("stats");
    assert_eq!(stats, 30);
}

/// The share writer keeps batches in flight; a block still closes a round holding exactly the
/// shares handed to the writer before it.
#[tokio::test]
async fn writer_closes_a_round_on_exactly_the_shares_sent_before_the_block() {
    use dagproxy::pipeline::{ShareWriter, WriteError};
    use futures_util::stream::{FuturesOrdered, StreamExt};
    use std::future::Future;
    use std::pin::Pin;
    type Write = Pin<Box<dyn Future<Output = Result<WriteOutcome, WriteError>> + Send>>;

    let r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    let (writer, task) = ShareWriter::spawn(st.clone());
    let shares = |from: u64, n: u64| -> FuturesOrdered<Write> {
        (from..from + n)
            .map(|i| {
                let w = writer.clone();
                Box::pin(async move { w.write_share(share(LOGIN, "a", i, 300, 10)).await }) as Write
            })
            .collect()
    };
    // Futures are first polled (and so queued to the writer) in order; `unconstrained`
    // keeps tokio's cooperative budget from deferring some sends and so reordering them.
    let early = tokio::spawn(tokio::task::unconstrained(
        shares(0, 400).collect::<Vec<_>>(),
    ));
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut late = shares(400, 200);
    let found = share(LOGIN2, "b", 100_000, 300, 10);
    let w = writer.clone();
    let b = found.clone();
    late.push_back(Box::pin(async move {
        let block = BlockRecord {
            height: 300,
            round_difficulty: U256::from(1000u64),
        };
        w.write_block(b, block).await
    }));
    for i in 600..800 {
        let w = writer.clone();
        late.push_back(Box::pin(async move {
            w.write_share(share(LOGIN, "a", i, 300, 10)).await
        }));
    }
    let late: Vec<_> = tokio::task::unconstrained(late.collect()).await;
    let early = early.await.expect("early");
    assert!(early
        .iter()
        .chain(&late)
        .all(|o| matches!(o, Ok(WriteOutcome::Stored))));
    drop(writer);
    task.await.expect("writer");

    let mut con = r.con();
    let round: HashMap<String, i64> = con
        .hgetall(format!("eth:shares:round300:{}", found.nonce))
        .expect("round");
    assert_eq!(
        round,
        HashMap::from([(LOGIN.into(), 600 * 10), (LOGIN2.into(), 10)])
    );
    let current: HashMap<String, i64> = con.hgetall("eth:shares:roundCurrent").expect("cur");
    assert_eq!(current, HashMap::from([(LOGIN.into(), 200 * 10)]));
}

#[tokio::test]
async fn block_renames_round_and_writes_candidate() {
    let r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    for (i, (login, diff)) in [(LOGIN, 300u64), (LOGIN2, 500), (LOGIN, 200)]
        .into_iter()
        .enumerate()
    {
        let s = share(login, "w", i as u64, 1234, diff);
        assert_eq!(
            st.write_share(&s).await.expect("share"),
            WriteOutcome::Stored
        );
    }
    let mut con = r.con();
    let _: () = con.hset("eth:stats", "other", "kept").expect("hset");

    // A round difficulty past 2^64 is written in full (open-ethereum-pool truncates to int64).
    let round_diff = U256::from(u64::MAX) * U256::from(1000u64);
    let s = share(LOGIN2, "w", 0xdead, 1234, 100);
    let b = BlockRecord {
        height: 1234,
        round_difficulty: round_diff,
    };
    let before = now_s();
    assert_eq!(
        st.write_block(&s, &b).await.expect("block"),
        WriteOutcome::Stored
    );

    // The round moved to shares:round<height>:<nonce>, including the block's own share.
    let exists: bool = con.exists("eth:shares:roundCurrent").expect("exists");
    assert!(!exists);
    let round: HashMap<String, i64> = con
        .hgetall(format!("eth:shares:round1234:{}", s.nonce))
        .expect("round");
    assert_eq!(
        round,
        HashMap::from([(LOGIN.into(), 500), (LOGIN2.into(), 600)])
    );

    let cands = zset(&mut con, "eth:blocks:candidates");
    assert_eq!(cands.len(), 1);
    assert_eq!(cands[0].1, 1234.0);
    let member = &cands[0].0;
    let prefix = format!("{}:{}:{}:", s.nonce, s.pow_hash, s.mix_digest);
    let rest = member
        .strip_prefix(&prefix)
        .expect("member starts with pow");
    let fields: Vec<&str> = rest.split(':').collect();
    assert_eq!(fields.len(), 3, "{member}");
    let ts: i64 = fields[0].parse().expect("ts");
    assert!(ts >= before && ts <= now_s());
    assert_eq!(fields[1], round_diff.to_string());
    assert_eq!(fields[2], "1100");

    let stats: HashMap<String, String> = con.hgetall("eth:stats").expect("stats");
    assert_eq!(stats.get("lastBlockFound"), Some(&ts.to_string()));
    assert!(!stats.contains_key("roundShares"));
    assert_eq!(stats.get("other").map(String::as_str), Some("kept"));
    let finders = zset(&mut con, "eth:finders");
    assert_eq!(finders, vec![(LOGIN2.to_string(), 1.0)]);
    let miner: HashMap<String, String> =
        con.hgetall(format!("eth:miners:{LOGIN2}")).expect("miner");
    assert_eq!(miner.get("blocksFound").map(String::as_str), Some("1"));
    assert_eq!(miner.get("lastShare"), Some(&ts.to_string()));
    // The block share is a share too: hashrate and pow.
    assert_eq!(zset(&mut con, "eth:hashrate").len(), 4);
    assert!(st.pow_exists(&s).await.expect("pow"));

    // The next share starts a fresh round; a second block renames that one.
    let s2 = share(LOGIN, "w", 77, 1240, 40);
    st.write_share(&s2).await.expect("share");
    let s3 = share(LOGIN, "w", 78, 1240, 60);
    let b3 = BlockRecord {
        height: 1240,
        round_difficulty: U256::from(5u8),
    };
    assert_eq!(
        st.write_block(&s3, &b3).await.expect("b3"),
        WriteOutcome::Stored
    );
    let round: HashMap<String, i64> = con
        .hgetall(format!("eth:shares:round1240:{}", s3.nonce))
        .expect("round");
    assert_eq!(round, HashMap::from([(LOGIN.into(), 100)]));
    let finders = zset(&mut con, "eth:finders");
    assert_eq!(finders.len(), 2);
    let cands = zset(&mut con, "eth:blocks:candidates");
    assert_eq!(cands.len(), 2);
    assert!(cands[1].0.ends_with(":5:100"), "{}", cands[1].0);
}

#[tokio::test]
async fn round_total_is_exact_past_two_to_the_53() {
    let r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    // 3 × (2^52 + 1) + 1 is odd and above 2^53, where doubles (Lua numbers) skip odd values.
    let big = (1u64 << 52) + 1;
    for i in 0..3u64 {
        let login = format!("0x{:040x}", i + 1);
        st.write_share(&share(&login, "0", i, 10, big))
            .await
            .expect("share");
    }
    let s = share(LOGIN, "0", 99, 10, 1);
    st.write_block(
        &s,
        &BlockRecord {
            height: 10,
            round_difficulty: U256::from(7u8),
        },
    )
    .await
    .expect("block");
    let mut con = r.con();
    let cands = zset(&mut con, "eth:blocks:candidates");
    let want = (3 * u128::from(big) + 1).to_string();
    assert!(
        cands[0].0.ends_with(&format!(":7:{want}")),
        "{}",
        cands[0].0
    );
    // A difficulty open-ethereum-pool cannot store is refused before touching Redis.
    let err = st
        .write_share(&share(LOGIN, "0", 1, 10, u64::MAX))
        .await
        .expect_err("too big");
    assert!(matches!(err, StorageError::Difficulty(_)));
}

#[tokio::test]
async fn node_state_and_lists() {
    let r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    let diff = U256::from(u64::MAX) * U256::from(3u8);
    let before = now_s();
    st.write_node_state("main", 4_000_000, &diff)
        .await
        .expect("node");
    let mut con = r.con();
    let nodes: HashMap<String, String> = con.hgetall("eth:nodes").expect("nodes");
    assert_eq!(nodes.len(), 4);
    assert_eq!(nodes["main:name"], "main");
    assert_eq!(nodes["main:height"], "4000000");
    assert_eq!(nodes["main:difficulty"], diff.to_string());
    let beat: i64 = nodes["main:lastBeat"].parse().expect("beat");
    assert!(beat >= before && beat <= now_s());

    assert!(st.blacklist().await.expect("bl").is_empty());
    let _: () = con.sadd("eth:blacklist", LOGIN).expect("sadd");
    let _: () = con.sadd("eth:whitelist", "10.0.0.1").expect("sadd");
    let _: () = con.sadd("eth:whitelist", "10.0.0.2").expect("sadd");
    assert_eq!(st.blacklist().await.expect("bl"), vec![LOGIN.to_string()]);
    let mut wl = st.whitelist().await.expect("wl");
    wl.sort();
    assert_eq!(wl, vec!["10.0.0.1", "10.0.0.2"]);
    st.ping().await.expect("ping");
}

#[tokio::test]
async fn prefix_is_honoured_and_host_port_url_accepted() {
    let r = common::RedisServer::start();
    // open-ethereum-pool's endpoint form "host:port".
    let st = RedisStore::connect(&format!("127.0.0.1:{}", r.port), "etc", HOUR3)
        .await
        .expect("connect");
    let s = share(LOGIN, "0", 1, 20, 5);
    st.write_share(&s).await.expect("share");
    st.write_block(
        &share(LOGIN, "0", 2, 20, 5),
        &BlockRecord {
            height: 20,
            round_difficulty: U256::from(9u8),
        },
    )
    .await
    .expect("block");
    st.write_node_state("n1", 20, &U256::from(9u8))
        .await
        .expect("node");
    let mut con = r.con();
    let keys: Vec<String> = con.keys("*").expect("keys");
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(k.starts_with("etc:"), "{k}");
    }
    assert!(keys.contains(&"etc:blocks:candidates".to_string()));
    assert!(keys.contains(&format!("etc:shares:round20:{}", "0x0000000000000002")));
    // The other prefix sees nothing.
    let eth = store(&r, "eth").await;
    assert!(!eth.pow_exists(&s).await.expect("exists"));
}

#[tokio::test]
async fn pow_backlog_is_swept_below_height_minus_8() {
    let r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    // Below height 8 nothing is swept (the Go code's uint64 wrap would sweep everything).
    for h in [1u64, 2, 5] {
        st.write_share(&share(LOGIN, "0", h, h, 1))
            .await
            .expect("low");
    }
    let mut con = r.con();
    assert_eq!(zset(&mut con, "eth:pow").len(), 3);
    for h in [90u64, 91, 92, 99] {
        st.write_share(&share(LOGIN, "0", h, h, 1))
            .await
            .expect("share");
    }
    // At 100: scores < 92 go, 92 stays.
    st.write_share(&share(LOGIN, "0", 100, 100, 1))
        .await
        .expect("share");
    let heights: Vec<f64> = zset(&mut con, "eth:pow")
        .into_iter()
        .map(|m| m.1.floor())
        .collect();
    assert_eq!(heights, vec![92.0, 99.0, 100.0]);
    // A swept share is no longer a known duplicate (open-ethereum-pool semantics: the proxy's
    // stale window rejects it before storage).
    assert!(!st
        .pow_exists(&share(LOGIN, "0", 90, 90, 1))
        .await
        .expect("exists"));
    // Sweeping works inside a batch and in write_block too.
    st.write_block(
        &share(LOGIN, "0", 200, 200, 1),
        &BlockRecord {
            height: 200,
            round_difficulty: U256::from(1u8),
        },
    )
    .await
    .expect("block");
    let heights: Vec<f64> = zset(&mut con, "eth:pow").into_iter().map(|m| m.1).collect();
    assert_eq!(heights, vec![200.0]);
}

#[tokio::test]
async fn dead_redis_fails_fast_and_recovers() {
    let mut r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    st.write_share(&share(LOGIN, "0", 1, 10, 1))
        .await
        .expect("share");
    let port = r.port;
    r.kill();

    let t = Instant::now();
    let err = st
        .write_share(&share(LOGIN, "0", 2, 10, 1))
        .await
        .expect_err("redis is down");
    assert!(err.is_unavailable(), "{err}");
    let err = st
        .write_shares(&[share(LOGIN, "0", 3, 10, 1)])
        .await
        .expect_err("redis is down");
    assert!(err.is_unavailable(), "{err}");
    assert!(st.ping().await.is_err());
    // Generous bound: this checks "no hang", not speed.
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());

    // Connecting to a dead Redis is an error too, not a hang.
    let t = Instant::now();
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}/"), "eth", HOUR3)
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, StorageError::Connect { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(15));

    // Back on the same port (empty, no persistence): the same handle reconnects.
    let r2 = common::RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match st.write_share(&share(LOGIN, "0", 4, 10, 1)).await {
            Ok(o) => {
                assert_eq!(o, WriteOutcome::Stored);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("retrying: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no reconnect: {e}"),
        }
    }
    let mut con = r2.con();
    assert_eq!(zset(&mut con, "eth:pow").len(), 1);
}

/// `dagproxy bench redis --json`: every synthetic share stored and measured, nothing left
/// under its prefix, and the pool's own keys (another prefix, same Redis) untouched.
#[tokio::test]
async fn redis_bench_measures_and_removes_only_its_own_keys() {
    let r = common::RedisServer::start();
    let pool = store(&r, "eth").await;
    pool.write_share(&share(LOGIN, "rig", 1, 100, 5))
        .await
        .expect("pool share");
    let v = common::json_of(
        std::process::Command::new(env!("CARGO_BIN_EXE_dagproxy"))
            .args(["bench", "redis", "--redis", &r.url(), "--shares", "3000"])
            .args([
                "--logins", "30", "--batch", "16", "--prefix", "bench", "--json",
            ]),
    );
    assert_eq!(v["stored"], serde_json::json!(3000), "{v}");
    assert_eq!(v["batch"], serde_json::json!(16), "{v}");
    for field in ["shares_per_s", "script_us_per_share", "seconds"] {
        assert!(v[field].as_f64().unwrap_or(0.0) > 0.0, "{field} in {v}");
    }
    assert!(v["redis_cpu_us_per_share"].as_f64().is_some(), "{v}");
    assert!(
        v["redis_version"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    let mut con = r.con();
    let left: Vec<String> = con.keys("bench:*").expect("keys");
    assert!(left.is_empty(), "{left:?}");
    let pow: Vec<(String, f64)> = zset(&mut con, "eth:pow");
    assert_eq!(pow.len(), 1);
    let round: HashMap<String, i64> = con.hgetall("eth:shares:roundCurrent").expect("round");
    assert_eq!(round.get(LOGIN), Some(&5));
}

#[tokio::test]
async fn redis_bench_refuses_empty_runs_and_glob_prefixes() {
    use dagproxy::storage::bench::{run, BenchError, BenchParams};
    use dagproxy::storage::RedisOptions;
    let r = common::RedisServer::start();
    let opts = RedisOptions::url(&r.url());
    let ok = BenchParams {
        shares: 10,
        logins: 2,
        batch: 4,
        in_flight: 1,
        prefix: "b".into(),
    };
    let bad = [
        BenchParams {
            batch: 0,
            ..ok.clone()
        },
        BenchParams {
            logins: 0,
            ..ok.clone()
        },
        BenchParams {
            prefix: "eth*".into(),
            ..ok.clone()
        },
        BenchParams {
            prefix: String::new(),
            ..ok.clone()
        },
    ];
    for p in bad {
        let e = run(&opts, &p).await;
        assert!(matches!(e, Err(BenchError::Params(_))), "{p:?}: {e:?}");
    }
    let report = run(&opts, &ok).await.expect("bench");
    assert_eq!(report.stored, 10);
    // Waiting for a replica this Redis does not have: every write refused, said so.
    let lonely = RedisOptions {
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(20),
        ..opts.clone()
    };
    let e = run(&lonely, &ok).await;
    assert!(
        matches!(
            e,
            Err(BenchError::Storage(StorageError::NotReplicated {
                wanted: 1,
                got: 0
            }))
        ),
        "{e:?}"
    );
}

/// A TCP relay to Redis that can go silent (a frozen host or a black-holed network: no RST,
/// no reply), which a dead process does not simulate.
async fn freezable_relay(upstream: u16) -> (u16, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let frozen = Arc::new(AtomicBool::new(false));
    let f = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, f.clone()));
            tokio::spawn(pump(sr, cw, f.clone()));
        }
    });
    (port, frozen)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn silent_redis_times_out_instead_of_hanging() {
    let r = common::RedisServer::start();
    let (port, frozen) = freezable_relay(r.port).await;
    let st = RedisStore::connect(&format!("redis://127.0.0.1:{port}/"), "eth", HOUR3)
        .await
        .expect("connect through relay");
    st.write_share(&share(LOGIN, "0", 1, 10, 1))
        .await
        .expect("share");
    frozen.store(true, Ordering::Relaxed);
    let t = Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        st.write_share(&share(LOGIN, "0", 2, 10, 1)),
    )
    .await
    .expect("no hang: the store gives up by itself");
    let err = res.expect_err("no reply must not be a success");
    assert!(err.is_unavailable(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // Connecting to something that accepts but never answers also gives up.
    let (port2, frozen2) = freezable_relay(r.port).await;
    frozen2.store(true, Ordering::Relaxed);
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        RedisStore::connect(&format!("redis://127.0.0.1:{port2}/"), "eth", HOUR3),
    )
    .await
    .expect("connect gives up by itself");
    assert!(res.is_err());
}

/// Sleeps until just after a second starts, so the next few writes fall in one second.
async fn start_of_second() {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1010 - ms))).await;
}

#[tokio::test]
async fn ttl_and_last_share_are_refreshed_once_per_second_per_login() {
    let r = common::RedisServer::start();
    let st = store(&r, "eth").await;
    let mut con = r.con();
    let hr_key = format!("eth:hashrate:{LOGIN}");
    let miner_key = format!("eth:miners:{LOGIN}");
    let ttl = |con: &mut redis::Connection| -> i64 { con.ttl(&hr_key).expect("ttl") };

    start_of_second().await;
    let first = share(LOGIN, "rig", 1, 100, 5);
    st.write_share(&first).await.expect("write");
    assert!(ttl(&mut con) > 3 * 3600 - 5, "TTL set by the first share");
    let has: bool = con.hexists(&miner_key, "lastShare").expect("hexists");
    assert!(has);

    // Undo both; a share in the same second leaves them alone (it would write the same
    // values), and so does a duplicate.
    let _: () = con.persist(&hr_key).expect("persist");
    let _: () = con.hdel(&miner_key, "lastShare").expect("hdel");
    let second = share(LOGIN, "rig", 2, 100, 5);
    assert_eq!(
        st.write_share(&second).await.expect("write"),
        WriteOutcome::Stored
    );
    assert_eq!(ttl(&mut con), -1, "no TTL refresh within the second");
    let has: bool = con.hexists(&miner_key, "lastShare").expect("hexists");
    assert!(!has);
    // Another login in the same second gets its own refresh.
    st.write_share(&share(LOGIN2, "rig", 3, 100, 5))
        .await
        .expect("write");
    let ttl2: i64 = con.ttl(format!("eth:hashrate:{LOGIN2}")).expect("ttl");
    assert!(ttl2 > 3 * 3600 - 5);

    // The next second: a duplicate stores nothing and refreshes nothing; the next stored
    // share refreshes both.
    start_of_second().await;
    assert_eq!(
        st.write_share(&second).await.expect("write"),
        WriteOutcome::Duplicate
    );
    assert_eq!(ttl(&mut con), -1, "a duplicate refreshes nothing");
    st.write_share(&share(LOGIN, "rig", 4, 100, 5))
        .await
        .expect("write");
    assert!(
        ttl(&mut con) > 3 * 3600 - 5,
        "TTL refreshed in the new second"
    );
    let last: i64 = con.hget(&miner_key, "lastShare").expect("lastShare");
    assert!((now_s() - last).abs() <= 1);
    assert_eq!(
        zset(&mut con, &hr_key).len(),
        3,
        "every stored share counted"
    );
}

async fn tagged(
    st: &RedisStore,
    i: usize,
    batch: &[ShareRecord],
) -> (usize, Result<Vec<WriteOutcome>, StorageError>) {
    (i, st.write_shares(batch).await)
}

/// The first two batches in flight of a proxy that connects to a Redis without its scripts
/// (a fresh one, a restart, `SCRIPT FLUSH`) run in the order sent: the first copy of a share is
/// the one credited. (Before the store loaded its scripts at connect, both batches were
/// refused with NOSCRIPT and their retries raced.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_batches_after_connecting_keep_their_order() {
    let r = common::RedisServer::start();
    let mut con = r.con();
    for n in 0..100u64 {
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut con)
            .expect("flush");
        let st = store(&r, "eth").await;
        let first = [share(LOGIN, "0", 1000 + n, 10, 1)];
        let again = [share(LOGIN2, "0", 5000 + n, 10, 1), first[0].clone()];
        // Both in flight on the one connection, polled as the share writer polls its batches.
        let mut in_flight = FuturesUnordered::new();
        in_flight.push(tagged(&st, 0, &first));
        in_flight.push(tagged(&st, 1, &again));
        let mut out = [None, None];
        while let Some((i, r)) = in_flight.next().await {
            out[i] = Some(r.expect("batch"));
        }
        assert_eq!(
            out[0].as_deref(),
            Some(&[WriteOutcome::Stored][..]),
            "round {n}"
        );
        assert_eq!(
            out[1].as_deref(),
            Some(&[WriteOutcome::Stored, WriteOutcome::Duplicate][..]),
            "round {n}"
        );
    }
    // And a script cache lost while connected is recovered from (EVAL with the body).
    let st = store(&r, "eth").await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut con)
        .expect("flush");
    let out = st
        .write_shares(&[share(LOGIN, "0", 9999, 10, 1)])
        .await
        .expect("written after NOSCRIPT");
    assert_eq!(out, [WriteOutcome::Stored]);
}

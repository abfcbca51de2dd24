//! Redis high availability against real servers: the store follows a Redis Sentinel failover
//! to the promoted replica with no acknowledged share missing, and `waitReplicas` refuses to
//! report a share stored that no replica has.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, RedisSentinel, RedisServer};
use dagproxy::storage::{RedisOptions, RedisStore, ShareRecord, StorageError, WriteOutcome};
use redis::Commands;

const LOGIN: &str = "0xb85150eb365e7df0941f0cf08235f987ba91506a";
const HOUR: Duration = Duration::from_secs(3600);

fn share(nonce: u64) -> ShareRecord {
    ShareRecord {
        login: LOGIN.to_string(),
        worker: "rig".to_string(),
        nonce: format!("0x{nonce:016x}"),
        pow_hash: format!("0x{:064x}", 7),
        mix_digest: format!("0x{:064x}", nonce ^ 0xabcdef),
        difficulty: 5,
        height: 100,
    }
}

/// A primary and its replica, the replica in sync.
fn primary_and_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start();
    let port = primary.port.to_string();
    let replica = RedisServer::start_with(free_port(), &["--replicaof", "127.0.0.1", &port]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if replication(&replica, "master_link_status") == "up" {
            return (primary, replica);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("replica did not sync");
}

/// A field of `INFO replication` (empty when absent).
fn replication(r: &RedisServer, field: &str) -> String {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut r.con())
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Options that ask the sentinels on `ports` (in that order) for `mymaster`, looking again
/// every `recheck`. With sentinels only the URL's credentials and db count: its port is unused.
fn via_sentinels(ports: &[u16], recheck: Option<Duration>) -> RedisOptions {
    RedisOptions {
        url: "redis://127.0.0.1:1/0".into(),
        sentinels: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        master_name: "mymaster".into(),
        sentinel_recheck: recheck,
        ..RedisOptions::default()
    }
}

fn role(r: &RedisServer) -> String {
    replication(r, "role")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_sentinel_failover_and_loses_no_acknowledged_share() {
    let (mut primary, replica) = primary_and_replica();
    let sentinel = RedisSentinel::start(primary.port);
    sentinel.wait_for_replica();
    // No periodic lookup: here only failed writes may move the stores.
    let opts = via_sentinels(&[sentinel.port], None);
    let store = RedisStore::connect_with(&opts, "eth", HOUR)
        .await
        .expect("connect through sentinel");
    assert_eq!(store.address(), format!("127.0.0.1:{}", primary.port));
    // A second proxy that sends nothing during the failover.
    let idle = RedisStore::connect_with(&opts, "eth", HOUR)
        .await
        .expect("connect through sentinel");

    let mut acked = Vec::new();
    for n in 0..20 {
        let out = store.write_share(&share(n)).await.expect("write");
        assert_eq!(out, WriteOutcome::Stored);
        acked.push(n);
    }
    // Asynchronous replication: let the replica catch up before the primary dies (the
    // `waitReplicas` test covers writes that must not be acknowledged before that).
    let mut con = replica.con();
    let deadline = Instant::now() + Duration::from_secs(10);
    while con.zcard::<_, usize>("eth:pow").expect("zcard") < acked.len() {
        assert!(Instant::now() < deadline, "replica did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }

    primary.kill();
    let killed = Instant::now();
    let mut refused = 0;
    let mut n = 100;
    // Writes go on as a proxy's would: refused while the master is gone, then accepted by
    // the promoted replica once the store found it through the sentinel.
    let moved = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(45),
            "no failover followed ({refused} writes refused)"
        );
        n += 1;
        match store.write_share(&share(n)).await {
            Ok(out) => {
                assert_eq!(out, WriteOutcome::Stored);
                acked.push(n);
                if store.address() == format!("127.0.0.1:{}", replica.port) && acked.len() > 30 {
                    break killed.elapsed();
                }
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(role(&replica), "master", "the replica was promoted");
    assert!(refused > 0, "the outage was seen");
    let mut con = replica.con();
    for &n in &acked {
        let s = share(n);
        let score: Option<f64> = con.zscore("eth:pow", s.pow_member()).expect("zscore");
        assert!(
            score.is_some(),
            "acknowledged share {n} missing after the failover"
        );
    }
    let round: i64 = con.hget("eth:shares:roundCurrent", LOGIN).expect("round");
    assert_eq!(
        round,
        5 * acked.len() as i64,
        "each acknowledged share counted once"
    );
    eprintln!(
        "failover followed after {moved:?}: {refused} writes refused, {} acknowledged",
        acked.len()
    );

    // The old primary comes back and the sentinel makes it a replica. The idle store still
    // points there: its first write is refused (read-only), and it finds the new master.
    let old_port = primary.port;
    drop(primary);
    let old = RedisServer::start_on(old_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while role(&old) != "slave" {
        assert!(Instant::now() < deadline, "the old primary was not demoted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 1000;
    loop {
        n += 1;
        match idle.write_share(&share(n)).await {
            Ok(out) => {
                assert_eq!(out, WriteOutcome::Stored);
                break;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                assert!(Instant::now() < deadline, "still refused: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(idle.address(), format!("127.0.0.1:{}", replica.port));
    let score: Option<f64> = con
        .zscore("eth:pow", share(n).pow_member())
        .expect("zscore");
    assert!(score.is_some(), "written to the new master");
}

#[tokio::test]
async fn wait_replicas_reports_unreplicated_writes_as_not_stored() {
    let (primary, replica) = primary_and_replica();
    let opts = |wanted| RedisOptions {
        url: primary.url(),
        wait_replicas: wanted,
        wait_timeout: Duration::from_millis(200),
        ..RedisOptions::default()
    };
    let one = RedisStore::connect_with(&opts(1), "eth", HOUR)
        .await
        .expect("connect");
    assert_eq!(
        one.write_share(&share(1)).await.expect("replicated"),
        WriteOutcome::Stored
    );
    // Acknowledged means on the replica too, already.
    let on_replica: Option<f64> = replica
        .con()
        .zscore("eth:pow", share(1).pow_member())
        .expect("zscore");
    assert!(on_replica.is_some());

    // Two wanted, one there: the write happened on the primary, but it is not reported stored.
    let two = RedisStore::connect_with(&opts(2), "eth", HOUR)
        .await
        .expect("connect");
    let err = two
        .write_share(&share(2))
        .await
        .expect_err("one replica only");
    assert!(
        matches!(err, StorageError::NotReplicated { wanted: 2, got: 1 }),
        "{err}"
    );
    assert!(err.is_unavailable());

    // The replica leaves: nothing is acknowledged any more.
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut replica.con())
        .expect("replicaof no one");
    let err = one.write_share(&share(3)).await.expect_err("no replica");
    assert!(
        matches!(err, StorageError::NotReplicated { wanted: 1, got: 0 }),
        "{err}"
    );
    let blocks_err = one
        .write_shares(&[share(4), share(5)])
        .await
        .expect_err("no replica");
    assert!(blocks_err.is_unavailable());
}

/// The sentinels name another master while the current one still takes writes (a master cut
/// off from them, or an operator's `SENTINEL MONITOR`): no write fails, so only the periodic
/// lookup moves the store, and its next writes go to the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_to_the_master_the_sentinels_name_while_the_old_one_still_writes() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let sentinel = RedisSentinel::start(old.port);
    let opts = via_sentinels(&[sentinel.port], Some(Duration::from_millis(300)));
    let store = RedisStore::connect_with(&opts, "eth", HOUR)
        .await
        .expect("connect through sentinel");
    // Without the recheck, only a failed write would ever look again.
    let static_opts = RedisOptions {
        sentinel_recheck: None,
        ..opts.clone()
    };
    let stays = RedisStore::connect_with(&static_opts, "eth", HOUR)
        .await
        .expect("connect through sentinel");
    assert_eq!(store.address(), format!("127.0.0.1:{}", old.port));

    let _: String = sentinel
        .query(redis::cmd("SENTINEL").arg("REMOVE").arg("mymaster"))
        .expect("sentinel remove");
    let _: String = sentinel
        .query(
            redis::cmd("SENTINEL")
                .arg("MONITOR")
                .arg("mymaster")
                .arg("127.0.0.1")
                .arg(new.port)
                .arg(1),
        )
        .expect("sentinel monitor");
    let named = Instant::now();
    let mut n = 0;
    while store.address() != format!("127.0.0.1:{}", new.port) {
        assert!(
            named.elapsed() < Duration::from_secs(10),
            "still writing to the old master"
        );
        n += 1;
        let out = store
            .write_share(&share(n))
            .await
            .expect("old master writes");
        assert_eq!(out, WriteOutcome::Stored);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "moved {:?} after the sentinels named the new master",
        named.elapsed()
    );
    let after = share(10_000);
    assert_eq!(
        store.write_share(&after).await.expect("new master writes"),
        WriteOutcome::Stored
    );
    let on_new: Option<f64> = new
        .con()
        .zscore("eth:pow", after.pow_member())
        .expect("zscore");
    assert!(on_new.is_some(), "written to the new master");
    let on_old: Option<f64> = old
        .con()
        .zscore("eth:pow", after.pow_member())
        .expect("zscore");
    assert!(on_old.is_none());
    // The store without the recheck never looked again: its writes still succeed on the old.
    assert_eq!(stays.address(), format!("127.0.0.1:{}", old.port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_past_a_dead_sentinel_and_keeps_writing_while_none_answers() {
    let master = RedisServer::start();
    let sentinel = RedisSentinel::start(master.port);
    // The first sentinel listed is down: nothing listens on its port.
    let dead = free_port();
    let opts = via_sentinels(&[dead, sentinel.port], Some(Duration::from_millis(200)));
    let store = RedisStore::connect_with(&opts, "eth", HOUR)
        .await
        .expect("connect through the second sentinel");
    let at_master = format!("127.0.0.1:{}", master.port);
    assert_eq!(store.address(), at_master);
    // Several rechecks, each past the dead sentinel.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.sentinel_failures(), Some(0));

    // No sentinel answers: writes go on to the master in use; the failed lookups are counted.
    let port = sentinel.port;
    drop(sentinel);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while store.sentinel_failures() < Some(3) {
        assert!(Instant::now() < deadline, "lookups not failing");
        n += 1;
        let out = store.write_share(&share(n)).await.expect("master writes");
        assert_eq!(out, WriteOutcome::Stored);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.address(), at_master);

    // A sentinel back on that port: the next recheck gets an answer and the count clears.
    let _back = RedisSentinel::start_on(port, master.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.sentinel_failures() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "sentinel answers, still counted as failing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.address(), at_master);
    let stored: usize = master.con().zcard("eth:pow").expect("zcard");
    assert_eq!(stored, n as usize);
}

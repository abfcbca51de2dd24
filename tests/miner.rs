//! The demo miner: seed → epoch lookup, nonce grinding, and the EthProxy dialect against a small
//! scripted pool in this file that checks every submitted share with the real engine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dagproxy::ethash::target::{target_from_difficulty, target_hex};
use dagproxy::ethash::{hashimoto, ChainSpec, LightCache, PowInput, U256};
use dagproxy::hexutil::{parse_h256, parse_nonce, to_hex};
use dagproxy::miner::{self, epoch_for_seed, MinerConfig, MinerError, MiningSource};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const LOGIN: &str = "0xb85150eb365e7df0941f0cf08235f987ba91506a";

#[test]
fn seed_hash_finds_its_epoch_on_every_chain() {
    let cases = [
        (ChainSpec::test(), 0u64),
        (ChainSpec::test(), 95_000),
        (ChainSpec::ethereum(), 0),
        (ChainSpec::ethereum(), 29_999),
        (ChainSpec::ethereum(), 17_000_000),
        (ChainSpec::classic(), 11_699_999),
        // Etchash: 60000-block epochs after the activation.
        (ChainSpec::classic(), 11_700_000),
        (ChainSpec::classic(), 20_123_456),
        (ChainSpec::mordor(), 2_600_000),
    ];
    for (chain, block) in cases {
        let info = chain.epoch_info(block);
        assert_eq!(
            epoch_for_seed(&chain, &info.seed),
            Some(info),
            "{chain} block {block}"
        );
    }
    assert_eq!(epoch_for_seed(&ChainSpec::ethereum(), &[7; 32]), None);
    // Seeds of odd 30000-block spans never occur after ECIP-1099.
    let odd = ChainSpec::ethereum().epoch_info(391 * 30_000).seed;
    assert_eq!(epoch_for_seed(&ChainSpec::classic(), &odd), None);
}

#[test]
fn grinding_finds_a_share_that_meets_the_target() {
    let chain = ChainSpec::test();
    let info = chain.epoch_info(0);
    let src = MiningSource::for_epoch(&chain, info);
    assert!(matches!(src, MiningSource::Full(_)));
    let header = [0x42; 32];
    let target = target_from_difficulty(U256::from(5_000u64)).expect("target");
    let (nonce, out) = src
        .grind(&header, target, 1_000..1_000_000)
        .expect("a 1/5000 share within a million nonces");
    assert!((1_000..1_000_000).contains(&nonce));
    // An independent light hashimoto agrees on mix and target.
    let light = hashimoto(
        &LightCache::new(info),
        &PowInput {
            header_hash: header,
            nonce,
        },
    );
    assert_eq!(light, out);
    assert!(U256::from_be_bytes(light.result) <= target);
    // No smaller nonce in the range met it (the first hit is returned).
    let none = src.grind(&header, target, 1_000..nonce);
    assert!(none.is_none());
    // A target nothing meets in a short range.
    assert!(src.grind(&header, U256::ZERO, 0..100).is_none());
}

#[derive(Default, Debug)]
struct PoolLog {
    login: Option<Value>,
    submits: Vec<(String, String, String)>,
    valid: usize,
}

/// A scripted EthProxy pool: answers login and getWork, switches to a second job after 3
/// submits, checks each share with hashimoto and answers `true` only for valid ones, and
/// `false` for every 4th one regardless (to exercise rejected counting).
async fn scripted_pool(listener: TcpListener, log: Arc<Mutex<PoolLog>>, difficulty: u64) {
    let chain = ChainSpec::test();
    let info = chain.epoch_info(30_001);
    let cache = LightCache::new(info);
    let target = target_from_difficulty(U256::from(difficulty)).expect("target");
    let jobs = [[0x11u8; 32], [0x22u8; 32]];
    let Ok((sock, _)) = listener.accept().await else {
        return;
    };
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut job = 0usize;
    let work = |j: usize| json!([to_hex(&jobs[j]), to_hex(&info.seed), target_hex(target)]);
    while let Ok(Some(line)) = lines.next_line().await {
        let req: Value = serde_json::from_str(&line).expect("miner sends JSON");
        let id = req["id"].clone();
        let reply = match req["method"].as_str().expect("method") {
            "eth_submitLogin" => {
                log.lock().expect("log").login = Some(req.clone());
                json!({"id": id, "jsonrpc": "2.0", "result": true})
            }
            "eth_getWork" => json!({"id": id, "jsonrpc": "2.0", "result": work(job)}),
            "eth_submitWork" => {
                let p: Vec<String> = req["params"]
                    .as_array()
                    .expect("params")
                    .iter()
                    .map(|v| v.as_str().expect("str").to_string())
                    .collect();
                let nonce = parse_nonce(&p[0]).expect("nonce");
                let header = parse_h256(&p[1], "h").expect("header");
                let mix = parse_h256(&p[2], "m").expect("mix");
                let out = hashimoto(
                    &cache,
                    &PowInput {
                        header_hash: header,
                        nonce,
                    },
                );
                let valid = out.mix_digest == mix
                    && U256::from_be_bytes(out.result) <= target
                    && jobs.contains(&header);
                let n = {
                    let mut l = log.lock().expect("log");
                    l.submits.push((p[0].clone(), p[1].clone(), p[2].clone()));
                    l.valid += usize::from(valid);
                    l.submits.len()
                };
                let reply = json!({"id": id, "jsonrpc": "2.0", "result": valid && n % 4 != 0});
                if n == 3 {
                    // New job pushed the way the proxy does.
                    job = 1;
                    let push = json!({"id": 0, "jsonrpc": "2.0", "result": work(1)});
                    w.write_all(format!("{reply}\n{push}\n").as_bytes())
                        .await
                        .expect("write");
                    continue;
                }
                reply
            }
            other => panic!("unexpected method {other}"),
        };
        if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mines_against_a_pool_in_the_ethproxy_dialect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let log = Arc::new(Mutex::new(PoolLog::default()));
    tokio::spawn(scripted_pool(listener, log.clone(), 3_000));

    let stop = CancellationToken::new();
    let cfg = MinerConfig {
        stratum: addr,
        login: LOGIN.to_string(),
        worker: Some("rig7".into()),
        threads: 2,
        chain: ChainSpec::test(),
        duration: Some(Duration::from_secs(60)),
    };
    let run = tokio::spawn(miner::run(cfg, stop.clone()));
    // Stop once enough shares went through (shutdown, not the 60 s limit).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while log.lock().expect("log").submits.len() < 8 {
        assert!(tokio::time::Instant::now() < deadline, "too few shares");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("miner stops on shutdown")
        .expect("join")
        .expect("run");

    let l = log.lock().expect("log");
    let login = l.login.as_ref().expect("logged in");
    assert_eq!(login["params"], json!([LOGIN]));
    assert_eq!(login["worker"], "rig7");
    // Every share is well-formed lowercase hex and valid for the job it names.
    for (n, h, m) in &l.submits {
        assert_eq!(n.len(), 18);
        assert_eq!((h.len(), m.len()), (66, 66));
        for s in [n, h, m] {
            assert!(s.starts_with("0x"));
            assert!(s[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
    }
    assert_eq!(l.valid, l.submits.len(), "all submitted shares are valid");
    // After the push, shares move to the second job.
    let last = &l.submits.last().expect("submits").1;
    assert_eq!(last, &to_hex(&[0x22; 32]));
    assert_eq!(stats.jobs, 2);
    assert_eq!(stats.connections, 1);
    // Replies counted: those answered before the stop.
    assert!(stats.submitted >= 8);
    assert!(stats.accepted + stats.rejected <= stats.submitted);
    assert!(stats.rejected >= 1, "{stats:?}");
    assert!(stats.accepted >= 5, "{stats:?}");
    assert!(stats.hashes > 0 && stats.hashrate > 0.0);
}

#[tokio::test]
async fn stops_after_its_duration_and_reports_refusals() {
    // --seconds with a pool that never sends work: a clean stop with zero shares.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let (sock, _) = listener.accept().await.expect("accept");
        let (r, mut w) = sock.into_split();
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let req: Value = serde_json::from_str(&line).expect("json");
            let reply = match req["method"].as_str() {
                Some("eth_submitLogin") => json!({"id": req["id"], "result": true}),
                _ => json!({"id": req["id"], "result": null,
                            "error": {"code": 0, "message": "Work not ready"}}),
            };
            let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
        }
    });
    let cfg = MinerConfig {
        stratum: addr,
        login: LOGIN.into(),
        worker: None,
        threads: 1,
        chain: ChainSpec::test(),
        duration: Some(Duration::from_millis(300)),
    };
    let stats = tokio::time::timeout(
        Duration::from_secs(10),
        miner::run(cfg.clone(), CancellationToken::new()),
    )
    .await
    .expect("stops by itself")
    .expect("run");
    assert_eq!((stats.submitted, stats.jobs, stats.hashes), (0, 0, 0));

    // A refused login is an error.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let (sock, _) = listener.accept().await.expect("accept");
        let (r, mut w) = sock.into_split();
        let mut lines = BufReader::new(r).lines();
        if let Ok(Some(line)) = lines.next_line().await {
            let req: Value = serde_json::from_str(&line).expect("json");
            let reply = json!({"id": req["id"], "result": null,
                               "error": {"code": -1, "message": "Invalid login"}});
            let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
        }
        while let Ok(Some(_)) = lines.next_line().await {}
    });
    let err = miner::run(
        MinerConfig {
            stratum: addr,
            ..cfg.clone()
        },
        CancellationToken::new(),
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(err, MinerError::Login(ref m) if m.contains("Invalid login")),
        "{err}"
    );

    // Nobody listening: a connect error, not a hang.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let err = miner::run(
        MinerConfig {
            stratum: format!("127.0.0.1:{port}"),
            ..cfg
        },
        CancellationToken::new(),
    )
    .await
    .expect_err("no pool");
    assert!(matches!(err, MinerError::Connect { .. }), "{err}");
}

#[test]
fn cli_reports_an_unreachable_pool_and_bad_arguments() {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_dagproxy");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let out = Command::new(bin)
        .args(["mine", "--stratum", &format!("127.0.0.1:{port}")])
        .args(["--login", LOGIN, "--seconds", "1", "--threads", "1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
    let out = Command::new(bin)
        .args(["mine", "--login", LOGIN])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "--stratum is required");
}

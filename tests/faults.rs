//! Fault tests against a real redis-server, dev chain and proxy (in this process, or the
//! `dagproxy` binary where its memory and file descriptors must be its own): Redis killed and
//! restarted under load, 10,000 idle connections, a connection flood beyond the cap, and slow,
//! silent and half-closed clients on both Stratum dialects.

mod common;
mod proxy_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dagproxy::config::{Config, Dur, UpstreamConfig};
use dagproxy::ethash::target::target_from_difficulty;
use dagproxy::ethash::{hashimoto, ChainSpec, LightCache, PowInput, U256};
use dagproxy::loadgen::{self, LoadgenConfig};
use dagproxy::proxy::{self, Listeners, ProxyError};
use dagproxy::verify::VerifierKind;
use futures_util::StreamExt;
use proxy_support::{grind, Client, Devnet, Quality, LOGIN, SHARE_DIFF};
use redis::Commands;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Block difficulty no share here reaches (a found block would move the chain mid-test).
const NO_BLOCK: u64 = 1 << 50;

/// One test at a time: they measure timeouts and memory on a small shared machine, and the
/// idle-connection test needs most of the file descriptors.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SUBSCRIBE: &str =
    r#"{"id":1,"method":"mining.subscribe","params":["faults/1.0","EthereumStratum/1.0.0"]}"#;

fn login_line() -> String {
    format!(
        "{}\n",
        json!({"id": 1, "jsonrpc": "2.0", "method": "eth_submitLogin", "params": [LOGIN]})
    )
}

/// The proxy's test configuration (as `proxy_support::test_config`) for any Redis URL.
fn config(dev: &Devnet, redis_url: String) -> Config {
    let mut c = Config {
        chain: "test".into(),
        upstream: vec![UpstreamConfig {
            name: "dev".into(),
            url: dev.url.clone(),
            timeout: Dur(Duration::from_secs(2)),
        }],
        upstream_check_interval: Dur(Duration::from_millis(100)),
        ..Config::default()
    };
    c.proxy.block_refresh_interval = Dur(Duration::from_millis(20));
    c.proxy.state_update_interval = Dur(Duration::from_millis(100));
    c.proxy.difficulty = SHARE_DIFF;
    c.redis.url = redis_url;
    c.verifier.kind = VerifierKind::CpuLight;
    c
}

/// The proxy in this process, EthProxy and EthereumStratum/1.0.0 ports on 127.0.0.1:0.
struct InProcess {
    stratum: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ProxyError>>,
}

impl InProcess {
    async fn start(config: Config) -> Self {
        let stratum = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = stratum.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(proxy::run(
            Listeners {
                stratum: Some(stratum),
                ..Listeners::default()
            },
            config.check().expect("valid test config"),
            shutdown.clone(),
        ));
        Client::connect(addr).await.wait_work().await;
        Self {
            stratum: addr,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        assert!(!self.task.is_finished(), "proxy still running");
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("proxy stops in time")
            .expect("proxy task")
            .expect("proxy ran cleanly");
    }
}

/// A `redis-server` that writes every command to its append-only file before replying
/// (`appendfsync always`), so one killed with SIGKILL and restarted on the same directory
/// holds every write it acknowledged.
struct DurableRedis {
    child: Child,
    port: u16,
}

impl DurableRedis {
    fn start(port: u16, dir: &Path) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (deploy/test.sh installs it)");
        let r = Self { child, port };
        // PING fails while the append-only file loads.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = redis::Client::open(r.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if up.is_ok() {
                return r;
            }
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn con(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("url")
            .get_connection()
            .expect("connect to test redis")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ZCARD eth:pow`: shares stored.
fn pow_count(con: &mut redis::Connection) -> u64 {
    con.zcard("eth:pow").expect("zcard")
}

/// An EthereumStratum/1.0.0 request; its answer, skipping notifications.
async fn es_call(c: &mut Client, id: u64, method: &str, params: Value) -> Value {
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

/// An EthereumStratum/1.0.0 session (detected on the EthProxy port from its first message),
/// authorized, with its first job: `(client, extranonce, job id)`.
async fn es_session(addr: SocketAddr) -> (Client, u64, String) {
    let mut c = Client::connect(addr).await;
    let r = es_call(
        &mut c,
        1,
        "mining.subscribe",
        json!(["faults/1.0", "EthereumStratum/1.0.0"]),
    )
    .await;
    let en = u64::from_str_radix(r["result"][1].as_str().expect("extranonce"), 16).expect("hex");
    let r = es_call(
        &mut c,
        2,
        "mining.authorize",
        json!([format!("{LOGIN}.es"), "x"]),
    )
    .await;
    assert_eq!(r["result"], json!(true), "{r}");
    loop {
        let v = c.read().await.expect("connection open");
        if v["method"] == json!("mining.notify") {
            let job = v["params"][0].as_str().expect("job id").to_string();
            return (c, en, job);
        }
    }
}

/// The miner part of a nonce that makes a share (not a block) with this extranonce; counted
/// from 2^40, away from the nonces `grind` finds (the first extranonce is 0).
fn grind_es(height: u64, header: [u8; 32], extranonce: u64) -> u64 {
    let cache = LightCache::new(ChainSpec::test().epoch_info(height));
    let share = target_from_difficulty(U256::from(SHARE_DIFF)).expect("target");
    (1u64 << 40..)
        .find(|part| {
            let input = PowInput {
                header_hash: header,
                nonce: (extranonce << 48) | part,
            };
            U256::from_be_bytes(hashimoto(&cache, &input).result) <= share
        })
        .expect("a share")
}

// Redis is killed (SIGKILL) while loadgen keeps 8 miners busy, and restarted 1.5 s later on
// the same port; the load goes on throughout.
//
// Counting: the harness's Redis has no persistence, so a restart would drop every share stored
// before the kill and loadgen (which checks once, at the end) could not tell those from shares
// acknowledged without being stored; the ones that matter most, in flight at the kill, could
// not be checked at all. So Redis here runs with `appendfsync always`: it appends each write to
// its file before replying, a restart on the same directory reloads it, and the end state
// holds every write Redis acknowledged. The proxy says `true` only after Redis acknowledged
// the write, so `lost == 0` over the whole run, kill included, is exact. (The reverse can
// happen and is harmless: a batch Redis stored but whose reply died with it is answered with
// an error, so at most one share per connection is stored without an acknowledgement.)
//
// During the outage the proxy refuses shares with an error (it does not buffer them: the share
// writer answers each batch from its own Redis round trip); a probe share shows the error and
// that it is not stored later, on both dialects. The run across the outage sends valid shares
// only: loadgen's "duplicates" repeat the last share it sent, and one refused during the outage
// is rightly accepted when repeated after the restart (loadgen would count it as an invalid
// share accepted). A second, short loadgen run afterwards, with invalid, duplicate and stale
// shares mixed in, shows the proxy fully recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_during_load() {
    const CONNECTIONS: usize = 8;
    let _serial = SERIAL.lock().await;
    let dev = Devnet::start(NO_BLOCK).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = common::free_port();
    let mut redis = DurableRedis::start(port, dir.path());
    let redis_url = redis.url();
    let proxy = InProcess::start(config(&dev, redis_url.clone())).await;
    let load_cfg = |seconds: f64, invalid: f64| LoadgenConfig {
        stratum: proxy.stratum.to_string(),
        redis: redis_url.clone(),
        prefix: "eth".into(),
        connections: CONNECTIONS,
        duration: Duration::from_secs_f64(seconds),
        rate: None,
        invalid,
        chain: ChainSpec::test(),
        dialect: Default::default(),
    };

    // The load runs until cancelled, once shares stored after the restart have been seen.
    // (`loadgen::run`'s future is not `Send`, so it is polled here next to the fault script
    // rather than spawned.)
    let stop_load = CancellationToken::new();
    let load = loadgen::run(load_cfg(120.0, 0.0), stop_load.clone());
    let faults = async {
        let mut con = redis.con();
        let deadline = Instant::now() + Duration::from_secs(60);
        while pow_count(&mut con) < 300 {
            assert!(Instant::now() < deadline, "load never reached Redis");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Probes on both dialects, ready before the kill (a proxy made sick by the outage
        // hands out no new work).
        let w = dev.handle.work();
        let probe = grind(w.number, w.header, NO_BLOCK, Quality::Share, 0);
        let mut miner = Client::connect(proxy.stratum).await;
        miner.login().await;
        let (mut es, en, job) = es_session(proxy.stratum).await;
        let es_params = json!([
            format!("{LOGIN}.es"),
            job,
            format!("{:012x}", grind_es(w.number, w.header, en))
        ]);
        redis.kill();
        let killed_at = Instant::now();

        // A share during the outage: an error naming storage, not a `true`.
        let r = miner.call("eth_submitWork", json!(probe)).await;
        assert_eq!(r["result"], Value::Null, "{r}");
        assert_eq!(r["error"]["code"], json!(-1), "{r}");
        assert_eq!(
            r["error"]["message"],
            json!("Share not stored, storage unavailable"),
            "{r}"
        );
        let r = es_call(&mut es, 3, "mining.submit", es_params.clone()).await;
        assert_eq!(r["result"], Value::Null, "{r}");
        assert_eq!(
            r["error"][1],
            json!("Share not stored, storage unavailable"),
            "{r}"
        );

        tokio::time::sleep(Duration::from_millis(1500).saturating_sub(killed_at.elapsed())).await;
        let path = dir.path().to_path_buf();
        let redis = tokio::task::spawn_blocking(move || DurableRedis::start(port, &path))
            .await
            .expect("restart redis");
        let mut con = redis.con();
        let at_restart = pow_count(&mut con);
        let deadline = Instant::now() + Duration::from_secs(30);
        while pow_count(&mut con) < at_restart + 300 {
            assert!(
                Instant::now() < deadline,
                "no shares stored after the restart"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_load.cancel();
        (redis, con, (miner, probe), (es, es_params), at_restart)
    };
    let (rep, faults) = tokio::join!(load, faults);
    let (_redis, mut con, (mut miner, probe), (mut es, es_params), at_restart) = faults;
    let rep = rep.expect("loadgen");
    eprintln!("across the outage: {rep:?}");
    let after = pow_count(&mut con);
    assert!(rep.acknowledged > 0, "{rep:?}");
    assert_eq!(rep.lost, 0, "acknowledged shares missing: {rep:?}");
    assert_eq!(rep.found_in_redis, rep.acknowledged, "{rep:?}");
    assert_eq!(rep.invalid_accepted, 0, "{rep:?}");
    assert!(rep.valid_rejected > 0, "refused during the outage: {rep:?}");
    assert!(
        rep.double_counted <= CONNECTIONS as u64,
        "only shares in flight at the kill may be stored unacknowledged: {rep:?}"
    );
    assert!(after >= at_restart + 300, "{after} vs {at_restart}");

    // Refused means not kept: neither probe share reached Redis, though it came back.
    let probe_member = probe.join(":");
    let score: Option<f64> = con.zscore("eth:pow", &probe_member).expect("zscore");
    assert_eq!(score, None, "a refused share was stored later");
    let credit: Option<i64> = con.hget("eth:shares:roundCurrent", LOGIN).expect("hget");
    assert_eq!(credit, None, "a refused share was credited later");
    // And resubmitted now they are stored (they were never duplicates).
    let r = miner.call("eth_submitWork", json!(probe)).await;
    assert_eq!(r["result"], json!(true), "{r}");
    let r = es_call(&mut es, 4, "mining.submit", es_params).await;
    assert_eq!(r["result"], json!(true), "{r}");
    let credit: i64 = con.hget("eth:shares:roundCurrent", LOGIN).expect("hget");
    assert_eq!(credit, 2 * SHARE_DIFF as i64);

    // Fully recovered: clean load with invalid, duplicate and stale shares mixed in.
    let rep = loadgen::run(load_cfg(1.5, 0.2), CancellationToken::new())
        .await
        .expect("loadgen after the restart");
    eprintln!("after the restart: {rep:?}");
    assert!(rep.acknowledged > 0, "{rep:?}");
    assert_eq!(rep.lost, 0, "{rep:?}");
    assert_eq!(rep.double_counted, 0, "{rep:?}");
    assert_eq!(rep.valid_rejected, 0, "{rep:?}");
    assert!(rep.invalid_sent > 0, "{rep:?}");
    assert_eq!(rep.invalid_accepted, 0, "{rep:?}");
    proxy.stop().await;
}

/// Raises this process's soft open-files limit to the hard one (children inherit it);
/// returns the limit.
#[allow(unsafe_code)]
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed, which lives for
    // the call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// The `dagproxy proxy` binary with a config file, both Stratum ports on free ports, HTTP
/// and metrics off; killed on drop (its log printed if the test failed).
struct ProxyProcess {
    child: Child,
    stratum: SocketAddr,
    nicehash: SocketAddr,
    dir: tempfile::TempDir,
}

impl ProxyProcess {
    async fn start(dev: &Devnet, redis_url: &str, idle: Duration, max_conn: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (sp, np) = (common::free_port(), common::free_port());
        let toml = format!(
            r#"chain = "test"
upstreamCheckInterval = "100ms"

[[upstream]]
name = "dev"
url = "{dev}"
timeout = "2s"

[proxy]
enabled = false
blockRefreshInterval = "20ms"
stateUpdateInterval = "100ms"
difficulty = {SHARE_DIFF}

[proxy.stratum]
listen = "127.0.0.1:{sp}"
timeout = "{idle}ms"
maxConn = {max_conn}

[redis]
url = "{redis_url}"

[verifier]
kind = "cpu-light"

[metrics]
enabled = false

[stratum_nicehash]
listen = "127.0.0.1:{np}"
"#,
            dev = dev.url,
            idle = idle.as_millis(),
        );
        let file = dir.path().join("proxy.toml");
        std::fs::write(&file, toml).expect("write config");
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_dagproxy"))
            .arg("proxy")
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run dagproxy");
        let mut p = Self {
            child,
            stratum: SocketAddr::from(([127, 0, 0, 1], sp)),
            nicehash: SocketAddr::from(([127, 0, 0, 1], np)),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(p.nicehash).await.is_err()
            || TcpStream::connect(p.stratum).await.is_err()
        {
            p.assert_running();
            assert!(Instant::now() < deadline, "proxy did not start listening");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Client::connect(p.stratum).await.wait_work().await;
        p
    }

    fn status_field(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("status field")
    }

    /// Resident memory, KiB.
    fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    /// Peak resident memory since start, KiB.
    fn hwm_kib(&self) -> u64 {
        self.status_field("VmHWM:")
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("proc fd")
            .count()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("proxy exited: {status}\n{}", self.log());
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// SIGTERM; the proxy must drain and exit 0.
    #[allow(unsafe_code)]
    async fn terminate(mut self) {
        self.assert_running();
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "proxy exit {status}\n{}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "proxy did not exit on SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- proxy log (last lines, newest first) ---");
            for l in tail {
                eprintln!("{l}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects (retrying while the listen backlog is full).
async fn connect(addr: SocketAddr) -> TcpStream {
    for _ in 0..50 {
        match TcpStream::connect(addr).await {
            Ok(s) => return s,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("cannot connect to {addr}");
}

/// How a connection the test does not read from ended.
#[derive(Debug)]
struct Ended {
    /// From connecting to end of stream (or reset).
    after: Duration,
    /// What the server sent first.
    first_line: String,
}

/// Reads until the server closes the connection (or `limit` passes: `None`).
async fn until_closed(s: TcpStream, opened: Instant, limit: Duration) -> Option<Ended> {
    let mut r = BufReader::new(s);
    let mut first_line = String::new();
    let read = tokio::time::timeout(limit, async {
        let _ = r.read_line(&mut first_line).await;
        let mut rest = Vec::new();
        // Ok(0) is end of stream; an error is a reset: closed either way.
        let _ = r.read_to_end(&mut rest).await;
    })
    .await;
    read.ok().map(|()| Ended {
        after: opened.elapsed(),
        first_line,
    })
}

// 10,000 idle sessions (half EthProxy logged in, half EthereumStratum/1.0.0 subscribed, all
// silent afterwards) on the proxy binary: all held at once, its memory bounded, a miner still
// served meanwhile, and every idle session closed by the server at the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Each connection's future yields the handle of its reader task, awaited at the end.
#[allow(clippy::async_yields_async)]
async fn ten_thousand_idle_connections() {
    const WANTED: usize = 10_000;
    /// Descriptors kept free in each process for everything else.
    const RESERVE: u64 = 500;
    const IDLE: Duration = Duration::from_secs(10);
    const RSS_LIMIT_MIB: u64 = 300;
    let _serial = SERIAL.lock().await;
    let limit = raise_nofile_limit();
    let count = usize::try_from(limit.saturating_sub(RESERVE))
        .unwrap_or(usize::MAX)
        .min(WANTED);
    if count < WANTED {
        eprintln!(
            "open-files limit {limit}: {count} idle connections instead of {WANTED} \
             (each one takes a descriptor in this process and in the proxy)"
        );
    }
    let count = count.max(1000);

    let dev = Devnet::start(NO_BLOCK).await;
    let redis = common::RedisServer::start();
    let mut proxy = ProxyProcess::start(&dev, &redis.url(), IDLE, count + 100).await;
    let w = dev.handle.work();
    let share = grind(w.number, w.header, NO_BLOCK, Quality::Share, 0);
    let rss_before = proxy.rss_kib();
    // Baseline once the start-up check's connection is gone.
    let mut fds_before = proxy.open_fds();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        fds_before = fds_before.min(proxy.open_fds());
    }

    // Each connection says one line, then nothing, and waits for the server to close it.
    let started = Instant::now();
    let (stratum, nicehash) = (proxy.stratum, proxy.nicehash);
    let tasks: Vec<JoinHandle<Option<Ended>>> = futures_util::stream::iter(0..count)
        .map(|i| async move {
            let (addr, line) = if i % 2 == 0 {
                (stratum, login_line())
            } else {
                (nicehash, format!("{SUBSCRIBE}\n"))
            };
            let mut s = connect(addr).await;
            let opened = Instant::now();
            s.write_all(line.as_bytes()).await.expect("write");
            tokio::spawn(until_closed(s, opened, IDLE + Duration::from_secs(20)))
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let open_s = started.elapsed().as_secs_f64();

    // All held by the proxy at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds = proxy.open_fds();
    while fds < fds_before + count {
        if Instant::now() >= deadline {
            proxy.assert_running();
            let log = proxy.log();
            let tail = &log[log.len().saturating_sub(3000)..];
            let ended = tasks.iter().filter(|t| t.is_finished()).count();
            panic!(
                "proxy holds {fds} descriptors, {fds_before} before + {count} wanted; \
                 {ended} clients saw their connection end; opened in {open_s:.1} s\n\
                 proxy log tail:\n{tail}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        fds = proxy.open_fds();
    }
    let rss_peak = proxy.rss_kib();

    // A miner is served meanwhile.
    let mut miner = Client::connect(proxy.stratum).await;
    miner.login().await;
    let r = miner.call("eth_submitWork", json!(share)).await;
    assert_eq!(r["result"], json!(true), "{r}");
    assert!(
        proxy.open_fds() >= fds_before + count,
        "idle connections closed before the miner was done ({open_s:.1} s to open them)"
    );
    drop(miner);

    let mut ended = Vec::with_capacity(count);
    for t in tasks {
        ended.push(t.await.expect("reader task"));
    }
    let closed: Vec<&Ended> = ended.iter().flatten().collect();
    assert_eq!(
        closed.len(),
        count,
        "idle connections left open by the server"
    );
    for e in &closed {
        assert!(
            e.first_line.contains("\"result\""),
            "session was served: {e:?}"
        );
        // The timer restarts after the reply; the client measures from before the request.
        assert!(e.after >= IDLE, "closed before the idle timeout: {e:?}");
    }
    let latest = closed.iter().map(|e| e.after).max().unwrap_or_default();
    let rss_after = proxy.rss_kib();
    let hwm = proxy.hwm_kib();
    eprintln!(
        "{count} idle connections opened in {open_s:.2} s; proxy VmRSS {} MiB before, {} MiB \
         with them open ({:.1} KiB each), {} MiB after they closed, peak {} MiB; last closed \
         {:.2} s after connecting (idle timeout {} s)",
        rss_before / 1024,
        rss_peak / 1024,
        rss_peak.saturating_sub(rss_before) as f64 / count as f64,
        rss_after / 1024,
        hwm / 1024,
        latest.as_secs_f64(),
        IDLE.as_secs()
    );
    assert!(hwm < RSS_LIMIT_MIB * 1024, "proxy peak VmRSS {hwm} KiB");
    assert!(
        latest <= IDLE + Duration::from_secs(10),
        "idle connections closed late: {latest:?}"
    );
    proxy.terminate().await;
}

/// Connects and logs in, retrying while the proxy is at its connection cap.
async fn login_with_slot(addr: SocketAddr) -> Client {
    for _ in 0..200 {
        let mut s = connect(addr).await;
        s.write_all(login_line().as_bytes()).await.expect("write");
        let mut line = String::new();
        let mut r = BufReader::new(s);
        let read = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await;
        if let Ok(Ok(n)) = read {
            if n > 0 {
                let v: Value = serde_json::from_str(&line).expect("reply is JSON");
                assert_eq!(v["result"], json!(true), "{v}");
                return Client::from_stream(r.into_inner(), 2);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no connection slot");
}

/// What became of one flood connection.
enum Flood {
    /// Answered: it got a slot (held until the flood is over).
    Served(TcpStream),
    /// Closed by the server without an answer.
    Refused,
    /// Connected and closed again by the client at once.
    Churned,
}

// 2,000 connections in a burst at a proxy capped at 50: the excess is closed at once, the
// proxy stays up, an established miner keeps getting answers throughout, and new connections
// are served once the flood is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood() {
    const CAP: usize = 50;
    const FLOOD: usize = 2000;
    let _serial = SERIAL.lock().await;
    let dev = Devnet::start(NO_BLOCK).await;
    let redis = common::RedisServer::start();
    let mut c = config(&dev, redis.url());
    c.proxy.stratum.max_conn = CAP;
    c.proxy.stratum.timeout = Dur(Duration::from_secs(30));
    let proxy = InProcess::start(c).await;
    let w = dev.handle.work();
    let shares: Vec<[String; 3]> = (0..2)
        .map(|k| grind(w.number, w.header, NO_BLOCK, Quality::Share, k))
        .collect();
    let mut miner = login_with_slot(proxy.stratum).await;

    // The miner asks for work all through the flood.
    let flooding = Arc::new(AtomicBool::new(true));
    let answered = Arc::new(AtomicU64::new(0));
    let ticker = {
        let (flooding, answered) = (flooding.clone(), answered.clone());
        tokio::spawn(async move {
            while flooding.load(Ordering::Relaxed) {
                let r = miner.call("eth_getWork", json!([])).await;
                assert!(r["result"].is_array(), "{r}");
                answered.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            miner
        })
    };

    let addr = proxy.stratum;
    let outcomes: Vec<Flood> = futures_util::stream::iter(0..FLOOD)
        .map(|i| async move {
            let mut s = connect(addr).await;
            if i % 4 == 0 {
                return Flood::Churned;
            }
            if s.write_all(b"{\"id\":7,\"method\":\"eth_getWork\",\"params\":[]}\n")
                .await
                .is_err()
            {
                return Flood::Refused;
            }
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(10), s.peek(&mut buf)).await;
            match read.expect("flood connection neither answered nor closed") {
                Ok(n) if n > 0 => Flood::Served(s),
                _ => Flood::Refused,
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    flooding.store(false, Ordering::Relaxed);
    let mut miner = ticker.await.expect("miner task");
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Flood::Refused))
        .count();
    let churned = outcomes
        .iter()
        .filter(|o| matches!(o, Flood::Churned))
        .count();
    // Still open: the slots they hold are not free until the flood is over.
    let held: Vec<TcpStream> = outcomes
        .into_iter()
        .filter_map(|o| match o {
            Flood::Served(s) => Some(s),
            _ => None,
        })
        .collect();
    let served = held.len();
    let answered = answered.load(Ordering::Relaxed);
    eprintln!(
        "flood of {FLOOD}: {served} served, {refused} closed at the cap, {churned} closed by \
         the client; the miner got {answered} answers meanwhile"
    );
    // The miner holds one of the slots throughout.
    assert!(
        served < CAP,
        "{served} flood connections served with a cap of {CAP}"
    );
    assert!(refused >= FLOOD - churned - (CAP - 1), "{refused} refused");
    assert!(answered > 0, "the miner got no answers during the flood");
    let r = miner.call("eth_submitWork", json!(shares[0])).await;
    assert_eq!(r["result"], json!(true), "{r}");

    // Flood over: new connections get slots again.
    drop(held);
    let mut fresh = login_with_slot(proxy.stratum).await;
    assert!(fresh.call("eth_getWork", json!([])).await["result"].is_array());
    let r = fresh.call("eth_submitWork", json!(shares[1])).await;
    assert_eq!(r["result"], json!(true), "{r}");
    proxy.stop().await;
}

/// Sends `bytes` one at a time every `every` until the server closes the connection;
/// returns how long after `from` that was seen (panics after `limit`).
async fn dribble(
    mut s: TcpStream,
    from: Instant,
    bytes: &[u8],
    every: Duration,
    limit: Duration,
) -> Duration {
    let mut probe = [0u8; 64];
    for b in bytes.iter().cycle() {
        assert!(from.elapsed() < limit, "slow client never closed");
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        // Closed by the server: end of stream or reset.
        match tokio::time::timeout(every, s.read(&mut probe)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => panic!("reply to an unfinished line"),
        }
    }
    from.elapsed()
}

/// Connects to the EthereumStratum/1.0.0 port and subscribes.
async fn subscribed(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr).await;
    s.write_all(format!("{SUBSCRIBE}\n").as_bytes())
        .await
        .expect("write");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
        .await
        .expect("subscribe reply in time")
        .expect("read");
    let v: Value = serde_json::from_str(&line).expect("reply is JSON");
    assert!(v["result"].is_array(), "{v}");
    assert!(r.buffer().is_empty());
    r.into_inner()
}

/// A client that writes as fast as it can and never reads; returns (lines sent, how long
/// until a write failed because the server dropped it).
async fn flood_without_reading(addr: SocketAddr, line: &str, limit: Duration) -> (u64, Duration) {
    let socket = TcpSocket::new_v4().expect("socket");
    // A small receive window, so the server's writes block sooner.
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut s = socket.connect(addr).await.expect("connect");
    let started = Instant::now();
    s.write_all(login_line().as_bytes()).await.expect("write");
    let batch = line.repeat(64);
    let mut sent = 0u64;
    loop {
        assert!(
            started.elapsed() < limit,
            "client not reading was never dropped ({sent} lines sent)"
        );
        match tokio::time::timeout(Duration::from_secs(1), s.write_all(batch.as_bytes())).await {
            Ok(Ok(())) => sent += 64,
            Ok(Err(_)) => return (sent, started.elapsed()),
            // Blocked: the server stopped reading; keep waiting for it to drop us.
            Err(_) => {}
        }
    }
}

// Slow clients on the proxy binary (idle timeout 1 s): (a) slowloris, a request dribbled a
// byte at a time without a newline, is closed at the idle timeout; (b) a client flooding
// submits without reading its replies is dropped (write timeout) while the proxy's memory
// stays flat and another miner is served; (c) a connection that sends nothing is closed at
// the idle timeout; (d) a request followed by a half-close still gets its answer. (a), (c)
// and (d) on both dialects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients() {
    const IDLE: Duration = Duration::from_secs(1);
    /// Generous upper bound on "at the idle timeout" on a busy machine.
    const LATE: Duration = Duration::from_secs(4);
    let _serial = SERIAL.lock().await;
    let dev = Devnet::start(NO_BLOCK).await;
    let redis = common::RedisServer::start();
    let proxy = ProxyProcess::start(&dev, &redis.url(), IDLE, 1000).await;
    let (stratum, nicehash) = (proxy.stratum, proxy.nicehash);
    let w = dev.handle.work();
    let share = grind(w.number, w.header, NO_BLOCK, Quality::Share, 0);
    let header = proxy_support::header_of(&share[1]);
    let rss_before = proxy.rss_kib();

    // (b): stale submits (answered `false` without verification: cheap for the server).
    let mut stale = [0x5au8; 32];
    stale[0] = !header[0];
    let flood_line = format!(
        "{}\n",
        json!({"id": 9, "jsonrpc": "2.0", "method": "eth_submitWork",
               "params": ["0x0000000000000001", dagproxy::hexutil::to_hex(&stale),
                          dagproxy::hexutil::to_hex(&[0x11; 32])]})
    );
    let flooder = tokio::spawn(async move {
        flood_without_reading(stratum, &flood_line, Duration::from_secs(30)).await
    });

    // (a) slowloris on both dialects.
    let eth = tokio::spawn(async move {
        // Measured from before connecting: the server's timer starts later.
        let from = Instant::now();
        let s = connect(stratum).await;
        dribble(
            s,
            from,
            br#"{"id":1,"method":"eth_getWork","params":[]}"#,
            Duration::from_millis(100),
            Duration::from_secs(15),
        )
        .await
    });
    let nh = tokio::spawn(async move {
        let from = Instant::now();
        let s = subscribed(nicehash).await;
        dribble(
            s,
            from,
            br#"{"id":2,"method":"mining.authorize","params":["x"]}"#,
            Duration::from_millis(100),
            Duration::from_secs(15),
        )
        .await
    });
    // (c) silent connections on both dialects.
    let silent: Vec<JoinHandle<Option<Ended>>> = [stratum, nicehash]
        .into_iter()
        .map(|addr| {
            tokio::spawn(async move {
                let from = Instant::now();
                let s = connect(addr).await;
                until_closed(s, from, Duration::from_secs(15)).await
            })
        })
        .collect();
    // (d) a request, then a half-close: answered, then closed.
    for (addr, line) in [
        (
            stratum,
            "{\"id\":5,\"method\":\"eth_getWork\",\"params\":[]}\n".to_string(),
        ),
        (nicehash, format!("{SUBSCRIBE}\n")),
    ] {
        let mut s = connect(addr).await;
        s.write_all(line.as_bytes()).await.expect("write");
        s.shutdown().await.expect("half-close");
        let ended = until_closed(s, Instant::now(), Duration::from_secs(10))
            .await
            .expect("closed after the answer");
        let v: Value = serde_json::from_str(&ended.first_line).expect("answered");
        assert!(v["result"].is_array(), "{v}");
        assert!(
            ended.after < IDLE,
            "closed on end of stream, not by the timer"
        );
    }

    // Another miner is served while the flooder is stuck.
    let mut miner = Client::connect(stratum).await;
    miner.login().await;
    let r = miner.call("eth_submitWork", json!(share)).await;
    assert_eq!(r["result"], json!(true), "{r}");

    for (what, t) in [("eth", eth), ("nicehash", nh)] {
        let after = t.await.expect("slowloris task");
        eprintln!(
            "slowloris ({what}) closed after {:.2} s",
            after.as_secs_f64()
        );
        assert!(after >= IDLE && after < IDLE + LATE, "{what}: {after:?}");
    }
    for t in silent {
        let e = t
            .await
            .expect("silent task")
            .expect("silent connection closed");
        assert!(e.first_line.is_empty(), "{e:?}");
        assert!(e.after >= IDLE && e.after < IDLE + LATE, "{e:?}");
    }
    let (sent, after) = flooder.await.expect("flooder task");
    let rss_after = proxy.rss_kib();
    eprintln!(
        "client not reading dropped after {:.2} s and {sent} submits; proxy VmRSS {} → {} KiB, \
         peak {} KiB",
        after.as_secs_f64(),
        rss_before,
        rss_after,
        proxy.hwm_kib()
    );
    assert!(
        proxy.hwm_kib() < rss_before + 64 * 1024,
        "proxy memory grew by more than 64 MiB"
    );
    // Still serving (the first miner's session has timed out by now).
    drop(miner);
    let mut miner = Client::connect(stratum).await;
    miner.login().await;
    assert!(miner.call("eth_getWork", json!([])).await["result"].is_array());
    proxy.terminate().await;
}

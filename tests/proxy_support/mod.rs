//! Harness for the proxy tests: a real redis-server, dev chains and the proxy on port 0, a
//! line-level Stratum client, and a nonce grinder for shares of a chosen quality.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use dagproxy::config::{Config, Dur, UpstreamConfig};
use dagproxy::devnet::{self, DevnetConfig, DevnetHandle};
use dagproxy::ethash::target::target_from_difficulty;
use dagproxy::ethash::{hashimoto, ChainSpec, FullDataset, LightCache, PowInput, U256};
use dagproxy::hexutil::{nonce_hex, to_hex};
use dagproxy::proxy::{self, Listeners, ProxyError};
use dagproxy::verify::VerifierKind;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::RedisServer;

/// A miner address.
pub const LOGIN: &str = "0xb85150eb365e7df0941f0cf08235f987ba91506a";
/// Share difficulty configured in the proxy: one hash in 4 is a share.
pub const SHARE_DIFF: u64 = 4;
/// A block difficulty no test share reaches by chance (1 in a million).
pub const HARD_BLOCK: u64 = 1_000_000;

/// A dev chain on port 0.
pub struct Devnet {
    pub handle: DevnetHandle,
    pub url: String,
    pub stop: CancellationToken,
    addr: SocketAddr,
    task: Option<JoinHandle<Result<(), devnet::DevnetError>>>,
}

impl Devnet {
    /// Starts a test-chain node with this block difficulty and no block timer.
    pub async fn start(difficulty: u64) -> Self {
        Self::start_chain(ChainSpec::test(), 1, difficulty).await
    }

    /// Starts a node of any chain at `start_block`.
    pub async fn start_chain(chain: ChainSpec, start_block: u64, difficulty: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind devnet");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let (handle, task) = devnet::spawn(
            listener,
            DevnetConfig {
                chain,
                difficulty: U256::from(difficulty),
                block_time: Duration::ZERO,
                start_block,
            },
            stop.clone(),
        )
        .expect("devnet");
        Self {
            handle,
            url: format!("http://{addr}/"),
            stop,
            addr,
            task: Some(task),
        }
    }

    /// Takes the node down: its listener and connections are closed once this returns.
    pub async fn kill(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Brings a killed node back on its address with its chain state.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind devnet");
        self.stop = CancellationToken::new();
        self.task = Some(tokio::spawn(devnet::serve(
            self.handle.clone(),
            listener,
            self.stop.clone(),
        )));
    }
}

/// A proxy on port 0 with its Redis.
pub struct TestProxy {
    pub stratum: SocketAddr,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), ProxyError>>,
    pub redis: RedisServer,
}

/// The proxy's test configuration: test chain, cpu-light, fast refresh and health checks.
pub fn test_config(upstreams: &[&Devnet], redis: &RedisServer) -> Config {
    let mut c = Config {
        chain: "test".into(),
        upstream: upstreams
            .iter()
            .enumerate()
            .map(|(i, d)| UpstreamConfig {
                name: format!("dev{i}"),
                url: d.url.clone(),
                timeout: Dur(Duration::from_secs(2)),
            })
            .collect(),
        upstream_check_interval: Dur(Duration::from_millis(100)),
        ..Config::default()
    };
    c.proxy.block_refresh_interval = Dur(Duration::from_millis(20));
    c.proxy.state_update_interval = Dur(Duration::from_millis(100));
    c.proxy.difficulty = SHARE_DIFF;
    c.redis.url = redis.url();
    c.verifier.kind = VerifierKind::CpuLight;
    c
}

impl TestProxy {
    /// Starts the proxy with `config` and waits until it hands out work.
    pub async fn start(config: Config, redis: RedisServer) -> Self {
        let p = Self::spawn(config, redis).await;
        let mut c = p.client().await;
        c.wait_work().await;
        p
    }

    /// Starts the proxy with `config`.
    pub async fn spawn(config: Config, redis: RedisServer) -> Self {
        let stratum = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (s_addr, h_addr, m_addr) = (
            stratum.local_addr().expect("addr"),
            http.local_addr().expect("addr"),
            metrics.local_addr().expect("addr"),
        );
        let shutdown = CancellationToken::new();
        let checked = config.check().expect("valid test config");
        let task = tokio::spawn(proxy::run(
            Listeners {
                stratum: Some(stratum),
                http: Some(http),
                metrics: Some(metrics),
                ..Listeners::default()
            },
            checked,
            shutdown.clone(),
        ));
        Self {
            stratum: s_addr,
            http: h_addr,
            metrics: m_addr,
            shutdown,
            task,
            redis,
        }
    }

    /// A Stratum client connected to the proxy.
    pub async fn client(&self) -> Client {
        Client::connect(self.stratum).await
    }

    /// Stops the proxy and waits for it to drain.
    pub async fn stop(self) -> RedisServer {
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("proxy stops in time")
            .expect("proxy task");
        r.expect("proxy ran cleanly");
        self.redis
    }
}

/// A line-level Stratum client.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let (r, w) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        Self {
            reader: BufReader::new(r),
            writer: w,
            next_id: 1,
        }
    }

    /// A client on an already-connected stream; request ids continue from `next_id`.
    pub fn from_stream(stream: TcpStream, next_id: u64) -> Self {
        let (r, w) = stream.into_split();
        Self {
            reader: BufReader::new(r),
            writer: w,
            next_id,
        }
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Reads one line as JSON (10 s limit); `None` once the server closed the connection.
    pub async fn read(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
            .await
            .expect("reply in time");
        match n {
            // A close with our request unread arrives as a reset.
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("reply is JSON")),
        }
    }

    /// Reads the reply to request `id`, skipping job pushes (id 0).
    pub async fn reply(&mut self, id: u64) -> Value {
        loop {
            let v = self.read().await.expect("connection open");
            if v["id"] == json!(id) {
                return v;
            }
            assert_eq!(v["id"], json!(0), "unexpected reply {v}");
        }
    }

    /// Sends a request and waits for its reply.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"id": id, "jsonrpc": "2.0", "method": method, "params": params});
        self.send_raw(format!("{line}\n").as_bytes()).await;
        self.reply(id).await
    }

    /// `eth_submitLogin` with the test address.
    pub async fn login(&mut self) {
        self.login_as(LOGIN).await;
    }

    /// `eth_submitLogin` with any login.
    pub async fn login_as(&mut self, login: &str) {
        let r = self.call("eth_submitLogin", json!([login])).await;
        assert_eq!(r["result"], json!(true), "{r}");
    }

    /// Polls getWork until the proxy has a template; returns `[header, seed, target]`.
    pub async fn wait_work(&mut self) -> Vec<String> {
        for _ in 0..200 {
            let r = self.call("eth_getWork", json!([])).await;
            if let Some(a) = r["result"].as_array() {
                return a
                    .iter()
                    .map(|v| v.as_str().expect("string").to_string())
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no work from the proxy");
    }
}

/// What the grinder looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quality {
    /// A share that is not a block.
    Share,
    /// Meets the block target.
    Block,
    /// Above the share target.
    Low,
}

/// The test chain's 32 KiB dataset (generated in a moment; hashing from it is much faster than
/// from the light cache).
fn dataset(height: u64) -> FullDataset {
    let cache = LightCache::new(ChainSpec::test().epoch_info(height));
    FullDataset::generate(&cache, &|_, _| {})
}

/// A solution as `[nonce, header, mix]` params.
pub fn grind(
    height: u64,
    header: [u8; 32],
    block_diff: u64,
    want: Quality,
    skip: u64,
) -> [String; 3] {
    let cache = LightCache::new(ChainSpec::test().epoch_info(height));
    let share = target_from_difficulty(U256::from(SHARE_DIFF)).expect("target");
    let block = target_from_difficulty(U256::from(block_diff)).expect("target");
    let mut found = 0;
    for nonce in 0u64.. {
        let out = hashimoto(
            &cache,
            &PowInput {
                header_hash: header,
                nonce,
            },
        );
        let v = U256::from_be_bytes(out.result);
        let q = if v <= block {
            Quality::Block
        } else if v <= share {
            Quality::Share
        } else {
            Quality::Low
        };
        if q == want {
            if found == skip {
                return [nonce_hex(nonce), to_hex(&header), to_hex(&out.mix_digest)];
            }
            found += 1;
        }
    }
    unreachable!()
}

/// Header bytes from `0x` hex.
pub fn header_of(hex: &str) -> [u8; 32] {
    dagproxy::hexutil::parse_h256(hex, "header").expect("header")
}

/// `count` distinct shares (not blocks) for one header, ground in parallel.
pub fn grind_many(
    height: u64,
    header: [u8; 32],
    block_diff: u64,
    count: usize,
) -> Vec<[String; 3]> {
    use dagproxy::ethash::{hashimoto_par, PowOutput};
    let dataset = dataset(height);
    let share = target_from_difficulty(U256::from(SHARE_DIFF)).expect("target");
    let block = target_from_difficulty(U256::from(block_diff)).expect("target");
    let mut found = Vec::with_capacity(count);
    let mut start = 0u64;
    while found.len() < count {
        let inputs: Vec<PowInput> = (start..start + 4096)
            .map(|nonce| PowInput {
                header_hash: header,
                nonce,
            })
            .collect();
        let mut out = vec![PowOutput::default(); inputs.len()];
        hashimoto_par(&dataset.rows(), &inputs, &mut out);
        for (i, o) in inputs.iter().zip(&out) {
            let v = U256::from_be_bytes(o.result);
            if v <= share && v > block && found.len() < count {
                found.push([nonce_hex(i.nonce), to_hex(&header), to_hex(&o.mix_digest)]);
            }
        }
        start += 4096;
    }
    found
}

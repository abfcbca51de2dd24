//! The embedded development chain (`dagproxy devnet`): a geth-style JSON-RPC node that makes
//! pending headers, verifies `eth_submitWork` solutions with the real engine, and advances on
//! accepted solutions and on a timer. For demos, the quickstart and the proxy's tests.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::chain_arg;
use crate::ethash::keccak::keccak256;
use crate::ethash::target::{target_from_difficulty, target_hex, TargetError};
use crate::ethash::{hashimoto, ChainSpec, LightCache, PowInput, U256};
use crate::hexutil::{nonce_hex, parse_h256, parse_nonce, to_hex};

/// Headers of this many earlier heights stay submittable besides the current one (geth and
/// open-ethereum-pool keep 3).
const RECENT: usize = 3;
/// Light caches kept (current epoch and the one before a boundary).
const CACHES: usize = 2;

/// Errors of the dev chain.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// Bad settings.
    #[error("devnet: {0}")]
    Config(String),
    /// Difficulty without a target.
    #[error("devnet difficulty")]
    Difficulty(#[from] TargetError),
    /// Binding or serving failed.
    #[error("devnet server")]
    Io(#[from] std::io::Error),
    /// A blocking task died.
    #[error("devnet worker failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Settings of the dev chain.
#[derive(Clone, Debug)]
pub struct DevnetConfig {
    /// Chain preset (epochs, seeds, cache sizes).
    pub chain: ChainSpec,
    /// Block difficulty of every height.
    pub difficulty: U256,
    /// A new height this often even without solutions (other miners); zero: only on solutions.
    pub block_time: Duration,
    /// The first pending block number.
    pub start_block: u64,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            chain: ChainSpec::test(),
            difficulty: U256::from(DEFAULT_DIFFICULTY),
            block_time: Duration::from_secs(DEFAULT_BLOCK_TIME_S),
            start_block: 0,
        }
    }
}

const DEFAULT_DIFFICULTY: u64 = 2_000_000;
const DEFAULT_BLOCK_TIME_S: u64 = 15;

/// The work for the current pending block, as `eth_getWork` gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// Pow hash of the pending header.
    pub header: [u8; 32],
    /// Seed hash of its epoch.
    pub seed: [u8; 32],
    /// Block target, `2^256 / difficulty`.
    pub target: U256,
    /// Pending block number.
    pub number: u64,
}

/// A solution the dev chain accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptedBlock {
    /// Block number.
    pub number: u64,
    /// Nonce as a number.
    pub nonce: u64,
    /// The pow hash it sealed.
    pub header: [u8; 32],
    /// Its mix digest.
    pub mix: [u8; 32],
}

#[derive(Debug)]
struct Chain {
    /// The current pending work.
    current: Work,
    /// Current and earlier headers still submittable: header → number, oldest first.
    recent: VecDeque<(u64, [u8; 32])>,
    /// Headers already sealed by an accepted solution.
    sealed: Vec<[u8; 32]>,
    accepted: Vec<AcceptedBlock>,
    counter: u64,
    salt: u64,
    timestamp: u64,
}

#[derive(Debug)]
struct Inner {
    cfg: DevnetConfig,
    target: U256,
    chain: Mutex<Chain>,
    caches: Mutex<HashMap<u64, Arc<LightCache>>>,
    submit_calls: AtomicU64,
    advanced: tokio::sync::Notify,
}

/// A cloneable view of a running dev chain, for tests and the CLI.
#[derive(Clone, Debug)]
pub struct DevnetHandle {
    inner: Arc<Inner>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DevnetHandle {
    /// Builds the chain state (no server yet).
    pub fn new(cfg: DevnetConfig) -> Result<Self, DevnetError> {
        cfg.chain
            .validate()
            .map_err(|e| DevnetError::Config(e.to_string()))?;
        let target = target_from_difficulty(cfg.difficulty)?;
        // Different headers on every run, so two dev chains never share work.
        let salt = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 32);
        let mut chain = Chain {
            current: Work {
                header: [0; 32],
                seed: [0; 32],
                target,
                number: cfg.start_block,
            },
            recent: VecDeque::new(),
            sealed: Vec::new(),
            accepted: Vec::new(),
            counter: 0,
            salt,
            timestamp: now_s(),
        };
        make_work(&cfg.chain, &mut chain, target, cfg.start_block);
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                target,
                chain: Mutex::new(chain),
                caches: Mutex::new(HashMap::new()),
                submit_calls: AtomicU64::new(0),
                advanced: tokio::sync::Notify::new(),
            }),
        })
    }

    fn chain(&self) -> MutexGuard<'_, Chain> {
        // A panic elsewhere cannot leave Chain half-updated in a way that matters here.
        self.inner
            .chain
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The configuration.
    pub fn config(&self) -> &DevnetConfig {
        &self.inner.cfg
    }

    /// The pending block number.
    pub fn height(&self) -> u64 {
        self.chain().current.number
    }

    /// The current pending work.
    pub fn work(&self) -> Work {
        self.chain().current
    }

    /// Solutions accepted so far, in order.
    pub fn accepted(&self) -> Vec<AcceptedBlock> {
        self.chain().accepted.clone()
    }

    /// `eth_submitWork` calls received (accepted or not).
    pub fn submit_calls(&self) -> u64 {
        self.inner.submit_calls.load(Ordering::Relaxed)
    }

    /// Moves to the next height now, as if another miner found the block.
    pub fn advance(&self) {
        let mut c = self.chain();
        let next = c.current.number + 1;
        make_work(&self.inner.cfg.chain, &mut c, self.inner.target, next);
        drop(c);
        self.inner.advanced.notify_waiters();
    }

    /// Waits until the pending height is at least `height`.
    pub async fn wait_height(&self, height: u64) {
        loop {
            let notified = self.inner.advanced.notified();
            if self.height() >= height {
                return;
            }
            notified.await;
        }
    }

    /// The light cache of an epoch, built on the blocking pool on first use.
    async fn cache(&self, number: u64) -> Result<Arc<LightCache>, DevnetError> {
        let info = self.inner.cfg.chain.epoch_info(number);
        if let Some(c) = self.caches().get(&info.epoch) {
            return Ok(c.clone());
        }
        let cache = Arc::new(tokio::task::spawn_blocking(move || LightCache::new(info)).await?);
        let mut caches = self.caches();
        if caches.len() >= CACHES {
            let oldest = caches.keys().min().copied();
            if let Some(e) = oldest.filter(|e| *e < info.epoch) {
                caches.remove(&e);
            }
        }
        caches.insert(info.epoch, cache.clone());
        Ok(cache)
    }

    fn caches(&self) -> MutexGuard<'_, HashMap<u64, Arc<LightCache>>> {
        self.inner
            .caches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks a solution and, when it seals a live header, advances the chain. `true` only
    /// for a new, valid block.
    pub async fn submit(&self, nonce: u64, header: [u8; 32], mix: [u8; 32]) -> bool {
        self.inner.submit_calls.fetch_add(1, Ordering::Relaxed);
        let number = {
            let c = self.chain();
            match c.recent.iter().find(|(_, h)| *h == header) {
                Some((n, _)) if !c.sealed.contains(&header) => *n,
                _ => {
                    tracing::info!(header = %to_hex(&header), "devnet: stale or unknown header");
                    return false;
                }
            }
        };
        let cache = match self.cache(number).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("devnet: {e}");
                return false;
            }
        };
        let input = PowInput {
            header_hash: header,
            nonce,
        };
        let out = match tokio::task::spawn_blocking(move || hashimoto(&*cache, &input)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("devnet: hashing failed: {e}");
                return false;
            }
        };
        if out.mix_digest != mix {
            tracing::info!(number, "devnet: wrong mix digest");
            return false;
        }
        if U256::from_be_bytes(out.result) > self.inner.target {
            tracing::info!(number, "devnet: result above the block target");
            return false;
        }
        let mut c = self.chain();
        // Checked again: another submit may have sealed it or the window moved meanwhile.
        if c.sealed.contains(&header) || !c.recent.iter().any(|(_, h)| *h == header) {
            return false;
        }
        c.sealed.push(header);
        if c.sealed.len() > 4 * (RECENT + 1) {
            c.sealed.remove(0);
        }
        c.accepted.push(AcceptedBlock {
            number,
            nonce,
            header,
            mix,
        });
        let next = c.current.number.max(number) + 1;
        make_work(&self.inner.cfg.chain, &mut c, self.inner.target, next);
        drop(c);
        tracing::info!(number, nonce = %nonce_hex(nonce), "devnet: block accepted");
        self.inner.advanced.notify_waiters();
        true
    }
}

/// A new pending header at `number`: keccak(number, counter, salt).
fn make_work(chain: &ChainSpec, c: &mut Chain, target: U256, number: u64) {
    c.counter += 1;
    let mut pre = [0u8; 24];
    pre[..8].copy_from_slice(&number.to_be_bytes());
    pre[8..16].copy_from_slice(&c.counter.to_be_bytes());
    pre[16..].copy_from_slice(&c.salt.to_be_bytes());
    let header = keccak256(&pre);
    c.current = Work {
        header,
        seed: chain.epoch_info(number).seed,
        target,
        number,
    };
    c.timestamp = now_s().max(c.timestamp + 1);
    c.recent.push_back((number, header));
    while c.recent.len() > RECENT + 1 {
        c.recent.pop_front();
    }
}

/// Starts the dev chain on `listener` in a task; the handle sees its state.
pub fn spawn(
    listener: TcpListener,
    cfg: DevnetConfig,
    shutdown: CancellationToken,
) -> Result<(DevnetHandle, JoinHandle<Result<(), DevnetError>>), DevnetError> {
    let handle = DevnetHandle::new(cfg)?;
    let task = tokio::spawn(serve(handle.clone(), listener, shutdown));
    Ok((handle, task))
}

/// Runs the dev chain on `listener` until `shutdown`.
pub async fn run(
    listener: TcpListener,
    cfg: DevnetConfig,
    shutdown: CancellationToken,
) -> Result<(), DevnetError> {
    serve(DevnetHandle::new(cfg)?, listener, shutdown).await
}

/// Serves an existing chain state.
pub async fn serve(
    handle: DevnetHandle,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), DevnetError> {
    // Build the first epoch's cache before answering, so the first solution is quick.
    handle.cache(handle.height()).await?;
    let block_time = handle.inner.cfg.block_time;
    if !block_time.is_zero() {
        let h = handle.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(block_time);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => h.advance(),
                }
            }
        });
    }
    let app = Router::new()
        .route("/", post(rpc))
        .with_state(handle.clone());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, chain = %handle.inner.cfg.chain, height = handle.height(), "devnet listening");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

async fn rpc(State(h): State<DevnetHandle>, body: Bytes) -> Json<Value> {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return Json(error(Value::Null, -32700, "Parse error")),
    };
    match req {
        Value::Array(calls) if !calls.is_empty() => {
            let mut out = Vec::with_capacity(calls.len());
            for c in calls {
                out.push(call(&h, c).await);
            }
            Json(Value::Array(out))
        }
        other => Json(call(&h, other).await),
    }
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn reply(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn hex_u64(n: u64) -> String {
    format!("{n:#x}")
}

fn hex_u256(n: U256) -> String {
    format!("{n:#x}")
}

async fn call(h: &DevnetHandle, req: Value) -> Value {
    let Value::Object(obj) = req else {
        return error(Value::Null, -32600, "Invalid request");
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return error(id, -32600, "Invalid request");
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(p)) => p.clone(),
        Some(_) => return error(id, -32602, "params must be an array"),
    };
    match method {
        "eth_getWork" => {
            let w = h.work();
            reply(
                id,
                json!([
                    to_hex(&w.header),
                    to_hex(&w.seed),
                    target_hex(w.target),
                    hex_u64(w.number)
                ]),
            )
        }
        "eth_getBlockByNumber" => {
            let which = params.first().and_then(Value::as_str).unwrap_or("");
            let w = h.work();
            let (number, ts) = {
                let c = h.chain();
                (c.current.number, c.timestamp)
            };
            let block = match which {
                "pending" => Some(block_json(h, number, None, ts)),
                "latest" if number > 0 => {
                    let parent = h.chain().recent.iter().rev().nth(1).map(|(_, hh)| *hh);
                    Some(block_json(
                        h,
                        number - 1,
                        Some(parent.unwrap_or(w.header)),
                        ts - 1,
                    ))
                }
                "latest" => None,
                _ => return error(id, -32602, "only \"pending\" and \"latest\" are served"),
            };
            reply(id, block.unwrap_or(Value::Null))
        }
        "eth_blockNumber" => reply(id, json!(hex_u64(h.height().saturating_sub(1)))),
        "eth_submitWork" => match parse_solution(&params) {
            Some((nonce, header, mix)) => reply(id, json!(h.submit(nonce, header, mix).await)),
            None => error(
                id,
                -32602,
                "invalid argument: want [nonce, header, mix] as 0x hex",
            ),
        },
        "eth_submitHashrate" => reply(id, json!(true)),
        "web3_clientVersion" => reply(
            id,
            json!(concat!("dagproxy-devnet/", env!("CARGO_PKG_VERSION"))),
        ),
        "net_version" => reply(id, json!("1337")),
        _ => error(
            id,
            -32601,
            &format!("the method {method} does not exist/is not available"),
        ),
    }
}

/// The geth block fields open-ethereum-pool reads (and a few more for tools).
fn block_json(h: &DevnetHandle, number: u64, hash: Option<[u8; 32]>, ts: u64) -> Value {
    json!({
        "number": hex_u64(number),
        "difficulty": hex_u256(h.inner.cfg.difficulty),
        "hash": hash.map(|x| to_hex(&x)),
        "nonce": Value::Null,
        "timestamp": hex_u64(ts),
        "gasLimit": "0x7a1200",
        "gasUsed": "0x0",
        "miner": "0x0000000000000000000000000000000000000000",
        "transactions": [],
        "uncles": [],
    })
}

fn parse_solution(params: &[Value]) -> Option<(u64, [u8; 32], [u8; 32])> {
    let [n, hd, m] = params else { return None };
    let nonce = parse_nonce(n.as_str()?).ok()?;
    let header = parse_h256(hd.as_str()?, "header").ok()?;
    let mix = parse_h256(m.as_str()?, "mix").ok()?;
    Some((nonce, header, mix))
}

/// `dagproxy devnet` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct DevnetArgs {
    /// Address to serve JSON-RPC on (HTTP POST /).
    #[arg(long, default_value = "127.0.0.1:8545")]
    pub listen: SocketAddr,
    /// Chain preset: test (tiny DAG), ethereum, classic, mordor.
    #[arg(long, default_value = "test", value_parser = chain_arg)]
    pub chain: ChainSpec,
    /// Block difficulty (decimal or 0x hex).
    #[arg(long, default_value_t = DEFAULT_DIFFICULTY.to_string())]
    pub difficulty: String,
    /// Seconds between heights without solutions (0: only on solutions).
    #[arg(long, default_value_t = DEFAULT_BLOCK_TIME_S as f64)]
    pub block_time: f64,
    /// First pending block number.
    #[arg(long, default_value_t = 0)]
    pub start_block: u64,
}

impl DevnetArgs {
    /// The configuration these arguments describe.
    pub fn config(&self) -> Result<DevnetConfig, DevnetError> {
        let difficulty = crate::ethash::target::parse_u256(&self.difficulty)?;
        let block_time = Duration::try_from_secs_f64(self.block_time).map_err(|_| {
            DevnetError::Config(format!(
                "--block-time must be a non-negative number of seconds, got {}",
                self.block_time
            ))
        })?;
        Ok(DevnetConfig {
            chain: self.chain.clone(),
            difficulty,
            block_time,
            start_block: self.start_block,
        })
    }
}

/// `dagproxy devnet`: binds, serves until Ctrl-C.
pub async fn run_cli(args: DevnetArgs) -> Result<(), DevnetError> {
    let cfg = args.config()?;
    target_from_difficulty(cfg.difficulty)?;
    let listener = TcpListener::bind(args.listen).await?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    run(listener, cfg, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_differ_per_height_and_window_holds_four() {
        let h = DevnetHandle::new(DevnetConfig {
            block_time: Duration::ZERO,
            ..DevnetConfig::default()
        })
        .expect("config");
        let first = h.work();
        h.advance();
        let second = h.work();
        assert_ne!(first.header, second.header);
        assert_eq!(second.number, first.number + 1);
        for _ in 0..5 {
            h.advance();
        }
        assert_eq!(h.chain().recent.len(), RECENT + 1);
    }
}

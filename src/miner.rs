//! The demo CPU miner (`dagproxy mine`): speaks the EthProxy Stratum dialect to a pool, finds
//! the epoch from the job's seed hash, grinds nonces with the engine on N threads against the
//! share target and submits what it finds. For demos and end-to-end tests, not for profit.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;

use crate::cli::chain_arg;
use crate::ethash::chain::{SizeRule, ETHASH_EPOCH_LENGTH};
use crate::ethash::keccak::keccak256;
use crate::ethash::target::parse_u256;
use crate::ethash::{
    hashimoto_batch, ChainSpec, EpochInfo, FullDataset, LightCache, PowInput, PowOutput, U256,
};
use crate::hexutil::{nonce_hex, parse_h256, to_hex};

/// Seed-hash rounds searched (epoch 4096 of 30000 blocks: block 122,880,000).
const MAX_SEED_ROUNDS: u64 = 4096;
/// Longest line accepted from the pool.
const MAX_LINE: usize = 64 * 1024;
/// Request ids: login, getWork, then submits from here on.
const ID_LOGIN: u64 = 1;
const ID_GETWORK: u64 = 2;
const ID_FIRST_SUBMIT: u64 = 100;

/// Errors of the miner.
#[derive(Debug, thiserror::Error)]
pub enum MinerError {
    /// Bad settings.
    #[error("miner: {0}")]
    Config(String),
    /// The pool address does not resolve or refuses.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address given.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The pool refused the login.
    #[error("login refused: {0}")]
    Login(String),
    /// The pool said something unusable.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Socket error.
    #[error("connection")]
    Io(#[from] std::io::Error),
    /// A worker thread died.
    #[error("worker thread failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Settings of a mining run.
#[derive(Clone, Debug)]
pub struct MinerConfig {
    /// Pool Stratum address, `host:port`.
    pub stratum: String,
    /// Payout address (`0x` + 40 hex).
    pub login: String,
    /// Worker name, sent as the request's `worker` field.
    pub worker: Option<String>,
    /// Hashing threads.
    pub threads: usize,
    /// Chain preset (for the seed → epoch search and the DAG sizes).
    pub chain: ChainSpec,
    /// Stop after this long (None: until shutdown).
    pub duration: Option<Duration>,
}

/// What a run did; printed as one JSON line by the CLI.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct MinerStats {
    /// Hashes computed.
    pub hashes: u64,
    /// Shares sent.
    pub submitted: u64,
    /// Shares the pool answered `true`.
    pub accepted: u64,
    /// Shares the pool answered `false` or with an error.
    pub rejected: u64,
    /// Jobs received (getWork replies and pushes with a new header).
    pub jobs: u64,
    /// Connections made (1 + reconnects).
    pub connections: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// hashes / seconds.
    pub hashrate: f64,
}

/// Finds the epoch a seed hash belongs to on `chain` (seeds are keccak iterations of zero,
/// one per 30000 blocks).
pub fn epoch_for_seed(chain: &ChainSpec, seed: &[u8; 32]) -> Option<EpochInfo> {
    let mut s = [0u8; 32];
    for rounds in 0..=MAX_SEED_ROUNDS {
        if &s == seed {
            // The first block of that 30000-block span uses this seed (pre- or post-ECIP-1099).
            let info = chain.epoch_info(rounds * ETHASH_EPOCH_LENGTH);
            return (&info.seed == seed).then_some(info);
        }
        s = keccak256(&s);
    }
    None
}

/// What the threads hash from: the full dataset (test chain, tiny) or the light cache.
#[derive(Debug)]
pub enum MiningSource {
    /// Every row in memory.
    Full(FullDataset),
    /// Rows computed from the cache on the fly (slow, but no DAG to build).
    Light(LightCache),
}

impl MiningSource {
    /// The full dataset for the test chain's 32 KiB DAG, the light cache otherwise.
    pub fn for_epoch(chain: &ChainSpec, info: EpochInfo) -> Self {
        let cache = LightCache::new(info);
        match chain.sizes {
            SizeRule::Test => MiningSource::Full(FullDataset::generate(&cache, &|_, _| {})),
            SizeRule::Ethash => MiningSource::Light(cache),
        }
    }

    /// The epoch this source is for.
    pub fn info(&self) -> &EpochInfo {
        match self {
            MiningSource::Full(d) => d.info(),
            MiningSource::Light(c) => c.info(),
        }
    }

    /// Hashes per grind step, small enough for quick reaction to new jobs.
    fn step(&self) -> u64 {
        match self {
            MiningSource::Full(_) => 512,
            MiningSource::Light(_) => 8,
        }
    }

    /// Hashes `nonces` for `header`; the first nonce whose result is at or below `target`.
    pub fn grind(
        &self,
        header: &[u8; 32],
        target: U256,
        nonces: Range<u64>,
    ) -> Option<(u64, PowOutput)> {
        const BATCH: usize = 32;
        let mut inputs = [PowInput {
            header_hash: *header,
            nonce: 0,
        }; BATCH];
        let mut out = [PowOutput::default(); BATCH];
        let mut next = nonces.start;
        while next < nonces.end {
            let n = ((nonces.end - next) as usize).min(BATCH);
            for (k, input) in inputs[..n].iter_mut().enumerate() {
                input.nonce = next + k as u64;
            }
            match self {
                MiningSource::Full(d) => hashimoto_batch(&d.rows(), &inputs[..n], &mut out[..n]),
                MiningSource::Light(c) => hashimoto_batch(c, &inputs[..n], &mut out[..n]),
            }
            for k in 0..n {
                if U256::from_be_bytes(out[k].result) <= target {
                    return Some((inputs[k].nonce, out[k]));
                }
            }
            next += n as u64;
        }
        None
    }
}

#[derive(Debug)]
struct Job {
    header: [u8; 32],
    target: U256,
    src: Arc<MiningSource>,
}

#[derive(Debug)]
struct Found {
    header: [u8; 32],
    nonce: u64,
    mix: [u8; 32],
}

#[derive(Debug)]
struct Shared {
    job: Mutex<Option<Arc<Job>>>,
    generation: AtomicU64,
    stop: AtomicBool,
    hashes: AtomicU64,
}

impl Shared {
    fn current(&self) -> Option<Arc<Job>> {
        self.job.lock().map(|j| j.clone()).unwrap_or(None)
    }

    fn set(&self, job: Job) {
        if let Ok(mut j) = self.job.lock() {
            *j = Some(Arc::new(job));
        }
        self.generation.fetch_add(1, Ordering::Release);
    }
}

fn hash_thread(index: u64, shared: Arc<Shared>, found: mpsc::UnboundedSender<Found>) {
    // Distinct nonce ranges per thread and per run, so miners on one header do not collide.
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let base = (salt & 0x00ff_ffff_ffff_ffff) | (index << 56);
    let mut seen = u64::MAX;
    let mut next = base;
    while !shared.stop.load(Ordering::Relaxed) {
        let generation = shared.generation.load(Ordering::Acquire);
        let Some(job) = shared.current() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if generation != seen {
            seen = generation;
            next = base;
        }
        let step = job.src.step();
        let end = next.saturating_add(step);
        let hit = job.src.grind(&job.header, job.target, next..end);
        let done = match hit {
            Some((nonce, _)) => nonce + 1 - next,
            None => end - next,
        };
        shared.hashes.fetch_add(done, Ordering::Relaxed);
        next += done;
        if let Some((nonce, out)) = hit {
            let sent = found.send(Found {
                header: job.header,
                nonce,
                mix: out.mix_digest,
            });
            if sent.is_err() {
                return;
            }
        }
    }
}

/// Mines until `shutdown` or `cfg.duration`; errors only if the first connection or the login
/// fails (later disconnects are retried every second).
pub async fn run(cfg: MinerConfig, shutdown: CancellationToken) -> Result<MinerStats, MinerError> {
    if cfg.threads == 0 {
        return Err(MinerError::Config("--threads must be at least 1".into()));
    }
    let start = Instant::now();
    let stop = shutdown.child_token();
    if let Some(d) = cfg.duration {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.cancel();
        });
    }
    let shared = Arc::new(Shared {
        job: Mutex::new(None),
        generation: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        hashes: AtomicU64::new(0),
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut threads = Vec::with_capacity(cfg.threads);
    for i in 0..cfg.threads {
        let (sh, tx) = (shared.clone(), tx.clone());
        threads.push(tokio::task::spawn_blocking(move || {
            hash_thread(i as u64, sh, tx)
        }));
    }
    drop(tx);

    let mut stats = MinerStats::default();
    let mut session = Session {
        cfg: &cfg,
        shared: &shared,
        stats: &mut stats,
        src: None,
    };
    let result = session.run_all(&stop, &mut rx).await;

    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.await?;
    }
    result?;
    stats.hashes = shared.hashes.load(Ordering::Relaxed);
    stats.seconds = start.elapsed().as_secs_f64();
    stats.hashrate = if stats.seconds > 0.0 {
        stats.hashes as f64 / stats.seconds
    } else {
        0.0
    };
    Ok(stats)
}

struct Session<'a> {
    cfg: &'a MinerConfig,
    shared: &'a Shared,
    stats: &'a mut MinerStats,
    src: Option<Arc<MiningSource>>,
}

enum End {
    Stopped,
    Disconnected(String),
}

impl Session<'_> {
    async fn run_all(
        &mut self,
        stop: &CancellationToken,
        rx: &mut mpsc::UnboundedReceiver<Found>,
    ) -> Result<(), MinerError> {
        let mut first = true;
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                s = connect(&self.cfg.stratum) => s,
            };
            let stream = match stream {
                Ok(s) => s,
                Err(e) if first => return Err(e),
                Err(e) => {
                    tracing::warn!("{e}; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            self.stats.connections += 1;
            match self.session(stream, stop, rx, first).await? {
                End::Stopped => return Ok(()),
                End::Disconnected(why) => {
                    tracing::warn!("pool connection lost: {why}; reconnecting");
                    // Work from the old connection is not submitted on the new one.
                    if let Ok(mut j) = self.shared.job.lock() {
                        *j = None;
                    }
                    while rx.try_recv().is_ok() {}
                }
            }
            first = false;
        }
    }

    async fn session(
        &mut self,
        stream: TcpStream,
        stop: &CancellationToken,
        rx: &mut mpsc::UnboundedReceiver<Found>,
        first: bool,
    ) -> Result<End, MinerError> {
        let (read, mut write) = stream.into_split();
        let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
        let mut login = json!({
            "id": ID_LOGIN, "jsonrpc": "2.0", "method": "eth_submitLogin",
            "params": [self.cfg.login],
        });
        if let Some(w) = &self.cfg.worker {
            login["worker"] = json!(w);
        }
        send(&mut write, &login).await?;
        send(&mut write, &getwork()).await?;
        let mut logged_in = false;
        let mut next_id = ID_FIRST_SUBMIT;
        let mut pending = std::collections::HashSet::new();
        let mut poll = tokio::time::interval(Duration::from_secs(5));
        poll.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(End::Stopped),
                line = lines.next() => {
                    let line = match line {
                        Some(Ok(l)) => l,
                        Some(Err(e)) => return Ok(End::Disconnected(e.to_string())),
                        None => return Ok(End::Disconnected("closed by the pool".into())),
                    };
                    let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                        tracing::warn!(%line, "pool sent a line that is not JSON");
                        continue;
                    };
                    let id = msg.get("id").and_then(Value::as_u64);
                    let ok = msg.get("result") == Some(&Value::Bool(true));
                    let err = msg.get("error").filter(|e| !e.is_null());
                    match id {
                        Some(ID_LOGIN) => {
                            if !ok {
                                let why = err.map(Value::to_string).unwrap_or_else(|| "false".into());
                                if first {
                                    return Err(MinerError::Login(why));
                                }
                                return Ok(End::Disconnected(format!("login refused: {why}")));
                            }
                            logged_in = true;
                            tracing::info!(login = %self.cfg.login, "logged in");
                        }
                        Some(i) if pending.remove(&i) => {
                            if ok {
                                self.stats.accepted += 1;
                                tracing::info!(accepted = self.stats.accepted, "share accepted");
                            } else {
                                self.stats.rejected += 1;
                                let why = err.map(Value::to_string).unwrap_or_else(|| "false".into());
                                tracing::warn!(rejected = self.stats.rejected, %why, "share rejected");
                            }
                        }
                        _ => match msg.get("result") {
                            Some(Value::Array(w)) => self.new_job(w).await?,
                            _ => if let Some(e) = err {
                                tracing::warn!(error = %e, "pool error");
                            },
                        },
                    }
                }
                found = rx.recv() => {
                    let Some(f) = found else { return Ok(End::Stopped) };
                    if !logged_in {
                        continue;
                    }
                    let id = next_id;
                    next_id += 1;
                    pending.insert(id);
                    self.stats.submitted += 1;
                    let req = json!({
                        "id": id, "jsonrpc": "2.0", "method": "eth_submitWork",
                        "params": [nonce_hex(f.nonce), to_hex(&f.header), to_hex(&f.mix)],
                    });
                    if let Err(e) = send(&mut write, &req).await {
                        return Ok(End::Disconnected(e.to_string()));
                    }
                }
                _ = poll.tick() => {
                    // Pools push new work; poll only while there is none (e.g. "Work not ready").
                    if self.shared.current().is_none() {
                        if let Err(e) = send(&mut write, &getwork()).await {
                            return Ok(End::Disconnected(e.to_string()));
                        }
                    }
                }
            }
        }
    }

    async fn new_job(&mut self, work: &[Value]) -> Result<(), MinerError> {
        let field = |i: usize| work.get(i).and_then(Value::as_str);
        let (Some(h), Some(s), Some(t)) = (field(0), field(1), field(2)) else {
            tracing::warn!("job without header, seed and target");
            return Ok(());
        };
        let (Ok(header), Ok(seed), Ok(target)) = (
            parse_h256(h, "header"),
            parse_h256(s, "seed"),
            parse_u256(t),
        ) else {
            tracing::warn!(header = h, seed = s, target = t, "unparsable job");
            return Ok(());
        };
        if let Some(cur) = self.shared.current() {
            if cur.header == header && cur.target == target {
                return Ok(());
            }
        }
        let src = match &self.src {
            Some(src) if src.info().seed == seed => src.clone(),
            _ => {
                let chain = self.cfg.chain.clone();
                let Some(info) = epoch_for_seed(&chain, &seed) else {
                    return Err(MinerError::Protocol(format!(
                        "seed hash {s} is no epoch of chain {chain} (wrong --chain?)"
                    )));
                };
                tracing::info!(epoch = info.epoch, "preparing epoch");
                let src = Arc::new(
                    tokio::task::spawn_blocking(move || MiningSource::for_epoch(&chain, info))
                        .await?,
                );
                self.src = Some(src.clone());
                src
            }
        };
        self.stats.jobs += 1;
        tracing::debug!(header = h, "new job");
        self.shared.set(Job {
            header,
            target,
            src,
        });
        Ok(())
    }
}

fn getwork() -> Value {
    json!({"id": ID_GETWORK, "jsonrpc": "2.0", "method": "eth_getWork", "params": []})
}

async fn send(w: &mut OwnedWriteHalf, v: &Value) -> Result<(), MinerError> {
    let mut line = v.to_string();
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    Ok(())
}

async fn connect(addr: &str) -> Result<TcpStream, MinerError> {
    let err = |source| MinerError::Connect {
        addr: addr.to_string(),
        source,
    };
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(err(e)),
        Err(_) => Err(err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timed out",
        ))),
    }
}

/// `dagproxy mine` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct MineArgs {
    /// Pool Stratum address (EthProxy dialect).
    #[arg(long)]
    pub stratum: String,
    /// Payout address, 0x + 40 hex.
    #[arg(long)]
    pub login: String,
    /// Worker name.
    #[arg(long)]
    pub worker: Option<String>,
    /// Hashing threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Chain preset: test (tiny DAG, full dataset), ethereum, classic, mordor (light cache).
    #[arg(long, default_value = "test", value_parser = chain_arg)]
    pub chain: ChainSpec,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<f64>,
}

impl MineArgs {
    /// The configuration these arguments describe.
    pub fn config(&self) -> Result<MinerConfig, MinerError> {
        let duration = match self.seconds {
            Some(s) => Some(
                Duration::try_from_secs_f64(s)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        MinerError::Config(format!("--seconds must be positive, got {s}"))
                    })?,
            ),
            None => None,
        };
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        Ok(MinerConfig {
            stratum: self.stratum.clone(),
            login: self.login.clone(),
            worker: self.worker.clone(),
            threads,
            chain: self.chain.clone(),
            duration,
        })
    }
}

/// `dagproxy mine`: mines until Ctrl-C or `--seconds`; returns the stats (printed as JSON).
pub async fn run_cli(args: MineArgs) -> Result<MinerStats, MinerError> {
    let cfg = args.config()?;
    // Reject an address the pool would refuse anyway, before connecting.
    if cfg.stratum.parse::<SocketAddr>().is_err() && !cfg.stratum.contains(':') {
        return Err(MinerError::Config(format!(
            "--stratum must be host:port, got '{}'",
            cfg.stratum
        )));
    }
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    tracing::info!(pool = %cfg.stratum, threads = cfg.threads, chain = %cfg.chain, "mining");
    run(cfg, shutdown).await
}

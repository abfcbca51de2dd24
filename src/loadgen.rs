//! The load generator (`dagproxy loadgen`): many EthProxy Stratum connections submitting
//! precomputed valid shares (plus a fraction of invalid, duplicate and stale ones) at a target
//! rate, measuring reply latency from when each share was due, then checking Redis that every
//! share acknowledged as accepted is stored exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;

use crate::cli::chain_arg;
use crate::ethash::target::{difficulty_from_target, parse_u256};
use crate::ethash::{ChainSpec, U256};
use crate::hexutil::{nonce_hex, parse_h256, to_hex};
use crate::miner::{epoch_for_seed, MiningSource};

const ID_LOGIN: u64 = 1;
const ID_GETWORK: u64 = 2;
const ID_FIRST: u64 = 100;
/// Most precomputed shares held (about 50 bytes each).
const MAX_BANK: usize = 4_000_000;
/// Time allowed for the share bank to fill before the clock starts.
const PREFILL_LIMIT: Duration = Duration::from_secs(120);

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// Bad settings.
    #[error("loadgen: {0}")]
    Config(String),
    /// A connection could not be made or logged in.
    #[error("loadgen connection {index}: {why}")]
    Connection {
        /// Which connection.
        index: usize,
        /// Why.
        why: String,
    },
    /// The pool's work could not be used.
    #[error("loadgen: {0}")]
    Work(String),
    /// Redis check failed.
    #[error("loadgen redis check")]
    Redis(#[from] redis::RedisError),
    /// A task died.
    #[error("loadgen task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Settings of a load run.
#[derive(Clone, Debug)]
pub struct LoadgenConfig {
    /// Proxy Stratum address.
    pub stratum: String,
    /// The proxy's Redis (URL or `host:port`), checked afterwards.
    pub redis: String,
    /// Its key prefix.
    pub prefix: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Length of the measured run.
    pub duration: Duration,
    /// Total shares per second (open loop); None: each connection sends the next share when
    /// the previous one is answered (closed loop).
    pub rate: Option<f64>,
    /// Fraction of submissions that are invalid (wrong mix), duplicate or stale, in turn.
    pub invalid: f64,
    /// Chain preset (the test chain's full DAG precomputes fastest).
    pub chain: ChainSpec,
}

/// The outcome, printed as one JSON line.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadReport {
    /// Valid shares acknowledged `true` per second of the run.
    pub accepted_per_s: f64,
    /// Median reply latency (from when the share was due), milliseconds.
    pub p50_ms: f64,
    /// 99th percentile reply latency, milliseconds.
    pub p99_ms: f64,
    /// Valid shares acknowledged as accepted.
    pub acknowledged: u64,
    /// Of those, how many are in `<prefix>:pow`.
    pub found_in_redis: u64,
    /// acknowledged − found_in_redis.
    pub lost: u64,
    /// Hashrate members and round-share credit beyond one per acknowledged share.
    pub double_counted: u64,
    /// Members of the per-login `hashrate:<login>` sets of this run's logins.
    pub hashrate_members: u64,
    /// Round shares credited to this run's logins (all rounds), in difficulty units.
    pub round_shares: String,
    /// Share difficulty (from the job target).
    pub share_difficulty: String,
    /// Submissions sent.
    pub sent: u64,
    /// Replies received.
    pub replies: u64,
    /// Valid shares answered false or with an error.
    pub valid_rejected: u64,
    /// Invalid/duplicate/stale submissions sent.
    pub invalid_sent: u64,
    /// Invalid/duplicate/stale submissions answered `true` (must be 0).
    pub invalid_accepted: u64,
    /// Times a connection had no precomputed share ready (the generator was the bottleneck).
    pub starved: u64,
    /// Valid shares with no reply within the 5 s grace after the run.
    pub unanswered: u64,
    /// Connections that ran.
    pub connections: usize,
    /// Measured seconds.
    pub seconds: f64,
}

#[derive(Clone, Copy, Debug)]
struct Share {
    job: u32,
    nonce: u64,
    mix: [u8; 32],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Valid,
    BadMix,
    Duplicate,
    Stale,
}

#[derive(Debug)]
struct BankJob {
    id: u32,
    header: [u8; 32],
    target: U256,
    src: Arc<MiningSource>,
}

#[derive(Debug, Default)]
struct BankInner {
    /// Newest last; shares of jobs dropped from here are discarded.
    jobs: VecDeque<Arc<BankJob>>,
    shares: VecDeque<Share>,
    headers: Vec<[u8; 32]>,
    sources: HashMap<[u8; 32], Arc<MiningSource>>,
    next_nonce: u64,
    cap: usize,
    /// Open loop: the run's total need. Generators stop once the live jobs have had that many
    /// shares, so grinding does not take CPU from the proxy under test.
    budget: Option<usize>,
    /// Shares produced for the live jobs.
    produced: usize,
}

/// Precomputed valid shares for the latest jobs, filled by generator threads.
#[derive(Debug, Default)]
struct Bank {
    inner: Mutex<BankInner>,
    /// One epoch build at a time (connections all offer the same first job).
    building: tokio::sync::Mutex<()>,
    stop: AtomicBool,
    changed: Notify,
}

impl Bank {
    fn lock(&self) -> MutexGuard<'_, BankInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn header(&self, job: u32) -> [u8; 32] {
        self.lock().headers[job as usize]
    }

    fn pop(&self) -> Option<Share> {
        self.lock().shares.pop_front()
    }

    fn len(&self) -> usize {
        self.lock().shares.len()
    }

    /// Registers a job (header, seed, target) the pool sent; builds the epoch's DAG once.
    async fn offer(
        &self,
        chain: &ChainSpec,
        header: [u8; 32],
        seed: [u8; 32],
        target: U256,
    ) -> Result<(), LoadgenError> {
        let _building = self.building.lock().await;
        let src = {
            let b = self.lock();
            if b.jobs.iter().any(|j| j.header == header) {
                return Ok(());
            }
            b.sources.get(&seed).cloned()
        };
        let src = match src {
            Some(s) => s,
            None => {
                let info = epoch_for_seed(chain, &seed).ok_or_else(|| {
                    LoadgenError::Work(format!(
                        "seed {} is no epoch of chain {chain}",
                        to_hex(&seed)
                    ))
                })?;
                let chain = chain.clone();
                Arc::new(
                    tokio::task::spawn_blocking(move || MiningSource::for_epoch(&chain, info))
                        .await?,
                )
            }
        };
        let mut b = self.lock();
        if b.jobs.iter().any(|j| j.header == header) {
            return Ok(());
        }
        b.sources.insert(seed, src.clone());
        let id = b.headers.len() as u32;
        b.headers.push(header);
        b.jobs.push_back(Arc::new(BankJob {
            id,
            header,
            target,
            src,
        }));
        // The proxy accepts the last 3 heights; keep shares of the newest 2 jobs only.
        while b.jobs.len() > 2 {
            b.jobs.pop_front();
        }
        let live: Vec<u32> = b.jobs.iter().map(|j| j.id).collect();
        b.shares.retain(|s| live.contains(&s.job));
        b.produced = b.shares.len();
        drop(b);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Generator thread: grinds the newest job's nonces, keeping the bank up to its cap.
    fn generate(&self) {
        const RANGE: u64 = 4096;
        while !self.stop.load(Ordering::Relaxed) {
            let (job, start) = {
                let mut b = self.lock();
                match b.jobs.back().cloned() {
                    Some(j)
                        if b.shares.len() < b.cap
                            && b.budget.is_none_or(|total| b.produced < total) =>
                    {
                        let start = b.next_nonce;
                        b.next_nonce += RANGE;
                        (j, start)
                    }
                    _ => {
                        drop(b);
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                }
            };
            let mut found = Vec::new();
            let mut next = start;
            while let Some((nonce, out)) =
                job.src.grind(&job.header, job.target, next..start + RANGE)
            {
                found.push(Share {
                    job: job.id,
                    nonce,
                    mix: out.mix_digest,
                });
                next = nonce + 1;
            }
            let mut b = self.lock();
            if b.jobs.iter().any(|j| j.id == job.id) {
                b.produced += found.len();
                b.shares.extend(found);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u32>,
    acked: Vec<String>,
    sent: u64,
    replies: u64,
    valid_rejected: u64,
    invalid_sent: u64,
    invalid_accepted: u64,
    starved: u64,
    unanswered_valid: u64,
}

struct Pending {
    due: Instant,
    kind: Kind,
    member: String,
}

/// Runs the load and the Redis check.
pub async fn run(
    cfg: LoadgenConfig,
    shutdown: CancellationToken,
) -> Result<LoadReport, LoadgenError> {
    if cfg.connections == 0 {
        return Err(LoadgenError::Config(
            "--connections must be at least 1".into(),
        ));
    }
    if !(0.0..=1.0).contains(&cfg.invalid) {
        return Err(LoadgenError::Config(
            "--invalid must be between 0 and 1".into(),
        ));
    }
    if let Some(r) = cfg.rate {
        // At least one share per hour per connection keeps the schedule's durations finite.
        if !(r.is_finite() && r * 3600.0 >= cfg.connections as f64) {
            return Err(LoadgenError::Config(
                "--rate must be at least one share per hour per connection".into(),
            ));
        }
    }
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let logins: Vec<String> = (0..cfg.connections)
        .map(|i| format!("0x{run_id:08x}{:032x}", i as u128))
        .collect();

    let bank = Arc::new(Bank::default());
    let expected = cfg
        .rate
        .map(|r| (r * cfg.duration.as_secs_f64() * 1.05) as usize + 1000)
        .unwrap_or(200_000);
    bank.lock().cap = expected.min(MAX_BANK);
    bank.lock().budget = cfg.rate.map(|_| expected);
    bank.lock().next_nonce = u64::from(run_id) << 32;
    let gens = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut gen_tasks = Vec::new();
    for _ in 0..gens {
        let b = bank.clone();
        gen_tasks.push(tokio::task::spawn_blocking(move || b.generate()));
    }

    let result = drive(&cfg, &logins, &bank, &shutdown).await;
    bank.stop.store(true, Ordering::Relaxed);
    for t in gen_tasks {
        t.await?;
    }
    let (tally, seconds, difficulty) = result?;
    check_redis(&cfg, &logins, tally, seconds, difficulty).await
}

type Conn = (
    FramedRead<tokio::net::tcp::OwnedReadHalf, LinesCodec>,
    tokio::net::tcp::OwnedWriteHalf,
);

async fn drive(
    cfg: &LoadgenConfig,
    logins: &[String],
    bank: &Arc<Bank>,
    shutdown: &CancellationToken,
) -> Result<(Tally, f64, U256), LoadgenError> {
    // Connect and log in everyone, and register the first job.
    let mut conns: Vec<Conn> = Vec::with_capacity(logins.len());
    let mut difficulty = U256::ZERO;
    let opened: Vec<Result<(Conn, U256), LoadgenError>> =
        futures_util::stream::iter(logins.iter().enumerate())
            .map(|(index, login)| {
                // Owned per connection, so the run's future is 'static and can be spawned.
                let (login, cfg, bank) = (login.clone(), cfg.clone(), bank.clone());
                async move { open(index, &login, &cfg, &bank).await }
            })
            .buffered(256)
            .collect()
            .await;
    for o in opened {
        let (conn, d) = o?;
        difficulty = d;
        conns.push(conn);
    }

    // Fill the bank before the clock starts, so precomputation is not measured.
    // Closed loop has no known total: a head start per connection, the generators keep up.
    let head_start = if cfg.rate.is_some() {
        usize::MAX
    } else {
        (1000 * logins.len()).min(50_000)
    };
    let want = bank.lock().cap.min(head_start);
    let fill_deadline = Instant::now() + PREFILL_LIMIT;
    while bank.len() < want && Instant::now() < fill_deadline && !shutdown.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(shares = bank.len(), "share bank filled; starting load");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = shutdown.child_token();
    let start = Instant::now();
    let end = start + cfg.duration;
    let n = conns.len();
    let mut tasks = Vec::with_capacity(n);
    for (i, (lines, w)) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(connection(
            i,
            n,
            cfg.clone(),
            bank.clone(),
            tally.clone(),
            lines,
            w,
            start,
            end,
            stop.clone(),
        )));
    }
    tokio::select! {
        _ = tokio::time::sleep_until(end.into()) => {}
        _ = stop.cancelled() => {}
    }
    let seconds = start.elapsed().as_secs_f64();
    // Replies still in flight get a grace period (they count; latency includes the wait).
    for t in tasks {
        t.await??;
    }
    stop.cancel();
    let t = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((t, seconds, difficulty))
}

/// Connects, logs in and waits for the first job.
async fn open(
    index: usize,
    login: &str,
    cfg: &LoadgenConfig,
    bank: &Bank,
) -> Result<(Conn, U256), LoadgenError> {
    let fail = |why: String| LoadgenError::Connection { index, why };
    let sock = TcpStream::connect(&cfg.stratum)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let _ = sock.set_nodelay(true);
    let (r, mut w) = sock.into_split();
    let mut lines = FramedRead::new(r, LinesCodec::new_with_max_length(64 * 1024));
    let hello = format!(
        "{}\n{}\n",
        json!({"id": ID_LOGIN, "jsonrpc": "2.0", "method": "eth_submitLogin",
               "params": [login], "worker": "lg"}),
        json!({"id": ID_GETWORK, "jsonrpc": "2.0", "method": "eth_getWork", "params": []})
    );
    w.write_all(hello.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await
            .map_err(|_| fail("no reply to login/getWork".into()))?
            .ok_or_else(|| fail("closed".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let msg: Value = serde_json::from_str(&line).map_err(|e| fail(e.to_string()))?;
        if let Some(e) = msg.get("error").filter(|e| !e.is_null()) {
            return Err(fail(format!("pool error {e}")));
        }
        if let Some(Value::Array(work)) = msg.get("result") {
            let difficulty = offer_job(cfg, bank, work).await?;
            return Ok(((lines, w), difficulty));
        }
    }
}

async fn offer_job(cfg: &LoadgenConfig, bank: &Bank, w: &[Value]) -> Result<U256, LoadgenError> {
    let field = |i: usize| w.get(i).and_then(Value::as_str).unwrap_or("");
    let bad = |what: &str| LoadgenError::Work(format!("bad {what} in job {w:?}"));
    let header = parse_h256(field(0), "header").map_err(|_| bad("header"))?;
    let seed = parse_h256(field(1), "seed").map_err(|_| bad("seed"))?;
    let target = parse_u256(field(2)).map_err(|_| bad("target"))?;
    bank.offer(&cfg.chain, header, seed, target).await?;
    difficulty_from_target(target).map_err(|_| bad("target"))
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    index: usize,
    n: usize,
    cfg: LoadgenConfig,
    bank: Arc<Bank>,
    tally: Arc<Mutex<Tally>>,
    mut lines: FramedRead<tokio::net::tcp::OwnedReadHalf, LinesCodec>,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    start: Instant,
    end: Instant,
    stop: CancellationToken,
) -> Result<(), LoadgenError> {
    let pending: Arc<Mutex<HashMap<u64, Pending>>> = Arc::default();
    // Closed loop: one share outstanding per connection.
    let window = Arc::new(Semaphore::new(1));
    let reader_done = CancellationToken::new();
    // The last share answered `true`: duplicates repeat it (a refused share repeated would be
    // a first submission, rightly accepted).
    let recent_valid: Arc<Mutex<Option<String>>> = Arc::default();

    let reader = {
        let (pending, tally, bank, cfg, window, done, recent) = (
            pending.clone(),
            tally.clone(),
            bank.clone(),
            cfg.clone(),
            window.clone(),
            reader_done.clone(),
            recent_valid.clone(),
        );
        tokio::spawn(async move {
            let mut local = Tally::default();
            loop {
                let line = tokio::select! {
                    l = lines.next() => l,
                    _ = done.cancelled() => break,
                };
                let Some(Ok(line)) = line else { break };
                let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let id = msg.get("id").and_then(Value::as_u64).unwrap_or(0);
                if id < ID_FIRST {
                    if let Some(Value::Array(wk)) = msg.get("result") {
                        if let Err(e) = offer_job(&cfg, &bank, wk).await {
                            tracing::warn!("{e}");
                        }
                    }
                    continue;
                }
                let Some(p) = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id)
                else {
                    continue;
                };
                let us = p.due.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                local.latencies_us.push(us);
                local.replies += 1;
                let ok = msg.get("result") == Some(&Value::Bool(true));
                match (p.kind, ok) {
                    (Kind::Valid, true) => {
                        *recent.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.member.clone());
                        local.acked.push(p.member);
                    }
                    (Kind::Valid, false) => local.valid_rejected += 1,
                    (_, true) => local.invalid_accepted += 1,
                    (_, false) => {}
                }
                window.add_permits(1);
            }
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            t.latencies_us.append(&mut local.latencies_us);
            t.acked.append(&mut local.acked);
            t.replies += local.replies;
            t.valid_rejected += local.valid_rejected;
            t.invalid_accepted += local.invalid_accepted;
        })
    };

    // Open loop: this connection's shares are due every n/rate seconds, staggered.
    let interval = cfg.rate.map(|r| Duration::from_secs_f64(n as f64 / r));
    let offset = interval.map(|iv| iv.mul_f64(index as f64 / n as f64));
    let mut k: u64 = 0;
    let mut next_id = ID_FIRST;
    let mut acc_invalid = 0.0f64;
    let mut invalid_turn = 0u32;
    let mut local = Tally::default();
    loop {
        let due = match (interval, offset) {
            (Some(iv), Some(off)) => {
                let due = start + off + iv.mul_f64(k as f64);
                if due >= end {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = stop.cancelled() => break,
                }
                due
            }
            _ => {
                let permit = tokio::select! {
                    p = window.acquire() => p,
                    _ = stop.cancelled() => break,
                };
                match permit {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                if Instant::now() >= end {
                    break;
                }
                Instant::now()
            }
        };
        k += 1;
        acc_invalid += cfg.invalid;
        let (kind, params, member) = if acc_invalid >= 1.0 {
            acc_invalid -= 1.0;
            invalid_turn += 1;
            local.invalid_sent += 1;
            let recent = recent_valid
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            invalid_share(&bank, invalid_turn, recent)
        } else {
            match bank.pop() {
                Some(s) => {
                    let (h, nonce, mix) = (
                        to_hex(&bank.header(s.job)),
                        nonce_hex(s.nonce),
                        to_hex(&s.mix),
                    );
                    let member = format!("{nonce}:{h}:{mix}");
                    (Kind::Valid, [nonce, h, mix], member)
                }
                None => {
                    local.starved += 1;
                    if interval.is_none() {
                        window.add_permits(1);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    continue;
                }
            }
        };
        let id = next_id;
        next_id += 1;
        pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Pending { due, kind, member });
        let line = format!(
            "{}\n",
            json!({"id": id, "jsonrpc": "2.0", "method": "eth_submitWork", "params": params})
        );
        if w.write_all(line.as_bytes()).await.is_err() {
            break;
        }
        local.sent += 1;
    }
    // Wait up to 5 s for the last replies, then close.
    let grace = tokio::time::timeout(Duration::from_secs(5), async {
        while !pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    if grace.is_err() {
        tracing::warn!(connection = index, "replies missing after 5 s");
    }
    reader_done.cancel();
    reader.await?;
    local.unanswered_valid = pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|p| p.kind == Kind::Valid)
        .count() as u64;
    let _ = w.shutdown().await;
    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
    t.sent += local.sent;
    t.invalid_sent += local.invalid_sent;
    t.starved += local.starved;
    t.unanswered_valid += local.unanswered_valid;
    Ok(())
}

/// An invalid submission, in turn: a wrong mix, a duplicate of a recent valid share, a header
/// the pool never issued.
fn invalid_share(bank: &Bank, turn: u32, recent: Option<String>) -> (Kind, [String; 3], String) {
    let fallback = || {
        let h = bank.lock().headers.last().copied().unwrap_or([0; 32]);
        (nonce_hex(u64::from(turn)), h)
    };
    match turn % 3 {
        1 if recent.is_some() => {
            let m = recent.unwrap_or_default();
            let p: Vec<String> = m.split(':').map(str::to_string).collect();
            if let [a, b, c] = p.as_slice() {
                return (Kind::Duplicate, [a.clone(), b.clone(), c.clone()], m);
            }
            let (n, h) = fallback();
            (
                Kind::BadMix,
                [n, to_hex(&h), to_hex(&[0xee; 32])],
                String::new(),
            )
        }
        2 => {
            let mut h = [0x5a; 32];
            h[..4].copy_from_slice(&turn.to_be_bytes());
            let (n, _) = fallback();
            (
                Kind::Stale,
                [n, to_hex(&h), to_hex(&[0x11; 32])],
                String::new(),
            )
        }
        _ => {
            let (n, h) = match bank.pop() {
                Some(s) => (nonce_hex(s.nonce), bank.header(s.job)),
                None => fallback(),
            };
            let mix = [0xee; 32];
            (Kind::BadMix, [n, to_hex(&h), to_hex(&mix)], String::new())
        }
    }
}

fn percentile(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted_us[idx.min(sorted_us.len() - 1)]) / 1000.0
}

async fn check_redis(
    cfg: &LoadgenConfig,
    logins: &[String],
    mut tally: Tally,
    seconds: f64,
    difficulty: U256,
) -> Result<LoadReport, LoadgenError> {
    let url = if cfg.redis.contains("://") {
        cfg.redis.clone()
    } else {
        format!("redis://{}", cfg.redis)
    };
    let client = redis::Client::open(url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let key = |parts: &[&str]| {
        let mut k = cfg.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    };

    // Every acknowledged share's pow member.
    let pow = key(&["pow"]);
    let mut found = 0u64;
    for chunk in tally.acked.chunks(10_000) {
        let mut pipe = redis::pipe();
        for m in chunk {
            pipe.cmd("ZSCORE").arg(&pow).arg(m);
        }
        let scores: Vec<Option<String>> = pipe.query_async(&mut con).await?;
        found += scores.iter().filter(|s| s.is_some()).count() as u64;
    }

    // Per-login hashrate members and round credit (current round and any found during the run).
    let mut pipe = redis::pipe();
    for l in logins {
        pipe.cmd("ZCARD").arg(key(&["hashrate", l]));
    }
    let cards: Vec<u64> = pipe.query_async(&mut con).await?;
    let hashrate_members: u64 = cards.iter().sum();
    let mut rounds = vec![key(&["shares", "roundCurrent"])];
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(key(&["shares", "round*"]))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await?;
        rounds.extend(keys.into_iter().filter(|k| !k.ends_with(":roundCurrent")));
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut round_total = U256::ZERO;
    for r in &rounds {
        let mut pipe = redis::pipe();
        for l in logins {
            pipe.cmd("HGET").arg(r).arg(l);
        }
        let vals: Vec<Option<u64>> = pipe.query_async(&mut con).await?;
        for v in vals.into_iter().flatten() {
            round_total += U256::from(v);
        }
    }

    let acknowledged = tally.acked.len() as u64;
    // A valid share still unanswered when the run ended may be stored: not double counting.
    let may_be_stored = acknowledged + tally.unanswered_valid;
    let expected_credit = difficulty * U256::from(may_be_stored);
    let extra_credit = if difficulty.is_zero() || round_total <= expected_credit {
        0
    } else {
        let extra: U256 = (round_total - expected_credit) / difficulty;
        u64::try_from(extra).unwrap_or(u64::MAX)
    };
    let double_counted = hashrate_members
        .saturating_sub(may_be_stored)
        .max(extra_credit);
    tally.latencies_us.sort_unstable();
    Ok(LoadReport {
        accepted_per_s: if seconds > 0.0 {
            acknowledged as f64 / seconds
        } else {
            0.0
        },
        p50_ms: percentile(&tally.latencies_us, 0.50),
        p99_ms: percentile(&tally.latencies_us, 0.99),
        acknowledged,
        found_in_redis: found,
        lost: acknowledged.saturating_sub(found),
        double_counted,
        hashrate_members,
        round_shares: round_total.to_string(),
        share_difficulty: difficulty.to_string(),
        sent: tally.sent,
        replies: tally.replies,
        valid_rejected: tally.valid_rejected,
        invalid_sent: tally.invalid_sent,
        invalid_accepted: tally.invalid_accepted,
        starved: tally.starved,
        unanswered: tally.unanswered_valid,
        connections: logins.len(),
        seconds,
    })
}

/// `dagproxy loadgen` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Proxy Stratum address.
    #[arg(long)]
    pub stratum: String,
    /// The proxy's Redis, checked afterwards (redis://… or host:port).
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis: String,
    /// Redis key prefix of the proxy.
    #[arg(long, default_value = "eth")]
    pub redis_prefix: String,
    /// Concurrent Stratum connections.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Total shares per second, open loop (default: closed loop, one outstanding per connection).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Fraction of invalid / duplicate / stale submissions.
    #[arg(long, default_value_t = 0.0)]
    pub invalid: f64,
    /// Chain preset of the pool.
    #[arg(long, default_value = "test", value_parser = chain_arg)]
    pub chain: ChainSpec,
    /// Print JSON (the only output format).
    #[arg(long)]
    pub json: bool,
}

/// `dagproxy loadgen`: runs and returns the report (printed as JSON by the binary).
pub async fn run_cli(args: LoadgenArgs) -> Result<LoadReport, LoadgenError> {
    let duration = Duration::try_from_secs_f64(args.seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| LoadgenError::Config("--seconds must be a positive number".into()))?;
    let cfg = LoadgenConfig {
        stratum: args.stratum,
        redis: args.redis,
        prefix: args.redis_prefix,
        connections: args.connections,
        duration,
        rate: args.rate,
        invalid: args.invalid,
        chain: args.chain,
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    run(cfg, shutdown).await
}

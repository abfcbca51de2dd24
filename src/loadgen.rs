//! The load generator (`dagproxy loadgen`): many Stratum connections (EthProxy,
//! EthereumStratum/1.0.0, or both) submitting precomputed valid shares (plus a fraction of
//! invalid, duplicate and stale ones) at a target rate, measuring reply latency from when each
//! share was due, then checking Redis that every share acknowledged as accepted is stored
//! exactly once.

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
use crate::ethash::target::{difficulty_from_target, parse_u256, target_from_difficulty};
use crate::ethash::{ChainSpec, U256};
use crate::hexutil::{nonce_hex, parse_h256, push_hex, to_hex};
use crate::miner::{epoch_for_seed, MiningSource};
use crate::stratum::nicehash::{from_nicehash, PROTOCOL};
use crate::stratum::Dialect;

const ID_LOGIN: u64 = 1;
const ID_GETWORK: u64 = 2;
const ID_FIRST: u64 = 100;
/// Most precomputed shares held (about 50 bytes each).
const MAX_BANK: usize = 4_000_000;
/// Time allowed for the share bank to fill before the clock starts.
const PREFILL_LIMIT: Duration = Duration::from_secs(120);
/// Heap kept per acknowledged share until the report: its `pow` member (about 150 bytes), the
/// member's slot and its latency, with room.
const KEPT_PER_SHARE: usize = 256;
/// Extranonce bytes this load generator handles (the proxy's choice).
const EXTRANONCE_BYTES: usize = 2;
/// Bits of the nonce an EthereumStratum/1.0.0 miner chooses.
const PART_BITS: u32 = 64 - 8 * EXTRANONCE_BYTES as u32;
/// Jobs an EthereumStratum/1.0.0 connection remembers (the proxy's session keeps 8).
const ES_JOBS: usize = 8;
/// Low-difficulty nonces kept per EthereumStratum/1.0.0 connection.
const MAX_LOWS: usize = 4096;
/// Most nonces one generator step hashes.
const RANGE: u64 = 4096;
/// Width of the windows of `p99_ms_by_10s`.
const WINDOW: Duration = Duration::from_secs(10);

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

/// Which Stratum dialect the connections speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadDialect {
    /// EthProxy (`eth_submitLogin`, `eth_getWork`, `eth_submitWork`).
    #[default]
    #[value(name = "ethproxy")]
    EthProxy,
    /// EthereumStratum/1.0.0 (NiceHash): subscribe, authorize, notify, submit.
    #[value(name = "ethereumstratum", alias = "nicehash")]
    EthereumStratum,
    /// Every other connection (the odd-numbered ones) EthereumStratum/1.0.0.
    #[value(name = "mixed")]
    Mixed,
}

impl LoadDialect {
    /// The dialect of connection `index`.
    pub fn of(self, index: usize) -> Dialect {
        match self {
            LoadDialect::EthProxy => Dialect::EthProxy,
            LoadDialect::EthereumStratum => Dialect::EthereumStratum,
            LoadDialect::Mixed if index % 2 == 1 => Dialect::EthereumStratum,
            LoadDialect::Mixed => Dialect::EthProxy,
        }
    }

    /// Name in the report and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LoadDialect::EthProxy => "ethproxy",
            LoadDialect::EthereumStratum => "ethereumstratum",
            LoadDialect::Mixed => "mixed",
        }
    }
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
    /// Fraction of submissions that are invalid (EthProxy: wrong mix; EthereumStratum/1.0.0,
    /// which sends no mix: a nonce above the target), duplicate or stale, in turn.
    pub invalid: f64,
    /// Chain preset (the test chain's full DAG precomputes fastest).
    pub chain: ChainSpec,
    /// Dialect of the connections.
    pub dialect: LoadDialect,
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
    /// p99 of the shares due in each 10 s of the run, in order (a tail that grows over the
    /// run shows a backlog or a store slowing down, rather than a steady cost).
    pub p99_ms_by_10s: Vec<f64>,
    /// Steal in each of those windows: the percentage of this host's CPU time its hypervisor
    /// gave to other guests (Linux `/proc/stat`; empty elsewhere). On a VM shared with the
    /// system under test, a tail that follows it is the host's, not the pool's.
    pub host_steal_pct_by_10s: Vec<f64>,
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
    /// Share difficulty (from the job target), in hashes.
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
    /// Dialect setting of the run (`ethproxy`, `ethereumstratum` or `mixed`).
    pub dialect: String,
    /// Connections speaking EthProxy.
    pub ethproxy_connections: usize,
    /// Connections speaking EthereumStratum/1.0.0.
    pub ethereumstratum_connections: usize,
    /// Of `acknowledged`, those sent over EthProxy.
    pub acknowledged_ethproxy: u64,
    /// Of `acknowledged`, those sent over EthereumStratum/1.0.0.
    pub acknowledged_ethereumstratum: u64,
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
    /// EthProxy: a wrong mix; EthereumStratum/1.0.0: a nonce whose result is above the target.
    Bad,
    Duplicate,
    Stale,
}

#[derive(Debug)]
struct BankJob {
    id: u32,
    header: [u8; 32],
    target: U256,
    /// Hashes per share at this target (saturating), to size grinding steps.
    per_share: u64,
    src: Arc<MiningSource>,
}

/// Shares for one consumer: the EthProxy connections together (lane 0), or one
/// EthereumStratum/1.0.0 connection, whose nonces must start with its extranonce.
#[derive(Debug)]
struct Lane {
    shares: VecDeque<Share>,
    /// Nonces whose result is above the target (EthereumStratum/1.0.0 invalid submissions).
    lows: VecDeque<(u32, u64)>,
    collect_lows: bool,
    /// Next nonce to grind, and the end of this lane's nonce space.
    next: u64,
    end: u64,
    cap: usize,
    /// Open loop: the lane's share of the run's total need. Generators stop once the live jobs
    /// have had that many shares, so grinding does not take CPU from the proxy under test.
    budget: Option<usize>,
    /// Shares wanted before the clock starts.
    prefill: usize,
    /// Shares produced for the live jobs.
    produced: usize,
}

impl Lane {
    fn wants(&self) -> Option<usize> {
        let room = self.cap.saturating_sub(self.shares.len());
        let room = match self.budget {
            Some(total) => room.min(total.saturating_sub(self.produced)),
            None => room,
        };
        (room > 0 && self.next < self.end).then_some(room)
    }
}

/// How lanes are sized: per connection, scaled by the connections a lane serves.
#[derive(Debug, Default)]
struct Sizing {
    connections: usize,
    total_cap: usize,
    total_prefill: usize,
    open_loop: bool,
}

impl Sizing {
    fn lane(&self, conns: usize, next: u64, end: u64, collect_lows: bool) -> Lane {
        let n = self.connections.max(1);
        // Rounded up, plus a little per connection so small lanes never come up short.
        let share = |total: usize| (total.saturating_mul(conns)).div_ceil(n) + 2 * conns;
        let cap = if conns == 0 { 0 } else { share(self.total_cap) };
        Lane {
            shares: VecDeque::new(),
            lows: VecDeque::new(),
            collect_lows,
            next,
            end,
            cap,
            budget: self.open_loop.then_some(cap),
            prefill: if self.open_loop {
                cap
            } else {
                cap.min(share(self.total_prefill))
            },
            produced: 0,
        }
    }
}

#[derive(Debug, Default)]
struct BankInner {
    /// Newest last; shares of jobs dropped from here are discarded.
    jobs: VecDeque<Arc<BankJob>>,
    /// Lane 0: the EthProxy pool; then one per EthereumStratum/1.0.0 connection.
    lanes: Vec<Lane>,
    headers: Vec<[u8; 32]>,
    sources: HashMap<[u8; 32], Arc<MiningSource>>,
    sizing: Sizing,
    /// Bits 32..48 of EthereumStratum/1.0.0 nonces this run (never those of EthProxy nonces).
    part_base: u64,
    /// Round robin over lanes.
    turn: usize,
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

    fn pop(&self, lane: usize) -> Option<Share> {
        self.lock().lanes.get_mut(lane)?.shares.pop_front()
    }

    /// Returns a share its connection could not send yet.
    fn unpop(&self, lane: usize, s: Share) {
        if let Some(l) = self.lock().lanes.get_mut(lane) {
            l.shares.push_front(s);
        }
    }

    fn pop_low(&self, lane: usize) -> Option<(u32, u64)> {
        self.lock().lanes.get_mut(lane)?.lows.pop_front()
    }

    /// Shares held, and whether every lane has its head start.
    fn filled(&self) -> (usize, bool) {
        let b = self.lock();
        let held = b.lanes.iter().map(|l| l.shares.len()).sum();
        let full = b.lanes.iter().all(|l| l.shares.len() >= l.prefill);
        (held, full)
    }

    /// A lane for an EthereumStratum/1.0.0 connection holding `extranonce`.
    fn add_lane(&self, extranonce: u16) -> usize {
        let mut b = self.lock();
        let first = (u64::from(extranonce) << PART_BITS) | (b.part_base << 32);
        let end = (u64::from(extranonce) << PART_BITS) | ((1u64 << PART_BITS) - 1);
        let lane = b.sizing.lane(1, first, end, true);
        b.lanes.push(lane);
        b.lanes.len() - 1
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
        let per_share = difficulty_from_target(target)
            .ok()
            .and_then(|d| u64::try_from(d).ok())
            .unwrap_or(u64::MAX);
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
            per_share,
            src,
        }));
        // The proxy accepts the last 3 heights; keep shares of the newest 2 jobs only.
        while b.jobs.len() > 2 {
            b.jobs.pop_front();
        }
        let live: Vec<u32> = b.jobs.iter().map(|j| j.id).collect();
        for l in &mut b.lanes {
            l.shares.retain(|s| live.contains(&s.job));
            l.lows.retain(|(j, _)| live.contains(j));
            l.produced = l.shares.len();
        }
        drop(b);
        self.changed.notify_waiters();
        Ok(())
    }

    /// The next lane (round robin) that wants shares: the newest job, the lane and its nonces.
    fn pick(&self) -> Option<(Arc<BankJob>, usize, std::ops::Range<u64>)> {
        let mut b = self.lock();
        let job = b.jobs.back().cloned()?;
        let n = b.lanes.len();
        for k in 0..n {
            let i = (b.turn + k) % n;
            let lane = &mut b.lanes[i];
            let Some(room) = lane.wants() else { continue };
            // About what the lane still wants (a per-connection lane wants few), at most RANGE.
            let want = (room as u64)
                .saturating_mul(job.per_share)
                .saturating_add(64)
                .min(RANGE)
                .min(lane.end - lane.next);
            let range = lane.next..lane.next + want;
            lane.next += want;
            b.turn = (i + 1) % n;
            return Some((job, i, range));
        }
        None
    }

    /// Generator thread: grinds the newest job's nonces, keeping every lane up to its cap.
    fn generate(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let Some((job, lane, range)) = self.pick() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let mut found = Vec::new();
            let mut lows = Vec::new();
            let mut next = range.start;
            while let Some((nonce, out)) = job.src.grind(&job.header, job.target, next..range.end) {
                // Every nonce skipped before a hit is above the target.
                if nonce > next {
                    lows.push((job.id, nonce - 1));
                }
                found.push(Share {
                    job: job.id,
                    nonce,
                    mix: out.mix_digest,
                });
                next = nonce + 1;
            }
            let mut b = self.lock();
            if b.jobs.iter().any(|j| j.id == job.id) {
                let l = &mut b.lanes[lane];
                l.produced += found.len();
                l.shares.extend(found);
                if l.collect_lows {
                    let room = MAX_LOWS.saturating_sub(l.lows.len());
                    l.lows.extend(lows.into_iter().take(room));
                }
            }
        }
    }
}

/// An EthereumStratum/1.0.0 connection's view of the pool.
#[derive(Debug)]
struct EsSession {
    /// Its bank lane.
    lane: usize,
    /// `login.worker`, sent with every submit.
    user: String,
    state: Mutex<EsState>,
}

#[derive(Debug, Default)]
struct EsState {
    /// From the last `mining.set_difficulty`, in hashes.
    difficulty: Option<u64>,
    /// The session's job ids by header, newest last.
    jobs: VecDeque<([u8; 32], String)>,
}

impl EsSession {
    fn state(&self) -> MutexGuard<'_, EsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn job_id(&self, header: &[u8; 32]) -> Option<String> {
        let s = self.state();
        s.jobs
            .iter()
            .rev()
            .find(|(h, _)| h == header)
            .map(|(_, id)| id.clone())
    }

    /// Handles a push (`mining.set_difficulty`, `mining.notify`); a new job goes to the bank.
    async fn on_push(
        &self,
        cfg: &LoadgenConfig,
        bank: &Bank,
        method: &str,
        params: &Value,
    ) -> Result<(), LoadgenError> {
        let bad = |what: &str| LoadgenError::Work(format!("bad {what} in {method} {params}"));
        match method {
            "mining.set_difficulty" => {
                let d = params
                    .get(0)
                    .and_then(Value::as_f64)
                    .and_then(from_nicehash)
                    .ok_or_else(|| bad("difficulty"))?;
                self.state().difficulty = Some(d);
            }
            "mining.notify" => {
                let field = |i: usize| params.get(i).and_then(Value::as_str);
                let bare = |i: usize, what: &str| {
                    field(i)
                        .and_then(|h| parse_h256(&format!("0x{h}"), "hash").ok())
                        .ok_or_else(|| bad(what))
                };
                let job_id = field(0).ok_or_else(|| bad("job id"))?.to_string();
                let (seed, header) = (bare(1, "seed")?, bare(2, "header")?);
                let difficulty = self
                    .state()
                    .difficulty
                    .ok_or_else(|| bad("job before mining.set_difficulty:"))?;
                let target = target_from_difficulty(U256::from(difficulty))
                    .map_err(|_| bad("difficulty"))?;
                bank.offer(&cfg.chain, header, seed, target).await?;
                let mut s = self.state();
                if s.jobs.len() == ES_JOBS {
                    s.jobs.pop_front();
                }
                s.jobs.push_back((header, job_id));
            }
            _ => {}
        }
        Ok(())
    }
}

/// How a connection speaks.
#[derive(Clone, Debug)]
enum Wire {
    EthProxy,
    Es(Arc<EsSession>),
}

impl Wire {
    fn method(&self) -> &'static str {
        match self {
            Wire::EthProxy => "eth_submitWork",
            Wire::Es(_) => "mining.submit",
        }
    }

    fn dialect(&self) -> Dialect {
        match self {
            Wire::EthProxy => Dialect::EthProxy,
            Wire::Es(_) => Dialect::EthereumStratum,
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    /// Reply latency and the window (of `WINDOW`) the share was due in.
    latencies_us: Vec<(u32, u16)>,
    acked: Vec<String>,
    acked_es: u64,
    sent: u64,
    replies: u64,
    valid_rejected: u64,
    invalid_sent: u64,
    invalid_accepted: u64,
    starved: u64,
    unanswered_valid: u64,
    steal_pct_by_10s: Vec<f64>,
}

/// A line from the proxy: a reply or a push. Typed, so a reply costs no map of its fields.
#[derive(serde::Deserialize)]
struct Incoming {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    result: Option<Value>,
}

/// A submission: what it is, its params (a JSON array, serialized), and (valid or duplicate)
/// its `pow` member.
struct Submission {
    kind: Kind,
    params: String,
    member: String,
}

struct Pending {
    due: Instant,
    kind: Kind,
    member: String,
    /// A valid share's params, repeated as a duplicate once acknowledged.
    params: Option<String>,
}

/// The last share answered `true` on a connection: duplicates repeat it (a refused share
/// repeated would be a first submission, rightly accepted).
type Recent = Arc<Mutex<Option<(String, String)>>>;

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
    let ethproxy = (0..cfg.connections)
        .filter(|&i| cfg.dialect.of(i) == Dialect::EthProxy)
        .count();
    {
        let mut b = bank.lock();
        b.sizing = Sizing {
            connections: cfg.connections,
            total_cap: expected.min(MAX_BANK),
            // Closed loop has no known total: a head start per connection, the generators
            // keep up.
            total_prefill: (1000 * cfg.connections).min(50_000),
            open_loop: cfg.rate.is_some(),
        };
        // EthProxy nonces: the run id, then a counter. EthereumStratum/1.0.0 ones: the
        // extranonce, 16 bits of the run id with the top bit flipped (so never an EthProxy
        // nonce of this run), then a counter.
        b.part_base = u64::from((run_id & 0xffff) ^ 0x8000);
        let lane0 = b
            .sizing
            .lane(ethproxy, u64::from(run_id) << 32, u64::MAX, false);
        b.lanes.push(lane0);
    }
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
    let mut report = check_redis(&cfg, &logins, tally, seconds, difficulty).await?;
    report.dialect = cfg.dialect.name().to_string();
    report.ethproxy_connections = ethproxy;
    report.ethereumstratum_connections = cfg.connections - ethproxy;
    Ok(report)
}

type Lines = FramedRead<tokio::net::tcp::OwnedReadHalf, LinesCodec>;
type Conn = (Lines, tokio::net::tcp::OwnedWriteHalf, Wire);

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
    let fill_deadline = Instant::now() + PREFILL_LIMIT;
    while !bank.filled().1 && Instant::now() < fill_deadline && !shutdown.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(shares = bank.filled().0, "share bank filled; starting load");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = shutdown.child_token();
    let start = Instant::now();
    let end = start + cfg.duration;
    let steal_pct: Arc<Mutex<Vec<f64>>> = Arc::default();
    let steal = tokio::spawn(sample_steal(start, end, steal_pct.clone()));
    let n = conns.len();
    let mut tasks = Vec::with_capacity(n);
    for (i, (lines, w, wire)) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(connection(
            i,
            n,
            cfg.clone(),
            bank.clone(),
            tally.clone(),
            (lines, w, wire),
            start,
            end,
            stop.clone(),
        )));
    }
    tokio::select! {
        _ = tokio::time::sleep_until(end.into()) => {}
        _ = stop.cancelled() => {}
    }
    // The schedule's length, not a late wake-up's: shares due in it are the ones sent, and a
    // late send's wait is in its latency (measured from when it was due).
    let seconds = start.elapsed().min(cfg.duration).as_secs_f64();
    // Replies still in flight get a grace period (they count; latency includes the wait).
    for t in tasks {
        t.await??;
    }
    stop.cancel();
    let mut t = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    // Done at the schedule's end; a run stopped early keeps the windows it completed.
    steal.abort();
    t.steal_pct_by_10s = std::mem::take(&mut *steal_pct.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((t, seconds, difficulty))
}

/// Replies one connection should get in an open-loop run, with a margin (0 for a closed loop,
/// whose count is not known ahead).
fn expected_replies(rate: Option<f64>, duration: Duration, connections: usize) -> usize {
    let Some(rate) = rate else {
        return 0;
    };
    let per_conn = rate * duration.as_secs_f64() / connections.max(1) as f64;
    // Bounded: a mistyped rate must not reserve gigabytes up front.
    (per_conn * 1.05 + 64.0).min(1e7) as usize
}

/// Appends the steal percentage of each `WINDOW` from `start` to `end` to `out` (the last
/// window may be shorter).
async fn sample_steal(start: Instant, end: Instant, out: Arc<Mutex<Vec<f64>>>) {
    let read = || {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| cpu_times(&s))
    };
    let Some(mut prev) = read() else {
        return;
    };
    let mut k = 1u32;
    loop {
        let at = (start + WINDOW * k).min(end);
        tokio::time::sleep_until(at.into()).await;
        let Some(cur) = read() else {
            return;
        };
        out.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(steal_pct(prev, cur));
        prev = cur;
        if at >= end {
            return;
        }
        k += 1;
    }
}

/// `(all, steal)` jiffies from the aggregate `cpu` line of `/proc/stat`.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
    // already counted in user and nice.
    let steal = *fields.get(7)?;
    Some((fields.iter().take(8).sum(), steal))
}

/// Steal between two `cpu_times` samples, as a percentage rounded to 0.1.
fn steal_pct(prev: (u64, u64), cur: (u64, u64)) -> f64 {
    let all = cur.0.saturating_sub(prev.0);
    if all == 0 {
        return 0.0;
    }
    let steal = cur.1.saturating_sub(prev.1);
    (steal as f64 * 1000.0 / all as f64).round() / 10.0
}

/// Connects, logs in and waits for the first job; returns the share difficulty in hashes.
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
    let es = cfg.dialect.of(index) == Dialect::EthereumStratum;
    let hello = if es {
        format!(
            "{}\n{}\n",
            json!({"id": ID_LOGIN, "method": "mining.subscribe",
                   "params": ["dagproxy-loadgen", PROTOCOL]}),
            json!({"id": ID_GETWORK, "method": "mining.authorize",
                   "params": [format!("{login}.lg"), "x"]})
        )
    } else {
        format!(
            "{}\n{}\n",
            json!({"id": ID_LOGIN, "jsonrpc": "2.0", "method": "eth_submitLogin",
                   "params": [login], "worker": "lg"}),
            json!({"id": ID_GETWORK, "jsonrpc": "2.0", "method": "eth_getWork", "params": []})
        )
    };
    w.write_all(hello.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut session: Option<Arc<EsSession>> = None;
    let mut authorized = false;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await
            .map_err(|_| fail("no job after the login".into()))?
            .ok_or_else(|| fail("closed".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let msg: Value = serde_json::from_str(&line).map_err(|e| fail(e.to_string()))?;
        if let Some(e) = msg.get("error").filter(|e| !e.is_null()) {
            return Err(fail(format!("pool error {e}")));
        }
        if !es {
            if let Some(Value::Array(work)) = msg.get("result") {
                let difficulty = offer_job(cfg, bank, work).await?;
                return Ok(((lines, w, Wire::EthProxy), difficulty));
            }
            continue;
        }
        let id = msg.get("id").and_then(Value::as_u64);
        match (id, msg.get("method").and_then(Value::as_str), &session) {
            (Some(ID_LOGIN), _, _) => {
                let en = msg
                    .pointer("/result/1")
                    .and_then(Value::as_str)
                    .filter(|h| h.len() == 2 * EXTRANONCE_BYTES)
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
                    .ok_or_else(|| fail(format!("no 2-byte extranonce in {msg}")))?;
                session = Some(Arc::new(EsSession {
                    lane: bank.add_lane(en),
                    user: format!("{login}.lg"),
                    state: Mutex::default(),
                }));
            }
            (Some(ID_GETWORK), _, _) => {
                if msg.get("result") != Some(&Value::Bool(true)) {
                    return Err(fail(format!("authorize refused: {msg}")));
                }
                authorized = true;
            }
            (_, Some(method), Some(s)) => {
                let params = msg.get("params").cloned().unwrap_or(Value::Null);
                s.on_push(cfg, bank, method, &params).await?;
                let d = s.state().difficulty;
                if let (true, Some(d), false) = (authorized, d, s.state().jobs.is_empty()) {
                    return Ok(((lines, w, Wire::Es(s.clone())), U256::from(d)));
                }
            }
            _ => {}
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
    (mut lines, mut w, wire): Conn,
    start: Instant,
    end: Instant,
    stop: CancellationToken,
) -> Result<(), LoadgenError> {
    let pending: Arc<Mutex<HashMap<u64, Pending>>> = Arc::default();
    // Closed loop: one share outstanding per connection.
    let window = Arc::new(Semaphore::new(1));
    let reader_done = CancellationToken::new();
    let recent_valid: Recent = Arc::default();
    let es = wire.dialect() == Dialect::EthereumStratum;

    let reader = {
        let (pending, tally, bank, cfg, window, done, recent, wire) = (
            pending.clone(),
            tally.clone(),
            bank.clone(),
            cfg.clone(),
            window.clone(),
            reader_done.clone(),
            recent_valid.clone(),
            wire.clone(),
        );
        tokio::spawn(async move {
            // Sized for the whole run: 200 connections doubling these vectors at the same
            // share count made a burst of copying and page faults in the middle of the run.
            let expected = expected_replies(cfg.rate, cfg.duration, n);
            let mut local = Tally {
                latencies_us: Vec::with_capacity(expected),
                acked: Vec::with_capacity(expected),
                ..Tally::default()
            };
            loop {
                let line = tokio::select! {
                    l = lines.next() => l,
                    _ = done.cancelled() => break,
                };
                let Some(Ok(line)) = line else { break };
                let Ok(msg) = serde_json::from_str::<Incoming>(&line) else {
                    continue;
                };
                let id = msg.id.as_ref().and_then(Value::as_u64).unwrap_or(0);
                if id < ID_FIRST {
                    let pushed = match (&wire, msg.method.as_deref()) {
                        (Wire::Es(s), Some(method)) => {
                            let params = msg.params.unwrap_or(Value::Null);
                            s.on_push(&cfg, &bank, method, &params).await
                        }
                        (Wire::EthProxy, None) => match &msg.result {
                            Some(Value::Array(wk)) => offer_job(&cfg, &bank, wk).await.map(|_| ()),
                            _ => Ok(()),
                        },
                        _ => Ok(()),
                    };
                    if let Err(e) = pushed {
                        tracing::warn!("{e}");
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
                let w = p.due.saturating_duration_since(start).as_secs() / WINDOW.as_secs();
                local
                    .latencies_us
                    .push((us, w.min(u64::from(u16::MAX)) as u16));
                local.replies += 1;
                let ok = msg.result == Some(Value::Bool(true));
                match (p.kind, ok) {
                    (Kind::Valid, true) => {
                        if let Some(params) = p.params {
                            *recent.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some((params, p.member.clone()));
                        }
                        local.acked.push(p.member);
                    }
                    (Kind::Valid, false) => local.valid_rejected += 1,
                    (_, true) => local.invalid_accepted += 1,
                    (_, false) => {}
                }
                window.add_permits(1);
            }
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            if es {
                t.acked_es += local.acked.len() as u64;
            }
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
    let mut line = String::with_capacity(256);
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
        let sub = if acc_invalid >= 1.0 {
            acc_invalid -= 1.0;
            invalid_turn += 1;
            local.invalid_sent += 1;
            let recent = recent_valid
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Some(invalid_share(&bank, &wire, invalid_turn, recent))
        } else {
            valid_share(&bank, &wire)
        };
        let Some(Submission {
            kind,
            params,
            member,
        }) = sub
        else {
            local.starved += 1;
            if interval.is_none() {
                window.add_permits(1);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            continue;
        };
        let id = next_id;
        next_id += 1;
        request_line(&mut line, id, es, wire.method(), &params);
        let params = (kind == Kind::Valid).then_some(params);
        pending.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            Pending {
                due,
                kind,
                member,
                params,
            },
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

/// The `pow` member the proxy stores for a share: `nonce:header:mix`.
fn member(nonce: u64, header: &[u8; 32], mix: &[u8; 32]) -> String {
    join_hex(["", ":", ""], &nonce_hex(nonce), header, mix)
}

/// `["<nonce>","0x<header>","0x<mix>"]`: hex needs no JSON escaping.
fn hex_params(nonce: &str, header: &[u8; 32], mix: &[u8; 32]) -> String {
    join_hex(["[\"", "\",\"", "\"]"], nonce, header, mix)
}

/// `open nonce sep 0x<header> sep 0x<mix> close`, for `[open, sep, close]`.
fn join_hex(
    [open, sep, close]: [&str; 3],
    nonce: &str,
    header: &[u8; 32],
    mix: &[u8; 32],
) -> String {
    let mut out =
        String::with_capacity(2 * 66 + nonce.len() + open.len() + 2 * sep.len() + close.len());
    out.push_str(open);
    out.push_str(nonce);
    out.push_str(sep);
    push_hex(&mut out, header);
    out.push_str(sep);
    push_hex(&mut out, mix);
    out.push_str(close);
    out
}

/// A JSON array of strings.
fn json_params(items: &[&str]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// Writes one request line (with its newline) into `out`, replacing what was there; the
/// lines are built by hand because serializing a `json!` map per share cost the generator
/// more than the rest of its work.
fn request_line(out: &mut String, id: u64, ethereum_stratum: bool, method: &str, params: &str) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(out, "{{\"id\":{id},");
    if !ethereum_stratum {
        out.push_str("\"jsonrpc\":\"2.0\",");
    }
    out.push_str("\"method\":\"");
    out.push_str(method);
    out.push_str("\",\"params\":");
    out.push_str(params);
    out.push_str("}\n");
}

/// An EthereumStratum/1.0.0 nonce's miner part: the digits after the extranonce.
fn part_hex(nonce: u64) -> String {
    format!(
        "{:0width$x}",
        nonce & ((1u64 << PART_BITS) - 1),
        width = (PART_BITS / 4) as usize
    )
}

/// The next precomputed valid share; `None` when the bank has none ready for this connection.
fn valid_share(bank: &Bank, wire: &Wire) -> Option<Submission> {
    match wire {
        Wire::EthProxy => {
            let s = bank.pop(0)?;
            let h = bank.header(s.job);
            Some(Submission {
                kind: Kind::Valid,
                params: hex_params(&nonce_hex(s.nonce), &h, &s.mix),
                member: member(s.nonce, &h, &s.mix),
            })
        }
        Wire::Es(es) => {
            let s = bank.pop(es.lane)?;
            let h = bank.header(s.job);
            // A job the bank has from another connection's notify, not yet this one's.
            let Some(job) = es.job_id(&h) else {
                bank.unpop(es.lane, s);
                return None;
            };
            Some(Submission {
                kind: Kind::Valid,
                params: json_params(&[&es.user, &job, &part_hex(s.nonce)]),
                // The proxy computes the mix itself: the same one the generator found.
                member: member(s.nonce, &h, &s.mix),
            })
        }
    }
}

/// An invalid submission, in turn: a wrong mix (EthProxy) or a nonce above the target
/// (EthereumStratum/1.0.0), a duplicate of a recent valid share, an unknown header or job.
fn invalid_share(
    bank: &Bank,
    wire: &Wire,
    turn: u32,
    recent: Option<(String, String)>,
) -> Submission {
    if let (1, Some((params, member))) = (turn % 3, recent) {
        return Submission {
            kind: Kind::Duplicate,
            params,
            member,
        };
    }
    match wire {
        Wire::EthProxy => {
            let fallback = || {
                let h = bank.lock().headers.last().copied().unwrap_or([0; 32]);
                (nonce_hex(u64::from(turn)), h)
            };
            if turn % 3 == 2 {
                let mut h = [0x5a; 32];
                h[..4].copy_from_slice(&turn.to_be_bytes());
                let (n, _) = fallback();
                return Submission {
                    kind: Kind::Stale,
                    params: hex_params(&n, &h, &[0x11; 32]),
                    member: String::new(),
                };
            }
            let (n, h) = match bank.pop(0) {
                Some(s) => (nonce_hex(s.nonce), bank.header(s.job)),
                None => fallback(),
            };
            Submission {
                kind: Kind::Bad,
                params: hex_params(&n, &h, &[0xee; 32]),
                member: String::new(),
            }
        }
        Wire::Es(es) => {
            if turn % 3 != 2 {
                let low = bank
                    .pop_low(es.lane)
                    .and_then(|(job, nonce)| Some((es.job_id(&bank.header(job))?, nonce)));
                if let Some((job, nonce)) = low {
                    return Submission {
                        kind: Kind::Bad,
                        params: json_params(&[&es.user, &job, &part_hex(nonce)]),
                        member: String::new(),
                    };
                }
            }
            // Job ids are the session's counter in 8 hex digits: this one is never issued.
            Submission {
                kind: Kind::Stale,
                params: json_params(&[
                    &es.user,
                    &format!("f{turn:07x}"),
                    &part_hex(u64::from(turn)),
                ]),
                member: String::new(),
            }
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
    let all: Vec<u32> = tally.latencies_us.iter().map(|&(us, _)| us).collect();
    let mut by_window: Vec<Vec<u32>> = Vec::new();
    for &(us, w) in &tally.latencies_us {
        let w = usize::from(w);
        if by_window.len() <= w {
            by_window.resize_with(w + 1, Vec::new);
        }
        by_window[w].push(us);
    }
    let p99_ms_by_10s = by_window.iter().map(|l| percentile(l, 0.99)).collect();
    Ok(LoadReport {
        accepted_per_s: if seconds > 0.0 {
            acknowledged as f64 / seconds
        } else {
            0.0
        },
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        p99_ms_by_10s,
        host_steal_pct_by_10s: tally.steal_pct_by_10s,
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
        acknowledged_ethproxy: acknowledged - tally.acked_es,
        acknowledged_ethereumstratum: tally.acked_es,
        ..LoadReport::default()
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
    /// Stratum dialect: ethproxy, ethereumstratum (alias nicehash; 2-byte extranonce) or mixed
    /// (every other connection ethereumstratum).
    #[arg(long, value_enum, default_value = "ethproxy")]
    pub dialect: LoadDialect,
    /// Print JSON (the only output format).
    #[arg(long)]
    pub json: bool,
    /// Runtime threads sending and reading (1: one thread, the cheapest per share; the share
    /// bank is filled on blocking threads either way). On the proxy's own machine, every
    /// thread more competes with the system under test.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
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
        dialect: args.dialect,
    };
    // What the run keeps per acknowledged share is faulted in before its clock starts, so
    // that page faults on fresh memory are not measured as the proxy's latency (see heap).
    let kept = expected_replies(cfg.rate, cfg.duration, cfg.connections)
        .saturating_mul(cfg.connections)
        .saturating_mul(KEPT_PER_SHARE);
    crate::heap::hold(crate::heap::PROXY_WARM.saturating_add(kept));
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    run(cfg, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    #[test]
    fn reply_vectors_are_sized_for_the_run() {
        let minute = Duration::from_secs(60);
        // 20,000/s for 60 s over 200 connections: 6,000 each, plus 5% and 64.
        assert_eq!(expected_replies(Some(20_000.0), minute, 200), 6_364);
        assert_eq!(expected_replies(None, minute, 200), 0);
        assert_eq!(expected_replies(Some(1e12), minute, 1), 10_000_000);
    }

    #[test]
    fn steal_comes_from_the_aggregate_cpu_line() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let before = "cpu  100 0 50 800 10 0 5 35 7 0\ncpu0 50 0 25 400 5 0 2 18 3 0\nintr 1 2\n";
        let after = "cpu  160 0 70 900 10 0 10 85 9 0\ncpu0 80 0 35 450 5 0 5 43 4 0\n";
        let (a, b) = (cpu_times(before), cpu_times(after));
        // Guest time is inside user and nice, so it is not added again.
        assert_eq!(a, Some((1000, 35)));
        assert_eq!(b, Some((1235, 85)));
        let (a, b) = (a.expect("before"), b.expect("after"));
        // 50 of 235 jiffies.
        assert_eq!(steal_pct(a, b), 21.3);
        assert_eq!(steal_pct(a, a), 0.0);
        // A kernel without the steal column, or garbage: no figure rather than a wrong one.
        assert_eq!(cpu_times("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(cpu_times("cpu  1 x 3 4 5 6 7 8\n"), None);
        assert_eq!(cpu_times("intr 1 2\n"), None);
    }

    #[test]
    fn dialect_flag_and_connection_split() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["loadgen", "--stratum", "127.0.0.1:1"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|c| c.args.dialect)
        };
        assert_eq!(parse(&[]).expect("default"), LoadDialect::EthProxy);
        for (name, d) in [
            ("ethproxy", LoadDialect::EthProxy),
            ("ethereumstratum", LoadDialect::EthereumStratum),
            ("nicehash", LoadDialect::EthereumStratum),
            ("mixed", LoadDialect::Mixed),
        ] {
            assert_eq!(parse(&["--dialect", name]).expect(name), d);
        }
        assert!(parse(&["--dialect", "getwork"]).is_err());
        let es = |d: LoadDialect| {
            (0..6)
                .filter(|&i| d.of(i) == Dialect::EthereumStratum)
                .count()
        };
        assert_eq!(es(LoadDialect::EthProxy), 0);
        assert_eq!(es(LoadDialect::EthereumStratum), 6);
        assert_eq!(es(LoadDialect::Mixed), 3);
    }

    #[test]
    fn nonce_parts_and_lanes() {
        assert_eq!(part_hex(0xabcd_0000_0000_0102), "000000000102");
        let bank = Bank::default();
        bank.lock().part_base = 0x8001;
        let lane = bank.add_lane(0xabcd);
        let b = bank.lock();
        let l = &b.lanes[lane];
        // The extranonce on top, then this run's bits, never past the extranonce's space.
        assert_eq!(l.next, 0xabcd_8001_0000_0000);
        assert_eq!(l.end, 0xabcd_ffff_ffff_ffff);
    }

    #[test]
    fn hand_built_lines_are_the_json_requests() {
        let (h, m) = ([0x1f; 32], [0xa0; 32]);
        let params = hex_params(&nonce_hex(7), &h, &m);
        let mut line = String::from("left over");
        request_line(&mut line, 1234, false, "eth_submitWork", &params);
        assert!(line.ends_with('\n'));
        let got: Value = serde_json::from_str(&line).expect("valid JSON");
        let want = json!({"id": 1234, "jsonrpc": "2.0", "method": "eth_submitWork",
            "params": [nonce_hex(7), to_hex(&h), to_hex(&m)]});
        assert_eq!(got, want);
        assert_eq!(
            member(7, &h, &m),
            format!("{}:{}:{}", nonce_hex(7), to_hex(&h), to_hex(&m))
        );

        let es = json_params(&["a\"b", "00000001", "abc"]);
        request_line(&mut line, 9, true, "mining.submit", &es);
        let got: Value = serde_json::from_str(&line).expect("valid JSON");
        let want =
            json!({"id": 9, "method": "mining.submit", "params": ["a\"b", "00000001", "abc"]});
        assert_eq!(got, want);
    }
}

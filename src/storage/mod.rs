//! Redis storage in open-ethereum-pool's exact schema (shares, hashrate, blocks, node state,
//! black/whitelists), with the duplicate check and the writes of a share made one atomic Lua
//! step, and many shares written per round trip.
//!
//! Keys are `<prefix>:<part>:<part>…` (open-ethereum-pool's `formatKey`); a found block's round is
//! `<prefix>:shares:round<height>:<nonce>` (`formatRound`). The values written are those of
//! open-ethereum-pool's `WriteShare`, `WriteBlock` and `WriteNodeState`, so its API, unlocker and
//! payouts modules read them unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::{
    ErrorKind, FromRedisValue, RedisError, RedisResult, Script, ServerErrorKind, ToRedisArgs,
};

use crate::ethash::U256;
use link::Link;
pub use link::RedisOptions;

pub mod bench;
mod link;

/// Logins remembered for the once-a-second TTL refresh before quiet ones are dropped.
const TOUCHED_MAX: usize = 100_000;
/// open-ethereum-pool keeps 3 templates in memory; pow entries older than height-8 go.
const POW_BACKLOG: u64 = 8;

/// One valid share, as the miner submitted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRecord {
    /// Miner address, lowercase `0x` + 40 hex.
    pub login: String,
    /// Worker id (`0` when none).
    pub worker: String,
    /// Nonce exactly as submitted (`0x` + 16 hex).
    pub nonce: String,
    /// Header (pow) hash exactly as submitted.
    pub pow_hash: String,
    /// Mix digest exactly as submitted.
    pub mix_digest: String,
    /// The share difficulty credited (open-ethereum-pool stores it as a signed 64-bit integer).
    pub difficulty: u64,
    /// Height of the template the share was for.
    pub height: u64,
}

impl ShareRecord {
    /// The `pow` zset member and block candidate prefix: `nonce:powHash:mixDigest`.
    pub fn pow_member(&self) -> String {
        format!("{}:{}:{}", self.nonce, self.pow_hash, self.mix_digest)
    }
}

/// What a found block adds to its share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRecord {
    /// Height of the block.
    pub height: u64,
    /// The block difficulty of that height (the candidate's `roundDiff`).
    pub round_difficulty: U256,
}

/// Whether a write stored the share or found it already stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Newly stored and counted.
    Stored,
    /// The same `nonce:powHash:mixDigest` was already in `pow`; nothing was written.
    Duplicate,
}

/// Storage errors. Any of them means the write did not (or may not) happen: never report such
/// a share as stored.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The Redis URL does not parse.
    #[error("invalid redis url '{url}': {source}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why.
        source: RedisError,
    },
    /// Could not connect at start.
    #[error("redis unreachable at {url}: {source}")]
    Connect {
        /// The URL (password elided).
        url: String,
        /// Why.
        source: RedisError,
    },
    /// A command failed: connection lost, timeout, or a Redis error reply.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// No sentinel named a reachable master.
    #[error("redis master lookup via sentinel: {0}")]
    Lookup(String),
    /// Written on the master, but fewer replicas than `waitReplicas` acknowledged it in time.
    #[error("redis write reached {got} of {wanted} replicas in time")]
    NotReplicated {
        /// `waitReplicas`.
        wanted: u32,
        /// Replicas that acknowledged.
        got: u32,
    },
    /// open-ethereum-pool stores difficulties as signed 64-bit integers.
    #[error("share difficulty {0} does not fit open-ethereum-pool's signed 64-bit field")]
    Difficulty(u64),
    /// A script answered something it never answers.
    #[error("unexpected reply from redis script: {0}")]
    Reply(String),
}

impl StorageError {
    /// Whether the error is Redis being unreachable or too slow (rather than a logic error).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StorageError::Connect { .. }
            | StorageError::Lookup(_)
            | StorageError::NotReplicated { .. } => true,
            // The errors that also make a sentinel setup look for the master.
            StorageError::Redis(e) => link::master_lost(e),
            _ => false,
        }
    }
}

/// A handle on the pool's Redis; cheap to clone (one multiplexed, self-reconnecting connection,
/// to the master Sentinel names when sentinels are configured).
#[derive(Clone)]
pub struct RedisStore {
    link: Arc<Link>,
    prefix: String,
    hashrate_expiration_s: u64,
    /// Login -> the second in which its hashrate TTL and lastShare were last refreshed.
    touched: Arc<Mutex<HashMap<String, u64>>>,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("hashrate_expiration_s", &self.hashrate_expiration_s)
            .finish_non_exhaustive()
    }
}

/// The URL for messages, without a password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// A Lua script's body as sent: without its full-line comments and indentation (fewer bytes
/// to send and hash when it is sent as `EVAL`).
fn compact(lua: &str) -> String {
    lua.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The share and block scripts.
struct Scripts {
    share: Lua,
    block: Lua,
}

/// A Lua script, compacted, and its SHA1.
struct Lua {
    body: String,
    sha: String,
}

impl Lua {
    fn new(source: &str) -> Self {
        let body = compact(source);
        let sha = Script::new(&body).get_hash().to_string();
        Self { body, sha }
    }
}

/// One call of a Lua script: `EVALSHA`, or `EVAL` with the body when Redis answers
/// `NOSCRIPT` (after a restart, a `SCRIPT FLUSH`, on a new master).
///
/// The store loads both scripts when it connects. Without that, the first two batches in
/// flight on a fresh Redis both got `NOSCRIPT`, their retries raced, and the later batch could
/// run first and take a duplicate pair's credit from the earlier share (1 run in 16 of
/// `pipelined_requests_are_answered_in_order`). The race is still possible when Redis loses
/// its scripts while the proxy runs; both copies are then the same solution, counted once.
/// Always sending `EVAL` would close it, at a measured 2 µs more Redis CPU per share at
/// 20,000 shares/s (35.1 and 33.1 against 32.6 and 31.2 µs, 2 pairs of 30 s load runs).
struct Eval<'a> {
    lua: &'a Lua,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl<'a> Eval<'a> {
    fn new(lua: &'a Lua) -> Self {
        Self {
            lua,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    fn key(&mut self, key: String) -> &mut Self {
        self.keys.push(key);
        self
    }

    fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn cmd(&self, eval: bool) -> redis::Cmd {
        let mut cmd = redis::cmd(if eval { "EVAL" } else { "EVALSHA" });
        cmd.arg(if eval { &self.lua.body } else { &self.lua.sha })
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }

    async fn run<T: FromRedisValue>(&self, con: &mut ConnectionManager) -> RedisResult<T> {
        match self.cmd(false).query_async(con).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.cmd(true).query_async(con).await
            }
            r => r,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A share's `pow` score: its height plus a fraction below one that grows with time (and wraps
/// every 2^26 ms, about 18.6 hours), from the batch's millisecond clock.
///
/// open-ethereum-pool scores `pow` members by height alone, so every member of a height ties and
/// the skiplist orders them by their random `nonce:…` strings: each insert walks to a random
/// place in a zset of a million or two members, one cache miss per step (about 17 µs per share
/// measured, against about 6 µs for inserts at the recent end). With the growing fraction a new
/// member lands beside the last ones written. The integer part is still the height: the sweep
/// below `height-8` removes exactly what it did, and an open-ethereum-pool proxy sharing the
/// Redis (which writes whole heights) works alongside unchanged.
fn pow_score(height: u64, ms: u64) -> String {
    const SPAN: u64 = 1 << 26;
    let h = height as f64;
    let score = h + (ms % SPAN) as f64 / SPAN as f64;
    // Past 2^27 or so the fraction's last bits round away; never let it reach the next height.
    if score.floor() == h {
        score.to_string()
    } else {
        height.to_string()
    }
}

/// The exclusive lower bound of the pow sweep, or none below height 8 (the Go code's uint64
/// `height-8` wraps there and sweeps everything).
fn sweep_bound(height: u64) -> String {
    height
        .checked_sub(POW_BACKLOG)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

fn check_difficulty(s: &ShareRecord) -> Result<(), StorageError> {
    if s.difficulty > i64::MAX as u64 {
        return Err(StorageError::Difficulty(s.difficulty));
    }
    Ok(())
}

impl RedisStore {
    /// Connects (failing within about a second if Redis is not there). `url` is
    /// `redis://[:password@]host:port[/db]` or open-ethereum-pool's `host:port`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        hashrate_expiration: Duration,
    ) -> Result<Self, StorageError> {
        Self::connect_with(&RedisOptions::url(url), prefix, hashrate_expiration).await
    }

    /// Connects as `opts` say: directly or through Redis Sentinel, with or without waiting
    /// for replicas after each write.
    pub async fn connect_with(
        opts: &RedisOptions,
        prefix: &str,
        hashrate_expiration: Duration,
    ) -> Result<Self, StorageError> {
        let store = Self {
            link: Link::connect(opts).await?,
            prefix: prefix.to_string(),
            hashrate_expiration_s: hashrate_expiration.as_secs().max(1),
            touched: Arc::default(),
            scripts: Arc::new(Scripts {
                share: Lua::new(include_str!("share.lua")),
                block: Lua::new(include_str!("block.lua")),
            }),
        };
        // Loaded now, so the first batches in flight are not refused and retried (see Eval).
        let mut con = store.link.con();
        for lua in [&store.scripts.share, &store.scripts.block] {
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(&lua.body)
                .query_async(&mut con)
                .await
                .map_err(|e| store.link.failed(e))?;
        }
        Ok(store)
    }

    /// The Redis in use, `host:port` (with sentinels: the current master).
    pub fn address(&self) -> String {
        self.link.addr()
    }

    /// With sentinels, the master lookups in a row that no sentinel answered (0 while they
    /// answer); `None` without sentinels.
    pub fn sentinel_failures(&self) -> Option<u64> {
        self.link.sentinel_failures()
    }

    /// The key prefix (`eth` by default).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `prefix:part:part…`, open-ethereum-pool's `formatKey`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// `prefix:shares:round<height>:<nonce>`, open-ethereum-pool's `formatRound`.
    pub fn round_key(&self, height: u64, nonce: &str) -> String {
        self.key(&["shares", &format!("round{height}"), nonce])
    }

    /// Stores one share unless it is a duplicate: checkPoWExist + writeShare + `stats`
    /// roundShares, atomically.
    pub async fn write_share(&self, s: &ShareRecord) -> Result<WriteOutcome, StorageError> {
        let mut out = self.write_shares(std::slice::from_ref(s)).await?;
        out.pop()
            .ok_or_else(|| StorageError::Reply("no outcome for the share".into()))
    }

    /// Stores many shares in one script call (one round trip), in order; a share duplicating
    /// an earlier one (stored before or earlier in the batch) is `Duplicate`.
    pub async fn write_shares(
        &self,
        batch: &[ShareRecord],
    ) -> Result<Vec<WriteOutcome>, StorageError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        for s in batch {
            check_difficulty(s)?;
        }
        let ms = now_ms();
        let mut inv = Eval::new(&self.scripts.share);
        inv.key(self.key(&["pow"]))
            .key(self.key(&["shares", "roundCurrent"]))
            .key(self.key(&["hashrate"]))
            .key(self.key(&["stats"]));
        inv.arg(ms).arg(ms / 1000).arg(self.hashrate_expiration_s);
        // Distinct logins in order of first appearance; shares refer to them by 1-based index,
        // so each login's keys are sent (and written) once per batch.
        let mut logins: Vec<&str> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let refs: Vec<usize> = batch
            .iter()
            .map(|s| {
                *index.entry(s.login.as_str()).or_insert_with(|| {
                    logins.push(&s.login);
                    logins.len()
                })
            })
            .collect();
        inv.arg(logins.len());
        let sec = ms / 1000;
        let touch: Vec<bool> = {
            let touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            logins
                .iter()
                .map(|l| touched.get(*l) != Some(&sec))
                .collect()
        };
        for (login, t) in logins.iter().zip(&touch) {
            inv.key(self.key(&["hashrate", login]))
                .key(self.key(&["miners", login]));
            inv.arg(*login).arg(u8::from(*t));
        }
        // One clock per batch, so a height's score is the same for all its shares: print it
        // once per run of equal heights, not once per share.
        let mut score: Option<(u64, String)> = None;
        for (s, &j) in batch.iter().zip(&refs) {
            let d = s.difficulty;
            let pow = match &score {
                Some((h, text)) if *h == s.height => text,
                _ => &score.insert((s.height, pow_score(s.height, ms))).1,
            };
            inv.arg(j)
                .arg(s.pow_member())
                .arg(pow)
                .arg(sweep_bound(s.height))
                .arg(d)
                .arg(format!("{d}:{}:{}:", s.login, s.worker))
                .arg(format!("{d}:{}:", s.worker));
        }
        let mut con = self.link.con();
        let flags: Vec<i64> = inv.run(&mut con).await.map_err(|e| self.link.failed(e))?;
        self.link.replicated().await?;
        if flags.len() != batch.len() {
            return Err(StorageError::Reply(format!(
                "{} outcomes for {} shares",
                flags.len(),
                batch.len()
            )));
        }
        self.note_touched(sec, &logins, &touch, &refs, &flags);
        Ok(flags
            .into_iter()
            .map(|f| {
                if f == 1 {
                    WriteOutcome::Stored
                } else {
                    WriteOutcome::Duplicate
                }
            })
            .collect())
    }

    /// Remembers the logins whose TTL and lastShare this batch refreshed: those asked to that
    /// had a share stored (the script refreshes only for stored shares).
    fn note_touched(
        &self,
        sec: u64,
        logins: &[&str],
        touch: &[bool],
        refs: &[usize],
        flags: &[i64],
    ) {
        let mut stored = vec![false; logins.len()];
        for (&j, &f) in refs.iter().zip(flags) {
            if f == 1 {
                stored[j - 1] = true;
            }
        }
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        for ((login, &t), &s) in logins.iter().zip(touch).zip(&stored) {
            if t && s {
                touched.insert((*login).to_string(), sec);
            }
        }
        // Logins gone quiet are forgotten; their next share refreshes again.
        if touched.len() > TOUCHED_MAX {
            touched.retain(|_, s| *s + 60 >= sec);
        }
    }

    /// Stores a found block's share unless it is a duplicate, atomically: writeShare, `stats`
    /// lastBlockFound (and roundShares removed), `finders`, `miners:<login>` blocksFound, the
    /// current round renamed to `shares:round<height>:<nonce>` and the `blocks:candidates` entry
    /// `nonce:powHash:mixDigest:ts:roundDiff:totalShares` scored by height.
    pub async fn write_block(
        &self,
        s: &ShareRecord,
        b: &BlockRecord,
    ) -> Result<WriteOutcome, StorageError> {
        check_difficulty(s)?;
        let ms = now_ms();
        let mut inv = Eval::new(&self.scripts.block);
        inv.key(self.key(&["pow"]))
            .key(self.key(&["shares", "roundCurrent"]))
            .key(self.key(&["hashrate"]))
            .key(self.key(&["stats"]))
            .key(self.key(&["hashrate", &s.login]))
            .key(self.key(&["miners", &s.login]))
            .key(self.key(&["finders"]))
            .key(self.round_key(b.height, &s.nonce))
            .key(self.key(&["blocks", "candidates"]));
        inv.arg(ms)
            .arg(ms / 1000)
            .arg(self.hashrate_expiration_s)
            .arg(&s.login)
            .arg(&s.worker)
            .arg(s.pow_member())
            .arg(s.difficulty)
            .arg(b.height)
            .arg(sweep_bound(b.height))
            .arg(b.round_difficulty.to_string());
        let mut con = self.link.con();
        let (flag, _total): (i64, String) =
            inv.run(&mut con).await.map_err(|e| self.link.failed(e))?;
        self.link.replicated().await?;
        Ok(if flag == 1 {
            WriteOutcome::Stored
        } else {
            WriteOutcome::Duplicate
        })
    }

    /// One plain command on the current connection; a failure goes through the link (which
    /// may start a master lookup).
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StorageError> {
        let mut con = self.link.con();
        cmd.query_async(&mut con)
            .await
            .map_err(|e| self.link.failed(e))
    }

    /// Whether the share's `nonce:powHash:mixDigest` is already in `pow` (read-only; checked
    /// before a block goes to the node).
    pub async fn pow_exists(&self, s: &ShareRecord) -> Result<bool, StorageError> {
        let score: Option<String> = self
            .query(
                redis::cmd("ZSCORE")
                    .arg(self.key(&["pow"]))
                    .arg(s.pow_member()),
            )
            .await?;
        Ok(score.is_some())
    }

    /// The `nodes` hash fields `<name>:name|height|difficulty|lastBeat` (one HSET, atomic).
    pub async fn write_node_state(
        &self,
        name: &str,
        height: u64,
        difficulty: &U256,
    ) -> Result<(), StorageError> {
        let now = now_ms() / 1000;
        self.query(
            redis::cmd("HSET")
                .arg(self.key(&["nodes"]))
                .arg(format!("{name}:name"))
                .arg(name)
                .arg(format!("{name}:height"))
                .arg(height)
                .arg(format!("{name}:difficulty"))
                .arg(difficulty.to_string())
                .arg(format!("{name}:lastBeat"))
                .arg(now),
        )
        .await
    }

    /// `SMEMBERS prefix:blacklist` (banned logins).
    pub async fn blacklist(&self) -> Result<Vec<String>, StorageError> {
        self.members("blacklist").await
    }

    /// `SMEMBERS prefix:whitelist` (IPs exempt from policy).
    pub async fn whitelist(&self) -> Result<Vec<String>, StorageError> {
        self.members("whitelist").await
    }

    async fn members(&self, set: &str) -> Result<Vec<String>, StorageError> {
        self.query(redis::cmd("SMEMBERS").arg(self.key(&[set])))
            .await
    }

    /// The text of `INFO <section>`.
    pub async fn info(&self, section: &str) -> Result<String, StorageError> {
        self.query(redis::cmd("INFO").arg(section)).await
    }

    /// Unlinks every key under this store's prefix (`SCAN` + `UNLINK`): for the bench's own
    /// namespace, never a pool's.
    pub(crate) async fn delete_prefixed(&self) -> Result<u64, StorageError> {
        let pattern = format!("{}:*", self.prefix);
        let mut cursor = 0u64;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            if !keys.is_empty() {
                deleted += self.query::<u64>(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<(), StorageError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::link::normalize_url;
    use super::*;

    #[test]
    fn url_forms_and_redaction() {
        assert_eq!(normalize_url("127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(normalize_url("redis://h:1/2"), "redis://h:1/2");
        assert_eq!(redacted("redis://:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redacted("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn pow_scores_keep_the_height_and_grow_with_time() {
        let ms = 1_764_000_000_000u64;
        let a: f64 = pow_score(21_000_000, ms).parse().expect("number");
        let b: f64 = pow_score(21_000_000, ms + 1).parse().expect("number");
        assert_eq!(a.floor(), 21_000_000.0);
        assert!(b > a, "{b} > {a}");
        // The last millisecond before the wrap stays below the next height.
        let last: f64 = pow_score(21_000_000, (1 << 26) - 1)
            .parse()
            .expect("number");
        assert!(last < 21_000_001.0 && last > 21_000_000.9);
        assert_eq!(pow_score(7, 0), "7");
        // Beyond double precision for the fraction: the plain height.
        let h = (1u64 << 52) - 1;
        assert_eq!(pow_score(h, (1 << 26) - 1), h.to_string());
    }

    #[test]
    fn scripts_are_sent_without_comments_and_indentation() {
        let lua = "-- header\n  local x = 1 -- kept\n\n    -- note\n  return x\n";
        assert_eq!(compact(lua), "local x = 1 -- kept\nreturn x");
        let share = compact(include_str!("share.lua"));
        assert!(share.len() < include_str!("share.lua").len() * 2 / 3);
        assert!(share.lines().all(|l| !l.starts_with("--") && l.trim() == l));
    }

    #[test]
    fn sweep_bound_saturates_below_backlog() {
        assert_eq!(sweep_bound(7), "");
        assert_eq!(sweep_bound(8), "0");
        assert_eq!(sweep_bound(100), "92");
    }
}

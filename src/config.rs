//! The proxy's configuration: a TOML file whose keys keep open-ethereum-pool's names, its
//! defaults, validation with one-line errors naming the key, and the `dagproxy proxy` flags that
//! override it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::ethash::ChainSpec;
use crate::verify::{VerifierConfig, VerifierKind};

/// Errors loading or validating the configuration; each displays as one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or a value has the wrong type.
    #[error("config {path}: {key} (line {line}): {message}")]
    Parse {
        /// The file.
        path: String,
        /// The key at fault, as `section.key`, or `?` where the parser could not tell.
        key: String,
        /// 1-based line.
        line: usize,
        /// The parser's message (first line).
        message: String,
    },
    /// A value parsed but is unusable.
    #[error("config: {key}: {message}")]
    Invalid {
        /// The key at fault, as `section.key`.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// A duration written as Go does (`120ms`, `3s`, `60m`, `3h`, `1m30s`), as in open-ethereum-pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad duration '{s}' (examples: 120ms, 3s, 60m, 3h)");
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total += Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
        }
        Ok(Dur(total))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// This proxy's name in the `nodes` hash (open-ethereum-pool `name`).
    pub name: String,
    /// Chain preset: ethereum, classic, mordor or test. Templates whose seed hash does not
    /// match the preset at their height are refused.
    pub chain: String,
    /// How often every upstream is health-checked; the first healthy one in order is used.
    pub upstream_check_interval: Dur,
    /// Upstream nodes, in order of preference.
    pub upstream: Vec<UpstreamConfig>,
    /// Front ends and share accounting (open-ethereum-pool's `proxy` section).
    pub proxy: ProxySection,
    /// Redis, shared with the pool's API, unlocker and payouts.
    pub redis: RedisSection,
    /// Share verification backend.
    pub verifier: VerifierSection,
    /// A chain that is not a preset; when present it replaces `chain`.
    pub custom_chain: Option<CustomChain>,
    /// `/metrics`, `/health`, `/stats` listener.
    pub metrics: crate::observe::MetricsSection,
    /// EthereumStratum/1.0.0 (NiceHash) front end on its own port.
    #[serde(rename = "stratum_nicehash")]
    pub stratum_nicehash: NiceHashSection,
}

/// `[stratum_nicehash]`: the EthereumStratum/1.0.0 port (same limits as `proxy.stratum`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct NiceHashSection {
    /// Listen address; empty (the default) or "off": not served.
    pub listen: String,
}

/// Parameters of a chain that is not a preset (`[customChain]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CustomChain {
    /// Name (names the DAG files; `[A-Za-z0-9_-]`).
    pub name: String,
    /// Epoch length in blocks (30000 on ethash chains).
    #[serde(default = "default_epoch_length")]
    pub epoch_length: u64,
    /// Block where ECIP-1099-style longer epochs start, if any.
    pub ecip1099_block: Option<u64>,
    /// Epoch length from `ecip1099Block` on.
    #[serde(default = "default_ecip1099_length")]
    pub ecip1099_epoch_length: u64,
}

fn default_epoch_length() -> u64 {
    crate::ethash::chain::ETHASH_EPOCH_LENGTH
}

fn default_ecip1099_length() -> u64 {
    crate::ethash::chain::ECIP1099_EPOCH_LENGTH
}

impl CustomChain {
    /// The chain spec, validated.
    pub fn spec(&self) -> Result<ChainSpec, crate::ethash::ChainError> {
        let spec = ChainSpec::custom(
            &self.name,
            self.epoch_length,
            self.ecip1099_block.map(|b| (b, self.ecip1099_epoch_length)),
            crate::ethash::SizeRule::Ethash,
        );
        spec.validate()?;
        Ok(spec)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "main".into(),
            chain: "ethereum".into(),
            upstream_check_interval: Dur(Duration::from_secs(5)),
            upstream: vec![UpstreamConfig::default()],
            proxy: ProxySection::default(),
            redis: RedisSection::default(),
            verifier: VerifierSection::default(),
            custom_chain: None,
            metrics: Default::default(),
            stratum_nicehash: NiceHashSection::default(),
        }
    }
}

/// One upstream node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UpstreamConfig {
    /// Name for logs.
    pub name: String,
    /// JSON-RPC URL (http only).
    pub url: String,
    /// Timeout of each request.
    pub timeout: Dur,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            name: "main".into(),
            url: "http://127.0.0.1:8545".into(),
            timeout: Dur(Duration::from_secs(10)),
        }
    }
}

/// Front ends and share accounting.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ProxySection {
    /// Serve HTTP getwork.
    pub enabled: bool,
    /// HTTP getwork listen address.
    pub listen: String,
    /// Largest total size of request headers, bytes (431 beyond).
    pub limit_headers_size: usize,
    /// Largest request body, bytes (417 "Request too large" beyond).
    pub limit_body_size: usize,
    /// Take the client IP from X-Forwarded-For (only behind a trusted reverse proxy).
    pub behind_reverse_proxy: bool,
    /// How often the upstream is polled for a new block template.
    pub block_refresh_interval: Dur,
    /// How often this node's height/difficulty is written to Redis (`nodes`).
    pub state_update_interval: Dur,
    /// Share difficulty in hashes; each valid share counts this much.
    pub difficulty: u64,
    /// Lifetime of the per-miner `hashrate:<login>` sets.
    pub hashrate_expiration: Dur,
    /// Answer "Work not ready" once `maxFails` consecutive upstream/Redis failures happened.
    pub health_check: bool,
    /// Consecutive failures before the proxy counts as sick.
    pub max_fails: u64,
    /// Stratum front end.
    pub stratum: StratumSection,
    /// Banning, connection limits and black/whitelists (open-ethereum-pool `policy`).
    pub policy: PolicySection,
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:8888".into(),
            limit_headers_size: 1024,
            limit_body_size: 256,
            behind_reverse_proxy: false,
            block_refresh_interval: Dur(Duration::from_millis(120)),
            state_update_interval: Dur(Duration::from_secs(3)),
            difficulty: 2_000_000_000,
            hashrate_expiration: Dur(Duration::from_secs(3 * 3600)),
            health_check: true,
            max_fails: 100,
            stratum: StratumSection::default(),
            policy: PolicySection::default(),
        }
    }
}

/// Stratum (EthProxy dialect) front end.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct StratumSection {
    /// Serve Stratum.
    pub enabled: bool,
    /// Listen address.
    pub listen: String,
    /// Idle time after which a silent connection is closed.
    pub timeout: Dur,
    /// Connections served at once; more are closed on accept.
    pub max_conn: usize,
    /// Longest request line in bytes; longer lines get an error reply and are skipped.
    pub max_line_length: usize,
    /// Per-session variable difficulty (off by default).
    pub vardiff: VardiffSection,
}

impl Default for StratumSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:8008".into(),
            timeout: Dur(Duration::from_secs(120)),
            max_conn: 8192,
            max_line_length: 1024,
            vardiff: VardiffSection::default(),
        }
    }
}

/// `proxy.stratum.vardiff`: per-session difficulty, starting at `proxy.difficulty`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct VardiffSection {
    /// Retarget each session's difficulty.
    pub enabled: bool,
    /// Wanted time between one session's shares.
    pub target_time: Dur,
    /// Shortest time between two retargets.
    pub retarget_time: Dur,
    /// Lowest difficulty.
    pub min_diff: u64,
    /// Highest difficulty.
    pub max_diff: u64,
}

impl Default for VardiffSection {
    fn default() -> Self {
        Self {
            enabled: false,
            target_time: Dur(Duration::from_secs(10)),
            retarget_time: Dur(Duration::from_secs(60)),
            min_diff: 100_000_000,
            max_diff: 1_000_000_000_000_000,
        }
    }
}

/// The policy server (open-ethereum-pool's `policy` section).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct PolicySection {
    /// Concurrent `ipset` commands at most.
    pub workers: usize,
    /// Counters of an IP quiet this long are forgotten.
    pub reset_interval: Dur,
    /// How often the Redis black/whitelists are reloaded.
    pub refresh_interval: Dur,
    /// Banning.
    pub banning: BanningSection,
    /// Connection limits.
    pub limits: LimitsSection,
}

impl Default for PolicySection {
    fn default() -> Self {
        Self {
            workers: 8,
            reset_interval: Dur(Duration::from_secs(3600)),
            refresh_interval: Dur(Duration::from_secs(60)),
            banning: BanningSection::default(),
            limits: LimitsSection::default(),
        }
    }
}

/// `policy.banning`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct BanningSection {
    /// Ban at all.
    pub enabled: bool,
    /// ipset set name to add banned IPs to (`ipset add NAME IP timeout T -!`); empty: none.
    pub ipset: String,
    /// Ban length in seconds.
    pub timeout: u64,
    /// Ban when invalid/valid shares reaches this percentage.
    pub invalid_percent: f64,
    /// Shares per ratio check.
    pub check_threshold: u32,
    /// Malformed requests before a ban.
    pub malformed_limit: u32,
}

impl Default for BanningSection {
    fn default() -> Self {
        Self {
            enabled: false,
            ipset: String::new(),
            timeout: 1800,
            invalid_percent: 30.0,
            check_threshold: 30,
            malformed_limit: 5,
        }
    }
}

/// `policy.limits`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct LimitsSection {
    /// Limit connections at all.
    pub enabled: bool,
    /// Connections per IP per reset interval.
    pub limit: i64,
    /// No limit for this long after start.
    pub grace: Dur,
    /// Connections earned per valid share.
    pub limit_jump: i64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            enabled: false,
            limit: 30,
            grace: Dur(Duration::from_secs(300)),
            limit_jump: 10,
        }
    }
}

/// Redis connection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RedisSection {
    /// `redis://[:password@]host:port/db`.
    pub url: String,
    /// Key prefix (open-ethereum-pool's `coin`).
    pub prefix: String,
    /// Redis Sentinel addresses (`host:port`): the proxy writes to the master they name and
    /// follows a failover; `url` then gives only the password and db.
    pub sentinels: Vec<String>,
    /// The master's name in Sentinel.
    pub master_name: String,
    /// The sentinels' own password (`requirepass` on the sentinels), if any.
    pub sentinel_password: String,
    /// Replicas that must have a share before the miner is told it is stored (`WAIT`); 0: none.
    pub wait_replicas: u32,
    /// How long to wait for them; a share not replicated in time is answered as not stored.
    pub wait_timeout: Dur,
    /// With sentinels, how often the master is looked up while writes succeed; 0s: only
    /// after a failed write.
    pub sentinel_recheck: Dur,
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "eth".into(),
            sentinels: Vec::new(),
            master_name: "mymaster".into(),
            sentinel_password: String::new(),
            wait_replicas: 0,
            wait_timeout: Dur(Duration::from_millis(100)),
            sentinel_recheck: Dur(Duration::from_secs(5)),
        }
    }
}

impl RedisSection {
    /// The storage layer's connection options.
    pub fn options(&self) -> crate::storage::RedisOptions {
        crate::storage::RedisOptions {
            url: self.url.clone(),
            sentinels: self.sentinels.clone(),
            master_name: self.master_name.clone(),
            sentinel_password: (!self.sentinel_password.is_empty())
                .then(|| self.sentinel_password.clone()),
            wait_replicas: self.wait_replicas,
            wait_timeout: self.wait_timeout.0,
            sentinel_recheck: Some(self.sentinel_recheck.0).filter(|d| !d.is_zero()),
        }
    }
}

/// Share verification.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct VerifierSection {
    /// auto, opencl, cpu or cpu-light.
    pub kind: VerifierKind,
    /// OpenCL device index (default: the first GPU).
    pub opencl_device: Option<usize>,
    /// DAG directory (default: keep DAGs in memory only).
    pub data_dir: Option<PathBuf>,
    /// Shares per verification batch at most.
    pub max_batch: usize,
    /// Longest wait to fill a batch.
    pub max_wait: Dur,
    /// Shares waiting at most; beyond it miners get a "busy" error.
    pub queue: usize,
}

impl Default for VerifierSection {
    fn default() -> Self {
        let d = VerifierConfig::default();
        Self {
            kind: d.kind,
            opencl_device: d.opencl_device,
            data_dir: d.data_dir,
            max_batch: d.max_batch,
            max_wait: Dur(d.max_wait),
            queue: d.queue,
        }
    }
}

impl VerifierSection {
    fn apply_to(&self, c: &mut VerifierConfig) {
        c.kind = self.kind;
        c.max_batch = self.max_batch;
        c.max_wait = self.max_wait.0;
        c.queue = self.queue;
        c.opencl_device = self.opencl_device;
        c.data_dir.clone_from(&self.data_dir);
    }
}

/// `dagproxy proxy` flags; each one overrides the file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ProxyArgs {
    /// TOML configuration (see deploy/dagproxy.example.toml); defaults without it.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Chain preset: ethereum, classic, mordor, test.
    #[arg(long)]
    pub chain: Option<String>,
    /// Verifier backend.
    #[arg(long, value_enum)]
    pub verifier: Option<VerifierKind>,
    /// OpenCL device index.
    #[arg(long)]
    pub opencl_device: Option<usize>,
    /// Stratum listen address ("off" disables).
    #[arg(long)]
    pub stratum: Option<String>,
    /// HTTP getwork listen address ("off" disables).
    #[arg(long)]
    pub http: Option<String>,
    /// EthereumStratum/1.0.0 (NiceHash) listen address ("off" disables).
    #[arg(long)]
    pub stratum_nicehash: Option<String>,
    /// `/metrics`, `/health`, `/stats` listen address ("off" disables).
    #[arg(long)]
    pub metrics: Option<String>,
    /// Redis URL.
    #[arg(long)]
    pub redis: Option<String>,
    /// Redis key prefix.
    #[arg(long)]
    pub redis_prefix: Option<String>,
    /// Upstream node URL; repeat for backups (replaces the file's list).
    #[arg(long)]
    pub upstream: Vec<String>,
    /// Share difficulty.
    #[arg(long)]
    pub difficulty: Option<u64>,
    /// Node name in Redis.
    #[arg(long)]
    pub name: Option<String>,
}

/// A configuration checked for use: parsed addresses and the chain.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The configuration as given.
    pub config: Config,
    /// The chain preset.
    pub chain: ChainSpec,
    /// Stratum listen address, if enabled.
    pub stratum_addr: Option<SocketAddr>,
    /// HTTP listen address, if enabled.
    pub http_addr: Option<SocketAddr>,
    /// EthereumStratum/1.0.0 listen address, if enabled.
    pub nicehash_addr: Option<SocketAddr>,
}

impl Config {
    /// Parses TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let start = e.span().map(|s| s.start).unwrap_or(0);
            let (key, line) = key_at(text, start);
            ConfigError::Parse {
                path: path.to_string(),
                key,
                line,
                message: e.message().lines().next().unwrap_or("").to_string(),
            }
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Loads the file given in the flags (or the defaults) and applies the other flags.
    pub fn from_args(args: &ProxyArgs) -> Result<Checked, ConfigError> {
        let mut c = match &args.config {
            Some(p) => Self::load(p)?,
            None => Self::default(),
        };
        c.apply(args);
        c.check()
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, a: &ProxyArgs) {
        if let Some(v) = &a.chain {
            self.chain.clone_from(v);
        }
        if let Some(v) = a.verifier {
            self.verifier.kind = v;
        }
        if a.opencl_device.is_some() {
            self.verifier.opencl_device = a.opencl_device;
        }
        if let Some(v) = &a.stratum {
            self.proxy.stratum.enabled = v != "off";
            self.proxy.stratum.listen.clone_from(v);
        }
        if let Some(v) = &a.http {
            self.proxy.enabled = v != "off";
            self.proxy.listen.clone_from(v);
        }
        if let Some(v) = &a.stratum_nicehash {
            self.stratum_nicehash.listen.clone_from(v);
        }
        if let Some(v) = &a.metrics {
            self.metrics.enabled = v != "off";
            self.metrics.listen.clone_from(v);
        }
        if let Some(v) = &a.redis {
            self.redis.url.clone_from(v);
        }
        if let Some(v) = &a.redis_prefix {
            self.redis.prefix.clone_from(v);
        }
        if !a.upstream.is_empty() {
            self.upstream = a
                .upstream
                .iter()
                .enumerate()
                .map(|(i, url)| UpstreamConfig {
                    name: if i == 0 {
                        "main".into()
                    } else {
                        format!("backup{i}")
                    },
                    url: url.clone(),
                    ..UpstreamConfig::default()
                })
                .collect();
        }
        if let Some(v) = a.difficulty {
            self.proxy.difficulty = v;
        }
        if let Some(v) = &a.name {
            self.name.clone_from(v);
        }
    }

    /// Validates values that parse but cannot be used.
    pub fn check(self) -> Result<Checked, ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid { key, message };
        let chain: ChainSpec = match &self.custom_chain {
            Some(custom) => custom
                .spec()
                .map_err(|e| invalid("customChain", e.to_string()))?,
            None => self
                .chain
                .parse()
                .map_err(|e: crate::ethash::ChainError| invalid("chain", e.to_string()))?,
        };
        if self.name.is_empty() || self.name.contains(':') {
            return Err(invalid("name", "must be non-empty without ':'".into()));
        }
        if self.upstream.is_empty() {
            return Err(invalid(
                "upstream",
                "at least one upstream is needed".into(),
            ));
        }
        for u in &self.upstream {
            if !(u.url.starts_with("http://") || u.url.starts_with("https://"))
                || reqwest::Url::parse(&u.url).is_err()
            {
                return Err(invalid(
                    "upstream.url",
                    format!("not an http URL: {}", u.url),
                ));
            }
            if u.timeout.0.is_zero() {
                return Err(invalid("upstream.timeout", "must be positive".into()));
            }
        }
        let positive = |key, d: Dur| {
            if d.0.is_zero() {
                Err(invalid(key, "must be positive".into()))
            } else {
                Ok(())
            }
        };
        positive("upstreamCheckInterval", self.upstream_check_interval)?;
        positive(
            "proxy.blockRefreshInterval",
            self.proxy.block_refresh_interval,
        )?;
        positive(
            "proxy.stateUpdateInterval",
            self.proxy.state_update_interval,
        )?;
        positive("proxy.hashrateExpiration", self.proxy.hashrate_expiration)?;
        positive("proxy.stratum.timeout", self.proxy.stratum.timeout)?;
        let vd = &self.proxy.stratum.vardiff;
        if vd.enabled {
            positive("proxy.stratum.vardiff.targetTime", vd.target_time)?;
            positive("proxy.stratum.vardiff.retargetTime", vd.retarget_time)?;
            if vd.min_diff == 0 || vd.min_diff > vd.max_diff {
                return Err(invalid(
                    "proxy.stratum.vardiff.minDiff",
                    "must be at least 1 and at most maxDiff".into(),
                ));
            }
        }
        let policy = &self.proxy.policy;
        positive("proxy.policy.resetInterval", policy.reset_interval)?;
        positive("proxy.policy.refreshInterval", policy.refresh_interval)?;
        if policy.workers == 0 {
            return Err(invalid("proxy.policy.workers", "must be at least 1".into()));
        }
        if policy.banning.timeout == 0 {
            return Err(invalid(
                "proxy.policy.banning.timeout",
                "must be at least 1 second".into(),
            ));
        }
        if !(policy.banning.invalid_percent > 0.0 && policy.banning.invalid_percent.is_finite()) {
            return Err(invalid(
                "proxy.policy.banning.invalidPercent",
                "must be a positive number".into(),
            ));
        }
        if policy.banning.check_threshold == 0 || policy.banning.malformed_limit == 0 {
            return Err(invalid(
                "proxy.policy.banning.checkThreshold",
                "checkThreshold and malformedLimit must be at least 1".into(),
            ));
        }
        if policy.limits.limit < 0 || policy.limits.limit_jump < 0 {
            return Err(invalid(
                "proxy.policy.limits.limit",
                "limit and limitJump must not be negative".into(),
            ));
        }
        if self.proxy.difficulty == 0 {
            return Err(invalid("proxy.difficulty", "must be at least 1".into()));
        }
        if self.proxy.max_fails == 0 {
            return Err(invalid("proxy.maxFails", "must be at least 1".into()));
        }
        if self.proxy.stratum.max_conn == 0 {
            return Err(invalid(
                "proxy.stratum.maxConn",
                "must be at least 1".into(),
            ));
        }
        if self.proxy.stratum.max_line_length < 64 {
            return Err(invalid(
                "proxy.stratum.maxLineLength",
                "must be at least 64".into(),
            ));
        }
        if self.proxy.limit_body_size < 64 {
            return Err(invalid("proxy.limitBodySize", "must be at least 64".into()));
        }
        if redis_url_ok(&self.redis.url).is_err() {
            return Err(invalid(
                "redis.url",
                format!("not a redis:// URL: {}", self.redis.url),
            ));
        }
        if self.redis.prefix.is_empty() {
            return Err(invalid("redis.prefix", "must be non-empty".into()));
        }
        if let Some(bad) = self
            .redis
            .sentinels
            .iter()
            .find(|s| redis_url_ok(s).is_err())
        {
            return Err(invalid(
                "redis.sentinels",
                format!("not host:port or a redis:// URL: {bad}"),
            ));
        }
        if !self.redis.sentinels.is_empty() && self.redis.master_name.is_empty() {
            return Err(invalid("redis.masterName", "must be non-empty".into()));
        }
        if self.redis.wait_replicas > 0 {
            positive("redis.waitTimeout", self.redis.wait_timeout)?;
            // Each Redis command times out after 2 s: a longer WAIT would look like a dead
            // master.
            if self.redis.wait_timeout.0 > Duration::from_millis(1500) {
                return Err(invalid("redis.waitTimeout", "must be at most 1.5s".into()));
            }
        }
        if self.verifier.max_batch == 0 || self.verifier.queue == 0 {
            return Err(invalid(
                "verifier.maxBatch",
                "maxBatch and queue must be at least 1".into(),
            ));
        }
        let addr = |key, enabled: bool, s: &str| -> Result<Option<SocketAddr>, ConfigError> {
            if !enabled {
                return Ok(None);
            }
            s.parse()
                .map(Some)
                .map_err(|_| invalid(key, format!("not an IP:port address: {s}")))
        };
        let stratum_addr = addr(
            "proxy.stratum.listen",
            self.proxy.stratum.enabled,
            &self.proxy.stratum.listen,
        )?;
        let http_addr = addr("proxy.listen", self.proxy.enabled, &self.proxy.listen)?;
        let nh = &self.stratum_nicehash.listen;
        let nicehash_addr = addr(
            "stratum_nicehash.listen",
            !(nh.is_empty() || nh == "off"),
            nh,
        )?;
        // Checked here too so a bad value stops the proxy like any other bad key (status 2).
        self.metrics
            .addr()
            .map_err(|e| invalid("metrics.listen", e.to_string()))?;
        Ok(Checked {
            config: self,
            chain,
            stratum_addr,
            http_addr,
            nicehash_addr,
        })
    }

    /// The verifier service's settings (the service's own defaults for anything the file does
    /// not set).
    pub fn verifier_config(&self) -> VerifierConfig {
        let mut c = VerifierConfig::default();
        self.verifier.apply_to(&mut c);
        c
    }
}

/// `redis://…`, `rediss://…`, `unix://…`, or open-ethereum-pool's bare `host:port`.
fn redis_url_ok(url: &str) -> Result<(), ()> {
    if !url.contains("://") {
        return if url
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            Ok(())
        } else {
            Err(())
        };
    }
    let u = reqwest::Url::parse(url).map_err(|_| ())?;
    match u.scheme() {
        "redis" | "rediss" | "unix" | "redis+unix" => Ok(()),
        _ => Err(()),
    }
}

/// The dotted key at byte `offset` of a TOML text, and its 1-based line: the last `[table]`
/// header above it joined with the key on that line.
fn key_at(text: &str, offset: usize) -> (String, usize) {
    let offset = offset.min(text.len());
    let line_no = text[..offset].matches('\n').count() + 1;
    let mut table = String::new();
    let mut key = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if i + 1 > line_no {
            break;
        }
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            key.clear();
        }
        if i + 1 == line_no {
            if let Some((k, _)) = t.split_once('=') {
                key = k.trim().trim_matches('"').to_string();
            }
        }
    }
    let full = match (table.is_empty(), key.is_empty()) {
        (_, true) if table.is_empty() => "?".to_string(),
        (_, true) => table,
        (true, false) => key,
        (false, false) => format!("{table}.{key}"),
    };
    (full, line_no)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!("120ms".parse(), Ok(Dur(Duration::from_millis(120))));
        assert_eq!("3h".parse(), Ok(Dur(Duration::from_secs(10_800))));
        assert_eq!("1m30s".parse(), Ok(Dur(Duration::from_secs(90))));
        assert!("3".parse::<Dur>().is_err());
        assert!("3d".parse::<Dur>().is_err());
        assert!("".parse::<Dur>().is_err());
    }

    #[test]
    fn defaults_are_open_ethereum_pools() {
        let c = Config::parse("", "x").expect("empty file is all defaults");
        assert_eq!(c.proxy.difficulty, 2_000_000_000);
        assert_eq!(c.proxy.block_refresh_interval.0, Duration::from_millis(120));
        assert_eq!(c.proxy.stratum.max_conn, 8192);
        assert_eq!(c.proxy.max_fails, 100);
        assert_eq!(c.redis.prefix, "eth");
        let checked = c.check().expect("defaults are valid");
        assert_eq!(checked.chain, ChainSpec::ethereum());
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[proxy]\nlisten = \"x\"\ndifficulty = \"big\"\n", "f.toml")
            .expect_err("type error");
        let s = e.to_string();
        assert!(
            s.contains("proxy.difficulty") && s.contains("line 3"),
            "{s}"
        );
        assert_eq!(s.lines().count(), 1);
        let e = Config::parse("[proxy]\nbogus = 1\n", "f.toml").expect_err("unknown key");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::parse("[proxy.stratum]\ntimeout = \"5x\"\n", "f.toml")
            .expect_err("bad duration");
        assert!(e.to_string().contains("proxy.stratum.timeout"), "{e}");
        let mut c = Config::default();
        c.proxy.difficulty = 0;
        let e = c.check().expect_err("zero difficulty");
        assert!(e.to_string().contains("proxy.difficulty"), "{e}");
    }

    #[test]
    fn redis_sentinel_and_replica_wait_keys() {
        let text = "[redis]\nurl = \"redis://:pw@ignored:1/2\"\nsentinels = [\"10.0.0.1:26379\", \
                    \"redis://10.0.0.2:26379\"]\nmasterName = \"pool\"\nsentinelPassword = \"s\"\n\
                    waitReplicas = 1\nwaitTimeout = \"250ms\"\nsentinelRecheck = \"2s\"\n";
        let c = Config::parse(text, "f.toml").expect("parses");
        let o = c.check().expect("valid").config.redis.options();
        assert_eq!(o.sentinels, ["10.0.0.1:26379", "redis://10.0.0.2:26379"]);
        assert_eq!(o.master_name, "pool");
        assert_eq!(o.sentinel_password.as_deref(), Some("s"));
        assert_eq!(
            (o.wait_replicas, o.wait_timeout),
            (1, Duration::from_millis(250))
        );
        assert_eq!(o.sentinel_recheck, Some(Duration::from_secs(2)));
        let d = Config::default().redis.options();
        assert_eq!(d.sentinel_recheck, Some(Duration::from_secs(5)));
        let off = Config::parse("[redis]\nsentinelRecheck = \"0s\"\n", "f.toml").expect("parses");
        assert_eq!(off.redis.options().sentinel_recheck, None);
        assert!(d.sentinels.is_empty() && d.sentinel_password.is_none() && d.wait_replicas == 0);
        // The check's error for a config that parses.
        let rejected = |text: &str| {
            Config::parse(text, "f.toml")
                .expect("parses")
                .check()
                .expect_err("rejected")
                .to_string()
        };
        let bad = rejected("[redis]\nsentinels = [\"nohostport\"]\n");
        assert!(bad.contains("redis.sentinels"), "{bad}");
        let bad = rejected("[redis]\nwaitReplicas = 1\nwaitTimeout = \"0s\"\n");
        assert!(bad.contains("redis.waitTimeout"), "{bad}");
        // Longer than a Redis command may take.
        let bad = rejected("[redis]\nwaitReplicas = 1\nwaitTimeout = \"2s\"\n");
        assert!(bad.contains("at most 1.5s"), "{bad}");
    }

    #[test]
    fn custom_chain_replaces_the_preset() {
        let text = "chain = \"ethereum\"\n[customChain]\nname = \"mychain\"\necip1099Block = 100\n";
        let c = Config::parse(text, "f.toml").expect("custom chain parses");
        let checked = c.check().expect("valid");
        assert_eq!(checked.chain.name, "mychain");
        assert_eq!(checked.chain.epoch(99), 0);
        assert_eq!(checked.chain.epoch(60_000), 1);
        let bad = "[customChain]\nname = \"x\"\nepochLength = 12345\n";
        let e = Config::parse(bad, "f.toml")
            .expect("parses")
            .check()
            .expect_err("epoch length must be a multiple of 30000");
        assert!(e.to_string().contains("customChain"), "{e}");
    }

    #[test]
    fn deploy_presets_are_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/presets");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(dir).expect("presets dir") {
            let path = entry.expect("entry").path();
            let c = Config::load(&path).expect("preset parses");
            let checked = c.check().expect("preset is valid");
            seen.push(checked.chain.name);
        }
        seen.sort();
        assert_eq!(seen, ["classic", "ethereum", "mordor", "test"]);
    }

    #[test]
    fn example_file_parses_with_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/dagproxy.example.toml");
        let c = Config::load(Path::new(path)).expect("example parses");
        let d = Config::default();
        assert_eq!(c.proxy.difficulty, d.proxy.difficulty);
        assert_eq!(c.proxy.stratum.listen, d.proxy.stratum.listen);
        assert_eq!(c.verifier.max_wait, d.verifier.max_wait);
        assert_eq!(c.upstream.len(), 1);
        c.check().expect("example is valid");
    }

    #[test]
    fn flags_override_the_file() {
        let mut c = Config::default();
        c.apply(&ProxyArgs {
            chain: Some("test".into()),
            upstream: vec!["http://a:1".into(), "http://b:2".into()],
            stratum: Some("off".into()),
            difficulty: Some(7),
            ..ProxyArgs::default()
        });
        let k = c.check().expect("valid");
        assert_eq!(k.chain, ChainSpec::test());
        assert_eq!(k.config.upstream.len(), 2);
        assert_eq!(k.config.upstream[1].name, "backup1");
        assert!(k.stratum_addr.is_none());
        assert_eq!(k.config.proxy.difficulty, 7);

        let mut c = Config::default();
        c.apply(&ProxyArgs {
            metrics: Some("127.0.0.1:19090".into()),
            ..ProxyArgs::default()
        });
        let addr = c.metrics.addr().expect("valid");
        assert_eq!(addr, Some("127.0.0.1:19090".parse().expect("addr")));
        c.apply(&ProxyArgs {
            metrics: Some("off".into()),
            ..ProxyArgs::default()
        });
        assert_eq!(c.metrics.addr().expect("valid"), None);
    }
}

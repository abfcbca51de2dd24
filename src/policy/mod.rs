//! The policy server (open-ethereum-pool's `policy`): per-IP counters behind a lock, the Redis
//! black/whitelists, bans (in the app and optionally through `ipset`), the periodic reset and
//! refresh task, and the share answer once the policy has had its say.

pub mod rules;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::PolicySection;
use crate::pipeline::Verdict;
use crate::storage::RedisStore;
use crate::stratum::message::{ErrorReply, HIGH_INVALID_RATE, INVALID_SHARE};
pub use rules::{Banning, Limits, Rules, ShareOutcome, Stats};

impl From<&PolicySection> for Rules {
    fn from(c: &PolicySection) -> Self {
        Self {
            reset_interval: c.reset_interval.0,
            banning: Banning {
                enabled: c.banning.enabled,
                timeout: Duration::from_secs(c.banning.timeout),
                invalid_percent: c.banning.invalid_percent,
                check_threshold: c.banning.check_threshold,
                malformed_limit: c.banning.malformed_limit,
            },
            limits: Limits {
                enabled: c.limits.enabled,
                limit: c.limits.limit,
                grace: c.limits.grace.0,
                limit_jump: c.limits.limit_jump,
            },
        }
    }
}

/// The policy state shared by the front ends. IPs are strings as the front ends see them.
#[derive(Debug)]
pub struct Policy {
    rules: Rules,
    start: Instant,
    stats: Mutex<HashMap<String, Stats>>,
    blacklist: RwLock<HashSet<String>>,
    whitelist: RwLock<HashSet<String>>,
    ipset: Option<String>,
    ipset_slots: Arc<Semaphore>,
    refresh_interval: Duration,
}

impl Policy {
    /// A policy with no counters and empty lists.
    pub fn new(c: &PolicySection) -> Self {
        Self {
            rules: Rules::from(c),
            start: Instant::now(),
            stats: Mutex::default(),
            blacklist: RwLock::default(),
            whitelist: RwLock::default(),
            ipset: Some(c.banning.ipset.clone()).filter(|s| !s.is_empty()),
            ipset_slots: Arc::new(Semaphore::new(c.workers.max(1))),
            refresh_interval: c.refresh_interval.0,
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Runs `f` on the IP's counters (created on first use) and returns its result.
    fn with<T>(&self, ip: &str, f: impl FnOnce(&Rules, Duration, &mut Stats) -> T) -> T {
        let now = self.now();
        let mut map = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stats = map
            .entry(ip.to_string())
            .or_insert_with(|| Stats::new(&self.rules, now));
        f(&self.rules, now, stats)
    }

    /// Whether the IP is banned now.
    pub fn is_banned(&self, ip: &str) -> bool {
        let now = self.now();
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(ip)
            .is_some_and(|s| s.is_banned(&self.rules, now))
    }

    /// Bans the IP (unless banning is off or it is whitelisted).
    pub fn ban(&self, ip: &str) {
        let whitelisted = self.is_whitelisted(ip);
        if self.with(ip, |r, now, s| s.ban(r, now, whitelisted)) {
            tracing::warn!(%ip, timeout = ?self.rules.banning.timeout, "banned");
            self.ipset_add(ip);
        }
    }

    /// A new connection from `ip`: false when it must be refused (banned, or over its
    /// connection budget).
    pub fn on_connect(&self, ip: &str) -> bool {
        if self.is_banned(ip) {
            return false;
        }
        let allowed = self.with(ip, |r, now, s| s.connect(r, now));
        if !allowed {
            tracing::debug!(%ip, "connection limit reached");
        }
        allowed
    }

    /// A login: false (and the IP banned, as open-ethereum-pool does) when it is blacklisted.
    pub fn on_login(&self, login: &str, ip: &str) -> bool {
        if self.is_blacklisted(login) {
            self.ban(ip);
            return false;
        }
        true
    }

    /// A malformed request from `ip`; the IP is banned at `malformedLimit`.
    pub fn on_malformed(&self, ip: &str) {
        if self.with(ip, |r, now, s| s.malformed(r, now)) {
            tracing::debug!(%ip, "malformed limit reached");
            self.ban(ip);
        }
    }

    /// A checked share; on a high invalid rate the IP is banned.
    pub fn on_share(&self, ip: &str, valid: bool) -> ShareOutcome {
        let outcome = self.with(ip, |r, now, s| s.share(r, now, valid));
        if outcome == ShareOutcome::HighInvalidRate {
            tracing::debug!(%ip, "high rate of invalid shares");
            self.ban(ip);
        }
        outcome
    }

    /// The answer to a share from `ip`, after the policy counted it: open-ethereum-pool's
    /// `handleSubmitRPC` (bad params count as malformed; a duplicate counts as invalid).
    pub fn share_reply(&self, ip: &str, verdict: Verdict) -> Result<Value, ErrorReply> {
        let valid = match verdict {
            Verdict::Malformed | Verdict::InvalidParams => {
                self.on_malformed(ip);
                return verdict.reply();
            }
            // Not the miner's fault: not counted.
            Verdict::Busy | Verdict::StorageDown => return verdict.reply(),
            v => v.is_valid(),
        };
        match (self.on_share(ip, valid), valid, verdict) {
            (ShareOutcome::Ok, _, v) | (_, _, v @ Verdict::Duplicate) => v.reply(),
            (ShareOutcome::HighInvalidRate, true, _) => Err(HIGH_INVALID_RATE),
            (ShareOutcome::HighInvalidRate, false, _) => Err(INVALID_SHARE),
        }
    }

    /// Whether a login is in the Redis blacklist (as last loaded).
    pub fn is_blacklisted(&self, login: &str) -> bool {
        self.blacklist
            .read()
            .map(|b| b.contains(&login.to_ascii_lowercase()))
            .unwrap_or(false)
    }

    /// Whether an IP is in the Redis whitelist (as last loaded).
    pub fn is_whitelisted(&self, ip: &str) -> bool {
        self.whitelist
            .read()
            .map(|w| w.contains(ip))
            .unwrap_or(false)
    }

    /// Replaces the blacklist (logins, compared lower-cased).
    pub fn set_blacklist(&self, logins: Vec<String>) {
        if let Ok(mut b) = self.blacklist.write() {
            *b = logins.into_iter().map(|l| l.to_ascii_lowercase()).collect();
        }
    }

    /// Replaces the whitelist (IPs).
    pub fn set_whitelist(&self, ips: Vec<String>) {
        if let Ok(mut w) = self.whitelist.write() {
            *w = ips.into_iter().collect();
        }
    }

    /// Reloads both lists from Redis; a failure keeps the previous lists.
    pub async fn refresh(&self, store: &RedisStore) {
        match store.blacklist().await {
            Ok(list) => self.set_blacklist(list),
            Err(e) => tracing::warn!("blacklist not reloaded: {e}"),
        }
        match store.whitelist().await {
            Ok(list) => self.set_whitelist(list),
            Err(e) => tracing::warn!("whitelist not reloaded: {e}"),
        }
    }

    /// Forgets quiet IPs whose bans have expired; returns how many were dropped.
    pub fn reset(&self) -> usize {
        let now = self.now();
        let mut map = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = map.len();
        map.retain(|_, s| !s.expired(&self.rules, now));
        before - map.len()
    }

    /// Reloads the lists every `refreshInterval` and resets counters every `resetInterval`
    /// until `stop`. Load the lists once with [`Policy::refresh`] before serving.
    pub async fn run(self: Arc<Self>, store: RedisStore, stop: CancellationToken) {
        let mut refresh = tokio::time::interval(self.refresh_interval);
        let mut reset = tokio::time::interval(self.rules.reset_interval);
        refresh.tick().await;
        reset.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = refresh.tick() => self.refresh(&store).await,
                _ = reset.tick() => {
                    let dropped = self.reset();
                    if dropped > 0 {
                        tracing::debug!(dropped, "policy counters reset");
                    }
                }
            }
        }
    }

    /// `ipset add NAME IP timeout T -!` in the background, without a shell.
    fn ipset_add(&self, ip: &str) {
        let Some(set) = self.ipset.clone() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let args = ipset_args(&set, ip, self.rules.banning.timeout);
        let slots = self.ipset_slots.clone();
        handle.spawn(async move {
            let Ok(_permit) = slots.acquire_owned().await else {
                return;
            };
            let shown = args.join(" ");
            let run = tokio::task::spawn_blocking(move || {
                std::process::Command::new("ipset")
                    .args(&args)
                    .stdin(std::process::Stdio::null())
                    .output()
            })
            .await;
            match run {
                Ok(Ok(out)) if out.status.success() => {}
                Ok(Ok(out)) => tracing::warn!(
                    "ipset {shown}: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Ok(Err(e)) => tracing::warn!("ipset {shown}: {e}"),
                Err(e) => tracing::warn!("ipset task: {e}"),
            }
        });
    }
}

/// The `ipset` arguments that ban `ip` in `set` for `timeout` (`-!`: no error if present).
pub fn ipset_args(set: &str, ip: &str, timeout: Duration) -> Vec<String> {
    vec![
        "add".into(),
        set.into(),
        ip.into(),
        "timeout".into(),
        timeout.as_secs().to_string(),
        "-!".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        let mut c = PolicySection::default();
        c.banning.enabled = true;
        c.banning.check_threshold = 4;
        Policy::new(&c)
    }

    #[test]
    fn share_replies_follow_open_ethereum_pool() {
        let p = policy();
        let ip = "10.0.0.1";
        assert_eq!(p.share_reply(ip, Verdict::Valid), Ok(json!(true)));
        assert_eq!(p.share_reply(ip, Verdict::MixMismatch), Ok(json!(false)));
        assert_eq!(p.share_reply(ip, Verdict::Stale), Ok(json!(false)));
        // 4th share: 3 invalid / 1 valid trips; an invalid share gets 23.
        assert_eq!(
            p.share_reply(ip, Verdict::LowDifficulty),
            Err(INVALID_SHARE)
        );
        assert!(p.is_banned(ip));
        let ip = "10.0.0.2";
        for _ in 0..3 {
            assert_eq!(p.share_reply(ip, Verdict::Stale), Ok(json!(false)));
        }
        assert_eq!(p.share_reply(ip, Verdict::Valid), Err(HIGH_INVALID_RATE));
        // Errors of our own count for nothing.
        let ip = "10.0.0.3";
        for _ in 0..10 {
            assert!(p.share_reply(ip, Verdict::StorageDown).is_err());
        }
        assert!(!p.is_banned(ip));
    }

    #[test]
    fn malformed_params_ban_and_whitelist_protects() {
        let p = policy();
        p.set_whitelist(vec!["10.0.0.9".into()]);
        for ip in ["10.0.0.8", "10.0.0.9"] {
            for _ in 0..5 {
                assert!(p.share_reply(ip, Verdict::Malformed).is_err());
            }
        }
        assert!(p.is_banned("10.0.0.8"));
        assert!(!p.is_banned("10.0.0.9"));
        assert!(!p.on_connect("10.0.0.8"));
        assert!(p.on_connect("10.0.0.9"));
    }

    #[test]
    fn blacklisted_login_is_refused_and_its_ip_banned() {
        let p = policy();
        p.set_blacklist(vec!["0xABC".into()]);
        assert!(!p.on_login("0xabc", "10.0.0.4"));
        assert!(p.is_banned("10.0.0.4"));
        assert!(p.on_login("0xdef", "10.0.0.5"));
    }

    #[test]
    fn config_keys_and_defaults_are_open_ethereum_pools() {
        use crate::config::Config;
        let d = Rules::from(&Config::default().proxy.policy);
        assert_eq!(d.reset_interval, Duration::from_secs(3600));
        assert_eq!(
            (d.banning.enabled, d.banning.timeout.as_secs()),
            (false, 1800)
        );
        assert_eq!(
            (d.banning.check_threshold, d.banning.malformed_limit),
            (30, 5)
        );
        assert_eq!((d.limits.limit, d.limits.limit_jump), (30, 10));
        assert_eq!(d.limits.grace, Duration::from_secs(300));
        let text = "[proxy.policy]\nresetInterval = \"1m\"\n[proxy.policy.banning]\n\
                    enabled = true\nipset = \"bl\"\ntimeout = 2\ninvalidPercent = 50\n\
                    [proxy.policy.limits]\nenabled = true\ngrace = \"0s\"\nlimitJump = 1\n";
        let c = Config::parse(text, "x").expect("policy section parses");
        let r = Rules::from(&c.proxy.policy);
        assert_eq!(r.reset_interval, Duration::from_secs(60));
        assert!(r.banning.enabled && r.limits.enabled);
        assert_eq!(r.banning.invalid_percent, 50.0);
        assert_eq!(c.proxy.policy.banning.ipset, "bl");
        c.clone().check().expect("valid");
        let mut bad = c;
        bad.proxy.policy.banning.timeout = 0;
        let e = bad.check().expect_err("zero ban timeout");
        assert!(
            e.to_string().contains("proxy.policy.banning.timeout"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_failing_ipset_leaves_the_app_level_ban() {
        let mut c = PolicySection::default();
        c.banning.enabled = true;
        // No such set (or no ipset binary, or no permission): logged, nothing else.
        c.banning.ipset = "dagproxy-test-no-such-set".into();
        let p = Policy::new(&c);
        p.ban("10.9.9.9");
        assert!(p.is_banned("10.9.9.9"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(p.is_banned("10.9.9.9"));
    }

    #[test]
    fn ipset_command_line() {
        assert_eq!(
            ipset_args("blacklist", "10.1.2.3", Duration::from_secs(1800)).join(" "),
            "add blacklist 10.1.2.3 timeout 1800 -!"
        );
    }
}

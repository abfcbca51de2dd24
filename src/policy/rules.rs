//! The policy decisions as pure functions over one IP's counters and the time since start:
//! open-ethereum-pool's invalid-share ratio, malformed limit, connection budget and ban expiry.

use std::time::Duration;

/// Banning rules (open-ethereum-pool `policy.banning`).
#[derive(Clone, Debug, PartialEq)]
pub struct Banning {
    /// Ban at all (the ratio and malformed checks still run without it, but ban nobody).
    pub enabled: bool,
    /// How long a ban lasts.
    pub timeout: Duration,
    /// Ban when invalid / valid shares reaches this percentage.
    pub invalid_percent: f64,
    /// Shares counted before the ratio is checked (then the counts restart).
    pub check_threshold: u32,
    /// Malformed requests before a ban.
    pub malformed_limit: u32,
}

/// Connection limits (open-ethereum-pool `policy.limits`).
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Limit connections at all.
    pub enabled: bool,
    /// Connections an IP may open per reset interval.
    pub limit: i64,
    /// No limit for this long after start (every miner reconnects after a restart).
    pub grace: Duration,
    /// Extra connections an IP earns with each valid share.
    pub limit_jump: i64,
}

/// All rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// Counters of an IP not seen for this long are dropped.
    pub reset_interval: Duration,
    /// Banning.
    pub banning: Banning,
    /// Connection limits.
    pub limits: Limits,
}

/// What a share did to its IP's standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareOutcome {
    /// Nothing to report.
    Ok,
    /// The invalid ratio reached `invalidPercent`: the IP is to be banned (if banning is
    /// enabled and it is not whitelisted) and the miner told so.
    HighInvalidRate,
}

/// One IP's counters. Times are offsets from the policy's start.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Last time this IP did anything.
    pub last_beat: Duration,
    /// When the current ban began.
    pub banned_at: Option<Duration>,
    /// Valid shares in the current check window.
    pub valid: u32,
    /// Invalid shares in the current check window.
    pub invalid: u32,
    /// Malformed requests since the counters were created.
    pub malformed: u32,
    /// Connections left to open.
    pub conn_budget: i64,
}

impl Stats {
    /// Fresh counters.
    pub fn new(rules: &Rules, now: Duration) -> Self {
        Self {
            last_beat: now,
            banned_at: None,
            valid: 0,
            invalid: 0,
            malformed: 0,
            conn_budget: rules.limits.limit,
        }
    }

    /// Whether a ban is in force at `now` (bans expire by themselves after `timeout`).
    pub fn is_banned(&self, rules: &Rules, now: Duration) -> bool {
        self.banned_at
            .is_some_and(|at| now.saturating_sub(at) < rules.banning.timeout)
    }

    /// Bans at `now` unless banning is off or the IP is whitelisted; true if newly banned.
    pub fn ban(&mut self, rules: &Rules, now: Duration, whitelisted: bool) -> bool {
        if !rules.banning.enabled || whitelisted || self.is_banned(rules, now) {
            return false;
        }
        self.banned_at = Some(now);
        true
    }

    /// A new connection: false when the IP has used up its connection budget (after grace).
    pub fn connect(&mut self, rules: &Rules, now: Duration) -> bool {
        self.last_beat = now;
        let l = &rules.limits;
        if !l.enabled || now < l.grace {
            return true;
        }
        self.conn_budget -= 1;
        self.conn_budget >= 0
    }

    /// One malformed request: true when the IP reached `malformedLimit` (ban it).
    pub fn malformed(&mut self, rules: &Rules, now: Duration) -> bool {
        self.last_beat = now;
        self.malformed = self.malformed.saturating_add(1);
        self.malformed >= rules.banning.malformed_limit
    }

    /// One checked share. Every `checkThreshold` shares the window's invalid/valid ratio is
    /// compared with `invalidPercent` (as open-ethereum-pool does: invalid over valid, so no
    /// valid share at all always trips) and the window restarts.
    pub fn share(&mut self, rules: &Rules, now: Duration, valid: bool) -> ShareOutcome {
        self.last_beat = now;
        if valid {
            self.valid = self.valid.saturating_add(1);
            if rules.limits.enabled {
                self.conn_budget = self.conn_budget.saturating_add(rules.limits.limit_jump);
            }
        } else {
            self.invalid = self.invalid.saturating_add(1);
        }
        if !rules.banning.enabled
            || self.valid.saturating_add(self.invalid) < rules.banning.check_threshold
        {
            return ShareOutcome::Ok;
        }
        let (valid, invalid) = (f64::from(self.valid), f64::from(self.invalid));
        self.valid = 0;
        self.invalid = 0;
        if invalid >= valid * rules.banning.invalid_percent / 100.0 && invalid > 0.0 {
            ShareOutcome::HighInvalidRate
        } else {
            ShareOutcome::Ok
        }
    }

    /// Whether the periodic reset may forget this IP: quiet for `resetInterval` and not banned.
    pub fn expired(&self, rules: &Rules, now: Duration) -> bool {
        now.saturating_sub(self.last_beat) >= rules.reset_interval && !self.is_banned(rules, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            reset_interval: Duration::from_secs(3600),
            banning: Banning {
                enabled: true,
                timeout: Duration::from_secs(1800),
                invalid_percent: 30.0,
                check_threshold: 30,
                malformed_limit: 5,
            },
            limits: Limits {
                enabled: true,
                limit: 30,
                grace: Duration::from_secs(300),
                limit_jump: 10,
            },
        }
    }

    const T: Duration = Duration::from_secs(1000);

    #[test]
    fn invalid_ratio_is_checked_every_threshold_shares() {
        let r = rules();
        let mut s = Stats::new(&r, T);
        // 22 valid + 7 invalid = 29 shares: below the threshold, nothing checked.
        for i in 0..29 {
            assert_eq!(s.share(&r, T, i < 22), ShareOutcome::Ok);
        }
        // 30th share invalid: 8 / 22 = 36% >= 30%.
        assert_eq!(s.share(&r, T, false), ShareOutcome::HighInvalidRate);
        assert_eq!((s.valid, s.invalid), (0, 0), "window restarts");
        // 24 valid + 6 invalid = 25%: fine.
        for i in 0..30 {
            assert_eq!(s.share(&r, T, i >= 6), ShareOutcome::Ok);
        }
        // Only invalid shares: trips.
        let outcomes: Vec<_> = (0..30).map(|_| s.share(&r, T, false)).collect();
        assert_eq!(outcomes.last(), Some(&ShareOutcome::HighInvalidRate));
        // Banning off: never trips.
        let mut off = r.clone();
        off.banning.enabled = false;
        let mut s = Stats::new(&off, T);
        assert!((0..100).all(|_| s.share(&off, T, false) == ShareOutcome::Ok));
    }

    #[test]
    fn malformed_limit() {
        let r = rules();
        let mut s = Stats::new(&r, T);
        assert!((0..4).all(|_| !s.malformed(&r, T)));
        assert!(s.malformed(&r, T));
    }

    #[test]
    fn bans_expire_and_spare_the_whitelist() {
        let r = rules();
        let mut s = Stats::new(&r, T);
        assert!(!s.ban(&r, T, true), "whitelisted");
        assert!(!s.is_banned(&r, T));
        assert!(s.ban(&r, T, false));
        assert!(!s.ban(&r, T, false), "already banned");
        assert!(s.is_banned(&r, T + Duration::from_secs(1799)));
        assert!(!s.is_banned(&r, T + Duration::from_secs(1800)));
        let mut off = r.clone();
        off.banning.enabled = false;
        let mut s = Stats::new(&off, T);
        assert!(!s.ban(&off, T, false), "banning disabled");
    }

    #[test]
    fn connection_budget_after_grace_grows_with_valid_shares() {
        let r = rules();
        let mut s = Stats::new(&r, Duration::ZERO);
        // Within grace: unlimited.
        assert!((0..100).all(|_| s.connect(&r, Duration::from_secs(10))));
        assert_eq!(s.conn_budget, 30);
        let after = Duration::from_secs(301);
        assert!((0..30).all(|_| s.connect(&r, after)));
        assert!(!s.connect(&r, after));
        // One valid share earns limitJump more.
        s.share(&r, after, true);
        let more = (0..20).filter(|_| s.connect(&r, after)).count();
        assert_eq!(more, 9, "budget was -1, +10");
        let mut off = r.clone();
        off.limits.enabled = false;
        let mut s = Stats::new(&off, after);
        assert!((0..100).all(|_| s.connect(&off, after)));
    }

    #[test]
    fn quiet_unbanned_ips_are_forgotten() {
        let r = rules();
        let mut s = Stats::new(&r, T);
        assert!(!s.expired(&r, T + Duration::from_secs(3599)));
        assert!(s.expired(&r, T + Duration::from_secs(3600)));
        s.ban(&r, T, false);
        // The ban outlives a reset interval shorter than it.
        let mut short = r.clone();
        short.reset_interval = Duration::from_secs(60);
        assert!(!s.expired(&short, T + Duration::from_secs(600)));
        assert!(s.expired(&short, T + Duration::from_secs(1800)));
    }
}

//! Variable share difficulty per session, pure: counts a session's valid shares and, at most
//! once per retarget period, moves its difficulty toward one share per `target_time`, by at
//! most ×2 and within `[min, max]`. Times are offsets from the session's start.
//!
//! The session applies a new difficulty only with a new header, so every header it was given
//! has exactly one difficulty, and a share is credited at the difficulty its job was issued at.

use std::time::Duration;

use crate::config::VardiffSection;

/// Measured rates within this fraction of the target leave the difficulty alone.
pub const TOLERANCE: f64 = 0.25;

/// The settings of an enabled `proxy.stratum.vardiff` section.
pub fn from_config(c: &VardiffSection) -> Option<VardiffConfig> {
    c.enabled.then_some(VardiffConfig {
        target_time: c.target_time.0,
        retarget_time: c.retarget_time.0,
        min: c.min_diff,
        max: c.max_diff,
        tolerance: TOLERANCE,
    })
}

/// Vardiff settings.
#[derive(Clone, Debug, PartialEq)]
pub struct VardiffConfig {
    /// Wanted time between a session's shares.
    pub target_time: Duration,
    /// Shortest time between two retargets (the measuring window).
    pub retarget_time: Duration,
    /// Lowest difficulty.
    pub min: u64,
    /// Highest difficulty.
    pub max: u64,
    /// No change while the measured rate is within this fraction of the target (0.25: ±25 %).
    pub tolerance: f64,
}

/// One session's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Vardiff {
    config: VardiffConfig,
    difficulty: u64,
    window_start: Duration,
    shares: u64,
}

impl Vardiff {
    /// Starts at `initial` (clamped to `[min, max]`) at time `now`.
    pub fn new(config: VardiffConfig, initial: u64, now: Duration) -> Self {
        let difficulty = initial.clamp(config.min.max(1), config.max.max(config.min).max(1));
        Self {
            config,
            difficulty,
            window_start: now,
            shares: 0,
        }
    }

    /// The current difficulty.
    pub fn difficulty(&self) -> u64 {
        self.difficulty
    }

    /// Counts one valid share.
    pub fn record_share(&mut self) {
        self.shares += 1;
    }

    /// Retargets if a full window has passed since the last one; returns the new difficulty if
    /// it changed. Call it whenever a new job is about to be issued.
    pub fn retarget(&mut self, now: Duration) -> Option<u64> {
        let elapsed = now.saturating_sub(self.window_start);
        if elapsed < self.config.retarget_time || elapsed.is_zero() {
            return None;
        }
        // Shares per target_time seen in the window: 1.0 is on target.
        let rate =
            self.shares as f64 * self.config.target_time.as_secs_f64() / elapsed.as_secs_f64();
        self.window_start = now;
        self.shares = 0;
        if (rate - 1.0).abs() <= self.config.tolerance {
            return None;
        }
        let old = self.difficulty as f64;
        let wanted = (old * rate).clamp(old / 2.0, old * 2.0);
        let new = (wanted.round() as u64).clamp(self.config.min.max(1), self.config.max.max(1));
        if new == self.difficulty {
            return None;
        }
        self.difficulty = new;
        Some(new)
    }
}

/// Jobs (headers) whose difficulty a session remembers: more than the stale window.
const ISSUED: usize = 8;

/// A session's difficulty per issued header: a header keeps the difficulty it was first
/// issued at; only a header not seen before picks up a retarget.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionDiff {
    vardiff: Vardiff,
    issued: std::collections::VecDeque<([u8; 32], u64)>,
}

impl SessionDiff {
    /// Starts at `initial` at `now`.
    pub fn new(config: VardiffConfig, initial: u64, now: Duration) -> Self {
        Self {
            vardiff: Vardiff::new(config, initial, now),
            issued: std::collections::VecDeque::with_capacity(ISSUED),
        }
    }

    /// The difficulty to issue `header` at `now` with.
    pub fn issue(&mut self, header: [u8; 32], now: Duration) -> u64 {
        if let Some(d) = self.issued_at(&header) {
            return d;
        }
        if let Some(d) = self.vardiff.retarget(now) {
            tracing::debug!(difficulty = d, "vardiff retarget");
        }
        let d = self.vardiff.difficulty();
        if self.issued.len() == ISSUED {
            self.issued.pop_front();
        }
        self.issued.push_back((header, d));
        d
    }

    /// The difficulty a share for `header` is checked and credited at: the one it was issued
    /// at, or the current one for a header this session was not given.
    pub fn for_share(&self, header: &[u8; 32]) -> u64 {
        self.issued_at(header)
            .unwrap_or_else(|| self.vardiff.difficulty())
    }

    /// Counts a valid share.
    pub fn record_share(&mut self) {
        self.vardiff.record_share();
    }

    fn issued_at(&self, header: &[u8; 32]) -> Option<u64> {
        self.issued
            .iter()
            .find(|(h, _)| h == header)
            .map(|(_, d)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_keeps_the_difficulty_it_was_issued_at() {
        let mut c = config();
        c.retarget_time = Duration::from_secs(1);
        let mut s = SessionDiff::new(c, 4_000, Duration::ZERO);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(s.issue(a, Duration::ZERO), 4_000);
        (0..50).for_each(|_| s.record_share());
        // Same header again after the window: unchanged.
        assert_eq!(s.issue(a, Duration::from_secs(5)), 4_000);
        // A new header picks up the retarget.
        assert_eq!(s.issue(b, Duration::from_secs(5)), 8_000);
        assert_eq!((s.for_share(&a), s.for_share(&b)), (4_000, 8_000));
        assert_eq!(s.for_share(&[3u8; 32]), 8_000);
        for i in 0..20u8 {
            s.issue([10 + i; 32], Duration::from_secs(5));
        }
        assert_eq!(s.issued.len(), ISSUED);
    }

    fn config() -> VardiffConfig {
        VardiffConfig {
            target_time: Duration::from_secs(10),
            retarget_time: Duration::from_secs(60),
            min: 1_000,
            max: 1_000_000_000_000,
            tolerance: 0.25,
        }
    }

    /// A miner of `hashrate` H/s: shares come every difficulty / hashrate seconds (expected
    /// value, no randomness); the difficulty changes only when a job is issued, every
    /// `job_every`. Returns the difficulty after `duration` and the largest single step.
    fn simulate(hashrate: f64, initial: u64, duration: Duration) -> (u64, f64, Vec<u64>) {
        let job_every = Duration::from_secs(13);
        let mut v = Vardiff::new(config(), initial, Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut next_job = job_every;
        let mut owed = 0.0f64; // hashes done toward the next share
        let mut issued = v.difficulty();
        let mut history = vec![issued];
        let mut worst_step = 1.0f64;
        let tick = Duration::from_millis(100);
        while now < duration {
            now += tick;
            owed += hashrate * tick.as_secs_f64();
            while owed >= issued as f64 {
                owed -= issued as f64;
                v.record_share();
            }
            if now >= next_job {
                next_job += job_every;
                if let Some(d) = v.retarget(now) {
                    let step = (d as f64 / issued as f64).max(issued as f64 / d as f64);
                    worst_step = worst_step.max(step);
                    issued = d;
                    history.push(d);
                }
            }
        }
        (issued, worst_step, history)
    }

    #[test]
    fn fast_miner_converges_up_by_at_most_double() {
        // 1 GH/s wants 10 GH per share; starting at 1 MH it needs ~13 doublings.
        let (d, step, history) = simulate(1e9, 1_000_000, Duration::from_secs(3 * 3600));
        let ideal = 1e10;
        assert!(
            (d as f64 / ideal - 1.0).abs() <= 0.3,
            "ended at {d}, history {history:?}"
        );
        assert!(step <= 2.0 + 1e-9, "step {step}");
        assert!(history.windows(2).take(10).all(|w| w[1] == w[0] * 2));
    }

    #[test]
    fn slow_miner_converges_down_and_stops_at_min() {
        // 100 kH/s wants 1 MH per share; starting at 1 GH it finds no share for a long time.
        let (d, step, history) = simulate(1e5, 1_000_000_000, Duration::from_secs(3 * 3600));
        assert!(
            (d as f64 / 1e6 - 1.0).abs() <= 0.3,
            "ended at {d}, history {history:?}"
        );
        assert!(step <= 2.0 + 1e-9);
        // 10 H/s would want 100 H: bounded by min.
        let (d, _, _) = simulate(10.0, 1_000_000, Duration::from_secs(3 * 3600));
        assert_eq!(d, 1_000);
    }

    #[test]
    fn on_target_stays_and_windows_are_respected() {
        let mut v = Vardiff::new(config(), 5_000, Duration::ZERO);
        for _ in 0..100 {
            v.record_share();
        }
        // Window not over: nothing.
        assert_eq!(v.retarget(Duration::from_secs(59)), None);
        // 100 shares in 60 s at a 10 s target: double (bounded), not ×16.
        assert_eq!(v.retarget(Duration::from_secs(60)), Some(10_000));
        // Exactly on target: no change.
        for _ in 0..6 {
            v.record_share();
        }
        assert_eq!(v.retarget(Duration::from_secs(120)), None);
        // Clamped to max.
        let mut c = config();
        c.max = 12_000;
        let mut v = Vardiff::new(c, 10_000, Duration::ZERO);
        (0..100).for_each(|_| v.record_share());
        assert_eq!(v.retarget(Duration::from_secs(60)), Some(12_000));
        assert_eq!(
            Vardiff::new(config(), 1, Duration::ZERO).difficulty(),
            1_000
        );
    }
}

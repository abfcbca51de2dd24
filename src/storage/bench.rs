//! `dagproxy bench redis`: how many shares per second a Redis takes in open-ethereum-pool's
//! schema through this store, and the Redis CPU each share costs (the figure that sizes a
//! pool's Redis), written under a prefix of its own and removed afterwards.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{RedisOptions, RedisStore, ShareRecord, StorageError, WriteOutcome};

/// What to write.
#[derive(Clone, Debug)]
pub struct BenchParams {
    /// Shares written in all.
    pub shares: u64,
    /// Distinct miner logins the shares spread over (round robin).
    pub logins: u64,
    /// Shares per script call.
    pub batch: usize,
    /// Batches sent and not yet answered at once.
    pub in_flight: usize,
    /// Key prefix; everything under it is deleted before and after.
    pub prefix: String,
}

impl BenchParams {
    fn check(&self) -> Result<(), BenchError> {
        if self.shares == 0 || self.logins == 0 || self.batch == 0 || self.in_flight == 0 {
            return Err(BenchError::Params(
                "shares, logins, batch and in-flight must be positive",
            ));
        }
        if self.prefix.is_empty() || self.prefix.contains(['*', '?', '[']) {
            return Err(BenchError::Params(
                "prefix must be non-empty, without * ? [",
            ));
        }
        Ok(())
    }
}

/// The measurement, printed as JSON.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// `redis_version` from `INFO server`.
    pub redis_version: String,
    /// Shares written.
    pub shares: u64,
    /// Distinct logins.
    pub logins: u64,
    /// Shares per call.
    pub batch: usize,
    /// Calls in flight.
    pub in_flight: usize,
    /// Replicas each call waited for (`WAIT`; 0: none).
    pub wait_replicas: u32,
    /// Wall time of the writes.
    pub seconds: f64,
    /// Shares stored per second of wall time.
    pub shares_per_s: f64,
    /// Redis process CPU (user + system, `INFO cpu`) per share, µs. On a shared Redis it
    /// includes the other clients' work.
    pub redis_cpu_us_per_share: f64,
    /// Time Redis spent inside the share script per share (`INFO commandstats`), µs.
    pub script_us_per_share: f64,
    /// Shares answered stored (all should be: every share is distinct).
    pub stored: u64,
}

/// Bench errors.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Redis failed or is unreachable.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Parameters out of range.
    #[error("{0}")]
    Params(&'static str),
    /// A field missing from `INFO`.
    #[error("redis INFO lacks {0}")]
    Info(&'static str),
}

/// One synthetic share: distinct `nonce` per index, the same header for all (one height).
fn share(i: u64, logins: u64) -> ShareRecord {
    let login = i % logins;
    ShareRecord {
        login: format!("0x{:040x}", 0xda6_0000_0000u64 + login),
        worker: format!("rig{}", i % 3),
        nonce: format!("0x{i:016x}"),
        pow_hash: format!("0x{}", "ab".repeat(32)),
        // Spread like a real mix digest, so members do not share long prefixes.
        mix_digest: format!(
            "0x{:016x}{}",
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            "cd".repeat(24)
        ),
        difficulty: 4_000_000_000,
        height: 21_000_000,
    }
}

/// Reads `field:value` from an `INFO` text.
fn info_field<'a>(info: &'a str, field: &'static str) -> Result<&'a str, BenchError> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
        .ok_or(BenchError::Info(field))
}

/// Redis CPU seconds so far and µs spent in `EVALSHA`/`EVAL` so far.
async fn counters(store: &RedisStore) -> Result<(f64, f64), BenchError> {
    let info = store.info("cpu").await?;
    let user: f64 = info_field(&info, "used_cpu_user")?.parse().unwrap_or(0.0);
    let sys: f64 = info_field(&info, "used_cpu_sys")?.parse().unwrap_or(0.0);
    let stats = store.info("commandstats").await?;
    let usec = ["cmdstat_evalsha", "cmdstat_eval"]
        .iter()
        .filter_map(|f| {
            let line = stats
                .lines()
                .find_map(|l| l.strip_prefix(f)?.strip_prefix(':'))?;
            line.split(',')
                .find_map(|kv| kv.strip_prefix("usec="))?
                .parse::<f64>()
                .ok()
        })
        .sum();
    Ok((user + sys, usec))
}

/// Writes `p.shares` shares through a store connected as `opts` say (direct or via
/// sentinels, with or without `WAIT`) and measures.
pub async fn run(opts: &RedisOptions, p: &BenchParams) -> Result<BenchReport, BenchError> {
    p.check()?;
    let store = RedisStore::connect_with(opts, &p.prefix, Duration::from_secs(3600)).await?;
    let server = store.info("server").await?;
    let redis_version = info_field(&server, "redis_version")?.to_string();
    store.delete_prefixed().await?;

    let (cpu0, usec0) = counters(&store).await?;
    let started = Instant::now();
    let calls = p.shares.div_ceil(p.batch as u64);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..p.in_flight as u64 {
        let store = store.clone();
        let (shares, logins, batch) = (p.shares, p.logins, p.batch as u64);
        let in_flight = p.in_flight as u64;
        workers.spawn(async move {
            let mut stored = 0u64;
            let mut call = w;
            while call < calls {
                let first = call * batch;
                let last = (first + batch).min(shares);
                let batch: Vec<ShareRecord> = (first..last).map(|i| share(i, logins)).collect();
                let out = store.write_shares(&batch).await?;
                stored += out.iter().filter(|o| **o == WriteOutcome::Stored).count() as u64;
                call += in_flight;
            }
            Ok::<u64, StorageError>(stored)
        });
    }
    let mut stored = 0;
    let mut failed = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(n)) => stored += n,
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(StorageError::Reply("bench writer panicked".into())),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (cpu1, usec1) = counters(&store).await?;
    store.delete_prefixed().await?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let n = p.shares as f64;
    Ok(BenchReport {
        redis_version,
        shares: p.shares,
        logins: p.logins,
        batch: p.batch,
        in_flight: p.in_flight,
        wait_replicas: opts.wait_replicas,
        seconds,
        shares_per_s: stored as f64 / seconds,
        redis_cpu_us_per_share: (cpu1 - cpu0) * 1e6 / n,
        script_us_per_share: (usec1 - usec0) / n,
        stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_name() {
        let info = "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:3.5\r\n";
        assert_eq!(info_field(info, "used_cpu_user").ok(), Some("3.5"));
        assert_eq!(info_field(info, "used_cpu_sys").ok(), Some("1.250000"));
        assert!(info_field(info, "used_cpu").is_err());
    }

    #[test]
    fn synthetic_shares_are_distinct_and_spread_over_logins() {
        let a = share(1, 200);
        let b = share(201, 200);
        assert_eq!(a.login, b.login);
        assert_ne!(a.pow_member(), b.pow_member());
        assert_ne!(share(1, 200).login, share(2, 200).login);
        assert_eq!(a.login.len(), 42);
        assert_eq!(a.mix_digest.len(), 66);
    }
}

//! The share pipeline (open-ethereum-pool's processShare, done right): stale window, ONE
//! hashimoto through the verifier (mix, share target, block target), block submission to the
//! node, and a durable Redis write before the miner hears `true`.

pub mod verdict;
pub mod writer;

use std::sync::Arc;

use serde_json::Value;

use crate::ethash::target::check_share;
use crate::ethash::target::target_from_difficulty;
use crate::ethash::{PowInput, ShareCheck, U256};
use crate::hexutil::{nonce_hex, parse_h256, parse_nonce, to_hex};
use crate::observe::Histogram;
use crate::storage::{BlockRecord, RedisStore, ShareRecord, WriteOutcome};
use crate::upstream::{HeaderInfo, Upstreams};
use crate::verify::{Verifier, VerifyError};

pub use verdict::{Counters, Verdict};
pub use writer::{ShareWriter, WriteError, WriterStats};

/// Share latency buckets (microseconds): from the parsed submission to its verdict.
const SHARE_MICROS: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

/// A well-formed `eth_submitWork`: parsed values and the strings as the miner sent them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submit {
    /// Nonce (big-endian value of the hex).
    pub nonce: u64,
    /// Header (pow) hash.
    pub header: [u8; 32],
    /// Mix digest.
    pub mix: [u8; 32],
    /// `[nonce, header, mix]` as sent (lowercase `0x` hex, checked).
    pub params: [String; 3],
}

impl Submit {
    /// Checks `[nonce, header, mix]` against `^0x[0-9a-f]{16}$`, `^0x[0-9a-f]{64}$` ×2.
    pub fn from_params(params: &Value) -> Result<Self, Verdict> {
        let strings: Vec<&str> = params
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let [n, h, m] = strings[..] else {
            return Err(Verdict::InvalidParams);
        };
        if params.as_array().map(Vec::len) != Some(3) {
            return Err(Verdict::InvalidParams);
        }
        let lower_hex = |s: &str, digits: usize| {
            s.len() == digits + 2
                && s.starts_with("0x")
                && s.bytes()
                    .skip(2)
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !(lower_hex(n, 16) && lower_hex(h, 64) && lower_hex(m, 64)) {
            return Err(Verdict::Malformed);
        }
        Ok(Self {
            nonce: parse_nonce(n).map_err(|_| Verdict::Malformed)?,
            header: parse_h256(h, "header").map_err(|_| Verdict::Malformed)?,
            mix: parse_h256(m, "mix").map_err(|_| Verdict::Malformed)?,
            params: [n.to_string(), h.to_string(), m.to_string()],
        })
    }
}

/// Everything a share needs; shared by the front ends.
#[derive(Debug)]
pub struct Pipeline {
    upstreams: Arc<Upstreams>,
    verifier: Verifier,
    store: RedisStore,
    writer: ShareWriter,
    difficulty: u64,
    share_target: U256,
    counters: Counters,
    latency: Histogram,
}

impl Pipeline {
    /// A pipeline crediting `difficulty` per valid share.
    pub fn new(
        upstreams: Arc<Upstreams>,
        verifier: Verifier,
        store: RedisStore,
        writer: ShareWriter,
        difficulty: u64,
    ) -> Self {
        Self {
            upstreams,
            verifier,
            store,
            writer,
            difficulty,
            share_target: share_target(difficulty),
            counters: Counters::default(),
            latency: Histogram::new(SHARE_MICROS, 1e-6),
        }
    }

    /// The share target handed out with work.
    pub fn share_target(&self) -> U256 {
        self.share_target
    }

    /// The share difficulty.
    pub fn difficulty(&self) -> u64 {
        self.difficulty
    }

    /// The Redis shares go to.
    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    /// Verdict counts since start.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Time from a well-formed submission to its verdict (verification, block submission and
    /// the Redis write): what the miner waits for, less the network.
    pub fn latency(&self) -> &Histogram {
        &self.latency
    }

    /// Processes `eth_submitWork` params from `login`/`worker`: checks them, then the share.
    pub async fn submit_params(&self, login: &str, worker: &str, params: &Value) -> Verdict {
        self.submit_params_at(login, worker, params, self.difficulty)
            .await
    }

    /// As [`Pipeline::submit_params`], for a share issued at `difficulty` (vardiff): checked
    /// against its target and credited at it.
    pub async fn submit_params_at(
        &self,
        login: &str,
        worker: &str,
        params: &Value,
        difficulty: u64,
    ) -> Verdict {
        let verdict = match Submit::from_params(params) {
            Ok(share) => self.submit_at(login, worker, &share, difficulty).await,
            Err(v) => v,
        };
        self.counters.record(verdict);
        if !verdict.is_valid() {
            tracing::debug!(%login, %worker, ?verdict, "share not accepted");
        }
        verdict
    }

    /// Processes one well-formed share from `login`/`worker` (not counted; see
    /// [`Pipeline::submit_params`]).
    pub async fn submit(&self, login: &str, worker: &str, s: &Submit) -> Verdict {
        self.submit_at(login, worker, s, self.difficulty).await
    }

    /// Processes one well-formed share issued at `difficulty` (not counted).
    pub async fn submit_at(
        &self,
        login: &str,
        worker: &str,
        s: &Submit,
        difficulty: u64,
    ) -> Verdict {
        self.check(login, worker, s.nonce, s.header, Some(s.mix), difficulty)
            .await
    }

    /// A share given as a nonce alone (EthereumStratum/1.0.0 sends no mix digest): the mix
    /// is the computed one, checked and counted otherwise as [`Pipeline::submit_params_at`].
    pub async fn submit_nonce_at(
        &self,
        login: &str,
        worker: &str,
        nonce: u64,
        header: [u8; 32],
        difficulty: u64,
    ) -> Verdict {
        let verdict = self
            .check(login, worker, nonce, header, None, difficulty)
            .await;
        self.counters.record(verdict);
        verdict
    }

    async fn check(
        &self,
        login: &str,
        worker: &str,
        nonce: u64,
        header_hash: [u8; 32],
        mix: Option<[u8; 32]>,
        difficulty: u64,
    ) -> Verdict {
        // Recorded when the check ends, whichever way it ends.
        let _timer = self.latency.timer_micros();
        let share_target = if difficulty == self.difficulty {
            self.share_target
        } else {
            share_target(difficulty)
        };
        let Some(header) = self
            .upstreams
            .template()
            .and_then(|t| t.lookup(&header_hash))
        else {
            return Verdict::Stale;
        };
        let input = PowInput { header_hash, nonce };
        let (h, t) = (header.height, header.target);
        let check = match mix {
            Some(mix) => self
                .verifier
                .check(h, input, mix, share_target, t)
                .await
                .map(|c| (c, mix)),
            None => self.verifier.hash(h, input).await.map(|out| {
                let c = check_share(&out, &out.mix_digest, share_target, t);
                (c, out.mix_digest)
            }),
        };
        let (check, mix) = match check {
            Err(VerifyError::Busy) => return Verdict::Busy,
            Err(e) => {
                tracing::error!("share not verified: {e}");
                return Verdict::Busy;
            }
            Ok(c) => c,
        };
        // The same lowercase strings the miner had to send.
        let record = ShareRecord {
            login: login.to_string(),
            worker: worker.to_string(),
            nonce: nonce_hex(nonce),
            pow_hash: to_hex(&header_hash),
            mix_digest: to_hex(&mix),
            difficulty,
            height: header.height,
        };
        match check {
            ShareCheck::MixMismatch => Verdict::MixMismatch,
            ShareCheck::LowDifficulty => Verdict::LowDifficulty,
            ShareCheck::Share => self.store_share(record).await,
            ShareCheck::Block => self.block(record, header, share_target).await,
        }
    }

    async fn store_share(&self, record: ShareRecord) -> Verdict {
        let result = self.writer.write_share(record).await;
        self.stored(result, Verdict::Valid)
    }

    fn stored(&self, result: Result<WriteOutcome, WriteError>, ok: Verdict) -> Verdict {
        self.upstreams.storage_result(result.is_ok());
        match result {
            Ok(WriteOutcome::Stored) => ok,
            Ok(WriteOutcome::Duplicate) => Verdict::Duplicate,
            Err(_) => Verdict::StorageDown,
        }
    }

    async fn block(&self, record: ShareRecord, header: HeaderInfo, share_target: U256) -> Verdict {
        // A resubmitted solution must neither reach the node again nor count twice. If Redis
        // cannot say, the node still gets the block: losing a block costs more.
        match self.store.pow_exists(&record).await {
            Ok(true) => return Verdict::Duplicate,
            Ok(false) => {}
            Err(e) => tracing::warn!("duplicate check before block submission failed: {e}"),
        }
        let [nonce, pow_hash, mix] = [&record.nonce, &record.pow_hash, &record.mix_digest];
        match self.upstreams.submit_work(nonce, pow_hash, mix).await {
            Ok(true) => {
                tracing::info!(
                    height = header.height, login = %record.login, worker = %record.worker,
                    nonce = %nonce, "block found and accepted by the node"
                );
                self.upstreams.refresh_soon();
                let block = BlockRecord {
                    height: header.height,
                    round_difficulty: header.difficulty,
                };
                let result = self.writer.write_block(record, block).await;
                if let Err(e) = &result {
                    tracing::error!(height = header.height, "FOUND BLOCK NOT RECORDED: {e}");
                }
                self.stored(result, Verdict::Block)
            }
            outcome => {
                match outcome {
                    Ok(_) => {
                        tracing::warn!(height = header.height, nonce = %nonce, "block rejected by the node")
                    }
                    Err(e) => {
                        tracing::error!(height = header.height, "block submission failed: {e}")
                    }
                }
                // Still valid work when it meets the share target (the usual case).
                if header.target <= share_target {
                    self.store_share(record).await
                } else {
                    Verdict::LowDifficulty
                }
            }
        }
    }
}

/// `2^256 / difficulty` (difficulty is at least 1, checked by the config).
pub fn share_target(difficulty: u64) -> U256 {
    target_from_difficulty(U256::from(difficulty.max(1))).unwrap_or(U256::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn submit_params_follow_the_patterns() {
        let n = "0xe05d1fd4002d962f";
        let h = "0x6c872e2304cd1e64b553a65387d7383470f22331aff288cbce5748dc430f016a";
        let m = "0x2b20a6c641ed155b893ee750ef90ec3be5d24736d16838b84759385b6724220d";
        let s = Submit::from_params(&json!([n, h, m])).expect("seed example is valid");
        assert_eq!(s.nonce, 0xe05d_1fd4_002d_962f);
        assert_eq!(s.params[1], h);
        let upper = h.to_uppercase().replace("0X", "0x");
        assert_eq!(
            Submit::from_params(&json!([n, upper, m])),
            Err(Verdict::Malformed)
        );
        assert_eq!(
            Submit::from_params(&json!(["0x12", h, m])),
            Err(Verdict::Malformed)
        );
        assert_eq!(
            Submit::from_params(&json!([n, h])),
            Err(Verdict::InvalidParams)
        );
        assert_eq!(
            Submit::from_params(&json!([n, h, m, n])),
            Err(Verdict::InvalidParams)
        );
        assert_eq!(
            Submit::from_params(&json!([n, h, 5])),
            Err(Verdict::InvalidParams)
        );
        assert_eq!(
            Submit::from_params(&json!(null)),
            Err(Verdict::InvalidParams)
        );
    }

    #[test]
    fn verdicts_map_to_open_ethereum_pool_answers() {
        assert_eq!(Verdict::Valid.reply(), Ok(json!(true)));
        assert_eq!(Verdict::Stale.reply(), Ok(json!(false)));
        assert_eq!(Verdict::MixMismatch.reply(), Ok(json!(false)));
        assert_eq!(Verdict::Duplicate.reply().map_err(|e| e.code), Err(22));
        assert_eq!(
            Verdict::Malformed.reply().map_err(|e| e.message),
            Err("Malformed PoW result")
        );
        assert!(Verdict::StorageDown.reply().is_err());
        assert!(Verdict::Busy.reply().is_err());
    }

    #[test]
    fn random_params_get_the_verdict_the_patterns_say() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let digits = b"0123456789abcdefA";
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            let k = next(5) as usize;
            let mut items = Vec::new();
            let mut strings = Vec::new();
            for i in 0..k {
                if next(20) == 0 {
                    items.push(json!(7));
                    continue;
                }
                // Mostly the right length for the position, sometimes off by one.
                let want = if i == 0 { 16 } else { 64 };
                let len = match next(6) {
                    0 => want - 1,
                    1 => want + 1,
                    _ => want,
                };
                let mut body: Vec<u8> = (0..len).map(|_| digits[next(16) as usize]).collect();
                if next(8) == 0 {
                    // One uppercase digit.
                    let at = next(len as u64) as usize;
                    body[at] = digits[16];
                }
                let body = String::from_utf8(body).expect("ascii");
                let prefix = if next(50) == 0 { "0X" } else { "0x" };
                strings.push(format!("{prefix}{body}"));
                items.push(json!(format!("{prefix}{body}")));
            }
            let ok = |s: &str, n: usize| {
                s.len() == n + 2
                    && s.starts_with("0x")
                    && s[2..]
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            };
            let expected = if k != 3 || strings.len() != 3 {
                Err(Verdict::InvalidParams)
            } else if ok(&strings[0], 16) && ok(&strings[1], 64) && ok(&strings[2], 64) {
                Ok(())
            } else {
                Err(Verdict::Malformed)
            };
            let got = Submit::from_params(&json!(items)).map(|s| {
                assert_eq!(s.params.to_vec(), strings);
                assert_eq!(crate::hexutil::nonce_hex(s.nonce), strings[0]);
            });
            assert_eq!(got, expected, "{items:?}");
            counts[match expected {
                Ok(()) => 0,
                Err(Verdict::Malformed) => 1,
                Err(_) => 2,
            }] += 1;
        }
        // Every outcome was exercised.
        assert!(counts.iter().all(|&c| c > 100), "{counts:?}");
    }
}

//! What became of a submitted share, as a type, and the one place that maps it to the
//! JSON-RPC answer miners get.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::stratum::message::{
    ErrorReply, DUPLICATE_SHARE, INVALID_PARAMS, MALFORMED_POW, STORAGE_DOWN, VERIFIER_BUSY,
};

/// The outcome of one `eth_submitWork`. None of them closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A valid share, durably stored: `true`.
    Valid,
    /// A valid share that is a block the node accepted, stored as a block: `true`.
    Block,
    /// The header is not one of the last three heights' (or there is no template): `false`.
    Stale,
    /// The result is above the share target: `false`.
    LowDifficulty,
    /// The submitted mix digest is not the computed one: `false`.
    MixMismatch,
    /// The same (nonce, header, mix) was stored before: error 22.
    Duplicate,
    /// Params are strings but not lowercase `0x` hex of the right lengths: -1.
    Malformed,
    /// Params are not three strings: -1 "Invalid params".
    InvalidParams,
    /// The verifier could not take or finish the share: an error, never `true`.
    Busy,
    /// Redis did not store the share: an error, never `true`.
    StorageDown,
}

impl Verdict {
    /// The JSON-RPC result or error for this verdict.
    pub fn reply(self) -> Result<Value, ErrorReply> {
        match self {
            Verdict::Valid | Verdict::Block => Ok(Value::Bool(true)),
            // open-ethereum-pool answers invalid shares with a plain false until its
            // invalid-share policy trips (policy: issue 5).
            Verdict::Stale | Verdict::LowDifficulty | Verdict::MixMismatch => {
                Ok(Value::Bool(false))
            }
            Verdict::Duplicate => Err(DUPLICATE_SHARE),
            Verdict::Malformed => Err(MALFORMED_POW),
            Verdict::InvalidParams => Err(INVALID_PARAMS),
            Verdict::Busy => Err(VERIFIER_BUSY),
            Verdict::StorageDown => Err(STORAGE_DOWN),
        }
    }

    /// Whether the share counts as valid work.
    pub fn is_valid(self) -> bool {
        matches!(self, Verdict::Valid | Verdict::Block)
    }
}

/// How many shares got each verdict since start.
#[derive(Debug, Default)]
pub struct Counters([AtomicU64; 10]);

impl Counters {
    const NAMES: [&'static str; 10] = [
        "valid",
        "blocks",
        "stale",
        "low_difficulty",
        "mix_mismatch",
        "duplicate",
        "malformed",
        "invalid_params",
        "busy",
        "storage_down",
    ];

    fn index(v: Verdict) -> usize {
        match v {
            Verdict::Valid => 0,
            Verdict::Block => 1,
            Verdict::Stale => 2,
            Verdict::LowDifficulty => 3,
            Verdict::MixMismatch => 4,
            Verdict::Duplicate => 5,
            Verdict::Malformed => 6,
            Verdict::InvalidParams => 7,
            Verdict::Busy => 8,
            Verdict::StorageDown => 9,
        }
    }

    /// Counts one verdict.
    pub fn record(&self, v: Verdict) {
        self.0[Self::index(v)].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of one verdict.
    pub fn get(&self, v: Verdict) -> u64 {
        self.0[Self::index(v)].load(Ordering::Relaxed)
    }

    /// `(name, count)` for every verdict, for logs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Self::NAMES
            .iter()
            .zip(&self.0)
            .map(|(n, c)| (*n, c.load(Ordering::Relaxed)))
            .collect()
    }
}

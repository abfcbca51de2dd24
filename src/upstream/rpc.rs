//! JSON-RPC over HTTP to one geth/core-geth-style node: `eth_getWork`,
//! `eth_getBlockByNumber("pending", false)`, `eth_submitWork`, with open-ethereum-pool's
//! sick/alive hysteresis.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::ethash::target::parse_u256;
use crate::ethash::U256;
use crate::hexutil::{parse_h256, HexError};

/// Consecutive failed calls after which a node counts as sick.
const SICK_AFTER: u32 = 5;
/// Consecutive successful health checks after which a sick node counts as alive again.
const ALIVE_AFTER: u32 = 5;

/// Errors talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Connection, timeout or body errors.
    #[error("{node}: {source}")]
    Http {
        /// Upstream name.
        node: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The node answered with a JSON-RPC error.
    #[error("{node}: rpc error {code}: {message}")]
    Rpc {
        /// Upstream name.
        node: String,
        /// JSON-RPC error code.
        code: i64,
        /// Its message.
        message: String,
    },
    /// The configuration names no node.
    #[error("no upstream configured")]
    NoUpstream,
    /// The answer does not have the expected shape.
    #[error("{node}: malformed reply to {method}: {why}")]
    Malformed {
        /// Upstream name.
        node: String,
        /// The method called.
        method: &'static str,
        /// What was wrong.
        why: String,
    },
}

/// An `eth_getWork` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    /// Header hash (pow hash) to mine on.
    pub header: [u8; 32],
    /// Seed hash of the header's epoch.
    pub seed: [u8; 32],
    /// Block target (boundary).
    pub target: U256,
    /// Block number, when the node sends the fourth element.
    pub number: Option<u64>,
}

impl Work {
    /// Parses `[header, seed, boundary(, number)]`.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let a = v.as_array().ok_or("not an array")?;
        let s = |i: usize| -> Result<&str, String> {
            a.get(i)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("element {i} missing or not a string"))
        };
        let hex_err = |e: HexError| e.to_string();
        let header = parse_h256(s(0)?, "header").map_err(hex_err)?;
        let seed = parse_h256(s(1)?, "seed").map_err(hex_err)?;
        let target = parse_u256(s(2)?).map_err(|e| e.to_string())?;
        let number = match a.get(3) {
            Some(Value::String(n)) => Some(parse_quantity(n)?),
            _ => None,
        };
        Ok(Self {
            header,
            seed,
            target,
            number,
        })
    }
}

/// The part of the pending block the proxy uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingBlock {
    /// Block number.
    pub number: u64,
    /// Block difficulty, full 256 bits.
    pub difficulty: U256,
}

impl PendingBlock {
    /// Parses `number` and `difficulty` (hex quantities) out of a block object.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{k} missing or not a string"))
        };
        Ok(Self {
            number: parse_quantity(field("number")?)?,
            difficulty: parse_u256(field("difficulty")?).map_err(|e| e.to_string())?,
        })
    }
}

/// Parses a `0x` hex quantity into a u64.
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("not a 0x quantity: {s}"))?;
    u64::from_str_radix(digits, 16).map_err(|_| format!("not a 0x quantity: {s}"))
}

#[derive(Debug, Default)]
struct Health {
    sick: bool,
    fail_run: u32,
    ok_run: u32,
}

/// A client for one upstream node.
#[derive(Debug)]
pub struct RpcClient {
    /// Name for logs.
    pub name: String,
    /// Endpoint.
    pub url: String,
    http: reqwest::Client,
    health: Mutex<Health>,
}

impl RpcClient {
    /// A client with a per-request timeout.
    pub fn new(name: &str, url: &str, timeout: Duration) -> Result<Self, RpcError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|source| RpcError::Http {
                node: name.to_string(),
                source,
            })?;
        Ok(Self {
            name: name.to_string(),
            url: url.to_string(),
            http,
            health: Mutex::default(),
        })
    }

    async fn call(&self, method: &'static str, params: Value) -> Result<Value, RpcError> {
        let result = self.call_inner(method, params).await;
        if result.is_err() {
            self.mark_failed();
        }
        result
    }

    async fn call_inner(&self, method: &'static str, params: Value) -> Result<Value, RpcError> {
        let http = |source| RpcError::Http {
            node: self.name.clone(),
            source,
        };
        let body = json!({"jsonrpc": "2.0", "id": 0, "method": method, "params": params});
        let reply: Value = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(http)?
            .error_for_status()
            .map_err(http)?
            .json()
            .await
            .map_err(http)?;
        if let Some(err) = reply.get("error").filter(|e| !e.is_null()) {
            return Err(RpcError::Rpc {
                node: self.name.clone(),
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
        Ok(reply.get("result").cloned().unwrap_or(Value::Null))
    }

    fn malformed(&self, method: &'static str, why: String) -> RpcError {
        RpcError::Malformed {
            node: self.name.clone(),
            method,
            why,
        }
    }

    /// `eth_getWork`.
    pub async fn get_work(&self) -> Result<Work, RpcError> {
        let v = self.call("eth_getWork", json!([])).await?;
        Work::from_json(&v).map_err(|why| self.malformed("eth_getWork", why))
    }

    /// `eth_getBlockByNumber("pending", false)`: the parsed part and the raw object.
    pub async fn get_pending_block(&self) -> Result<PendingBlock, RpcError> {
        let v = self
            .call("eth_getBlockByNumber", json!(["pending", false]))
            .await?;
        PendingBlock::from_json(&v).map_err(|why| self.malformed("eth_getBlockByNumber", why))
    }

    /// `eth_submitWork`: whether the node accepted the solution.
    pub async fn submit_work(
        &self,
        nonce: &str,
        header: &str,
        mix: &str,
    ) -> Result<bool, RpcError> {
        let v = self
            .call("eth_submitWork", json!([nonce, header, mix]))
            .await?;
        v.as_bool()
            .ok_or_else(|| self.malformed("eth_submitWork", format!("not a bool: {v}")))
    }

    /// A health check (`eth_getWork`): true when the call works and the node is not sick.
    pub async fn check(&self) -> bool {
        if self.get_work().await.is_err() {
            return false;
        }
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.fail_run = 0;
        h.ok_run += 1;
        if h.ok_run >= ALIVE_AFTER {
            h.sick = false;
        }
        !h.sick
    }

    /// Whether recent calls failed too often.
    pub fn is_sick(&self) -> bool {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).sick
    }

    fn mark_failed(&self) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.ok_run = 0;
        h.fail_run += 1;
        if h.fail_run >= SICK_AFTER {
            h.sick = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_work_and_pending_block() {
        let w = Work::from_json(&json!([
            format!("0x{}", "11".repeat(32)),
            format!("0x{}", "00".repeat(32)),
            "0x00000007cc03d7d0cb49aa514f6aed05705a9baef46aea9a02514c253e288daa",
            "0x2a"
        ]))
        .expect("valid work");
        assert_eq!(w.header, [0x11; 32]);
        assert_eq!(w.number, Some(42));
        assert!(Work::from_json(&json!(["0x12"])).is_err());
        // A difficulty above 2^63 (open-ethereum-pool's int64 limit) parses.
        let p =
            PendingBlock::from_json(&json!({"number": "0x10", "difficulty": "0x8000000000000001"}))
                .expect("valid block");
        assert_eq!(p.difficulty, U256::from(0x8000_0000_0000_0001u64));
        assert!(PendingBlock::from_json(&json!({"number": 16})).is_err());
    }
}

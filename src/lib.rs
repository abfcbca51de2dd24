//! dagproxy: an Ethash/etchash mining-pool proxy, compatible with open-ethereum-pool's Redis
//! schema, that verifies shares in batches on the GPU (OpenCL) or the CPU.
//!
//! # Layout
//! Follows the data path, front ends to storage:
//! - [`stratum`]: Stratum (EthProxy dialect) server; sans-IO messages and methods.
//! - [`http`]: HTTP getwork front end (axum).
//! - [`pipeline`]: the share pipeline (stale window, one verification, dedup, block submit,
//!   batched Redis writes) and the verdict → JSON-RPC mapping.
//! - [`upstream`]: node JSON-RPC client, health checks and failover, block templates.
//! - [`verify`]: the verifier service (batcher, CPU and OpenCL backends).
//! - [`storage`]: Redis in open-ethereum-pool's schema (atomic Lua writes).
//! - [`ethash`]: the engine (chains, cache, dataset, hashimoto, targets, DAG files).
//! - [`observe`]: `/metrics` (Prometheus), `/health`, `/stats` on their own listener.
//! - [`proxy`], [`config`], [`shutdown`]: wiring, TOML configuration, signals.
//! - [`devnet`], [`miner`], [`loadgen`]: dev chain node, demo miner, load generator.
//! - [`bench`], [`cli`], [`hexutil`]: benchmarks, shared argument parsers, `0x` hex.
//! - [`heap`]: the allocator's settings for long-running commands.
//! - [`policy`]: open-ethereum-pool's policy server (bans, connection limits, black/whitelists).
//! - [`vardiff`]: per-session variable share difficulty.

pub mod bench;
pub mod cli;
pub mod config;
pub mod devnet;
pub mod ethash;
pub mod heap;
pub mod hexutil;
pub mod http;
pub mod loadgen;
pub mod miner;
pub mod observe;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod shutdown;
pub mod storage;
pub mod stratum;
pub mod upstream;
pub mod vardiff;
pub mod verify;

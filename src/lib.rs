//! dagproxy: an Ethash/etchash mining-pool proxy, compatible with open-ethereum-pool's Redis
//! schema, that verifies shares in batches on the GPU (OpenCL) or the CPU.
//!
//! # Layout
//! Follows the data path:
//! - [`ethash`]: the engine (chains, cache, dataset, hashimoto, targets, DAG files).
//! - [`verify`]: the verifier service (batcher, CPU and OpenCL backends).
//! - [`hexutil`]: `0x` hex parsing shared by the CLI and the protocols.
//! - [`cli`]: argument parsers shared by the subcommands.
//! - [`bench`]: the `bench` subcommand's measurements.
//! - [`devnet`]: the embedded development chain.
//! - [`miner`]: the demo CPU miner (Stratum client).
//! - [`storage`]: Redis in open-ethereum-pool's schema.
//! - [`policy`]: open-ethereum-pool's policy server (bans, connection limits, black/whitelists).
//! - [`vardiff`]: per-session variable share difficulty.

pub mod bench;
pub mod cli;
pub mod config;
pub mod devnet;
pub mod ethash;
pub mod hexutil;
pub mod http;
pub mod miner;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod shutdown;
pub mod storage;
pub mod stratum;
pub mod upstream;
pub mod vardiff;
pub mod verify;

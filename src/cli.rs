//! Command-line arguments shared by the subcommands: chain selection, hex values, data paths.

use std::path::PathBuf;

use crate::ethash::ChainSpec;
use crate::hexutil;

/// Parses a chain preset name for clap.
pub fn chain_arg(s: &str) -> Result<ChainSpec, String> {
    s.parse::<ChainSpec>().map_err(|e| e.to_string())
}

/// Parses `0x` + 64 hex digits for clap.
pub fn h256_arg(s: &str) -> Result<[u8; 32], String> {
    hexutil::parse_h256(s, "hash").map_err(|e| e.to_string())
}

/// Parses `0x` + 16 hex digits (big-endian) for clap.
pub fn nonce_arg(s: &str) -> Result<u64, String> {
    hexutil::parse_nonce(s).map_err(|e| e.to_string())
}

/// The default DAG directory: `$DAGPROXY_DATA_DIR`, else `~/.dagproxy/dags`, else `./dags`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DAGPROXY_DATA_DIR") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".dagproxy").join("dags"),
        None => PathBuf::from("dags"),
    }
}

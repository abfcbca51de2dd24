//! The verifier service the share pipeline calls: `check(share) -> ShareCheck`, one hashimoto per
//! share, behind one interface whatever the backend.
//!
//! FIXME(verifier issue): this first version hashes each share with the light cache on the
//! blocking pool; the batching service (OpenCL / rayon over the full DAG) replaces the inside
//! of `Verifier` without changing its API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ethash::{
    check_share, hashimoto, ChainSpec, LightCache, PowInput, PowOutput, ShareCheck, U256,
};

/// Which backend verifies shares (`--verifier`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifierKind {
    /// A GPU if there is one, else the CPU (one log line says why).
    #[default]
    Auto,
    /// OpenCL only.
    Opencl,
    /// rayon over the full DAG in RAM (light cache while it is being built).
    Cpu,
    /// rayon over the light cache only.
    CpuLight,
}

/// Settings of the verifier service.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// Backend choice.
    pub kind: VerifierKind,
    /// Flush a batch at this many shares.
    pub max_batch: usize,
    /// Flush a batch after this long.
    pub max_wait: Duration,
    /// Shares waiting at most; beyond it `check` answers [`VerifyError::Busy`].
    pub queue: usize,
    /// OpenCL device index (`--opencl-device`).
    pub opencl_device: Option<usize>,
    /// DAG directory (None: generate in memory only).
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            kind: VerifierKind::Auto,
            max_batch: 4096,
            max_wait: Duration::from_micros(500),
            queue: 65_536,
            opencl_device: None,
            data_dir: None,
        }
    }
}

/// Errors of the verifier service.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The queue is full: answer the miner "busy", do not buffer without bound.
    #[error("verifier busy")]
    Busy,
    /// The service has stopped.
    #[error("verifier stopped")]
    Stopped,
    /// The backend failed.
    #[error("verifier backend: {0}")]
    Backend(String),
}

/// Handle to the verifier service; cheap to clone.
#[derive(Clone, Debug)]
pub struct Verifier {
    chain: ChainSpec,
    caches: Arc<Mutex<HashMap<u64, Arc<LightCache>>>>,
}

impl Verifier {
    /// Starts the service for a chain.
    pub async fn start(chain: ChainSpec, _config: VerifierConfig) -> Result<Self, VerifyError> {
        Ok(Self {
            chain,
            caches: Arc::default(),
        })
    }

    /// The backend in use, for logs and metrics.
    pub fn backend(&self) -> String {
        "cpu-light".to_string()
    }

    /// Whether shares can be verified now.
    pub fn ready(&self) -> bool {
        true
    }

    /// Tells the service that templates are at `block`, so it can prepare that epoch (and the
    /// next) before shares arrive.
    pub fn prepare(&self, block: u64) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.cache_for(block);
        });
    }

    fn cache_for(&self, block: u64) -> Arc<LightCache> {
        let info = self.chain.epoch_info(block);
        if let Ok(map) = self.caches.lock() {
            if let Some(c) = map.get(&info.epoch) {
                return c.clone();
            }
        }
        let cache = Arc::new(LightCache::new(info));
        if let Ok(mut map) = self.caches.lock() {
            map.retain(|&e, _| e + 2 > info.epoch);
            map.insert(info.epoch, cache.clone());
        }
        cache
    }

    /// Hashimoto of one input at `block`'s epoch.
    pub async fn hash(&self, block: u64, input: PowInput) -> Result<PowOutput, VerifyError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || hashimoto(&*this.cache_for(block), &input))
            .await
            .map_err(|e| VerifyError::Backend(e.to_string()))
    }

    /// Checks a share: one hashimoto, then mix and both targets.
    pub async fn check(
        &self,
        block: u64,
        input: PowInput,
        mix: [u8; 32],
        share_target: U256,
        block_target: U256,
    ) -> Result<ShareCheck, VerifyError> {
        let out = self.hash(block, input).await?;
        Ok(check_share(&out, &mix, share_target, block_target))
    }

    /// Stops taking shares and finishes those in flight.
    pub async fn shutdown(&self) {}
}

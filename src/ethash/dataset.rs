//! The full dataset (DAG) of an epoch: parallel generation from the light cache, with progress.

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::cache::LightCache;
use super::chain::{EpochInfo, HASH_BYTES};
use super::hashimoto::DatasetRows;
use super::memory::NodeBuf;
use super::node::Node;

/// Items generated per parallel task (1 MiB): small enough to balance, large enough to amortise.
const CHUNK_ITEMS: usize = 16 * 1024;

/// A progress callback: `(items done, items total)`, called from worker threads.
pub type ProgressFn<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// The full dataset of one epoch, in memory.
pub struct FullDataset {
    info: EpochInfo,
    nodes: NodeBuf,
}

impl std::fmt::Debug for FullDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FullDataset")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl FullDataset {
    /// Generates every item from the cache on the current rayon pool.
    pub fn generate(cache: &LightCache, progress: ProgressFn<'_>) -> Self {
        let info = *cache.info();
        let total = info.dataset_size / HASH_BYTES;
        let mut nodes = NodeBuf::zeroed(total as usize);
        let done = AtomicU64::new(0);
        progress(0, total);
        nodes
            .par_chunks_mut(CHUNK_ITEMS)
            .enumerate()
            .for_each(|(c, chunk)| {
                cache.fill_items((c * CHUNK_ITEMS) as u64, chunk);
                let now =
                    done.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
                progress(now, total);
            });
        Self { info, nodes }
    }

    /// Wraps nodes read from elsewhere (the on-disk store); the caller has checked them.
    pub(crate) fn from_nodes(info: EpochInfo, nodes: NodeBuf) -> Self {
        Self { info, nodes }
    }

    /// The epoch of this dataset.
    pub fn info(&self) -> &EpochInfo {
        &self.info
    }

    /// The dataset nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The dataset as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.nodes)
    }

    /// The dataset as 128-byte rows, for hashimoto.
    pub fn rows(&self) -> DatasetRows<'_> {
        DatasetRows(bytemuck::cast_slice(&self.nodes))
    }
}

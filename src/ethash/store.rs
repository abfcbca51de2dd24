//! The on-disk DAG store: one file per chain and epoch in a data directory, written atomically
//! and checked on load, so a restart does not regenerate a multi-GiB dataset.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::cache::LightCache;
use super::chain::{ChainSpec, EpochInfo, HASH_BYTES};
use super::dataset::{FullDataset, ProgressFn};
use super::memory::NodeBuf;

const MAGIC: &[u8; 8] = b"DAGPROXY";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;
/// Items recomputed from the cache to check a loaded file.
const SPOT_CHECKS: u64 = 64;

/// Errors of the DAG store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("DAG file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists but is not this epoch's dataset.
    #[error("DAG file {path} is unusable: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What did not match.
        why: String,
    },
}

/// A directory of DAG files.
#[derive(Clone, Debug)]
pub struct DagStore {
    dir: PathBuf,
}

impl DagStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file for one chain and epoch.
    pub fn path(&self, chain: &ChainSpec, info: &EpochInfo) -> PathBuf {
        self.dir.join(format!(
            "{}-epoch{}-{}.dag",
            chain.name, info.epoch, info.dataset_size
        ))
    }

    /// Loads the dataset if a file exists; `Ok(None)` when there is none.
    pub fn load(
        &self,
        chain: &ChainSpec,
        cache: &LightCache,
    ) -> Result<Option<FullDataset>, StoreError> {
        let info = *cache.info();
        let path = self.path(chain, &info);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let corrupt = |why: String| StoreError::Corrupt {
            path: path.clone(),
            why,
        };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let len = file.metadata().map_err(io)?.len();
        if len != HEADER_BYTES as u64 + info.dataset_size {
            return Err(corrupt(format!(
                "length {len}, expected {}",
                HEADER_BYTES as u64 + info.dataset_size
            )));
        }
        let mut header = [0u8; HEADER_BYTES];
        file.read_exact(&mut header).map_err(io)?;
        if header != encode_header(&info) {
            return Err(corrupt("header does not match this epoch".into()));
        }
        let items = info.dataset_size / HASH_BYTES;
        let mut nodes = NodeBuf::zeroed(items as usize);
        file.read_exact(bytemuck::cast_slice_mut(&mut nodes[..]))
            .map_err(io)?;
        // Spot-check items spread over the file, first and last included.
        for k in 0..SPOT_CHECKS {
            let i = if k == SPOT_CHECKS - 1 {
                items - 1
            } else {
                k.wrapping_mul(0x9E37_79B9_7F4A_7C15) % items
            };
            if nodes[i as usize] != cache.item(i as u32) {
                return Err(corrupt(format!("item {i} differs from the cache")));
            }
        }
        Ok(Some(FullDataset::from_nodes(info, nodes)))
    }

    /// Writes the dataset (to a temporary name, then renamed into place).
    pub fn save(&self, chain: &ChainSpec, dataset: &FullDataset) -> Result<PathBuf, StoreError> {
        let path = self.path(chain, dataset.info());
        let tmp = path.with_extension("dag.tmp");
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(io)?;
        let file = File::create(&tmp).map_err(io)?;
        let mut w = BufWriter::with_capacity(8 << 20, file);
        w.write_all(&encode_header(dataset.info())).map_err(io)?;
        w.write_all(dataset.as_bytes()).map_err(io)?;
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(path)
    }

    /// Loads the epoch's dataset, or generates and saves it. A bad file is reported through
    /// `on_bad_file` and regenerated.
    pub fn load_or_generate(
        &self,
        chain: &ChainSpec,
        cache: &LightCache,
        progress: ProgressFn<'_>,
        on_bad_file: &dyn Fn(&StoreError),
    ) -> Result<FullDataset, StoreError> {
        match self.load(chain, cache) {
            Ok(Some(ds)) => return Ok(ds),
            Ok(None) => {}
            Err(e) => on_bad_file(&e),
        }
        let ds = FullDataset::generate(cache, progress);
        self.save(chain, &ds)?;
        Ok(ds)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn encode_header(info: &EpochInfo) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&info.epoch.to_le_bytes());
    h[24..32].copy_from_slice(&info.dataset_size.to_le_bytes());
    h[32..64].copy_from_slice(&info.seed);
    h
}

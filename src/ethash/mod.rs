//! The ethash/etchash engine: chain parameters, light cache, dataset, hashimoto, targets and the
//! on-disk DAG store. Pure CPU code; every other part of dagproxy rests on it.

pub mod cache;
pub mod chain;
pub mod dataset;
pub mod hashimoto;
pub mod keccak;
pub mod keccak_x8;
pub mod memory;
pub mod node;
pub mod progress;
pub mod simd;
pub mod store;
pub mod target;

pub use cache::LightCache;
pub use chain::{ChainError, ChainSpec, EpochInfo, SizeRule};
pub use dataset::FullDataset;
pub use hashimoto::{hashimoto, hashimoto_batch, hashimoto_par, PowInput, PowOutput, RowSource};
pub use node::Node;
pub use store::{DagStore, StoreError};
pub use target::{check_share, ShareCheck, U256};

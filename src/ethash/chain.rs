//! Chain parameters as data: epoch length (ethash, ECIP-1099 etchash), cache/dataset sizes and
//! seed hashes for any epoch, with named presets.

use std::fmt;
use std::str::FromStr;

use super::keccak::keccak256;

/// Bytes in a cache/dataset node (one keccak-512 output).
pub const HASH_BYTES: u64 = 64;
/// Bytes mixed per dataset access (two nodes).
pub const MIX_BYTES: u64 = 128;
const CACHE_BYTES_INIT: u64 = 1 << 24;
const CACHE_BYTES_GROWTH: u64 = 1 << 17;
const DATASET_BYTES_INIT: u64 = 1 << 30;
const DATASET_BYTES_GROWTH: u64 = 1 << 23;
/// The epoch length of plain ethash, which also counts seed-hash iterations on every chain.
pub const ETHASH_EPOCH_LENGTH: u64 = 30_000;
/// The epoch length after ECIP-1099 (etchash).
pub const ECIP1099_EPOCH_LENGTH: u64 = 60_000;
/// go-ethereum's test mode: tiny sizes for every epoch.
const TEST_CACHE_BYTES: u64 = 1024;
const TEST_DATASET_BYTES: u64 = 32 * 1024;

/// Errors in chain parameters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// The name is not a preset.
    #[error("unknown chain '{0}' (known: ethereum, classic, mordor, test)")]
    Unknown(String),
    /// A custom chain with unusable parameters.
    #[error("invalid chain parameters: {0}")]
    Invalid(&'static str),
}

/// How big the cache and dataset are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeRule {
    /// The ethash growth formula with the prime search.
    Ethash,
    /// go-ethereum test mode: 1 KiB cache, 32 KiB dataset whatever the epoch.
    Test,
}

/// The parameters that tell the epoch, sizes and seed of a block on one chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSpec {
    /// Preset or custom name; also names the DAG files on disk.
    pub name: String,
    /// Epoch length before the ECIP-1099 activation (30000 on every real chain).
    pub epoch_length: u64,
    /// `(activation block, new epoch length)` for ECIP-1099-style chains.
    pub ecip1099: Option<(u64, u64)>,
    /// Size formula.
    pub sizes: SizeRule,
}

/// Everything that identifies one epoch's cache and dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EpochInfo {
    /// The epoch number in the chain's own numbering (etchash epochs are 60000 blocks long).
    pub epoch: u64,
    /// Seed of the light cache.
    pub seed: [u8; 32],
    /// Light cache size in bytes.
    pub cache_size: u64,
    /// Full dataset size in bytes.
    pub dataset_size: u64,
}

impl ChainSpec {
    /// Ethereum-style ethash.
    pub fn ethereum() -> Self {
        Self::custom("ethereum", ETHASH_EPOCH_LENGTH, None, SizeRule::Ethash)
    }

    /// Ethereum Classic: etchash from block 11,700,000.
    pub fn classic() -> Self {
        Self::custom(
            "classic",
            ETHASH_EPOCH_LENGTH,
            Some((11_700_000, ECIP1099_EPOCH_LENGTH)),
            SizeRule::Ethash,
        )
    }

    /// Mordor, Ethereum Classic's testnet: etchash from block 2,520,000.
    pub fn mordor() -> Self {
        Self::custom(
            "mordor",
            ETHASH_EPOCH_LENGTH,
            Some((2_520_000, ECIP1099_EPOCH_LENGTH)),
            SizeRule::Ethash,
        )
    }

    /// go-ethereum test mode (and the embedded dev chain).
    pub fn test() -> Self {
        Self::custom("test", ETHASH_EPOCH_LENGTH, None, SizeRule::Test)
    }

    /// A chain given by its parameters.
    pub fn custom(
        name: &str,
        epoch_length: u64,
        ecip1099: Option<(u64, u64)>,
        sizes: SizeRule,
    ) -> Self {
        Self {
            name: name.to_string(),
            epoch_length,
            ecip1099,
            sizes,
        }
    }

    /// Checks that a custom chain can be computed with.
    pub fn validate(&self) -> Result<(), ChainError> {
        let multiple = |len: u64| len > 0 && len.is_multiple_of(ETHASH_EPOCH_LENGTH);
        if !multiple(self.epoch_length) {
            return Err(ChainError::Invalid(
                "epoch length must be a positive multiple of 30000",
            ));
        }
        if let Some((_, len)) = self.ecip1099 {
            if !multiple(len) {
                return Err(ChainError::Invalid(
                    "ECIP-1099 epoch length must be a positive multiple of 30000",
                ));
            }
        }
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ChainError::Invalid(
                "chain name must be non-empty [A-Za-z0-9_-]",
            ));
        }
        Ok(())
    }

    /// The epoch length in force at `block`.
    pub fn epoch_length_at(&self, block: u64) -> u64 {
        match self.ecip1099 {
            Some((activation, len)) if block >= activation => len,
            _ => self.epoch_length,
        }
    }

    /// The epoch of `block`.
    pub fn epoch(&self, block: u64) -> u64 {
        block / self.epoch_length_at(block)
    }

    /// Epoch, seed and sizes for `block`.
    pub fn epoch_info(&self, block: u64) -> EpochInfo {
        let len = self.epoch_length_at(block);
        self.info_for(block / len, len)
    }

    /// Epoch info for an epoch number counted in `epoch_length`-block epochs.
    pub fn info_for(&self, epoch: u64, epoch_length: u64) -> EpochInfo {
        // core-geth: seed of the block `epoch * length + 1`, one keccak per 30000 blocks.
        let rounds = (epoch * epoch_length + 1) / ETHASH_EPOCH_LENGTH;
        let (cache_size, dataset_size) = match self.sizes {
            SizeRule::Ethash => (cache_size(epoch), dataset_size(epoch)),
            SizeRule::Test => (TEST_CACHE_BYTES, TEST_DATASET_BYTES),
        };
        EpochInfo {
            epoch,
            seed: seed_hash(rounds),
            cache_size,
            dataset_size,
        }
    }

    /// The epoch info the block right after the current epoch's last block will use, so the
    /// next DAG can be prepared before the boundary.
    pub fn next_epoch_info(&self, block: u64) -> EpochInfo {
        let len = self.epoch_length_at(block);
        let next_start = (block / len + 1) * len;
        self.epoch_info(next_start)
    }

    /// The first block of the epoch containing `block`.
    pub fn epoch_start(&self, block: u64) -> u64 {
        let len = self.epoch_length_at(block);
        let start = block / len * len;
        match self.ecip1099 {
            // The first etchash epoch can start mid-epoch of the old numbering.
            Some((activation, _)) if block >= activation => start.max(activation),
            _ => start,
        }
    }
}

impl FromStr for ChainSpec {
    type Err = ChainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ethereum" | "eth" | "mainnet" => Ok(Self::ethereum()),
            "classic" | "etc" => Ok(Self::classic()),
            "mordor" => Ok(Self::mordor()),
            "test" | "dev" => Ok(Self::test()),
            other => Err(ChainError::Unknown(other.to_string())),
        }
    }
}

impl fmt::Display for ChainSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Light cache size in bytes for an epoch (ethash growth formula).
pub fn cache_size(epoch: u64) -> u64 {
    let mut size = CACHE_BYTES_INIT + CACHE_BYTES_GROWTH * epoch - HASH_BYTES;
    while !is_prime(size / HASH_BYTES) {
        size -= 2 * HASH_BYTES;
    }
    size
}

/// Full dataset size in bytes for an epoch (ethash growth formula).
pub fn dataset_size(epoch: u64) -> u64 {
    let mut size = DATASET_BYTES_INIT + DATASET_BYTES_GROWTH * epoch - MIX_BYTES;
    while !is_prime(size / MIX_BYTES) {
        size -= 2 * MIX_BYTES;
    }
    size
}

/// Seed hash after `rounds` keccak-256 iterations of 32 zero bytes.
pub fn seed_hash(rounds: u64) -> [u8; 32] {
    let mut seed = [0u8; 32];
    for _ in 0..rounds {
        seed = keccak256(&seed);
    }
    seed
}

/// Deterministic trial division; the numbers here are below 2^40.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_zero_sizes() {
        assert_eq!(cache_size(0), 16_776_896);
        assert_eq!(dataset_size(0), 1_073_739_904);
    }

    #[test]
    fn primes() {
        assert!(is_prime(2) && is_prime(3) && is_prime(262_139) && !is_prime(1) && !is_prime(9));
    }

    #[test]
    fn classic_switches_epoch_length_at_activation() {
        let c = ChainSpec::classic();
        assert_eq!(c.epoch(11_699_999), 389);
        assert_eq!(c.epoch(11_700_000), 195);
        assert_eq!(c.epoch_start(11_700_000), 11_700_000);
        // Seed of etchash epoch 195 is the ethash seed of epoch 390.
        assert_eq!(c.epoch_info(11_700_000).seed, seed_hash(390));
        assert_eq!(c.epoch_info(11_699_999).seed, seed_hash(389));
        assert_eq!(c.epoch_info(11_700_000).dataset_size, dataset_size(195));
    }

    #[test]
    fn presets_parse_and_unknown_is_an_error() {
        assert_eq!("mordor".parse::<ChainSpec>(), Ok(ChainSpec::mordor()));
        assert!(matches!(
            "nope".parse::<ChainSpec>(),
            Err(ChainError::Unknown(_))
        ));
    }

    #[test]
    fn custom_chain_validation() {
        assert!(
            ChainSpec::custom("x", 30_000, Some((10, 60_000)), SizeRule::Ethash)
                .validate()
                .is_ok()
        );
        assert!(ChainSpec::custom("x", 0, None, SizeRule::Ethash)
            .validate()
            .is_err());
        assert!(
            ChainSpec::custom("x", 30_000, Some((10, 45_000)), SizeRule::Ethash)
                .validate()
                .is_err()
        );
        assert!(ChainSpec::custom("a/b", 30_000, None, SizeRule::Ethash)
            .validate()
            .is_err());
    }
}

//! Block templates, sans-IO: building the next template from a node's work and pending block,
//! the chain-preset check of seed and height, and the window of recent headers a share may
//! still be submitted against.

use std::collections::HashMap;

use crate::ethash::target::difficulty_from_target;
use crate::ethash::{ChainSpec, U256};
use crate::hexutil::to_hex;

use super::rpc::{PendingBlock, Work};

/// Heights whose headers stay valid: the current one and the two before it.
pub const MAX_BACKLOG: u64 = 3;

/// What a header that shares may target is worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Block number the header is for.
    pub height: u64,
    /// Block target of the header (from the getWork boundary).
    pub target: U256,
    /// Block difficulty the boundary stands for (the round difficulty of a found block).
    pub difficulty: U256,
}

/// The work the proxy hands out now, plus the recent headers still accepted.
#[derive(Clone, Debug)]
pub struct BlockTemplate {
    /// Current header hash.
    pub header: [u8; 32],
    /// `0x` hex of `header`.
    pub header_hex: String,
    /// `0x` hex of the seed hash.
    pub seed_hex: String,
    /// Block target of the current header.
    pub target: U256,
    /// Pending block difficulty as the node reports it.
    pub difficulty: U256,
    /// Current height.
    pub height: u64,
    /// Headers of the last [`MAX_BACKLOG`] heights, current included.
    pub headers: HashMap<[u8; 32], HeaderInfo>,
}

/// Why a template was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// The node's seed hash is not the chain preset's at this height: verifying would use a
    /// wrong DAG, so the template is refused.
    #[error(
        "seed hash {got} at height {height} is not the {chain} preset's {want}: \
         wrong --chain for this node? template refused"
    )]
    SeedMismatch {
        /// Chain preset name.
        chain: String,
        /// Template height.
        height: u64,
        /// Seed from the node.
        got: String,
        /// Seed the preset computes.
        want: String,
    },
    /// A zero boundary has no difficulty.
    #[error("zero block target from the node")]
    ZeroTarget,
}

impl BlockTemplate {
    /// The next template from the node's answers, `None` when the header did not change.
    pub fn next(
        chain: &ChainSpec,
        prev: Option<&BlockTemplate>,
        work: &Work,
        pending: &PendingBlock,
    ) -> Result<Option<Self>, TemplateError> {
        if prev.is_some_and(|p| p.header == work.header) {
            return Ok(None);
        }
        let height = work.number.unwrap_or(pending.number);
        let want = chain.epoch_info(height).seed;
        if want != work.seed {
            return Err(TemplateError::SeedMismatch {
                chain: chain.name.clone(),
                height,
                got: to_hex(&work.seed),
                want: to_hex(&want),
            });
        }
        if work.target.is_zero() {
            return Err(TemplateError::ZeroTarget);
        }
        // The node's own 256-bit difficulty when the pending block is this height's; else the
        // one the boundary stands for (as open-ethereum-pool computes it).
        let difficulty = if pending.number == height {
            pending.difficulty
        } else {
            difficulty_from_target(work.target).map_err(|_| TemplateError::ZeroTarget)?
        };
        let mut headers: HashMap<[u8; 32], HeaderInfo> = prev
            .map(|p| {
                p.headers
                    .iter()
                    .filter(|(_, h)| h.height + MAX_BACKLOG > height && h.height <= height)
                    .map(|(k, v)| (*k, *v))
                    .collect()
            })
            .unwrap_or_default();
        headers.insert(
            work.header,
            HeaderInfo {
                height,
                target: work.target,
                difficulty,
            },
        );
        Ok(Some(Self {
            header: work.header,
            header_hex: to_hex(&work.header),
            seed_hex: to_hex(&work.seed),
            target: work.target,
            difficulty: pending.difficulty,
            height,
            headers,
        }))
    }

    /// The header's info if shares for it are still accepted.
    pub fn lookup(&self, header: &[u8; 32]) -> Option<HeaderInfo> {
        self.headers.get(header).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ethash::target::target_from_difficulty;

    fn work(chain: &ChainSpec, header: u8, height: u64) -> Work {
        Work {
            header: [header; 32],
            seed: chain.epoch_info(height).seed,
            target: target_from_difficulty(U256::from(1000u32)).expect("nonzero"),
            number: Some(height),
        }
    }

    fn pending(height: u64) -> PendingBlock {
        PendingBlock {
            number: height,
            difficulty: U256::from(1000u32),
        }
    }

    #[test]
    fn keeps_three_heights_and_skips_unchanged_headers() {
        let chain = ChainSpec::test();
        let mut t = BlockTemplate::next(&chain, None, &work(&chain, 1, 10), &pending(10))
            .expect("valid")
            .expect("new");
        assert_eq!(t.difficulty, U256::from(1000u32));
        assert_eq!(t.lookup(&[1; 32]).map(|h| h.height), Some(10));
        assert!(
            BlockTemplate::next(&chain, Some(&t), &work(&chain, 1, 10), &pending(10))
                .expect("valid")
                .is_none()
        );
        for (h, height) in [(2u8, 10u64), (3, 11), (4, 12)] {
            t = BlockTemplate::next(&chain, Some(&t), &work(&chain, h, height), &pending(height))
                .expect("valid")
                .expect("new");
        }
        // Heights 10, 11, 12 are in the window; 13 drops 10.
        assert!(t.lookup(&[1; 32]).is_some() && t.lookup(&[2; 32]).is_some());
        t = BlockTemplate::next(&chain, Some(&t), &work(&chain, 5, 13), &pending(13))
            .expect("valid")
            .expect("new");
        assert!(t.lookup(&[1; 32]).is_none() && t.lookup(&[2; 32]).is_none());
        assert_eq!(t.lookup(&[3; 32]).map(|h| h.height), Some(11));
        assert_eq!(t.header_hex, to_hex(&[5; 32]));
    }

    #[test]
    fn header_difficulty_is_the_nodes_when_heights_agree() {
        let chain = ChainSpec::test();
        let big = U256::from(1u8) << 200;
        let p = PendingBlock {
            number: 7,
            difficulty: big,
        };
        let mut w = work(&chain, 1, 7);
        w.target = target_from_difficulty(big).expect("nonzero");
        let t = BlockTemplate::next(&chain, None, &w, &p)
            .expect("valid")
            .expect("new");
        assert_eq!(t.lookup(&[1; 32]).map(|h| h.difficulty), Some(big));
        // A pending block of another height: the boundary's difficulty.
        let t = BlockTemplate::next(&chain, None, &work(&chain, 2, 8), &p)
            .expect("valid")
            .expect("new");
        assert_eq!(
            t.lookup(&[2; 32]).map(|h| h.difficulty),
            Some(U256::from(1000u32))
        );
        w.target = U256::ZERO;
        assert_eq!(
            BlockTemplate::next(&chain, None, &w, &p).expect_err("zero"),
            TemplateError::ZeroTarget
        );
    }

    #[test]
    fn refuses_a_seed_from_another_chain() {
        let chain = ChainSpec::ethereum();
        let mut w = work(&chain, 1, 30_000);
        w.seed = chain.epoch_info(0).seed;
        let e = BlockTemplate::next(&chain, None, &w, &pending(30_000)).expect_err("mismatch");
        assert!(matches!(
            e,
            TemplateError::SeedMismatch { height: 30_000, .. }
        ));
        // Without a number in getWork, the pending block's number is used.
        let mut w = work(&chain, 1, 5);
        w.number = None;
        assert!(BlockTemplate::next(&chain, None, &w, &pending(5)).is_ok());
    }
}

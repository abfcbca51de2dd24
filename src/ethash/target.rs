//! Difficulty ↔ target in 256-bit arithmetic, and the share check (`RAND(h, n) <= M / d`).

use super::hashimoto::PowOutput;

/// 256-bit unsigned integer.
pub type U256 = ruint::aliases::U256;

/// Errors in difficulty/target values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// Difficulty zero has no target.
    #[error("difficulty must be at least 1")]
    ZeroDifficulty,
    /// Not a decimal or 0x-hex 256-bit number.
    #[error("not a 256-bit number: {0}")]
    BadNumber(String),
}

/// `floor(2^256 / d)`, with `d = 1` meaning every result passes (`2^256 - 1`).
pub fn target_from_difficulty(difficulty: U256) -> Result<U256, TargetError> {
    if difficulty.is_zero() {
        return Err(TargetError::ZeroDifficulty);
    }
    if difficulty == U256::from(1u8) {
        return Ok(U256::MAX);
    }
    // 2^256 = MAX + 1 = q*d + r + 1: one more than MAX / d exactly when r + 1 == d.
    let q = U256::MAX / difficulty;
    let r = U256::MAX % difficulty;
    Ok(if r + U256::from(1u8) == difficulty {
        q + U256::from(1u8)
    } else {
        q
    })
}

/// The difficulty a target stands for (the same `2^256 / x` map; a zero target has none).
pub fn difficulty_from_target(target: U256) -> Result<U256, TargetError> {
    target_from_difficulty(target)
}

/// Whether a hashimoto result (big-endian) is at or below the target.
pub fn meets_target(result: &[u8; 32], target: U256) -> bool {
    U256::from_be_bytes(*result) <= target
}

/// A target as the 0x + 64-hex-digit string miners expect.
pub fn target_hex(target: U256) -> String {
    format!("0x{}", hex::encode(target.to_be_bytes::<32>()))
}

/// Parses a 256-bit number given as decimal or `0x` hex (as nodes and configs write them).
pub fn parse_u256(s: &str) -> Result<U256, TargetError> {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.len() <= 64 => U256::from_str_radix(hex, 16),
        Some(_) => return Err(TargetError::BadNumber(s.to_string())),
        None if !s.is_empty() && s.len() <= 78 => U256::from_str_radix(s, 10),
        None => return Err(TargetError::BadNumber(s.to_string())),
    };
    parsed.map_err(|_| TargetError::BadNumber(s.to_string()))
}

/// What one hashimoto says about a submitted share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareCheck {
    /// The submitted mix digest is not the computed one.
    MixMismatch,
    /// The result is above the share target.
    LowDifficulty,
    /// A valid share that does not meet the block target.
    Share,
    /// A valid share that also meets the block target.
    Block,
}

/// Checks one hashimoto output against the submitted mix and both targets.
pub fn check_share(
    out: &PowOutput,
    submitted_mix: &[u8; 32],
    share_target: U256,
    block_target: U256,
) -> ShareCheck {
    if &out.mix_digest != submitted_mix {
        return ShareCheck::MixMismatch;
    }
    let value = U256::from_be_bytes(out.result);
    if value <= block_target {
        // A block is always a share, even if a vardiff share target is lower than the block's.
        ShareCheck::Block
    } else if value <= share_target {
        ShareCheck::Share
    } else {
        ShareCheck::LowDifficulty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_of_one_and_powers_of_two() {
        assert_eq!(target_from_difficulty(U256::from(1u8)), Ok(U256::MAX));
        assert_eq!(
            target_from_difficulty(U256::from(2u8)),
            Ok(U256::from(1u8) << 255)
        );
        assert_eq!(
            target_from_difficulty(U256::from(1u64 << 32)),
            Ok(U256::from(1u8) << 224)
        );
        assert_eq!(
            target_from_difficulty(U256::ZERO),
            Err(TargetError::ZeroDifficulty)
        );
    }

    #[test]
    fn target_of_odd_difficulty_is_floor() {
        let d = U256::from(3u8);
        let t = target_from_difficulty(d).expect("nonzero");
        // t*3 <= 2^256 - 1 < (t+1)*3
        assert!(t.checked_mul(d).is_some());
        assert!((t + U256::from(1u8)).checked_mul(d).is_none());
    }

    #[test]
    fn seed_share_target_matches_pool_default() {
        // open-ethereum-pool's default share difficulty 2,000,000,000.
        let t = target_from_difficulty(U256::from(2_000_000_000u64)).expect("nonzero");
        assert_eq!(
            target_hex(t),
            "0x0000000225c17d04dad2965cc5a02a23e254c0c3f75d9178046aeb27ce1ca574"
        );
    }

    #[test]
    fn parse_numbers() {
        assert_eq!(parse_u256("0x10"), Ok(U256::from(16u8)));
        assert_eq!(parse_u256("131072"), Ok(U256::from(131_072u32)));
        assert!(parse_u256("0x").is_err());
        assert!(parse_u256("12a").is_err());
        assert!(parse_u256("").is_err());
    }

    #[test]
    fn share_check_orders_mix_then_block_then_share() {
        let out = PowOutput {
            mix_digest: [1; 32],
            result: {
                let mut r = [0u8; 32];
                r[0] = 0x10;
                r
            },
        };
        let high = U256::from(0x20u8) << 248;
        let low = U256::from(0x08u8) << 248;
        assert_eq!(
            check_share(&out, &[2; 32], high, high),
            ShareCheck::MixMismatch
        );
        assert_eq!(check_share(&out, &[1; 32], high, low), ShareCheck::Share);
        assert_eq!(check_share(&out, &[1; 32], high, high), ShareCheck::Block);
        assert_eq!(
            check_share(&out, &[1; 32], low, low),
            ShareCheck::LowDifficulty
        );
    }
}

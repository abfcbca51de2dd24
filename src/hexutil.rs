//! Parsing and printing of the `0x`-prefixed hex values ethash protocols use.

/// Errors in hex values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HexError {
    /// Missing `0x` prefix.
    #[error("{what}: expected 0x-prefixed hex")]
    NoPrefix {
        /// Which value.
        what: &'static str,
    },
    /// Wrong number of digits.
    #[error("{what}: expected {expected} hex digits, got {got}")]
    Length {
        /// Which value.
        what: &'static str,
        /// Digits wanted.
        expected: usize,
        /// Digits given.
        got: usize,
    },
    /// A non-hex character.
    #[error("{what}: invalid hex digit")]
    Digit {
        /// Which value.
        what: &'static str,
    },
}

/// Parses `0x` + exactly `2*N` hex digits into bytes.
pub fn parse_fixed<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], HexError> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or(HexError::NoPrefix { what })?;
    if digits.len() != 2 * N {
        return Err(HexError::Length {
            what,
            expected: 2 * N,
            got: digits.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).map_err(|_| HexError::Digit { what })?;
    Ok(out)
}

/// Parses a 32-byte hash (`0x` + 64 hex digits).
pub fn parse_h256(s: &str, what: &'static str) -> Result<[u8; 32], HexError> {
    parse_fixed::<32>(s, what)
}

/// Parses a nonce (`0x` + 16 hex digits, big-endian as in the header).
pub fn parse_nonce(s: &str) -> Result<u64, HexError> {
    parse_fixed::<8>(s, "nonce").map(u64::from_be_bytes)
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `0x` + lowercase hex of `bytes` (a digit at a time: `hex::encode` and `format!` cost
/// several times more, and every share prints three of these).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(2 + 2 * bytes.len());
    out.push_str("0x");
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// `0x` + lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    push_hex(&mut s, bytes);
    s
}

/// A nonce as `0x` + 16 hex digits.
pub fn nonce_hex(nonce: u64) -> String {
    to_hex(&nonce.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(parse_nonce("0x0000000000000102"), Ok(0x102));
        assert_eq!(nonce_hex(0x102), "0x0000000000000102");
        assert!(matches!(parse_nonce("0x12"), Err(HexError::Length { .. })));
        assert!(matches!(
            parse_nonce("000000000000000102"),
            Err(HexError::NoPrefix { .. })
        ));
        assert!(matches!(
            parse_h256(&format!("0x{}", "g".repeat(64)), "h"),
            Err(HexError::Digit { .. })
        ));
        let h = [0xabu8; 32];
        assert_eq!(parse_h256(&to_hex(&h), "h"), Ok(h));
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(to_hex(&bytes), format!("0x{}", hex::encode(&bytes)));
        assert_eq!(nonce_hex(u64::MAX), "0xffffffffffffffff");
        assert_eq!(to_hex(&[]), "0x");
    }
}

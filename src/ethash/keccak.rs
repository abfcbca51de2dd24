//! Keccak-256/512 (original Keccak padding) over the raw f1600 permutation, with fixed-size
//! fast paths for the shapes ethash hashes millions of times.

use super::keccak_x8::{f1600_x8, States, WAYS};

/// Fewest inputs in a group of eight for which the eight-way permutation beats doing them one
/// by one (unused ways cost as much as used ones).
const MIN_X8: usize = 3;

/// Rate of keccak-512 in 64-bit words (72 bytes).
const RATE512: usize = 9;
/// Rate of keccak-256 in 64-bit words (136 bytes).
const RATE256: usize = 17;
/// The final padding bit (0x80) sits in the last byte of the rate.
const PAD_END: u64 = 0x80 << 56;

/// Sponge over arbitrary input: absorbs whole blocks, pads with 0x01 .. 0x80.
fn sponge<const RATE: usize, const OUT: usize>(data: &[u8]) -> [u8; OUT] {
    let mut state = [0u64; 25];
    let rate_bytes = RATE * 8;
    let mut chunks = data.chunks_exact(rate_bytes);
    for block in &mut chunks {
        for (lane, word) in state.iter_mut().zip(block.chunks_exact(8)) {
            *lane ^= u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        }
        keccak::f1600(&mut state);
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 200];
    last[..rest.len()].copy_from_slice(rest);
    last[rest.len()] ^= 0x01;
    last[rate_bytes - 1] ^= 0x80;
    for (lane, word) in state.iter_mut().zip(last[..rate_bytes].chunks_exact(8)) {
        *lane ^= u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
    }
    keccak::f1600(&mut state);
    let mut out = [0u8; OUT];
    for (dst, lane) in out.chunks_mut(8).zip(state.iter()) {
        dst.copy_from_slice(&lane.to_le_bytes()[..dst.len()]);
    }
    out
}

/// Keccak-256 of any input.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    sponge::<RATE256, 32>(data)
}

/// Keccak-512 of any input.
pub fn keccak512(data: &[u8]) -> [u8; 64] {
    sponge::<RATE512, 64>(data)
}

/// Keccak-512 of exactly 64 bytes given as eight little-endian words (cache and dataset nodes).
#[inline(always)]
pub fn keccak512_64(words: &[u64; 8]) -> [u64; 8] {
    let mut state = [0u64; 25];
    state[..8].copy_from_slice(words);
    state[8] = 0x01 | PAD_END;
    keccak::f1600(&mut state);
    let mut out = [0u64; 8];
    out.copy_from_slice(&state[..8]);
    out
}

/// Keccak-512 of `header_hash || nonce_le` (40 bytes): the seed of hashimoto.
#[inline(always)]
pub fn keccak512_header_nonce(header: &[u8; 32], nonce: u64) -> [u64; 8] {
    let mut state = [0u64; 25];
    for (lane, word) in state.iter_mut().zip(header.chunks_exact(8)) {
        *lane = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
    }
    state[4] = nonce;
    state[5] = 0x01;
    state[RATE512 - 1] = PAD_END;
    keccak::f1600(&mut state);
    let mut out = [0u64; 8];
    out.copy_from_slice(&state[..8]);
    out
}

/// Keccak-256 of `seed (64 bytes) || compressed mix (32 bytes)`: hashimoto's result.
#[inline(always)]
pub fn keccak256_seed_cmix(seed: &[u64; 8], cmix: &[u64; 4]) -> [u8; 32] {
    let mut state = [0u64; 25];
    state[..8].copy_from_slice(seed);
    state[8..12].copy_from_slice(cmix);
    state[12] = 0x01;
    state[RATE256 - 1] = PAD_END;
    keccak::f1600(&mut state);
    let mut out = [0u8; 32];
    for (dst, lane) in out.chunks_exact_mut(8).zip(state.iter()) {
        dst.copy_from_slice(&lane.to_le_bytes());
    }
    out
}

/// Fills `out[k]` for every `k`: eight at a time with `eight` (given the group's indices)
/// where that pays, one at a time with `one` otherwise. Unused ways of the last group repeat
/// its first index; their results are dropped.
#[inline]
pub fn in_groups<O>(
    out: &mut [O],
    one: impl Fn(usize) -> O,
    eight: impl Fn([usize; WAYS]) -> [O; WAYS],
) {
    for (g, group) in out.chunks_mut(WAYS).enumerate() {
        let first = g * WAYS;
        if group.len() < MIN_X8 {
            for (k, o) in group.iter_mut().enumerate() {
                *o = one(first + k);
            }
            continue;
        }
        let len = group.len();
        let got = eight(core::array::from_fn(|k| {
            first + if k < len { k } else { 0 }
        }));
        for (o, r) in group.iter_mut().zip(got) {
            *o = r;
        }
    }
}

/// [`keccak512_64`] of every element, in place.
pub fn keccak512_64_each(words: &mut [[u64; 8]]) {
    for group in words.chunks_mut(WAYS) {
        let src: [[u64; 8]; WAYS] =
            core::array::from_fn(|k| group.get(k).copied().unwrap_or_default());
        in_groups(
            group,
            |k| keccak512_64(&src[k]),
            |ks| keccak512_64_x8(ks.map(|k| &src[k])),
        );
    }
}

/// [`keccak512_64`] of eight inputs at once.
#[inline]
pub fn keccak512_64_x8(words: [&[u64; 8]; WAYS]) -> [[u64; 8]; WAYS] {
    let mut s: States = [[0; WAYS]; 25];
    for (k, w) in words.iter().enumerate() {
        for (i, v) in w.iter().enumerate() {
            s[i][k] = *v;
        }
    }
    s[8] = [0x01 | PAD_END; WAYS];
    f1600_x8(&mut s);
    core::array::from_fn(|k| core::array::from_fn(|w| s[w][k]))
}

/// [`keccak512_header_nonce`] of eight inputs at once.
#[inline]
pub fn keccak512_header_nonce_x8(
    headers: [&[u8; 32]; WAYS],
    nonces: [u64; WAYS],
) -> [[u64; 8]; WAYS] {
    let mut s: States = [[0; WAYS]; 25];
    for (k, header) in headers.iter().enumerate() {
        for (w, word) in header.chunks_exact(8).enumerate() {
            s[w][k] = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        }
    }
    s[4] = nonces;
    s[5] = [0x01; WAYS];
    s[RATE512 - 1] = [PAD_END; WAYS];
    f1600_x8(&mut s);
    core::array::from_fn(|k| core::array::from_fn(|w| s[w][k]))
}

/// [`keccak256_seed_cmix`] of eight inputs at once.
#[inline]
pub fn keccak256_seed_cmix_x8(
    seeds: [&[u64; 8]; WAYS],
    cmixes: [&[u64; 4]; WAYS],
) -> [[u8; 32]; WAYS] {
    let mut s: States = [[0; WAYS]; 25];
    for k in 0..WAYS {
        for w in 0..8 {
            s[w][k] = seeds[k][w];
        }
        for w in 0..4 {
            s[8 + w][k] = cmixes[k][w];
        }
    }
    s[12] = [0x01; WAYS];
    s[RATE256 - 1] = [PAD_END; WAYS];
    f1600_x8(&mut s);
    core::array::from_fn(|k| {
        let mut out = [0u8; 32];
        for (w, dst) in out.chunks_exact_mut(8).enumerate() {
            dst.copy_from_slice(&s[w][k].to_le_bytes());
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        hex::encode(b)
    }

    #[test]
    fn empty_input_matches_known_digests() {
        assert_eq!(
            hex(&keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
        assert_eq!(
            hex(&keccak512(b"")),
            "0eab42de4c3ceb9235fc91acffe746b29c29a8c366b7c60e4e67c466f36a4304\
             c00fa9caf9d87976ba469bcbe06713b435f091ef2769fb160cdab33d3670680e"
        );
    }

    #[test]
    fn multi_block_input_is_absorbed() {
        // 200 bytes crosses both rates; compare the streaming sponge with the fast paths' shapes.
        let data: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        let a = keccak256(&data);
        let b = keccak256(&data[..199]);
        assert_ne!(a, b);
        assert_eq!(keccak256(&data), a);
    }

    #[test]
    fn eight_way_paths_equal_the_one_way_ones() {
        let headers: [[u8; 32]; WAYS] = core::array::from_fn(|k| [k as u8 * 31 + 5; 32]);
        let nonces: [u64; WAYS] =
            core::array::from_fn(|k| 0x0123_4567_89ab_cdef ^ (k as u64) << 40);
        let seeds = keccak512_header_nonce_x8(core::array::from_fn(|k| &headers[k]), nonces);
        let cmixes: [[u64; 4]; WAYS] = core::array::from_fn(|k| [k as u64, 7, 9, !(k as u64)]);
        let results = keccak256_seed_cmix_x8(
            core::array::from_fn(|k| &seeds[k]),
            core::array::from_fn(|k| &cmixes[k]),
        );
        for k in 0..WAYS {
            assert_eq!(seeds[k], keccak512_header_nonce(&headers[k], nonces[k]));
            assert_eq!(results[k], keccak256_seed_cmix(&seeds[k], &cmixes[k]));
        }
        // Every group shape: one-by-one remainders and eight-way groups.
        for len in [1, 2, 3, 8, 11, 17] {
            let words: Vec<[u64; 8]> = (0..len).map(|k| seeds[k % WAYS]).collect();
            let mut each = words.clone();
            keccak512_64_each(&mut each);
            for (w, e) in words.iter().zip(&each) {
                assert_eq!(*e, keccak512_64(w), "length {len}");
            }
        }
    }

    #[test]
    fn fast_paths_equal_the_generic_sponge() {
        let words: [u64; 8] = core::array::from_fn(|i| 0x0123_4567_89ab_cdef ^ (i as u64 * 977));
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let fast: Vec<u8> = keccak512_64(&words)
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(fast, keccak512(&bytes).to_vec());

        let header = [7u8; 32];
        let nonce = 0x1122_3344_5566_7788u64;
        let mut input = header.to_vec();
        input.extend_from_slice(&nonce.to_le_bytes());
        let fast: Vec<u8> = keccak512_header_nonce(&header, nonce)
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(fast, keccak512(&input).to_vec());

        let cmix = [1u64, 2, 3, 4];
        let mut input = bytes;
        input.extend(cmix.iter().flat_map(|w| w.to_le_bytes()));
        assert_eq!(keccak256_seed_cmix(&words, &cmix), keccak256(&input));
    }
}

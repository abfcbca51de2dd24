//! Keccak-f[1600] on eight independent states at once: one 512-bit (AVX-512) or two 256-bit
//! (AVX2) vector operations per step for all eight, with the scalar permutation of the `keccak`
//! crate where the CPU has neither. Hashimoto's two keccaks per nonce were
//! about 60% of its compute time when done one state at a time.

use super::simd::{self, Level};

/// States hashed together.
pub const WAYS: usize = 8;

/// Eight states stored word-major: `s[w][k]` is word `w` of state `k`, so each step of the
/// permutation is one operation over a row of eight words.
pub type States = [[u64; WAYS]; 25];

const ROUND_CONSTANTS: [u64; 24] = [
    0x0000_0000_0000_0001,
    0x0000_0000_0000_8082,
    0x8000_0000_0000_808A,
    0x8000_0000_8000_8000,
    0x0000_0000_0000_808B,
    0x0000_0000_8000_0001,
    0x8000_0000_8000_8081,
    0x8000_0000_0000_8009,
    0x0000_0000_0000_008A,
    0x0000_0000_0000_0088,
    0x0000_0000_8000_8009,
    0x0000_0000_8000_000A,
    0x0000_0000_8000_808B,
    0x8000_0000_0000_008B,
    0x8000_0000_0000_8089,
    0x8000_0000_0000_8003,
    0x8000_0000_0000_8002,
    0x8000_0000_0000_0080,
    0x0000_0000_0000_800A,
    0x8000_0000_8000_000A,
    0x8000_0000_8000_8081,
    0x8000_0000_0000_8080,
    0x0000_0000_8000_0001,
    0x8000_0000_8000_8008,
];

/// Rotation of word x + 5y in the rho step, indexed [x][y].
const RHO: [[u32; 5]; 5] = [
    [0, 36, 3, 41, 18],
    [1, 44, 10, 45, 2],
    [62, 6, 43, 15, 61],
    [28, 55, 25, 21, 56],
    [27, 20, 39, 8, 14],
];

/// Applies Keccak-f[1600] to all eight states at the widest vector level this CPU has.
#[inline]
pub fn f1600_x8(s: &mut States) {
    f1600_x8_at(simd::level(), s)
}

/// [`f1600_x8`] at a given vector level; one the CPU lacks runs the baseline build.
pub fn f1600_x8_at(level: Level, s: &mut States) {
    match level {
        // Without vectors the keccak crate's scalar permutation is faster, state by state.
        Level::Baseline => f1600_scalar(s),
        _ if !simd::supported(level) => f1600_scalar(s),
        _ => simd::at(level, Rounds(s)),
    }
}

fn f1600_scalar(s: &mut States) {
    let mut each = [[0u64; 25]; WAYS];
    for (w, row) in s.iter().enumerate() {
        for (state, v) in each.iter_mut().zip(row) {
            state[w] = *v;
        }
    }
    for state in each.iter_mut() {
        keccak::f1600(state);
    }
    for (w, row) in s.iter_mut().enumerate() {
        for (state, v) in each.iter().zip(row.iter_mut()) {
            *v = state[w];
        }
    }
}

/// The permutation as a [`simd::Kernel`].
struct Rounds<'a>(&'a mut States);

impl simd::Kernel for Rounds<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        rounds(self.0)
    }
}

type Row = [u64; WAYS];

#[inline(always)]
fn xor(a: Row, b: Row) -> Row {
    core::array::from_fn(|k| a[k] ^ b[k])
}

#[inline(always)]
fn rol(a: Row, n: u32) -> Row {
    core::array::from_fn(|k| a[k].rotate_left(n))
}

/// a ^ (!b & c): the chi step.
#[inline(always)]
fn chi(a: Row, b: Row, c: Row) -> Row {
    core::array::from_fn(|k| a[k] ^ (!b[k] & c[k]))
}

/// The 24 rounds written over rows, so the caller's target features decide the vector width.
#[inline(always)]
fn rounds(s: &mut States) {
    for rc in ROUND_CONSTANTS {
        // theta
        let c: [Row; 5] = core::array::from_fn(|x| {
            xor(
                xor(xor(s[x], s[x + 5]), xor(s[x + 10], s[x + 15])),
                s[x + 20],
            )
        });
        for x in 0..5 {
            let d = xor(c[(x + 4) % 5], rol(c[(x + 1) % 5], 1));
            for y in 0..5 {
                s[x + 5 * y] = xor(s[x + 5 * y], d);
            }
        }
        // rho and pi: word (x, y) moves to (y, 2x + 3y).
        let mut b = [[0u64; WAYS]; 25];
        for x in 0..5 {
            for y in 0..5 {
                b[y + 5 * ((2 * x + 3 * y) % 5)] = rol(s[x + 5 * y], RHO[x][y]);
            }
        }
        // chi
        for y in 0..5 {
            for x in 0..5 {
                s[x + 5 * y] = chi(b[x + 5 * y], b[(x + 1) % 5 + 5 * y], b[(x + 2) % 5 + 5 * y]);
            }
        }
        // iota
        s[0] = xor(s[0], [rc; WAYS]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_states(seed: u64) -> States {
        let mut x = seed;
        core::array::from_fn(|_| {
            core::array::from_fn(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                x ^ (x >> 29)
            })
        })
    }

    #[test]
    fn every_backend_equals_the_keccak_crate() {
        for seed in 0..4 {
            let input = random_states(seed);
            let mut expected = input;
            for k in 0..WAYS {
                let mut one: [u64; 25] = core::array::from_fn(|w| input[w][k]);
                keccak::f1600(&mut one);
                for w in 0..25 {
                    expected[w][k] = one[w];
                }
            }
            for l in [Level::Avx512, Level::Avx2, Level::Baseline] {
                let mut got = input;
                f1600_x8_at(l, &mut got);
                assert_eq!(got, expected, "level {l:?}, seed {seed}");
            }
            let mut got = input;
            f1600_x8(&mut got);
            assert_eq!(got, expected, "detected level {:?}", simd::level());
        }
    }

    #[test]
    fn zero_state_gives_the_published_permutation() {
        // Keccak-f[1600] of the all-zero state, first word, from the Keccak team's test vectors.
        let mut s = [[0u64; WAYS]; 25];
        f1600_x8(&mut s);
        assert_eq!(s[0], [0xF125_8F79_40E1_DDE7; WAYS]);
        assert_eq!(s[24], [0xEAF1_FF7B_5CEC_A249; WAYS]);
    }
}

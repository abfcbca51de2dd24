//! Hashimoto: the ethash proof of work over dataset rows, from the light cache or the full
//! dataset, several nonces at once so their memory reads overlap and their keccaks share
//! vector instructions.

use super::cache::{LightCache, MAX_LANES};
use super::chain::MIX_BYTES;
use super::keccak::{
    in_groups, keccak256_seed_cmix, keccak256_seed_cmix_x8, keccak512_header_nonce,
    keccak512_header_nonce_x8,
};
use super::memory::prefetch;
use super::node::{fnv, Node};

/// Dataset accesses per hash.
const ACCESSES: u32 = 64;
/// Words in a 128-byte mix.
const MIX_WORDS: usize = 32;
/// Hashes computed together. With rows prefetched, more lanes means more DRAM reads in flight:
/// measured on a 1 GiB dataset, 32 lanes did about 3.5x the rate of 8 lanes without prefetch
/// (64 lanes: no further gain).
pub const LANES: usize = 32;

/// One (header hash, nonce) pair to hash. The nonce is the header's big-endian value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PowInput {
    /// Keccak-256 of the header without nonce and mix (the getWork "pow hash").
    pub header_hash: [u8; 32],
    /// The nonce as a number (hex in JSON is big-endian).
    pub nonce: u64,
}

/// Hashimoto's two outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PowOutput {
    /// The compressed mix, to be equal to the header's mix digest.
    pub mix_digest: [u8; 32],
    /// The value compared (big-endian) with the target.
    pub result: [u8; 32],
}

/// Where hashimoto reads its 128-byte rows from.
pub trait RowSource: Sync {
    /// Rows in the dataset (dataset size / 128).
    fn row_count(&self) -> u32;
    /// FNV-mixes row `rows[k]` into `mixes[k]` for every lane.
    fn mix_rows(&self, rows: &[u32], mixes: &mut [[u32; MIX_WORDS]]);
    /// All rows, when they sit in memory (the full dataset): hashimoto then lets every lane
    /// run ahead on its own instead of in lockstep.
    fn resident(&self) -> Option<&[[u32; MIX_WORDS]]> {
        None
    }
}

/// Rows computed on demand from the light cache.
impl RowSource for LightCache {
    fn row_count(&self) -> u32 {
        (self.info().dataset_size / MIX_BYTES) as u32
    }

    fn mix_rows(&self, rows: &[u32], mixes: &mut [[u32; MIX_WORDS]]) {
        // Two items per row; up to MAX_LANES items per lockstep pass.
        for (rows, mixes) in rows
            .chunks(MAX_LANES / 2)
            .zip(mixes.chunks_mut(MAX_LANES / 2))
        {
            let mut idx = [0u32; MAX_LANES];
            for (k, &r) in rows.iter().enumerate() {
                idx[2 * k] = 2 * r;
                idx[2 * k + 1] = 2 * r + 1;
            }
            let mut items = [Node::zeroed_node(); MAX_LANES];
            self.items(&idx[..2 * rows.len()], &mut items);
            for (k, mix) in mixes.iter_mut().enumerate() {
                for w in 0..16 {
                    mix[w] = fnv(mix[w], items[2 * k].0[w]);
                    mix[w + 16] = fnv(mix[w + 16], items[2 * k + 1].0[w]);
                }
            }
        }
    }
}

/// Rows read from a dataset in memory.
#[derive(Clone, Copy, Debug)]
pub struct DatasetRows<'a>(pub &'a [[u32; MIX_WORDS]]);

impl RowSource for DatasetRows<'_> {
    fn row_count(&self) -> u32 {
        self.0.len() as u32
    }

    #[inline]
    fn mix_rows(&self, rows: &[u32], mixes: &mut [[u32; MIX_WORDS]]) {
        // Every lane's row is requested before any is mixed: the mixing of one lane is long
        // enough to keep later lanes' loads out of the out-of-order window otherwise.
        for &r in rows {
            prefetch(&self.0[r as usize]);
        }
        for (mix, &r) in mixes.iter_mut().zip(rows) {
            let row = &self.0[r as usize];
            for w in 0..MIX_WORDS {
                mix[w] = fnv(mix[w], row[w]);
            }
        }
    }

    fn resident(&self) -> Option<&[[u32; MIX_WORDS]]> {
        Some(self.0)
    }
}

/// Hashes one input.
pub fn hashimoto<S: RowSource + ?Sized>(src: &S, input: &PowInput) -> PowOutput {
    let mut out = [PowOutput::default()];
    lanes(src, std::slice::from_ref(input), &mut out);
    out[0]
}

/// Hashes `inputs` into `out` (same length) on the calling thread, [`LANES`] at a time.
pub fn hashimoto_batch<S: RowSource + ?Sized>(src: &S, inputs: &[PowInput], out: &mut [PowOutput]) {
    for (i, o) in inputs.chunks(LANES).zip(out.chunks_mut(LANES)) {
        lanes(src, i, o);
    }
}

/// Hashes `inputs` into `out` across the current rayon pool.
pub fn hashimoto_par<S: RowSource + ?Sized>(src: &S, inputs: &[PowInput], out: &mut [PowOutput]) {
    use rayon::prelude::*;
    const CHUNK: usize = LANES * 4;
    inputs
        .par_chunks(CHUNK)
        .zip(out.par_chunks_mut(CHUNK))
        .for_each(|(i, o)| hashimoto_batch(src, i, o));
}

/// Up to [`LANES`] hashes at once, so their memory reads overlap.
fn lanes<S: RowSource + ?Sized>(src: &S, inputs: &[PowInput], out: &mut [PowOutput]) {
    let n = inputs.len();
    debug_assert!(n <= LANES && out.len() >= n);
    let mut seeds = [[0u64; 8]; LANES];
    let mut mixes = [[0u32; MIX_WORDS]; LANES];
    // Keccak-512 of header hash and nonce, eight lanes per instruction where it pays.
    in_groups(
        &mut seeds[..n],
        |k| keccak512_header_nonce(&inputs[k].header_hash, inputs[k].nonce),
        |ks| {
            keccak512_header_nonce_x8(
                ks.map(|k| &inputs[k].header_hash),
                ks.map(|k| inputs[k].nonce),
            )
        },
    );
    for k in 0..n {
        let s: [u32; 16] = bytemuck::cast(seeds[k]);
        mixes[k][..16].copy_from_slice(&s);
        mixes[k][16..].copy_from_slice(&s);
    }
    match src.resident() {
        Some(data) => streamed(data, &seeds[..n], &mut mixes[..n]),
        None => lockstep(src, &seeds[..n], &mut mixes[..n]),
    }
    let mut cmixes = [[0u64; 4]; LANES];
    for k in 0..n {
        let mut cmix = [0u32; 8];
        for (c, quad) in cmix.iter_mut().zip(mixes[k].chunks_exact(4)) {
            *c = fnv(fnv(fnv(quad[0], quad[1]), quad[2]), quad[3]);
        }
        cmixes[k] = bytemuck::cast(cmix);
        out[k].mix_digest = bytemuck::cast(cmix);
    }
    let mut results = [[0u8; 32]; LANES];
    in_groups(
        &mut results[..n],
        |k| keccak256_seed_cmix(&seeds[k], &cmixes[k]),
        |ks| keccak256_seed_cmix_x8(ks.map(|k| &seeds[k]), ks.map(|k| &cmixes[k])),
    );
    for (o, r) in out.iter_mut().zip(&results[..n]) {
        o.result = *r;
    }
}

/// The row hashimoto reads at access `i`.
#[inline(always)]
fn row_index(i: u32, seed0: u32, mix: &[u32; MIX_WORDS], row_count: u32) -> u32 {
    fnv(i ^ seed0, mix[i as usize % MIX_WORDS]) % row_count
}

/// Every lane's access `i` before any lane's `i + 1`: for rows computed from the cache, whose
/// source batches items across lanes.
fn lockstep<S: RowSource + ?Sized>(src: &S, seeds: &[[u64; 8]], mixes: &mut [[u32; MIX_WORDS]]) {
    let row_count = src.row_count();
    let mut rows = [0u32; LANES];
    for i in 0..ACCESSES {
        for (k, (seed, mix)) in seeds.iter().zip(mixes.iter()).enumerate() {
            rows[k] = row_index(i, seed[0] as u32, mix, row_count);
        }
        src.mix_rows(&rows[..mixes.len()], mixes);
    }
}

/// Rows in memory: as soon as a lane has mixed a row it works out and prefetches its next
/// one, so that read is in flight while the other lanes mix theirs. Measured on the epoch-0
/// dataset: about 1.2x the lockstep rate, which waits for the slowest read at every access.
fn streamed(data: &[[u32; MIX_WORDS]], seeds: &[[u64; 8]], mixes: &mut [[u32; MIX_WORDS]]) {
    let row_count = data.len() as u32;
    let mut rows = [0u32; LANES];
    for (k, (seed, mix)) in seeds.iter().zip(mixes.iter()).enumerate() {
        rows[k] = row_index(0, seed[0] as u32, mix, row_count);
        prefetch(&data[rows[k] as usize]);
    }
    for i in 0..ACCESSES {
        for (k, (seed, mix)) in seeds.iter().zip(mixes.iter_mut()).enumerate() {
            let row = &data[rows[k] as usize];
            for w in 0..MIX_WORDS {
                mix[w] = fnv(mix[w], row[w]);
            }
            if i + 1 < ACCESSES {
                rows[k] = row_index(i + 1, seed[0] as u32, mix, row_count);
                prefetch(&data[rows[k] as usize]);
            }
        }
    }
}

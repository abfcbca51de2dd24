//! Measurements behind `dagproxy bench cpu`: our engine and the `ethash` crate, same inputs,
//! same run, single-threaded rates (per core).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ethash::memory::prefetch;
use crate::ethash::{
    hashimoto_batch, progress::Progress, ChainSpec, FullDataset, LightCache, Node, PowInput,
    PowOutput, RowSource,
};

/// Per-core rates of one implementation.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Rates {
    /// Light hashimoto (cache only) per second per core.
    pub light_per_core: f64,
    /// Full hashimoto (dataset in RAM) per second per core.
    pub full_per_core: f64,
    /// Dataset items generated per second per core.
    pub dataset_items_per_core: f64,
}

/// The `bench cpu --json` report.
#[derive(Debug, Serialize)]
pub struct CpuReport {
    /// Our engine.
    pub ours: Rates,
    /// The `ethash` crate (null when built without the `oracle` feature).
    pub ethash_crate: Option<Rates>,
    /// ours / crate.
    pub ratio: Option<Rates>,
    /// Chain, block and epoch measured.
    pub chain: String,
    /// Block measured.
    pub block: u64,
    /// Epoch measured.
    pub epoch: u64,
    /// Dataset size in bytes.
    pub dataset_size: u64,
    /// Seconds to build the light cache (ours).
    pub cache_seconds: f64,
    /// Seconds to generate the whole dataset on all cores (ours).
    pub dataset_seconds: f64,
    /// Threads used for the whole-dataset generation.
    pub threads: usize,
    /// Whether both implementations gave identical outputs on the sampled inputs.
    pub outputs_agree: Option<bool>,
    /// The most full hashes per second one core's memory system allows: independent random
    /// 128-byte dataset rows read per second (no hashing, no dependency between reads), ÷ 64
    /// rows per hash. Full hashimoto cannot beat it; `ours.full_per_core` over it says how
    /// much of the memory system the engine uses.
    pub full_memory_ceiling_per_core: f64,
    /// ours.full_per_core / full_memory_ceiling_per_core.
    pub full_fraction_of_ceiling: f64,
}

/// Distinct inputs (random-looking header hashes and nonces) so each hash touches new memory.
pub fn inputs(count: usize, seed: u64) -> Vec<PowInput> {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..count)
        .map(|_| {
            let mut header_hash = [0u8; 32];
            for chunk in header_hash.chunks_exact_mut(8) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
            PowInput {
                header_hash,
                nonce: next(),
            }
        })
        .collect()
}

/// Runs `step(i)` (which does `per_step` operations) until `seconds` pass; returns ops/s.
fn rate(seconds: f64, per_step: usize, mut step: impl FnMut(usize)) -> f64 {
    let budget = Duration::from_secs_f64(seconds.max(0.05));
    let start = Instant::now();
    let mut steps = 0usize;
    while start.elapsed() < budget {
        step(steps);
        steps += 1;
    }
    (steps * per_step) as f64 / start.elapsed().as_secs_f64()
}

fn ours_light(cache: &LightCache, seconds: f64) -> f64 {
    let inputs = inputs(4096, 1);
    let mut out = vec![PowOutput::default(); 8];
    rate(seconds, 8, |s| {
        let i = (s * 8) % (inputs.len() - 8);
        hashimoto_batch(cache, &inputs[i..i + 8], &mut out);
    })
}

fn ours_full<S: RowSource>(rows: &S, seconds: f64) -> f64 {
    let inputs = inputs(1 << 16, 2);
    let mut out = vec![PowOutput::default(); 64];
    rate(seconds, 64, |s| {
        let i = (s * 64) % (inputs.len() - 64);
        hashimoto_batch(rows, &inputs[i..i + 64], &mut out);
    })
}

/// Random row reads the memory system serves per second on this core, as hashes (÷ 64).
/// The reads are independent of each other, so the core keeps as many in flight as its fill
/// buffers allow; a second generator running ahead prefetches, as the engine does.
fn memory_ceiling(nodes: &[Node], seconds: f64) -> f64 {
    const READS: usize = 4096;
    const AHEAD: usize = 32;
    let rows = (nodes.len() / 2) as u64;
    let xorshift = |x: &mut u64| {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        // A row below `rows` by multiply-shift (no division).
        ((u128::from(*x) * u128::from(rows)) >> 64) as usize * 2
    };
    let mut lead = 0x9E37_79B9_7F4A_7C15u64;
    let mut follow = lead;
    for _ in 0..AHEAD {
        prefetch(&nodes[xorshift(&mut lead)]);
    }
    let mut acc = 0u32;
    let per_second = rate(seconds, READS, |_| {
        for _ in 0..READS {
            let ahead = xorshift(&mut lead);
            prefetch(&nodes[ahead]);
            prefetch(&nodes[ahead + 1]);
            let at = xorshift(&mut follow);
            acc = acc
                .wrapping_add(nodes[at].0[0])
                .wrapping_add(nodes[at + 1].0[0]);
        }
    });
    std::hint::black_box(acc);
    // ethash reads 64 rows per hash.
    per_second / 64.0
}

fn ours_items(cache: &LightCache, seconds: f64) -> f64 {
    let mut out = vec![Node::zeroed_node(); 256];
    let items = cache.dataset_items();
    rate(seconds, 256, |s| {
        let first = (s as u64 * 256 * 7919) % (items - 256);
        cache.fill_items(first, &mut out);
    })
}

/// Runs the CPU benchmark on `block` of `chain`, `seconds` per measurement.
pub fn cpu(chain: &ChainSpec, block: u64, seconds: f64, progress: &Progress) -> CpuReport {
    let info = chain.epoch_info(block);
    let t = Instant::now();
    let cache = LightCache::new(info);
    let cache_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let dataset = FullDataset::generate(&cache, &|d, n| progress.update(d, n));
    let dataset_seconds = t.elapsed().as_secs_f64();

    let ours = Rates {
        light_per_core: ours_light(&cache, seconds),
        full_per_core: ours_full(&dataset.rows(), seconds),
        dataset_items_per_core: ours_items(&cache, seconds),
    };
    let full_memory_ceiling_per_core = memory_ceiling(dataset.nodes(), seconds);
    let (ethash_crate, outputs_agree) = oracle::measure(&cache, &dataset, seconds);
    let ratio = ethash_crate.map(|c| Rates {
        light_per_core: ours.light_per_core / c.light_per_core,
        full_per_core: ours.full_per_core / c.full_per_core,
        dataset_items_per_core: ours.dataset_items_per_core / c.dataset_items_per_core,
    });
    CpuReport {
        ours,
        ethash_crate,
        ratio,
        chain: chain.name.clone(),
        block,
        epoch: info.epoch,
        dataset_size: info.dataset_size,
        cache_seconds,
        dataset_seconds,
        threads: rayon::current_num_threads(),
        outputs_agree,
        full_fraction_of_ceiling: ours.full_per_core / full_memory_ceiling_per_core,
        full_memory_ceiling_per_core,
    }
}

#[cfg(feature = "oracle")]
mod oracle {
    //! The `ethash` crate on the same inputs.
    use ethereum_types::{H256, H64};

    use super::{inputs, rate, Rates};
    use crate::ethash::{hashimoto, FullDataset, LightCache, RowSource};

    pub(super) fn measure(
        cache: &LightCache,
        dataset: &FullDataset,
        seconds: f64,
    ) -> (Option<Rates>, Option<bool>) {
        let cache_bytes = cache.as_bytes();
        let ds_bytes = dataset.as_bytes();
        let full_size = dataset.info().dataset_size as usize;
        let light_inputs = inputs(4096, 1);
        let full_inputs = inputs(1 << 16, 2);
        let h = |i: &crate::ethash::PowInput| (H256(i.header_hash), H64(i.nonce.to_be_bytes()));

        let agree = light_inputs.iter().take(4).all(|i| {
            let (hh, n) = h(i);
            let (mix, result) = ethash::hashimoto_light(hh, n, full_size, cache_bytes);
            let ours = hashimoto(cache as &dyn RowSource, i);
            mix.0 == ours.mix_digest && result.0 == ours.result
        });

        let light = rate(seconds, 1, |s| {
            let (hh, n) = h(&light_inputs[s % light_inputs.len()]);
            std::hint::black_box(ethash::hashimoto_light(hh, n, full_size, cache_bytes));
        });
        let full = rate(seconds, 1, |s| {
            let (hh, n) = h(&full_inputs[s % full_inputs.len()]);
            std::hint::black_box(ethash::hashimoto_full(hh, n, full_size, ds_bytes));
        });
        let items = dataset.nodes().len();
        let dataset_items = rate(seconds, 1, |s| {
            let i = (s * 7919) % items;
            std::hint::black_box(ethash::calc_dataset_item(cache_bytes, i));
        });
        (
            Some(Rates {
                light_per_core: light,
                full_per_core: full,
                dataset_items_per_core: dataset_items,
            }),
            Some(agree),
        )
    }
}

#[cfg(not(feature = "oracle"))]
mod oracle {
    use super::Rates;
    use crate::ethash::{FullDataset, LightCache};

    pub(super) fn measure(
        _: &LightCache,
        _: &FullDataset,
        _: f64,
    ) -> (Option<Rates>, Option<bool>) {
        (None, None)
    }
}

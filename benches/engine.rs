//! Criterion benchmarks of the CPU engine beside the `ethash` crate, on the same inputs
//! (a synthetic 64 MiB dataset so the bench runs in seconds; `dagproxy bench cpu` measures
//! real epochs).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dagproxy::bench::inputs;
use dagproxy::ethash::{hashimoto_batch, EpochInfo, FullDataset, LightCache, Node, PowOutput};
use ethereum_types::{H256, H64};

fn epoch() -> EpochInfo {
    // Real epoch-0 cache size, 64 MiB dataset: cache misses like production, quick to build.
    EpochInfo {
        epoch: 0,
        seed: [0; 32],
        cache_size: 16_776_896,
        dataset_size: 524_287 * 128,
    }
}

fn engine(c: &mut Criterion) {
    let info = epoch();
    let cache = LightCache::new(info);
    let dataset = FullDataset::generate(&cache, &|_, _| {});
    let ins = inputs(1 << 14, 7);
    let full_size = info.dataset_size as usize;

    let mut g = c.benchmark_group("hashimoto_full");
    g.throughput(Throughput::Elements(64));
    let mut out = vec![PowOutput::default(); 64];
    let mut i = 0;
    g.bench_function(BenchmarkId::new("ours", 64), |b| {
        b.iter(|| {
            i = (i + 64) % (ins.len() - 64);
            hashimoto_batch(&dataset.rows(), &ins[i..i + 64], &mut out)
        })
    });
    g.bench_function(BenchmarkId::new("ethash_crate", 64), |b| {
        b.iter(|| {
            i = (i + 64) % (ins.len() - 64);
            for x in &ins[i..i + 64] {
                std::hint::black_box(ethash::hashimoto_full(
                    H256(x.header_hash),
                    H64(x.nonce.to_be_bytes()),
                    full_size,
                    dataset.as_bytes(),
                ));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("hashimoto_light");
    g.sample_size(10);
    g.throughput(Throughput::Elements(8));
    let mut out = vec![PowOutput::default(); 8];
    g.bench_function("ours", |b| {
        b.iter(|| hashimoto_batch(&cache, &ins[..8], &mut out))
    });
    g.bench_function("ethash_crate", |b| {
        b.iter(|| {
            for x in &ins[..8] {
                std::hint::black_box(ethash::hashimoto_light(
                    H256(x.header_hash),
                    H64(x.nonce.to_be_bytes()),
                    full_size,
                    cache.as_bytes(),
                ));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("dataset_items");
    g.throughput(Throughput::Elements(256));
    let mut nodes = vec![Node::zeroed_node(); 256];
    g.bench_function("ours", |b| b.iter(|| cache.fill_items(4096, &mut nodes)));
    g.bench_function("ethash_crate", |b| {
        b.iter(|| {
            for i in 4096..4096 + 256 {
                std::hint::black_box(ethash::calc_dataset_item(cache.as_bytes(), i));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);

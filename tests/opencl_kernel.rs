//! The OpenCL kernels on a real device (PoCL in CI) against the CPU engine and the go-ethereum
//! small vectors: device DAG byte for byte (single and split buffers), batch hashimoto over two
//! resident epochs and from the light cache, batch edges. Skipped, with the reason printed, only
//! where no OpenCL platform exists.
#![cfg(feature = "opencl")]

use dagproxy::bench::inputs;
use dagproxy::ethash::{
    hashimoto, hashimoto_par, EpochInfo, FullDataset, LightCache, PowInput, PowOutput,
};
use dagproxy::verify::opencl::{platform_count, ClEngine, ClError};
use serde_json::Value;

fn engine() -> Option<ClEngine> {
    if let Err(e) = platform_count() {
        eprintln!("skipping OpenCL test: {e}");
        return None;
    }
    Some(ClEngine::open(None).expect("an OpenCL platform exists, so a device must open"))
}

fn epoch(epoch: u64, seed_byte: u8, cache_size: u64, dataset_size: u64) -> EpochInfo {
    EpochInfo {
        epoch,
        seed: [seed_byte; 32],
        cache_size,
        dataset_size,
    }
}

fn cpu_full(ds: &FullDataset, inputs: &[PowInput]) -> Vec<PowOutput> {
    let mut out = vec![PowOutput::default(); inputs.len()];
    hashimoto_par(&ds.rows(), inputs, &mut out);
    out
}

fn hex32(v: &Value) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(v.as_str().expect("hex string"), &mut out).expect("32-byte hex");
    out
}

#[test]
fn geth_small_vectors_on_the_kernel() {
    let Some(mut cl) = engine() else { return };
    let path = format!(
        "{}/tests/data/geth_small_vectors.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("JSON");
    let num = |x: &Value| -> u64 {
        x.as_u64()
            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
            .expect("number")
    };

    let d = &v["dataset_generation"][0];
    let cache = LightCache::new(EpochInfo {
        epoch: 0,
        seed: hex32(&d["seed"]),
        cache_size: num(&d["cache_size"]),
        dataset_size: num(&d["dataset_size"]),
    });
    cl.generate_slot(0, &cache, None).expect("device DAG");
    let want = hex::decode(d["dataset"].as_str().expect("hex")).expect("hex");
    assert_eq!(cl.read_dataset(0).expect("read back"), want);

    let h = &v["hashimoto"];
    let cache = LightCache::new(EpochInfo {
        epoch: 0,
        seed: hex32(&h["seed"]),
        cache_size: num(&h["cache_size"]),
        dataset_size: num(&h["dataset_size"]),
    });
    cl.generate_slot(1, &cache, None).expect("device DAG");
    let input = PowInput {
        header_hash: hex32(&h["header_hash"]),
        nonce: num(&h["nonce"]),
    };
    let full = cl.hash_full(&[(1, input)]).expect("full kernel")[0];
    let light = cl.hash_light(cache.info(), &[input]).expect("light kernel")[0];
    for out in [full, light] {
        assert_eq!(out.mix_digest, hex32(&h["mix_digest"]));
        assert_eq!(out.result, hex32(&h["result"]));
    }
}

#[test]
fn device_dag_equals_cpu_dag_single_and_split() {
    let Some(mut cl) = engine() else { return };
    // 1 MiB + 3 rows: an odd row count, so the last split buffer is short.
    let info = epoch(7, 0x5a, 16 * 1024, (1 << 20) + 3 * 128);
    let cache = LightCache::new(info);
    let cpu = FullDataset::generate(&cache, &|_, _| {});

    cl.generate_slot(0, &cache, None).expect("device DAG");
    assert_eq!(cl.slot_buffers(0), 1);
    assert_eq!(cl.read_dataset(0).expect("read"), cpu.as_bytes());

    // 300 KiB buffers (not a divisor of the size): 4 buffers, the last one short.
    cl.generate_slot(1, &cache, Some(300 * 1024))
        .expect("split DAG");
    assert_eq!(cl.slot_buffers(1), 4);
    assert_eq!(cl.read_dataset(1).expect("read"), cpu.as_bytes());

    // Hashing over the split slot touches every buffer.
    let ins = inputs(600, 11);
    let jobs: Vec<(usize, PowInput)> = ins.iter().map(|i| (1, *i)).collect();
    assert_eq!(cl.hash_full(&jobs).expect("kernel"), cpu_full(&cpu, &ins));

    // More buffers than the kernel takes: a clear error, not a wrong answer.
    let err = cl
        .begin_slot(1, &cache, Some(128 * 1024))
        .expect_err("9 buffers do not fit");
    assert!(matches!(err, ClError::OutOfMemory(_)), "{err}");
    assert!(cl.slot_state(1).is_none());
}

#[test]
fn random_inputs_over_two_resident_epochs_and_the_light_path() {
    let Some(mut cl) = engine() else { return };
    // Different sizes per epoch so a slot mix-up cannot pass.
    let a = LightCache::new(epoch(10, 1, 8 * 1024, 256 * 1024));
    let b = LightCache::new(epoch(11, 2, 16 * 1024, 384 * 1024 + 128));
    let ds_a = FullDataset::generate(&a, &|_, _| {});
    let ds_b = FullDataset::generate(&b, &|_, _| {});
    cl.generate_slot(0, &a, None).expect("slot 0");
    cl.generate_slot(1, &b, Some(100 * 1024)).expect("slot 1");

    let ins = inputs(3000, 42);
    let jobs: Vec<(usize, PowInput)> = ins
        .iter()
        .enumerate()
        .map(|(k, i)| (((i.nonce >> 7) ^ k as u64) as usize & 1, *i))
        .collect();
    let got = cl.hash_full(&jobs).expect("kernel");
    let (mut n0, mut n1) = (0, 0);
    for ((slot, input), out) in jobs.iter().zip(&got) {
        let ds = if *slot == 0 { &ds_a } else { &ds_b };
        assert_eq!(*out, hashimoto(&ds.rows(), input), "slot {slot}");
        if *slot == 0 {
            n0 += 1
        } else {
            n1 += 1
        }
    }
    assert!(n0 > 1000 && n1 > 1000, "both epochs exercised: {n0}/{n1}");

    // A third epoch without a slot: the light kernel equals the CPU light path.
    let c = LightCache::new(epoch(12, 3, 4 * 1024, 64 * 1024));
    cl.ensure_light(&c, 2).expect("cache upload");
    let few = &ins[..200];
    let mut want = vec![PowOutput::default(); few.len()];
    hashimoto_par(&c, few, &mut want);
    assert_eq!(cl.hash_light(c.info(), few).expect("light kernel"), want);
}

#[test]
fn batch_edges() {
    let Some(mut cl) = engine() else { return };
    let a = LightCache::new(epoch(20, 9, 4 * 1024, 64 * 1024));
    let b = LightCache::new(epoch(21, 8, 4 * 1024, 96 * 1024));
    let ds = [
        FullDataset::generate(&a, &|_, _| {}),
        FullDataset::generate(&b, &|_, _| {}),
    ];
    cl.generate_slot(0, &a, None).expect("slot 0");
    cl.generate_slot(1, &b, None).expect("slot 1");
    assert!(cl.hash_full(&[]).expect("empty batch").is_empty());
    assert!(cl
        .hash_light(a.info(), &[])
        .expect("empty batch")
        .is_empty());
    let wg = cl.work_group_size();
    let all = inputs(2 * wg + 3, 5);
    for n in [1, 2, wg - 1, wg, wg + 1, 2 * wg + 3] {
        // Alternate slots inside each batch: mixed epochs in one launch.
        let jobs: Vec<(usize, PowInput)> = all[..n]
            .iter()
            .enumerate()
            .map(|(k, i)| (k % 2, *i))
            .collect();
        let got = cl.hash_full(&jobs).expect("kernel");
        assert_eq!(got.len(), n);
        for ((slot, input), out) in jobs.iter().zip(&got) {
            assert_eq!(*out, hashimoto(&ds[*slot].rows(), input), "n={n}");
        }
    }
    // A smaller batch after a larger one reads no stale outputs.
    let one = cl.hash_full(&[(1, all[0])]).expect("kernel");
    assert_eq!(one, vec![hashimoto(&ds[1].rows(), &all[0])]);
}

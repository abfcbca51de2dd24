//! One suite over the verifier service interface, run against every backend (cpu, cpu-light,
//! opencl on PoCL): hashes equal the CPU engine across prepared, next and stale epochs; share
//! verdicts; batch sizes around max_batch; queue full answers Busy; shutdown finishes in-flight
//! shares; the CPU backend hashes epochs with a DAG in RAM on the runtime. Plus the OpenCL-only
//! paths: split buffers and a device too small for two DAGs.

use std::time::Duration;

use dagproxy::bench::inputs;
use dagproxy::ethash::{
    hashimoto, target::target_from_difficulty, ChainSpec, LightCache, ShareCheck, U256,
};
use dagproxy::verify::{Verifier, VerifierConfig, VerifierKind, VerifyError};

/// Custom small epochs (64 KiB cache, 1 MiB dataset) on the test chain's seeds.
const SIZES: (u64, u64) = (64 * 1024, 1 << 20);

fn opencl_available() -> bool {
    #[cfg(feature = "opencl")]
    match dagproxy::verify::opencl::platform_count() {
        Ok(_) => return true,
        Err(e) => eprintln!("skipping the OpenCL backend: {e}"),
    }
    #[cfg(not(feature = "opencl"))]
    eprintln!("skipping the OpenCL backend: built without the opencl feature");
    false
}

fn config(kind: VerifierKind) -> VerifierConfig {
    VerifierConfig {
        kind,
        max_wait: Duration::from_millis(2),
        max_batch: 256,
        sizes: Some(SIZES),
        ..VerifierConfig::default()
    }
}

/// The engine's answer with the same (overridden) sizes.
fn light_cache(chain: &ChainSpec, block: u64) -> LightCache {
    let mut info = chain.epoch_info(block);
    (info.cache_size, info.dataset_size) = SIZES;
    LightCache::new(info)
}

async fn wait_full(v: &Verifier, epochs: usize) {
    for _ in 0..2000 {
        let r = v.resident();
        let settled = !r.is_empty() && r.iter().all(|r| r.mode != "building");
        if settled && r.iter().filter(|r| r.mode == "full").count() >= epochs {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("DAGs never became resident: {:?}", v.resident());
}

async fn suite(kind: VerifierKind) {
    let chain = ChainSpec::test();
    let v = Verifier::start(chain.clone(), config(kind))
        .await
        .expect("backend starts");
    assert!(v.ready());
    let name = v.backend();
    v.prepare(0);

    // Epoch 0 (prepared), 1 (next, built ahead) and 2 (neither: light path), interleaved, while
    // the DAGs may still be building; then again once they are resident.
    let blocks = [0u64, 30_000, 60_000];
    let caches: Vec<LightCache> = blocks.iter().map(|&b| light_cache(&chain, b)).collect();
    let ins = inputs(300, 3);
    for round in 0..2 {
        if round == 1 && kind != VerifierKind::CpuLight {
            wait_full(&v, 2).await;
        }
        let on_runtime = v.runtime_shares();
        let futs = ins.iter().enumerate().map(|(k, input)| {
            let v = v.clone();
            let block = blocks[k % 3] + k as u64;
            async move { v.hash(block, *input).await }
        });
        let got = futures_util::future::join_all(futs).await;
        for (k, (input, out)) in ins.iter().zip(got).enumerate() {
            let want = hashimoto(&caches[k % 3], input);
            assert_eq!(out.expect("hashed"), want, "{name} round {round} input {k}");
        }
        // With both DAGs in RAM, the CPU backend's shares of epochs 0 and 1 skip the worker
        // thread; epoch 2 (light path) and the other backends' shares never do.
        let runtime = v.runtime_shares() - on_runtime;
        match (name.as_str(), round) {
            ("cpu", 1) => assert_eq!(runtime, 200, "{name}"),
            ("cpu", _) => assert!(runtime <= 200, "{name}: {runtime}"),
            _ => assert_eq!(runtime, 0, "{name}"),
        }
    }

    // Verdicts: the computed mix with easy, exact and impossible targets, and a wrong mix.
    let input = ins[0];
    let out = hashimoto(&caches[0], &input);
    let result = U256::from_be_bytes(out.result);
    let check = |mix, share, block| v.check(0, input, mix, share, block);
    assert_eq!(
        check(out.mix_digest, U256::MAX, U256::MAX).await,
        Ok(ShareCheck::Block)
    );
    assert_eq!(
        check(out.mix_digest, result, result - U256::from(1u8)).await,
        Ok(ShareCheck::Share)
    );
    let hard = target_from_difficulty(U256::from(u64::MAX)).expect("target");
    assert_eq!(
        check(out.mix_digest, hard, hard).await,
        Ok(ShareCheck::LowDifficulty)
    );
    let mut bad = out.mix_digest;
    bad[0] ^= 1;
    assert_eq!(
        check(bad, U256::MAX, U256::MAX).await,
        Ok(ShareCheck::MixMismatch)
    );

    // Batches at max_batch - 1, max_batch, max_batch + 1 (two launches), sent at once.
    for n in [255usize, 256, 257] {
        let many = inputs(n, n as u64);
        let futs = many.iter().map(|i| v.hash(0, *i));
        let got = futures_util::future::join_all(futs).await;
        for (i, o) in many.iter().zip(got) {
            assert_eq!(o.expect("hashed"), hashimoto(&caches[0], i), "n={n}");
        }
    }

    // Shutdown answers the shares already queued, then refuses new ones.
    let inflight: Vec<_> = ins[..20]
        .iter()
        .map(|i| {
            let v = v.clone();
            let i = *i;
            tokio::spawn(async move { v.hash(0, i).await })
        })
        .collect();
    tokio::task::yield_now().await;
    v.shutdown().await;
    for (h, i) in inflight.into_iter().zip(&ins) {
        match h.await.expect("task") {
            Ok(o) => assert_eq!(o, hashimoto(&caches[0], i)),
            // Spawned after the stop: refused, never lost silently.
            Err(e) => assert_eq!(e, VerifyError::Stopped),
        }
    }
    assert!(!v.ready());
    assert_eq!(v.hash(0, input).await, Err(VerifyError::Stopped));
}

/// A full queue answers Busy at once; the queued shares are still answered.
async fn busy(kind: VerifierKind) {
    let cfg = VerifierConfig {
        queue: 3,
        max_batch: 100,
        max_wait: Duration::from_millis(400),
        ..config(kind)
    };
    let v = Verifier::start(ChainSpec::test(), cfg)
        .await
        .expect("starts");
    let ins = inputs(4, 9);
    let queued: Vec<_> = ins[..3]
        .iter()
        .map(|i| {
            let v = v.clone();
            let i = *i;
            tokio::spawn(async move { v.hash(0, i).await })
        })
        .collect();
    for _ in 0..200 {
        if v.pending() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(v.pending(), 3);
    assert_eq!(v.hash(0, ins[3]).await, Err(VerifyError::Busy));
    let cache = light_cache(&ChainSpec::test(), 0);
    for (h, i) in queued.into_iter().zip(&ins) {
        assert_eq!(h.await.expect("task"), Ok(hashimoto(&cache, i)));
    }
    assert_eq!(v.pending(), 0);
    assert!(v.hash(0, ins[3]).await.is_ok(), "room again");
    v.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_backend() {
    suite(VerifierKind::Cpu).await;
    busy(VerifierKind::Cpu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_light_backend() {
    suite(VerifierKind::CpuLight).await;
    busy(VerifierKind::CpuLight).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencl_backend() {
    if !opencl_available() {
        return;
    }
    suite(VerifierKind::Opencl).await;
    busy(VerifierKind::Opencl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_takes_opencl_when_present() {
    let v = Verifier::start(ChainSpec::test(), config(VerifierKind::Auto))
        .await
        .expect("auto always starts");
    let expect = if opencl_available() { "opencl" } else { "cpu" };
    assert!(v.backend().starts_with(expect), "{}", v.backend());
    v.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencl_split_buffers_and_small_device() {
    if !opencl_available() {
        return;
    }
    let chain = ChainSpec::test();
    // Split: 1 MiB DAGs in 384 KiB buffers (3 per DAG), both epochs resident.
    // Small device: room for one DAG only, so the next epoch uses the light path.
    // 128 KiB buffers: 8 per DAG, more than the kernel takes: both epochs on the light path.
    for (split, memory, want_full) in [
        (Some(384 * 1024), None, 2usize),
        (None, Some(SIZES.0 + SIZES.1 + 200 * 1024), 1),
        (Some(128 * 1024), None, 0),
    ] {
        let v = Verifier::start(
            chain.clone(),
            VerifierConfig {
                dag_split_bytes: split,
                device_memory: memory,
                ..config(VerifierKind::Opencl)
            },
        )
        .await
        .expect("opencl starts");
        v.prepare(5);
        wait_full(&v, want_full).await;
        let res = v.resident();
        assert_eq!(res.len(), 2, "{res:?}");
        assert_eq!(res.iter().filter(|r| r.mode == "full").count(), want_full);
        if want_full == 1 {
            assert!(
                res.iter().any(|r| r.epoch == 1 && r.mode == "light"),
                "{res:?}"
            );
        }
        let c0 = light_cache(&chain, 0);
        let c1 = light_cache(&chain, 30_000);
        let ins = inputs(500, 77);
        let futs = ins
            .iter()
            .enumerate()
            .map(|(k, i)| v.hash(if k % 2 == 0 { 0 } else { 30_000 }, *i));
        let got = futures_util::future::join_all(futs).await;
        for (k, (i, o)) in ins.iter().zip(got).enumerate() {
            let c = if k % 2 == 0 { &c0 } else { &c1 };
            assert_eq!(o.expect("hashed"), hashimoto(c, i), "input {k}");
        }
        v.shutdown().await;
    }
}

#[tokio::test]
async fn bad_config_is_an_error() {
    let cfg = VerifierConfig {
        sizes: Some((1000, 4096)),
        ..config(VerifierKind::CpuLight)
    };
    assert!(matches!(
        Verifier::start(ChainSpec::test(), cfg).await,
        Err(VerifyError::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_cpu_without_losing_the_batch_in_flight() {
    if !opencl_available() {
        return;
    }
    let chain = ChainSpec::test();
    let v = Verifier::start(
        chain.clone(),
        VerifierConfig {
            inject_device_failure_at_batch: Some(1),
            ..config(VerifierKind::Auto)
        },
    )
    .await
    .expect("auto starts");
    assert!(v.backend().starts_with("opencl"), "{}", v.backend());
    let cache = light_cache(&chain, 0);
    // Batch 0 on the device, batch 1 fails on the device and is redone on the CPU, batch 2 on
    // the CPU: every share answered, and correctly.
    for round in 0..3u64 {
        let ins = inputs(50, round);
        let got = futures_util::future::join_all(ins.iter().map(|i| v.hash(0, *i))).await;
        for (i, o) in ins.iter().zip(got) {
            assert_eq!(o, Ok(hashimoto(&cache, i)), "round {round}");
        }
    }
    assert_eq!(v.backend(), "cpu");

    // An explicit opencl backend reports the failure instead.
    let v = Verifier::start(
        chain,
        VerifierConfig {
            inject_device_failure_at_batch: Some(0),
            ..config(VerifierKind::Opencl)
        },
    )
    .await
    .expect("opencl starts");
    assert!(matches!(
        v.hash(0, inputs(1, 0)[0]).await,
        Err(VerifyError::Backend(_))
    ));
    assert!(v.hash(0, inputs(1, 0)[0]).await.is_ok());
    v.shutdown().await;
}

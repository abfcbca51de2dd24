//! Property tests: for random sizes, seeds, header hashes and nonces, our light == our full ==
//! the `ethash` crate; and the etchash rules at the activation boundaries.

use dagproxy::bench::inputs;
use dagproxy::ethash::{
    hashimoto, hashimoto_batch, hashimoto_par, ChainSpec, EpochInfo, FullDataset, LightCache,
    PowOutput,
};
use ethereum_types::{H256, H64};

/// A random but valid epoch: cache a prime-free multiple of 64 bytes, dataset of 128.
fn epoch(seed_byte: u8, cache_nodes: u64, dataset_rows: u64) -> EpochInfo {
    EpochInfo {
        epoch: 0,
        seed: [seed_byte; 32],
        cache_size: cache_nodes * 64,
        dataset_size: dataset_rows * 128,
    }
}

#[test]
fn light_full_and_crate_agree_on_random_inputs() {
    let shapes = [(16u64, 256u64), (97, 1031), (1024, 8191), (4099, 65_537)];
    for (n, &(cache_nodes, rows)) in shapes.iter().enumerate() {
        let info = epoch(n as u8 * 37 + 1, cache_nodes, rows);
        let cache = LightCache::new(info);
        let mut crate_cache = vec![0u8; info.cache_size as usize];
        ethash::make_cache(&mut crate_cache, H256(info.seed));
        assert_eq!(cache.as_bytes(), &crate_cache[..], "cache shape {n}");

        let dataset = FullDataset::generate(&cache, &|_, _| {});
        let mut crate_dataset = vec![0u8; info.dataset_size as usize];
        ethash::make_dataset(&mut crate_dataset, &crate_cache);
        assert_eq!(dataset.as_bytes(), &crate_dataset[..], "dataset shape {n}");

        let ins = inputs(200, n as u64);
        let mut light = vec![PowOutput::default(); ins.len()];
        let mut full = vec![PowOutput::default(); ins.len()];
        hashimoto_batch(&cache, &ins, &mut light);
        hashimoto_par(&dataset.rows(), &ins, &mut full);
        for (i, input) in ins.iter().enumerate() {
            let (mix, result) = ethash::hashimoto_full(
                H256(input.header_hash),
                H64(input.nonce.to_be_bytes()),
                info.dataset_size as usize,
                &crate_dataset,
            );
            assert_eq!(light[i], full[i], "light != full, shape {n} input {i}");
            assert_eq!(
                light[i].mix_digest, mix.0,
                "mix vs crate, shape {n} input {i}"
            );
            assert_eq!(
                light[i].result, result.0,
                "result vs crate, shape {n} input {i}"
            );
            // Single-input path equals the lockstep path.
            assert_eq!(hashimoto(&cache, input), light[i]);
        }
    }
}

#[test]
fn real_epoch_light_matches_crate() {
    let info = ChainSpec::ethereum().epoch_info(30_000 * 3 + 5);
    let cache = LightCache::new(info);
    let ins = inputs(12, 99);
    let mut ours = vec![PowOutput::default(); ins.len()];
    hashimoto_batch(&cache, &ins, &mut ours);
    for (input, out) in ins.iter().zip(&ours) {
        let (mix, result) = ethash::hashimoto_light(
            H256(input.header_hash),
            H64(input.nonce.to_be_bytes()),
            info.dataset_size as usize,
            cache.as_bytes(),
        );
        assert_eq!((out.mix_digest, out.result), (mix.0, result.0));
    }
    for i in [0u32, 1, 12_345, (info.dataset_size / 64 - 1) as u32] {
        let theirs = ethash::calc_dataset_item(cache.as_bytes(), i as usize);
        assert_eq!(cache.item(i).as_bytes(), theirs.as_bytes(), "item {i}");
    }
}

fn crate_seed(ethash_epoch: u64) -> [u8; 32] {
    ethash::get_seedhash(ethash_epoch as usize).0
}

#[test]
fn etchash_activation_boundaries() {
    for (chain, activation) in [
        (ChainSpec::classic(), 11_700_000u64),
        (ChainSpec::mordor(), 2_520_000),
    ] {
        let before = chain.epoch_info(activation - 1);
        let after = chain.epoch_info(activation);
        let old_epoch = (activation - 1) / 30_000;
        let new_epoch = activation / 60_000;
        assert_eq!(before.epoch, old_epoch, "{chain} before");
        assert_eq!(after.epoch, new_epoch, "{chain} after");
        // Before: plain ethash. After: sizes of the new (halved) epoch number, seed of 2e rounds.
        assert_eq!(before.seed, crate_seed(old_epoch));
        assert_eq!(
            before.cache_size,
            ethash::get_cache_size(old_epoch as usize) as u64
        );
        assert_eq!(
            before.dataset_size,
            ethash::get_full_size(old_epoch as usize) as u64
        );
        assert_eq!(after.seed, crate_seed(2 * new_epoch));
        assert_eq!(
            after.cache_size,
            ethash::get_cache_size(new_epoch as usize) as u64
        );
        assert_eq!(
            after.dataset_size,
            ethash::get_full_size(new_epoch as usize) as u64
        );
        // Later etchash epochs stay 60000 blocks long.
        let later = chain.epoch_info(activation + 60_000 * 3);
        assert_eq!(later.epoch, new_epoch + 3);
        assert_eq!(later.seed, crate_seed(2 * (new_epoch + 3)));
        assert_eq!(chain.next_epoch_info(activation).epoch, new_epoch + 1);
        // The same block on Ethereum keeps 30000-block epochs.
        assert_eq!(ChainSpec::ethereum().epoch(activation), activation / 30_000);
    }
    assert_eq!(ChainSpec::classic().epoch_info(11_700_000).epoch, 195);
    assert_eq!(ChainSpec::mordor().epoch_info(2_520_000).epoch, 42);
}

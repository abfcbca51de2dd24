//! The engine against published vectors (copied into tests/data from go-ethereum,
//! ethereum/tests, chfast/ethash and libethash).

use dagproxy::ethash::chain::{cache_size, dataset_size, seed_hash};
use dagproxy::ethash::keccak::keccak256;
use dagproxy::ethash::{
    hashimoto, ChainSpec, EpochInfo, FullDataset, LightCache, Node, PowInput, RowSource,
};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("vector file present");
    serde_json::from_str(&text).expect("vector file is JSON")
}

fn hex32(v: &Value) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(v.as_str().expect("hex string"), &mut out).expect("32-byte hex");
    out
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

/// A nonce given as a big-endian hex string or as a JSON number.
fn nonce(v: &Value) -> u64 {
    match v.as_u64() {
        Some(n) => n,
        None => u64::from_str_radix(v.as_str().expect("nonce string"), 16).expect("nonce hex"),
    }
}

/// Splits one RLP item off the front: (whole item, rest).
fn rlp_item(data: &[u8]) -> (&[u8], &[u8]) {
    let b = data[0] as usize;
    let len = match b {
        0x00..=0x7f => 1,
        0x80..=0xb7 => 1 + b - 0x80,
        0xb8..=0xbf => {
            let n = b - 0xb7;
            1 + n + data[1..=n].iter().fold(0usize, |a, &x| a << 8 | x as usize)
        }
        0xc0..=0xf7 => 1 + b - 0xc0,
        _ => {
            let n = b - 0xf7;
            1 + n + data[1..=n].iter().fold(0usize, |a, &x| a << 8 | x as usize)
        }
    };
    data.split_at(len)
}

/// keccak256 of the RLP list of a header's first 13 fields (without mix digest and nonce).
fn seal_hash(header_rlp: &[u8]) -> [u8; 32] {
    let n = (header_rlp[0] - 0xf7) as usize;
    let mut rest = &header_rlp[1 + n..];
    let mut payload = Vec::new();
    for _ in 0..13 {
        let (item, r) = rlp_item(rest);
        payload.extend_from_slice(item);
        rest = r;
    }
    let len = payload.len().to_be_bytes();
    let len = &len[len.iter().position(|&b| b != 0).unwrap_or(7)..];
    let mut list = vec![0xf7 + len.len() as u8];
    list.extend_from_slice(len);
    list.extend_from_slice(&payload);
    keccak256(&list)
}

fn u(v: &Value) -> u64 {
    v.as_u64().expect("number")
}

fn info(epoch: u64, seed: [u8; 32], cache: u64, dataset: u64) -> EpochInfo {
    EpochInfo {
        epoch,
        seed,
        cache_size: cache,
        dataset_size: dataset,
    }
}

fn check_hash(src: &dyn RowSource, header: [u8; 32], nonce: u64, mix: &Value, result: &Value) {
    let out = hashimoto(
        src,
        &PowInput {
            header_hash: header,
            nonce,
        },
    );
    assert_eq!(
        hex::encode(out.mix_digest),
        mix.as_str().expect("mix"),
        "mix digest"
    );
    assert_eq!(
        hex::encode(out.result),
        result.as_str().expect("result"),
        "result"
    );
}

#[test]
fn geth_small_caches_dataset_and_hashimoto() {
    let v = load("geth_small_vectors.json");
    for c in v["cache_generation"].as_array().expect("array") {
        let cache = LightCache::new(info(
            u(&c["epoch"]),
            hex32(&c["seed"]),
            u(&c["cache_size"]),
            32768,
        ));
        assert_eq!(
            cache.as_bytes(),
            &bytes(&c["cache"])[..],
            "epoch {}",
            c["epoch"]
        );
    }
    let d = &v["dataset_generation"][0];
    let cache = LightCache::new(info(
        0,
        hex32(&d["seed"]),
        u(&d["cache_size"]),
        u(&d["dataset_size"]),
    ));
    let dataset = FullDataset::generate(&cache, &|_, _| {});
    assert_eq!(dataset.as_bytes(), &bytes(&d["dataset"])[..]);

    let h = &v["hashimoto"];
    let cache = LightCache::new(info(
        0,
        hex32(&h["seed"]),
        u(&h["cache_size"]),
        u(&h["dataset_size"]),
    ));
    let dataset = FullDataset::generate(&cache, &|_, _| {});
    let n = u(&h["nonce"]);
    check_hash(
        &cache,
        hex32(&h["header_hash"]),
        n,
        &h["mix_digest"],
        &h["result"],
    );
    check_hash(
        &dataset.rows(),
        hex32(&h["header_hash"]),
        n,
        &h["mix_digest"],
        &h["result"],
    );
}

#[test]
fn test_chain_preset_is_geth_test_mode() {
    let v = load("geth_small_vectors.json");
    let h = &v["hashimoto"];
    let info = ChainSpec::test().epoch_info(0);
    assert_eq!((info.cache_size, info.dataset_size), (1024, 32 * 1024));
    let cache = LightCache::new(info);
    check_hash(
        &cache,
        hex32(&h["header_hash"]),
        0,
        &h["mix_digest"],
        &h["result"],
    );
    // Seeds advance as ethash's even in test mode.
    assert_eq!(ChainSpec::test().epoch_info(30_000).seed, seed_hash(1));
}

#[test]
fn ethereum_tests_powtests() {
    let v = load("ethereum_tests_powtests.json");
    let chain = ChainSpec::ethereum();
    let first = &v["vectors"]["first"];
    let info = chain.epoch_info(u(&first["block_number"]));
    assert_eq!(info.cache_size, u(&first["cache_size"]));
    assert_eq!(info.dataset_size, u(&first["full_size"]));
    assert_eq!(info.seed, hex32(&first["seed"]));
    let cache = LightCache::new(info);
    assert_eq!(
        hex::encode(keccak256(cache.as_bytes())),
        first["cache_hash"].as_str().expect("s")
    );
    for name in ["first", "second"] {
        let t = &v["vectors"][name];
        assert_eq!(
            seal_hash(&bytes(&t["header"])),
            hex32(&t["header_hash"]),
            "{name} header hash"
        );
        check_hash(
            &cache,
            hex32(&t["header_hash"]),
            nonce(&t["nonce"]),
            &t["mixHash"],
            &t["result"],
        );
    }
    // 2015 tiny format: 131072-byte cache and dataset from a zero seed.
    let t = &v["historical"]["213a2b8b19_first"];
    let cache = LightCache::new(info_for_bytes(u(&t["cache_size"]), u(&t["full_size"])));
    assert_eq!(
        hex::encode(keccak256(cache.as_bytes())),
        t["cache_hash"].as_str().expect("s")
    );
    let ds = FullDataset::generate(&cache, &|_, _| {});
    assert_eq!(
        hex::encode(keccak256(ds.as_bytes())),
        t["dataset_hash"].as_str().expect("s")
    );
    let t = &v["historical"]["44a366413a_first"];
    check_hash(
        &LightCache::new(chain.epoch_info(0)),
        hex32(&t["header_hash"]),
        nonce(&t["nonce"]),
        &t["mixhash"],
        &t["result"],
    );
}

fn info_for_bytes(cache: u64, dataset: u64) -> EpochInfo {
    info(0, [0; 32], cache, dataset)
}

#[test]
fn chfast_sizes_and_seeds() {
    let v = load("chfast_ethash_vectors.json");
    for s in v["sizes"].as_array().expect("sizes") {
        let e = u(&s["epoch"]);
        assert_eq!(
            cache_size(e),
            u(&s["light_cache_size"]),
            "cache size epoch {e}"
        );
        assert_eq!(
            dataset_size(e),
            u(&s["full_dataset_size"]),
            "dataset size epoch {e}"
        );
    }
    for s in v["epoch_seeds"].as_array().expect("seeds") {
        let e = u(&s["epoch"]);
        assert_eq!(
            ChainSpec::ethereum().info_for(e, 30_000).seed,
            hex32(&s["seed"]),
            "epoch {e}"
        );
    }
}

#[test]
fn chfast_hash_cases_light() {
    let v = load("chfast_ethash_vectors.json");
    let chain = ChainSpec::ethereum();
    let mut caches: Vec<LightCache> = Vec::new();
    for c in v["hash_cases"].as_array().expect("cases") {
        let info = chain.epoch_info(u(&c["block_number"]));
        assert_eq!(info.epoch, u(&c["epoch"]));
        assert_eq!(info.seed, hex32(&c["seed"]));
        assert_eq!(info.cache_size, u(&c["cache_size"]));
        assert_eq!(info.dataset_size, u(&c["dataset_size"]));
        if !caches.iter().any(|k| k.info().epoch == info.epoch) {
            caches.push(LightCache::new(info));
        }
        let cache = caches
            .iter()
            .find(|k| k.info().epoch == info.epoch)
            .expect("cache");
        check_hash(
            cache,
            hex32(&c["header_hash"]),
            nonce(&c["nonce"]),
            &c["mix_hash"],
            &c["final_hash"],
        );
    }
    let b = &v["verify_boundary"];
    let cache = caches
        .iter()
        .find(|k| k.info().epoch == 0)
        .expect("epoch 0 cache");
    check_hash(
        cache,
        hex32(&b["header_hash"]),
        nonce(&b["nonce"]),
        &b["mix_hash"],
        &b["final_hash"],
    );
}

#[test]
fn chfast_light_cache_hashes() {
    let v = load("chfast_ethash_vectors.json");
    for c in v["light_cache_hashes"].as_array().expect("hashes") {
        let e = u(&c["epoch"]);
        if e > 1000 {
            continue; // the 285 MB epoch-2047 cache is left to `cargo test -- --ignored` below
        }
        let cache = LightCache::new(ChainSpec::ethereum().info_for(e, 30_000));
        assert_eq!(cache.info().cache_size, u(&c["cache_size"]));
        assert_eq!(
            hex::encode(keccak256(cache.as_bytes())),
            c["keccak256_of_cache"].as_str().expect("s")
        );
    }
}

fn check_items(cache: &LightCache, items: &Value) {
    for it in items.as_array().expect("items") {
        let i = u(&it["index"]) as u32;
        if let Some(h) = it.get("hash512") {
            assert_eq!(cache.item(i).as_bytes(), &bytes(h)[..], "item512 {i}");
        } else {
            assert_eq!(
                cache.item(2 * i).as_bytes(),
                &bytes(&it["hash512_0"])[..],
                "item1024 {i}/0"
            );
            assert_eq!(
                cache.item(2 * i + 1).as_bytes(),
                &bytes(&it["hash512_1"])[..],
                "item1024 {i}/1"
            );
        }
    }
}

#[test]
fn chfast_epoch13_items_and_mock_context() {
    let v = load("chfast_ethash_vectors.json");
    let e = &v["epoch13_dataset_items_1024"];
    let info = ChainSpec::ethereum().info_for(13, 30_000);
    assert_eq!(info.seed, hex32(&e["seed"]));
    let cache = LightCache::new(info);
    assert_eq!(cache.info().cache_size, u(&e["cache_size"]));
    check_items(&cache, &e["items"]);

    // chfast's mock: every cache word64 set to one value, epoch-0 item count.
    let m = &v["mock_context"];
    let word = u64::from_str_radix(m["fill_word64_le"].as_str().expect("s"), 16).expect("hex");
    let n = u(&m["cache_items_512"]) as usize;
    let nodes = vec![Node::from_lanes([word; 8]); n];
    let s = &m["small_dataset_search"];
    let mock = LightCache::from_nodes(info_for_bytes(0, u(&s["dataset_size"])), nodes);
    check_items(&mock, &m["items_1024"]);
    check_items(&mock, &m["items_512"]);
    check_hash(
        &mock,
        hex32(&s["header_hash"]),
        u(&s["nonce"]),
        &s["mix_hash"],
        &s["final_hash"],
    );
    let ds = FullDataset::generate(&mock, &|_, _| {});
    check_hash(
        &ds.rows(),
        hex32(&s["header_hash"]),
        u(&s["nonce"]),
        &s["mix_hash"],
        &s["final_hash"],
    );
}

#[test]
fn libethash_tilde_and_poc9() {
    let v = load("libethash_vectors.json");
    let t = &v["tilde_seed"];
    let cache = LightCache::new(info(
        0,
        hex32(&t["seed_hex"]),
        u(&t["cache_size"]),
        u(&t["dataset_size"]),
    ));
    assert_eq!(cache.as_bytes(), &bytes(&t["cache"])[..]);
    assert_eq!(cache.item(0).as_bytes(), &bytes(&t["dag_item0"])[..]);
    let header: [u8; 32] = t["hashimoto_header_ascii"]
        .as_str()
        .expect("s")
        .as_bytes()
        .try_into()
        .expect("32 ascii bytes");
    let ds = FullDataset::generate(&cache, &|_, _| {});
    for (k, r) in t["hashimoto_results_computed_here"]
        .as_object()
        .expect("obj")
    {
        let n = u64::from_str_radix(k.trim_start_matches("0x"), 16).expect("nonce");
        check_hash(&cache, header, n, &r["mix_hash"], &r["final_hash"]);
        check_hash(&ds.rows(), header, n, &r["mix_hash"], &r["final_hash"]);
    }
    let chain = ChainSpec::ethereum();
    for b in v["poc9_blocks"].as_array().expect("blocks") {
        let info = chain.epoch_info(u(&b["number"]));
        assert_eq!(info.epoch, u(&b["epoch"]));
        let cache = LightCache::new(info);
        check_hash(
            &cache,
            hex32(&b["hashNoNonce"]),
            nonce(&b["nonce"]),
            &b["mixDigest"],
            &b["final_hash"],
        );
    }
}

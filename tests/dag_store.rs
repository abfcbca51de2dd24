//! The on-disk DAG store: round trip, and a damaged file is detected and regenerated.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};

use dagproxy::ethash::{ChainSpec, DagStore, FullDataset, LightCache, StoreError};

#[test]
fn save_load_and_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DagStore::new(dir.path().join("dags"));
    let chain = ChainSpec::test();
    let cache = LightCache::new(chain.epoch_info(60_000));
    assert!(store
        .load(&chain, &cache)
        .expect("no file is fine")
        .is_none());

    let ds = FullDataset::generate(&cache, &|_, _| {});
    let path = store.save(&chain, &ds).expect("save");
    assert!(path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("test-epoch2-")));
    let loaded = store.load(&chain, &cache).expect("load").expect("present");
    assert_eq!(loaded.as_bytes(), ds.as_bytes());

    // Another epoch's cache must not accept this file (different name, so simply absent).
    let other = LightCache::new(chain.epoch_info(0));
    assert!(store.load(&chain, &other).expect("absent").is_none());

    // Flip the last item: the spot check covers the last item.
    let mut f = OpenOptions::new().write(true).open(&path).expect("open");
    f.seek(SeekFrom::End(-1)).expect("seek");
    f.write_all(&[0x5a]).expect("write");
    drop(f);
    assert!(matches!(
        store.load(&chain, &cache),
        Err(StoreError::Corrupt { .. })
    ));

    let reported = std::cell::Cell::new(false);
    let again = store
        .load_or_generate(&chain, &cache, &|_, _| {}, &|_| reported.set(true))
        .expect("regenerated");
    assert!(reported.get());
    assert_eq!(again.as_bytes(), ds.as_bytes());
    assert!(store.load(&chain, &cache).expect("load").is_some());

    // A truncated file is corrupt too.
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(100).expect("truncate");
    assert!(matches!(
        store.load(&chain, &cache),
        Err(StoreError::Corrupt { .. })
    ));
}

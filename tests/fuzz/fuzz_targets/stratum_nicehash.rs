//! Fuzz target: raw bytes through [`dagproxy_fuzz::stratum_nicehash`], which panics on a broken invariant.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dagproxy_fuzz::stratum_nicehash(data));

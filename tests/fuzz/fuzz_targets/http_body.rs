//! Fuzz target: raw bytes through [`dagproxy_fuzz::http_body`], which panics on a broken invariant.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dagproxy_fuzz::http_body(data));

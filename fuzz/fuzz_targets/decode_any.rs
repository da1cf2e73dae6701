#![no_main]
//! Every decoder on arbitrary bytes: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cowfs_engine::testing::fuzzing::decode_any(data));

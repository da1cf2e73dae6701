#![no_main]
//! Recovery from an arbitrary segment: must fail cleanly or open, never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cowfs_engine::testing::fuzzing::recover_image(data));

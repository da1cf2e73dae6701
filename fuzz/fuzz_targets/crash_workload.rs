#![no_main]
//! A structured crash workload: operations, a crash point and a crash image, checked against
//! the reference run.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cowfs_engine::testing::fuzzing::crash_workload(data);
});

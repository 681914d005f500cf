//! `model.safetensors.index.json` of a sharded folder with two valid shards.
#![no_main]
include!("scratch.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lorascope::fuzz::index(scratch(), data);
});

//! A `.safetensors` file: header length, JSON header, offsets, dtypes, decoding.
#![no_main]
include!("scratch.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lorascope::fuzz::safetensors(scratch(), data);
});

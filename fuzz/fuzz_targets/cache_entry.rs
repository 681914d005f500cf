//! A cache entry's body past its checksum: sizes, σ, vectors.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lorascope::fuzz::cache_entry(data);
});

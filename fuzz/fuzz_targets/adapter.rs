//! A PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`, split by a u16
//! length) applied to the MiniLM fixture base: config checks, pairing, factors, merging.
#![no_main]
include!("scratch.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/minilm/base.safetensors");
    lorascope::fuzz::adapter(scratch(), std::path::Path::new(base), data);
});

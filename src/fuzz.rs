//! Entry points for the fuzz targets (`fuzz/`) and the property tests: each takes arbitrary
//! bytes as one kind of user input, runs the real reading path on them, and panics only on a
//! defect — a panic inside lorascope, or an error that is not one line naming what is wrong.
//! Inputs are written to files under `dir` (a scratch folder the caller owns), as users give
//! them.

use std::path::Path;

use crate::checkpoint::{Inputs, Model, Selection};
use crate::error::Error;

/// Elements decoded per tensor at most: the fuzzer's shapes may claim gigabytes of zeros.
const MAX_ELEMENTS: usize = 1 << 18;

/// A user-facing error is one line.
fn one_line(e: &Error) {
    let s = e.to_string();
    assert!(
        !s.is_empty() && !s.contains('\n'),
        "error not one line: {s:?}"
    );
}

/// Every tensor of an opened model decoded, as a scan would.
fn decode_all(m: &Model) {
    for (name, loc) in &m.tensors {
        let n = loc
            .info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d));
        if n.is_none_or(|n| n > MAX_ELEMENTS) {
            continue;
        }
        match m.decode::<f32>(name) {
            Ok(v) => assert_eq!(Some(v.len()), n, "{name}"),
            Err(e) => one_line(&e),
        }
    }
}

/// `data` as a `.safetensors` file: header, offsets, dtypes, decoding.
pub fn safetensors(dir: &Path, data: &[u8]) {
    let p = dir.join("model.safetensors");
    std::fs::write(&p, data).expect("scratch folder writable");
    match Model::open(&p) {
        Ok(m) => decode_all(&m),
        Err(e) => one_line(&e),
    }
}

/// Two small valid shards (`a.safetensors`: `x.weight`, `b.safetensors`: `y.weight`, 4×4 F32)
/// and `data` as their `model.safetensors.index.json`.
pub fn index(dir: &Path, data: &[u8]) {
    for (file, name) in [("a.safetensors", "x.weight"), ("b.safetensors", "y.weight")] {
        let p = dir.join(file);
        if !p.exists() {
            let mut b = crate::checkpoint::st::header(
                &[(name.into(), "F32".into(), vec![4, 4], 64)],
                Default::default(),
            );
            b.extend((0..16).flat_map(|i| (i as f32).to_le_bytes()));
            std::fs::write(&p, b).expect("scratch folder writable");
        }
    }
    std::fs::write(dir.join("model.safetensors.index.json"), data).expect("scratch writable");
    match Model::open(dir) {
        Ok(m) => decode_all(&m),
        Err(e) => one_line(&e),
    }
}

/// `data` split into an adapter folder: a little-endian u16 length, that many bytes of
/// `adapter_config.json`, the rest `adapter_model.safetensors`; applied to `base`, then each
/// selected module's factors read and its merged matrix built.
pub fn adapter(dir: &Path, base: &Path, data: &[u8]) {
    let (config, tensors) = match data {
        [a, b, rest @ ..] => rest.split_at((u16::from_le_bytes([*a, *b]) as usize).min(rest.len())),
        _ => (data, &[][..]),
    };
    let folder = dir.join("adapter");
    std::fs::create_dir_all(&folder).expect("scratch folder writable");
    std::fs::write(folder.join("adapter_config.json"), config).expect("scratch writable");
    std::fs::write(folder.join("adapter_model.safetensors"), tensors).expect("scratch writable");
    let inputs = match Inputs::open(base, &folder, &Selection::default()) {
        Ok(i) => i,
        Err(e) => return one_line(&e),
    };
    for p in inputs.selected() {
        if p.shape.iter().product::<usize>() > MAX_ELEMENTS {
            continue;
        }
        if let Err(e) = inputs.lora_factors(p) {
            one_line(&e);
        }
        match inputs.tuned_matrix::<f32>(p) {
            Ok(m) => assert_eq!((m.rows, m.cols), p.dims(), "{}", p.name),
            Err(e) => one_line(&e),
        }
    }
}

/// `data` as the body of a cache entry with a valid checksum (the checksum stops every other
/// change at the door), then read as the engine reads entries.
pub fn cache_entry(data: &[u8]) {
    if let Some(d) = crate::cache::decode_body(data) {
        assert_eq!(d.vectors.len(), d.dim * d.keep);
        for j in 0..d.keep {
            assert_eq!(d.column(j).len(), d.dim);
        }
    }
}

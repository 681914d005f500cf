//! What the benches share: writing safetensors files of f32 tensors.

use std::path::Path;

pub fn f32_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect()
}

/// A safetensors file of (name, shape, little-endian f32 bytes).
pub fn write_st(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) {
    let entries: Vec<_> = tensors
        .iter()
        .map(|(n, shape, data)| (n.clone(), "F32".to_string(), shape.clone(), data.len()))
        .collect();
    let mut out = lorascope::checkpoint::st::header(&entries, Default::default());
    for t in tensors {
        out.extend(&t.2);
    }
    std::fs::write(path, out).unwrap();
}

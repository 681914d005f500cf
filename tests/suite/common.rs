//! Helpers shared by the integration tests: a safetensors writer that can also write broken
//! files, and a small deterministic RNG (no extra crates).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct T {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

pub fn f32_tensor(name: &str, shape: &[usize], vals: &[f32]) -> T {
    assert_eq!(shape.iter().product::<usize>(), vals.len());
    T {
        name: name.into(),
        dtype: "F32",
        shape: shape.to_vec(),
        bytes: vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

pub fn f16_tensor(name: &str, shape: &[usize], vals: &[f32]) -> T {
    T {
        name: name.into(),
        dtype: "F16",
        shape: shape.to_vec(),
        bytes: vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
    }
}

pub fn bf16_tensor(name: &str, shape: &[usize], vals: &[f32]) -> T {
    T {
        name: name.into(),
        dtype: "BF16",
        shape: shape.to_vec(),
        bytes: vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
    }
}

pub fn header_json(ts: &[T]) -> String {
    let mut h = serde_json::Map::new();
    h.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut off = 0;
    for t in ts {
        h.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + t.bytes.len()]}),
        );
        off += t.bytes.len();
    }
    serde_json::Value::Object(h).to_string()
}

/// Raw file from a header string and data bytes (for crafting broken files).
pub fn write_raw(path: &Path, header: &[u8], data: &[u8]) {
    let mut buf = (header.len() as u64).to_le_bytes().to_vec();
    buf.extend_from_slice(header);
    buf.extend_from_slice(data);
    std::fs::write(path, buf).unwrap();
}

pub fn write_st(path: &Path, ts: &[T]) {
    let mut h = header_json(ts).into_bytes();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let data: Vec<u8> = ts.iter().flat_map(|t| t.bytes.iter().copied()).collect();
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    write_raw(path, &h, &data);
}

/// A file with a real header and a sparse all-zero data section (no bytes written).
pub fn write_sparse_from_header(path: &Path, header: &serde_json::Value) {
    let end = header
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap();
    let mut h = header.to_string().into_bytes();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    write_raw(path, &h, &[]);
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(8 + h.len() as u64 + end).unwrap();
}

pub use lorascope::demo::Rng;

/// Test data helpers on the library's deterministic RNG.
pub trait RngExt {
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f32>;
}

impl RngExt for Rng {
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (self.normal() * scale) as f32).collect()
    }
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn lorascope(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lorascope"));
    c.args(args);
    // Never the user's own flags: a test that wants some passes its own XDG_STATE_HOME.
    c.env("XDG_STATE_HOME", "/nonexistent/lorascope-test-state");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

/// Max |a-b| / max |b|.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-300);
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

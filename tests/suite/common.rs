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

/// A MiniLM fixture's path (`tests/fixtures/minilm/<p>`).
pub fn fx(p: &str) -> String {
    fixtures()
        .join("minilm")
        .join(p)
        .to_string_lossy()
        .into_owned()
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
    // Nor a job array's: the suite may itself run inside one.
    for k in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "JOB_COMPLETION_INDEX",
    ] {
        c.env_remove(k);
    }
    c.env_remove("LORASCOPE_CACHE_WARN_SIZE");
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

/// The part of JSON Schema that `docs/*.schema.json` use (type, const, enum, required,
/// properties, additionalProperties, items, minimum, exclusiveMinimum, maximum, `$ref` to
/// `#/$defs/…`): every place where `value` breaks `schema`, as "path: what".
pub fn schema_errors(root: &serde_json::Value, value: &serde_json::Value) -> Vec<String> {
    fn check(
        root: &serde_json::Value,
        s: &serde_json::Value,
        v: &serde_json::Value,
        path: &str,
        out: &mut Vec<String>,
    ) {
        use serde_json::Value;
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/$defs/").expect("local $ref");
            return check(root, &root["$defs"][name], v, path, out);
        }
        let is = |t: &str| match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            other => panic!("schema type {other} not handled"),
        };
        if let Some(t) = s.get("type") {
            let ok = match t {
                Value::String(t) => is(t),
                Value::Array(ts) => ts.iter().any(|t| is(t.as_str().unwrap())),
                _ => false,
            };
            if !ok {
                out.push(format!("{path}: {v} is not of type {t}"));
                return;
            }
        }
        if let Some(c) = s.get("const") {
            if c != v {
                out.push(format!("{path}: {v} is not {c}"));
            }
        }
        if let Some(Value::Array(e)) = s.get("enum") {
            if !e.contains(v) {
                out.push(format!("{path}: {v} is not one of {e:?}"));
            }
        }
        if let Some(x) = v.as_f64() {
            let bound = |k: &str| s.get(k).and_then(Value::as_f64);
            if bound("minimum").is_some_and(|m| x < m)
                || bound("exclusiveMinimum").is_some_and(|m| x <= m)
                || bound("maximum").is_some_and(|m| x > m)
            {
                out.push(format!("{path}: {x} out of range"));
            }
        }
        if let Value::Object(o) = v {
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !o.contains_key(r.as_str().unwrap()) {
                    out.push(format!("{path}: `{r}` missing"));
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (k, x) in o {
                let p = format!("{path}.{k}");
                match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                    (Some(ps), _) => check(root, ps, x, &p, out),
                    (None, Some(Value::Bool(false))) => out.push(format!("{p}: not in the schema")),
                    (None, Some(extra @ Value::Object(_))) => check(root, extra, x, &p, out),
                    _ => {}
                }
            }
        }
        if let (Value::Array(a), Some(items)) = (v, s.get("items")) {
            for (i, x) in a.iter().enumerate() {
                check(root, items, x, &format!("{path}[{i}]"), out);
            }
        }
    }
    let mut out = Vec::new();
    check(root, root, value, "$", &mut out);
    out
}

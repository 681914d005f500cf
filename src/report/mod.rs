//! Machine-readable exports of a scan. The JSON schema is documented in README.md.

use serde_json::{json, Value};

use crate::checkpoint::{Inputs, Tuned};
use crate::engine::{Options, Scan};

pub const SCHEMA_VERSION: u32 = 1;

pub fn inputs_json(inputs: &Inputs) -> Value {
    let tuned = match &inputs.tuned {
        Tuned::Model(m) => json!({"path": m.path, "kind": m.format.as_str()}),
        Tuned::Adapter(a) => {
            let c = &a.config;
            let scalings: Vec<f64> = {
                let mut v: Vec<f64> = a.modules.values().map(|m| m.scaling).collect();
                v.sort_by(f64::total_cmp);
                v.dedup();
                v
            };
            json!({"path": a.dir, "kind": "adapter", "r": c.r, "lora_alpha": c.lora_alpha,
                   "scaling": scalings, "use_rslora": c.use_rslora, "use_dora": c.use_dora,
                   "modules": a.modules.len()})
        }
    };
    json!({
        "base": {"path": inputs.base.path, "kind": inputs.base.format.as_str()},
        "tuned": tuned,
    })
}

/// `scan --format json`.
pub fn scan_json(inputs: &Inputs, scan: &Scan, opts: &Options, k: usize, epsilon: f64) -> Value {
    let matrices: Vec<Value> = scan
        .results
        .iter()
        .map(|(name, r)| match r {
            Ok(m) => {
                let top = &m.vectors[..k.min(m.vectors.len())];
                json!({
                    "name": name,
                    "shape": m.shape,
                    "intruders": m.intruders(k, epsilon),
                    "max_cos": top.iter().map(|v| v.max_cos).collect::<Vec<_>>(),
                    "best_base_index": top.iter().map(|v| v.best_base_index).collect::<Vec<_>>(),
                    "best_base_sigma": top.iter().map(|v| v.best_base_sigma).collect::<Vec<_>>(),
                    "sigma_tuned": top.iter().map(|v| v.sigma).collect::<Vec<_>>(),
                    "sigma_ratio": top.iter().map(|v| v.sigma_ratio).collect::<Vec<_>>(),
                    "sigma_base": m.sigma_base.iter().take(k).collect::<Vec<_>>(),
                    "delta_rel_norm": m.delta_rel_norm,
                    "delta_effective_rank": m.delta_effective_rank,
                })
            }
            Err(e) => json!({"name": name, "error": e}),
        })
        .collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "lorascope_version": env!("CARGO_PKG_VERSION"),
        "k": k,
        "epsilon": epsilon,
        "vectors": opts.side,
        "precision": opts.precision,
        "total_intruders": scan.total(k, epsilon),
        "failed": scan.failed(),
        "inputs": inputs_json(inputs),
        "per_layer": scan.per_layer(k, epsilon).into_iter()
            .map(|(b, n)| json!({"layer": b, "intruders": n})).collect::<Vec<_>>(),
        "sweep": scan.sweep(k).into_iter()
            .map(|(e, n)| json!({"epsilon": e, "intruders": n})).collect::<Vec<_>>(),
        "matrices": matrices,
    })
}

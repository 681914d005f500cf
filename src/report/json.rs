//! JSON, `schema_version` 1 (docs/scan.schema.json): one shape for `scan --format json` and a
//! report's JSON, numbers at full precision (as `scripts/reference.py` compares them).

use serde_json::{json, Map, Value};

use super::model::{Report, Results};

pub const SCHEMA_VERSION: u32 = 1;

/// Counts follow the user's flags where set ("intruders", "total_intruders", "per_layer");
/// "rule_intruders" and "total_rule_intruders" are the rule's alone, "user_flags" the verdicts
/// that override it. The sweep is the rule's. "max_cos" is always the paper's c_j; under
/// `"rule": "degenerate-aware"` the counts compare "cluster_cos" with ε.
pub fn results(r: &Results) -> Value {
    let k = r.k();
    let matrices: Vec<Value> = r
        .matrices
        .iter()
        .map(|m| match m {
            Ok(m) => {
                let top: Vec<_> = m.top(k).collect();
                let flags: Map<String, Value> = m
                    .user_flags
                    .iter()
                    .map(|(j, v)| (j.to_string(), Value::Bool(*v)))
                    .collect();
                json!({
                    "name": m.name,
                    "shape": m.shape,
                    "intruders": m.intruders,
                    "rule_intruders": m.rule_intruders,
                    "untestable": m.untestable,
                    "user_flags": flags,
                    "max_cos": top.iter().map(|v| v.max_cos).collect::<Vec<_>>(),
                    "participation": top.iter().map(|v| v.participation).collect::<Vec<_>>(),
                    "cluster_cos": top.iter().map(|v| v.cluster_cos).collect::<Vec<_>>(),
                    "cluster_size": top.iter().map(|v| v.cluster_size).collect::<Vec<_>>(),
                    "best_base_index": top.iter().map(|v| v.best_base_index).collect::<Vec<_>>(),
                    "best_base_sigma": top.iter().map(|v| v.best_base_sigma).collect::<Vec<_>>(),
                    "sigma_tuned": top.iter().map(|v| v.sigma).collect::<Vec<_>>(),
                    "sigma_ratio": top.iter().map(|v| v.sigma_ratio).collect::<Vec<_>>(),
                    "sigma_base": m.sigma_base.iter().take(k).collect::<Vec<_>>(),
                    "delta_rel_norm": m.delta_rel_norm,
                    "delta_effective_rank": m.delta_effective_rank,
                })
            }
            Err(f) => json!({"name": f.name, "error": f.error}),
        })
        .collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "lorascope_version": r.lorascope_version,
        "k": k,
        "epsilon": r.epsilon(),
        "rule": r.rule.kind().name(),
        "degenerate_tol": r.degenerate_tol,
        "vectors": r.vectors,
        "precision": r.precision,
        "total_intruders": r.total_intruders,
        "total_rule_intruders": r.total_rule,
        "untestable_vectors": r.untestable(),
        "flags_applied": r.overrides,
        "matrices_total": r.matrices_total,
        "matrices_analysed": r.matrices_analysed(),
        "failed": r.failed().count(),
        "inputs": r.inputs,
        "per_layer": r.per_layer.iter()
            .map(|(b, n)| json!({"layer": b, "intruders": n})).collect::<Vec<_>>(),
        "sweep": r.sweep.iter()
            .map(|(e, n)| json!({"epsilon": e, "intruders": n})).collect::<Vec<_>>(),
        "matrices": matrices,
    })
}

/// A report's JSON: its results, when, and which matrices have sections.
pub fn report(r: &Report) -> Value {
    let mut v = results(&r.results);
    let o = v.as_object_mut().expect("an object");
    o.insert("time".into(), r.time.clone().into());
    o.insert(
        "sections".into(),
        r.sections.iter().map(|m| m.name.clone()).collect(),
    );
    v
}

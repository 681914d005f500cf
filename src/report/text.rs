//! Text reports: Markdown (tables to paste into an issue or an appendix) and CSV (one row per
//! matrix and top vector).

use std::fmt::Write;

use super::model::{MatrixRow, Report};
use super::{csv_field, plain};

/// Fixed formatting keeps golden files stable.
fn f(x: f64) -> String {
    format!("{x:.4}")
}

fn g(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e4 || x.abs() < 1e-3) {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}

/// Unicode sparkline of log σ over a shared range.
pub fn sparkline(values: &[f64], lo: f64, hi: f64) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    values
        .iter()
        .map(|s| {
            let l = s.max(1e-30).log10();
            let t = ((l - lo) / (hi - lo).max(1e-12)).clamp(0.0, 1.0);
            BARS[((t * 7.0).round()) as usize]
        })
        .collect()
}

pub fn spark_range(a: &[f64], b: &[f64]) -> (f64, f64) {
    a.iter()
        .chain(b)
        .filter(|s| **s > 0.0)
        .map(|s| s.log10())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        })
}

fn verdict(v: &super::model::VectorRow) -> &'static str {
    match (v.intruder, v.flag.is_some()) {
        _ if !v.testable => "σ ≈ 0: not tested",
        (true, false) => "intruder",
        (true, true) => "intruder (user flag)",
        (false, true) => "not an intruder (user flag)",
        (false, false) => "",
    }
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# lorascope report\n");
    let _ = writeln!(
        s,
        "lorascope {} · {} · k = {} · ε = {}{} · {} singular vectors\n",
        r.results.lorascope_version,
        r.time,
        r.results.k(),
        r.results.epsilon(),
        r.results.rule_suffix(),
        match r.results.vectors {
            crate::spectral::Side::Left => "left",
            crate::spectral::Side::Right => "right",
        }
    );
    let _ = writeln!(
        s,
        "| input | path | kind | bytes | header xxh3 |\n|---|---|---|---|---|"
    );
    for (label, fi) in [
        ("base", &r.results.inputs.base),
        ("tuned", &r.results.inputs.tuned),
    ] {
        let _ = writeln!(
            s,
            "| {label} | `{}` | {} | {} | {} |",
            fi.path,
            fi.kind,
            fi.bytes,
            fi.header_hashes.join(" ")
        );
    }
    if let Some(line) = r.results.adapter_line() {
        let _ = writeln!(s, "\n{line}");
    }
    let _ = writeln!(s, "\n## Summary\n");
    let _ = writeln!(
        s,
        "**{}** {}",
        super::count(r.results.total_intruders, "intruder", "intruders"),
        r.results.summary_tail()
    );
    if let Some(note) = r.results.cluster_note() {
        let _ = writeln!(s, "\nNote: {note}.");
    }
    for super::model::Failure { name: n, error: e } in r.results.failed() {
        let _ = writeln!(s, "\n- `{n}` could not be analysed: {e}");
    }
    let _ = writeln!(s, "\n| layer | intruders |\n|---|---:|");
    for (b, n) in &r.results.per_layer {
        let _ = writeln!(s, "| `{b}` | {n} |");
    }
    let _ = writeln!(s, "\nIntruders by ε (rule only, k = {}):\n", r.results.k());
    let _ = writeln!(
        s,
        "| ε | {} |",
        r.results
            .sweep
            .iter()
            .map(|(e, _)| format!("{e:.1}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "|---|{}", "---:|".repeat(r.results.sweep.len()));
    let _ = writeln!(
        s,
        "| intruders | {} |",
        r.results
            .sweep
            .iter()
            .map(|(_, n)| n.to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "\n## Matrices\n");
    if r.sections.is_empty() {
        let _ = writeln!(
            s,
            "No matrix selected (by default: those with intruders or user flags)."
        );
    }
    for m in &r.sections {
        section_md(&mut s, m, r.results.k());
    }
    s
}

fn section_md(s: &mut String, m: &MatrixRow, k: usize) {
    let _ = writeln!(s, "### `{}`\n", m.name);
    let _ = writeln!(
        s,
        "{}×{} · {} · ‖ΔW‖/‖W0‖ = {} · effective rank of ΔW = {}\n",
        m.shape[0],
        m.shape[1],
        super::model::intruder_summary(&m.intruders),
        g(m.delta_rel_norm),
        m.delta_effective_rank
            .map_or("—".to_string(), |x| format!("{x:.2}"))
    );
    let n = m.sigma_tuned.len().min(32);
    let (lo, hi) = spark_range(
        &m.sigma_tuned[..n],
        &m.sigma_base[..n.min(m.sigma_base.len())],
    );
    let _ = writeln!(
        s,
        "```\nlog σ, top {n}\ntuned {}\nbase  {}\n```\n",
        sparkline(&m.sigma_tuned[..n], lo, hi),
        sparkline(&m.sigma_base[..n.min(m.sigma_base.len())], lo, hi)
    );
    let _ = writeln!(s, "| j | σ tuned | σ base | σ/σ1 | c_j | PR | cluster c_j (size) | best base i | σ of base i | verdict |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for v in &m.vectors {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2} | {} ({}) | {} | {} | {} |",
            v.j,
            g(v.sigma),
            m.sigma_base.get(v.j).map_or("".into(), |x| g(*x)),
            f(v.sigma_ratio),
            f(v.max_cos),
            v.participation,
            f(v.cluster_cos),
            v.cluster_size,
            v.best_base_index,
            g(v.best_base_sigma),
            if v.j >= k && v.flag.is_none() {
                ""
            } else {
                verdict(v)
            }
        );
    }
    let _ = writeln!(s);
}

pub fn csv(r: &Report) -> String {
    let mut s = String::from("matrix,rows,cols,j,sigma,sigma_base,sigma_ratio,max_cos,best_base_index,best_base_sigma,rule_intruder,user_flag,intruder,delta_rel_norm,delta_effective_rank,participation,cluster_cos,cluster_size\n");
    for m in &r.sections {
        for v in &m.vectors {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{:.6},{:.6},{},{},{},{},{},{},{},{:.4},{:.6},{}",
                csv_field(&m.name),
                m.shape[0],
                m.shape[1],
                v.j,
                plain(v.sigma),
                m.sigma_base.get(v.j).map_or(String::new(), |x| plain(*x)),
                v.sigma_ratio,
                v.max_cos,
                v.best_base_index,
                plain(v.best_base_sigma),
                v.rule,
                v.flag.map_or(String::new(), |f| f.to_string()),
                v.intruder,
                plain(m.delta_rel_norm),
                m.delta_effective_rank.map_or(String::new(), plain),
                v.participation,
                v.cluster_cos,
                v.cluster_size
            );
        }
    }
    s
}

//! `scan`'s table and CSV: one row per matrix.

use std::fmt::Write;

use super::model::{MatrixRow, Results};
use super::{count, csv_field, shown_name};

/// The user's flags on a matrix as `j:verdict;…`.
fn flags_field(m: &MatrixRow) -> String {
    m.user_flags
        .iter()
        .map(|(j, v)| format!("{j}:{v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// One row per matrix; with `sweep`, the count at each ε of the grid, one column each.
pub fn csv(r: &Results, sweep: bool) -> String {
    let k = r.k();
    let grid: Vec<f64> = if sweep {
        r.sweep.iter().map(|(e, _)| *e).collect()
    } else {
        vec![]
    };
    let mut cols: Vec<String> = (0..k).map(|j| format!("c_{j}")).collect();
    cols.extend(grid.iter().map(|e| format!("intruders_eps_{e:.1}")));
    // The rule's own count and the flags that override it.
    cols.extend(["rule_intruders".to_string(), "user_flags".to_string()]);
    // Top-k vectors with σ ≈ 0: their c_j are listed but not tested.
    cols.push("untestable".to_string());
    // Participation numbers of the same vectors, last so that earlier columns keep their place.
    cols.extend((0..k).map(|j| format!("pr_{j}")));
    let mut s = format!(
        "name,rows,cols,intruders,min_cos,delta_rel_norm,delta_effective_rank,error,{}\n",
        cols.join(",")
    );
    for m in &r.matrices {
        let _ = match m {
            Ok(m) => {
                let mut values: Vec<String> =
                    m.top(k).map(|v| format!("{:.6}", v.c(&r.rule))).collect();
                // A matrix of rank below k has fewer vectors: its row keeps its width.
                values.resize(k, String::new());
                if sweep {
                    values.extend(m.sweep.iter().map(|n| n.to_string()));
                }
                values.push(m.rule_intruders.len().to_string());
                values.push(flags_field(m));
                values.push(m.untestable.to_string());
                let mut pr: Vec<String> = m
                    .top(k)
                    .map(|v| format!("{:.4}", v.participation))
                    .collect();
                pr.resize(k, String::new());
                values.extend(pr);
                writeln!(
                    s,
                    "{},{},{},{},{},{:.6},{},,{}",
                    csv_field(&m.name),
                    m.shape[0],
                    m.shape[1],
                    m.intruders.len(),
                    m.min_cos(&r.rule)
                        .map_or(String::new(), |c| format!("{c:.6}")),
                    m.delta_rel_norm,
                    m.delta_effective_rank
                        .map_or(String::new(), |x| format!("{x:.3}")),
                    values.join(",")
                )
            }
            Err(f) => writeln!(
                s,
                "{},,,,,,,{}{}",
                csv_field(&f.name),
                csv_field(&f.error),
                ",".repeat(2 * k + grid.len() + 3)
            ),
        };
    }
    s
}

/// A number to 3 places, or "—" where there is none (nothing testable, no base σ1).
fn dash_or(x: Option<f64>) -> String {
    x.map_or("—".to_string(), |x| format!("{x:.3}"))
}

/// Names as shown: escaped, and no wider than this (a width from data is not to be trusted: a
/// 70,000-character name once panicked the formatter).
const NAME_MAX: usize = 80;

/// The table `scan` prints: a row per matrix, intruders per layer, the total; with `sweep`, the
/// counts at each ε of the grid.
pub fn table(r: &Results, sweep: bool) -> String {
    let (k, eps) = (r.k(), r.epsilon());
    let name_of = |n: &str| shown_name(n, Some(NAME_MAX));
    let name = |m: &Result<MatrixRow, super::model::Failure>| match m {
        Ok(m) => name_of(&m.name),
        Err(f) => name_of(&f.name),
    };
    let w = r
        .matrices
        .iter()
        .map(|m| name(m).chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let grid = if sweep {
        r.sweep
            .iter()
            .map(|(e, _)| format!(" ε={e:.1}"))
            .collect::<String>()
    } else {
        String::new()
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<w$}  {:>10}  {:>9}  {:>7}  {:>8}  {:>7}{grid}",
        "matrix", "shape", "intruders", "min c_j", "σ1 ratio", "|ΔW|/|W|"
    );
    for m in &r.matrices {
        let _ = match m {
            Ok(row) => {
                // `*`: the user's flags changed this matrix's verdicts.
                let n = row.intruders.len();
                let count = if row.user_flags.is_empty() {
                    n.to_string()
                } else {
                    format!("{n}*")
                };
                let mut line = format!(
                    "{:<w$}  {:>10}  {:>9}  {:>7}  {:>8}  {:>7.4}",
                    name(m),
                    format!("{}×{}", row.shape[0], row.shape[1]),
                    count,
                    dash_or(row.min_cos(&r.rule)),
                    dash_or(row.sigma1_ratio()),
                    row.delta_rel_norm
                );
                if sweep {
                    for n in &row.sweep {
                        line += &format!(" {n:>5}");
                    }
                }
                writeln!(s, "{line}")
            }
            Err(f) => writeln!(s, "{:<w$}  FAILED: {}", name(m), shown_name(&f.error, None)),
        };
    }
    let _ = writeln!(s, "\nintruders per layer (k={k}, ε={eps}):");
    for (b, n) in &r.per_layer {
        let _ = writeln!(s, "  {:<w2$} {n}", name_of(b), w2 = w.min(40));
    }
    if sweep {
        let _ = writeln!(s, "\ntotal by ε (k={k}):");
        for (e, n) in &r.sweep {
            let _ = writeln!(s, "  ε={e:.1}  {n}");
        }
    }
    let failed = r.failed().count();
    let _ = writeln!(
        s,
        "\ntotal intruders (k={k}, ε={eps}{}): {} in {}{}",
        r.rule_name().map_or(String::new(), |n| format!(", {n}")),
        r.total_intruders,
        count(r.matrices.len(), "matrix", "matrices"),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    if let Some(note) = untestable_note(r) {
        let _ = writeln!(s, "({note})");
    }
    if let Some(note) = r.cluster_note() {
        let _ = writeln!(s, "({note})");
    }
    if r.overrides > 0 {
        let _ = writeln!(
            s,
            "(* explorer flags: the rule alone finds {}; --ignore-flags for it)",
            r.total_rule
        );
    }
    s
}

/// What a reader is told when some top-k vectors were not tested (σ ≈ 0); None if all were.
pub fn untestable_note(r: &Results) -> Option<String> {
    r.untestable_count().map(|n| {
        format!("{n} with σ ≈ 0 not tested: a null-space direction is arbitrary, never an intruder")
    })
}

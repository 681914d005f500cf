//! The comparison's writers: the table `compare` prints, CSV and JSON for scripts, Markdown.
//! They compute nothing.

use std::fmt::Write;

use serde_json::{json, Value};

use super::{Comparison, SCHEMA_VERSION};
use crate::report::{csv_field, shown_name};

impl Comparison {
    /// The table `compare` prints: runs × ε (and metrics), then layers × runs at this ε.
    pub fn table(&self) -> String {
        let (k, eps) = (self.rule.k(), self.rule.epsilon());
        let metrics = self.metric_names();
        let w = self
            .runs
            .iter()
            .map(|r| shown_name(&r.spec.label, Some(40)).chars().count())
            .max()
            .unwrap_or(3)
            .max(3);
        let mut s = String::new();
        // Step and epoch only where some run has them (checkpoints of a training run).
        let steps = self
            .runs
            .iter()
            .any(|r| r.spec.step.is_some() || r.spec.epoch.is_some());
        let mut head = format!("{:<w$}", "run");
        if steps {
            head += &format!("  {:>6}  {:>5}", "step", "epoch");
        }
        for e in crate::spectral::rule::SWEEP {
            head += &format!("  {:>5}", format!("ε={e:.1}"));
        }
        head += &format!("  {:>9}", format!("at ε={eps}"));
        for m in &metrics {
            head += &format!("  {m:>w2$}", w2 = m.chars().count().max(6));
        }
        let _ = writeln!(s, "{head}");
        for r in &self.runs {
            let mut line = format!("{:<w$}", shown_name(&r.spec.label, Some(40)));
            if steps {
                line += &format!(
                    "  {:>6}  {:>5}",
                    r.spec.step.map_or("-".into(), |x| x.to_string()),
                    r.spec.epoch.map_or("-".into(), |x| format!("{x:.2}"))
                );
            }
            match &r.results {
                Ok(res) => {
                    for (_, n) in &res.sweep {
                        line += &format!("  {n:>5}");
                    }
                    let failed = res.failed().count();
                    line += &format!(
                        "  {:>9}",
                        if failed > 0 {
                            format!("{}!", res.total_rule)
                        } else {
                            res.total_rule.to_string()
                        }
                    );
                    for m in &metrics {
                        line += &format!(
                            "  {:>w2$}",
                            r.spec
                                .metrics
                                .get(m)
                                .map_or("-".into(), |x| format!("{x:.4}")),
                            w2 = m.chars().count().max(6)
                        );
                    }
                }
                Err(e) => line += &format!("  FAILED: {}", shown_name(e, None)),
            }
            let _ = writeln!(s, "{}", line.trim_end());
        }
        let layers = self.layers();
        if !layers.is_empty() {
            let _ = writeln!(s, "\nintruders per layer (k={k}, ε={eps}):");
            let lw = layers
                .iter()
                .map(|l| shown_name(l, Some(40)).chars().count())
                .max()
                .unwrap_or(5);
            let cols: Vec<usize> = self
                .runs
                .iter()
                .map(|r| shown_name(&r.spec.label, Some(20)).chars().count().max(3))
                .collect();
            let mut head = format!("  {:<lw$}", "layer");
            for (r, cw) in self.runs.iter().zip(&cols) {
                head += &format!("  {:>cw$}", shown_name(&r.spec.label, Some(20)));
            }
            let _ = writeln!(s, "{head}");
            for l in &layers {
                let mut line = format!("  {:<lw$}", shown_name(l, Some(40)));
                for (r, cw) in self.runs.iter().zip(&cols) {
                    let n = r.layer_count(l);
                    line += &format!("  {:>cw$}", n.map_or("-".into(), |n| n.to_string()));
                }
                let _ = writeln!(s, "{line}");
            }
        }
        let fractions: Vec<(&str, Vec<(f64, usize)>)> = self
            .runs
            .iter()
            .filter_map(|r| {
                Some((
                    r.spec.label.as_str(),
                    r.results.as_ref().ok()?.by_fraction()?,
                ))
            })
            .collect();
        if !fractions.is_empty() {
            let _ = writeln!(
                s,
                "\nintruders (ε={eps}) among the top fraction of each matrix's vectors (whole spectra):"
            );
            let mut head = format!("  {:<w$}", "run");
            for t in 1..=10 {
                head += &format!("  {:>5}", format!("{}%", t * 10));
            }
            let _ = writeln!(s, "{head}");
            for (label, f) in &fractions {
                let mut line = format!("  {:<w$}", shown_name(label, Some(40)));
                for (_, n) in f {
                    line += &format!("  {n:>5}");
                }
                let _ = writeln!(s, "{line}");
            }
        }
        let corr = self.correlations();
        if !corr.is_empty() {
            let _ = writeln!(
                s,
                "\nSpearman ρ, intruders (at ε={eps}) vs each metric across runs:"
            );
            for (m, rho, n) in &corr {
                let _ = writeln!(s, "  {m}  ρ = {rho:+.2} over {n} runs");
            }
        }
        if !self.tracks.is_empty() {
            let reference = &self.runs[self.reference].spec.label;
            let _ = writeln!(
                s,
                "\nintruders of {} through the runs: best |cos| (rank) among each run's top vectors",
                shown_name(reference, Some(40))
            );
            for t in &self.tracks {
                let mut line = format!(
                    "  {} u{} σ {:.3}:",
                    shown_name(&t.matrix, Some(60)),
                    t.j,
                    t.sigma
                );
                for (r, p) in self.runs.iter().zip(&t.points) {
                    let _ = write!(
                        line,
                        "  {} {}",
                        shown_name(&r.spec.label, Some(20)),
                        p.as_ref()
                            .map_or("-".into(), |p| format!("{:.2} ({})", p.cos, p.rank))
                    );
                }
                if let Some(i) = t.first_seen(eps) {
                    let _ = write!(
                        line,
                        "  · from {}",
                        shown_name(&self.runs[i].spec.label, Some(20))
                    );
                }
                let _ = writeln!(s, "{line}");
            }
        }
        if self.runs.iter().any(|r| {
            r.results
                .as_ref()
                .is_ok_and(|x| x.failed().next().is_some())
        }) {
            let _ = writeln!(
                s,
                "\n(!: some matrices of the run could not be analysed; scan it for which)"
            );
        }
        s
    }

    /// One row per run: its counts at each ε of the sweep and at the rule's, its metrics.
    pub fn csv(&self) -> String {
        let metrics = self.metric_names();
        let mut s = String::from("label,path,step,epoch,total_intruders");
        for e in crate::spectral::rule::SWEEP {
            let _ = write!(s, ",intruders_eps_{e:.1}");
        }
        for m in &metrics {
            let _ = write!(s, ",{}", csv_field(m));
        }
        s.push_str(",error\n");
        for r in &self.runs {
            let _ = write!(
                s,
                "{},{},{},{}",
                csv_field(&r.spec.label),
                csv_field(&r.spec.path.display().to_string()),
                r.spec.step.map_or(String::new(), |x| x.to_string()),
                r.spec.epoch.map_or(String::new(), |x| x.to_string())
            );
            match &r.results {
                Ok(res) => {
                    let _ = write!(s, ",{}", res.total_rule);
                    for (_, n) in &res.sweep {
                        let _ = write!(s, ",{n}");
                    }
                }
                Err(_) => s.push_str(&",".repeat(1 + crate::spectral::rule::SWEEP.len())),
            }
            for m in &metrics {
                let _ = write!(
                    s,
                    ",{}",
                    r.spec
                        .metrics
                        .get(m)
                        .map_or(String::new(), |x| x.to_string())
                );
            }
            let err = r.results.as_ref().err().cloned().unwrap_or_default();
            let _ = writeln!(s, ",{}", csv_field(&err));
        }
        s
    }

    /// For scripts: per run its counts, sweep, layers and metrics, or its error.
    pub fn json(&self) -> Value {
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|r| {
                let mut o = json!({
                    "label": r.spec.label,
                    "path": r.spec.path.display().to_string(),
                    "step": r.spec.step,
                    "epoch": r.spec.epoch,
                    "metrics": r.spec.metrics,
                });
                let m = o.as_object_mut().expect("an object");
                match &r.results {
                    Ok(res) => {
                        m.insert("total_intruders".into(), res.total_rule.into());
                        m.insert("matrices_analysed".into(), res.matrices_analysed().into());
                        m.insert("failed".into(), res.failed().count().into());
                        m.insert(
                            "sweep".into(),
                            res.sweep
                                .iter()
                                .map(|(e, n)| json!({"epsilon": e, "intruders": n}))
                                .collect(),
                        );
                        m.insert(
                            "layers".into(),
                            res.per_layer
                                .iter()
                                .map(|(b, n)| json!({"layer": b, "intruders": n}))
                                .collect(),
                        );
                        m.insert("inputs".into(), json!(res.inputs));
                        if let Some(f) = res.by_fraction() {
                            m.insert(
                                "by_fraction".into(),
                                f.iter()
                                    .map(|(f, n)| json!({"fraction": f, "intruders": n}))
                                    .collect(),
                            );
                        }
                    }
                    Err(e) => {
                        m.insert("error".into(), e.clone().into());
                    }
                }
                o
            })
            .collect();
        let tracks: Vec<Value> = self
            .tracks
            .iter()
            .map(|t| {
                json!({
                    "matrix": t.matrix,
                    "j": t.j,
                    "sigma": t.sigma,
                    "first_seen": t.first_seen(self.rule.epsilon()).map(|i| self.runs[i].spec.label.clone()),
                    "runs": self.runs.iter().zip(&t.points).map(|(r, p)| json!({
                        "label": r.spec.label,
                        "best_cos": p.as_ref().map(|p| p.cos),
                        "rank": p.as_ref().map(|p| p.rank),
                        "sigma": p.as_ref().map(|p| p.sigma),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "schema": SCHEMA_VERSION,
            "lorascope_version": env!("CARGO_PKG_VERSION"),
            "k": self.rule.k(),
            "epsilon": self.rule.epsilon(),
            "runs": runs,
            "reference": self.runs.get(self.reference).map(|r| r.spec.label.clone()),
            "tracks": tracks,
            "correlations": self.correlations().into_iter()
                .map(|(m, rho, n)| json!({"metric": m, "rho": rho, "runs": n}))
                .collect::<Vec<_>>(),
        })
    }

    /// The comparison in Markdown, made at `time`: the runs, counts by ε, per layer, metrics'
    /// correlations and the tracked intruders.
    pub fn markdown(&self, time: &str) -> String {
        let (k, eps) = (self.rule.k(), self.rule.epsilon());
        let cell = |t: &str| shown_name(t, None).replace('|', "\\|");
        let mut s = String::new();
        let _ = writeln!(s, "# lorascope comparison\n");
        let _ = writeln!(
            s,
            "lorascope {} · {time} · k = {k} · ε = {eps} · {}\n",
            env!("CARGO_PKG_VERSION"),
            crate::report::count(self.runs.len(), "run", "runs")
        );
        let metrics = self.metric_names();
        let _ = write!(s, "| run | path | step | epoch | intruders at ε = {eps} |");
        for m in &metrics {
            let _ = write!(s, " {} |", cell(m));
        }
        let _ = writeln!(
            s,
            "\n|---|---|---:|---:|---:|{}",
            "---:|".repeat(metrics.len())
        );
        for r in &self.runs {
            let _ = write!(
                s,
                "| {} | `{}` | {} | {} |",
                cell(&r.spec.label),
                cell(&r.spec.path.display().to_string()),
                r.spec.step.map_or("—".into(), |x| x.to_string()),
                r.spec.epoch.map_or("—".into(), |x| format!("{x:.2}"))
            );
            match &r.results {
                Ok(res) => {
                    let _ = write!(s, " {}", res.total_rule);
                    let failed = res.failed().count();
                    if failed > 0 {
                        let _ = write!(
                            s,
                            " ({} could not be analysed)",
                            crate::report::count(failed, "matrix", "matrices")
                        );
                    }
                    s.push_str(" |");
                    for m in &metrics {
                        let _ = write!(
                            s,
                            " {} |",
                            r.spec
                                .metrics
                                .get(m)
                                .map_or("—".into(), |x| format!("{x:.4}"))
                        );
                    }
                }
                Err(e) => {
                    let _ = write!(s, " could not be scanned: {} |", cell(e));
                    s.push_str(&" |".repeat(metrics.len()));
                }
            }
            s.push('\n');
        }
        let _ = writeln!(s, "\n## Intruders vs ε (k = {k})\n");
        let _ = write!(s, "| run |");
        for e in crate::spectral::rule::SWEEP {
            let _ = write!(s, " {e:.1} |");
        }
        let _ = writeln!(
            s,
            "\n|---|{}",
            "---:|".repeat(crate::spectral::rule::SWEEP.len())
        );
        for r in &self.runs {
            let _ = write!(s, "| {} |", cell(&r.spec.label));
            match &r.results {
                Ok(res) => res.sweep.iter().for_each(|(_, n)| {
                    let _ = write!(s, " {n} |");
                }),
                Err(_) => s.push_str(&" — |".repeat(crate::spectral::rule::SWEEP.len())),
            }
            s.push('\n');
        }
        let layers = self.layers();
        if !layers.is_empty() {
            let _ = writeln!(s, "\n## Per layer (k = {k}, ε = {eps})\n");
            let _ = write!(s, "| layer |");
            for r in &self.runs {
                let _ = write!(s, " {} |", cell(&r.spec.label));
            }
            let _ = writeln!(s, "\n|---|{}", "---:|".repeat(self.runs.len()));
            for l in &layers {
                let _ = write!(s, "| `{}` |", cell(l));
                for r in &self.runs {
                    let n = r.layer_count(l);
                    let _ = write!(s, " {} |", n.map_or("—".into(), |n| n.to_string()));
                }
                s.push('\n');
            }
        }
        let corr = self.correlations();
        if !corr.is_empty() {
            let _ = writeln!(
                s,
                "\n## Intruders and metrics\n\nSpearman ρ between each run's intruder count (ε = {eps}) and the metric.\n\n| metric | ρ | runs |\n|---|---:|---:|"
            );
            for (m, rho, n) in &corr {
                let _ = writeln!(s, "| {} | {rho:+.2} | {n} |", cell(m));
            }
        }
        if !self.tracks.is_empty() {
            let _ = writeln!(
                s,
                "\n## Intruders of {} through the runs\n\nBest |cos| among each run's top vectors of the matrix (rank, σ); bold where the run holds the direction (|cos| ≥ ε).\n",
                cell(&self.runs[self.reference].spec.label)
            );
            let _ = write!(s, "| matrix | j | σ |");
            for r in &self.runs {
                let _ = write!(s, " {} |", cell(&r.spec.label));
            }
            let _ = writeln!(
                s,
                " held from |\n|---|---:|---:|{}---|",
                "---:|".repeat(self.runs.len())
            );
            for t in &self.tracks {
                let _ = write!(s, "| `{}` | {} | {:.3} |", cell(&t.matrix), t.j, t.sigma);
                for p in &t.points {
                    match p {
                        Some(p) if p.cos >= eps => {
                            let _ = write!(s, " **{:.2}** ({}, {:.3}) |", p.cos, p.rank, p.sigma);
                        }
                        Some(p) => {
                            let _ = write!(s, " {:.2} ({}, {:.3}) |", p.cos, p.rank, p.sigma);
                        }
                        None => s.push_str(" — |"),
                    }
                }
                let _ = writeln!(
                    s,
                    " {} |",
                    t.first_seen(eps)
                        .map_or("—".into(), |i| cell(&self.runs[i].spec.label))
                );
            }
        }
        s
    }
}

//! Comparing runs of one base — several fine-tunes, or one run's training checkpoints — each
//! scanned against the base and counted by the rule, side by side. The runs share the cache, so
//! the base is decomposed once. The model ([`Comparison`], each run's [`Results`]) and its
//! writers (table, CSV, JSON).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::checkpoint::natural_cmp;
use crate::error::{Error, Result};
use crate::report::{csv_field, shown_name, Results};
use crate::spectral::Rule;

/// One run to compare: where it is, what to call it, and what its trainer logged.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub label: String,
    pub path: PathBuf,
    pub step: Option<u64>,
    pub epoch: Option<f64>,
    /// Evaluation figures found beside the run (accuracy, loss, …), by name.
    pub metrics: BTreeMap<String, f64>,
}

/// `checkpoint-<N>`'s N.
fn checkpoint_step(name: &str) -> Option<u64> {
    name.strip_prefix("checkpoint-")?.parse().ok()
}

/// A folder a Trainer saved checkpoints in: no model or adapter itself, `checkpoint-N` inside.
pub fn is_trainer_folder(p: &Path) -> bool {
    p.is_dir()
        && !p.join("adapter_config.json").is_file()
        && !p.join("model.safetensors").is_file()
        && !p.join("model.safetensors.index.json").is_file()
        && std::fs::read_dir(p).is_ok_and(|mut d| {
            d.any(|e| {
                e.is_ok_and(|e| {
                    e.path().is_dir() && checkpoint_step(&e.file_name().to_string_lossy()).is_some()
                })
            })
        })
}

/// Whether a figure by this name measures how well a model does (not how training went).
fn is_metric(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    !n.starts_with("train")
        && [
            "accuracy",
            "acc",
            "loss",
            "f1",
            "exact_match",
            "bleu",
            "rouge",
            "perplexity",
            "ppl",
            "score",
        ]
        .iter()
        .any(|m| {
            n.split(['_', '/', '.', '-'])
                .any(|part| part == *m || (matches!(*m, "rouge" | "bleu") && part.starts_with(m)))
        })
}

/// Numbers at the top of a JSON file that are metrics.
fn metrics_in(path: &Path) -> BTreeMap<String, f64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&text) else {
        return BTreeMap::new();
    };
    o.iter()
        .filter(|(k, _)| is_metric(k))
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect()
}

/// Step, epoch and the evaluation logged at that step, from a checkpoint's
/// `trainer_state.json`.
fn trainer_state(dir: &Path) -> (Option<u64>, Option<f64>, BTreeMap<String, f64>) {
    let Ok(text) = std::fs::read_to_string(dir.join("trainer_state.json")) else {
        return (None, None, BTreeMap::new());
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return (None, None, BTreeMap::new());
    };
    let step = v.get("global_step").and_then(Value::as_u64);
    let epoch = v.get("epoch").and_then(Value::as_f64);
    let mut metrics = BTreeMap::new();
    // The last evaluation at or before this step.
    for entry in v
        .get("log_history")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let at = entry.get("step").and_then(Value::as_u64);
        if step.is_some() && at > step {
            continue;
        }
        let Some(o) = entry.as_object() else { continue };
        if o.keys().any(|k| k.starts_with("eval_")) {
            metrics = o
                .iter()
                .filter(|(k, _)| k.starts_with("eval_") && is_metric(k))
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect();
        }
    }
    (step, epoch, metrics)
}

/// The RUN arguments as runs: a Trainer folder becomes its checkpoints in step order
/// (`checkpoint-200` before `checkpoint-1000`), labelled by the folder and step. `labels` name
/// the arguments in order (a Trainer folder's label prefixes its checkpoints'); the default is
/// the folder's or file's name.
pub fn expand(args: &[PathBuf], labels: &[String]) -> Result<Vec<RunSpec>> {
    if labels.len() > args.len() {
        return Err(Error::Usage(format!(
            "{} labels for {} runs",
            labels.len(),
            args.len()
        )));
    }
    let name_of = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    let mut runs = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let label = labels.get(i).cloned().unwrap_or_else(|| name_of(arg));
        if is_trainer_folder(arg) {
            let mut ckpts: Vec<(String, PathBuf)> = std::fs::read_dir(arg)
                .map_err(|e| Error::io(arg, e))?
                .flatten()
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .filter(|(n, p)| p.is_dir() && checkpoint_step(n).is_some())
                .collect();
            ckpts.sort_by(|a, b| natural_cmp(&a.0, &b.0));
            for (name, path) in ckpts {
                let (step, epoch, metrics) = trainer_state(&path);
                runs.push(RunSpec {
                    label: format!("{label}/{name}"),
                    step: step.or(checkpoint_step(&name)),
                    epoch,
                    metrics,
                    path,
                });
            }
        } else {
            let (step, epoch, mut metrics) = if arg.is_dir() {
                trainer_state(arg)
            } else {
                (None, None, BTreeMap::new())
            };
            // Metrics files beside the weights (in the run's folder).
            let folder = if arg.is_dir() {
                arg.clone()
            } else {
                crate::fsio::folder_of(arg).to_path_buf()
            };
            for f in ["eval_results.json", "all_results.json", "metrics.json"] {
                for (k, v) in metrics_in(&folder.join(f)) {
                    metrics.entry(k).or_insert(v);
                }
            }
            runs.push(RunSpec {
                label,
                path: arg.clone(),
                step,
                epoch,
                metrics,
            });
        }
    }
    Ok(runs)
}

/// One run's outcome: its results, or why it could not be scanned (the others go on).
#[derive(Debug, Clone)]
pub struct RunResult {
    pub spec: RunSpec,
    pub results: std::result::Result<Results, String>,
}

/// Where one intruder of the reference run is in one run: its best |cos| among that run's top
/// tuned vectors of the same matrix, which vector (rank) that is, and its σ.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackPoint {
    pub cos: f64,
    pub rank: usize,
    pub sigma: f64,
}

/// One intruder of the reference run, followed through every run (None: the run failed, or
/// lacks the matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub matrix: String,
    pub j: usize,
    pub sigma: f64,
    pub points: Vec<Option<TrackPoint>>,
}

impl Track {
    /// The first run, in order, from which every later run holds the direction: a top vector
    /// with |cos| ≥ ε, the rule's own test of a match.
    pub fn first_seen(&self, epsilon: f64) -> Option<usize> {
        let held = |p: &Option<TrackPoint>| p.as_ref().is_some_and(|p| p.cos >= epsilon);
        let last_missing = self.points.iter().rposition(|p| !held(p));
        match last_missing {
            None => Some(0),
            Some(i) if i + 1 < self.points.len() => Some(i + 1),
            Some(_) => None,
        }
    }
}

/// Follows every rule intruder of run `reference` through all runs: the same matrix's top
/// `keep` tuned vectors in each (from each engine's cache, or decomposed again).
pub fn track(
    engines: &[Option<&crate::engine::Engine>],
    results: &[Option<&Results>],
    reference: usize,
    keep: usize,
) -> Result<Vec<Track>> {
    let Some(Some(refres)) = results.get(reference) else {
        return Ok(vec![]);
    };
    let Some(Some(refeng)) = engines.get(reference) else {
        return Ok(vec![]);
    };
    let pair_of = |e: &crate::engine::Engine, name: &str| {
        e.inputs
            .pairs
            .iter()
            .find(|p| p.name == name && p.selected)
            .cloned()
    };
    let mut tracks = Vec::new();
    for m in refres.analysed() {
        if m.rule_intruders.is_empty() {
            continue;
        }
        let Some(pair) = pair_of(refeng, &m.name) else {
            continue;
        };
        let (_, reft) = refeng.decompositions_keeping(&pair, keep)?;
        // Each run's tuned vectors of this matrix, once.
        let mut theirs = Vec::new();
        for e in engines {
            let d = match e.and_then(|e| pair_of(e, &m.name).map(|p| (e, p))) {
                Some((e, p)) => e.decompositions_keeping(&p, keep).ok().map(|(_, t)| t),
                None => None,
            };
            theirs.push(d.filter(|d| d.dim == reft.dim));
        }
        for &j in &m.rule_intruders {
            let u = &reft.vectors[j * reft.dim..(j + 1) * reft.dim];
            let points = theirs
                .iter()
                .map(|t| {
                    let t = t.as_ref()?;
                    (0..t.keep)
                        .map(|l| {
                            let v = &t.vectors[l * t.dim..(l + 1) * t.dim];
                            let c: f64 = u.iter().zip(v).map(|(a, b)| *a as f64 * *b as f64).sum();
                            (c.abs(), l)
                        })
                        .max_by(|a, b| a.0.total_cmp(&b.0))
                        .map(|(cos, rank)| TrackPoint {
                            cos,
                            rank,
                            sigma: t.sigma[rank],
                        })
                })
                .collect();
            tracks.push(Track {
                matrix: m.name.clone(),
                j,
                sigma: reft.sigma[j],
                points,
            });
        }
    }
    Ok(tracks)
}

/// Spearman's rank correlation of paired values (ties get their mean rank); None below three
/// pairs or where one side does not vary.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|a, b| v[*a].total_cmp(&v[*b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            let mean = (i + j) as f64 / 2.0 + 1.0;
            for k in i..=j {
                r[idx[k]] = mean;
            }
            i = j + 1;
        }
        r
    }
    if x.len() != y.len() || x.len() < 3 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub rule: Rule,
    pub runs: Vec<RunResult>,
    /// The run whose intruders are tracked, and the tracks.
    pub reference: usize,
    pub tracks: Vec<Track>,
}

pub const SCHEMA_VERSION: u32 = 1;

impl Comparison {
    /// Runs that could not be scanned, or had a matrix fail.
    pub fn failed(&self) -> usize {
        self.runs
            .iter()
            .filter(|r| {
                r.results
                    .as_ref()
                    .map_or(true, |res| res.failed().next().is_some())
            })
            .count()
    }

    /// Per metric, Spearman's ρ between the runs' intruder counts and the metric, and over how
    /// many runs.
    pub fn correlations(&self) -> Vec<(String, f64, usize)> {
        self.metric_names()
            .into_iter()
            .filter_map(|m| {
                let (x, y): (Vec<f64>, Vec<f64>) = self
                    .runs
                    .iter()
                    .filter_map(|r| {
                        let n = r.results.as_ref().ok()?.total_rule as f64;
                        Some((n, *r.spec.metrics.get(&m)?))
                    })
                    .unzip();
                let n = x.len();
                spearman(&x, &y).map(|rho| (m, rho, n))
            })
            .collect()
    }

    /// Metric names any run has, in order.
    fn metric_names(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self
            .runs
            .iter()
            .flat_map(|r| r.spec.metrics.keys())
            .collect();
        names.into_iter().cloned().collect()
    }

    /// Blocks any run has, in natural order.
    fn layers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .runs
            .iter()
            .filter_map(|r| r.results.as_ref().ok())
            .flat_map(|r| r.per_layer.iter().map(|(b, _)| b.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        names.sort_by(|a, b| natural_cmp(a, b));
        names
    }

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
                    let n = r.results.as_ref().ok().and_then(|res| {
                        res.per_layer.iter().find(|(b, _)| b == l).map(|(_, n)| *n)
                    });
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_ranks_with_ties_as_their_mean() {
        assert_eq!(
            spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 45.0]),
            Some(1.0)
        );
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[0.9, 0.5, 0.1]), Some(-1.0));
        let r = spearman(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]).unwrap();
        assert!((r - 1.5 / 3f64.sqrt()).abs() < 1e-12, "{r}");
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn metrics_are_told_from_training_figures() {
        for m in [
            "test_accuracy",
            "eval_loss",
            "eval_f1",
            "merged_test_accuracy",
            "eval_rouge1",
        ] {
            assert!(is_metric(m), "{m}");
        }
        for m in [
            "train_loss",
            "train_subset_accuracy",
            "steps",
            "total_seconds",
            "trainable_params",
        ] {
            assert!(!is_metric(m), "{m}");
        }
    }

    #[test]
    fn trainer_folders_expand_to_checkpoints_in_step_order_with_their_state() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        for n in [
            "checkpoint-1000",
            "checkpoint-200",
            "checkpoint-50",
            "runs",
            "checkpoint-x",
        ] {
            std::fs::create_dir_all(run.join(n)).unwrap();
        }
        std::fs::write(
            run.join("checkpoint-200/trainer_state.json"),
            r#"{"global_step": 200, "epoch": 0.5, "log_history": [
                {"step": 100, "eval_loss": 0.9, "eval_accuracy": 0.6},
                {"step": 200, "loss": 0.5},
                {"step": 200, "eval_loss": 0.7, "eval_accuracy": 0.7, "eval_runtime": 3.0},
                {"step": 300, "eval_loss": 0.1}]}"#,
        )
        .unwrap();
        assert!(is_trainer_folder(&run));
        let runs = expand(std::slice::from_ref(&run), &["lr1e-3".into()]).unwrap();
        let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "lr1e-3/checkpoint-50",
                "lr1e-3/checkpoint-200",
                "lr1e-3/checkpoint-1000"
            ]
        );
        let r = &runs[1];
        assert_eq!((r.step, r.epoch), (Some(200), Some(0.5)));
        assert_eq!(
            r.metrics,
            BTreeMap::from([
                ("eval_accuracy".to_string(), 0.7),
                ("eval_loss".to_string(), 0.7)
            ])
        );
        // Without a trainer state, the step from the name.
        assert_eq!((runs[2].step, runs[2].epoch), (Some(1000), None));
        assert!(expand(&[run], &["a".into(), "b".into()]).is_err());
    }
}

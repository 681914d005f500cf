//! Comparing runs of one base — several fine-tunes, or one run's training checkpoints — each
//! scanned against the base and counted by the rule, side by side. The runs share the cache, so
//! the base is decomposed once. The model ([`Comparison`], each run's [`Results`]) and its
//! writers (table, CSV, JSON).

mod html;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checkpoint::natural_cmp;
use crate::error::{Error, Result};
use crate::report::Results;
use crate::spectral::Rule;

/// One run to compare: where it is, what to call it, and what its trainer logged.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub label: String,
    pub path: PathBuf,
    pub step: Option<u64>,
    pub epoch: Option<f64>,
    /// The Trainer folder's label, for checkpoints expanded from one (a training run).
    pub group: Option<String>,
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
                    group: Some(label.clone()),
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
                group: None,
                metrics,
            });
        }
    }
    Ok(runs)
}

/// Which matrices a comparison shows in every run side by side (reports).
pub enum Show<'a> {
    None,
    /// The reference run's matrix with the most intruders.
    Default,
    Matching(&'a regex::Regex),
}

/// How runs are compared: one rule for all, whose intruders are followed, with how many tuned
/// vectors, and which matrices are shown side by side.
pub struct Settings<'a> {
    pub rule: Rule,
    pub reference: usize,
    pub keep: usize,
    pub show: Show<'a>,
}

/// Scans each opened run against the base in turn (counted by the rule alone: the explorer's
/// flags belong to one run's weights), then follows the reference run's intruders through the
/// others. `progress` gets the matrices done over all runs and the run's label; `jobs` the
/// matrices analysed at once for a run; `after` each engine once its scan is done (warnings).
pub fn compare(
    runs: Vec<(RunSpec, std::result::Result<crate::engine::Engine, String>)>,
    settings: Settings,
    jobs: &dyn Fn(&crate::engine::Engine) -> usize,
    progress: &(dyn Fn(usize, &str) + Sync),
    after: &dyn Fn(&crate::engine::Engine),
) -> Result<Comparison> {
    let Settings {
        rule,
        reference,
        keep,
        show,
    } = settings;
    let mut offset = 0;
    let mut results = Vec::new();
    let mut engines = Vec::new();
    for (spec, engine) in runs {
        let res = engine.as_ref().map_err(Clone::clone).map(|engine| {
            let label = spec.label.as_str();
            let scan = engine.scan(jobs(engine), &|done, _, _| progress(offset + done, label));
            offset += engine.matrices().len();
            after(engine);
            let n = engine.matrices().len();
            Results::new(engine, &scan, &crate::flags::UserState::default(), &rule, n)
        });
        results.push(RunResult { spec, results: res });
        engines.push(engine.ok());
    }
    let engine_refs: Vec<_> = engines.iter().map(Option::as_ref).collect();
    let result_refs: Vec<_> = results.iter().map(|r| r.results.as_ref().ok()).collect();
    let tracks = track(&engine_refs, &result_refs, reference, keep)?;
    let names: Vec<String> = match show {
        Show::None => vec![],
        Show::Default => default_section(result_refs.get(reference).copied().flatten())
            .into_iter()
            .collect(),
        Show::Matching(re) => {
            let mut names: Vec<String> = result_refs
                .iter()
                .flatten()
                .flat_map(|r| r.analysed().map(|m| m.name.clone()))
                .filter(|n| re.is_match(n))
                .collect();
            names.sort_by(|a, b| natural_cmp(a, b));
            names.dedup();
            names
        }
    };
    let sections = sections(&engine_refs, &result_refs, &names, keep);
    Ok(Comparison {
        rule,
        runs: results,
        reference,
        tracks,
        sections,
    })
}

/// The index of the run labelled `label` (`--reference`), or the last run.
pub fn reference_of(specs: &[RunSpec], label: Option<&str>) -> Result<usize> {
    match label {
        Some(l) => specs
            .iter()
            .position(|r| r.label == l)
            .ok_or_else(|| Error::Usage(format!("--reference {l}: no run has that label"))),
        None => Ok(specs.len().saturating_sub(1)),
    }
}

/// One run's outcome: its results, or why it could not be scanned (the others go on).
#[derive(Debug, Clone)]
pub struct RunResult {
    pub spec: RunSpec,
    pub results: std::result::Result<Results, String>,
}

impl RunResult {
    /// The run's intruders in block `layer` (None: the run failed, or has no such block).
    pub fn layer_count(&self, layer: &str) -> Option<usize> {
        let res = self.results.as_ref().ok()?;
        res.per_layer
            .iter()
            .find(|(b, _)| b == layer)
            .map(|(_, n)| *n)
    }
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
            let points = theirs.iter().map(|t| best_match(u, t.as_ref()?)).collect();
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

/// The best |cos| of vector `u` among a decomposition's kept vectors: which one (its rank) and
/// its σ; None when it keeps none or lives in another space.
pub fn best_match(u: &[f32], t: &crate::spectral::Decomposition) -> Option<TrackPoint> {
    if u.len() != t.dim {
        return None;
    }
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
}

/// One matrix of one run, seen from another run (the explorer's compare view): its top tuned
/// vectors' c_j and σ, and for each top vector of the run looked from, its best match here.
#[derive(Debug, Clone, PartialEq)]
pub struct Across {
    /// c_j of the testable top vectors (σ ≈ 0 left out, as [`crate::engine::MatrixReport::max_cos`]).
    pub max_cos: Vec<f64>,
    /// The degenerate-aware rule's c_j of the same vectors.
    pub cluster_cos: Vec<f64>,
    pub sigma: Vec<f64>,
    pub matches: Vec<Option<TrackPoint>>,
}

/// The matrix `name` in every run, with `keep` tuned vectors, matched against run `from`'s.
/// A run without the matrix, or whose decomposition fails, gets the reason.
pub fn across(
    engines: &[&crate::engine::Engine],
    from: usize,
    name: &str,
    keep: usize,
) -> Vec<std::result::Result<Across, String>> {
    let decomposed: Vec<std::result::Result<_, String>> = engines
        .iter()
        .map(|e| {
            let pair = e
                .matrices()
                .into_iter()
                .find(|p| p.name == name)
                .ok_or_else(|| "not in this run".to_string())?;
            let (b, t) = e
                .decompositions_keeping(pair, keep)
                .map_err(|e| e.to_string())?;
            let testable = crate::spectral::rule::testable(
                &t.sigma,
                b.sigma.first().copied().unwrap_or(0.0),
                pair.dims(),
            );
            let overlaps = crate::spectral::overlap::overlaps(&b, &t, e.opts.degenerate_tol);
            Ok((b, t, testable, overlaps))
        })
        .collect();
    let own = decomposed
        .get(from)
        .and_then(|d| d.as_ref().ok())
        .map(|d| &d.1);
    decomposed
        .iter()
        .map(|d| {
            let (_, t, testable, overlaps) = d.as_ref().map_err(Clone::clone)?;
            let top = &overlaps[..(*testable).min(overlaps.len())];
            let matches = own.map_or_else(Vec::new, |o| {
                (0..o.keep)
                    .map(|j| best_match(&o.vectors[j * o.dim..(j + 1) * o.dim], t))
                    .collect()
            });
            Ok(Across {
                max_cos: top.iter().map(|o| o.max_cos).collect(),
                cluster_cos: top.iter().map(|o| o.cluster_cos).collect(),
                sigma: t.sigma[..t.keep.min(t.sigma.len())].to_vec(),
                matches,
            })
        })
        .collect()
}

impl Across {
    /// c_j of the testable top vectors as `rule` reads them.
    pub fn cos(&self, rule: &Rule) -> Vec<f64> {
        self.max_cos
            .iter()
            .zip(&self.cluster_cos)
            .map(|(&m, &c)| rule.c(m, c))
            .collect()
    }
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
    /// Matrices shown in every run side by side (reports), with their heatmaps.
    pub sections: Vec<Section>,
}

/// One matrix in every run: its row with the heatmap (None: the run failed, or lacks it).
#[derive(Debug, Clone)]
pub struct Section {
    pub matrix: String,
    pub runs: Vec<Option<crate::report::model::MatrixRow>>,
}

/// The sections of these matrices: each run's row with its heatmap, from the cache.
pub fn sections(
    engines: &[Option<&crate::engine::Engine>],
    results: &[Option<&Results>],
    names: &[String],
    keep: usize,
) -> Vec<Section> {
    names
        .iter()
        .map(|name| Section {
            matrix: name.clone(),
            runs: engines
                .iter()
                .zip(results)
                .map(|(e, r)| {
                    let row = (*r)?.analysed().find(|m| &m.name == name)?;
                    Some(crate::report::model::section((*e)?, row, keep))
                })
                .collect(),
        })
        .collect()
}

/// The matrix a comparison shows by default: the one where the reference run has the most
/// intruders (by the rule), the first such in order.
pub fn default_section(results: Option<&Results>) -> Option<String> {
    results?
        .analysed()
        .filter(|m| !m.rule_intruders.is_empty())
        .fold(
            None::<&crate::report::model::MatrixRow>,
            |best, m| match best {
                Some(b) if b.rule_intruders.len() >= m.rule_intruders.len() => Some(b),
                _ => Some(m),
            },
        )
        .map(|m| m.name.clone())
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
    pub fn metric_names(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self
            .runs
            .iter()
            .flat_map(|r| r.spec.metrics.keys())
            .collect();
        names.into_iter().cloned().collect()
    }

    /// Blocks any run has, in natural order.
    pub fn layers(&self) -> Vec<String> {
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

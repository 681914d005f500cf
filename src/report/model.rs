//! The result of an analysis, computed once from an engine, a scan and the user's flags:
//! [`Results`] (every matrix, per layer, totals, sweep) is what `scan`, `report` and the
//! explorer's export fill, and every writer (table, JSON, CSV, Markdown, HTML) only formats it.
//! A [`Report`] adds a time and detailed sections for some matrices.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Serialize;

use crate::checkpoint::{Inputs, Tuned};
use crate::engine::{Engine, MatrixReport, Precision, Scan};
use crate::flags::UserState;
use crate::spectral;
use crate::spectral::Rule;

/// Tuned × base vectors shown in a report's heatmap.
pub const HEAT_K: usize = 30;

/// Base clusters larger than this decide a degenerate-aware c_j only loosely.
pub const LARGE_CLUSTER: usize = 4;

#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub kind: String,
    pub bytes: u64,
    /// xxh3-128 of each safetensors header (identifies the files without hashing the data).
    pub header_hashes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AdapterInfo {
    pub r: usize,
    pub lora_alpha: f64,
    pub scaling: Vec<f64>,
    pub use_rslora: bool,
    pub use_dora: bool,
    pub modules: usize,
}

/// What was compared with what.
#[derive(Debug, Clone, Serialize)]
pub struct InputsInfo {
    pub base: FileInfo,
    pub tuned: FileInfo,
    pub adapter: Option<AdapterInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VectorRow {
    pub j: usize,
    pub sigma: f64,
    pub sigma_ratio: f64,
    pub max_cos: f64,
    pub best_base_index: usize,
    pub best_base_sigma: f64,
    /// PR_j = 1 / Σ_i c_ij⁴: 1 on one base vector, 2 for an even mix of two, large if spread.
    pub participation: f64,
    /// The degenerate-aware rule's c_j (best projection onto a cluster of base vectors with
    /// nearly equal σ) and that cluster's size.
    pub cluster_cos: f64,
    pub cluster_size: usize,
    /// False where σ_j ≈ 0: the vector is arbitrary and never an intruder
    /// ([`spectral::rule::testable`]).
    pub testable: bool,
    /// The rule's verdict (testable, j < k and c_j < ε, c_j as the rule reads it).
    pub rule: bool,
    /// The user's flag, if any.
    pub flag: Option<bool>,
    /// The verdict shown: the flag where there is one, else the rule.
    pub intruder: bool,
}

/// |cos| between base vectors (rows) and tuned vectors (cols), row-major; for plots only.
#[derive(Debug, Clone)]
pub struct Heat {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
}

/// One analysed matrix.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRow {
    pub name: String,
    pub shape: [usize; 2],
    /// Under the verdict (flags included), ascending.
    pub intruders: Vec<usize>,
    /// Under the rule alone.
    pub rule_intruders: Vec<usize>,
    /// Top-k vectors with σ ≈ 0, not tested.
    pub untestable: usize,
    /// The user's verdicts that override the rule, by j.
    pub user_flags: BTreeMap<usize, bool>,
    /// The top k vectors, plus any flagged one beyond k.
    pub vectors: Vec<VectorRow>,
    pub sigma_base: Vec<f64>,
    /// All singular values where computed, else the top ones.
    pub sigma_tuned: Vec<f64>,
    pub delta_rel_norm: f64,
    /// None where the scan skipped it (see [`MatrixReport::delta_effective_rank`]).
    pub delta_effective_rank: Option<f64>,
    /// Rule-only counts at each ε of [`Rule::sweep`].
    pub sweep: Vec<usize>,
    /// c_j (as the rule reads it) of every tuned vector computed (all of them with whole
    /// spectra), for counts over more than k.
    #[serde(skip)]
    pub max_cos_all: Option<Vec<f64>>,
    /// Filled in a report's sections only.
    #[serde(skip)]
    pub heat: Option<Heat>,
}

impl VectorRow {
    /// c_j as `rule` reads it.
    pub fn c(&self, rule: &Rule) -> f64 {
        rule.c(self.max_cos, self.cluster_cos)
    }
}

impl MatrixRow {
    /// The top k vectors (flagged ones beyond k left out).
    pub fn top(&self, k: usize) -> impl Iterator<Item = &VectorRow> {
        self.vectors.iter().filter(move |v| v.j < k)
    }
    /// The smallest c_j (as `rule` reads it) among the testable top k; None if none is
    /// testable.
    pub fn min_cos(&self, rule: &Rule) -> Option<f64> {
        self.top(rule.k())
            .filter(|v| v.testable)
            .map(|v| v.c(rule))
            .reduce(f64::min)
    }
    /// σ1 of the tuned matrix over σ1 of the base; None where the base has no usable σ1
    /// (zero, subnormal): a ratio would be inf or NaN.
    pub fn sigma1_ratio(&self) -> Option<f64> {
        let (t, b) = (*self.sigma_tuned.first()?, *self.sigma_base.first()?);
        (b.is_finite() && b >= f32::MIN_POSITIVE as f64).then(|| t / b)
    }
}

/// A matrix that could not be analysed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub name: String,
    pub error: String,
}

/// The outcome of one analysis: every matrix, in the scan's order, and the sums over them.
#[derive(Debug, Clone)]
pub struct Results {
    pub lorascope_version: String,
    pub rule: Rule,
    /// δ of the clusters the degenerate-aware c_j were computed with.
    pub degenerate_tol: f64,
    pub vectors: spectral::Side,
    pub precision: Precision,
    pub inputs: InputsInfo,
    /// Selected matrices, analysed or not (the explorer may export before its work is done).
    pub matrices_total: usize,
    pub matrices: Vec<Result<MatrixRow, Failure>>,
    /// Under the verdict (flags included).
    pub total_intruders: usize,
    /// Under the rule alone.
    pub total_rule: usize,
    /// User verdicts applied.
    pub overrides: usize,
    pub per_layer: Vec<(String, usize)>,
    /// Rule-only totals at ε = 0.1 … 0.9.
    pub sweep: Vec<(f64, usize)>,
}

impl Results {
    /// `matrices_total` counts matrices not yet analysed too.
    pub fn new(
        engine: &Engine,
        scan: &Scan,
        user: &UserState,
        rule: &Rule,
        matrices_total: usize,
    ) -> Results {
        let matrices = scan
            .results
            .iter()
            .map(|(name, r)| match r {
                Ok(m) => Ok(matrix_row(m, user, rule)),
                Err(e) => Err(Failure {
                    name: name.clone(),
                    error: e.clone(),
                }),
            })
            .collect();
        Results {
            lorascope_version: env!("CARGO_PKG_VERSION").to_string(),
            rule: *rule,
            degenerate_tol: engine.opts.degenerate_tol,
            vectors: engine.opts.side,
            precision: engine.opts.precision,
            inputs: inputs_info(&engine.inputs),
            matrices_total,
            matrices,
            total_intruders: scan.total_with(user, rule),
            total_rule: scan.total(rule),
            overrides: user.overrides(),
            per_layer: scan.per_layer_with(user, rule),
            sweep: scan.sweep(rule),
        }
    }

    pub fn k(&self) -> usize {
        self.rule.k()
    }

    /// Top-k vectors with σ ≈ 0 over all analysed matrices: not tested, not counted.
    pub fn untestable(&self) -> usize {
        self.analysed().map(|m| m.untestable).sum()
    }

    /// "N top vectors", where some were not tested; None if all were. Every output that
    /// mentions them words it so.
    pub fn untestable_count(&self) -> Option<String> {
        let n = self.untestable();
        (n > 0).then(|| super::count(n, "top vector", "top vectors"))
    }

    /// Intruders (rule, at ε) among the top fraction f of each matrix's tuned vectors, for f in
    /// 0.1 … 1.0 — the paper's Fig. 15. Only where every matrix has all its tuned vectors
    /// matched (`--full-svd` with `--keep` at least the rank), else None.
    pub fn by_fraction(&self) -> Option<Vec<(f64, usize)>> {
        let rows: Vec<&MatrixRow> = self.analysed().collect();
        if rows.is_empty() || rows.iter().any(|m| m.max_cos_all.is_none()) {
            return None;
        }
        let eps = self.epsilon();
        Some(
            (1..=10)
                .map(|t| {
                    let f = t as f64 / 10.0;
                    let n = rows
                        .iter()
                        .map(|m| {
                            let rank = m.sigma_tuned.len();
                            let top = ((rank as f64 * f).round() as usize).max(1);
                            let all = m.max_cos_all.as_deref().unwrap_or_default();
                            all.iter().take(top).filter(|c| **c < eps).count()
                        })
                        .sum();
                    (f, n)
                })
                .collect(),
        )
    }
    pub fn epsilon(&self) -> f64 {
        self.rule.epsilon()
    }
    pub fn analysed(&self) -> impl Iterator<Item = &MatrixRow> {
        self.matrices.iter().filter_map(|m| m.as_ref().ok())
    }
    pub fn failed(&self) -> impl Iterator<Item = &Failure> {
        self.matrices.iter().filter_map(|m| m.as_ref().err())
    }
    pub fn matrices_analysed(&self) -> usize {
        self.analysed().count()
    }

    /// "degenerate-aware rule, δ = 0.005" where the counts use that rule, for every output to
    /// say beside k and ε; None under the paper's rule.
    pub fn rule_name(&self) -> Option<String> {
        (self.rule.kind() == spectral::rule::RuleKind::DegenerateAware)
            .then(|| format!("degenerate-aware rule, δ = {}", self.degenerate_tol))
    }

    /// " · degenerate-aware rule, δ = 0.005" after "k = … · ε = …" in reports; nothing under
    /// the paper's rule.
    pub fn rule_suffix(&self) -> String {
        self.rule_name()
            .map_or(String::new(), |n| format!(" · {n}"))
    }

    /// Under the degenerate-aware rule, where top-k vectors were matched against clusters of
    /// more than [`LARGE_CLUSTER`] base vectors: there the rule says little (a wide enough span
    /// matches anything); None otherwise.
    pub fn cluster_note(&self) -> Option<String> {
        if self.rule.kind() != spectral::rule::RuleKind::DegenerateAware {
            return None;
        }
        let large: Vec<(&str, usize)> = self
            .analysed()
            .flat_map(|m| {
                m.top(self.k())
                    .filter(|v| v.testable && v.cluster_size > LARGE_CLUSTER)
                    .map(|v| (m.name.as_str(), v.cluster_size))
            })
            .collect();
        let (name, size) = large.iter().max_by_key(|(_, n)| *n)?;
        Some(format!(
            "the degenerate-aware rule matched {} against clusters of more than {LARGE_CLUSTER} \
             base vectors (the largest, {size}, in {name}): there it says little; compare with \
             --rule paper",
            super::count(large.len(), "top vector", "top vectors")
        ))
    }

    /// After the bold total: "in 36 matrices (36 analysed); the rule alone finds …".
    pub fn summary_tail(&self) -> String {
        let overrides = if self.overrides > 0 {
            format!(
                "; the rule alone finds {}, the user overrode it on {}",
                self.total_rule,
                super::count(self.overrides, "vector", "vectors")
            )
        } else {
            String::new()
        };
        let untestable = self
            .untestable_count()
            .map_or(String::new(), |n| format!("; {n} with σ ≈ 0 not tested"));
        format!(
            "in {} ({} analysed){overrides}{untestable}.",
            super::count(self.matrices_total, "matrix", "matrices"),
            self.matrices_analysed()
        )
    }

    pub fn adapter_line(&self) -> Option<String> {
        let a = self.inputs.adapter.as_ref()?;
        let sc: Vec<String> = a.scaling.iter().map(|x| format!("{x}")).collect();
        Some(format!(
            "Adapter: r = {}, lora_alpha = {}, scaling = {}, rsLoRA = {}, DoRA = {}, {} modules.",
            a.r,
            a.lora_alpha,
            sc.join("/"),
            a.use_rslora,
            a.use_dora,
            a.modules
        ))
    }
}

fn matrix_row(m: &MatrixReport, user: &UserState, rule: &Rule) -> MatrixRow {
    let k = rule.k();
    let max_cos = m.cos(rule);
    let intruders = user.intruders(&m.name, &max_cos, rule);
    let vectors = m
        .vectors
        .iter()
        .enumerate()
        .filter(|(j, _)| *j < k || user.flag(&m.name, *j).is_some())
        .map(|(j, v)| VectorRow {
            j,
            sigma: v.sigma,
            sigma_ratio: v.sigma_ratio,
            max_cos: v.max_cos,
            best_base_index: v.best_base_index,
            best_base_sigma: v.best_base_sigma,
            participation: v.participation,
            cluster_cos: v.cluster_cos,
            cluster_size: v.cluster_size,
            testable: m.is_testable(j),
            rule: m.is_testable(j) && rule.is_intruder_at(j, v.c(rule)),
            flag: user.flag(&m.name, j),
            intruder: intruders.contains(&j),
        })
        .collect();
    MatrixRow {
        name: m.name.clone(),
        shape: m.shape,
        intruders,
        rule_intruders: rule.intruders(&max_cos),
        untestable: m.untestable(k),
        user_flags: user.flags.get(&m.name).cloned().unwrap_or_default(),
        vectors,
        sigma_base: m.sigma_base.clone(),
        sigma_tuned: m.sigma_tuned.clone(),
        delta_rel_norm: m.delta_rel_norm,
        delta_effective_rank: m.delta_effective_rank,
        sweep: rule.sweep().map(|r| r.intruders(&max_cos).len()).collect(),
        // Only where every tuned vector was matched (whole spectrum, and kept); the testable
        // prefix, counted against the whole rank in `by_fraction`.
        max_cos_all: if m.has_whole_spectrum() && m.vectors.len() >= m.sigma_tuned.len() {
            Some(max_cos.clone())
        } else {
            None
        },
        heat: None,
    }
}

/// A layer report: the results, when they were made, and detailed sections (with heatmaps)
/// for some matrices.
#[derive(Debug, Clone)]
pub struct Report {
    pub results: Results,
    pub time: String,
    pub sections: Vec<MatrixRow>,
}

fn file_info(
    path: &std::path::Path,
    kind: &str,
    files: &[&crate::checkpoint::st::StFile],
) -> FileInfo {
    FileInfo {
        path: path.display().to_string(),
        kind: kind.to_string(),
        bytes: files.iter().map(|f| f.size).sum(),
        header_hashes: files
            .iter()
            .map(|f| format!("{:032x}", f.header_hash))
            .collect(),
    }
}

pub fn inputs_info(inputs: &Inputs) -> InputsInfo {
    let base_files: Vec<_> = inputs.base.files.iter().map(|f| f.as_ref()).collect();
    let base = file_info(&inputs.base.path, inputs.base.format.as_str(), &base_files);
    match &inputs.tuned {
        Tuned::Model(m) => {
            let files: Vec<_> = m.files.iter().map(|f| f.as_ref()).collect();
            InputsInfo {
                base,
                tuned: file_info(&m.path, m.format.as_str(), &files),
                adapter: None,
            }
        }
        Tuned::Adapter(a) => InputsInfo {
            base,
            tuned: file_info(&a.dir, "adapter", &[&a.file]),
            adapter: Some(AdapterInfo {
                r: a.config.r,
                lora_alpha: a.config.lora_alpha,
                scaling: a.scalings(),
                use_rslora: a.config.use_rslora,
                use_dora: a.config.use_dora,
                modules: a.modules.len(),
            }),
        },
    }
}

/// Which matrices get a section: those matching `select`, else those with an intruder or a flag.
pub fn wants_section(
    name: &str,
    intruders: usize,
    user: &UserState,
    select: Option<&Regex>,
) -> bool {
    match select {
        Some(re) => re.is_match(name),
        None => intruders > 0 || user.flags.contains_key(name),
    }
}

/// Build a report. Sections show ΔW's effective rank even where the scan skipped it as too
/// costly, and heatmaps from the engine's (cached) decompositions with `keep` tuned vectors —
/// those the analysis computed (the explorer may have raised it), so nothing is decomposed
/// again.
pub fn build(
    engine: &Engine,
    results: Results,
    select: &dyn Fn(&str, usize) -> bool,
    time: &str,
    keep: usize,
) -> Report {
    let sections = results
        .analysed()
        .filter(|m| select(&m.name, m.intruders.len()))
        .map(|m| section(engine, m, keep))
        .collect();
    Report {
        results,
        time: time.to_string(),
        sections,
    }
}

/// A matrix's row made a detailed section: ΔW's effective rank and the heatmap of the top
/// singular vectors' |cos| (from `keep` cached tuned vectors).
pub fn section(engine: &Engine, m: &MatrixRow, keep: usize) -> MatrixRow {
    let mut m = m.clone();
    let pair = engine.matrices().into_iter().find(|p| p.name == m.name);
    if m.delta_effective_rank.is_none() {
        m.delta_effective_rank = pair.and_then(|p| engine.delta_effective_rank(p).ok());
    }
    m.heat = pair
        .and_then(|p| engine.decompositions_keeping(p, keep).ok())
        .map(|(b, t)| {
            let n = HEAT_K.min(b.keep).min(t.keep);
            Heat {
                rows: n,
                cols: n,
                values: spectral::similarity(&b, &t, n, n),
            }
        });
    m
}

/// "none", "1 intruder (j = 3)" or "2 intruders (j = 0, 3)".
pub fn intruder_summary(j: &[usize]) -> String {
    if j.is_empty() {
        "none".into()
    } else {
        let list: Vec<String> = j.iter().map(|x| x.to_string()).collect();
        format!(
            "{} (j = {})",
            super::count(j.len(), "intruder", "intruders"),
            list.join(", ")
        )
    }
}

/// UTC time as RFC 3339, without a date crate.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_873_425), "2026-11-28T13:43:45Z");
    }
}

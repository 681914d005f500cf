//! What every report format shows, computed once from an engine, a scan and the user's flags.

use regex::Regex;
use serde::Serialize;

use crate::checkpoint::{Inputs, Tuned};
use crate::engine::{Engine, Scan};
use crate::flags::UserState;
use crate::spectral;
use crate::spectral::Rule;

/// Tuned × base vectors shown in a report's heatmap.
pub const HEAT_K: usize = 30;

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

#[derive(Debug, Clone, Serialize)]
pub struct VectorRow {
    pub j: usize,
    pub sigma: f64,
    pub sigma_ratio: f64,
    pub max_cos: f64,
    pub best_base_index: usize,
    pub best_base_sigma: f64,
    /// The rule's verdict (j < k and c_j < ε).
    pub rule: bool,
    /// The user's flag, if any.
    pub flag: Option<bool>,
    /// The verdict shown: the flag where there is one, else the rule.
    pub intruder: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub name: String,
    pub shape: [usize; 2],
    pub intruders: Vec<usize>,
    /// The top k vectors, plus any flagged one beyond k.
    pub vectors: Vec<VectorRow>,
    pub sigma_base: Vec<f64>,
    pub sigma_tuned: Vec<f64>,
    pub delta_rel_norm: f64,
    /// None only if computing it failed.
    pub delta_effective_rank: Option<f64>,
    /// |cos|, row-major: base vectors (rows) × tuned vectors (cols); for plots only.
    #[serde(skip)]
    pub heat: Option<(usize, usize, Vec<f32>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub lorascope_version: String,
    pub time: String,
    pub k: usize,
    pub epsilon: f64,
    pub vectors: spectral::Side,
    pub base: FileInfo,
    pub tuned: FileInfo,
    pub adapter: Option<AdapterInfo>,
    pub matrices_total: usize,
    pub matrices_analysed: usize,
    /// Under the verdict (flags included).
    pub total_intruders: usize,
    /// Under the rule alone.
    pub total_rule: usize,
    pub overrides: usize,
    pub per_layer: Vec<(String, usize)>,
    /// Rule-only totals at ε = 0.1 … 0.9.
    pub sweep: Vec<(f64, usize)>,
    pub failed: Vec<(String, String)>,
    pub sections: Vec<Section>,
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

pub fn inputs_info(inputs: &Inputs) -> (FileInfo, FileInfo, Option<AdapterInfo>) {
    let base_files: Vec<_> = inputs.base.files.iter().map(|f| f.as_ref()).collect();
    let base = file_info(&inputs.base.path, inputs.base.format.as_str(), &base_files);
    match &inputs.tuned {
        Tuned::Model(m) => {
            let files: Vec<_> = m.files.iter().map(|f| f.as_ref()).collect();
            (base, file_info(&m.path, m.format.as_str(), &files), None)
        }
        Tuned::Adapter(a) => {
            let info = AdapterInfo {
                r: a.config.r,
                lora_alpha: a.config.lora_alpha,
                scaling: a.scalings(),
                use_rslora: a.config.use_rslora,
                use_dora: a.config.use_dora,
                modules: a.modules.len(),
            };
            (base, file_info(&a.dir, "adapter", &[&a.file]), Some(info))
        }
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

/// Build a report. `matrices_total` counts matrices not yet analysed too (the explorer may export
/// before the background work is done). Heatmaps come from the engine's (cached) decompositions.
pub fn build(
    engine: &Engine,
    scan: &Scan,
    user: &UserState,
    rule: &Rule,
    select: &dyn Fn(&str, usize) -> bool,
    time: &str,
    matrices_total: usize,
) -> Report {
    let (base, tuned, adapter) = inputs_info(&engine.inputs);
    let mut sections = Vec::new();
    let k = rule.k();
    for m in scan.reports() {
        let intr = user.intruders(&m.name, &m.max_cos(), rule);
        if !select(&m.name, intr.len()) {
            continue;
        }
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
                rule: rule.is_intruder_at(j, v.max_cos),
                flag: user.flag(&m.name, j),
                intruder: intr.contains(&j),
            })
            .collect();
        let pair = engine.matrices().into_iter().find(|p| p.name == m.name);
        // A section shows ΔW's effective rank even where the scan skipped it as too costly.
        let delta_effective_rank = m
            .delta_effective_rank
            .or_else(|| engine.delta_effective_rank(pair?).ok());
        let heat = pair
            .and_then(|p| engine.decompositions_of(p).ok())
            .map(|(b, t)| {
                let n = HEAT_K.min(b.keep).min(t.keep);
                (n, n, spectral::similarity(&b, &t, n, n))
            });
        sections.push(Section {
            name: m.name.clone(),
            shape: m.shape,
            intruders: intr,
            vectors,
            sigma_base: m.sigma_base.clone(),
            sigma_tuned: m.sigma_tuned.clone(),
            delta_rel_norm: m.delta_rel_norm,
            delta_effective_rank,
            heat,
        });
    }
    Report {
        lorascope_version: env!("CARGO_PKG_VERSION").to_string(),
        time: time.to_string(),
        k,
        epsilon: rule.epsilon(),
        vectors: engine.opts.side,
        base,
        tuned,
        adapter,
        matrices_total,
        matrices_analysed: scan.reports().count(),
        total_intruders: scan.total_with(user, rule),
        total_rule: scan.total(rule),
        overrides: user.overrides(),
        per_layer: scan.per_layer_with(user, rule),
        sweep: scan.sweep(rule),
        failed: scan
            .results
            .iter()
            .filter_map(|(n, r)| r.as_ref().err().map(|e| (n.clone(), e.clone())))
            .collect(),
        sections,
    }
}

impl Report {
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
        format!(
            "in {} ({} analysed){overrides}.",
            super::count(self.matrices_total, "matrix", "matrices"),
            self.matrices_analysed
        )
    }

    pub fn adapter_line(&self) -> Option<String> {
        let a = self.adapter.as_ref()?;
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

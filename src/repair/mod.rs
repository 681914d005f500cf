//! Scaling intruders down (the paper's §5): W' = W + (λ − 1)·Σ_{j∈I} u_j σ_j v_jᵀ over the chosen
//! intruders I of each matrix, with (u_j, σ_j, v_j) from the tuned matrix's own decomposition.
//! Σ_{j∈I} u_j σ_j v_jᵀ = U_I·U_Iᵀ·W, so W' = W − (1 − λ)·U_I·(U_Iᵀ·W) from the left vectors (or
//! W − (1 − λ)·(W·V_I)·V_Iᵀ from the right ones): no other vector is needed.
//!
//! Outputs, each written whole to a temporary sibling and renamed into place, never into an
//! input, each carrying its provenance (`__metadata__` and `repair.json`):
//! - a PEFT adapter folder whose merge equals the merged repair exactly ([`adapter`]);
//! - a model folder `from_pretrained` loads, or a bare `.safetensors` weights file ([`merged`]).

mod adapter;
mod merged;
pub mod verify;

pub use verify::{Verification, VerifyRow};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use faer::{Mat, MatMut, Par};
use serde::Serialize;

use crate::checkpoint::{Dense, Inputs, Tuned};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fsio::folder_of;
use crate::spectral::{Decomposition, Rule, Side};

/// Which intruders of a matrix are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The highest-ranked intruder only, as the paper scales them.
    Top,
    /// Every intruder among the top k, as PEFT's `reduce_intruder_dimension` does.
    All,
}

impl Scope {
    /// The vectors to scale, given a matrix's intruder indices (ascending: by σ, largest first).
    pub fn choose(self, intruders: &[usize]) -> Vec<usize> {
        match self {
            Scope::Top => intruders.iter().take(1).copied().collect(),
            Scope::All => intruders.to_vec(),
        }
    }
}

/// Scales W (rows × cols, as analysed) by `lambda` along the tuned vectors `idx` of `d`, its
/// decomposition on `side`.
pub fn scale_directions(
    w: &mut Dense<f64>,
    d: &Decomposition,
    side: Side,
    idx: &[usize],
    lambda: f64,
) {
    if idx.is_empty() {
        return;
    }
    let vecs = d.as_mat();
    let basis = Mat::<f64>::from_fn(d.dim, idx.len(), |i, j| vecs[(i, idx[j])] as f64);
    let (rows, cols) = (w.rows, w.cols);
    let wm = MatMut::from_row_major_slice_mut(&mut w.data, rows, cols);
    // Right vectors are the left vectors of Wᵀ: the same update on the transposed view.
    let mut x = match side {
        Side::Left => wm,
        Side::Right => wm.transpose_mut(),
    };
    let c = basis.transpose() * x.as_ref();
    faer::linalg::matmul::matmul(
        x.as_mut(),
        faer::Accum::Add,
        basis.as_ref(),
        c.as_ref(),
        lambda - 1.0,
        Par::rayon(0),
    );
}

/// One tuned vector scaled, as the provenance records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaledVector {
    pub j: usize,
    pub sigma_before: f64,
    pub sigma_after: f64,
    /// c_j: its best |cos| with the base's vectors.
    pub max_cos: f64,
    /// Chosen by the user's flag rather than the rule.
    pub user_flag: bool,
}

/// A matrix's vectors to scale (the matrix named as scans name it: the base tensor's name) and
/// the tuned decomposition they index.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub vectors: Vec<ScaledVector>,
    pub tuned: Decomposition,
}

impl Chosen {
    /// Vectors `idx` of a matrix's report and tuned decomposition, to be scaled by λ; `user`
    /// says which were chosen by a flag.
    pub fn new(
        report: &crate::engine::MatrixReport,
        idx: &[usize],
        tuned: Decomposition,
        lambda: f64,
        user: &crate::flags::UserState,
    ) -> Chosen {
        let vectors = idx
            .iter()
            .map(|&j| ScaledVector {
                j,
                sigma_before: tuned.sigma[j],
                sigma_after: tuned.sigma[j] * lambda,
                max_cos: report.vectors[j].max_cos,
                user_flag: user.flag(&report.name, j).is_some(),
            })
            .collect();
        Chosen { vectors, tuned }
    }

    pub fn idx(&self) -> Vec<usize> {
        self.vectors.iter().map(|v| v.j).collect()
    }
}

/// What to scale, by matrix.
pub type Choice = BTreeMap<String, Chosen>;

/// The vectors of an analysed matrix a repair scales: `scope` of its intruders under the user's
/// verdicts (their flags where set, else the rule). The one place that decides it, for the
/// command line and the explorer alike.
pub fn pick(
    report: &crate::engine::MatrixReport,
    user: &crate::flags::UserState,
    rule: &Rule,
    scope: Scope,
) -> Vec<usize> {
    scope.choose(&user.intruders(&report.name, &report.cos(rule), rule))
}

/// Largest shard of a merged folder by default: 5 GiB (the command line's `5G`).
pub const DEFAULT_MAX_SHARD: u64 = 5 << 30;

/// What a repair writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A PEFT LoRA adapter folder (TUNED must be an adapter).
    Adapter,
    /// The whole model, merged: a folder, or a bare `.safetensors` file.
    Merged,
}

/// Extensions of other weight formats: an output named so would hold safetensors under a name
/// that says otherwise. (Any other dotted name is a folder: model names carry dots, `Llama-3.1`.)
const OTHER_FORMATS: &[&str] = &[
    "bin", "pt", "pth", "ckpt", "gguf", "ggml", "h5", "msgpack", "onnx", "npz", "pkl", "json",
];

/// Where and what a repair writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub format: Format,
    /// A bare `.safetensors` weights file instead of a folder (merged only).
    pub file: bool,
}

impl Target {
    /// From `-o` and `--format` (by default an adapter for an adapter, else merged); a
    /// `.safetensors` path is the merged weights alone.
    pub fn new(inputs: &Inputs, out: &Path, format: Option<Format>) -> Result<Target> {
        let is_adapter = matches!(inputs.tuned, Tuned::Adapter(_));
        let ext = out
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        let file = ext.as_deref() == Some("safetensors");
        if let Some(e) = ext.as_deref().filter(|e| OTHER_FORMATS.contains(e)) {
            return Err(Error::file(
                out,
                format!(
                    "lorascope writes safetensors, not .{e}: give a folder, or a .safetensors \
                     file for the merged weights alone"
                ),
            ));
        }
        let format = match format {
            Some(f) => f,
            None if file => Format::Merged,
            None if is_adapter => Format::Adapter,
            None => Format::Merged,
        };
        if format == Format::Adapter {
            if !is_adapter {
                return Err(Error::Usage(format!(
                    "--format adapter needs a PEFT adapter folder as TUNED; {} is a model \
                     (use --format merged)",
                    inputs.tuned.path().display()
                )));
            }
            if file {
                return Err(Error::file(
                    out,
                    "an adapter is a folder: give a folder name (or --format merged for one \
                     .safetensors file)",
                ));
            }
        }
        Ok(Target {
            path: out.to_path_buf(),
            format,
            file,
        })
    }
}

/// λ in [0, 1] scales intruders down; above 1 amplifies them, only with `allow_amplify`.
pub fn check_lambda(lambda: f64, allow_amplify: bool) -> Result<()> {
    if !lambda.is_finite() || lambda < 0.0 {
        return Err(Error::Usage(format!(
            "--lambda must be a number in [0, 1] (0 removes, 1 keeps), got {lambda}"
        )));
    }
    if lambda > 1.0 && !allow_amplify {
        return Err(Error::Usage(format!(
            "--lambda {lambda} > 1 would amplify the intruders, not reduce them; \
             --allow-amplify if that is meant"
        )));
    }
    Ok(())
}

/// Refuses an output that exists (unless `force`), is one of the inputs, lies inside an input
/// folder or holds an input: lorascope never writes into the user's checkpoints, nor over
/// anything without being told.
pub fn check_output(inputs: &Inputs, target: &Target, force: bool) -> Result<()> {
    let out = &target.path;
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    // Where the output would land: a file's symlink target must not be in an input either.
    let landing =
        match crate::fsio::output(out) {
            Ok(crate::fsio::Output::Through(_)) => return Err(Error::file(
                out,
                "is not a regular file (a device or a pipe); give a folder or a .safetensors file",
            )),
            Ok(crate::fsio::Output::Replace(p)) if target.file => p,
            _ => out.to_path_buf(),
        };
    let out_dir =
        canon(folder_of(&landing)).ok_or_else(|| Error::file(out, "its folder does not exist"))?;
    let out_full = out_dir.join(landing.file_name().unwrap_or_default());
    let mut roots: Vec<PathBuf> = vec![inputs.base.path.clone(), inputs.tuned.path().to_path_buf()];
    roots.extend(inputs.base.files.iter().map(|f| f.path.clone()));
    if let Tuned::Model(m) = &inputs.tuned {
        roots.extend(m.files.iter().map(|f| f.path.clone()));
    }
    for r in roots.iter().filter_map(|r| canon(r)) {
        if out_full == r || (r.is_dir() && out_full.starts_with(&r)) {
            return Err(Error::file(
                out,
                format!(
                    "is inside the input {}: lorascope does not write into checkpoints",
                    r.display()
                ),
            ));
        }
        if r.starts_with(&out_full) {
            return Err(Error::file(
                out,
                format!(
                    "holds the input {}: replacing it would delete a checkpoint",
                    r.display()
                ),
            ));
        }
    }
    match std::fs::metadata(&landing) {
        Ok(m) if m.is_dir() && target.file => {
            return Err(Error::file(
                out,
                "is a folder; give a .safetensors file name, or a new folder name",
            ))
        }
        Ok(m) if !m.is_dir() && !target.file => {
            return Err(Error::file(
                out,
                "is a file; the output is a folder (or name a .safetensors file for the weights \
                 alone)",
            ))
        }
        Ok(_) if !force => {
            return Err(Error::file(
                out,
                "exists; --force replaces it (the old one stays until the new one is whole)",
            ))
        }
        _ => {}
    }
    Ok(())
}

/// How to repair.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub lambda: f64,
    pub scope: Scope,
    pub rule: Rule,
    /// Largest shard of a merged folder, in bytes (a tensor larger than this gets its own).
    pub max_shard: u64,
}

/// What a repair did and from what: `repair.json`, and `__metadata__` of every file written.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub lorascope_version: String,
    pub lambda: f64,
    pub scope: Scope,
    pub k: usize,
    pub epsilon: f64,
    pub vectors: Side,
    pub format: Format,
    pub inputs: crate::report::model::InputsInfo,
    /// Per matrix scaled (scans' names), its vectors.
    pub matrices: BTreeMap<String, Vec<ScaledVector>>,
}

impl Provenance {
    pub fn new(engine: &Engine, chosen: &Choice, s: &Settings, format: Format) -> Provenance {
        Provenance {
            lorascope_version: env!("CARGO_PKG_VERSION").to_string(),
            lambda: s.lambda,
            scope: s.scope,
            k: s.rule.k(),
            epsilon: s.rule.epsilon(),
            vectors: engine.opts.side,
            format,
            inputs: crate::report::model::inputs_info(&engine.inputs),
            matrices: chosen
                .iter()
                .filter(|(_, c)| !c.vectors.is_empty())
                .map(|(n, c)| (n.clone(), c.vectors.clone()))
                .collect(),
        }
    }

    /// `__metadata__` of a written safetensors file: PyTorch's format tag and this record.
    fn metadata(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("format".into(), "pt".into());
        m.insert(
            "lorascope_repair".into(),
            serde_json::to_string(self).unwrap_or_default().into(),
        );
        m
    }

    fn json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Intruders scaled in all.
    pub fn count(&self) -> usize {
        self.matrices.values().map(|v| v.len()).sum()
    }
}

/// Writes the repair: the chosen vectors of each matrix scaled by λ, in `target`'s format.
/// `progress` gets (bytes written, total). Leftovers of killed runs in the output's folder are
/// removed first. Returns the provenance and notes for the user (what was removed, what the
/// output lacks).
pub fn write(
    engine: &Engine,
    chosen: &Choice,
    settings: &Settings,
    target: &Target,
    force: bool,
    progress: &dyn Fn(u64, u64),
) -> Result<(Provenance, Vec<String>)> {
    check_output(&engine.inputs, target, force)?;
    let mut notes: Vec<String> = crate::fsio::clean_stale(folder_of(&target.path))
        .into_iter()
        .map(|p| format!("removed {}, left by a killed lorascope run", p.display()))
        .collect();
    let prov = Provenance::new(engine, chosen, settings, target.format);
    let write = match (target.format, target.file) {
        (Format::Adapter, _) => adapter::write,
        (Format::Merged, true) => merged::write_file,
        (Format::Merged, false) => merged::write_folder,
    };
    notes.extend(write(engine, chosen, settings, &prov, target, progress)?);
    Ok((prov, notes))
}

/// The file beside a bare weights file that records its provenance: `out.repair.json`.
pub fn provenance_path(target: &Target) -> PathBuf {
    if target.file {
        target.path.with_extension("repair.json")
    } else {
        target.path.join("repair.json")
    }
}

/// Every value finite and within what `dtype` holds: a repair never writes Inf or NaN.
fn check_finite(name: &str, values: &[f64], dtype: safetensors::Dtype) -> Result<()> {
    let max = crate::checkpoint::dtype::max_finite(dtype);
    if let Some(x) = values.iter().find(|x| x.is_nan() || x.abs() > max) {
        return Err(Error::Mismatch(format!(
            "`{name}` would hold {x}, beyond what {} holds: nothing written",
            crate::checkpoint::dtype::name(dtype)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::spectral;

    /// W = X·diag(s)·Yᵀ with random orthonormal X, Y.
    fn planted(rng: &mut Rng, m: usize, n: usize, s: &[f64]) -> Dense<f64> {
        let x = rng.gaussian(m, s.len(), 1.0).qr().compute_thin_Q();
        let y = rng.gaussian(n, s.len(), 1.0).qr().compute_thin_Q();
        let xs = Mat::from_fn(m, s.len(), |i, j| x[(i, j)] * s[j]);
        Dense::from_mat((xs * y.transpose()).as_ref())
    }

    #[test]
    fn scaling_changes_only_the_chosen_singular_values_on_either_side() {
        let mut rng = Rng(3);
        let s: Vec<f64> = (0..20).map(|i| 10.0 / (1.0 + i as f64)).collect();
        for side in [Side::Left, Side::Right] {
            let w = planted(&mut rng, 40, 30, &s);
            let d = spectral::decompose(&w, side, 20, Par::Seq).unwrap();
            let mut w2 = w.clone();
            scale_directions(&mut w2, &d, side, &[1, 4], 0.25);
            let got = spectral::decompose(&w2, side, 20, Par::Seq).unwrap();
            let mut want = s.clone();
            want[1] *= 0.25;
            want[4] *= 0.25;
            want.sort_by(|a, b| b.total_cmp(a));
            for (g, e) in got.sigma.iter().zip(&want) {
                assert!((g - e).abs() < 1e-5 * s[0], "{side:?}: σ {g} vs {e}");
            }
            // The other vectors are untouched: vector 0 of W is still vector 0 of W'.
            let (a, b) = (d.as_mat(), got.as_mat());
            let dot: f64 = (0..d.dim)
                .map(|i| a[(i, 0)] as f64 * b[(i, 0)] as f64)
                .sum();
            assert!(dot.abs() > 1.0 - 1e-5, "{side:?}: {dot}");
            // λ = 1 changes nothing; λ = 0 removes the direction.
            let mut same = w.clone();
            scale_directions(&mut same, &d, side, &[1], 1.0);
            assert_eq!(same, w);
            let mut gone = w.clone();
            scale_directions(&mut gone, &d, side, &[0], 0.0);
            let g = spectral::decompose(&gone, side, 20, Par::Seq).unwrap();
            assert!(
                (g.sigma[0] - s[1]).abs() < 1e-5 * s[0],
                "{:?}",
                &g.sigma[..3]
            );
        }
    }

    #[test]
    fn the_paper_scales_the_top_intruder_and_peft_all_of_them() {
        assert_eq!(Scope::Top.choose(&[2, 5, 7]), [2]);
        assert_eq!(Scope::All.choose(&[2, 5, 7]), [2, 5, 7]);
        assert!(Scope::Top.choose(&[]).is_empty());
    }
}

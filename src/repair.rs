//! Scaling intruders down (the paper's §5): W' = W + (λ − 1)·Σ_{j∈I} u_j σ_j v_jᵀ over the chosen
//! intruders I of each matrix, with (u_j, σ_j, v_j) from the tuned matrix's own decomposition.
//! Σ_{j∈I} u_j σ_j v_jᵀ = U_I·U_Iᵀ·W, so W' = W − (1 − λ)·U_I·(U_Iᵀ·W) from the left vectors (or
//! W − (1 − λ)·(W·V_I)·V_Iᵀ from the right ones): no other vector is needed. The whole tuned
//! model (an adapter merged into its base) is written as one new safetensors file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use faer::{Mat, MatMut, Par};
use safetensors::Dtype;

use crate::checkpoint::{dtype, Dense, Inputs, TensorPair, Tuned, TunedSource};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fsio::folder_of;
use crate::spectral::{Decomposition, Side};

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

/// One matrix whose intruders were scaled.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scaled {
    pub name: String,
    /// Tuned vector indices scaled, and their σ before.
    pub vectors: Vec<(usize, f64)>,
}

/// Refuses an output that is one of the inputs or lies inside an input folder: lorascope never
/// writes into the user's checkpoints.
pub fn check_output(inputs: &Inputs, out: &Path) -> Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    // Where the bytes would land: a symlink's target, which must not be in an input either.
    let target = match crate::fsio::output(out) {
        Ok(crate::fsio::Output::Replace(p)) => p,
        Ok(crate::fsio::Output::Through(_)) => {
            return Err(Error::file(
                out,
                "is not a regular file (a device or a pipe); give a .safetensors file name",
            ))
        }
        Err(e) => return Err(Error::file(out, e.to_string())),
    };
    let out_dir =
        canon(folder_of(&target)).ok_or_else(|| Error::file(out, "its folder does not exist"))?;
    let out_full = out_dir.join(target.file_name().unwrap_or_default());
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
    }
    if out_full.is_dir() {
        return Err(Error::file(
            out,
            "is a folder; give a .safetensors file name",
        ));
    }
    Ok(())
}

/// Where one output tensor's bytes come from.
enum Source<'a> {
    /// Stored bytes, copied as they are.
    Raw(&'a [u8]),
    /// A matrix to reconstruct (an adapter's merge) and possibly scale, then encode.
    Matrix(&'a TensorPair),
}

/// Writes the tuned model with the chosen vectors of each matrix (named as scans name it: the
/// base tensor's name; with the tuned decomposition they index) scaled by `lambda`, as
/// one safetensors file at `out` (a temporary file renamed into place when complete). Tensors
/// keep their names, shapes and dtypes; untouched ones are copied byte for byte. `progress`
/// gets (bytes written, total).
pub fn write_model(
    engine: &Engine,
    chosen: &BTreeMap<String, (Vec<usize>, Decomposition)>,
    lambda: f64,
    metadata: serde_json::Map<String, serde_json::Value>,
    out: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<Vec<Scaled>> {
    let inputs = &engine.inputs;
    check_output(inputs, out)?;
    // (name, dtype, shape, source), in name order.
    let mut plan: Vec<(String, Dtype, Vec<usize>, Source)> = Vec::new();
    match &inputs.tuned {
        Tuned::Model(m) => {
            // Pairs by the tuned tensor's own name, which may differ from the base's (pairing
            // also matches by a unique suffix).
            let by_tuned: BTreeMap<&str, &TensorPair> = inputs
                .pairs
                .iter()
                .filter_map(|p| match &p.tuned {
                    Some(TunedSource::Tensor { name }) => Some((name.as_str(), p)),
                    _ => None,
                })
                .collect();
            for (name, loc) in &m.tensors {
                let info = &loc.info;
                let source = match by_tuned.get(name.as_str()) {
                    Some(p) if chosen.contains_key(&p.name) => Source::Matrix(p),
                    _ => Source::Raw(m.files[loc.file].bytes(info)),
                };
                plan.push((name.clone(), info.dtype, info.shape.clone(), source));
            }
        }
        Tuned::Adapter(a) => {
            let pairs: BTreeMap<&str, &TensorPair> =
                inputs.pairs.iter().map(|p| (p.name.as_str(), p)).collect();
            for (name, loc) in &inputs.base.tensors {
                let pair = pairs.get(name.as_str()).copied();
                let tuned = pair.and_then(|p| p.tuned.as_ref());
                // A tensor the adapter replaces (modules_to_save) keeps the adapter's dtype.
                let (dtype, shape, raw) = match tuned {
                    Some(TunedSource::Replaced { name: stored }) => {
                        let i = &a.file.tensors[stored];
                        (i.dtype, i.shape.clone(), a.file.bytes(i))
                    }
                    _ => (
                        loc.info.dtype,
                        loc.info.shape.clone(),
                        inputs.base.files[loc.file].bytes(&loc.info),
                    ),
                };
                let source = match (pair, tuned) {
                    (Some(p), _) if chosen.contains_key(name) => Source::Matrix(p),
                    (Some(p), Some(TunedSource::Lora { .. })) => Source::Matrix(p),
                    _ => Source::Raw(raw),
                };
                plan.push((name.clone(), dtype, shape, source));
            }
        }
    }
    // Every matrix chosen must be written scaled: a name that found no tensor is a bug here.
    let planned: std::collections::BTreeSet<&str> = plan
        .iter()
        .filter_map(|(_, _, _, s)| match s {
            Source::Matrix(p) => Some(p.name.as_str()),
            Source::Raw(_) => None,
        })
        .collect();
    if let Some((missing, _)) = chosen.iter().find(|(n, _)| !planned.contains(n.as_str())) {
        return Err(Error::Internal(format!(
            "`{missing}` has intruders to scale but no tensor in the output"
        )));
    }
    let entries: Vec<(String, String, Vec<usize>, usize)> = plan
        .iter()
        .map(|(n, d, s, _)| {
            let len = s.iter().product::<usize>() * dtype::dtype_size(*d);
            (n.clone(), dtype::name(*d), s.clone(), len)
        })
        .collect();
    let total: u64 = entries.iter().map(|e| e.3 as u64).sum();
    let header = crate::checkpoint::st::header(&entries, metadata);

    let io = |e: std::io::Error| Error::file(out, format!("cannot write: {e}"));
    // A symlink's target is replaced (checked by `check_output`), never the link.
    let target = match crate::fsio::output(out).map_err(io)? {
        crate::fsio::Output::Replace(p) => p,
        crate::fsio::Output::Through(_) => return Err(io(std::io::Error::other("not a file"))),
    };
    let mut tmp = crate::fsio::temp_in(folder_of(&target)).map_err(io)?;
    let mut scaled = Vec::new();
    {
        let mut w = std::io::BufWriter::with_capacity(8 << 20, tmp.as_file_mut());
        w.write_all(&header).map_err(io)?;
        let mut done = 0u64;
        let mut bytes = Vec::new();
        for ((name, dtype, _, source), entry) in plan.iter().zip(&entries) {
            match source {
                Source::Raw(b) => w.write_all(b).map_err(io)?,
                Source::Matrix(p) => {
                    let mut m = inputs.tuned_matrix::<f64>(p)?;
                    if let Some((idx, tuned)) = chosen.get(&p.name).filter(|c| !c.0.is_empty()) {
                        scale_directions(&mut m, tuned, engine.opts.side, idx, lambda);
                        scaled.push(Scaled {
                            name: p.name.clone(),
                            vectors: idx.iter().map(|&j| (j, tuned.sigma[j])).collect(),
                        });
                    }
                    // Back to the stored layout (GPT-2 Conv1D adapters are analysed transposed).
                    let m = if p.transposed { m.transpose() } else { m };
                    bytes.clear();
                    dtype::encode(*dtype, &m.data, &mut bytes)
                        .map_err(|e| Error::Mismatch(format!("`{name}`: {e}")))?;
                    w.write_all(&bytes).map_err(io)?;
                }
            }
            done += entry.3 as u64;
            progress(done, total);
        }
        w.flush().map_err(io)?;
    }
    crate::fsio::commit(tmp, &target).map_err(io)?;
    Ok(scaled)
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

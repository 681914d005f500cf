//! The repair as a PEFT LoRA adapter whose merge equals the merged repair exactly.
//!
//! Scaling vector i of a module by λ adds the rank-one change −(1 − λ)·u_i·(u_iᵀ·W) (from the
//! left vectors; −(1 − λ)·(W·v_i)·v_iᵀ from the right). With s the module's scaling, that is
//! s·b·a for a = (u_iᵀ·W)/‖u_iᵀ·W‖ and b = −(1 − λ)·‖u_iᵀ·W‖/s·u_i: a module with m scaled
//! vectors gets rank r + m, A with the rows a appended and B with the columns b. Its
//! `rank_pattern` entry says r + m and its `alpha_pattern` entry keeps s (α′ = s·(r + m), or
//! s·√(r + m) with rsLoRA). Nothing is refitted: every other tensor (modules_to_save heads, biases)
//! and every other config field is kept as it is.

use std::collections::BTreeMap;

use super::merged::{copy_files, TOKENIZER_FILES};
use super::{check_finite, scale_directions, Choice, Provenance, Settings, Target};
use crate::checkpoint::{dtype, Adapter, Dense, Inputs, TensorPair, Tuned, TunedSource};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::spectral::Side;

/// New bytes for some of the adapter's tensors, and the modules whose rank grows.
struct Changes {
    tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)>,
    /// Module → (new rank, its scaling).
    ranks: BTreeMap<String, (usize, f64)>,
}

fn column(d: &crate::spectral::Decomposition, j: usize) -> Vec<f64> {
    let m = d.as_mat();
    (0..d.dim).map(|i| m[(i, j)] as f64).collect()
}

/// (a, b) per scaled vector of W (rows × cols, analysed layout): rank-one terms with
/// Σ s·b·a = W′ − W.
fn rank_one_terms(
    w: &Dense<f64>,
    d: &crate::spectral::Decomposition,
    side: Side,
    idx: &[usize],
    lambda: f64,
    s: f64,
) -> Vec<(Vec<f64>, Vec<f64>)> {
    let (rows, cols) = (w.rows, w.cols);
    idx.iter()
        .map(|&j| {
            let x = column(d, j);
            match side {
                Side::Left => {
                    // p = Wᵀ·u (= σ·v).
                    let mut p = vec![0.0; cols];
                    for (r, u) in x.iter().enumerate() {
                        for (pc, wc) in p.iter_mut().zip(&w.data[r * cols..(r + 1) * cols]) {
                            *pc += u * wc;
                        }
                    }
                    let n = p.iter().map(|v| v * v).sum::<f64>().sqrt();
                    let a = p
                        .iter()
                        .map(|v| if n > 0.0 { v / n } else { 0.0 })
                        .collect();
                    let b = x.iter().map(|u| -(1.0 - lambda) * n / s * u).collect();
                    (a, b)
                }
                Side::Right => {
                    // q = W·v (= σ·u).
                    let q: Vec<f64> = (0..rows)
                        .map(|r| {
                            w.data[r * cols..(r + 1) * cols]
                                .iter()
                                .zip(&x)
                                .map(|(a, b)| a * b)
                                .sum()
                        })
                        .collect();
                    let b = q.iter().map(|v| -(1.0 - lambda) / s * v).collect();
                    (x, b)
                }
            }
        })
        .collect()
}

fn decode(a: &Adapter, name: &str) -> Result<Dense<f64>> {
    let shape = &a.file.tensors[name].shape;
    Ok(Dense {
        rows: shape[0],
        cols: shape[1],
        data: a.file.decode(name)?,
    })
}

fn encode(a: &Adapter, name: &str, m: &Dense<f64>) -> Result<(Vec<usize>, Vec<u8>)> {
    let dt = a.file.tensors[name].dtype;
    check_finite(name, &m.data, dt)?;
    let mut bytes = Vec::new();
    dtype::encode(dt, &m.data, &mut bytes)
        .map_err(|e| Error::Mismatch(format!("`{name}`: {e}")))?;
    Ok((vec![m.rows, m.cols], bytes))
}

fn append_rows(m: &Dense<f64>, rows: &[&Vec<f64>]) -> Dense<f64> {
    let mut data = m.data.clone();
    rows.iter().for_each(|r| data.extend_from_slice(r));
    Dense {
        rows: m.rows + rows.len(),
        cols: m.cols,
        data,
    }
}

fn append_cols(m: &Dense<f64>, cols: &[&Vec<f64>]) -> Dense<f64> {
    let n = m.cols + cols.len();
    let mut data = Vec::with_capacity(m.rows * n);
    for r in 0..m.rows {
        data.extend_from_slice(&m.data[r * m.cols..(r + 1) * m.cols]);
        data.extend(cols.iter().map(|c| c[r]));
    }
    Dense {
        rows: m.rows,
        cols: n,
        data,
    }
}

fn changes(engine: &Engine, a: &Adapter, chosen: &Choice, lambda: f64) -> Result<Changes> {
    let inputs: &Inputs = &engine.inputs;
    let pairs: BTreeMap<&str, &TensorPair> =
        inputs.pairs.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut out = Changes {
        tensors: BTreeMap::new(),
        ranks: BTreeMap::new(),
    };
    for (name, c) in chosen.iter().filter(|(_, c)| !c.vectors.is_empty()) {
        let pair = pairs
            .get(name.as_str())
            .ok_or_else(|| Error::Internal(format!("`{name}` is not a matrix of these inputs")))?;
        let idx = c.idx();
        match &pair.tuned {
            Some(TunedSource::Lora { module }) => {
                let m = &a.modules[module];
                if m.magnitude.is_some() {
                    return Err(Error::Usage(format!(
                        "`{module}` is a DoRA module: its magnitude depends on the column norms, so \
                         no adapter holds its repair exactly; use --format merged"
                    )));
                }
                let w = inputs.tuned_matrix::<f64>(pair)?;
                let terms = rank_one_terms(&w, &c.tuned, engine.opts.side, &idx, lambda, m.scaling);
                let a_rows: Vec<&Vec<f64>> = terms.iter().map(|t| &t.0).collect();
                let b_cols: Vec<&Vec<f64>> = terms.iter().map(|t| &t.1).collect();
                let (sa, sb) = (decode(a, &m.a)?, decode(a, &m.b)?);
                // Stored layouts: lora_A (r × in), lora_B (out × r); for an embedding the
                // analysed update is Aᵀ·Bᵀ, so A takes the b's as rows and B the a's as columns.
                let (new_a, new_b) = if m.embedding {
                    (append_rows(&sa, &b_cols), append_cols(&sb, &a_rows))
                } else {
                    (append_rows(&sa, &a_rows), append_cols(&sb, &b_cols))
                };
                out.tensors.insert(m.a.clone(), encode(a, &m.a, &new_a)?);
                out.tensors.insert(m.b.clone(), encode(a, &m.b, &new_b)?);
                out.ranks
                    .insert(module.clone(), (m.r + idx.len(), m.scaling));
            }
            // A matrix the adapter saves whole (modules_to_save): scaled in place.
            Some(TunedSource::Replaced { name: stored }) => {
                let mut w = inputs.tuned_matrix::<f64>(pair)?;
                scale_directions(&mut w, &c.tuned, engine.opts.side, &idx, lambda);
                out.tensors.insert(stored.clone(), encode(a, stored, &w)?);
            }
            _ => {
                return Err(Error::Usage(format!(
                    "`{name}` is not changed by the adapter, so an adapter cannot hold its repair; \
                     use --format merged"
                )))
            }
        }
    }
    Ok(out)
}

/// `adapter_config.json` with the grown modules' rank and α set, first in their patterns (PEFT
/// takes the first key that matches); every other field as it was.
fn config(a: &Adapter, ranks: &BTreeMap<String, (usize, f64)>) -> Result<Vec<u8>> {
    let path = a.dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| Error::file(&path, "is not a JSON object"))?;
    let rslora = a.config.use_rslora;
    let ranks_of: Vec<(String, serde_json::Value)> = ranks
        .iter()
        .map(|(m, (r, _))| (m.clone(), serde_json::json!(r)))
        .collect();
    let alphas_of: Vec<(String, serde_json::Value)> = ranks
        .iter()
        .map(|(m, (r, s))| {
            let r = *r as f64;
            (
                m.clone(),
                serde_json::json!(if rslora { s * r.sqrt() } else { s * r }),
            )
        })
        .collect();
    for (key, first) in [("rank_pattern", ranks_of), ("alpha_pattern", alphas_of)] {
        let mut map: serde_json::Map<String, serde_json::Value> = first.into_iter().collect();
        if let Some(old) = obj.get(key).and_then(|v| v.as_object()) {
            for (k, v) in old {
                map.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        obj.insert(key.into(), serde_json::Value::Object(map));
    }
    let mut out = serde_json::to_vec_pretty(&cfg).unwrap_or_default();
    out.push(b'\n');
    Ok(out)
}

pub(super) fn write(
    engine: &Engine,
    chosen: &Choice,
    settings: &Settings,
    prov: &Provenance,
    target: &Target,
    progress: &dyn Fn(u64, u64),
) -> Result<Vec<String>> {
    let Tuned::Adapter(a) = &engine.inputs.tuned else {
        return Err(Error::Usage(
            "--format adapter needs a PEFT adapter as TUNED".into(),
        ));
    };
    let changes = changes(engine, a, chosen, settings.lambda)?;
    // Every tensor of the adapter, in name order: the grown ones new, the rest as stored.
    let mut entries: Vec<(String, String, Vec<usize>, usize)> = Vec::new();
    let mut total = 0u64;
    for (name, info) in &a.file.tensors {
        let (shape, len) = match changes.tensors.get(name) {
            Some((shape, bytes)) => (shape.clone(), bytes.len()),
            None => (info.shape.clone(), info.end - info.start),
        };
        total += len as u64;
        entries.push((name.clone(), dtype::name(info.dtype), shape, len));
    }
    let out = &target.path;
    let io = |p: &std::path::Path, e: std::io::Error| Error::file(p, format!("cannot write: {e}"));
    let tmp = crate::fsio::temp_dir_in(crate::fsio::folder_of(out)).map_err(|e| io(out, e))?;
    let path = tmp.path().join("adapter_model.safetensors");
    {
        use std::io::Write;
        let f = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
        let mut w = std::io::BufWriter::with_capacity(8 << 20, &f);
        w.write_all(&crate::checkpoint::st::header(&entries, prov.metadata()))
            .map_err(|e| io(&path, e))?;
        let mut done = 0u64;
        for (name, info) in &a.file.tensors {
            let n = match changes.tensors.get(name) {
                Some((_, b)) => w.write_all(b).map(|_| b.len()),
                None => a
                    .file
                    .with_bytes(info, |b| w.write_all(b).map(|_| b.len()))?,
            };
            done += n.map_err(|e| io(&path, e))? as u64;
            progress(done, total);
        }
        w.flush().map_err(|e| io(&path, e))?;
        drop(w);
        f.sync_all().map_err(|e| io(&path, e))?;
    }
    let cfg = tmp.path().join("adapter_config.json");
    crate::fsio::write_synced(&cfg, &config(a, &changes.ranks)?).map_err(|e| io(&cfg, e))?;
    let mut others = vec!["README.md"];
    others.extend(TOKENIZER_FILES);
    copy_files(&a.dir, tmp.path(), &others)?;
    let record = tmp.path().join("repair.json");
    crate::fsio::write_synced(&record, &prov.json()).map_err(|e| io(&record, e))?;
    crate::fsio::commit_dir(tmp, out).map_err(|e| io(out, e))?;
    Ok(vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_rows_and_columns_land_where_they_belong() {
        let m = Dense {
            rows: 2,
            cols: 2,
            data: vec![1.0, 2.0, 3.0, 4.0],
        };
        let r = append_rows(&m, &[&vec![5.0, 6.0]]);
        assert_eq!(
            (r.rows, r.cols, r.data),
            (3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        );
        let c = append_cols(&m, &[&vec![7.0, 8.0]]);
        assert_eq!(
            (c.rows, c.cols, c.data),
            (2, 3, vec![1.0, 2.0, 7.0, 3.0, 4.0, 8.0])
        );
    }
}

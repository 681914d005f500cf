//! The merged repair: the whole tuned model with the chosen intruders scaled, as one
//! `.safetensors` file, or as a folder `from_pretrained` loads (shards and their index, the
//! configs and the tokenizer beside them).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use super::{
    check_finite, provenance_path, scale_directions, Choice, Provenance, Settings, Target,
};
use crate::checkpoint::st::{StFile, TensorInfo};
use crate::checkpoint::{dtype, Inputs, Model, TensorPair, Tuned, TunedSource};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fsio::folder_of;

/// Where one output tensor's bytes come from.
enum Source<'a> {
    /// A stored tensor, copied as it is.
    Raw(&'a StFile, &'a TensorInfo),
    /// A stored tensor of another dtype, converted (an adapter's head into the model's dtype).
    Cast(&'a StFile, &'a TensorInfo),
    /// A matrix to reconstruct (an adapter's merge) and possibly scale, then encode.
    Matrix(&'a TensorPair),
    /// A bias changed by `lora_B.bias`.
    Bias(&'a TensorPair),
}

struct Entry<'a> {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    source: Source<'a>,
}

impl Entry<'_> {
    fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * dtype::dtype_size(self.dtype)
    }
}

/// A stored tensor as `to`: copied where the dtype is the same, converted where not.
fn stored<'a>(file: &'a StFile, info: &'a TensorInfo, to: Dtype) -> Source<'a> {
    let from = info.dtype;
    if from == to || !dtype::is_supported(from) || !dtype::is_supported(to) {
        Source::Raw(file, info)
    } else {
        Source::Cast(file, info)
    }
}

/// The dtype most of a model's floating-point bytes are in: what PEFT's merge casts to.
fn model_dtype(m: &Model) -> Dtype {
    let mut by: BTreeMap<String, (u64, Dtype)> = BTreeMap::new();
    for loc in m.tensors.values() {
        if dtype::is_supported(loc.info.dtype) {
            let e = by
                .entry(dtype::name(loc.info.dtype))
                .or_insert((0, loc.info.dtype));
            e.0 += (loc.info.shape.iter().product::<usize>() * dtype::dtype_size(loc.info.dtype))
                as u64;
        }
    }
    by.into_values()
        .max_by_key(|(n, _)| *n)
        .map_or(Dtype::F32, |(_, d)| d)
}

/// Every tensor of the tuned model, in name order: a full checkpoint's own tensors, or for an
/// adapter the base's with the adapter applied, in the base's dtypes, plus what the adapter
/// saves that the base lacks (a new head).
fn plan<'a>(inputs: &'a Inputs, chosen: &Choice) -> Result<Vec<Entry<'a>>> {
    let mut plan = Vec::new();
    match &inputs.tuned {
        Tuned::Model(m) => {
            // By the tuned tensor's own name, which may differ from the base's (pairing also
            // matches by a unique suffix).
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
                    _ => Source::Raw(&m.files[loc.file], info),
                };
                plan.push(Entry {
                    name: name.clone(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    source,
                });
            }
        }
        Tuned::Adapter(a) => {
            let pairs: BTreeMap<&str, &TensorPair> =
                inputs.pairs.iter().map(|p| (p.name.as_str(), p)).collect();
            for (name, loc) in &inputs.base.tensors {
                let pair = pairs.get(name.as_str()).copied();
                let (dtype, shape) = (loc.info.dtype, loc.info.shape.clone());
                let source = match (pair, pair.and_then(|p| p.tuned.as_ref())) {
                    (Some(p), _) if chosen.contains_key(name) => Source::Matrix(p),
                    (Some(p), Some(TunedSource::Lora { .. })) => Source::Matrix(p),
                    (Some(p), Some(TunedSource::LoraBias { .. })) => Source::Bias(p),
                    // A saved module (modules_to_save, a trained bias) in the model's dtype.
                    (_, Some(TunedSource::Replaced { name: stored_name })) => {
                        stored(&a.file, &a.file.tensors[stored_name], dtype)
                    }
                    _ => Source::Raw(&inputs.base.files[loc.file], &loc.info),
                };
                plan.push(Entry {
                    name: name.clone(),
                    dtype,
                    shape,
                    source,
                });
            }
            // Saved by the adapter, absent from the base: part of the tuned model all the same.
            let to = model_dtype(&inputs.base);
            let short_of: BTreeMap<&str, &str> = a
                .full
                .iter()
                .map(|(short, full)| (full.as_str(), short.as_str()))
                .collect();
            for full in &inputs.only_tuned {
                let short = short_of.get(full.as_str()).copied().unwrap_or(full);
                if short.contains("trainable_tokens") {
                    return Err(Error::tensor(
                        &a.file.path,
                        full,
                        "is a trainable-tokens delta, which lorascope cannot merge".to_string(),
                    ));
                }
                let i = &a.file.tensors[full];
                plan.push(Entry {
                    name: short.to_string(),
                    dtype: if dtype::is_supported(i.dtype) {
                        to
                    } else {
                        i.dtype
                    },
                    shape: i.shape.clone(),
                    source: stored(&a.file, i, to),
                });
            }
            plan.sort_by(|x, y| x.name.cmp(&y.name));
        }
    }
    // Every matrix chosen must be written scaled: a name that found no tensor is a bug here.
    let planned: std::collections::BTreeSet<&str> = plan
        .iter()
        .filter_map(|e| match e.source {
            Source::Matrix(p) => Some(p.name.as_str()),
            _ => None,
        })
        .collect();
    if let Some((missing, _)) = chosen.iter().find(|(n, _)| !planned.contains(n.as_str())) {
        return Err(Error::Internal(format!(
            "`{missing}` has intruders to scale but no tensor in the output"
        )));
    }
    Ok(plan)
}

/// What every file of a merged repair is written with: the choice, λ, the metadata, and the
/// progress over all files.
struct Writer<'a> {
    engine: &'a Engine,
    chosen: &'a Choice,
    lambda: f64,
    metadata: serde_json::Map<String, serde_json::Value>,
    done: u64,
    total: u64,
    progress: &'a dyn Fn(u64, u64),
}

impl<'a> Writer<'a> {
    fn new(
        engine: &'a Engine,
        chosen: &'a Choice,
        settings: &Settings,
        prov: &Provenance,
        entries: &[Entry],
        progress: &'a dyn Fn(u64, u64),
    ) -> Writer<'a> {
        Writer {
            engine,
            chosen,
            lambda: settings.lambda,
            metadata: prov.metadata(),
            done: 0,
            total: entries.iter().map(|e| e.bytes() as u64).sum(),
            progress,
        }
    }

    /// `entries` as one safetensors file: header, then each tensor's bytes in order.
    fn write(&mut self, w: &mut dyn Write, entries: &[&Entry]) -> Result<()> {
        let inputs = &self.engine.inputs;
        let header: Vec<(String, String, Vec<usize>, usize)> = entries
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    dtype::name(e.dtype),
                    e.shape.clone(),
                    e.bytes(),
                )
            })
            .collect();
        let io = |e: std::io::Error| Error::Internal(format!("cannot write: {e}"));
        w.write_all(&crate::checkpoint::st::header(
            &header,
            self.metadata.clone(),
        ))
        .map_err(io)?;
        let mut bytes = Vec::new();
        let encode = |name: &str, to: Dtype, values: &[f64], bytes: &mut Vec<u8>| -> Result<()> {
            check_finite(name, values, to)?;
            bytes.clear();
            dtype::encode(to, values, bytes).map_err(|e| Error::Mismatch(format!("`{name}`: {e}")))
        };
        for (i, e) in entries.iter().enumerate() {
            if i == 1 {
                // Part of the output is on disk: where a test kills a repair.
                w.flush().map_err(io)?;
                crate::error::stop_if_asked("write");
            }
            match &e.source {
                Source::Raw(file, info) => {
                    file.with_bytes(info, |b| w.write_all(b))?.map_err(io)?
                }
                Source::Cast(file, info) => {
                    let v = file
                        .with_bytes(info, |b| dtype::decode_f64(info.dtype, b))?
                        .map_err(|m| Error::Mismatch(format!("`{}`: {m}", e.name)))?;
                    encode(&e.name, e.dtype, &v, &mut bytes)?;
                    w.write_all(&bytes).map_err(io)?;
                }
                Source::Matrix(p) => {
                    let mut m = inputs.tuned_matrix::<f64>(p)?;
                    if let Some(c) = self.chosen.get(&p.name).filter(|c| !c.vectors.is_empty()) {
                        let side = self.engine.opts.side;
                        scale_directions(&mut m, &c.tuned, side, &c.idx(), self.lambda);
                    }
                    // Back to the stored layout (GPT-2 Conv1D adapters are analysed transposed).
                    let m = if p.transposed { m.transpose() } else { m };
                    encode(&e.name, e.dtype, &m.data, &mut bytes)?;
                    w.write_all(&bytes).map_err(io)?;
                }
                Source::Bias(p) => {
                    let v = inputs.tuned_bias(p)?;
                    encode(&e.name, e.dtype, &v, &mut bytes)?;
                    w.write_all(&bytes).map_err(io)?;
                }
            }
            self.done += e.bytes() as u64;
            (self.progress)(self.done, self.total);
        }
        w.flush().map_err(io)
    }
}

/// The merged weights alone, as one `.safetensors` file (and `<name>.repair.json` beside it).
pub(super) fn write_file(
    engine: &Engine,
    chosen: &Choice,
    settings: &Settings,
    prov: &Provenance,
    target: &Target,
    progress: &dyn Fn(u64, u64),
) -> Result<Vec<String>> {
    let entries = plan(&engine.inputs, chosen)?;
    let mut writer = Writer::new(engine, chosen, settings, prov, &entries, progress);
    let out = &target.path;
    let io = |e: std::io::Error| Error::file(out, format!("cannot write: {e}"));
    // A symlink's target is replaced (checked by `check_output`), never the link.
    let landing = match crate::fsio::output(out).map_err(io)? {
        crate::fsio::Output::Replace(p) => p,
        crate::fsio::Output::Through(_) => return Err(io(std::io::Error::other("not a file"))),
    };
    let mut tmp = crate::fsio::temp_in(folder_of(&landing)).map_err(io)?;
    {
        let mut w = std::io::BufWriter::with_capacity(8 << 20, tmp.as_file_mut());
        let refs: Vec<&Entry> = entries.iter().collect();
        writer
            .write(&mut w, &refs)
            .map_err(|e| Error::file(out, e.to_string()))?;
    }
    crate::fsio::commit(tmp, &landing).map_err(io)?;
    let record = provenance_path(target);
    crate::fsio::write_atomic(&record, &prov.json())
        .map_err(|e| Error::file(&record, format!("cannot write: {e}")))?;
    Ok(vec![])
}

/// Files a tokenizer is made of (whichever a model has).
pub(super) const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "chat_template.json",
];

/// The folder a model's files sit in.
fn folder_of_model(path: &Path) -> PathBuf {
    if path.is_file() {
        folder_of(path).to_path_buf()
    } else {
        path.to_path_buf()
    }
}

/// Copies those of `names` that `from` has into `to`; returns the ones copied.
pub(super) fn copy_files(from: &Path, to: &Path, names: &[&str]) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    for n in names {
        let src = from.join(n);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            crate::fsio::write_synced(&to.join(n), &bytes)
                .map_err(|e| Error::file(&to.join(n), format!("cannot write: {e}")))?;
            copied.push(n.to_string());
        }
    }
    Ok(copied)
}

/// Tensors grouped into shards of at most `max` bytes each (a larger tensor alone), in order.
fn shards<'e, 'a>(entries: &'e [Entry<'a>], max: u64) -> Vec<Vec<&'e Entry<'a>>> {
    let mut out: Vec<Vec<&Entry>> = vec![];
    let mut size = 0u64;
    for e in entries {
        let n = e.bytes() as u64;
        match out.last_mut() {
            Some(last) if size + n <= max => last.push(e),
            _ => {
                out.push(vec![e]);
                size = 0;
            }
        }
        size += n;
    }
    out
}

/// A folder transformers loads: `model.safetensors` (or shards of at most `max_shard` bytes and
/// `model.safetensors.index.json`), the configs, the tokenizer and `repair.json`.
pub(super) fn write_folder(
    engine: &Engine,
    chosen: &Choice,
    settings: &Settings,
    prov: &Provenance,
    target: &Target,
    progress: &dyn Fn(u64, u64),
) -> Result<Vec<String>> {
    let inputs = &engine.inputs;
    let entries = plan(inputs, chosen)?;
    let mut writer = Writer::new(engine, chosen, settings, prov, &entries, progress);
    let out = &target.path;
    let io = |p: &Path, e: std::io::Error| Error::file(p, format!("cannot write: {e}"));
    let tmp = crate::fsio::temp_dir_in(folder_of(out)).map_err(|e| io(out, e))?;
    let groups = shards(&entries, settings.max_shard.max(1));
    let n = groups.len();
    let mut weight_map = serde_json::Map::new();
    for (i, group) in groups.iter().enumerate() {
        let file = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        };
        let path = tmp.path().join(&file);
        let f = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
        let mut w = std::io::BufWriter::with_capacity(8 << 20, &f);
        writer
            .write(&mut w, group)
            .map_err(|e| Error::file(out, e.to_string()))?;
        drop(w);
        f.sync_all().map_err(|e| io(&path, e))?;
        for e in group {
            weight_map.insert(e.name.clone(), file.clone().into());
        }
    }
    if n > 1 {
        let index = serde_json::json!({
            "metadata": {"total_size": writer.total},
            "weight_map": weight_map,
        });
        let path = tmp.path().join("model.safetensors.index.json");
        let mut text = serde_json::to_vec_pretty(&index).unwrap_or_default();
        text.push(b'\n');
        crate::fsio::write_synced(&path, &text).map_err(|e| io(&path, e))?;
    }
    // The configs of the model the weights are (a full fine-tune's own, else the base's); the
    // tokenizer from the tuned side where it has one (an adapter may ship its own).
    let base_dir = folder_of_model(&inputs.base.path);
    let tuned_dir = folder_of_model(inputs.tuned.path());
    let config_dir = match &inputs.tuned {
        Tuned::Model(_) if tuned_dir.join("config.json").is_file() => &tuned_dir,
        _ => &base_dir,
    };
    let mut notes = Vec::new();
    let configs = copy_files(
        config_dir,
        tmp.path(),
        &["config.json", "generation_config.json"],
    )?;
    if configs.is_empty() {
        notes.push(format!(
            "no config.json in {}: the folder holds the weights only (copy the model's config \
             beside them for from_pretrained)",
            config_dir.display()
        ));
    }
    let tok_dir = if TOKENIZER_FILES.iter().any(|f| tuned_dir.join(f).is_file()) {
        &tuned_dir
    } else {
        &base_dir
    };
    copy_files(tok_dir, tmp.path(), TOKENIZER_FILES)?;
    let record = tmp.path().join("repair.json");
    crate::fsio::write_synced(&record, &prov.json()).map_err(|e| io(&record, e))?;
    crate::fsio::commit_dir(tmp, out).map_err(|e| io(out, e))?;
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_hold_at_most_their_size_and_a_large_tensor_alone() {
        // Shards look at sizes only; the source is never read.
        let pair = TensorPair {
            name: "x".into(),
            shape: vec![],
            dtype: "F32".into(),
            file: String::new(),
            tuned: None,
            selected: false,
            transposed: false,
        };
        let e = |name: &str, n: usize| Entry {
            name: name.into(),
            dtype: Dtype::F32,
            shape: vec![n],
            source: Source::Matrix(&pair),
        };
        let entries = vec![e("a", 10), e("b", 10), e("c", 100), e("d", 5), e("e", 20)];
        let names = |g: Vec<Vec<&Entry>>| -> Vec<Vec<String>> {
            g.iter()
                .map(|s| s.iter().map(|e| e.name.clone()).collect())
                .collect()
        };
        // 4 bytes per element: 40, 40, 400, 20, 80 against 100.
        assert_eq!(
            names(shards(&entries, 100)),
            [vec!["a", "b"], vec!["c"], vec!["d", "e"]]
        );
        assert_eq!(names(shards(&entries, u64::MAX)).len(), 1);
    }
}

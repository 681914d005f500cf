//! Reading checkpoints: memory-mapped safetensors, sharded models, PEFT adapters, and the
//! pairing of base and tuned tensors. Everything else reads weights through [`Inputs`].

pub mod adapter;
pub mod dtype;
pub mod fault;
pub mod locate;
pub mod model;
pub mod pairing;
pub mod st;

use std::path::Path;

use serde::Serialize;

pub use crate::matrix::Dense;
pub use adapter::{Adapter, AdapterConfig, LoraModule};
pub use dtype::Element;
pub use model::{Format, Model};
pub use pairing::{block_of, natural_cmp, Selection};

use crate::error::{Error, Result};
use crate::key::KeyBuilder;

/// The fine-tuned side: a full checkpoint or an adapter applied to the base.
#[derive(Debug)]
pub enum Tuned {
    Model(Model),
    Adapter(Box<Adapter>),
}

impl Tuned {
    pub fn open(path: &Path) -> Result<Tuned> {
        if adapter::is_adapter_dir(path) {
            Ok(Tuned::Adapter(Box::new(Adapter::open(path)?)))
        } else if path.is_dir() && path.join("adapter_model.bin").is_file() {
            Err(Error::file(
                &path.join("adapter_model.bin"),
                "pickle adapters are not supported, convert with safetensors",
            ))
        } else {
            Ok(Tuned::Model(Model::open(path)?))
        }
    }
    pub fn format(&self) -> Format {
        match self {
            Tuned::Model(m) => m.format,
            Tuned::Adapter(_) => Format::Adapter,
        }
    }
    pub fn path(&self) -> &Path {
        match self {
            Tuned::Model(m) => &m.path,
            Tuned::Adapter(a) => &a.dir,
        }
    }
}

/// Where the tuned version of a base tensor comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TunedSource {
    /// A tensor of a full tuned checkpoint.
    Tensor { name: String },
    /// W0 + s·B·A for this adapter module.
    Lora { module: String },
    /// A full tensor stored in the adapter (modules_to_save).
    Replaced { name: String },
    /// A layer's bias plus s·`lora_B.bias` of this adapter module (`lora_bias=True`).
    LoraBias { module: String },
    /// The adapter leaves this tensor as in the base.
    Unchanged,
}

/// One base tensor and its tuned counterpart (if any).
#[derive(Debug, Clone, Serialize)]
pub struct TensorPair {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    /// File holding the base tensor (shard name for sharded models).
    pub file: String,
    pub tuned: Option<TunedSource>,
    pub selected: bool,
    /// Analyse as the transpose of the stored layout, so every matrix is (out, in)
    /// (GPT-2 Conv1D adapters with fan_in_fan_out).
    pub transposed: bool,
}

impl TensorPair {
    /// (rows, cols) as analysed.
    pub fn dims(&self) -> (usize, usize) {
        let (r, c) = (self.shape[0], self.shape[1]);
        if self.transposed {
            (c, r)
        } else {
            (r, c)
        }
    }
}

/// ΔW = scaling·B·A in the analysed layout: B is out×r, A is r×in.
#[derive(Debug, Clone)]
pub struct LoraFactors {
    pub scaling: f64,
    pub b: Dense<f64>,
    pub a: Dense<f64>,
}

/// Base and tuned opened and paired.
#[derive(Debug)]
pub struct Inputs {
    pub base: Model,
    pub tuned: Tuned,
    /// Every base tensor, natural order.
    pub pairs: Vec<TensorPair>,
    /// Tuned tensors with no base counterpart (a head the base lacks, …).
    pub only_tuned: Vec<String>,
    /// Same name, different shape (e.g. a resized vocabulary); never analysed.
    pub shape_mismatch: Vec<(String, Vec<usize>, Vec<usize>)>,
    pub warnings: Vec<String>,
}

impl Inputs {
    pub fn open(base: &Path, tuned: &Path, sel: &Selection) -> Result<Inputs> {
        let base = Model::open(base)?;
        let tuned = Tuned::open(tuned)?;
        Inputs::pair(base, tuned, sel)
    }

    /// A base on its own, for decomposing ahead of any fine-tune (`cache warm`): paired with
    /// itself, so every matrix a scan of a full fine-tune selects is selected.
    pub fn base_only(base: &Path, sel: &Selection) -> Result<Inputs> {
        Inputs::pair(Model::open(base)?, Tuned::Model(Model::open(base)?), sel)
    }

    pub fn pair(base: Model, tuned: Tuned, sel: &Selection) -> Result<Inputs> {
        let index = pairing::NameIndex::new(base.tensors.keys().map(|s| s.as_str()));
        let mut warnings = Vec::new();
        let mut only_tuned = Vec::new();
        let mut shape_mismatch = Vec::new();
        let mut matched: std::collections::HashMap<String, (TunedSource, bool)> =
            Default::default();

        let find = |tuned_name: &str, file: &Path| -> Result<Option<String>> {
            index.find(tuned_name).map_err(|c| {
                Error::Mismatch(format!(
                    "{}: `{tuned_name}` matches several base tensors ({}); cannot pair",
                    file.display(),
                    c.join(", ")
                ))
            })
        };

        match &tuned {
            Tuned::Model(m) => {
                for (name, loc) in &m.tensors {
                    let short = name.strip_prefix("base_model.model.").unwrap_or(name);
                    let file = &m.files[loc.file].path;
                    match find(short, file)? {
                        None => only_tuned.push(name.clone()),
                        Some(b) => {
                            let bshape = &base.tensors[&b].info.shape;
                            if bshape != &loc.info.shape {
                                shape_mismatch.push((b, bshape.clone(), loc.info.shape.clone()));
                            } else if matched
                                .insert(
                                    b.clone(),
                                    (TunedSource::Tensor { name: name.clone() }, false),
                                )
                                .is_some()
                            {
                                return Err(Error::Mismatch(format!(
                                    "{}: two tuned tensors pair with base tensor `{b}`",
                                    m.path.display()
                                )));
                            }
                        }
                    }
                }
            }
            Tuned::Adapter(a) => {
                warnings.extend(a.warnings.iter().cloned());
                let apath = &a.file.path;
                for m in a.modules.values() {
                    let target = Adapter::target_tensor(m);
                    let Some(b) = find(&target, apath)? else {
                        return Err(Error::tensor(
                            apath,
                            &m.a,
                            format!("adapts module `{}`, which the base {} does not have: is this adapter for another base?",
                                m.module, base.path.display()),
                        ));
                    };
                    let bshape = &base.tensors[&b].info.shape;
                    let a_shape = &a.file.tensors[&m.a].shape;
                    let b_shape = &a.file.tensors[&m.b].shape;
                    // (out, in) of ΔW = B·A in its own layout.
                    let (out, inn) = (b_shape[0], a_shape[1]);
                    let expect = if m.transpose { [inn, out] } else { [out, inn] };
                    if bshape[..] != expect[..] {
                        return Err(Error::tensor(
                            apath,
                            &m.a,
                            format!(
                                "lora_A {a_shape:?} / lora_B {b_shape:?} give a {}×{} update, but base tensor `{b}` is {bshape:?}: is this adapter for another base?",
                                expect[0], expect[1]
                            ),
                        ));
                    }
                    if let Some(mag) = &m.magnitude {
                        let ms = &a.file.tensors[mag].shape;
                        if m.embedding {
                            return Err(Error::tensor(
                                apath,
                                mag,
                                "DoRA on an embedding layer is not supported".to_string(),
                            ));
                        }
                        if ms.iter().product::<usize>() != out {
                            return Err(Error::tensor(
                                apath,
                                mag,
                                format!("DoRA magnitude of shape {ms:?} does not fit a {out}-row update"),
                            ));
                        }
                    }
                    if let Some(bias) = &m.bias {
                        // PEFT merges bias += s·lora_B.bias, and refuses a layer without one.
                        let target = format!("{}.bias", m.module);
                        let Some(bb) = find(&target, apath)? else {
                            return Err(Error::tensor(
                                apath,
                                bias,
                                format!(
                                    "changes the bias of `{}`, which the base {} does not have",
                                    m.module,
                                    base.path.display()
                                ),
                            ));
                        };
                        let (bshape, lshape) =
                            (&base.tensors[&bb].info.shape, &a.file.tensors[bias].shape);
                        if bshape != lshape || bshape[..] != [out] {
                            return Err(Error::tensor(
                                apath,
                                bias,
                                format!("of shape {lshape:?} does not fit base bias `{bb}` of shape {bshape:?} ({out} outputs)"),
                            ));
                        }
                        matched.insert(
                            bb,
                            (
                                TunedSource::LoraBias {
                                    module: m.module.clone(),
                                },
                                false,
                            ),
                        );
                    }
                    let conv1d = a.config.fan_in_fan_out && !m.embedding;
                    matched.insert(
                        b,
                        (
                            TunedSource::Lora {
                                module: m.module.clone(),
                            },
                            conv1d,
                        ),
                    );
                }
                for (short, full) in &a.full {
                    match find(short, apath)? {
                        None => only_tuned.push(full.clone()),
                        Some(b) => {
                            let bshape = &base.tensors[&b].info.shape;
                            let tshape = &a.file.tensors[full].shape;
                            if bshape != tshape {
                                return Err(Error::tensor(apath, full, format!(
                                    "replaces base tensor `{b}` of shape {bshape:?} with shape {tshape:?}"
                                )));
                            }
                            if matched.contains_key(&b) {
                                return Err(Error::tensor(
                                    apath,
                                    full,
                                    format!(
                                    "replaces base tensor `{b}`, which a LoRA module also changes"
                                ),
                                ));
                            }
                            matched
                                .insert(b, (TunedSource::Replaced { name: full.clone() }, false));
                        }
                    }
                }
            }
        }

        let is_adapter = matches!(tuned, Tuned::Adapter(_));
        let mut pairs: Vec<TensorPair> = base
            .tensors
            .iter()
            .map(|(name, loc)| {
                let (src, transposed) = match matched.remove(name) {
                    Some((s, t)) => (Some(s), t),
                    None if is_adapter => (Some(TunedSource::Unchanged), false),
                    None => (None, false),
                };
                let is_2d = loc.info.shape.len() == 2;
                // For an adapter, what it changes with LoRA is what there is to analyse.
                let default = if is_adapter {
                    matches!(src, Some(TunedSource::Lora { .. }))
                } else {
                    src.is_some() && pairing::default_selected(name)
                };
                let selected = is_2d
                    && src.is_some()
                    && sel.selects(name, default)
                    && dtype::is_supported(loc.info.dtype);
                TensorPair {
                    name: name.clone(),
                    shape: loc.info.shape.clone(),
                    dtype: dtype::name(loc.info.dtype),
                    file: base.files[loc.file]
                        .path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    tuned: src,
                    selected,
                    transposed,
                }
            })
            .collect();
        pairs.sort_by(|a, b| natural_cmp(&a.name, &b.name));
        only_tuned.sort_by(|a, b| natural_cmp(a, b));
        Ok(Inputs {
            base,
            tuned,
            pairs,
            only_tuned,
            shape_mismatch,
            warnings,
        })
    }

    /// Every file of both sides still as long as when opened (see [`st::StFile::check_intact`]).
    pub fn check_intact(&self) -> Result<()> {
        let tuned: Vec<&std::sync::Arc<st::StFile>> = match &self.tuned {
            Tuned::Model(m) => m.files.iter().collect(),
            Tuned::Adapter(a) => vec![&a.file],
        };
        self.base
            .files
            .iter()
            .chain(tuned)
            .try_for_each(|f| f.check_intact())
    }

    pub fn selected(&self) -> impl Iterator<Item = &TensorPair> {
        self.pairs.iter().filter(|p| p.selected)
    }

    /// Content hash of a pair's base side: the bytes, dtype and shape of the base tensor and
    /// its layout. Renaming or copying a checkpoint keeps it; changing one byte changes it.
    /// (The engine remembers these keys under `content-key-1`: a change to what goes in, here
    /// or in [`tuned_key`](Self::tuned_key), must change that name.)
    pub fn base_key(&self, p: &TensorPair) -> Result<u128> {
        self.base_key_with(p, &content).ok_or_else(|| self.shrunk())
    }

    /// Why bytes could not be hashed: a file shrank (the one check that fails [`content`]).
    fn shrunk(&self) -> Error {
        self.check_intact()
            .err()
            .unwrap_or_else(|| Error::Internal("a tensor could not be hashed".into()))
    }

    /// Content hash of a pair's tuned side, given the base side's: the tuned tensor's, or the
    /// adapter's A/B (and DoRA magnitude) with its scaling and layout.
    pub fn tuned_key(&self, p: &TensorPair, base: u128) -> Result<u128> {
        self.tuned_key_with(p, base, &content)?
            .ok_or_else(|| self.shrunk())
    }

    /// Both keys with each tensor's bytes replaced by its file's identity and place in it: equal
    /// identities mean equal content keys, known without reading the tensors. A side is `None`
    /// when one of its files has no identity (see [`st::StFile::identity`]).
    pub fn source_identity(&self, p: &TensorPair) -> Result<(Option<u128>, Option<u128>)> {
        let identity = |kb: KeyBuilder, file: &st::StFile, info: &st::TensorInfo| {
            Some(
                kb.u128(file.identity?)
                    .u128(((info.start as u128) << 64) | info.end as u128),
            )
        };
        let base = self.base_key_with(p, &identity);
        let tuned = match base {
            Some(b) => self.tuned_key_with(p, b, &identity)?,
            None => None,
        };
        Ok((base, tuned))
    }

    fn base_key_with(&self, p: &TensorPair, data: &TensorData) -> Option<u128> {
        let loc = &self.base.tensors[&p.name];
        let file = &self.base.files[loc.file];
        Some(
            tensor_key(KeyBuilder::new().str("tensor"), file, &p.name, data)?
                .str(if p.transposed { "T" } else { "N" })
                .finish()
                .0,
        )
    }

    fn tuned_key_with(
        &self,
        p: &TensorPair,
        base: u128,
        data: &TensorData,
    ) -> Result<Option<u128>> {
        let src = p.tuned.as_ref().ok_or_else(|| {
            Error::Mismatch(format!("base tensor `{}` has no tuned counterpart", p.name))
        })?;
        let tensor = |kb, file, name| tensor_key(kb, file, name, data);
        let key = (|| match (src, &self.tuned) {
            (TunedSource::Unchanged, _) => Some(base),
            (TunedSource::Tensor { name }, Tuned::Model(m)) => Some(
                tensor(
                    KeyBuilder::new().str("tensor"),
                    m.file_of(name).unwrap(),
                    name,
                )?
                .str("N")
                .finish()
                .0,
            ),
            (TunedSource::Replaced { name }, Tuned::Adapter(a)) => Some(
                tensor(KeyBuilder::new().str("tensor"), &a.file, name)?
                    .str("N")
                    .finish()
                    .0,
            ),
            (TunedSource::Lora { module }, Tuned::Adapter(a)) => {
                let m = &a.modules[module];
                let mut kb = KeyBuilder::new().str("lora").u128(base);
                kb = tensor(kb, &a.file, &m.a)?;
                kb = tensor(kb, &a.file, &m.b)?;
                if let Some(mag) = &m.magnitude {
                    kb = tensor(kb.str("dora"), &a.file, mag)?;
                }
                Some(
                    kb.f64(m.scaling)
                        .str(if m.embedding { "emb" } else { "lin" })
                        .str(if p.transposed { "T" } else { "N" })
                        .finish()
                        .0,
                )
            }
            (TunedSource::LoraBias { module }, Tuned::Adapter(a)) => {
                let m = &a.modules[module];
                let kb = KeyBuilder::new().str("lora-bias").u128(base);
                Some(
                    tensor(kb, &a.file, m.bias.as_ref()?)?
                        .f64(m.scaling)
                        .finish()
                        .0,
                )
            }
            _ => unreachable!("pairing produces sources of the tuned kind"),
        })();
        Ok(key)
    }

    /// The base matrix, (out, in).
    pub fn base_matrix<T: Element>(&self, p: &TensorPair) -> Result<Dense<T>> {
        self.base_matrix_into(p, Vec::new())
    }

    /// [`base_matrix`](Self::base_matrix), decoded into a recycled buffer where the layout
    /// allows.
    pub fn base_matrix_into<T: Element>(&self, p: &TensorPair, buf: Vec<T>) -> Result<Dense<T>> {
        if p.transposed {
            return Ok(self.base.matrix::<T>(&p.name)?.transpose());
        }
        self.base.matrix_into(&p.name, buf)
    }

    /// A tuned bias changed by `lora_B.bias`: the base's plus s·`lora_B.bias`, as PEFT merges it.
    pub fn tuned_bias(&self, p: &TensorPair) -> Result<Vec<f64>> {
        let (Some(TunedSource::LoraBias { module }), Tuned::Adapter(a)) = (&p.tuned, &self.tuned)
        else {
            return Err(Error::Internal(format!("`{}` is not a LoRA bias", p.name)));
        };
        let m = &a.modules[module];
        let delta: Vec<f64> = a.file.decode(m.bias.as_deref().unwrap_or_default())?;
        let mut b: Vec<f64> = self.base.decode(&p.name)?;
        b.iter_mut()
            .zip(&delta)
            .for_each(|(x, d)| *x += m.scaling * d);
        Ok(b)
    }

    /// The tuned matrix, (out, in), reconstructed for adapters exactly as PEFT merges it.
    pub fn tuned_matrix<T: Element>(&self, p: &TensorPair) -> Result<Dense<T>> {
        let src = p.tuned.as_ref().ok_or_else(|| {
            Error::Mismatch(format!("base tensor `{}` has no tuned counterpart", p.name))
        })?;
        match (src, &self.tuned) {
            (TunedSource::Tensor { name }, Tuned::Model(m)) => m.matrix(name),
            (TunedSource::Unchanged, _) => self.base_matrix(p),
            (TunedSource::Replaced { name }, Tuned::Adapter(a)) => {
                let data = a.file.decode(name)?;
                Ok(Dense {
                    rows: p.shape[0],
                    cols: p.shape[1],
                    data,
                })
            }
            (TunedSource::Lora { module }, Tuned::Adapter(a)) => {
                let w = self.merge_lora(p, a, &a.modules[module])?;
                Ok(Dense {
                    rows: w.rows,
                    cols: w.cols,
                    data: w.data.into_iter().map(T::from_f64).collect(),
                })
            }
            _ => unreachable!("pairing produces sources of the tuned kind"),
        }
    }

    /// s, B (out×r) and A (r×in) of a plain LoRA module in the analysed layout, for the
    /// cheap low-rank route. None for DoRA and for non-LoRA sources.
    pub fn lora_factors(&self, p: &TensorPair) -> Result<Option<LoraFactors>> {
        let (Some(TunedSource::Lora { module }), Tuned::Adapter(a)) = (&p.tuned, &self.tuned)
        else {
            return Ok(None);
        };
        let m = &a.modules[module];
        if m.magnitude.is_some() {
            return Ok(None);
        }
        let (b, a) = self.factors(a, m)?;
        Ok(Some(LoraFactors {
            scaling: m.scaling,
            b,
            a,
        }))
    }

    /// B (out×r) and A (r×in) oriented so that ΔW = s·B·A in the analysed layout.
    fn factors(&self, a: &Adapter, m: &LoraModule) -> Result<(Dense<f64>, Dense<f64>)> {
        let ad = matrix_of(&a.file, &m.a)?;
        let bd = matrix_of(&a.file, &m.b)?;
        // |s·B·A| is at most s·r·max|B|·max|A|: past what weights hold, the config is not a
        // trained adapter's (lora_alpha 1e308), and the solvers would fail far from the cause.
        let max = |d: &Dense<f64>| d.data.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let bound = m.scaling.abs() * m.r as f64 * max(&ad) * max(&bd);
        if bound.is_nan() || bound > f32::MAX as f64 {
            return Err(Error::tensor(
                &a.file.path,
                &m.a,
                format!(
                    "s·B·A can reach {bound:e} (s = {:e} from lora_alpha {:e} and r = {}): \
                     not a trained adapter's update",
                    m.scaling, m.alpha, m.r
                ),
            ));
        }
        // Embedding LoRA: ΔW = (B·A)ᵀ = Aᵀ·Bᵀ in the stored (num_embeddings, dim) layout.
        // fan_in_fan_out is analysed transposed, where ΔW = B·A again.
        Ok(if m.embedding {
            (ad.transpose(), bd.transpose())
        } else {
            (bd, ad)
        })
    }

    fn merge_lora(&self, p: &TensorPair, a: &Adapter, m: &LoraModule) -> Result<Dense<f64>> {
        let mut w: Dense<f64> = self.base_matrix(p)?;
        let (b, am) = self.factors(a, m)?;
        let bm = faer::MatRef::from_row_major_slice(&b.data, b.rows, b.cols);
        let amr = faer::MatRef::from_row_major_slice(&am.data, am.rows, am.cols);
        let delta = bm * amr;
        for i in 0..w.rows {
            for j in 0..w.cols {
                w.data[i * w.cols + j] += m.scaling * delta[(i, j)];
            }
        }
        if let Some(mag) = &m.magnitude {
            // DoRA: W = diag(m / ‖row of V‖)·V, rows = output features.
            let mv: Vec<f64> = a.file.decode(mag)?;
            for (row, mag) in w.data.chunks_exact_mut(w.cols).zip(&mv) {
                let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
                let f = mag / norm;
                row.iter_mut().for_each(|x| *x *= f);
            }
        }
        Ok(w)
    }
}

fn matrix_of(file: &st::StFile, name: &str) -> Result<Dense<f64>> {
    let shape = &file.tensors[name].shape;
    Ok(Dense {
        rows: shape[0],
        cols: shape[1],
        data: file.decode(name)?,
    })
}

/// Adds a tensor's content (its bytes, or its file's identity and place) to a key; `None` when
/// it cannot.
type TensorData = dyn Fn(KeyBuilder, &st::StFile, &st::TensorInfo) -> Option<KeyBuilder>;

fn content(kb: KeyBuilder, file: &st::StFile, info: &st::TensorInfo) -> Option<KeyBuilder> {
    file.with_bytes(info, |b| kb.bytes(b)).ok()
}

/// A tensor's part of a content key: dtype, shape and `data`.
fn tensor_key(
    kb: KeyBuilder,
    file: &st::StFile,
    name: &str,
    data: &TensorData,
) -> Option<KeyBuilder> {
    let info = &file.tensors[name];
    let shape: Vec<u8> = info
        .shape
        .iter()
        .flat_map(|d| (*d as u64).to_le_bytes())
        .collect();
    data(kb.str(&dtype::name(info.dtype)).bytes(&shape), file, info)
}

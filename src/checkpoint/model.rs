//! A Hugging Face model checkpoint: one `.safetensors` file, a folder with `model.safetensors`,
//! or a sharded folder with `model.safetensors.index.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::dtype::Element;
use super::st::{StFile, TensorInfo};
use crate::error::{Error, Result};
use crate::matrix::Dense;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Single,
    Sharded,
    Adapter,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Single => "single",
            Format::Sharded => "sharded",
            Format::Adapter => "adapter",
        }
    }
}

/// Where one tensor lives.
#[derive(Debug, Clone)]
pub struct TensorLoc {
    pub file: usize,
    pub info: TensorInfo,
}

#[derive(Debug)]
pub struct Model {
    pub path: PathBuf,
    pub format: Format,
    pub files: Vec<Arc<StFile>>,
    pub tensors: BTreeMap<String, TensorLoc>,
}

impl Model {
    pub fn open(path: &Path) -> Result<Model> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_file() {
            let f = StFile::open(path)?;
            return Ok(Model::from_files(path, Format::Single, vec![f], None));
        }
        let index = path.join("model.safetensors.index.json");
        if index.is_file() {
            return Model::open_sharded(path, &index);
        }
        let single = path.join("model.safetensors");
        if single.is_file() {
            let f = StFile::open(&single)?;
            return Ok(Model::from_files(path, Format::Single, vec![f], None));
        }
        if path.join("adapter_config.json").is_file() {
            return Err(Error::file(
                path,
                "this is a PEFT adapter; give it as the tuned model and its base model as BASE",
            ));
        }
        if path.join("adapter_model.safetensors").is_file() {
            return Err(Error::file(
                path,
                "has adapter_model.safetensors but no adapter_config.json: cannot apply the adapter",
            ));
        }
        if path.join("pytorch_model.bin").is_file() || path.join("model.bin").is_file() {
            return Err(Error::file(
                path,
                "pickle checkpoints (.bin) are not supported: convert to safetensors first",
            ));
        }
        Err(Error::file(
            path,
            "no model.safetensors, model.safetensors.index.json or adapter_config.json here",
        ))
    }

    fn open_sharded(dir: &Path, index: &Path) -> Result<Model> {
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(index, format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::file(index, "no \"weight_map\" object"))?;
        let mut shard_names: Vec<String> = Vec::new();
        let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
        for (tensor, shard) in map {
            let shard = shard.as_str().ok_or_else(|| {
                Error::file(
                    index,
                    format!("weight_map entry `{tensor}` is not a file name"),
                )
            })?;
            // A shard is a file of this folder: no absolute path, no `..`, no subfolder
            // trickery (an index naming ../../etc/passwd must not make us open it).
            let plain = std::path::Path::new(shard)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain || shard.is_empty() {
                return Err(Error::file(
                    index,
                    format!(
                        "weight_map entry `{tensor}` names `{shard}`, outside the model folder"
                    ),
                ));
            }
            let idx = match shard_names.iter().position(|s| s == shard) {
                Some(i) => i,
                None => {
                    shard_names.push(shard.to_string());
                    shard_names.len() - 1
                }
            };
            wanted.insert(tensor.clone(), idx);
        }
        // Headers only: opening is O(#shards), independent of model size.
        let files = shard_names
            .iter()
            .map(|s| {
                let p = dir.join(s);
                if !p.is_file() {
                    return Err(Error::file(
                        index,
                        format!("names shard `{s}`, which does not exist"),
                    ));
                }
                StFile::open(&p)
            })
            .collect::<Result<Vec<_>>>()?;
        for (tensor, &fi) in &wanted {
            if !files[fi].tensors.contains_key(tensor) {
                return Err(Error::file(
                    index,
                    format!(
                        "maps tensor `{tensor}` to `{}`, which does not contain it",
                        shard_names[fi]
                    ),
                ));
            }
        }
        Ok(Model::from_files(
            dir,
            Format::Sharded,
            files,
            Some(&wanted),
        ))
    }

    fn from_files(
        path: &Path,
        format: Format,
        files: Vec<Arc<StFile>>,
        only: Option<&BTreeMap<String, usize>>,
    ) -> Model {
        let mut tensors = BTreeMap::new();
        for (fi, f) in files.iter().enumerate() {
            for (name, info) in &f.tensors {
                // With an index, the index decides which shard owns a tensor.
                if only.is_some_and(|w| w.get(name) != Some(&fi)) {
                    continue;
                }
                tensors.insert(
                    name.clone(),
                    TensorLoc {
                        file: fi,
                        info: info.clone(),
                    },
                );
            }
        }
        Model {
            path: path.to_path_buf(),
            format,
            files,
            tensors,
        }
    }

    pub fn file_of(&self, name: &str) -> Option<&Arc<StFile>> {
        self.tensors.get(name).map(|l| &self.files[l.file])
    }

    /// `f` on a tensor's stored bytes (checked as [`StFile::with_bytes`]); None if absent.
    pub fn with_bytes<R>(&self, name: &str, f: impl FnOnce(&[u8]) -> R) -> Option<Result<R>> {
        let loc = self.tensors.get(name)?;
        Some(self.files[loc.file].with_bytes(&loc.info, f))
    }

    /// A copy of a tensor's stored bytes; None if absent or unreadable.
    pub fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.with_bytes(name, <[u8]>::to_vec)?.ok()
    }

    pub fn decode<T: Element>(&self, name: &str) -> Result<Vec<T>> {
        self.decode_into(name, Vec::new())
    }

    pub fn decode_into<T: Element>(&self, name: &str, buf: Vec<T>) -> Result<Vec<T>> {
        let file = self
            .file_of(name)
            .ok_or_else(|| Error::tensor(&self.path, name, "not in this checkpoint"))?;
        file.decode_into(name, buf)
    }

    /// A 2-D tensor as a matrix.
    pub fn matrix<T: Element>(&self, name: &str) -> Result<Dense<T>> {
        self.matrix_into(name, Vec::new())
    }

    /// [`matrix`](Self::matrix), decoded into a recycled buffer.
    pub fn matrix_into<T: Element>(&self, name: &str, buf: Vec<T>) -> Result<Dense<T>> {
        let loc = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::tensor(&self.path, name, "not in this checkpoint"))?;
        let [rows, cols] = loc.info.shape[..] else {
            return Err(Error::tensor(
                &self.files[loc.file].path,
                name,
                format!("expected a 2-D matrix, found shape {:?}", loc.info.shape),
            ));
        };
        Ok(Dense {
            rows,
            cols,
            data: self.decode_into(name, buf)?,
        })
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// A key of this model's layout: its files' safetensors headers (names, dtypes, shapes,
    /// offsets). Copies share it; the cache files what it computes for this base under it.
    pub fn layout_key(&self) -> u128 {
        let mut kb = crate::key::KeyBuilder::new().str("layout-1");
        for f in &self.files {
            kb = kb.u128(f.header_hash);
        }
        kb.finish().0
    }
}

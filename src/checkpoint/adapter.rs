//! A PEFT LoRA adapter folder, reconstructed onto its base exactly as PEFT merges it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;
use serde::Serialize;

use super::st::StFile;
use crate::error::{Error, Result};

const PREFIX: &str = "base_model.model.";

/// The fields of `adapter_config.json` that change the reconstructed weights.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub use_dora: bool,
    pub fan_in_fan_out: bool,
    /// In file order: PEFT takes the first matching key.
    pub rank_pattern: Vec<(String, f64)>,
    pub alpha_pattern: Vec<(String, f64)>,
    pub target_modules: serde_json::Value,
    pub modules_to_save: Vec<String>,
    pub base_model_name_or_path: Option<String>,
    pub init_lora_weights: serde_json::Value,
}

/// One LoRA-adapted module: ΔW = s·B·A (transposed for fan_in_fan_out and embeddings).
#[derive(Debug, Clone, Serialize)]
pub struct LoraModule {
    /// Module path relative to the wrapped model, e.g. `bert.encoder.layer.0.attention.self.query`.
    pub module: String,
    pub a: String,
    pub b: String,
    pub magnitude: Option<String>,
    /// `lora_B.bias` (PEFT's `lora_bias=True`): the layer's bias gains s·this.
    pub bias: Option<String>,
    pub embedding: bool,
    pub r: usize,
    pub alpha: f64,
    pub scaling: f64,
    /// ΔW = (B·A)ᵀ: GPT-2 Conv1D layout or embedding LoRA.
    pub transpose: bool,
}

#[derive(Debug)]
pub struct Adapter {
    pub dir: PathBuf,
    pub config: AdapterConfig,
    pub file: Arc<StFile>,
    pub modules: BTreeMap<String, LoraModule>,
    /// Full tensors that replace the base's (modules_to_save, bias="all"): name without prefix →
    /// name in the adapter file.
    pub full: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

pub fn is_adapter_dir(path: &Path) -> bool {
    path.is_dir() && path.join("adapter_config.json").is_file()
}

fn pattern_value(patterns: &[(String, f64)], key: &str) -> Result<Option<f64>, String> {
    // PEFT's get_pattern_key: re.match(rf"(.*\.)?({key})$", module_key).
    for (pat, v) in patterns {
        let re = Regex::new(&format!(r"^(?:.*\.)?(?:{pat})$"))
            .map_err(|e| format!("pattern `{pat}` is not a valid regex: {e}"))?;
        if re.is_match(key) {
            return Ok(Some(*v));
        }
    }
    Ok(None)
}

impl AdapterConfig {
    fn parse(path: &Path) -> Result<AdapterConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not valid JSON: {e}")))?;
        let bad = |m: String| Error::file(path, m);
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        match obj.get("peft_type").and_then(|t| t.as_str()) {
            Some("LORA") => {}
            Some(other) => {
                return Err(bad(format!(
                    "peft_type is {other}; lorascope reads LORA adapters only"
                )))
            }
            None => return Err(bad("no peft_type: not a PEFT adapter config".into())),
        }
        for unsupported in [
            "layer_replication",
            "target_parameters",
            "use_bdlora",
            "alora_invocation_tokens",
        ] {
            if obj
                .get(unsupported)
                .is_some_and(|x| !x.is_null() && x != &serde_json::json!(false))
            {
                return Err(bad(format!(
                    "`{unsupported}` is set: this adapter's module layout is not supported"
                )));
            }
        }
        let num = |k: &str, default: f64| -> Result<f64> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(x) => x
                    .as_f64()
                    .ok_or_else(|| bad(format!("`{k}` is not a number"))),
            }
        };
        let flag = |k: &str| -> Result<bool> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Ok(false),
                Some(x) => x
                    .as_bool()
                    .ok_or_else(|| bad(format!("`{k}` is not true/false"))),
            }
        };
        let pattern = |k: &str| -> Result<Vec<(String, f64)>> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Ok(vec![]),
                Some(serde_json::Value::Object(m)) => m
                    .iter()
                    .map(|(p, x)| {
                        x.as_f64()
                            .map(|x| (p.clone(), x))
                            .ok_or_else(|| bad(format!("`{k}` value for `{p}` is not a number")))
                    })
                    .collect(),
                Some(_) => Err(bad(format!("`{k}` is not an object"))),
            }
        };
        let r = num("r", 8.0)?;
        if r < 1.0 || r.fract() != 0.0 {
            return Err(bad(format!("`r` = {r} is not a positive integer")));
        }
        let modules_to_save = match obj.get("modules_to_save") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => vec![],
        };
        Ok(AdapterConfig {
            r: r as usize,
            lora_alpha: num("lora_alpha", 8.0)?,
            use_rslora: flag("use_rslora")?,
            use_dora: flag("use_dora")?,
            fan_in_fan_out: flag("fan_in_fan_out")?,
            rank_pattern: pattern("rank_pattern")?,
            alpha_pattern: pattern("alpha_pattern")?,
            target_modules: obj.get("target_modules").cloned().unwrap_or_default(),
            modules_to_save,
            base_model_name_or_path: obj
                .get("base_model_name_or_path")
                .and_then(|x| x.as_str())
                .map(String::from),
            init_lora_weights: obj.get("init_lora_weights").cloned().unwrap_or_default(),
        })
    }

    /// α/r, or α/√r with rsLoRA.
    pub fn scaling(&self, alpha: f64, r: usize) -> f64 {
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }
}

#[derive(Default)]
struct Parts {
    a: Option<String>,
    b: Option<String>,
    magnitude: Option<String>,
    bias: Option<String>,
    embedding: bool,
    /// Has a `lora_A`/`lora_B` (a linear layer's factors), as opposed to embedding ones.
    linear: bool,
}

impl Adapter {
    pub fn open(dir: &Path) -> Result<Adapter> {
        let cfg_path = dir.join("adapter_config.json");
        if !cfg_path.is_file() {
            return Err(Error::file(
                dir,
                "no adapter_config.json: not a PEFT adapter folder",
            ));
        }
        let config = AdapterConfig::parse(&cfg_path)?;
        let weights = dir.join("adapter_model.safetensors");
        if !weights.is_file() {
            if dir.join("adapter_model.bin").is_file() {
                return Err(Error::file(
                    &dir.join("adapter_model.bin"),
                    "pickle adapters are not supported, convert with safetensors (e.g. `safetensors.torch.save_file`)",
                ));
            }
            return Err(Error::file(dir, "no adapter_model.safetensors"));
        }
        let file = StFile::open(&weights)?;
        let mut warnings = Vec::new();
        if let Some(s) = config.init_lora_weights.as_str() {
            let s = s.to_ascii_lowercase();
            if ["pissa", "olora", "corda", "loftq", "mica"]
                .iter()
                .any(|p| s.starts_with(p))
            {
                warnings.push(format!(
                    "{}: init_lora_weights = \"{s}\": this adapter was trained against a modified base, so the original base weights are not its true W0",
                    cfg_path.display()
                ));
            }
        }

        let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
        let mut full = BTreeMap::new();
        for name in file.tensors.keys() {
            let short = name.strip_prefix(PREFIX).unwrap_or(name);
            let (module, kind) = if let Some(m) = short.strip_suffix(".lora_A.weight") {
                (m, "A")
            } else if let Some(m) = short.strip_suffix(".lora_B.weight") {
                (m, "B")
            } else if let Some(m) = short.strip_suffix(".lora_embedding_A") {
                (m, "EA")
            } else if let Some(m) = short.strip_suffix(".lora_embedding_B") {
                (m, "EB")
            } else if let Some(m) = short
                .strip_suffix(".lora_magnitude_vector")
                .or_else(|| short.strip_suffix(".lora_magnitude_vector.weight"))
            {
                (m, "M")
            } else if let Some(m) = short.strip_suffix(".lora_B.bias") {
                (m, "bias")
            } else {
                // bias="all" / "lora_only" store a trained bias as `X.base_layer.bias`: it
                // replaces the layer's `X.bias`.
                let short = match short.rsplit_once(".base_layer.") {
                    Some((module, rest)) => format!("{module}.{rest}"),
                    None => short.to_string(),
                };
                full.insert(short, name.clone());
                continue;
            };
            let p = parts.entry(module.to_string()).or_default();
            // Stored twice (with and without the `base_model.model.` prefix): which one PEFT
            // would load is not for lorascope to guess.
            let slot = match kind {
                "A" | "EA" => &p.a,
                "B" | "EB" => &p.b,
                "bias" => &p.bias,
                _ => &p.magnitude,
            };
            if let Some(first) = slot {
                return Err(Error::tensor(
                    &weights,
                    name,
                    format!("stores module `{module}`'s tensor again (also `{first}`)"),
                ));
            }
            match kind {
                "A" => {
                    p.a = Some(name.clone());
                    p.linear = true
                }
                "B" => {
                    p.b = Some(name.clone());
                    p.linear = true
                }
                "EA" => {
                    p.a = Some(name.clone());
                    p.embedding = true
                }
                "EB" => {
                    p.b = Some(name.clone());
                    p.embedding = true
                }
                "bias" => p.bias = Some(name.clone()),
                _ => p.magnitude = Some(name.clone()),
            }
        }

        let mut modules = BTreeMap::new();
        for (module, p) in parts {
            if p.linear && p.embedding {
                return Err(Error::file(
                    &weights,
                    format!(
                        "module `{module}` mixes lora_A/lora_B with lora_embedding_A/B: one \
                         module is a linear layer or an embedding, not both"
                    ),
                ));
            }
            let (Some(a), Some(b)) = (p.a, p.b) else {
                return Err(Error::file(
                    &weights,
                    format!("module `{module}` has only one of lora_A / lora_B"),
                ));
            };
            let sa = &file.tensors[&a].shape;
            let sb = &file.tensors[&b].shape;
            if sa.len() != 2 || sb.len() != 2 || sa[0] != sb[1] {
                return Err(Error::tensor(
                    &weights,
                    &a,
                    format!("lora_A shape {sa:?} and lora_B shape {sb:?} do not share a rank"),
                ));
            }
            let r = sa[0];
            if r == 0 {
                return Err(Error::tensor(
                    &weights,
                    &a,
                    "has rank 0: lora_A and lora_B hold no update".to_string(),
                ));
            }
            // DoRA's magnitude is one value per output row: a vector (size-1 axes aside).
            if let Some(m) = &p.magnitude {
                let sm = &file.tensors[m].shape;
                if sm.iter().filter(|d| **d != 1).count() > 1 {
                    return Err(Error::tensor(
                        &weights,
                        m,
                        format!("DoRA magnitude of shape {sm:?} is not a vector"),
                    ));
                }
            }
            let bad = |m: String| Error::file(&cfg_path, m);
            let cfg_r = pattern_value(&config.rank_pattern, &module)
                .map_err(bad)?
                .map(|x| x as usize)
                .unwrap_or(config.r);
            if cfg_r != r {
                warnings.push(format!(
                    "{}: module `{module}` has rank {r} in its tensors but {cfg_r} in the config; using {r}",
                    weights.display()
                ));
            }
            let alpha = pattern_value(&config.alpha_pattern, &module)
                .map_err(|m| Error::file(&cfg_path, m))?
                .unwrap_or(config.lora_alpha);
            if p.magnitude.is_some() != config.use_dora {
                warnings.push(format!(
                    "{}: module `{module}`: use_dora is {} but a magnitude vector is {}; following the tensors",
                    weights.display(),
                    config.use_dora,
                    if p.magnitude.is_some() { "present" } else { "absent" }
                ));
            }
            let scaling = config.scaling(alpha, r);
            modules.insert(
                module.clone(),
                LoraModule {
                    module,
                    a,
                    b,
                    magnitude: p.magnitude,
                    bias: p.bias,
                    embedding: p.embedding,
                    r,
                    alpha,
                    scaling,
                    transpose: p.embedding || config.fan_in_fan_out,
                },
            );
        }
        if modules.is_empty() {
            return Err(Error::file(
                &weights,
                "no lora_A/lora_B tensors in this adapter",
            ));
        }
        Ok(Adapter {
            dir: dir.to_path_buf(),
            config,
            file,
            modules,
            full,
            warnings,
        })
    }

    /// The distinct scalings of its modules, ascending (one unless patterns differ per module).
    pub fn scalings(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.modules.values().map(|m| m.scaling).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    }

    /// One line for people: `r=8 lora_alpha=16 scaling=2 rslora=false dora=false …`.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let s: Vec<String> = self.scalings().iter().map(|x| x.to_string()).collect();
        format!(
            "r={} lora_alpha={} scaling={} rslora={} dora={} fan_in_fan_out={} modules={}",
            c.r,
            c.lora_alpha,
            s.join("/"),
            c.use_rslora,
            c.use_dora,
            c.fan_in_fan_out,
            self.modules.len()
        )
    }

    /// The base tensor a module changes: `<module>.weight`.
    pub fn target_tensor(m: &LoraModule) -> String {
        format!("{}.weight", m.module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_rule_follows_peft() {
        let pats = vec![
            ("q_proj".to_string(), 4.0),
            ("layers.1.v_proj".to_string(), 16.0),
        ];
        assert_eq!(
            pattern_value(&pats, "model.layers.0.self_attn.q_proj").unwrap(),
            Some(4.0)
        );
        assert_eq!(
            pattern_value(&pats, "model.layers.1.v_proj").unwrap(),
            Some(16.0)
        );
        // Anchored at a dot boundary: "xq_proj" is not "q_proj".
        assert_eq!(pattern_value(&pats, "model.xq_proj").unwrap(), None);
        // First key in file order wins.
        let pats = vec![("proj".to_string(), 1.0), ("q_proj".to_string(), 2.0)];
        assert_eq!(pattern_value(&pats, "a.proj").unwrap(), Some(1.0));
        assert_eq!(pattern_value(&pats, "a.q_proj").unwrap(), Some(2.0));
    }
}

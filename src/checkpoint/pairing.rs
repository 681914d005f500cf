//! The one place that decides which tuned tensor belongs to which base tensor, and which
//! matrices are analysed.

use std::cmp::Ordering;
#[cfg(test)]
use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};

use regex::Regex;

use crate::error::{Error, Result};

/// Default selection: 2-D weights inside numbered blocks (attention and MLP projections),
/// not norms, embeddings, heads or poolers.
pub fn default_selected(name: &str) -> bool {
    static BLOCK: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(^|\.)(layers|layer|h|blocks|block)\.\d+\.").unwrap()
    });
    static NOT: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)(norm|(^|\.)ln_?\w*\.|embed|lm_head|pooler|classifier|(^|\.)score\.|relative_attention_bias|rotary)")
            .unwrap()
    });
    name.ends_with(".weight") && BLOCK.is_match(name) && !NOT.is_match(name)
}

/// The block a tensor belongs to (`bert.encoder.layer.3`), for per-layer sums.
pub fn block_of(name: &str) -> Option<&str> {
    static BLOCK: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^(.*?(?:^|\.)(?:layers|layer|h|blocks|block)\.\d+)\.").unwrap()
    });
    BLOCK.captures(name).map(|c| c.get(1).unwrap().as_str())
}

/// `--include` / `--exclude`: with any include, the includes replace the default rule.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub include: Vec<Regex>,
    pub exclude: Vec<Regex>,
}

impl Selection {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Selection> {
        let compile = |v: &[String]| {
            v.iter()
                .map(|p| {
                    Regex::new(p).map_err(|e| Error::Usage(format!("invalid regex `{p}`: {e}")))
                })
                .collect::<Result<Vec<_>>>()
        };
        Ok(Selection {
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    /// `default` is the caller's default verdict for this matrix.
    pub fn selects(&self, name: &str, default: bool) -> bool {
        let base = if self.include.is_empty() {
            default
        } else {
            self.include.iter().any(|r| r.is_match(name))
        };
        base && !self.exclude.iter().any(|r| r.is_match(name))
    }
}

/// Natural order: `layer.2` before `layer.10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..na], &b[..nb]);
                let ta = trim_zeros(da);
                let tb = trim_zeros(db);
                let ord = ta.len().cmp(&tb.len()).then(ta.cmp(tb)).then(na.cmp(&nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|c| **c == b'0').count();
    &d[z.min(d.len().saturating_sub(1))..]
}

/// Finds base names for tuned names: exact, else a unique match up to a wrapper prefix
/// (`bert.`, `model.`, …) on either side.
pub struct NameIndex<'a> {
    exact: HashSet<&'a str>,
    by_suffix: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> NameIndex<'a> {
    pub fn new(names: impl IntoIterator<Item = &'a str>) -> Self {
        let exact: HashSet<&str> = names.into_iter().collect();
        let mut by_suffix: HashMap<&str, Vec<&str>> = HashMap::new();
        for &name in &exact {
            for (i, c) in name.char_indices() {
                if c == '.' {
                    by_suffix.entry(&name[i + 1..]).or_default().push(name);
                }
            }
        }
        NameIndex { exact, by_suffix }
    }

    /// Ok(None) when nothing matches; Err(candidates) when more than one does.
    pub fn find(&self, tuned: &str) -> std::result::Result<Option<String>, Vec<String>> {
        if self.exact.contains(tuned) {
            return Ok(Some(tuned.to_string()));
        }
        let mut cands: Vec<&str> = self.by_suffix.get(tuned).cloned().unwrap_or_default();
        for (i, c) in tuned.char_indices() {
            if c == '.' {
                if let Some(k) = self.exact.get(&tuned[i + 1..]) {
                    cands.push(k);
                    break; // the longest base name that is a suffix of `tuned`
                }
            }
        }
        cands.sort();
        cands.dedup();
        match cands.len() {
            0 => Ok(None),
            1 => Ok(Some(cands[0].to_string())),
            _ => Err(cands.into_iter().map(String::from).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks() {
        assert_eq!(
            block_of("bert.encoder.layer.3.attention.self.query.weight"),
            Some("bert.encoder.layer.3")
        );
        assert_eq!(
            block_of("model.layers.12.mlp.up_proj.weight"),
            Some("model.layers.12")
        );
        assert_eq!(block_of("h.0.attn.weight"), Some("h.0"));
        assert_eq!(block_of("classifier.weight"), None);
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["layer.10.q", "layer.2.q", "layer.1.q", "layer.02.k", "a"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["a", "layer.1.q", "layer.2.q", "layer.02.k", "layer.10.q"]
        );
    }

    #[test]
    fn default_rule_selects_block_projections_only() {
        for yes in [
            "bert.encoder.layer.0.attention.self.query.weight",
            "bert.encoder.layer.5.output.dense.weight",
            "model.layers.31.mlp.down_proj.weight",
            "transformer.h.3.attn.c_attn.weight",
        ] {
            assert!(default_selected(yes), "{yes}");
        }
        for no in [
            "bert.encoder.layer.0.attention.output.LayerNorm.weight",
            "bert.embeddings.word_embeddings.weight",
            "model.layers.0.input_layernorm.weight",
            "transformer.h.0.ln_1.weight",
            "lm_head.weight",
            "bert.pooler.dense.weight",
            "classifier.weight",
            "bert.encoder.layer.0.attention.self.query.bias",
        ] {
            assert!(!default_selected(no), "{no}");
        }
    }

    #[test]
    fn suffix_matching_is_unique_or_an_error() {
        let mut names: BTreeMap<String, ()> = BTreeMap::new();
        for n in [
            "bert.encoder.layer.0.q.weight",
            "enc.x.weight",
            "dec.x.weight",
        ] {
            names.insert(n.to_string(), ());
        }
        let idx = NameIndex::new(names.keys().map(|s| s.as_str()));
        assert_eq!(
            idx.find("encoder.layer.0.q.weight").unwrap().as_deref(),
            Some("bert.encoder.layer.0.q.weight")
        );
        assert_eq!(
            idx.find("roberta.bert.encoder.layer.0.q.weight")
                .unwrap()
                .as_deref(),
            Some("bert.encoder.layer.0.q.weight")
        );
        assert_eq!(idx.find("nothing.weight").unwrap(), None);
        assert_eq!(idx.find("x.weight").unwrap_err().len(), 2);
    }
}
